package synth

import (
	"fmt"
	"math"

	"github.com/havenhealth/haven/cdm"
)

// A person's latent attributes — who they are, what they have, what
// happens to them — are a pure function of (seed, home practice, index).
// Every site that needs a person (their practice, the practice they moved
// to, each trust they attend) regenerates them from that key alone.

// status says how a person's registration with their home practice ends.
type status uint8

const (
	statusRegistered status = iota // still registered at the reference date
	statusDied                     // registered until death
	statusLeft                     // left the network (moved away, emigrated)
	statusMoved                    // moved to the home practice's neighbour, registered there now
)

// condition is a long-term condition the generator models.
type condition uint8

const (
	condT2DM condition = iota
	condHypertension
	condAsthma
	condCOPD
	condCHD
	numConditions
)

// smoking is a person's smoking status, recorded once for adults.
type smoking uint8

const (
	smokingUnknown smoking = iota
	smokingNever
	smokingEx
	smokingCurrent
)

const (
	probType1         = 0.03  // type 1 opt-out
	probNDOPIfType1   = 0.35  // national opt-out among type 1 objectors
	probNDOPOtherwise = 0.043 // national opt-out among the rest
	probNoLSOA        = 0.005 // address not geocoded
	probSexUnknown    = 0.0003
	probSexIndet      = 0.0001
)

// person is one patient's latent attributes.
type person struct {
	practice, index int
	nhs             string
	nhsValue        uint64 // nhs as a number, for sorting the opt-out list
	sex             string
	birth, death    day // death is noDay while alive
	status          status
	regStart        day // registration at the home practice
	regEnd          day // noDay while registered
	moveTo          int // practice moved to (statusMoved), else -1
	newStart        day // registration start at moveTo
	lsoa, newLSOA   int // LSOA number at home and at moveTo; 0 when unknown
	smoking         smoking
	onset           [numConditions]day // noDay when the person never has it
	bpPerYear       int                // blood pressure checks a year once hypertensive
	bpControlled    bool
	hba1cMean       float64
	propensity      float64 // multiplies every activity rate
	type1           day     // type 1 opt-out recorded, or noDay
	ndop            bool
}

// has reports whether p has condition c on day d.
func (p *person) has(c condition, d day) bool { return p.onset[c] != noDay && p.onset[c] <= d }

// lastDay is the last day the person can have activity anywhere: death,
// leaving the network, or the reference date.
func (p *person) lastDay() day {
	switch p.status {
	case statusDied:
		return p.death
	case statusLeft:
		return p.regEnd
	}
	return referenceDay
}

// ageAt returns p's age in (fractional) years on d.
func (p *person) ageAt(d day) float64 { return yearsBetween(p.birth, d) }

// population draws people. It is not safe for concurrent use; each site
// generator owns one.
type population struct {
	t       *topology
	r       *rng
	pyramid []float64 // weights of (sex, five-year band) cells: male bands then female bands
	// deathBands are the age bands (years) deaths fall in, deathAge their
	// weights: most deaths come late in life.
	deathBands [][2]float64
	deathAge   []float64
}

func newPopulation(t *topology) *population {
	// England by sex and five-year band, 0–4 … 95–99, in thousands; shaped
	// on the ONS mid-2022 estimates (more older women).
	male := [...]float64{1640, 1780, 1800, 1650, 1750, 1890, 1950, 1880, 1770, 1730,
		1900, 1880, 1600, 1360, 1290, 1000, 600, 330, 110, 30}
	female := [...]float64{1560, 1700, 1710, 1560, 1700, 1880, 1990, 1910, 1790, 1770,
		1960, 1930, 1660, 1450, 1410, 1140, 740, 470, 210, 80}
	return &population{
		t:          t,
		r:          newRNG(),
		pyramid:    append(male[:], female[:]...),
		deathBands: [][2]float64{{0, 1}, {1, 15}, {15, 45}, {45, 65}, {65, 75}, {75, 85}, {85, 95}, {95, 105}},
		deathAge:   []float64{0.5, 0.3, 3, 12, 15, 27, 33, 9.2},
	}
}

// nhsNumber mints the NHS number of patient i of practice p. Patients use
// every other serial of their practice's block: a serial with no valid
// check digit moves on to the next, and two consecutive serials are never
// both invalid, so numbers never collide.
func nhsNumber(p, i int) (string, error) {
	serial := uint32(serialBase + p*serialStride + 2*i)
	nhs, _, err := cdm.NHSNumberFromSerial(serial)
	if err != nil {
		return "", fmt.Errorf("practice %d patient %d: %w", p, i, err)
	}
	return nhs, nil
}

