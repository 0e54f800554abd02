// Package national simulates England's network against one real
// coordinator process, to measure what DESIGN §12 claims of it: that one
// coordinator, scaled up rather than out, serves 6,500 practices, 230
// trusts and 60 million patients.
//
// The coordinator is the real one, run as its own process from the haven
// binary. The sites are simulated in this process (coordinator/sitesim),
// not run as nodes: each has its own node certificate, mTLS connection
// and NodeLink stream, registers, heartbeats, receives its tasks and
// answers them with real Arrow Flight uploads computed from a generated
// population that is never held in memory (see population). That keeps a
// national network on one small machine, and what is measured is the
// coordinator's side: links, dispatch, ingest, linkage and release.
//
// Every released table is checked: coverage must count exactly the sites
// that answered, and the table must be the same question answered
// centrally over the generated population, as disclosure control
// releases it (Options.Check; without one, the grand total of each
// count).
//
// `haven bench national` and `make bench-national` run it.
package national

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/havenhealth/haven/coordinator/sitesim"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/release"
)

// Options shape a national simulation.
type Options struct {
	// Haven is the haven binary the coordinator runs from.
	Haven string
	// BundleSource is the reference governance bundle (policy/bundle),
	// which the simulation signs a copy of with its own board key.
	BundleSource string
	// Dir holds each network's files, logs and data; it must be empty or
	// not exist.
	Dir string
	// Practices and Trusts are the network's sites (6,500 and 230).
	Practices, Trusts int
	// Scales are the population sizes to simulate, each on a fresh
	// coordinator, in order.
	Scales []int64
	// Seed makes the population; the same seed gives the same patients.
	Seed uint64
	// Budget is the coordinator's linkage.memory_budget ("" for its
	// default, 4GiB).
	Budget string
	// MemoryLimit is the coordinator's memory_limit, the soft limit of
	// its garbage collector ("" for none).
	MemoryLimit string
	// Dials is how many sites dial at once (TLS handshakes in flight).
	Dials int
	// Jitter spreads the sites' reconnection after the restart, as
	// nodes' backoff does.
	Jitter time.Duration
	// Idle measures, at the first scale, the coordinator's memory and
	// CPU with every link idle for two heartbeat intervals (30 s), and
	// the time for every site to register again after a restart.
	Idle bool
	// Profiles, if set, is a directory for the coordinator's CPU and
	// heap profiles at the last scale.
	Profiles string
	// Faults adds a run with faults at the first scale (see faultRun);
	// FaultDeadline is its runs' deadline, which its silent sites wait
	// out.
	Faults        bool
	FaultDeadline time.Duration
	// Check, if set, checks a released table against the true answer,
	// returning one line per problem; without it only each count's grand
	// total is checked.
	Check func(tab *release.Table, truth Truth) []string
	// Progress receives a line for each step; nil discards them.
	Progress io.Writer

	gate chan struct{}
}

// Report is what a simulation measured.
type Report struct {
	Practices, Trusts int
	Cores             int
	Scales            []ScaleRow
	// Idle figures, measured at the first scale when Options.Idle.
	Idle *IdleRow
	// Faults, when Options.Faults.
	Faults   *FaultRow
	Profiles string // where the last scale's profiles are, if written
}

// ScaleRow is one scale's figures.
type ScaleRow struct {
	Patients                     int64
	Register, Aggregate, Linkage time.Duration
	// RowsLinked counts the rows the linkage run's sites sent.
	RowsLinked int64
	PeakRSS    int64
	Spilled    int64
}

// IdleRow is the coordinator with every site linked and idle.
type IdleRow struct {
	RSSBefore, RSSIdle int64
	CPU, For           time.Duration
	Reregister         time.Duration
}

