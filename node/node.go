// Package node is the Haven node daemon: the one process at a GP practice
// or hospital trust that dials out to the coordinator, takes tasks, runs
// those its signed bundle and its own policy allow against local data
// through a connector plugin, and sends only what the plan allows (DESIGN
// §2). It never listens on a network port.
//
// This package only wires the parts together; each lives in a package of
// its own: node/config (the file), node/session (the control link),
// node/runner (a task from decision to upload), node/connector (the
// plugin), node/pseudonym (run pseudonyms and the run ledger), node/optout
// (who must be left out), node/audit (what left the site) and node/state
// (pause switch, status file, task journal).
//
//	n, err := node.New(ctx, cfg, node.Options{Logger: logger})
//	if err != nil { ... } // a bad bundle, certificate, secret or plugin stops the node here
//	err = n.Run(ctx)      // until ctx ends
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/internal/buildinfo"
	"github.com/havenhealth/haven/internal/dirlock"
	"github.com/havenhealth/haven/internal/pki"
	"github.com/havenhealth/haven/node/audit"
	"github.com/havenhealth/haven/node/config"
	"github.com/havenhealth/haven/node/connector"
	"github.com/havenhealth/haven/node/metrics"
	"github.com/havenhealth/haven/node/optout"
	"github.com/havenhealth/haven/node/pseudonym"
	"github.com/havenhealth/haven/node/runner"
	"github.com/havenhealth/haven/node/session"
	"github.com/havenhealth/haven/node/state"
	"github.com/havenhealth/haven/policy"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/wire"
)

// Options are what the daemon takes besides its configuration; the zero
// value is right for production.
type Options struct {
	// Logger is where the daemon logs; nil means slog.Default().
	Logger *slog.Logger
	// Backoff paces reconnection; nil means doubling from 1s up to the
	// configuration's coordinator.reconnect_max.
	Backoff session.Backoff
	// UploadRetry is the first wait before retrying an upload; zero means
	// the runner's default.
	UploadRetry time.Duration
	// Housekeeping is how often the status file is written and the pause
	// switch and opt-out list are looked at; zero means 5s.
	Housekeeping time.Duration
	// ShutdownGrace bounds how long running tasks get to report when the
	// node stops; zero means 10s.
	ShutdownGrace time.Duration
}

// Node is a running node daemon.
type Node struct {
	cfg  *config.Config
	opts Options
	log  *slog.Logger

	engine  *policy.Engine
	ledger  *pseudonym.Ledger
	journal *state.Journal
	lock    *dirlock.Lock // the state directory, held until close
	audit   *audit.Log
	plugin  *plugin
	conn    *grpc.ClientConn
	session *session.Session
	runner  *runner.Runner

	ndop     atomic.Pointer[optout.Set]
	ndopStat os.FileInfo
	pause    atomic.Pointer[state.Pause]

	// network is the network type 1 list the coordinator relays; hasher
	// hashes this practice's own objections for it.
	network *optout.Receiver
	hasher  *pseudonym.OptOutHasher
	// publishNow asks housekeeping to publish at once (a link came up).
	publishNow chan struct{}
	pubMu      sync.Mutex
	published  publication

	// statusMu serialises writeStatus.
	statusMu sync.Mutex

	started   time.Time
	closeOnce sync.Once
}

