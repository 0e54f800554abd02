package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/internal/testutil"
	"github.com/havenhealth/haven/node/audit"
	"github.com/havenhealth/haven/node/config"
	"github.com/havenhealth/haven/node/connector/connectortest"
	"github.com/havenhealth/haven/node/nodetest"
	"github.com/havenhealth/haven/node/pseudonym"
	"github.com/havenhealth/haven/node/session"
	"github.com/havenhealth/haven/node/sqlgen"
	"github.com/havenhealth/haven/node/state"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/synth"
)

var plugins connectortest.Cache

func TestMain(m *testing.M) {
	code := m.Run()
	plugins.Close()
	nodetest.Cleanup()
	os.Exit(code)
}

const duckdbPlugin = "github.com/havenhealth/haven/cmd/haven-connector-duckdb"

// testSecret is every test node's linkage secret; tests scan for it.
var testSecret = []byte("node-test-linkage-secret-0123456789-abcdef")

// site is everything one node under test needs on disk, and the
// coordinator double it talks to.
type site struct {
	n      *synth.Network
	site   synth.Site
	key    nodetest.Key
	bundle string
	pki    *nodetest.PKI
	coord  *nodetest.CoordinatorDouble
	dir    string
	config string
	cat    *catalog.Catalog
	logs   *testutil.SyncBuffer
}

