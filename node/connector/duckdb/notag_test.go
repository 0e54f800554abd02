//go:build !duckdb_arrow

package duckdb

import (
	"os"
	"strconv"
	"testing"
)

// TestBuiltWithArrowTag stands in for this package's tests when they were
// left out by a build without -tags duckdb_arrow: CI must not pass
// without them.
func TestBuiltWithArrowTag(t *testing.T) {
	msg := "the DuckDB connector's tests need -tags duckdb_arrow"
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatal(msg)
	}
	t.Skip(msg + " (skipped because CI is not set; in CI this fails)")
}
