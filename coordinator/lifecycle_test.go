package coordinator_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/flight"
	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/config"
	"github.com/havenhealth/haven/coordinator/coordinatortest"
	"github.com/havenhealth/haven/coordinator/store"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// A site that misses the deadline is named, a member site that never
// connected is named, and the table is released with the coverage that
// answered because policy allows that much. The deadline passes when the
// test moves the dispatcher's clock, once every other site has answered.
func TestDeadlineAndCoverage(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	clock := clockwork.NewFakeClockAt(time.Now())
	n := coordinatortest.New(t, coordinatortest.Options{Deadline: time.Hour, Clock: clock, Sites: []config.Site{
		{ODS: "A81001", Kind: cdm.KindGP}, {ODS: "A81002", Kind: cdm.KindGP},
		{ODS: "A81003", Kind: cdm.KindGP}, {ODS: "A81004", Kind: cdm.KindGP, Population: 7},
		{ODS: "A81005", Kind: cdm.KindGP},
	}})
	odsCodes := practices(3)
	ps := coordinatortest.Patients(4, odsCodes, 120, nil)
	nodes := gpNodes(n, ps, odsCodes...)
	for _, nd := range nodes {
		statinsAnswer(n, ps, nd)
	}
	late := nodes[2]
	late.Population = 5 // the site reports a small list, so what answered is enough
	late.Silent = true
	refuser := n.Node("A81005", cdm.KindGP, 3)
	refuser.Refuse = true
	connect(t, ctx, append(nodes, refuser)...)
	conn := analyst(n, "ana")
	run := submit(t, ctx, conn, "statins-chd", purpose, nil)
	watchUntil(t, ctx, conn, run.GetId(), func(r *havenv1.Run) bool {
		return site(r, "A81001").GetState() == havenv1.SiteState_SITE_STATE_DONE &&
			site(r, "A81002").GetState() == havenv1.SiteState_SITE_STATE_DONE &&
			site(r, "A81005").GetState() == havenv1.SiteState_SITE_STATE_REFUSED &&
			site(r, "A81003").GetState() == havenv1.SiteState_SITE_STATE_ACCEPTED
	})
	clock.Advance(time.Hour)
	evs := watch(t, ctx, conn, run.GetId())
	done := evs[len(evs)-1].GetRun()
	if done.GetState() != havenv1.RunState_RUN_STATE_RELEASED {
		t.Fatalf("run ended %s: %v %s", done.GetState(), done.GetPolicyReasons(), done.GetError())
	}
	want := map[string]havenv1.SiteState{
		"A81001": havenv1.SiteState_SITE_STATE_DONE, "A81002": havenv1.SiteState_SITE_STATE_DONE,
		"A81003": havenv1.SiteState_SITE_STATE_TIMED_OUT, "A81004": havenv1.SiteState_SITE_STATE_DISCONNECTED,
		"A81005": havenv1.SiteState_SITE_STATE_REFUSED,
	}
	for ods, st := range want {
		if s := site(done, ods); s.GetState() != st {
			t.Errorf("site %s is %v, want %s", ods, s, st)
		}
	}
	if !strings.Contains(site(done, "A81003").GetError(), "deadline") {
		t.Errorf("the late site's error does not say why: %q", site(done, "A81003").GetError())
	}
	if r := site(done, "A81005").GetReasons(); len(r) != 1 || r[0].GetCode() != "purpose_not_accepted" {
		t.Errorf("the refusing site's reasons: %v", r)
	}
	cov := done.GetCoverage()
	answeredPop := nodes[0].Population + nodes[1].Population
	if cov.GetSitesExpected() != 5 || cov.GetSitesAnswered() != 2 || cov.GetPopulationAnswered() != answeredPop ||
		cov.GetPopulationExpected() != answeredPop+5+7+3 {
		t.Errorf("coverage %v, want 2 of 5 sites, %d of %d people", cov, answeredPop, answeredPop+15)
	}
	if err := late.WaitFor(ctx, func(nd *coordinatortest.NodeDouble) bool { return len(nd.Cancels()) == 1 }); err != nil {
		t.Fatalf("the late site was not told to stop: %v", err)
	}
	tab := fetch(t, ctx, conn, run.GetId())
	compareTables(t, tab, expectStatins(t, n, ps, odsCodes[:2]...))
	if tab.Meta.SitesAnswered != 2 || tab.Meta.SitesExpected != 5 {
		t.Errorf("table says coverage %+v", tab.Meta)
	}
}

