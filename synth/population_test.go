package synth

import (
	"testing"

	"github.com/havenhealth/haven/cdm"
)

func TestNHSNumbersAreValidAndDisjoint(t *testing.T) {
	seen := map[string]bool{}
	for _, p := range []int{0, 1, maxPractices - 1} {
		for i := range maxCohort {
			nhs, err := nhsNumber(p, i)
			if err != nil {
				t.Fatal(err)
			}
			if !cdm.ValidNHSNumber(nhs) {
				t.Fatalf("practice %d patient %d: invalid %s", p, i, nhs)
			}
			if seen[nhs] {
				t.Fatalf("practice %d patient %d: %s minted twice", p, i, nhs)
			}
			seen[nhs] = true
		}
	}
}

// sample draws every home patient of the first practices of a scale.
func sample(t *testing.T, scale Scale, practices int) (*topology, []person) {
	t.Helper()
	top, err := newTopology(11, scale, practices)
	if err != nil {
		t.Fatal(err)
	}
	pop := newPopulation(top)
	var out []person
	for p := range top.practices {
		for i := range top.practices[p].cohort {
			var per person
			if err := pop.person(p, i, &per); err != nil {
				t.Fatal(err)
			}
			out = append(out, per)
		}
	}
	return top, out
}

func TestPersonIsAFunctionOfItsKey(t *testing.T) {
	top, err := newTopology(3, ScaleSmall, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := newPopulation(top), newPopulation(top)
	var x, y, z person
	if err := a.person(2, 17, &x); err != nil {
		t.Fatal(err)
	}
	// Drawing others in between must not change patient 17.
	for i := range 50 {
		if err := b.person(5, i, &z); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.person(2, 17, &y); err != nil {
		t.Fatal(err)
	}
	if x != y {
		t.Errorf("patient drawn twice differs:\n%+v\n%+v", x, y)
	}
}

func TestPopulationLooksLikeEngland(t *testing.T) {
	top, people := sample(t, ScaleICB, 12)
	var registered, children, over65, over85, women85 int
	var adults, t2dm, htnAll, asthma, copd, chd int
	var deaths int
	var deathAge float64
	for i := range people {
		p := &people[i]
		if p.birth > p.lastDay() || (p.death != noDay && p.death < p.birth) {
			t.Fatalf("patient %s born %s, last day %s", p.nhs, p.birth, p.lastDay())
		}
		if p.regStart < p.birth || (p.regEnd != noDay && p.regEnd < p.regStart) {
			t.Fatalf("patient %s registered %s–%s, born %s", p.nhs, p.regStart, p.regEnd, p.birth)
		}
		switch p.status {
		case statusDied:
			deaths++
			deathAge += p.ageAt(p.death)
			if p.regEnd != p.death {
				t.Errorf("patient %s died %s but registration ends %s", p.nhs, p.death, p.regEnd)
			}
			continue
		case statusMoved:
			if p.moveTo != top.practices[p.practice].moveTo || p.newStart <= p.regEnd || p.regEnd == noDay {
				t.Errorf("mover %s: left %s for practice %d from %s", p.nhs, p.regEnd, p.moveTo, p.newStart)
			}
		case statusLeft:
			continue
		}
		registered++
		age := p.ageAt(referenceDay)
		switch {
		case age < 16:
			children++
		case age >= 85:
			over85++
			if p.sex == cdm.SexFemale {
				women85++
			}
		}
		if age >= 65 {
			over65++
		}
		if p.has(condHypertension, referenceDay) {
			htnAll++
		}
		if p.has(condAsthma, referenceDay) {
			asthma++
		}
		if p.has(condCOPD, referenceDay) {
			copd++
		}
		if p.has(condCHD, referenceDay) {
			chd++
		}
		if age >= 18 {
			adults++
			if p.has(condT2DM, referenceDay) {
				t2dm++
			}
		}
	}
	share := func(k, n int) float64 { return float64(k) / float64(n) }
	checks := []struct {
		name   string
		got    float64
		lo, hi float64
	}{
		{"children under 16", share(children, registered), 0.16, 0.21},
		{"aged 65 and over", share(over65, registered), 0.16, 0.22},
		{"women among the 85+", share(women85, over85), 0.57, 0.70},
		{"type 2 diabetes among adults", share(t2dm, adults), 0.06, 0.08},
		{"hypertension", share(htnAll, registered), 0.12, 0.16},
		{"asthma", share(asthma, registered), 0.055, 0.075},
		{"COPD", share(copd, registered), 0.012, 0.028},
		{"CHD", share(chd, registered), 0.022, 0.038},
		{"deaths a year per registered patient", share(deaths, registered) / yearsBetween(historyStart, referenceDay), 0.007, 0.011},
	}
	for _, c := range checks {
		t.Logf("%s: %.2f%%", c.name, 100*c.got)
		if c.got < c.lo || c.got > c.hi {
			t.Errorf("%s %.2f%%, want %.1f%%–%.1f%%", c.name, 100*c.got, 100*c.lo, 100*c.hi)
		}
	}
	if mean := deathAge / float64(deaths); mean < 72 || mean > 85 {
		t.Errorf("mean age at death %.1f, want 72–85", mean)
	}
}

func TestConditionRatesRiseWithAge(t *testing.T) {
	for _, tc := range []struct {
		name string
		rate func(float64) float64
	}{
		{"t2dm", t2dmRate}, {"hypertension", htnRate}, {"copd", copdRate}, {"chd", chdRate},
	} {
		if !(tc.rate(30) < tc.rate(50) && tc.rate(50) < tc.rate(70)) {
			t.Errorf("%s: rates at 30, 50, 70 are %v, %v, %v; want rising", tc.name, tc.rate(30), tc.rate(50), tc.rate(70))
		}
	}
}
