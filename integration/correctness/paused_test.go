package correctness

import (
	"context"
	"fmt"
	"maps"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/demo"
	"github.com/havenhealth/haven/integration/releasecheck"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// pausedFraction is the partial coverage the paused-site network's board
// accepts: low enough that a table without one practice is released, so
// that it can be compared with the central answer without that practice.
const pausedFraction = 0.5

// TestPausedSitesMatchCentral runs every reference definition on one
// network of separate processes with a trust paused, then with a practice
// paused, and compares each outcome with the central computation over the
// pooled data less the paused site.
//
//   - Trust paused: a definition whose plan asks trusts is refused
//     (trust_missing, naming the trust), though every practice answered;
//     its coverage counts 1 of 2 trusts and the other trust's activity
//     records, as the central count of the trusts' files gives them; the
//     log shows what the table would have undercounted. A definition
//     that asks no trust is released and equals the whole central answer.
//   - Practice paused: every definition is released (the board accepts
//     half the population here), its coverage lacks exactly the
//     practice's registered population, and it equals the central answer
//     over the other sites cell for cell (disclosure thresholds off).
//   - New bundle: the board signs a bundle that accepts no partial
//     coverage; the running coordinator takes it up and refuses the run
//     it released before, naming the new revision, and releases it again
//     once the first bundle is back.
func TestPausedSitesMatchCentral(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole network as processes; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 12*time.Minute) // building the binaries on a loaded machine takes minutes
	defer cancel()
	n, err := demo.Start(ctx, demo.Options{
		Dir:  filepath.Join(t.TempDir(), "net"),
		Keep: true, // the central answers read its files; TempDir removes it

		CoordinatorReload: time.Second, // for the board's next bundle
		EditBundle: func(dir string) error {
			if err := disclosureOff(dir); err != nil {
				return err
			}
			return setPartialFraction(dir, pausedFraction)
		},
	})
	if n != nil {
		defer n.Close(t.Failed())
	}
	if err != nil {
		t.Fatalf("start the network: %v", err)
	}
	net := n.Result().Network
	var gps, trusts []string
	listSize := map[string]int64{}
	for _, s := range net.Sites {
		if s.Kind == cdm.KindGP {
			gps = append(gps, s.ODS)
			listSize[s.ODS] = int64(s.RegisteredPopulation)
		} else {
			trusts = append(trusts, s.ODS)
		}
	}
	if len(gps) < 2 || len(trusts) != 2 {
		t.Fatalf("network has %d practices and %d trusts; want 2 or more and 2", len(gps), len(trusts))
	}
	bundle := n.Bundle()
	whole := newCentral(t, net, bundle)
	pt := releasecheck.MustPTable(t, bundle)
	qs := defaults(t)

	pause := func(site string) {
		t.Helper()
		if out, err := exec.CommandContext(ctx, n.Haven(), "node", "pause", "--config", n.NodeConfig(site),
			"--reason", "paused-site test").CombinedOutput(); err != nil {
			t.Fatalf("haven node pause %s: %v\n%s", site, err, out)
		}
	}
	resume := func(site string) {
		t.Helper()
		if out, err := exec.CommandContext(ctx, n.Haven(), "node", "resume", "--config", n.NodeConfig(site)).CombinedOutput(); err != nil {
			t.Fatalf("haven node resume %s: %v\n%s", site, err, out)
		}
		if err := n.WaitPauseState(ctx, site, false); err != nil {
			t.Fatal(err)
		}
	}
	var m strings.Builder
	fmt.Fprintf(&m, "\n%-28s %-8s %-9s %-8s %s\n", "definition", "paused", "outcome", "cells", "coverage")

	t.Run("trust paused", func(t *testing.T) {
		trust, other := trusts[0], trusts[1]
		activity := whole.activity(trust) + whole.activity(other)
		less := newCentral(t, net, bundle, trust)
		pause(trust)
		defer resume(trust)
		for _, q := range qs {
			rr, err := n.Submit(ctx, demo.Query{Definition: q.def, Parameters: q.params, Purpose: q.purpose})
			if err != nil {
				t.Fatalf("%s: %v", q.def, err)
			}
			cov := rr.Run.GetCoverage()
			fmt.Fprintf(&m, "%-28s %-8s %-9s %-8s %s\n", q.def, trust, strings.ToLower(strings.TrimPrefix(rr.Run.GetState().String(), "RUN_STATE_")),
				"", coverageLine(cov))
			if cov.GetTrustsExpected() == 0 {
				// The plan asks no trust: nothing is missing.
				if rr.Table == nil {
					t.Errorf("%s: run %s, want released (%v)", q.def, rr.Run.GetState(), rr.Run.GetPolicyReasons())
					continue
				}
				releasecheck.CheckT(t, rr.Table, q.answer(whole, q.params), meanValues, pt, q.def+" with "+trust+" paused")
				continue
			}
			if cov.GetTrustsAnswered() != 1 || cov.GetActivityExpected() != activity || cov.GetActivityAnswered() != whole.activity(other) {
				t.Errorf("%s: trusts %d/%d, activity %d/%d; want 1/2 and %d/%d (central count of %s's and %s's activity files)",
					q.def, cov.GetTrustsAnswered(), cov.GetTrustsExpected(), cov.GetActivityAnswered(), cov.GetActivityExpected(),
					whole.activity(other), activity, other, trust)
			}
			if q.def != "emergency-readmissions-30d" && cov.GetPopulationAnswered() != cov.GetPopulationExpected() {
				t.Errorf("%s: population %d/%d; every practice answered", q.def, cov.GetPopulationAnswered(), cov.GetPopulationExpected())
			}
			// A hospital population loses the trust's catchment as well, so
			// coverage_insufficient may come with it.
			reasons := rr.Run.GetPolicyReasons()
			i := slices.IndexFunc(reasons, func(r *havenv1.PolicyReason) bool {
				return r.GetCode() == "trust_missing" && strings.Contains(r.GetMessage(), "trust "+trust+" did not answer (paused)")
			})
			if rr.Run.GetState() != havenv1.RunState_RUN_STATE_REFUSED || i < 0 {
				t.Errorf("%s: run %s %v; want refused for trust_missing naming %s", q.def, rr.Run.GetState(), reasons, trust)
				continue
			}
			// What releasing it would have got wrong: the central answer
			// without the trust against the whole one.
			diff, cells := undercount(whole, less, q)
			if diff == 0 {
				t.Errorf("%s: the central answer without %s is the same as with it; the pause shows nothing", q.def, trust)
			}
			t.Logf("%s refused: %s; without %s, %d of %d central cells would differ", q.def, reasons[i].GetMessage(), trust, diff, cells)
		}
	})

	t.Run("practice paused", func(t *testing.T) {
		gp := gps[0]
		less := newCentral(t, net, bundle, gp)
		pause(gp)
		defer resume(gp)
		for _, q := range qs {
			rr, err := n.Submit(ctx, demo.Query{Definition: q.def, Parameters: q.params, Purpose: q.purpose})
			if err != nil {
				t.Fatalf("%s: %v", q.def, err)
			}
			cov := rr.Run.GetCoverage()
			if rr.Table == nil {
				t.Errorf("%s with %s paused: run %s %v, want released", q.def, gp, rr.Run.GetState(), rr.Run.GetPolicyReasons())
				continue
			}
			truth := less
			if q.def == "emergency-readmissions-30d" {
				truth = whole // a hospital population: practices are not asked
			} else if got := cov.GetPopulationExpected() - cov.GetPopulationAnswered(); got != listSize[gp] {
				t.Errorf("%s: coverage lacks %d people, want %s's list of %d", q.def, got, gp, listSize[gp])
			}
			st := releasecheck.CheckT(t, rr.Table, q.answer(truth, q.params), meanValues, pt, q.def+" with "+gp+" paused")
			fmt.Fprintf(&m, "%-28s %-8s %-9s %-8d %s\n", q.def, gp, "released", st.Cells, coverageLine(cov))
		}
	})

	// The board's next bundle reaches a running coordinator: one that
	// accepts no partial coverage refuses the same run, under its own
	// revision, and the first one, put back, releases it again.
	t.Run("new bundle", func(t *testing.T) {
		gp, q := gps[0], qs[0]
		rev := manifestRevision(t, bundle)
		strict, err := n.SignVariant("strict", rev+"-strict", func(dir string) error { return setPartialFraction(dir, 1) })
		if err != nil {
			t.Fatal(err)
		}
		pause(gp)
		defer resume(gp)
		for _, step := range []struct {
			bundle, revision string
			want             havenv1.RunState
		}{
			{strict, rev + "-strict", havenv1.RunState_RUN_STATE_REFUSED},
			{bundle, rev, havenv1.RunState_RUN_STATE_RELEASED},
		} {
			if err := n.UseCoordinatorBundle(step.bundle); err != nil {
				t.Fatal(err)
			}
			if err := n.WaitCoordinatorRevision(ctx, step.revision, 2*time.Minute); err != nil {
				t.Fatal(err)
			}
			rr, err := n.Submit(ctx, demo.Query{Definition: q.def, Parameters: q.params, Purpose: q.purpose})
			if err != nil {
				t.Fatalf("%s: %v", q.def, err)
			}
			if got := rr.Run.GetBundleRevision(); got != step.revision {
				t.Errorf("run %s decided under bundle revision %s, want %s", rr.Run.GetId(), got, step.revision)
			}
			if got := rr.Run.GetState(); got != step.want {
				t.Errorf("run %s under %s with %s paused: %s %v, want %s", rr.Run.GetId(), step.revision, gp, got, rr.Run.GetPolicyReasons(), step.want)
			}
		}
	})
	t.Log(m.String())
}