// A site whose link drops while its task runs keeps its place, its status
// saying the link dropped, and is named DISCONNECTED when the test moves
// the dispatcher's clock past the deadline. (How a paused site is named,
// and the rest of the deadline's rules, are dispatch's unit tests.)
func TestDroppedSiteWaitsForDeadline(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	clock := clockwork.NewFakeClockAt(time.Now())
	n := coordinatortest.New(t, coordinatortest.Options{Deadline: time.Hour, Clock: clock})
	nodes, _ := statinsSites(t, ctx, n, 5, 2, 120)
	healthy, dropped := nodes[0], nodes[1]
	dropped.Silent = true
	conn := analyst(n, "ana")
	run := submit(t, ctx, conn, "statins-chd", purpose, nil)
	// Accepted (the double accepts before going silent); now the link goes.
	watchUntil(t, ctx, conn, run.GetId(), func(r *havenv1.Run) bool {
		return site(r, dropped.ODS).GetState() == havenv1.SiteState_SITE_STATE_ACCEPTED
	})
	dropped.Close()
	watchUntil(t, ctx, conn, run.GetId(), func(r *havenv1.Run) bool {
		return strings.Contains(site(r, dropped.ODS).GetError(), "link dropped") &&
			site(r, healthy.ODS).GetState() == havenv1.SiteState_SITE_STATE_DONE
	})
	clock.Advance(time.Hour)
	evs := watch(t, ctx, conn, run.GetId())
	done := evs[len(evs)-1].GetRun()
	s := site(done, dropped.ODS)
	if s.GetState() != havenv1.SiteState_SITE_STATE_DISCONNECTED || !strings.Contains(s.GetError(), "not back by the deadline") {
		t.Errorf("the dropped site is %v, want DISCONNECTED, not back by the deadline", s)
	}
	if s := site(done, healthy.ODS); s.GetState() != havenv1.SiteState_SITE_STATE_DONE {
		t.Errorf("the healthy site is %v", s)
	}
}

