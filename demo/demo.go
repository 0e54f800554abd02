package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/client"
	"github.com/havenhealth/haven/internal/pgtest"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/release"
	"github.com/havenhealth/haven/synth"
	"github.com/havenhealth/haven/wire"
)

// Seed is the seed of the demo's synthetic network: every demo sees the
// same patients.
const Seed = 1

// Defaults for Options left zero.
const (
	DefaultDir             = ".demo"
	DefaultRegisterTimeout = 90 * time.Second
	DefaultRunTimeout      = 2 * time.Minute
	DefaultStopGrace       = 10 * time.Second
)

// coordinatorName names the coordinator's process and log.
const (
	coordinatorName = "coordinator"
	oidcName        = "oidc-dev"
)

// Query is one run the demo submits as its commissioner.
type Query struct {
	// Definition is the approved definition's id.
	Definition string
	// Parameters are name=value pairs; those left out take the
	// definition's defaults.
	Parameters map[string]string
	// Purpose is one the definition's approval allows.
	Purpose string
}

// DefaultQueries are the demo's two runs: the prevalence of type 2
// diabetes, which practices answer with aggregates alone, and emergency
// admissions of those patients, which links practices' patients with
// trusts' episodes by run pseudonym.
func DefaultQueries() []Query {
	return []Query{
		{Definition: "t2dm-prevalence", Purpose: "commissioning",
			Parameters: map[string]string{"index_date": "2024-04-01", "min_age": "17"}},
		{Definition: "t2dm-emergency-admissions", Purpose: "commissioning",
			Parameters: map[string]string{"index_date": "2023-04-01", "followup_days": "365"}},
	}
}

// Options shape a demo. The zero value runs the default demo in .demo,
// building every binary it needs, and prints nothing.
type Options struct {
	// Dir holds everything the demo writes; default .demo. An existing
	// directory must be empty or one an earlier demo made.
	Dir string
	// Keep leaves Dir in place when the demo ends. Without it Dir is
	// removed after a demo that succeeded or was interrupted, and kept
	// after one that failed, for its logs.
	Keep bool
	// Postgres loads one trust's data into a throwaway PostgreSQL cluster
	// and has its node read it with the PostgreSQL connector.
	Postgres bool
	// Haven is the haven binary to run the coordinator and nodes with;
	// empty builds one into Dir/bin.
	Haven string
	// Source is the root of the haven module, for the reference bundle
	// and for building binaries; empty asks `go env GOMOD` from the
	// working directory.
	Source string
	// Queries are the runs to submit; nil means DefaultQueries.
	Queries []Query
	// Stdout receives the results, Stderr the progress; nil discards.
	Stdout, Stderr io.Writer
	// PrintTable, if set, prints each released table to Stdout; the demo
	// itself prints only a summary of each run.
	PrintTable func(w io.Writer, t *release.Table)
	// RegisterTimeout bounds the wait for every node to register.
	RegisterTimeout time.Duration
	// RunTimeout bounds each run; the coordinator's run deadline is set a
	// little shorter, so that sites that are late are named by it.
	RunTimeout time.Duration
	// RunDeadline is the coordinator's run deadline; zero sets it a little
	// shorter than RunTimeout, so that sites that are late are named by
	// the coordinator before the demo gives up.
	RunDeadline time.Duration
	// StopGrace is how long a child has to stop after SIGTERM before its
	// process group is killed.
	StopGrace time.Duration
	// ReconnectMax, if set, is the nodes' coordinator.reconnect_max: a
	// test that restarts the coordinator often keeps nodes from backing
	// off for minutes.
	ReconnectMax time.Duration
	// NodeAddress, if set, returns the address the nodes dial, given the
	// coordinator's: a test's way to put a proxy between them. It must
	// be on 127.0.0.1, which the coordinator's certificate names.
	NodeAddress func(coordinator string) (string, error)
	// Scale is the synthetic network's scale; default small.
	Scale synth.Scale
	// SitesPerNode is how many sites each node process serves; default 1.
	// A machine that cannot hold a process per site at ICB scale serves
	// several from each.
	SitesPerNode int
	// EditBundle, if set, edits the copy of the reference bundle before
	// the demo board signs it: a test's way to change what the board
	// decides.
	EditBundle func(dir string) error
	// CoordinatorReload, when positive, has the coordinator read its
	// bundle through a link of its own to the network's bundle and look
	// for a new version at that interval, so that UseCoordinatorBundle
	// can hand the coordinator alone another signed variant while the
	// nodes keep theirs (a benchmark's baseline arm, on the same network).
	CoordinatorReload time.Duration
	// Serve, if set, is called after the queries with the whole network
	// still running, and the network is stopped when it returns: `haven
	// demo --serve` waits there until Ctrl-C, so that a person can use
	// the portal and the register; a test looks at them. Its error fails
	// the demo.
	Serve func(ctx context.Context, n *Network) error
}

