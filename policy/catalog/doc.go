// Package catalog holds Haven's approved-query catalogue: query
// definitions and codelists, parsed, checked against the CDM (cdm),
// hashed for approval, bound to a commissioner's parameter values, and
// classified into a plan (DESIGN §5, §6). The coordinator, the nodes and the
// CLI all use it, so the three agree on what a definition means.
//
// # Definitions
//
// A definition is a YAML file, definitions/<id>/definition.yaml, that
// declares a query; it never contains SQL. (Each has a directory of its own
// so that OPA, reading the bundle directory as plain data, finds no two
// files at one data path.) Everything is parsed from yaml.Node trees into
// the typed AST of this package (Definition, Population, Variable,
// Measure…), and every mistake is reported at once with file:line:column
// and the field path, as an ErrorList. Unknown fields, wrong YAML types,
// aliases, unknown CDM tables and columns, values outside a column's
// vocabulary, unknown codelists, parameters used but not declared or
// declared but not used, variables used but not defined or defined but not
// used, impossible ranges, and identifying columns (cdm.Identifying) as
// outputs are all errors.
//
//	id: t2dm-emergency-admissions        # slug; must match the directory name
//	version: 3                           # integer ≥ 1
//	title: Emergency admissions among adults with type 2 diabetes
//	description: Free text, published with the catalogue.
//	parameters:                          # name → declaration
//	  index_date: {type: date, min: 2015-01-01, default: 2023-04-01}
//	  followup_days: {type: int, min: 30, max: 730, default: 365}
//	  method: {type: enum, values: [emergency, elective], default: emergency}
//	  condition: {type: codelist, values: [t2dm, copd], default: t2dm}
//	population: …
//	variables: …
//	measures: …
//	group_by: [age_band, sex]
//
// Parameter types are date (YYYY-MM-DD), int, enum (one of values) and
// codelist (the name of one of values, each a codelist of the bundle).
// min and max bound dates and ints; default makes a value optional.
//
// Dates are written as a literal (2020-01-01) or a date parameter
// ($index_date), optionally plus or minus days: a literal ($index_date +
// 365), an int parameter ($index_date - $lookback_days), or the bare name of
// an int parameter ($index_date + followup_days, as in DESIGN §5).
//
// Windows select events by date, inclusively: between: [from, to],
// on_or_before: date, or on_or_after: date. One is required wherever events
// are selected.
//
// # Population
//
// The population says who is counted; its criteria must all hold.
//
//	registered_on: $index_date          # registered with a practice that day (GP population)
//	age_on: {date: $index_date, min: 18, max: 64}
//	alive_on: $index_date
//	has_event: {table: clinical_event, codelist: t2dm, on_or_before: $index_date}
//	has_medication: {codelist: statins, between: [a, b]}   # has_event on medication
//	all_of: [{…criteria…}, …]
//	any_of: [{…criteria…}, …]
//	none_of: [{…criteria…}, …]
//
// A population with registered_on is a GP population: it is evaluated at
// the practices, where each patient is counted once, at the practice they
// are registered with. A population without it, selected by has_event on
// apc_episode or ae_attendance, is a hospital population: each trust
// evaluates it for its own patients, and a patient is in it if the criteria
// hold at one trust or more, counted once across trusts. Criteria on GP
// tables and on hospital tables cannot be mixed in one population; count
// hospital activity for a GP population in a variable instead.
//
// Days are whole: registered_on: d holds when a registration with the
// practice starts on or before d and has no end or ends after d, and
// alive_on: d when there is no date of death or it is after d. A
// registration that ends on d is over on d, as a life that ends on d is;
// so a patient who transfers on d is counted once, at the new practice.
// registered_on does not imply alive_on (a practice may lag in ending the
// registration of a patient who died): a definition that counts living
// people states alive_on.
//
// # Variables
//
// Each variable is one per-patient value derived from one CDM table:
//
//	sex: {column: patient.sex}                        # a plain string column of patient
//	age: {age: {on: $index_date}}                     # whole years
//	age_band: {age_band: {on: $index_date, width: 10}} # 0-9 … 80-89, 90+ (top defaults to 90)
//	band2: {age_band: {on: $d, bands: [18, 40, 65]}}   # 0-17, 18-39, 40-64, 65+
//	practice: {registered_practice: {on: $index_date}} # ODS code
//	admissions: {count: {table: apc_episode, where: {admission_method: emergency}, between: [a, b]}}
//	on_statin: {exists: {table: medication, codelist: statins, between: [a, b]}}
//	latest_sbp: {latest: {table: clinical_event, codelist: systolic-bp, between: [a, b]}}
//	trust: {first_trust: {table: apc_episode, where: {…}, between: [a, b]}}
//	readmits:
//	  readmissions:
//	    index: {where: {admission_method: emergency}, between: [a, b]}  # by discharge date
//	    within_days: 30
//	    where: {admission_method: emergency}
//
// where filters columns that have a fixed CDM vocabulary
// (apc_episode.admission_method) to a value, a list of values or an enum
// parameter; codes are selected with codelist, whose code system must be
// that of the table's code column (SNOMED CT for clinical_event and
// ae_attendance, dm+d for medication, ICD-10 for apc_episode).
//
// # Measures and grouping
//
//	measures:
//	  - {name: patients, count: patients}
//	  - {name: admitted, count: patients, where: admissions > 0}
//	  - {name: admissions, sum: admissions}                 # dominance: true by default
//	  - {name: mean_sbp, mean: latest_sbp, where: latest_sbp > 0 and latest_sbp < $target}
//	  - {name: min_sbp, min: latest_sbp}
//	group_by: [age_band, sex]
//
// Conditions are comparisons of a numeric variable (bool counts as 0 or 1)
// with a number or an int parameter, joined by and; they are parsed into
// Cond, never passed on as text. group_by names string or bool variables.
//
// dominance asks the sites for each cell's largest single contribution, so
// that the coordinator can apply the dominance rule (DESIGN §9). It is true
// by default for a sum, the magnitude that one patient can dominate, and
// false for a mean, which the few-contributors rule protects; a mean may
// ask for it with dominance: true. The reference policy (haven/disclose)
// applies the rule to every sum and to the means that ask. A sum's
// contributors are the patients whose value is not zero; a mean's are
// those with a value (see Partial).
//
// # Codelists
//
// A codelist is codelists/<name>.csv: comment lines first, one of them
// `# system: snomed-ct` (or dmd, icd-10), then the header code,term and one
// row per code. See ParseCodelist for the checks.
//
// # Canonical form and hash
//
// Canonical renders a definition as JSON built from the AST (see its doc);
// Hash is its SHA-256. Reformatting the YAML leaves the hash alone; a change
// of meaning, or of any codelist the definition uses, changes it.
//
// # Binding and plans
//
// Definition.Bind checks raw parameter strings and returns a Bound, whose
// Params map is the wire form. Definition.Plan gives the mode and, per kind
// of site, the exact fields it returns: see Plan, SiteTask and Field.
package catalog