// New checks the configuration's files and loads everything the node needs:
// the linkage secret, the run ledger, the task journal, the audit log, the
// signed bundle (refusing one that does not verify), the opt-out list and
// the connector plugin. It connects to nothing; Run does. Whatever fails
// stops the node here, with an error that says what to fix.
func New(ctx context.Context, cfg *config.Config, opts Options) (_ *Node, err error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Housekeeping <= 0 {
		opts.Housekeeping = 5 * time.Second
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = 10 * time.Second
	}
	n := &Node{cfg: cfg, opts: opts, log: opts.Logger.With("site", cfg.Site.ODS), started: time.Now()}
	defer func() {
		if err != nil {
			n.close()
		}
	}()

	if err := cfg.CheckFiles(); err != nil {
		return nil, fmt.Errorf("node config %s: %w", cfg.File(), err)
	}
	secret, err := cfg.ReadSecret()
	if err != nil {
		return nil, err
	}
	// Optional: a node without it refuses tasks that need record keys.
	perturbation, err := cfg.ReadPerturbationSecret()
	if err != nil {
		return nil, err
	}
	for _, d := range []string{cfg.StateDir, cfg.AuditDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
	}
	// Before anything in the state directory is opened: two nodes on one
	// site would share a journal and an audit log.
	if n.lock, err = dirlock.Acquire(cfg.StateDir); err != nil {
		return nil, fmt.Errorf("node not started: %w", err)
	}
	if n.network, err = optout.OpenReceiver(cfg.StateDir, nil); err != nil {
		return nil, err
	}
	if n.hasher, err = pseudonym.NewOptOutHasher(secret); err != nil {
		return nil, err
	}
	n.publishNow = make(chan struct{}, 1)
	if n.ledger, err = pseudonym.OpenLedger(cfg.StateDir); err != nil {
		return nil, err
	}
	var abandoned []string
	if n.journal, abandoned, err = state.OpenJournal(cfg.StateDir); err != nil {
		return nil, err
	}
	if len(abandoned) > 0 {
		n.log.Warn("tasks left running by the last process are reported as abandoned", "tasks", abandoned)
	}
	if n.audit, err = audit.Open(cfg.AuditDir); err != nil {
		return nil, err
	}
	// Provider IT reads the audit log to see what happened to every task;
	// one the last process never finished must not just stop there.
	for _, id := range abandoned {
		n.appendAudit(audit.Record{Event: audit.EventFailed, TaskID: id,
			Message: "abandoned: the node process stopped while the task ran; the coordinator is told when the node reconnects"})
	}

	pub, err := os.ReadFile(cfg.Governance.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("board public key: %w", err)
	}
	n.engine, err = policy.Load(ctx, policy.Config{
		BundlePath:   cfg.Governance.Bundle,
		PublicKeyPEM: pub,
		SiteModules:  cfg.Governance.SiteModules,
		Logger:       n.log,
	})
	if err != nil {
		return nil, fmt.Errorf("governance bundle refused, node not started: %w", err)
	}

	if err := n.loadNDOP(); err != nil {
		return nil, err
	}
	p, err := state.ReadPause(cfg.StateDir)
	if err != nil {
		n.log.Error("pause switch unreadable; the node counts as paused", "error", err)
		p = state.Pause{Paused: true, Reason: "pause switch unreadable"}
	}
	n.pause.Store(&p)

	n.plugin = newPlugin(connector.LaunchConfig{
		Path:         cfg.Connector.Path,
		SHA256:       cfg.Connector.SHA256,
		Args:         cfg.Connector.Args,
		Env:          envList(cfg.Connector.Env),
		Logger:       n.log,
		StartTimeout: cfg.Connector.StartTimeout.Std(),
		QueryTimeout: cfg.Limits.QueryTimeout.Std(),
	}, n.log)
	// Start the plugin now, so that a broken one stops the node before it
	// registers.
	d, err := n.plugin.Describe(ctx)
	if err != nil {
		return nil, fmt.Errorf("connector plugin: %w", err)
	}
	if err := checkTables(cfg.Site.Kind, d); err != nil {
		return nil, fmt.Errorf("connector plugin: %w", err)
	}

	tlsCfg, err := pki.ClientTLS(cfg.TLS.Cert, cfg.TLS.Key, cfg.TLS.CA, cfg.Coordinator.ServerName)
	if err != nil {
		return nil, err
	}
	// Keepalive pings find a coordinator that is gone without a word (a
	// network that drops packets): a ping unanswered within 20 s closes
	// the connection and the session reconnects. A coordinator that is
	// merely loaded still answers them, from its transport, however late
	// its messages are.
	ka := keepalive.ClientParameters{Time: 20 * time.Second, Timeout: 20 * time.Second, PermitWithoutStream: true}
	if n.conn, err = grpc.NewClient(cfg.Coordinator.Address, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithKeepaliveParams(ka)); err != nil {
		return nil, fmt.Errorf("coordinator %s: %w", cfg.Coordinator.Address, err)
	}
	link := havenv1.NewNodeLinkClient(n.conn)
	backoff := opts.Backoff
	if backoff == nil {
		backoff = session.NewExponential(session.DefaultBackoffMin, max(cfg.Coordinator.ReconnectMax.Std(), session.DefaultBackoffMin))
	}
	n.session, err = session.New(session.Config{
		Dial:    func(ctx context.Context) (havenv1.NodeLink_ConnectClient, error) { return link.Connect(ctx) },
		Handler: (*handler)(n),
		Journal: n.journal,
		Logger:  n.log,
		Backoff: backoff,
		OnChange: func(i session.Info) {
			n.writeStatus()
			if i.State == session.StateConnected {
				select {
				case n.publishNow <- struct{}{}:
				default:
				}
			}
		},
	})
	if err != nil {
		return nil, err
	}
	n.runner, err = runner.New(runner.Config{
		ODS:                cfg.Site.ODS,
		Kind:               cfg.Site.Kind,
		Policy:             n.engine,
		Source:             n.plugin,
		Link:               n.session,
		Journal:            n.journal,
		Ledger:             n.ledger,
		Uploader:           runner.NewFlightUploader(n.conn),
		Audit:              n.audit,
		Secret:             secret,
		PerturbationSecret: perturbation,
		NDOP:               func() *optout.Set { return n.ndop.Load() },
		Network:            n.network.Current,
		Pause:              func() (state.Pause, error) { return state.ReadPause(cfg.StateDir) },
		Limits: runner.Limits{
			MaxRows:      cfg.Limits.MaxRows,
			MaxBytes:     cfg.Limits.MaxBytes,
			QueryTimeout: cfg.Limits.QueryTimeout.Std(),
		},
		Concurrency:  cfg.Limits.Concurrency,
		RetryBackoff: opts.UploadRetry,
		// The status and metrics files say at once that a task finished.
		OnFinished: n.writeStatus,
		Logger:     n.log,
	})
	if err != nil {
		return nil, err
	}
	return n, nil
}

