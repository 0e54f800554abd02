// Package session is a node's outbound control link to the coordinator:
// one long-lived NodeLink.Connect stream that the node opens, registers
// on, keeps alive with heartbeats, and receives its tasks down (DESIGN §2;
// proto/haven/v1 "Nodes dial out").
//
// The shape follows Teleport's reverse-tunnel agent and Tailscale's
// control client. A Session has an explicit state (initial → connecting →
// connected → backoff → connecting …, and closed from any of them) whose
// transitions are checked; New starts
// nothing, Run does the work, Stop is idempotent. The reconnect loop is:
// dial, Register, serve until the link ends, wait a capped, jittered
// backoff that resets after a link that stayed healthy, repeat — and it
// honours its context at every wait.
//
// Task outcomes are the one thing the session must not lose. The runner
// hands each outcome to Report, which writes it to the journal first and
// then sends it if a link is up. An outcome leaves the journal only once
// the coordinator has certainly read it: it went in a Register that was
// answered, or a heartbeat sent after it was acknowledged (the stream is
// ordered). Everything else goes again in the next Register, which the
// coordinator de-duplicates by task id.
package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/havenhealth/haven/node/state"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/wire"
)

// State is where a session is in its life.
type State int

// Session states.
const (
	// StateInitial: made by New, Run not called yet.
	StateInitial State = iota
	// StateConnecting: dialling, registering.
	StateConnecting
	// StateConnected: registered; heartbeats flow and tasks may arrive.
	StateConnected
	// StateBackoff: the last attempt or link failed; waiting to retry.
	StateBackoff
	// StateClosed: stopped for good.
	StateClosed
)

