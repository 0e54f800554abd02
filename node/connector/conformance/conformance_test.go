package conformance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/jackc/pgx/v5"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/internal/pgtest"
	"github.com/havenhealth/haven/node/connector"
	"github.com/havenhealth/haven/node/connector/connectortest"
	"github.com/havenhealth/haven/node/connector/postgres"
	"github.com/havenhealth/haven/synth"
)

var (
	cache connectortest.Cache
	pg    pgtest.Shared
	fix   fixtures
)

func TestMain(m *testing.M) {
	code := m.Run()
	fix.close()
	if err := pg.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		code = 1
	}
	cache.Close()
	os.Exit(code)
}

// plugin is one running connector plugin and what it logged.
type plugin struct {
	name string
	host *connector.Host
	logs *logRecorder
}

// fixtures are the plugins, started once for the test binary, each
// reading the same site: the network's trust, whose tables include a list
// column, and its GP practice.
type fixtures struct {
	mu      sync.Mutex
	plugins map[cdm.SiteKind][]plugin
	site    map[cdm.SiteKind]synth.Site
}

func (f *fixtures) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ps := range f.plugins {
		for _, p := range ps {
			p.host.Close()
		}
	}
}

// pluginsFor returns the DuckDB and PostgreSQL plugins reading the first
// site of kind k.
func pluginsFor(t *testing.T, k cdm.SiteKind) ([]plugin, synth.Site) {
	t.Helper()
	fix.mu.Lock()
	defer fix.mu.Unlock()
	if ps, ok := fix.plugins[k]; ok {
		return ps, fix.site[k]
	}
	netDir := cache.Dir(t, "synth small/1 seed 1", func(dir string) error {
		_, err := synth.Generate(context.Background(), synth.Config{Out: dir, Scale: synth.ScaleSmall, Seed: 1, Sites: 1})
		return err
	})
	n, err := synth.LoadNetwork(filepath.Join(netDir, "network.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	site := n.SitesOfKind(k)[0]
	dir := n.Path(filepath.Dir(site.Files[cdm.TablePatient].Path))

	dsn := pg.DSN(t)
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	if err := postgres.LoadSite(t.Context(), conn, "cdm", dir); err != nil {
		t.Fatal(err)
	}

	duck := cache.Plugin(t, "github.com/havenhealth/haven/cmd/haven-connector-duckdb", "duckdb_arrow")
	pgBin := cache.Plugin(t, "github.com/havenhealth/haven/cmd/haven-connector-postgres")
	var ps []plugin
	for _, p := range []struct {
		name string
		bin  connectortest.Binary
		args []string
		env  []string
	}{
		{"duckdb", duck, []string{"--dir", dir, "--threads", "1"}, nil},
		{"postgres", pgBin, []string{"--schema", "cdm", "--dsn-env", "HAVEN_TEST_DSN"}, []string{"HAVEN_TEST_DSN=" + dsn}},
	} {
		logs := &logRecorder{}
		h, err := connector.Launch(context.Background(), connector.LaunchConfig{
			Path: p.bin.Path, SHA256: p.bin.SHA256, Args: p.args, Env: p.env, Logger: slog.New(logs),
		})
		if err != nil {
			t.Fatalf("launch %s: %v", p.name, err)
		}
		ps = append(ps, plugin{name: p.name, host: h, logs: logs})
	}
	if fix.plugins == nil {
		fix.plugins, fix.site = map[cdm.SiteKind][]plugin{}, map[cdm.SiteKind]synth.Site{}
	}
	fix.plugins[k], fix.site[k] = ps, site
	return ps, site
}

// logRecorder keeps every log record, for tests to look for what a plugin
// logged.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecorder) WithGroup(string) slog.Handler      { return h }

// count returns how many records have msg and an attribute whose value
// contains attr.
func (h *logRecorder) count(msg, attr string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.records {
		if r.Message != msg {
			continue
		}
		r.Attrs(func(a slog.Attr) bool {
			if strings.Contains(a.Value.String(), attr) {
				n++
				return false
			}
			return true
		})
	}
	return n
}

func (h *logRecorder) dump() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var b strings.Builder
	for _, r := range h.records {
		fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
		r.Attrs(func(a slog.Attr) bool {
			fmt.Fprintf(&b, " %s=%s", a.Key, a.Value)
			return true
		})
		b.WriteByte('\n')
	}
	return b.String()
}

// table is a result read whole: its schema and its rows as strings, floats
// rounded to 9 significant digits, since the two engines add in different
// orders.
type table struct {
	schema *arrow.Schema
	rows   [][]string
}

func readTable(ctx context.Context, c connector.Connector, q connector.Query) (table, error) {
	res, err := c.Query(ctx, q)
	if err != nil {
		return table{}, err
	}
	defer res.Close()
	tb := table{schema: res.Schema()}
	for res.Next() {
		rec := res.Record()
		for i := range int(rec.NumRows()) {
			row := make([]string, rec.NumCols())
			for j, col := range rec.Columns() {
				row[j] = cell(col, i)
			}
			tb.rows = append(tb.rows, row)
		}
	}
	return tb, res.Err()
}

func cell(col arrow.Array, i int) string {
	if f, ok := col.(*array.Float64); ok && f.IsValid(i) {
		v := f.Value(i)
		if math.IsInf(v, 0) || math.IsNaN(v) {
			return fmt.Sprint(v)
		}
		return fmt.Sprintf("%.9g", v)
	}
	return col.ValueStr(i)
}

func sameSchema(a, b *arrow.Schema) bool {
	if a.NumFields() != b.NumFields() {
		return false
	}
	for i := range a.NumFields() {
		if a.Field(i).Name != b.Field(i).Name || !arrow.TypeEqual(a.Field(i).Type, b.Field(i).Type) {
			return false
		}
	}
	return true
}

var (
	indexDate = time.Date(2020, 4, 1, 0, 0, 0, 0, time.UTC)
	// SNOMED CT codes for type 2 diabetes and hypertension, as synth uses.
	conditions = []string{"44054006", "38341003"}
)

// TestSameResults runs each statement, one SQL text for both dialects,
// on both plugins and wants the same, non-empty result from each.
func TestSameResults(t *testing.T) {
	tests := []struct {
		name string
		kind cdm.SiteKind
		sql  string
		args []connector.Value
	}{
		{"string argument", cdm.KindGP,
			"SELECT count(*) AS n FROM patient WHERE sex = $1",
			[]connector.Value{connector.String(cdm.SexFemale)}},
		{"date argument", cdm.KindGP,
			"SELECT count(*) AS n FROM patient WHERE birth_date < CAST($1 AS DATE)",
			[]connector.Value{connector.Date(time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC))}},
		{"int argument in date arithmetic", cdm.KindGP,
			"SELECT count(*) AS n FROM clinical_event WHERE event_date BETWEEN CAST($1 AS DATE) - CAST($2 AS INTEGER) AND CAST($1 AS DATE)",
			[]connector.Value{connector.Date(indexDate), connector.Int64(365)}},
		{"float argument", cdm.KindGP,
			"SELECT count(*) AS n, min(numeric_value) AS lowest FROM clinical_event WHERE numeric_value > CAST($1 AS FLOAT8)",
			[]connector.Value{connector.Float64(140.5)}},
		{"bool argument", cdm.KindGP,
			"SELECT count(*) AS n FROM patient WHERE (date_of_death IS NULL) = CAST($1 AS BOOLEAN)",
			[]connector.Value{connector.Bool(false)}},
		{"list argument", cdm.KindGP,
			"SELECT count(DISTINCT nhs_number) AS n FROM clinical_event WHERE snomed_code IN (SELECT unnest(CAST($1 AS TEXT[])))",
			[]connector.Value{connector.StringList(conditions)}},
		{"list argument with ANY", cdm.KindTrust,
			"SELECT count(*) AS n FROM apc_episode WHERE admission_method = ANY(CAST($1 AS TEXT[]))",
			[]connector.Value{connector.StringList([]string{cdm.AdmissionEmergency, cdm.AdmissionMaternity})}},
		{"null argument", cdm.KindGP,
			"SELECT count(*) AS n FROM patient WHERE lsoa IS NOT DISTINCT FROM CAST($1 AS TEXT)",
			[]connector.Value{connector.Null()}},
		{"group by", cdm.KindGP,
			`SELECT sex, count(*) AS n, CAST(sum(CASE WHEN date_of_death IS NULL THEN 1 ELSE 0 END) AS BIGINT) AS alive
			FROM patient GROUP BY sex ORDER BY sex`, nil},
		{"age bands on an index date", cdm.KindGP,
			`SELECT CAST(floor((CAST($1 AS DATE) - birth_date) / 3652.5) AS BIGINT) * 10 AS age_band, sex, count(*) AS n
			FROM patient
			WHERE birth_date <= CAST($1 AS DATE)
			  AND nhs_number IN (SELECT nhs_number FROM clinical_event WHERE snomed_code IN (SELECT unnest(CAST($2 AS TEXT[]))))
			GROUP BY 1, 2 ORDER BY 1, 2`,
			[]connector.Value{connector.Date(indexDate), connector.StringList(conditions)}},
		{"dates and floats out", cdm.KindGP,
			`SELECT snomed_code, min(event_date) AS first, max(event_date) AS last, count(numeric_value) AS n, avg(numeric_value) AS mean
			FROM clinical_event WHERE numeric_value IS NOT NULL GROUP BY snomed_code ORDER BY snomed_code`, nil},
		{"follow-up window", cdm.KindTrust,
			`SELECT admission_method, count(*) AS n, CAST(sum(discharge_date - admission_date) AS BIGINT) AS bed_days
			FROM apc_episode WHERE admission_date BETWEEN CAST($1 AS DATE) AND CAST($1 AS DATE) + CAST($2 AS INTEGER)
			GROUP BY admission_method ORDER BY admission_method`,
			[]connector.Value{connector.Date(indexDate), connector.Int64(730)}},
		{"list column unnested", cdm.KindTrust,
			`SELECT code, count(*) AS n FROM (SELECT unnest(procedures) AS code FROM apc_episode) x
			GROUP BY code ORDER BY n DESC, code LIMIT 20`, nil},
		{"list column out", cdm.KindTrust,
			`SELECT episode_id, procedures FROM apc_episode ORDER BY episode_id LIMIT 200`, nil},
		{"integer list out", cdm.KindTrust,
			`SELECT admission_method, array_agg(CAST(extract(year FROM admission_date) AS INTEGER) ORDER BY admission_date, episode_id) AS years
			FROM (SELECT * FROM apc_episode ORDER BY episode_id LIMIT 50) x GROUP BY admission_method ORDER BY admission_method`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps, _ := pluginsFor(t, tt.kind)
			var results []table
			for _, p := range ps {
				tb, err := readTable(t.Context(), p.host, connector.Query{SQL: tt.sql, Args: tt.args})
				if err != nil {
					t.Fatalf("%s: %v", p.name, err)
				}
				results = append(results, tb)
			}
			a, b := results[0], results[1]
			if len(a.rows) == 0 || a.rows[0][0] == "0" {
				t.Fatalf("%s: empty result %v; the statement tests nothing", ps[0].name, a.rows)
			}
			if !sameSchema(a.schema, b.schema) {
				t.Errorf("schemas differ:\n%s: %s\n%s: %s", ps[0].name, a.schema, ps[1].name, b.schema)
			}
			if !slices.EqualFunc(a.rows, b.rows, slices.Equal) {
				t.Errorf("results differ:\n%s: %v\n%s: %v", ps[0].name, head(a.rows), ps[1].name, head(b.rows))
			}
		})
	}
}

