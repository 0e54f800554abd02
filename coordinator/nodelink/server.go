// Package nodelink serves NodeLink.Connect, the one long-lived stream each
// node opens to the coordinator, and keeps the registry of live links.
//
// A node is the site its client certificate names: Register must repeat
// that ODS code or the link is rejected (REJECT_CODE_IDENTITY_MISMATCH). A
// newer link from a site replaces the older one, which is sent Goodbye and
// closed. A link that stays silent for SilentIntervals heartbeat intervals
// is dropped. Messages about tasks, and the outcomes a node reports in
// Register after a dropped link, go to a Handler (the dispatcher), which
// treats them idempotently by task id; everything the coordinator sends a
// site goes through Send.
//
// Each link has one goroutine reading and one writing, so a slow node
// never blocks the coordinator: Send queues, and fails when the queue is
// full.
package nodelink

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/audit"
	"github.com/havenhealth/haven/coordinator/authn"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/wire"
)

// SiteInfo is what the coordinator knows of a site from its node: what the
// node said in Register and since, and whether its link is up.
type SiteInfo struct {
	ODS        string
	Kind       cdm.SiteKind
	Population int64
	// Activity is a trust's hospital activity records (Register's
	// activity_records); zero for a practice.
	Activity       int64
	NodeVersion    string
	CDMVersion     uint32
	BundleRevision string
	LinkageKeyID   string
	Dialect        string
	Paused         bool
	PauseReason    string
	Connected      bool
	SessionID      string
	ConnectedAt    time.Time
	LastSeen       time.Time
}

// Handler receives what nodes say about tasks. Calls for one site come
// from one goroutine, in the order the node sent them.
type Handler interface {
	// TaskMessage handles a NodeMessage whose body is TaskAccepted,
	// TaskRefused, TaskProgress, TaskDone or TaskFailed. Outcomes a node
	// reports in Register arrive here too, before NodeConnected.
	TaskMessage(ctx context.Context, ods string, m *havenv1.NodeMessage)
	// NodeConnected is called when a site's link is up, with the tasks the
	// node says it is still running.
	NodeConnected(ctx context.Context, site SiteInfo, running []string)
	// NodeDisconnected is called when a site's link goes down.
	NodeDisconnected(ctx context.Context, ods string)
}

// OptOutRelay relays the network type 1 opt-out list (*optoutrelay.Relay).
type OptOutRelay interface {
	// Publish replaces a practice's list and says whether it changed.
	Publish(ctx context.Context, ods string, p *havenv1.OptOutPublish) (bool, error)
	// Sync returns what a node holding version known must be sent; the
	// last message's version is the list's version now.
	Sync(known *havenv1.NetworkOptOutVersion) []*havenv1.CoordinatorMessage
	// Version is the list's version now.
	Version() *havenv1.NetworkOptOutVersion
}

// Auditor appends to the audit log.
type Auditor interface {
	Append(ctx context.Context, r audit.Record) (audit.Entry, error)
}

// SilentIntervals is how many heartbeat intervals a link may stay silent
// before it is dropped. A dead peer is found sooner by the transport: the
// node's keepalive pings, and the coordinator's, close a connection whose
// peer does not answer within 20 s, and a node that exits resets its
// connection at once. This limit only has to find a link wedged at the node
// while its process still answers pings, and a short one mistook loaded
// hosts for dead ones: at ICB scale on a loaded 2-core host, three
// intervals (15 s) dropped links 856 times in 20 minutes.
const SilentIntervals = 6

// Config is what a Server needs.
type Config struct {
	Handler Handler
	Audit   Auditor
	Logger  *slog.Logger
	// HeartbeatInterval is how often nodes send Heartbeat; a link silent
	// for SilentIntervals intervals is dropped.
	HeartbeatInterval time.Duration
	// Revision returns the governance bundle revision the coordinator runs.
	Revision func() string
	// Members, when not nil, are the only sites allowed to connect, with
	// their kinds.
	Members map[string]cdm.SiteKind
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// QueueLength is how many messages may wait to be sent on one link;
	// zero means 1024.
	QueueLength int
	// OptOuts relays the network type 1 opt-out list; nil relays none,
	// and nodes, which run no task without it, stay idle.
	OptOuts OptOutRelay
	// OptOutInterval is how long a link waits, after sending the list's
	// changes, before it sends the next ones (changes accepted meanwhile
	// go together; a task always goes after every change accepted before
	// it); zero means 2s.
	OptOutInterval time.Duration
}

