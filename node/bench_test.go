package node

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/internal/pki"
	"github.com/havenhealth/haven/node/audit"
	"github.com/havenhealth/haven/node/connector"
	"github.com/havenhealth/haven/node/connector/connectortest"
	"github.com/havenhealth/haven/node/nodetest"
	"github.com/havenhealth/haven/node/optout"
	"github.com/havenhealth/haven/node/pseudonym"
	"github.com/havenhealth/haven/node/runner"
	"github.com/havenhealth/haven/node/sqlgen"
	"github.com/havenhealth/haven/node/state"
	"github.com/havenhealth/haven/policy"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/synth"
)

// icbSeed is the seed of the benchmarks' ICB-scale network.
const icbSeed = 7

// icb is the ICB-scale synthetic network (150 practices, 4 trusts, about
// 1.5M patients), generated once per benchmark binary.
var icb struct {
	once sync.Once
	n    *synth.Network
	err  error
}

// icbNetwork returns the ICB-scale network, generating it the first time
// (about half a minute on two cores) in a directory removed when the
// binary ends. HAVEN_BENCH_ICB may name a directory to keep it in between
// runs instead: a network already there is reused if it has the same
// scale and seed, and replaced otherwise.
func icbNetwork(b *testing.B) *synth.Network {
	icb.once.Do(func() {
		dir := os.Getenv("HAVEN_BENCH_ICB")
		if dir != "" {
			if n, err := synth.LoadNetwork(filepath.Join(dir, synth.NetworkFile)); err == nil && n.Scale == synth.ScaleICB && n.Seed == icbSeed && n.SiteLimit == 0 {
				icb.n = n
				return
			}
		} else {
			dir = plugins.Dir(b, "icb", func(string) error { return nil }) // empty; Generate fills it
		}
		if _, icb.err = synth.Generate(context.Background(), synth.Config{Out: dir, Scale: synth.ScaleICB, Seed: icbSeed, Force: true}); icb.err != nil {
			return
		}
		icb.n, icb.err = synth.LoadNetwork(filepath.Join(dir, synth.NetworkFile))
	})
	if icb.err != nil {
		b.Fatal(icb.err)
	}
	return icb.n
}

// patientRows is the number of rows of a site's patient table.
func patientRows(s synth.Site) int64 { return s.Files[cdm.TablePatient].Rows }

// closestSite returns the site of kind k whose patient table has the
// number of rows closest to rows.
func closestSite(n *synth.Network, k cdm.SiteKind, rows int64) synth.Site {
	var best synth.Site
	var bestDiff int64 = math.MaxInt64
	for _, s := range n.SitesOfKind(k) {
		if d := max(patientRows(s)-rows, rows-patientRows(s)); d < bestDiff {
			best, bestDiff = s, d
		}
	}
	return best
}

// largestSite returns the site of kind k with the most patient rows.
func largestSite(n *synth.Network, k cdm.SiteKind) synth.Site {
	sites := n.SitesOfKind(k)
	return slices.MaxFunc(sites, func(a, b synth.Site) int { return cmp.Compare(patientRows(a), patientRows(b)) })
}

// BenchmarkAggregateTask runs t2dm-prevalence end to end in the runner —
// policy, the DuckDB connector plugin, the opt-out check, the Flight
// upload to a coordinator double — on the first practice of the ICB scale
// (about 12k patient rows, 10k registered), and the same Result statement
// directly in DuckDB on the same files.
func BenchmarkAggregateTask(b *testing.B) {
	n := icbNetwork(b)
	benchTask(b, n, n.SitesOfKind(cdm.KindGP)[0], "t2dm-prevalence", networkNDOP(b, n))
}

// BenchmarkLinkageTask runs t2dm-emergency-admissions end to end in the
// runner — policy, the run ledger, sqlgen, the DuckDB connector plugin,
// pseudonymisation and the opt-out check in Go, the Flight upload to a
// coordinator double — at the ICB trust whose patient table is closest to
// 400k rows, and at the ICB's largest practice, each beside the same
// Result statement run directly in DuckDB on the same files.
func BenchmarkLinkageTask(b *testing.B) {
	n := icbNetwork(b)
	trust := closestSite(n, cdm.KindTrust, 400_000)
	b.Run("trust", func(b *testing.B) {
		benchTask(b, n, trust, "t2dm-emergency-admissions", networkNDOP(b, n))
	})
	// The same trust under a national opt-out list of national size: the
	// network's own objectors and enough numbers of people elsewhere in
	// England to make 3M.
	b.Run("trust-national-ndop", func(b *testing.B) {
		benchTask(b, n, trust, "t2dm-emergency-admissions", nationalNDOP(b, n, 3_000_000))
	})
	b.Run("gp", func(b *testing.B) {
		benchTask(b, n, largestSite(n, cdm.KindGP), "t2dm-emergency-admissions", networkNDOP(b, n))
	})
}

