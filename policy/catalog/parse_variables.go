package catalog

import (
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/havenhealth/haven/cdm"
)

// Variables: per-patient values, each from one table.

var variableKinds = []string{"column", "age", "age_band", "registered_practice", "count", "exists", "latest", "first_trust", "readmissions"}

func (p *parser) variables(n *yaml.Node, path string, pop *Population) []*Variable {
	es, ok := p.entries(n, path)
	if !ok {
		return nil
	}
	var out []*Variable
	for _, e := range es {
		vpath := join(path, e.key)
		p.varDeclared[e.key] = true
		if !p.checkName(e.keyNode, vpath, "variable", e.key) {
			continue
		}
		fs, ok := p.fields(e.val, vpath, variableKinds...)
		if !ok {
			continue
		}
		if len(fs.order) != 1 {
			if len(fs.order) == 0 && len(e.val.Content) == 0 {
				p.errorf(e.val, vpath, "say how the variable is derived: one of %s", strings.Join(variableKinds, ", "))
			} else if len(fs.order) > 1 {
				p.errorf(fs.keyNode(fs.order[1]), fs.at(fs.order[1]), "a variable is derived one way; it has both %s and %s", fs.order[0], fs.order[1])
			}
			continue
		}
		kind := fs.order[0]
		expr, ok := p.variable(kind, fs.get(kind), fs.at(kind))
		if !ok {
			continue
		}
		v := &Variable{Name: e.key, Expr: expr, Pos: p.pos(e.keyNode)}
		if !p.checkVariableSite(v, e.keyNode, vpath, pop) {
			continue
		}
		p.vars[e.key] = v
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b *Variable) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (p *parser) variable(kind string, n *yaml.Node, path string) (VarExpr, bool) {
	switch kind {
	case "column":
		return p.columnVar(n, path)
	case "age", "registered_practice":
		fs, ok := p.fields(n, path, "on")
		if !ok || !p.require(fs, "on") {
			return nil, false
		}
		on, ok := p.dateExpr(fs.get("on"), fs.at("on"))
		if kind == "age" {
			return &AgeVar{On: on}, ok
		}
		return &PracticeVar{On: on}, ok
	case "age_band":
		return p.ageBandVar(n, path)
	case "count", "exists", "latest", "first_trust":
		ev, fs, ok := p.events(n, path, "")
		if !ok {
			return nil, false
		}
		switch kind {
		case "count":
			return &CountVar{Events: ev}, true
		case "exists":
			return &ExistsVar{Events: ev}, true
		case "latest":
			return p.latestVar(ev, fs)
		}
		if tableSite(ev.Table) != cdm.KindTrust {
			p.errorf(fs.get("table"), fs.at("table"), "first_trust reads hospital activity (%s or %s), not %s", cdm.TableAPCEpisode, cdm.TableAEAttendance, ev.Table)
			return nil, false
		}
		if ev.Window.From == nil {
			p.errorf(fs.node, fs.path, "first_trust needs a window with a start (between or on_or_after): trusts report days from it")
			return nil, false
		}
		return &FirstTrustVar{Events: ev}, true
	case "readmissions":
		return p.readmissionsVar(n, path)
	}
	return nil, false
}

func (p *parser) columnVar(n *yaml.Node, path string) (VarExpr, bool) {
	s, ok := p.str(n, path)
	if !ok {
		return nil, false
	}
	tname, cname, dotted := strings.Cut(s, ".")
	if !dotted {
		p.errorf(n, path, "want table.column, e.g. patient.sex; got %q", s)
		return nil, false
	}
	t, ok := cdm.Lookup(tname)
	if !ok {
		p.errorf(n, path, "unknown table %q%s", tname, suggest(tname, cdm.TableNames()))
		return nil, false
	}
	col, ok := t.Column(cname)
	if !ok {
		p.errorf(n, path, "unknown column %q in table %s%s", cname, t.Name, suggest(cname, t.ColumnNames()))
		return nil, false
	}
	if col.Sensitivity == cdm.Identifying {
		p.errorf(n, path, "%s.%s identifies a person and never leaves a site; it cannot be an output variable (derive age or age_band from birth_date instead)", t.Name, col.Name)
		return nil, false
	}
	if t.Name != cdm.TablePatient {
		p.errorf(n, path, "a column variable reads the patient table, one row per person; %s has many rows per person: use count, exists or latest", t.Name)
		return nil, false
	}
	if col.Type != cdm.String {
		p.errorf(n, path, "%s.%s is a %s; only categorical (string) columns can be output", t.Name, col.Name, col.Type)
		return nil, false
	}
	return &ColumnVar{Column: col.Name, Nullable: col.Nullable}, true
}

func (p *parser) ageBandVar(n *yaml.Node, path string) (VarExpr, bool) {
	fs, ok := p.fields(n, path, "on", "width", "top", "bands")
	if !ok || !p.require(fs, "on") {
		return nil, false
	}
	v := &AgeBandVar{}
	on, good := p.dateExpr(fs.get("on"), fs.at("on"))
	v.On = on
	switch {
	case fs.has("width") && fs.has("bands"):
		p.errorf(fs.keyNode("bands"), fs.at("bands"), "give width (and top) or bands, not both")
		return nil, false
	case fs.has("width"):
		w, ok := p.int(fs.get("width"), fs.at("width"))
		if !ok {
			return nil, false
		}
		if w < 1 || w > maxAge {
			p.errorf(fs.get("width"), fs.at("width"), "width %d is out of range: want 1 to %d", w, maxAge)
			return nil, false
		}
		top := 90 / w * w
		if t := fs.get("top"); t != nil {
			if top, ok = p.int(t, fs.at("top")); !ok {
				return nil, false
			}
			if top < w || top > maxAge || top%w != 0 {
				p.errorf(t, fs.at("top"), "top %d must be a multiple of width %d between %d and %d", top, w, w, maxAge)
				return nil, false
			}
		}
		if top == 0 {
			top = w
		}
		for b := int64(0); b <= top; b += w {
			v.Bounds = append(v.Bounds, b)
		}
	case fs.has("bands"):
		if fs.has("top") {
			p.errorf(fs.keyNode("top"), fs.at("top"), "top goes with width; with bands the last bound is the top")
			return nil, false
		}
		items, ok := p.seq(fs.get("bands"), fs.at("bands"))
		if !ok {
			return nil, false
		}
		if len(items) == 0 {
			p.errorf(fs.get("bands"), fs.at("bands"), "bands needs at least one lower bound")
			return nil, false
		}
		prev := int64(-1)
		for i, it := range items {
			ipath := index(fs.at("bands"), i)
			b, ok := p.int(it, ipath)
			if !ok {
				good = false
				continue
			}
			if b < 0 || b > maxAge || b <= prev {
				p.errorf(it, ipath, "band bounds must rise from 0 to %d; %d does not follow %d", maxAge, b, prev)
				good = false
				continue
			}
			prev = b
			v.Bounds = append(v.Bounds, b)
		}
		// Bands always start at 0, so that every age has a band; [18, 65]
		// and [0, 18, 65] are the same banding.
		if len(v.Bounds) > 0 && v.Bounds[0] != 0 {
			v.Bounds = append([]int64{0}, v.Bounds...)
		}
	default:
		p.errorf(n, path, "age_band needs width (e.g. 10) or bands (e.g. [18, 40, 65, 80])")
		return nil, false
	}
	return v, good
}

func (p *parser) latestVar(ev Events, fs fieldSet) (VarExpr, bool) {
	t, _ := cdm.Lookup(ev.Table)
	var numeric []string
	for _, c := range t.Columns {
		if c.Type == cdm.Float64 {
			numeric = append(numeric, c.Name)
		}
	}
	if len(numeric) != 1 {
		p.errorf(fs.get("table"), fs.at("table"), "latest needs a table with one numeric value column; %s has none", ev.Table)
		return nil, false
	}
	if ev.Codelist == nil {
		p.errorf(fs.node, fs.path, "latest needs a codelist saying which observation is measured")
		return nil, false
	}
	return &LatestVar{Events: ev, Column: numeric[0]}, true
}

func (p *parser) readmissionsVar(n *yaml.Node, path string) (VarExpr, bool) {
	fs, ok := p.fields(n, path, "index", "within_days", "where")
	if !ok || !p.require(fs, "index", "within_days") {
		return nil, false
	}
	v := &ReadmissionsVar{}
	good := true
	ev, ifs, ok := p.events(fs.get("index"), fs.at("index"), cdm.TableAPCEpisode)
	if ok {
		// Index episodes are selected by when they ended.
		ev.DateColumn = cdm.ColDischargeDate
		if ev.Window.From == nil || ev.Window.To == nil {
			p.errorf(ifs.node, ifs.path, "index needs between: [from, to]: trusts report days from its start, and readmissions are followed to its end")
			ok = false
		}
	}
	v.Index = ev
	good = good && ok
	if v.WithinDays, ok = p.intExpr(fs.get("within_days"), fs.at("within_days")); ok {
		ok = p.intInRange(v.WithinDays, fs.get("within_days"), fs.at("within_days"), 1, 366)
	}
	good = good && ok
	if w := fs.get("where"); w != nil {
		t, _ := cdm.Lookup(cdm.TableAPCEpisode)
		v.Where, ok = p.filters(w, fs.at("where"), t)
		good = good && ok
	}
	return v, good
}

// variableSite is the kind of site that computes v, given where the
// population is evaluated.
func variableSite(v VarExpr, pop cdm.SiteKind) cdm.SiteKind {
	if s := tableSite(v.Table()); s != "" {
		return s
	}
	return pop
}

func (p *parser) checkVariableSite(v *Variable, n *yaml.Node, path string, pop *Population) bool {
	if pop == nil || pop.Site != cdm.KindTrust {
		return true
	}
	if s := variableSite(v.Expr, pop.Site); s == cdm.KindGP {
		p.errorf(n, path, "variable %s reads %s, held by GP practices, but the population is defined by hospital activity; GP records need a registered population", v.Name, v.Expr.Table())
		return false
	}
	return true
}
