package coordinator_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/coordinatortest"
	"github.com/havenhealth/haven/internal/testutil"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// rateLimits sets the bundle's limits on a requester's submissions a day,
// with no limit on runs in progress. The ledger's rules (near-duplicates,
// budgets) are dropped: these tests send the same request many times to
// count submissions, which the ledger would refuse for its own reasons.
func rateLimits(runs, refused int) func(map[string]any) {
	return func(data map[string]any) {
		delete(data, "ledger")
		data["rate_limits"] = map[string]any{"runs_per_requester_per_24h": runs, "refused_per_requester_per_24h": refused}
	}
}

// Sixty runs at once from one requester start only as many as the
// bundle's limit on runs in progress; another organisation's run still
// starts, a colleague's start up to the organisation's limit, and a
// finished run makes room again. Before, all 60 started and crowded the
// sites so that other runs missed their deadlines.
func TestActiveRunsCapped(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{EditData: func(data map[string]any) {
		delete(data, "ledger") // the test repeats one request on purpose
		data["rate_limits"] = map[string]any{"runs_per_requester_per_24h": 100, "refused_per_requester_per_24h": 200,
			"active_runs_per_requester": 4, "active_runs_per_org": 6}
	}})
	nd := n.Node("A81001", cdm.KindGP, 100)
	nd.Silent = true
	connect(t, ctx, nd)
	burst := havenv1.NewCoordinatorClient(analyst(n, "burst"))
	runs := make([]*havenv1.Run, 60)
	var wg sync.WaitGroup
	for i := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := burst.SubmitRun(ctx, &havenv1.SubmitRunRequest{DefinitionId: "statins-chd", Purpose: purpose})
			if err != nil {
				t.Errorf("submission %d: %v", i, err)
			}
			runs[i] = resp.GetRun()
		}()
	}
	wg.Wait()
	var running []*havenv1.Run
	for _, run := range runs {
		switch {
		case run.GetState() == havenv1.RunState_RUN_STATE_RUNNING:
			running = append(running, run)
		case !hasReason(run, "too_many_active_runs"):
			t.Errorf("run %s is %s %v", run.GetId(), run.GetState(), run.GetPolicyReasons())
		}
	}
	if len(running) != 4 {
		t.Fatalf("%d of 60 runs started, want the limit of 4", len(running))
	}
	otherCert, otherKey := n.UserCert("someone", "OTHERORG", "analyst")
	if run := submit(t, ctx, n.Dial(otherCert, otherKey), "statins-chd", purpose, nil); run.GetState() != havenv1.RunState_RUN_STATE_RUNNING {
		t.Errorf("another organisation's run: %s %v", run.GetState(), run.GetPolicyReasons())
	}
	colleague := analyst(n, "colleague")
	for i, want := range []string{"", "", "org_too_many_active_runs"} {
		run := submit(t, ctx, colleague, "statins-chd", purpose, nil)
		if (want == "") != (run.GetState() == havenv1.RunState_RUN_STATE_RUNNING) || (want != "" && !hasReason(run, want)) {
			t.Errorf("colleague's run %d: %s %v, want %q", i, run.GetState(), run.GetPolicyReasons(), want)
		}
	}
	if _, err := burst.CancelRun(ctx, &havenv1.CancelRunRequest{RunId: running[0].GetId()}); err != nil {
		t.Fatal(err)
	}
	if run := submit(t, ctx, analyst(n, "burst"), "statins-chd", purpose, nil); run.GetState() != havenv1.RunState_RUN_STATE_RUNNING {
		t.Errorf("after one finished: %s %v", run.GetState(), run.GetPolicyReasons())
	}
}

