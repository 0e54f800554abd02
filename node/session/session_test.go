package session

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/havenhealth/haven/internal/testutil"
	"github.com/havenhealth/haven/node/state"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// coordinatorDouble is a test double of the coordinator's side of
// NodeLink, served in process over bufconn. It records what nodes send
// and lets a test send tasks, drop links and refuse connections.
type coordinatorDouble struct {
	havenv1.UnimplementedNodeLinkServer
	heartbeat time.Duration

	mu        sync.Mutex
	registers []*havenv1.Register
	messages  []*havenv1.NodeMessage
	streams   []chan *havenv1.CoordinatorMessage // outbox of each live link
	drops     []chan struct{}
	refuse    error // answer Connect with this error
	reject    *havenv1.Rejected
	silent    bool // register, then never answer again
	noAcks    bool
	hold      chan struct{} // if set, Registered waits until it closes
}

func (c *coordinatorDouble) Connect(stream grpc.BidiStreamingServer[havenv1.NodeMessage, havenv1.CoordinatorMessage]) error {
	c.mu.Lock()
	refuse, reject, silent := c.refuse, c.reject, c.silent
	c.mu.Unlock()
	if refuse != nil {
		return refuse
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.registers = append(c.registers, first.GetRegister())
	hold := c.hold
	c.mu.Unlock()
	if hold != nil {
		<-hold
	}
	if reject != nil {
		return stream.Send(&havenv1.CoordinatorMessage{Body: &havenv1.CoordinatorMessage_Rejected{Rejected: reject}})
	}
	// The link's outbox exists before Registered goes: a test that sees
	// the session connected may send on it at once.
	out := make(chan *havenv1.CoordinatorMessage, 16)
	drop := make(chan struct{})
	c.mu.Lock()
	c.streams = append(c.streams, out)
	c.drops = append(c.drops, drop)
	c.mu.Unlock()
	if err := stream.Send(&havenv1.CoordinatorMessage{Body: &havenv1.CoordinatorMessage_Registered{Registered: &havenv1.Registered{
		SessionId: "s" + time.Now().Format("150405.000000"), HeartbeatInterval: durationpb.New(c.heartbeat),
	}}}); err != nil {
		return err
	}
	in := make(chan *havenv1.NodeMessage)
	errc := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			in <- m
		}
	}()
	for {
		select {
		case <-drop:
			return status.Error(codes.Unavailable, "link dropped by the test")
		case err := <-errc:
			return err
		case m := <-out:
			if err := stream.Send(m); err != nil {
				return err
			}
		case m := <-in:
			c.mu.Lock()
			c.messages = append(c.messages, m)
			noAcks := c.noAcks
			c.mu.Unlock()
			if hb := m.GetHeartbeat(); hb != nil && !silent && !noAcks {
				stream.Send(&havenv1.CoordinatorMessage{Body: &havenv1.CoordinatorMessage_HeartbeatAck{HeartbeatAck: &havenv1.HeartbeatAck{
					ServerTime: timestamppb.Now(), HeartbeatSentAt: hb.GetSentAt()}}})
			}
		}
	}
}

func (c *coordinatorDouble) set(f func(c *coordinatorDouble)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f(c)
}

func (c *coordinatorDouble) registered() []*havenv1.Register {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.registers)
}

func (c *coordinatorDouble) received() []*havenv1.NodeMessage {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.messages)
}

// sendLatest sends m down the newest link.
func (c *coordinatorDouble) sendLatest(m *havenv1.CoordinatorMessage) {
	c.mu.Lock()
	out := c.streams[len(c.streams)-1]
	c.mu.Unlock()
	out <- m
}

// dropAll ends every live link.
func (c *coordinatorDouble) dropAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range c.drops {
		select {
		case <-d:
		default:
			close(d)
		}
	}
}

// nodeDouble is the node behind the session: it records tasks and cancels.
type nodeDouble struct {
	mu      sync.Mutex
	tasks   []string
	cancels []string
	lists   []*havenv1.NetworkOptOuts
}

