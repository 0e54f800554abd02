package synth

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

// BenchmarkGenerateICB generates the whole ICB scale (≈1.5M patients) per
// iteration. It runs only when asked for with -bench; expect a minute or
// more per iteration on two cores.
func BenchmarkGenerateICB(b *testing.B) {
	for i := range b.N {
		out := filepath.Join(b.TempDir(), fmt.Sprint("icb", i))
		sum, err := Generate(context.Background(), Config{Out: out, Scale: ScaleICB, Seed: 1})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(sum.Patients), "patients/op")
		b.ReportMetric(float64(sum.Bytes)/(1<<20), "MiB/op")
	}
}

// BenchmarkPerson measures drawing one patient's latent attributes, the
// step every site repeats for every patient it considers.
func BenchmarkPerson(b *testing.B) {
	top, err := newTopology(1, ScaleICB, 0)
	if err != nil {
		b.Fatal(err)
	}
	pop := newPopulation(top)
	var p person
	for i := range b.N {
		if err := pop.person(i%150, i%top.practices[i%150].cohort, &p); err != nil {
			b.Fatal(err)
		}
	}
}