func (o *Options) setDefaults() {
	if o.Dir == "" {
		o.Dir = DefaultDir
	}
	if o.Queries == nil {
		o.Queries = DefaultQueries()
	}
	if o.Stdout == nil {
		o.Stdout = io.Discard
	}
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	if o.RegisterTimeout <= 0 {
		o.RegisterTimeout = DefaultRegisterTimeout
	}
	if o.RunTimeout <= 0 {
		o.RunTimeout = DefaultRunTimeout
	}
	if o.StopGrace <= 0 {
		o.StopGrace = DefaultStopGrace
	}
	if o.RunDeadline <= 0 {
		o.RunDeadline = max(o.RunTimeout-15*time.Second, o.RunTimeout*3/4)
	}
	if o.Scale == "" {
		o.Scale = synth.ScaleSmall
	}
	if o.SitesPerNode <= 0 {
		o.SitesPerNode = 1
	}
}

// Result is what a demo did.
type Result struct {
	// Dir is the demo directory, absolute. It no longer exists unless
	// Options.Keep was set.
	Dir string
	// Network is the synthetic network the sites served; its files are
	// under Dir.
	Network *synth.Network
	// Postgres names the site whose node read PostgreSQL, if any.
	Postgres string
	// Registered lists the sites whose nodes registered, by ODS code.
	Registered []string
	// Runs are the runs submitted, in order.
	Runs []RunResult
	// AuditEntries is the length of the coordinator's audit log, whose
	// hash chain was verified after the coordinator stopped.
	AuditEntries int
	// PIDs are the process ids of every child started (each also the id
	// of its process group); none is running when Run returns.
	PIDs []int
}

// Written lists the directories the coordinator and the nodes write to:
// the process logs, the coordinator's data directory (job store and audit
// log), and each node's state and audit directories. It is what a privacy
// scan must read.
func (r *Result) Written() []string {
	l := layout{dir: r.Dir}
	out := []string{l.path("logs"), l.coordinatorData()}
	for _, s := range r.Network.Sites {
		out = append(out, l.path("nodes", s.ODS, "state"), l.path("nodes", s.ODS, "audit"))
	}
	return out
}

// SecretFile is the network linkage secret every node reads.
func (r *Result) SecretFile() string { return layout{dir: r.Dir}.secret() }

// PerturbationSecretFile is the network perturbation secret every node
// reads to derive record keys.
func (r *Result) PerturbationSecretFile() string { return layout{dir: r.Dir}.perturbationSecret() }

// RunResult is one run the demo submitted.
type RunResult struct {
	Query      Query
	Definition *havenv1.DefinitionSummary
	// Run is the run as it finished.
	Run *havenv1.Run
	// Table is the released table; nil unless the run was released.
	Table *release.Table
	// Elapsed is from submission to the run's end.
	Elapsed time.Duration
}

// demoRun is one demo in progress.
type demoRun struct {
	opts  Options
	l     layout
	procs *procs
	tty   bool
	began time.Time

	mu       sync.Mutex
	live     bool // a transient status line is on the terminal
	stopped  bool
	pg       *pgtest.Server
	nodeLogs map[string]string // log file of the process serving each site
}