// checkTables checks that the connector exposes the tables a site of kind
// k holds.
func checkTables(k cdm.SiteKind, d connector.Description) error {
	var missing []string
	for _, t := range cdm.TablesFor(k) {
		if _, ok := d.Table(t.Name); !ok {
			missing = append(missing, t.Name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("a %s site must expose CDM tables %v; the connector lacks them", k, missing)
	}
	return nil
}

func envList(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	return out
}

// loadNDOP reads the national opt-out list if it changed since last read.
func (n *Node) loadNDOP() error {
	p := n.cfg.OptOut.NDOPFile
	fi, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("national opt-out list: %w", err)
	}
	if old := n.ndopStat; old != nil && old.ModTime().Equal(fi.ModTime()) && old.Size() == fi.Size() {
		return nil
	}
	s, invalid, err := optout.ReadNDOPFile(p)
	if err != nil {
		return err
	}
	n.ndop.Store(s)
	n.ndopStat = fi
	n.log.Info("national opt-out list loaded", "file", p, "patients", s.Len(), "invalid_entries", invalid)
	return nil
}

// Run connects to the coordinator and serves tasks until ctx ends. Then it
// stops taking tasks, lets those running report (as abandoned) while the
// link is still up, and closes everything.
func (n *Node) Run(ctx context.Context) error {
	defer n.close()
	n.appendAudit(audit.Record{Event: audit.EventStarted, BundleRevision: n.engine.Revision(),
		Message: fmt.Sprintf("node %s started, coordinator %s", buildinfo.Read().Version, n.cfg.Coordinator.Address)})
	n.log.Info("node starting", n.cfg.Summary()...)

	var wg sync.WaitGroup
	bg, stopBG := context.WithCancel(context.Background())
	wg.Add(3)
	go func() {
		defer wg.Done()
		_ = n.engine.Watch(bg, n.cfg.Governance.ReloadInterval.Std())
	}()
	go func() {
		defer wg.Done()
		// Counting invalid NHS numbers scans whole tables; done now, it
		// does not hold up the first task (which counts for itself if
		// this fails or is not done yet).
		if err := n.runner.WarmUp(bg); err != nil && bg.Err() == nil {
			n.log.Warn("counting rows with invalid NHS numbers at start", "error", err)
		}
	}()
	go func() {
		defer wg.Done()
		n.housekeeping(bg)
	}()

	sessDone := make(chan error, 1)
	go func() { sessDone <- n.session.Run(bg) }()

	<-ctx.Done()
	n.log.Info("node stopping")
	grace, cancel := context.WithTimeout(context.Background(), n.opts.ShutdownGrace)
	if err := n.runner.Shutdown(grace); err != nil {
		n.log.Warn("stopping", "error", err)
	}
	cancel()
	n.session.Stop()
	err := <-sessDone
	stopBG()
	wg.Wait()
	n.writeStatus()
	n.appendAudit(audit.Record{Event: audit.EventStopped})
	return err
}

// housekeeping writes the status file, notices a changed pause switch or
// opt-out list, and publishes the practice's type 1 list when it changed
// or a new link came up.
func (n *Node) housekeeping(ctx context.Context) {
	t := time.NewTicker(n.opts.Housekeeping)
	defer t.Stop()
	for {
		n.checkPause()
		if err := n.loadNDOP(); err != nil {
			n.log.Error("national opt-out list not reloaded; the one loaded before stays in force", "error", err)
		}
		n.publish(ctx)
		n.writeStatus()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.publishNow:
		}
	}
}

