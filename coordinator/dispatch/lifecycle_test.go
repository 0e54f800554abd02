package dispatch_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/audit"
	"github.com/havenhealth/haven/coordinator/authn"
	"github.com/havenhealth/haven/coordinator/coordinatortest"
	"github.com/havenhealth/haven/coordinator/dispatch"
	"github.com/havenhealth/haven/coordinator/nodelink"
	"github.com/havenhealth/haven/coordinator/store"
	"github.com/havenhealth/haven/policy"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// runDeadline is how long the sites of a run in these tests have; the fake
// clock decides when it has passed.
const runDeadline = time.Hour

// start is the fake clock's time when a test begins.
var start = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

// links stands in for the node-link server: it says which sites are
// connected, as nodelink.Server.Sites does, and keeps every message the
// dispatcher sends down a link. The sites' answers are given to the
// dispatcher directly, as nodelink hands them over.
type links struct {
	mu    sync.Mutex
	sites []nodelink.SiteInfo
	sent  map[string][]*havenv1.CoordinatorMessage
}

func (l *links) Sites() []nodelink.SiteInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.sites)
}

func (l *links) Send(ods string, m *havenv1.CoordinatorMessage) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := slices.IndexFunc(l.sites, func(s nodelink.SiteInfo) bool { return s.ODS == ods })
	if i < 0 || !l.sites[i].Connected {
		return fmt.Errorf("site %s is not connected", ods)
	}
	l.sent[ods] = append(l.sent[ods], m)
	return nil
}

// task is the last task sent to ods.
func (l *links) task(ods string) *havenv1.Task {
	l.mu.Lock()
	defer l.mu.Unlock()
	var t *havenv1.Task
	for _, m := range l.sent[ods] {
		if m.GetTask() != nil {
			t = m.GetTask()
		}
	}
	return t
}

// cancels are the CancelTask messages sent to ods.
func (l *links) cancels(ods string) []*havenv1.CancelTask {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*havenv1.CancelTask
	for _, m := range l.sent[ods] {
		if c := m.GetCancelTask(); c != nil {
			out = append(out, c)
		}
	}
	return out
}

// network is a dispatcher on a fake clock, with a real job store, audit
// log and reference policy, and practices that answer statins-chd.
type network struct {
	t     *testing.T
	d     *dispatch.Dispatcher
	clock *clockwork.FakeClock
	links *links
	def   *catalog.Definition
	bound *catalog.Bound
	ps    []coordinatortest.Patient
	ana   authn.Principal
}

