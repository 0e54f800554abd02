package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/havenhealth/haven/coordinator/audit"
)

func TestAuditCommands(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := audit.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, r := range []audit.Record{
		{Kind: audit.KindSubmission, RunID: "run-1", Actor: "ana", Data: map[string]string{"definition": "t2dm-prevalence"}},
		{Kind: audit.KindDispatch, RunID: "run-1", Actor: "coordinator", Data: map[string]string{"site": "A81001"}},
		{Kind: audit.KindSubmission, RunID: "run-2", Actor: "ana"},
	} {
		if _, err := l.Append(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	_, head := l.Head()
	l.Close()

	out, _, code := runHaven(t, "audit", "verify", "--log", path, "--head", head)
	if code != 0 || !strings.Contains(out, "3 entries, chain intact") {
		t.Fatalf("verify: exit %d, %q", code, out)
	}
	out, _, code = runHaven(t, "audit", "show", "--log", path, "--run", "run-1")
	if code != 0 || strings.Count(out, "run-1") != 2 || strings.Contains(out, "run-2") {
		t.Fatalf("show --run run-1: exit %d\n%s", code, out)
	}

	data, _ := os.ReadFile(path)
	os.WriteFile(path, []byte(strings.Replace(string(data), "A81001", "A81002", 1)), 0o600)
	_, errOut, code := runHaven(t, "audit", "verify", "--log", path)
	if code != 1 || !strings.Contains(errOut, "line 2 (entry 2)") {
		t.Fatalf("verify of edited log: exit %d, %q", code, errOut)
	}

	// Cut the last entry: the chain is intact, the recorded head is not.
	lines := strings.SplitAfter(string(data), "\n")
	os.WriteFile(path, []byte(strings.Join(lines[:2], "")), 0o600)
	_, errOut, code = runHaven(t, "audit", "verify", "--log", path, "--head", head)
	if code != 1 || !strings.Contains(errOut, "removed from the end") {
		t.Fatalf("verify of truncated log: exit %d, %q", code, errOut)
	}
}
