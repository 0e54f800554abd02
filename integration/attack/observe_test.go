package attack

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

	"github.com/havenhealth/haven/coordinator/disclosure"
	"github.com/havenhealth/haven/policy/ptable"
	"github.com/havenhealth/haven/release"
)

// patient is one synthetic patient on the one index date of these tests.
type patient struct {
	practice, sex string
	age           int
	t2dm          bool
	key           uint64 // record key, for perturbation
}

func population(seed uint64, n int) []patient {
	r := rand.New(rand.NewPCG(seed, 1))
	sexes := []string{"F", "M", "M", "F", "F", "M", "U", "I"}
	out := make([]patient, n)
	for i := range out {
		age := r.IntN(100)
		out[i] = patient{
			practice: fmt.Sprintf("P%d", r.IntN(3)),
			sex:      sexes[r.IntN(len(sexes))],
			age:      age,
			t2dm:     r.Float64() < float64(age)/400,
			key:      r.Uint64(),
		}
	}
	return out
}

func band(age int) string {
	if age >= 90 {
		return "90+"
	}
	return fmt.Sprintf("%d-%d", age/10*10, age/10*10+9)
}

// releaseOf runs the population through the real disclosure control with
// its default thresholds (rounding, no attribute rule), as releaseWith.
func releaseOf(t *testing.T, pop []patient, minAge int) *release.Table {
	t.Helper()
	return releaseWith(t, pop, minAge, disclosure.DefaultThresholds(), "")
}

