package coordinator_test

import (
	"context"
	"slices"
	"testing"

	"google.golang.org/grpc"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/coordinatortest"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// TestFairQueue runs a real coordinator with one slot (runs.max_running:
// 1) and a site that accepts every task and never answers, so a run holds
// its slot until it is cancelled. Organisation QHM submits three runs and
// then organisation RXX one: QHM's first runs, the others wait PENDING
// with positions 1-3, RXX's run second in line although it came last, and
// the deadline of a queued run starts only when it leaves the queue.
// Cancelling the running run starts the next in turn; cancelling a queued
// run takes it out of line; the watcher of a queued run sees it start.
func TestFairQueue(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{MaxRunning: 1, EditData: func(data map[string]any) {
		delete(data, "ledger") // the same question is asked four times on purpose
	}})
	nd := n.Node("A81001", cdm.KindGP, 100)
	nd.Silent = true
	connect(t, ctx, nd)
	user := func(id, org string) *grpc.ClientConn {
		cert, key := n.UserCert(id, org, "analyst")
		return n.Dial(cert, key)
	}
	qhm, rxx := user("ana", "QHM"), user("bob", "RXX")
	c := havenv1.NewCoordinatorClient(qhm)

	a1 := submit(t, ctx, qhm, "statins-chd", purpose, nil)
	a2 := submit(t, ctx, qhm, "statins-chd", purpose, nil)
	a3 := submit(t, ctx, qhm, "statins-chd", purpose, nil)
	b1 := submit(t, ctx, rxx, "statins-chd", purpose, nil)
	if a1.GetState() != havenv1.RunState_RUN_STATE_RUNNING || a1.GetQueuePosition() != 0 {
		t.Fatalf("first run: %s at position %d, want RUNNING", a1.GetState(), a1.GetQueuePosition())
	}
	for _, r := range []*havenv1.Run{a2, a3, b1} {
		if r.GetState() != havenv1.RunState_RUN_STATE_PENDING || r.GetDeadline() != nil {
			t.Fatalf("run %s: %s with deadline %v, want PENDING without one", r.GetId(), r.GetState(), r.GetDeadline())
		}
	}
	positions := func() map[string]uint32 {
		out := map[string]uint32{}
		for _, r := range []*havenv1.Run{a2, a3} {
			out[r.GetId()] = getRun(t, ctx, qhm, r.GetId()).GetQueuePosition()
		}
		out[b1.GetId()] = getRun(t, ctx, rxx, b1.GetId()).GetQueuePosition()
		return out
	}
	if got, want := positions(), map[string]uint32{a2.GetId(): 1, b1.GetId(): 2, a3.GetId(): 3}; !equalMaps(got, want) {
		t.Fatalf("queue positions %v, want a2 1, b1 2, a3 3", got)
	}

	// RXX watches its queued run.
	w, err := havenv1.NewCoordinatorClient(rxx).WatchRun(ctx, &havenv1.WatchRunRequest{RunId: b1.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	first, err := w.Recv()
	if err != nil || first.GetRun().GetState() != havenv1.RunState_RUN_STATE_PENDING || first.GetRun().GetQueuePosition() != 2 {
		t.Fatalf("watch of a queued run: %v, %v", first, err)
	}

	cancel := func(id string) {
		t.Helper()
		if _, err := c.CancelRun(ctx, &havenv1.CancelRunRequest{RunId: id, Reason: "test"}); err != nil {
			t.Fatalf("cancel %s: %v", id, err)
		}
	}
	waitState := func(conn *grpc.ClientConn, id string, want havenv1.RunState) *havenv1.Run {
		t.Helper()
		for {
			r := getRun(t, ctx, conn, id)
			if r.GetState() == want {
				return r
			}
			if ctx.Err() != nil {
				t.Fatalf("run %s is %s, want %s", id, r.GetState(), want)
			}
			waitChange(ctx, nd)
		}
	}
	cancel(a1.GetId())
	waitState(qhm, a2.GetId(), havenv1.RunState_RUN_STATE_RUNNING)
	if got, want := positions(), map[string]uint32{a2.GetId(): 0, b1.GetId(): 1, a3.GetId(): 2}; !equalMaps(got, want) {
		t.Errorf("after a1 ended: positions %v, want b1 1, a3 2", got)
	}
	cancel(a3.GetId()) // queued: leaves the line
	if r := getRun(t, ctx, qhm, a3.GetId()); r.GetState() != havenv1.RunState_RUN_STATE_CANCELLED || r.GetQueuePosition() != 0 {
		t.Errorf("cancelled queued run: %s at %d", r.GetState(), r.GetQueuePosition())
	}
	cancel(a2.GetId())
	started := waitState(rxx, b1.GetId(), havenv1.RunState_RUN_STATE_RUNNING)
	if started.GetDeadline() == nil || !started.GetDeadline().AsTime().After(b1.GetSubmittedAt().AsTime()) {
		t.Errorf("b1 started with deadline %v", started.GetDeadline())
	}
	var states []havenv1.RunState
	for {
		ev, err := w.Recv()
		if err != nil {
			t.Fatalf("watch: %v (states so far %v)", err, states)
		}
		states = append(states, ev.GetRun().GetState())
		if ev.GetRun().GetState() == havenv1.RunState_RUN_STATE_RUNNING {
			break
		}
	}
	if !slices.Contains(states, havenv1.RunState_RUN_STATE_RUNNING) {
		t.Errorf("the watcher of b1 saw %v", states)
	}
	if err := nd.WaitFor(ctx, func(nd *coordinatortest.NodeDouble) bool { return len(nd.Tasks()) == 3 }); err != nil {
		t.Errorf("the site was sent %d tasks, want 3 (a1, a2, b1; never a3): %v", len(nd.Tasks()), err)
	}
}

func equalMaps(a, b map[string]uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// waitChange waits until the double sees something new or ctx ends: a run
// starting sends the site a task.
func waitChange(ctx context.Context, nd *coordinatortest.NodeDouble) {
	n := len(nd.Tasks()) + len(nd.Cancels())
	_ = nd.WaitFor(ctx, func(nd *coordinatortest.NodeDouble) bool { return len(nd.Tasks())+len(nd.Cancels()) > n })
}
