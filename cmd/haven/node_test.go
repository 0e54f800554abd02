package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	nodeaudit "github.com/havenhealth/haven/node/audit"
)

// nodeConfig writes a node.yaml whose files do not exist, enough for the
// commands that read only the state and audit directories.
func nodeConfig(t *testing.T) (path, dir string) {
	t.Helper()
	dir = t.TempDir()
	path = filepath.Join(dir, "node.yaml")
	src := `site: {ods: G80001, kind: gp}
coordinator: {address: "127.0.0.1:1"}
tls: {cert: node.crt, key: node.key, ca: ca.crt}
connector: {path: plugin, sha256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef}
governance: {bundle: bundle, public_key: board.pub}
linkage: {secret_file: linkage.key, key_id: k1}
opt_out: {ndop_file: ndop.csv}
state_dir: state
audit_dir: audit
`
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, dir
}

var (
	pausedNo  = regexp.MustCompile(`Paused:\s+no`)
	pausedYes = regexp.MustCompile(`Paused:\s+yes`)
)

func TestNodePauseResumeStatus(t *testing.T) {
	cfg, dir := nodeConfig(t)
	out, errOut, code := runHaven(t, "node", "status", "--config", cfg)
	if code != 0 || !strings.Contains(out, "has not run yet") || !pausedNo.MatchString(out) {
		t.Fatalf("status before anything: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = runHaven(t, "node", "pause", "--config", cfg, "--reason", "server move")
	if code != 0 || !strings.Contains(out, "paused") {
		t.Fatalf("pause: exit %d\n%s%s", code, out, errOut)
	}
	if fi, err := os.Stat(filepath.Join(dir, "state", "pause.json")); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("pause switch: %v %v", fi, err)
	}
	out, _, _ = runHaven(t, "node", "status", "--config", cfg)
	if !pausedYes.MatchString(out) || !strings.Contains(out, "server move") {
		t.Errorf("status after pause:\n%s", out)
	}
	runHaven(t, "node", "resume", "--config", cfg)
	out, _, _ = runHaven(t, "node", "status", "--config", cfg)
	if !pausedNo.MatchString(out) {
		t.Errorf("status after resume:\n%s", out)
	}
	out, _, code = runHaven(t, "node", "audit", "--config", cfg)
	if code != 0 || !strings.Contains(out, "paused") || !strings.Contains(out, "resumed") || !strings.Contains(out, "server move") {
		t.Errorf("audit after pause and resume: exit %d\n%s", code, out)
	}
}

func TestNodeAudit(t *testing.T) {
	cfg, dir := nodeConfig(t)
	l, err := nodeaudit.Open(filepath.Join(dir, "audit"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, r := range []nodeaudit.Record{
		{Time: now.Add(-48 * time.Hour), Event: nodeaudit.EventDone, TaskID: "old-task", RunID: "run-old", Rows: 5, Bytes: 100},
		{Time: now.Add(-time.Hour), Event: nodeaudit.EventReceived, TaskID: "t1", RunID: "run-1"},
		{Time: now.Add(-time.Hour), Event: nodeaudit.EventDone, TaskID: "t1", RunID: "run-1", DefinitionID: "t2dm-prevalence",
			Purpose: "commissioning", RequesterOrg: "QHM", Rows: 12, Bytes: 2048, Fields: []string{"practice", "sex", "patients"}},
		{Time: now.Add(-time.Minute), Event: nodeaudit.EventRefused, TaskID: "t2", RunID: "run-2",
			Reasons: []nodeaudit.Reason{{Code: "site_paused", Message: "paused"}}},
	} {
		if err := l.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()

	out, _, code := runHaven(t, "node", "audit", "--config", cfg, "--since", "24h")
	if code != 0 {
		t.Fatalf("audit: exit %d", code)
	}
	for _, want := range []string{"t2dm-prevalence", "practice,sex,patients", "site_paused", "2 entries; 12 rows and 2048 bytes left the site"} {
		if !strings.Contains(out, want) {
			t.Errorf("audit --since 24h lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "old-task") || strings.Contains(out, "received") {
		t.Errorf("audit shows what it should not:\n%s", out)
	}
	out, _, _ = runHaven(t, "node", "audit", "--config", cfg, "--all", "--since", now.AddDate(0, 0, -7).Format(time.DateOnly))
	if !strings.Contains(out, "old-task") || !strings.Contains(out, "received") {
		t.Errorf("audit --all --since DATE:\n%s", out)
	}
	out, _, _ = runHaven(t, "node", "audit", "--config", cfg, "--json")
	if strings.Count(out, "\n") != 4 || !strings.Contains(out, `"event":"task_done"`) {
		t.Errorf("audit --json:\n%s", out)
	}
	_, errOut, code := runHaven(t, "node", "audit", "--config", cfg, "--since", "last tuesday")
	if code != 1 || !strings.Contains(errOut, "want a duration") {
		t.Errorf("bad --since: exit %d %q", code, errOut)
	}
}

func TestNodeCheckFails(t *testing.T) {
	cfg, _ := nodeConfig(t)
	out, errOut, code := runHaven(t, "node", "check", "--config", cfg)
	if code != 1 || !strings.Contains(out, "FAIL") || !strings.Contains(errOut, "checks failed") {
		t.Fatalf("check of a node with no files: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"node certificate", "linkage secret", "governance bundle", "connector plugin", "coordinator"} {
		if !strings.Contains(out, want) {
			t.Errorf("check report lacks %q:\n%s", want, out)
		}
	}
}

func TestNodeRunBadConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.yaml")
	os.WriteFile(path, []byte("site: {ods: G80001}\n"), 0o644)
	_, errOut, code := runHaven(t, "node", "run", "--config", path)
	if code != 1 || !strings.Contains(errOut, "site.kind: missing") || !strings.Contains(errOut, "coordinator.address: missing") {
		t.Fatalf("run with a bad config: exit %d %q", code, errOut)
	}
	cfg, _ := nodeConfig(t)
	_, errOut, code = runHaven(t, "node", "run", "--config", cfg)
	if code != 1 || !strings.Contains(errOut, "tls.cert") {
		t.Fatalf("run with missing files: exit %d %q", code, errOut)
	}
}

// --config once per site is for run alone; two configurations of one site
// are refused before anything starts.
func TestNodeSeveralConfigs(t *testing.T) {
	cfg, _ := nodeConfig(t)
	other, _ := nodeConfig(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"status with two", []string{"node", "status", "--config", cfg, "--config", other}, "--config is given 2 times"},
		{"pause with two", []string{"node", "pause", "--config", cfg, "--config", other}, "--config is given 2 times"},
		{"run with one site twice", []string{"node", "run", "--config", cfg, "--config", other}, "site G80001 is served by " + cfg + " already"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := runHaven(t, tc.args...)
			if code != 1 || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit 1 and %q", code, errOut, tc.want)
			}
		})
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Time
		err  bool
	}{
		{"", time.Time{}, false},
		{"90m", now.Add(-90 * time.Minute), false},
		{"2026-02-01T00:00:00Z", time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC), false},
		{"-1h", time.Time{}, true},
		{"yesterday", time.Time{}, true},
	}
	for _, tt := range tests {
		got, err := parseSince(tt.in, now)
		if (err != nil) != tt.err || (!tt.err && !got.Equal(tt.want)) {
			t.Errorf("parseSince(%q) = %v, %v", tt.in, got, err)
		}
	}
	if d, err := parseSince("2026-02-01", now); err != nil || d.Format(time.DateOnly) != "2026-02-01" {
		t.Errorf("date: %v %v", d, err)
	}
}