// newSite lays out a node's files for the first site of kind and starts a
// coordinator double for it.
func newSite(t testing.TB, kind string) *site {
	t.Helper()
	s := &site{n: nodetest.Network(t), dir: t.TempDir(), logs: &testutil.SyncBuffer{}}
	s.site = nodetest.Site(t, s.n, kind)
	s.key = nodetest.NewKey(t)
	s.bundle = nodetest.Bundle(t, s.key, nil)
	s.pki = nodetest.NewPKI(t, s.site.ODS)
	s.coord = nodetest.StartCoordinator(t, s.pki.ServerTLS, 50*time.Millisecond)
	plugin := plugins.Plugin(t, duckdbPlugin, "duckdb_arrow")

	pub := filepath.Join(s.dir, "board.pub")
	secret := filepath.Join(s.dir, "linkage.key")
	must(t, os.WriteFile(pub, s.key.Public, 0o644))
	must(t, os.WriteFile(secret, testSecret, 0o600))
	siteDir := filepath.Dir(s.n.Path(s.site.Files[cdm.TablePatient].Path))
	cfg := fmt.Sprintf(`site: {ods: %s, kind: %s}
coordinator: {address: "%s", server_name: localhost}
tls: {cert: %s, key: %s, ca: %s}
connector:
  path: %s
  sha256: %s
  args: ["--dir", "%s", "--threads", "1"]
governance: {bundle: %s, public_key: board.pub, reload_interval: 1s}
linkage: {secret_file: linkage.key, key_id: test-key-1}
opt_out: {ndop_file: %s}
state_dir: state
audit_dir: audit
limits: {concurrency: 2, query_timeout: 1m}
`, s.site.ODS, s.site.Kind, s.coord.Addr, s.pki.NodeCert, s.pki.NodeKey, s.pki.CAFile,
		plugin.Path, plugin.SHA256, siteDir, s.bundle, s.n.Path(s.n.NationalOptOut.Path))
	s.config = filepath.Join(s.dir, "node.yaml")
	must(t, os.WriteFile(s.config, []byte(cfg), 0o644))
	c, err := catalog.Load(os.DirFS(s.bundle))
	must(t, err)
	s.cat = c
	return s
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (s *site) loadConfig(t *testing.T) *config.Config {
	t.Helper()
	c, err := config.Load(s.config)
	must(t, err)
	return c
}

// running is a node under test.
type running struct {
	n    *Node
	stop func()
}

// start starts the node daemon and waits until it has registered.
func (s *site) start(t *testing.T) *running {
	t.Helper()
	regs := len(s.coord.Registers())
	n, err := New(t.Context(), s.loadConfig(t), Options{
		Logger:       slog.New(slog.NewJSONHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Backoff:      session.Constant(time.Millisecond),
		UploadRetry:  time.Millisecond,
		Housekeeping: 10 * time.Millisecond,
	})
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var once sync.Once
	r := &running{n: n, stop: func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}}
	t.Cleanup(r.stop)
	nodetest.Eventually(t, "the node registered", func() bool { return len(s.coord.Registers()) > regs && s.coord.Connected() })
	return r
}

// task builds the coordinator's task for this site.
func (s *site) task(t *testing.T, id, runID string) *havenv1.Task {
	t.Helper()
	return nodetest.Task(t, s.cat, id, runID, s.site.ODS, s.site.Kind, nil)
}

// send sends a task and waits for its outcome.
func (s *site) send(t *testing.T, task *havenv1.Task) *havenv1.TaskOutcome {
	t.Helper()
	must(t, s.coord.SendTask(task))
	var o *havenv1.TaskOutcome
	nodetest.Eventually(t, "outcome of "+task.GetTaskId(), func() bool {
		o = s.coord.Outcome(task.GetTaskId())
		return o != nil
	})
	return o
}

// direct runs the task's Result statement directly in DuckDB over the
// site's files: the answer the upload must equal. Linkage rows have their
// NHS number replaced by the run pseudonym.
func (s *site) direct(t *testing.T, task *havenv1.Task) []string {
	t.Helper()
	def, _ := s.cat.Get(task.GetDefinitionId())
	b, err := def.Bind(nil)
	must(t, err)
	p, err := sqlgen.Compile(b, def.Plan(), s.site.Kind, sqlgen.DuckDB(), sqlgen.Options{SiteODS: s.site.ODS, NDOP: nodetest.NDOP(t, s.n)})
	must(t, err)
	db := nodetest.OpenSite(t, s.n, s.site)
	rows := nodetest.Rows(t, db, p.Result.SQL, p.Result.Args...)
	if p.Mode == catalog.ModeLinkage {
		sec, _ := pseudonym.NewSecret(testSecret)
		d, _ := pseudonym.NewDeriver(sec, task.GetRunId())
		for _, r := range rows {
			ps := d.Of(r[0].(string))
			r[0] = fmt.Sprintf("%x", ps[:])
		}
	}
	var out []string
	for _, r := range rows {
		var parts []string
		for _, v := range r {
			switch x := v.(type) {
			case nil:
				parts = append(parts, "null")
			case float64:
				parts = append(parts, fmt.Sprintf("%.9g", x))
			default:
				parts = append(parts, fmt.Sprint(x))
			}
		}
		out = append(out, strings.Join(parts, "|"))
	}
	slices.Sort(out)
	return out
}

func uploaded(t *testing.T, u *nodetest.Upload) []string {
	t.Helper()
	var out []string
	for _, rec := range u.Records {
		for i := range int(rec.NumRows()) {
			var parts []string
			for c := range int(rec.NumCols()) {
				col := rec.Column(c)
				switch a := col.(type) {
				case *array.FixedSizeBinary:
					parts = append(parts, fmt.Sprintf("%x", a.Value(i)))
				case *array.Float64:
					if a.IsNull(i) {
						parts = append(parts, "null")
					} else {
						parts = append(parts, fmt.Sprintf("%.9g", a.Value(i)))
					}
				default:
					if col.IsNull(i) {
						parts = append(parts, "null")
					} else {
						parts = append(parts, col.ValueStr(i))
					}
				}
			}
			out = append(out, strings.Join(parts, "|"))
		}
	}
	slices.Sort(out)
	return out
}

func TestRegisterAndHeartbeat(t *testing.T) {
	s := newSite(t, "gp")
	s.start(t)
	reg := s.coord.Registers()[0]
	if reg.GetSiteOds() != s.site.ODS || reg.GetSiteKind() != havenv1.SiteKind_SITE_KIND_GP || reg.GetCdmVersion() != cdm.Version {
		t.Errorf("register %v", reg)
	}
	if reg.GetBundleRevision() == "" || reg.GetLinkageKeyId() != "test-key-1" || reg.GetNodeVersion() == "" {
		t.Errorf("register lacks bundle revision, key id or version: %v", reg)
	}
	c := reg.GetConnector()
	if c.GetDialect() != "duckdb" || len(c.GetTables()) != len(cdm.TablesFor(cdm.KindGP)) {
		t.Errorf("connector %v", c)
	}
	for _, ti := range c.GetTables() {
		if want := s.site.Files[ti.GetName()].Rows; ti.GetRowCount() != want {
			t.Errorf("table %s: %d rows registered, the site has %d", ti.GetName(), ti.GetRowCount(), want)
		}
	}
	if reg.GetRegisteredPopulation() <= 0 || reg.GetPause().GetPaused() {
		t.Errorf("population %d, pause %v", reg.GetRegisteredPopulation(), reg.GetPause())
	}
	nodetest.Eventually(t, "heartbeats", func() bool { return s.coord.Heartbeats() >= 3 })
	stateDir := filepath.Join(s.dir, "state")
	nodetest.Eventually(t, "status file says connected", func() bool {
		st, err := state.ReadStatus(stateDir)
		return err == nil && st.Connected && st.BundleRevision == reg.GetBundleRevision() && st.ConnectorDialect == "duckdb"
	})
}

func TestAggregateAndLinkageTasks(t *testing.T) {
	for _, tc := range []struct{ kind, def string }{
		{"gp", "t2dm-prevalence"},
		{"gp", "t2dm-emergency-admissions"},
		{"trust", "t2dm-emergency-admissions"},
	} {
		t.Run(tc.kind+"/"+tc.def, func(t *testing.T) {
			s := newSite(t, tc.kind)
			s.start(t)
			task := s.task(t, tc.def, "run-e2e-"+tc.kind)
			o := s.send(t, task)
			d := o.GetDone()
			if d == nil {
				t.Fatalf("outcome %v\nlogs:\n%s", o, s.logs.String())
			}
			u, ok := s.coord.Upload(task.GetTaskId())
			if !ok {
				t.Fatal("nothing uploaded")
			}
			want, got := s.direct(t, task), uploaded(t, u)
			if len(want) == 0 {
				t.Fatal("the direct answer is empty; the test proves nothing")
			}
			if !slices.Equal(got, want) {
				t.Fatalf("upload (%d rows) differs from the direct DuckDB answer (%d rows)", len(got), len(want))
			}
			if d.GetRows() != u.Rows || d.GetBytes() != u.Bytes || d.GetBatches() != u.Batches {
				t.Errorf("TaskDone %v; coordinator received %d rows %d bytes %d batches", d, u.Rows, u.Bytes, u.Batches)
			}
			// The coordinator heard the stages and the acceptance.
			var accepted bool
			for _, m := range s.coord.Messages() {
				if a := m.GetTaskAccepted(); a != nil && a.GetTaskId() == task.GetTaskId() && len(a.GetSqlHash()) == 64 {
					accepted = true
				}
			}
			if !accepted {
				t.Error("no TaskAccepted with a SQL hash")
			}
			if u.Schema.Field(0).Name == catalog.FieldNamePseudonym {
				assertNoOptOuts(t, s, task.GetRunId(), u)
			}
			assertClean(t, s)
		})
	}
}

func TestReplayedRunRefusedAfterRestart(t *testing.T) {
	s := newSite(t, "gp")
	r := s.start(t)
	first := s.task(t, "t2dm-prevalence", "run-once")
	if o := s.send(t, first); o.GetDone() == nil {
		t.Fatalf("first run: %v", o)
	}
	r.stop()
	s.start(t)
	again := s.task(t, "t2dm-prevalence", "run-once")
	again.TaskId = "run-once.again"
	o := s.send(t, again)
	if rf := o.GetRefused(); rf == nil || rf.GetReasons()[0].GetCode() != "run_replayed" {
		t.Fatalf("replayed run after restart: %v", o)
	}
	if _, ok := s.coord.Upload(again.GetTaskId()); ok {
		t.Error("a replayed run uploaded")
	}
}

func TestRefusedTasks(t *testing.T) {
	s := newSite(t, "gp")
	s.start(t)

	unknown := s.task(t, "t2dm-prevalence", "run-unknown")
	unknown.DefinitionId = "everything-about-everyone"
	if o := s.send(t, unknown); o.GetRefused().GetReasons()[0].GetCode() != "definition_not_in_bundle" {
		t.Errorf("unknown definition: %v", o)
	}

	// Paused with the CLI's switch: refused from the next task on, and
	// the coordinator hears of it.
	must(t, state.WritePause(filepath.Join(s.dir, "state"), state.Pause{Paused: true, Reason: "server move", Since: time.Now()}))
	paused := s.task(t, "t2dm-prevalence", "run-paused")
	if o := s.send(t, paused); o.GetRefused().GetReasons()[0].GetCode() != "site_paused" {
		t.Errorf("paused: %v", o)
	}
	nodetest.Eventually(t, "pause reported", func() bool {
		return slices.ContainsFunc(s.coord.Messages(), func(m *havenv1.NodeMessage) bool {
			return m.GetPauseState().GetPaused() && m.GetPauseState().GetReason() == "server move"
		})
	})
	must(t, state.WritePause(filepath.Join(s.dir, "state"), state.Pause{Since: time.Now()}))
	resumed := s.task(t, "t2dm-prevalence", "run-resumed")
	if o := s.send(t, resumed); o.GetDone() == nil {
		t.Errorf("after resume: %v", o)
	}
	for _, id := range []string{unknown.GetTaskId(), paused.GetTaskId()} {
		if _, ok := s.coord.Upload(id); ok {
			t.Errorf("refused task %s uploaded", id)
		}
	}
	assertClean(t, s)
}

func TestRestrictedCodelistRefused(t *testing.T) {
	s := newSite(t, "gp")
	s.bundle = nodetest.Bundle(t, s.key, func(data map[string]any) {
		data["restricted_codelists"].(map[string]any)["t2dm"] = map[string]any{"basis": "test restriction"}
	})
	cfg, _ := os.ReadFile(s.config)
	cfg = regexp.MustCompile(`bundle: [^,]+,`).ReplaceAll(cfg, []byte("bundle: "+s.bundle+","))
	must(t, os.WriteFile(s.config, cfg, 0o644))
	s.start(t)
	o := s.send(t, s.task(t, "t2dm-prevalence", "run-restricted"))
	rf := o.GetRefused()
	if rf == nil || rf.GetReasons()[0].GetCode() != "restricted_codelist" || !strings.Contains(rf.GetReasons()[0].GetMessage(), "t2dm") {
		t.Fatalf("restricted codelist: %v", o)
	}
}

func TestTamperedBundle(t *testing.T) {
	s := newSite(t, "gp")
	data := filepath.Join(s.bundle, "data.json")
	orig, _ := os.ReadFile(data)

	// A bundle edited after signing stops the node from starting.
	must(t, os.WriteFile(data, bytes.Replace(orig, []byte(`"commissioning"`), []byte(`"marketing"`), 1), 0o644))
	if _, err := New(t.Context(), s.loadConfig(t), Options{Logger: slog.New(slog.DiscardHandler)}); err == nil || !strings.Contains(err.Error(), "governance bundle refused") {
		t.Fatalf("New with a tampered bundle: %v", err)
	}

	// A bundle tampered with while the node runs is refused and the old
	// one stays in force.
	must(t, os.WriteFile(data, orig, 0o644))
	r := s.start(t)
	rev := r.n.engine.Revision()
	must(t, os.WriteFile(data, bytes.Replace(orig, []byte(`"commissioning"`), []byte(`"marketing"`), 1), 0o644))
	nodetest.Eventually(t, "the tampered bundle refused", func() bool {
		return strings.Contains(s.logs.String(), "policy bundle refused; the active bundle stays in force")
	})
	if got := r.n.engine.Revision(); got != rev {
		t.Errorf("revision %s after a refused reload, want %s", got, rev)
	}
	if o := s.send(t, s.task(t, "t2dm-prevalence", "run-after-tamper")); o.GetDone() == nil {
		t.Errorf("task under the old bundle: %v", o)
	}
}

// pluginPIDs lists the connector plugin processes this test process
// started.
func pluginPIDs(t *testing.T) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skip("no /proc: cannot find the plugin process")
	}
	me := strconv.Itoa(os.Getpid())
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 1 && f[1] == me && strings.Contains(string(b), "haven-connecto") {
			out = append(out, pid)
		}
	}
	return out
}