func head(rows [][]string) [][]string { return rows[:min(len(rows), 10)] }

func TestDescribeAgrees(t *testing.T) {
	for _, k := range cdm.SiteKinds() {
		ps, site := pluginsFor(t, k)
		var want []connector.TableInfo
		for _, tbl := range cdm.TablesFor(k) {
			want = append(want, connector.TableInfo{Name: tbl.Name, Rows: site.Files[tbl.Name].Rows})
		}
		for _, p := range ps {
			d, err := p.host.Describe(t.Context())
			if err != nil {
				t.Fatalf("%s: %v", p.name, err)
			}
			if string(d.Dialect) != p.name || !slices.Equal(d.Tables, want) {
				t.Errorf("%s %s: %+v, want tables %v", p.name, k, d, want)
			}
		}
	}
}

func TestLimits(t *testing.T) {
	ps, _ := pluginsFor(t, cdm.KindGP)
	for _, p := range ps {
		for _, tt := range []struct {
			q    connector.Query
			want connector.Limit
		}{
			{connector.Query{SQL: "SELECT * FROM medication", MaxRows: 1000}, connector.LimitRows},
			{connector.Query{SQL: "SELECT * FROM medication", MaxBytes: 100_000}, connector.LimitBytes},
		} {
			_, err := readTable(t.Context(), p.host, tt.q)
			le, ok := errors.AsType[*connector.LimitError](err)
			if !ok || le.Limit != tt.want {
				t.Errorf("%s, %s limit: err = %v", p.name, tt.want, err)
			}
		}
		// Under both limits the same query completes.
		if _, err := readTable(t.Context(), p.host, connector.Query{SQL: "SELECT * FROM medication"}); err != nil {
			t.Errorf("%s, no limit crossed: %v", p.name, err)
		}
	}
}

