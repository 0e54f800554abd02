//go:build duckdb_arrow

package duckdb

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	arrow17 "github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/ipc"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/node/connector"
	"github.com/havenhealth/haven/node/connector/connectortest"
	"github.com/havenhealth/haven/synth"
)

var cache connectortest.Cache

func TestMain(m *testing.M) {
	code := m.Run()
	cache.Close()
	os.Exit(code)
}

// network returns a synthetic network, generated once per test binary.
func network(t testing.TB, scale synth.Scale, sites int) *synth.Network {
	t.Helper()
	dir := cache.Dir(t, fmt.Sprintf("synth %s/%d seed 1", scale, sites), func(dir string) error {
		_, err := synth.Generate(context.Background(), synth.Config{Out: dir, Scale: scale, Seed: 1, Sites: sites})
		return err
	})
	n, err := synth.LoadNetwork(filepath.Join(dir, "network.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func siteDir(t testing.TB, n *synth.Network, k cdm.SiteKind) (string, synth.Site) {
	t.Helper()
	s := n.SitesOfKind(k)[0]
	return n.Path(filepath.Dir(s.Files[cdm.TablePatient].Path)), s
}

func open(t testing.TB, cfg Config) *Backend {
	t.Helper()
	b, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// run runs q and reads the result back with arrow/go/v17, as the node does.
func run(t *testing.T, b *Backend, q connector.Query) (*arrow17.Schema, []arrow17.Record, error) {
	t.Helper()
	var buf bytes.Buffer
	if err := b.Query(t.Context(), q, &buf); err != nil {
		return nil, nil, err
	}
	r, err := ipc.NewReader(&buf)
	if err != nil {
		t.Fatalf("result is not Arrow IPC: %v", err)
	}
	defer r.Release()
	var recs []arrow17.Record
	for r.Next() {
		rec := r.Record()
		rec.Retain()
		t.Cleanup(rec.Release)
		recs = append(recs, rec)
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	return r.Schema(), recs, nil
}

func TestDescribe(t *testing.T) {
	n := network(t, synth.ScaleSmall, 1)
	for _, k := range cdm.SiteKinds() {
		t.Run(string(k), func(t *testing.T) {
			dir, site := siteDir(t, n, k)
			d, err := open(t, Config{Dir: dir}).Describe(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if d.Dialect != connector.DialectDuckDB || d.CDMVersion != cdm.Version {
				t.Errorf("Describe = %+v", d)
			}
			var want []connector.TableInfo
			for _, tbl := range cdm.TablesFor(k) {
				want = append(want, connector.TableInfo{Name: tbl.Name, Rows: site.Files[tbl.Name].Rows})
			}
			if fmt.Sprint(d.Tables) != fmt.Sprint(want) {
				t.Errorf("tables = %v, want %v (from network.yaml)", d.Tables, want)
			}
		})
	}
}

func TestResultTypesNormalised(t *testing.T) {
	dir, _ := siteDir(t, network(t, synth.ScaleSmall, 1), cdm.KindGP)
	b := open(t, Config{Dir: dir})
	schema, recs, err := run(t, b, connector.Query{SQL: `SELECT
		1::TINYINT AS i1, 2::INTEGER AS i4, 3::BIGINT AS i8, 4::UINTEGER AS u4,
		1.5::FLOAT AS f4, 2.5::DOUBLE AS f8, 3.25 AS dec, sum(x) AS huge,
		'x' AS s, 'y'::BLOB AS bl, DATE '2024-01-02' AS d, true AS b,
		['a', NULL] AS sl, [1, 2]::INTEGER[] AS il, NULL AS n
		FROM (VALUES (10::BIGINT), (20)) v(x)`})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"i1": "int64 1", "i4": "int64 2", "i8": "int64 3", "u4": "int64 4",
		"f4": "float64 1.5", "f8": "float64 2.5", "dec": "float64 3.25", "huge": "float64 30",
		"s": "utf8 x", "bl": "binary eQ==", "d": "date32 2024-01-02", "b": "bool true",
		"sl": `list<item: utf8, nullable> ["a",null]`, "il": "list<item: int64, nullable> [1,2]", "n": "int64 (null)",
	}
	for i, f := range schema.Fields() {
		got := fmt.Sprintf("%s %s", f.Type, recs[0].Column(i).ValueStr(0))
		if got != want[f.Name] {
			t.Errorf("%s = %s, want %s", f.Name, got, want[f.Name])
		}
	}
}

func TestUnsupportedTypeNamed(t *testing.T) {
	dir, _ := siteDir(t, network(t, synth.ScaleSmall, 1), cdm.KindGP)
	_, _, err := run(t, open(t, Config{Dir: dir}), connector.Query{SQL: "SELECT 1 AS n, now() AS stamped"})
	if err == nil || !strings.Contains(err.Error(), `column 2 "stamped" has Arrow type timestamp`) {
		t.Fatalf("err = %v, want it to name the column and its type", err)
	}
}

// TestLockedDown checks that a query reaches nothing but the site's files
// and cannot undo the settings that make it so.
func TestLockedDown(t *testing.T) {
	n := network(t, synth.ScaleSmall, 1)
	dir, _ := siteDir(t, n, cdm.KindGP)
	b := open(t, Config{Dir: dir})
	for _, sql := range []string{
		"SELECT * FROM read_csv('/etc/passwd')",
		"SELECT * FROM read_parquet(" + quoteString(n.Path(synth.NDOPFile)) + ")",
		"SET enable_external_access = true",
		"SET allowed_directories = ['/']",
		"INSTALL httpfs",
		"COPY (SELECT * FROM patient) TO '/tmp/haven-stolen.csv'",
	} {
		var buf bytes.Buffer
		err := b.Query(t.Context(), connector.Query{SQL: sql, MaxRows: 10, MaxBytes: 1 << 20}, &buf)
		if err == nil {
			t.Errorf("%s: allowed", sql)
			continue
		}
		t.Logf("%s: %v", sql, err)
	}
}

// TestSiteDirectoryQuoted opens a site whose path has a quote and a
// backslash in it, and CSV files in place of Parquet.
func TestSiteDirectoryQuoted(t *testing.T) {
	dir := filepath.Join(t.TempDir(), `it's a \site`)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	csv := "nhs_number,birth_date,sex,date_of_death,lsoa,practice_ods\n" +
		"9434765919,1950-03-01,F,,E01000001,G80001\n" +
		"9434765870,1980-12-31,M,2020-01-01,,G80001\n"
	if err := os.WriteFile(filepath.Join(dir, "patient.csv"), []byte(csv), 0o644); err != nil {
		t.Fatal(err)
	}
	b := open(t, Config{Dir: dir})
	d, err := b.Describe(t.Context())
	if err != nil || fmt.Sprint(d.Tables) != "[{patient 2}]" {
		t.Fatalf("Describe = %+v, %v", d, err)
	}
	_, recs, err := run(t, b, connector.Query{SQL: "SELECT count(date_of_death) AS died, min(birth_date) AS first FROM patient"})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(recs[0].Column(0).ValueStr(0), " ", recs[0].Column(1).ValueStr(0)); got != "1 1950-03-01" {
		t.Errorf("got %s", got)
	}
}

func TestOpenErrors(t *testing.T) {
	empty := t.TempDir()
	both := t.TempDir()
	for _, f := range []string{"patient.csv", "patient.parquet"} {
		os.WriteFile(filepath.Join(both, f), nil, 0o644)
	}
	badCols := t.TempDir()
	os.WriteFile(filepath.Join(badCols, "patient.csv"), []byte("nhs_number\n1\n"), 0o644)
	tests := []struct {
		name string
		dir  string
		want string
	}{
		{"missing", filepath.Join(empty, "nope"), "no such file"},
		{"no tables", empty, "no CDM table files"},
		{"both formats", both, "keep one"},
		{"missing column", badCols, "table patient"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Open(t.Context(), Config{Dir: tt.dir})
			if err == nil {
				b.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to say %q", err, tt.want)
			}
		})
	}
}

// The data version stays while the files do, and changes when one is
// rewritten, even to the same size.
func TestDataVersion(t *testing.T) {
	src, _ := siteDir(t, network(t, synth.ScaleSmall, 1), cdm.KindGP)
	dir := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b := open(t, Config{Dir: dir})
	v1, err := b.DataVersion()
	if err != nil || v1 == "" {
		t.Fatalf("DataVersion = %q, %v", v1, err)
	}
	if v, _ := b.DataVersion(); v != v1 {
		t.Errorf("data version %q, then %q with nothing changed", v1, v)
	}
	// The same bytes written again, a moment later: a new modification
	// time is a new version.
	f := filepath.Join(dir, cdm.TableOptOut+".parquet")
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(f, later, later); err != nil {
		t.Fatal(err)
	}
	if v, _ := b.DataVersion(); v == v1 || v == "" {
		t.Errorf("data version %q after opt_out changed, before %q", v, v1)
	}
	if err := os.Remove(f); err != nil {
		t.Fatal(err)
	}
	if v, err := b.DataVersion(); err == nil {
		t.Errorf("data version %q with opt_out gone, want an error", v)
	}
}
