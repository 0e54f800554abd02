package disclosure

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/havenhealth/haven/release"
)

// ErrTable is wrapped by every error about a malformed input table.
var ErrTable = errors.New("invalid table")

// maxExactCount is the largest count handled: every count, and every total
// of counts, must be exact as a float64 in the released table.
const maxExactCount = 1 << 53

// Kind is what a measure computes over the patients in a cell.
//
// It is the release format's kind: a released table names each measure's.
type Kind = release.Kind

// Measure kinds. Count and Sum are additive: their margins are the sums of
// their cells, so they get margins and secondary suppression.
const (
	KindCount      = Kind(release.KindCount) // number of patients
	KindSum   Kind = "sum"                   // sum of a per-patient value
	KindMean  Kind = "mean"                  // mean of a per-patient value
	KindMin   Kind = "min"                   // smallest per-patient value
	KindMax   Kind = "max"                   // largest per-patient value
)

func validKind(k Kind) bool {
	switch k {
	case KindCount, KindSum, KindMean, KindMin, KindMax:
		return true
	}
	return false
}

// additive reports whether a cell's value is the sum of its patients'
// values, so that margins are sums of cells.
func additive(k Kind) bool { return k == KindCount || k == KindSum }

// ValueKind is what values the per-patient variable of a sum, mean, min or
// max measure takes. It decides how a mean is controlled: see the package
// documentation.
type ValueKind string

// Value kinds. The zero value, ValueUnspecified, is controlled as
// ValueInteger, the stricter of the rules, so a caller that does not say
// what its values are gets the protection that counts get.
const (
	ValueUnspecified ValueKind = ""           // not said: controlled as ValueInteger
	ValueBinary      ValueKind = "binary"     // 0 or 1: a flag, such as has_t2dm
	ValueInteger     ValueKind = "integer"    // a whole number ≥ 0: a count of events, an age
	ValueContinuous  ValueKind = "continuous" // any real number: a measurement
)

func (v ValueKind) valid() bool {
	switch v {
	case ValueUnspecified, ValueBinary, ValueInteger, ValueContinuous:
		return true
	}
	return false
}

// Measure names one column of values in a table.
type Measure struct {
	Name string `json:"name"`
	Kind Kind   `json:"kind"`
	// Values is what the per-patient values of a sum, mean, min or max
	// measure are. Count measures ignore it.
	Values ValueKind `json:"values,omitempty"`
	// Dominance applies the (n, k) dominance rule to this measure. Only sum
	// and mean measures may ask for it.
	Dominance bool `json:"dominance,omitempty"`
	// GroupTotal marks a count measure that counts every patient of its
	// cell (no where clause): the size of the group, which the attribute
	// disclosure rule reads. Only count measures may carry it.
	GroupTotal bool `json:"group_total,omitempty"`
}

// Table is an aggregate table before disclosure control: one cell per
// combination of dimension values that has any patients, each holding one
// Input per measure. A combination with no cell holds no patients.
type Table struct {
	Dims     []string
	Measures []Measure
	Cells    []Cell
}

// Cell is one group of a table.
type Cell struct {
	Key    []string // one value per dimension, in the order of Table.Dims
	Values []Input  // one per measure, in the order of Table.Measures
}

// Input is the true, unrounded value of one measure in one cell. A measure
// reads only the fields its kind needs and ignores the rest.
type Input struct {
	// Count is the number of patients, for count measures.
	Count int64
	// Key is the cell key of a count under cell-key perturbation: the sum
	// of the record keys of the patients counted, mod the key range. It is
	// read only when Thresholds.Perturbation is set, and never released.
	Key uint64
	// NKey and SumKey are, under perturbation, the cell keys of a sum's or
	// mean's N (the record keys of the patients N counts) and of a mean of
	// 0/1 values' Sum (those of the patients with a 1), mod the key range;
	// the few-contributors rule reads N through the p-table, and a binary
	// mean is the perturbed Sum over the perturbed N. Never released.
	NKey, SumKey uint64
	// N is the number of patients contributing to a sum, mean, min or max.
	// For a sum, count only patients whose contribution is not zero: a sum
	// over 50 patients of whom one had an admission is that patient's
	// number of admissions. For a mean, N is the divisor, zeros included:
	// the few-contributors rule protects it, and the dominance rule only
	// where its Measure asks for it.
	N int64
	// Sum is the total of the contributions, for sum and mean measures.
	Sum float64
	// TopContributions are the largest contributions to Sum, in descending
	// order, for measures with the dominance rule: at least
	// min(N, Dominance.N) of them. They are never released.
	TopContributions []float64
	// Min and Max are the extreme values, for min and max measures.
	Min, Max float64
}

// checkShape validates the table's dimensions and measures.
func (t *Table) checkShape() error {
	seen := make(map[string]bool, len(t.Dims))
	for i, d := range t.Dims {
		if d == "" {
			return fmt.Errorf("%w: dimension %d has no name", ErrTable, i)
		}
		if seen[d] {
			return fmt.Errorf("%w: dimension %q appears twice", ErrTable, d)
		}
		seen[d] = true
	}
	if len(t.Measures) == 0 {
		return fmt.Errorf("%w: no measures", ErrTable)
	}
	seen = make(map[string]bool, len(t.Measures))
	for i, m := range t.Measures {
		switch {
		case m.Name == "":
			return fmt.Errorf("%w: measure %d has no name", ErrTable, i)
		case seen[m.Name]:
			return fmt.Errorf("%w: measure %q appears twice", ErrTable, m.Name)
		case !validKind(m.Kind):
			return fmt.Errorf("%w: measure %q: unknown kind %q", ErrTable, m.Name, m.Kind)
		case !m.Values.valid():
			return fmt.Errorf("%w: measure %q: unknown value kind %q", ErrTable, m.Name, m.Values)
		case m.Dominance && m.Kind != KindSum && m.Kind != KindMean:
			return fmt.Errorf("%w: measure %q: the dominance rule applies only to sum and mean measures, not %s", ErrTable, m.Name, m.Kind)
		case m.GroupTotal && m.Kind != KindCount:
			return fmt.Errorf("%w: measure %q: only a count measure can be a group total, not %s", ErrTable, m.Name, m.Kind)
		}
		seen[m.Name] = true
	}
	return nil
}