// publication is what a practice last published, on which link.
type publication struct {
	session string
	digest  string
	count   int
	at      time.Time
}

// publish sends the practice's type 1 list to the network, as keyed
// hashes, if the link is up and the list differs from what this link
// last carried. Trusts record no type 1 objections and publish nothing.
func (n *Node) publish(ctx context.Context) {
	if n.cfg.Site.Kind != cdm.KindGP {
		return
	}
	info := n.session.Info()
	if info.State != session.StateConnected {
		return
	}
	type1, err := n.runner.SiteOptOuts(ctx)
	if err != nil {
		n.log.Error("type 1 opt-outs not read; the network keeps the list published before", "error", audit.Redact(err.Error()))
		return
	}
	p := optout.Publish(n.hasher, type1)
	n.pubMu.Lock()
	same := n.published.session == info.SessionID && n.published.digest == p.Digest
	n.pubMu.Unlock()
	if same {
		return
	}
	if err := n.session.Send(&havenv1.NodeMessage{Body: &havenv1.NodeMessage_OptOutPublish{OptOutPublish: p.Message()}}); err != nil {
		n.log.Warn("type 1 opt-outs not published; will try again", "error", err)
		return
	}
	n.pubMu.Lock()
	n.published = publication{session: info.SessionID, digest: p.Digest, count: len(p.Hashes), at: time.Now().UTC()}
	n.pubMu.Unlock()
	n.log.Info("type 1 opt-outs published to the network", "objections", len(p.Hashes), "digest", p.Digest[:12])
}

// checkPause tells the coordinator when provider IT flips the switch. The
// runner reads the switch itself before every task, so this is news, not
// enforcement.
func (n *Node) checkPause() {
	p, err := state.ReadPause(n.cfg.StateDir)
	if err != nil {
		p = state.Pause{Paused: true, Reason: "pause switch unreadable"}
	}
	old := n.pause.Load()
	if old != nil && old.Paused == p.Paused && old.Reason == p.Reason {
		return
	}
	n.pause.Store(&p)
	n.log.Info("pause switch changed", "paused", p.Paused, "reason", p.Reason)
	_ = n.session.Send(&havenv1.NodeMessage{Body: &havenv1.NodeMessage_PauseState{PauseState: pauseState(p)}})
}

