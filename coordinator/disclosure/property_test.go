package disclosure

import (
	"context"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// Random tables for the property tests: 1–3 dimensions of 1–4 categories,
// some combinations missing, counts drawn from a mix of zeros, small
// counts, middling and large ones, and thresholds drawn too.

type genTable struct {
	t  Table
	th Thresholds
}

func drawTable(rt *rapid.T) genTable {
	th := Thresholds{
		MinCount:      rapid.IntRange(1, 10).Draw(rt, "min_count"),
		RoundingBase:  rapid.IntRange(1, 10).Draw(rt, "base"),
		Dominance:     Dominance{N: rapid.IntRange(1, 2).Draw(rt, "dom_n"), K: rapid.SampledFrom([]float64{0.5, 0.8, 1}).Draw(rt, "dom_k")},
		ReleaseMinMax: rapid.Bool().Draw(rt, "release_min_max"),
	}
	k := rapid.IntRange(1, 3).Draw(rt, "dims")
	maxCats := 4
	if k == 3 {
		maxCats = 3
	}
	t := Table{Measures: []Measure{
		{Name: "patients", Kind: KindCount},
		{Name: "admitted", Kind: KindCount},
		{Name: "admissions", Kind: KindSum, Dominance: true},
		{Name: "mean_admissions", Kind: KindMean, Values: ValueInteger, Dominance: true},
		{Name: "longest_stay", Kind: KindMax},
		{Name: "admitted_share", Kind: KindMean, Values: ValueBinary}, // mean of the admitted flag over patients
	}}
	cats := make([]int, k)
	for d := range k {
		t.Dims = append(t.Dims, fmt.Sprintf("d%d", d))
		cats[d] = rapid.IntRange(1, maxCats).Draw(rt, "cats")
	}
	keep := rapid.IntRange(4, 10).Draw(rt, "density") // out of 10
	count := rapid.OneOf(
		rapid.Just(int64(0)),
		rapid.Int64Range(1, 7),
		rapid.Int64Range(8, 30),
		rapid.Int64Range(100, 300),
	)
	key := make([]int, k)
	for {
		if rapid.IntRange(1, 10).Draw(rt, "keep") <= keep {
			c := Cell{}
			for d := range k {
				c.Key = append(c.Key, fmt.Sprintf("v%d", key[d]))
			}
			patients := count.Draw(rt, "patients")
			admitted := rapid.Int64Range(0, patients).Draw(rt, "admitted")
			if rapid.Bool().Draw(rt, "small_admitted") {
				admitted = min(admitted, rapid.Int64Range(0, 9).Draw(rt, "admitted_small"))
			}
			sum := sumInput(rt, admitted)
			c.Values = []Input{
				{Count: patients},
				{Count: admitted},
				sum,
				sum,
				{N: admitted, Max: float64(rapid.IntRange(1, 99).Draw(rt, "max"))},
				{N: patients, Sum: float64(admitted)},
			}
			t.Cells = append(t.Cells, c)
		}
		// Next key, odometer style.
		d := k - 1
		for d >= 0 {
			key[d]++
			if key[d] < cats[d] {
				break
			}
			key[d] = 0
			d--
		}
		if d < 0 {
			break
		}
	}
	return genTable{t, th}
}

// sumInput draws n integer contributions' sum and its two largest: one
// contribution of 1–50 and n-1 of 1–3, so that small groups are often
// dominated and large ones not.
func sumInput(rt *rapid.T, n int64) Input {
	if n == 0 {
		return Input{}
	}
	top := rapid.Int64Range(1, 50).Draw(rt, "top")
	in := Input{N: n, TopContributions: []float64{float64(top)}}
	if n == 1 {
		in.Sum = float64(top)
		return in
	}
	rest := rapid.Int64Range(n-1, (n-1)*min(top, 3)).Draw(rt, "rest")
	second := rapid.Int64Range((rest+n-2)/(n-1), min(top, rest-(n-2))).Draw(rt, "second")
	in.Sum = float64(top + rest)
	in.TopContributions = append(in.TopContributions, float64(second))
	return in
}

// truth is the test's own computation of every true value: cells by key,
// margins by "dim=category", the total under "".
type truth struct {
	count map[string][2]int64 // patients, admitted
	n     map[string]int64
	sum   map[string]float64
	tops  map[string][]float64
}

func computeTruth(t Table) truth {
	tr := truth{map[string][2]int64{}, map[string]int64{}, map[string]float64{}, map[string][]float64{}}
	add := func(name string, c Cell) {
		cnt := tr.count[name]
		cnt[0] += c.Values[0].Count
		cnt[1] += c.Values[1].Count
		tr.count[name] = cnt
		tr.n[name] += c.Values[2].N
		tr.sum[name] += c.Values[2].Sum
		tr.tops[name] = append(tr.tops[name], c.Values[2].TopContributions...)
	}
	for _, c := range t.Cells {
		add(strings.Join(c.Key, "|"), c)
		add("", c)
		if len(t.Dims) >= 2 {
			for d, dim := range t.Dims {
				add(dim+"="+c.Key[d], c)
			}
		}
	}
	for name, tops := range tr.tops {
		slices.Sort(tops)
		slices.Reverse(tops)
		tr.tops[name] = tops
	}
	return tr
}

// nearest rounds x to the nearest multiple of base, halves up, by
// comparing the two neighbouring multiples.
func nearest(x float64, base int) float64 {
	b := float64(base)
	lo := math.Floor(x/b) * b
	hi := lo + b
	if x-lo < hi-x {
		return lo
	}
	return hi
}

func wantCount(c int64, th Thresholds) float64 {
	if c == 0 {
		return 0
	}
	r := nearest(float64(c), th.RoundingBase)
	for r < float64(th.MinCount) {
		r += float64(th.RoundingBase)
	}
	return r
}

// checkValue checks one value of a cell, margin or total (name) against the
// truth and the rules. primaryCode is the reason the primary rules give,
// or "" if they release it.
func checkValue(where string, v Value, th Thresholds, primaryCode Code, want float64, additive bool) error {
	switch {
	case primaryCode != "" && (v.Status != StatusWithheld || v.Reason.Code != primaryCode):
		return fmt.Errorf("%s: got %+v, want withheld with %s", where, v, primaryCode)
	case primaryCode == "" && v.Status == StatusWithheld && !(additive && v.Reason.Code == CodeSecondary):
		return fmt.Errorf("%s: got %+v, want released%s", where, v, map[bool]string{true: " or secondary"}[additive])
	case v.Status == StatusReleased && v.Value != want:
		return fmt.Errorf("%s: released %v, want %v", where, v.Value, want)
	case v.Status == StatusReleased && v.Reason != Reason{}:
		return fmt.Errorf("%s: released with a reason %+v", where, v.Reason)
	case v.Status != StatusReleased && (v.Reason.Code == "" || v.Reason.Message == ""):
		return fmt.Errorf("%s: %s without a reason", where, v.Status)
	}
	return nil
}

func checkReleased(g genTable, r *Released) error {
	th, t := g.th, g.t
	tr := computeTruth(t)
	type entry struct {
		where, name string
		values      []Value
		cell        bool
	}
	var entries []entry
	for _, c := range r.Cells {
		name := strings.Join(c.Key, "|")
		entries = append(entries, entry{"cell " + name, name, c.Values, true})
	}
	for _, m := range r.Margins {
		name := m.Dim + "=" + m.Category
		entries = append(entries, entry{"margin " + name, name, m.Values, false})
	}
	if r.Total != nil {
		entries = append(entries, entry{"total", "", r.Total, false})
	}
	wantMargins := 0
	if len(t.Dims) >= 2 {
		for d := range t.Dims {
			seen := map[string]bool{}
			for _, c := range t.Cells {
				seen[c.Key[d]] = true
			}
			wantMargins += len(seen)
		}
	}
	if len(r.Cells) != len(t.Cells) || len(r.Margins) != wantMargins || r.Total == nil {
		return fmt.Errorf("released %d cells, %d margins, total %v; want %d, %d, a total", len(r.Cells), len(r.Margins), r.Total != nil, len(t.Cells), wantMargins)
	}
	minCount := int64(th.MinCount)
	for _, e := range entries {
		for j := range 2 { // the count measures
			c := tr.count[e.name][j]
			code := Code("")
			if c > 0 && c < minCount {
				code = CodeLowCount
			}
			where := e.where + " " + t.Measures[j].Name
			if err := checkValue(where, e.values[j], th, code, wantCount(c, th), true); err != nil {
				return err
			}
			// Property 1, stated on its own.
			if v := e.values[j]; v.Status == StatusReleased {
				if v.Value > 0 && v.Value < float64(th.MinCount) || math.Mod(v.Value, float64(th.RoundingBase)) != 0 {
					return fmt.Errorf("%s: released count %v", where, v.Value)
				}
			}
		}
		n, sum, tops := tr.n[e.name], tr.sum[e.name], tr.tops[e.name]
		var topSum float64
		for _, x := range tops[:min(len(tops), th.Dominance.N)] {
			topSum += x
		}
		code := Code("")
		switch {
		case n > 0 && n < minCount:
			code = CodeFewContributors
		case n > 0 && topSum > th.Dominance.K*sum:
			code = CodeDominance
		}
		if err := checkValue(e.where+" admissions", e.values[2], th, code, nearest(sum, th.RoundingBase), true); err != nil {
			return err
		}
		if !e.cell {
			for j := 3; j < len(t.Measures); j++ {
				if v := e.values[j]; v.Status != StatusNotApplicable || v.Reason.Code != CodeNotAdditive {
					return fmt.Errorf("%s %s: got %+v, want not applicable", e.where, t.Measures[j].Name, v)
				}
			}
			continue
		}
		if len(t.Measures) < 4 {
			continue
		}
		// The integer mean: the sum's primary rules, no secondary, and
		// withheld when its sum is small; released from rounded figures.
		code = ""
		switch {
		case n > 0 && n < minCount:
			code = CodeFewContributors
		case sum > 0 && sum < float64(minCount):
			code = CodeFewContributors
		case n > 0 && topSum > th.Dominance.K*sum:
			code = CodeDominance
		}
		if code == "" && givesBack(e.values, tr.count[e.name], sum, n, sum) {
			code = CodeSecondary
		}
		if err := checkMean(e.where+" mean_admissions", e.values[3], th, n, int64(sum), code); err != nil {
			return err
		}
		// The binary mean of the admitted flag over the patients.
		patients, admitted := tr.count[e.name][0], tr.count[e.name][1]
		code = ""
		if patients > 0 && patients < minCount || admitted > 0 && admitted < minCount {
			code = CodeFewContributors
		}
		if code == "" && givesBack(e.values, tr.count[e.name], sum, patients, float64(admitted)) {
			code = CodeSecondary
		}
		share := e.values[5]
		if err := checkMean(e.where+" admitted_share", share, th, patients, admitted, code); err != nil {
			return err
		}
		// Stated on their own: a binary mean never gives back a sum that
		// would be withheld, nor the count of its 1s when that is withheld.
		if share.Status == StatusReleased {
			if admitted > 0 && admitted < minCount {
				return fmt.Errorf("%s admitted_share: released %v from %d of %d", e.where, share.Value, admitted, patients)
			}
			if e.values[0].Status == StatusWithheld || e.values[1].Status == StatusWithheld {
				return fmt.Errorf("%s admitted_share: released %v beside a withheld count of patients or admitted", e.where, share.Value)
			}
		}
	}
	return nil
}

// givesBack reports whether a binary or integer mean of sum over n
// patients would give back one of the cell's withheld values: the counts
// of patients and admitted (true values counts) or the admissions sum
// (true value admissions), when its true value is n or sum.
func givesBack(values []Value, counts [2]int64, admissions float64, n int64, sum float64) bool {
	for j, c := range counts {
		if values[j].Status == StatusWithheld && (c == n || float64(c) == sum) {
			return true
		}
	}
	return values[2].Status == StatusWithheld && admissions == sum
}

// checkMean checks a binary or integer mean of sum over n patients against
// the rules: not applicable over nobody, withheld with code if code is not
// "", and otherwise released as exactly the rounded sum over the rounded n.
func checkMean(where string, v Value, th Thresholds, n, sum int64, code Code) error {
	if n == 0 {
		if v.Status != StatusNotApplicable || v.Reason.Code != CodeNoPatients {
			return fmt.Errorf("%s: got %+v, want no_patients", where, v)
		}
		return nil
	}
	return checkValue(where, v, th, code, wantCount(sum, th)/wantCount(n, th), false)
}

// TestPropertyRelease checks, on random tables, that released counts are 0
// or at least the minimum and multiples of the base, that every value is
// released as the rounded truth or withheld for the right reason, that no
// withheld value can be derived from the released ones (by the independent
// check in check_test.go), and that cell order does not matter.
func TestPropertyRelease(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		g := drawTable(rt)
		r, err := Apply(context.Background(), g.t, g.th)
		if err != nil {
			rt.Fatalf("Apply: %v", err)
		}
		if err := checkReleased(g, r); err != nil {
			rt.Fatal(err)
		}
		for j, m := range r.Measures {
			if !additive(m.Kind) {
				continue
			}
			if det := derivable(r, j); len(det) > 0 {
				rt.Fatalf("derivable from the released values: %s", strings.Join(det, ", "))
			}
		}
		shuffled := g.t
		shuffled.Cells = rapid.Permutation(g.t.Cells).Draw(rt, "shuffled")
		r2, err := Apply(context.Background(), shuffled, g.th)
		if err != nil {
			rt.Fatalf("Apply on shuffled cells: %v", err)
		}
		if !reflect.DeepEqual(r, r2) {
			rt.Fatalf("the order of the cells changed the result")
		}
	})
}
