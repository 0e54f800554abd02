package synth

import (
	"math"
	"testing"
)

func TestPrimaryCareRecords(t *testing.T) {
	top, people := sample(t, ScaleICB, 4)
	care := newPrimaryCare(top)
	var rec gpRecord
	type mean struct{ sum, n float64 }
	add := func(m *mean, v float64) { m.sum += v; m.n++ }
	var bpHTN, bpOther, hbDM, hbOther mean
	late, metforminWithoutDM := 0, 0
	for i := range people {
		p := &people[i]
		care.record(p, &rec)
		for _, e := range rec.events {
			if e.late {
				late++
				if p.status != statusDied || e.date <= p.death {
					t.Errorf("%s: late event on %s, died %s", p.nhs, e.date, p.death)
				}
				continue
			}
			if e.date > p.lastDay() || e.date < p.birth {
				t.Errorf("%s: event %s on %s outside life %s–%s", p.nhs, e.code, e.date, p.birth, p.lastDay())
			}
			if e.date < historyStart && e.code != diagnosisCode(condT2DM) && e.code != diagnosisCode(condHypertension) &&
				e.code != diagnosisCode(condAsthma) && e.code != diagnosisCode(condCOPD) && e.code != diagnosisCode(condCHD) {
				t.Errorf("%s: %s on %s, before the history starts", p.nhs, e.code, e.date)
			}
			switch e.code {
			case SNOMEDSystolicBP:
				if p.has(condHypertension, e.date) {
					add(&bpHTN, e.value)
				} else {
					add(&bpOther, e.value)
				}
			case SNOMEDHbA1c:
				if p.has(condT2DM, e.date) {
					add(&hbDM, e.value)
				} else {
					add(&hbOther, e.value)
				}
			case SNOMEDType2Diabetes, SNOMEDHypertension:
				if !math.IsNaN(e.value) {
					t.Errorf("%s: diagnosis %s carries value %v", p.nhs, e.code, e.value)
				}
			}
		}
		for _, m := range rec.issues {
			if m.late {
				late++
				continue
			}
			if m.date > p.lastDay() || m.date < historyStart {
				t.Errorf("%s: %s issued %s outside %s–%s", p.nhs, m.code, m.date, historyStart, p.lastDay())
			}
			if m.code == DMDMetformin500 && !p.has(condT2DM, m.date) {
				metforminWithoutDM++
			}
		}
	}
	avg := func(m mean) float64 { return m.sum / m.n }
	t.Logf("systolic: hypertensive %.1f (%v readings), others %.1f (%v); HbA1c: diabetic %.1f (%v), others %.1f (%v); %d late rows",
		avg(bpHTN), bpHTN.n, avg(bpOther), bpOther.n, avg(hbDM), hbDM.n, avg(hbOther), hbOther.n, late)
	if avg(bpHTN) < avg(bpOther)+8 {
		t.Errorf("hypertensives' systolic %.1f is not clearly above others' %.1f", avg(bpHTN), avg(bpOther))
	}
	if avg(hbDM) < 50 || avg(hbOther) > 42 {
		t.Errorf("HbA1c: diabetics %.1f, others %.1f", avg(hbDM), avg(hbOther))
	}
	if bpHTN.n < 3*float64(len(people))/100 {
		t.Errorf("only %v readings for hypertensives", bpHTN.n)
	}
	if metforminWithoutDM > 0 {
		t.Errorf("%d metformin issues before a diabetes diagnosis", metforminWithoutDM)
	}
	if late == 0 {
		t.Error("no deliberate rows after death")
	}
}
