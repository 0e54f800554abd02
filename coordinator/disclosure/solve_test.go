package disclosure

import (
	"context"
	"errors"
	"math"
	"math/big"
	"math/rand/v2"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// rankDetermined is the test's brute-force answer for determinedCols: the
// columns whose removal lowers the rank.
func rankDetermined(ncols int, rows [][]term) []int32 {
	m := make([][]*big.Rat, len(rows))
	for i, row := range rows {
		m[i] = make([]*big.Rat, ncols)
		for j := range m[i] {
			m[i][j] = new(big.Rat)
		}
		for _, e := range row {
			m[i][e.col].SetInt64(int64(e.coef))
		}
	}
	full := rank(m, -1)
	var det []int32
	for j := range ncols {
		if rank(m, j) < full {
			det = append(det, int32(j))
		}
	}
	return det
}

func drawSystem(rt *rapid.T, maxCoef int) (int, [][]term) {
	ncols := rapid.IntRange(1, 10).Draw(rt, "cols")
	nrows := rapid.IntRange(0, 8).Draw(rt, "rows")
	rows := make([][]term, nrows)
	for i := range rows {
		for j := range ncols {
			if c := rapid.IntRange(-maxCoef, maxCoef).Draw(rt, "coef"); c != 0 && rapid.IntRange(0, 2).Draw(rt, "sparse") == 0 {
				rows[i] = append(rows[i], term{col: int32(j), coef: int8(c)})
			}
		}
	}
	return ncols, rows
}

// TestDeterminedColsMatchesRank checks the elimination, in both
// arithmetics, against the rank test on random sparse systems, with ±1
// coefficients (as in tables) and with larger ones (so that rows must be
// scaled).
func TestDeterminedColsMatchesRank(t *testing.T) {
	for _, maxCoef := range []int{1, 3} {
		rapid.Check(t, func(rt *rapid.T) {
			ncols, rows := drawSystem(rt, maxCoef)
			want := rankDetermined(ncols, rows)
			got, err := determinedCols(context.Background(), ncols, rows)
			if err != nil {
				rt.Fatal(err)
			}
			gotBig, err := eliminate(context.Background(), bigRing{}, ncols, rows)
			if err != nil {
				rt.Fatal(err)
			}
			if !slices.Equal(got, want) || !slices.Equal(gotBig, want) {
				rt.Fatalf("determined columns: int64 %v, big %v, want %v", got, gotBig, want)
			}
		})
	}
}

// TestDeterminedColsOverflow checks the fall back to big.Int on a dense
// system whose reduced rows have entries far beyond int64.
func TestDeterminedColsOverflow(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const n = 14
	rows := make([][]term, n)
	for i := range rows {
		for j := range n + 2 {
			rows[i] = append(rows[i], term{col: int32(j), coef: int8(rng.IntN(255) - 127)})
		}
	}
	// One more row fixes column 0 outright.
	rows = append(rows, []term{{col: 0, coef: 1}})
	if _, err := eliminate(context.Background(), &int64Ring{}, n+2, rows); !errors.Is(err, errOverflow) {
		t.Fatalf("int64 elimination: err = %v, want overflow", err)
	}
	got, err := determinedCols(context.Background(), n+2, rows)
	if err != nil {
		t.Fatal(err)
	}
	if want := rankDetermined(n+2, rows); !slices.Equal(got, want) || len(want) == 0 {
		t.Fatalf("determined columns %v, want %v (not empty)", got, want)
	}
}

func TestInt64RingOverflow(t *testing.T) {
	ops := []struct {
		name string
		f    func(r *int64Ring)
	}{
		{"mul", func(r *int64Ring) { r.mul(math.MaxInt64, 2) }},
		{"mul min by -1", func(r *int64Ring) { r.mul(math.MinInt64, -1) }},
		{"sub", func(r *int64Ring) { r.sub(math.MinInt64, 1) }},
		{"sub negative", func(r *int64Ring) { r.sub(math.MaxInt64, -1) }},
		{"quo", func(r *int64Ring) { r.quo(math.MinInt64, -1) }},
		{"gcd", func(r *int64Ring) { r.gcd(math.MinInt64, 4) }},
	}
	for _, op := range ops {
		r := &int64Ring{}
		op.f(r)
		if !errors.Is(r.err(), errOverflow) {
			t.Errorf("%s: no overflow reported", op.name)
		}
	}
	r := &int64Ring{}
	if r.mul(-3, 1<<40) != -3<<40 || r.sub(-1, math.MaxInt64) != math.MinInt64 || r.gcd(-12, 18) != 6 || r.err() != nil {
		t.Errorf("in-range arithmetic wrong or reported as overflow")
	}
}