func (n *nodeDouble) Registration(context.Context) (*havenv1.Register, error) {
	return &havenv1.Register{SiteOds: "G80001", SiteKind: havenv1.SiteKind_SITE_KIND_GP}, nil
}
func (n *nodeDouble) Heartbeat() *havenv1.Heartbeat { return &havenv1.Heartbeat{BundleRevision: "r1"} }
func (n *nodeDouble) Task(t *havenv1.Task) {
	n.mu.Lock()
	n.tasks = append(n.tasks, t.GetTaskId())
	n.mu.Unlock()
}
func (n *nodeDouble) Cancel(c *havenv1.CancelTask) {
	n.mu.Lock()
	n.cancels = append(n.cancels, c.GetTaskId())
	n.mu.Unlock()
}
func (n *nodeDouble) NetworkOptOuts(m *havenv1.NetworkOptOuts) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.lists = append(n.lists, m)
	if m.GetBase().GetEpoch() == "gap" {
		return errors.New("gap")
	}
	return nil
}
func (n *nodeDouble) seen() ([]string, []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.tasks), slices.Clone(n.cancels)
}

type harness struct {
	coord   *coordinatorDouble
	node    *nodeDouble
	journal *state.Journal
	sess    *Session
	done    chan error
	cancel  context.CancelFunc
	changes chan Info
}

func start(t *testing.T, edit func(*Config)) *harness {
	t.Helper()
	coord := &coordinatorDouble{heartbeat: 5 * time.Millisecond}
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	havenv1.RegisterNodeLinkServer(srv, coord)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	j, _, err := state.OpenJournal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{coord: coord, node: &nodeDouble{}, journal: j, done: make(chan error, 1), changes: make(chan Info, 256)}
	client := havenv1.NewNodeLinkClient(cc)
	cfg := Config{
		Dial:    func(ctx context.Context) (havenv1.NodeLink_ConnectClient, error) { return client.Connect(ctx) },
		Handler: h.node,
		Journal: j,
		Logger:  slog.New(slog.DiscardHandler),
		Backoff: Constant(time.Millisecond),
		// Heartbeats are fast; a slow test machine must not be taken for
		// a dead coordinator except where a test says so.
		MissedHeartbeats: 1000,
		OnChange: func(i Info) {
			select {
			case h.changes <- i:
			default:
			}
		},
	}
	if edit != nil {
		edit(&cfg)
	}
	h.sess, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := h.sess.State(); got != StateInitial {
		t.Fatalf("New: state %v, want initial", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.sess.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-h.done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if got := h.sess.State(); got != StateClosed {
			t.Errorf("after Run: state %v, want closed", got)
		}
	})
	return h
}

func countHeartbeats(msgs []*havenv1.NodeMessage) int {
	n := 0
	for _, m := range msgs {
		if m.GetHeartbeat() != nil {
			n++
		}
	}
	return n
}

func TestRegisterHeartbeatAndTasks(t *testing.T) {
	h := start(t, nil)
	testutil.Eventually(t, "connected", func() bool { return h.sess.State() == StateConnected })
	regs := h.coord.registered()
	if len(regs) != 1 || regs[0].GetSiteOds() != "G80001" {
		t.Fatalf("registers = %v", regs)
	}
	testutil.Eventually(t, "three heartbeats", func() bool { return countHeartbeats(h.coord.received()) >= 3 })
	for _, m := range h.coord.received() {
		if hb := m.GetHeartbeat(); hb != nil && (hb.GetSentAt() == nil || hb.GetBundleRevision() != "r1") {
			t.Errorf("heartbeat %v lacks the node's facts", hb)
		}
	}
	h.coord.sendLatest(&havenv1.CoordinatorMessage{Body: &havenv1.CoordinatorMessage_Task{Task: &havenv1.Task{TaskId: "t1"}}})
	h.coord.sendLatest(&havenv1.CoordinatorMessage{Body: &havenv1.CoordinatorMessage_CancelTask{CancelTask: &havenv1.CancelTask{TaskId: "t1"}}})
	testutil.Eventually(t, "task and cancel handed over", func() bool {
		tasks, cancels := h.node.seen()
		return slices.Equal(tasks, []string{"t1"}) && slices.Equal(cancels, []string{"t1"})
	})
	if err := h.sess.Send(&havenv1.NodeMessage{Body: &havenv1.NodeMessage_TaskProgress{TaskProgress: &havenv1.TaskProgress{TaskId: "t1"}}}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "progress received", func() bool {
		return slices.ContainsFunc(h.coord.received(), func(m *havenv1.NodeMessage) bool { return m.GetTaskProgress() != nil })
	})
	if err := h.sess.Run(context.Background()); err == nil {
		t.Error("a second Run was allowed")
	}
}