// nodeLog is the log file of the node process serving a site.
func (d *demoRun) nodeLog(ods string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if p, ok := d.nodeLogs[ods]; ok {
		return p
	}
	return d.l.log("node-" + ods)
}

// Run runs the demo: it builds the plugins, generates the network, sets up
// every party, starts the coordinator and the nodes as child processes,
// waits until all have registered, submits the queries, and stops every
// child before it returns. The error says what failed and where to look; a
// run that finished but was not released is an error too.
func Run(ctx context.Context, opts Options) (res *Result, err error) {
	n, err := Start(ctx, opts)
	if n == nil {
		return nil, err
	}
	d := n.d
	res = n.res
	defer func() {
		failed := err != nil && ctx.Err() == nil
		if closeErr := n.Close(failed); closeErr != nil {
			err = errors.Join(err, closeErr)
		}
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("demo interrupted (%w); every process it started has been stopped", ctx.Err())
		}
	}()
	if err != nil {
		return res, err
	}
	for _, q := range d.opts.Queries {
		d.progress("submitting %s as %s, purpose %s…", q.Definition, commissionerID, q.Purpose)
		rr, err := n.Submit(ctx, q)
		if err != nil {
			return res, err
		}
		res.Runs = append(res.Runs, rr)
		d.printRun(rr)
	}
	var failed []string
	for _, rr := range res.Runs {
		if rr.Run.GetState() != havenv1.RunState_RUN_STATE_RELEASED {
			failed = append(failed, fmt.Sprintf("%s (run %s %s)", rr.Query.Definition, rr.Run.GetId(), client.StateLabel(rr.Run.GetState())))
		}
	}
	d.printFaces(n)
	if d.opts.Serve != nil {
		if err := d.opts.Serve(ctx, n); err != nil {
			return res, err
		}
	}
	if err := n.Close(len(failed) > 0); err != nil {
		return res, err
	}
	d.progress("stopped every process; the coordinator's audit log holds %d entries and its hash chain verifies", res.AuditEntries)
	d.printNext(res)
	if len(failed) > 0 {
		return res, fmt.Errorf("not released: %s; see %s", strings.Join(failed, ", "), d.rel(d.l.log(coordinatorName)))
	}
	return res, nil
}

// setup is what the processes are started from.
type setup struct {
	haven string // the haven binary
	duck  plugin // the DuckDB connector plugin
	addr  string // the coordinator's address
	faces faces  // the register's, the portal's and the OpenID provider's
	pki   *pkiFiles
}

// build builds the connector plugins and, unless the options name one,
// the haven binary, in one go build.
func (d *demoRun) build(ctx context.Context, root string) (*setup, error) {
	l := d.l
	s := &setup{haven: d.opts.Haven}
	began := time.Now()
	pkgs := []string{modulePath + "/cmd/haven-connector-duckdb"}
	if d.opts.Postgres {
		pkgs = append(pkgs, modulePath+"/cmd/haven-connector-postgres")
	}
	if s.haven == "" {
		pkgs = append(pkgs, modulePath+"/cmd/haven")
		s.haven = l.bin("haven")
	}
	d.status("building %d binaries with go build…", len(pkgs))
	if err := goBuild(ctx, root, l.path("bin"), []string{"duckdb_arrow"}, pkgs...); err != nil {
		return nil, err
	}
	var err error
	if s.duck, err = builtPlugin(l.bin("haven-connector-duckdb")); err != nil {
		return nil, err
	}
	names := make([]string, len(pkgs))
	for i, p := range pkgs {
		names[i] = filepath.Base(p)
	}
	d.progress("built %s into %s (%s)", strings.Join(names, ", "), d.rel(l.path("bin")), since(began))
	return s, nil
}

