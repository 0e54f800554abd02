package synth

import (
	"fmt"
	"math"
	"strconv"
)

// The topology is the network's shape: which practices and trusts exist,
// how big each list is, which trusts each practice's patients use and where
// its movers go. It is cheap to compute (a few draws per site), so it is
// built once up front and shared read-only by every site generator.

const (
	// serialBase and serialStride give each practice a disjoint block of
	// NHS number serials; a practice's patient i uses serial
	// base + p*stride + 2i (two serials per patient, because the next
	// valid number is at most one serial on: see nhsNumber).
	serialBase   = 300_000_000
	serialStride = 100_000
	// maxPractices keeps every serial below 10⁹.
	maxPractices = (1_000_000_000 - serialBase) / serialStride
	// maxCohort bounds a practice's ever-registered cohort so that its
	// serials stay inside its block.
	maxCohort = serialStride / 2

	minListSize    = 1_000
	maxListSize    = 30_000
	medianListSize = 8_500
	listSizeSigma  = 0.42

	// A practice sends its movers to its neighbour; dualTrustZone is the
	// fraction of the spacing between two trusts, either side of the
	// boundary, where practices use both.
	dualTrustZone = 0.15

	// englandLSOAs is the number of LSOA codes (E01000001…) drawn from.
	englandLSOAs = 35_672
	// peoplePerLSOA sets how many LSOAs a network of a given size covers.
	peoplePerLSOA = 1_600
)

// The mix of ways a patient of a practice's cohort ends up at the reference
// date. Deaths are about 0.9% of a list a year over 11¼ years; turnover to
// outside the network and to the neighbouring practice is a few percent.
const (
	probDied  = 0.086
	probLeft  = 0.052
	probMoved = 0.043
)

// practice is one GP practice in the topology.
type practice struct {
	id         int // index in the full scale, also its position
	ods        string
	name       string
	listSize   int // target registered list at the reference date
	cohort     int // patients whose home practice this is, ever registered
	trusts     []int
	trustShare float64 // chance a patient's main trust is trusts[0]
	lsoaCentre int
	lsoaSpread float64
	moveTo     int   // practice that receives this practice's movers, or -1
	moveFrom   []int // practices whose movers come here, ascending
}

// trust is one hospital trust in the topology.
type trust struct {
	id        int // index in the full scale; names and ODS follow it
	ods       string
	name      string
	practices []int // catchment practices, ascending
	catchment int   // expected patients whose main trust this is
}

type topology struct {
	seed      uint64
	scale     Scale
	practices []practice
	trusts    []trust
	// trustPos maps a trust id to its position in trusts.
	trustPos  map[int]int
	lsoaFirst int
	lsoaCount int
}

// newTopology lays out the network for seed and scale, cut down to the
// first sites practices when sites > 0.
func newTopology(seed uint64, scale Scale, sites int) (*topology, error) {
	sh, err := scale.shape()
	if err != nil {
		return nil, err
	}
	if sh.practices > maxPractices {
		return nil, fmt.Errorf("scale %s: %d practices exceed the %d that NHS number serials allow", scale, sh.practices, maxPractices)
	}
	n := sh.practices
	if sites < 0 {
		return nil, fmt.Errorf("sites %d: must not be negative", sites)
	}
	if sites > n {
		return nil, fmt.Errorf("sites %d: scale %s has only %d practices", sites, scale, n)
	}
	if sites > 0 {
		n = sites
	}
	r := newRNG()
	t := &topology{seed: seed, scale: scale, trustPos: map[int]int{}}

	// List sizes are drawn for every practice of the full scale, so a
	// cut keeps the sizes it had.
	sizes := ListSizes(seed, sh.practices, sh.population)

	r.seed(seed, streamRegion, 0, 0)
	t.lsoaCount = min(englandLSOAs, max(50, sh.population/peoplePerLSOA))
	t.lsoaFirst = 1 + r.IntN(englandLSOAs-t.lsoaCount+1)

	for p := range n {
		r.seed(seed, streamPractice, uint64(p), 1)
		size := sizes[p]
		x := (float64(p) + 0.5) / float64(sh.practices)
		pr := practice{
			id:         p,
			ods:        practiceODS(p),
			name:       practiceName(r),
			listSize:   size,
			cohort:     min(maxCohort, int(math.Round(float64(size)/(1-probDied-probLeft)))),
			lsoaCentre: t.lsoaFirst + int(x*float64(t.lsoaCount)),
			lsoaSpread: max(2, float64(t.lsoaCount)/float64(sh.practices)*1.5),
			moveTo:     -1,
		}
		pr.trusts, pr.trustShare = trustsFor(x, sh.trusts)
		t.practices = append(t.practices, pr)
	}

	// Movers go to the next practice along, the last one back to its
	// predecessor, so that a mover's trusts hardly change.
	if n > 1 {
		for p := range t.practices {
			q := p + 1
			if q == n {
				q = p - 1
			}
			t.practices[p].moveTo = q
			t.practices[q].moveFrom = append(t.practices[q].moveFrom, p)
		}
	}

	// Trusts: those the practices use, in id order.
	used := map[int]bool{}
	for _, p := range t.practices {
		for _, id := range p.trusts {
			used[id] = true
		}
	}
	for id := range sh.trusts {
		if !used[id] {
			continue
		}
		r.seed(seed, streamTrust, uint64(id), 0)
		t.trustPos[id] = len(t.trusts)
		t.trusts = append(t.trusts, trust{id: id, ods: trustODS(id), name: trustName(r)})
	}
	for _, p := range t.practices {
		for k, id := range p.trusts {
			tr := &t.trusts[t.trustPos[id]]
			tr.practices = append(tr.practices, p.id)
			share := 1.0
			if len(p.trusts) == 2 {
				share = p.trustShare
				if k == 1 {
					share = 1 - p.trustShare
				}
			}
			tr.catchment += int(math.Round(float64(p.listSize) * share))
		}
	}
	return t, nil
}