func TestReconnectReportsOutcomes(t *testing.T) {
	// Patient with silence: a reconnect of its own on a loaded host, in
	// flight when the test starts refusing, would register before the
	// outcome is recorded. The test drops the link itself.
	h := start(t, func(c *Config) { c.MissedHeartbeats = 1 << 20 })
	testutil.Eventually(t, "connected", func() bool { return h.sess.State() == StateConnected })

	// The link drops while a task runs, and the coordinator cannot be
	// reached for a while.
	h.journal.Started("t-running", "r1")
	h.journal.Started("t-done", "r2")
	h.coord.set(func(c *coordinatorDouble) { c.refuse = status.Error(codes.Unavailable, "down") })
	before := len(h.coord.registered())
	h.coord.dropAll()
	testutil.Eventually(t, "link down", func() bool { return h.sess.State() != StateConnected })
	if err := h.sess.Send(&havenv1.NodeMessage{}); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Send with no link: %v, want ErrNotConnected", err)
	}
	done := &havenv1.TaskOutcome{Outcome: &havenv1.TaskOutcome_Done{Done: &havenv1.TaskDone{TaskId: "t-done", Rows: 9}}}
	if err := h.sess.Report(done); err != nil {
		t.Fatal(err)
	}
	// Several failed attempts go by; the session keeps trying.
	testutil.Eventually(t, "retries", func() bool {
		n := 0
		for {
			select {
			case i := <-h.changes:
				if i.State == StateConnecting {
					n++
				}
				if n >= 3 {
					return true
				}
				continue
			default:
			}
			return false
		}
	})
	h.coord.set(func(c *coordinatorDouble) { c.refuse = nil })
	testutil.Eventually(t, "re-registered", func() bool { return len(h.coord.registered()) > before })
	reg := h.coord.registered()[before]
	if got := reg.GetRunningTaskIds(); !slices.Equal(got, []string{"t-running"}) {
		t.Errorf("running_task_ids = %v, want [t-running]", got)
	}
	if got := reg.GetUnreportedOutcomes(); len(got) != 1 || got[0].GetDone().GetTaskId() != "t-done" || got[0].GetDone().GetRows() != 9 {
		t.Errorf("unreported_outcomes = %v", got)
	}
	testutil.Eventually(t, "outcome confirmed by the answered register", func() bool { return len(h.journal.Unreported()) == 0 })
}

func TestLiveOutcomeConfirmedByHeartbeatAck(t *testing.T) {
	// Patient with silence, so the link is not dropped (and the outcome
	// confirmed by the next Register) while acks are held back.
	h := start(t, func(c *Config) { c.MissedHeartbeats = 1 << 20 })
	testutil.Eventually(t, "connected", func() bool { return h.sess.State() == StateConnected })
	h.coord.set(func(c *coordinatorDouble) { c.noAcks = true })
	failed := &havenv1.TaskOutcome{Outcome: &havenv1.TaskOutcome_Failed{Failed: &havenv1.TaskFailed{TaskId: "t9", Code: havenv1.TaskErrorCode_TASK_ERROR_CODE_CONNECTOR}}}
	if err := h.sess.Report(failed); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "TaskFailed sent live", func() bool {
		return slices.ContainsFunc(h.coord.received(), func(m *havenv1.NodeMessage) bool { return m.GetTaskFailed().GetTaskId() == "t9" })
	})
	// Without an ack the outcome is still in doubt…
	n := countHeartbeats(h.coord.received())
	testutil.Eventually(t, "more heartbeats", func() bool { return countHeartbeats(h.coord.received()) >= n+2 })
	if len(h.journal.Unreported()) != 1 || len(h.coord.registered()) != 1 {
		t.Fatal("an outcome was confirmed without an ack")
	}
	// …and the first ack of a later heartbeat confirms it.
	h.coord.set(func(c *coordinatorDouble) { c.noAcks = false })
	testutil.Eventually(t, "confirmed", func() bool { return len(h.journal.Unreported()) == 0 })
}