// generate writes the synthetic network with haven synth, run as a child
// like the rest of the system.
func (d *demoRun) generate(ctx context.Context, s *setup, res *Result) error {
	began := time.Now()
	d.status("generating the synthetic network…")
	err := d.procs.runOnce(ctx, d.opts.StopGrace, "haven synth", d.l.log("synth"), s.haven, "--log-format", "text",
		"synth", "--out", d.l.net(), "--scale", string(d.opts.Scale), "--seed", strconv.Itoa(Seed))
	if err != nil {
		return err
	}
	if res.Network, err = synth.LoadNetwork(filepath.Join(d.l.net(), synth.NetworkFile)); err != nil {
		return err
	}
	n := res.Network
	var registered int
	for _, site := range n.SitesOfKind(cdm.KindGP) {
		registered += site.RegisteredPopulation
	}
	d.progress("generated the synthetic network with haven synth: %d practices, %d trusts, %d patients registered on %s, seed %d (%s)",
		len(n.SitesOfKind(cdm.KindGP)), len(n.SitesOfKind(cdm.KindTrust)), registered, n.ReferenceDate, Seed, since(began))
	return nil
}

// setUp issues the certificates, signs the bundle, writes the linkage
// secret, loads PostgreSQL if asked, and writes every configuration file.
func (d *demoRun) setUp(ctx context.Context, root string, s *setup, res *Result) error {
	l, netw := d.l, res.Network
	var err error
	if s.pki, err = makePKI(l.pki(), netw.Sites, time.Now()); err != nil {
		return err
	}
	d.progress("issued certificates: network CA, coordinator (127.0.0.1), %d nodes, commissioner %s (%s, %s)",
		len(netw.Sites), commissionerID, commissionerOU, commissionRole)
	if err := signBundle(filepath.Join(root, "policy", "bundle"), l.bundle(), l.boardPrivate(), l.boardPublic(), d.opts.EditBundle); err != nil {
		return err
	}
	d.progress("signed a copy of policy/bundle with a demo board key (%s)", d.rel(l.boardPublic()))
	if err := writeSecret(l.secret()); err != nil {
		return fmt.Errorf("linkage secret: %w", err)
	}
	// The perturbation secret is a second, independent secret: record
	// keys must not be derivable from pseudonyms or the other way round.
	if err := writeSecret(l.perturbationSecret()); err != nil {
		return fmt.Errorf("perturbation secret: %w", err)
	}

	sources := map[string]siteSource{}
	for _, site := range netw.Sites {
		sources[site.ODS] = duckdbSource(s.duck, filepath.Join(l.net(), synth.SitesDir, site.ODS))
	}
	if d.opts.Postgres {
		trusts := netw.SitesOfKind(cdm.KindTrust)
		if len(trusts) == 0 {
			return errors.New("--postgres: the network has no trust")
		}
		t := trusts[0]
		began := time.Now()
		d.status("loading trust %s into a throwaway PostgreSQL cluster…", t.ODS)
		pgPlugin, err := builtPlugin(l.bin("haven-connector-postgres"))
		if err != nil {
			return err
		}
		srv, src, err := startPostgres(ctx, pgPlugin, filepath.Join(l.net(), synth.SitesDir, t.ODS))
		if err != nil {
			return err
		}
		d.mu.Lock()
		d.pg = srv
		d.mu.Unlock()
		sources[t.ODS] = src
		res.Postgres = t.ODS
		d.progress("loaded trust %s into a throwaway PostgreSQL cluster; its node uses the PostgreSQL connector (%s)", t.ODS, since(began))
	}

	if s.addr, err = freeAddr(); err != nil {
		return err
	}
	if s.faces, err = writeFaces(l); err != nil {
		return err
	}
	if err := writeCoordinatorConfig(l, s.pki, s.addr, s.faces, netw.Sites, d.opts.RunDeadline, d.opts.CoordinatorReload); err != nil {
		return err
	}
	ndop := netw.Path(netw.NationalOptOut.Path)
	nodeAddr := s.addr
	if d.opts.NodeAddress != nil {
		if nodeAddr, err = d.opts.NodeAddress(s.addr); err != nil {
			return fmt.Errorf("the address nodes dial: %w", err)
		}
	}
	for _, site := range netw.Sites {
		if err := writeNodeConfig(l, s.pki, nodeAddr, site, sources[site.ODS], ndop, d.opts.ReconnectMax); err != nil {
			return err
		}
	}
	return nil
}

