package demo

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/havenhealth/haven/client"
	"github.com/havenhealth/haven/coordinator/audit"
	"github.com/havenhealth/haven/internal/pki"
	"github.com/havenhealth/haven/policy"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/release"
)

// Network is a demo network that is running: a coordinator and the nodes,
// each a child process, and a commissioner's connection to the
// coordinator. Tests use it to submit runs and to stop, kill, freeze and
// restart its parts one at a time; Close stops everything.
type Network struct {
	d   *demoRun
	s   *setup
	res *Result

	client *client.Client
	coord  *proc
	// coordFrom is the last coordinator audit entry before the running
	// coordinator started; registrations are counted after it.
	coordFrom uint64
	// nodes are the node processes by the ODS code of each site they
	// serve; a process that serves several sites appears several times.
	nodes map[string]*proc
	// groups are the sites of each node process, by its first site.
	groups map[string][]string
	closed bool
}

// Start brings a network up as Run does, up to and including every node's
// registration, and returns it running. The caller must Close it, also
// when Start failed after starting something (it returns the network
// then, with the error).
func Start(ctx context.Context, opts Options) (*Network, error) {
	opts.setDefaults()
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("demo directory: %w", err)
	}
	if err := prepareDir(dir); err != nil {
		return nil, err
	}
	n := &Network{
		d:     &demoRun{opts: opts, l: layout{dir: dir}, procs: &procs{}, tty: isTerminal(opts.Stderr), began: time.Now()},
		res:   &Result{Dir: dir},
		nodes: map[string]*proc{},
	}
	if err := n.bringUp(ctx); err != nil {
		return n, err
	}
	return n, nil
}

func (n *Network) bringUp(ctx context.Context) error {
	d := n.d
	root := d.opts.Source
	if root == "" {
		var err error
		if root, err = moduleRoot(ctx); err != nil {
			return err
		}
	}
	if err := checkModule(root); err != nil {
		return err
	}
	var err error
	if n.s, err = d.build(ctx, root); err != nil {
		return err
	}
	if err := d.generate(ctx, n.s, n.res); err != nil {
		return err
	}
	if err := d.setUp(ctx, root, n.s, n.res); err != nil {
		return err
	}
	// The portal finds its OpenID provider when the coordinator starts.
	oidc, err := d.procs.start(oidcName, d.l.log(oidcName), n.s.haven,
		"--log-format", "text", "oidc-dev", "--config", d.l.oidcConfig(), "--listen", n.s.faces.oidc)
	if err != nil {
		return err
	}
	if err := waitListening(ctx, n.s.faces.oidc, oidc, 30*time.Second); err != nil {
		return err
	}
	d.progress("started a development OpenID provider for the portal's sign-in on %s (pid %d, log %s)", n.s.faces.issuer(), oidc.pid(), d.rel(d.l.log(oidcName)))
	if err := n.startCoordinator(ctx); err != nil {
		return err
	}
	d.progress("started the coordinator on %s (pid %d, log %s), its portal on %s and its public register on %s", n.s.addr, n.coord.pid(),
		d.rel(d.l.log(coordinatorName)), n.s.faces.portalURL()+"/", n.s.faces.registerURL())
	if err := n.startNodes(ctx); err != nil {
		return err
	}
	n.client, err = dialCommissioner(n.s.addr, n.s.pki)
	return err
}

// Result is what the network has done so far; Close completes it.
func (n *Network) Result() *Result { return n.res }

// Dir is the network's directory, absolute.
func (n *Network) Dir() string { return n.d.l.dir }

// Haven is the haven binary the processes run.
func (n *Network) Haven() string { return n.s.haven }

// Addr is the coordinator's address.
func (n *Network) Addr() string { return n.s.addr }

// NodeConfig is the path of a site's node.yaml.
func (n *Network) NodeConfig(ods string) string { return n.d.l.nodeConfig(ods) }