func pauseState(p state.Pause) *havenv1.PauseState {
	ps := &havenv1.PauseState{Paused: p.Paused, Reason: p.Reason}
	if !p.Since.IsZero() {
		ps.Since = timestamppb.New(p.Since)
	}
	return ps
}

// writeStatus replaces the status file and the metrics file. Link
// changes, housekeeping and finished tasks call it from their own
// goroutines; one at a time, so that a file is never replaced by an older
// snapshot (a task counter that went backwards would read as a reset to
// Prometheus).
func (n *Node) writeStatus() {
	if n.session == nil || n.runner == nil {
		return
	}
	n.statusMu.Lock()
	defer n.statusMu.Unlock()
	info := n.session.Info()
	p := n.pause.Load()
	s := state.Status{
		PID: os.Getpid(), StartedAt: n.started.UTC(), UpdatedAt: time.Now().UTC(),
		Site: n.cfg.Site.ODS, Kind: string(n.cfg.Site.Kind), Coordinator: n.cfg.Coordinator.Address,
		Link: info.State.String(), Connected: info.State == session.StateConnected, Since: info.Since.UTC(),
		SessionID: info.SessionID, LastError: audit.Redact(info.LastError),
		BundleRevision:  n.engine.Revision(),
		ConnectorPlugin: filepath.Base(n.cfg.Connector.Path),
		TasksRunning:    n.runner.Running(),
		LastTasks:       n.runner.Recent(),
	}
	if p != nil {
		s.Paused, s.PauseReason = p.Paused, p.Reason
	}
	if d, ok := n.plugin.lastDescription(); ok {
		s.ConnectorVersion, s.ConnectorDialect = d.PluginVersion, string(d.Dialect)
	}
	if net := n.network.Current(); net != nil {
		n.pubMu.Lock()
		pub := n.published
		n.pubMu.Unlock()
		s.NetworkOptOuts = &state.NetworkOptOuts{Version: net.Version().String(), Hashes: net.Len(), Publishers: net.Publishers(),
			Received: net.Received().UTC(), Published: pub.count, PublishedAt: pub.at}
	}
	if err := state.WriteStatus(n.cfg.StateDir, s); err != nil {
		n.log.Error("status file", "error", err)
	}
	n.writeMetrics(info)
}

// writeMetrics replaces the metrics file, if the configuration names one.
func (n *Node) writeMetrics(info session.Info) {
	path := n.cfg.Metrics.Textfile
	if path == "" {
		return
	}
	t := n.runner.Totals()
	s := metrics.Snapshot{
		Site: n.cfg.Site.ODS, Kind: string(n.cfg.Site.Kind), Coordinator: n.cfg.Coordinator.Address,
		Connected: info.State == session.StateConnected,
		Tasks:     t.Tasks, TasksRunning: n.runner.Running(), LastTask: t.Last,
		RowsSent: t.Rows, BytesSent: t.Bytes,
		Started: n.started, Now: time.Now(),
	}
	if nd := n.ndop.Load(); nd != nil {
		s.NDOPPatients = nd.Len()
	}
	if net := n.network.Current(); net != nil {
		s.NetworkOptOuts = &metrics.NetworkOptOuts{Version: net.Version().String(), Hashes: net.Len()}
	}
	if err := metrics.Write(path, s); err != nil {
		n.log.Error("metrics file", "error", err)
	}
}

func (n *Node) appendAudit(r audit.Record) {
	if err := n.audit.Append(r); err != nil {
		n.log.Error("audit log", "error", err)
	}
}

// Close releases everything New opened, for a node that will not be run
// (Run closes its node itself). It is safe to call more than once.
func (n *Node) Close() { n.close() }

// close releases everything New opened. It is safe to call more than once.
func (n *Node) close() {
	n.closeOnce.Do(func() {
		var errs []error
		if n.plugin != nil {
			errs = append(errs, n.plugin.Close())
		}
		if n.conn != nil {
			errs = append(errs, n.conn.Close())
		}
		if n.ledger != nil {
			errs = append(errs, n.ledger.Close())
		}
		if n.audit != nil {
			errs = append(errs, n.audit.Close())
		}
		// Last: another process may take the site once nothing here
		// writes to it.
		errs = append(errs, n.lock.Release())
		if err := errors.Join(errs...); err != nil {
			n.log.Warn("closing", "error", err)
		}
	})
}