// shutdown stops every child and the PostgreSQL cluster, once.
func (d *demoRun) shutdown() error {
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return nil
	}
	d.stopped = true
	pg := d.pg
	d.mu.Unlock()
	n := len(d.procs.started())
	if n > 0 {
		d.status("stopping %d processes…", n)
	}
	err := d.procs.stopAll(d.opts.StopGrace)
	if pg != nil {
		err = errors.Join(err, pg.Stop())
	}
	d.progressDone()
	return err
}

// printRun prints one run's outcome, coverage and table.
func (d *demoRun) printRun(rr RunResult) {
	w := d.opts.Stdout
	r := rr.Run
	cov := r.GetCoverage()
	fmt.Fprintf(w, "\n== %s: %s (%s mode) ==\n", rr.Query.Definition, rr.Definition.GetTitle(), wire.ModeName(rr.Definition.GetMode()))
	fmt.Fprintf(w, "run %s %s in %s\n", r.GetId(), client.StateLabel(r.GetState()), rr.Elapsed.Round(10*time.Millisecond))
	fmt.Fprintf(w, "coverage: %d of %d sites answered, population %d of %d\n",
		cov.GetSitesAnswered(), cov.GetSitesExpected(), cov.GetPopulationAnswered(), cov.GetPopulationExpected())
	if cov.GetTrustsExpected() > 0 {
		fmt.Fprintf(w, "trusts: %d of %d answered, hospital activity %d of %d records\n",
			cov.GetTrustsAnswered(), cov.GetTrustsExpected(), cov.GetActivityAnswered(), cov.GetActivityExpected())
	}
	for _, s := range cov.GetSites() {
		if s.GetState() != havenv1.SiteState_SITE_STATE_DONE {
			detail := s.GetError()
			for _, rs := range s.GetReasons() {
				detail = strings.TrimSpace(detail + " " + rs.GetCode() + ": " + rs.GetMessage())
			}
			fmt.Fprintf(w, "  site %s %s %s\n", s.GetSiteOds(), strings.ToUpper(wire.SiteStateName(s.GetState())), detail)
		}
	}
	for _, rs := range r.GetPolicyReasons() {
		fmt.Fprintf(w, "policy: %s: %s\n", rs.GetCode(), rs.GetMessage())
	}
	if r.GetError() != "" {
		fmt.Fprintf(w, "error: %s\n", r.GetError())
	}
	if rel := r.GetRelease(); rel != nil {
		rule := fmt.Sprintf("counts under %d withheld, values rounded to %d", rel.GetMinCellCount(), rel.GetRoundingBase())
		if p := rel.GetPerturbationTable(); p != "" {
			rule = fmt.Sprintf("counts perturbed by %s, sums rounded to %d", p, rel.GetRoundingBase())
		}
		fmt.Fprintf(w, "released %d rows: %d values released, %d withheld (%s)\n",
			rel.GetRows(), rel.GetCellsReleased(), rel.GetCellsWithheld(), rule)
	}
	if rr.Table != nil && d.opts.PrintTable != nil {
		fmt.Fprintln(w)
		d.opts.PrintTable(w, rr.Table)
	}
}