// TestArguments passes one value of every argument type to each plugin
// and reads it back: text with a quote, a 64-bit integer, a float, a
// boolean, a date (the day before a leap day), a list of text, and null.
// The SQL differs only in each dialect's names for types and list length.
func TestArguments(t *testing.T) {
	ps, _ := pluginsFor(t, cdm.KindGP)
	sql := map[string]string{
		"duckdb": `SELECT $1::VARCHAR AS s, $2::BIGINT + 1 AS i, $3::DOUBLE * 2 AS f, NOT $4::BOOLEAN AS b,
			CAST($5 AS DATE) + 1 AS d, len(CAST($6 AS VARCHAR[])) AS n, $7::VARCHAR IS NULL AS isnull`,
		"postgres": `SELECT $1::text AS s, $2::bigint + 1 AS i, $3::float8 * 2 AS f, NOT $4::boolean AS b,
			CAST($5 AS date) + 1 AS d, cardinality(CAST($6 AS text[])) AS n, $7::text IS NULL AS isnull`,
	}
	day := time.Date(2024, 2, 28, 0, 0, 0, 0, time.UTC)
	args := []connector.Value{connector.String("a'b"), connector.Int64(41), connector.Float64(1.25),
		connector.Bool(false), connector.Date(day), connector.StringList([]string{"x", "y", "z"}), connector.Null()}
	for _, p := range ps {
		tb, err := readTable(t.Context(), p.host, connector.Query{SQL: sql[p.name], Args: args})
		if err != nil {
			t.Errorf("%s: %v", p.name, err)
			continue
		}
		if want := "[[a'b 42 2.5 true 2024-02-29 3 true]]"; fmt.Sprint(tb.rows) != want {
			t.Errorf("%s: got %v, want %s", p.name, tb.rows, want)
		}
	}
}

