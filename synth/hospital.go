package synth

import (
	"math"
	"slices"

	"github.com/havenhealth/haven/cdm"
)

// A person's hospital activity — admissions and A&E attendances at any of
// the trusts their practice uses — is drawn from one stream keyed like the
// person. Each trust regenerates it and keeps its own share, so an
// emergency readmission at the other trust within 30 days of a discharge is
// consistent across the two trusts' files.

const (
	probMainTrust     = 0.88 // an admission or attendance is at the patient's main trust
	probReadmitSame   = 0.75 // a readmission is at the trust that discharged
	probViaAE         = 0.78 // an emergency admission comes through A&E
	probTerminalAdmit = 0.45 // a death follows an emergency admission
	probNoAEDiagnosis = 0.08 // A&E records no diagnosis
)

// hospitalEpisode is one apc_episode row before it is attached to an NHS
// number and given its trust's episode id.
type hospitalEpisode struct {
	trust      int // trust id
	admission  day
	discharge  day // noDay while still in hospital at the reference date
	method     string
	diagnosis  string
	procedures []string // shared, read-only
}

// aeVisit is one ae_attendance row before it is attached to an NHS number.
type aeVisit struct {
	trust     int
	arrival   day
	diagnosis string // "" when none was recorded
}

// hospitalRecord is a person's hospital activity at every trust. Its
// slices are reused from person to person.
type hospitalRecord struct {
	episodes []hospitalEpisode
	visits   []aeVisit
	pending  []admission
}

// admission is a candidate admission before stays are laid end to end.
type admission struct {
	date     day
	method   string
	terminal bool // ends in death
}

// option is a diagnosis offered with a weight.
type option struct {
	code   string
	weight float64
}

// hospitals draws hospital activity. Not safe for concurrent use.
type hospitals struct {
	t *topology
	r *rng
	// procedures lists, for a primary diagnosis, the procedure lists an
	// episode with it may have; one is picked at random, a nil entry
	// meaning none. Diagnoses not listed have no procedures.
	procedures map[string][][]string
	weights    []float64 // scratch
	opts       []option  // scratch
}

func newHospitals(t *topology) *hospitals {
	return &hospitals{t: t, r: newRNG(), procedures: map[string][][]string{
		ICD10Delivery:         {{OPCSNormalDelivery}},
		ICD10Caesarean:        {{OPCSElectiveCaesarean}, {OPCSOtherCaesarean}},
		ICD10Cataract:         {{OPCSPhacoemulsify, OPCSLensProsthesis}},
		ICD10KneeArthrosis:    {{OPCSKneeReplacement}},
		ICD10HipArthrosis:     {{OPCSHipReplacement}},
		ICD10Gallstones:       {{OPCSCholecystectomy, OPCSLaparoscopic}},
		ICD10Diverticular:     {{OPCSColonoscopy}},
		ICD10Prostate:         {{OPCSProstateResection}},
		ICD10BreastCancer:     {{OPCSMastectomy}},
		ICD10Atherosclerotic:  {{OPCSCoronaryStent}, {OPCSCoronaryBypass}},
		ICD10COPDExacerbation: {nil, nil, nil, nil, nil, {OPCSNonInvasiveVent}},
		ICD10NSTEMI:           {{OPCSCoronaryStent}, {OPCSCoronaryStent}, nil},
		ICD10AcuteMI:          {{OPCSCoronaryStent}, nil},
		ICD10Appendicitis:     {{OPCSAppendicectomy, OPCSLaparoscopic}, {OPCSAppendicectomy, OPCSLaparoscopic}, {OPCSAppendicectomy}},
		ICD10HipFracture:      {{OPCSHemiarthroplasty}, {OPCSFemurFixation}},
	}}
}

