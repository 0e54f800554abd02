package audit

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestAppendAndRead(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	l, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	allow := true
	recs := []Record{
		{Time: t0, Event: EventReceived, TaskID: "t1", RunID: "r1", DefinitionID: "t2dm-prevalence", Purpose: "commissioning"},
		{Time: t0.Add(time.Second), Event: EventAccepted, TaskID: "t1", Allow: &allow, SQL: map[string]string{"result": "ab"}},
		{Time: t0.Add(time.Hour), Event: EventDone, TaskID: "t1", Rows: 12, Bytes: 4096, Fields: []string{"sex", "patients"},
			Receipt: &Receipt{Rows: 12, Bytes: 4096, Batches: 1}},
	}
	var wg sync.WaitGroup
	for _, r := range recs {
		if err := l.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	// Concurrent appends each land on a line of their own.
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.Append(Record{Time: t0.Add(2 * time.Hour), Event: EventRefused, TaskID: "c" + string(rune('a'+i))}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(Record{Event: EventDone}); err == nil {
		t.Error("Append after Close succeeded")
	}
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("log mode %v, want 0600", fi.Mode().Perm())
	}

	all, err := Read(dir, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 23 {
		t.Fatalf("read %d records, want 23", len(all))
	}
	if all[2].Receipt == nil || all[2].Receipt.Bytes != 4096 || all[2].Fields[1] != "patients" || *all[1].Allow != true {
		t.Errorf("record did not round-trip: %+v", all[2])
	}
	later, err := Read(dir, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if len(later) != 21 || later[0].Event != EventDone {
		t.Errorf("since filter gave %d records, first %v", len(later), later[0].Event)
	}

	// Reopening appends rather than truncating.
	l, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	l.Append(Record{Event: EventStarted})
	l.Close()
	if all, _ = Read(dir, time.Time{}); len(all) != 24 || all[23].Time.IsZero() {
		t.Errorf("after reopen: %d records", len(all))
	}
}

func TestScanTornAndDamaged(t *testing.T) {
	good := `{"time":"2026-03-01T09:00:00Z","event":"task_received","task_id":"t1"}` + "\n"
	recs, err := Scan(strings.NewReader(good+`{"time":"2026-03-01T09:00:01Z","ev`), time.Time{})
	if err != nil || len(recs) != 1 {
		t.Errorf("torn last line: %d records, %v", len(recs), err)
	}
	_, err = Scan(strings.NewReader(good+"garbage\n"+good), time.Time{})
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("damaged middle line: %v", err)
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"Conversion Error: could not convert string '9434765919' to INT32", "Conversion Error: could not convert string '[redacted]' to INT32"},
		{"patient 943 476 5919 missing", "patient [redacted] missing"},
		{"born 1980-02-29 or 29/02/1980", "born [redacted] or [redacted]"},
		{"result exceeds the rows limit of 100 rows", "result exceeds the rows limit of 100 rows"},
		{"statement sha 3f2a", "statement sha 3f2a"},
	}
	for _, tt := range tests {
		if got := Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	dir := t.TempDir()
	l, _ := Open(dir)
	l.Append(Record{Event: EventFailed, Message: "bad value 9434765919 born 1980-02-29"})
	l.Close()
	b, _ := os.ReadFile(filepath.Join(dir, FileName))
	if strings.Contains(string(b), "9434765919") || strings.Contains(string(b), "1980-02-29") {
		t.Errorf("identifiers reached the log: %s", b)
	}
}
