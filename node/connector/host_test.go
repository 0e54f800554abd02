package connector_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/internal/testutil"
	"github.com/havenhealth/haven/node/connector"
	"github.com/havenhealth/haven/node/connector/connectortest"
)

var cache connectortest.Cache

func TestMain(m *testing.M) {
	code := m.Run()
	cache.Close()
	os.Exit(code)
}

// doublePkg is the test double of a connector plugin.
const doublePkg = "github.com/havenhealth/haven/node/connector/testdata/plugin-double"

// logRecorder is a slog handler that keeps every record, for tests to
// look for what a plugin logged.
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

// find returns the first record whose message contains msg.
func (h *logRecorder) find(msg string) (slog.Record, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.records {
		if strings.Contains(r.Message, msg) {
			return r, true
		}
	}
	return slog.Record{}, false
}

type launchOpts struct {
	args    []string
	logs    *logRecorder
	timeout time.Duration // Describe and Query timeouts
}

// launchDouble starts the test double plugin and closes it at cleanup.
func launchDouble(t *testing.T, o launchOpts) *connector.Host {
	t.Helper()
	bin := cache.Plugin(t, doublePkg)
	if o.logs == nil {
		o.logs = &logRecorder{}
	}
	h, err := connector.Launch(t.Context(), connector.LaunchConfig{
		Path:            bin.Path,
		SHA256:          bin.SHA256,
		Args:            o.args,
		Logger:          slog.New(o.logs),
		DescribeTimeout: o.timeout,
		QueryTimeout:    o.timeout,
	})
	if err != nil {
		t.Fatalf("Launch: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// readAll reads a result to its end and returns its rows' first column as
// int64s (or nil if it has another type) and the error that ended it.
func readAll(res *connector.Result) (rows int64, err error) {
	defer res.Close()
	for res.Next() {
		rows += res.Record().NumRows()
	}
	return rows, res.Err()
}

func TestDescribe(t *testing.T) {
	h := launchDouble(t, launchOpts{})
	d, err := h.Describe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := connector.Description{
		Dialect:       connector.DialectDuckDB,
		PluginVersion: "double",
		CDMVersion:    cdm.Version,
		Tables:        []connector.TableInfo{{Name: cdm.TablePatient, Rows: 42}},
	}
	if d.Dialect != want.Dialect || d.PluginVersion != want.PluginVersion || d.CDMVersion != want.CDMVersion || !slices.Equal(d.Tables, want.Tables) {
		t.Errorf("Describe = %+v, want %+v", d, want)
	}
	if ti, ok := d.Table(cdm.TablePatient); !ok || ti.Rows != 42 {
		t.Errorf("Table(patient) = %+v, %v", ti, ok)
	}
}

// A plugin that can tell the version of its data reports it with each
// complete result; one that cannot reports none.
func TestDataVersion(t *testing.T) {
	file := filepath.Join(t.TempDir(), "version")
	version := func(h *connector.Host) string {
		t.Helper()
		res, err := h.Query(t.Context(), connector.Query{SQL: "rows 10 batch 5"})
		if err != nil {
			t.Fatal(err)
		}
		if v := res.DataVersion(); v != "" {
			t.Errorf("data version %q before the result was read", v)
		}
		if _, err := readAll(res); err != nil {
			t.Fatal(err)
		}
		return res.DataVersion()
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(file, []byte("v1"), 0o600))
	h := launchDouble(t, launchOpts{args: []string{"-data-version", file}})
	if v := version(h); v != "v1" {
		t.Errorf("data version %q, want v1", v)
	}
	must(os.WriteFile(file, []byte("v2"), 0o600))
	if v := version(h); v != "v2" {
		t.Errorf("data version %q after a change, want v2", v)
	}
	// Longer than a version may be: Serve reports none (and the host
	// would take a result carrying one for malformed).
	must(os.WriteFile(file, []byte(strings.Repeat("x", connector.MaxDataVersion+1)), 0o600))
	if v := version(h); v != "" {
		t.Errorf("data version of %d bytes passed on", len(v))
	}
	if v := version(launchDouble(t, launchOpts{})); v != "" {
		t.Errorf("data version %q from a plugin that cannot tell", v)
	}
}

func TestArgumentsRoundTrip(t *testing.T) {
	h := launchDouble(t, launchOpts{})
	day := time.Date(2024, 4, 1, 15, 30, 0, 0, time.UTC)
	args := []connector.Value{
		connector.String("E11.9"),
		connector.Int64(-7),
		connector.Float64(2.5),
		connector.Bool(true),
		connector.Date(day),
		connector.StringList([]string{"a", "b"}),
		connector.Null(),
	}
	res, err := h.Query(t.Context(), connector.Query{SQL: "echo", Args: args})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	if !res.Next() {
		t.Fatalf("no record: %v", res.Err())
	}
	rec := res.Record()
	if got := rec.Column(0).(*array.String).Value(0); got != "E11.9" {
		t.Errorf("string = %q", got)
	}
	if got := rec.Column(1).(*array.Int64).Value(0); got != -7 {
		t.Errorf("int64 = %d", got)
	}
	if got := rec.Column(2).(*array.Float64).Value(0); got != 2.5 {
		t.Errorf("float64 = %v", got)
	}
	if got := rec.Column(3).(*array.Boolean).Value(0); !got {
		t.Errorf("bool = %v", got)
	}
	if got := rec.Column(4).(*array.Date32).Value(0).ToTime(); !got.Equal(time.Date(2024, 4, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("date = %v", got)
	}
	list := rec.Column(5).(*array.List)
	start, end := list.ValueOffsets(0)
	var got []string
	for i := start; i < end; i++ {
		got = append(got, list.ListValues().(*array.String).Value(int(i)))
	}
	if !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("list = %q", got)
	}
	if !rec.Column(6).IsNull(0) {
		t.Errorf("null argument arrived as a value")
	}
	if res.Next() {
		t.Error("more than one record")
	}
	if err := res.Err(); err != nil {
		t.Errorf("Err = %v", err)
	}
}

func TestLimits(t *testing.T) {
	h := launchDouble(t, launchOpts{})
	tests := []struct {
		name      string
		sql       string
		maxRows   int64
		maxBytes  int64
		wantRows  int64
		wantLimit connector.Limit // "" for no error
	}{
		{"under both", "rows 1000 batch 100", 1000, 1 << 20, 1000, ""},
		{"row limit crossed", "rows 1001 batch 100", 1000, 1 << 20, 0, connector.LimitRows},
		{"byte limit crossed", "rows 1000 batch 100 pad 1000", 0, 100_000, 0, connector.LimitBytes},
		{"defaults", "rows 5000 batch 1000", 0, 0, 5000, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := h.Query(t.Context(), connector.Query{SQL: tt.sql, MaxRows: tt.maxRows, MaxBytes: tt.maxBytes})
			var rows int64
			if err == nil {
				rows, err = readAll(res)
			}
			if tt.wantLimit == "" {
				if err != nil || rows != tt.wantRows {
					t.Fatalf("rows %d, err %v; want %d rows", rows, err, tt.wantRows)
				}
				return
			}
			le, ok := errors.AsType[*connector.LimitError](err)
			if !ok || !errors.Is(err, connector.ErrLimitExceeded) {
				t.Fatalf("err = %v, want a LimitError", err)
			}
			if le.Limit != tt.wantLimit {
				t.Errorf("limit %q crossed, want %q", le.Limit, tt.wantLimit)
			}
		})
	}
}

func TestExpectedSchema(t *testing.T) {
	h := launchDouble(t, launchOpts{})
	good := arrow.NewSchema([]arrow.Field{
		{Name: "n", Type: arrow.PrimitiveTypes.Int64, Nullable: true}, // nullability is not compared
		{Name: "s", Type: arrow.BinaryTypes.String},
	}, nil)
	res, err := h.Query(t.Context(), connector.Query{SQL: "rows 10 batch 10", Schema: good})
	if err != nil {
		t.Fatalf("matching schema refused: %v", err)
	}
	if rows, err := readAll(res); err != nil || rows != 10 {
		t.Fatalf("rows %d, err %v", rows, err)
	}

	for name, want := range map[string]*arrow.Schema{
		"other type": arrow.NewSchema([]arrow.Field{
			{Name: "n", Type: arrow.PrimitiveTypes.Float64},
			{Name: "s", Type: arrow.BinaryTypes.String},
		}, nil),
		"other name": arrow.NewSchema([]arrow.Field{
			{Name: "count", Type: arrow.PrimitiveTypes.Int64},
			{Name: "s", Type: arrow.BinaryTypes.String},
		}, nil),
		"fewer columns": arrow.NewSchema([]arrow.Field{{Name: "n", Type: arrow.PrimitiveTypes.Int64}}, nil),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := h.Query(t.Context(), connector.Query{SQL: "rows 10 batch 10", Schema: want})
			if !errors.Is(err, connector.ErrSchemaMismatch) {
				t.Fatalf("err = %v, want ErrSchemaMismatch", err)
			}
		})
	}
}

