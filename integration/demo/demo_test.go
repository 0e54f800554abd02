package demo_test

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/havenhealth/haven/coordinator/disclosure"
	"github.com/havenhealth/haven/coordinator/release"
	"github.com/havenhealth/haven/integration/demo"
	"github.com/havenhealth/haven/internal/pgtest"
	"github.com/havenhealth/haven/node/audit"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// TestDemo runs the whole demo, separate processes and all, and checks
// what it released against an answer computed here from the Parquet
// files. With PostgreSQL installed it runs a second time with one trust
// served from PostgreSQL.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole network as processes; skipped with -short")
	}
	// The first demo builds haven into its directory; later ones reuse it.
	root := t.TempDir()
	var haven string
	for _, tc := range []struct {
		name     string
		postgres bool
	}{
		{"duckdb", false},
		{"postgres", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var progress bytes.Buffer
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
			defer cancel()
			res, err := demo.Run(ctx, demo.Options{
				Dir:      filepath.Join(root, tc.name),
				Keep:     true, // the checks below read its files; TempDir removes it
				Postgres: tc.postgres,
				Haven:    haven,
				Stderr:   &progress,
			})
			if res != nil && haven == "" {
				if p := filepath.Join(res.Dir, "bin", "haven"); fileExists(p) {
					haven = p
				}
			}
			t.Logf("progress:\n%s", progress.String())
			if res != nil {
				checkNoProcesses(t, res)
			}
			if tc.postgres && errors.Is(err, pgtest.ErrNoBinaries) && os.Getenv("CI") == "" {
				t.Skipf("PostgreSQL is not installed: %v", err)
			}
			if err != nil {
				t.Fatalf("demo: %v", err)
			}
			if tc.postgres && res.Postgres == "" {
				t.Error("Result.Postgres names no site")
			}
			checkDemo(t, res)
		})
	}
}

func checkDemo(t *testing.T, res *demo.Result) {
	n := res.Network
	var sites []string
	for _, s := range n.Sites {
		sites = append(sites, s.ODS)
	}
	slices.Sort(sites)
	if len(sites) != 10 || !slices.Equal(res.Registered, sites) {
		t.Errorf("registered %v, want all 10 sites %v", res.Registered, sites)
	}
	if len(res.Runs) != 2 {
		t.Fatalf("%d runs, want 2", len(res.Runs))
	}
	if res.AuditEntries == 0 {
		t.Error("the coordinator's audit log is empty")
	}

	wantSites := map[string]int{"t2dm-prevalence": 8, "t2dm-emergency-admissions": 10}
	for _, rr := range res.Runs {
		r := rr.Run
		id := rr.Query.Definition
		if r.GetState() != havenv1.RunState_RUN_STATE_RELEASED {
			t.Fatalf("%s: run %s is %s (%s), want RELEASED", id, r.GetId(), r.GetState(), r.GetError())
		}
		cov := r.GetCoverage()
		if int(cov.GetSitesExpected()) != wantSites[id] || cov.GetSitesAnswered() != cov.GetSitesExpected() ||
			cov.GetPopulationExpected() == 0 || cov.GetPopulationAnswered() != cov.GetPopulationExpected() {
			t.Errorf("%s: coverage %d/%d sites, population %d/%d; want full coverage of %d sites", id,
				cov.GetSitesAnswered(), cov.GetSitesExpected(), cov.GetPopulationAnswered(), cov.GetPopulationExpected(), wantSites[id])
		}
		for _, s := range cov.GetSites() {
			if s.GetState() != havenv1.SiteState_SITE_STATE_DONE {
				t.Errorf("%s: site %s is %s: %s", id, s.GetSiteOds(), s.GetState(), s.GetError())
			}
		}
		if rr.Table == nil {
			t.Fatalf("%s: no table fetched", id)
		}
		checkNodeAudit(t, res, r)
	}

	bundle := filepath.Join(res.Dir, "bundle")
	prev := res.Runs[0]
	minAge, _ := strconv.Atoi(prev.Query.Parameters["min_age"])
	checkTable(t, prev.Table, prevalence(t, n, bundle, prev.Query.Parameters["index_date"], minAge))

	adm := res.Runs[1]
	followup, _ := strconv.Atoi(adm.Query.Parameters["followup_days"])
	checkTable(t, adm.Table, emergencyAdmissions(t, n, bundle, adm.Query.Parameters["index_date"], int32(followup)))
}