// newNetwork starts a dispatcher whose connected practices have the given
// list sizes, by ODS code.
func newNetwork(t *testing.T, populations map[string]int64) *network {
	t.Helper()
	ctx := t.Context()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	engine, err := policy.Load(ctx, policy.Config{BundlePath: "../../policy/bundle", InsecureSkipVerify: true, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	c, err := catalog.Load(os.DirFS("../../policy/bundle"))
	if err != nil {
		t.Fatal(err)
	}
	def, ok := c.Get("statins-chd")
	if !ok {
		t.Fatal("no definition statins-chd")
	}
	bound, err := def.Bind(nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, "coordinator.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log, err := audit.Open(filepath.Join(dir, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	l := &links{sent: map[string][]*havenv1.CoordinatorMessage{}}
	odsCodes := sortedCodes(populations)
	for _, ods := range odsCodes {
		l.sites = append(l.sites, nodelink.SiteInfo{ODS: ods, Kind: cdm.KindGP, Population: populations[ods], Connected: true,
			NodeVersion: "test"})
	}
	clock := clockwork.NewFakeClockAt(start)
	d, err := dispatch.New(dispatch.Config{Store: st, Audit: log, Policy: engine, Links: l, Deadline: runDeadline,
		Limits: &havenv1.UploadLimits{MaxRows: 1000, MaxBytes: 1 << 20, MaxBatchBytes: 1 << 20}, Logger: logger, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	// Shut down before the store and the log close (cleanups run last
	// first): a run still in progress is interrupted.
	t.Cleanup(func() { d.Shutdown(context.Background(), "the test ended") })
	return &network{t: t, d: d, clock: clock, links: l, def: def, bound: bound,
		ps:  coordinatortest.Patients(7, odsCodes, 60, nil),
		ana: authn.Principal{Kind: authn.KindUser, ID: "ana", Org: "QHM", Roles: []string{"analyst"}}}
}

func sortedCodes(m map[string]int64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// submit submits statins-chd as ana, allowed by haven/submit, and returns
// the run as Submit left it.
func (n *network) submit() *havenv1.Run {
	n.t.Helper()
	run, err := n.d.Submit(n.t.Context(), dispatch.Submission{Definition: n.def, Bound: n.bound, Purpose: "service_evaluation",
		Requester: n.ana, Decide: func(context.Context, *policy.LedgerHistory) policy.Decision {
			return policy.Decision{Allow: true, ID: "decision-1", Revision: "test"}
		}})
	if err != nil {
		n.t.Fatalf("Submit: %v", err)
	}
	return run
}

// tell hands the dispatcher a message from site ods about its task.
func (n *network) tell(ods string, m *havenv1.NodeMessage) {
	n.d.TaskMessage(n.t.Context(), ods, m)
}

func (n *network) taskID(ods string) string {
	n.t.Helper()
	task := n.links.task(ods)
	if task == nil {
		n.t.Fatalf("site %s was sent no task", ods)
	}
	return task.GetTaskId()
}

func (n *network) accept(ods string) {
	n.tell(ods, &havenv1.NodeMessage{Body: &havenv1.NodeMessage_TaskAccepted{TaskAccepted: &havenv1.TaskAccepted{TaskId: n.taskID(ods)}}})
}

// answer uploads site ods's statins-chd cells and reports its task done.
func (n *network) answer(ods string) {
	n.t.Helper()
	ctx := n.t.Context()
	task := n.links.task(ods)
	n.accept(ods)
	up, err := n.d.OpenUpload(ctx, ods, task.GetTaskId())
	if err != nil {
		n.t.Fatalf("OpenUpload %s: %v", ods, err)
	}
	recs := coordinatortest.StatinsCells(n.def, up.Schema(), n.ps, ods, int(task.GetRecordKeyRange()))
	rc := &havenv1.UploadReceipt{TaskId: task.GetTaskId(), Batches: int64(len(recs)), Bytes: 1000}
	for _, rec := range recs {
		rc.Rows += rec.NumRows()
	}
	err = up.Commit(ctx, recs, rc)
	release(recs)
	if err != nil {
		n.t.Fatalf("Commit %s: %v", ods, err)
	}
	n.tell(ods, &havenv1.NodeMessage{Body: &havenv1.NodeMessage_TaskDone{TaskDone: &havenv1.TaskDone{TaskId: task.GetTaskId(),
		Rows: rc.Rows, Bytes: rc.Bytes, Batches: rc.Batches}}})
}

func release(recs []arrow.Record) {
	for _, r := range recs {
		r.Release()
	}
}

func (n *network) refuse(ods, code string) {
	n.tell(ods, &havenv1.NodeMessage{Body: &havenv1.NodeMessage_TaskRefused{TaskRefused: &havenv1.TaskRefused{TaskId: n.taskID(ods),
		Reasons: []*havenv1.PolicyReason{{Code: code, Message: "the site says no"}}}}})
}

func (n *network) fail(ods string) {
	n.tell(ods, &havenv1.NodeMessage{Body: &havenv1.NodeMessage_TaskFailed{TaskFailed: &havenv1.TaskFailed{TaskId: n.taskID(ods),
		Code: havenv1.TaskErrorCode_TASK_ERROR_CODE_CONNECTOR, Message: "the database is down"}}})
}

// drop is site ods's link going down, as nodelink reports it.
func (n *network) drop(ods string) {
	n.d.NodeDisconnected(n.t.Context(), ods)
}

// advanceTo moves the fake clock on to start+at; timers that fall due
// fire, in order, each in its own goroutine as real ones do.
func (n *network) advanceTo(at time.Duration) {
	if d := start.Add(at).Sub(n.clock.Now()); d > 0 {
		n.clock.Advance(d)
	}
}

// follow watches run id until it is in a final state and returns it. It
// waits on the run's own events, not on the clock: a deadline timer fires
// in a goroutine of its own, and the finish step runs in another.
func (n *network) follow(id string) *havenv1.Run {
	n.t.Helper()
	return n.until(id, func(r *havenv1.Run) bool { return dispatch.FinalRun(r.GetState()) })
}

// until watches run id until cond holds and returns the run then.
func (n *network) until(id string, cond func(*havenv1.Run) bool) *havenv1.Run {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(n.t.Context(), 30*time.Second) // a guard, not a timing assertion
	defer cancel()
	w, err := n.d.Watch(ctx, n.ana, id)
	if err != nil {
		n.t.Fatalf("Watch %s: %v", id, err)
	}
	defer w.Stop()
	run := w.First.GetRun()
	for !cond(run) {
		if w.C == nil {
			n.t.Fatalf("run %s finished %s without getting there: %v", id, run.GetState(), run.GetCoverage().GetSites())
		}
		select {
		case ev, ok := <-w.C:
			if !ok {
				n.t.Fatalf("the watch of %s ended (%v) with the run %s", id, w.Err(), run.GetState())
			}
			run = ev.GetRun()
		case <-ctx.Done():
			n.t.Fatalf("run %s never got there; it is %s: %v", id, run.GetState(), run.GetCoverage().GetSites())
		}
	}
	return run
}

func siteStatus(run *havenv1.Run, ods string) *havenv1.SiteStatus {
	for _, s := range run.GetCoverage().GetSites() {
		if s.GetSiteOds() == ods {
			return s
		}
	}
	return nil
}

// step is something a site does at a time after the run starts.
type step struct {
	at  time.Duration
	ods string
	do  func(n *network, ods string)
}

func accepts(n *network, ods string) { n.accept(ods) }
func answers(n *network, ods string) { n.answer(ods) }
func drops(n *network, ods string)   { n.drop(ods) }
func fails(n *network, ods string)   { n.fail(ods) }
func refuses(n *network, ods string) { n.refuse(ods, "purpose_not_accepted") }
func pauses(n *network, ods string)  { n.refuse(ods, havenv1.ReasonSitePaused) }

// siteWant is a site's state when its run ends, and words its error must
// hold.
type siteWant struct {
	state havenv1.SiteState
	err   string
}

// TestRunLifecycle drives runs through their deadlines on a fake clock:
// what each site does and when, and how the run ends. Sites that never
// answer are timed out at the deadline and the run is finished with what
// arrived; a site that answers just before the deadline counts; a run
// whose sites have all answered finishes at once, its deadline unused.
func TestRunLifecycle(t *testing.T) {
	t.Parallel()
	const (
		done         = havenv1.SiteState_SITE_STATE_DONE
		timedOut     = havenv1.SiteState_SITE_STATE_TIMED_OUT
		disconnected = havenv1.SiteState_SITE_STATE_DISCONNECTED
		refused      = havenv1.SiteState_SITE_STATE_REFUSED
		paused       = havenv1.SiteState_SITE_STATE_PAUSED
		failed       = havenv1.SiteState_SITE_STATE_FAILED
	)
	for _, tc := range []struct {
		name  string
		sites map[string]int64 // list sizes
		steps []step
		// finished is when the run ended, from its start: at the deadline
		// or earlier.
		finished time.Duration
		want     havenv1.RunState
		reason   string // a policy reason code the run must have
		sitesAre map[string]siteWant
		answered int32 // sites
	}{
		{
			name:  "no site answers: timed out at the deadline, refused for coverage",
			sites: map[string]int64{"A81001": 60, "A81002": 60},
			steps: []step{{0, "A81001", accepts}, {time.Minute, "A81002", accepts}},
			// Nothing happens before the deadline; the clock is moved
			// to it and no further.
			finished: runDeadline, want: havenv1.RunState_RUN_STATE_REFUSED, reason: "coverage_insufficient",
			sitesAre: map[string]siteWant{"A81001": {timedOut, "no result by the deadline 2026-03-02 10:00:00Z"},
				"A81002": {timedOut, "no result by the deadline"}},
		},
		{
			name:     "a site answers just before the deadline and counts",
			sites:    map[string]int64{"A81001": 60, "A81002": 60, "A81003": 3},
			steps:    []step{{0, "A81001", answers}, {0, "A81003", accepts}, {runDeadline - time.Nanosecond, "A81002", answers}},
			finished: runDeadline, want: havenv1.RunState_RUN_STATE_RELEASED, answered: 2,
			sitesAre: map[string]siteWant{"A81001": {done, ""}, "A81002": {done, ""}, "A81003": {timedOut, "deadline"}},
		},
		{
			name:     "every site answers: finished at once",
			sites:    map[string]int64{"A81001": 60, "A81002": 60},
			steps:    []step{{0, "A81001", answers}, {time.Minute, "A81002", answers}},
			finished: time.Minute, want: havenv1.RunState_RUN_STATE_RELEASED, answered: 2,
			sitesAre: map[string]siteWant{"A81001": {done, ""}, "A81002": {done, ""}},
		},
		{
			name:  "refusals and failures are answers: finished without the deadline",
			sites: map[string]int64{"A81001": 600, "A81002": 3, "A81003": 3, "A81004": 3},
			steps: []step{{0, "A81001", answers}, {time.Second, "A81002", refuses}, {2 * time.Second, "A81003", pauses},
				{3 * time.Second, "A81004", fails}},
			finished: 3 * time.Second, want: havenv1.RunState_RUN_STATE_RELEASED, answered: 1,
			sitesAre: map[string]siteWant{"A81001": {done, ""}, "A81002": {refused, ""}, "A81003": {paused, ""},
				"A81004": {failed, "CONNECTOR: the database is down"}},
		},
		{
			name:     "a link that drops and stays down: disconnected at the deadline",
			sites:    map[string]int64{"A81001": 600, "A81002": 3},
			steps:    []step{{0, "A81002", accepts}, {time.Minute, "A81002", drops}, {2 * time.Minute, "A81001", answers}},
			finished: runDeadline, want: havenv1.RunState_RUN_STATE_RELEASED, answered: 1,
			sitesAre: map[string]siteWant{"A81001": {done, ""},
				"A81002": {disconnected, "the node's link dropped at 2026-03-02 09:01:00Z and was not back by the deadline"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := newNetwork(t, tc.sites)
			run := n.submit()
			if run.GetState() != havenv1.RunState_RUN_STATE_RUNNING || !run.GetDeadline().AsTime().Equal(start.Add(runDeadline)) {
				t.Fatalf("submitted run is %s with deadline %v, want RUNNING until %v", run.GetState(), run.GetDeadline().AsTime(), start.Add(runDeadline))
			}
			for _, s := range tc.steps {
				n.advanceTo(s.at)
				s.do(n, s.ods)
			}
			n.advanceTo(tc.finished)
			got := n.follow(run.GetId())
			if got.GetState() != tc.want {
				t.Fatalf("run ended %s (%s, %v), want %s", got.GetState(), got.GetError(), got.GetPolicyReasons(), tc.want)
			}
			if tc.reason != "" && !slices.ContainsFunc(got.GetPolicyReasons(), func(r *havenv1.PolicyReason) bool { return r.GetCode() == tc.reason }) {
				t.Errorf("reasons %v, want %s", got.GetPolicyReasons(), tc.reason)
			}
			if at := got.GetFinishedAt().AsTime(); !at.Equal(start.Add(tc.finished)) {
				t.Errorf("the run finished at %v, want %v", at, start.Add(tc.finished))
			}
			for ods, w := range tc.sitesAre {
				s := siteStatus(got, ods)
				if s.GetState() != w.state || !strings.Contains(s.GetError(), w.err) {
					t.Errorf("site %s is %s (%q), want %s with %q", ods, s.GetState(), s.GetError(), w.state, w.err)
				}
				// A site still working at the deadline is told to stop.
				wantCancel := w.state == timedOut || w.state == disconnected
				if c := n.links.cancels(ods); wantCancel != (len(c) > 0) {
					t.Errorf("site %s was sent cancels %v", ods, c)
				}
			}
			if a := got.GetCoverage().GetSitesAnswered(); a != tc.answered {
				t.Errorf("%d sites answered, want %d", a, tc.answered)
			}
			if tc.want == havenv1.RunState_RUN_STATE_RELEASED {
				if got.GetRelease() == nil {
					t.Error("a released run without its release summary")
				}
				if _, err := n.d.Release(t.Context(), n.ana, run.GetId()); err != nil {
					t.Errorf("the released table: %v", err)
				}
			}
		})
	}
}

// An answer that arrives after the deadline has passed does not count:
// the site stays TIMED_OUT, its upload is refused, and its TaskDone is
// ignored. The run is finished once, with what arrived in time.
func TestAnswerAfterDeadlineIgnored(t *testing.T) {
	t.Parallel()
	n := newNetwork(t, map[string]int64{"A81001": 60, "A81002": 3})
	run := n.submit()
	n.answer("A81001")
	n.accept("A81002")
	n.advanceTo(runDeadline)
	timedOut := n.until(run.GetId(), func(r *havenv1.Run) bool {
		return siteStatus(r, "A81002").GetState() == havenv1.SiteState_SITE_STATE_TIMED_OUT
	})
	task := n.links.task("A81002")
	if _, err := n.d.OpenUpload(t.Context(), "A81002", task.GetTaskId()); status.Code(err) != codes.FailedPrecondition &&
		status.Code(err) != codes.NotFound {
		t.Errorf("an upload after the deadline: %v, want it refused", err)
	}
	n.tell("A81002", &havenv1.NodeMessage{Body: &havenv1.NodeMessage_TaskDone{TaskDone: &havenv1.TaskDone{TaskId: task.GetTaskId()}}})
	final := n.follow(run.GetId())
	if final.GetState() != havenv1.RunState_RUN_STATE_RELEASED || final.GetCoverage().GetSitesAnswered() != 1 ||
		siteStatus(final, "A81002").GetState() != havenv1.SiteState_SITE_STATE_TIMED_OUT {
		t.Errorf("run ended %s with %v", final.GetState(), final.GetCoverage())
	}
	if !timedOut.GetDeadline().AsTime().Equal(final.GetDeadline().AsTime()) {
		t.Errorf("the deadline moved: %v, then %v", timedOut.GetDeadline(), final.GetDeadline())
	}
}

// A site that is down when the run starts is DISCONNECTED; when it comes
// back before the deadline it is sent its task, and its answer counts.
// One that comes back after the deadline is sent nothing.
func TestReconnectBeforeDeadline(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		back time.Duration
		want havenv1.RunState
	}{
		{"back in time", runDeadline - time.Second, havenv1.RunState_RUN_STATE_RELEASED},
		{"back too late", runDeadline, havenv1.RunState_RUN_STATE_REFUSED},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := newNetwork(t, map[string]int64{"A81001": 60, "A81002": 60})
			n.links.mu.Lock()
			n.links.sites[1].Connected = false
			n.links.mu.Unlock()
			run := n.submit()
			if s := siteStatus(run, "A81002"); s.GetState() != havenv1.SiteState_SITE_STATE_DISCONNECTED {
				t.Fatalf("a site that is down is %v", s)
			}
			// The other site has the task in hand, so the run waits.
			n.accept("A81001")
			n.advanceTo(tc.back)
			inTime := tc.back < runDeadline
			if !inTime {
				// The deadline's timer runs in a goroutine of its own:
				// wait for it to have ended the sites' turn.
				n.until(run.GetId(), func(r *havenv1.Run) bool { return r.GetState() != havenv1.RunState_RUN_STATE_RUNNING })
			}
			n.links.mu.Lock()
			n.links.sites[1].Connected = true
			back := n.links.sites[1]
			n.links.mu.Unlock()
			n.d.NodeConnected(t.Context(), back, nil)
			if sent := n.links.task("A81002") != nil; sent != inTime {
				t.Fatalf("the returning site was sent its task: %v, want %v", sent, inTime)
			}
			if inTime {
				n.answer("A81002")
				n.answer("A81001")
			}
			got := n.follow(run.GetId())
			if got.GetState() != tc.want {
				t.Errorf("run ended %s (%v), want %s", got.GetState(), got.GetPolicyReasons(), tc.want)
			}
		})
	}
}

// A network blip as a run is dispatched (every link down, each heard from
// a moment before) costs no site its part: each keeps its place, is sent
// its task when it links again, and the run is released when all have
// answered; it does not end at once as if they had all answered. A site
// not heard from within the grace is DISCONNECTED at once, as before
// (TestReconnectBeforeDeadline).
func TestBlipAtDispatch(t *testing.T) {
	t.Parallel()
	n := newNetwork(t, map[string]int64{"A81001": 60, "A81002": 60})
	n.links.mu.Lock()
	for i := range n.links.sites {
		n.links.sites[i].Connected, n.links.sites[i].LastSeen = false, start.Add(-2*time.Second)
	}
	n.links.mu.Unlock()
	run := n.submit()
	if run.GetState() != havenv1.RunState_RUN_STATE_RUNNING {
		t.Fatalf("the run is %s with every link down a moment, want running", run.GetState())
	}
	for _, ods := range []string{"A81001", "A81002"} {
		if s := siteStatus(run, ods); s.GetState() != havenv1.SiteState_SITE_STATE_PENDING || !strings.Contains(s.GetError(), "link is down") {
			t.Errorf("site %s: %v, want pending, its link down", ods, s)
		}
	}
	n.advanceTo(time.Second)
	for i, ods := range []string{"A81001", "A81002"} {
		n.links.mu.Lock()
		n.links.sites[i].Connected = true
		back := n.links.sites[i]
		n.links.mu.Unlock()
		n.d.NodeConnected(t.Context(), back, nil)
		if n.links.task(ods) == nil {
			t.Fatalf("site %s was not sent its task when it linked again", ods)
		}
		n.answer(ods)
	}
	if got := n.follow(run.GetId()); got.GetState() != havenv1.RunState_RUN_STATE_RELEASED {
		t.Errorf("run ended %s (%v), want released", got.GetState(), got.GetPolicyReasons())
	}

	// Still down at the deadline: DISCONNECTED then, not before.
	n2 := newNetwork(t, map[string]int64{"A81001": 60, "A81002": 60})
	n2.links.mu.Lock()
	n2.links.sites[1].Connected, n2.links.sites[1].LastSeen = false, start.Add(-2*time.Second)
	n2.links.mu.Unlock()
	run2 := n2.submit()
	n2.answer("A81001")
	n2.advanceTo(runDeadline)
	got := n2.follow(run2.GetId())
	if s := siteStatus(got, "A81002"); s.GetState() != havenv1.SiteState_SITE_STATE_DISCONNECTED {
		t.Errorf("a site still down at the deadline: %v, want disconnected", s)
	}
}

// Moves the transition table forbids are refused however they are asked
// for: a cancelled run stays cancelled when its deadline passes or a site
// answers late, and cancelling a finished run returns it as it is.
func TestIllegalMovesRefused(t *testing.T) {
	t.Parallel()
	n := newNetwork(t, map[string]int64{"A81001": 60, "A81002": 60})
	run := n.submit()
	n.accept("A81001")
	cancelled, err := n.d.CancelRun(t.Context(), n.ana, run.GetId(), "wrong parameters")
	if err != nil || cancelled.GetState() != havenv1.RunState_RUN_STATE_CANCELLED {
		t.Fatalf("cancel: %v, %v", cancelled, err)
	}
	for _, ods := range []string{"A81001", "A81002"} {
		if c := n.links.cancels(ods); len(c) != 1 || !strings.Contains(c[0].GetReason(), "wrong parameters") {
			t.Errorf("site %s was sent cancels %v", ods, c)
		}
	}
	// A late answer and the deadline change nothing.
	if _, err := n.d.OpenUpload(t.Context(), "A81002", n.links.task("A81002").GetTaskId()); status.Code(err) != codes.NotFound {
		t.Errorf("an upload for a cancelled run: %v, want NotFound", err)
	}
	n.tell("A81002", &havenv1.NodeMessage{Body: &havenv1.NodeMessage_TaskDone{TaskDone: &havenv1.TaskDone{TaskId: n.links.task("A81002").GetTaskId()}}})
	n.advanceTo(2 * runDeadline)
	again, err := n.d.CancelRun(t.Context(), n.ana, run.GetId(), "again")
	if err != nil || again.GetState() != havenv1.RunState_RUN_STATE_CANCELLED || again.GetError() != "wrong parameters" {
		t.Errorf("cancelling a cancelled run: %v, %v", again, err)
	}
	got, err := n.d.GetRun(t.Context(), n.ana, run.GetId())
	if err != nil || got.GetState() != havenv1.RunState_RUN_STATE_CANCELLED || !got.GetUpdatedAt().AsTime().Equal(cancelled.GetUpdatedAt().AsTime()) {
		t.Errorf("the cancelled run is now %v, %v", got, err)
	}
	if _, err := n.d.Release(t.Context(), n.ana, run.GetId()); status.Code(err) != codes.FailedPrecondition ||
		!strings.Contains(err.Error(), "wrong parameters") {
		t.Errorf("the table of a cancelled run: %v, want FailedPrecondition saying why", err)
	}
}

// A run records the requester's roles as well as who they are, so that the
// public register can say in what role an organisation asked.
func TestRunRecordsRequesterRoles(t *testing.T) {
	t.Parallel()
	n := newNetwork(t, map[string]int64{"A81001": 60})
	n.ana.Roles = []string{"commissioner", "analyst"}
	run := n.submit()
	got, err := n.d.GetRun(t.Context(), n.ana, run.GetId())
	if err != nil {
		t.Fatal(err)
	}
	if r := got.GetRequester(); r.GetId() != "ana" || r.GetOrg() != "QHM" || !slices.Equal(r.GetRoles(), []string{"analyst", "commissioner"}) {
		t.Errorf("the stored run's requester is %v, want ana of QHM as analyst and commissioner", r)
	}
}