// TestMisbehavingPlugin sends every kind of bad result through the real
// process boundary. Each must give the node a clear error, and both node
// and plugin must go on working.
func TestMisbehavingPlugin(t *testing.T) {
	tests := []struct {
		raw     bool
		sql     string
		maxRows int64
		want    error  // errors.Is target; nil: only wantMsg is checked
		wantMsg string // substring of the error
	}{
		{sql: "garbage", want: connector.ErrMalformedResult},
		{sql: "truncated", want: connector.ErrMalformedResult, wantMsg: "end-of-stream"},
		{sql: "trailing", want: connector.ErrMalformedResult, wantMsg: "after the end"},
		{sql: "timestamp", want: connector.ErrMalformedResult, wantMsg: `"t" has Arrow type timestamp`},
		{sql: "bad-offsets", want: connector.ErrMalformedResult, wantMsg: "offsets"},
		{sql: "huge-meta", want: connector.ErrMalformedResult},
		{sql: "negative-meta", want: connector.ErrMalformedResult},
		{sql: "error", wantMsg: "Table with name nope does not exist"},
		{raw: true, sql: "flood", want: connector.ErrLimitExceeded, wantMsg: "limit of 1048576 bytes"},
		{raw: true, sql: "many-rows", maxRows: 500, want: connector.ErrLimitExceeded, wantMsg: "limit of 500 rows"},
		{raw: true, sql: "no-done", want: connector.ErrMalformedResult, wantMsg: "without the plugin saying it was complete"},
		{raw: true, sql: "lie-done", want: connector.ErrMalformedResult, wantMsg: "plugin says it sent"},
		{raw: true, sql: "after-done", want: connector.ErrMalformedResult, wantMsg: "after the end"},
	}
	hosts := map[bool]*connector.Host{
		false: launchDouble(t, launchOpts{}),
		true:  launchDouble(t, launchOpts{args: []string{"-raw"}}),
	}
	for _, tt := range tests {
		t.Run(tt.sql, func(t *testing.T) {
			h := hosts[tt.raw]
			q := connector.Query{SQL: tt.sql, MaxRows: tt.maxRows, MaxBytes: 1 << 20}
			res, err := h.Query(t.Context(), q)
			if err == nil {
				_, err = readAll(res)
			}
			if err == nil {
				t.Fatal("no error")
			}
			t.Logf("err: %v", err)
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %v, want it to say %q", err, tt.wantMsg)
			}
			if errors.Is(err, connector.ErrPluginExited) || h.Exited() {
				t.Fatalf("plugin exited: %v", err)
			}
			if _, err := h.Describe(t.Context()); err != nil {
				t.Errorf("Describe after the bad result: %v", err)
			}
		})
	}
}