// checkNodeAudit checks that every site the run asked recorded in its own
// audit log that it answered the run.
func checkNodeAudit(t *testing.T, res *demo.Result, r *havenv1.Run) {
	for _, s := range r.GetCoverage().GetSites() {
		recs, err := audit.Read(filepath.Join(res.Dir, "nodes", s.GetSiteOds(), "audit"), time.Time{})
		if err != nil {
			t.Fatalf("site %s: node audit log: %v", s.GetSiteOds(), err)
		}
		done := slices.ContainsFunc(recs, func(rec audit.Record) bool {
			return rec.Event == audit.EventDone && rec.RunID == r.GetId() && rec.Rows == s.GetRows()
		})
		if !done {
			t.Errorf("site %s: its audit log has no task_done for run %s with %d rows", s.GetSiteOds(), r.GetId(), s.GetRows())
		}
	}
}

// checkTable checks every value of a released table against the true
// answer: a released count is the true count rounded as disclosure control
// documents, a withheld one says why and the reason fits the true value,
// sums and means likewise; and the table has exactly the true table's
// cells.
func checkTable(t *testing.T, tab *release.Table, truth trueTable) {
	t.Helper()
	m := tab.Meta
	if m.MinCellCount < 1 || m.RoundingBase < 1 {
		t.Fatalf("%s: table says min cell count %d, rounding base %d", m.DefinitionID, m.MinCellCount, m.RoundingBase)
	}
	var cells []string
	var released, withheld int
	for _, row := range tab.Rows {
		var key string
		var v cellValues
		switch row.Kind {
		case release.RowCell:
			key = strings.Join(row.Key, "|")
			c, ok := truth[key]
			if !ok {
				t.Errorf("%s: released cell %s has no patients in the Parquet files", m.DefinitionID, key)
				continue
			}
			cells = append(cells, key)
			v = *c
		case release.RowMargin:
			key = tab.Dims[row.MarginDim] + "=" + row.Key[row.MarginDim]
			v = truth.sum(func(k []string) bool { return k[row.MarginDim] == row.Key[row.MarginDim] })
		case release.RowTotal:
			key = "total"
			v = truth.sum(func([]string) bool { return true })
		}
		for j, ms := range tab.Measures {
			got := row.Values[j]
			want, n := v.values[ms.Name], v.n[ms.Name]
			where := m.DefinitionID + " " + string(row.Kind) + " " + key + " " + ms.Name
			switch {
			case got.Released:
				released++
			case got.Withheld():
				withheld++
			}
			values, ok := meanValues[ms.Name]
			if ms.Kind == disclosure.KindMean && !ok {
				t.Fatalf("%s: the reference answers do not say what mean %s averages", m.DefinitionID, ms.Name)
			}
			if msg := checkValue(ms.Kind, values, row.Kind, got, want, n, m.MinCellCount, m.RoundingBase); msg != "" {
				t.Errorf("%s: %s", where, msg)
			}
			// A released binary or integer mean is the rounded sum over
			// the rounded patients, so neither may be withheld beside it.
			if ms.Kind != disclosure.KindMean || values == disclosure.ValueContinuous || !got.Released {
				continue
			}
			for k, o := range tab.Measures {
				c := v.values[o.Name]
				if o.Kind == disclosure.KindCount && row.Values[k].Withheld() && (c == float64(n) || c == want) {
					t.Errorf("%s: released %s beside a withheld %s it gives back", where, ftoa(got.Value), o.Name)
				}
			}
		}
	}
	if len(truth) != len(cells) {
		for k := range truth {
			if !slices.Contains(cells, k) {
				t.Errorf("%s: cell %s has patients but is not in the released table", m.DefinitionID, k)
			}
		}
	}
	last := tab.Rows[len(tab.Rows)-1]
	if last.Kind != release.RowTotal || !last.Values[0].Released {
		t.Errorf("%s: the last row is not a released grand total", m.DefinitionID)
	}
	t.Logf("%s: %d cells; %d values released and %d withheld, each checked against the Parquet files",
		m.DefinitionID, len(cells), released, withheld)
}

// sum adds the true values of the cells whose key matches.
func (tt trueTable) sum(match func(key []string) bool) cellValues {
	var out cellValues
	for k, c := range tt {
		if !match(strings.Split(k, "|")) {
			continue
		}
		for name, v := range c.values {
			out.add(name, v, false)
			out.n[name] += c.n[name]
		}
	}
	return out
}