// Run runs the simulation at every scale of opts and returns what it
// measured; it stops at the first failure, naming it.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	opts.gate = make(chan struct{}, 2*runtime.NumCPU())
	rep := &Report{Practices: opts.Practices, Trusts: opts.Trusts, Cores: runtime.NumCPU()}
	for i, size := range opts.Scales {
		row, idle, err := opts.scale(ctx, i, size, i == len(opts.Scales)-1)
		if err != nil {
			return rep, fmt.Errorf("at %s patients: %w", ScaleName(size), err)
		}
		rep.Scales = append(rep.Scales, row)
		if idle != nil {
			rep.Idle = idle
		}
	}
	if opts.Profiles != "" {
		rep.Profiles = opts.Profiles
	}
	if opts.Faults {
		fr, err := opts.faultRun(ctx, opts.Scales[0])
		if err != nil {
			return rep, fmt.Errorf("fault run: %w", err)
		}
		rep.Faults = fr
	}
	return rep, nil
}

func (o *Options) check() error {
	var errs []error
	if o.Haven == "" || o.BundleSource == "" || o.Dir == "" {
		errs = append(errs, errors.New("the haven binary, the bundle and a directory are required"))
	}
	if o.Practices < 20 || o.Trusts < 1 {
		errs = append(errs, fmt.Errorf("%d practices and %d trusts: want at least 20 practices and a trust", o.Practices, o.Trusts))
	}
	if len(o.Scales) == 0 {
		errs = append(errs, errors.New("no scales"))
	}
	for _, s := range o.Scales {
		if s < int64(o.Practices) {
			errs = append(errs, fmt.Errorf("scale %s: fewer patients than practices", ScaleName(s)))
		}
	}
	if o.Dials < 1 {
		errs = append(errs, fmt.Errorf("dials %d: want at least 1", o.Dials))
	}
	if o.Faults && o.FaultDeadline < 10*time.Second {
		errs = append(errs, fmt.Errorf("fault deadline %s: want at least 10s", o.FaultDeadline))
	}
	if entries, err := os.ReadDir(o.Dir); err == nil && len(entries) > 0 {
		errs = append(errs, fmt.Errorf("directory %s is not empty", o.Dir))
	}
	return errors.Join(errs...)
}

func (o *Options) progress(format string, args ...any) {
	fmt.Fprintf(o.Progress, "national: "+format+"\n", args...)
}

