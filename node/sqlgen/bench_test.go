package sqlgen

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/synth"
)

func BenchmarkCompile(b *testing.B) {
	for _, d := range loadBundle(b).Definitions() {
		p := d.Plan()
		bound := bind(b, d, nil)
		for _, task := range p.Tasks {
			b.Run(d.ID+"/"+string(task.Kind), func(b *testing.B) {
				opts := Options{SiteODS: "A00001", NDOP: []string{"9434765919"}}
				for b.Loop() {
					if _, err := Compile(bound, p, task.Kind, DuckDB(), opts); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// icbPractice is the practice of an ICB-scale network (its first thirty
// practices) whose list is nearest 10,000 patients, generated at most once
// per test binary; TestMain removes it.
var icbPractice struct {
	once sync.Once
	dir  string
	n    *synth.Network
	site synth.Site
	ndop []string
	err  error
}

func loadICBPractice(b *testing.B) (*synth.Network, synth.Site, []string) {
	b.Helper()
	icbPractice.once.Do(func() {
		icbPractice.dir, icbPractice.err = os.MkdirTemp("", "sqlgen-icb-")
		if icbPractice.err != nil {
			return
		}
		out := filepath.Join(icbPractice.dir, "net")
		cfg := synth.Config{Out: out, Scale: synth.ScaleICB, Seed: 1, Sites: 30}
		if _, icbPractice.err = synth.Generate(context.Background(), cfg); icbPractice.err != nil {
			return
		}
		n, err := synth.LoadNetwork(filepath.Join(out, synth.NetworkFile))
		if err != nil {
			icbPractice.err = err
			return
		}
		best := -1
		for _, s := range n.SitesOfKind(cdm.KindGP) {
			if d := max(s.RegisteredPopulation-10_000, 10_000-s.RegisteredPopulation); best < 0 || d < best {
				best, icbPractice.site = d, s
			}
		}
		icbPractice.n = n
		icbPractice.ndop, icbPractice.err = readNDOP(n.Path(n.NationalOptOut.Path))
	})
	if icbPractice.err != nil {
		b.Fatalf("ICB network: %v", icbPractice.err)
	}
	return icbPractice.n, icbPractice.site, icbPractice.ndop
}

// BenchmarkT2DMPrevalenceDuckDB runs the aggregate Result of
// t2dm-prevalence at a practice of about 10,000 patients, over views on
// its Parquet files (as a file connector reads them) and over the same
// data copied into DuckDB tables.
func BenchmarkT2DMPrevalenceDuckDB(b *testing.B) {
	n, s, ndop := loadICBPractice(b)
	d, _ := loadBundle(b).Get("t2dm-prevalence")
	prog, err := Compile(bind(b, d, nil), d.Plan(), cdm.KindGP, DuckDB(), Options{SiteODS: s.ODS, NDOP: ndop})
	if err != nil {
		b.Fatal(err)
	}
	for _, copyIn := range []bool{false, true} {
		name := "parquet-views"
		if copyIn {
			name = "tables"
		}
		b.Run(name, func(b *testing.B) {
			db := openDuckDB(b, n, s)
			if copyIn {
				db = copyToTables(b, db, s.Kind)
			}
			cells := 0
			for b.Loop() {
				rows, err := query(context.Background(), db, prog.Result)
				if err != nil {
					b.Fatal(err)
				}
				cells = len(rows)
			}
			b.ReportMetric(float64(s.RegisteredPopulation), "registered")
			b.ReportMetric(float64(cells), "cells")
		})
	}
}

// copyToTables returns a new in-memory DuckDB holding tables copied from
// the views of db.
func copyToTables(b *testing.B, views *sql.DB, kind cdm.SiteKind) *sql.DB {
	b.Helper()
	conn, err := views.Conn(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	for _, tbl := range cdm.TablesFor(kind) {
		if _, err := conn.ExecContext(context.Background(), "CREATE TABLE t_"+tbl.Name+" AS SELECT * FROM "+tbl.Name); err != nil {
			b.Fatal(err)
		}
		if _, err := conn.ExecContext(context.Background(), "DROP VIEW "+tbl.Name); err != nil {
			b.Fatal(err)
		}
		if _, err := conn.ExecContext(context.Background(), "ALTER TABLE t_"+tbl.Name+" RENAME TO "+tbl.Name); err != nil {
			b.Fatal(err)
		}
	}
	return views
}

// BenchmarkT2DMPrevalencePostgres is the same in PostgreSQL, loaded by the
// PostgreSQL connector's loader.
func BenchmarkT2DMPrevalencePostgres(b *testing.B) {
	n, s, ndop := loadICBPractice(b)
	db := loadPostgresSite(b, n, s)
	d, _ := loadBundle(b).Get("t2dm-prevalence")
	prog, err := Compile(bind(b, d, nil), d.Plan(), cdm.KindGP, PostgreSQL(), Options{SiteODS: s.ODS, NDOP: ndop})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := query(context.Background(), db, prog.Result); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(s.RegisteredPopulation), "registered")
}
