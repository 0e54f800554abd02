package correctness

import (
	"bufio"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/havenhealth/haven/coordinator/disclosure"
	"github.com/havenhealth/haven/coordinator/release"
	"github.com/havenhealth/haven/integration/demo"
	"github.com/havenhealth/haven/integration/synth"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// question is one definition with one parameter set, and its central
// answer; params are every parameter, defaults written out, since the
// central SQL needs them all.
type question struct {
	set     string // "default" or "other"
	def     string
	purpose string
	params  map[string]string
	// answer computes the central truth; nil where the central SQL does
	// not cover the definition.
	answer func(c *central, p map[string]string) trueTable
}

func atoi(t testing.TB, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("parameter %q: %v", s, err)
	}
	return n
}

func questions(t testing.TB) []question {
	prev := func(c *central, p map[string]string) trueTable {
		return c.t2dmPrevalence(p["index_date"], atoi(t, p["min_age"]))
	}
	adm := func(c *central, p map[string]string) trueTable {
		return c.t2dmEmergencyAdmissions(p["index_date"], atoi(t, p["followup_days"]))
	}
	statins := func(c *central, p map[string]string) trueTable {
		return c.statinsCHD(p["index_date"], atoi(t, p["lookback_days"]))
	}
	bp := func(c *central, p map[string]string) trueTable {
		return c.bpControl(p["index_date"], atoi(t, p["lookback_days"]), atoi(t, p["target_sbp"]))
	}
	copd := func(c *central, p map[string]string) trueTable {
		return c.copdAE(p["index_date"], atoi(t, p["followup_days"]))
	}
	readmit := func(c *central, p map[string]string) trueTable {
		return c.readmissions(p["start"], p["end"], atoi(t, p["window_days"]))
	}
	type pm = map[string]string
	// The defaults are those of each definition.yaml; the other sets lie
	// within the approved ranges of policy/bundle/data.json.
	return []question{
		{"default", "t2dm-prevalence", "commissioning", pm{"index_date": "2024-04-01", "min_age": "17"}, prev},
		{"other", "t2dm-prevalence", "commissioning", pm{"index_date": "2022-04-01", "min_age": "40"}, prev},
		{"default", "t2dm-emergency-admissions", "commissioning", pm{"index_date": "2023-04-01", "followup_days": "365"}, adm},
		{"other", "t2dm-emergency-admissions", "commissioning", pm{"index_date": "2022-10-01", "followup_days": "180"}, adm},
		{"default", "statins-chd", "clinical_audit", pm{"index_date": "2024-04-01", "lookback_days": "365"}, statins},
		{"other", "statins-chd", "clinical_audit", pm{"index_date": "2023-04-01", "lookback_days": "180"}, statins},
		{"default", "bp-control-hypertension", "commissioning", pm{"index_date": "2024-04-01", "lookback_days": "365", "target_sbp": "140"}, bp},
		{"other", "bp-control-hypertension", "commissioning", pm{"index_date": "2023-04-01", "lookback_days": "180", "target_sbp": "150"}, bp},
		{"default", "copd-ae-attendances", "commissioning", pm{"index_date": "2023-04-01", "followup_days": "365"}, copd},
		{"other", "copd-ae-attendances", "commissioning", pm{"index_date": "2022-04-01", "followup_days": "180"}, copd},
		{"default", "emergency-readmissions-30d", "commissioning", pm{"start": "2023-04-01", "end": "2024-03-31", "window_days": "30"}, readmit},
		{"other", "emergency-readmissions-30d", "commissioning", pm{"start": "2022-04-01", "end": "2023-03-31", "window_days": "14"}, readmit},
	}
}

// TestFederatedMatchesCentral runs every question through one demo
// network and compares each released table with the central answer.
func TestFederatedMatchesCentral(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole network as processes; skipped with -short")
	}
	qs := questions(t)
	var queries []demo.Query
	for _, q := range qs {
		queries = append(queries, demo.Query{Definition: q.def, Parameters: q.params, Purpose: q.purpose})
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	began := time.Now()
	res, err := demo.Run(ctx, demo.Options{
		Dir:     filepath.Join(t.TempDir(), "demo"),
		Keep:    true, // the central answers read its files; TempDir removes it
		Queries: queries,
	})
	if err != nil {
		t.Fatalf("demo: %v", err)
	}
	t.Logf("the demo ran %d queries in %s", len(res.Runs), time.Since(began).Round(time.Second))
	if len(res.Runs) != len(qs) {
		t.Fatalf("%d runs, want %d", len(res.Runs), len(qs))
	}
	c := newCentral(t, res.Network, filepath.Join(res.Dir, "bundle"))

	var matrix strings.Builder
	fmt.Fprintf(&matrix, "\n%-28s %-8s %6s %8s %8s %s\n", "definition", "params", "cells", "released", "withheld", "all equal")
	for i, q := range qs {
		rr := res.Runs[i]
		if rr.Run.GetState() != havenv1.RunState_RUN_STATE_RELEASED || rr.Table == nil {
			t.Errorf("%s %s: run %s is %s (%s), want a released table", q.def, q.set, rr.Run.GetId(), rr.Run.GetState(), rr.Run.GetError())
			continue
		}
		if rr.Table.Meta.DefinitionID != q.def {
			t.Fatalf("run %d released %s, want %s", i, rr.Table.Meta.DefinitionID, q.def)
		}
		if q.answer == nil {
			fmt.Fprintf(&matrix, "%-28s %-8s %6d %8s %8s %s\n", q.def, q.set, len(rr.Table.Rows), "-", "-", "not compared (no central SQL)")
			continue
		}
		st := checkTable(t, rr.Table, q.answer(c, q.params), q.set)
		fmt.Fprintf(&matrix, "%-28s %-8s %6d %8d %8d %v\n", q.def, q.set, st.cells, st.released, st.withheld, st.problems == 0)
	}
	t.Log(matrix.String())
}

