package disclosure

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/havenhealth/haven/policy/ptable"
)

func referencePTable(t *testing.T) *ptable.Table {
	t.Helper()
	tb, err := ptable.Generate(ptable.Params{Threshold: 8, Base: 5, MaxPerturbation: 10, Variance: 9, KeyRange: 256})
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// patientsTable draws a two-dimensional table of patients, each with a
// record key, and returns it with the patients behind each cell, so that a
// test can compute margin keys from the patients rather than from cells.
type patient struct {
	practice, sex string
	key           uint64
	t2dm          bool
}

func drawPatients(seed uint64, n int) []patient {
	r := rand.New(rand.NewPCG(seed, 1))
	practices := []string{"A", "B", "C", "D"}
	sexes := []string{"F", "M", "U"}
	ps := make([]patient, n)
	for i := range ps {
		sex := sexes[r.IntN(2)]
		if r.IntN(40) == 0 {
			sex = "U" // rare, so small groups occur
		}
		ps[i] = patient{practice: practices[r.IntN(len(practices))], sex: sex, key: r.Uint64N(256), t2dm: r.IntN(10) == 0}
	}
	return ps
}

func tableOf(ps []patient) Table {
	t := Table{Dims: []string{"practice", "sex"}, Measures: []Measure{
		{Name: "patients", Kind: KindCount, GroupTotal: true},
		{Name: "t2dm", Kind: KindCount},
	}}
	idx := map[[2]string]int{}
	for _, p := range ps {
		k := [2]string{p.practice, p.sex}
		i, ok := idx[k]
		if !ok {
			i = len(t.Cells)
			idx[k] = i
			t.Cells = append(t.Cells, Cell{Key: []string{p.practice, p.sex}, Values: make([]Input, 2)})
		}
		c := &t.Cells[i]
		c.Values[0].Count++
		c.Values[0].Key = (c.Values[0].Key + p.key) % 256
		if p.t2dm {
			c.Values[1].Count++
			c.Values[1].Key = (c.Values[1].Key + p.key) % 256
		}
	}
	return t
}

// TestPerturbedCountsFollowTheTable checks every released count, cells,
// margins and total, against the p-table applied to the true count and the
// key computed from the patients themselves; that nothing is withheld for
// being small; and that the same patients give the same table again.
func TestPerturbedCountsFollowTheTable(t *testing.T) {
	tb := referencePTable(t)
	ps := drawPatients(7, 400)
	th := DefaultThresholds()
	th.Perturbation = tb
	r := mustApply(t, tableOf(ps), th)

	truth := func(match func(p patient) bool, t2dm bool) (int64, uint64) {
		var n int64
		var k uint64
		for _, p := range ps {
			if match(p) && (!t2dm || p.t2dm) {
				n++
				k = (k + p.key) % 256
			}
		}
		return n, k
	}
	check := func(what string, vals []Value, match func(p patient) bool) {
		for j, t2dm := range []bool{false, true} {
			n, k := truth(match, t2dm)
			want := tb.Release(n, k)
			if vals[j].Status != StatusReleased || vals[j].Value != float64(want) {
				t.Errorf("%s measure %d: got %s %v %s, want released %d (true %d, key %d)", what, j, vals[j].Status, vals[j].Value, vals[j].Reason.Code, want, n, k)
			}
		}
	}
	for _, c := range r.Cells {
		check("cell "+strings.Join(c.Key, "|"), c.Values, func(p patient) bool { return p.practice == c.Key[0] && p.sex == c.Key[1] })
	}
	for _, m := range r.Margins {
		check("margin "+m.Dim+"="+m.Category, m.Values, func(p patient) bool {
			return m.Dim == "practice" && p.practice == m.Category || m.Dim == "sex" && p.sex == m.Category
		})
	}
	check("total", r.Total, func(patient) bool { return true })

	// The same patients in another order give the same table.
	rev := append([]patient(nil), ps...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	again := mustApply(t, tableOf(rev), th)
	if !equalReleased(r, again) {
		t.Errorf("the same patients gave a different table")
	}
}

func equalReleased(a, b *Released) bool {
	eq := func(x, y []Value) bool {
		if len(x) != len(y) {
			return false
		}
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	if len(a.Cells) != len(b.Cells) || len(a.Margins) != len(b.Margins) || !eq(a.Total, b.Total) {
		return false
	}
	for i := range a.Cells {
		if strings.Join(a.Cells[i].Key, "|") != strings.Join(b.Cells[i].Key, "|") || !eq(a.Cells[i].Values, b.Cells[i].Values) {
			return false
		}
	}
	for i := range a.Margins {
		if a.Margins[i].Category != b.Margins[i].Category || !eq(a.Margins[i].Values, b.Margins[i].Values) {
			return false
		}
	}
	return true
}

// TestAttributeDisclosure: in a group of fewer than MinCount patients every
// value is withheld with the same reason, whether a count is 0, equal to
// the group's total or in between, and in margins as in cells; with the
// rule off, the zero is released as before.
func TestAttributeDisclosure(t *testing.T) {
	prev := Measure{Name: "prevalence", Kind: KindMean, Values: ValueBinary}
	table := Table{Dims: []string{"practice", "sex"}, Measures: []Measure{
		{Name: "patients", Kind: KindCount, GroupTotal: true},
		{Name: "t2dm", Kind: KindCount},
		prev,
	}}
	cell := func(practice, sex string, patients, t2dm int64) Cell {
		return Cell{Key: []string{practice, sex}, Values: []Input{{Count: patients}, {Count: t2dm}, {N: patients, Sum: float64(t2dm)}}}
	}
	table.Cells = []Cell{
		cell("A", "F", 60, 9), cell("A", "M", 55, 8), cell("A", "U", 5, 0), // U: a small group with no t2dm
		cell("B", "F", 70, 10), cell("B", "M", 65, 9), cell("B", "U", 2, 2), // everyone has it
	}
	on := DefaultThresholds()
	on.AttributeDisclosure = true
	r := mustApply(t, table, on)
	for _, c := range r.Cells {
		if c.Key[1] != "U" {
			continue
		}
		for j, v := range c.Values {
			if err := wh(CodeAttributeDisclosure).check(v); err != nil {
				t.Errorf("cell %v measure %s: %v", c.Key, table.Measures[j].Name, err)
			}
		}
	}
	for _, m := range r.Margins {
		if m.Dim == "sex" && m.Category == "U" { // 7 patients in all
			for j := range 2 {
				if err := wh(CodeAttributeDisclosure).check(m.Values[j]); err != nil {
					t.Errorf("margin sex=U measure %s: %v", table.Measures[j].Name, err)
				}
			}
		}
	}
	off := DefaultThresholds()
	r = mustApply(t, table, off)
	for _, c := range r.Cells {
		if c.Key[0] == "A" && c.Key[1] == "U" {
			if err := rel(0).check(c.Values[1]); err != nil {
				t.Errorf("rule off: cell A|U t2dm: %v", err)
			}
		}
	}

	// Under perturbation a group is small when its perturbed total is
	// below MinCount: the true total decides nothing on its own.
	pt := referencePTable(t)
	on.Perturbation = pt
	for _, key := range []uint64{0, 37, 101, 200} {
		for i := range table.Cells {
			table.Cells[i].Values[0].Key = key
		}
		r = mustApply(t, table, on)
		for i, c := range r.Cells {
			total := table.Cells[slices.IndexFunc(table.Cells, func(x Cell) bool { return slices.Equal(x.Key, c.Key) })].Values[0].Count
			want := pt.Release(total, key) < int64(on.MinCount)
			if got := c.Values[1].Reason.Code == CodeAttributeDisclosure; got != want {
				t.Errorf("perturbed, key %d: cell %d %v (total %d, released as %d) t2dm %s %s", key, i, c.Key, total, pt.Release(total, key), c.Values[1].Status, c.Values[1].Reason.Code)
			}
		}
	}
}

// TestPerturbedSumsAndMeans: under perturbation the few-contributors rule
// reads N through the p-table with N's key, so a withheld or released sum
// or mean proves nothing about N crossing the threshold (for the reference
// table, some key releases a value at N = 7 and some key withholds it at
// N = 8); and a mean of 0/1 values is the perturbed Sum over the perturbed
// N, which for a mean over the same patients as two counts is their
// released ratio.
func TestPerturbedSumsAndMeans(t *testing.T) {
	pt := referencePTable(t)
	th := DefaultThresholds()
	th.Perturbation = pt
	ms := []Measure{
		{Name: "patients", Kind: KindCount, GroupTotal: true},
		{Name: "t2dm", Kind: KindCount},
		{Name: "prevalence", Kind: KindMean, Values: ValueBinary},
		{Name: "admissions", Kind: KindSum},
	}
	type outcome struct{ released, withheld bool }
	seen := map[int64]*outcome{7: {}, 8: {}}
	for n := int64(1); n <= 30; n++ {
		for key := uint64(0); key < 256; key += 3 {
			t2dm, sumKey := n/3, (key*7+1)%256
			adm := float64(2 * n)
			table := Table{Dims: []string{"practice"}, Measures: ms, Cells: []Cell{{Key: []string{"A"}, Values: []Input{
				{Count: 50, Key: 9}, {Count: t2dm, Key: sumKey},
				{N: n, NKey: key, Sum: float64(t2dm), SumKey: sumKey},
				{N: n, NKey: key, Sum: adm},
			}}}}
			r := mustApply(t, table, th)
			v := r.Cells[0].Values
			np := pt.Release(n, key)
			for _, j := range []int{2, 3} {
				if withheldWant := np < int64(th.MinCount); (v[j].Status == StatusWithheld) != withheldWant {
					t.Fatalf("N %d key %d (released as %d): %s is %s %s", n, key, np, ms[j].Name, v[j].Status, v[j].Reason.Code)
				}
			}
			if o := seen[n]; o != nil {
				o.released = o.released || v[3].Status == StatusReleased
				o.withheld = o.withheld || v[3].Status == StatusWithheld
			}
			if v[2].Status != StatusReleased {
				continue
			}
			s := min(pt.Release(t2dm, sumKey), np)
			if want := roundSignificant(float64(s)/float64(np), 4); v[2].Value != want {
				t.Fatalf("N %d key %d: prevalence %v, want %d/%d = %v", n, key, v[2].Value, s, np, want)
			}
			if v[3].Value != th.roundSum(adm) {
				t.Fatalf("N %d key %d: admissions %v, want %v", n, key, v[3].Value, th.roundSum(adm))
			}
		}
	}
	if !seen[7].released || !seen[8].withheld {
		t.Errorf("N = 7 released by some key: %v; N = 8 withheld by some key: %v; want both, or the status proves a crossing", seen[7].released, seen[8].withheld)
	}
}

func TestPerturbationRefusesBadKeys(t *testing.T) {
	th := DefaultThresholds()
	th.Perturbation = referencePTable(t)
	table := Table{Measures: []Measure{{Name: "patients", Kind: KindCount}}, Cells: []Cell{{Values: []Input{{Count: 20, Key: 256}}}}}
	_, err := Apply(context.Background(), table, th)
	if !errors.Is(err, ErrTable) || !strings.Contains(err.Error(), "cell key 256 is outside the key range 0-255") {
		t.Fatalf("got %v, want ErrTable naming the key", err)
	}
	table.Measures[0] = Measure{Name: "bed_days", Kind: KindSum, GroupTotal: true}
	if _, err := Apply(context.Background(), table, th); !errors.Is(err, ErrTable) || !strings.Contains(err.Error(), "only a count measure can be a group total") {
		t.Fatalf("got %v, want ErrTable about the group total", err)
	}
}