// scale measures scale i, of size patients.
func (o *Options) scale(ctx context.Context, i int, size int64, last bool) (row ScaleRow, idle *IdleRow, err error) {
	row.Patients = size
	began := time.Now()
	pop := newPopulation(o.Seed, o.Practices, o.Trusts, size)
	no := netOptions{deadline: 15 * time.Minute, budget: o.Budget, limit: o.MemoryLimit}
	if last && o.Profiles != "" {
		if err := os.MkdirAll(o.Profiles, 0o755); err != nil {
			return row, nil, err
		}
		no.args = []string{"--cpu-profile", filepath.Join(o.Profiles, "coordinator.cpu.pprof"),
			"--heap-profile", filepath.Join(o.Profiles, "coordinator.heap.pprof")}
	}
	w, err := o.setUp(ctx, filepath.Join(o.Dir, "scale-"+ScaleName(size)), pop, no)
	if err != nil {
		return row, nil, err
	}
	defer func() {
		if err != nil {
			w.closeLinks()
			w.coord.kill()
		}
	}()
	o.progress("%s patients over %d sites laid out, coordinator started (%s)", ScaleName(size), len(w.sites), time.Since(began).Round(time.Millisecond))
	rss0, err := rss(w.coord.pid())
	if err != nil {
		return row, nil, err
	}
	if row.Register, err = o.connectAll(ctx, w.nodes, 0); err != nil {
		return row, nil, err
	}
	o.progress("%d sites registered in %s", len(w.nodes), row.Register.Round(time.Millisecond))

	if i == 0 && o.Idle {
		idle = &IdleRow{RSSBefore: rss0}
		cpu0, err := cpuTime(w.coord.pid())
		if err != nil {
			return row, nil, err
		}
		from := time.Now()
		select {
		case <-time.After(2 * heartbeat):
		case <-ctx.Done():
			return row, nil, ctx.Err()
		}
		cpu1, err := cpuTime(w.coord.pid())
		if err != nil {
			return row, nil, err
		}
		idle.CPU, idle.For = cpu1-cpu0, time.Since(from)
		if idle.RSSIdle, err = rss(w.coord.pid()); err != nil {
			return row, nil, err
		}
	}

	c, err := w.client()
	if err != nil {
		return row, nil, err
	}
	defer c.Close()
	var run *havenv1.Run
	if row.Aggregate, run, err = o.submit(ctx, c, "statins-chd", nil); err != nil {
		return row, nil, err
	}
	if err := o.checkRun(ctx, w, c, run, pop.statinsTruth(w.statinBands, nil), o.Practices, 0); err != nil {
		return row, nil, err
	}
	if row.Linkage, run, err = o.submit(ctx, c, "t2dm-emergency-admissions", indexDate()); err != nil {
		return row, nil, err
	}
	if err := o.checkRun(ctx, w, c, run, pop.t2dmTruth(w.t2dmBands, nil, nil), o.Practices, o.Trusts); err != nil {
		return row, nil, err
	}
	for _, s := range run.GetCoverage().GetSites() {
		row.RowsLinked += s.GetRows()
	}
	if row.PeakRSS, err = peakRSS(w.coord.pid()); err != nil {
		return row, nil, err
	}
	if row.Spilled, err = spilled(w.coord.log); err != nil {
		return row, nil, err
	}

	if idle != nil {
		// Restart: every link drops; the sites come back with jitter.
		w.closeLinks()
		if err := w.coord.stop(); err != nil {
			return row, nil, err
		}
		if w.coord, err = startCoordinator(ctx, o.Haven, w.configPath, w.addr, w.coord.log, no.args...); err != nil {
			return row, nil, err
		}
		w.renew()
		if idle.Reregister, err = o.connectAll(ctx, w.nodes, o.Jitter); err != nil {
			return row, nil, err
		}
		o.progress("%d sites registered again after a restart in %s", len(w.nodes), idle.Reregister.Round(time.Millisecond))
	}
	if err := w.stop(); err != nil {
		return row, nil, err
	}
	o.progress("%s done: register %s, statins-chd %s, t2dm-emergency-admissions %s (%d rows linked), peak RSS %.0f MiB, spilled %.1f MiB",
		ScaleName(size), row.Register.Round(time.Millisecond), row.Aggregate.Round(time.Millisecond), row.Linkage.Round(time.Millisecond),
		row.RowsLinked, mib(row.PeakRSS), mib(row.Spilled))
	return row, idle, nil
}

// indexDate is the parameters the linkage runs are submitted with.
func indexDate() map[string]*havenv1.ParameterValue {
	return map[string]*havenv1.ParameterValue{"index_date": {Value: &havenv1.ParameterValue_DateValue{DateValue: IndexDate}}}
}

// IndexDate is the index date of the linkage runs.
const IndexDate = "2024-04-01"

