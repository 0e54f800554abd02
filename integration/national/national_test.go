// Package national measures one coordinator process against a network of
// national size (DESIGN §12): thousands of sites linked to it at once.
//
// The coordinator is the real one, run as its own process from the haven
// binary. The sites are simulated in the benchmark's process by
// coordinatortest's node doubles, not run as nodes: each has its own
// node certificate, mTLS connection and NodeLink stream, registers,
// heartbeats, receives its tasks and answers them with real Arrow Flight
// uploads of cells computed from a generated population. That keeps a
// network of 6,730 sites on one small machine, and what is measured is
// the coordinator's side: links, dispatch, ingest and release.
//
// It has benchmarks only (make bench-national); see BenchmarkNationalLinks.
package national

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"golang.org/x/sync/errgroup"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/client"
	"github.com/havenhealth/haven/coordinator/config"
	"github.com/havenhealth/haven/coordinator/coordinatortest"
	"github.com/havenhealth/haven/integration/releasecheck"
	"github.com/havenhealth/haven/internal/testutil"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/release"
)

// BenchmarkNationalLinks links HAVEN_NATIONAL_GPS practices (default
// 6,500) and HAVEN_NATIONAL_TRUSTS trusts (default 230) to one coordinator
// process at each scale of HAVEN_NATIONAL_SCALES (patients, e.g.
// "1.5M,6M,15M,60M"; default 1.5M) and prints a table of what it costs:
//
//   - the time for every site to register, all dialling at once (the
//     simulator runs HAVEN_NATIONAL_DIALS TLS handshakes at a time,
//     default 256);
//   - an aggregate run (statins-chd) answered by every practice, submit
//     to release, its released table checked against the same question
//     answered centrally over the generated population;
//   - a linkage run (t2dm-emergency-admissions): every practice sends its
//     whole population under the run pseudonym and every trust a row per
//     patient it admitted (four in ten patients), submit to release,
//     checked the same way; the rows linked, what spilled to disk
//     (HAVEN_NATIONAL_BUDGET sets linkage.memory_budget; default the
//     coordinator's 4GiB) and the coordinator's peak RSS.
//
// At the first scale it also measures the coordinator's memory per idle
// link, its CPU while the links idle for two heartbeat intervals (15 s
// each, as deployed), and the time for every site to register again
// after a restart, the sites reconnecting with jitter over
// HAVEN_NATIONAL_JITTER (default 10s), as nodes' backoff spreads them.
// At the last scale the coordinator writes CPU and heap profiles to
// HAVEN_NATIONAL_PROFILES, if set. Then, unless HAVEN_NATIONAL_FAULTS=0,
// a linkage run at the first scale with faults (see faultRun).
//
// The population is generated, never stored (see population), so the
// simulator's memory does not grow with the scale. Run it with
// -benchtime 1x.
func BenchmarkNationalLinks(b *testing.B) {
	nb := &bench{
		gps:      testutil.EnvInt(b, "HAVEN_NATIONAL_GPS", 6500, 1),
		trusts:   testutil.EnvInt(b, "HAVEN_NATIONAL_TRUSTS", 230, 1),
		dials:    testutil.EnvInt(b, "HAVEN_NATIONAL_DIALS", 256, 1),
		jitter:   testutil.EnvDuration(b, "HAVEN_NATIONAL_JITTER", 10*time.Second),
		budget:   os.Getenv("HAVEN_NATIONAL_BUDGET"),
		profiles: os.Getenv("HAVEN_NATIONAL_PROFILES"),
		bin:      buildHaven(b),
		gate:     make(chan struct{}, 2*runtime.NumCPU()),
	}
	scales := envScales(b, "HAVEN_NATIONAL_SCALES", "1.5M")
	ctx, cancel := context.WithTimeout(b.Context(), 115*time.Minute)
	defer cancel()

	var rows []scaleRow
	for i, size := range scales {
		row := nb.scale(ctx, b, size, i == 0, i == len(scales)-1)
		rows = append(rows, row)
		b.ReportMetric(row.linkage.Seconds(), fmt.Sprintf("s/linkage-%s", scaleName(size)))
	}
	var faults *faultRow
	if os.Getenv("HAVEN_NATIONAL_FAULTS") != "0" {
		faults = nb.faultRun(ctx, b, scales[0])
	}

	first := rows[0]
	fmt.Printf("\nNational network: %d practices, %d trusts, one coordinator process (%d cores on this machine)\n",
		nb.gps, nb.trusts, runtime.NumCPU())
	fmt.Printf("%-56s %12.1f\n", "coordinator RSS before any link (MiB)", mib(first.rss0))
	fmt.Printf("%-56s %12.1f\n", "coordinator RSS, every site linked and idle (MiB)", mib(first.rssIdle))
	fmt.Printf("%-56s %12.1f\n", "memory per idle link (KiB)", float64(first.rssIdle-first.rss0)/float64(nb.gps+nb.trusts)/1024)
	fmt.Printf("%-56s %11.2f%%\n", fmt.Sprintf("coordinator CPU while idle (%s, of one core)", first.idleFor.Round(time.Second)),
		100*first.idleCPU.Seconds()/first.idleFor.Seconds())
	fmt.Printf("%-56s %12s\n", fmt.Sprintf("all sites registered after a restart, jitter %s", nb.jitter), first.reregister.Round(time.Millisecond))
	fmt.Printf("\n%-6s %6s %11s %9s %10s %10s %12s %9s %10s %10s\n", "scale", "sites", "patients", "register", "aggregate",
		"linkage", "rows linked", "s/M rows", "peak RSS", "spilled")
	for _, r := range rows {
		fmt.Printf("%-6s %6d %11d %9s %10s %10s %12d %9.2f %7.0f MiB %10s\n", scaleName(r.patients), nb.gps+nb.trusts, r.patients,
			r.register.Round(100*time.Millisecond), r.aggregate.Round(100*time.Millisecond), r.linkage.Round(100*time.Millisecond),
			r.rowsLinked, r.linkage.Seconds()/(float64(r.rowsLinked)/1e6), mib(r.peakRSS), r.spilled)
	}
	if nb.profiles != "" {
		fmt.Printf("\nprofiles of the coordinator at %s: %s (go tool pprof -top %s)\n", scaleName(scales[len(scales)-1]),
			nb.profiles, filepath.Join(nb.profiles, "coordinator.cpu.pprof"))
	}
	if faults != nil {
		faults.print()
	}
	b.ReportMetric(first.register.Seconds(), "s/register")
	b.ReportMetric(float64(first.rssIdle-first.rss0)/float64(nb.gps+nb.trusts)/1024, "KiB/link")
	b.ReportMetric(first.aggregate.Seconds(), "s/run")
}