// Server serves NodeLink and holds the registry of sites.
type Server struct {
	havenv1.UnimplementedNodeLinkServer
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	sessions map[string]*session // live links by ODS code
	sites    map[string]*SiteInfo
	closed   bool
	closing  string
	active   sync.WaitGroup // Connect calls in progress
}

// New returns a server. It starts no goroutines.
func New(cfg Config) (*Server, error) {
	if cfg.Handler == nil || cfg.Audit == nil {
		return nil, errors.New("nodelink: a handler and an audit log are required")
	}
	if cfg.HeartbeatInterval <= 0 {
		return nil, errors.New("nodelink: the heartbeat interval must be positive")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Revision == nil {
		cfg.Revision = func() string { return "" }
	}
	if cfg.QueueLength <= 0 {
		cfg.QueueLength = 1024
	}
	if cfg.OptOutInterval <= 0 {
		cfg.OptOutInterval = 2 * time.Second
	}
	return &Server{cfg: cfg, log: cfg.Logger, sessions: map[string]*session{}, sites: map[string]*SiteInfo{}}, nil
}

// Sites returns every site that has registered since the coordinator
// started, connected or not, ordered by ODS code.
func (s *Server) Sites() []SiteInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]SiteInfo, 0, len(s.sites))
	for _, si := range s.sites {
		out = append(out, *si)
	}
	slices.SortFunc(out, func(a, b SiteInfo) int { return cmp.Compare(a.ODS, b.ODS) })
	return out
}

// Site returns what is known of one site.
func (s *Server) Site(ods string) (SiteInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	si, ok := s.sites[ods]
	if !ok {
		return SiteInfo{}, false
	}
	return *si, true
}

// ErrNotConnected is returned by Send when a site has no live link.
var ErrNotConnected = errors.New("site is not connected")

// Send queues m on the site's link. It never blocks.
func (s *Server) Send(ods string, m *havenv1.CoordinatorMessage) error {
	s.mu.Lock()
	ss := s.sessions[ods]
	s.mu.Unlock()
	if ss == nil {
		return fmt.Errorf("send to %s: %w", ods, ErrNotConnected)
	}
	return ss.send(m)
}

// Close says Goodbye to every node with reason, ends their links and
// refuses new ones, then waits until every Connect call has returned or ctx
// ends.
func (s *Server) Close(ctx context.Context, reason string) error {
	s.mu.Lock()
	s.closed, s.closing = true, reason
	for _, ss := range s.sessions {
		ss.end(reason, true)
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.active.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("close node links: %w", ctx.Err())
	}
}

// registerTimeout is how long a new link may take to send Register.
func (s *Server) registerTimeout() time.Duration {
	return max(3*s.cfg.HeartbeatInterval, 10*time.Second)
}

type received struct {
	m   *havenv1.NodeMessage
	err error
}

