package sqlgen

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/policy/catalog"
	"github.com/havenhealth/haven/synth"
)

// network is the small synthetic network (cut to two practices with
// -short), generated at most once per test binary by loadNetwork and
// removed by TestMain. Tests only read it.
var network struct {
	once sync.Once
	dir  string
	n    *synth.Network
	ndop []string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if err := closePostgres(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
	}
	for _, dir := range []string{network.dir, icbPractice.dir} {
		if dir != "" {
			os.RemoveAll(dir)
		}
	}
	os.Exit(code)
}

func loadNetwork(t testing.TB) *synth.Network {
	t.Helper()
	network.once.Do(func() {
		network.dir, network.err = os.MkdirTemp("", "sqlgen-synth-")
		if network.err != nil {
			return
		}
		out := filepath.Join(network.dir, "net")
		cfg := synth.Config{Out: out, Scale: synth.ScaleSmall, Seed: 1}
		if testing.Short() {
			cfg.Sites = 2 // two practices and the trusts they use
		}
		if _, network.err = synth.Generate(context.Background(), cfg); network.err != nil {
			return
		}
		if network.n, network.err = synth.LoadNetwork(filepath.Join(out, synth.NetworkFile)); network.err != nil {
			return
		}
		network.ndop, network.err = readNDOP(network.n.Path(network.n.NationalOptOut.Path))
	})
	if network.err != nil {
		t.Fatalf("synthetic network: %v", network.err)
	}
	return network.n
}

// readNDOP reads the national opt-out list: a header, then one number a line.
func readNDOP(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for first := true; sc.Scan(); first = false {
		if !first {
			out = append(out, strings.TrimSpace(sc.Text()))
		}
	}
	return out, sc.Err()
}

// loadBundle loads the reference catalogue.
func loadBundle(t testing.TB) *catalog.Catalog {
	t.Helper()
	c, err := catalog.Load(os.DirFS("../../policy/bundle"))
	if err != nil {
		t.Fatalf("load bundle: %v", err)
	}
	return c
}

// openDuckDB opens an in-memory DuckDB with one view per CDM table of site
// s over its Parquet file, the way a file-based connector would.
func openDuckDB(t testing.TB, n *synth.Network, s synth.Site) *sql.DB {
	t.Helper()
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for _, tbl := range cdm.TablesFor(s.Kind) {
		f, ok := s.Files[tbl.Name]
		if !ok {
			t.Fatalf("site %s has no %s file", s.ODS, tbl.Name)
		}
		// Test-only DDL: the path is ours, not input.
		path := strings.ReplaceAll(n.Path(f.Path), "'", "''")
		if _, err := db.Exec("CREATE VIEW " + tbl.Name + " AS SELECT * FROM read_parquet('" + path + "')"); err != nil {
			t.Fatalf("site %s: view %s: %v", s.ODS, tbl.Name, err)
		}
	}
	return db
}