// checkCell validates cell i's shape and every input in it.
func (t *Table) checkCell(i int, th Thresholds) error {
	c := &t.Cells[i]
	if len(c.Key) != len(t.Dims) {
		return fmt.Errorf("%w: cell %d has %d key values for %d dimensions", ErrTable, i, len(c.Key), len(t.Dims))
	}
	if len(c.Values) != len(t.Measures) {
		return fmt.Errorf("%w: cell %s has %d values for %d measures", ErrTable, t.cellName(i), len(c.Values), len(t.Measures))
	}
	for j, m := range t.Measures {
		if err := checkInput(m, &c.Values[j], th); err != nil {
			return fmt.Errorf("%w: cell %s: measure %q: %v", ErrTable, t.cellName(i), m.Name, err)
		}
	}
	return nil
}

func checkInput(m Measure, in *Input, th Thresholds) error {
	if m.Kind == KindCount {
		if in.Count < 0 {
			return fmt.Errorf("count %d is negative", in.Count)
		}
		if in.Count > maxExactCount {
			return fmt.Errorf("count %d is too large", in.Count)
		}
		if th.Perturbation != nil && in.Key >= uint64(th.Perturbation.KeyRange()) {
			return fmt.Errorf("cell key %d is outside the key range 0-%d", in.Key, th.Perturbation.KeyRange()-1)
		}
		return nil
	}
	if th.Perturbation != nil {
		if r := uint64(th.Perturbation.KeyRange()); in.NKey >= r || in.SumKey >= r {
			return fmt.Errorf("cell keys %d (n) and %d (sum) are not both in the key range 0-%d", in.NKey, in.SumKey, r-1)
		}
	}
	if in.N < 0 {
		return fmt.Errorf("contributor count %d is negative", in.N)
	}
	if in.N > maxExactCount {
		return fmt.Errorf("contributor count %d is too large", in.N)
	}
	switch m.Kind {
	case KindMin:
		if in.N > 0 && !finite(in.Min) {
			return fmt.Errorf("min %v is not a finite number", in.Min)
		}
		return nil
	case KindMax:
		if in.N > 0 && !finite(in.Max) {
			return fmt.Errorf("max %v is not a finite number", in.Max)
		}
		return nil
	}
	// Sum and mean.
	if !finite(in.Sum) {
		return fmt.Errorf("sum %v is not a finite number", in.Sum)
	}
	if in.N == 0 && in.Sum != 0 {
		return fmt.Errorf("sum %v with no contributors", in.Sum)
	}
	// A sum that its declared value kind cannot produce would make the
	// rules for that kind unsound, so it is an error, not a value to round.
	switch m.Values {
	case ValueBinary:
		if in.Sum < 0 || in.Sum != math.Trunc(in.Sum) || in.Sum > float64(in.N) {
			return fmt.Errorf("sum %v of binary values is not a whole number from 0 to the %d contributors", in.Sum, in.N)
		}
	case ValueInteger:
		if in.Sum < 0 || in.Sum != math.Trunc(in.Sum) {
			return fmt.Errorf("sum %v of integer values is not a whole number ≥ 0", in.Sum)
		}
	}
	if !m.Dominance {
		return nil
	}
	top := in.TopContributions
	if in.Sum < 0 {
		return fmt.Errorf("sum %v is negative; the dominance rule needs non-negative contributions", in.Sum)
	}
	if int64(len(top)) > in.N {
		return fmt.Errorf("%d top contributions from %d contributors", len(top), in.N)
	}
	if need := min(in.N, int64(th.Dominance.N)); int64(len(top)) < need {
		return fmt.Errorf("%d top contributions given, the dominance rule needs %d", len(top), need)
	}
	var total float64
	for k, v := range top {
		switch {
		case !finite(v) || v < 0:
			return fmt.Errorf("top contribution %d is %v; want a finite number ≥ 0", k, v)
		case k > 0 && v > top[k-1]:
			return fmt.Errorf("top contributions are not in descending order at %d", k)
		}
		total += v
	}
	if total > in.Sum*(1+1e-9)+1e-9 {
		return fmt.Errorf("top contributions add up to %v, more than the sum %v", total, in.Sum)
	}
	return nil
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// cellName formats cell i's key for error messages: {age_band=40-49 sex=F}.
func (t *Table) cellName(i int) string {
	key := t.Cells[i].Key
	var b strings.Builder
	b.WriteByte('{')
	for d, v := range key {
		if d > 0 {
			b.WriteByte(' ')
		}
		if d < len(t.Dims) {
			b.WriteString(t.Dims[d])
			b.WriteByte('=')
		}
		fmt.Fprintf(&b, "%q", v)
	}
	b.WriteByte('}')
	return b.String()
}