// Stopping the coordinator as SIGTERM does marks the run in progress
// interrupted, tells its watcher and its nodes, and keeps it stored.
func TestShutdownInterruptsRuns(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{})
	nd := n.Node("A81001", cdm.KindGP, 100)
	nd.Silent = true
	connect(t, ctx, nd)
	conn := analyst(n, "ana")
	run := submit(t, ctx, conn, "statins-chd", purpose, nil)
	stream, err := havenv1.NewCoordinatorClient(conn).WatchRun(ctx, &havenv1.WatchRunRequest{RunId: run.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	if err := nd.WaitFor(ctx, func(nd *coordinatortest.NodeDouble) bool { return len(nd.Tasks()) == 1 }); err != nil {
		t.Fatal(err)
	}
	if err := n.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	var last *havenv1.RunEvent
	for {
		ev, err := stream.Recv()
		if err != nil {
			break
		}
		last = ev
	}
	if last.GetRun().GetState() != havenv1.RunState_RUN_STATE_INTERRUPTED {
		t.Errorf("the watcher last saw %v", last)
	}
	if err := nd.WaitFor(ctx, func(nd *coordinatortest.NodeDouble) bool {
		return nd.Goodbye() != nil && len(nd.Cancels()) == 1
	}); err != nil {
		t.Errorf("the node was not told: goodbye %v, cancels %v", nd.Goodbye(), nd.Cancels())
	}
	st, err := store.OpenSQLite(ctx, n.Config.StorePath())
	if err != nil {
		t.Fatal(err)
	}
	stored, err := st.GetRun(ctx, run.GetId())
	st.Close()
	if err != nil || stored.GetState() != havenv1.RunState_RUN_STATE_INTERRUPTED || stored.GetFinishedAt() == nil {
		t.Fatalf("stored run %v (%v), want INTERRUPTED", stored, err)
	}
	verifyAudit(t, n, run.GetId(), "submission", "dispatch", "run_state")

	// A run a crashed process left RUNNING is interrupted at start-up.
	st, err = store.OpenSQLite(ctx, n.Config.StorePath())
	if err != nil {
		t.Fatal(err)
	}
	crashed := &havenv1.Run{Id: "run-LEFTBYACRASH", DefinitionId: "statins-chd", State: havenv1.RunState_RUN_STATE_RUNNING,
		Requester: &havenv1.Requester{Id: "ana", Org: "QHM"}, SubmittedAt: timestamppb.Now()}
	if err := st.CreateRun(ctx, crashed); err != nil {
		t.Fatal(err)
	}
	st.Close()

	n.Start()
	c := havenv1.NewCoordinatorClient(analyst(n, "ana"))
	for _, id := range []string{run.GetId(), crashed.GetId()} {
		got, err := c.GetRun(ctx, &havenv1.GetRunRequest{RunId: id})
		if err != nil || got.GetRun().GetState() != havenv1.RunState_RUN_STATE_INTERRUPTED || got.GetRun().GetError() == "" {
			t.Errorf("run %s after restart: %v %v", id, got, err)
		}
	}
	verifyAudit(t, n, crashed.GetId(), "run_state")
}

// Bad submissions are refused with an error that names what was wrong;
// policy refusals are recorded as REFUSED runs with the policy's reasons.
func TestSubmitErrors(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{Users: map[string]string{"tok": "s3cret-token-for-tests"}})
	connect(t, ctx, n.Node("A81001", cdm.KindGP, 100))
	c := havenv1.NewCoordinatorClient(analyst(n, "ana"))
	for _, tc := range []struct {
		name     string
		req      *havenv1.SubmitRunRequest
		code     codes.Code
		contains string
	}{
		{"unknown definition", &havenv1.SubmitRunRequest{DefinitionId: "nope", Purpose: purpose}, codes.NotFound, `no definition "nope"`},
		{"unknown parameter", &havenv1.SubmitRunRequest{DefinitionId: "statins-chd", Purpose: purpose,
			Parameters: map[string]*havenv1.ParameterValue{"lookback": intParam(30)}}, codes.InvalidArgument, `unknown parameter "lookback"`},
		{"out of range", &havenv1.SubmitRunRequest{DefinitionId: "statins-chd", Purpose: purpose,
			Parameters: map[string]*havenv1.ParameterValue{"lookback_days": intParam(5)}}, codes.InvalidArgument, "lookback_days: 5 is below the minimum 28"},
		{"wrong type", &havenv1.SubmitRunRequest{DefinitionId: "statins-chd", Purpose: purpose,
			Parameters: map[string]*havenv1.ParameterValue{"index_date": intParam(2024)}}, codes.InvalidArgument, "index_date is a date, not a int"},
		{"no purpose", &havenv1.SubmitRunRequest{DefinitionId: "statins-chd"}, codes.InvalidArgument, "purpose is required"},
		{"bad client request id", &havenv1.SubmitRunRequest{DefinitionId: "statins-chd", Purpose: purpose, ClientRequestId: "a b"},
			codes.InvalidArgument, "client_request_id"},
	} {
		_, err := c.SubmitRun(ctx, tc.req)
		if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.contains) {
			t.Errorf("%s: got %v, want %s mentioning %q", tc.name, err, tc.code, tc.contains)
		}
	}

	// Policy refusals.
	intern := havenv1.NewCoordinatorClient(analyst(n, "ivy", "intern"))
	resp, err := intern.SubmitRun(ctx, &havenv1.SubmitRunRequest{DefinitionId: "statins-chd", Purpose: purpose})
	if err != nil || resp.GetRun().GetState() != havenv1.RunState_RUN_STATE_REFUSED || !hasReason(resp.GetRun(), "role_not_permitted") {
		t.Errorf("a role the approval lacks: %v %v", resp, err)
	}
	resp, err = c.SubmitRun(ctx, &havenv1.SubmitRunRequest{DefinitionId: "statins-chd", Purpose: purpose,
		Parameters: map[string]*havenv1.ParameterValue{"index_date": dateParam("2016-01-01")}})
	if err != nil || resp.GetRun().GetState() != havenv1.RunState_RUN_STATE_REFUSED || !hasReason(resp.GetRun(), "parameter_below_min") {
		t.Errorf("a parameter below the approved range: %v %v", resp, err)
	}

	// Idempotent retries.
	req := &havenv1.SubmitRunRequest{DefinitionId: "statins-chd", Purpose: purpose, ClientRequestId: "retry-1"}
	first, err := c.SubmitRun(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.SubmitRun(ctx, req)
	if err != nil || again.GetRun().GetId() != first.GetRun().GetId() {
		t.Errorf("retried submission gave %v %v, want run %s", again, err, first.GetRun().GetId())
	}

	// Who may call.
	cert, key := n.NodeCert("A81001")
	if _, err := havenv1.NewCoordinatorClient(n.Dial(cert, key)).ListRuns(ctx, &havenv1.ListRunsRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a node calling the commissioner API: %v", err)
	}
	if _, err := havenv1.NewCoordinatorClient(n.DialToken("wrong")).ListRuns(ctx, &havenv1.ListRunsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("a wrong token: %v", err)
	}
	tok := havenv1.NewCoordinatorClient(n.DialToken("s3cret-token-for-tests"))
	defs, err := tok.ListDefinitions(ctx, &havenv1.ListDefinitionsRequest{PageSize: 2})
	if err != nil || len(defs.GetDefinitions()) != 2 || defs.GetNextPageToken() == "" {
		t.Fatalf("ListDefinitions with a token: %v %v", defs, err)
	}
	rest, err := tok.ListDefinitions(ctx, &havenv1.ListDefinitionsRequest{PageToken: defs.GetNextPageToken()})
	if err != nil || len(rest.GetDefinitions()) != len(n.Catalog.Definitions())-2 {
		t.Errorf("second page: %v %v", rest, err)
	}
	for _, d := range append(defs.GetDefinitions(), rest.GetDefinitions()...) {
		if d.GetApproval().GetExpiresAt() == nil || d.GetSha256() == "" {
			t.Errorf("definition %s without approval or hash: %v", d.GetId(), d)
		}
	}
	got, err := tok.GetDefinition(ctx, &havenv1.GetDefinitionRequest{Id: "t2dm-emergency-admissions"})
	if err != nil || !strings.Contains(got.GetSource(), "id: t2dm-emergency-admissions") || len(got.GetCodelists()) != 1 ||
		got.GetCodelists()[0].GetSha256() == "" || got.GetDefinition().GetMode() != havenv1.PlanMode_PLAN_MODE_LINKAGE {
		t.Errorf("GetDefinition: %v %v", got, err)
	}
	// The token user's runs are their own; ana's are ana's organisation's.
	runs, err := tok.ListRuns(ctx, &havenv1.ListRunsRequest{})
	if err != nil || len(runs.GetRuns()) != 3 {
		t.Errorf("ListRuns for a colleague in the same organisation: %d runs, %v", len(runs.GetRuns()), err)
	}
	if _, err := tok.CancelRun(ctx, &havenv1.CancelRunRequest{RunId: first.GetRun().GetId()}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("cancelling a colleague's run: %v", err)
	}
}

