package linkage_test

import (
	"context"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/havenhealth/haven/coordinator/linkage"
	"github.com/havenhealth/haven/node/cdm"
	"github.com/havenhealth/haven/policy/catalog"
)

// TestCellKeysInAggregateMode: with record keys, a count's cell key is the
// sum mod R of the practices' key sums, it reaches disclosure as the
// count's Input.Key, and a key outside [0, R) refuses the batch naming the
// field. A keyed plan needs a key range, and a key range a keyed plan.
func TestCellKeysInAggregateMode(t *testing.T) {
	const R = 256
	f := newFixture(t, loadCatalog(t), "statins-chd")
	f.plan = f.def.PlanWith(catalog.PlanOptions{RecordKeys: true})
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	schema, _ := f.plan.Schema(cdm.KindGP)
	keyed := func(r row, patients, onStatin int64) row {
		r["patients__key"], r["on_statin__key"] = patients, onStatin
		return r
	}
	bs := []batchOf{
		{linkage.Site{ODS: "A81001", Kind: cdm.KindGP}, buildRecord(t, mem, schema, []row{
			keyed(aggRow("50-64", "F", 12, 2, 9, 2, 5), 200, 17),
			keyed(aggRow("65-79", "M", 9, 0, 0, 0, nil), 0, 0),
		})},
		{linkage.Site{ODS: "A81002", Kind: cdm.KindGP}, buildRecord(t, mem, schema, []row{keyed(aggRow("50-64", "F", 10, 3, 6, 3, 3), 100, 255)})},
	}
	defer release(bs)
	r := f.newRun(t, linkage.Options{KeyRange: R})
	addAll(t, r, bs)
	tab, _ := tableOf(t, r)
	want := map[string][2]uint64{"50-64|F": {(200 + 100) % R, (17 + 255) % R}, "65-74|M": {0, 0}}
	if len(tab.Cells) != len(want) {
		t.Fatalf("%d cells, want %d", len(tab.Cells), len(want))
	}
	for _, c := range tab.Cells {
		k := strings.Join(c.Key, "|")
		if got := [2]uint64{c.Values[0].Key, c.Values[1].Key}; got != want[k] {
			t.Errorf("cell %s: keys %v, want %v", k, got, want[k])
		}
	}

	bad := buildRecord(t, mem, schema, []row{keyed(aggRow("50-64", "M", 12, 2, 9, 2, 5), R, 0)})
	defer bad.Release()
	r2 := f.newRun(t, linkage.Options{KeyRange: R})
	if err := r2.Add(context.Background(), linkage.Site{ODS: "A81001", Kind: cdm.KindGP}, bad); err == nil || !strings.Contains(err.Error(), "patients__key") {
		t.Errorf("a key of %d was accepted: %v", R, err)
	}

	for _, c := range []struct {
		plan *catalog.Plan
		kr   int
	}{{f.plan, 0}, {f.def.Plan(), R}} {
		if _, err := linkage.New(c.plan, f.def, f.bound, linkage.Options{KeyRange: c.kr}); err == nil {
			t.Errorf("record keys %v with key range %d: accepted", c.plan.RecordKeys, c.kr)
		}
	}
	// Linkage-mode record keys are not summed into cell keys yet: refused.
	lf := newFixture(t, loadCatalog(t), "t2dm-emergency-admissions")
	if _, err := linkage.New(lf.def.PlanWith(catalog.PlanOptions{RecordKeys: true}), lf.def, lf.bound, linkage.Options{KeyRange: R}); err == nil {
		t.Error("a keyed linkage plan was accepted")
	}
}