// connectAll links every site, at most o.Dials at a time, each after a
// random wait under jitter, and returns how long until all had
// registered. A refused or dropped dial is retried, as a node does; a
// site the coordinator rejects fails the simulation.
func (o *Options) connectAll(ctx context.Context, nodes []*sitesim.Site, jitter time.Duration) (time.Duration, error) {
	began := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(o.Dials)
	var done atomic.Int64
	for _, st := range nodes {
		wait := time.Duration(0)
		if jitter > 0 {
			wait = rand.N(jitter)
		}
		g.Go(func() error {
			if d := wait - time.Since(began); d > 0 {
				select {
				case <-time.After(d):
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			var err error
			for try := 0; try < 20; try++ {
				if err = st.Connect(gctx); err == nil {
					break
				}
				var rej *sitesim.RejectedError
				if errors.As(err, &rej) {
					return fmt.Errorf("%s: %w", st.ODS, err)
				}
				select {
				case <-time.After(time.Duration(try+1) * 100 * time.Millisecond):
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			if err != nil {
				return fmt.Errorf("%s: %w", st.ODS, err)
			}
			if k := done.Add(1); k%1000 == 0 {
				o.progress("%d/%d sites registered (%s)", k, len(nodes), time.Since(began).Round(time.Millisecond))
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, fmt.Errorf("link the sites: %w", err)
	}
	return time.Since(began), nil
}

// pending is a submitted run.
type pending struct {
	id    string
	began time.Time
}

// start submits def with params.
func (o *Options) start(ctx context.Context, c runClient, def string, params map[string]*havenv1.ParameterValue) (*pending, error) {
	o.progress("%s…", def)
	began := time.Now()
	resp, err := c.Coordinator().SubmitRun(ctx, &havenv1.SubmitRunRequest{DefinitionId: def, Purpose: "service_evaluation", Parameters: params})
	if err != nil {
		return nil, fmt.Errorf("submit %s: %w", def, err)
	}
	return &pending{id: resp.GetRun().GetId(), began: began}, nil
}

// wait waits for the run to end, polling (a watch would carry an event
// per site), and returns how long it took from submission.
func (p *pending) wait(ctx context.Context, c runClient) (time.Duration, *havenv1.Run, error) {
	for {
		r, err := c.Coordinator().GetRun(ctx, &havenv1.GetRunRequest{RunId: p.id})
		if err != nil {
			return 0, nil, fmt.Errorf("run %s: %w", p.id, err)
		}
		switch r.GetRun().GetState() {
		case havenv1.RunState_RUN_STATE_RELEASED, havenv1.RunState_RUN_STATE_REFUSED, havenv1.RunState_RUN_STATE_FAILED,
			havenv1.RunState_RUN_STATE_CANCELLED:
			return time.Since(p.began), r.GetRun(), nil
		}
		select {
		case <-ctx.Done():
			return 0, nil, fmt.Errorf("run %s: %w", p.id, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// submit submits def with params and waits for the run to end.
func (o *Options) submit(ctx context.Context, c runClient, def string, params map[string]*havenv1.ParameterValue) (time.Duration, *havenv1.Run, error) {
	p, err := o.start(ctx, c, def, params)
	if err != nil {
		return 0, nil, err
	}
	return p.wait(ctx, c)
}

// runClient is the commissioner client's side the simulation uses.
type runClient interface {
	Coordinator() havenv1.CoordinatorClient
	Fetch(ctx context.Context, runID string) (*release.Table, error)
}

// checkRun checks that run was released with gps practices and trusts
// trusts answering and that its table is the true answer, as disclosure
// control releases it.
func (o *Options) checkRun(ctx context.Context, w *network, c runClient, run *havenv1.Run, truth Truth, gps, trusts int) error {
	what := run.GetDefinitionId()
	if run.GetState() != havenv1.RunState_RUN_STATE_RELEASED {
		return fmt.Errorf("%s ended %s: %v %s", what, run.GetState(), run.GetPolicyReasons(), run.GetError())
	}
	var errs []error
	cov := run.GetCoverage()
	if got := cov.GetSitesAnswered() - cov.GetTrustsAnswered(); got != int32(gps) {
		errs = append(errs, fmt.Errorf("%s: %d practices answered, want %d", what, got, gps))
	}
	if got := cov.GetTrustsAnswered(); got != int32(trusts) {
		errs = append(errs, fmt.Errorf("%s: %d trusts answered, want %d", what, got, trusts))
	}
	tab, err := c.Fetch(ctx, run.GetId())
	if err != nil {
		return fmt.Errorf("%s: fetch the table: %w", what, err)
	}
	var problems []string
	if o.Check != nil {
		problems = o.Check(tab, truth)
	} else {
		problems = checkTotals(tab, truth)
	}
	for _, p := range problems[:min(len(problems), 10)] {
		errs = append(errs, fmt.Errorf("%s: %s", what, p))
	}
	if len(problems) > 10 {
		errs = append(errs, fmt.Errorf("%s: and %d more problems", what, len(problems)-10))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	o.progress("%s released: coverage and table checked against the central answer", what)
	return nil
}

// checkTotals checks each count's grand total in tab against truth: the
// true total rounded to the table's base (the simulation's bundle does not
// perturb). Options.Check does the whole table.
func checkTotals(tab *release.Table, truth Truth) []string {
	var problems []string
	base := float64(max(tab.Meta.RoundingBase, 1))
	for _, r := range tab.Rows {
		if r.Kind != release.RowTotal {
			continue
		}
		for m, v := range r.Values {
			name := tab.Measures[m].Name
			want, ok := truth.total(name)
			if !ok || !v.Released {
				continue
			}
			if math.Abs(v.Value-want) > base/2 {
				problems = append(problems, fmt.Sprintf("total %s is %v, want %v rounded to %v", name, v.Value, want, base))
			}
		}
	}
	return problems
}

// total is measure's total over every cell, if every cell has it.
func (t Truth) total(measure string) (float64, bool) {
	var sum float64
	for _, c := range t {
		v, ok := c.Values[measure]
		if !ok {
			return 0, false
		}
		sum += v
	}
	return sum, len(t) > 0
}

// Print writes the report as tables.
func (r *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "\nNational network: %d practices, %d trusts, one coordinator process (%d cores on this machine)\n",
		r.Practices, r.Trusts, r.Cores)
	if i := r.Idle; i != nil {
		sites := r.Practices + r.Trusts
		fmt.Fprintf(w, "%-56s %12.1f\n", "coordinator RSS before any link (MiB)", mib(i.RSSBefore))
		fmt.Fprintf(w, "%-56s %12.1f\n", "coordinator RSS, every site linked and idle (MiB)", mib(i.RSSIdle))
		fmt.Fprintf(w, "%-56s %12.1f\n", "memory per idle link (KiB)", float64(i.RSSIdle-i.RSSBefore)/float64(sites)/1024)
		fmt.Fprintf(w, "%-56s %11.2f%%\n", fmt.Sprintf("coordinator CPU while idle (%s, of one core)", i.For.Round(time.Second)),
			100*i.CPU.Seconds()/i.For.Seconds())
		fmt.Fprintf(w, "%-56s %12s\n", "all sites registered again after a restart", i.Reregister.Round(time.Millisecond))
	}
	fmt.Fprintf(w, "\n%-6s %6s %11s %9s %10s %10s %12s %9s %10s %10s\n", "scale", "sites", "patients", "register", "aggregate",
		"linkage", "rows linked", "s/M rows", "peak RSS", "spilled")
	for _, s := range r.Scales {
		fmt.Fprintf(w, "%-6s %6d %11d %9s %10s %10s %12d %9.2f %6.0f MiB %6.0f MiB\n", ScaleName(s.Patients), r.Practices+r.Trusts, s.Patients,
			s.Register.Round(100*time.Millisecond), s.Aggregate.Round(100*time.Millisecond), s.Linkage.Round(100*time.Millisecond),
			s.RowsLinked, s.Linkage.Seconds()/(float64(s.RowsLinked)/1e6), mib(s.PeakRSS), mib(s.Spilled))
	}
	if r.Profiles != "" && len(r.Scales) > 0 {
		fmt.Fprintf(w, "\nthe coordinator's profiles at %s: %s (go tool pprof -top %s)\n", ScaleName(r.Scales[len(r.Scales)-1].Patients),
			r.Profiles, filepath.Join(r.Profiles, "coordinator.cpu.pprof"))
	}
	if r.Faults != nil {
		r.Faults.print(w)
	}
}

// ParseScales reads a comma-separated list of population sizes such as
// "1.5M,6M,15M,60M" ("250k" and plain numbers too).
func ParseScales(v string) ([]int64, error) {
	var out []int64
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		num, mult := f, 1.0
		switch {
		case strings.HasSuffix(f, "M"):
			num, mult = strings.TrimSuffix(f, "M"), 1e6
		case strings.HasSuffix(f, "k"):
			num, mult = strings.TrimSuffix(f, "k"), 1e3
		}
		x, err := strconv.ParseFloat(num, 64)
		if err != nil || x*mult < 1 || math.IsInf(x, 0) || x*mult > 1e9 {
			return nil, fmt.Errorf("scale %q: want a number of patients such as 1.5M, 60M or 250k", f)
		}
		out = append(out, int64(math.Round(x*mult)))
	}
	return out, nil
}

// ScaleName writes a size as ParseScales reads it.
func ScaleName(n int64) string {
	switch {
	case n >= 1e6:
		return strconv.FormatFloat(float64(n)/1e6, 'f', -1, 64) + "M"
	case n >= 1e3:
		return strconv.FormatFloat(float64(n)/1e3, 'f', -1, 64) + "k"
	}
	return strconv.FormatInt(n, 10)
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
