package catalog

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Bound is a definition with a value for every parameter: what the planner
// plans and the nodes compile. It is immutable.
//
// Its wire form is Params, a map of parameter name to string; binding that
// map again to the same definition gives an equal Bound, so a node rebuilds
// exactly what the coordinator planned from the definition hash and the map.
type Bound struct {
	def  *Definition
	vals map[string]Value
}

// Bind checks a commissioner's raw parameter values against the declared
// types, ranges and allowed values, fills in defaults, and checks what
// depends on the values together (every date window is non-empty, every
// date within range). Every problem is returned at once, as an ErrorList
// whose entries name the parameter (path parameters.<name>).
//
// Values are in wire form only: dates YYYY-MM-DD, integers in decimal with
// no sign for positives and no spaces, enum and codelist values exactly as
// declared.
func (d *Definition) Bind(values map[string]string) (*Bound, error) {
	var errs ErrorList
	b := &Bound{def: d, vals: map[string]Value{}}
	path := func(name string) string { return join("parameters", name) }
	names := make([]string, 0, len(d.Parameters))
	for _, p := range d.Parameters {
		names = append(names, p.Name)
	}
	for _, name := range slices.Sorted(maps.Keys(values)) {
		if _, ok := d.Parameter(name); !ok {
			if len(names) == 0 {
				errs.add(Pos{}, path(name), "unknown parameter %q: definition %s takes no parameters", name, d.ID)
			} else {
				errs.add(Pos{}, path(name), "unknown parameter %q%s", name, suggest(name, names))
			}
		}
	}
	for _, p := range d.Parameters {
		raw, given := values[p.Name]
		if !given {
			if p.Default == nil {
				errs.add(Pos{}, path(p.Name), "missing value for parameter %s (a %s%s, no default)", p.Name, p.Type, p.describeRange())
				continue
			}
			b.vals[p.Name] = *p.Default
			continue
		}
		v, msg := p.parseValue(raw)
		if msg != "" {
			errs.add(Pos{}, path(p.Name), "parameter %s: %s", p.Name, msg)
			continue
		}
		b.vals[p.Name] = v
	}
	if len(errs) > 0 {
		return nil, errs.Err()
	}
	b.checkResolved(&errs)
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return b, nil
}

func (p *Parameter) describeRange() string {
	switch {
	case p.Min != nil && p.Max != nil:
		return fmt.Sprintf(" from %s to %s", p.Min, p.Max)
	case p.Min != nil:
		return fmt.Sprintf(" from %s", p.Min)
	case p.Max != nil:
		return fmt.Sprintf(" up to %s", p.Max)
	case p.Values != nil:
		return " of " + strings.Join(p.Values, ", ")
	}
	return ""
}

// parseValue reads raw as a value of p, or says why it cannot.
func (p *Parameter) parseValue(raw string) (Value, string) {
	v := Value{Type: p.Type}
	switch p.Type {
	case ParamDate:
		d, err := ParseDate(raw)
		if err != nil {
			return v, err.Error()
		}
		v.Date = d
	case ParamInt:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil || strings.HasPrefix(raw, "+") {
			return v, fmt.Sprintf("%q is not a whole number", raw)
		}
		v.Int = n
	case ParamEnum, ParamCodelist:
		if !slices.Contains(p.Values, raw) {
			return v, fmt.Sprintf("%q is not allowed%s", raw, suggest(raw, p.Values))
		}
		v.Str = raw
		return v, ""
	}
	if p.Min != nil && compareValues(v, *p.Min) < 0 {
		return v, fmt.Sprintf("%s is below the minimum %s", v, p.Min)
	}
	if p.Max != nil && compareValues(v, *p.Max) > 0 {
		return v, fmt.Sprintf("%s is above the maximum %s", v, p.Max)
	}
	return v, ""
}