// printNext says where to look after the demo.
func (d *demoRun) printNext(res *Result) {
	w, l, rel := d.opts.Stdout, d.l, d.rel
	first := res.Network.Sites[0].ODS
	fmt.Fprintf(w, "\n== where to look next ==\n")
	fmt.Fprintf(w, "coordinator audit log (hash-chained):  %s\n", rel(l.auditLog()))
	fmt.Fprintf(w, "  haven audit verify --log %s\n", rel(l.auditLog()))
	if len(res.Runs) > 0 {
		fmt.Fprintf(w, "  haven audit show --log %s --run %s\n", rel(l.auditLog()), res.Runs[0].Run.GetId())
	}
	fmt.Fprintf(w, "node audit logs (what left each site):  %s\n", rel(l.path("nodes", "*", "audit")))
	fmt.Fprintf(w, "  haven node audit --config %s\n", rel(l.nodeConfig(first)))
	fmt.Fprintf(w, "  haven node status --config %s\n", rel(l.nodeConfig(first)))
	fmt.Fprintf(w, "process logs:  %s\n", rel(l.path("logs")))
	fmt.Fprintf(w, "configurations:  %s, %s\n", rel(l.coordinatorConfig()), rel(l.path("nodes", "*", "node.yaml")))
	fmt.Fprintf(w, "(haven is this binary: go run ./cmd/haven, or bin/haven after make build)\n")
	if !d.opts.Keep {
		fmt.Fprintf(w, "(%s is removed now; run the demo with --keep to look at these files afterwards)\n", rel(l.dir))
	}
}

// printFaces says where the portal and the register are, and who can sign
// in.
func (d *demoRun) printFaces(n *Network) {
	w := d.opts.Stdout
	fmt.Fprintf(w, "\n== the network's web faces ==\n")
	fmt.Fprintf(w, "commissioners' portal:        %s/\n", n.PortalURL())
	for _, u := range PortalUsers() {
		fmt.Fprintf(w, "  sign in as %s / %s (%s, %s of %s)\n", u.Username, u.Password, u.Name, strings.Join(u.Roles, ", "), u.Org)
	}
	fmt.Fprintf(w, "public transparency register: %s (no sign-in)\n", n.RegisterURL())
	cert, key := n.CommissionerCert()
	fmt.Fprintf(w, "HTTP/JSON API:                %s/v1/ (OpenAPI: %s/v1/openapi.json), as the demo commissioner:\n", n.HTTPAPIURL(), n.HTTPAPIURL())
	fmt.Fprintf(w, "  curl --cacert %s --cert %s --key %s %s/v1/runs\n", d.rel(n.CAFile()), d.rel(cert), d.rel(key), n.HTTPAPIURL())
	fmt.Fprintf(w, "Both use the coordinator's certificate, from the demo's own CA (%s): a browser will warn;\n", d.rel(n.CAFile()))
	fmt.Fprintf(w, "  curl --cacert %s %s\n", d.rel(n.CAFile()), n.RegisterURL())
	if d.opts.Serve == nil {
		fmt.Fprintf(w, "(they stop with the demo, now; haven demo --serve, or make demo DEMO_FLAGS=--serve, keeps them running)\n")
	}
}

// rel shortens a path under the working directory for display.
func (d *demoRun) rel(p string) string {
	if wd, err := os.Getwd(); err == nil {
		if r, err := filepath.Rel(wd, p); err == nil && !strings.HasPrefix(r, "..") {
			return r
		}
	}
	return p
}

// progress prints a line of progress, replacing a status line.
func (d *demoRun) progress(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	line := fmt.Sprintf(format, args...)
	if d.live {
		fmt.Fprint(d.opts.Stderr, "\r\x1b[K")
		d.live = false
	}
	fmt.Fprintf(d.opts.Stderr, "[%5.1fs] %s\n", time.Since(d.began).Seconds(), line)
}

// status shows a transient line on a terminal; elsewhere it is dropped,
// and the progress line that follows says how the step ended.
func (d *demoRun) status(format string, args ...any) {
	if !d.tty {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.opts.Stderr, "\r\x1b[K[%5.1fs] %s", time.Since(d.began).Seconds(), fmt.Sprintf(format, args...))
	d.live = true
}

// progressDone clears a status line left on the terminal.
func (d *demoRun) progressDone() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.live {
		fmt.Fprint(d.opts.Stderr, "\r\x1b[K")
		d.live = false
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func since(t time.Time) string { return time.Since(t).Round(100 * time.Millisecond).String() }
