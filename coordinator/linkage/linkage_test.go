package linkage_test

import (
	"context"
	"errors"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/disclosure"
	"github.com/havenhealth/haven/coordinator/linkage"
	"github.com/havenhealth/haven/policy/catalog"
)

const topK = 3 // linkage.Options' default TopContributions

func seedOf(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

// batches turns uploads into (site, record) pairs, each site's rows cut
// into random batches.
type batchOf struct {
	site linkage.Site
	rec  arrow.Record
}

func makeBatches(t testing.TB, rng *rand.Rand, mem memory.Allocator, f fixture, ups []upload) []batchOf {
	t.Helper()
	var out []batchOf
	for _, u := range ups {
		schema, ok := f.plan.Schema(u.site.Kind)
		if !ok {
			t.Fatalf("plan %s has no schema for %s", f.plan.Definition, u.site.Kind)
		}
		for _, rec := range records(t, rng, mem, schema, u.rows) {
			out = append(out, batchOf{u.site, rec})
		}
	}
	return out
}

func release(bs []batchOf) {
	for _, b := range bs {
		b.rec.Release()
	}
}

func addAll(t testing.TB, r *linkage.Run, bs []batchOf) {
	t.Helper()
	for _, b := range bs {
		if err := r.Add(context.Background(), b.site, b.rec); err != nil {
			t.Fatalf("Add(%s %s): %v", b.site.Kind, b.site.ODS, err)
		}
	}
}

func tableOf(t testing.TB, r *linkage.Run) (disclosure.Table, linkage.Stats) {
	t.Helper()
	tab, st, err := r.Table(context.Background())
	if err != nil {
		t.Fatalf("Table: %v", err)
	}
	return tab, st
}

// TestReferenceDefinitions runs every definition of the reference bundle
// through its real plan on synthetic uploads and compares the table, cell
// by cell, with the brute-force computation.
func TestReferenceDefinitions(t *testing.T) {
	c := loadCatalog(t)
	for _, d := range c.Definitions() {
		t.Run(d.ID, func(t *testing.T) {
			f := newFixture(t, c, d.ID)
			rng := rand.New(rand.NewPCG(1, seedOf(d.ID)))
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)

			var (
				ups  []upload
				pats []patientVals
			)
			linked := f.plan.Mode == catalog.ModeLinkage
			if linked {
				ups = genLinkage(rng, f, 3000)
				pats = linkPatients(f, ups)
			} else {
				ups, pats = genAggregate(rng, f, 400)
			}
			want := expect(f, pats)
			bs := makeBatches(t, rng, mem, f, ups)
			defer release(bs)

			r := f.newRun(t, linkage.Options{Partitions: 3})
			addAll(t, r, bs)
			tab, st := tableOf(t, r)
			compareTable(t, f, tab, want, linked)

			var gpRows, trustRows int64
			keys := map[[16]byte]bool{}
			for _, u := range ups {
				for _, row := range u.rows {
					if k, ok := row[catalog.FieldNamePseudonym].([16]byte); ok {
						keys[k] = true
					}
				}
				if u.site.Kind == cdm.KindGP {
					gpRows += int64(len(u.rows))
				} else {
					trustRows += int64(len(u.rows))
				}
			}
			if st.GPRows != gpRows || st.TrustRows != trustRows || st.Batches != int64(len(bs)) || st.Sites != len(ups) || st.Cells != len(tab.Cells) {
				t.Errorf("stats = %+v; want %d GP rows, %d trust rows, %d batches, %d sites", st, gpRows, trustRows, len(bs), len(ups))
			}
			if linked {
				if st.Patients != int64(len(keys)) || st.Population != int64(len(pats)) || st.UnlinkedPatients != st.Patients-st.Population {
					t.Errorf("stats = %+v; want %d patients, %d in the population", st, len(keys), len(pats))
				}
				if st.UnlinkedPatients == 0 || st.UnlinkedRows < st.UnlinkedPatients || st.MemoryBytes <= 0 {
					t.Errorf("stats = %+v; the uploads have patients outside the population", st)
				}
			}

			// Disclosure control accepts the table, with a (3, k) dominance
			// rule too.
			th := disclosure.DefaultThresholds()
			th.Dominance.N = 3
			if _, err := disclosure.Apply(context.Background(), tab, th); err != nil {
				t.Errorf("disclosure.Apply: %v", err)
			}
		})
	}
}

