package faults

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/flight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"gopkg.in/yaml.v3"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/coordinatortest"
	"github.com/havenhealth/haven/demo"
	"github.com/havenhealth/haven/integration/leakcheck"
	"github.com/havenhealth/haven/internal/flakyproxy"
	"github.com/havenhealth/haven/node/audit"
	"github.com/havenhealth/haven/node/nodetest"
	"github.com/havenhealth/haven/policy"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/release"
)

// Timing of the fault network. The deadline is short so that the slow
// site is named within seconds, yet far above the ~1 s a healthy run of
// the small network takes, even on a loaded 2-core machine.
const (
	runDeadline = 12 * time.Second
	runTimeout  = 60 * time.Second
)

var (
	prevalence = demo.Query{Definition: "t2dm-prevalence", Purpose: "commissioning",
		Parameters: map[string]string{"index_date": "2024-04-01", "min_age": "17"}}
	admissions = demo.Query{Definition: "t2dm-emergency-admissions", Purpose: "commissioning",
		Parameters: map[string]string{"index_date": "2023-04-01", "followup_days": "365"}}
)

// stored is a run the coordinator released, kept to check later that it
// is still there, unchanged.
type stored struct {
	run   *havenv1.Run
	table *release.Table
}

// faultNet is the network under test and what it has stored.
type faultNet struct {
	*demo.Network
	gps, trusts []string
	released    []stored
	linkageRuns []string
	links       *flakyproxy.Proxy // between the nodes and the coordinator
}

func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole network as processes; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	// The nodes reach the coordinator through a proxy whose connections
	// the "links cut" step cuts.
	var links *flakyproxy.Proxy
	defer func() {
		if links != nil {
			links.Close()
		}
	}()
	dir := filepath.Join(t.TempDir(), "net")
	if d := os.Getenv("HAVEN_FAULTS_DIR"); d != "" {
		dir = d // kept afterwards, logs and all, to read after a failure
	}
	n, err := demo.Start(ctx, demo.Options{
		NodeAddress: func(coordinator string) (string, error) {
			if links == nil {
				p, err := flakyproxy.Start(coordinator)
				if err != nil {
					return "", err
				}
				links = p
			}
			return links.Addr(), nil
		},
		Dir:         dir,
		Keep:        true, // the privacy scan reads it; TempDir removes it
		RunTimeout:  runTimeout,
		RunDeadline: runDeadline,
		StopGrace:   5 * time.Second,
		// The coordinator restarts several times within a minute, so the
		// nodes' backoff would otherwise grow to tens of seconds.
		ReconnectMax: 2 * time.Second,
		EditBundle:   withoutLedgerRules,
	})
	if n != nil {
		defer n.Close(true)
	}
	if err != nil {
		t.Fatalf("start the network: %v", err)
	}
	f := &faultNet{Network: n, links: links}
	for _, s := range n.Result().Network.Sites {
		if s.Kind == cdm.KindGP {
			f.gps = append(f.gps, s.ODS)
		} else {
			f.trusts = append(f.trusts, s.ODS)
		}
	}
	if len(f.gps) < 4 || len(f.trusts) < 1 {
		t.Fatalf("network has %d practices and %d trusts; the faults need 4 and 1", len(f.gps), len(f.trusts))
	}

	steps := []struct {
		name string
		fn   func(*testing.T, context.Context)
	}{
		{"baseline", f.baseline},
		{"paused site", f.pausedSite},
		{"slow site", f.slowSite},
		{"links cut", f.linksCut},
		{"node killed mid-run", f.nodeKilled},
		{"coordinator killed mid-run", f.coordinatorKilled},
		{"oversized results", f.oversized},
		{"corrupt data file at a site", f.corruptData},
		{"malformed Arrow from a node", f.malformedArrow},
		{"replayed run id", f.replayedRun},
		{"tampered or unsigned bundle", f.tamperedBundle},
		{"second coordinator", f.secondCoordinator},
		{"second node", f.secondNode},
		{"audit log cut", f.auditLogCut},
		{"recovered", f.recovered},
	}
	for _, s := range steps {
		if !t.Run(s.name, func(t *testing.T) { s.fn(t, ctx) }) {
			t.FailNow() // later steps build on this one's state
		}
	}
	if err := n.Close(false); err != nil {
		t.Fatalf("stop the network: %v", err)
	}
	f.privacyScan(t, ctx)
}

