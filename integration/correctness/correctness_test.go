package correctness

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/havenhealth/haven/coordinator/disclosure"
	"github.com/havenhealth/haven/demo"
	"github.com/havenhealth/haven/integration/leakcheck"
	"github.com/havenhealth/haven/integration/releasecheck"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/release"
)

// question is one definition with one parameter set, and its central
// answer; params are every parameter, defaults written out, since the
// central SQL needs them all.
type question struct {
	set     string // "default" or "other"
	def     string
	purpose string
	params  map[string]string
	// answer computes the central truth.
	answer func(c *central, p map[string]string) releasecheck.TrueTable
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
	prev := func(c *central, p map[string]string) releasecheck.TrueTable {
		return c.t2dmPrevalence(p["index_date"], atoi(t, p["min_age"]))
	}
	adm := func(c *central, p map[string]string) releasecheck.TrueTable {
		return c.t2dmEmergencyAdmissions(p["index_date"], atoi(t, p["followup_days"]))
	}
	statins := func(c *central, p map[string]string) releasecheck.TrueTable {
		return c.statinsCHD(p["index_date"], atoi(t, p["lookback_days"]))
	}
	bp := func(c *central, p map[string]string) releasecheck.TrueTable {
		return c.bpControl(p["index_date"], atoi(t, p["lookback_days"]), atoi(t, p["target_sbp"]))
	}
	copd := func(c *central, p map[string]string) releasecheck.TrueTable {
		return c.copdAE(p["index_date"], atoi(t, p["followup_days"]))
	}
	readmit := func(c *central, p map[string]string) releasecheck.TrueTable {
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

// TestFederatedMatchesCentral runs every question through a network of
// separate processes twice and compares each table with the central
// answer: once with a board bundle whose disclosure thresholds do nothing
// (minimum count 1, rounding base 1, no dominance rule, no perturbation),
// so that the federated table before disclosure control is released as it
// is and must equal the central one cell for cell; and once with the
// reference bundle less its ledger's near-duplicate rule (repeatable), so
// that three questions can be asked again. In the second every count is
// perturbed: each released count must equal exactly what the bundle's
// p-table releases for the central count and the cell key the central
// computation derives from the raw NHS numbers and the network's
// perturbation secret, and lie within the p-table's bounds; sums and means
// must be the central ones rounded, every withheld value must have a
// reason that fits it, and each repeated question must release a table
// identical, value for value and reason for reason, to its first run.
//
// The other arm of the issue, thresholds on and perturbation off, is
// checked against central answers by integration/attack's
// TestAttackUnprotected (every table it reads), and the rounding rule by
// coordinator/disclosure's TestPrimaryRules, TestMarginsAndTotal and
// TestPropertyRelease; a third network here would cost two minutes more.
func TestFederatedMatchesCentral(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole network as processes; skipped with -short")
	}
	root := t.TempDir() // outlives the subtests: the second reuses the first's haven
	var haven string
	for i, tc := range []struct {
		name string
		edit func(dir string) error
		raw  bool
	}{
		{"before disclosure control", disclosureOff, true},
		{"after disclosure control", repeatable, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(root, strconv.Itoa(i))
			matrix(t, dir, haven, tc.edit, tc.raw)
			if haven == "" {
				haven = filepath.Join(dir, "bin", "haven")
			}
		})
	}
}

// disclosureOff sets a bundle's disclosure thresholds to ones that
// withhold and round nothing: what a board would never sign, and what
// shows the table disclosure control starts from.
var disclosureOff = demo.EditData(func(data map[string]any) error {
	d, err := demo.Object(data, "disclosure")
	if err != nil {
		return err
	}
	d["min_cell_count"] = 1
	d["rounding_base"] = 1
	d["dominance"] = map[string]any{"n": 1, "k": 1}
	d["dominance_kinds"] = []string{}
	d["dominance_on_request_kinds"] = []string{}
	d["purposes"] = map[string]any{}
	d["attribute_disclosure"] = false
	delete(d, "perturbation")
	// Networks that compare before disclosure control ask one question
	// again on purpose (a site paused, then not); the ledger would refuse
	// the repeat as a near-duplicate.
	delete(data, "ledger")
	return nil
})

// repeatable lifts the release ledger's near-duplicate rule from the
// reference bundle, and nothing else, so that a question can be asked
// twice within its window (the rest of the ledger, its query budget,
// stays in force): the second arm repeats questions to show that a
// perturbed release repeats exactly. The rule itself is tested by
// haven/submit's Rego tests.
var repeatable = demo.EditData(func(data map[string]any) error {
	l, err := demo.Object(data, "ledger")
	if err != nil || l["near_duplicate"] == nil {
		return fmt.Errorf("no ledger.near_duplicate to lift")
	}
	delete(l, "near_duplicate")
	return nil
})

// repeated are the questions the perturbed arm asks a second time: one
// aggregate definition, one linkage definition over a GP population and
// one over a trust population (whose record keys come from trusts).
var repeated = []string{"t2dm-prevalence", "t2dm-emergency-admissions", "emergency-readmissions-30d"}

