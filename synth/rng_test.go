package synth

import (
	"math"
	"testing"
)

func TestStreamsAreIndependentAndRepeatable(t *testing.T) {
	a, b := newRNG(), newRNG()
	a.seed(1, streamPerson, 3, 4)
	first := a.Uint64()
	for _, tc := range []struct {
		name          string
		seed          uint64
		s             stream
		x, y          uint64
		wantSameFirst bool
	}{
		{"same key", 1, streamPerson, 3, 4, true},
		{"other seed", 2, streamPerson, 3, 4, false},
		{"other stream", 1, streamGP, 3, 4, false},
		{"other practice", 1, streamPerson, 4, 4, false},
		{"other patient", 1, streamPerson, 3, 5, false},
		{"swapped key", 1, streamPerson, 4, 3, false},
	} {
		b.seed(tc.seed, tc.s, tc.x, tc.y)
		if got := b.Uint64() == first; got != tc.wantSameFirst {
			t.Errorf("%s: first draw equal = %v, want %v", tc.name, got, tc.wantSameFirst)
		}
	}
}

func TestPoissonMean(t *testing.T) {
	r := newRNG()
	r.seed(7, streamDirty, 0, 0)
	for _, lambda := range []float64{0, 0.3, 2.5, 40} {
		const n = 20000
		sum := 0
		for range n {
			sum += r.poisson(lambda)
		}
		mean := float64(sum) / n
		if math.Abs(mean-lambda) > 0.05*lambda+0.02 {
			t.Errorf("poisson(%v) mean %.3f", lambda, mean)
		}
	}
}

func TestBetweenAndPick(t *testing.T) {
	r := newRNG()
	r.seed(7, streamDirty, 1, 0)
	if got := r.between(5, 2); got != 5 {
		t.Errorf("between(5, 2) = %d, want 5", got)
	}
	counts := make([]int, 3)
	for range 30000 {
		v := r.between(10, 12)
		if v < 10 || v > 12 {
			t.Fatalf("between(10, 12) = %d", v)
		}
		counts[r.pick([]float64{1, 0, 3})]++
	}
	if counts[1] != 0 || math.Abs(float64(counts[2])/float64(counts[0])-3) > 0.3 {
		t.Errorf("pick counts %v, want about 1:0:3", counts)
	}
}

func TestDates(t *testing.T) {
	if got := historyStart.String(); got != "2015-01-01" {
		t.Errorf("historyStart = %s", got)
	}
	if got := referenceDay.String(); got != "2026-03-31" {
		t.Errorf("referenceDay = %s", got)
	}
	if got := dayOf(referenceDay.Time()); got != referenceDay {
		t.Errorf("dayOf(Time()) = %d, want %d", got, referenceDay)
	}
	if got := noDay.String(); got != "none" {
		t.Errorf("noDay = %s", got)
	}
}
