package client

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// fallBehindDouble is a test double for the coordinator's WatchRun, for a
// failure a real coordinator shows only under load: the first watch sends
// a snapshot and then ends with ResourceExhausted, as the coordinator
// does when a watcher falls behind; later watches send the rest of the
// run to its end. A run other than its own is NotFound.
type fallBehindDouble struct {
	havenv1.UnimplementedCoordinatorServer
	mu      sync.Mutex
	watches int
}

func (s *fallBehindDouble) WatchRun(req *havenv1.WatchRunRequest, stream havenv1.Coordinator_WatchRunServer) error {
	if req.GetRunId() != "run-A" {
		return status.Errorf(codes.NotFound, "run %q not found", req.GetRunId())
	}
	s.mu.Lock()
	s.watches++
	first := s.watches == 1
	s.mu.Unlock()
	send := func(seq uint64, st havenv1.RunState, answered int32) error {
		return stream.Send(&havenv1.RunEvent{Sequence: seq, Run: &havenv1.Run{Id: "run-A", State: st,
			Coverage: &havenv1.Coverage{SitesExpected: 3, SitesAnswered: answered, PopulationExpected: 200, PopulationAnswered: 50 * int64(answered)}}})
	}
	if first {
		if err := send(1, havenv1.RunState_RUN_STATE_RUNNING, 1); err != nil {
			return err
		}
		return status.Error(codes.ResourceExhausted, "the watcher fell behind")
	}
	// The fresh snapshot repeats what was seen, then the run goes on.
	for i, ev := range []struct {
		st       havenv1.RunState
		answered int32
	}{
		{havenv1.RunState_RUN_STATE_RUNNING, 1}, {havenv1.RunState_RUN_STATE_RUNNING, 3},
		{havenv1.RunState_RUN_STATE_LINKING, 3}, {havenv1.RunState_RUN_STATE_RELEASED, 3},
	} {
		if err := send(uint64(2+i), ev.st, ev.answered); err != nil {
			return err
		}
	}
	return nil
}

// serveDouble serves srv on a loopback port and returns a Client talking
// to it without TLS; both close when t ends.
func serveDouble(t *testing.T, srv havenv1.CoordinatorServer) *Client {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := grpc.NewServer()
	havenv1.RegisterCoordinatorServer(s, srv)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c := &Client{conn: conn, coord: havenv1.NewCoordinatorClient(conn)}
	t.Cleanup(func() { c.Close() })
	return c
}

// Follow watches again when the coordinator says the watcher fell behind,
// reports every state on the way, returns the run as it ended, and draws
// a line per change (redrawn in place on a terminal).
func TestFollowWatchesAgainAfterFallingBehind(t *testing.T) {
	d := &fallBehindDouble{}
	c := serveDouble(t, d)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second) // a guard against a hang, not a timing assertion
	defer cancel()

	var plain, tty bytes.Buffer
	pp, tp := NewProgress(&plain, false), NewProgress(&tty, true)
	var states []string
	run, err := c.Follow(ctx, "run-A", func(r *havenv1.Run) {
		states = append(states, StateLabel(r.GetState()))
		pp.Update(r)
		tp.Update(r)
	})
	pp.Done()
	tp.Done()
	if err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	watches := d.watches
	d.mu.Unlock()
	if run.GetState() != havenv1.RunState_RUN_STATE_RELEASED || watches != 2 {
		t.Errorf("Follow ended with %v after %d watches; want RELEASED after 2", run.GetState(), watches)
	}
	if got := strings.Join(states, " "); got != "RUNNING RUNNING RUNNING LINKING RELEASED" {
		t.Errorf("states seen: %s", got)
	}
	want := "run-A RUNNING   sites 1/3 answered, population 25.0%\n" +
		"run-A RUNNING   sites 3/3 answered, population 75.0%\n" +
		"run-A LINKING   sites 3/3 answered, population 75.0%\n" +
		"run-A RELEASED  sites 3/3 answered, population 75.0%\n"
	if plain.String() != want {
		t.Errorf("progress:\n%s\nwant (the repeated snapshot not drawn again):\n%s", plain.String(), want)
	}
	if wantTTY := "\r" + strings.ReplaceAll(strings.TrimSuffix(want, "\n"), "\n", "\x1b[K\r") + "\x1b[K\n"; tty.String() != wantTTY {
		t.Errorf("terminal progress: %q", tty.String())
	}

	if _, err := c.Follow(ctx, "run-B", nil); status.Code(err) != codes.NotFound || !strings.HasPrefix(err.Error(), "not found: ") {
		t.Errorf("following an unknown run: %v", err)
	}
}