// compareTable checks tab against the brute-force cells.
func compareTable(t *testing.T, f fixture, tab disclosure.Table, want map[string]*expCell, linked bool) {
	t.Helper()
	if !reflect.DeepEqual(tab.Dims, f.def.GroupBy) {
		t.Errorf("dims = %v; want %v", tab.Dims, f.def.GroupBy)
	}
	if len(tab.Measures) != len(f.def.Measures) {
		t.Fatalf("%d measures; want %d", len(tab.Measures), len(f.def.Measures))
	}
	for j, m := range f.def.Measures {
		got := tab.Measures[j]
		if got.Name != m.Name || string(got.Kind) != string(m.Agg) || got.Dominance != m.Dominance {
			t.Errorf("measure %d = %+v; want %s %s dominance=%v", j, got, m.Name, m.Agg, m.Dominance)
		}
		// The value kind decides how strictly a mean is controlled: a
		// flag's mean must not be released as a continuous one.
		wantValues := disclosure.ValueUnspecified
		if m.Agg != catalog.AggCount {
			v, _ := f.def.Variable(m.Of)
			wantValues = map[catalog.ValueType]disclosure.ValueKind{
				catalog.TypeBool:  disclosure.ValueBinary,
				catalog.TypeInt:   disclosure.ValueInteger,
				catalog.TypeFloat: disclosure.ValueContinuous,
			}[v.Expr.Type()]
		}
		if got.Values != wantValues {
			t.Errorf("measure %s has values %q; want %q", m.Name, got.Values, wantValues)
		}
	}
	if len(tab.Cells) != len(want) {
		t.Errorf("%d cells; want %d", len(tab.Cells), len(want))
	}
	seen := map[string]bool{}
	for _, cell := range tab.Cells {
		key := strings.Join(cell.Key, "|")
		if seen[key] {
			t.Errorf("cell %q appears twice", key)
		}
		seen[key] = true
		w := want[key]
		if w == nil {
			t.Errorf("unexpected cell %q", key)
			continue
		}
		for j, m := range f.def.Measures {
			got := cell.Values[j]
			where := func(format string, args ...any) {
				t.Helper()
				t.Errorf("cell %q measure %s: "+format, append([]any{key, m.Name}, args...)...)
			}
			if m.Agg == catalog.AggCount {
				if got.Count != w.count[j] {
					where("count %d; want %d", got.Count, w.count[j])
				}
				continue
			}
			if got.N != w.n[j] {
				where("N %d; want %d", got.N, w.n[j])
			}
			switch m.Agg {
			case catalog.AggSum, catalog.AggMean:
				if math.Abs(got.Sum-w.sum[j]) > 1e-9*math.Max(1, math.Abs(w.sum[j])) {
					where("sum %v; want %v", got.Sum, w.sum[j])
				}
			case catalog.AggMin:
				if got.N > 0 && got.Min != w.min[j] {
					where("min %v; want %v", got.Min, w.min[j])
				}
			case catalog.AggMax:
				if got.N > 0 && got.Max != w.max[j] {
					where("max %v; want %v", got.Max, w.max[j])
				}
			}
			if !m.Dominance {
				if got.TopContributions != nil {
					where("top contributions %v for a measure without the dominance rule", got.TopContributions)
				}
				continue
			}
			contribs := w.contribs[j]
			k := min(topK, len(contribs))
			if linked {
				// Exact: the largest contributions themselves.
				if !reflect.DeepEqual(got.TopContributions, contribs[:k]) && k > 0 {
					where("top %v; want %v", got.TopContributions, contribs[:k])
				}
				continue
			}
			// Aggregate mode: the first is exact, the rest bound the true
			// ones from above, prefix by prefix, and never exceed the sum.
			top := got.TopContributions
			if len(top) != k {
				where("%d top contributions; want %d", len(top), k)
				continue
			}
			if k > 0 && top[0] != contribs[0] {
				where("largest contribution %v; want %v", top[0], contribs[0])
			}
			var gs, ws float64
			for i := range k {
				gs += top[i]
				ws += contribs[i]
				if i > 0 && top[i] > top[i-1] {
					where("top contributions %v are not descending", top)
				}
				if gs < ws-1e-9 {
					where("top contributions %v understate the true %v", top, contribs[:k])
				}
			}
			if gs > got.Sum+1e-9 {
				where("top contributions %v exceed the sum %v", top, got.Sum)
			}
		}
	}
	for key := range want {
		if !seen[key] {
			t.Errorf("missing cell %q", key)
		}
	}
}

