package coordinator_test

import (
	"bytes"
	"context"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow/flight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/coordinatortest"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// A principal is (organisation, user): a certificate naming QHM's user id
// under another organisation is someone else, and every API method
// refuses it QHM's runs, for a finished run and for one in progress,
// without changing anything stored (the run, its table, the audit log).
func TestOtherOrganisationSameUserID(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	// The ledger's near-duplicate rule is dropped: the test submits the
	// same question twice on purpose.
	n := coordinatortest.New(t, coordinatortest.Options{EditData: func(data map[string]any) { delete(data, "ledger") }})
	odsCodes := practices(1)
	ps := coordinatortest.Patients(1, odsCodes, 150, nil)
	nd := gpNodes(n, ps, odsCodes...)[0]
	statinsAnswer(n, ps, nd)
	connect(t, ctx, nd)
	silent := n.Node("A81999", cdm.KindGP, 10)
	silent.Silent = true

	ownerCert, ownerKey := n.UserCert("demo-commissioner", "QHM", "analyst")
	owner := n.Dial(ownerCert, ownerKey)
	intruderCert, intruderKey := n.UserCert("demo-commissioner", "OTHERORG", "analyst")
	intruder := n.Dial(intruderCert, intruderKey)
	oc, ic := havenv1.NewCoordinatorClient(owner), havenv1.NewCoordinatorClient(intruder)

	resp, err := oc.SubmitRun(ctx, &havenv1.SubmitRunRequest{DefinitionId: "statins-chd", Purpose: purpose, ClientRequestId: "crid-1",
		Parameters: map[string]*havenv1.ParameterValue{"index_date": dateParam(coordinatortest.IndexDate), "lookback_days": intParam(365)}})
	if err != nil {
		t.Fatal(err)
	}
	done := watch(t, ctx, owner, resp.GetRun().GetId())
	released := done[len(done)-1].GetRun()
	if released.GetState() != havenv1.RunState_RUN_STATE_RELEASED {
		t.Fatalf("owner's run ended %s", released.GetState())
	}
	table := fetch(t, ctx, owner, released.GetId())

	// A run in progress: the silent site never answers.
	connect(t, ctx, silent)
	running := submit(t, ctx, owner, "statins-chd", purpose, nil)
	if running.GetState() != havenv1.RunState_RUN_STATE_RUNNING {
		t.Fatalf("second run is %s", running.GetState())
	}
	// Let the answering site finish its part, so that nothing but the
	// calls below could write to the audit log.
	if err := nd.WaitFor(ctx, func(nd *coordinatortest.NodeDouble) bool { return len(nd.Receipts()) == 2 }); err != nil {
		t.Fatal(err)
	}
	for site(getRun(t, ctx, owner, running.GetId()), nd.ODS).GetState() != havenv1.SiteState_SITE_STATE_DONE {
		select {
		case <-ctx.Done():
			t.Fatal("the answering site never finished the second run")
		case <-time.After(20 * time.Millisecond): // polling, not a timing assumption
		}
	}

	for _, run := range []*havenv1.Run{released, running} {
		id := run.GetId()
		before := getRun(t, ctx, owner, id)
		auditBefore := readAudit(t, n)
		for _, tc := range []struct {
			method string
			call   func() error
		}{
			{"GetRun", func() error { _, err := ic.GetRun(ctx, &havenv1.GetRunRequest{RunId: id}); return err }},
			{"WatchRun", func() error {
				s, err := ic.WatchRun(ctx, &havenv1.WatchRunRequest{RunId: id})
				if err == nil {
					_, err = s.Recv()
				}
				return err
			}},
			{"CancelRun", func() error { _, err := ic.CancelRun(ctx, &havenv1.CancelRunRequest{RunId: id}); return err }},
			{"DoGet", func() error { return doGet(ctx, intruder, id) }},
		} {
			if err := tc.call(); status.Code(err) != codes.NotFound {
				t.Errorf("%s of QHM's %s run by OTHERORG's demo-commissioner: %v, want NotFound", tc.method, run.GetState(), err)
			}
		}
		list, err := ic.ListRuns(ctx, &havenv1.ListRunsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range list.GetRuns() {
			if r.GetRequester().GetOrg() != "OTHERORG" {
				t.Errorf("ListRuns by OTHERORG lists %s of %s", r.GetId(), r.GetRequester().GetOrg())
			}
		}
		after := getRun(t, ctx, owner, id)
		if !proto.Equal(before, after) && before.GetState() != havenv1.RunState_RUN_STATE_RUNNING {
			t.Errorf("run %s changed: %v → %v", id, before, after)
		}
		if after.GetState() != before.GetState() {
			t.Errorf("run %s moved from %s to %s", id, before.GetState(), after.GetState())
		}
		if a := readAudit(t, n); !bytes.Equal(a, auditBefore) {
			t.Errorf("refused calls wrote to the audit log:\n%s", a[len(auditBefore):])
		}
	}
	if _, err := oc.CancelRun(ctx, &havenv1.CancelRunRequest{RunId: running.GetId()}); err != nil {
		t.Errorf("the owner cancelling: %v", err)
	}

	// SubmitRun with the owner's client request id makes OTHERORG's own
	// run; it does not hand back QHM's.
	mine, err := ic.SubmitRun(ctx, &havenv1.SubmitRunRequest{DefinitionId: "statins-chd", Purpose: purpose, ClientRequestId: "crid-1",
		Parameters: map[string]*havenv1.ParameterValue{"index_date": dateParam(coordinatortest.IndexDate), "lookback_days": intParam(365)}})
	if err != nil {
		t.Fatalf("OTHERORG's submission with the same client request id: %v", err)
	}
	if mine.GetRun().GetId() == released.GetId() || mine.GetRun().GetRequester().GetOrg() != "OTHERORG" {
		t.Errorf("SubmitRun by OTHERORG with QHM's client request id returned %v", mine.GetRun())
	}
	again, err := oc.SubmitRun(ctx, &havenv1.SubmitRunRequest{DefinitionId: "statins-chd", Purpose: purpose, ClientRequestId: "crid-1"})
	if err != nil || again.GetRun().GetId() != released.GetId() {
		t.Errorf("the owner's retry: %v %v, want run %s", again.GetRun().GetId(), err, released.GetId())
	}
	if got := fetch(t, ctx, owner, released.GetId()); !reflect.DeepEqual(got, table) {
		t.Errorf("the released table changed")
	}
}

// readAudit returns the coordinator's audit log as it stands.
func readAudit(t *testing.T, n *coordinatortest.Network) []byte {
	t.Helper()
	b, err := os.ReadFile(n.Config.AuditPath())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// doGet fetches a run's table with Flight DoGet and returns the error.
func doGet(ctx context.Context, conn *grpc.ClientConn, runID string) error {
	tkt, err := havenv1.NewTableTicket(runID)
	if err != nil {
		return err
	}
	s, err := flight.NewFlightServiceClient(conn).DoGet(ctx, tkt)
	if err != nil {
		return err
	}
	_, err = s.Recv()
	return err
}