// defaults are the questions with each definition's default parameters.
func defaults(t *testing.T) []question {
	var out []question
	for _, q := range questions(t) {
		if q.set == "default" {
			out = append(out, q)
		}
	}
	return out
}

// undercount compares the central answers with and without a site:
// how many cells differ, of how many.
func undercount(whole, less *central, q question) (diff, cells int) {
	a, b := q.answer(whole, q.params), q.answer(less, q.params)
	for k, c := range a {
		cells++
		if o, ok := b[k]; !ok || !maps.Equal(c.Values, o.Values) {
			diff++
		}
	}
	return diff, cells
}

func coverageLine(cov *havenv1.Coverage) string {
	s := fmt.Sprintf("sites %d/%d, population %d/%d", cov.GetSitesAnswered(), cov.GetSitesExpected(),
		cov.GetPopulationAnswered(), cov.GetPopulationExpected())
	if cov.GetTrustsExpected() > 0 {
		s += fmt.Sprintf(", trusts %d/%d, activity %d/%d", cov.GetTrustsAnswered(), cov.GetTrustsExpected(),
			cov.GetActivityAnswered(), cov.GetActivityExpected())
	}
	return s
}

// setPartialFraction sets the share of the population a partial table
// needs in a bundle's data.json.
func setPartialFraction(dir string, f float64) error {
	return demo.EditData(func(data map[string]any) error {
		d, err := demo.Object(data, "disclosure")
		if err != nil {
			return err
		}
		pc, err := demo.Object(d, "partial_coverage")
		if err != nil {
			return err
		}
		pc["min_population_fraction"] = f
		return nil
	})(dir)
}