func (s State) String() string {
	switch s {
	case StateInitial:
		return "initial"
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateBackoff:
		return "backoff"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// transitions lists the legal moves; anything else is a bug, reported as
// an error rather than acted on.
var transitions = map[State][]State{
	StateInitial:    {StateConnecting, StateClosed},
	StateConnecting: {StateConnected, StateBackoff, StateClosed},
	StateConnected:  {StateBackoff, StateClosed},
	StateBackoff:    {StateConnecting, StateClosed},
	StateClosed:     {},
}

func canMove(from, to State) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// Handler is the node behind the session.
type Handler interface {
	// Registration returns the node's facts for a Register: site, kind,
	// versions, bundle revision, connector, population, pause, key id.
	// The session fills in unreported_outcomes and running_task_ids.
	Registration(ctx context.Context) (*havenv1.Register, error)
	// Heartbeat returns the node's facts for a Heartbeat; the session
	// sets sent_at.
	Heartbeat() *havenv1.Heartbeat
	// Task is called, on the session's receiving goroutine, for every Task
	// the coordinator sends. It must return quickly: start the work and
	// return.
	Task(t *havenv1.Task)
	// Cancel is called for every CancelTask.
	Cancel(c *havenv1.CancelTask)
	// NetworkOptOuts is called, on the receiving goroutine, for every
	// NetworkOptOuts. An error ends the link: the node registers again,
	// naming the list version it holds, which resynchronises it.
	NetworkOptOuts(m *havenv1.NetworkOptOuts) error
}

// Journal keeps task outcomes until the coordinator has them
// (state.Journal).
type Journal interface {
	Running() []string
	Unreported() []*havenv1.TaskOutcome
	Finished(o *havenv1.TaskOutcome) error
	Confirmed(taskIDs ...string) error
}

// Dialer opens a NodeLink.Connect stream. The stream ends when ctx does.
type Dialer func(ctx context.Context) (havenv1.NodeLink_ConnectClient, error)

// Defaults for Config.
const (
	DefaultRegisterTimeout = 30 * time.Second
	DefaultHeartbeat       = 30 * time.Second
	// DefaultMissedHeartbeats is six intervals, as the coordinator's
	// nodelink.SilentIntervals and for the same reason: a dead
	// coordinator is found sooner by the connection's keepalive, and
	// three intervals mistook a loaded host for a dead one.
	DefaultMissedHeartbeats = 6
	DefaultHealthyAfter     = time.Minute
	DefaultBackoffMin       = time.Second
	DefaultBackoffMax       = 5 * time.Minute
)

// Config is what a Session needs. Dial, Handler and Journal are required.
type Config struct {
	Dial    Dialer
	Handler Handler
	Journal Journal

	// Logger receives link events; nil means slog.Default().
	Logger *slog.Logger
	// Clock is the time source; nil means the system clock.
	Clock Clock
	// Backoff paces reconnection; nil means NewExponential(1s, 5m).
	Backoff Backoff
	// RegisterTimeout bounds the wait for Registered after Register.
	RegisterTimeout time.Duration
	// Heartbeat is the interval used if the coordinator names none.
	Heartbeat time.Duration
	// MissedHeartbeats is how many intervals without a word from the
	// coordinator mark the link dead.
	MissedHeartbeats int
	// HealthyAfter is how long a link must stay up for the backoff to
	// start again from its minimum.
	HealthyAfter time.Duration
	// OnChange, if set, is called after every state change and link
	// event, with the session's Info. It must not block.
	OnChange func(Info)
}

func (c *Config) checkAndSetDefaults() error {
	if c.Dial == nil {
		return errors.New("session: no dialer")
	}
	if c.Handler == nil {
		return errors.New("session: no handler")
	}
	if c.Journal == nil {
		return errors.New("session: no journal")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = realClock{}
	}
	if c.Backoff == nil {
		c.Backoff = NewExponential(DefaultBackoffMin, DefaultBackoffMax)
	}
	if c.RegisterTimeout <= 0 {
		c.RegisterTimeout = DefaultRegisterTimeout
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.MissedHeartbeats <= 0 {
		c.MissedHeartbeats = DefaultMissedHeartbeats
	}
	if c.HealthyAfter <= 0 {
		c.HealthyAfter = DefaultHealthyAfter
	}
	return nil
}

// Info is a snapshot of a session, for the status file.
type Info struct {
	State     State
	Since     time.Time // when State was entered
	SessionID string    // the coordinator's id of the current link
	LastError string    // why the last link or attempt ended
	Connects  int       // links registered so far
}

// ErrNotConnected is returned by Send when no link is up.
var ErrNotConnected = errors.New("session: not connected to the coordinator")

// Session is a node's control link. Its methods are safe for concurrent
// use.
type Session struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	info    Info
	link    *link
	stopped chan struct{}
	stop    sync.Once
	running bool
}

// New returns a session in StateInitial. It starts no goroutines and opens
// no connection; Run does.
func New(cfg Config) (*Session, error) {
	if err := cfg.checkAndSetDefaults(); err != nil {
		return nil, err
	}
	return &Session{
		cfg:     cfg,
		log:     cfg.Logger,
		info:    Info{State: StateInitial, Since: cfg.Clock.Now()},
		stopped: make(chan struct{}),
	}, nil
}

// Info returns a snapshot of the session.
func (s *Session) Info() Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.info
}

// State returns the session's state.
func (s *Session) State() State { return s.Info().State }

// setState moves to next if that is a legal move, and reports whether it
// moved. A session that is closed stays closed.
func (s *Session) setState(next State, edit func(*Info)) bool {
	s.mu.Lock()
	cur := s.info.State
	if !canMove(cur, next) {
		s.mu.Unlock()
		if cur != StateClosed {
			s.log.Error("session: illegal state change refused", "from", cur.String(), "to", next.String())
		}
		return false
	}
	s.info.State = next
	s.info.Since = s.cfg.Clock.Now()
	if edit != nil {
		edit(&s.info)
	}
	info := s.info
	s.mu.Unlock()
	if s.cfg.OnChange != nil {
		s.cfg.OnChange(info)
	}
	return true
}

// Stop ends the session: Run returns soon after. It is safe to call more
// than once, and before or without Run.
func (s *Session) Stop() {
	s.stop.Do(func() { close(s.stopped) })
}

// Run connects and keeps the link up until ctx ends or Stop is called,
// then returns nil. It returns an error only if the session was already
// running or closed.
func (s *Session) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running || s.info.State != StateInitial {
		s.mu.Unlock()
		return fmt.Errorf("session: Run called in state %s", s.State())
	}
	s.running = true
	s.mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.stopped:
			cancel()
		case <-ctx.Done():
		}
	}()
	defer s.setState(StateClosed, nil)

	for {
		if !s.setState(StateConnecting, nil) {
			return nil
		}
		up, wait, err := s.connectAndServe(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if up >= s.cfg.HealthyAfter {
			s.cfg.Backoff.Reset()
		}
		if wait <= 0 {
			wait = s.cfg.Backoff.Next()
		}
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		s.setState(StateBackoff, func(i *Info) { i.LastError = msg; i.SessionID = "" })
		s.log.LogAttrs(ctx, slog.LevelWarn, "coordinator link down; will reconnect",
			slog.String("error", msg), slog.Duration("link_up", up), slog.Duration("retry_in", wait))
		select {
		case <-ctx.Done():
			return nil
		case <-s.cfg.Clock.After(wait):
		}
	}
}

