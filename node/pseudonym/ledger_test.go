package pseudonym

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLedgerRefusesReplayAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	l, err := OpenLedger(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Claim("run-1"); err != nil {
		t.Fatal(err)
	}
	if err := l.Claim("run-1"); !errors.Is(err, ErrReplayedRun) {
		t.Fatalf("second claim: %v, want ErrReplayedRun", err)
	}
	if err := l.Claim("run-2"); err != nil {
		t.Fatal(err)
	}
	l.Close()

	l2, err := OpenLedger(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	for _, id := range []string{"run-1", "run-2"} {
		if err := l2.Claim(id); !errors.Is(err, ErrReplayedRun) {
			t.Errorf("after restart, claim %s: %v, want ErrReplayedRun", id, err)
		}
	}
	if err := l2.Claim("run-3"); err != nil {
		t.Fatal(err)
	}
}

func TestLedgerTornLastLine(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ledgerFile)
	// A crash mid-append left "run-9" half written, without its newline.
	if err := os.WriteFile(path, []byte("run-1\nrun-9"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := OpenLedger(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Claim("run-10"); err != nil {
		t.Fatal(err)
	}
	l.Close()
	data, _ := os.ReadFile(path)
	if got := string(data); got != "run-1\nrun-9\nrun-10\n" {
		t.Fatalf("ledger after torn line = %q", got)
	}
	l, err = OpenLedger(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if !l.Seen("run-10") || !l.Seen("run-1") {
		t.Fatal("claims lost after repair")
	}
}

func TestLedgerBadInput(t *testing.T) {
	tests := []struct {
		name, content, wantErr string
	}{
		{"damaged middle line", "run-1\nbad id\nrun-2\n", "line 2 is damaged"},
		{"blank middle line", "run-1\n\nrun-2\n", "line 2 is damaged"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, ledgerFile), []byte(tt.content), 0o600)
			_, err := OpenLedger(dir)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("OpenLedger: %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
	l, err := OpenLedger(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", "has space", "new\nline", strings.Repeat("x", 129), "naïve"} {
		if err := l.Claim(id); err == nil {
			t.Errorf("Claim(%q) accepted", id)
		}
	}
	l.Close()
	if err := l.Claim("after-close"); err == nil {
		t.Error("Claim after Close accepted")
	}
}
