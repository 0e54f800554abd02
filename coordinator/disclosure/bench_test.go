package disclosure

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/havenhealth/haven/policy/ptable"
)

// practiceTable is a realistic national table: practices × 10-year age bands
// × sex, with a patients count (prevalence of a condition that rises with
// age, so the young bands are small), an admitted count (a fifth of them),
// and an admissions sum with the dominance rule. It is deterministic.
func practiceTable(practices int, scale float64) Table {
	rng := rand.New(rand.NewPCG(1, 2))
	bands := []string{"00-09", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70-79", "80-89", "90+"}
	ageShare := []float64{.11, .11, .13, .14, .13, .13, .11, .08, .05, .01}
	prevalence := []float64{.0005, .002, .008, .02, .05, .09, .14, .18, .2, .2}
	sexes := []string{"F", "M"}
	t := Table{
		Dims: []string{"practice", "age_band", "sex"},
		Measures: []Measure{
			{Name: "patients", Kind: KindCount},
			{Name: "admitted", Kind: KindCount},
			{Name: "admissions", Kind: KindSum, Dominance: true},
		},
	}
	for p := range practices {
		list := math.Exp(rng.NormFloat64()*0.5 + math.Log(8000))
		for a, band := range bands {
			for _, sex := range sexes {
				patients := poisson(rng, list*ageShare[a]*min(1, scale*prevalence[a])/2)
				if patients == 0 && rng.IntN(2) == 0 {
					continue // nodes send only groups they have
				}
				admitted := binomial(rng, patients, 0.2)
				contrib := make([]float64, admitted)
				var sum float64
				for i := range contrib {
					contrib[i] = float64(1 + poisson(rng, 0.4))
					sum += contrib[i]
				}
				slices.Sort(contrib)
				slices.Reverse(contrib)
				// Cell keys for perturbation: uniform in [0, 256), as sums of
				// record keys mod R are; the admitted patients' key is both
				// the count's and the sum's n key.
				pk, ak := rng.Uint64N(256), rng.Uint64N(256)
				t.Cells = append(t.Cells, Cell{
					Key: []string{fmt.Sprintf("P%05d", p), band, sex},
					Values: []Input{
						{Count: patients, Key: pk},
						{Count: admitted, Key: ak},
						{N: admitted, NKey: ak, Sum: sum, TopContributions: contrib[:min(len(contrib), 1)]},
					},
				})
			}
		}
	}
	return t
}

func poisson(rng *rand.Rand, lambda float64) int64 {
	if lambda > 50 {
		return max(0, int64(math.Round(lambda+math.Sqrt(lambda)*rng.NormFloat64())))
	}
	l, k, p := math.Exp(-lambda), int64(0), 1.0
	for {
		p *= rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

func binomial(rng *rand.Rand, n int64, p float64) int64 {
	var k int64
	for range n {
		if rng.Float64() < p {
			k++
		}
	}
	return k
}

// BenchmarkApply runs disclosure control on a national table of 6,500
// practices × 10 age bands × 2 sexes: a rare condition (most cells small),
// a common one, and all registered patients (few small cells); each with
// suppression and rounding ("plain") and with the reference p-table
// ("perturbed"), side by side, so that their ratio is perturbation's cost.
func BenchmarkApply(b *testing.B) {
	pt, err := ptable.Generate(ptable.Params{Threshold: 8, Base: 5, MaxPerturbation: 10, Variance: 9, KeyRange: 256})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name      string
		scale     float64
		perturbed bool
	}{{"rare/plain", 1, false}, {"rare/perturbed", 1, true}, {"common/plain", 4, false}, {"common/perturbed", 4, true},
		{"registered/plain", 1000, false}, {"registered/perturbed", 1000, true}} {
		b.Run(bc.name, func(b *testing.B) {
			t := practiceTable(6500, bc.scale)
			th := DefaultThresholds()
			if bc.perturbed {
				th.Perturbation, th.AttributeDisclosure = pt, true
			}
			b.ReportAllocs()
			var r *Released
			for b.Loop() {
				var err error
				r, err = Apply(context.Background(), t, th)
				if err != nil {
					b.Fatal(err)
				}
			}
			counts := r.WithheldCounts()
			b.ReportMetric(float64(len(t.Cells)), "cells")
			for _, c := range []Code{CodeLowCount, CodeFewContributors, CodeDominance, CodeSecondary} {
				b.ReportMetric(float64(counts[c]), string(c))
			}
		})
	}
}
