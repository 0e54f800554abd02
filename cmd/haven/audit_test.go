package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/havenhealth/haven/coordinator/audit"
	"github.com/havenhealth/haven/coordinator/store"
)

// writeAnchoredLog writes n entries to an audit log anchored in a real job
// store in dir, as the coordinator keeps them.
func writeAnchoredLog(t *testing.T, dir string, n int, actor string) (logPath string) {
	t.Helper()
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, "coordinator.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	logPath = filepath.Join(dir, "audit.jsonl")
	l, _, err := audit.OpenAnchored(ctx, logPath, st)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range n {
		r := audit.Record{Kind: audit.KindSubmission, RunID: fmt.Sprintf("run-%d", i), Actor: actor}
		if i == 1 {
			r = audit.Record{Kind: audit.KindDispatch, RunID: "run-0", Actor: "coordinator", Data: map[string]string{"site": "A81001"}}
		}
		if _, err := l.Append(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	return logPath
}

func TestAuditCommands(t *testing.T) {
	dir := t.TempDir()
	path := writeAnchoredLog(t, dir, 3, "ana")

	out, _, code := runHaven(t, "audit", "verify", "--log", path)
	if code != 0 || !strings.Contains(out, "3 entries, chain intact") || !strings.Contains(out, "matches the job store's anchor (entry 3)") {
		t.Fatalf("verify: exit %d, %q", code, out)
	}
	out, _, code = runHaven(t, "audit", "head", "--log", path)
	head := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(head, "3:") || len(head) != 2+64 {
		t.Fatalf("head: exit %d, %q", code, out)
	}
	out, _, code = runHaven(t, "audit", "verify", "--log", path, "--head", head)
	if code != 0 {
		t.Fatalf("verify --head %s: exit %d, %q", head, code, out)
	}
	out, _, code = runHaven(t, "audit", "show", "--log", path, "--run", "run-0")
	if code != 0 || strings.Count(out, "run-0") != 2 || strings.Contains(out, "run-2") {
		t.Fatalf("show --run run-0: exit %d\n%s", code, out)
	}

	data, _ := os.ReadFile(path)
	lines := strings.SplitAfter(string(data), "\n")
	tests := []struct {
		name string
		log  string
		args []string
		want string // in stderr; "" for success
	}{
		{"edited entry", strings.Replace(string(data), "A81001", "A81002", 1), nil, "line 2 (entry 2)"},
		{"last entry cut", strings.Join(lines[:2], ""), nil, "1 entries are missing from the end"},
		{"emptied", "", nil, "the log is empty"},
		{"last entry cut, chain alone", strings.Join(lines[:2], ""), []string{"--no-store"}, ""},
		{"last entry cut, kept head", strings.Join(lines[:2], ""), []string{"--no-store", "--head", head}, "removed from the end"},
		{"last entry cut, kept bare hash", strings.Join(lines[:2], ""), []string{"--no-store", "--head", head[2:]}, "removed from the end"},
		{"malformed kept head", string(data), []string{"--head", "x:y"}, "want SEQ:HASH"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(tc.log), 0o600); err != nil {
				t.Fatal(err)
			}
			defer os.WriteFile(path, data, 0o600)
			out, errOut, code := runHaven(t, append([]string{"audit", "verify", "--log", path}, tc.args...)...)
			if tc.want == "" {
				if code != 0 {
					t.Fatalf("exit %d, %q %q; want success", code, out, errOut)
				}
				return
			}
			if code != 1 || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, %q; want exit 1 saying %q", code, errOut, tc.want)
			}
		})
	}

	// Log and store replaced together by another valid pair: the store
	// agrees with the log, only a head kept outside catches it.
	other := t.TempDir()
	writeAnchoredLog(t, other, 3, "mallory")
	for _, f := range []string{"audit.jsonl", "coordinator.db"} {
		b, err := os.ReadFile(filepath.Join(other, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if out, errOut, code := runHaven(t, "audit", "verify", "--log", path); code != 0 {
		t.Fatalf("verify of a replaced pair without a kept head: exit %d, %q %q", code, out, errOut)
	}
	_, errOut, code := runHaven(t, "audit", "verify", "--log", path, "--head", head)
	if code != 1 || !strings.Contains(errOut, "entry 3 has hash") {
		t.Fatalf("verify --head of a replaced pair: exit %d, %q", code, errOut)
	}

	_, errOut, code = runHaven(t, "audit", "verify", "--log", filepath.Join(t.TempDir(), "audit.jsonl"))
	if code != 1 || !strings.Contains(errOut, "no job store") {
		t.Fatalf("verify without a store: exit %d, %q", code, errOut)
	}
}
