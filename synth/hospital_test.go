package synth

import (
	"slices"
	"strings"
	"testing"

	"github.com/havenhealth/haven/cdm"
)

func TestHospitalRecords(t *testing.T) {
	top, people := sample(t, ScaleSmall, 0)
	hosp := newHospitals(top)
	var rec hospitalRecord
	// Emergency admissions per person-year among the over-65s, by COPD.
	var withCOPD, without struct{ admissions, years float64 }
	trustsSeen := map[int]bool{}
	codes := map[string]bool{}
	for _, c := range Codes() {
		codes[c.System+":"+c.Code] = true
	}
	for i := range people {
		p := &people[i]
		hosp.record(p, &rec)
		pr := &top.practices[p.practice]
		busy := noDay
		for _, ep := range rec.episodes {
			if !slices.Contains(pr.trusts, ep.trust) {
				t.Fatalf("%s admitted to trust %d; practice uses %v", p.nhs, ep.trust, pr.trusts)
			}
			trustsSeen[ep.trust] = true
			if ep.admission < historyStart || ep.admission > p.lastDay() {
				t.Errorf("%s admitted %s outside %s–%s", p.nhs, ep.admission, historyStart, p.lastDay())
			}
			if ep.admission <= busy {
				t.Errorf("%s admitted %s while still in hospital until %s", p.nhs, ep.admission, busy)
			}
			busy = ep.lastDay()
			if ep.discharge != noDay && (ep.discharge < ep.admission || (p.death != noDay && ep.discharge > p.death)) {
				t.Errorf("%s: stay %s–%s, died %s", p.nhs, ep.admission, ep.discharge, p.death)
			}
			if !cdm.ValidAdmissionMethod(ep.method) {
				t.Errorf("admission method %q", ep.method)
			}
			if ep.method == cdm.AdmissionMaternity && (p.sex != cdm.SexFemale || !strings.HasPrefix(ep.diagnosis, "O")) {
				t.Errorf("maternity admission of %s patient with %s", p.sex, ep.diagnosis)
			}
			if !codes[SystemICD10+":"+ep.diagnosis] {
				t.Errorf("diagnosis %s not in the code list", ep.diagnosis)
			}
			for _, pc := range ep.procedures {
				if !codes[SystemOPCS4+":"+pc] {
					t.Errorf("procedure %s not in the code list", pc)
				}
			}
		}
		for _, v := range rec.visits {
			if v.arrival < historyStart || v.arrival > p.lastDay() {
				t.Errorf("%s at A&E %s outside %s–%s", p.nhs, v.arrival, historyStart, p.lastDay())
			}
			if v.diagnosis != "" && !codes[SystemSNOMED+":"+v.diagnosis] {
				t.Errorf("A&E diagnosis %s not in the code list", v.diagnosis)
			}
		}
		if p.ageAt(referenceDay) < 65 || p.status != statusRegistered {
			continue
		}
		from := max(historyStart, p.birth)
		years := yearsBetween(from, referenceDay)
		n := 0.0
		for _, ep := range rec.episodes {
			if ep.method == cdm.AdmissionEmergency {
				n++
			}
		}
		if p.has(condCOPD, historyStart) {
			withCOPD.admissions += n
			withCOPD.years += years
		} else if p.onset[condCOPD] == noDay {
			without.admissions += n
			without.years += years
		}
	}
	rc, rn := withCOPD.admissions/withCOPD.years, without.admissions/without.years
	t.Logf("emergency admissions a year, over-65s: with COPD %.3f, without %.3f", rc, rn)
	if rc < 2*rn {
		t.Errorf("emergency admissions with COPD %.3f a year, without %.3f; want markedly higher", rc, rn)
	}
	if len(trustsSeen) < 2 {
		t.Errorf("admissions at %d trusts", len(trustsSeen))
	}
}

func TestEveryCodeHasATerm(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range Codes() {
		key := c.System + ":" + c.Code
		if seen[key] {
			t.Errorf("%s listed twice", key)
		}
		seen[key] = true
		if c.Code == "" || c.Term == "" {
			t.Errorf("%+v: empty code or term", c)
		}
		switch c.System {
		case SystemSNOMED, SystemDMD:
			if strings.Trim(c.Code, "0123456789") != "" {
				t.Errorf("%s code %q is not numeric", c.System, c.Code)
			}
		case SystemICD10, SystemOPCS4:
			if len(c.Code) < 3 || c.Code[0] < 'A' || c.Code[0] > 'Z' {
				t.Errorf("%s code %q", c.System, c.Code)
			}
		default:
			t.Errorf("%+v: unknown system", c)
		}
	}
}
