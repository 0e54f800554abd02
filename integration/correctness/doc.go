// Package correctness checks, for every reference definition and two
// parameter sets each, that what the federated system releases equals the
// same question answered centrally over the pooled Parquet files, after
// the disclosure control the coordinator documents.
package correctness