// matrix runs every question on one network and checks each table. With
// raw set, the bundle's thresholds do nothing and only means over no
// patients may be withheld. Otherwise counts are perturbed, are checked
// exactly against cell keys computed centrally, and the default question
// of each repeated definition is asked again and must release the same
// table. An empty haven builds one into dir.
func matrix(t *testing.T, dir, haven string, edit func(string) error, raw bool) {
	qs := questions(t)
	var queries []demo.Query
	for _, q := range qs {
		queries = append(queries, demo.Query{Definition: q.def, Parameters: q.params, Purpose: q.purpose})
	}
	var repeats []int // indices in qs of the questions asked again, in order
	if !raw {
		for _, def := range repeated {
			i := slices.IndexFunc(qs, func(q question) bool { return q.def == def && q.set == "default" })
			if i < 0 {
				t.Fatalf("no default question of %s to repeat", def)
			}
			repeats = append(repeats, i)
			queries = append(queries, queries[i])
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	began := time.Now()
	res, err := demo.Run(ctx, demo.Options{
		Dir:        dir,
		Keep:       true, // the central answers read its files; TempDir removes it
		Queries:    queries,
		Haven:      haven,
		EditBundle: edit,
	})
	if err != nil {
		t.Fatalf("demo: %v", err)
	}
	t.Logf("the network ran %d queries in %s", len(res.Runs), time.Since(began).Round(time.Second))
	if len(res.Runs) != len(queries) {
		t.Fatalf("%d runs, want %d", len(res.Runs), len(queries))
	}
	c := newCentral(t, res.Network, filepath.Join(res.Dir, "bundle"))
	pt := releasecheck.MustPTable(t, filepath.Join(res.Dir, "bundle"))
	if raw == (pt != nil) {
		t.Fatalf("raw %v, but the bundle's p-table is %v", raw, pt)
	}
	if pt != nil {
		c.withRecordKeys(res.PerturbationSecretFile(), pt.KeyRange())
	}

	var m strings.Builder
	var exact int
	fmt.Fprintf(&m, "\n%-28s %-8s %6s %8s %8s %6s %s\n", "definition", "params", "cells", "released", "withheld", "exact", "all equal")
	for i, q := range qs {
		rr := res.Runs[i]
		if rr.Run.GetState() != havenv1.RunState_RUN_STATE_RELEASED || rr.Table == nil {
			t.Errorf("%s %s: run %s is %s (%s), want a released table", q.def, q.set, rr.Run.GetId(), rr.Run.GetState(), rr.Run.GetError())
			continue
		}
		if rr.Table.Meta.DefinitionID != q.def {
			t.Fatalf("run %d released %s, want %s", i, rr.Table.Meta.DefinitionID, q.def)
		}
		what := q.def + " " + q.set
		if !raw && !rr.Table.Meta.Perturbed() {
			t.Errorf("%s: released without perturbation under the reference bundle", what)
		}
		if raw {
			if meta := rr.Table.Meta; meta.MinCellCount != 1 || meta.RoundingBase != 1 {
				t.Fatalf("%s: released with min cell count %d, rounding base %d; the edited bundle was not in force", what, meta.MinCellCount, meta.RoundingBase)
			}
			for _, row := range rr.Table.Rows {
				for j, v := range row.Values {
					if v.Withheld() && v.Reason != disclosure.CodeNoPatients && row.Kind == release.RowCell {
						t.Errorf("%s: %v %s withheld as %s with disclosure control off", what, row.Key, rr.Table.Measures[j].Name, v.Reason)
					}
				}
			}
		}
		st := releasecheck.CheckT(t, rr.Table, q.answer(c, q.params), meanValues, pt, what)
		exact += st.Exact
		fmt.Fprintf(&m, "%-28s %-8s %6d %8d %8d %6d %v\n", q.def, q.set, st.Cells, st.Released, st.Withheld, st.Exact, st.Problems == 0)
	}
	for k, i := range repeats {
		q, first, again := qs[i], res.Runs[i], res.Runs[len(qs)+k]
		what := q.def + " " + q.set + " repeated"
		if again.Run.GetState() != havenv1.RunState_RUN_STATE_RELEASED || again.Table == nil {
			t.Errorf("%s: run %s is %s (%s), want a released table", what, again.Run.GetId(), again.Run.GetState(), again.Run.GetError())
			continue
		}
		if first.Table == nil {
			continue // reported above
		}
		if first.Run.GetId() == again.Run.GetId() {
			t.Errorf("%s: the repeat is run %s again, not a new run", what, again.Run.GetId())
		}
		diff := releasecheck.Diff(first.Table, again.Table)
		for _, d := range diff {
			t.Errorf("%s: run %s then %s: %s", what, first.Run.GetId(), again.Run.GetId(), d)
		}
		var values int
		for _, row := range again.Table.Rows {
			values += len(row.Values)
		}
		fmt.Fprintf(&m, "%-28s %-8s %6s %8d values  identical to the first run: %v\n", q.def, "repeat", "", values, len(diff) == 0)
	}
	if !raw {
		fmt.Fprintf(&m, "perturbed counts equal to the p-table's value for the central count and cell key: %d\n", exact)
		if exact == 0 {
			t.Errorf("no perturbed count was checked exactly")
		}
	}
	t.Log(m.String())
	privacyScan(t, res, qs)
}

// privacyScan scans what the coordinator and the nodes wrote over all
// twelve runs for the network's identifiers: zero hits.
func privacyScan(t *testing.T, res *demo.Result, qs []question) {
	var linkage, typed []string
	for _, rr := range res.Runs {
		if rr.Definition.GetMode() == havenv1.PlanMode_PLAN_MODE_LINKAGE {
			linkage = append(linkage, rr.Run.GetId())
		}
	}
	for _, q := range qs {
		for _, v := range q.params {
			typed = append(typed, v) // dates the commissioner typed
		}
	}
	rep, err := leakcheck.ScanNetwork(t.Context(), res, linkage, typed)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("privacy scan of %d linkage runs: %s", len(linkage), rep)
	for _, h := range rep.Describe(20) {
		t.Errorf("privacy: %s", h)
	}
}

// meanValues says what each mean measure of the definitions averages,
// which decides how disclosure control releases it.
var meanValues = map[string]disclosure.ValueKind{
	"prevalence": disclosure.ValueBinary,     // of has_t2dm, 0 or 1
	"mean_sbp":   disclosure.ValueContinuous, // of a numeric_value
}
