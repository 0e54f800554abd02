package faults

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/havenhealth/haven/coordinator/store"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// refusedToStart runs `haven args…` and checks that it exits with an
// error, within 30 s, whose output says each of want.
func (f *faultNet) refusedToStart(t *testing.T, ctx context.Context, what string, args []string, want ...string) {
	t.Helper()
	runCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := f.haven(runCtx, args...)
	if err == nil || runCtx.Err() != nil {
		t.Errorf("%s started (err %v, hung %v):\n%s", what, err, runCtx.Err() != nil, out)
		return
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s refused without saying %q:\n%s", what, w, out)
		}
	}
	t.Logf("%s refused: %s", what, lastLine(out))
}

// secondCoordinator is the issue's row "a second `haven coordinator run` on
// the same data directory": it exits naming the running one's pid, and
// the log and store the running one keeps are untouched.
func (f *faultNet) secondCoordinator(t *testing.T, ctx context.Context) {
	before, err := os.ReadFile(filepath.Join(f.CoordinatorData(), "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	f.refusedToStart(t, ctx, "a second coordinator", []string{"coordinator", "run", "--config", f.CoordinatorConfig()},
		"is in use by another Haven process", fmt.Sprintf("pid %d", f.CoordinatorPID()))
	after, err := os.ReadFile(filepath.Join(f.CoordinatorData(), "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(after, before) {
		t.Error("the audit log was rewritten while a second coordinator tried to start")
	}
	if out, err := f.haven(ctx, "audit", "verify", "--log", filepath.Join(f.CoordinatorData(), "audit.jsonl")); err != nil {
		t.Errorf("audit verify after a second coordinator tried to start: %v\n%s", err, out)
	}
	f.checkStored(t, ctx)
}

// secondNode is the row "a second `haven node run` on a site's state
// directory": it exits naming the running node's pid, and the running node
// still answers.
func (f *faultNet) secondNode(t *testing.T, ctx context.Context) {
	site := f.gps[0]
	pid, err := f.NodePID(site)
	if err != nil {
		t.Fatal(err)
	}
	f.refusedToStart(t, ctx, "a second node for "+site, []string{"node", "run", "--config", f.NodeConfig(site)},
		"is in use by another Haven process", fmt.Sprintf("pid %d", pid))
	rr := f.submit(t, ctx, prevalence)
	if rr.Run.GetState() != havenv1.RunState_RUN_STATE_RELEASED {
		t.Fatalf("after a second node tried to start: %s, want released", coverage(rr.Run))
	}
	checkSites(t, rr.Run, nil)
	f.released = append(f.released, stored{rr.Run, rr.Table})
}

// auditLogCut is the row "the last line of the coordinator audit log
// deleted; the log cut to 100 lines; emptied": `haven audit verify` fails,
// the coordinator refuses to start naming the log and the store, and
// neither file changes; with the log put back it starts and has lost
// nothing.
func (f *faultNet) auditLogCut(t *testing.T, ctx context.Context) {
	logPath := filepath.Join(f.CoordinatorData(), "audit.jsonl")
	storePath := filepath.Join(f.CoordinatorData(), "coordinator.db")
	if err := f.StopCoordinator(); err != nil {
		t.Fatal(err)
	}
	orig, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(orig, []byte("\n"))
	lines = lines[:len(lines)-1]
	if len(lines) <= 100 {
		t.Fatalf("the audit log has %d entries; the step needs more than 100", len(lines))
	}
	seq0, hash0, _, err := store.ReadAuditHead(ctx, storePath)
	if err != nil {
		t.Fatal(err)
	}
	if seq0 != uint64(len(lines)) {
		t.Fatalf("anchor at entry %d, log has %d entries after a clean stop", seq0, len(lines))
	}
	for _, c := range []struct {
		name, want string
		log        []byte
	}{
		{"last line deleted", "1 entries are missing from the end", bytes.Join(lines[:len(lines)-1], nil)},
		{"cut to 100 lines", fmt.Sprintf("%d entries are missing from the end", len(lines)-100), bytes.Join(lines[:100], nil)},
		{"emptied", "the log is empty", nil},
	} {
		if err := os.WriteFile(logPath, c.log, 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := f.haven(ctx, "audit", "verify", "--log", logPath); err == nil || !strings.Contains(out, c.want) {
			t.Errorf("%s: audit verify: %v\n%s", c.name, err, out)
		}
		f.refusedToStart(t, ctx, "the coordinator with its audit log "+c.name,
			[]string{"coordinator", "run", "--config", f.CoordinatorConfig()}, logPath, storePath, c.want)
		got, err := os.ReadFile(logPath)
		if err != nil {
			t.Fatal(err)
		}
		seq, hash, _, err := store.ReadAuditHead(ctx, storePath)
		if err != nil || !bytes.Equal(got, c.log) || seq != seq0 || hash != hash0 {
			t.Errorf("%s: a refused start changed the log (%v) or the anchor (entry %d→%d, %v)", c.name, !bytes.Equal(got, c.log), seq0, seq, err)
		}
	}
	if err := os.WriteFile(logPath, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.StartCoordinator(ctx); err != nil {
		t.Fatalf("start with the log put back: %v", err)
	}
	if out, err := f.haven(ctx, "audit", "verify", "--log", logPath); err != nil {
		t.Errorf("audit verify with the log put back: %v\n%s", err, out)
	}
	f.checkStored(t, ctx)
}