// An outcome recorded while the Register is on its way is in neither the
// Register nor a live link; it must go out as soon as the link is up, not
// wait for the next reconnect (the run would wait for its deadline).
func TestOutcomeDuringRegistrationSent(t *testing.T) {
	hold := make(chan struct{})
	h := start(t, func(c *Config) {})
	testutil.Eventually(t, "connected", func() bool { return h.sess.State() == StateConnected })
	h.coord.set(func(c *coordinatorDouble) { c.hold = hold })
	h.coord.dropAll()
	testutil.Eventually(t, "second register received", func() bool { return len(h.coord.registered()) == 2 })
	done := &havenv1.TaskOutcome{Outcome: &havenv1.TaskOutcome_Done{Done: &havenv1.TaskDone{TaskId: "t-late", Rows: 3}}}
	if err := h.sess.Report(done); err != nil {
		t.Fatal(err)
	}
	close(hold)
	testutil.Eventually(t, "the outcome sent on the new link", func() bool {
		return slices.ContainsFunc(h.coord.received(), func(m *havenv1.NodeMessage) bool { return m.GetTaskDone().GetTaskId() == "t-late" })
	})
	if n := len(h.coord.registered()); n != 2 {
		t.Errorf("%d registers; the outcome should have gone on the second link", n)
	}
	testutil.Eventually(t, "confirmed by a heartbeat ack", func() bool { return len(h.journal.Unreported()) == 0 })
}

func TestSilentCoordinatorIsDropped(t *testing.T) {
	h := start(t, func(c *Config) { c.MissedHeartbeats = 2 })
	h.coord.set(func(c *coordinatorDouble) { c.silent = true })
	// The double sees the second Register before the session counts the
	// link as connected (it waits for the registration's answer), so wait
	// for both.
	testutil.Eventually(t, "reconnected after silence", func() bool {
		return len(h.coord.registered()) >= 2 && h.sess.Info().Connects >= 2
	})
}

func TestRejectedWaitsLong(t *testing.T) {
	var waits []time.Duration
	var mu sync.Mutex
	clock := &recordingClock{record: func(d time.Duration) {
		mu.Lock()
		waits = append(waits, d)
		mu.Unlock()
	}}
	h := start(t, func(c *Config) { c.Clock = clock })
	testutil.Eventually(t, "connected", func() bool { return h.sess.State() == StateConnected })
	h.coord.set(func(c *coordinatorDouble) {
		c.reject = &havenv1.Rejected{Code: havenv1.RejectCode_REJECT_CODE_IDENTITY_MISMATCH, Message: "certificate names B82005"}
	})
	h.coord.dropAll()
	testutil.Eventually(t, "rejected", func() bool {
		i := h.sess.Info()
		return i.State == StateBackoff && i.LastError != "" && len(h.coord.registered()) >= 2
	})
	if got := h.sess.Info().LastError; !strings.Contains(got, "REJECT_CODE_IDENTITY_MISMATCH") {
		t.Errorf("LastError = %q", got)
	}
	testutil.Eventually(t, "a long wait asked for", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(waits, DefaultBackoffMax)
	})
}

// recordingClock is the real clock, except that backoff waits (those of
// a second or more) are recorded and cut to a millisecond.
type recordingClock struct{ record func(time.Duration) }

func (recordingClock) Now() time.Time { return time.Now() }
func (c *recordingClock) After(d time.Duration) <-chan time.Time {
	if d >= time.Second {
		c.record(d)
		d = time.Millisecond
	}
	return time.After(d)
}

func TestStopIsIdempotentAndEndsRun(t *testing.T) {
	h := start(t, nil)
	testutil.Eventually(t, "connected", func() bool { return h.sess.State() == StateConnected })
	h.sess.Stop()
	h.sess.Stop()
	select {
	case err := <-h.done:
		h.done <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Stop")
	}
}

func TestNewChecksConfig(t *testing.T) {
	j, _, _ := state.OpenJournal(t.TempDir())
	dial := func(context.Context) (havenv1.NodeLink_ConnectClient, error) { return nil, io.EOF }
	for name, cfg := range map[string]Config{
		"no dialer":  {Handler: &nodeDouble{}, Journal: j},
		"no handler": {Dial: dial, Journal: j},
		"no journal": {Dial: dial, Handler: &nodeDouble{}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted the config", name)
		}
	}
}

func TestStateTransitions(t *testing.T) {
	legal := [][2]State{
		{StateInitial, StateConnecting}, {StateConnecting, StateConnected}, {StateConnected, StateBackoff},
		{StateBackoff, StateConnecting}, {StateConnecting, StateBackoff}, {StateConnected, StateClosed},
	}
	for _, m := range legal {
		if !canMove(m[0], m[1]) {
			t.Errorf("%v → %v refused", m[0], m[1])
		}
	}
	for _, m := range [][2]State{{StateInitial, StateConnected}, {StateClosed, StateConnecting}, {StateBackoff, StateConnected}} {
		if canMove(m[0], m[1]) {
			t.Errorf("%v → %v allowed", m[0], m[1])
		}
	}
}

