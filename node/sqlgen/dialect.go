package sqlgen

import (
	"fmt"
	"strings"
)

// Dialect is a SQL dialect Compile can write for. The two dialects share
// almost all of their SQL; a Dialect holds only the differences: type
// names, array parameters, list aggregation and string ordering. Both use
// $1, $2 … placeholders.
//
// The interface is sealed: only this package implements it, so every
// dialect's SQL is covered by this package's tests.
type Dialect interface {
	// Name is the dialect's name, as ParseDialect accepts it.
	Name() string

	// textArray casts a placeholder bound to a []string to an array of text.
	textArray(placeholder string) string
	// inArray is a boolean expression: x is one of the elements of arr,
	// an expression from textArray.
	inArray(x, arr string) string
	// doubleType names the 64-bit float type.
	doubleType() string
	// textType names the string type.
	textType() string
	// intListAgg aggregates an int expression into a list in ascending order.
	intListAgg(x string) string
	// textListAgg aggregates a text expression into a list in byte order.
	textListAgg(x string) string
	// emptyIntList is an empty list of the type intListAgg returns.
	emptyIntList() string
	// orderText makes a text expression sort byte by byte, the way Go
	// compares strings, whatever the database's default collation.
	orderText(x string) string
	// validNHS is true when the text expression x holds a valid NHS
	// number, false otherwise, NULL included.
	validNHS(x string) string
}

// DuckDB returns the DuckDB dialect.
func DuckDB() Dialect { return duckDB{} }

// PostgreSQL returns the PostgreSQL dialect (version 12 or later).
func PostgreSQL() Dialect { return postgreSQL{} }

// Dialects returns every dialect, in a stable order.
func Dialects() []Dialect { return []Dialect{duckDB{}, postgreSQL{}} }

// ParseDialect returns the dialect called name: "duckdb" or "postgres".
func ParseDialect(name string) (Dialect, error) {
	var names []string
	for _, d := range Dialects() {
		if d.Name() == name {
			return d, nil
		}
		names = append(names, d.Name())
	}
	return nil, fmt.Errorf("unknown SQL dialect %q: want one of %s", name, strings.Join(names, ", "))
}

type duckDB struct{}

func (duckDB) Name() string               { return "duckdb" }
func (duckDB) textArray(p string) string  { return "CAST(" + p + " AS VARCHAR[])" }
func (duckDB) doubleType() string         { return "DOUBLE" }
func (duckDB) textType() string           { return "VARCHAR" }
func (duckDB) intListAgg(x string) string { return "list(" + x + " ORDER BY " + x + ")" }
func (duckDB) emptyIntList() string       { return "CAST([] AS BIGINT[])" }
func (duckDB) validNHS(x string) string   { return validNHSByNumber(x) }
func (duckDB) textListAgg(x string) string {
	return "list(" + x + " ORDER BY " + x + ")"
}
func (duckDB) orderText(x string) string { return x }
func (duckDB) inArray(x, arr string) string {
	// A semi-join on the unnested list: DuckDB hashes the list once,
	// where list_contains would scan it for every row.
	return "(" + x + " IN (SELECT unnest(" + arr + ")))"
}

type postgreSQL struct{}

func (postgreSQL) Name() string                 { return "postgres" }
func (postgreSQL) textArray(p string) string    { return "CAST(" + p + " AS TEXT[])" }
func (postgreSQL) inArray(x, arr string) string { return "(" + x + " = ANY(" + arr + "))" }
func (postgreSQL) doubleType() string           { return "DOUBLE PRECISION" }
func (postgreSQL) textType() string             { return "TEXT" }
func (postgreSQL) intListAgg(x string) string   { return "array_agg(" + x + " ORDER BY " + x + ")" }
func (postgreSQL) emptyIntList() string         { return "CAST(ARRAY[] AS BIGINT[])" }
func (postgreSQL) validNHS(x string) string     { return validNHSByChar(x) }
func (postgreSQL) textListAgg(x string) string {
	return "array_agg(" + x + " ORDER BY " + x + ` COLLATE "C")`
}
func (postgreSQL) orderText(x string) string { return x + ` COLLATE "C"` }
