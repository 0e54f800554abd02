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
	"github.com/havenhealth/haven/coordinator/config"
	"github.com/havenhealth/haven/coordinator/coordinatortest"
	"github.com/havenhealth/haven/internal/testutil"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// BenchmarkNationalLinks links HAVEN_NATIONAL_GPS practices (default
// 6,500) and HAVEN_NATIONAL_TRUSTS trusts (default 230) to one coordinator
// process and prints what it costs:
//
//   - the time for every site to register, all dialling at once (the
//     simulator runs HAVEN_NATIONAL_DIALS TLS handshakes at a time,
//     default 256);
//   - the coordinator's memory per idle link (its RSS with every site
//     linked, less its RSS before any, over the number of sites) and its
//     CPU while the links idle for two heartbeat intervals (15 s each,
//     as deployed);
//   - an aggregate run (statins-chd) answered by every practice, from
//     HAVEN_NATIONAL_PATIENTS patients per practice (default 100: the
//     figure is about dispatch, ingest and release across the network,
//     not the size of each site's data), submit to release;
//   - a linkage run (t2dm-emergency-admissions) over the same patients:
//     every practice sends its whole population under the run pseudonym,
//     and every trust a row per patient it admitted (four in ten
//     patients), submit to release, and the coordinator's peak RSS.
//     HAVEN_NATIONAL_PATIENTS sets the scale: 230 a practice is 1.5M
//     patients, 923 is 6M; HAVEN_NATIONAL_BUDGET (e.g. 256MiB) sets the
//     coordinator's linkage memory budget, past which it spills;
//   - the time for every site to register again after the coordinator
//     restarts, the sites reconnecting with jitter over
//     HAVEN_NATIONAL_JITTER (default 10s), as nodes' backoff spreads them.
//
// Run it with -benchtime 1x.
func BenchmarkNationalLinks(b *testing.B) {
	gps := testutil.EnvInt(b, "HAVEN_NATIONAL_GPS", 6500, 1)
	trusts := testutil.EnvInt(b, "HAVEN_NATIONAL_TRUSTS", 230, 0)
	perPractice := testutil.EnvInt(b, "HAVEN_NATIONAL_PATIENTS", 100, 1)
	dials := testutil.EnvInt(b, "HAVEN_NATIONAL_DIALS", 256, 1)
	jitter := testutil.EnvDuration(b, "HAVEN_NATIONAL_JITTER", 10*time.Second)
	const heartbeat = 15 * time.Second
	ctx, cancel := context.WithTimeout(b.Context(), 55*time.Minute)
	defer cancel()

	var sites []config.Site
	for i := range gps {
		sites = append(sites, config.Site{ODS: fmt.Sprintf("N%05d", i+1), Kind: cdm.KindGP, Population: int64(perPractice)})
	}
	for i := range trusts {
		sites = append(sites, config.Site{ODS: fmt.Sprintf("RN%03d", i+1), Kind: cdm.KindTrust})
	}
	n := coordinatortest.New(b, coordinatortest.Options{External: true, Sites: sites, Heartbeat: heartbeat,
		Deadline: 15 * time.Minute, LinkageBudget: os.Getenv("HAVEN_NATIONAL_BUDGET")})
	bin := buildHaven(b)

	began := time.Now()
	for _, s := range sites {
		n.NodeCert(s.ODS)
	}
	certs := time.Since(began)

	coord := startCoordinator(b, ctx, bin, n)
	rss0 := rss(b, coord.pid())

	// The simulated sites, each answering statins-chd (aggregate) and
	// t2dm-emergency-admissions (linkage) from one generated population:
	// perPractice patients at each practice, four in ten of them admitted
	// to a trust.
	statinsDef, ok1 := n.Catalog.Get("statins-chd")
	t2dmDef, ok2 := n.Catalog.Get("t2dm-emergency-admissions")
	if !ok1 || !ok2 {
		b.Fatal("the bundle lacks statins-chd or t2dm-emergency-admissions")
	}
	var gpODS, trustODS []string
	for _, s := range sites {
		if s.Kind == cdm.KindGP {
			gpODS = append(gpODS, s.ODS)
		} else {
			trustODS = append(trustODS, s.ODS)
		}
	}
	began = time.Now()
	ps := coordinatortest.Patients(1, gpODS, perPractice, trustODS)
	admitted := map[string][]coordinatortest.Patient{}
	var trustRows int
	for _, p := range ps {
		for t := range p.Admissions {
			admitted[t] = append(admitted[t], p)
			trustRows++
		}
	}
	fmt.Fprintf(os.Stderr, "national: %d patients generated, %d trust rows (%s)\n", len(ps), trustRows, time.Since(began).Round(time.Millisecond))
	secret := []byte("national bench linkage secret, for the simulator")
	nodes := make([]*coordinatortest.NodeDouble, len(sites))
	for i, s := range sites {
		nd := n.Node(s.ODS, s.Kind, s.Population)
		if s.Kind == cdm.KindGP {
			mine := ps[i*perPractice : (i+1)*perPractice]
			nd.Answer = func(task *havenv1.Task, schema *arrow.Schema) ([]arrow.Record, error) {
				if task.GetDefinitionId() == t2dmDef.ID {
					return coordinatortest.T2DMPractice(t2dmDef, schema, mine, s.ODS, task.GetRunId(), secret), nil
				}
				return coordinatortest.StatinsCells(statinsDef, schema, mine, s.ODS, int(task.GetRecordKeyRange())), nil
			}
		} else {
			nd.Activity = int64(len(admitted[s.ODS]))
			nd.Answer = func(task *havenv1.Task, schema *arrow.Schema) ([]arrow.Record, error) {
				return coordinatortest.T2DMTrust(schema, admitted[s.ODS], s.ODS, task.GetRunId(), secret), nil
			}
		}
		nodes[i] = nd
	}

	register := connectAll(b, ctx, nodes, dials, 0)
	// Two heartbeat intervals of idle links.
	cpu0 := cpuTime(b, coord.pid())
	idleFrom := time.Now()
	time.Sleep(2 * heartbeat)
	idleCPU := cpuTime(b, coord.pid()) - cpu0
	idleFor := time.Since(idleFrom)
	rssIdle := rss(b, coord.pid())

	runTime, run := submit(b, ctx, n, "statins-chd", nil)
	rssRun := rss(b, coord.pid())
	var linkTime time.Duration
	var linked *havenv1.Run
	if trusts > 0 {
		linkTime, linked = submit(b, ctx, n, "t2dm-emergency-admissions", map[string]*havenv1.ParameterValue{
			"index_date": {Value: &havenv1.ParameterValue_DateValue{DateValue: coordinatortest.IndexDate}}})
	}
	rssPeak := peakRSS(b, coord.pid())

	// Restart: every link drops; the sites come back with jitter.
	for _, nd := range nodes {
		nd.Close()
	}
	stopCoordinator(b, coord)
	coord = startCoordinator(b, ctx, bin, n)
	for i, s := range sites {
		nodes[i] = n.Node(s.ODS, s.Kind, s.Population)
	}
	reregister := connectAll(b, ctx, nodes, dials, jitter)
	for _, nd := range nodes {
		nd.Close()
	}
	stopCoordinator(b, coord)

	perLink := float64(rssIdle-rss0) / float64(len(sites))
	fmt.Printf("\nNational links: %d practices, %d trusts, one coordinator process (%d cores on this machine)\n", gps, trusts, runtime.NumCPU())
	fmt.Printf("%-52s %12s\n", "measure", "value")
	fmt.Printf("%-52s %12s\n", "node certificates issued (simulator side)", certs.Round(time.Millisecond))
	fmt.Printf("%-52s %12s\n", fmt.Sprintf("all sites registered, %d dialling at a time", dials), register.Round(time.Millisecond))
	fmt.Printf("%-52s %12.1f\n", "coordinator RSS before any link (MiB)", float64(rss0)/(1<<20))
	fmt.Printf("%-52s %12.1f\n", "coordinator RSS, every site linked and idle (MiB)", float64(rssIdle)/(1<<20))
	fmt.Printf("%-52s %12.1f\n", "memory per idle link (KiB)", perLink/1024)
	fmt.Printf("%-52s %11.2f%%\n", fmt.Sprintf("coordinator CPU while idle (%s, of one core)", idleFor.Round(time.Second)), 100*idleCPU.Seconds()/idleFor.Seconds())
	fmt.Printf("%-52s %12s\n", fmt.Sprintf("statins-chd over %d practices, submit to %s", gps, strings.TrimPrefix(run.GetState().String(), "RUN_STATE_")), runTime.Round(time.Millisecond))
	fmt.Printf("%-52s %12.1f\n", "coordinator RSS after the run (MiB)", float64(rssRun)/(1<<20))
	if linked != nil {
		fmt.Printf("%-52s %12s\n", fmt.Sprintf("t2dm-emergency-admissions, %d+%d rows, submit to %s", gps*perPractice, trustRows,
			strings.TrimPrefix(linked.GetState().String(), "RUN_STATE_")), linkTime.Round(time.Millisecond))
	}
	if linked != nil {
		fmt.Printf("%-52s %12s\n", "linkage spilled to disk", spilled(b, coord.log))
	}
	fmt.Printf("%-52s %12.1f\n", "coordinator peak RSS (MiB)", float64(rssPeak)/(1<<20))
	fmt.Printf("%-52s %12s\n", fmt.Sprintf("all sites registered after a restart, jitter %s", jitter), reregister.Round(time.Millisecond))
	if run.GetState() != havenv1.RunState_RUN_STATE_RELEASED {
		b.Errorf("the run ended %s: %v %s", run.GetState(), run.GetPolicyReasons(), run.GetError())
	}
	if got := run.GetCoverage().GetSitesAnswered(); got != int32(gps) {
		b.Errorf("%d of %d practices answered", got, gps)
	}
	b.ReportMetric(register.Seconds(), "s/register")
	b.ReportMetric(perLink/1024, "KiB/link")
	b.ReportMetric(runTime.Seconds(), "s/run")
	if linked != nil {
		if linked.GetState() != havenv1.RunState_RUN_STATE_RELEASED {
			b.Errorf("the linkage run ended %s: %v %s", linked.GetState(), linked.GetPolicyReasons(), linked.GetError())
		}
		b.ReportMetric(linkTime.Seconds(), "s/linkage-run")
	}
	b.ReportMetric(float64(rssPeak)/(1<<20), "MiB-peak")
}

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