// CoordinatorConfig is the path of the coordinator's configuration.
func (n *Network) CoordinatorConfig() string { return n.d.l.coordinatorConfig() }

// CoordinatorData is the coordinator's data directory (job store and
// audit log).
func (n *Network) CoordinatorData() string { return n.d.l.coordinatorData() }

// CoordinatorPID is the pid of the coordinator process last started.
func (n *Network) CoordinatorPID() int { return n.coord.pid() }

// NodePID is the pid of the node process serving a site.
func (n *Network) NodePID(ods string) (int, error) {
	p, err := n.node(ods)
	if err != nil {
		return 0, err
	}
	return p.pid(), nil
}

// Bundle is the directory of the signed governance bundle every party
// loads, and BoardPublicKey the key it verifies with.
func (n *Network) Bundle() string         { return n.d.l.bundle() }
func (n *Network) BoardPublicKey() string { return n.d.l.boardPublic() }

// PortalURL is the commissioners' portal, without a trailing slash; people
// sign in as PortalUsers.
func (n *Network) PortalURL() string { return n.s.faces.portalURL() }

// RegisterURL is the public transparency register's first page.
func (n *Network) RegisterURL() string { return n.s.faces.registerURL() }

// HTTPAPIURL is the commissioner API over HTTP and JSON, for the
// commissioner's certificate (CommissionerCert).
func (n *Network) HTTPAPIURL() string { return n.s.faces.httpAPIURL() }

// CommissionerCert is the demo commissioner's certificate and key files.
func (n *Network) CommissionerCert() (cert, key string) { return n.s.pki.userCert, n.s.pki.userKey }

// OIDCIssuer is the development OpenID provider the portal signs people
// in with.
func (n *Network) OIDCIssuer() string { return n.s.faces.issuer() }

// CAFile is the network CA's certificate, which the portal's and the
// register's certificates (the coordinator's) chain to.
func (n *Network) CAFile() string { return n.s.pki.ca }

// SignVariant signs another version of the network's bundle with the demo
// board's key: a copy of the bundle, changed by edit and given the
// manifest revision revision so that a run names the version it was
// decided under. It returns the variant's directory, for
// UseCoordinatorBundle.
func (n *Network) SignVariant(name, revision string, edit func(dir string) error) (string, error) {
	l := n.d.l
	dst := l.variant(name)
	if err := policy.CopyUnsigned(l.bundle(), dst); err != nil {
		return "", fmt.Errorf("bundle variant %s: %w", name, err)
	}
	setRevision := EditJSON(".manifest", func(m map[string]any) error {
		m["revision"] = revision
		return nil
	})
	for _, e := range []func(string) error{edit, setRevision} {
		if e == nil {
			continue
		}
		if err := e(dst); err != nil {
			return "", fmt.Errorf("bundle variant %s: %w", name, err)
		}
	}
	priv, err := os.ReadFile(l.boardPrivate())
	if err != nil {
		return "", fmt.Errorf("bundle variant %s: board key: %w", name, err)
	}
	if err := policy.Sign(dst, priv, "", boardKeyID); err != nil {
		return "", fmt.Errorf("bundle variant %s: %w", name, err)
	}
	return dst, nil
}

// WaitCoordinatorRevision waits until the bundle the coordinator made
// active last, by its log, has the manifest revision revision: after
// UseCoordinatorBundle, the coordinator takes the new bundle up at its
// next look, on a loaded host a while later.
func (n *Network) WaitCoordinatorRevision(ctx context.Context, revision string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	path := n.d.l.log(coordinatorName)
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("coordinator's bundle revision: %w", err)
		}
		last := ""
		for line := range strings.Lines(string(b)) {
			if strings.Contains(line, "policy bundle active") {
				last = line
			}
		}
		if strings.Contains(last, " bundle_revision="+revision+" ") || strings.Contains(last, " bundle_revision="+strconv.Quote(revision)+" ") {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the coordinator did not make bundle revision %s active within %v; last: %q; see %s", revision, timeout, strings.TrimSpace(last), path)
		case <-t.C:
		}
	}
}

