package audit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/havenhealth/haven/coordinator/audit"
	"github.com/havenhealth/haven/coordinator/store"
)

// anchoredLog writes n entries to a log anchored in a real job store and
// returns both paths, closed.
func anchoredLog(t *testing.T, dir string, n int) (logPath, storePath string) {
	t.Helper()
	ctx := context.Background()
	logPath, storePath = filepath.Join(dir, "audit.jsonl"), filepath.Join(dir, "coordinator.db")
	st, err := store.OpenSQLite(ctx, storePath)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l, opened, err := audit.OpenAnchored(ctx, logPath, st)
	if err != nil {
		t.Fatal(err)
	}
	if !opened.Adopted {
		t.Fatal("a new store should adopt the new log")
	}
	for i := range n {
		if _, err := l.Append(ctx, audit.Record{Kind: audit.KindSubmission, RunID: fmt.Sprintf("run-%d", i), Actor: "ana"}); err != nil {
			t.Fatal(err)
		}
	}
	// Close anchors the final head, however far the anchorer had got.
	gotSeq, gotHash := l.Head()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	seq, hash, anchored, err := st.LoadAuditHead(ctx)
	if err != nil || !anchored || seq != gotSeq || hash != gotHash {
		t.Fatalf("anchor after %d appends and Close = %d %s %v %v; log head %d %s", n, seq, hash, anchored, err, gotSeq, gotHash)
	}
	return logPath, storePath
}

// TestOpenAnchoredRefusesTamperedLogs is the issue's rows "the last line of
// the audit log deleted; the log cut to 100 lines; emptied" and a log
// replaced by another valid chain (a fork): each is refused, naming both
// heads, and neither the log nor the store changes.
func TestOpenAnchoredRefusesTamperedLogs(t *testing.T) {
	ctx := context.Background()
	otherDir := t.TempDir()
	otherLog, _ := anchoredLog(t, otherDir, 120) // a different valid chain
	other, err := os.ReadFile(otherLog)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		edit   func(lines [][]byte) []byte
		reason string
	}{
		{"last line deleted", func(ls [][]byte) []byte { return bytes.Join(ls[:len(ls)-1], nil) }, "1 entries are missing from the end"},
		{"cut to 100 lines", func(ls [][]byte) []byte { return bytes.Join(ls[:100], nil) }, "20 entries are missing from the end"},
		{"emptied", func([][]byte) []byte { return nil }, "the log is empty"},
		{"replaced by another chain", func([][]byte) []byte { return other }, "entry 120 has another hash"},
		{"forked at 110", func(ls [][]byte) []byte {
			return append(bytes.Join(ls[:110], nil), bytes.Join(bytes.SplitAfter(other, []byte("\n"))[110:], nil)...)
		}, "does not chain"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logPath, storePath := anchoredLog(t, t.TempDir(), 120)
			data, err := os.ReadFile(logPath)
			if err != nil {
				t.Fatal(err)
			}
			tampered := tc.edit(bytes.SplitAfter(data, []byte("\n"))[:120])
			if err := os.WriteFile(logPath, tampered, 0o600); err != nil {
				t.Fatal(err)
			}
			st, err := store.OpenSQLite(ctx, storePath)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			seq0, hash0, _, _ := st.LoadAuditHead(ctx)

			l, _, err := audit.OpenAnchored(ctx, logPath, st)
			if err == nil {
				l.Close()
				t.Fatal("tampered log was opened")
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("error %q does not say %q", err, tc.reason)
			}
			var mm *audit.MismatchError
			if errors.As(err, &mm) && (mm.Anchor.Seq != 120 || !strings.Contains(err.Error(), "entry 120")) {
				t.Fatalf("error %q does not name the anchored head", err)
			}
			after, _ := os.ReadFile(logPath)
			seq1, hash1, _, _ := st.LoadAuditHead(ctx)
			if !bytes.Equal(after, tampered) || seq1 != seq0 || hash1 != hash0 {
				t.Fatalf("a refused open changed the log or the anchor (anchor %d→%d)", seq0, seq1)
			}
		})
	}
}

// otherPlus returns the log with k valid entries appended by a process that
// does not update the anchor (a second coordinator on a copy of the log).
func otherPlus(t *testing.T, ls [][]byte, k int) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	if err := os.WriteFile(path, bytes.Join(ls, nil), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := audit.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for range k {
		if _, err := l.Append(context.Background(), audit.Record{Kind: audit.KindNode, Actor: "intruder"}); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOpenAnchoredAcceptsUnanchoredEntries: the anchor is committed without
// waiting for the disk, so a power cut can leave it behind the log; the next
// start accepts the entries after the anchored one, says how many, and
// anchors the new head.
func TestOpenAnchoredAcceptsUnanchoredEntries(t *testing.T) {
	ctx := context.Background()
	logPath, storePath := anchoredLog(t, t.TempDir(), 5)
	data, _ := os.ReadFile(logPath)
	ls := bytes.SplitAfter(data, []byte("\n"))[:5]
	if err := os.WriteFile(logPath, otherPlus(t, ls, 2), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(ctx, storePath)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l, opened, err := audit.OpenAnchored(ctx, logPath, st)
	if err != nil {
		t.Fatalf("log two entries ahead of its anchor: %v", err)
	}
	defer l.Close()
	seq, hash, _, _ := st.LoadAuditHead(ctx)
	if ls, lh := l.Head(); opened.Adopted || opened.Unanchored != 2 || seq != 7 || seq != ls || hash != lh {
		t.Fatalf("anchor = %d %s, log head %d %s, opened %+v; want entry 7 anchored, 2 unanchored", seq, hash, ls, lh, opened)
	}
}

func TestCheckAgainst(t *testing.T) {
	hs := []string{"h1", "h2", "h3"}
	tests := []struct {
		hashes []string
		anchor audit.Head
		ahead  uint64
		want   string // "" for agreement
	}{
		{hs, audit.Head{Seq: 3, Hash: "h3"}, 0, ""},
		{hs, audit.Head{Seq: 2, Hash: "h2"}, 1, ""},
		{hs, audit.Head{Seq: 0, Hash: audit.ZeroHash}, 3, ""},
		{nil, audit.Head{Seq: 0, Hash: audit.ZeroHash}, 0, ""},
		{hs, audit.Head{Seq: 3, Hash: "hX"}, 0, "entry 3 has another hash"},
		{hs, audit.Head{Seq: 1, Hash: "h2"}, 0, "entry 1 has another hash"},
		{hs, audit.Head{Seq: 4, Hash: "h4"}, 0, "1 entries are missing"},
		{nil, audit.Head{Seq: 4, Hash: "h4"}, 0, "the log is empty"},
		{hs, audit.Head{Seq: 0, Hash: "junk"}, 0, "malformed"},
	}
	for _, tc := range tests {
		ahead, err := audit.CheckAgainst(tc.hashes, tc.anchor)
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) || ahead != tc.ahead {
			t.Errorf("CheckAgainst(%d hashes, %v) = %d, %v; want %d, %q", len(tc.hashes), tc.anchor, ahead, err, tc.ahead, tc.want)
		}
	}
}