// submit submits def with params and waits for the run to end, polling
// (a watch would carry an event per site).
func submit(b *testing.B, ctx context.Context, n *coordinatortest.Network, def string, params map[string]*havenv1.ParameterValue) (time.Duration, *havenv1.Run) {
	b.Helper()
	cert, key := n.UserCert("ana", "QHM", "analyst")
	api := havenv1.NewCoordinatorClient(n.Dial(cert, key))
	began := time.Now()
	fmt.Fprintf(os.Stderr, "national: %s…\n", def)
	resp, err := api.SubmitRun(ctx, &havenv1.SubmitRunRequest{DefinitionId: def, Purpose: "service_evaluation", Parameters: params})
	if err != nil {
		b.Fatalf("submit %s: %v", def, err)
	}
	for {
		r, err := api.GetRun(ctx, &havenv1.GetRunRequest{RunId: resp.GetRun().GetId()})
		if err != nil {
			b.Fatalf("get run: %v", err)
		}
		switch r.GetRun().GetState() {
		case havenv1.RunState_RUN_STATE_RELEASED, havenv1.RunState_RUN_STATE_REFUSED, havenv1.RunState_RUN_STATE_FAILED,
			havenv1.RunState_RUN_STATE_CANCELLED:
			return time.Since(began), r.GetRun()
		}
		select {
		case <-ctx.Done():
			b.Fatalf("run %s: %v", resp.GetRun().GetId(), ctx.Err())
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
func startCoordinator(b *testing.B, ctx context.Context, bin string, n *coordinatortest.Network) *coordinatorProc {
	b.Helper()
	logPath := filepath.Join(n.Dir, "coordinator.log")
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "--log-format", "text", "coordinator", "run", "--config", n.ConfigPath)
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