func TestBadDescription(t *testing.T) {
	h := launchDouble(t, launchOpts{args: []string{"-describe", "bad"}})
	_, err := h.Describe(t.Context())
	if !errors.Is(err, connector.ErrMalformedResult) || !strings.Contains(err.Error(), "not_a_cdm_table") {
		t.Fatalf("err = %v, want ErrMalformedResult naming the table", err)
	}
}

func TestPluginCrash(t *testing.T) {
	t.Run("in describe", func(t *testing.T) {
		h := launchDouble(t, launchOpts{args: []string{"-describe", "crash"}})
		_, err := h.Describe(t.Context())
		if !errors.Is(err, connector.ErrPluginExited) {
			t.Fatalf("err = %v, want ErrPluginExited", err)
		}
		if !h.Exited() {
			t.Error("Exited() = false after the crash")
		}
		if _, err := h.Query(t.Context(), connector.Query{SQL: "echo"}); !errors.Is(err, connector.ErrPluginExited) {
			t.Errorf("Query after the crash: err = %v, want ErrPluginExited", err)
		}
	})
	t.Run("mid-stream", func(t *testing.T) {
		h := launchDouble(t, launchOpts{})
		res, err := h.Query(t.Context(), connector.Query{SQL: "crash-after 5"})
		if err == nil {
			_, err = readAll(res)
		}
		if !errors.Is(err, connector.ErrPluginExited) {
			t.Fatalf("err = %v, want ErrPluginExited", err)
		}
	})
}

