package connector

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func TestValueOf(t *testing.T) {
	day := time.Date(2024, 2, 29, 23, 59, 0, 0, time.FixedZone("BST", 3600))
	tests := []struct {
		in       any
		wantKind Kind
		wantAny  any
	}{
		{nil, KindNull, nil},
		{"E11", KindString, "E11"},
		{int64(-3), KindInt64, int64(-3)},
		{7, KindInt64, int64(7)},
		{1.25, KindFloat64, 1.25},
		{false, KindBool, false},
		{true, KindBool, true},
		// The calendar day in the value's own location, not in UTC.
		{day, KindDate, time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC)},
		{time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC), KindDate, time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)},
		{[]string{"a", ""}, KindStringList, []string{"a", ""}},
	}
	for _, tt := range tests {
		v, err := ValueOf(tt.in)
		if err != nil {
			t.Errorf("ValueOf(%#v): %v", tt.in, err)
			continue
		}
		if v.Kind() != tt.wantKind || !reflect.DeepEqual(v.Any(), tt.wantAny) {
			t.Errorf("ValueOf(%#v) = %v %#v, want %v %#v", tt.in, v.Kind(), v.Any(), tt.wantKind, tt.wantAny)
		}
		// The protocol carries every kind unchanged.
		pv, err := valueToProto(v)
		if err != nil {
			t.Errorf("valueToProto(%v): %v", v.Kind(), err)
			continue
		}
		back, err := valueFromProto(pv)
		if err != nil || !reflect.DeepEqual(back.Any(), v.Any()) || back.Kind() != v.Kind() {
			t.Errorf("round trip of %#v: %v %#v, %v", tt.in, back.Kind(), back.Any(), err)
		}
	}
	if _, err := ValueOf(int32(1)); err == nil {
		t.Error("ValueOf(int32) accepted a type sqlgen never binds")
	}
	if _, err := ValuesOf([]any{"x", struct{}{}}); err == nil || !strings.Contains(err.Error(), "$2") {
		t.Errorf("ValuesOf: err = %v, want it to name $2", err)
	}
}

func TestValueNeverPrintsItself(t *testing.T) {
	v := String("9434765919")
	if s := v.String(); strings.Contains(s, "9434765919") {
		t.Errorf("String() = %q shows the value", s)
	}
}

func TestDateOutOfRange(t *testing.T) {
	v := Value{kind: KindDate, i: math.MaxInt32 + 1}
	if _, err := valueToProto(v); err == nil {
		t.Error("a date beyond date32 was sent")
	}
}

func TestStringListIsCopied(t *testing.T) {
	in := []string{"a"}
	v := StringList(in)
	in[0] = "changed"
	if got := v.Any().([]string); got[0] != "a" {
		t.Errorf("the caller's slice changed the value: %q", got)
	}
}

func TestQueryCheckRows(t *testing.T) {
	q := Query{MaxRows: 10}
	if err := q.CheckRows(10); err != nil {
		t.Errorf("10 rows under a 10-row limit: %v", err)
	}
	if err := q.CheckRows(11); err == nil {
		t.Error("11 rows under a 10-row limit passed")
	}
	if err := (Query{}).CheckRows(DefaultMaxRows + 1); err == nil {
		t.Error("the default row limit was not applied")
	}
}

// TestPluginLoggerSpeaksGoPlugin checks that a plugin's log line carries
// the keys go-plugin's host parses, so levels survive the crossing.
func TestPluginLoggerSpeaksGoPlugin(t *testing.T) {
	var buf bytes.Buffer
	NewPluginLogger(&buf).Warn("disk slow", "table", "patient")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not JSON: %q", buf.String())
	}
	if line["@level"] != "warn" || line["@message"] != "disk slow" || line["table"] != "patient" {
		t.Errorf("line = %v", line)
	}
	ts, _ := line["@timestamp"].(string)
	if _, err := time.Parse("2006-01-02T15:04:05.000000Z07:00", ts); err != nil {
		t.Errorf("@timestamp %q is not in go-plugin's format: %v", ts, err)
	}
}

func TestHCLogAdapter(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	h := newHCLogAdapter(l).Named("haven-connector-duckdb").With("pid", 7)
	if h.IsDebug() || !h.IsInfo() || h.GetLevel() != hclog.Info {
		t.Errorf("levels: debug %v, info %v, GetLevel %v", h.IsDebug(), h.IsInfo(), h.GetLevel())
	}
	h.Debug("hidden")
	h.Log(hclog.Error, "plugin said", "error", "boom")
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("want one JSON record, got %q", buf.String())
	}
	want := map[string]any{"level": "ERROR", "msg": "plugin said", "plugin": "haven-connector-duckdb", "pid": float64(7), "error": "boom"}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("%s = %v, want %v", k, rec[k], v)
		}
	}
}

func TestLineLogger(t *testing.T) {
	var lines []string
	w := &lineLogger{log: func(l string) { lines = append(lines, l) }}
	for _, p := range []string{"one\ntw", "o\n", "\n", "three\r\n", "partial"} {
		if _, err := w.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"one", "two", "three"}; !reflect.DeepEqual(lines, want) {
		t.Errorf("lines = %q, want %q", lines, want)
	}
	lines = nil
	w.Write(bytes.Repeat([]byte("x"), maxLine+1))
	if len(lines) != 1 {
		t.Errorf("an endless line was held back: %d lines logged", len(lines))
	}
}