// A requester cancels a run; its sites are told to stop.
func TestCancelRun(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{})
	nd := n.Node("A81001", cdm.KindGP, 100)
	nd.Silent = true
	connect(t, ctx, nd)
	c := havenv1.NewCoordinatorClient(analyst(n, "ana"))
	run := submit(t, ctx, analyst(n, "ana"), "statins-chd", purpose, nil)
	if err := nd.WaitFor(ctx, func(nd *coordinatortest.NodeDouble) bool {
		return len(nd.Tasks()) == 1
	}); err != nil {
		t.Fatal(err)
	}
	other := havenv1.NewCoordinatorClient(analyst(n, "zed", "analyst"))
	if _, err := other.CancelRun(ctx, &havenv1.CancelRunRequest{RunId: run.GetId()}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("someone else cancelling: %v", err)
	}
	resp, err := c.CancelRun(ctx, &havenv1.CancelRunRequest{RunId: run.GetId(), Reason: "wrong parameters"})
	if err != nil || resp.GetRun().GetState() != havenv1.RunState_RUN_STATE_CANCELLED || resp.GetRun().GetError() != "wrong parameters" {
		t.Fatalf("cancel: %v %v", resp, err)
	}
	if err := nd.WaitFor(ctx, func(nd *coordinatortest.NodeDouble) bool { return len(nd.Cancels()) == 1 }); err != nil {
		t.Fatalf("the site was not told: %v", err)
	}
	// Fetching the table of a cancelled run says why there is none.
	tkt, err := havenv1.NewTableTicket(run.GetId())
	if err != nil {
		t.Fatal(err)
	}
	get, err := flight.NewFlightServiceClient(analyst(n, "ana")).DoGet(ctx, tkt)
	if err == nil {
		_, err = get.Recv()
	}
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "wrong parameters") {
		t.Errorf("DoGet of a cancelled run: %v", err)
	}
	if _, err := c.GetRun(ctx, &havenv1.GetRunRequest{RunId: "run-nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("unknown run: %v", err)
	}
}