// bench is one national bench: the network's shape and the simulator's
// settings.
type bench struct {
	gps, trusts, dials int
	jitter             time.Duration
	budget, profiles   string
	bin                string
	// gate bounds the simulated sites building and uploading answers at
	// once (NodeDouble.Gate).
	gate chan struct{}
}

// scaleRow is what one scale measured.
type scaleRow struct {
	patients                     int64
	register, aggregate, linkage time.Duration
	rowsLinked                   int64
	peakRSS                      int64
	spilled                      string
	// The first scale's extra figures.
	rss0, rssIdle    int64
	idleCPU, idleFor time.Duration
	reregister       time.Duration
}

// network is one coordinator process and its simulated sites.
type network struct {
	n       *coordinatortest.Network
	pop     *population
	coord   *coordinatorProc
	nodes   []*coordinatortest.NodeDouble
	sites   []config.Site
	statins *catalog.Definition
	t2dm    *catalog.Definition
	// Bands map ages to each definition's age bands.
	statinBands, t2dmBands []string
}

// setUp writes a network's files for a population of size, starts its
// coordinator (with extra arguments) and makes a node double for every
// site; configure, if set, adjusts each before it links. Nothing is
// linked yet.
func (nb *bench) setUp(ctx context.Context, b *testing.B, size int64, opts coordinatortest.Options, args []string,
	configure func(i int, s config.Site, nd *coordinatortest.NodeDouble)) *network {
	b.Helper()
	began := time.Now()
	pop := newPopulation(1, nb.gps, nb.trusts, size)
	var sites []config.Site
	for p := range nb.gps {
		sites = append(sites, config.Site{ODS: fmt.Sprintf("N%05d", p+1), Kind: cdm.KindGP, Population: pop.listSize(p)})
	}
	activity := make([]int64, nb.trusts)
	var g errgroup.Group
	g.SetLimit(runtime.NumCPU())
	for t := range nb.trusts {
		sites = append(sites, config.Site{ODS: fmt.Sprintf("RN%03d", t+1), Kind: cdm.KindTrust})
		g.Go(func() error { activity[t] = pop.trustRowCount(t); return nil })
	}
	_ = g.Wait()
	opts.External, opts.Sites, opts.Heartbeat = true, sites, nationalHeartbeat
	if opts.Deadline == 0 {
		opts.Deadline = 15 * time.Minute
	}
	opts.LinkageBudget = nb.budget
	n := coordinatortest.New(b, opts)
	for _, s := range sites {
		n.NodeCert(s.ODS)
	}
	w := &network{n: n, pop: pop, sites: sites}
	var ok1, ok2 bool
	w.statins, ok1 = n.Catalog.Get("statins-chd")
	w.t2dm, ok2 = n.Catalog.Get("t2dm-emergency-admissions")
	if !ok1 || !ok2 {
		b.Fatal("the bundle lacks statins-chd or t2dm-emergency-admissions")
	}
	var err error
	if w.statinBands, err = ageBands(w.statins); err != nil {
		b.Fatal(err)
	}
	if w.t2dmBands, err = ageBands(w.t2dm); err != nil {
		b.Fatal(err)
	}
	w.nodes = make([]*coordinatortest.NodeDouble, len(sites))
	for i, s := range sites {
		nd := n.Node(s.ODS, s.Kind, s.Population)
		nd.Gate = nb.gate
		if s.Kind == cdm.KindGP {
			nd.Answer = func(task *havenv1.Task, schema *arrow.Schema) ([]arrow.Record, error) {
				if task.GetDefinitionId() == w.t2dm.ID {
					return pop.practiceRows(i, schema, w.t2dmBands, task.GetRunId()), nil
				}
				return pop.statinRows(i, schema, w.statinBands)
			}
		} else {
			t := i - nb.gps
			nd.Activity = activity[t]
			nd.Answer = func(task *havenv1.Task, schema *arrow.Schema) ([]arrow.Record, error) {
				return pop.trustRows(t, schema, task.GetRunId()), nil
			}
		}
		if configure != nil {
			configure(i, s, nd)
		}
		w.nodes[i] = nd
	}
	fmt.Fprintf(os.Stderr, "national: %s patients over %d sites laid out (%s)\n", scaleName(size), len(sites), time.Since(began).Round(time.Millisecond))
	w.coord = startCoordinator(b, ctx, nb.bin, n, args...)
	return w
}