// UseCoordinatorBundle points the coordinator's bundle link at dir (a
// SignVariant, or Bundle for the network's own) in one rename, so the
// coordinator never reads half of each. The coordinator takes it up at
// its next look (Options.CoordinatorReload); the nodes keep theirs.
func (n *Network) UseCoordinatorBundle(dir string) error {
	if n.d.opts.CoordinatorReload <= 0 {
		return errors.New("the coordinator reads the network's bundle itself: start the demo with Options.CoordinatorReload")
	}
	link := n.d.l.coordinatorBundle()
	tmp := link + ".new"
	_ = os.Remove(tmp)
	if err := os.Symlink(dir, tmp); err != nil {
		return fmt.Errorf("coordinator's bundle link: %w", err)
	}
	if err := os.Rename(tmp, link); err != nil {
		return fmt.Errorf("coordinator's bundle link: %w", err)
	}
	return nil
}

// CoordinatorTLS is the server TLS configuration of the coordinator's
// certificate: what a stand-in for the coordinator at its address needs.
func (n *Network) CoordinatorTLS() (*tls.Config, error) {
	p := n.s.pki
	return pki.ServerTLS(p.serverCert, p.serverKy, p.ca)
}

// NodeTLS is the client TLS configuration of a site's node certificate:
// what a stand-in for that site's node needs.
func (n *Network) NodeTLS(ods string) (*tls.Config, error) {
	c, ok := n.s.pki.nodes[ods]
	if !ok {
		return nil, fmt.Errorf("no node certificate for site %s", ods)
	}
	return pki.ClientTLS(c[0], c[1], n.s.pki.ca, "")
}

// Sites are the ODS codes of every site, in the network's order.
func (n *Network) Sites() []string {
	var out []string
	for _, s := range n.res.Network.Sites {
		out = append(out, s.ODS)
	}
	return out
}

// Submit submits a query as the commissioner, waits for its run to end
// and fetches its table if one was released. A run that ended without a
// release is not an error; its state says why.
func (n *Network) Submit(ctx context.Context, q Query) (RunResult, error) {
	return n.d.submit(ctx, n.client, q, n.d.opts.RunTimeout)
}

// SubmitNoWait submits a query and returns the run's id at once.
func (n *Network) SubmitNoWait(ctx context.Context, q Query) (string, error) {
	run, err := n.client.Submit(ctx, submission(q))
	if err != nil {
		return "", fmt.Errorf("submit %s: %w", q.Definition, err)
	}
	return run.GetId(), nil
}

// Wait waits for a run to end and returns it as it ended.
func (n *Network) Wait(ctx context.Context, runID string) (*havenv1.Run, error) {
	return n.d.follow(ctx, n.client, runID, n.d.opts.RunTimeout)
}

// GetRun returns a run as the coordinator holds it now.
func (n *Network) GetRun(ctx context.Context, runID string) (*havenv1.Run, error) {
	return n.client.Run(ctx, runID)
}

// Table fetches a run's released table.
func (n *Network) Table(ctx context.Context, runID string) (*release.Table, error) {
	return n.client.Fetch(ctx, runID)
}

// node returns the process serving a site.
func (n *Network) node(ods string) (*proc, error) {
	p, ok := n.nodes[ods]
	if !ok {
		return nil, fmt.Errorf("no node process serves site %s", ods)
	}
	return p, nil
}

// StopNode stops the process serving a site as its service manager
// would: SIGTERM, then SIGKILL after the grace period.
func (n *Network) StopNode(ods string) error {
	p, err := n.node(ods)
	if err != nil {
		return err
	}
	n.d.procs.forget(p)
	return stop(p, n.d.opts.StopGrace)
}

