package linkage_test

import (
	"context"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/linkage"
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
		r["statin_issues__n_key"] = (patients + onStatin) % R
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
		// The sum's n key: each practice's, added mod R.
		if w := (want[k][0] + want[k][1]) % R; c.Values[2].NKey != w {
			t.Errorf("cell %s: statin_issues n key %d, want %d", k, c.Values[2].NKey, w)
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
}

// TestCellKeysInLinkageMode: with record keys, practices send each
// patient's record key after the pseudonym and a count's cell key is the
// sum mod R of the keys of the patients it counts, trusts' rows adding
// nothing. A key outside [0, R) refuses the batch naming the field.
func TestCellKeysInLinkageMode(t *testing.T) {
	const R = 256
	f := newFixture(t, loadCatalog(t), "t2dm-emergency-admissions")
	f.plan = f.def.PlanWith(catalog.PlanOptions{RecordKeys: true})
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	gp, _ := f.plan.Schema(cdm.KindGP)
	trust, _ := f.plan.Schema(cdm.KindTrust)
	if trust.HasField(catalog.FieldNameRecordKey) {
		t.Errorf("trusts send record keys for a GP population: %v", trust)
	}
	var p1, p2, p3 [16]byte
	p1[0], p2[0], p3[0] = 1, 2, 3
	bs := []batchOf{
		{linkage.Site{ODS: "A81001", Kind: cdm.KindGP}, buildRecord(t, mem, gp, []row{
			{"pseudonym": p1, "record_key": int64(200), "age_band": "50-59", "sex": "M"},
			{"pseudonym": p2, "record_key": int64(100), "age_band": "50-59", "sex": "M"},
		})},
		{linkage.Site{ODS: "A81002", Kind: cdm.KindGP}, buildRecord(t, mem, gp, []row{
			{"pseudonym": p3, "record_key": int64(7), "age_band": "40-49", "sex": "F"},
		})},
		{linkage.Site{ODS: "RXA", Kind: cdm.KindTrust}, buildRecord(t, mem, trust, []row{
			{"pseudonym": p1, "emergency_admissions": int64(2)},
			{"pseudonym": p3, "emergency_admissions": int64(1)},
		})},
		{linkage.Site{ODS: "RXB", Kind: cdm.KindTrust}, buildRecord(t, mem, trust, []row{
			{"pseudonym": p1, "emergency_admissions": int64(1)},
		})},
	}
	defer release(bs)
	r := f.newRun(t, linkage.Options{KeyRange: R})
	addAll(t, r, bs)
	tab, _ := tableOf(t, r)
	// patients and admitted (Key); the sum admissions has no Key, but its
	// n, the admitted patients, has an NKey.
	want := map[string][3]uint64{"50-59|M": {(200 + 100) % R, 200, 0}, "40-49|F": {7, 7, 0}}
	wantN := map[string]uint64{"50-59|M": 200, "40-49|F": 7}
	if len(tab.Cells) != len(want) {
		t.Fatalf("%d cells, want %d", len(tab.Cells), len(want))
	}
	for _, c := range tab.Cells {
		k := strings.Join(c.Key, "|")
		if got := [3]uint64{c.Values[0].Key, c.Values[1].Key, c.Values[2].Key}; got != want[k] {
			t.Errorf("cell %s: keys %v, want %v", k, got, want[k])
		}
		if c.Values[2].NKey != wantN[k] {
			t.Errorf("cell %s: admissions n key %d, want %d", k, c.Values[2].NKey, wantN[k])
		}
	}

	bad := buildRecord(t, mem, gp, []row{{"pseudonym": p1, "record_key": int64(R), "age_band": "50-59", "sex": "M"}})
	defer bad.Release()
	r2 := f.newRun(t, linkage.Options{KeyRange: R})
	if err := r2.Add(context.Background(), linkage.Site{ODS: "A81001", Kind: cdm.KindGP}, bad); err == nil || !strings.Contains(err.Error(), "record_key") {
		t.Errorf("a record key of %d was accepted: %v", R, err)
	}
}

// TestCellKeysHospitalPopulation: for a population evaluated at trusts,
// every trust sends the patient's record key, and the patient's key is
// counted once however many trusts saw them.
func TestCellKeysHospitalPopulation(t *testing.T) {
	const R = 256
	f := newFixture(t, loadCatalog(t), "emergency-readmissions-30d")
	f.plan = f.def.PlanWith(catalog.PlanOptions{RecordKeys: true})
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	schema, _ := f.plan.Schema(cdm.KindTrust)
	var p, q [16]byte
	p[0], q[0] = 1, 2
	rxa := buildRecord(t, mem, schema, []row{
		{"pseudonym": p, "record_key": int64(250), "in_population": true, "readmissions__discharge_days": []int32{10}, "readmissions__admission_days": []int32{5}, "trust__first_day": int32(5)},
		{"pseudonym": q, "record_key": int64(3), "in_population": false, "readmissions__discharge_days": []int32{}, "readmissions__admission_days": []int32{}, "trust__first_day": nil},
	})
	rxb := buildRecord(t, mem, schema, []row{
		{"pseudonym": p, "record_key": int64(250), "in_population": true, "readmissions__discharge_days": []int32{}, "readmissions__admission_days": []int32{20}, "trust__first_day": int32(20)},
	})
	defer rxa.Release()
	defer rxb.Release()
	r := f.newRun(t, linkage.Options{KeyRange: R})
	addAll(t, r, []batchOf{{linkage.Site{ODS: "RXA", Kind: cdm.KindTrust}, rxa}, {linkage.Site{ODS: "RXB", Kind: cdm.KindTrust}, rxb}})
	tab, _ := tableOf(t, r)
	if len(tab.Cells) != 1 {
		t.Fatalf("cells = %+v; want one", tab.Cells)
	}
	c := tab.Cells[0]
	// The patients count and the readmitted count both hold p alone: q
	// is outside the population and adds nothing.
	if c.Values[0].Count != 1 || c.Values[0].Key != 250 || c.Values[1].Count != 1 || c.Values[1].Key != 250 {
		t.Errorf("cell = %+v; want 1 patient and 1 readmitted, each keyed 250", c)
	}
}
