package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"github.com/jackc/pgx/v5"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/internal/pgtest"
	"github.com/havenhealth/haven/node/connector"
	"github.com/havenhealth/haven/node/connector/connectortest"
	"github.com/havenhealth/haven/synth"
)

var (
	pg    pgtest.Shared
	cache connectortest.Cache
)

func TestMain(m *testing.M) {
	code := m.Run()
	if err := pg.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		code = 1
	}
	cache.Close()
	os.Exit(code)
}

// network returns a small synthetic network (one practice and its
// trust), generated once per test binary.
func network(t *testing.T) *synth.Network {
	t.Helper()
	dir := cache.Dir(t, "synth small/1 seed 1", func(dir string) error {
		_, err := synth.Generate(context.Background(), synth.Config{Out: dir, Scale: synth.ScaleSmall, Seed: 1, Sites: 1})
		return err
	})
	n, err := synth.LoadNetwork(filepath.Join(dir, "network.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// siteDir returns the directory of the network's first site of kind k.
func siteDir(t *testing.T, n *synth.Network, k cdm.SiteKind) (string, synth.Site) {
	t.Helper()
	s := n.SitesOfKind(k)[0]
	return n.Path(filepath.Dir(s.Files[cdm.TablePatient].Path)), s
}

// loaded returns a backend over a fresh database holding the network's
// first site of kind k in schema cdm.
func loaded(t *testing.T, k cdm.SiteKind) (*Backend, synth.Site) {
	t.Helper()
	dir, site := siteDir(t, network(t), k)
	dsn := pg.DSN(t)
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := LoadSite(ctx, conn, "cdm", dir); err != nil {
		t.Fatal(err)
	}
	return open(t, dsn, Config{Schema: "cdm"}), site
}

func open(t *testing.T, dsn string, cfg Config) *Backend {
	t.Helper()
	cfg.DSN = dsn
	b, err := Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// run runs q and reads the whole result back, batch by batch.
func run(t *testing.T, b *Backend, q connector.Query) (*arrow.Schema, []arrow.Record, error) {
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
	var recs []arrow.Record
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

func TestLoadSiteAndDescribe(t *testing.T) {
	for _, k := range cdm.SiteKinds() {
		t.Run(string(k), func(t *testing.T) {
			b, site := loaded(t, k)
			d, err := b.Describe(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if d.Dialect != connector.DialectPostgres || d.CDMVersion != cdm.Version {
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

func TestDescribeEmptySchema(t *testing.T) {
	b := open(t, pg.DSN(t), Config{Schema: "nothing_here"})
	d, err := b.Describe(t.Context())
	if err != nil || len(d.Tables) != 0 {
		t.Fatalf("Describe = %+v, %v; want no tables", d, err)
	}
}

func TestDescribeRefusesTableWithoutCDMColumn(t *testing.T) {
	dsn := pg.DSN(t)
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	if _, err := conn.Exec(t.Context(), "CREATE SCHEMA cdm; CREATE TABLE cdm.patient (nhs_number text)"); err != nil {
		t.Fatal(err)
	}
	_, err = open(t, dsn, Config{Schema: "cdm"}).Describe(t.Context())
	if err == nil || !strings.Contains(err.Error(), "has no column birth_date") {
		t.Fatalf("err = %v, want it to name the missing column", err)
	}
}

func TestResultTypes(t *testing.T) {
	b := open(t, pg.DSN(t), Config{Schema: "public"})
	schema, recs, err := run(t, b, connector.Query{SQL: `SELECT
		1::int2 AS i2, 2::int4 AS i4, 3::int8 AS i8,
		1.5::float4 AS f4, 2.5::float8 AS f8, 3.25::numeric AS num,
		'x'::text AS t, 'y'::varchar AS v, 'z'::char(3) AS c,
		DATE '2024-01-02' AS d, true AS b, '\x0102'::bytea AS by,
		ARRAY['a', NULL]::text[] AS ta, ARRAY[1, 2]::int4[] AS ia,
		NULL::text AS nt, NULL::date AS nd, NULL::text[] AS na, ''::bytea AS eb, '{}'::text[] AS ea`})
	if err != nil {
		t.Fatal(err)
	}
	wantTypes := map[string]arrow.DataType{
		"i2": arrow.PrimitiveTypes.Int64, "i4": arrow.PrimitiveTypes.Int64, "i8": arrow.PrimitiveTypes.Int64,
		"f4": arrow.PrimitiveTypes.Float64, "f8": arrow.PrimitiveTypes.Float64, "num": arrow.PrimitiveTypes.Float64,
		"t": arrow.BinaryTypes.String, "v": arrow.BinaryTypes.String, "c": arrow.BinaryTypes.String,
		"d": arrow.FixedWidthTypes.Date32, "b": arrow.FixedWidthTypes.Boolean, "by": arrow.BinaryTypes.Binary,
		"ta": arrow.ListOf(arrow.BinaryTypes.String), "ia": arrow.ListOf(arrow.PrimitiveTypes.Int64),
		"nt": arrow.BinaryTypes.String, "nd": arrow.FixedWidthTypes.Date32, "na": arrow.ListOf(arrow.BinaryTypes.String),
		"eb": arrow.BinaryTypes.Binary, "ea": arrow.ListOf(arrow.BinaryTypes.String),
	}
	for _, f := range schema.Fields() {
		if !arrow.TypeEqual(f.Type, wantTypes[f.Name]) {
			t.Errorf("%s: %s, want %s", f.Name, f.Type, wantTypes[f.Name])
		}
	}
	if len(recs) != 1 || recs[0].NumRows() != 1 {
		t.Fatalf("%d records", len(recs))
	}
	got := map[string]string{}
	for i, col := range recs[0].Columns() {
		got[schema.Field(i).Name] = col.ValueStr(0)
	}
	want := map[string]string{
		"i2": "1", "i4": "2", "i8": "3", "f4": "1.5", "f8": "2.5", "num": "3.25",
		"t": "x", "v": "y", "c": "z  ", "d": "2024-01-02", "b": "true", "by": "AQI=",
		"ta": `["a",null]`, "ia": "[1,2]", "nt": "(null)", "nd": "(null)", "na": "(null)", "eb": "", "ea": "[]",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func TestUnsupportedTypeNamed(t *testing.T) {
	b := open(t, pg.DSN(t), Config{Schema: "public"})
	_, _, err := run(t, b, connector.Query{SQL: "SELECT 1 AS n, now() AS stamped"})
	if err == nil || !strings.Contains(err.Error(), `column 2 "stamped" has type timestamptz`) {
		t.Fatalf("err = %v, want it to name the column and its type", err)
	}
}

func TestBatchesAreBounded(t *testing.T) {
	b := open(t, pg.DSN(t), Config{Schema: "public", BatchRows: 1000})
	_, recs, err := run(t, b, connector.Query{SQL: "SELECT g AS n FROM generate_series(1, 20500) g"})
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, r := range recs {
		if r.NumRows() > 1000 {
			t.Errorf("a batch of %d rows, limit 1000", r.NumRows())
		}
		total += r.NumRows()
	}
	if total != 20500 || len(recs) != 21 {
		t.Errorf("%d rows in %d batches, want 20500 in 21", total, len(recs))
	}

	b = open(t, pg.DSN(t), Config{Schema: "public", BatchBytes: 64 << 10})
	_, recs, err = run(t, b, connector.Query{SQL: "SELECT repeat('x', 1000) AS s FROM generate_series(1, 1000)"})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) < 10 {
		t.Errorf("1 MB of text in %d batches of at most 64 KiB", len(recs))
	}
}

func TestRowLimit(t *testing.T) {
	b := open(t, pg.DSN(t), Config{Schema: "public", BatchRows: 10})
	var buf bytes.Buffer
	err := b.Query(t.Context(), connector.Query{SQL: "SELECT g FROM generate_series(1, 1000) g", MaxRows: 100, MaxBytes: 1 << 20}, &buf)
	le, ok := errors.AsType[*connector.LimitError](err)
	if !ok || le.Limit != connector.LimitRows || le.Max != 100 {
		t.Fatalf("err = %v, want the row limit", err)
	}
	if buf.Len() > 4<<10 {
		t.Errorf("%d bytes written past a 100-row limit", buf.Len())
	}
}

func TestReadOnly(t *testing.T) {
	b, _ := loaded(t, cdm.KindGP)
	for sql, want := range map[string]string{
		"DELETE FROM patient":                                     "read-only transaction",
		"CREATE TABLE stolen AS SELECT * FROM patient":            "read-only transaction",
		"SELECT set_config('transaction_read_only', 'off', true)": "read-write mode must be set before any query",
	} {
		var buf bytes.Buffer
		err := b.Query(t.Context(), connector.Query{SQL: sql, MaxRows: 10, MaxBytes: 1 << 20}, &buf)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", sql, err, want)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	dsn := pg.DSN(t)
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"bad schema", Config{DSN: dsn, Schema: `cdm"; DROP`}, "want a letter or underscore"},
		{"unparsable DSN", Config{DSN: "postgres://haven:s3cret-pw@127.0.0.1:notaport/db", Schema: "cdm"}, "does not parse"},
		{"no server", Config{DSN: "postgres://haven:s3cret-pw@127.0.0.1:1/db?connect_timeout=2", Schema: "cdm"}, "connect"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Open(t.Context(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to say %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
	if s := (Config{DSN: "postgres://haven:s3cret-pw@h/db", Schema: "cdm"}).String(); strings.Contains(s, "s3cret") {
		t.Errorf("Config.String shows the password: %s", s)
	}
}

func TestLoadSiteErrors(t *testing.T) {
	dsn := pg.DSN(t)
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	if err := LoadSite(t.Context(), conn, "cdm", t.TempDir()); err == nil || !strings.Contains(err.Error(), "no CDM table files") {
		t.Errorf("empty directory: err = %v", err)
	}
	if err := LoadSite(t.Context(), conn, "bad-name", t.TempDir()); err == nil {
		t.Error("bad schema name accepted")
	}
	// A registration file named as patient: the columns are checked.
	gp, _ := siteDir(t, network(t), cdm.KindGP)
	dir := t.TempDir()
	data, err := os.ReadFile(filepath.Join(gp, "registration.parquet"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "patient.parquet"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := LoadSite(t.Context(), conn, "cdm", dir); err == nil || !strings.Contains(err.Error(), "columns, the CDM table patient has") {
		t.Errorf("wrong file: err = %v", err)
	}
}

// TestLoadSiteKeepsValues checks a few loaded values against the Parquet
// file, lists and nulls included.
func TestLoadSiteKeepsValues(t *testing.T) {
	b, site := loaded(t, cdm.KindTrust)
	_, recs, err := run(t, b, connector.Query{SQL: `SELECT
		count(*) AS n,
		count(*) FILTER (WHERE procedures IS NULL) AS null_lists,
		count(*) FILTER (WHERE cardinality(procedures) = 0) AS empty_lists,
		sum(cardinality(procedures)) AS codes,
		count(discharge_date) AS discharged
		FROM apc_episode`})
	if err != nil {
		t.Fatal(err)
	}
	got := recs[0]
	if n := got.Column(0).(*array.Int64).Value(0); n != site.Files[cdm.TableAPCEpisode].Rows {
		t.Errorf("%d episodes, network.yaml says %d", n, site.Files[cdm.TableAPCEpisode].Rows)
	}
	if codes := got.Column(3).(*array.Int64).Value(0); codes == 0 {
		t.Error("no procedure codes loaded")
	}
}