// handler is the node as the session sees it.
type handler Node

func (h *handler) node() *Node { return (*Node)(h) }

// Registration describes the node for a Register.
func (h *handler) Registration(ctx context.Context) (*havenv1.Register, error) {
	n := h.node()
	reg := &havenv1.Register{
		SiteOds:        n.cfg.Site.ODS,
		SiteKind:       wire.SiteKind(n.cfg.Site.Kind),
		NodeVersion:    buildinfo.Read().Version,
		CdmVersion:     cdm.Version,
		BundleRevision: n.engine.Revision(),
		LinkageKeyId:   n.cfg.Linkage.KeyID,
		Connector:      &havenv1.ConnectorInfo{PluginName: filepath.Base(n.cfg.Connector.Path)},
	}
	if p := n.pause.Load(); p != nil {
		reg.Pause = pauseState(*p)
	}
	reg.NetworkOptOutVersion = n.network.Current().Version().Wire()
	// A plugin that will not start must not keep the node off the
	// network: it registers with what it last knew, and its tasks fail.
	d, err := n.plugin.Describe(ctx)
	if err != nil {
		n.log.Error("connector plugin unavailable; registering without its description", "error", audit.Redact(err.Error()))
		d, _ = n.plugin.lastDescription()
	}
	reg.Connector.Dialect = string(d.Dialect)
	reg.Connector.PluginVersion = d.PluginVersion
	for _, t := range d.Tables {
		reg.Connector.Tables = append(reg.Connector.Tables, &havenv1.TableInfo{Name: t.Name, RowCount: t.Rows})
	}
	reg.RegisteredPopulation = n.cfg.Site.RegisteredPopulation
	if reg.RegisteredPopulation == 0 {
		if t, ok := d.Table(cdm.TablePatient); ok {
			reg.RegisteredPopulation = t.Rows
		}
	}
	if n.cfg.Site.Kind == cdm.KindTrust {
		// A trust's weight in a run's coverage is the hospital activity
		// it holds, whichever tables the run reads.
		for _, name := range []string{cdm.TableAPCEpisode, cdm.TableAEAttendance} {
			if t, ok := d.Table(name); ok {
				reg.ActivityRecords += t.Rows
			}
		}
	}
	return reg, nil
}

// Heartbeat reports the node's state now.
func (h *handler) Heartbeat() *havenv1.Heartbeat {
	n := h.node()
	hb := &havenv1.Heartbeat{BundleRevision: n.engine.Revision(), TasksRunning: int32(n.runner.Running())}
	if p := n.pause.Load(); p != nil {
		hb.Paused = p.Paused
	}
	return hb
}

// Task hands a task to the runner.
func (h *handler) Task(t *havenv1.Task) { h.node().runner.Submit(t) }

// Cancel stops a task.
func (h *handler) Cancel(c *havenv1.CancelTask) { h.node().runner.Cancel(c.GetTaskId(), c.GetReason()) }

// NetworkOptOuts applies an update to the network type 1 list. An update
// that does not follow the list held, or is malformed, ends the link (the
// next Register resynchronises); one that could not be written to disk
// still takes effect, and is logged.
func (h *handler) NetworkOptOuts(m *havenv1.NetworkOptOuts) error {
	n := h.node()
	err := n.network.Apply(m)
	if err != nil && !errors.Is(err, optout.ErrNotKept) {
		n.log.Warn("network opt-out update refused; reconnecting to resynchronise", "error", err)
		return err
	}
	if err != nil {
		n.log.Error("network opt-out list", "error", err)
	}
	if !m.GetMore() {
		cur := n.network.Current()
		n.log.Info("network opt-out list updated", "version", cur.Version().String(), "hashes", cur.Len(),
			"publishers", cur.Publishers(), "changed", len(m.GetSets()))
		n.writeStatus()
	}
	return nil
}
