package attack

import (
	"fmt"

	"github.com/havenhealth/haven/coordinator/disclosure"
	"github.com/havenhealth/haven/release"
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
// (data.disclosure.attribute_disclosure) to count rules. Without
// perturbation every value of a group of 1 to Threshold-1 patients is
// withheld as attribute_disclosure, whatever the count rules would
// release: a group count withheld for it holds 1 to Threshold-1 patients,
// and one released, in a row (at least one patient), holds at least
// Threshold. Under perturbation the rule reads the group's perturbed
// total: a withheld group is one whose total some cell key releases below
// Threshold (Perturbed.SmallMax bounds it), and a released group count
// says what its value says, no more.
type SmallGroups struct{ Rules }

var _ GroupRules = SmallGroups{}

// GroupInterval is what a group's own count, withheld as
// attribute_disclosure or released, says of its patients.
func (g SmallGroups) GroupInterval(v release.Value) (lo, hi int64) {
	t := g.Threshold()
	p, perturbed := g.Rules.(Perturbed)
	if !v.Released {
		if v.Reason == disclosure.CodeAttributeDisclosure {
			if perturbed {
				return 1, p.SmallMax()
			}
			return 1, t - 1
		}
		return g.CountInterval(v)
	}
	lo, hi = g.CountInterval(v)
	if perturbed {
		return lo, hi
	}
	return max(lo, t), hi
}

// SmallMax is the largest true count that some cell key releases below
// the threshold: all a reader learns of a count the rules say was
// released below it, or read through the p-table as below it.
func (p Perturbed) SmallMax() int64 {
	var m int64
	for v := range p.MinCount {
		if pre := p.Table.Preimage(v); len(pre) > 0 {
			m = max(m, pre[len(pre)-1])
		}
	}
	return m
}

// BigMin is the smallest true count that some cell key releases at the
// threshold or above.
func (p Perturbed) BigMin() int64 {
	m := Unbounded
	// A released value is within the table's largest perturbation of its
	// count, which is below 100 for any table Haven accepts.
	for v := p.MinCount; v < p.MinCount+100; v++ {
		if pre := p.Table.Preimage(v); len(pre) > 0 {
			m = min(m, pre[0])
		}
	}
	return m
}

// BinaryMean is what coordinator/disclosure's rule for a mean of 0/1
// values (such as prevalence, the share of a group's patients with a
// diagnosis) says of its N, the group's patients, and its Sum, those of
// them with the diagnosis, under the rules' threshold t. The rule holds whatever the
// counts' rules are: a mean is withheld as few_contributors when N < t or
// 0 < Sum < t, and otherwise released as the rounded Sum over the rounded
// N. So a released mean proves N ≥ t and Sum = 0 (a mean of 0) or
// Sum ≥ t; a mean withheld as few_contributors proves Sum ≤ t-1, since
// Sum ≤ N. Any other value says nothing (ok false). BinaryMean does not
// read the mean's value beyond zero and non-zero.
//
// Under perturbation (rules is Perturbed, or SmallGroups over it) the rule
// reads N and Sum through the p-table with their own cell keys: a mean is
// withheld as few_contributors when N's perturbed value is below t, and
// otherwise released as the perturbed Sum over the perturbed N. So a
// released mean proves only that N is at least Perturbed.BigMin, and Sum
// at most SmallMax (a mean of 0) or at least BigMin; a withheld one that
// N, and so Sum, are at most SmallMax.
func BinaryMean(v release.Value, rules Rules) (n, sum Interval, ok bool) {
	if g, isGroup := rules.(SmallGroups); isGroup {
		rules = g.Rules
	}
	if p, perturbed := rules.(Perturbed); perturbed {
		small, big := p.SmallMax(), p.BigMin()
		switch {
		case v.Released && v.Value == 0:
			return Interval{big, Unbounded}, Interval{0, small}, true
		case v.Released && v.Value > 0:
			return Interval{big, Unbounded}, Interval{big, Unbounded}, true
		case !v.Released && v.Reason == disclosure.CodeFewContributors:
			return Interval{0, small}, Interval{0, small}, true
		}
		return Interval{}, Interval{}, false
	}
	t := rules.Threshold()
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
