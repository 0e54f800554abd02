package synth

import (
	"math"
	"math/rand/v2"
)

// stream names what a random stream is for. Every stream is seeded from
// (seed, stream, a, b) alone, never shared, so a value drawn in one place
// never shifts the values drawn anywhere else, and any site can regenerate
// another site's facts by seeding the same stream.
type stream uint64

const (
	streamPractice stream = iota + 1 // a practice's list size, name, area: (practice, 0)
	streamTrust                      // a trust's name: (trust, 0)
	streamRegion                     // where the network's LSOAs start: (0, 0)
	streamPerson                     // a patient's latent attributes: (practice, patient)
	streamGP                         // a patient's primary care record: (practice, patient)
	streamHospital                   // a patient's hospital activity: (practice, patient)
	streamDirty                      // deliberate defects in one file: (site, table)
)

// Mix64 is the splitmix64 finaliser: a bijection that spreads nearby
// inputs (patient 7, patient 8) into unrelated 64-bit values. The
// national simulation (demo/national) draws its patients with it too.
func Mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// rng is a PCG generator that can be reseeded in place, so that a loop over
// millions of patients seeds a fresh stream per patient without allocating.
type rng struct {
	pcg rand.PCG
	*rand.Rand
}

func newRNG() *rng {
	r := &rng{}
	r.Rand = rand.New(&r.pcg)
	return r
}

// seed restarts r on the stream (seed, s, a, b).
func (r *rng) seed(seed uint64, s stream, a, b uint64) {
	hi := Mix64(seed ^ Mix64(uint64(s)))
	lo := Mix64(Mix64(a+0x9e3779b97f4a7c15) ^ Mix64(b^0xd1b54a32d192ed03) ^ uint64(s))
	r.pcg.Seed(hi, lo)
}

// chance reports true with probability p.
func (r *rng) chance(p float64) bool { return r.Float64() < p }

// between returns a uniform integer in [lo, hi]; lo when hi < lo.
func (r *rng) between(lo, hi int) int {
	if hi <= lo {
		return lo
	}
	return lo + r.IntN(hi-lo+1)
}

// dayBetween returns a uniform day in [lo, hi]; lo when hi < lo.
func (r *rng) dayBetween(lo, hi day) day {
	return day(r.between(int(lo), int(hi)))
}

// normal returns a normal deviate with the given mean and standard deviation.
func (r *rng) normal(mean, sd float64) float64 { return mean + sd*r.NormFloat64() }

// poisson returns a Poisson deviate with mean lambda (Knuth's method, fine
// for the small means used here; large means fall back to a normal).
func (r *rng) poisson(lambda float64) int {
	if lambda <= 0 {
		return 0
	}
	if lambda > 30 {
		return max(0, int(math.Round(r.normal(lambda, math.Sqrt(lambda)))))
	}
	l := math.Exp(-lambda)
	k, p := 0, 1.0
	for {
		p *= r.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// pick returns an index into weights, chosen with probability proportional
// to its weight.
func (r *rng) pick(weights []float64) int {
	total := 0.0
	for _, w := range weights {
		total += w
	}
	x := r.Float64() * total
	for i, w := range weights {
		if x < w {
			return i
		}
		x -= w
	}
	return len(weights) - 1
}