// A site that is down when a run starts is named DISCONNECTED; when it
// comes back before the deadline it is sent its task and the run
// completes with full coverage.
func TestReconnectedSiteGetsItsTask(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{})
	odsCodes := practices(2)
	ps := coordinatortest.Patients(5, odsCodes, 100, nil)
	nodes := gpNodes(n, ps, odsCodes...)
	for _, nd := range nodes {
		statinsAnswer(n, ps, nd)
	}
	// The first site holds its upload until the second is back, so the
	// run is still waiting when it returns.
	gate := make(chan struct{})
	nodes[0].BeforeUpload = func(ctx context.Context, _ *grpc.ClientConn, _ *havenv1.Task, _ *arrow.Schema) {
		select {
		case <-gate:
		case <-ctx.Done():
		}
	}
	connect(t, ctx, nodes...)
	nodes[1].Close() // known to the coordinator, now down

	conn := analyst(n, "ana")
	c := havenv1.NewCoordinatorClient(conn)
	var run *havenv1.Run
	// The coordinator notices the closed link asynchronously.
	for {
		run = submit(t, ctx, conn, "statins-chd", purpose, nil)
		// Heard from a moment ago, the site keeps its place, its task
		// unsent (dispatch.Config.ReconnectGrace).
		if s := site(run, nodes[1].ODS); s.GetState() == havenv1.SiteState_SITE_STATE_PENDING && strings.Contains(s.GetError(), "link is down") {
			break
		}
		if _, err := c.CancelRun(ctx, &havenv1.CancelRunRequest{RunId: run.GetId()}); err != nil {
			t.Fatal(err)
		}
		if ctx.Err() != nil {
			t.Fatal("the coordinator never saw the link close")
		}
		time.Sleep(10 * time.Millisecond)
	}
	back := n.Node(nodes[1].ODS, cdm.KindGP, nodes[1].Population)
	statinsAnswer(n, ps, back)
	connect(t, ctx, back)
	if err := back.WaitFor(ctx, func(nd *coordinatortest.NodeDouble) bool { return len(nd.Receipts()) == 1 }); err != nil {
		t.Fatalf("the returning site was not sent its task: %v", err)
	}
	close(gate)
	evs := watch(t, ctx, conn, run.GetId())
	done := evs[len(evs)-1].GetRun()
	if done.GetState() != havenv1.RunState_RUN_STATE_RELEASED || done.GetCoverage().GetSitesAnswered() != 2 {
		t.Fatalf("run ended %s with %v", done.GetState(), done.GetCoverage())
	}
	compareTables(t, fetch(t, ctx, conn, run.GetId()), expectStatins(t, n, ps, odsCodes...))
}

