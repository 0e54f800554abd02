package catalog

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strings"
)

// CanonicalFormat names the layout of the canonical JSON. It is hashed with
// the rest, so a change of layout re-hashes every definition rather than
// letting two layouts collide.
const CanonicalFormat = "haven.catalog/v1"

// Canonical returns the definition's canonical JSON: built from the parsed
// AST, not from the YAML, so that comments, key order, quoting and flow or
// block style do not show. Keys are sorted; dates are YYYY-MM-DD; integers
// are JSON numbers; date expressions, conditions and texts are in canonical
// form; defaults are applied (a sum measure's dominance, age band bounds);
// population criteria are sorted; and every codelist the definition may use
// is included with its codes sorted. The slice is a copy.
func (d *Definition) Canonical() []byte { return slices.Clone(d.canonical) }

// Hash is the SHA-256 of Canonical, in lowercase hex. Approvals name it: any
// change of meaning, or to a codelist the definition uses, changes it.
func (d *Definition) Hash() string { return d.hash }

func hashOf(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

type obj = map[string]any

func canonicalJSON(d *Definition) []byte {
	params := obj{}
	for _, p := range d.Parameters {
		params[p.Name] = canonParam(p)
	}
	vars := obj{}
	for _, v := range d.Variables {
		vars[v.Name] = canonVar(v.Expr)
	}
	measures := make([]any, len(d.Measures))
	for i, m := range d.Measures {
		measures[i] = canonMeasure(m)
	}
	groupBy := make([]any, len(d.GroupBy))
	for i, g := range d.GroupBy {
		groupBy[i] = g
	}
	codelists := obj{}
	for name, c := range d.codelists {
		codes := make([]any, len(c.codes))
		for i, x := range c.codes {
			codes[i] = obj{"code": x.Code, "term": x.Term}
		}
		codelists[name] = obj{"system": string(c.System), "codes": codes}
	}
	doc := obj{
		"format":      CanonicalFormat,
		"id":          d.ID,
		"version":     d.Version,
		"title":       d.Title,
		"description": d.Description,
		"parameters":  params,
		"population":  canonPopulation(d.Population),
		"variables":   vars,
		"measures":    measures,
		"group_by":    groupBy,
		"codelists":   codelists,
	}
	return marshal(doc)
}

// marshal encodes v with sorted keys (encoding/json sorts map keys) and
// without HTML escaping, so conditions read `a < 140`, not `a \u003c 140`.
func marshal(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only maps, slices, strings, bools and integers reach here.
		panic("catalog: canonical form does not encode: " + err.Error())
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

func canonParam(p *Parameter) obj {
	o := obj{"type": string(p.Type)}
	put := func(k string, v *Value) {
		if v == nil {
			return
		}
		if v.Type == ParamInt {
			o[k] = v.Int
		} else {
			o[k] = v.String()
		}
	}
	put("min", p.Min)
	put("max", p.Max)
	put("default", p.Default)
	if p.Values != nil {
		o["values"] = stringsAny(p.Values)
	}
	if p.Description != "" {
		o["description"] = p.Description
	}
	return o
}

func stringsAny(s []string) []any {
	out := make([]any, len(s))
	for i, x := range s {
		out[i] = x
	}
	return out
}

func canonInt(e IntExpr) any {
	if e.Param != "" {
		return e.String()
	}
	return e.Value
}

func canonPopulation(p *Population) obj {
	if p == nil {
		return obj{}
	}
	o := obj{"site": string(p.Site), "criteria": canonCriteria(p.Criteria, true)}
	if p.RegisteredOn != nil {
		o["registered_on"] = p.RegisteredOn.String()
	}
	return o
}

// canonCriteria returns criteria sorted by their canonical text; in an
// all-of context nested all-of groups are flattened, since (a and (b and c))
// is (a and b and c).
func canonCriteria(cs []Criterion, allOf bool) []any {
	var flat []any
	var add func(c Criterion)
	add = func(c Criterion) {
		if a, ok := c.(*AllOf); ok && allOf {
			for _, x := range a.Criteria {
				add(x)
			}
			return
		}
		flat = append(flat, canonCriterion(c))
	}
	for _, c := range cs {
		add(c)
	}
	return sortByText(flat)
}

func sortByText(items []any) []any {
	type keyed struct {
		text string
		v    any
	}
	ks := make([]keyed, len(items))
	for i, it := range items {
		ks[i] = keyed{string(marshal(it)), it}
	}
	slices.SortFunc(ks, func(a, b keyed) int { return strings.Compare(a.text, b.text) })
	// Duplicates mean the same thing twice; keep one.
	ks = slices.CompactFunc(ks, func(a, b keyed) bool { return a.text == b.text })
	out := make([]any, len(ks))
	for i, k := range ks {
		out[i] = k.v
	}
	return out
}

func canonCriterion(c Criterion) any {
	switch c := c.(type) {
	case *AgeCriterion:
		o := obj{"date": c.On.String()}
		if c.Min != nil {
			o["min"] = canonInt(*c.Min)
		}
		if c.Max != nil {
			o["max"] = canonInt(*c.Max)
		}
		return obj{"age_on": o}
	case *AliveCriterion:
		return obj{"alive_on": c.On.String()}
	case *EventCriterion:
		return obj{"has_event": canonEvents(c.Events)}
	case *AllOf:
		all := canonCriteria(c.Criteria, true)
		if len(all) == 1 {
			return all[0]
		}
		return obj{"all_of": all}
	case *AnyOf:
		any_ := canonCriteria(c.Criteria, false)
		if len(any_) == 1 {
			return any_[0]
		}
		return obj{"any_of": any_}
	case *NoneOf:
		return obj{"none_of": canonCriteria(c.Criteria, false)}
	}
	return nil
}

func canonEvents(e Events) obj {
	o := obj{"table": e.Table, "date_column": e.DateColumn, "window": canonWindow(e.Window)}
	if e.Codelist != nil {
		o["codelist"] = canonCodelistRef(*e.Codelist)
	}
	if len(e.Where) > 0 {
		o["where"] = canonFilters(e.Where)
	}
	return o
}

func canonCodelistRef(r CodelistRef) string {
	if r.Param != "" {
		return "$" + r.Param
	}
	return r.Name
}

func canonFilters(fs []Filter) obj {
	o := obj{}
	for _, f := range fs {
		if f.Param != "" {
			o[f.Column] = "$" + f.Param
		} else {
			o[f.Column] = stringsAny(f.Values)
		}
	}
	return o
}

func canonWindow(w Window) obj {
	o := obj{}
	if w.From != nil {
		o["from"] = w.From.String()
	}
	if w.To != nil {
		o["to"] = w.To.String()
	}
	return o
}

func canonVar(v VarExpr) obj {
	switch v := v.(type) {
	case *ColumnVar:
		return obj{"column": v.Table() + "." + v.Column}
	case *AgeVar:
		return obj{"age": obj{"on": v.On.String()}}
	case *AgeBandVar:
		bounds := make([]any, len(v.Bounds))
		for i, b := range v.Bounds {
			bounds[i] = b
		}
		return obj{"age_band": obj{"on": v.On.String(), "bounds": bounds}}
	case *PracticeVar:
		return obj{"registered_practice": obj{"on": v.On.String()}}
	case *CountVar:
		return obj{"count": canonEvents(v.Events)}
	case *ExistsVar:
		return obj{"exists": canonEvents(v.Events)}
	case *LatestVar:
		e := canonEvents(v.Events)
		e["value_column"] = v.Column
		return obj{"latest": e}
	case *FirstTrustVar:
		return obj{"first_trust": canonEvents(v.Events)}
	case *ReadmissionsVar:
		o := obj{"index": canonEvents(v.Index), "within_days": canonInt(v.WithinDays)}
		if len(v.Where) > 0 {
			o["where"] = canonFilters(v.Where)
		}
		return obj{"readmissions": o}
	}
	return nil
}

func canonMeasure(m *Measure) obj {
	o := obj{"name": m.Name}
	if m.Agg == AggCount {
		o["count"] = "patients"
	} else {
		o[string(m.Agg)] = m.Of
	}
	if m.Where != nil {
		o["where"] = m.Where.String()
	}
	if m.Agg == AggSum || m.Agg == AggMean {
		o["dominance"] = m.Dominance
	}
	return o
}