// Everything below is copied from integration/demo/reference_test.go
// (package demo_test, unexported there): the true-table bookkeeping and
// the check of a released value against the true one. checkTable also
// returns its counts.

// cellValues are the true values of one cell's measures, before
// disclosure control, by measure name; n counts the patients a sum or
// mean is over.
type cellValues struct {
	values map[string]float64
	n      map[string]int64
}

func (c *cellValues) add(measure string, v float64, contributes bool) {
	if c.values == nil {
		c.values, c.n = map[string]float64{}, map[string]int64{}
	}
	c.values[measure] += v
	if contributes {
		c.n[measure]++
	}
}

// meanValues says what each mean measure of the definitions averages,
// which decides how disclosure control releases it.
var meanValues = map[string]disclosure.ValueKind{
	"prevalence": disclosure.ValueBinary,     // of has_t2dm, 0 or 1
	"mean_sbp":   disclosure.ValueContinuous, // of a numeric_value
}

// trueTable is an answer before disclosure control: cells keyed by their
// group values joined with "|".
type trueTable map[string]*cellValues

func (tt trueTable) cell(key ...string) *cellValues {
	k := strings.Join(key, "|")
	if tt[k] == nil {
		tt[k] = &cellValues{}
	}
	return tt[k]
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

type tableStats struct{ cells, released, withheld, problems int }

// checkTable checks every value of a released table against the true
// answer and that the table has exactly the true table's cells.
func checkTable(t *testing.T, tab *release.Table, truth trueTable, set string) tableStats {
	t.Helper()
	var st tableStats
	m := tab.Meta
	fail := func(format string, args ...any) {
		st.problems++
		t.Errorf("%s %s: %s", m.DefinitionID, set, fmt.Sprintf(format, args...))
	}
	if m.MinCellCount < 1 || m.RoundingBase < 1 {
		t.Fatalf("%s: table says min cell count %d, rounding base %d", m.DefinitionID, m.MinCellCount, m.RoundingBase)
	}
	var cells []string
	for _, row := range tab.Rows {
		var key string
		var v cellValues
		switch row.Kind {
		case release.RowCell:
			key = strings.Join(row.Key, "|")
			c, ok := truth[key]
			if !ok {
				fail("released cell %s has no patients centrally", key)
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
			switch {
			case got.Released:
				st.released++
			case got.Withheld():
				st.withheld++
			}
			values, ok := meanValues[ms.Name]
			if ms.Kind == disclosure.KindMean && !ok {
				t.Fatalf("%s: the test does not say what mean %s averages", m.DefinitionID, ms.Name)
			}
			if msg := checkValue(ms.Kind, values, row.Kind, got, want, n, m.MinCellCount, m.RoundingBase); msg != "" {
				fail("%s %s %s: %s", row.Kind, key, ms.Name, msg)
			}
			if ms.Kind != disclosure.KindMean || values == disclosure.ValueContinuous || !got.Released {
				continue
			}
			for k, o := range tab.Measures {
				c := v.values[o.Name]
				if o.Kind == disclosure.KindCount && row.Values[k].Withheld() && (c == float64(n) || c == want) {
					fail("%s %s %s: released %s beside a withheld %s it gives back", row.Kind, key, ms.Name, ftoa(got.Value), o.Name)
				}
			}
		}
	}
	st.cells = len(cells)
	if len(truth) != len(cells) {
		for k := range truth {
			if !slices.Contains(cells, k) {
				fail("cell %s has patients centrally but is not in the released table", k)
			}
		}
	}
	if last := tab.Rows[len(tab.Rows)-1]; last.Kind != release.RowTotal || !last.Values[0].Released {
		fail("the last row is not a released grand total")
	}
	return st
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

func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func readNDOP(t testing.TB, n *synth.Network) map[string]bool {
	t.Helper()
	f, err := os.Open(n.Path(n.NationalOptOut.Path))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(f)
	for first := true; sc.Scan(); first = false {
		if !first {
			out[strings.TrimSpace(sc.Text())] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// readCodelist reads the codes of a codelist of the demo's bundle.
func readCodelist(t testing.TB, bundle, name string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(bundle, "codelists", name+".csv"))
	if err != nil {
		t.Fatal(err)
	}
	var body strings.Builder
	for line := range strings.Lines(string(b)) {
		if !strings.HasPrefix(line, "#") {
			body.WriteString(line)
		}
	}
	r := csv.NewReader(strings.NewReader(body.String()))
	codes := map[string]bool{}
	for first := true; ; first = false {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("codelist %s: %v", name, err)
		}
		if !first {
			codes[rec[0]] = true
		}
	}
	if len(codes) == 0 {
		t.Fatalf("codelist %s has no codes", name)
	}
	return codes
}