// TestConcurrentAdd adds the same batches from many goroutines at once and
// one at a time; the tables must be equal. Run it with -race.
func TestConcurrentAdd(t *testing.T) {
	c := loadCatalog(t)
	for _, id := range []string{"t2dm-emergency-admissions", "emergency-readmissions-30d", "statins-chd"} {
		t.Run(id, func(t *testing.T) {
			f := newFixture(t, c, id)
			rng := rand.New(rand.NewPCG(2, seedOf(id)))
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			var ups []upload
			if f.plan.Mode == catalog.ModeLinkage {
				ups = genLinkage(rng, f, 20000)
			} else {
				ups, _ = genAggregate(rng, f, 2000)
			}
			// Many batches per site, some large enough to be applied by
			// several goroutines.
			bs := makeBatches(t, rng, mem, f, ups)
			defer release(bs)

			seq := f.newRun(t, linkage.Options{Partitions: 4})
			addAll(t, seq, bs)
			want, wantStats := tableOf(t, seq)

			// A hint below the real number: the table must grow past it.
			par := f.newRun(t, linkage.Options{Partitions: 4, ExpectedPatients: 5000})
			linkage.SetParallelRows(par, 64) // fan out within batches too
			work := make(chan batchOf)
			var wg sync.WaitGroup
			errs := make(chan error, len(bs))
			for range 8 {
				wg.Go(func() {
					for b := range work {
						if err := par.Add(context.Background(), b.site, b.rec); err != nil {
							errs <- err
						}
					}
				})
			}
			for _, b := range bs {
				work <- b
			}
			close(work)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatalf("concurrent Add: %v", err)
			}
			got, gotStats := tableOf(t, par)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("concurrent table differs from sequential one")
			}
			gotStats.MemoryBytes, wantStats.MemoryBytes = 0, 0
			if gotStats != wantStats {
				t.Errorf("stats = %+v; want %+v", gotStats, wantStats)
			}
		})
	}
}

// TestOrderIndependence shuffles sites and batches and varies the number
// of partitions: the table must not change.
func TestOrderIndependence(t *testing.T) {
	c := loadCatalog(t)
	for _, d := range c.Definitions() {
		t.Run(d.ID, func(t *testing.T) {
			f := newFixture(t, c, d.ID)
			rng := rand.New(rand.NewPCG(3, seedOf(d.ID)))
			mem := memory.NewGoAllocator()
			var ups []upload
			if f.plan.Mode == catalog.ModeLinkage {
				ups = genLinkage(rng, f, 2000)
			} else {
				ups, _ = genAggregate(rng, f, 300)
			}
			var want disclosure.Table
			for i, parts := range []int{1, 2, 7} {
				bs := makeBatches(t, rng, mem, f, ups)
				rng.Shuffle(len(bs), func(i, j int) { bs[i], bs[j] = bs[j], bs[i] })
				r := f.newRun(t, linkage.Options{Partitions: parts})
				addAll(t, r, bs)
				release(bs)
				got, _ := tableOf(t, r)
				if i == 0 {
					want = got
				} else if !reflect.DeepEqual(got, want) {
					t.Errorf("with %d partitions and shuffled batches the table differs", parts)
				}
			}
		})
	}
}

