package synth

import (
	"math"
)

// A person's primary care record — diagnoses, measurements, prescriptions —
// is drawn from its own stream, keyed like the person, so that the practice
// a patient left and the practice they joined write the same events.

const (
	probLateEvent      = 0.004 // a died patient has an event recorded after death
	probLateMedication = 0.003 // … or a repeat issued after death
)

// gpEvent is one clinical_event row before it is attached to an NHS number.
type gpEvent struct {
	date  day
	code  string
	value float64 // NaN when the event carries no value
	late  bool    // deliberately dated after death
}

// gpIssue is one medication row before it is attached to an NHS number.
type gpIssue struct {
	date day
	code string
	late bool
}

// gpRecord is a person's whole primary care record. Its slices are reused
// from person to person.
type gpRecord struct {
	events []gpEvent
	issues []gpIssue
}

// primaryCare draws primary care records. Not safe for concurrent use.
type primaryCare struct {
	t *topology
	r *rng
}

func newPrimaryCare(t *topology) *primaryCare { return &primaryCare{t: t, r: newRNG()} }

// diagnosisCodes maps each condition to the SNOMED CT code that records it.
func diagnosisCode(c condition) string {
	switch c {
	case condT2DM:
		return SNOMEDType2Diabetes
	case condHypertension:
		return SNOMEDHypertension
	case condAsthma:
		return SNOMEDAsthma
	case condCOPD:
		return SNOMEDCOPD
	case condCHD:
		return SNOMEDCHD
	}
	return ""
}

// record fills rec with p's primary care record: every event from the
// start of the history (or birth) to the last day p can have activity,
// plus diagnoses at their onset, which may predate the history.
func (g *primaryCare) record(p *person, rec *gpRecord) {
	r := g.r
	r.seed(g.t.seed, streamGP, uint64(p.practice), uint64(p.index))
	rec.events, rec.issues = rec.events[:0], rec.issues[:0]
	from, to := max(historyStart, p.birth), p.lastDay()
	if to < from {
		return
	}
	event := func(d day, code string, v float64) {
		rec.events = append(rec.events, gpEvent{date: d, code: code, value: v})
	}

	for c := range numConditions {
		if p.onset[c] != noDay && p.onset[c] <= to {
			event(p.onset[c], diagnosisCode(c), math.NaN())
		}
	}

	if adult := addYears(p.birth, 16); adult <= to && p.smoking != smokingUnknown && r.chance(0.85) {
		code := [...]string{smokingNever: SNOMEDNeverSmoked, smokingEx: SNOMEDExSmoker, smokingCurrent: SNOMEDSmoker}[p.smoking]
		event(r.dayBetween(max(from, adult), to), code, math.NaN())
	}

	// Measurements, a year at a time so that rates follow age and onset.
	for start := from; start <= to; start += 365 {
		end := min(start+364, to)
		frac := float64(end-start+1) / 365
		mid := start + (end-start)/2
		age := p.ageAt(mid)
		htn, dm := p.has(condHypertension, mid), p.has(condT2DM, mid)

		bpRate := 0.0
		switch {
		case htn:
			bpRate = float64(p.bpPerYear)
		case age >= 40:
			bpRate = 0.3
		case age >= 18:
			bpRate = 0.12
		}
		for range r.poisson(bpRate * frac) {
			d := r.dayBetween(start, end)
			event(d, SNOMEDSystolicBP, g.systolic(p, d))
		}

		hbRate := 0.0
		switch {
		case dm:
			hbRate = 2
		case age >= 40:
			hbRate = 0.08
		}
		for range r.poisson(hbRate * frac) {
			d := r.dayBetween(start, end)
			event(d, SNOMEDHbA1c, g.hba1c(p, d))
		}

		bmiRate := 0.0
		switch {
		case dm || htn:
			bmiRate = 0.8
		case age >= 18:
			bmiRate = 0.25
		}
		for range r.poisson(bmiRate * frac) {
			mean := 27.5
			if dm {
				mean = 31
			}
			bmi := min(max(r.normal(mean, 5), 15), 60)
			event(r.dayBetween(start, end), SNOMEDBMI, math.Round(bmi*10)/10)
		}
	}

	g.prescriptions(p, rec, from, to)

	// Deliberate defects: a reading or a repeat recorded after death.
	if p.status == statusDied && p.death < referenceDay {
		if r.chance(probLateEvent) {
			d := p.death + day(r.between(1, min(120, int(referenceDay-p.death))))
			rec.events = append(rec.events, gpEvent{date: d, code: SNOMEDSystolicBP, value: g.systolic(p, p.death), late: true})
		}
		if len(rec.issues) > 0 && r.chance(probLateMedication) {
			d := p.death + day(r.between(1, min(60, int(referenceDay-p.death))))
			last := rec.issues[len(rec.issues)-1]
			rec.issues = append(rec.issues, gpIssue{date: d, code: last.code, late: true})
		}
	}
}