// record fills rec with p's hospital activity from the start of the history
// to the last day p can have any.
func (g *hospitals) record(p *person, rec *hospitalRecord) {
	r := g.r
	r.seed(g.t.seed, streamHospital, uint64(p.practice), uint64(p.index))
	rec.episodes, rec.visits, rec.pending = rec.episodes[:0], rec.visits[:0], rec.pending[:0]
	from, to := max(historyStart, p.birth), p.lastDay()
	if to < from {
		return
	}

	pr := &g.t.practices[p.practice]
	main, other := pr.trusts[0], -1
	if len(pr.trusts) == 2 {
		other = pr.trusts[1]
		if !r.chance(pr.trustShare) {
			main, other = other, main
		}
	}
	pickTrust := func() int {
		if other >= 0 && !r.chance(probMainTrust) {
			return other
		}
		return main
	}

	for start := from; start <= to; start += 365 {
		end := min(start+364, to)
		frac := float64(end-start+1) / 365
		mid := start + (end-start)/2
		age := p.ageAt(mid)
		conds := 0.0
		for c := range numConditions {
			if p.has(c, mid) {
				conds++
			}
		}
		comorbid := 1.0
		if p.has(condT2DM, mid) {
			comorbid += 1.0
		}
		if p.has(condCOPD, mid) {
			comorbid += 2.0
		}
		if p.has(condCHD, mid) {
			comorbid += 0.8
		}
		if p.has(condHypertension, mid) {
			comorbid += 0.2
		}
		if p.has(condAsthma, mid) {
			comorbid += 0.4
		}
		add := func(rate float64, method string) {
			for range r.poisson(rate * frac) {
				rec.pending = append(rec.pending, admission{date: r.dayBetween(start, end), method: method})
			}
		}
		add(emergencyRate(age)*comorbid*p.propensity, cdm.AdmissionEmergency)
		add(electiveRate(age)*math.Sqrt(p.propensity)*(1+0.3*conds), cdm.AdmissionElective)
		if p.sex == cdm.SexFemale {
			add(maternityRate(age), cdm.AdmissionMaternity)
		}
		add(0.004, cdm.AdmissionOther)

		for range r.poisson(aeRate(age) * p.propensity * (1 + 0.3*conds) * frac) {
			d := r.dayBetween(start, end)
			rec.visits = append(rec.visits, aeVisit{trust: pickTrust(), arrival: d, diagnosis: g.aeDiagnosis(p, d)})
		}
	}
	if p.status == statusDied && r.chance(probTerminalAdmit) {
		d := max(from, p.death-day(r.between(0, 14)))
		rec.pending = append(rec.pending, admission{date: d, method: cdm.AdmissionEmergency, terminal: true})
	}

	// Lay stays end to end: an admission during an earlier stay is dropped.
	slices.SortStableFunc(rec.pending, func(a, b admission) int { return int(a.date - b.date) })
	busyUntil := noDay
	for _, a := range rec.pending {
		if a.date <= busyUntil {
			continue
		}
		ep := g.episode(p, a, pickTrust())
		rec.episodes = append(rec.episodes, ep)
		busyUntil = ep.lastDay()
		if ep.method == cdm.AdmissionEmergency {
			g.visitFor(rec, p, ep)
		}
		// Readmissions within 30 days, most at the same trust.
		for prev := ep; prev.discharge != noDay && r.chance(readmissionRate(p, prev)); {
			d := prev.discharge + day(r.between(1, 30))
			if d > to {
				break
			}
			t := prev.trust
			if other >= 0 && !r.chance(probReadmitSame) {
				t = main + other - prev.trust
			}
			next := g.episode(p, admission{date: d, method: cdm.AdmissionEmergency}, t)
			if r.chance(0.5) && prev.method == cdm.AdmissionEmergency {
				next.diagnosis, next.procedures = prev.diagnosis, nil
			}
			rec.episodes = append(rec.episodes, next)
			g.visitFor(rec, p, next)
			busyUntil = next.lastDay()
			prev = next
		}
	}
}

// lastDay is the last day of the stay, or the reference date if the
// patient is still in.
func (ep hospitalEpisode) lastDay() day {
	if ep.discharge == noDay {
		return referenceDay
	}
	return ep.discharge
}

// episode builds the stay for admission a at trust t.
func (g *hospitals) episode(p *person, a admission, t int) hospitalEpisode {
	r := g.r
	age := p.ageAt(a.date)
	ep := hospitalEpisode{trust: t, admission: a.date, method: a.method}
	var stay int
	switch a.method {
	case cdm.AdmissionEmergency:
		if !r.chance(0.25) {
			stay = min(60, int(math.Ceil(math.Exp(r.normal(math.Log(2+age/25), 0.8)))))
		}
	case cdm.AdmissionElective:
		if !r.chance(0.6) {
			stay = r.between(1, 5)
		}
	case cdm.AdmissionMaternity:
		stay = r.between(0, 3)
	default:
		stay = r.between(0, 10)
	}
	ep.discharge = a.date + day(stay)
	if a.terminal || (p.death != noDay && ep.discharge > p.death) {
		ep.discharge = p.death
	}
	if ep.discharge > referenceDay {
		ep.discharge = noDay
	}

	opts := g.diagnoses(p, a.method, age, a.date)
	ep.diagnosis = opts[g.pickOption(opts)].code
	if procs := g.procedures[ep.diagnosis]; len(procs) > 0 {
		ep.procedures = procs[r.IntN(len(procs))]
	}
	return ep
}