// TestFewContributorsInAggregateMode: in aggregate mode a sum's N is the
// practices' contributors, the patients who add something to it, not the
// patients in the cell, so a sum that few patients make up is withheld
// however many patients the cell holds.
func TestFewContributorsInAggregateMode(t *testing.T) {
	f := newFixture(t, loadCatalog(t), "statins-chd")
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	schema, _ := f.plan.Schema(cdm.KindGP)
	// 22 women aged 50-64 at two practices, of whom 5 had statins: 5 and 4
	// issues at the first, 3, 2 and 1 at the second.
	bs := []batchOf{
		{linkage.Site{ODS: "A81001", Kind: cdm.KindGP}, buildRecord(t, mem, schema, []row{aggRow("50-64", "F", 12, 2, 9, 2, 5)})},
		{linkage.Site{ODS: "A81002", Kind: cdm.KindGP}, buildRecord(t, mem, schema, []row{aggRow("50-64", "F", 10, 3, 6, 3, 3)})},
	}
	defer release(bs)
	r := f.newRun(t, linkage.Options{})
	addAll(t, r, bs)
	tab, _ := tableOf(t, r)
	if len(tab.Cells) != 1 {
		t.Fatalf("%d cells; want 1", len(tab.Cells))
	}
	sum := tab.Cells[0].Values[2]
	if tab.Measures[2].Name != "statin_issues" || sum.N != 5 || sum.Sum != 15 || tab.Cells[0].Values[0].Count != 22 {
		t.Fatalf("statin_issues = %+v in a cell of %d patients; want N 5, sum 15 in a cell of 22", sum, tab.Cells[0].Values[0].Count)
	}
	rel, err := disclosure.Apply(context.Background(), tab, disclosure.DefaultThresholds())
	if err != nil {
		t.Fatal(err)
	}
	got := rel.Cells[0].Values
	if got[0].Status != disclosure.StatusReleased || got[0].Value != 20 {
		t.Errorf("patients = %+v; want 20 released", got[0])
	}
	if got[2].Status != disclosure.StatusWithheld || got[2].Reason.Code != disclosure.CodeFewContributors {
		t.Errorf("statin_issues = %+v; want withheld for few contributors", got[2])
	}
}

// TestDuplicateRegistration sends one patient from two practices with
// different values: the patient is counted once, with the values of the
// practice with the smaller ODS code, whatever the order, and the extra
// row is counted.
func TestDuplicateRegistration(t *testing.T) {
	f := newFixture(t, loadCatalog(t), "t2dm-emergency-admissions")
	mem := memory.NewGoAllocator()
	schema, _ := f.plan.Schema(cdm.KindGP)
	var k, other [16]byte
	k[0], other[0] = 1, 2
	fromA := buildRecord(t, mem, schema, []row{{"pseudonym": k, "age_band": "50-59", "sex": "M"}})
	fromB := buildRecord(t, mem, schema, []row{
		{"pseudonym": k, "age_band": "40-49", "sex": "F"},
		{"pseudonym": other, "age_band": "40-49", "sex": "F"},
	})
	defer fromA.Release()
	defer fromB.Release()
	a := linkage.Site{ODS: "A81001", Kind: cdm.KindGP}
	b := linkage.Site{ODS: "B82003", Kind: cdm.KindGP}
	for _, order := range [][]batchOf{{{a, fromA}, {b, fromB}}, {{b, fromB}, {a, fromA}}} {
		r := f.newRun(t, linkage.Options{})
		addAll(t, r, order)
		tab, st := tableOf(t, r)
		if st.DuplicateRegistrations != 1 || st.Population != 2 {
			t.Errorf("order %s first: stats = %+v; want 1 duplicate, 2 patients", order[0].site.ODS, st)
		}
		got := map[string]int64{}
		for _, c := range tab.Cells {
			got[strings.Join(c.Key, "|")] = c.Values[0].Count
		}
		if want := map[string]int64{"50-59|M": 1, "40-49|F": 1}; !reflect.DeepEqual(got, want) {
			t.Errorf("order %s first: patients = %v; want %v", order[0].site.ODS, got, want)
		}
	}
}

