// Package duckdb is the DuckDB connector: a connector.Backend that reads a
// site directory in the CDM layout `haven synth` writes (<table>.parquet,
// or <table>.csv) through one DuckDB view per CDM table, runs a node's SQL
// with bound arguments, and returns the result as Arrow. The plugin binary
// cmd/haven-connector-duckdb serves it.
//
// DuckDB's Arrow API (github.com/duckdb/duckdb-go/v2, cgo) speaks
// arrow-go/v18 while Haven speaks arrow/go/v17. The two never meet in one
// type: this package works in v18 and hands the node only Arrow IPC bytes,
// which the node reads with v17.
//
// The Arrow API is behind the build tag duckdb_arrow; without it this
// package is empty. Build and test with -tags duckdb_arrow.
package duckdb