// KillNode kills the process serving a site and its connector plugin at
// once, with SIGKILL to the process group, as a power cut would.
func (n *Network) KillNode(ods string) error {
	p, err := n.node(ods)
	if err != nil {
		return err
	}
	n.d.procs.forget(p)
	return kill(p)
}

// StartNode starts the node process that serves a site again, after
// StopNode or KillNode, and waits until each of its sites has registered
// anew.
func (n *Network) StartNode(ctx context.Context, ods string) error {
	p, err := n.node(ods)
	if err != nil {
		return err
	}
	if !p.exited() {
		return fmt.Errorf("the node serving %s is still running", ods)
	}
	first := n.groupOf(ods)
	sites := n.groups[first]
	from, err := n.auditLength()
	if err != nil {
		return err
	}
	if _, err := n.spawnNode(first, sites); err != nil {
		return err
	}
	_, err = n.d.waitRegistered(ctx, sites, from, n.d.opts.RegisterTimeout)
	return err
}

func (n *Network) groupOf(ods string) string {
	for first, sites := range n.groups {
		if slices.Contains(sites, ods) {
			return first
		}
	}
	return ods
}

// FreezeConnector stops the connector plugin of the node serving a site
// with SIGSTOP, so that the node stays connected and heartbeating while
// every query it sends its plugin hangs, as a database that has stopped
// answering would. thaw resumes it; Close thaws it too.
func (n *Network) FreezeConnector(ods string) (thaw func() error, err error) {
	p, err := n.node(ods)
	if err != nil {
		return nil, err
	}
	kids, err := children(p.pid())
	if err != nil {
		return nil, err
	}
	if len(kids) == 0 {
		return nil, fmt.Errorf("the node serving %s (pid %d) has no connector plugin process", ods, p.pid())
	}
	for _, k := range kids {
		if err := syscall.Kill(k, syscall.SIGSTOP); err != nil {
			return nil, fmt.Errorf("freeze the connector of %s (pid %d): %w", ods, k, err)
		}
	}
	return func() error {
		var errs []error
		for _, k := range kids {
			if err := syscall.Kill(k, syscall.SIGCONT); err != nil && !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, fmt.Errorf("thaw the connector of %s (pid %d): %w", ods, k, err))
			}
		}
		return errors.Join(errs...)
	}, nil
}

// children returns the process ids whose parent is pid.
func children(pid int) ([]int, error) {
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return nil, err
	}
	if len(stats) == 0 {
		return nil, errors.New("no /proc to find child processes in")
	}
	var out []int
	for _, s := range stats {
		b, err := os.ReadFile(s)
		if err != nil {
			continue // it exited
		}
		// The fields after the command name, which may hold spaces and
		// parentheses, start after its last ')': state, then ppid.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(pid) {
			continue
		}
		if k, err := strconv.Atoi(filepath.Base(filepath.Dir(s))); err == nil {
			out = append(out, k)
		}
	}
	return out, nil
}

// StopCoordinator stops the coordinator with SIGTERM, as its service
// manager would.
func (n *Network) StopCoordinator() error {
	n.d.procs.forget(n.coord)
	return stop(n.coord, n.d.opts.StopGrace)
}

// KillCoordinator kills the coordinator with SIGKILL, as a crash would.
func (n *Network) KillCoordinator() error {
	n.d.procs.forget(n.coord)
	return kill(n.coord)
}

// StartCoordinator starts the coordinator again after StopCoordinator or
// KillCoordinator, with the same configuration and data directory, and
// waits until every node that is running has registered with it again.
func (n *Network) StartCoordinator(ctx context.Context) error {
	if n.coord != nil && !n.coord.exited() {
		return errors.New("the coordinator is still running")
	}
	if err := n.startCoordinator(ctx); err != nil {
		return err
	}
	var sites []string
	for _, ods := range n.Sites() {
		if p := n.nodes[ods]; p != nil && !p.exited() {
			sites = append(sites, ods)
		}
	}
	_, err := n.d.waitRegistered(ctx, sites, n.coordFrom, n.d.opts.RegisterTimeout)
	return err
}

