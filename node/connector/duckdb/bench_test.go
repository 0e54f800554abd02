//go:build duckdb_arrow

package duckdb

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"testing"
	"time"

	duckdb "github.com/duckdb/duckdb-go/v2"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/node/connector"
	"github.com/havenhealth/haven/synth"
)

// benchSQL is an aggregate of the kind a node runs: patients with a
// condition by age band and sex, and how many of them were prescribed in
// the year before the index date.
const benchSQL = `SELECT CAST(floor((CAST($1 AS DATE) - p.birth_date) / 3652.5) AS BIGINT) * 10 AS age_band, p.sex,
	count(*) AS patients, count(m.nhs_number) AS treated
FROM patient p
LEFT JOIN (SELECT DISTINCT nhs_number FROM medication
           WHERE issue_date BETWEEN CAST($1 AS DATE) - 365 AND CAST($1 AS DATE)) m USING (nhs_number)
WHERE p.birth_date <= CAST($1 AS DATE)
  AND p.nhs_number IN (SELECT nhs_number FROM clinical_event WHERE snomed_code IN (SELECT unnest(CAST($2 AS VARCHAR[]))))
GROUP BY 1, 2 ORDER BY 1, 2`

var (
	benchDate  = time.Date(2020, 4, 1, 0, 0, 0, 0, time.UTC)
	benchCodes = []string{"44054006", "38341003"} // type 2 diabetes, hypertension
)

// BenchmarkQueryDuckDB runs one aggregate on a GP site of about 9,000
// patients (the first practice of the ICB scale) three ways: through the
// plugin as a node does (process boundary, gRPC, Arrow IPC, host checks),
// in-process through the same Backend (DuckDB's Arrow and the IPC
// encoding, no plugin), and in-process with duckdb-go's database/sql
// driver. plugin/in-process-sql is the cost of the plugin boundary.
func BenchmarkQueryDuckDB(b *testing.B) {
	benchQuery(b, benchSQL, connector.Date(benchDate), connector.StringList(benchCodes))
}

// BenchmarkQueryDuckDBTrivial is BenchmarkQueryDuckDB for a query that
// does no work: what is left is the fixed cost of one query each way.
func BenchmarkQueryDuckDBTrivial(b *testing.B) {
	benchQuery(b, "SELECT CAST($1 AS BIGINT) AS n", connector.Int64(42))
}

func benchQuery(b *testing.B, sqlText string, args ...connector.Value) {
	dir, _ := siteDir(b, network(b, synth.ScaleICB, 1), cdm.KindGP)
	q := connector.Query{SQL: sqlText, Args: args}
	sqlArgs := make([]any, len(args))
	for i, a := range args {
		sqlArgs[i] = argOf(a)
	}
	ctx := context.Background()

	b.Run("plugin", func(b *testing.B) {
		bin := cache.Plugin(b, "github.com/havenhealth/haven/cmd/haven-connector-duckdb", "duckdb_arrow")
		h, err := connector.Launch(ctx, connector.LaunchConfig{
			Path: bin.Path, SHA256: bin.SHA256, Args: []string{"--dir", dir},
			Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			b.Fatal(err)
		}
		defer h.Close()
		var rows int64
		for b.Loop() {
			res, err := h.Query(ctx, q)
			if err != nil {
				b.Fatal(err)
			}
			for res.Next() {
			}
			if err := res.Err(); err != nil {
				b.Fatal(err)
			}
			rows = res.Rows()
			res.Close()
		}
		b.ReportMetric(float64(rows), "rows/op")
	})

	b.Run("in-process-arrow", func(b *testing.B) {
		be := open(b, Config{Dir: dir})
		q := q
		q.MaxRows, q.MaxBytes = connector.DefaultMaxRows, connector.DefaultMaxBytes
		for b.Loop() {
			if err := be.Query(ctx, q, io.Discard); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("in-process-sql", func(b *testing.B) {
		be := open(b, Config{Dir: dir}) // for the view definitions
		c, err := duckdb.NewConnector("", nil)
		if err != nil {
			b.Fatal(err)
		}
		db := sql.OpenDB(c)
		defer db.Close()
		for _, t := range cdm.TablesFor(cdm.KindGP) {
			view, _, err := be.viewSQL(t)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, view); err != nil {
				b.Fatal(err)
			}
		}
		var rows int64
		for b.Loop() {
			rs, err := db.QueryContext(ctx, sqlText, sqlArgs...)
			if err != nil {
				b.Fatal(err)
			}
			cols, err := rs.Columns()
			if err != nil {
				b.Fatal(err)
			}
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			rows = 0
			for rs.Next() {
				if err := rs.Scan(ptrs...); err != nil {
					b.Fatal(err)
				}
				rows++
			}
			if err := rs.Err(); err != nil {
				b.Fatal(err)
			}
			rs.Close()
		}
		b.ReportMetric(float64(rows), "rows/op")
	})
}
