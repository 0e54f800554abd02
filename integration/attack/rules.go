package attack

import (
	"fmt"

	"github.com/havenhealth/haven/coordinator/disclosure"
	"github.com/havenhealth/haven/coordinator/release"
)

// Rules is what the attacker knows of disclosure control: the published
// rules that turn a true count into a released value, read backwards.
// Protection is plugged in here: an implementation for a perturbation
// table answers from the table's "released value → possible true counts"
// map, taking the smallest and largest of them.
//
// An implementation must be sound: every true count that the rules could
// have released as v lies in CountInterval(v). It may be loose (a wider
// interval only costs the attacker inferences), never tight.
type Rules interface {
	// CountInterval returns the true counts [lo, hi] that could have been
	// released as v, a count measure's value in a cell, margin or total.
	// hi is Unbounded when nothing bounds the count from above; lo > hi
	// says that no true count gives v, which the attack reports as an
	// error (its picture of the rules is wrong).
	CountInterval(v release.Value) (lo, hi int64)
	// Threshold is the smallest count the rules call safe to show: a
	// count proven below it is an exact small count or a proven
	// threshold crossing.
	Threshold() int64
}

// Unbounded is the upper end of an interval with no upper bound.
const Unbounded int64 = 1 << 50

// Rounding is the rule of coordinator/disclosure before perturbation: a
// count of 0 is released as 0, 1 to MinCount-1 is withheld (low_count),
// anything else is rounded half up to a multiple of Base but never below
// the smallest multiple of Base that is at least MinCount. A count
// withheld as secondary is one that passed the primary rule (0, or at
// least MinCount), so it is bounded only below, by 0.
type Rounding struct {
	MinCount, Base int64
}

// RoundingOf reads the rules a released table states it was released
// under.
func RoundingOf(m release.Meta) (Rounding, error) {
	if m.MinCellCount < 1 || m.RoundingBase < 1 {
		return Rounding{}, fmt.Errorf("table %s states min cell count %d, rounding base %d", m.RunID, m.MinCellCount, m.RoundingBase)
	}
	return Rounding{MinCount: m.MinCellCount, Base: m.RoundingBase}, nil
}

var _ Rules = Rounding{}

// Threshold is MinCount.
func (r Rounding) Threshold() int64 { return r.MinCount }

// CountInterval inverts the rounding: the counts that round half up to v
// are those within half a base of it, [v - B/2, v + B/2) for real
// numbers; and the smallest releasable multiple also takes every count
// from MinCount up that would round below it.
func (r Rounding) CountInterval(v release.Value) (lo, hi int64) {
	if !v.Released {
		if v.Reason == disclosure.CodeLowCount {
			return 1, r.MinCount - 1
		}
		return 0, Unbounded // secondary, or a reason a count does not have
	}
	c := int64(v.Value)
	if float64(c) != v.Value || c < 0 {
		return 1, 0
	}
	if c == 0 {
		return 0, 0
	}
	b := r.Base
	smallest := (r.MinCount + b - 1) / b * b
	if c%b != 0 || c < smallest {
		return 1, 0
	}
	// 2x + b >= 2c and 2x + b < 2c + 2b, with x a whole number.
	lo = (2*c - b + 1) / 2
	hi = (2*c+b+1)/2 - 1
	if c == smallest {
		lo = r.MinCount
	}
	return lo, hi
}

// Preimager is what a perturbation table answers: every true count that
// some cell key could have released as v, in ascending order.
type Preimager interface {
	Preimage(v int64) []int64
}

// Perturbed is the rule of a table released through a perturbation
// table: a released count v came from one of Table.Preimage(v); a count
// withheld as low_count was from 1 to MinCount-1; anything else withheld
// is bounded only below, by 0.
type Perturbed struct {
	Table    Preimager
	MinCount int64
}

var _ Rules = Perturbed{}

// Threshold is MinCount.
func (p Perturbed) Threshold() int64 { return p.MinCount }

// CountInterval is the smallest and largest true count of v's preimage.
func (p Perturbed) CountInterval(v release.Value) (lo, hi int64) {
	if !v.Released {
		if v.Reason == disclosure.CodeLowCount {
			return 1, p.MinCount - 1
		}
		return 0, Unbounded
	}
	c := int64(v.Value)
	if float64(c) != v.Value {
		return 1, 0
	}
	pre := p.Table.Preimage(c)
	if len(pre) == 0 {
		return 1, 0
	}
	return pre[0], min(pre[len(pre)-1], Unbounded)
}

// GroupRules are Rules that say more of a group's own count (the measure
// that counts every patient of a cell, margin or total) than of its other
// counts. Model.Observe reads a group count through GroupInterval when
// its rules have it.
type GroupRules interface {
	Rules
	// GroupInterval returns the patients [lo, hi] that a group released
	// v for its own count could hold, given that it has a row (so at
	// least one patient).
	GroupInterval(v release.Value) (lo, hi int64)
}

// SmallGroups adds the attribute-disclosure rule
// (data.disclosure.attribute_disclosure) to count rules: every value of a
// group of 1 to Threshold-1 patients is withheld as
// attribute_disclosure, whatever the count rules would release. So a
// group count withheld for it holds 1 to Threshold-1 patients, and one
// released, in a row (at least one patient), holds at least Threshold:
// the rule is deterministic, whether the counts are rounded or perturbed.
type SmallGroups struct{ Rules }

var _ GroupRules = SmallGroups{}

// GroupInterval is [1, Threshold-1] for a group withheld as
// attribute_disclosure, and the count rules' interval from Threshold up
// for one released.
func (g SmallGroups) GroupInterval(v release.Value) (lo, hi int64) {
	t := g.Threshold()
	if !v.Released {
		if v.Reason == disclosure.CodeAttributeDisclosure {
			return 1, t - 1
		}
		return g.CountInterval(v)
	}
	lo, hi = g.CountInterval(v)
	return max(lo, t), hi
}

// BinaryMean is what coordinator/disclosure's rule for a mean of 0/1
// values (such as prevalence, the share of a group's patients with a
// diagnosis) says of its N, the group's patients, and its Sum, those of
// them with the diagnosis, under threshold t. The rule holds whatever the
// counts' rules are: a mean is withheld as few_contributors when N < t or
// 0 < Sum < t, and otherwise released as the rounded Sum over the rounded
// N. So a released mean proves N ≥ t and Sum = 0 (a mean of 0) or
// Sum ≥ t; a mean withheld as few_contributors proves Sum ≤ t-1, since
// Sum ≤ N. Any other value says nothing (ok false). BinaryMean does not
// read the mean's value beyond zero and non-zero.
func BinaryMean(v release.Value, t int64) (n, sum Interval, ok bool) {
	switch {
	case v.Released && v.Value == 0:
		return Interval{t, Unbounded}, Interval{0, 0}, true
	case v.Released && v.Value > 0:
		return Interval{t, Unbounded}, Interval{t, Unbounded}, true
	case !v.Released && v.Reason == disclosure.CodeFewContributors:
		return Interval{0, Unbounded}, Interval{0, t - 1}, true
	}
	return Interval{}, Interval{}, false
}