func TestPluginCrashDoesNotStopNode(t *testing.T) {
	s := newSite(t, "gp")
	s.start(t)
	before := pluginPIDs(t)
	if len(before) != 1 {
		t.Fatalf("plugin processes %v, want one", before)
	}
	must(t, syscall.Kill(before[0], syscall.SIGKILL))

	// The task that meets the dead plugin either fails as a connector
	// failure or, if the node noticed first, runs on a new plugin.
	o := s.send(t, s.task(t, "t2dm-prevalence", "run-crash-1"))
	if o.GetDone() == nil && o.GetFailed().GetCode() != havenv1.TaskErrorCode_TASK_ERROR_CODE_CONNECTOR {
		t.Fatalf("task after the crash: %v", o)
	}
	o = s.send(t, s.task(t, "t2dm-prevalence", "run-crash-2"))
	if o.GetDone() == nil {
		t.Fatalf("next task: %v", o)
	}
	after := pluginPIDs(t)
	if len(after) != 1 || after[0] == before[0] {
		t.Errorf("plugin processes after the crash %v (before %v)", after, before)
	}
	if !s.coord.Connected() {
		t.Error("the node dropped its link")
	}
}

func TestReconnectMidTaskReportsOutcome(t *testing.T) {
	s := newSite(t, "gp")
	s.start(t)
	task := s.task(t, "t2dm-prevalence", "run-reconnect")
	journal := filepath.Join(s.dir, "state", state.JournalFile)
	// When the node accepts the task, the link drops and the coordinator
	// stays unreachable for links (and, twice, for uploads) until the
	// node has finished the task and recorded its outcome.
	var dropped sync.Once
	s.coord.OnMessage(func(m *havenv1.NodeMessage) {
		if m.GetTaskAccepted().GetTaskId() == task.GetTaskId() {
			dropped.Do(func() {
				s.coord.RefuseLinks(true)
				s.coord.RefuseUploads(2)
				// Synchronously: the double handles nothing more on this
				// link, so the outcome cannot slip through before the drop.
				s.coord.DropLinks()
			})
		}
	})
	must(t, s.coord.SendTask(task))
	nodetest.Eventually(t, "the upload arrived while the link was down", func() bool {
		_, ok := s.coord.Upload(task.GetTaskId())
		return ok
	})
	nodetest.Eventually(t, "the outcome is in the journal", func() bool {
		// The task id is in the journal while it runs too; wait until it
		// has moved from running to unreported.
		var j struct {
			Running    []string          `json:"running"`
			Unreported []json.RawMessage `json:"unreported"`
		}
		b, _ := os.ReadFile(journal)
		if json.Unmarshal(b, &j) != nil || slices.Contains(j.Running, task.GetTaskId()) {
			return false
		}
		for _, o := range j.Unreported {
			if bytes.Contains(o, []byte(task.GetTaskId())) {
				return true
			}
		}
		return false
	})
	if s.coord.Connected() {
		t.Fatal("the link came back while links were refused")
	}
	regs := len(s.coord.Registers())
	s.coord.RefuseLinks(false)
	nodetest.Eventually(t, "the node registered again", func() bool { return len(s.coord.Registers()) > regs })
	reg := s.coord.Registers()[regs]
	var reported *havenv1.TaskDone
	for _, o := range reg.GetUnreportedOutcomes() {
		if o.GetDone().GetTaskId() == task.GetTaskId() {
			reported = o.GetDone()
		}
	}
	u, _ := s.coord.Upload(task.GetTaskId())
	if reported == nil || reported.GetRows() != u.Rows || reported.GetBytes() != u.Bytes {
		t.Fatalf("the next Register reports %v; the upload had %d rows %d bytes", reg.GetUnreportedOutcomes(), u.Rows, u.Bytes)
	}
	// Once reported, it is not reported again.
	nodetest.Eventually(t, "journal emptied", func() bool {
		b, _ := os.ReadFile(journal)
		return !bytes.Contains(b, []byte(task.GetTaskId()))
	})
	assertClean(t, s)
}