func (g *hospitals) pickOption(opts []option) int {
	g.weights = g.weights[:0]
	for _, o := range opts {
		g.weights = append(g.weights, o.weight)
	}
	return g.r.pick(g.weights)
}

// diagnoses offers the primary diagnoses an admission of this method might
// have for p, weighted by p's conditions and age. The returned slice is
// scratch space, valid until the next call.
func (g *hospitals) diagnoses(p *person, method string, age float64, d day) []option {
	opts := g.opts[:0]
	add := func(code string, w float64) {
		if w > 0 {
			opts = append(opts, option{code: code, weight: w})
		}
	}
	old := func(a float64, w, otherwise float64) float64 {
		if age >= a {
			return w
		}
		return otherwise
	}
	female, male := p.sex == cdm.SexFemale, p.sex == cdm.SexMale
	switch method {
	case cdm.AdmissionMaternity:
		add(ICD10Delivery, 0.72)
		add(ICD10Caesarean, 0.28)
	case cdm.AdmissionElective:
		add(ICD10Cataract, old(55, 1, 0))
		add(ICD10KneeArthrosis, old(50, 0.5, 0))
		add(ICD10HipArthrosis, old(50, 0.4, 0))
		add(ICD10Gallstones, old(18, 0.3, 0))
		add(ICD10Diverticular, old(40, 0.5, 0.05))
		if male {
			add(ICD10Prostate, old(55, 0.4, 0))
		}
		if female {
			add(ICD10BreastCancer, old(40, 0.25, 0))
		}
		if p.has(condCHD, d) {
			add(ICD10Atherosclerotic, 1)
		}
		if p.has(condT2DM, d) {
			add(ICD10T2DMOther, 0.2)
		}
		add(ICD10AbdominalPain, 0.15)
	default:
		if p.has(condCOPD, d) {
			add(ICD10COPDExacerbation, 1.2)
			add(ICD10COPDInfection, 0.6)
		}
		if p.has(condT2DM, d) {
			add(ICD10T2DMNoComplication, 0.2)
			add(ICD10T2DMOther, 0.15)
			add(ICD10T2DMPeripheral, 0.1)
			add(ICD10T2DMMultiple, 0.08)
		}
		if p.has(condCHD, d) {
			add(ICD10NSTEMI, 0.25)
			add(ICD10AcuteMI, 0.15)
			add(ICD10UnstableAngina, 0.25)
		}
		if p.has(condHypertension, d) {
			add(ICD10Hypertension, 0.05)
		}
		if p.has(condAsthma, d) {
			add(ICD10Asthma, old(16, 0.3, 0.6))
		}
		add(ICD10ChestPain, old(30, 0.5, 0.1))
		add(ICD10AbdominalPain, 0.5)
		add(ICD10Pneumonia, old(70, 0.8, 0.2))
		uti := old(70, 0.4, 0.15)
		if female {
			uti *= 1.5
		}
		add(ICD10UTI, uti)
		add(ICD10Appendicitis, old(40, 0.1, 0.4))
		add(ICD10HipFracture, old(75, 0.6, 0.02))
		add(ICD10Concussion, 0.2)
		add(ICD10Syncope, 0.25)
		add(ICD10AtrialFibrillation, old(60, 0.3, 0.02))
		add(ICD10HeartFailure, old(70, 0.4, 0.01))
		add(ICD10Cellulitis, 0.2)
	}
	g.opts = opts
	return opts
}