// systolic draws a systolic blood pressure (mmHg) for p on day d: higher
// for hypertensives, and higher still where it is not controlled.
func (g *primaryCare) systolic(p *person, d day) float64 {
	r := g.r
	var v float64
	switch onset := p.onset[condHypertension]; {
	case onset != noDay && onset <= d && p.bpControlled:
		v = r.normal(133, 9)
	case onset != noDay && onset <= d:
		v = r.normal(152, 11)
	case onset != noDay && d > onset-5*365:
		v = r.normal(146, 10)
	default:
		v = r.normal(116+0.5*max(0, p.ageAt(d)-30), 11)
	}
	return math.Round(min(max(v, 85), 230))
}

// hba1c draws an HbA1c (mmol/mol) for p on day d.
func (g *primaryCare) hba1c(p *person, d day) float64 {
	r := g.r
	var v float64
	switch onset := p.onset[condT2DM]; {
	case onset != noDay && onset <= d:
		v = r.normal(p.hba1cMean, 6)
	case onset != noDay && d > onset-2*365:
		v = r.normal(45, 3)
	default:
		v = r.normal(38, 3.5)
	}
	return math.Round(min(max(v, 25), 150))
}

// regimen is one drug issued on repeat from start until stop.
type regimen struct {
	code        string
	start, stop day
	interval    int // days between issues
}

// prescriptions adds repeat prescriptions that follow p's diagnoses.
func (g *primaryCare) prescriptions(p *person, rec *gpRecord, from, to day) {
	r := g.r
	var regs [8]regimen
	n := 0
	interval := 28
	if r.chance(0.55) {
		interval = 56
	}
	add := func(code string, c condition, delay, every int) {
		start := p.onset[c] + day(r.between(0, delay))
		stop := to
		if r.chance(0.12) {
			stop = r.dayBetween(start, to)
		}
		regs[n] = regimen{code: code, start: start, stop: stop, interval: every}
		n++
	}
	on := func(c condition) bool { return p.onset[c] != noDay && p.onset[c] <= to }

	statin, ace := false, false
	if on(condT2DM) {
		if r.chance(0.85) {
			add(DMDMetformin500, condT2DM, 120, interval)
		}
		if r.chance(0.6) {
			add(DMDAtorvastatin20, condT2DM, 365, interval)
			statin = true
		}
	}
	if on(condHypertension) {
		switch r.pick([]float64{0.45, 0.2, 0.3, 0.05}) {
		case 0:
			add(DMDRamipril5, condHypertension, 90, interval)
			ace = true
		case 1:
			add(DMDLisinopril10, condHypertension, 90, interval)
			ace = true
		case 2:
			add(DMDAmlodipine5, condHypertension, 90, interval)
		}
	}
	if on(condCHD) {
		if !statin {
			if r.chance(0.7) {
				add(DMDAtorvastatin20, condCHD, 60, interval)
			} else {
				add(DMDSimvastatin40, condCHD, 60, interval)
			}
		}
		if !ace && r.chance(0.35) {
			add(DMDRamipril5, condCHD, 90, interval)
		}
	}
	reliever := false
	if on(condAsthma) {
		if r.chance(0.95) {
			add(DMDSalbutamol100, condAsthma, 30, 90)
			reliever = true
		}
		if r.chance(0.55) {
			add(DMDBeclometasone100, condAsthma, 60, 60)
		}
	}
	if on(condCOPD) {
		if r.chance(0.8) {
			add(DMDTiotropium, condCOPD, 60, interval)
		}
		if !reliever && r.chance(0.9) {
			add(DMDSalbutamol100, condCOPD, 30, 75)
		}
	}

	for _, reg := range regs[:n] {
		last := min(reg.stop, to)
		d := reg.start
		if d < from {
			d = from + day(r.IntN(reg.interval))
		}
		for d <= last {
			rec.issues = append(rec.issues, gpIssue{date: d, code: reg.code})
			d += day(reg.interval + r.between(-3, 7))
		}
	}
}