// startCoordinator starts the coordinator process and waits until it
// listens.
func (n *Network) startCoordinator(ctx context.Context) error {
	l := n.d.l
	from, err := n.auditLength()
	if err != nil {
		return err
	}
	p, err := n.d.procs.start(coordinatorName, l.log(coordinatorName), n.s.haven,
		"--log-format", "text", "coordinator", "run", "--config", l.coordinatorConfig())
	if err != nil {
		return err
	}
	n.coord, n.coordFrom = p, from
	return waitListening(ctx, n.s.addr, p, 30*time.Second)
}

// auditLength is the number of entries in the coordinator's audit log, or
// 0 before it has one.
func (n *Network) auditLength() (uint64, error) {
	f, err := os.Open(n.d.l.auditLog())
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var last uint64
	_, err = audit.Scan(f, func(e audit.Entry) { last = e.Seq })
	if be, ok := errors.AsType[*audit.BrokenError](err); ok && strings.Contains(be.Reason, "incomplete") {
		err = nil
	}
	return last, err
}

// startNodes starts the node processes, SitesPerNode sites each, and
// waits until every site has registered.
func (n *Network) startNodes(ctx context.Context) error {
	d, l := n.d, n.d.l
	began := time.Now()
	sites := n.Sites()
	per := max(d.opts.SitesPerNode, 1)
	n.groups = map[string][]string{}
	for i := 0; i < len(sites); i += per {
		group := sites[i:min(i+per, len(sites))]
		n.groups[group[0]] = group
		if _, err := n.spawnNode(group[0], group); err != nil {
			return err
		}
	}
	var err error
	if n.res.Registered, err = d.waitRegistered(ctx, sites, 0, d.opts.RegisterTimeout); err != nil {
		return err
	}
	procs := "one process each"
	if per > 1 {
		procs = fmt.Sprintf("%d processes of up to %d sites", len(n.groups), per)
	}
	d.progress("started %d nodes (%s): %d/%d registered (%s; logs %s)", len(sites), procs, len(n.res.Registered), len(sites),
		since(began), d.rel(l.path("logs", "node-*.log")))
	return nil
}

// spawnNode starts one node process serving sites, named and logged by
// the first.
func (n *Network) spawnNode(first string, sites []string) (*proc, error) {
	l := n.d.l
	args := []string{"--log-format", "text", "node", "run"}
	for _, ods := range sites {
		args = append(args, "--config", l.nodeConfig(ods))
	}
	p, err := n.d.procs.start("node "+first, l.log("node-"+first), n.s.haven, args...)
	if err != nil {
		return nil, err
	}
	for _, ods := range sites {
		n.nodes[ods] = p
	}
	n.d.mu.Lock()
	if n.d.nodeLogs == nil {
		n.d.nodeLogs = map[string]string{}
	}
	for _, ods := range sites {
		n.d.nodeLogs[ods] = p.log
	}
	n.d.mu.Unlock()
	return p, nil
}

// WaitWarmedUp waits until every site's node has finished the work it
// does once at start (counting its tables' invalid NHS numbers), which
// it logs: after it, a network is up and idle, as a real one is by the
// time anyone queries it.
func (n *Network) WaitWarmedUp(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		missing := 0
		for _, first := range slices.Sorted(maps.Keys(n.groups)) {
			b, err := os.ReadFile(n.d.nodeLog(first))
			if err != nil {
				return err
			}
			for _, ods := range n.groups[first] {
				if !bytes.Contains(b, []byte(`msg="counted rows with invalid NHS numbers" site=`+ods+" ")) {
					missing++
				}
			}
		}
		if missing == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d sites had not warmed up after %v: %w", missing, timeout, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
}