// A node whose link dropped after its upload reports the outcome in its
// next Register; the coordinator takes it once, however often it is
// reported, and cancels a task the node still runs for a finished run. A
// newer link from a site replaces the older one.
func TestOutcomesAfterReconnect(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{})
	ps := coordinatortest.Patients(6, practices(1), 100, nil)
	first := gpNodes(n, ps, "A81001")[0]
	statinsAnswer(n, ps, first)
	first.WithholdDone = true
	connect(t, ctx, first)
	conn := analyst(n, "ana")
	run := submit(t, ctx, conn, "statins-chd", purpose, nil)
	if err := first.WaitFor(ctx, func(nd *coordinatortest.NodeDouble) bool { return len(nd.Withheld()) == 1 }); err != nil {
		t.Fatal(err)
	}
	done := first.Withheld()[0]

	// The same site connects again: the older link is told to go.
	second := n.Node("A81001", cdm.KindGP, first.Population)
	second.Outcomes = []*havenv1.TaskOutcome{{Outcome: &havenv1.TaskOutcome_Done{Done: done}}}
	connect(t, ctx, second)
	if err := first.WaitFor(ctx, func(nd *coordinatortest.NodeDouble) bool { return nd.Goodbye() != nil && nd.LinkDown() }); err != nil {
		t.Errorf("the older link was not replaced: %v", err)
	}
	evs := watch(t, ctx, conn, run.GetId())
	final := evs[len(evs)-1].GetRun()
	if final.GetState() != havenv1.RunState_RUN_STATE_RELEASED || final.GetCoverage().GetSitesAnswered() != 1 {
		t.Fatalf("run ended %s with %v", final.GetState(), final.GetCoverage())
	}
	compareTables(t, fetch(t, ctx, conn, run.GetId()), expectStatins(t, n, ps, "A81001"))

	// Reported again, with the task also claimed as running: ignored, and
	// the node is told to stop the task.
	second.Close()
	third := n.Node("A81001", cdm.KindGP, first.Population)
	third.Outcomes = second.Outcomes
	third.Running = []string{done.GetTaskId()}
	connect(t, ctx, third)
	if err := third.WaitFor(ctx, func(nd *coordinatortest.NodeDouble) bool { return len(nd.Cancels()) == 1 }); err != nil {
		t.Errorf("a task of a finished run was not cancelled: %v", err)
	}
	after, err := havenv1.NewCoordinatorClient(conn).GetRun(ctx, &havenv1.GetRunRequest{RunId: run.GetId()})
	if err != nil || after.GetRun().GetUpdatedAt().AsTime() != final.GetUpdatedAt().AsTime() {
		t.Errorf("the repeated outcome changed the run: %v %v", after, err)
	}
}

// A link that sends nothing for nodelink.SilentIntervals heartbeat
// intervals is dropped.
func TestSilentLinkDropped(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{Heartbeat: 100 * time.Millisecond})
	quiet := n.Node("A81001", cdm.KindGP, 10)
	quiet.NoHeartbeat = true
	connect(t, ctx, quiet)
	if err := quiet.WaitFor(ctx, func(nd *coordinatortest.NodeDouble) bool { return nd.LinkDown() }); err != nil {
		t.Fatalf("a silent link stayed up: %v", err)
	}
	if !strings.Contains(n.Logs.String(), "no message for") {
		t.Errorf("the drop is not logged with its reason")
	}
}
