//go:build !duckdb_arrow

package main

import (
	"fmt"
	"os"
)

// Without the duckdb_arrow tag duckdb-go has no Arrow API, and this binary
// could not answer a query: say how to build it rather than fail later.
func main() {
	fmt.Fprintln(os.Stderr, "haven-connector-duckdb was built without -tags duckdb_arrow; "+
		"rebuild it with: go build -tags duckdb_arrow ./cmd/haven-connector-duckdb")
	os.Exit(2)
}