// networkNDOP reads the network's national opt-out list.
func networkNDOP(b *testing.B, n *synth.Network) *optout.Set {
	s, _, err := optout.ReadNDOPFile(n.Path(n.NationalOptOut.Path))
	must(b, err)
	return s
}

// nationalNDOP is the network's national opt-out list padded to size
// numbers with people who are at no site of the network: synth mints its
// patients' numbers from serials of 300M up, the padding from 100M up.
func nationalNDOP(b *testing.B, n *synth.Network, size int) *optout.Set {
	own := networkNDOP(b, n).Strings()
	var bld optout.Builder
	for _, s := range own {
		bld.Add(s)
	}
	serial := uint32(100_000_000)
	for range size - len(own) {
		nhs, _, err := cdm.NHSNumberFromSerial(serial)
		must(b, err)
		bld.Add(nhs)
		// Every other serial: one without a check digit moves on to the
		// next, so numbers never repeat.
		serial += 2
	}
	return bld.Set()
}

// resultSource passes queries to the plugin and remembers the arguments
// of the last one whose SQL is result, so that the direct query binds
// exactly what the node bound.
type resultSource struct {
	runner.Source
	mu     sync.Mutex
	result string
	args   []any
}

func (s *resultSource) Query(ctx context.Context, q connector.Query) (runner.Records, error) {
	s.mu.Lock()
	if q.SQL == s.result {
		s.args = make([]any, len(q.Args))
		for i, a := range q.Args {
			s.args[i] = a.Any()
		}
	}
	s.mu.Unlock()
	return s.Source.Query(ctx, q)
}