// RejectedError is a Register the coordinator refused.
type RejectedError struct {
	Code    havenv1.RejectCode
	Message string
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("coordinator rejected the registration: %s: %s", e.Code, e.Message)
}

// connectAndServe makes one connection and serves it until it ends. It
// returns how long the link was up (zero if it never came up), a wait the
// coordinator asked for before reconnecting (zero: use the backoff), and
// why it ended.
func (s *Session) connectAndServe(parent context.Context) (up, wait time.Duration, err error) {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)

	// The Register is prepared before dialling: describing the site can
	// take minutes on a loaded host (the connector counts its tables), and
	// the coordinator gives a new link only seconds to register.
	reg, err := s.cfg.Handler.Registration(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("prepare register: %w", err)
	}
	stream, err := s.cfg.Dial(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("connect: %w", err)
	}
	reg.UnreportedOutcomes = s.cfg.Journal.Unreported()
	reg.RunningTaskIds = s.cfg.Journal.Running()
	if err := stream.Send(&havenv1.NodeMessage{Body: &havenv1.NodeMessage_Register{Register: reg}}); err != nil {
		return 0, 0, fmt.Errorf("send register: %w", streamErr(stream, err))
	}

	// The first answer must come within RegisterTimeout; the stream is
	// cancelled otherwise, which makes Recv return.
	timer := time.AfterFunc(s.cfg.RegisterTimeout, func() {
		cancel(fmt.Errorf("no answer to register within %v", s.cfg.RegisterTimeout))
	})
	first, err := stream.Recv()
	timer.Stop()
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && parent.Err() == nil {
			err = cause
		}
		return 0, 0, fmt.Errorf("await registered: %w", err)
	}
	var registered *havenv1.Registered
	switch b := first.GetBody().(type) {
	case *havenv1.CoordinatorMessage_Registered:
		registered = b.Registered
	case *havenv1.CoordinatorMessage_Rejected:
		rerr := &RejectedError{Code: b.Rejected.GetCode(), Message: b.Rejected.GetMessage()}
		s.log.LogAttrs(ctx, slog.LevelError, "coordinator rejected this node; fix the configuration",
			slog.String("code", rerr.Code.String()), slog.String("reason", rerr.Message))
		// Retrying soon changes nothing until someone fixes the node.
		return 0, DefaultBackoffMax, rerr
	case *havenv1.CoordinatorMessage_Goodbye:
		return 0, b.Goodbye.GetReconnectAfter().AsDuration(), fmt.Errorf("coordinator said goodbye: %s", b.Goodbye.GetReason())
	default:
		return 0, 0, fmt.Errorf("coordinator answered register with %T, want Registered", b)
	}

	// Everything the Register carried has now been read.
	ids := make([]string, len(reg.UnreportedOutcomes))
	for i, o := range reg.UnreportedOutcomes {
		ids[i] = state.OutcomeTaskID(o)
	}
	if err := s.cfg.Journal.Confirmed(ids...); err != nil {
		s.log.Error("task journal", "error", err)
	}

	interval := registered.GetHeartbeatInterval().AsDuration()
	if interval <= 0 {
		interval = s.cfg.Heartbeat
	}
	l := newLink(stream, registered.GetSessionId(), s.cfg.Clock.Now())
	s.mu.Lock()
	s.link = l
	s.mu.Unlock()
	// An outcome recorded while the Register was on its way is in neither
	// the Register nor, since there was no link to send it on, the stream:
	// send it now, or it would wait for the next reconnect while the run
	// waits for its deadline. (Any Report from here on sends its own.)
	for _, o := range s.cfg.Journal.Unreported() {
		if slices.Contains(ids, state.OutcomeTaskID(o)) {
			continue
		}
		if msg := wire.OutcomeMessage(o); msg != nil {
			if err := l.send(msg, state.OutcomeTaskID(o)); err != nil {
				s.log.Warn("outcome not sent; it goes in the next register", "task_id", state.OutcomeTaskID(o), "error", err)
			}
		}
	}
	upSince := s.cfg.Clock.Now()
	s.setState(StateConnected, func(i *Info) {
		i.SessionID = registered.GetSessionId()
		i.LastError = ""
		i.Connects++
	})
	s.log.LogAttrs(ctx, slog.LevelInfo, "registered with the coordinator",
		slog.String("session_id", registered.GetSessionId()),
		slog.Duration("heartbeat", interval),
		slog.Int("outcomes_reported", len(ids)),
		slog.Int("tasks_running", len(reg.RunningTaskIds)),
		slog.String("coordinator_bundle_revision", registered.GetAcceptedBundleRevision()))
	defer func() {
		s.mu.Lock()
		if s.link == l {
			s.link = nil
		}
		s.mu.Unlock()
		up = s.cfg.Clock.Now().Sub(upSince)
	}()

	go s.heartbeats(ctx, cancel, l, interval)
	wait, err = s.receive(ctx, l)
	if cause := context.Cause(ctx); cause != nil && parent.Err() == nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	return 0, wait, err
}