// ListSizes returns the registered list sizes of the given number of
// practices, by the synthesiser's model, deterministically from seed: a
// skewed (log-normal) draw per practice around a median of 8,500, scaled
// so that the lists add up to about population, each kept between 1,000
// and 30,000. The national bench sizes its simulated practices with it.
func ListSizes(seed uint64, practices, population int) []int {
	r := newRNG()
	raw := make([]float64, practices)
	total := 0.0
	for p := range raw {
		r.seed(seed, streamPractice, uint64(p), 0)
		v := medianListSize * math.Exp(r.normal(0, listSizeSigma))
		v = min(max(v, 2_000), maxListSize)
		raw[p] = v
		total += v
	}
	factor := float64(population) / total
	sizes := make([]int, practices)
	for p, v := range raw {
		sizes[p] = min(max(int(math.Round(v*factor)), minListSize), maxListSize)
	}
	return sizes
}

// PracticeTrusts returns the trusts (indices in [0, trusts)) that
// practice p of practices uses, nearest first, and the share of its
// patients whose main trust is the first, by the synthesiser's model:
// practices and trusts sit evenly along one line, and a practice near the
// boundary between two trusts uses both.
func PracticeTrusts(p, practices, trusts int) ([]int, float64) {
	return trustsFor((float64(p)+0.5)/float64(practices), trusts)
}

// trustsFor returns the trusts a practice at position x in [0, 1) uses,
// nearest first, and the share of its patients whose main trust is the
// nearest. Trusts sit evenly along the same line; a practice near the
// boundary between two uses both.
func trustsFor(x float64, trusts int) ([]int, float64) {
	spacing := 1 / float64(trusts)
	nearest := min(int(x/spacing), trusts-1)
	centre := (float64(nearest) + 0.5) * spacing
	toBoundary := spacing/2 - math.Abs(x-centre)
	zone := dualTrustZone * spacing
	other := nearest + 1
	if x < centre {
		other = nearest - 1
	}
	if toBoundary >= zone || other < 0 || other >= trusts {
		return []int{nearest}, 1
	}
	// At the boundary patients split evenly; further in, up to 80:20.
	return []int{nearest, other}, 0.5 + 0.3*toBoundary/zone
}

// practiceODS returns a practice's ODS code: a letter and five digits,
// like real GP practice codes.
func practiceODS(p int) string { return "G" + strconv.Itoa(80001+p) }

// trustODS returns a trust's three-character ODS code: R, then two
// characters from RA0 on, like real trust codes (RA7, RXX).
func trustODS(id int) string {
	const chars = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
	n := id + 10*len(chars) // start at RA0
	return "R" + string(chars[n/len(chars)%len(chars)]) + string(chars[n%len(chars)])
}

func practiceName(r *rng) string {
	streets := [...]string{"Station Road", "Church Street", "High Street", "Park Lane", "Mill Road", "Victoria Road",
		"Market Place", "The Green", "Riverside", "Queens Road", "Bridge Street", "London Road", "Chapel Lane",
		"Manor Road", "Castle Street", "Orchard Way", "School Lane", "Elm Grove", "North Road", "West End"}
	practiceKinds := [...]string{"Surgery", "Medical Centre", "Health Centre", "Medical Practice", "Family Practice", "Group Practice"}
	if r.chance(0.4) {
		return placeName(r) + " " + practiceKinds[r.IntN(len(practiceKinds))]
	}
	return streets[r.IntN(len(streets))] + " " + practiceKinds[r.IntN(len(practiceKinds))]
}

func trustName(r *rng) string {
	trustKinds := [...]string{"Hospitals NHS Trust", "University Hospitals NHS Foundation Trust",
		"Teaching Hospitals NHS Trust", "Hospitals NHS Foundation Trust"}
	return placeName(r) + " " + trustKinds[r.IntN(len(trustKinds))]
}

func placeName(r *rng) string {
	placeStarts := [...]string{"Ash", "Bram", "Cole", "Dun", "Elm", "Fern", "Glen", "Hart", "Ivy", "Kings",
		"Lang", "Mar", "Nor", "Oak", "Pen", "Rad", "Stan", "Thorn", "Wes", "Whit", "Brook", "Fair", "Holm", "Sand"}
	placeEnds := [...]string{"bury", "field", "ford", "ham", "ley", "mouth", "stead", "ton", "wick", "worth",
		"combe", "dale", "gate", "hurst", "minster", "well"}
	return placeStarts[r.IntN(len(placeStarts))] + placeEnds[r.IntN(len(placeEnds))]
}