// benchTask runs definition id at site s end to end in the runner and,
// in the same loop, its Result statement directly in an in-process DuckDB
// over the same files with the arguments the node bound. It reports the
// runner's time per task, the direct time, their ratio, the site's
// patient rows and the rows the task sent.
func benchTask(b *testing.B, n *synth.Network, s synth.Site, id string, ndop *optout.Set) {
	ctx := context.Background()
	key := nodetest.NewKey(b)
	engine, err := policy.Load(ctx, policy.Config{BundlePath: nodetest.Bundle(b, key, nil), PublicKeyPEM: key.Public, Logger: slog.New(slog.DiscardHandler)})
	must(b, err)
	bin := plugins.Plugin(b, duckdbPlugin, "duckdb_arrow")
	siteDir := filepath.Dir(n.Path(s.Files[cdm.TablePatient].Path))
	p := newPlugin(connector.LaunchConfig{Path: bin.Path, SHA256: bin.SHA256, Args: []string{"--dir", siteDir}, Logger: slog.New(slog.DiscardHandler)}, slog.New(slog.DiscardHandler))
	defer p.Close()
	pk := nodetest.NewPKI(b, s.ODS)
	coord := nodetest.StartCoordinator(b, pk.ServerTLS, time.Second)
	tc, err := pki.ClientTLS(pk.NodeCert, pk.NodeKey, pk.CAFile, "")
	must(b, err)
	cc, err := grpc.NewClient(coord.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	must(b, err)
	defer cc.Close()
	dir := b.TempDir()
	journal, _, err := state.OpenJournal(dir)
	must(b, err)
	ledger, err := pseudonym.OpenLedger(dir)
	must(b, err)
	defer ledger.Close()
	alog, err := audit.Open(filepath.Join(dir, "audit"))
	must(b, err)
	defer alog.Close()
	secret, _ := pseudonym.NewSecret(testSecret)

	def, ok := engine.Catalog().Get(id)
	if !ok {
		b.Fatalf("no definition %s", id)
	}
	plan := def.Plan()
	st, ok := plan.Task(s.Kind)
	if !ok {
		b.Fatalf("%s sites take no part in %s", s.Kind, id)
	}
	bound, err := def.Bind(nil)
	must(b, err)
	// The SQL text depends on nothing the node binds, so compiling here
	// gives the statement the runner will run.
	prog, err := sqlgen.Compile(bound, plan, s.Kind, sqlgen.DuckDB(), sqlgen.Options{SiteODS: s.ODS})
	must(b, err)
	// The node runs the aggregate's result with its cells' patients
	// (CheckedResult), which binds the same arguments as Result; the
	// direct query runs Result alone.
	ran := prog.Result
	if prog.CheckedResult != nil {
		ran = *prog.CheckedResult
	}
	src := &resultSource{Source: p, result: ran.SQL}
	network, err := optout.OpenReceiver(b.TempDir(), nil)
	must(b, err)
	must(b, network.Apply(&havenv1.NetworkOptOuts{Version: &havenv1.NetworkOptOutVersion{Epoch: "bench"}}))
	r, err := runner.New(runner.Config{
		ODS: s.ODS, Kind: s.Kind, Policy: engine, Source: src, Link: discardLink{}, Journal: journal, Ledger: ledger,
		Uploader: runner.NewFlightUploader(cc), Audit: alog, Secret: secret,
		NDOP: func() *optout.Set { return ndop }, Pause: func() (state.Pause, error) { return state.Pause{}, nil },
		Network: network.Current,
		Logger:  benchLogger(),
	})
	must(b, err)

	var fields []string
	for _, f := range st.Fields {
		fields = append(fields, f.Name)
	}
	mode, kind := havenv1.PlanMode_PLAN_MODE_AGGREGATE, havenv1.SiteKind_SITE_KIND_GP
	if plan.Mode == catalog.ModeLinkage {
		mode = havenv1.PlanMode_PLAN_MODE_LINKAGE
	}
	if s.Kind == cdm.KindTrust {
		kind = havenv1.SiteKind_SITE_KIND_TRUST
	}
	task := func(i int) *havenv1.Task {
		run := fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), i)
		return &havenv1.Task{TaskId: run, RunId: run, DefinitionId: def.ID, DefinitionVersion: uint32(def.Version), DefinitionHash: def.Hash(),
			Purpose: "commissioning", RequesterOrg: "QHM", Mode: mode, SiteKind: kind,
			OutputFields: fields, Limits: &havenv1.UploadLimits{}, Deadline: timestamppb.New(time.Now().Add(time.Hour))}
	}
	db := nodetest.OpenSite(b, n, s)

	// Warm both up: the plugin's first query opens its views.
	o := r.Execute(ctx, task(-1))
	if o.GetDone() == nil {
		b.Fatalf("warm-up task: %v", o)
	}
	sent := o.GetDone().GetRows()
	nodetest.Rows(b, db, prog.Result.SQL, src.args...)

	// CPU time as well as wall time: on a busy host the CPU a task costs
	// moves far less than how long it takes. The runner's is this
	// process's during Execute plus all the plugin's; the direct query
	// runs in this process.
	var runnerTime, directTime, runnerCPU, directCPU time.Duration
	_, plugin0, cpuOK := processCPU(b)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		c0, _, _ := processCPU(b)
		t0 := time.Now()
		if o := r.Execute(ctx, task(i)); o.GetDone() == nil {
			b.Fatalf("task: %v", o)
		}
		t1 := time.Now()
		c1, _, _ := processCPU(b)
		nodetest.Rows(b, db, prog.Result.SQL, src.args...)
		runnerTime += t1.Sub(t0)
		directTime += time.Since(t1)
		c2, _, _ := processCPU(b)
		runnerCPU += c1 - c0
		directCPU += c2 - c1
	}
	_, plugin1, _ := processCPU(b)
	k := float64(b.N)
	b.ReportMetric(float64(runnerTime.Milliseconds())/k, "runner-ms/task")
	b.ReportMetric(float64(directTime.Milliseconds())/k, "direct-ms/query")
	b.ReportMetric(float64(runnerTime)/float64(directTime), "ratio")
	if cpuOK {
		runnerCPU += plugin1 - plugin0
		b.ReportMetric(float64(runnerCPU.Milliseconds())/k, "runner-cpu-ms/task")
		b.ReportMetric(float64(directCPU.Milliseconds())/k, "direct-cpu-ms/query")
	}
	b.ReportMetric(float64(patientRows(s)), "patients")
	b.ReportMetric(float64(sent), "rows-sent")
	b.ReportMetric(float64(ndop.Len()), "ndop")
	b.Logf("%s %s at %s (%s): %d patient rows, %d rows sent, national list of %d", id, s.Kind, s.ODS, s.Name, patientRows(s), sent, ndop.Len())
}

type discardLink struct{}

func (discardLink) Send(*havenv1.NodeMessage) error   { return nil }
func (discardLink) Report(*havenv1.TaskOutcome) error { return nil }

// BenchmarkIdleRSS starts `haven node run` as a process against a
// coordinator double, waits until it has registered and gone idle, and
// reports its resident memory (VmRSS), and the connector plugin's
// separately.
func BenchmarkIdleRSS(b *testing.B) {
	bin, err := connectortest.Build(b.Context(), filepath.Join(b.TempDir(), "haven"), "github.com/havenhealth/haven/cmd/haven")
	must(b, err)
	s := newSite(b, "gp")
	cmd := exec.Command(bin.Path, "node", "run", "--config", s.config, "--log-format", "json")
	cmd.Stderr, cmd.Stdout = nil, nil
	must(b, cmd.Start())
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}()
	nodetest.Eventually(b, "the node registered", func() bool { return len(s.coord.Registers()) > 0 })
	hb := s.coord.Heartbeats()
	nodetest.Eventually(b, "idle heartbeats", func() bool { return s.coord.Heartbeats() >= hb+50 })
	rss := vmRSS(b, cmd.Process.Pid)
	var pluginRSS int64
	for _, pid := range childPIDs(b, cmd.Process.Pid) {
		pluginRSS += vmRSS(b, pid)
	}
	for b.Loop() {
	}
	b.ReportMetric(float64(rss)/1024, "node-RSS-MiB")
	b.ReportMetric(float64(pluginRSS)/1024, "plugin-RSS-MiB")
}

