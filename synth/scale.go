package synth

import (
	"fmt"
	"strings"
)

// Scale names a preset network size.
type Scale string

// The preset scales.
const (
	// ScaleSmall is 8 GP practices and 2 trusts, about 50k patients:
	// seconds to generate, for tests and demos.
	ScaleSmall Scale = "small"
	// ScaleICB is one integrated care board: 150 practices, 4 trusts,
	// about 1.5M patients.
	ScaleICB Scale = "icb"
	// ScaleNational has the shape of England: about 6,500 practices,
	// 230 acute trusts and 60M patients.
	ScaleNational Scale = "national"
)

// Scales lists the valid scales, smallest first.
func Scales() []Scale { return []Scale{ScaleSmall, ScaleICB, ScaleNational} }

// ParseScale returns the scale named s, or an error listing the valid ones.
func ParseScale(s string) (Scale, error) {
	for _, sc := range Scales() {
		if string(sc) == s {
			return sc, nil
		}
	}
	names := make([]string, 0, len(Scales()))
	for _, sc := range Scales() {
		names = append(names, string(sc))
	}
	return "", fmt.Errorf("unknown scale %q: want one of %s", s, strings.Join(names, ", "))
}

// String returns the scale's name.
func (s Scale) String() string { return string(s) }

// shape is the size of a scale before any --sites cut.
type shape struct {
	practices  int
	trusts     int
	population int // registered population the list sizes are scaled to
}

func (s Scale) shape() (shape, error) {
	switch s {
	case ScaleSmall:
		return shape{practices: 8, trusts: 2, population: 50_000}, nil
	case ScaleICB:
		return shape{practices: 150, trusts: 4, population: 1_500_000}, nil
	case ScaleNational:
		return shape{practices: 6_500, trusts: 230, population: 60_000_000}, nil
	}
	_, err := ParseScale(string(s))
	return shape{}, err
}