// person fills out with patient i of practice p.
func (g *population) person(p, i int, out *person) error {
	pr := &g.t.practices[p]
	r := g.r
	r.seed(g.t.seed, streamPerson, uint64(p), uint64(i))

	nhs, err := nhsNumber(p, i)
	if err != nil {
		return err
	}
	*out = person{practice: p, index: i, nhs: nhs, death: noDay, regEnd: noDay, newStart: noDay, moveTo: -1, type1: noDay}
	for c := range out.onset {
		out.onset[c] = noDay
	}
	for k := 0; k < len(nhs); k++ {
		out.nhsValue = out.nhsValue*10 + uint64(nhs[k]-'0')
	}

	// Fate, then age and sex: the living follow the pyramid at the
	// reference date, the dead the age-at-death distribution.
	u := r.Float64()
	switch {
	case u < probDied:
		out.status = statusDied
	case u < probDied+probLeft:
		out.status = statusLeft
	case u < probDied+probLeft+probMoved && pr.moveTo >= 0:
		out.status = statusMoved
	}
	if out.status == statusDied {
		out.death = r.dayBetween(historyStart, referenceDay-1)
		b := g.deathBands[r.pick(g.deathAge)]
		age := b[0] + (b[1]-b[0])*r.Float64()
		out.birth = min(out.death, addYears(out.death, -age))
		out.sex = cdm.SexMale
		if r.chance(0.5) {
			out.sex = cdm.SexFemale
		}
	} else {
		cell := r.pick(g.pyramid)
		out.sex = cdm.SexMale
		if cell >= 20 {
			out.sex = cdm.SexFemale
			cell -= 20
		}
		age := 5 * (float64(cell) + r.Float64())
		out.birth = addYears(referenceDay, -age)
	}
	switch x := r.Float64(); {
	case x < probSexUnknown:
		out.sex = cdm.SexUnknown
	case x < probSexUnknown+probSexIndet:
		out.sex = cdm.SexIndeterminate
	}

	g.registration(pr, out)
	g.area(pr, out)
	g.conditions(out)

	out.propensity = math.Exp(r.normal(0, 0.45))
	out.bpPerYear = r.between(1, 3)
	out.bpControlled = r.chance(0.6)
	out.hba1cMean = min(max(r.normal(56, 10), 42), 110)

	if r.chance(probType1) {
		out.type1 = r.dayBetween(max(out.regStart, historyStart), out.lastDay())
	}
	if out.status != statusDied {
		pNDOP := probNDOPOtherwise
		if out.type1 != noDay {
			pNDOP = probNDOPIfType1
		}
		out.ndop = r.chance(pNDOP)
	}
	return nil
}

// registration sets the home practice registration and, for movers and
// leavers, when it ended and where they went.
func (g *population) registration(pr *practice, out *person) {
	r := g.r
	bornReg := min(out.birth+day(r.between(0, 42)), referenceDay)
	last := referenceDay - 1
	switch out.status {
	case statusDied:
		last = out.death
	case statusLeft, statusMoved:
		last = referenceDay - 400
	}
	switch {
	case bornReg >= historyStart:
		out.regStart = bornReg
	case r.chance(0.7) || last < historyStart:
		out.regStart = r.dayBetween(max(bornReg, earliestRegistration), historyStart-1)
	default:
		out.regStart = r.dayBetween(historyStart, last)
	}
	if out.status == statusDied {
		out.regStart = min(out.regStart, out.death)
		out.regEnd = out.death
	}
	switch out.status {
	case statusLeft:
		lo := max(out.regStart+60, historyStart)
		if lo > referenceDay-1 {
			out.status = statusRegistered
			return
		}
		out.regEnd = r.dayBetween(lo, referenceDay-1)
	case statusMoved:
		lo := max(out.regStart+60, historyStart+90)
		if lo > referenceDay-60 {
			out.status = statusRegistered
			return
		}
		out.regEnd = r.dayBetween(lo, referenceDay-60)
		out.moveTo = pr.moveTo
		out.newStart = out.regEnd + day(r.between(1, 28))
	}
}

// area sets the LSOA the person lives in, near their practice (and, for
// movers, near the practice they moved to).
func (g *population) area(pr *practice, out *person) {
	r := g.r
	near := func(q *practice) int {
		v := q.lsoaCentre + int(math.Round(r.normal(0, q.lsoaSpread)))
		return min(max(v, g.t.lsoaFirst), g.t.lsoaFirst+g.t.lsoaCount-1)
	}
	if !r.chance(probNoLSOA) {
		out.lsoa = near(pr)
	}
	if out.status == statusMoved {
		out.newLSOA = near(&g.t.practices[out.moveTo])
	}
}