// allRuns lists every run conn may see.
func allRuns(t *testing.T, ctx context.Context, conn *grpc.ClientConn) []*havenv1.Run {
	t.Helper()
	var out []*havenv1.Run
	req := &havenv1.ListRunsRequest{PageSize: 500}
	for {
		resp, err := havenv1.NewCoordinatorClient(conn).ListRuns(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, resp.GetRuns()...)
		if resp.GetNextPageToken() == "" {
			return out
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

// Sixty submissions at once by one new user, with the bundle's limit of
// 50 runs a day: exactly 50 start and 10 are refused as over the limit,
// and all 60 are stored. Before, the count and the insert were not atomic
// and all 60 started.
func TestParallelSubmissionsCountedOneByOne(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{EditData: rateLimits(50, 200)})
	nd := n.Node("A81001", cdm.KindGP, 100)
	nd.Silent = true
	connect(t, ctx, nd)
	conn := analyst(n, "newcomer")
	c := havenv1.NewCoordinatorClient(conn)

	const submits = 60
	states := make([]*havenv1.Run, submits)
	var wg sync.WaitGroup
	for i := range submits {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.SubmitRun(ctx, &havenv1.SubmitRunRequest{DefinitionId: "statins-chd", Purpose: purpose})
			if err != nil {
				t.Errorf("submission %d: %v", i, err)
				return
			}
			states[i] = resp.GetRun()
		}()
	}
	wg.Wait()
	started, refused := 0, 0
	for _, run := range states {
		switch {
		case run == nil:
		case run.GetState() == havenv1.RunState_RUN_STATE_REFUSED && hasReason(run, "rate_limit_exceeded"):
			refused++
		case run.GetState() == havenv1.RunState_RUN_STATE_REFUSED:
			t.Errorf("run %s refused for %v", run.GetId(), run.GetPolicyReasons())
		default:
			started++
		}
	}
	if started != 50 || refused != 10 {
		t.Errorf("%d started and %d refused as over the limit, want 50 and 10", started, refused)
	}
	if stored := allRuns(t, ctx, conn); len(stored) != submits {
		t.Errorf("%d runs stored, want %d", len(stored), submits)
	}
}

// Refused submissions count against their own limit; past it the
// coordinator refuses with ResourceExhausted and stores and audits
// nothing, so refused requests cannot grow the store without bound.
func TestRefusedSubmissionsCapped(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{EditData: rateLimits(2, 3)})
	nd := n.Node("A81001", cdm.KindGP, 100)
	nd.Silent = true
	connect(t, ctx, nd)
	conn := analyst(n, "ana")
	c := havenv1.NewCoordinatorClient(conn)
	submitOnce := func() (*havenv1.Run, error) {
		resp, err := c.SubmitRun(ctx, &havenv1.SubmitRunRequest{DefinitionId: "statins-chd", Purpose: purpose})
		return resp.GetRun(), err
	}
	for i := range 5 {
		run, err := submitOnce()
		if err != nil {
			t.Fatalf("submission %d: %v", i, err)
		}
		if refused := run.GetState() == havenv1.RunState_RUN_STATE_REFUSED; refused != (i >= 2) {
			t.Errorf("submission %d is %s %v", i, run.GetState(), run.GetPolicyReasons())
		}
	}
	// The node double accepts the two runs it is sent on its own time;
	// wait until both acceptances are audited, so that only the
	// submissions below could add to the log.
	testutil.Eventually(t, "both acceptances audited", func() bool {
		return bytes.Count(readAudit(t, n), []byte(`"response":"accepted"`)) >= 2
	})
	auditBefore := readAudit(t, n)
	for i := range 3 {
		_, err := submitOnce()
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "nothing was stored") {
			t.Errorf("submission %d past the refused limit: %v, want ResourceExhausted", 5+i, err)
		}
	}
	if stored := allRuns(t, ctx, conn); len(stored) != 5 {
		t.Errorf("%d runs stored, want 5", len(stored))
	}
	if a := readAudit(t, n); !bytes.Equal(a, auditBefore) {
		t.Errorf("submissions past the refused limit were audited:\n%s", a[len(auditBefore):])
	}
	// Another requester, and the same user id in another organisation,
	// are not held back by ana's refusals.
	cert, key := n.UserCert("ana", "OTHERORG", "analyst")
	resp, err := havenv1.NewCoordinatorClient(n.Dial(cert, key)).SubmitRun(ctx,
		&havenv1.SubmitRunRequest{DefinitionId: "statins-chd", Purpose: purpose})
	if err != nil || resp.GetRun().GetState() != havenv1.RunState_RUN_STATE_RUNNING {
		t.Errorf("OTHERORG's ana: %v %v", resp.GetRun().GetState(), err)
	}
}

