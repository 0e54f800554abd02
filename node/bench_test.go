package node

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/havenhealth/haven/integration/synth"
	"github.com/havenhealth/haven/internal/pki"
	"github.com/havenhealth/haven/node/audit"
	"github.com/havenhealth/haven/node/cdm"
	"github.com/havenhealth/haven/node/connector"
	"github.com/havenhealth/haven/node/connector/connectortest"
	"github.com/havenhealth/haven/node/nodetest"
	"github.com/havenhealth/haven/node/optout"
	"github.com/havenhealth/haven/node/pseudonym"
	"github.com/havenhealth/haven/node/runner"
	"github.com/havenhealth/haven/node/sqlgen"
	"github.com/havenhealth/haven/node/state"
	"github.com/havenhealth/haven/policy"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// bigPractice is one ICB-scale practice (about 10k patients), generated
// once per benchmark binary.
var bigPractice struct {
	once sync.Once
	n    *synth.Network
	err  error
}

func icbPractice(b *testing.B) (*synth.Network, synth.Site) {
	bigPractice.once.Do(func() {
		dir := plugins.Dir(b, "icb-1", func(dir string) error {
			_, err := synth.Generate(context.Background(), synth.Config{Out: dir, Scale: synth.ScaleICB, Seed: 7, Sites: 1, Force: true})
			return err
		})
		bigPractice.n, bigPractice.err = synth.LoadNetwork(filepath.Join(dir, synth.NetworkFile))
	})
	if bigPractice.err != nil {
		b.Fatal(bigPractice.err)
	}
	return bigPractice.n, nodetest.Site(b, bigPractice.n, "gp")
}

// BenchmarkAggregateTask runs t2dm-prevalence end to end in the runner —
// policy, the DuckDB connector plugin, the opt-out check, the Flight
// upload to a coordinator double — on a practice of about 10k patients,
// and the same Result statement directly in DuckDB on the same files. It
// reports the runner's time per task, the direct time, and their ratio.
func BenchmarkAggregateTask(b *testing.B) {
	n, s := icbPractice(b)
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
	ndop, _, err := optout.ReadNDOPFile(n.Path(n.NationalOptOut.Path))
	must(b, err)
	secret, _ := pseudonym.NewSecret(testSecret)
	r, err := runner.New(runner.Config{
		ODS: s.ODS, Kind: s.Kind, Policy: engine, Source: p, Link: discardLink{}, Journal: journal, Ledger: ledger,
		Uploader: runner.NewFlightUploader(cc), Audit: alog, Secret: secret,
		NDOP: func() *optout.Set { return ndop }, Pause: func() (state.Pause, error) { return state.Pause{}, nil },
		Logger: benchLogger(),
	})
	must(b, err)

	def, _ := engine.Catalog().Get("t2dm-prevalence")
	plan := def.Plan()
	st, _ := plan.Task(cdm.KindGP)
	var fields []string
	for _, f := range st.Fields {
		fields = append(fields, f.Name)
	}
	task := func(i int) *havenv1.Task {
		run := fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), i)
		return &havenv1.Task{TaskId: run, RunId: run, DefinitionId: def.ID, DefinitionVersion: uint32(def.Version), DefinitionHash: def.Hash(),
			Purpose: "commissioning", RequesterOrg: "QHM", Mode: havenv1.PlanMode_PLAN_MODE_AGGREGATE, SiteKind: havenv1.SiteKind_SITE_KIND_GP,
			OutputFields: fields, Limits: &havenv1.UploadLimits{}, Deadline: timestamppb.New(time.Now().Add(time.Hour))}
	}
	bound, _ := def.Bind(nil)
	prog, err := sqlgen.Compile(bound, plan, cdm.KindGP, sqlgen.DuckDB(), sqlgen.Options{SiteODS: s.ODS, NDOP: ndop.Strings()})
	must(b, err)
	db := nodetest.OpenSite(b, n, s)
	db.SetMaxOpenConns(1)
	patients := s.Files[cdm.TablePatient].Rows

	// Warm both up: the plugin's first query opens its views.
	if o := r.Execute(ctx, task(-1)); o.GetDone() == nil {
		b.Fatalf("warm-up task: %v", o)
	}
	nodetest.Rows(b, db, prog.Result.SQL, prog.Result.Args...)

	var runnerTime, directTime time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		t0 := time.Now()
		if o := r.Execute(ctx, task(i)); o.GetDone() == nil {
			b.Fatalf("task: %v", o)
		}
		t1 := time.Now()
		nodetest.Rows(b, db, prog.Result.SQL, prog.Result.Args...)
		runnerTime += t1.Sub(t0)
		directTime += time.Since(t1)
	}
	k := float64(b.N)
	b.ReportMetric(float64(runnerTime.Milliseconds())/k, "runner-ms/task")
	b.ReportMetric(float64(directTime.Milliseconds())/k, "direct-ms/query")
	b.ReportMetric(float64(runnerTime)/float64(directTime), "ratio")
	b.ReportMetric(float64(patients), "patients")
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
