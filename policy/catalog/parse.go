package catalog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// maxDefinitionBytes bounds a definition file; real ones are a few kilobytes.
const maxDefinitionBytes = 1 << 20

var (
	idRE   = regexp.MustCompile(`^[a-z0-9]+(?:-[a-z0-9]+)*$`)
	nameRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
)

// reserved names cannot name parameters, variables or measures: they are
// field names of the plan's outputs or keywords of conditions. A measure
// may be called patients, as most are; a variable may not, since
// `count: patients` must not be read as a variable.
var reservedNames = []string{"pseudonym", "in_population", "record_key", "and", "patients"}

// ParseDefinition parses and checks one definition. file names it in error
// positions (and nowhere else); codelists are the codelists it may
// reference, by name. It returns every mistake at once, as an ErrorList.
//
// See the package documentation for the format.
func ParseDefinition(file string, src []byte, codelists map[string]*Codelist) (*Definition, error) {
	return parseDefinition(file, src, codelists, nil)
}

// parseDefinition is ParseDefinition, told which codelist files of the
// bundle failed to parse: references to them are not reported again as
// unknown.
func parseDefinition(file string, src []byte, codelists map[string]*Codelist, broken map[string]bool) (*Definition, error) {
	p := &parser{
		file:          file,
		codelists:     codelists,
		broken:        broken,
		params:        map[string]*Parameter{},
		paramDeclared: map[string]bool{},
		paramUsed:     map[string]bool{},
		vars:          map[string]*Variable{},
		varDeclared:   map[string]bool{},
		varUsed:       map[string]bool{},
		usedCodelists: map[string]*Codelist{},
	}
	d := p.parse(src)
	if err := p.errs.Err(); err != nil {
		return nil, err
	}
	d.file = file
	d.codelists = p.usedCodelists
	d.canonical = canonicalJSON(d)
	d.hash = hashOf(d.canonical)
	return d, nil
}

type parser struct {
	file      string
	codelists map[string]*Codelist
	broken    map[string]bool // codelists whose files have errors, already reported
	errs      ErrorList

	params        map[string]*Parameter
	paramDeclared map[string]bool // includes parameters whose declaration has errors
	paramUsed     map[string]bool

	vars        map[string]*Variable
	varDeclared map[string]bool
	varUsed     map[string]bool

	usedCodelists map[string]*Codelist

	// tables used by population criteria, to decide where it is evaluated.
	popTables []tableUse
}

type tableUse struct {
	table string
	node  *yaml.Node
	path  string
}

var yamlLineRE = regexp.MustCompile(`line (\d+)`)

// decode reads the one YAML document of a definition. yaml.v3 has panicked
// on hostile input in past releases; a definition is input like any other,
// so a panic there becomes an error rather than a crash.
func decode(src []byte) (doc *yaml.Node, err error) {
	defer func() {
		if r := recover(); r != nil {
			doc, err = nil, fmt.Errorf("yaml: cannot parse: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(src))
	var n yaml.Node
	if err := dec.Decode(&n); err != nil {
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		line := extra.Line
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("yaml: line %d: a definition is one YAML document; remove the second (---)", line)
	}
	return &n, nil
}

var topFields = []string{"id", "version", "title", "description", "parameters", "population", "variables", "measures", "group_by"}

func (p *parser) parse(src []byte) *Definition {
	d := &Definition{}
	whole := Pos{File: p.file}
	if len(src) > maxDefinitionBytes {
		p.errs.add(whole, "", "definition is %d bytes, more than the limit of %d", len(src), maxDefinitionBytes)
		return d
	}
	doc, err := decode(src)
	if errors.Is(err, io.EOF) {
		p.errs.add(whole, "", "empty definition")
		return d
	}
	if err != nil {
		pos := whole
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
			pos.Line, _ = strconv.Atoi(m[1])
			msg = strings.TrimPrefix(strings.Replace(msg, m[0], "", 1), ": ")
		}
		p.errs.add(pos, "", "invalid YAML: %s", msg)
		return d
	}
	root := doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			p.errs.add(whole, "", "empty definition")
			return d
		}
		root = root.Content[0]
	}
	fs, ok := p.fields(root, "", topFields...)
	if !ok {
		return d
	}
	p.require(fs, "id", "version", "title", "population", "measures")

	if n := fs.get("id"); n != nil {
		if s, ok := p.str(n, "id"); ok {
			if !idRE.MatchString(s) || len(s) > 63 {
				p.errorf(n, "id", "id %q must be a slug: lowercase letters and digits joined by single hyphens, at most 63 characters", s)
			}
			d.ID = s
		}
	}
	if n := fs.get("version"); n != nil {
		if v, ok := p.int(n, "version"); ok {
			if v < 1 {
				p.errorf(n, "version", "version must be 1 or more, got %d", v)
			}
			d.Version = v
		}
	}
	if n := fs.get("title"); n != nil {
		if s, ok := p.str(n, "title"); ok {
			d.Title = normalizeText(s)
			if d.Title == "" {
				p.errorf(n, "title", "title is empty")
			}
		}
	}
	if n := fs.get("description"); n != nil {
		if s, ok := p.str(n, "description"); ok {
			d.Description = normalizeText(s)
		}
	}
	// Parameters first, whatever the order in the file: everything else
	// refers to them.
	if n := fs.get("parameters"); n != nil {
		d.Parameters = p.parameters(n, "parameters")
	}
	if n := fs.get("population"); n != nil {
		d.Population = p.population(n, "population")
	}
	if n := fs.get("variables"); n != nil {
		d.Variables = p.variables(n, "variables", d.Population)
	}
	if n := fs.get("measures"); n != nil {
		d.Measures = p.measures(n, "measures")
	}
	if n := fs.get("group_by"); n != nil {
		d.GroupBy = p.groupBy(n, "group_by", d.Measures)
	}
	p.checkUnused(d)
	return d
}