// WaitLinked waits until every site has a live link to the coordinator
// (for a practice, one on which it has also published its opt-out list).
func (n *Network) WaitLinked(ctx context.Context, timeout time.Duration) error {
	_, err := n.d.waitRegistered(ctx, n.Sites(), 0, timeout)
	return err
}

// NodeProcesses is the number of node processes serving the sites.
func (n *Network) NodeProcesses() int { return len(n.groups) }

// CoordinatorPeakRSS is the running coordinator's peak resident set size
// in bytes (VmHWM), read from /proc.
func (n *Network) CoordinatorPeakRSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", n.coord.pid()))
	if err != nil {
		return 0, fmt.Errorf("coordinator peak RSS: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("coordinator peak RSS: %q: %w", line, err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("coordinator peak RSS: no VmHWM in /proc status")
}

// Close stops every process, verifies the coordinator's audit log, and
// removes the directory unless Options.Keep is set or failed is true. It
// may be called more than once.
func (n *Network) Close(failed bool) error {
	if n.closed {
		return nil
	}
	n.closed = true
	d := n.d
	var errs []error
	if n.client != nil {
		n.client.Close()
	}
	// A frozen plugin ignores SIGTERM until thawed; the group kill after
	// the grace period deals with it, so nothing more is needed here.
	if err := d.shutdown(); err != nil {
		errs = append(errs, err)
	}
	n.res.PIDs = d.procs.started()
	if _, err := os.Stat(d.l.auditLog()); err == nil {
		f, err := os.Open(d.l.auditLog())
		if err != nil {
			errs = append(errs, fmt.Errorf("coordinator audit log: %w", err))
		} else {
			sum, err := audit.Verify(f)
			f.Close()
			if err != nil {
				errs = append(errs, fmt.Errorf("coordinator audit log %s: %w", d.l.auditLog(), err))
			} else {
				n.res.AuditEntries = sum.Entries
			}
		}
	}
	err := errors.Join(errs...)
	switch {
	case d.opts.Keep:
	case failed || err != nil:
		d.progress("its files and logs are kept in %s", d.rel(d.l.dir))
	default:
		if rmErr := os.RemoveAll(d.l.dir); rmErr != nil {
			err = fmt.Errorf("remove the demo directory: %w", rmErr)
		}
	}
	return err
}

// WaitPauseState waits until the coordinator holds the pause switch of
// site ods as paused says, read from the coordinator's audit log (the
// node's last pause_state message). `haven node pause` and `resume` flip
// a file the node reads at once before any task, but the node tells the
// coordinator only on its next housekeeping tick; until then the planner
// may still mark the site PAUSED. A site that never reported a pause
// counts as not paused.
func (n *Network) WaitPauseState(ctx context.Context, ods string, paused bool) error {
	for {
		got, err := lastPauseState(n.d.l.auditLog(), ods)
		if err != nil {
			return err
		}
		if got == paused {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("site %s: the coordinator still holds paused=%v: %w", ods, got, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// lastPauseState is the last pause state site ods reported to the
// coordinator, false if none.
func lastPauseState(auditLog, ods string) (bool, error) {
	f, err := os.Open(auditLog)
	if err != nil {
		return false, err
	}
	defer f.Close()
	paused := false
	_, err = audit.Scan(f, func(e audit.Entry) {
		if e.Kind != audit.KindNode || e.Actor != ods {
			return
		}
		var ev struct {
			Event  string `json:"event"`
			Paused bool   `json:"paused"`
		}
		if json.Unmarshal(e.Data, &ev) == nil && ev.Event == "pause_state" {
			paused = ev.Paused
		}
	})
	if be, ok := errors.AsType[*audit.BrokenError](err); ok && strings.Contains(be.Reason, "incomplete") {
		err = nil // the coordinator is writing the last entry; the rest stands
	}
	return paused, err
}