// Oversized and malformed submissions are refused at the API edge with a
// short error naming what was wrong, and nothing is stored or audited. A
// well-formed submission stating a purpose the requester's role may not
// state is stored as refused.
func TestSubmissionBounds(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{})
	conn := analyst(n, "ana")
	c := havenv1.NewCoordinatorClient(conn)
	huge := strings.Repeat("x", 3<<20)
	unknown := map[string]*havenv1.ParameterValue{}
	for i := range 10000 {
		unknown[fmt.Sprintf("p%05d", i)] = intParam(int64(i))
	}
	manyShort := map[string]*havenv1.ParameterValue{}
	for i := range 30 {
		manyShort[fmt.Sprintf("bad\nname%02d", i)] = intParam(1)
	}
	for _, tc := range []struct {
		name     string
		req      *havenv1.SubmitRunRequest
		contains string
	}{
		{"3 MB purpose", &havenv1.SubmitRunRequest{DefinitionId: "statins-chd", Purpose: huge}, "over the limit"},
		{"newline in purpose", &havenv1.SubmitRunRequest{DefinitionId: "statins-chd", Purpose: "commissioning\nrun-FORGED RELEASED"},
			"purpose"},
		{"purpose not in the bundle", &havenv1.SubmitRunRequest{DefinitionId: "statins-chd", Purpose: "marketing"},
			`purpose "marketing" is not one of the bundle's purposes`},
		{"3 MB definition id", &havenv1.SubmitRunRequest{DefinitionId: huge, Purpose: purpose}, "over the limit"},
		{"long definition id", &havenv1.SubmitRunRequest{DefinitionId: strings.Repeat("d", 1000), Purpose: purpose},
			"definition_id is 1000 bytes, over the limit of 128"},
		{"10,000 unknown parameters", &havenv1.SubmitRunRequest{DefinitionId: "statins-chd", Purpose: purpose, Parameters: unknown},
			"over the limit"},
		{"30 bad parameter names", &havenv1.SubmitRunRequest{DefinitionId: "statins-chd", Purpose: purpose, Parameters: manyShort},
			"and 20 more"},
		{"long parameter value", &havenv1.SubmitRunRequest{DefinitionId: "statins-chd", Purpose: purpose,
			Parameters: map[string]*havenv1.ParameterValue{"index_date": dateParam(strings.Repeat("9", 300))}},
			"parameters.index_date is 300 bytes, over the limit of 256"},
	} {
		auditBefore := readAudit(t, n)
		_, err := c.SubmitRun(ctx, tc.req)
		msg := status.Convert(err).Message()
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(msg, tc.contains) {
			t.Errorf("%s: %v, want InvalidArgument containing %q", tc.name, shorten(err), tc.contains)
		}
		if len(msg) > 1024 {
			t.Errorf("%s: the error is %d bytes long", tc.name, len(msg))
		}
		if strings.Count(msg, "\n") > 11 {
			t.Errorf("%s: the error lists more than ten problems:\n%s", tc.name, msg)
		}
		if len(allRuns(t, ctx, conn)) != 0 {
			t.Fatalf("%s: a run was stored", tc.name)
		}
		if !bytes.Equal(readAudit(t, n), auditBefore) {
			t.Errorf("%s: the audit log grew", tc.name)
		}
	}

	// A researcher may not state commissioning, even for a definition
	// whose approval lists both their role and that purpose.
	researcher := analyst(n, "rita", "researcher")
	run := submit(t, ctx, researcher, "t2dm-emergency-admissions", "commissioning",
		map[string]*havenv1.ParameterValue{"index_date": dateParam(coordinatortest.IndexDate)})
	if run.GetState() != havenv1.RunState_RUN_STATE_REFUSED || !hasReason(run, "purpose_not_permitted_for_role") {
		t.Errorf("a researcher stating commissioning: %s %v", run.GetState(), run.GetPolicyReasons())
	}
}

// shorten keeps a test failure readable when an error echoes its input.
func shorten(err error) string {
	s := fmt.Sprint(err)
	if len(s) > 300 {
		return s[:300] + fmt.Sprintf("… (%d bytes)", len(s))
	}
	return s
}