// receive reads the stream until it ends, handing tasks to the handler.
func (s *Session) receive(ctx context.Context, l *link) (wait time.Duration, err error) {
	for {
		msg, err := l.stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return 0, errors.New("coordinator closed the link")
			}
			return 0, fmt.Errorf("receive: %w", err)
		}
		l.handling(true, s.cfg.Clock.Now())
		switch b := msg.GetBody().(type) {
		case *havenv1.CoordinatorMessage_HeartbeatAck:
			s.confirm(l.acked(b.HeartbeatAck.GetHeartbeatSentAt()))
		case *havenv1.CoordinatorMessage_Task:
			s.cfg.Handler.Task(b.Task)
		case *havenv1.CoordinatorMessage_CancelTask:
			s.cfg.Handler.Cancel(b.CancelTask)
		case *havenv1.CoordinatorMessage_NetworkOptOuts:
			if err := s.cfg.Handler.NetworkOptOuts(b.NetworkOptOuts); err != nil {
				return 0, fmt.Errorf("network opt-out list: %w", err)
			}
		case *havenv1.CoordinatorMessage_Goodbye:
			s.log.LogAttrs(ctx, slog.LevelInfo, "coordinator said goodbye", slog.String("reason", b.Goodbye.GetReason()))
			return b.Goodbye.GetReconnectAfter().AsDuration(), fmt.Errorf("coordinator said goodbye: %s", b.Goodbye.GetReason())
		case *havenv1.CoordinatorMessage_Rejected:
			return DefaultBackoffMax, &RejectedError{Code: b.Rejected.GetCode(), Message: b.Rejected.GetMessage()}
		default:
			s.log.LogAttrs(ctx, slog.LevelWarn, "ignoring an unexpected message from the coordinator", slog.String("type", fmt.Sprintf("%T", b)))
		}
		// While this loop handled the message (applying a large opt-out
		// list on a busy host can take seconds) it read nothing, and the
		// coordinator's sends waited on it; that time is not the
		// coordinator's silence.
		l.handling(false, s.cfg.Clock.Now())
	}
}