// TestReadmissions pins the readmission rule down on a worked example:
// one patient discharged by one trust and admitted by two.
func TestReadmissions(t *testing.T) {
	f := newFixture(t, loadCatalog(t), "emergency-readmissions-30d") // window_days 30
	mem := memory.NewGoAllocator()
	schema, _ := f.plan.Schema(cdm.KindTrust)
	var p, q [16]byte
	p[0], q[0] = 1, 2
	rxa := buildRecord(t, mem, schema, []row{
		{"pseudonym": p, "in_population": true, "readmissions__discharge_days": []int32{10}, "readmissions__admission_days": []int32{5, 40}, "trust__first_day": int32(5)},
		{"pseudonym": q, "in_population": false, "readmissions__discharge_days": []int32{}, "readmissions__admission_days": []int32{}, "trust__first_day": nil},
	})
	rxb := buildRecord(t, mem, schema, []row{
		// 10: same day as the discharge, not a readmission; 25 and 40 (at
		// RXA): within 30 days; 41: one day too late. 5 precedes it.
		{"pseudonym": p, "in_population": false, "readmissions__discharge_days": []int32{}, "readmissions__admission_days": []int32{10, 25, 41}, "trust__first_day": int32(5)},
		{"pseudonym": q, "in_population": false, "readmissions__discharge_days": []int32{3}, "readmissions__admission_days": []int32{4}, "trust__first_day": int32(3)},
	})
	defer rxa.Release()
	defer rxb.Release()
	r := f.newRun(t, linkage.Options{})
	addAll(t, r, []batchOf{{linkage.Site{ODS: "RXB", Kind: cdm.KindTrust}, rxb}, {linkage.Site{ODS: "RXA", Kind: cdm.KindTrust}, rxa}})
	tab, st := tableOf(t, r)
	if len(tab.Cells) != 1 {
		t.Fatalf("cells = %+v; want one", tab.Cells)
	}
	c := tab.Cells[0]
	// Day 5 at both trusts: the tie goes to the smaller ODS code.
	if c.Key[0] != "RXA" || c.Values[0].Count != 1 || c.Values[1].Count != 1 || c.Values[2].Sum != 2 || c.Values[2].N != 1 {
		t.Errorf("cell = %+v; want trust RXA, 1 patient, 1 readmitted, 2 readmissions", c)
	}
	if st.Population != 1 || st.UnlinkedPatients != 1 || st.UnlinkedRows != 2 {
		t.Errorf("stats = %+v; want 1 patient in the population, 1 outside with 2 rows", st)
	}
}

// TestClose checks that a closed run refuses work.
func TestClose(t *testing.T) {
	f := newFixture(t, loadCatalog(t), "t2dm-emergency-admissions")
	r, err := linkage.New(f.plan, f.def, f.bound, linkage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mem := memory.NewGoAllocator()
	schema, _ := f.plan.Schema(cdm.KindGP)
	rec := buildRecord(t, mem, schema, []row{{"pseudonym": [16]byte{1}, "age_band": "50-59", "sex": "M"}})
	defer rec.Release()
	site := linkage.Site{ODS: "A81001", Kind: cdm.KindGP}
	if err := r.Add(context.Background(), site, rec); err != nil {
		t.Fatal(err)
	}
	r.Close()
	r.Close()
	if err := r.Add(context.Background(), site, rec); !errors.Is(err, linkage.ErrClosed) {
		t.Errorf("Add after Close = %v; want ErrClosed", err)
	}
	if _, _, err := r.Table(context.Background()); !errors.Is(err, linkage.ErrClosed) {
		t.Errorf("Table after Close = %v; want ErrClosed", err)
	}
}

// TestNewRejectsMismatch checks that New refuses a plan of another
// definition.
func TestNewRejectsMismatch(t *testing.T) {
	c := loadCatalog(t)
	a := newFixture(t, c, "t2dm-emergency-admissions")
	b := newFixture(t, c, "copd-ae-attendances")
	for _, tc := range []struct {
		name string
		plan *catalog.Plan
		def  *catalog.Definition
		b    *catalog.Bound
	}{
		{"other plan", b.plan, a.def, a.bound},
		{"other bound", a.plan, a.def, b.bound},
		{"nil plan", nil, a.def, a.bound},
	} {
		if _, err := linkage.New(tc.plan, tc.def, tc.b, linkage.Options{}); err == nil {
			t.Errorf("%s: New succeeded", tc.name)
		}
	}
}