// checkResolved resolves every date and int expression of the definition
// with b's values and reports what no single parameter's range could catch.
func (b *Bound) checkResolved(errs *ErrorList) {
	d := b.def
	report := func(path, format string, args ...any) {
		errs.add(Pos{}, path, format, args...)
	}
	date := func(e DateExpr, path string) bool {
		if _, ok := b.resolveDate(e); !ok {
			report(path, "%s falls outside the years 1000 to 9999 with these parameter values", e)
			return false
		}
		return true
	}
	window := func(w Window, path string) {
		okFrom := w.From == nil || date(*w.From, path+".from")
		okTo := w.To == nil || date(*w.To, path+".to")
		if okFrom && okTo && w.From != nil && w.To != nil {
			if f, t := b.Date(*w.From), b.Date(*w.To); f > t {
				report(path, "the window from %s (%s) to %s (%s) is empty with these parameter values", w.From, f, w.To, t)
			}
		}
	}
	ageBound := func(e *IntExpr, path string) {
		if e != nil && e.Param != "" {
			if v := b.Int(*e); v < 0 || v > maxAge {
				report(path, "$%s = %d is not an age from 0 to %d", e.Param, v, maxAge)
			}
		}
	}
	var criteria func(cs []Criterion, path string)
	criteria = func(cs []Criterion, path string) {
		for _, c := range cs {
			switch c := c.(type) {
			case *AgeCriterion:
				date(c.On, path+".age_on.date")
				ageBound(c.Min, path+".age_on.min")
				ageBound(c.Max, path+".age_on.max")
				if c.Min != nil && c.Max != nil && b.Int(*c.Min) > b.Int(*c.Max) {
					report(path+".age_on", "minimum age %d is above maximum age %d with these parameter values", b.Int(*c.Min), b.Int(*c.Max))
				}
			case *AliveCriterion:
				date(c.On, path+".alive_on")
			case *EventCriterion:
				window(c.Events.Window, path+".has_event")
			case *AllOf:
				criteria(c.Criteria, path+".all_of")
			case *AnyOf:
				criteria(c.Criteria, path+".any_of")
			case *NoneOf:
				criteria(c.Criteria, path+".none_of")
			}
		}
	}
	if pop := d.Population; pop != nil {
		if pop.RegisteredOn != nil {
			date(*pop.RegisteredOn, "population.registered_on")
		}
		criteria(pop.Criteria, "population")
	}
	for _, v := range d.Variables {
		path := join("variables", v.Name)
		switch x := v.Expr.(type) {
		case *AgeVar:
			date(x.On, path+".age.on")
		case *AgeBandVar:
			date(x.On, path+".age_band.on")
		case *PracticeVar:
			date(x.On, path+".registered_practice.on")
		case *CountVar:
			window(x.Events.Window, path+".count")
		case *ExistsVar:
			window(x.Events.Window, path+".exists")
		case *LatestVar:
			window(x.Events.Window, path+".latest")
		case *FirstTrustVar:
			window(x.Events.Window, path+".first_trust")
		case *ReadmissionsVar:
			window(x.Index.Window, path+".readmissions.index")
			if n := b.Int(x.WithinDays); n < 1 || n > 366 {
				report(path+".readmissions.within_days", "$%s = %d: readmissions are followed for 1 to 366 days", x.WithinDays.Param, n)
			} else if x.Index.Window.To != nil {
				if _, ok := b.Date(*x.Index.Window.To).addDays(n); !ok {
					report(path+".readmissions.within_days", "following readmissions %d days past %s leaves the years 1000 to 9999", n, b.Date(*x.Index.Window.To))
				}
			}
		}
	}
}

// Definition is the definition b binds.
func (b *Bound) Definition() *Definition { return b.def }

// Value returns the value of the named parameter.
func (b *Bound) Value(name string) (Value, bool) {
	v, ok := b.vals[name]
	return v, ok
}

// Params returns the wire form: every parameter, defaults included, as
// name to Value.String. Bind(Params()) gives back an equal Bound.
func (b *Bound) Params() map[string]string {
	out := make(map[string]string, len(b.vals))
	for k, v := range b.vals {
		out[k] = v.String()
	}
	return out
}

// Date resolves a date expression of b's definition. Bind has checked that
// every such expression resolves within range.
func (b *Bound) Date(e DateExpr) Date {
	d, _ := b.resolveDate(e)
	return d
}

func (b *Bound) resolveDate(e DateExpr) (Date, bool) {
	base := e.Date
	if e.Param != "" {
		base = b.vals[e.Param].Date
	}
	off := b.Int(e.Offset)
	if e.Negate {
		off = -off
	}
	return base.addDays(off)
}

// Int resolves an integer expression of b's definition.
func (b *Bound) Int(e IntExpr) int64 {
	if e.Param != "" {
		return b.vals[e.Param].Int
	}
	return e.Value
}

// Number resolves the right-hand side of a comparison.
func (b *Bound) Number(o Operand) float64 {
	if o.Param != "" {
		return float64(b.vals[o.Param].Int)
	}
	return o.Number
}

// Codelist resolves a codelist reference of b's definition.
func (b *Bound) Codelist(r CodelistRef) *Codelist {
	name := r.Name
	if r.Param != "" {
		name = b.vals[r.Param].Str
	}
	return b.def.codelists[name]
}

// FilterValues resolves the values a filter allows, sorted.
func (b *Bound) FilterValues(f Filter) []string {
	if f.Param != "" {
		return []string{b.vals[f.Param].Str}
	}
	return slices.Clone(f.Values)
}

// DateRange is a resolved Window; a nil bound is open.
type DateRange struct {
	From, To *Date
}

// Window resolves a window of b's definition.
func (b *Bound) Window(w Window) DateRange {
	var r DateRange
	if w.From != nil {
		d := b.Date(*w.From)
		r.From = &d
	}
	if w.To != nil {
		d := b.Date(*w.To)
		r.To = &d
	}
	return r
}
