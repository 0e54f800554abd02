package linkage

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkProbe measures the patient table alone: 1.5M inserts then 600k
// lookups, with and without warming each group of probes, and with and
// without reserving room first (Options.ExpectedPatients).
func BenchmarkProbe(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	seed := [2]uint64{rng.Uint64(), rng.Uint64()}
	const n, m = 1_500_000, 600_000
	keys := make([]byte, 16*n)
	for i := range keys {
		keys[i] = byte(rng.UintN(256))
	}
	hashes := make([]uint64, n)
	for i := range n {
		hashes[i] = hash(seed, keys[16*i:16*i+16])
	}
	rows := make([]int32, n)
	for i := range rows {
		rows[i] = int32(i)
	}
	look := make([]int32, m)
	for i := range look {
		look[i] = int32(rng.IntN(n))
	}
	for _, presize := range []bool{false, true} {
		for _, warm := range []bool{false, true} {
			name := fmt.Sprintf("presize=%v/warm=%v", presize, warm)
			b.Run(name, func(b *testing.B) {
				for b.Loop() {
					p := &partition{seed: seed}
					if presize {
						p.reserve(nil, n)
					}
					for _, rs := range [][]int32{rows, look} {
						for g := 0; g < len(rs); g += warmGroup {
							group := rs[g:min(g+warmGroup, len(rs))]
							if warm {
								p.warm(group, hashes)
							}
							for _, row := range group {
								p.findOrInsert((*pseudonym)(keys[16*row:16*row+16]), hashes[row])
							}
						}
					}
				}
			})
		}
	}
}
