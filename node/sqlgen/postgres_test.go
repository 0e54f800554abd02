package sqlgen

import (
	"context"
	"database/sql"
	"path/filepath"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/internal/pgtest"
	"github.com/havenhealth/haven/node/connector/postgres"
	"github.com/havenhealth/haven/synth"
)

// pg is one throwaway PostgreSQL server for the package's tests, started
// on first use; each test database is a fresh one on it. Without the
// server binaries the PostgreSQL tests are skipped (failed in CI).
var pg pgtest.Shared

// siteSchema is where loadPostgresSite puts a site's tables.
const siteSchema = "cdm"

// openPostgresDSN opens a pool on dsn whose connections resolve
// unqualified names in schema. JIT is off: compiling these wide
// expressions takes PostgreSQL longer (about 2 s) than running them on a
// site's data.
func openPostgresDSN(t testing.TB, dsn, schema string) *sql.DB {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["search_path"] = schema
	cfg.RuntimeParams["jit"] = "off"
	return stdlib.OpenDB(*cfg)
}

// openPostgres returns a pool on a fresh, empty database.
func openPostgres(t testing.TB) *sql.DB {
	t.Helper()
	db := openPostgresDSN(t, pg.DSN(t), "public")
	t.Cleanup(func() { db.Close() })
	return db
}

// testDB is a dialect and a way to get an empty database for it.
type testDB struct {
	d    Dialect
	open func(t testing.TB) *sql.DB
}

// testDialects returns DuckDB and PostgreSQL. Opening a PostgreSQL
// database skips the calling (sub)test when no server can be started.
func testDialects(t testing.TB) []testDB {
	return []testDB{
		{d: DuckDB(), open: func(t testing.TB) *sql.DB {
			db, err := sql.Open("duckdb", "")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		}},
		{d: PostgreSQL(), open: openPostgres},
	}
}

// openSite opens site s of the synthetic network in the dialect's
// database: views over the Parquet files in DuckDB, or the files loaded
// into PostgreSQL.
func openSite(t testing.TB, d Dialect, n *synth.Network, s synth.Site) *sql.DB {
	t.Helper()
	if d.Name() == PostgreSQL().Name() {
		return loadPostgresSite(t, n, s)
	}
	return openDuckDB(t, n, s)
}

// pgSites caches synthetic sites loaded into PostgreSQL, a database each,
// kept for the whole test binary; TestMain closes them.
var pgSites struct {
	mu  sync.Mutex
	dbs map[string]*sql.DB
}

// loadPostgresSite loads site s with the PostgreSQL connector's loader,
// once per test binary.
func loadPostgresSite(t testing.TB, n *synth.Network, s synth.Site) *sql.DB {
	t.Helper()
	pgSites.mu.Lock()
	defer pgSites.mu.Unlock()
	if db, ok := pgSites.dbs[s.ODS]; ok {
		return db
	}
	dsn := pg.DSN(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	dir := filepath.Dir(n.Path(s.Files[cdm.TablePatient].Path))
	if err := postgres.LoadSite(ctx, conn, siteSchema, dir); err != nil {
		t.Fatalf("load %s into PostgreSQL: %v", s.ODS, err)
	}
	db := openPostgresDSN(t, dsn, siteSchema)
	if pgSites.dbs == nil {
		pgSites.dbs = map[string]*sql.DB{}
	}
	pgSites.dbs[s.ODS] = db
	return db
}

// closePostgres closes the cached pools and stops the server.
func closePostgres() error {
	pgSites.mu.Lock()
	for _, db := range pgSites.dbs {
		db.Close()
	}
	pgSites.mu.Unlock()
	return pg.Stop()
}

// TestPostgresMatchesDuckDB runs every reference definition at every site
// in both dialects: the results must be identical, row for row and in the
// same order. (TestReferenceDefinitions checks DuckDB against the
// reference.)
func TestPostgresMatchesDuckDB(t *testing.T) {
	if testing.Short() {
		t.Skip("loads the whole synthetic network into PostgreSQL")
	}
	n := loadNetwork(t)
	ctx := context.Background()
	for _, d := range loadBundle(t).Definitions() {
		t.Run(d.ID, func(t *testing.T) {
			b := bind(t, d, nil)
			p := d.Plan()
			for _, task := range p.Tasks {
				for _, s := range n.SitesOfKind(task.Kind) {
					pdb := loadPostgresSite(t, n, s)
					opts := Options{SiteODS: s.ODS, NDOP: network.ndop}
					duck, err := Compile(b, p, task.Kind, DuckDB(), opts)
					if err != nil {
						t.Fatal(err)
					}
					pgp, err := Compile(b, p, task.Kind, PostgreSQL(), opts)
					if err != nil {
						t.Fatal(err)
					}
					ddb := openDuckDB(t, n, s)
					ds, ps := duck.Statements(), pgp.Statements()
					for i := range ds {
						want, err := query(ctx, ddb, ds[i])
						if err != nil {
							t.Fatalf("%s duckdb: %v", s.ODS, err)
						}
						got, err := query(ctx, pdb, ps[i])
						if err != nil {
							t.Fatalf("%s postgres: %v", s.ODS, err)
						}
						if diff := diffRows(got, want); diff != "" {
							t.Errorf("%s %s %s: postgres differs from duckdb:\n%s", s.ODS, task.Kind, ps[i].Name, diff)
						}
						if len(want) == 0 {
							t.Errorf("%s %s %s: no rows; the comparison proves nothing", s.ODS, task.Kind, ps[i].Name)
						}
					}
				}
			}
		})
	}
}