func TestCheck(t *testing.T) {
	s := newSite(t, "gp")
	cfg := s.loadConfig(t)
	findings := Check(t.Context(), cfg, nil)
	for _, f := range findings {
		if !f.OK {
			t.Errorf("%s: %s", f.Check, f.Detail)
		}
	}
	var names []string
	for _, f := range findings {
		names = append(names, f.Check)
	}
	for _, want := range []string{"node certificate", "governance bundle", "connector plugin", "CDM table patient", "coordinator"} {
		if !slices.Contains(names, want) {
			t.Errorf("no %q finding in %v", want, names)
		}
	}
	for _, f := range findings {
		if f.Check == "CDM table patient" && (!f.Warn || !strings.Contains(f.Detail, "invalid NHS number")) {
			t.Errorf("patient table finding %+v: the synthetic site has invalid NHS numbers", f)
		}
	}

	// A wrong checksum, a tampered bundle and an unreachable coordinator
	// each fail.
	cfg.Connector.SHA256 = strings.Repeat("0", 64)
	cfg.Coordinator.Address = "127.0.0.1:1"
	os.WriteFile(filepath.Join(s.bundle, "data.json"), []byte(`{"approvals": {}}`), 0o644)
	failed := map[string]bool{}
	for _, f := range Check(t.Context(), cfg, nil) {
		if !f.OK {
			failed[f.Check] = true
		}
	}
	for _, want := range []string{"connector plugin", "governance bundle", "coordinator"} {
		if !failed[want] {
			t.Errorf("%s did not fail: %v", want, failed)
		}
	}
}