// stop ends the sites' links and stops the coordinator.
func (w *network) stop(b *testing.B) {
	for _, nd := range w.nodes {
		nd.Close()
	}
	stopCoordinator(b, w.coord)
}

// scale measures one scale.
func (nb *bench) scale(ctx context.Context, b *testing.B, size int64, first, last bool) scaleRow {
	b.Helper()
	var args []string
	if last && nb.profiles != "" {
		if err := os.MkdirAll(nb.profiles, 0o755); err != nil {
			b.Fatal(err)
		}
		args = []string{"--cpu-profile", filepath.Join(nb.profiles, "coordinator.cpu.pprof"),
			"--heap-profile", filepath.Join(nb.profiles, "coordinator.heap.pprof")}
	}
	w := nb.setUp(ctx, b, size, coordinatortest.Options{}, args, nil)
	row := scaleRow{patients: size, rss0: rss(b, w.coord.pid())}
	row.register = connectAll(b, ctx, w.nodes, nb.dials, 0)

	if first {
		cpu0 := cpuTime(b, w.coord.pid())
		idleFrom := time.Now()
		time.Sleep(2 * nationalHeartbeat)
		row.idleCPU = cpuTime(b, w.coord.pid()) - cpu0
		row.idleFor = time.Since(idleFrom)
		row.rssIdle = rss(b, w.coord.pid())
	}

	var run *havenv1.Run
	row.aggregate, run = submit(b, ctx, w.n, "statins-chd", nil)
	w.check(ctx, b, run, w.statinsTruth(nil), nb.gps, 0)

	row.linkage, run = submit(b, ctx, w.n, "t2dm-emergency-admissions", map[string]*havenv1.ParameterValue{
		"index_date": {Value: &havenv1.ParameterValue_DateValue{DateValue: coordinatortest.IndexDate}}})
	w.check(ctx, b, run, w.t2dmTruth(nil, nil), nb.gps, nb.trusts)
	for _, s := range run.GetCoverage().GetSites() {
		row.rowsLinked += s.GetRows()
	}
	row.peakRSS = peakRSS(b, w.coord.pid())
	row.spilled = spilled(b, w.coord.log)

	if first {
		// Restart: every link drops; the sites come back with jitter.
		for _, nd := range w.nodes {
			nd.Close()
		}
		stopCoordinator(b, w.coord)
		w.coord = startCoordinator(b, ctx, nb.bin, w.n, args...)
		for i, s := range w.sites {
			w.nodes[i] = w.n.Node(s.ODS, s.Kind, s.Population)
		}
		row.reregister = connectAll(b, ctx, w.nodes, nb.dials, nb.jitter)
	}
	w.stop(b)
	fmt.Fprintf(os.Stderr, "national: %s done: register %s, statins-chd %s, t2dm-emergency-admissions %s (%d rows linked), peak RSS %.0f MiB, spilled %s\n",
		scaleName(size), row.register.Round(time.Millisecond), row.aggregate.Round(time.Millisecond), row.linkage.Round(time.Millisecond),
		row.rowsLinked, mib(row.peakRSS), row.spilled)
	return row
}