// Connect implements havenv1.NodeLinkServer.
func (s *Server) Connect(stream havenv1.NodeLink_ConnectServer) error {
	ctx := stream.Context()
	p, ok := authn.FromContext(ctx)
	if !ok || p.Kind != authn.KindNode {
		return status.Error(codes.PermissionDenied, "NodeLink is for nodes with a network node certificate")
	}
	s.mu.Lock()
	if s.closed {
		reason := s.closing
		s.mu.Unlock()
		return status.Errorf(codes.Unavailable, "coordinator is closing: %s", reason)
	}
	s.active.Add(1)
	s.mu.Unlock()
	defer s.active.Done()

	// One reader for the life of the stream; it stops when the stream
	// ends, which happens when this handler returns.
	recv := make(chan received, 16)
	go func() {
		for {
			m, err := stream.Recv()
			select {
			case recv <- received{m, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()

	var first received
	select {
	case first = <-recv:
	case <-time.After(s.registerTimeout()):
		return s.reject(ctx, stream, p.ODS, havenv1.RejectCode_REJECT_CODE_INVALID_REGISTER,
			fmt.Sprintf("no Register within %v of connecting", s.registerTimeout()))
	case <-ctx.Done():
		return nil
	}
	if first.err != nil {
		if errors.Is(first.err, io.EOF) {
			return nil
		}
		return first.err
	}
	reg := first.m.GetRegister()
	if code, msg := s.checkRegister(p.ODS, reg); code != havenv1.RejectCode_REJECT_CODE_UNSPECIFIED {
		return s.reject(ctx, stream, p.ODS, code, msg)
	}
	return s.serve(ctx, stream, reg, recv)
}

// checkRegister returns why a Register is refused, or REJECT_CODE_UNSPECIFIED.
func (s *Server) checkRegister(certODS string, reg *havenv1.Register) (havenv1.RejectCode, string) {
	switch {
	case reg == nil:
		return havenv1.RejectCode_REJECT_CODE_INVALID_REGISTER, "the first message on a link must be Register"
	case reg.GetSiteOds() != certODS:
		return havenv1.RejectCode_REJECT_CODE_IDENTITY_MISMATCH,
			fmt.Sprintf("certificate names site %q, Register says %q", certODS, reg.GetSiteOds())
	case reg.GetSiteKind() == havenv1.SiteKind_SITE_KIND_UNSPECIFIED:
		return havenv1.RejectCode_REJECT_CODE_INVALID_REGISTER, "Register has no site_kind"
	case reg.GetRegisteredPopulation() < 0:
		return havenv1.RejectCode_REJECT_CODE_INVALID_REGISTER, "registered_population is negative"
	case reg.GetActivityRecords() < 0:
		return havenv1.RejectCode_REJECT_CODE_INVALID_REGISTER, "activity_records is negative"
	case reg.GetCdmVersion() != 0 && reg.GetCdmVersion() != cdm.Version:
		return havenv1.RejectCode_REJECT_CODE_UNSUPPORTED_VERSION,
			fmt.Sprintf("the node reads CDM version %d; this coordinator plans for version %d", reg.GetCdmVersion(), cdm.Version)
	}
	kind, err := wire.ParseSiteKind(reg.GetSiteKind())
	if err != nil {
		return havenv1.RejectCode_REJECT_CODE_INVALID_REGISTER, fmt.Sprintf("unknown site_kind %v", reg.GetSiteKind())
	}
	if s.cfg.Members != nil {
		want, ok := s.cfg.Members[certODS]
		if !ok {
			return havenv1.RejectCode_REJECT_CODE_UNKNOWN_SITE, fmt.Sprintf("site %s is not a member of this network", certODS)
		}
		if want != kind {
			return havenv1.RejectCode_REJECT_CODE_INVALID_REGISTER,
				fmt.Sprintf("site %s is a %s site in the network's configuration; the node says %s", certODS, want, kind)
		}
	}
	return havenv1.RejectCode_REJECT_CODE_UNSPECIFIED, ""
}

func (s *Server) reject(ctx context.Context, stream havenv1.NodeLink_ConnectServer, certODS string, code havenv1.RejectCode, msg string) error {
	s.log.LogAttrs(ctx, slog.LevelWarn, "node link rejected",
		slog.String("site", certODS), slog.String("code", code.String()), slog.String("reason", msg))
	s.audit(ctx, certODS, map[string]any{"event": "rejected", "code": code.String(), "reason": msg})
	err := stream.Send(&havenv1.CoordinatorMessage{Body: &havenv1.CoordinatorMessage_Rejected{
		Rejected: &havenv1.Rejected{Code: code, Message: msg}}})
	if err != nil {
		return err
	}
	return nil
}

func (s *Server) audit(ctx context.Context, ods string, data map[string]any) {
	if _, err := s.cfg.Audit.Append(context.WithoutCancel(ctx), audit.Record{Kind: audit.KindNode, Actor: ods, Data: data}); err != nil {
		s.log.LogAttrs(ctx, slog.LevelError, "audit append failed", slog.String("site", ods), slog.String("error", err.Error()))
	}
}

// serve runs an accepted link until it ends.
func (s *Server) serve(ctx context.Context, stream havenv1.NodeLink_ConnectServer, reg *havenv1.Register, recv <-chan received) error {
	now := s.cfg.Now()
	ods := reg.GetSiteOds()
	ss := newSession(ods, s.cfg.QueueLength)
	kind, _ := wire.ParseSiteKind(reg.GetSiteKind()) // checkRegister refused any other
	info := SiteInfo{
		ODS:            ods,
		Kind:           kind,
		Population:     reg.GetRegisteredPopulation(),
		Activity:       reg.GetActivityRecords(),
		NodeVersion:    reg.GetNodeVersion(),
		CDMVersion:     reg.GetCdmVersion(),
		BundleRevision: reg.GetBundleRevision(),
		LinkageKeyID:   reg.GetLinkageKeyId(),
		Dialect:        reg.GetConnector().GetDialect(),
		Paused:         reg.GetPause().GetPaused(),
		PauseReason:    reg.GetPause().GetReason(),
		Connected:      true,
		SessionID:      ss.id,
		ConnectedAt:    now,
		LastSeen:       now,
	}

	// Registered goes out before the writer starts, so it is the first
	// message on the link whatever the dispatcher queues meanwhile.
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return status.Errorf(codes.Unavailable, "coordinator is closing: %s", s.closing)
	}
	if old := s.sessions[ods]; old != nil {
		old.end("replaced by a newer link from the same site", true)
	}
	s.sessions[ods] = ss
	si := info
	s.sites[ods] = &si
	s.mu.Unlock()

	defer s.disconnected(ctx, ss)
	// The outcomes the Register carries are handled before Registered goes
	// out: a node forgets them once it reads Registered, so one handled
	// after could be lost with a link that ends in between (while the
	// opt-out list is sent, say). Handling is idempotent by task id.
	hctx := context.WithoutCancel(ctx)
	for _, o := range reg.GetUnreportedOutcomes() {
		if m := wire.OutcomeMessage(o); m != nil {
			s.cfg.Handler.TaskMessage(hctx, ods, m)
		}
	}
	err := stream.Send(&havenv1.CoordinatorMessage{Body: &havenv1.CoordinatorMessage_Registered{Registered: &havenv1.Registered{
		SessionId:              ss.id,
		ServerTime:             timestamppb.New(now),
		HeartbeatInterval:      durationpb.New(s.cfg.HeartbeatInterval),
		AcceptedBundleRevision: s.cfg.Revision(),
	}}})
	if err != nil {
		ss.end("send Registered: "+err.Error(), false)
		return err
	}
	// The network opt-out list goes before any task: the writer, which
	// sends what the dispatcher and later list changes queue, starts after.
	lists := &listSender{relay: s.cfg.OptOuts, known: reg.GetNetworkOptOutVersion()}
	if err := lists.sync(stream); err != nil {
		ss.end("send the network opt-out list: "+err.Error(), false)
		return err
	}
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		if err := s.write(stream, ss, lists); err != nil {
			ss.end("send: "+err.Error(), false)
			for range ss.out { // drop the rest; the link is gone
			}
		}
	}()
	defer func() {
		ss.closeQueue()
		select {
		case <-writerDone:
		case <-time.After(5 * time.Second):
			// The stream's context ends when we return, which unblocks Send.
		}
	}()

	s.log.LogAttrs(ctx, slog.LevelInfo, "node connected", slog.String("site", ods), slog.String("kind", string(info.Kind)),
		slog.String("session", ss.id), slog.Int64("population", info.Population), slog.String("bundle_revision", info.BundleRevision),
		slog.Bool("paused", info.Paused))
	s.audit(ctx, ods, map[string]any{"event": "connected", "session": ss.id, "kind": info.Kind,
		"population": info.Population, "node_version": info.NodeVersion, "bundle_revision": info.BundleRevision,
		"paused": info.Paused, "running_tasks": len(reg.GetRunningTaskIds()), "unreported_outcomes": len(reg.GetUnreportedOutcomes())})

	s.cfg.Handler.NodeConnected(hctx, info, reg.GetRunningTaskIds())

	silence := SilentIntervals * s.cfg.HeartbeatInterval
	live := time.NewTimer(silence)
	defer live.Stop()
	for {
		select {
		case <-ss.done:
			return nil
		case <-ctx.Done():
			ss.end("the node closed the link", false)
			return nil
		case <-live.C:
			// On a starved host the timer and a waiting message become
			// ready together, and select picks at random: a message that
			// has arrived is not silence.
			select {
			case r := <-recv:
				if !s.received(hctx, ss, r) {
					return nil
				}
				live.Reset(silence)
				continue
			default:
			}
			ss.end(fmt.Sprintf("no message for %v", silence), false)
			return nil
		case r := <-recv:
			if !s.received(hctx, ss, r) {
				return nil
			}
			// Time spent handling (an audit append, say) is not the
			// node's silence, so the clock restarts after it.
			live.Reset(silence)
		}
	}
}

// received handles what the link's reader got; false means the link ended.
func (s *Server) received(ctx context.Context, ss *session, r received) bool {
	if r.err != nil {
		if errors.Is(r.err, io.EOF) {
			ss.end("the node closed the link", false)
			return false
		}
		ss.end("receive: "+r.err.Error(), false)
		return false
	}
	s.handle(ctx, ss, r.m)
	return true
}

// disconnected forgets a link that ended.
func (s *Server) disconnected(ctx context.Context, ss *session) {
	s.mu.Lock()
	current := s.sessions[ss.ods] == ss
	if current {
		delete(s.sessions, ss.ods)
		if si := s.sites[ss.ods]; si != nil {
			si.Connected = false
		}
	}
	s.mu.Unlock()
	reason := ss.reason()
	s.log.LogAttrs(ctx, slog.LevelInfo, "node disconnected", slog.String("site", ss.ods),
		slog.String("session", ss.id), slog.String("reason", reason))
	s.audit(ctx, ss.ods, map[string]any{"event": "disconnected", "session": ss.id, "reason": reason})
	if current {
		s.cfg.Handler.NodeDisconnected(context.WithoutCancel(ctx), ss.ods)
	}
}

func (s *Server) handle(ctx context.Context, ss *session, m *havenv1.NodeMessage) {
	now := s.cfg.Now()
	s.mu.Lock()
	si := s.sites[ss.ods]
	if si != nil && si.SessionID == ss.id {
		si.LastSeen = now
		switch b := m.GetBody().(type) {
		case *havenv1.NodeMessage_Heartbeat:
			si.Paused = b.Heartbeat.GetPaused()
			if r := b.Heartbeat.GetBundleRevision(); r != "" {
				si.BundleRevision = r
			}
		case *havenv1.NodeMessage_PauseState:
			si.Paused, si.PauseReason = b.PauseState.GetPaused(), b.PauseState.GetReason()
		}
	}
	s.mu.Unlock()

	switch b := m.GetBody().(type) {
	case *havenv1.NodeMessage_Heartbeat:
		err := ss.send(&havenv1.CoordinatorMessage{Body: &havenv1.CoordinatorMessage_HeartbeatAck{HeartbeatAck: &havenv1.HeartbeatAck{
			ServerTime: timestamppb.New(now), HeartbeatSentAt: b.Heartbeat.GetSentAt()}}})
		if err != nil {
			s.log.LogAttrs(ctx, slog.LevelWarn, "heartbeat ack not sent", slog.String("site", ss.ods), slog.String("error", err.Error()))
		}
	case *havenv1.NodeMessage_PauseState:
		s.log.LogAttrs(ctx, slog.LevelInfo, "node pause state", slog.String("site", ss.ods),
			slog.Bool("paused", b.PauseState.GetPaused()), slog.String("reason", b.PauseState.GetReason()))
		s.audit(ctx, ss.ods, map[string]any{"event": "pause_state", "paused": b.PauseState.GetPaused(), "reason": b.PauseState.GetReason()})
	case *havenv1.NodeMessage_Register:
		s.log.LogAttrs(ctx, slog.LevelWarn, "node sent Register on a live link; ignored", slog.String("site", ss.ods))
	case *havenv1.NodeMessage_OptOutPublish:
		s.publish(ctx, ss, si, b.OptOutPublish)
	case *havenv1.NodeMessage_TaskAccepted, *havenv1.NodeMessage_TaskRefused, *havenv1.NodeMessage_TaskProgress,
		*havenv1.NodeMessage_TaskDone, *havenv1.NodeMessage_TaskFailed:
		s.cfg.Handler.TaskMessage(ctx, ss.ods, m)
	default:
		s.log.LogAttrs(ctx, slog.LevelWarn, "node sent a message with no known body; ignored", slog.String("site", ss.ods))
	}
}

// publish hands a practice's type 1 list to the relay. Only GP practices
// record type 1 objections; a list from any other site is refused.
func (s *Server) publish(ctx context.Context, ss *session, si *SiteInfo, p *havenv1.OptOutPublish) {
	var err error
	changed := false
	switch {
	case s.cfg.OptOuts == nil:
		err = errors.New("this coordinator relays no network opt-out list")
	case si == nil || si.Kind != cdm.KindGP:
		err = fmt.Errorf("site %s is not a GP practice; only practices publish type 1 opt-outs", ss.ods)
	default:
		changed, err = s.cfg.OptOuts.Publish(ctx, ss.ods, p)
	}
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "type 1 opt-out list refused", slog.String("site", ss.ods), slog.String("error", err.Error()))
		s.audit(ctx, ss.ods, map[string]any{"event": "opt_out_list_refused", "reason": err.Error()})
		return
	}
	// Every list received is on record, changed or not: it says when a
	// practice's objections were last known to hold across the network.
	n := len(p.GetHashes()) / 16
	if changed {
		s.log.LogAttrs(ctx, slog.LevelInfo, "type 1 opt-out list accepted", slog.String("site", ss.ods), slog.Int("hashes", n))
		s.listChanged()
	}
	s.audit(ctx, ss.ods, map[string]any{"event": "opt_out_list_received", "changed": changed, "hashes": n, "digest": p.GetDigest()})
}

