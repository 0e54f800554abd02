package catalog

import (
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/havenhealth/haven/cdm"
)

// The population: who is counted, and where it is evaluated.

var criterionFields = []string{"age_on", "alive_on", "has_event", "has_medication", "all_of", "any_of", "none_of"}

func (p *parser) population(n *yaml.Node, path string) *Population {
	pop := &Population{}
	reg, crit, ok := p.criteria(n, path, true)
	pop.RegisteredOn, pop.Criteria = reg, crit
	if !ok {
		return pop
	}
	var gpUse, trustUse *tableUse
	for i := range p.popTables {
		switch tableSite(p.popTables[i].table) {
		case cdm.KindGP:
			gpUse = firstUse(gpUse, &p.popTables[i])
		case cdm.KindTrust:
			trustUse = firstUse(trustUse, &p.popTables[i])
		}
	}
	switch {
	case reg != nil:
		pop.Site = cdm.KindGP
		if trustUse != nil {
			p.errorf(trustUse.node, trustUse.path, "a population registered with a practice (registered_on) is evaluated at GP practices, which do not hold %s; count hospital activity in a variable and select it in a measure's where", trustUse.table)
		}
	case trustUse != nil:
		pop.Site = cdm.KindTrust
		if gpUse != nil {
			p.errorf(gpUse.node, gpUse.path, "a population defined by hospital activity is evaluated at trusts, which do not hold %s; add registered_on for a GP population instead", gpUse.table)
		}
		if !slices.ContainsFunc(crit, positiveActivity) {
			p.errorf(n, path, "a hospital population needs hospital activity that patients have (has_event on %s or %s), not only activity they lack", cdm.TableAPCEpisode, cdm.TableAEAttendance)
		}
	case gpUse != nil:
		p.errorf(gpUse.node, gpUse.path, "a population selected on %s needs registered_on: GP records are counted where the patient is registered", gpUse.table)
	default:
		p.errorf(n, path, "say who is counted: registered_on for patients registered with a practice, or has_event on %s or %s for patients with hospital activity", cdm.TableAPCEpisode, cdm.TableAEAttendance)
	}
	return pop
}

func firstUse(a, b *tableUse) *tableUse {
	if a != nil {
		return a
	}
	return b
}

// positiveActivity reports whether c can only hold for a patient who has
// at least one event row: such a criterion, evaluated at a trust, says the
// patient is in that trust's part of the population.
func positiveActivity(c Criterion) bool {
	switch c := c.(type) {
	case *EventCriterion:
		return true
	case *AllOf:
		return slices.ContainsFunc(c.Criteria, positiveActivity)
	case *AnyOf:
		for _, x := range c.Criteria {
			if !positiveActivity(x) {
				return false
			}
		}
		return len(c.Criteria) > 0
	}
	return false
}

// criteria reads a mapping of criteria, all of which must hold. At the top
// of the population it also reads registered_on.
func (p *parser) criteria(n *yaml.Node, path string, top bool) (*DateExpr, []Criterion, bool) {
	allowed := criterionFields
	if top {
		allowed = append([]string{"registered_on"}, criterionFields...)
	}
	fs, ok := p.fields(n, path, allowed...)
	if !ok {
		return nil, nil, false
	}
	if len(fs.order) == 0 {
		if len(n.Content) == 0 { // otherwise every key was unknown, and reported
			p.errorf(n, path, "no criteria: give at least one of %s", strings.Join(allowed, ", "))
		}
		return nil, nil, false
	}
	good := true
	var reg *DateExpr
	if r := fs.get("registered_on"); r != nil {
		e, ok := p.dateExpr(r, fs.at("registered_on"))
		if ok {
			reg = &e
		}
		good = good && ok
	}
	var out []Criterion
	add := func(c Criterion, ok bool) {
		if ok {
			out = append(out, c)
		}
		good = good && ok
	}
	// A fixed order, not the file's, so that reordering keys changes nothing.
	for _, k := range criterionFields {
		v := fs.get(k)
		if v == nil {
			continue
		}
		kpath := fs.at(k)
		switch k {
		case "age_on":
			add(p.ageCriterion(v, kpath))
		case "alive_on":
			e, ok := p.dateExpr(v, kpath)
			add(&AliveCriterion{On: e}, ok)
		case "has_event", "has_medication":
			implied := ""
			if k == "has_medication" {
				implied = cdm.TableMedication
			}
			ev, _, ok := p.events(v, kpath, implied)
			if ok {
				p.popTables = append(p.popTables, tableUse{table: ev.Table, node: v, path: kpath})
			}
			add(&EventCriterion{Events: ev}, ok)
		case "all_of", "any_of", "none_of":
			items, ok := p.seq(v, kpath)
			if !ok {
				good = false
				continue
			}
			if len(items) == 0 {
				p.errorf(v, kpath, "%s needs at least one group of criteria", k)
				good = false
				continue
			}
			var group []Criterion
			for i, it := range items {
				_, cs, ok := p.criteria(it, index(kpath, i), false)
				if !ok {
					good = false
					continue
				}
				if len(cs) == 1 {
					group = append(group, cs[0])
				} else {
					group = append(group, &AllOf{Criteria: cs})
				}
			}
			switch k {
			case "all_of":
				add(&AllOf{Criteria: group}, true)
			case "any_of":
				add(&AnyOf{Criteria: group}, true)
			case "none_of":
				add(&NoneOf{Criteria: group}, true)
			}
		}
	}
	return reg, out, good
}

// maxAge bounds ages in criteria and bands; no one has lived longer.
const maxAge = 130

func (p *parser) ageCriterion(n *yaml.Node, path string) (*AgeCriterion, bool) {
	fs, ok := p.fields(n, path, "date", "min", "max")
	if !ok || !p.require(fs, "date") {
		return nil, false
	}
	c := &AgeCriterion{}
	on, good := p.dateExpr(fs.get("date"), fs.at("date"))
	c.On = on
	if !fs.has("min") && !fs.has("max") {
		p.errorf(n, path, "age_on needs min, max or both")
		good = false
	}
	for _, k := range []string{"min", "max"} {
		v := fs.get(k)
		if v == nil {
			continue
		}
		e, ok := p.intExpr(v, fs.at(k))
		if ok {
			ok = p.intInRange(e, v, fs.at(k), 0, maxAge)
		}
		if !ok {
			good = false
			continue
		}
		if k == "min" {
			c.Min = &e
		} else {
			c.Max = &e
		}
	}
	if good && c.Min != nil && c.Max != nil && c.Min.Param == "" && c.Max.Param == "" && c.Min.Value > c.Max.Value {
		p.errorf(fs.get("max"), fs.at("max"), "impossible range: min %d is above max %d", c.Min.Value, c.Max.Value)
		good = false
	}
	return c, good
}