// check fails the bench unless run was released with gps practices and
// trusts trusts answering, and its table is the true table, as
// disclosure control releases it.
func (w *network) check(ctx context.Context, b *testing.B, run *havenv1.Run, truth releasecheck.TrueTable, gps, trusts int) {
	b.Helper()
	what := run.GetDefinitionId()
	if run.GetState() != havenv1.RunState_RUN_STATE_RELEASED {
		b.Fatalf("%s ended %s: %v %s", what, run.GetState(), run.GetPolicyReasons(), run.GetError())
	}
	cov := run.GetCoverage()
	if got := cov.GetSitesAnswered() - cov.GetTrustsAnswered(); got != int32(gps) {
		b.Errorf("%s: %d practices answered, want %d", what, got, gps)
	}
	if got := cov.GetTrustsAnswered(); got != int32(trusts) {
		b.Errorf("%s: %d trusts answered, want %d", what, got, trusts)
	}
	tab := fetch(ctx, b, w.n, run.GetId())
	st, problems := releasecheck.Check(tab, truth, nil, nil)
	for _, p := range problems[:min(len(problems), 20)] {
		b.Errorf("%s: %s", what, p)
	}
	if st.Problems > 0 {
		b.Fatalf("%s: %d problems in the released table", what, st.Problems)
	}
	fmt.Fprintf(os.Stderr, "national: %s released and checked against the central answer: %d cells, %d released, %d withheld\n",
		what, st.Cells, st.Released, st.Withheld)
}

// statinsTruth is statins-chd answered centrally over the practices in
// (all when nil).
func (w *network) statinsTruth(in func(p int) bool) releasecheck.TrueTable {
	tt := releasecheck.TrueTable{}
	for p := range len(w.pop.first) - 1 {
		if in != nil && !in(p) {
			continue
		}
		for k, c := range w.pop.statinCells(p, w.statinBands) {
			cell := tt.Cell(k[0], k[1])
			cell.Add("patients", float64(c.patients), false)
			cell.Add("on_statin", float64(c.onStatin), false)
			cell.Add("statin_issues", float64(c.sum), false)
			cell.N["statin_issues"] += c.n
		}
	}
	return tt
}

// t2dmTruth is t2dm-emergency-admissions answered centrally: the
// patients of the practices in (all when nil) and their admissions at
// the trusts in (all when nil).
func (w *network) t2dmTruth(practiceIn, trustIn func(int) bool) releasecheck.TrueTable {
	type cell struct{ patients, admitted, admissions int64 }
	cells := map[[2]string]*cell{}
	for p := range len(w.pop.first) - 1 {
		if practiceIn != nil && !practiceIn(p) {
			continue
		}
		for id := w.pop.first[p]; id < w.pop.first[p+1]; id++ {
			pt := w.pop.patient(p, id)
			k := [2]string{w.t2dmBands[pt.age], pt.sex}
			c := cells[k]
			if c == nil {
				c = &cell{}
				cells[k] = c
			}
			c.patients++
			if pt.trust >= 0 && (trustIn == nil || trustIn(pt.trust)) {
				c.admitted++
				c.admissions += pt.admissions
			}
		}
	}
	tt := releasecheck.TrueTable{}
	for k, c := range cells {
		cell := tt.Cell(k[0], k[1])
		cell.Add("patients", float64(c.patients), false)
		cell.Add("admitted", float64(c.admitted), false)
		// Every patient admitted adds to the sum: they are its n.
		cell.Add("admissions", float64(c.admissions), false)
		cell.N["admissions"] += c.admitted
	}
	return tt
}