// withoutLedgerRules drops the release ledger's rules and the 24-hour rate
// limits from a bundle. The faults ask the same two questions again and
// again on purpose, which the reference bundle refuses as near-duplicates
// and, after a few dozen, as over the rate (the ledger's and the limits'
// own tests, coordinator.TestLedgerRefusals and haven/submit's, cover
// that).
var withoutLedgerRules = demo.EditData(func(data map[string]any) error {
	delete(data, "ledger")
	delete(data, "rate_limits")
	return nil
})

// submit runs q and fails the test if the run could not be followed.
func (f *faultNet) submit(t *testing.T, ctx context.Context, q demo.Query) demo.RunResult {
	t.Helper()
	rr, err := f.Submit(ctx, q)
	if err != nil {
		t.Fatalf("%s: %v", q.Definition, err)
	}
	if rr.Definition.GetMode() == havenv1.PlanMode_PLAN_MODE_LINKAGE {
		f.linkageRuns = append(f.linkageRuns, rr.Run.GetId())
	}
	t.Logf("%s: run %s %s in %s; %s", q.Definition, rr.Run.GetId(), rr.Run.GetState(), rr.Elapsed.Round(10*time.Millisecond), coverage(rr.Run))
	return rr
}

// coverage renders a run's coverage for the log.
func coverage(r *havenv1.Run) string {
	cov := r.GetCoverage()
	var b strings.Builder
	fmt.Fprintf(&b, "%d/%d sites, population %d/%d", cov.GetSitesAnswered(), cov.GetSitesExpected(), cov.GetPopulationAnswered(), cov.GetPopulationExpected())
	for _, s := range cov.GetSites() {
		if s.GetState() != havenv1.SiteState_SITE_STATE_DONE {
			fmt.Fprintf(&b, "; %s %s %s", s.GetSiteOds(), strings.TrimPrefix(s.GetState().String(), "SITE_STATE_"), s.GetError())
			for _, rs := range s.GetReasons() {
				fmt.Fprintf(&b, " [%s: %s]", rs.GetCode(), rs.GetMessage())
			}
		}
	}
	for _, rs := range r.GetPolicyReasons() {
		fmt.Fprintf(&b, "; policy %s", rs.GetCode())
	}
	return b.String()
}

// siteStates returns each site's state in a run.
func siteStates(r *havenv1.Run) map[string]*havenv1.SiteStatus {
	out := map[string]*havenv1.SiteStatus{}
	for _, s := range r.GetCoverage().GetSites() {
		out[s.GetSiteOds()] = s
	}
	return out
}

// checkSites checks that the named sites are in the states given and
// every other site is DONE.
func checkSites(t *testing.T, r *havenv1.Run, want map[string]havenv1.SiteState) {
	t.Helper()
	for ods, s := range siteStates(r) {
		w, ok := want[ods]
		if !ok {
			w = havenv1.SiteState_SITE_STATE_DONE
		}
		if s.GetState() != w {
			t.Errorf("run %s: site %s is %s (%s), want %s", r.GetId(), ods, s.GetState(), s.GetError(), w)
		}
	}
	for ods := range want {
		if _, ok := siteStates(r)[ods]; !ok {
			t.Errorf("run %s: coverage does not name site %s", r.GetId(), ods)
		}
	}
}

// minPopulationFraction is haven/disclose's partial_coverage rule in the
// reference bundle's data.json.
const minPopulationFraction = 0.9