// assertNoOptOuts checks that no patient on the national list or on the
// site's own type 1 list, read straight from the synthetic files, is in a
// linkage upload.
func assertNoOptOuts(t *testing.T, s *site, runID string, u *nodetest.Upload) {
	t.Helper()
	nums := nodetest.NDOP(t, s.n)
	if f, ok := s.site.Files[cdm.TableOptOut]; ok {
		db := nodetest.OpenSite(t, s.n, s.site)
		nums = append(nums, nodetest.Strings(t, db, "SELECT nhs_number FROM read_parquet(?) WHERE kind = 'type1'", s.n.Path(f.Path))...)
	}
	sec, _ := pseudonym.NewSecret(testSecret)
	d, _ := pseudonym.NewDeriver(sec, runID)
	banned := map[string]bool{}
	for _, n := range nums {
		p := d.Of(n)
		banned[string(p[:])] = true
	}
	rows := 0
	for _, rec := range u.Records {
		col := rec.Column(0).(*array.FixedSizeBinary)
		for i := range col.Len() {
			rows++
			if banned[string(col.Value(i))] {
				t.Fatal("an opted-out patient's pseudonym left the site")
			}
		}
	}
	if rows == 0 || len(banned) == 0 {
		t.Fatal("no rows or no opt-outs; the check proves nothing")
	}
}