// listChanged tells every live link that the network list has changed.
func (s *Server) listChanged() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ss := range s.sessions {
		select {
		case ss.lists <- struct{}{}:
		default: // already told
		}
	}
}

// write sends what is queued on a link, and the network list's changes:
// at most once per OptOutInterval, and before any task, so that a task
// never reaches a node ahead of an objection the coordinator had accepted
// when it was queued. It returns when the queue closes or a send fails.
func (s *Server) write(stream havenv1.NodeLink_ConnectServer, ss *session, lists *listSender) error {
	var due <-chan time.Time // set while changes wait for the interval
	last := time.Now()
	for {
		select {
		case m, ok := <-ss.out:
			if !ok {
				return nil
			}
			if m.GetTask() != nil && lists.behind() {
				if err := lists.sync(stream); err != nil {
					return err
				}
				last = time.Now()
			}
			if err := stream.Send(m); err != nil {
				return err
			}
		case <-ss.lists:
			if due == nil {
				due = time.After(s.cfg.OptOutInterval - time.Since(last))
			}
		case <-due:
			due = nil
			if err := lists.sync(stream); err != nil {
				return err
			}
			last = time.Now()
		}
	}
}

// listSender sends one link the network list's changes since the version
// it last sent.
type listSender struct {
	relay OptOutRelay
	known *havenv1.NetworkOptOutVersion
	sent  bool // a node learns its list is current from the first sync
}