// aeDiagnosis draws the SNOMED CT diagnosis of a standalone A&E visit.
func (g *hospitals) aeDiagnosis(p *person, d day) string {
	r := g.r
	if r.chance(probNoAEDiagnosis) {
		return ""
	}
	switch {
	case p.has(condAsthma, d) && r.chance(0.15):
		return SNOMEDAsthmaAttack
	case p.has(condCOPD, d) && r.chance(0.2):
		return SNOMEDCOPDExacerbate
	case p.has(condT2DM, d) && r.chance(0.05):
		if r.chance(0.6) {
			return SNOMEDHypoglycaemia
		}
		return SNOMEDHyperglycaemia
	}
	age := p.ageAt(d)
	child, elderly := 0.0, 0.0
	if age < 16 {
		child = 1
	}
	if age >= 75 {
		elderly = 1
	}
	codes := [...]string{SNOMEDAnkleSprain, SNOMEDHeadInjury, SNOMEDLaceration, SNOMEDFracture, SNOMEDChestPain,
		SNOMEDAbdominalPain, SNOMEDHeadache, SNOMEDFever, SNOMEDDizziness, SNOMEDSyncope, SNOMEDFall,
		SNOMEDCellulitis, SNOMEDUTI, SNOMEDDyspnoea}
	weights := [...]float64{0.12, 0.1 + 0.1*child, 0.12, 0.08, 0.1 * (1 - child), 0.12, 0.05, 0.06 + 0.12*child,
		0.04, 0.03, 0.15 * elderly, 0.03, 0.03, 0.05 + 0.05*elderly}
	return codes[r.pick(weights[:])]
}

// visitFor records the A&E attendance an emergency admission usually
// comes through, with a diagnosis that matches the admission.
func (g *hospitals) visitFor(rec *hospitalRecord, p *person, ep hospitalEpisode) {
	r := g.r
	if !r.chance(probViaAE) {
		return
	}
	dx := ""
	switch ep.diagnosis {
	case ICD10COPDExacerbation, ICD10COPDInfection:
		dx = SNOMEDCOPDExacerbate
	case ICD10T2DMNoComplication, ICD10T2DMOther, ICD10T2DMPeripheral, ICD10T2DMMultiple:
		dx = SNOMEDHyperglycaemia
		if r.chance(0.5) {
			dx = SNOMEDHypoglycaemia
		}
	case ICD10NSTEMI, ICD10AcuteMI:
		dx = SNOMEDMyocardialInf
	case ICD10UnstableAngina, ICD10ChestPain:
		dx = SNOMEDChestPain
	case ICD10Asthma:
		dx = SNOMEDAsthmaAttack
	case ICD10AbdominalPain, ICD10Appendicitis:
		dx = SNOMEDAbdominalPain
	case ICD10Pneumonia:
		dx = SNOMEDPneumonia
	case ICD10UTI:
		dx = SNOMEDUTI
	case ICD10HipFracture:
		dx = SNOMEDHipFracture
	case ICD10Concussion:
		dx = SNOMEDHeadInjury
	case ICD10Syncope:
		dx = SNOMEDSyncope
	case ICD10Cellulitis:
		dx = SNOMEDCellulitis
	case ICD10HeartFailure:
		dx = SNOMEDDyspnoea
	case ICD10AtrialFibrillation, ICD10Hypertension:
		dx = SNOMEDDizziness
	}
	rec.visits = append(rec.visits, aeVisit{trust: ep.trust, arrival: ep.admission, diagnosis: dx})
}

// readmissionRate is the chance of an emergency readmission within 30 days
// of the discharge of ep.
func readmissionRate(p *person, ep hospitalEpisode) float64 {
	rate := 0.04
	if ep.method == cdm.AdmissionEmergency {
		rate = 0.08
	}
	if p.has(condCOPD, ep.admission) {
		rate += 0.05
	}
	if p.has(condT2DM, ep.admission) {
		rate += 0.03
	}
	if p.ageAt(ep.admission) >= 75 {
		rate += 0.02
	}
	return rate
}

func emergencyRate(age float64) float64 {
	return byAge(age, []float64{1, 5, 16, 45, 65, 75, 85}, []float64{0.25, 0.1, 0.04, 0.05, 0.08, 0.15, 0.28, 0.45})
}

func electiveRate(age float64) float64 {
	return byAge(age, []float64{16, 45, 65, 75, 85}, []float64{0.02, 0.05, 0.1, 0.18, 0.2, 0.12})
}

func maternityRate(age float64) float64 {
	return byAge(age, []float64{16, 20, 25, 30, 35, 40, 46}, []float64{0, 0.015, 0.05, 0.09, 0.11, 0.06, 0.012, 0})
}

func aeRate(age float64) float64 {
	return byAge(age, []float64{5, 16, 25, 65, 80}, []float64{0.35, 0.22, 0.3, 0.2, 0.28, 0.5})
}
