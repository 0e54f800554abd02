package catalog

import (
	"maps"
	"slices"

	"gopkg.in/yaml.v3"
)

// Measures, conditions, grouping, and the check for unused declarations.

var measureAggs = []string{string(AggCount), string(AggSum), string(AggMean), string(AggMin), string(AggMax)}

func (p *parser) measures(n *yaml.Node, path string) []*Measure {
	items, ok := p.seq(n, path)
	if !ok {
		return nil
	}
	if len(items) == 0 {
		p.errorf(n, path, "at least one measure is needed")
		return nil
	}
	var out []*Measure
	seen := map[string]int{}
	for i, it := range items {
		mpath := index(path, i)
		m, ok := p.measure(it, mpath)
		if m != nil && m.Name != "" {
			if first, dup := seen[m.Name]; dup {
				p.errorf(it, mpath+".name", "duplicate measure name %q (first at line %d)", m.Name, first)
				continue
			}
			seen[m.Name] = it.Line
		}
		if ok {
			out = append(out, m)
		}
	}
	return out
}

func (p *parser) measure(n *yaml.Node, path string) (*Measure, bool) {
	fs, ok := p.fields(n, path, append([]string{"name", "where", "dominance"}, measureAggs...)...)
	if !ok || !p.require(fs, "name") {
		return nil, false
	}
	m := &Measure{Pos: p.pos(n)}
	good := true
	if name, ok := p.str(fs.get("name"), fs.at("name")); ok && p.checkName(fs.get("name"), fs.at("name"), "measure", name) {
		m.Name = name
	} else {
		good = false
	}
	var aggs []string
	for _, a := range measureAggs {
		if fs.has(a) {
			aggs = append(aggs, a)
		}
	}
	switch len(aggs) {
	case 0:
		p.errorf(n, path, "say what the measure computes: count: patients, or sum, mean, min or max of a variable")
		return m, false
	case 1:
	default:
		p.errorf(fs.keyNode(aggs[1]), fs.at(aggs[1]), "a measure computes one thing; it has both %s and %s", aggs[0], aggs[1])
		return m, false
	}
	m.Agg = Aggregate(aggs[0])
	an, apath := fs.get(aggs[0]), fs.at(aggs[0])
	if s, ok := p.str(an, apath); !ok {
		good = false
	} else if m.Agg == AggCount {
		if s != "patients" {
			p.errorf(an, apath, "count counts patients: write count: patients (and where: to select them)")
			good = false
		}
	} else if v, ok := p.useVariable(an, 0, apath, s); ok {
		if !v.Expr.Type().Numeric() {
			p.errorf(an, apath, "cannot %s variable %s: it is %s", m.Agg, s, v.Expr.Type().article())
			good = false
		}
		m.Of = s
	} else {
		good = false
	}
	if w := fs.get("where"); w != nil {
		m.Where, ok = p.cond(w, fs.at("where"))
		good = good && ok
	}
	m.Dominance = m.Agg == AggSum // sums are where one patient can dominate
	if d := fs.get("dominance"); d != nil {
		b, ok := p.boolean(d, fs.at("dominance"))
		switch {
		case !ok:
			good = false
		case m.Agg != AggSum && m.Agg != AggMean:
			p.errorf(fs.keyNode("dominance"), fs.at("dominance"), "dominance applies to sum and mean measures, not %s", m.Agg)
			good = false
		default:
			m.Dominance = b
		}
	}
	return m, good
}

func (p *parser) useVariable(n *yaml.Node, off int, path, name string) (*Variable, bool) {
	if v, ok := p.vars[name]; ok {
		p.varUsed[name] = true
		return v, true
	}
	if p.varDeclared[name] {
		p.varUsed[name] = true
		return nil, false // its definition is already reported
	}
	p.errorAt(n, off, path, "variable %s is not defined%s", name, suggest(name, slices.Sorted(maps.Keys(p.varDeclared))))
	return nil, false
}

func (p *parser) cond(n *yaml.Node, path string) (*Cond, bool) {
	s, ok := p.str(n, path)
	if !ok {
		return nil, false
	}
	c, refs, err := parseCond(s)
	if err != nil {
		p.errorAt(n, err.off, path, "%s", err.msg)
		for _, r := range refs { // named, so not unused; checked once the syntax is fixed
			if r.param {
				p.paramUsed[r.name] = true
			} else {
				p.varUsed[r.name] = true
			}
		}
		return nil, false
	}
	good := true
	for _, r := range refs {
		if r.param {
			good = p.useParam(n, r.off, path, r.name, ParamInt, false) && good
			continue
		}
		v, ok := p.useVariable(n, r.off, path, r.name)
		if !ok {
			good = false
			continue
		}
		if !v.Expr.Type().Numeric() {
			p.errorAt(n, r.off, path, "variable %s is %s; conditions compare numbers", r.name, v.Expr.Type().article())
			good = false
		}
	}
	return c, good
}

func (p *parser) groupBy(n *yaml.Node, path string, measures []*Measure) []string {
	items, ok := p.seq(n, path)
	if !ok {
		return nil
	}
	var out []string
	for i, it := range items {
		ipath := index(path, i)
		s, ok := p.str(it, ipath)
		if !ok {
			continue
		}
		if slices.Contains(out, s) {
			p.errorf(it, ipath, "%s is already grouped by", s)
			continue
		}
		v, ok := p.useVariable(it, 0, ipath, s)
		if !ok {
			continue
		}
		if t := v.Expr.Type(); t != TypeString && t != TypeBool {
			p.errorf(it, ipath, "cannot group by %s: it is %s; group by categories (age_band, not age)", s, t.article())
			continue
		}
		if slices.ContainsFunc(measures, func(m *Measure) bool { return m.Name == s }) {
			p.errorf(it, ipath, "%s names both a grouping variable and a measure; the released table needs distinct column names", s)
			continue
		}
		out = append(out, s)
	}
	return out
}

// checkUnused reports parameters and variables that nothing uses: data
// minimisation means a definition asks for nothing it does not need.
func (p *parser) checkUnused(d *Definition) {
	for _, prm := range d.Parameters {
		if !p.paramUsed[prm.Name] {
			p.errs.add(prm.Pos, join("parameters", prm.Name), "parameter %s is declared but never used", prm.Name)
		}
	}
	for name := range p.varDeclared {
		if !p.varUsed[name] {
			if v, ok := p.vars[name]; ok {
				p.errs.add(v.Pos, join("variables", name), "variable %s is defined but never used in a measure or group_by", name)
			}
		}
	}
}