// assertClean checks that no NHS number or birth date of the site's
// patients, and not the linkage secret, is in the node's logs or audit log.
func assertClean(t *testing.T, s *site) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, "audit", audit.FileName))
	must(t, err)
	texts := map[string]string{"audit log": string(b), "log": s.logs.String()}
	db := nodetest.OpenSite(t, s.n, s.site)
	nums := nodetest.Strings(t, db, "SELECT nhs_number FROM patient")
	births := nodetest.Strings(t, db, "SELECT DISTINCT CAST(birth_date AS VARCHAR) FROM patient")
	legit := map[string]bool{}
	bundleData, _ := os.ReadFile(filepath.Join(nodetest.ReferenceBundle(), "data.json"))
	for _, d := range dateRE.FindAllString(string(bundleData), -1) {
		legit[d] = true
	}
	for _, d := range s.cat.Definitions() {
		for _, x := range dateRE.FindAllString(string(d.Canonical()), -1) {
			legit[x] = true
		}
	}
	var pseudonyms []string
	for _, u := range s.coord.Uploads() {
		if u.Schema.Field(0).Name != catalog.FieldNamePseudonym {
			continue
		}
		for _, rec := range u.Records {
			col := rec.Column(0).(*array.FixedSizeBinary)
			for i := range col.Len() {
				pseudonyms = append(pseudonyms, fmt.Sprintf("%x", col.Value(i)))
			}
		}
	}
	for name, text := range texts {
		if len(text) < 100 {
			t.Fatalf("%s is nearly empty; nothing to scan", name)
		}
		if strings.Contains(text, string(testSecret)) {
			t.Errorf("the linkage secret is in the %s", name)
		}
		for _, n := range nums {
			if strings.Contains(text, n) {
				t.Fatalf("an NHS number is in the %s", name)
			}
		}
		for _, d := range births {
			if !legit[d] && strings.Contains(text, d) {
				t.Fatalf("a birth date (%s) is in the %s", d, name)
			}
		}
		for _, p := range pseudonyms {
			if strings.Contains(text, p) {
				t.Fatalf("a pseudonym is in the %s", name)
			}
		}
	}
}

