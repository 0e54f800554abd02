package coordinator_test

import (
	"slices"
	"testing"

	"github.com/havenhealth/haven/coordinator/coordinatortest"
	"github.com/havenhealth/haven/policy/ptable"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/release"
)

// TestPerturbedAggregateRelease runs statins-chd on a network whose bundle
// switches cell-key perturbation on: every practice is asked for record
// keys in the p-table's range, the coordinator adds the practices' cell
// keys and releases each count through the p-table. The release must equal
// the table computed here from the patients and their record keys, every
// released cell count must lie within the p-table's bounds of its true
// count, and some count must differ from plain rounding, or perturbation
// did nothing.
func TestPerturbedAggregateRelease(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{EditData: func(data map[string]any) {
		data["disclosure"].(map[string]any)["perturbation"].(map[string]any)["enabled"] = true
	}})
	odsCodes := practices(2)
	ps := coordinatortest.Patients(11, odsCodes, 300, nil)
	nodes := gpNodes(n, ps, odsCodes...)
	for _, nd := range nodes {
		statinsAnswer(n, ps, nd)
	}
	connect(t, ctx, nodes...)
	conn := analyst(n, "ana")
	run := submit(t, ctx, conn, "statins-chd", purpose, nil)
	evs := watch(t, ctx, conn, run.GetId())
	done := evs[len(evs)-1].GetRun()
	if done.GetState() != havenv1.RunState_RUN_STATE_RELEASED {
		t.Fatalf("run ended %s: %v %s; sites %v", done.GetState(), done.GetPolicyReasons(), done.GetError(), done.GetCoverage().GetSites())
	}
	th := thresholds(t, n)
	pt, ok := th.Perturbation.(*ptable.Table)
	if !ok {
		t.Fatal("the network's bundle does not perturb")
	}
	for _, nd := range nodes {
		task := nd.Tasks()[0]
		if task.GetRecordKeyRange() != uint32(th.Perturbation.KeyRange()) || !slices.Contains(task.GetOutputFields(), "patients__key") {
			t.Fatalf("%s was sent record_key_range %d and fields %v", nd.ODS, task.GetRecordKeyRange(), task.GetOutputFields())
		}
	}
	tab := fetch(t, ctx, conn, run.GetId())
	compareTables(t, tab, expectStatins(t, n, ps, odsCodes...))
	// The run's summary and the table both say the counts were perturbed,
	// and through which table: a reader must not take them for rounded.
	if got := done.GetRelease().GetPerturbationTable(); got != "disclosure/ptable-8-5.csv" {
		t.Errorf("release summary names p-table %q", got)
	}
	if m := tab.Meta; m.PerturbationTable != "disclosure/ptable-8-5.csv" || m.PerturbationKeyRange != int64(th.Perturbation.KeyRange()) {
		t.Errorf("released table says p-table %q, key range %d", m.PerturbationTable, m.PerturbationKeyRange)
	}

	// Independently of disclosure.Apply: each cell count within bounds.
	def, _ := n.Catalog.Get("statins-chd")
	truth := map[[2]string]int64{}
	for _, p := range ps {
		truth[[2]string{coordinatortest.AgeBand(def, p.Age), p.Sex}]++
	}
	differs, cells := 0, 0
	for _, r := range tab.Rows {
		if r.Kind != release.RowCell || !r.Values[0].Released {
			continue
		}
		cells++
		c := truth[[2]string{r.Key[0], r.Key[1]}]
		v := int64(r.Values[0].Value)
		if lo, hi := pt.Bounds(c); v < lo || v > hi {
			t.Errorf("cell %v: %d patients released as %d, outside the p-table's [%d, %d]", r.Key, c, v, lo, hi)
		}
		if rounded := (c + 2) / 5 * 5; v != rounded {
			differs++
		}
	}
	if cells < 4 || differs == 0 {
		t.Errorf("%d cells released, %d differ from plain rounding: the test proves nothing", cells, differs)
	}
}
