package disclosure

import (
	"errors"
	"fmt"
	"math"
)

// ErrThresholds is wrapped by every error that Thresholds.Validate returns.
var ErrThresholds = errors.New("invalid disclosure thresholds")

// Thresholds are the disclosure rules for one release, as decided by the
// governance policy (haven/disclose).
type Thresholds struct {
	// MinCount is the smallest count that may be released: counts from 1 to
	// MinCount-1 are withheld (0 is released), and a sum, mean, minimum or
	// maximum is withheld when fewer than MinCount patients contribute, and
	// a binary or integer mean when its sum is from 1 to MinCount-1.
	MinCount int `json:"min_count"`
	// RoundingBase is the multiple that released counts and sums are
	// rounded to (half up). A base of 1 means no rounding.
	RoundingBase int `json:"rounding_base"`
	// Dominance is the (n, k) rule applied to sum and mean measures that
	// ask for it.
	Dominance Dominance `json:"dominance"`
	// ReleaseMinMax allows minimum and maximum measures to be released when
	// at least MinCount patients contribute. When false (the default) they
	// are always withheld, because the minimum and the maximum of a group
	// are each one patient's own value.
	ReleaseMinMax bool `json:"release_min_max"`
	// AttributeDisclosure withholds every value of a cell, margin or total
	// whose group total (the count measure marked GroupTotal) is from 1 to
	// MinCount-1: a released 0, or a count equal to the group's total,
	// would say something about each of its few members. Every value of
	// such a group is withheld with the same reason, so that the reason
	// itself does not tell a 0 from a non-zero count.
	AttributeDisclosure bool `json:"attribute_disclosure"`
	// Perturbation, when set, releases every count through a cell-key
	// perturbation table (policy/ptable) instead of suppressing and
	// rounding it: see the package documentation.
	Perturbation Perturbation `json:"-"`
}

// Perturbation maps a true count and its cell key to the released count.
// *ptable.Table implements it.
type Perturbation interface {
	// Release returns the released value of a count c with cell key key.
	Release(c int64, key uint64) int64
	// KeyRange is R: cell keys lie in [0, R).
	KeyRange() int
}

// Dominance is the (n, k) dominance rule: a sum, and the mean built on it,
// is withheld when its N largest contributions make up more than K of the
// total.
type Dominance struct {
	N int     `json:"n"`
	K float64 `json:"k"`
}

// DefaultThresholds returns the defaults of DESIGN §9: counts 1–7 withheld,
// rounding to 5, and a (1, 0.8) dominance rule.
func DefaultThresholds() Thresholds {
	return Thresholds{
		MinCount:     8,
		RoundingBase: 5,
		Dominance:    Dominance{N: 1, K: 0.8},
	}
}

// Validate reports the first problem with t, or nil.
func (t Thresholds) Validate() error {
	switch {
	case t.MinCount < 1:
		return fmt.Errorf("%w: min_count %d must be at least 1", ErrThresholds, t.MinCount)
	case t.RoundingBase < 1:
		return fmt.Errorf("%w: rounding_base %d must be at least 1", ErrThresholds, t.RoundingBase)
	case t.RoundingBase > maxExactCount:
		return fmt.Errorf("%w: rounding_base %d is too large", ErrThresholds, t.RoundingBase)
	case t.MinCount > maxExactCount:
		return fmt.Errorf("%w: min_count %d is too large", ErrThresholds, t.MinCount)
	case t.Dominance.N < 1:
		return fmt.Errorf("%w: dominance n %d must be at least 1", ErrThresholds, t.Dominance.N)
	case math.IsNaN(t.Dominance.K) || t.Dominance.K <= 0 || t.Dominance.K > 1:
		return fmt.Errorf("%w: dominance k %v must be in (0, 1]", ErrThresholds, t.Dominance.K)
	case t.Perturbation != nil && t.Perturbation.KeyRange() < 1:
		return fmt.Errorf("%w: perturbation key range %d must be at least 1", ErrThresholds, t.Perturbation.KeyRange())
	}
	return nil
}

// releaseFloor is the smallest positive count that may be released: the
// first multiple of the rounding base that is at least MinCount.
func (t Thresholds) releaseFloor() int64 {
	b, m := int64(t.RoundingBase), int64(t.MinCount)
	return (m + b - 1) / b * b
}

// roundCount rounds a count that passed primary suppression: to the nearest
// multiple of the base, half up, but never below releaseFloor, so that a
// released positive count is never shown as 0 or as a value under MinCount.
func (t Thresholds) roundCount(c int64) int64 {
	if c == 0 {
		return 0
	}
	b := int64(t.RoundingBase)
	r := (2*c + b) / (2 * b) * b
	return max(r, t.releaseFloor())
}

// roundSum rounds a released sum to the nearest multiple of the base, half
// up (towards +Inf).
func (t Thresholds) roundSum(s float64) float64 {
	b := float64(t.RoundingBase)
	r := math.Floor(s/b+0.5) * b
	if r == 0 {
		return 0 // no -0 in released tables
	}
	return r
}

// roundMeanSum rounds the sum of a binary or integer mean that passed
// primary suppression as roundCount rounds a count: to the nearest multiple
// of the base, half up, and a positive sum never below releaseFloor. A sum
// of unspecified values may be fractional or negative, hence the float.
func (t Thresholds) roundMeanSum(s float64) float64 {
	r := t.roundSum(s)
	if s > 0 {
		r = max(r, float64(t.releaseFloor()))
	}
	return r
}