// TestCancelStopsQueryInPlugin cancels a long query and waits for the
// plugin to log that its query stopped, which it does only once the
// database has let go of it.
func TestCancelStopsQueryInPlugin(t *testing.T) {
	ps, _ := pluginsFor(t, cdm.KindGP)
	long := map[string]string{
		"duckdb":   "SELECT count(*) AS n FROM range(1000000) a, range(1000000) b WHERE a.range + b.range = -1",
		"postgres": "SELECT count(*) AS n FROM pg_sleep(120)",
	}
	for _, p := range ps {
		t.Run(p.name, func(t *testing.T) {
			before := p.logs.count("query stopped", "")
			ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
			defer cancel()
			_, err := readTable(ctx, p.host, connector.Query{SQL: long[p.name]})
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want the deadline", err)
			}
			deadline := time.Now().Add(15 * time.Second)
			for p.logs.count("query stopped", "") == before {
				if time.Now().After(deadline) {
					t.Fatalf("the plugin did not stop its query; it logged:\n%s", p.logs.dump())
				}
				time.Sleep(20 * time.Millisecond)
			}
			if _, err := readTable(t.Context(), p.host, connector.Query{SQL: "SELECT count(*) AS n FROM patient"}); err != nil {
				t.Errorf("query after the cancelled one: %v", err)
			}
		})
	}
}