func TestPluginHang(t *testing.T) {
	t.Run("describe times out", func(t *testing.T) {
		h := launchDouble(t, launchOpts{args: []string{"-describe", "hang"}, timeout: 200 * time.Millisecond})
		_, err := h.Describe(t.Context())
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no answer from the plugin within 200ms") {
			t.Fatalf("err = %v, want a timeout", err)
		}
	})
	t.Run("query times out", func(t *testing.T) {
		h := launchDouble(t, launchOpts{timeout: 200 * time.Millisecond})
		_, err := h.Query(t.Context(), connector.Query{SQL: "hang"})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want a timeout", err)
		}
	})
	t.Run("caller gives up", func(t *testing.T) {
		h := launchDouble(t, launchOpts{})
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		_, err := h.Query(ctx, connector.Query{SQL: "hang"})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want the caller's deadline", err)
		}
	})
}

func TestCancelStopsQueryInPlugin(t *testing.T) {
	logs := &logRecorder{}
	h := launchDouble(t, launchOpts{logs: logs})
	ctx, cancel := context.WithCancel(t.Context())
	res, err := h.Query(ctx, connector.Query{SQL: "slow"})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	if !res.Next() {
		t.Fatalf("no first record: %v", res.Err())
	}
	cancel()
	for res.Next() {
	}
	if !errors.Is(res.Err(), context.Canceled) {
		t.Errorf("Err = %v, want context.Canceled", res.Err())
	}
	// The plugin logs when its query sees the cancellation, and its log
	// lines arrive through the node's logger.
	testutil.Eventually(t, "the plugin to log the cancellation", func() bool {
		_, ok := logs.find("slow query cancelled")
		return ok
	})
}

func TestPluginLogsReachLogger(t *testing.T) {
	logs := &logRecorder{}
	launchDouble(t, launchOpts{logs: logs})
	testutil.Eventually(t, "the plugin's start-up line", func() bool {
		_, ok := logs.find("plugin-double starting")
		return ok
	})
	r, _ := logs.find("plugin-double starting")
	if r.Level != slog.LevelInfo {
		t.Errorf("level = %v, want INFO", r.Level)
	}
	attrs := map[string]string{}
	r.Attrs(func(a slog.Attr) bool {
		attrs[a.Key] = a.Value.String()
		return true
	})
	if attrs["describe"] != "ok" {
		t.Errorf("attrs = %v, want the plugin's describe=ok", attrs)
	}
}