// BenchmarkStartup starts `haven node run` as a process on the ICB's
// first practice (the site of BenchmarkAggregateTask) against a
// coordinator double, and reports the time from starting the process to
// its Register reaching the coordinator (startup-ms), and to the log
// line saying the start-up count of rows with invalid NHS numbers is
// done (counted-ms), which runs beside the link and must be done before
// the first task needs it. HAVEN_BENCH_LOG passes the node's log through.
// Each iteration stops the node and starts it
// afresh on the same state directory, as a restart would.
func BenchmarkStartup(b *testing.B) {
	n := icbNetwork(b)
	s := n.SitesOfKind(cdm.KindGP)[0]
	bin, err := connectortest.Build(b.Context(), filepath.Join(b.TempDir(), "haven"), "github.com/havenhealth/haven/cmd/haven")
	must(b, err)
	plugin := plugins.Plugin(b, duckdbPlugin, "duckdb_arrow")
	key := nodetest.NewKey(b)
	bundle := nodetest.Bundle(b, key, nil)
	pk := nodetest.NewPKI(b, s.ODS)
	coord := nodetest.StartCoordinator(b, pk.ServerTLS, time.Second)
	dir := b.TempDir()
	must(b, os.WriteFile(filepath.Join(dir, "board.pub"), key.Public, 0o644))
	must(b, os.WriteFile(filepath.Join(dir, "linkage.key"), testSecret, 0o600))
	siteDir := filepath.Dir(n.Path(s.Files[cdm.TablePatient].Path))
	cfg := fmt.Sprintf(`site: {ods: %s, kind: %s}
coordinator: {address: "%s", server_name: localhost}
tls: {cert: %s, key: %s, ca: %s}
connector:
  path: %s
  sha256: %s
  args: ["--dir", "%s"]
governance: {bundle: %s, public_key: board.pub}
linkage: {secret_file: linkage.key, key_id: test-key-1}
opt_out: {ndop_file: %s}
state_dir: state
audit_dir: audit
`, s.ODS, s.Kind, coord.Addr, pk.NodeCert, pk.NodeKey, pk.CAFile, plugin.Path, plugin.SHA256, siteDir, bundle, n.Path(n.NationalOptOut.Path))
	config := filepath.Join(dir, "node.yaml")
	must(b, os.WriteFile(config, []byte(cfg), 0o644))

	var toRegister, toCounted time.Duration
	for b.Loop() {
		regs := len(coord.Registers())
		cmd := exec.Command(bin.Path, "node", "run", "--config", config, "--log-format", "json")
		stderr, err := cmd.StderrPipe()
		must(b, err)
		counted := make(chan time.Time, 1)
		began := time.Now()
		must(b, cmd.Start())
		go func() {
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				if os.Getenv("HAVEN_BENCH_LOG") != "" {
					fmt.Fprintln(os.Stderr, sc.Text())
				}
				if strings.Contains(sc.Text(), "counted rows with invalid NHS numbers") {
					counted <- time.Now()
				}
			}
		}()
		nodetest.Eventually(b, "the node registered", func() bool { return len(coord.Registers()) > regs })
		toRegister += time.Since(began)
		select {
		case at := <-counted:
			toCounted += at.Sub(began)
		case <-time.After(time.Minute):
			b.Fatal("the node never logged its start-up count")
		}
		must(b, cmd.Process.Signal(os.Interrupt))
		must(b, cmd.Wait())
	}
	k := float64(b.N) * float64(time.Millisecond)
	b.ReportMetric(float64(toRegister)/k, "startup-ms")
	b.ReportMetric(float64(toCounted)/k, "counted-ms")
	b.ReportMetric(float64(patientRows(s)), "patients")
}

func vmRSS(b *testing.B, pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Skipf("no /proc: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return kb
		}
	}
	b.Fatalf("no VmRSS for pid %d", pid)
	return 0
}

func childPIDs(b *testing.B, parent int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(parent) {
			out = append(out, pid)
		}
	}
	return out
}

func benchLogger() *slog.Logger {
	if os.Getenv("HAVEN_BENCH_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}