// checkValue returns what is wrong with a released or withheld value,
// given the true value and the patients n it is over, or "". values is
// what a mean averages.
func checkValue(kind disclosure.Kind, values disclosure.ValueKind, row release.RowKind, got release.Value, want float64, n, minCount, base int64) string {
	reason := got.Reason
	switch kind {
	case disclosure.KindCount:
		c := int64(want)
		switch {
		case got.Released && got.Value != float64(roundCount(c, minCount, base)):
			return "released " + ftoa(got.Value) + ", want " + strconv.FormatInt(roundCount(c, minCount, base), 10) + " (true count " + ftoa(want) + ")"
		case got.Released:
		case reason == disclosure.CodeLowCount && (c < 1 || c >= minCount):
			return "withheld as low_count but the true count is " + ftoa(want)
		case reason != disclosure.CodeLowCount && reason != disclosure.CodeSecondary:
			return "withheld as " + string(reason) + ", want low_count or secondary"
		}
	case disclosure.KindSum:
		switch {
		case got.Released && got.Value != roundSum(want, base):
			return "released " + ftoa(got.Value) + ", want " + ftoa(roundSum(want, base)) + " (true sum " + ftoa(want) + ")"
		case got.Released:
		case n == 0:
			return "a sum over no patients is withheld as " + string(reason)
		case reason == disclosure.CodeFewContributors && n >= minCount:
			return "withheld as few_contributors but " + strconv.FormatInt(n, 10) + " patients contribute"
		case reason != disclosure.CodeFewContributors && reason != disclosure.CodeDominance && reason != disclosure.CodeSecondary:
			return "withheld as " + string(reason)
		}
	case disclosure.KindMean:
		// A binary or integer mean is withheld when its sum is small, since
		// the sum bounds the patients with a non-zero value, and is
		// released as the rounded sum over the rounded n, so that it pins
		// neither; a continuous one is the true mean to 4 figures.
		continuous := values == disclosure.ValueContinuous
		smallSum := !continuous && want > 0 && want < float64(minCount)
		switch {
		case row != release.RowCell:
			if got.Released {
				return "a mean has no margins, but one was released"
			}
		case n == 0:
			if reason != disclosure.CodeNoPatients {
				return "a mean over no patients is " + string(reason) + ", want no_patients"
			}
		case got.Released && smallSum:
			return "released " + ftoa(got.Value) + ", but its sum " + ftoa(want) + " is below " + strconv.FormatInt(minCount, 10)
		case got.Released && continuous && math.Abs(got.Value-want/float64(n)) > 5e-4*want/float64(n):
			return "released " + ftoa(got.Value) + ", want " + ftoa(want/float64(n)) + " to 4 significant figures"
		case got.Released && !continuous && got.Value != float64(roundCount(int64(want), minCount, base))/float64(roundCount(n, minCount, base)):
			return "released " + ftoa(got.Value) + ", want the rounded sum over the rounded patients, " +
				strconv.FormatInt(roundCount(int64(want), minCount, base), 10) + "/" + strconv.FormatInt(roundCount(n, minCount, base), 10)
		case got.Released:
		case reason == disclosure.CodeFewContributors && n >= minCount && !smallSum:
			return "withheld as few_contributors but " + strconv.FormatInt(n, 10) + " patients contribute a sum of " + ftoa(want)
		case reason != disclosure.CodeFewContributors && reason != disclosure.CodeDominance && reason != disclosure.CodeSecondary:
			return "withheld as " + string(reason)
		}
	default:
		return "unexpected measure kind " + string(kind)
	}
	return ""
}

// roundCount is disclosure control's documented rounding of a count that
// passed: to the nearest multiple of base, half up, never under the
// smallest multiple of base that is at least minCount.
func roundCount(c, minCount, base int64) int64 {
	if c == 0 {
		return 0
	}
	r := (2*c + base) / (2 * base) * base
	return max(r, (minCount+base-1)/base*base)
}

// roundSum rounds a sum to the nearest multiple of base, half up.
func roundSum(s float64, base int64) float64 {
	b := float64(base)
	return math.Floor(s/b+0.5) * b
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// checkNoProcesses checks that no process the demo started, nor any in its
// process groups (the connector plugins), nor any other process running
// from the demo directory, is left.
func checkNoProcesses(t *testing.T, res *demo.Result) {
	t.Helper()
	if len(res.PIDs) == 0 {
		return
	}
	for _, pid := range res.PIDs {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("child process %d is still there (kill 0: %v)", pid, err)
		}
		if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process group %d still has a member (kill 0: %v)", pid, err)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(res.Dir)) {
			t.Errorf("process %s still runs from the demo directory: %s", filepath.Base(filepath.Dir(p)), bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
}