func TestChecksumMismatchRefusedBeforeStart(t *testing.T) {
	bin := cache.Plugin(t, doublePkg)
	marker := filepath.Join(t.TempDir(), "ran")
	wrong := strings.Repeat("0", 64)
	_, err := connector.Launch(t.Context(), connector.LaunchConfig{
		Path:   bin.Path,
		SHA256: wrong,
		Args:   []string{"-touch", marker},
		Logger: slog.New(slog.DiscardHandler),
	})
	if !errors.Is(err, connector.ErrChecksumMismatch) {
		t.Fatalf("err = %v, want ErrChecksumMismatch", err)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the plugin ran despite the wrong checksum (stat: %v)", err)
	}

	// The same launch with the right checksum runs it, so the marker is a
	// fair witness.
	h, err := connector.Launch(t.Context(), connector.LaunchConfig{
		Path:   bin.Path,
		SHA256: bin.SHA256,
		Args:   []string{"-touch", marker},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("the plugin did not run with the right checksum: %v", err)
	}
}

func TestLaunchErrors(t *testing.T) {
	bin := cache.Plugin(t, doublePkg)
	tests := []struct {
		name string
		cfg  connector.LaunchConfig
		want string
	}{
		{"no path", connector.LaunchConfig{SHA256: bin.SHA256}, "no plugin path"},
		{"bad checksum", connector.LaunchConfig{Path: bin.Path, SHA256: "abc"}, "not a hex SHA-256"},
		{"missing binary", connector.LaunchConfig{Path: filepath.Join(t.TempDir(), "nope"), SHA256: bin.SHA256}, "no such file"},
		{"exits before handshake", connector.LaunchConfig{Path: bin.Path, SHA256: bin.SHA256, Args: []string{"-exit-at-start"}}, "connector plugin exited during start-up"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Logger = slog.New(slog.DiscardHandler)
			h, err := connector.Launch(t.Context(), tt.cfg)
			if err == nil {
				h.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to say %q", err, tt.want)
			}
		})
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	h := launchDouble(t, launchOpts{})
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if !h.Exited() {
		t.Error("plugin still running after Close")
	}
	if _, err := h.Describe(t.Context()); !errors.Is(err, connector.ErrPluginExited) {
		t.Errorf("Describe after Close: err = %v, want ErrPluginExited", err)
	}
}

// TestSwapAfterCheckRunsCheckedBytes is the issue's row "the connector
// plugin binary: checked by SHA-256, then executed by path". Between the
// check and the start the file at the configured path is replaced by other
// code (a script that leaves a marker); what starts is still the checked
// plugin, and the other code never runs.
func TestSwapAfterCheckRunsCheckedBytes(t *testing.T) {
	bin := cache.Plugin(t, doublePkg)
	dir := t.TempDir()
	path := filepath.Join(dir, "haven-connector-double")
	orig, err := os.ReadFile(bin.Path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, orig, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir() // where Launch makes its private copies
	t.Setenv("TMPDIR", tmp)
	ranChecked := filepath.Join(dir, "checked-ran")
	ranOther := filepath.Join(dir, "other-ran")
	other := []byte("#!/bin/sh\ntouch " + ranOther + "\nexec " + bin.Path + " \"$@\"\n")

	cfg := connector.LaunchConfig{
		Path:   path,
		SHA256: bin.SHA256,
		Args:   []string{"-touch", ranChecked},
		Logger: slog.New(slog.DiscardHandler),
	}
	swapped := false
	connector.SetAfterCheck(&cfg, func() {
		// Replace the name (a new file), as an attacker with write access
		// to the directory would.
		tmp := path + ".new"
		if err := os.WriteFile(tmp, other, 0o755); err != nil {
			t.Error(err)
			return
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Error(err)
			return
		}
		swapped = true
	})
	h, err := connector.Launch(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Launch: %v", err)
	}
	defer h.Close()
	if !swapped {
		t.Fatal("the file was not swapped between check and start")
	}
	if _, err := h.Describe(t.Context()); err != nil {
		t.Fatalf("Describe: %v", err)
	}
	if _, err := os.Stat(ranChecked); err != nil {
		t.Errorf("the checked plugin did not run: %v", err)
	}
	if _, err := os.Stat(ranOther); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the code swapped in after the check ran (stat: %v)", err)
	}

	// The next launch checks the file as it is now, and refuses it.
	if _, err := connector.Launch(t.Context(), connector.LaunchConfig{Path: path, SHA256: bin.SHA256,
		Logger: slog.New(slog.DiscardHandler)}); !errors.Is(err, connector.ErrChecksumMismatch) {
		t.Fatalf("launch of the swapped file: %v, want ErrChecksumMismatch", err)
	}
	if _, err := os.Stat(ranOther); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the swapped-in code ran (stat: %v)", err)
	}
	// No copy is left behind.
	if left, err := os.ReadDir(tmp); err != nil || len(left) > 0 {
		t.Errorf("private copies left behind in %s: %v %v", tmp, left, err)
	}
}
