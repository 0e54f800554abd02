package correctness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/havenhealth/haven/demo"
	"github.com/havenhealth/haven/integration/releasecheck"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/synth"
)

// BenchmarkICBLinkage is `make bench`: the linkage reference query
// (t2dm-emergency-admissions) end to end through a whole network of
// separate processes at ICB scale (150 practices, 4 trusts, 1.5 million
// registered patients), side by side in each round with the same question
// asked of DuckDB as one query over the pooled Parquet files. It prints a
// table of both times, their ratio and the coordinator's peak RSS, and
// checks every round's released table against the DuckDB answer.
//
// Run it with -benchtime 1x; the rounds are HAVEN_BENCH_ROUNDS (default
// 4). The rounds start once every node has finished its start-up work
// (counting its tables' invalid NHS numbers, which at this scale on two
// cores takes half a minute and would otherwise land on the first run);
// the first round, the first run after start, is shown but left out of
// the medians. HAVEN_BENCH_SCALE (default icb) and HAVEN_BENCH_SITES_PER_NODE
// (default 8: the node processes serve several sites each, so that 154
// sites fit a small machine) change the network; HAVEN_BENCH_DIR keeps it,
// with its logs, in that directory. HAVEN_BENCH_PROTECTION=off runs the
// baseline for issue 11's budget: the same network with cell-key
// perturbation and the release ledger's rules switched off, so that two
// runs give the ratio with and without them.
func BenchmarkICBLinkage(b *testing.B) {
	scale := synth.Scale(envOr("HAVEN_BENCH_SCALE", string(synth.ScaleICB)))
	rounds := envInt(b, "HAVEN_BENCH_ROUNDS", 4)
	if rounds < 2 {
		b.Fatal("HAVEN_BENCH_ROUNDS: the first round is left out of the medians; at least 2 are needed")
	}
	perNode := envInt(b, "HAVEN_BENCH_SITES_PER_NODE", 8)
	ctx, cancel := context.WithTimeout(b.Context(), 50*time.Minute)
	defer cancel()

	dir := filepath.Join(b.TempDir(), "net")
	if d := os.Getenv("HAVEN_BENCH_DIR"); d != "" {
		dir = d // kept afterwards, logs and all
	}
	began := time.Now()
	fmt.Fprintf(os.Stderr, "bench: starting a %s network (%d sites per node process); progress follows\n", scale, perNode)
	n, err := demo.Start(ctx, demo.Options{
		Dir:             dir,
		Keep:            true, // the DuckDB side reads its files; TempDir removes it
		Scale:           scale,
		SitesPerNode:    perNode,
		Stderr:          os.Stderr,
		RegisterTimeout: 10 * time.Minute,
		RunTimeout:      15 * time.Minute,
		EditBundle:      benchBundle(b),
	})
	if n != nil {
		defer n.Close(b.Failed())
	}
	if err != nil {
		b.Fatalf("start the network: %v", err)
	}
	netw := n.Result().Network
	fmt.Fprintf(os.Stderr, "bench: network up in %s; waiting for the nodes' start-up work…\n", time.Since(began).Round(time.Second))
	if err := n.WaitWarmedUp(ctx, 10*time.Minute); err != nil {
		b.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "bench: network idle after %s\n", time.Since(began).Round(time.Second))
	c := newCentral(b, netw, n.Bundle())
	pt := releasecheck.MustPTable(b, n.Bundle())
	q := questions(b)[2] // t2dm-emergency-admissions, default parameters
	followup := atoi(b, q.params["followup_days"])

	type round struct{ haven, duck time.Duration }
	var rs []round
	b.ResetTimer()
	for range b.N {
		for i := range rounds {
			fmt.Fprintf(os.Stderr, "bench: round %d/%d: Haven…", i+1, rounds)
			t0 := time.Now()
			rr, err := n.Submit(ctx, demo.Query{Definition: q.def, Parameters: q.params, Purpose: q.purpose})
			h := time.Since(t0)
			if err != nil {
				b.Fatal(err)
			}
			if rr.Run.GetState() != havenv1.RunState_RUN_STATE_RELEASED {
				b.Fatalf("run %s is %s: %s", rr.Run.GetId(), rr.Run.GetState(), rr.Run.GetError())
			}
			if cov := rr.Run.GetCoverage(); cov.GetSitesAnswered() != cov.GetSitesExpected() {
				for _, s := range cov.GetSites() {
					if s.GetState() != havenv1.SiteState_SITE_STATE_DONE {
						b.Errorf("site %s: %s %s %v", s.GetSiteOds(), s.GetState(), s.GetError(), s.GetReasons())
					}
				}
				b.Fatalf("run %s answered by %d of %d sites; the benchmark needs them all", rr.Run.GetId(), cov.GetSitesAnswered(), cov.GetSitesExpected())
			}
			fmt.Fprintf(os.Stderr, " %s; DuckDB…", h.Round(time.Millisecond))
			t1 := time.Now()
			truth := c.t2dmEmergencyAdmissions(q.params["index_date"], followup)
			d := time.Since(t1)
			fmt.Fprintf(os.Stderr, " %s\n", d.Round(time.Millisecond))
			b.StopTimer()
			if st, problems := releasecheck.Check(rr.Table, truth, meanValues, pt); st.Problems > 0 {
				b.Fatalf("round %d: the released table differs from DuckDB's answer in %d values, first: %s", i+1, st.Problems, problems[0])
			}
			b.StartTimer()
			rs = append(rs, round{h, d})
		}
	}
	b.StopTimer()
	rss, err := n.CoordinatorPeakRSS()
	if err != nil {
		b.Fatal(err)
	}

	var registered int
	for _, s := range netw.SitesOfKind("gp") {
		registered += s.RegisteredPopulation
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(os.Stdout, "\nt2dm-emergency-admissions at %s scale: %d practices, %d trusts, %d registered patients, %d node processes\n",
		scale, len(netw.SitesOfKind("gp")), len(netw.SitesOfKind("trust")), registered, n.NodeProcesses())
	fmt.Fprintln(w, "round\tHaven end to end\tDuckDB, pooled\tratio\t")
	var hs, ds []time.Duration
	for i, r := range rs {
		label := strconv.Itoa(i + 1)
		if i == 0 {
			label = "1 (first)"
		} else {
			hs, ds = append(hs, r.haven), append(ds, r.duck)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%.2f×\t\n", label, r.haven.Round(time.Millisecond), r.duck.Round(time.Millisecond), r.haven.Seconds()/r.duck.Seconds())
	}
	mh, md := median(hs), median(ds)
	fmt.Fprintf(w, "median of 2–%d\t%s\t%s\t%.2f×\t\n", len(rs), mh.Round(time.Millisecond), md.Round(time.Millisecond), mh.Seconds()/md.Seconds())
	w.Flush()
	fmt.Fprintf(os.Stdout, "coordinator peak RSS: %.0f MiB (goal for the ratio: ≤ 2×)\n\n", float64(rss)/(1<<20))
	b.ReportMetric(mh.Seconds(), "haven-s")
	b.ReportMetric(md.Seconds(), "duckdb-s")
	b.ReportMetric(mh.Seconds()/md.Seconds(), "ratio")
	b.ReportMetric(rs[0].haven.Seconds()/rs[0].duck.Seconds(), "first-ratio")
	b.ReportMetric(float64(rss)/(1<<20), "coord-peak-MiB")
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func envOr(name, def string) string {
	if v := strings.TrimSpace(os.Getenv(name)); v != "" {
		return v
	}
	return def
}

func envInt(tb testing.TB, name string, def int) int {
	v := envOr(name, strconv.Itoa(def))
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		tb.Fatalf("%s=%q: want a whole number of 1 or more", name, v)
	}
	return n
}

// benchBundle is the bench's edit of the bundle: repeatsAllowed, and with
// HAVEN_BENCH_PROTECTION=off also no perturbation and no ledger rules.
func benchBundle(b *testing.B) func(string) error {
	switch v := envOr("HAVEN_BENCH_PROTECTION", "on"); v {
	case "on":
		return repeatsAllowed
	case "off":
		fmt.Fprintln(os.Stderr, "bench: HAVEN_BENCH_PROTECTION=off: perturbation and the ledger's rules are switched off")
		return demo.EditData(func(data map[string]any) error {
			delete(data, "ledger")
			if d, ok := data["disclosure"].(map[string]any); ok {
				delete(d, "perturbation")
			}
			return nil
		})
	default:
		b.Fatalf("HAVEN_BENCH_PROTECTION=%q: want on or off", v)
		return nil
	}
}

// repeatsAllowed drops the near-duplicate rule from a bundle: the bench
// asks one question in every round on purpose. The ledger is still read
// and written with every run and the query budget still decided, so their
// cost stays in what is measured.
var repeatsAllowed = demo.EditData(func(data map[string]any) error {
	ledger, err := demo.Object(data, "ledger")
	if err != nil {
		return err
	}
	delete(ledger, "near_duplicate")
	return nil
})
