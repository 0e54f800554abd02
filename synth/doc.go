// Package synth generates a synthetic NHS network: GP practices and
// hospital trusts, each with its own CDM v1 tables as Parquet files, plus
// the national data opt-out list and a network.yaml that describes it all.
//
// The network is a deterministic function of (seed, scale, site limit):
// two runs write byte-for-byte identical files however many workers they
// use. Each site is generated on its own, so sites run in parallel and
// memory stays flat whatever the scale. Facts that span sites — a trust's
// patients are GP patients, a patient who moved practice is registered at
// both in turn — hold because every site derives them from the same
// per-patient random streams, keyed by (seed, home practice, patient), and
// never from another site's output.
//
// The layout under the output directory is:
//
//	network.yaml                   Network, read back with LoadNetwork
//	sites/<ODS>/<table>.parquet    one file per CDM table the site holds
//	national/ndop.csv              national data opt-out list
//
// The data are realistic enough for the reference queries to mean
// something (an England-like population pyramid, prevalence of common
// long-term conditions with real SNOMED CT, dm+d, ICD-10 and OPCS-4 codes,
// admissions that rise with age and comorbidity) and dirty on purpose in
// small, counted ways: invalid NHS numbers, duplicate rows and events after
// death, all recorded in network.yaml.
package synth