// checkPartial checks that a run with partial coverage ended as the
// board's rule says: released, flagged partial, when enough of the
// population answered, refused with coverage_insufficient otherwise.
func checkPartial(t *testing.T, r *havenv1.Run) {
	t.Helper()
	cov := r.GetCoverage()
	if cov.GetSitesAnswered() >= cov.GetSitesExpected() {
		t.Fatalf("run %s has full coverage; the fault did not bite", r.GetId())
	}
	if cov.GetTrustsAnswered() < cov.GetTrustsExpected() {
		// A missing trust leaves out hospital activity for every
		// patient: the reference policy refuses whatever the population.
		if r.GetState() != havenv1.RunState_RUN_STATE_REFUSED ||
			!slices.ContainsFunc(r.GetPolicyReasons(), func(p *havenv1.PolicyReason) bool { return p.GetCode() == "trust_missing" }) {
			t.Errorf("run %s: %d of %d trusts answered, so disclosure policy should refuse it (trust_missing); it is %s (%s)",
				r.GetId(), cov.GetTrustsAnswered(), cov.GetTrustsExpected(), r.GetState(), coverage(r))
		}
		return
	}
	frac := float64(cov.GetPopulationAnswered()) / float64(cov.GetPopulationExpected())
	if frac >= minPopulationFraction {
		if r.GetState() != havenv1.RunState_RUN_STATE_RELEASED {
			t.Errorf("run %s: %.3f of the population answered, so the run should be released; it is %s (%s)", r.GetId(), frac, r.GetState(), coverage(r))
		}
		return
	}
	if r.GetState() != havenv1.RunState_RUN_STATE_REFUSED ||
		!slices.ContainsFunc(r.GetPolicyReasons(), func(p *havenv1.PolicyReason) bool { return p.GetCode() == "coverage_insufficient" }) {
		t.Errorf("run %s: %.3f of the population answered, so disclosure policy should refuse it (coverage_insufficient); it is %s (%s)",
			r.GetId(), frac, r.GetState(), coverage(r))
	}
}

// baseline releases one aggregate and one linkage run, which later steps
// check are kept intact.
func (f *faultNet) baseline(t *testing.T, ctx context.Context) {
	for _, q := range []demo.Query{prevalence, admissions} {
		rr := f.submit(t, ctx, q)
		if rr.Run.GetState() != havenv1.RunState_RUN_STATE_RELEASED || rr.Table == nil {
			t.Fatalf("%s: %s, want released", q.Definition, coverage(rr.Run))
		}
		checkSites(t, rr.Run, nil)
		f.released = append(f.released, stored{rr.Run, rr.Table})
	}
}

// haven runs the haven binary and returns its combined output.
func (f *faultNet) haven(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, f.Haven(), args...).CombinedOutput()
	return string(out), err
}

// pausedSite pauses a practice with its provider's switch: the run names
// it PAUSED, and the practice answers again once resumed.
func (f *faultNet) pausedSite(t *testing.T, ctx context.Context) {
	site := f.gps[0]
	if out, err := f.haven(ctx, "node", "pause", "--config", f.NodeConfig(site), "--reason", "fault test: server move"); err != nil {
		t.Fatalf("haven node pause: %v\n%s", err, out)
	}
	rr := f.submit(t, ctx, prevalence)
	checkSites(t, rr.Run, map[string]havenv1.SiteState{site: havenv1.SiteState_SITE_STATE_PAUSED})
	checkPartial(t, rr.Run)

	if out, err := f.haven(ctx, "node", "resume", "--config", f.NodeConfig(site)); err != nil {
		t.Fatalf("haven node resume: %v\n%s", err, out)
	}
	if err := f.WaitPauseState(ctx, site, false); err != nil {
		t.Fatal(err)
	}
	rr = f.submit(t, ctx, prevalence)
	checkSites(t, rr.Run, nil)
}

// slowSite freezes a trust's connector plugin, as a database that stops
// answering: the node stays connected, the trust misses the deadline and
// is named TIMED_OUT, and the run ends at the deadline with the rest.
func (f *faultNet) slowSite(t *testing.T, ctx context.Context) {
	site := f.trusts[0]
	thaw, err := f.FreezeConnector(site)
	if err != nil {
		t.Fatal(err)
	}
	defer thaw()
	rr := f.submit(t, ctx, admissions)
	checkSites(t, rr.Run, map[string]havenv1.SiteState{site: havenv1.SiteState_SITE_STATE_TIMED_OUT})
	checkPartial(t, rr.Run)
	if rr.Elapsed < runDeadline {
		t.Errorf("the run ended after %s, before the %s deadline", rr.Elapsed, runDeadline)
	}
	if err := thaw(); err != nil {
		t.Fatal(err)
	}
	// The trust answers the next run: the late task was cancelled rather
	// than left to block its node.
	rr = f.submit(t, ctx, admissions)
	checkSites(t, rr.Run, nil)
}

