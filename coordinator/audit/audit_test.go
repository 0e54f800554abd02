package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeLog appends n entries of mixed kinds and returns the file's bytes.
func writeLog(t *testing.T, n int) (path string, data []byte) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	l.now = func() time.Time { clock = clock.Add(time.Second); return clock }
	kinds := []Kind{KindSubmission, KindDecision, KindDispatch, KindNodeResponse, KindRelease}
	for i := range n {
		_, err := l.Append(context.Background(), Record{
			Kind:  kinds[i%len(kinds)],
			RunID: fmt.Sprintf("run-%d", i/5),
			Actor: "A81001",
			Data:  map[string]any{"i": i, "note": "rows=120 <ok>"},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	data, err = os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, data
}

func lines(data []byte) [][]byte {
	ls := bytes.SplitAfter(data, []byte("\n"))
	return ls[:len(ls)-1] // drop the empty piece after the final newline
}

func TestAppendAndReopen(t *testing.T) {
	path, data := writeLog(t, 12)
	sum, err := Verify(bytes.NewReader(data))
	if err != nil || sum.Entries != 12 {
		t.Fatalf("Verify = %+v, %v; want 12 entries", sum, err)
	}
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	seq, head := l.Head()
	if seq != 12 || head != sum.Head {
		t.Fatalf("Head after reopen = %d %s, want 12 %s", seq, head, sum.Head)
	}
	e, err := l.Append(context.Background(), Record{Kind: KindRelease, RunID: "run-9"})
	if err != nil {
		t.Fatal(err)
	}
	if e.Seq != 13 || e.Prev != head {
		t.Fatalf("appended entry %d chains to %s, want 13 and %s", e.Seq, e.Prev, head)
	}
	l.Close()
	data, _ = os.ReadFile(path)
	if sum, err := Verify(bytes.NewReader(data)); err != nil || sum.Entries != 13 {
		t.Fatalf("Verify after reopen+append = %+v, %v", sum, err)
	}
}

// TestTamperDetected edits, deletes and reorders every single entry of a
// log in turn and requires Verify to fail at that entry each time.
func TestTamperDetected(t *testing.T) {
	const n = 40
	_, data := writeLog(t, n)
	orig := lines(data)
	fullHead, _ := Verify(bytes.NewReader(data))
	tampers := []struct {
		name string
		do   func(ls [][]byte, i int) [][]byte
		// wantLine is the line Verify must name, given the tampered index i.
		wantLine func(i int) int
	}{
		{"edit", func(ls [][]byte, i int) [][]byte {
			ls[i] = bytes.Replace(ls[i], []byte("A81001"), []byte("A81002"), 1)
			return ls
		}, func(i int) int { return i + 1 }},
		{"delete", func(ls [][]byte, i int) [][]byte {
			return append(ls[:i:i], ls[i+1:]...)
		}, func(i int) int { return i + 1 }},
		{"reorder", func(ls [][]byte, i int) [][]byte {
			j := (i + 1) % len(ls)
			ls[i], ls[j] = ls[j], ls[i]
			return ls
		}, func(i int) int { return min(i, (i+1)%n) + 1 }},
	}
	detected, total := 0, 0
	for _, tm := range tampers {
		for i := range n {
			ls := make([][]byte, len(orig))
			for k := range orig {
				ls[k] = append([]byte(nil), orig[k]...)
			}
			ls = tm.do(ls, i)
			total++
			sum, err := Verify(bytes.NewReader(bytes.Join(ls, nil)))
			if tm.name == "delete" && i == n-1 {
				// Cutting the last entry leaves a valid shorter chain; the
				// recorded head is what catches it.
				if err == nil && sum.Head != fullHead.Head {
					detected++
					continue
				}
				t.Errorf("delete last: %+v, %v", sum, err)
				continue
			}
			var be *BrokenError
			if !errors.As(err, &be) {
				t.Errorf("%s entry %d: Verify = %v, want a BrokenError", tm.name, i+1, err)
				continue
			}
			if be.Line != tm.wantLine(i) {
				t.Errorf("%s entry %d: broken at line %d, want %d (%v)", tm.name, i+1, be.Line, tm.wantLine(i), be)
				continue
			}
			detected++
		}
	}
	if detected != total {
		t.Fatalf("detected %d of %d tamperings", detected, total)
	}
}

func TestVerifyBadInput(t *testing.T) {
	_, data := writeLog(t, 3)
	ls := lines(data)
	tests := []struct {
		name    string
		in      []byte
		wantErr string
	}{
		{"empty", nil, ""},
		{"not json", []byte("hello\n"), "line 1: entry is not valid JSON"},
		{"unknown field", []byte(`{"seq":1,"extra":true}` + "\n"), "not valid JSON"},
		{"torn tail", append(bytes.Join(ls[:2], nil), ls[2][:20]...), "line 3: last entry is incomplete"},
		{"duplicated entry", bytes.Join([][]byte{ls[0], ls[0]}, nil), "line 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Verify(bytes.NewReader(tt.in))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Verify: %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestOpenRefusesBrokenLog(t *testing.T) {
	path, data := writeLog(t, 5)
	os.WriteFile(path, bytes.Replace(data, []byte(`"i":2`), []byte(`"i":7`), 1), 0o600)
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("Open of tampered log: %v, want error naming line 3", err)
	}
}

func TestAppendBadRecord(t *testing.T) {
	l, err := Open(filepath.Join(t.TempDir(), "a.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	for _, r := range []Record{
		{},                                   // no kind
		{Kind: KindDecision, Data: []int{1}}, // not an object
		{Kind: KindDecision, Data: make(chan int)},
	} {
		if _, err := l.Append(ctx, r); err == nil {
			t.Errorf("Append(%+v) accepted", r)
		}
	}
	if seq, _ := l.Head(); seq != 0 {
		t.Fatalf("bad records changed the log: head %d", seq)
	}
}