func TestExponentialBackoff(t *testing.T) {
	b := NewExponential(100*time.Millisecond, time.Second)
	b.rand = func() float64 { return 0 } // no jitter: exact waits
	var got []time.Duration
	for range 6 {
		got = append(got, b.Next())
	}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i := range want {
		want[i] *= time.Millisecond
	}
	if !slices.Equal(got, want) {
		t.Errorf("waits %v, want %v", got, want)
	}
	b.Reset()
	if d := b.Next(); d != 100*time.Millisecond {
		t.Errorf("after Reset: %v", d)
	}
	b.rand = func() float64 { return 0.999 }
	for range 10 {
		if d := b.Next(); d < 50*time.Millisecond || d > time.Second {
			t.Errorf("jittered wait %v outside [min/2, max]", d)
		}
	}
}

// A network opt-out update reaches the handler; one it refuses (a gap in
// the versions) ends the link, and the node registers again, which is how
// it resynchronises.
func TestNetworkOptOutsHandedOverAndGapReconnects(t *testing.T) {
	h := start(t, nil)
	testutil.Eventually(t, "connected", func() bool { return h.sess.State() == StateConnected })
	h.coord.sendLatest(&havenv1.CoordinatorMessage{Body: &havenv1.CoordinatorMessage_NetworkOptOuts{NetworkOptOuts: &havenv1.NetworkOptOuts{
		Version: &havenv1.NetworkOptOutVersion{Epoch: "e", Seq: 1}}}})
	testutil.Eventually(t, "update handed over", func() bool {
		h.node.mu.Lock()
		defer h.node.mu.Unlock()
		return len(h.node.lists) == 1
	})
	if n := len(h.coord.registered()); n != 1 {
		t.Fatalf("%d registers after a good update, want 1", n)
	}
	h.coord.sendLatest(&havenv1.CoordinatorMessage{Body: &havenv1.CoordinatorMessage_NetworkOptOuts{NetworkOptOuts: &havenv1.NetworkOptOuts{
		Base: &havenv1.NetworkOptOutVersion{Epoch: "gap", Seq: 5}, Version: &havenv1.NetworkOptOutVersion{Epoch: "gap", Seq: 6}}}})
	testutil.Eventually(t, "registered again after a gap", func() bool { return len(h.coord.registered()) >= 2 })
	if err := h.sess.Info().LastError; err != "" && !strings.Contains(err, "network opt-out list") {
		t.Errorf("last error %q", err)
	}
}

func TestStarved(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		interval, gap time.Duration
		want          bool
	}{
		{5 * time.Second, 5 * time.Second, false},            // on time
		{5 * time.Second, 9 * time.Second, false},            // a little late
		{5 * time.Second, 10 * time.Second, false},           // two intervals: still the node's to judge
		{5 * time.Second, 10*time.Second + 1, true},          // later than that: the node was not running
		{5 * time.Second, time.Minute, true},                 // a process stopped for a minute
		{5 * time.Millisecond, 50 * time.Millisecond, false}, // scheduling noise at a test's interval
		{5 * time.Millisecond, 2 * time.Second, true},        // a real stall at a test's interval
	} {
		if got := starved(t0.Add(tc.gap), t0, tc.interval); got != tc.want {
			t.Errorf("tick %v after the last, interval %v: starved %v, want %v", tc.gap, tc.interval, got, tc.want)
		}
	}
}

// Silence counts only while the receive loop is free to read: time spent
// handling a message is not the coordinator's.
func TestLinkQuiet(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	l := newLink(nil, "s", t0)
	if q := l.quiet(t0.Add(20 * time.Second)); q != 20*time.Second {
		t.Errorf("quiet after 20s with nothing heard: %v", q)
	}
	l.handling(true, t0.Add(21*time.Second))
	if q := l.quiet(t0.Add(time.Minute)); q != 0 {
		t.Errorf("quiet while handling a message: %v, want 0", q)
	}
	l.handling(false, t0.Add(70*time.Second))
	if q := l.quiet(t0.Add(75 * time.Second)); q != 5*time.Second {
		t.Errorf("quiet 5s after handling ended: %v", q)
	}
}