// fetch reads a released table as a commissioner does.
func fetch(ctx context.Context, b *testing.B, n *coordinatortest.Network, runID string) *release.Table {
	b.Helper()
	cert, key := n.UserCert("ana", "QHM", "analyst")
	c, err := client.Dial(client.Config{Addr: n.Addr, CAFile: n.CAFile, CertFile: cert, KeyFile: key})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	tab, err := c.Fetch(ctx, runID)
	if err != nil {
		b.Fatalf("fetch run %s: %v", runID, err)
	}
	return tab
}

// nationalHeartbeat is the links' heartbeat interval, as deployed.
const nationalHeartbeat = 15 * time.Second

// envScales reads a comma-separated list of population sizes ("1.5M",
// "60M", "250k" or a plain number).
func envScales(b *testing.B, name, def string) []int64 {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		v = def
	}
	var out []int64
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		mult := 1.0
		switch {
		case strings.HasSuffix(f, "M"):
			mult, f = 1e6, strings.TrimSuffix(f, "M")
		case strings.HasSuffix(f, "k"):
			mult, f = 1e3, strings.TrimSuffix(f, "k")
		}
		x, err := strconv.ParseFloat(f, 64)
		if err != nil || x*mult < 1 {
			b.Fatalf("%s=%q: want sizes like 1.5M,6M,15M,60M", name, v)
		}
		out = append(out, int64(math.Round(x*mult)))
	}
	return out
}

