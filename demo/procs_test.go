package demo

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/havenhealth/haven/coordinator/audit"
)

// groupGone reports whether no process is left in the process group.
func groupGone(pgid int) bool { return errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH) }

func TestStop(t *testing.T) {
	tests := []struct {
		name   string
		script string
		killed bool // whether it takes SIGKILL
	}{
		// A child that leaves a grandchild of its own behind, as a node
		// would a connector plugin it failed to stop.
		{"leaves a grandchild", "sleep 60 & trap 'exit 0' TERM; wait", false},
		{"ignores SIGTERM", "trap '' TERM; sleep 60 & wait; sleep 60", true},
		{"already exited", "exit 3", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var ps procs
			p, err := ps.start("node TEST", filepath.Join(dir, "test.log"), "/bin/sh", "-c", tc.script)
			if err != nil {
				t.Fatal(err)
			}
			if tc.script == "exit 3" {
				<-p.done
			} else {
				// Let the shell set its trap and start its children.
				time.Sleep(200 * time.Millisecond)
			}
			err = ps.stopAll(300 * time.Millisecond)
			if tc.killed != (err != nil) {
				t.Errorf("stopAll: %v; want an error only when the child had to be killed", err)
			}
			if !p.exited() {
				t.Error("the child has not exited")
			}
			if !groupGone(p.pid()) {
				t.Errorf("process group %d still has members", p.pid())
			}
			if got := ps.started(); len(got) != 1 || got[0] != p.pid() {
				t.Errorf("started() = %v, want [%d]", got, p.pid())
			}
		})
	}
}

func TestExitError(t *testing.T) {
	dir := t.TempDir()
	var ps procs
	p, err := ps.start("node G80001", filepath.Join(dir, "node.log"), "/bin/sh", "-c", "echo first; echo 'bundle refused'; exit 1")
	if err != nil {
		t.Fatal(err)
	}
	<-p.done
	if ps.firstExited() != p {
		t.Fatal("firstExited does not return the exited child")
	}
	msg := p.exitError().Error()
	for _, want := range []string{"node G80001", "exit status 1", "node.log", "bundle refused"} {
		if !strings.Contains(msg, want) {
			t.Errorf("exit error %q does not mention %q", msg, want)
		}
	}
	if err := ps.stopAll(time.Second); err != nil {
		t.Errorf("stopAll after exit: %v", err)
	}
}

func TestLogTail(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.log")
	if err := os.WriteFile(path, []byte("a\nb\nc\nd\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, want := logTail(path, 2), "    c\n    d"; got != want {
		t.Errorf("logTail = %q, want %q", got, want)
	}
	if got := logTail(filepath.Join(dir, "missing.log"), 2); !strings.Contains(got, "no such file") {
		t.Errorf("logTail of a missing file = %q", got)
	}
}

func TestSiteLinks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := audit.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, r := range []audit.Record{
		{Kind: audit.KindNode, Actor: "G80001", Data: map[string]any{"event": "connected"}},
		{Kind: audit.KindNode, Actor: "G80002", Data: map[string]any{"event": "connected"}},
		{Kind: audit.KindSubmission, Actor: "someone", Data: map[string]any{"event": "connected"}},
		{Kind: audit.KindNode, Actor: "G80002", Data: map[string]any{"event": "disconnected"}},
		{Kind: audit.KindNode, Actor: "RA0", Data: map[string]any{"event": "rejected", "reason": "site RA0 is not a member"}},
		// A node that reconnects: its old link is logged as ended after
		// the new one is accepted, and the site stays up.
		{Kind: audit.KindNode, Actor: "RB1", Data: map[string]any{"event": "connected", "kind": "trust", "session": "link-1"}},
		{Kind: audit.KindNode, Actor: "RB1", Data: map[string]any{"event": "connected", "kind": "trust", "session": "link-2"}},
		{Kind: audit.KindNode, Actor: "RB1", Data: map[string]any{"event": "disconnected", "session": "link-1",
			"reason": "replaced by a newer link from the same site"}},
		// Its latest link ending takes it down.
		{Kind: audit.KindNode, Actor: "RC2", Data: map[string]any{"event": "connected", "kind": "trust", "session": "link-3"}},
		{Kind: audit.KindNode, Actor: "RC2", Data: map[string]any{"event": "disconnected", "session": "link-3"}},
	} {
		if _, err := l.Append(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	// A last entry still being written is not an error.
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"seq":11,"kind":"node"`)
	f.Close()

	up, rejected, err := siteLinks(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(up) != 2 || !up["G80001"] || !up["RB1"] {
		t.Errorf("up = %v, want G80001 and RB1", up)
	}
	if len(rejected) != 1 || rejected["RA0"] != "site RA0 is not a member" {
		t.Errorf("rejected = %v", rejected)
	}
}

func TestPrepareDir(t *testing.T) {
	root := t.TempDir()
	foreign := filepath.Join(root, "foreign")
	if err := os.MkdirAll(foreign, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(foreign, "thesis.tex"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := prepareDir(foreign); err == nil || !strings.Contains(err.Error(), "not made by haven demo") {
		t.Errorf("prepareDir of a foreign directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(foreign, "thesis.tex")); err != nil {
		t.Errorf("a foreign file was touched: %v", err)
	}

	d := filepath.Join(root, "demo")
	if err := prepareDir(d); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(d, "logs", "old.log")
	if err := os.WriteFile(old, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := prepareDir(d); err != nil {
		t.Fatalf("prepareDir of an earlier demo's directory: %v", err)
	}
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an earlier demo's file is still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(d, markerFile)); err != nil {
		t.Errorf("no marker: %v", err)
	}
}

func TestRunOnce(t *testing.T) {
	dir := t.TempDir()
	var ps procs
	ctx := context.Background()
	if err := ps.runOnce(ctx, time.Second, "ok", filepath.Join(dir, "ok.log"), "/bin/sh", "-c", "echo done"); err != nil {
		t.Errorf("a command that succeeds: %v", err)
	}
	err := ps.runOnce(ctx, time.Second, "haven synth", filepath.Join(dir, "bad.log"), "/bin/sh", "-c", "echo 'disk full' >&2; exit 2")
	if err == nil || !strings.Contains(err.Error(), "haven synth failed") || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("a command that fails: %v", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := ps.runOnce(cctx, time.Second, "slow", filepath.Join(dir, "slow.log"), "/bin/sh", "-c", "exec sleep 60"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a command cut short: %v", err)
	}
	pids := ps.started()
	if len(pids) != 3 {
		t.Fatalf("started() = %v, want 3 pids", pids)
	}
	for _, pid := range pids {
		if !groupGone(pid) {
			t.Errorf("process group %d still has members", pid)
		}
	}
	if ps.firstExited() != nil {
		t.Error("a command run to completion counts as a daemon that exited")
	}
}