// releaseWith runs the population through the real disclosure control
// under th, as the coordinator does for t2dm-prevalence at min_age
// (patients, the group total; t2dm; prevalence, the binary mean of t2dm),
// and reads the table back as a commissioner would. ptable names the
// p-table in the table's metadata when th perturbs.
func releaseWith(t *testing.T, pop []patient, minAge int, th disclosure.Thresholds, ptable string) *release.Table {
	t.Helper()
	cells := map[string]*disclosure.Cell{}
	var order []string
	var keyRange uint64
	if th.Perturbation != nil {
		keyRange = uint64(th.Perturbation.KeyRange())
	}
	for _, p := range pop {
		if p.age < minAge {
			continue
		}
		k := p.practice + "|" + band(p.age) + "|" + p.sex
		c := cells[k]
		if c == nil {
			c = &disclosure.Cell{Key: []string{p.practice, band(p.age), p.sex}, Values: make([]disclosure.Input, 3)}
			cells[k] = c
			order = append(order, k)
		}
		c.Values[0].Count++
		c.Values[2].N++
		if keyRange > 0 {
			// The prevalence's N is the group and its Sum the t2dm
			// patients, keyed as the counts of the same patients are.
			c.Values[0].Key = (c.Values[0].Key + p.key%keyRange) % keyRange
			c.Values[2].NKey = c.Values[0].Key
		}
		if p.t2dm {
			c.Values[1].Count++
			c.Values[2].Sum++
			if keyRange > 0 {
				c.Values[1].Key = (c.Values[1].Key + p.key%keyRange) % keyRange
				c.Values[2].SumKey = c.Values[1].Key
			}
		}
	}
	tab := disclosure.Table{Dims: []string{"practice", "age_band", "sex"},
		Measures: []disclosure.Measure{{Name: "patients", Kind: disclosure.KindCount, GroupTotal: true}, {Name: "t2dm", Kind: disclosure.KindCount},
			{Name: "prevalence", Kind: disclosure.KindMean, Values: disclosure.ValueBinary}}}
	for _, k := range order {
		tab.Cells = append(tab.Cells, *cells[k])
	}
	rel, err := disclosure.Apply(context.Background(), tab, th)
	if err != nil {
		t.Fatal(err)
	}
	meta := release.Meta{RunID: "run-" + strconv.Itoa(minAge), DefinitionID: DefinitionID, MinCellCount: int64(th.MinCount), RoundingBase: int64(th.RoundingBase)}
	if th.Perturbation != nil {
		meta.PerturbationTable, meta.PerturbationKeyRange = ptable, int64(keyRange)
	}
	b, err := rel.Encode(meta)
	if err != nil {
		t.Fatal(err)
	}
	out, err := release.ReadIPC(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func truthOf(pop []patient, d string) Truth {
	m := NewPrevalence()
	tr := Truth{}
	for _, p := range pop {
		tr[m.AtomName(d, p.practice, p.sex, p.age, "patients")]++
		if p.t2dm {
			tr[m.AtomName(d, p.practice, p.sex, p.age, "t2dm")]++
		}
	}
	return tr
}

// TestAttackIsSound attacks tables released by the real disclosure
// control from random populations, at several min_ages of a band and a few
// more, and checks every interval and every inference against the
// populations: none may be false. It also checks that the attack finds
// something, so that it cannot pass by finding nothing.
func TestAttackIsSound(t *testing.T) {
	found := map[Kind]int{}
	for seed := range uint64(2) {
		pop := population(seed, 300+int(seed)*150)
		a := New(NewPrevalence())
		for _, m := range []int{0, 40, 43, 44, 45, 46, 47, 48, 65} {
			tab := releaseOf(t, pop, m)
			rules, err := RoundingOf(tab.Meta)
			if err != nil {
				t.Fatal(err)
			}
			obs, err := a.Model.Observe(a.Sys, rules, Request{IndexDate: "2025-06-01", MinAge: m}.params(), tab)
			if err != nil {
				t.Fatal(err)
			}
			a.observe(rules, obs)
		}
		infs, pairs, err := a.Infer(1000)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		sum := a.Verify(infs, pairs, truthOf(pop, "2025-06-01"))
		if sum.Unsound != 0 {
			t.Errorf("seed %d: %d of %d intervals do not hold the true value", seed, sum.Unsound, sum.Intervals)
		}
		for _, inf := range infs {
			if !inf.Verified {
				t.Errorf("seed %d: false inference %s: %s (true: %s)", seed, inf.Kind, inf.What, inf.Truth)
			}
			found[inf.Kind]++
		}
	}
	t.Logf("inferences by kind: %v", found)
	for _, k := range []Kind{KindSinglePatient, KindCrossing} {
		if found[k] == 0 {
			t.Errorf("no %s found in two populations", k)
		}
	}
}

// TestSinglePatientFact: a small group released as withheld beside a
// released zero says that none of its patients has the attribute.
func TestSinglePatientFact(t *testing.T) {
	var pop []patient
	for range 20 {
		pop = append(pop, patient{practice: "P1", sex: "F", age: 45, t2dm: true})
	}
	for range 3 {
		pop = append(pop, patient{practice: "P1", sex: "U", age: 45})
	}
	a := New(NewPrevalence())
	tab := releaseOf(t, pop, 0)
	obs, err := a.Model.Observe(a.Sys, Rounding{MinCount: 8, Base: 5}, Request{IndexDate: "2025-06-01", MinAge: 0}.params(), tab)
	if err != nil {
		t.Fatal(err)
	}
	a.observe(Rounding{MinCount: 8, Base: 5}, obs)
	infs, pairs, err := a.Infer(100)
	if err != nil {
		t.Fatal(err)
	}
	a.Verify(infs, pairs, truthOf(pop, "2025-06-01"))
	var facts []string
	for _, inf := range infs {
		if inf.Kind == KindSinglePatient {
			if !inf.Verified {
				t.Errorf("false: %s", inf.What)
			}
			facts = append(facts, inf.What)
		}
	}
	want := "none of the [1, 7] patients of cell P1 40-49 U (index_date=2025-06-01 min_age=0) has t2dm"
	found := false
	for _, f := range facts {
		found = found || f == want
	}
	if !found {
		t.Errorf("single-patient facts %q, want %q among them", facts, want)
	}
}

// referencePTable reads the reference bundle's p-table.
func referencePTable(t *testing.T) *ptable.Table {
	t.Helper()
	const path = "../../policy/bundle/disclosure/ptable-8-5.csv"
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pt, err := ptable.Parse(f, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := pt.Validate(8, 5); err != nil {
		t.Fatal(err)
	}
	return pt
}

// TestAttackIsSoundProtected attacks tables released by the real
// disclosure control under the reference bundle's protections (the
// reference p-table, the attribute rule) from random populations, at
// every min_age the reference approval allows, reading them twice: with
// the count rules alone (Perturbed), which must give no single-patient
// fact, exact small count or threshold crossing, and with every rule a
// requester knows (SmallGroups over Perturbed, and the prevalence mean's
// rule), which must give none either, now that disclosure control reads
// the group total and the mean's N and Sum through the p-table too.
// Every interval and inference of both must hold in the populations.
func TestAttackIsSoundProtected(t *testing.T) {
	pt := referencePTable(t)
	th := disclosure.DefaultThresholds()
	th.Perturbation, th.AttributeDisclosure = pt, true
	for _, tc := range []struct {
		name      string
		model     func() *Prevalence
		rules     func(Perturbed) Rules
		mustBeNil bool
	}{
		{"counts", NewPrevalence, func(p Perturbed) Rules { return p }, true},
		{"every published rule", NewPrevalenceWithMean, func(p Perturbed) Rules { return SmallGroups{p} }, true},
	} {
		found := map[Kind]int{}
		for seed := range uint64(3) {
			pop := population(seed, 300+int(seed)*150)
			a := New(tc.model())
			for _, m := range []int{0, 16, 17, 18, 40, 65} {
				tab := releaseWith(t, pop, m, th, "disclosure/ptable-8-5.csv")
				if !tab.Meta.Perturbed() {
					t.Fatal("the table does not say it was perturbed")
				}
				if err := a.Read(tc.rules(Perturbed{Table: pt, MinCount: tab.Meta.MinCellCount}), Request{IndexDate: "2025-06-01", MinAge: m}, tab); err != nil {
					t.Fatal(err)
				}
			}
			infs, pairs, err := a.Infer(1000)
			if err != nil {
				t.Fatalf("%s, seed %d: %v", tc.name, seed, err)
			}
			sum := a.Verify(infs, pairs, truthOf(pop, "2025-06-01"))
			if sum.Unsound != 0 {
				t.Errorf("%s, seed %d: %d of %d intervals do not hold the true value", tc.name, seed, sum.Unsound, sum.Intervals)
			}
			for _, inf := range infs {
				if !inf.Verified {
					t.Errorf("%s, seed %d: false inference %s: %s (true: %s)", tc.name, seed, inf.Kind, inf.What, inf.Truth)
				}
				found[inf.Kind]++
				if inf.Kind == KindPinned {
					continue
				}
				if tc.mustBeNil {
					t.Errorf("%s, seed %d: %s: %s (true: %s)", tc.name, seed, inf.Kind, inf.What, inf.Truth)
				} else {
					t.Logf("%s, seed %d: %s: %s (true: %s)", tc.name, seed, inf.Kind, inf.What, inf.Truth)
				}
			}
		}
		t.Logf("%s: inferences by kind: %v", tc.name, found)
	}
}
