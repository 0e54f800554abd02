package disclosure

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestThresholdsValidate(t *testing.T) {
	def := DefaultThresholds()
	with := func(f func(*Thresholds)) Thresholds {
		th := def
		f(&th)
		return th
	}
	tests := []struct {
		name string
		th   Thresholds
		want string // error substring; "" for valid
	}{
		{"defaults", def, ""},
		{"no rounding", with(func(th *Thresholds) { th.RoundingBase = 1 }), ""},
		{"k of one", with(func(th *Thresholds) { th.Dominance.K = 1 }), ""},
		{"zero value", Thresholds{}, "min_count 0"},
		{"min count zero", with(func(th *Thresholds) { th.MinCount = 0 }), "min_count 0 must be at least 1"},
		{"negative base", with(func(th *Thresholds) { th.RoundingBase = -5 }), "rounding_base -5"},
		{"dominance n zero", with(func(th *Thresholds) { th.Dominance.N = 0 }), "dominance n 0"},
		{"dominance k zero", with(func(th *Thresholds) { th.Dominance.K = 0 }), "dominance k 0"},
		{"dominance k above one", with(func(th *Thresholds) { th.Dominance.K = 1.5 }), "dominance k 1.5"},
		{"dominance k NaN", with(func(th *Thresholds) { th.Dominance.K = math.NaN() }), "dominance k NaN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.th.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrThresholds) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want ErrThresholds mentioning %q", err, tt.want)
			}
		})
	}
}

func TestRoundCount(t *testing.T) {
	tests := []struct {
		minCount, base int
		in, want       int64
	}{
		{8, 5, 0, 0},
		{8, 5, 8, 10},
		{8, 5, 12, 10},
		{8, 5, 13, 15},
		{8, 5, 1002, 1000},
		{8, 5, 1003, 1005},
		{8, 10, 14, 10},
		{8, 10, 15, 20}, // half up
		{8, 10, 8, 10},
		// The floor: a released count is never below MinCount, even where
		// the nearest multiple is.
		{12, 5, 12, 15},
		{12, 5, 17, 15},
		{12, 5, 18, 20},
		{8, 20, 8, 20},
		{8, 20, 29, 20},
		{8, 20, 30, 40},
		// With MinCount 1 every positive count is released, but never as 0.
		{1, 5, 1, 5},
		{1, 5, 2, 5},
		{1, 5, 7, 5},
		{1, 5, 8, 10},
		// Base 1 is no rounding.
		{8, 1, 9, 9},
		{8, 1, 0, 0},
	}
	for _, tt := range tests {
		th := Thresholds{MinCount: tt.minCount, RoundingBase: tt.base}
		if got := th.roundCount(tt.in); got != tt.want {
			t.Errorf("min %d base %d: roundCount(%d) = %d, want %d", tt.minCount, tt.base, tt.in, got, tt.want)
		}
	}
}

func TestRoundSum(t *testing.T) {
	tests := []struct {
		base    int
		in, out float64
	}{
		{5, 0, 0},
		{5, 47, 45},
		{5, 47.5, 50},
		{5, 2.4, 0},
		{5, -2.4, 0}, // and not -0
		{5, -12.5, -10},
		{5, -13, -15},
		{1, 3.5, 4},
		{10, 1234.5, 1230},
	}
	for _, tt := range tests {
		th := Thresholds{MinCount: 8, RoundingBase: tt.base}
		got := th.roundSum(tt.in)
		if got != tt.out || math.Signbit(got) != math.Signbit(tt.out) {
			t.Errorf("base %d: roundSum(%v) = %v, want %v", tt.base, tt.in, got, tt.out)
		}
	}
}