// normalizeText collapses runs of white space, so that folding a long
// title or description differently in YAML does not change its meaning or
// its hash.
func normalizeText(s string) string { return strings.Join(strings.Fields(s), " ") }

func (p *parser) checkName(n *yaml.Node, path, what, name string) bool {
	switch {
	case !nameRE.MatchString(name) || len(name) > 63:
		p.errorf(n, path, "%s name %q must start with a lowercase letter and hold only lowercase letters, digits and _ (at most 63)", what, name)
	case strings.Contains(name, "__"):
		p.errorf(n, path, "%s name %q must not contain __ (it separates a measure from its partials in plan outputs)", what, name)
	case slices.Contains(reservedNames, name) && (what != "measure" || name != "patients"):
		p.errorf(n, path, "%q is reserved and cannot name a %s", name, what)
	default:
		return true
	}
	return false
}

// Parameters.

var paramTypes = []string{string(ParamDate), string(ParamInt), string(ParamEnum), string(ParamCodelist)}

func (p *parser) parameters(n *yaml.Node, path string) []*Parameter {
	es, ok := p.entries(n, path)
	if !ok {
		return nil
	}
	var out []*Parameter
	for _, e := range es {
		ppath := join(path, e.key)
		p.paramDeclared[e.key] = true
		if !p.checkName(e.keyNode, ppath, "parameter", e.key) {
			continue
		}
		if prm := p.parameter(e, ppath); prm != nil {
			p.params[e.key] = prm
			out = append(out, prm)
		}
	}
	slices.SortFunc(out, func(a, b *Parameter) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (p *parser) parameter(e entry, path string) *Parameter {
	fs, ok := p.fields(e.val, path, "type", "min", "max", "default", "values", "description")
	if !ok || !p.require(fs, "type") {
		return nil
	}
	typ, ok := p.str(fs.get("type"), fs.at("type"))
	if !ok {
		return nil
	}
	prm := &Parameter{Name: e.key, Type: ParamType(typ), Pos: p.pos(e.keyNode)}
	if !slices.Contains(paramTypes, typ) {
		p.errorf(fs.get("type"), fs.at("type"), "unknown parameter type %q%s", typ, suggest(typ, paramTypes))
		return nil
	}
	if n := fs.get("description"); n != nil {
		if s, ok := p.str(n, fs.at("description")); ok {
			prm.Description = normalizeText(s)
		}
	}
	good := true
	value := func(k string) *Value {
		n := fs.get(k)
		if n == nil {
			return nil
		}
		v, ok := p.paramValue(prm, n, fs.at(k))
		if !ok {
			good = false
			return nil
		}
		return v
	}
	switch prm.Type {
	case ParamDate, ParamInt:
		if fs.has("values") {
			p.errorf(fs.keyNode("values"), fs.at("values"), "values apply to enum and codelist parameters; bound a %s parameter with min and max", prm.Type)
			good = false
		}
		prm.Min, prm.Max = value("min"), value("max")
		prm.Default = value("default")
		if prm.Min != nil && prm.Max != nil && compareValues(*prm.Min, *prm.Max) > 0 {
			p.errorf(fs.get("max"), fs.at("max"), "impossible range: min %s is above max %s", prm.Min, prm.Max)
			good = false
		}
		if d := prm.Default; d != nil {
			if prm.Min != nil && compareValues(*d, *prm.Min) < 0 {
				p.errorf(fs.get("default"), fs.at("default"), "default %s is below min %s", d, prm.Min)
				good = false
			}
			if prm.Max != nil && compareValues(*d, *prm.Max) > 0 {
				p.errorf(fs.get("default"), fs.at("default"), "default %s is above max %s", d, prm.Max)
				good = false
			}
		}
	case ParamEnum, ParamCodelist:
		for _, k := range []string{"min", "max"} {
			if fs.has(k) {
				p.errorf(fs.keyNode(k), fs.at(k), "%s applies to date and int parameters; list the allowed values of a %s parameter in values", k, prm.Type)
				good = false
			}
		}
		if !p.require(fs, "values") {
			return nil
		}
		prm.Values = p.allowedValues(prm, fs.get("values"), fs.at("values"))
		if prm.Values == nil {
			return nil
		}
		if n := fs.get("default"); n != nil {
			if s, ok := p.str(n, fs.at("default")); ok {
				if !slices.Contains(prm.Values, s) {
					p.errorf(n, fs.at("default"), "default %q is not one of the values%s", s, suggest(s, prm.Values))
					good = false
				} else {
					prm.Default = &Value{Type: prm.Type, Str: s}
				}
			} else {
				good = false
			}
		}
	}
	if !good {
		return nil
	}
	return prm
}

// paramValue reads a min, max or default of a date or int parameter. Only
// literals: a bound that depended on another parameter could not be
// checked when the definition is approved.
func (p *parser) paramValue(prm *Parameter, n *yaml.Node, path string) (*Value, bool) {
	switch prm.Type {
	case ParamDate:
		s, ok := p.textish(n, path, "a date (YYYY-MM-DD)")
		if !ok {
			return nil, false
		}
		d, err := ParseDate(s)
		if err != nil {
			p.errorf(n, path, "%v", err)
			return nil, false
		}
		return &Value{Type: ParamDate, Date: d}, true
	case ParamInt:
		v, ok := p.int(n, path)
		if !ok {
			return nil, false
		}
		return &Value{Type: ParamInt, Int: v}, true
	}
	return nil, false
}

func compareValues(a, b Value) int {
	switch a.Type {
	case ParamDate:
		return int(a.Date) - int(b.Date)
	case ParamInt:
		switch {
		case a.Int < b.Int:
			return -1
		case a.Int > b.Int:
			return 1
		}
		return 0
	}
	return strings.Compare(a.Str, b.Str)
}

func (p *parser) allowedValues(prm *Parameter, n *yaml.Node, path string) []string {
	items, ok := p.seq(n, path)
	if !ok {
		return nil
	}
	if len(items) == 0 {
		p.errorf(n, path, "a %s parameter needs at least one allowed value", prm.Type)
		return nil
	}
	var out []string
	good := true
	for i, it := range items {
		ipath := index(path, i)
		s, ok := p.str(it, ipath)
		if !ok {
			good = false
			continue
		}
		switch {
		case s == "" || strings.TrimSpace(s) != s:
			p.errorf(it, ipath, "allowed value %q is empty or has surrounding spaces", s)
			good = false
		case slices.Contains(out, s):
			p.errorf(it, ipath, "duplicate value %q", s)
			good = false
		case prm.Type == ParamCodelist:
			c, ok := p.codelists[s]
			if !ok {
				if !p.broken[s] {
					p.errorf(it, ipath, "unknown codelist %q%s", s, suggest(s, slices.Sorted(maps.Keys(p.codelists))))
				}
				good = false
				continue
			}
			p.usedCodelists[s] = c
		}
		out = append(out, s)
	}
	if !good {
		return nil
	}
	slices.Sort(out)
	return out
}

// useParam checks a reference to a parameter and marks it used.
func (p *parser) useParam(n *yaml.Node, off int, path, name string, want ParamType, bare bool) bool {
	prm, ok := p.params[name]
	if !ok {
		if p.paramDeclared[name] {
			// Its declaration is wrong and already reported; the reference
			// itself is fine, so the rest of this field is still checked.
			p.paramUsed[name] = true
			return true
		}
		if bare {
			p.errorAt(n, off, path, "%q is not a declared int parameter: write a number of days or an int parameter%s", name, suggest(name, slices.Sorted(maps.Keys(p.paramDeclared))))
		} else {
			p.errorAt(n, off, path, "parameter $%s is not declared%s", name, suggest(name, slices.Sorted(maps.Keys(p.paramDeclared))))
		}
		return false
	}
	p.paramUsed[name] = true
	if prm.Type != want {
		p.errorAt(n, off, path, "parameter $%s is a %s parameter; a %s parameter is needed here", name, prm.Type, want)
		return false
	}
	return true
}

// allowed returns the values an enum or codelist parameter allows; none
// when its declaration had errors.
func (p *parser) allowed(name string) []string {
	if prm := p.params[name]; prm != nil {
		return prm.Values
	}
	return nil
}

// Expressions: dates, integers and windows.

func (p *parser) dateExpr(n *yaml.Node, path string) (DateExpr, bool) {
	s, ok := p.textish(n, path, "a date: YYYY-MM-DD, $parameter, or either plus or minus days")
	if !ok {
		return DateExpr{}, false
	}
	e, refs, err := parseDateExpr(s)
	if err != nil {
		p.errorAt(n, err.off, path, "%s", err.msg)
		for _, r := range refs { // named, so not unused; checked once the syntax is fixed
			p.paramUsed[r.name] = true
		}
		return DateExpr{}, false
	}
	good := true
	for _, r := range refs {
		if !p.useParam(n, r.off, path, r.name, r.want, r.bare) {
			good = false
		}
	}
	return e, good
}

// intExpr reads an integer or an int $parameter.
func (p *parser) intExpr(n *yaml.Node, path string) (IntExpr, bool) {
	if !p.scalar(n, path, "an integer or $parameter") {
		return IntExpr{}, false
	}
	if n.ShortTag() == "!!str" && strings.HasPrefix(n.Value, "$") {
		name := n.Value[1:]
		if !nameRE.MatchString(name) {
			p.errorf(n, path, "%q is not a parameter reference", n.Value)
			return IntExpr{}, false
		}
		if !p.useParam(n, 0, path, name, ParamInt, false) {
			return IntExpr{}, false
		}
		return IntExpr{Param: name}, true
	}
	if n.ShortTag() != "!!int" {
		p.errorf(n, path, "want an integer or $parameter, got %s", describe(n))
		return IntExpr{}, false
	}
	v, ok := p.int(n, path)
	return IntExpr{Value: v}, ok
}

// intInRange checks a literal against [lo, hi]; parameter values are
// checked when bound.
func (p *parser) intInRange(e IntExpr, n *yaml.Node, path string, lo, hi int64) bool {
	if e.Param == "" && (e.Value < lo || e.Value > hi) {
		p.errorf(n, path, "%d is out of range: want %d to %d", e.Value, lo, hi)
		return false
	}
	return true
}

// window reads between / on_or_before / on_or_after from fs.
func (p *parser) window(fs fieldSet) (Window, bool) {
	var w Window
	var given []string
	for _, k := range []string{"between", "on_or_before", "on_or_after"} {
		if fs.has(k) {
			given = append(given, k)
		}
	}
	switch len(given) {
	case 0:
		p.errorf(fs.node, fs.path, "missing date window: give between: [from, to], on_or_before or on_or_after")
		return w, false
	case 1:
	default:
		p.errorf(fs.keyNode(given[1]), fs.at(given[1]), "give one date window, not both %s and %s (between covers both ends)", given[0], given[1])
		return w, false
	}
	k := given[0]
	n, path := fs.get(k), fs.at(k)
	switch k {
	case "on_or_before", "on_or_after":
		e, ok := p.dateExpr(n, path)
		if !ok {
			return w, false
		}
		if k == "on_or_before" {
			w.To = &e
		} else {
			w.From = &e
		}
		return w, true
	}
	items, ok := p.seq(n, path)
	if !ok {
		return w, false
	}
	if len(items) != 2 {
		p.errorf(n, path, "between takes two dates [from, to], got %d", len(items))
		return w, false
	}
	from, ok1 := p.dateExpr(items[0], index(path, 0))
	to, ok2 := p.dateExpr(items[1], index(path, 1))
	if !ok1 || !ok2 {
		return w, false
	}
	if c, known := literalOrder(from, to); known && c > 0 {
		p.errorf(n, path, "impossible range: %s is after %s, so the window is empty", from, to)
		return w, false
	}
	w.From, w.To = &from, &to
	return w, true
}