var dateRE = regexp.MustCompile(`\d{4}-\d{2}-\d{2}`)

// Readmissions send day lists: the compiler returns BIGINT lists, the
// plugin list<int64>, and the plan wants list<int32>. The upload must
// carry the plan's types and exactly the direct DuckDB answer.
func TestReadmissionsDayLists(t *testing.T) {
	s := newSite(t, "trust")
	s.start(t)
	const id = "emergency-readmissions-30d"
	task := s.task(t, id, "run-readmissions")
	o := s.send(t, task)
	if o.GetDone() == nil {
		t.Fatalf("outcome %v\nlogs:\n%s", o, s.logs.String())
	}
	u, ok := s.coord.Upload(task.GetTaskId())
	if !ok {
		t.Fatal("nothing uploaded")
	}
	def, _ := s.cat.Get(id)
	want, _ := def.Plan().Schema(s.site.Kind)
	if !u.Schema.Equal(want) {
		t.Fatalf("uploaded schema\n%v\nwant the plan's\n%v", u.Schema, want)
	}

	// The direct answer, typed: pseudonym, then each value as the plan
	// renders it (days as plain integers, lists as [a b c]).
	b, err := def.Bind(nil)
	must(t, err)
	p, err := sqlgen.Compile(b, def.Plan(), s.site.Kind, sqlgen.DuckDB(), sqlgen.Options{NDOP: nodetest.NDOP(t, s.n)})
	must(t, err)
	sec, _ := pseudonym.NewSecret(testSecret)
	d, _ := pseudonym.NewDeriver(sec, task.GetRunId())
	var direct []string
	lists := 0
	for _, r := range nodetest.Rows(t, nodetest.OpenSite(t, s.n, s.site), p.Result.SQL, p.Result.Args...) {
		ps := d.Of(r[0].(string))
		parts := []string{fmt.Sprintf("%x", ps[:])}
		for _, v := range r[1:] {
			switch x := v.(type) {
			case nil:
				parts = append(parts, "null")
			case []any:
				if len(x) > 0 {
					lists++
				}
				days := make([]string, len(x))
				for i, e := range x {
					days[i] = fmt.Sprint(e)
				}
				parts = append(parts, "["+strings.Join(days, " ")+"]")
			default:
				parts = append(parts, fmt.Sprint(x))
			}
		}
		direct = append(direct, strings.Join(parts, "|"))
	}
	slices.Sort(direct)
	if lists == 0 {
		t.Fatal("no patient has a non-empty day list; the test proves nothing")
	}
	var got []string
	for _, rec := range u.Records {
		for i := range int(rec.NumRows()) {
			parts := []string{fmt.Sprintf("%x", rec.Column(0).(*array.FixedSizeBinary).Value(i))}
			for c := 1; c < int(rec.NumCols()); c++ {
				col := rec.Column(c)
				switch {
				case col.IsNull(i):
					parts = append(parts, "null")
				case col.DataType().ID() == arrow.LIST:
					l := col.(*array.List)
					vals := l.ListValues().(*array.Int32)
					from, to := l.ValueOffsets(i)
					days := make([]string, 0, to-from)
					for k := from; k < to; k++ {
						days = append(days, strconv.Itoa(int(vals.Value(int(k)))))
					}
					parts = append(parts, "["+strings.Join(days, " ")+"]")
				default:
					parts = append(parts, col.ValueStr(i))
				}
			}
			got = append(got, strings.Join(parts, "|"))
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, direct) {
		t.Fatalf("upload (%d rows, first %s) differs from the direct DuckDB answer (%d rows, first %s)", len(got), firstOf(got), len(direct), firstOf(direct))
	}
	assertNoOptOuts(t, s, task.GetRunId(), u)
	assertClean(t, s)
}

func firstOf(s []string) string {
	if len(s) == 0 {
		return "(none)"
	}
	return s[0]
}

// TestCheckCountsBadValues: `haven node check` reports, per table, the
// rows whose numeric value every query leaves out, over the real
// connector plugin reading a practice's Parquet that holds a systolic
// reading of +Inf and one of 4000 mmHg.
func TestCheckCountsBadValues(t *testing.T) {
	s := newSite(t, "gp")
	cfg := s.loadConfig(t)
	clinical := func(fs []Finding) Finding {
		for _, f := range fs {
			if f.Check == "CDM table "+cdm.TableClinicalEvent {
				return f
			}
		}
		t.Fatalf("no clinical_event finding in %+v", fs)
		return Finding{}
	}
	if f := clinical(Check(t.Context(), cfg, nil)); strings.Contains(f.Detail, "numeric value") {
		t.Fatalf("the clean synthetic site already has bad values: %+v", f)
	}

	// A copy of the site's files whose clinical_event has two bad rows.
	src := filepath.Dir(s.n.Path(s.site.Files[cdm.TablePatient].Path))
	dir := t.TempDir()
	entries, err := os.ReadDir(src)
	must(t, err)
	for _, e := range entries {
		if e.Name() == cdm.TableClinicalEvent+".parquet" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		must(t, err)
		must(t, os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644))
	}
	db := nodetest.OpenSite(t, s.n, s.site)
	// Test-only DDL: the paths are the test's own.
	out := strings.ReplaceAll(filepath.Join(dir, cdm.TableClinicalEvent+".parquet"), "'", "''")
	_, err = db.Exec("COPY (SELECT * FROM clinical_event UNION ALL SELECT e.nhs_number, e.event_date, '163030003', b.v FROM (SELECT nhs_number, event_date FROM clinical_event LIMIT 1) AS e, " +
		"(VALUES (CAST('Infinity' AS DOUBLE)), (4000.0)) AS b(v)) TO '" + out + "' (FORMAT parquet)")
	must(t, err)
	for i, a := range cfg.Connector.Args {
		if a == src {
			cfg.Connector.Args[i] = dir
		}
	}
	f := clinical(Check(t.Context(), cfg, nil))
	if !f.OK || !f.Warn || !strings.Contains(f.Detail, "; 2 with a numeric value that is not finite or is impossible") {
		t.Errorf("clinical_event finding %+v, want a warning counting 2 bad values", f)
	}
}