// conditions draws smoking status and long-term conditions. Prevalence
// rises with age (taken at death or the reference date) the way QOF
// registers do; onsets fall in the years before that age.
func (g *population) conditions(out *person) {
	r := g.r
	end := out.lastDay()
	age := out.ageAt(end)
	died := out.status == statusDied

	if age >= 16 {
		cur, ex := smokingRates(age)
		switch x := r.Float64(); {
		case x < cur:
			out.smoking = smokingCurrent
		case x < cur+ex:
			out.smoking = smokingEx
		default:
			out.smoking = smokingNever
		}
	}
	male, female := out.sex == cdm.SexMale, out.sex == cdm.SexFemale
	sexFactor := func(m, f float64) float64 {
		switch {
		case male:
			return m
		case female:
			return f
		}
		return (m + f) / 2
	}
	sicker := func(p, k float64) float64 {
		if died {
			p *= k
		}
		return min(p, 0.9)
	}
	onset := func(lo, hi float64) day {
		lo = min(max(lo, 0), age)
		a := lo + (age-lo)*r.Float64()
		return min(max(addYears(out.birth, a), out.birth), end-1)
	}

	if r.chance(sicker(t2dmRate(age)*sexFactor(1.2, 0.82), 1.4)) {
		out.onset[condT2DM] = onset(max(25, age-25), age)
	}
	pHTN := htnRate(age)
	if out.onset[condT2DM] != noDay {
		pHTN *= 1.6
	}
	if r.chance(sicker(pHTN, 1.1)) {
		out.onset[condHypertension] = onset(max(20, age-30), age)
	}
	if r.chance(asthmaRate(age)) {
		if r.chance(0.5) {
			out.onset[condAsthma] = onset(2, min(age, 15))
		} else {
			out.onset[condAsthma] = onset(2, age)
		}
	}
	smokeFactor := [...]float64{smokingUnknown: 1, smokingNever: 0.25, smokingEx: 2.2, smokingCurrent: 2.6}[out.smoking]
	if r.chance(sicker(copdRate(age)*smokeFactor, 2)) {
		out.onset[condCOPD] = onset(max(35, age-20), age)
	}
	pCHD := chdRate(age) * sexFactor(1.5, 0.6)
	if out.onset[condT2DM] != noDay {
		pCHD *= 1.8
	}
	if r.chance(sicker(pCHD, 2)) {
		out.onset[condCHD] = onset(max(35, age-20), age)
	}
}

// byAge returns the rate of the first band whose upper age bound exceeds age.
func byAge(age float64, bounds []float64, rates []float64) float64 {
	for k, b := range bounds {
		if age < b {
			return rates[k]
		}
	}
	return rates[len(rates)-1]
}

func t2dmRate(age float64) float64 {
	return byAge(age, []float64{18, 30, 40, 50, 60, 70, 80},
		[]float64{0.0003, 0.0036, 0.0125, 0.04, 0.081, 0.13, 0.17, 0.16})
}

func htnRate(age float64) float64 {
	return byAge(age, []float64{18, 30, 40, 50, 60, 70, 80},
		[]float64{0.001, 0.011, 0.031, 0.08, 0.17, 0.3, 0.41, 0.5})
}

func asthmaRate(age float64) float64 {
	return byAge(age, []float64{3, 5, 18, 65}, []float64{0, 0.02, 0.085, 0.065, 0.06})
}

func copdRate(age float64) float64 {
	return byAge(age, []float64{35, 45, 55, 65, 75}, []float64{0, 0.004, 0.015, 0.035, 0.06, 0.075})
}

func chdRate(age float64) float64 {
	return byAge(age, []float64{40, 50, 60, 70, 80}, []float64{0.0005, 0.006, 0.025, 0.06, 0.11, 0.15})
}

// smokingRates returns the chance an adult of this age smokes now, and
// the chance they used to.
func smokingRates(age float64) (current, ex float64) {
	bounds := []float64{25, 35, 45, 55, 65}
	return byAge(age, bounds, []float64{0.12, 0.17, 0.15, 0.14, 0.12, 0.08}),
		byAge(age, bounds, []float64{0.05, 0.12, 0.18, 0.24, 0.32, 0.42})
}

// currentPracticeODS returns the ODS code of the practice the person is
// registered with now (or was at death), or "" once they left the network.
func (t *topology) currentPracticeODS(p *person) string {
	switch p.status {
	case statusLeft:
		return ""
	case statusMoved:
		return t.practices[p.moveTo].ods
	}
	return t.practices[p.practice].ods
}