// heartbeats sends a Heartbeat every interval and ends the link if the
// coordinator has said nothing for MissedHeartbeats intervals.
func (s *Session) heartbeats(ctx context.Context, cancel context.CancelCauseFunc, l *link, interval time.Duration) {
	dead := time.Duration(s.cfg.MissedHeartbeats) * interval
	last := s.cfg.Clock.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.cfg.Clock.After(interval):
		}
		now := s.cfg.Clock.Now()
		if starved(now, last, interval) {
			// This tick came very late: the node itself was starved of
			// CPU (a loaded host), and could not have heard the
			// coordinator or answered it either. Judge silence from now.
			s.log.LogAttrs(ctx, slog.LevelWarn, "heartbeat late; the node was starved of CPU",
				slog.Duration("late_by", now.Sub(last)-interval))
			l.heard(now)
		}
		last = now
		if quiet := l.quiet(now); quiet > dead {
			cancel(fmt.Errorf("no word from the coordinator for %v", quiet.Round(time.Millisecond)))
			return
		}
		hb := s.cfg.Handler.Heartbeat()
		if hb == nil {
			hb = &havenv1.Heartbeat{}
		}
		hb.SentAt = timestamppb.New(now)
		if err := l.sendHeartbeat(hb); err != nil {
			cancel(fmt.Errorf("send heartbeat: %w", err))
			return
		}
	}
}

// starved reports whether a heartbeat tick at now, the one after last,
// came so late (over two intervals apart, and over a second late) that
// the node itself was not running: on a loaded host a process can go
// without CPU for seconds, and silence it could not have heard is not the
// coordinator's. The second keeps scheduling noise at very short
// intervals from counting.
func starved(now, last time.Time, interval time.Duration) bool {
	gap := now.Sub(last)
	return gap > 2*interval && gap-interval > time.Second
}

// Send sends msg on the current link. It returns ErrNotConnected if no
// link is up; it does not queue. Progress and acceptance messages are
// advisory, so that is enough for them; outcomes go through Report.
func (s *Session) Send(msg *havenv1.NodeMessage) error {
	s.mu.Lock()
	l := s.link
	s.mu.Unlock()
	if l == nil {
		return ErrNotConnected
	}
	return l.send(msg, "")
}

// Report records a task's outcome in the journal and sends it if a link is
// up. The outcome stays in the journal, and is repeated in every Register,
// until the coordinator has certainly read it. Only a journal failure is
// an error: a lost link is what the journal is for.
func (s *Session) Report(o *havenv1.TaskOutcome) error {
	msg := wire.OutcomeMessage(o)
	if msg == nil {
		return errors.New("session: report of an empty outcome")
	}
	if err := s.cfg.Journal.Finished(o); err != nil {
		return err
	}
	s.mu.Lock()
	l := s.link
	s.mu.Unlock()
	if l == nil {
		return nil
	}
	if err := l.send(msg, state.OutcomeTaskID(o)); err != nil {
		s.log.Warn("outcome not sent; it goes in the next register", "task_id", state.OutcomeTaskID(o), "error", err)
	}
	return nil
}

func (s *Session) confirm(ids []string) {
	if len(ids) == 0 {
		return
	}
	if err := s.cfg.Journal.Confirmed(ids...); err != nil {
		s.log.Error("task journal", "error", err)
	}
}

// streamErr prefers the status the stream ended with over a Send error,
// which is only io.EOF when the server has ended the call.
func streamErr(stream havenv1.NodeLink_ConnectClient, err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	if _, rerr := stream.Recv(); rerr != nil && !errors.Is(rerr, io.EOF) {
		return rerr
	}
	return err
}

// IsUnavailable reports whether err means the coordinator could not be
// reached, as opposed to refusing or failing a call.
func IsUnavailable(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.Unavailable
}