// scaleName writes a size as envScales reads it.
func scaleName(n int64) string {
	switch {
	case n >= 1e6:
		return strconv.FormatFloat(float64(n)/1e6, 'f', -1, 64) + "M"
	case n >= 1e3:
		return strconv.FormatFloat(float64(n)/1e3, 'f', -1, 64) + "k"
	}
	return strconv.FormatInt(n, 10)
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// connectAll links every node, at most dials at a time, each after a
// random wait under jitter, and returns how long until all had
// registered.
func connectAll(b *testing.B, ctx context.Context, nodes []*coordinatortest.NodeDouble, dials int, jitter time.Duration) time.Duration {
	b.Helper()
	began := time.Now()
	var g errgroup.Group
	g.SetLimit(dials)
	var done atomic.Int64
	for _, nd := range nodes {
		wait := time.Duration(0)
		if jitter > 0 {
			wait = rand.N(jitter)
		}
		g.Go(func() error {
			if wait > 0 {
				select {
				case <-time.After(wait - time.Since(began)):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			// A refused or dropped dial is retried, as a node does.
			var err error
			for try := 0; try < 20; try++ {
				if err = nd.Connect(ctx); err == nil {
					break
				}
				var rej *coordinatortest.RejectedError
				if errors.As(err, &rej) {
					return fmt.Errorf("%s: %w", nd.ODS, err)
				}
				time.Sleep(time.Duration(try+1) * 100 * time.Millisecond)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", nd.ODS, err)
			}
			if k := done.Add(1); k%1000 == 0 {
				fmt.Fprintf(os.Stderr, "national: %d/%d sites registered (%s)\n", k, len(nodes), time.Since(began).Round(time.Millisecond))
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatalf("link the sites: %v", err)
	}
	return time.Since(began)
}

// submit submits def with params and waits for the run to end.
func submit(b *testing.B, ctx context.Context, n *coordinatortest.Network, def string, params map[string]*havenv1.ParameterValue) (time.Duration, *havenv1.Run) {
	b.Helper()
	return start(b, ctx, n, def, params).wait(b, ctx)
}

// pending is a submitted run.
type pending struct {
	api   havenv1.CoordinatorClient
	id    string
	began time.Time
}

// start submits def with params as a commissioner of QHM.
func start(b *testing.B, ctx context.Context, n *coordinatortest.Network, def string, params map[string]*havenv1.ParameterValue) *pending {
	b.Helper()
	cert, key := n.UserCert("ana", "QHM", "analyst")
	api := havenv1.NewCoordinatorClient(n.Dial(cert, key))
	began := time.Now()
	fmt.Fprintf(os.Stderr, "national: %s…\n", def)
	resp, err := api.SubmitRun(ctx, &havenv1.SubmitRunRequest{DefinitionId: def, Purpose: "service_evaluation", Parameters: params})
	if err != nil {
		b.Fatalf("submit %s: %v", def, err)
	}
	return &pending{api: api, id: resp.GetRun().GetId(), began: began}
}

// wait waits for the run to end, polling (a watch would carry an event
// per site), and returns how long it took from submission.
func (p *pending) wait(b *testing.B, ctx context.Context) (time.Duration, *havenv1.Run) {
	b.Helper()
	for {
		r, err := p.api.GetRun(ctx, &havenv1.GetRunRequest{RunId: p.id})
		if err != nil {
			b.Fatalf("get run: %v", err)
		}
		switch r.GetRun().GetState() {
		case havenv1.RunState_RUN_STATE_RELEASED, havenv1.RunState_RUN_STATE_REFUSED, havenv1.RunState_RUN_STATE_FAILED,
			havenv1.RunState_RUN_STATE_CANCELLED:
			return time.Since(p.began), r.GetRun()
		}
		select {
		case <-ctx.Done():
			b.Fatalf("run %s: %v", p.id, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// buildHaven builds the haven binary into a temporary directory.
func buildHaven(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	cmd := exec.Command("go", "build", "-o", dir, "./cmd/haven")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build haven: %v\n%s", err, out)
	}
	return filepath.Join(dir, "haven")
}

// coordinatorProc is the coordinator process.
type coordinatorProc struct {
	cmd    *exec.Cmd
	exited chan error // receives Wait's result once
	log    string
}

func (c *coordinatorProc) pid() int { return c.cmd.Process.Pid }

// startCoordinator runs `haven coordinator run` on n's files and waits
// until it listens.
func startCoordinator(b *testing.B, ctx context.Context, bin string, n *coordinatortest.Network, args ...string) *coordinatorProc {
	b.Helper()
	logPath := filepath.Join(n.Dir, "coordinator.log")
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"--log-format", "text", "coordinator", "run", "--config", n.ConfigPath}, args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		b.Fatalf("start the coordinator: %v", err)
	}
	c := &coordinatorProc{cmd: cmd, exited: make(chan error, 1), log: logPath}
	go func() { c.exited <- cmd.Wait(); log.Close() }()
	b.Cleanup(func() { _ = cmd.Process.Kill() })
	for {
		conn, err := net.DialTimeout("tcp", n.Addr, time.Second)
		if err == nil {
			conn.Close()
			return c
		}
		select {
		case err := <-c.exited:
			b.Fatalf("the coordinator exited (%v); its log is %s", err, logPath)
		case <-ctx.Done():
			b.Fatalf("the coordinator did not listen on %s; its log is %s", n.Addr, logPath)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stopCoordinator stops it as an operator does, with SIGTERM.
func stopCoordinator(b *testing.B, c *coordinatorProc) {
	b.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		b.Fatalf("stop the coordinator: %v", err)
	}
	if err := <-c.exited; err != nil {
		b.Fatalf("the coordinator stopped with %v; its log is %s", err, c.log)
	}
}

// rss is a process's resident set size in bytes, from /proc.
func rss(b *testing.B, pid int) int64 { return procStatus(b, pid, "VmRSS:") }

// spilled is what the coordinator's log says its linkage runs spilled to
// disk ("none" when nothing was).
func spilled(b *testing.B, logPath string) string {
	b.Helper()
	raw, err := os.ReadFile(logPath)
	if err != nil {
		b.Fatal(err)
	}
	out := "none"
	for line := range strings.Lines(string(raw)) {
		if !strings.Contains(line, "linkage spilled to disk") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "spilled_bytes="); ok {
				if n, err := strconv.ParseInt(v, 10, 64); err == nil {
					out = fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
				}
			}
		}
	}
	return out
}

// peakRSS is a process's peak resident memory so far.
func peakRSS(b *testing.B, pid int) int64 { return procStatus(b, pid, "VmHWM:") }

// procStatus reads a size in kB from a process's /proc status.
func procStatus(b *testing.B, pid int, field string) int64 {
	b.Helper()
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatalf("read the coordinator's memory: %v", err)
	}
	for _, line := range strings.Split(string(s), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				b.Fatalf("%s %q: %v", field, line, err)
			}
			return kb << 10
		}
	}
	b.Fatalf("no %s in /proc status", field)
	return 0
}

// cpuTime is a process's user and system CPU time so far, from /proc
// (in clock ticks of 1/100 s, as on Linux everywhere Haven runs).
func cpuTime(b *testing.B, pid int) time.Duration {
	b.Helper()
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatalf("read the coordinator's CPU time: %v", err)
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(s[strings.LastIndexByte(string(s), ')')+1:]))
	if len(f) < 13 {
		b.Fatalf("short /proc stat: %q", s)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