// behind reports whether the list has changed since it was last sent.
func (l *listSender) behind() bool {
	if l.relay == nil {
		return false
	}
	v := l.relay.Version()
	return v.GetEpoch() != l.known.GetEpoch() || v.GetSeq() != l.known.GetSeq()
}

// sync sends what changed since the version last sent, if anything did.
// The first sync of a link always sends: a node runs no task until it
// has heard the list's version.
func (l *listSender) sync(stream havenv1.NodeLink_ConnectServer) error {
	if l.relay == nil || (l.sent && !l.behind()) {
		return nil
	}
	l.sent = true
	msgs := l.relay.Sync(l.known)
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	l.known = msgs[len(msgs)-1].GetNetworkOptOuts().GetVersion()
	return nil
}

// session is one live link.
type session struct {
	id  string
	ods string

	mu     sync.Mutex
	out    chan *havenv1.CoordinatorMessage
	lists  chan struct{} // the network list changed since the link was told
	queued bool          // out is still open
	why    string
	ended  bool
	done   chan struct{}
}

func newSession(ods string, queue int) *session {
	return &session{id: "link-" + rand.Text(), ods: ods, out: make(chan *havenv1.CoordinatorMessage, queue),
		lists:  make(chan struct{}, 1),
		queued: true, done: make(chan struct{})}
}

// ErrQueueFull is returned by Send when a link's queue is full.
var ErrQueueFull = errors.New("link queue is full")

func (ss *session) send(m *havenv1.CoordinatorMessage) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended || !ss.queued {
		return fmt.Errorf("send to %s: %w", ss.ods, ErrNotConnected)
	}
	select {
	case ss.out <- m:
		return nil
	default:
		return fmt.Errorf("send to %s: %w", ss.ods, ErrQueueFull)
	}
}

// end asks the link to close, first saying Goodbye if goodbye is set.
// Only the first call counts.
func (ss *session) end(reason string, goodbye bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended {
		return
	}
	ss.ended, ss.why = true, reason
	if goodbye && ss.queued {
		select {
		case ss.out <- &havenv1.CoordinatorMessage{Body: &havenv1.CoordinatorMessage_Goodbye{Goodbye: &havenv1.Goodbye{Reason: reason}}}:
		default:
		}
	}
	close(ss.done)
}

func (ss *session) closeQueue() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.queued {
		ss.queued = false
		close(ss.out)
	}
}

func (ss *session) reason() string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.why
}
