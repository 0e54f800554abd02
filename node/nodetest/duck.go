package nodetest

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	_ "github.com/duckdb/duckdb-go/v2" // the "duckdb" database/sql driver

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/node/connector"
	"github.com/havenhealth/haven/node/runner"
	"github.com/havenhealth/haven/node/sqlgen"
	"github.com/havenhealth/haven/synth"
)

// OpenSite opens an in-memory DuckDB with one view per CDM table of site s
// over its Parquet file: the direct answer the node's uploads are compared
// with.
func OpenSite(t testing.TB, n *synth.Network, s synth.Site) *sql.DB {
	t.Helper()
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1) // one in-memory database, so one connection sees the views
	t.Cleanup(func() { db.Close() })
	for _, tbl := range cdm.TablesFor(s.Kind) {
		f, ok := s.Files[tbl.Name]
		if !ok {
			t.Fatalf("site %s has no %s file", s.ODS, tbl.Name)
		}
		// Test-only DDL: the path is the test's own.
		path := strings.ReplaceAll(n.Path(f.Path), "'", "''")
		if _, err := db.Exec("CREATE VIEW " + tbl.Name + " AS SELECT * FROM read_parquet('" + path + "')"); err != nil {
			t.Fatalf("site %s: view %s: %v", s.ODS, tbl.Name, err)
		}
	}
	return db
}