// waitAccepted waits until a site has accepted its task in a run.
func (f *faultNet) waitAccepted(t *testing.T, ctx context.Context, runID, site string) {
	t.Helper()
	deadline := time.Now().Add(runDeadline)
	for time.Now().Before(deadline) {
		r, err := f.GetRun(ctx, runID)
		if err != nil {
			t.Fatal(err)
		}
		if s := siteStates(r)[site]; s != nil && s.GetState() == havenv1.SiteState_SITE_STATE_ACCEPTED {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("site %s did not accept its task of run %s", site, runID)
}

// nodeKilled kills a practice's node (and its plugin) while it runs a
// task. Left dead, the site keeps its place until the deadline, in case
// it comes back, and is then named DISCONNECTED; the run finishes with
// the rest. Restarted at once, as its service manager would, the node
// reports the task it abandoned, the site is named FAILED, and the run
// finishes without waiting for the deadline.
func (f *faultNet) nodeKilled(t *testing.T, ctx context.Context) {
	site := f.gps[1]
	killMidRun := func(q demo.Query) string {
		t.Helper()
		// Freezing its plugin first makes sure the task is in progress
		// when the node dies, not already answered.
		if _, err := f.FreezeConnector(site); err != nil {
			t.Fatal(err)
		}
		runID, err := f.SubmitNoWait(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		f.waitAccepted(t, ctx, runID, site)
		if err := f.KillNode(site); err != nil {
			t.Fatal(err)
		}
		return runID
	}
	wait := func(runID string) (*havenv1.Run, time.Duration) {
		t.Helper()
		began := time.Now()
		r, err := f.Wait(ctx, runID)
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(began)
		t.Logf("run %s ended %s %s after the kill: %s", runID, r.GetState(), took.Round(10*time.Millisecond), coverage(r))
		return r, took
	}

	// Left dead.
	runID := killMidRun(prevalence)
	r, _ := wait(runID)
	checkSites(t, r, map[string]havenv1.SiteState{site: havenv1.SiteState_SITE_STATE_DISCONNECTED})
	if msg := siteStates(r)[site].GetError(); !strings.Contains(msg, "link dropped") {
		t.Errorf("the dead site's error %q does not say its link dropped", msg)
	}
	checkPartial(t, r)
	if err := f.StartNode(ctx, site); err != nil {
		t.Fatalf("restart the killed node: %v", err)
	}

	// Restarted at once.
	runID = killMidRun(prevalence)
	if err := f.StartNode(ctx, site); err != nil {
		t.Fatalf("restart the killed node: %v", err)
	}
	r, took := wait(runID)
	checkSites(t, r, map[string]havenv1.SiteState{site: havenv1.SiteState_SITE_STATE_FAILED})
	if msg := siteStates(r)[site].GetError(); !strings.Contains(strings.ToLower(msg), "abandoned") {
		t.Errorf("the restarted site's error %q does not say the task was abandoned", msg)
	}
	if took >= runDeadline {
		t.Errorf("the run waited %s for the restarted site; its abandoned task should end it before the %s deadline", took, runDeadline)
	}
	checkPartial(t, r)
	recs, err := audit.Read(filepath.Join(f.Dir(), "nodes", site, "audit"), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var taskID string
	for _, rec := range recs {
		if rec.RunID == runID && rec.Event == audit.EventAccepted {
			taskID = rec.TaskID
		}
	}
	abandoned := slices.ContainsFunc(recs, func(rec audit.Record) bool {
		return taskID != "" && rec.TaskID == taskID && rec.Event == audit.EventFailed && strings.Contains(rec.Message, "abandoned")
	})
	if taskID == "" || !abandoned {
		t.Errorf("the killed node's audit log: task of run %s accepted %v, recorded abandoned on restart %v; want both", runID, taskID != "", abandoned)
	}
	rr := f.submit(t, ctx, prevalence)
	checkSites(t, rr.Run, nil)
}

// corruptData overwrites part of one practice's clinical_event.parquet, as
// a failing disk or a half-finished extract would: that practice is named
// FAILED with the reader's error, the rest answer, and with the file put
// back the practice answers again.
func (f *faultNet) corruptData(t *testing.T, ctx context.Context) {
	site := f.gps[4]
	path := filepath.Join(f.Result().Network.Path("sites"), site, "clinical_event.parquet")
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := slices.Clone(good)
	mid := len(bad) / 2
	for i := mid; i < min(mid+4096, len(bad)-8); i++ {
		bad[i] = 0xff
	}
	if err := os.WriteFile(path, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	rr := f.submit(t, ctx, prevalence)
	if err := os.WriteFile(path, good, 0o644); err != nil {
		t.Fatal(err)
	}
	checkSites(t, rr.Run, map[string]havenv1.SiteState{site: havenv1.SiteState_SITE_STATE_FAILED})
	if msg := siteStates(rr.Run)[site].GetError(); !strings.Contains(msg, "clinical_event") || !strings.Contains(msg, "corrupt") {
		t.Errorf("%s failed with %q; want it to name the tables read and say the file is corrupt", site, msg)
	}
	checkPartial(t, rr.Run)
	rr = f.submit(t, ctx, prevalence)
	checkSites(t, rr.Run, nil)
}

// malformedArrow replaces a practice's node with a rogue one — the test
// double, since a real node checks every batch it sends — that holds the
// practice's real certificate and sends the real coordinator process an
// upload that is not Arrow. The coordinator refuses it (InvalidArgument,
// naming the problem) and stays up; the rogue reports the task failed and
// the run ends as policy says; the real node, back, answers the next run.
func (f *faultNet) malformedArrow(t *testing.T, ctx context.Context) {
	site := f.gps[5]
	if err := f.StopNode(site); err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := f.NodeTLS(site)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(f.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cat := f.catalog(t, ctx)
	s, _ := f.Result().Network.Site(site)
	rogue := coordinatortest.RemoteNode(conn, cat, site, cdm.KindGP, int64(s.RegisteredPopulation))
	var putErr error
	rogue.BeforeUpload = func(ctx context.Context, conn *grpc.ClientConn, task *havenv1.Task, _ *arrow.Schema) {
		putErr = putGarbage(ctx, conn, task.GetTaskId())
	}
	rogue.Answer = func(*havenv1.Task, *arrow.Schema) ([]arrow.Record, error) {
		return nil, errors.New("the upload was refused")
	}
	if err := rogue.Connect(ctx); err != nil {
		t.Fatalf("the rogue node could not register: %v", err)
	}
	rr := f.submit(t, ctx, prevalence)
	rogue.Close()
	if status.Code(putErr) != codes.InvalidArgument {
		t.Errorf("the malformed upload was answered with %v, want InvalidArgument", putErr)
	}
	t.Logf("the coordinator refused the malformed upload: %v", putErr)
	checkSites(t, rr.Run, map[string]havenv1.SiteState{site: havenv1.SiteState_SITE_STATE_FAILED})
	checkPartial(t, rr.Run)
	if err := f.StartNode(ctx, site); err != nil {
		t.Fatal(err)
	}
	rr = f.submit(t, ctx, prevalence)
	checkSites(t, rr.Run, nil)
	f.checkStored(t, ctx)
}

// putGarbage sends a task's upload whose one message is not Arrow IPC.
func putGarbage(ctx context.Context, conn *grpc.ClientConn, taskID string) error {
	stream, err := flight.NewFlightServiceClient(conn).DoPut(ctx)
	if err != nil {
		return err
	}
	err = stream.Send(&flight.FlightData{FlightDescriptor: havenv1.TaskDescriptor(taskID),
		DataHeader: []byte("this is not an Arrow IPC message header"), DataBody: bytes.Repeat([]byte{0xff}, 256)})
	if err != nil {
		return err
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// setUploadLimit rewrites the coordinator's configuration with an upload
// row limit; 0 removes it.
func (f *faultNet) setUploadLimit(t *testing.T, maxRows int) {
	t.Helper()
	editConfig(t, f.CoordinatorConfig(), f.CoordinatorConfig(), func(cfg map[string]any) {
		if maxRows > 0 {
			cfg["uploads"] = map[string]any{"max_rows": maxRows}
		} else {
			delete(cfg, "uploads")
		}
	})
}

// editConfig reads the YAML configuration at path, edits it and writes it
// to out.
func editConfig(t *testing.T, path, out string, edit func(cfg map[string]any)) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	edit(cfg)
	if b, err = yaml.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// catalog loads the network's signed bundle, as the coordinator did, for
// its catalogue.
func (f *faultNet) catalog(t *testing.T, ctx context.Context) *catalog.Catalog {
	t.Helper()
	pub, err := os.ReadFile(f.BoardPublicKey())
	if err != nil {
		t.Fatal(err)
	}
	eng, err := policy.Load(ctx, policy.Config{BundlePath: f.Bundle(), PublicKeyPEM: pub, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return eng.Catalog()
}

// checkStored checks that every run released so far is still released
// with exactly the same table.
func (f *faultNet) checkStored(t *testing.T, ctx context.Context) {
	t.Helper()
	for _, s := range f.released {
		r, err := f.GetRun(ctx, s.run.GetId())
		if err != nil {
			t.Fatalf("run %s: %v", s.run.GetId(), err)
		}
		if r.GetState() != havenv1.RunState_RUN_STATE_RELEASED {
			t.Errorf("stored run %s is now %s", r.GetId(), r.GetState())
		}
		tab, err := f.Table(ctx, s.run.GetId())
		if err != nil {
			t.Fatalf("table of run %s: %v", s.run.GetId(), err)
		}
		if !reflect.DeepEqual(tab.Rows, s.table.Rows) || !reflect.DeepEqual(tab.Meta, s.table.Meta) {
			t.Errorf("the released table of run %s changed", s.run.GetId())
		}
	}
}

// coordinatorKilled kills the coordinator while a run waits on a frozen
// site: restarted, it marks that run interrupted (its linked rows were
// only in memory), keeps every run and table it stored, and every node
// reconnects.
func (f *faultNet) coordinatorKilled(t *testing.T, ctx context.Context) {
	site := f.gps[2]
	thaw, err := f.FreezeConnector(site)
	if err != nil {
		t.Fatal(err)
	}
	defer thaw()
	runID, err := f.SubmitNoWait(ctx, admissions)
	if err != nil {
		t.Fatal(err)
	}
	f.linkageRuns = append(f.linkageRuns, runID)
	f.waitAccepted(t, ctx, runID, site)
	if err := f.KillCoordinator(); err != nil {
		t.Fatal(err)
	}
	if err := thaw(); err != nil { // it finishes, and finds no coordinator to upload to
		t.Fatal(err)
	}
	// The next step needs a row limit; the restart picks it up.
	f.setUploadLimit(t, 50)
	began := time.Now()
	if err := f.StartCoordinator(ctx); err != nil {
		t.Fatalf("restart the coordinator: %v", err)
	}
	t.Logf("coordinator restarted; all %d nodes registered again in %s", len(f.Sites()), time.Since(began).Round(10*time.Millisecond))
	r, err := f.GetRun(ctx, runID)
	if err != nil {
		t.Fatal(err)
	}
	if r.GetState() != havenv1.RunState_RUN_STATE_INTERRUPTED || !strings.Contains(r.GetError(), "restarted") {
		t.Errorf("the run in progress is %s (%q) after the restart, want INTERRUPTED saying the coordinator restarted", r.GetState(), r.GetError())
	}
	t.Logf("run %s: %s: %s", runID, r.GetState(), r.GetError())
	f.checkStored(t, ctx)
}

// oversized runs a linkage query while the coordinator allows 50 rows per
// upload, fewer than any site's linkage rows: every node stops at the
// limit before anything leaves the site, each site is named FAILED with
// the limit, and disclosure policy refuses the run for want of coverage.
func (f *faultNet) oversized(t *testing.T, ctx context.Context) {
	rr := f.submit(t, ctx, admissions)
	want := map[string]havenv1.SiteState{}
	for _, s := range f.Sites() {
		want[s] = havenv1.SiteState_SITE_STATE_FAILED
		if msg := siteStates(rr.Run)[s].GetError(); !strings.Contains(msg, "limit of 50 rows") {
			t.Errorf("site %s failed with %q; want the error to name the 50-row limit", s, msg)
		}
	}
	checkSites(t, rr.Run, want)
	checkPartial(t, rr.Run)
	if rr.Table != nil {
		t.Error("a table was released with no site's result")
	}
	// Back to the default limits.
	if err := f.StopCoordinator(); err != nil {
		t.Fatal(err)
	}
	f.setUploadLimit(t, 0)
	if err := f.StartCoordinator(ctx); err != nil {
		t.Fatal(err)
	}
	f.checkStored(t, ctx)
}

// replayedRun stands a rogue coordinator at the coordinator's address
// with its certificate — the test double, since an honest coordinator
// never reuses a run id — and sends every node a task that is valid in
// every way except that its run id is one the node has already answered.
// Every node refuses it.
func (f *faultNet) replayedRun(t *testing.T, ctx context.Context) {
	replayed := f.released[1].run // the linkage run: every site took part
	if err := f.StopCoordinator(); err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := f.CoordinatorTLS()
	if err != nil {
		t.Fatal(err)
	}
	rogue := nodetest.StartCoordinatorAt(t, f.Addr(), tlsCfg, 5*time.Second)
	nodetest.Eventually(t, "every node connected to the rogue coordinator", func() bool {
		return len(rogue.ConnectedSites()) == len(f.Sites())
	})
	cat := f.catalog(t, ctx)
	for _, s := range f.Result().Network.Sites {
		task := replayTask(t, cat, replayed.GetId(), s.ODS, s.Kind)
		if err := rogue.SendTaskTo(s.ODS, task); err != nil {
			t.Fatal(err)
		}
		var o *havenv1.TaskOutcome
		nodetest.Eventually(t, "outcome from "+s.ODS, func() bool {
			o = rogue.Outcome(task.GetTaskId())
			return o != nil
		})
		reasons := o.GetRefused().GetReasons()
		if !slices.ContainsFunc(reasons, func(r *havenv1.PolicyReason) bool { return r.GetCode() == "run_replayed" }) {
			t.Errorf("site %s answered the replayed run %s with %v, want a refusal run_replayed", s.ODS, replayed.GetId(), o)
		}
	}
	if ups := rogue.Uploads(); len(ups) != 0 {
		t.Errorf("the rogue coordinator received %d uploads", len(ups))
	}
	rogue.Close()
	if err := f.StartCoordinator(ctx); err != nil {
		t.Fatal(err)
	}
}

// replayTask is the task a coordinator would send site for run runID.
func replayTask(t *testing.T, cat *catalog.Catalog, runID, ods string, kind cdm.SiteKind) *havenv1.Task {
	t.Helper()
	params := map[string]*havenv1.ParameterValue{
		"index_date":    {Value: &havenv1.ParameterValue_DateValue{DateValue: admissions.Parameters["index_date"]}},
		"followup_days": {Value: &havenv1.ParameterValue_IntValue{IntValue: 365}},
	}
	task := nodetest.Task(t, cat, admissions.Definition, runID, ods, kind, params)
	task.TaskId = "replay-" + ods
	return task
}

// tamperedBundle gives the coordinator and a node a bundle with one byte
// changed, then one with its signature removed: both refuse to start,
// naming the problem, and start again normally on the signed bundle with
// everything they stored.
func (f *faultNet) tamperedBundle(t *testing.T, ctx context.Context) {
	tampered := filepath.Join(f.Dir(), "bundle-tampered")
	unsigned := filepath.Join(f.Dir(), "bundle-unsigned")
	nodetest.CopyDir(t, f.Bundle(), tampered)
	if err := policy.CopyUnsigned(f.Bundle(), unsigned); err != nil {
		t.Fatal(err)
	}
	rego := filepath.Join(tampered, "haven", "disclose", "disclose.rego")
	b, err := os.ReadFile(rego)
	if err != nil {
		t.Fatal(err)
	}
	// Loosen the minimum cell count rule by one character: what a tamperer
	// would want.
	b = bytes.Replace(b, []byte("settings.min_cell_count >= 1"), []byte("settings.min_cell_count >= 0"), 1)
	if err := os.WriteFile(rego, b, 0o644); err != nil {
		t.Fatal(err)
	}
	site := f.gps[3]
	if err := f.StopCoordinator(); err != nil {
		t.Fatal(err)
	}
	if err := f.StopNode(site); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		bundle, want string
	}{
		{tampered, "disclose.rego"},
		{unsigned, "signature"},
	} {
		for _, who := range []struct {
			name, config, key string
			args              []string
		}{
			{"coordinator", f.CoordinatorConfig(), "bundle", []string{"coordinator", "run"}},
			{"node " + site, f.NodeConfig(site), "bundle", []string{"node", "run"}},
		} {
			cfg := swapBundle(t, who.config, c.bundle)
			runCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
			out, err := f.haven(runCtx, append(who.args, "--config", cfg)...)
			hung := runCtx.Err() != nil
			cancel()
			if err == nil || hung {
				t.Errorf("%s started with %s (err %v):\n%s", who.name, filepath.Base(c.bundle), err, out)
				continue
			}
			if !strings.Contains(out, c.want) {
				t.Errorf("%s refused %s without naming %q:\n%s", who.name, filepath.Base(c.bundle), c.want, out)
			}
			t.Logf("%s refused %s: %s", who.name, filepath.Base(c.bundle), lastLine(out))
		}
	}
	if err := f.StartCoordinator(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.StartNode(ctx, site); err != nil {
		t.Fatal(err)
	}
	f.checkStored(t, ctx)
}

// swapBundle writes a copy of a configuration file beside it with the
// governance bundle replaced, and returns its path.
func swapBundle(t *testing.T, path, bundle string) string {
	t.Helper()
	out := strings.TrimSuffix(path, ".yaml") + "-" + filepath.Base(bundle) + ".yaml"
	editConfig(t, path, out, func(cfg map[string]any) {
		gov, ok := cfg["governance"].(map[string]any)
		if !ok {
			t.Fatalf("%s has no governance section", path)
		}
		gov["bundle"] = bundle
	})
	return out
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// recovered checks the network as a whole after every fault: a linkage
// run over all ten sites is released, and every stored run is intact.
func (f *faultNet) recovered(t *testing.T, ctx context.Context) {
	rr := f.submit(t, ctx, admissions)
	if rr.Run.GetState() != havenv1.RunState_RUN_STATE_RELEASED {
		t.Fatalf("after the faults: %s", coverage(rr.Run))
	}
	checkSites(t, rr.Run, nil)
	if !reflect.DeepEqual(rr.Table.Rows, f.released[1].table.Rows) {
		t.Error("the same linkage query released a different table after the faults")
	}
	f.checkStored(t, ctx)
}

// privacyScan scans every byte the coordinator and the nodes wrote —
// process logs, the coordinator's job store and audit log, each node's
// state and audit log — for the network's NHS numbers, birth dates,
// linkage secret and the pseudonyms of every linkage run.
func (f *faultNet) privacyScan(t *testing.T, ctx context.Context) {
	rep, err := leakcheck.ScanNetwork(ctx, f.Result(), f.linkageRuns,
		[]string{prevalence.Parameters["index_date"], admissions.Parameters["index_date"]})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("privacy scan of %d linkage runs: %s", len(f.linkageRuns), rep)
	for _, h := range rep.Describe(20) {
		t.Errorf("privacy: %s", h)
	}
}
