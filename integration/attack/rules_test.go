package attack

import (
	"testing"

	"github.com/havenhealth/haven/coordinator/disclosure"
	"github.com/havenhealth/haven/integration/releasecheck"
	"github.com/havenhealth/haven/release"
)

// TestRoundingInvertsTheRule checks CountInterval against the forward
// rule, as releasecheck states it independently: for each released value
// the interval is exactly the counts the rule releases as that value.
func TestRoundingInvertsTheRule(t *testing.T) {
	for _, tc := range []struct{ min, base int64 }{{8, 5}, {10, 5}, {12, 5}, {1, 1}, {8, 10}, {3, 4}, {7, 3}} {
		r := Rounding{MinCount: tc.min, Base: tc.base}
		pre := map[int64][2]int64{} // released value → smallest and largest count
		for c := int64(0); c < 400; c++ {
			v := releasecheck.RoundCount(c, tc.min, tc.base)
			if c > 0 && c < tc.min {
				continue // withheld
			}
			p, ok := pre[v]
			if !ok {
				p = [2]int64{c, c}
			}
			p[1] = c
			pre[v] = p
		}
		for v, want := range pre {
			if v > 350 {
				continue // its preimage runs past the counts tried
			}
			lo, hi := r.CountInterval(release.Value{Released: true, Value: float64(v)})
			if lo != want[0] || hi != want[1] {
				t.Errorf("(%d, %d) released %d: interval [%d, %d], want [%d, %d]", tc.min, tc.base, v, lo, hi, want[0], want[1])
			}
		}
		for v := int64(1); v < 300; v++ {
			if _, ok := pre[v]; ok {
				continue
			}
			if lo, hi := r.CountInterval(release.Value{Released: true, Value: float64(v)}); lo <= hi {
				t.Errorf("(%d, %d): %d is never released, but its interval is [%d, %d]", tc.min, tc.base, v, lo, hi)
			}
		}
	}
}

func TestRoundingWithheld(t *testing.T) {
	r := Rounding{MinCount: 8, Base: 5}
	for _, tc := range []struct {
		v      release.Value
		lo, hi int64
	}{
		{release.Value{Reason: disclosure.CodeLowCount}, 1, 7},
		{release.Value{Reason: disclosure.CodeSecondary}, 0, Unbounded},
		{release.Value{Reason: disclosure.CodeDominance}, 0, Unbounded},
		{release.Value{Released: true, Value: 2.5}, 1, 0},
		{release.Value{Released: true, Value: -5}, 1, 0},
		{release.Value{Released: true, Value: 0}, 0, 0},
	} {
		if lo, hi := r.CountInterval(tc.v); lo != tc.lo || hi != tc.hi {
			t.Errorf("%+v: [%d, %d], want [%d, %d]", tc.v, lo, hi, tc.lo, tc.hi)
		}
	}
	if r.Threshold() != 8 {
		t.Errorf("threshold %d", r.Threshold())
	}
}

// preimages is a perturbation table's answer written out, for the
// adapter's test.
type preimages map[int64][]int64

func (p preimages) Preimage(v int64) []int64 { return p[v] }

func TestPerturbed(t *testing.T) {
	r := Perturbed{MinCount: 8, Table: preimages{0: {0, 1, 2, 3, 4, 5, 6, 7, 8}, 10: {5, 6, 7, 8, 9, 10, 11, 12, 13, 14}}}
	for _, tc := range []struct {
		v      release.Value
		lo, hi int64
	}{
		{release.Value{Released: true, Value: 0}, 0, 8},
		{release.Value{Released: true, Value: 10}, 5, 14},
		{release.Value{Released: true, Value: 5}, 1, 0}, // never released
		{release.Value{Released: true, Value: 10.5}, 1, 0},
		{release.Value{Reason: disclosure.CodeLowCount}, 1, 7},
		{release.Value{Reason: disclosure.CodeSecondary}, 0, Unbounded},
	} {
		if lo, hi := r.CountInterval(tc.v); lo != tc.lo || hi != tc.hi {
			t.Errorf("%+v: [%d, %d], want [%d, %d]", tc.v, lo, hi, tc.lo, tc.hi)
		}
	}
}