// Strings returns the first column of a query's rows as strings.
func Strings(t testing.TB, db *sql.DB, query string, args ...any) []string {
	t.Helper()
	rows, err := db.Query(query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s sql.NullString
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s.String)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// Rows runs a query and returns every row as Go values.
func Rows(t testing.TB, db *sql.DB, query string, args ...any) [][]any {
	t.Helper()
	rows, err := db.Query(query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out [][]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		out = append(out, vals)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// DuckSource is a runner.Source over an in-process DuckDB, standing in for
// the connector plugin in the runner's own tests. Its results are Arrow
// built from database/sql rows, with the types a connector returns.
type DuckSource struct {
	DB     *sql.DB
	Tables []string
	// Rewrite, if set, may change a query's rows before they become Arrow:
	// tests use it to play a connector (or compiler) that gets opt-outs
	// wrong.
	Rewrite func(sql string, rows [][]any) [][]any
	// Before, if set, is called before each query; an error fails it.
	// Tests use it to see what a query binds, or to hold one until the
	// task is cancelled.
	Before func(ctx context.Context, q connector.Query) error
	// Version, if set, is the data version each result reports, as a
	// connector that can tell does.
	Version string
	queries atomic.Int64
}

// Queries is the number of queries run so far.
func (d *DuckSource) Queries() int64 { return d.queries.Load() }

var _ runner.Source = (*DuckSource)(nil)

// NewDuckSource returns a source over site s.
func NewDuckSource(t testing.TB, n *synth.Network, s synth.Site) *DuckSource {
	t.Helper()
	src := &DuckSource{DB: OpenSite(t, n, s)}
	for _, tbl := range cdm.TablesFor(s.Kind) {
		src.Tables = append(src.Tables, tbl.Name)
	}
	return src
}

// Dialect is DuckDB.
func (d *DuckSource) Dialect(context.Context) (sqlgen.Dialect, error) { return sqlgen.DuckDB(), nil }

// HasTable reports whether the site has the table.
func (d *DuckSource) HasTable(_ context.Context, name string) (bool, error) {
	for _, t := range d.Tables {
		if t == name {
			return true, nil
		}
	}
	return false, nil
}

// Query runs q and returns its rows as Arrow, in batches of 4096.
func (d *DuckSource) Query(ctx context.Context, q connector.Query) (runner.Records, error) {
	d.queries.Add(1)
	if d.Before != nil {
		if err := d.Before(ctx, q); err != nil {
			return nil, err
		}
	}
	args := make([]any, len(q.Args))
	for i, a := range q.Args {
		args[i] = a.Any()
	}
	rows, err := d.DB.QueryContext(ctx, q.SQL, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	types, err := rows.ColumnTypes()
	if err != nil {
		return nil, err
	}
	var data [][]any
	for rows.Next() {
		vals := make([]any, len(types))
		ptrs := make([]any, len(types))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		data = append(data, vals)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if d.Rewrite != nil {
		data = d.Rewrite(q.SQL, data)
	}
	if q.MaxRows > 0 && int64(len(data)) > q.MaxRows {
		return nil, fmt.Errorf("connector query: %w", &connector.LimitError{Limit: connector.LimitRows, Max: q.MaxRows})
	}
	fields := make([]arrow.Field, len(types))
	for i, ct := range types {
		dt, err := arrowType(ct.DatabaseTypeName())
		if err != nil {
			return nil, fmt.Errorf("column %s: %w", ct.Name(), err)
		}
		fields[i] = arrow.Field{Name: ct.Name(), Type: dt, Nullable: true}
	}
	schema := arrow.NewSchema(fields, nil)
	res := &records{version: d.Version}
	for from := 0; from < len(data) || from == 0; from += 4096 {
		to := min(from+4096, len(data))
		rec, err := build(schema, data[from:to])
		if err != nil {
			res.Close()
			return nil, err
		}
		res.recs = append(res.recs, rec)
		if to == len(data) {
			break
		}
	}
	return res, nil
}

func arrowType(db string) (arrow.DataType, error) {
	switch db {
	case "VARCHAR":
		return arrow.BinaryTypes.String, nil
	case "BIGINT", "INTEGER", "HUGEINT", "SMALLINT":
		return arrow.PrimitiveTypes.Int64, nil
	case "DOUBLE", "FLOAT", "DECIMAL":
		return arrow.PrimitiveTypes.Float64, nil
	case "BOOLEAN":
		return arrow.FixedWidthTypes.Boolean, nil
	case "DATE":
		return arrow.FixedWidthTypes.Date32, nil
	case "BIGINT[]", "INTEGER[]":
		return arrow.ListOf(arrow.PrimitiveTypes.Int64), nil
	case "VARCHAR[]":
		return arrow.ListOf(arrow.BinaryTypes.String), nil
	}
	if strings.HasPrefix(db, "DECIMAL") {
		return arrow.PrimitiveTypes.Float64, nil
	}
	return nil, fmt.Errorf("DuckSource does not map DuckDB type %s", db)
}

func build(schema *arrow.Schema, rows [][]any) (arrow.Record, error) {
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for _, row := range rows {
		for i, v := range row {
			fb := b.Field(i)
			if v == nil {
				fb.AppendNull()
				continue
			}
			switch fb := fb.(type) {
			case *array.StringBuilder:
				fb.Append(fmt.Sprint(v))
			case *array.Int64Builder:
				n, ok := toInt64(v)
				if !ok {
					return nil, fmt.Errorf("%T is not an integer", v)
				}
				fb.Append(n)
			case *array.Float64Builder:
				switch x := v.(type) {
				case float64:
					fb.Append(x)
				case float32:
					fb.Append(float64(x))
				default:
					n, ok := toInt64(v)
					if !ok {
						return nil, fmt.Errorf("%T is not a number", v)
					}
					fb.Append(float64(n))
				}
			case *array.BooleanBuilder:
				fb.Append(v.(bool))
			case *array.Date32Builder:
				fb.Append(arrow.Date32FromTime(v.(time.Time)))
			case *array.ListBuilder:
				fb.Append(true)
				for _, e := range v.([]any) {
					switch vb := fb.ValueBuilder().(type) {
					case *array.StringBuilder:
						s, ok := e.(string)
						if !ok {
							return nil, fmt.Errorf("list element %T is not a string", e)
						}
						vb.Append(s)
					case *array.Int64Builder:
						n, ok := toInt64(e)
						if !ok {
							return nil, fmt.Errorf("list element %T is not an integer", e)
						}
						vb.Append(n)
					}
				}
			default:
				return nil, fmt.Errorf("no builder for %T", fb)
			}
		}
	}
	return b.NewRecord(), nil
}

func toInt64(v any) (int64, bool) {
	switch x := v.(type) {
	case int64:
		return x, true
	case int32:
		return int64(x), true
	case int16:
		return int64(x), true
	case int8:
		return int64(x), true
	case int:
		return int64(x), true
	case uint64:
		return int64(x), true
	case uint32:
		return int64(x), true
	}
	return 0, false
}

// records is a finished result held in memory.
type records struct {
	recs    []arrow.Record
	i       int
	version string
}

// DataVersion is the source's Version when the query ran.
func (r *records) DataVersion() string { return r.version }

func (r *records) Next() bool {
	if r.i >= len(r.recs) {
		return false
	}
	r.i++
	return true
}

func (r *records) Record() arrow.Record { return r.recs[r.i-1] }
func (r *records) Err() error           { return nil }
func (r *records) Close() error {
	for _, rec := range r.recs {
		rec.Release()
	}
	r.recs = nil
	return nil
}
