package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/havenhealth/haven/policy/catalog"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
)

// Lint checks the bundle at p, a directory or a .tar.gz, as the board
// prepares it: every Rego file parses and compiles with the capabilities
// Load allows, the three decisions exist, data.json and the manifest parse,
// the catalogue loads, data.json's approvals match the catalogue (see
// ApprovalProblems), and data.disclosure has a rule for every measure that
// the plans can satisfy: a known kind, and the largest contributions of
// every measure of a kind the dominance rule always applies to. It does not
// check the signature.
//
// Every problem found is returned at once as a catalog.ErrorList, each with
// the file and, where known, line, column or field path. Any other error
// means the bundle could not be read.
func Lint(ctx context.Context, p string) error {
	f, err := readBundle(p)
	if err != nil {
		return fmt.Errorf("lint %s: %w", p, err)
	}
	var errs catalog.ErrorList

	modules := map[string]*ast.Module{}
	for _, name := range f.names() {
		if !strings.HasSuffix(name, ".rego") {
			continue
		}
		m, err := ast.ParseModuleWithOpts(name, string(f[name]), ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			errs = append(errs, regoErrors(name, err)...)
			continue
		}
		modules[name] = m
	}
	if len(errs) == 0 {
		c := ast.NewCompiler().WithCapabilities(capabilities())
		if c.Compile(modules); c.Failed() {
			errs = append(errs, regoErrors("", c.Errors)...)
		} else {
			for d := range numDecisions {
				if len(c.GetRulesForVirtualDocument(d.ref())) == 0 {
					errs = append(errs, &catalog.Error{Msg: fmt.Sprintf("the bundle defines no %s", d.ref())})
				}
			}
		}
	}

	var data map[string]any
	for _, name := range []string{"data.json", ".manifest"} {
		b, ok := f[name]
		if !ok {
			if name == "data.json" {
				errs = append(errs, &catalog.Error{Pos: catalog.Pos{File: name}, Msg: "missing: the bundle has no data"})
			}
			continue
		}
		var v map[string]any
		if err := util.UnmarshalJSON(b, &v); err != nil {
			errs = append(errs, &catalog.Error{Pos: catalog.Pos{File: name}, Msg: err.Error()})
			continue
		}
		if name == "data.json" {
			data = v
		}
	}

	cat, err := catalog.Load(f.asFS())
	if err != nil {
		var list catalog.ErrorList
		if !errors.As(err, &list) {
			return fmt.Errorf("lint %s: %w", p, err)
		}
		errs = append(errs, list...)
	}
	if data != nil {
		errs = append(errs, ApprovalProblems(data, cat)...)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return errs.Err()
}

func regoErrors(file string, err error) catalog.ErrorList {
	var out catalog.ErrorList
	var list ast.Errors
	if !errors.As(err, &list) {
		return catalog.ErrorList{{Pos: catalog.Pos{File: file}, Msg: err.Error()}}
	}
	for _, e := range list {
		pos := catalog.Pos{File: file}
		if e.Location != nil {
			pos = catalog.Pos{File: e.Location.File, Line: e.Location.Row, Column: e.Location.Col}
		}
		out = append(out, &catalog.Error{Pos: pos, Msg: e.Message})
	}
	return out
}

// ApprovalProblems checks the board's data (data.json, parsed) against the
// catalogue:
//
//   - every approval names a definition of the catalogue, and that
//     definition's current hash: an edited definition needs re-approval;
//   - approver, approved_on (YYYY-MM-DD) and expires (RFC 3339) are set;
//   - purposes and roles are known (data.purposes, data.roles);
//   - the approval names every parameter of the definition, since every
//     request carries every parameter (defaults included), with ranges of
//     the parameter's type: min and max numbers for int, YYYY-MM-DD for
//     date, values from the declared ones for enum and codelist, and
//     optionally a grid (values or a positive step for int, a step of
//     DateGrids for date) that holds the definition's default;
//   - every measure of every definition has a kind that disclosure control
//     has a rule for, or its tables could never be released.
//
// Positions are the file and the field path. With a nil catalogue (one that
// did not load) only the checks that need no definition are made.
func ApprovalProblems(data map[string]any, cat *catalog.Catalog) catalog.ErrorList {
	var errs catalog.ErrorList
	add := func(file, path, format string, args ...any) {
		errs = append(errs, &catalog.Error{Pos: catalog.Pos{File: file}, Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	const file = "data.json"
	approvals, ok := data["approvals"].(map[string]any)
	if !ok {
		add(file, "approvals", "missing or not an object")
	}
	purposes, _ := data["purposes"].(map[string]any)
	roles, _ := data["roles"].(map[string]any)
	for _, id := range slices.Sorted(maps.Keys(approvals)) {
		at := "approvals." + id
		a, ok := approvals[id].(map[string]any)
		if !ok {
			add(file, at, "not an object")
			continue
		}
		if s, _ := a["approver"].(string); s == "" {
			add(file, at+".approver", "missing: say who approved it")
		}
		if s, _ := a["approved_on"].(string); !isDate(s) {
			add(file, at+".approved_on", "%q is not a date (YYYY-MM-DD)", s)
		}
		if s, _ := a["expires"].(string); !isTime(s) {
			add(file, at+".expires", "%q is not an RFC 3339 time (e.g. 2027-03-31T23:59:59Z)", s)
		}
		checkNames(a["purposes"], purposes, func(format string, args ...any) { add(file, at+".purposes", format, args...) })
		checkNames(a["roles"], roles, func(format string, args ...any) { add(file, at+".roles", format, args...) })
		if cat == nil {
			continue
		}
		d, ok := cat.Get(id)
		if !ok {
			add(file, at, "no definition %q in the catalogue (%s)", id, catalog.DefinitionPath(id))
			continue
		}
		if h, _ := a["hash"].(string); h != d.Hash() {
			add(file, at+".hash", "approves %q but %s now hashes to %s: the definition changed since approval and needs re-approval (haven policy hash)", h, catalog.DefinitionPath(id), d.Hash())
		}
		ranges, _ := a["parameters"].(map[string]any)
		for _, p := range d.Parameters {
			r, ok := ranges[p.Name].(map[string]any)
			if !ok {
				add(file, at+".parameters."+p.Name, "missing: every request carries parameter %s (a %s), so without a range every request is refused", p.Name, p.Type)
				continue
			}
			checkRange(p, r, func(key, format string, args ...any) {
				add(file, at+".parameters."+p.Name+"."+key, format, args...)
			})
		}
		for _, name := range slices.Sorted(maps.Keys(ranges)) {
			if _, ok := d.Parameter(name); !ok {
				add(file, at+".parameters."+name, "definition %s has no parameter %s", id, name)
			}
		}
	}

	if cat == nil {
		return errs
	}
	disclosure, _ := data["disclosure"].(map[string]any)
	kinds, _ := disclosure["measure_kinds"].([]any)
	dominance := dominanceKinds(disclosure)
	for _, d := range cat.Definitions() {
		for _, m := range d.Measures {
			if !slices.Contains(kinds, any(string(m.Agg))) {
				errs = append(errs, &catalog.Error{Pos: m.Pos, Path: "measures." + m.Name,
					Msg: fmt.Sprintf("a %s measure has no disclosure rule (data.disclosure.measure_kinds), so its table could never be released", m.Agg)})
			}
			if dominance[string(m.Agg)] && !m.Dominance {
				errs = append(errs, &catalog.Error{Pos: m.Pos, Path: "measures." + m.Name,
					Msg: fmt.Sprintf("policy applies the dominance rule to every %s measure (data.disclosure.dominance_kinds), but this one has dominance: false, so its plan carries no largest contributions and the rule could not be checked", m.Agg)})
			}
		}
	}
	return errs
}

// dominanceKinds returns the measure kinds the dominance rule applies to
// whatever the definition asks, by default or for some purpose.
func dominanceKinds(disclosure map[string]any) map[string]bool {
	out := map[string]bool{}
	add := func(settings any) {
		s, _ := settings.(map[string]any)
		list, _ := s["dominance_kinds"].([]any)
		for _, k := range list {
			if k, ok := k.(string); ok {
				out[k] = true
			}
		}
	}
	add(disclosure)
	purposes, _ := disclosure["purposes"].(map[string]any)
	for _, p := range purposes {
		add(p)
	}
	return out
}

func checkNames(v any, known map[string]any, add func(string, ...any)) {
	list, ok := v.([]any)
	if !ok || len(list) == 0 {
		add("missing or empty: approve at least one")
		return
	}
	for _, x := range list {
		s, _ := x.(string)
		if _, ok := known[s]; !ok {
			add("%v is not one of %s", x, strings.Join(slices.Sorted(maps.Keys(known)), ", "))
		}
	}
}

func checkRange(p *catalog.Parameter, r map[string]any, add func(key, format string, args ...any)) {
	for _, key := range slices.Sorted(maps.Keys(r)) {
		v := r[key]
		switch {
		case key == "values" && (p.Type == catalog.ParamEnum || p.Type == catalog.ParamCodelist):
			list, ok := v.([]any)
			if !ok || len(list) == 0 {
				add(key, "must list at least one value")
				continue
			}
			for _, x := range list {
				if s, _ := x.(string); !slices.Contains(p.Values, s) {
					add(key, "%v is not one of the definition's values %s", x, strings.Join(p.Values, ", "))
				}
			}
		case (key == "min" || key == "max") && p.Type == catalog.ParamInt:
			if n, ok := v.(json.Number); !ok || !isInt(n) {
				add(key, "%v is not a whole number", v)
			}
		case (key == "min" || key == "max") && p.Type == catalog.ParamDate:
			if s, _ := v.(string); !isDate(s) {
				add(key, "%v is not a date (YYYY-MM-DD)", v)
			}
		case key == "values" && p.Type == catalog.ParamInt:
			list, ok := v.([]any)
			if !ok || len(list) == 0 {
				add(key, "must list at least one whole number")
				continue
			}
			for _, x := range list {
				if n, ok := x.(json.Number); !ok || !isInt(n) {
					add(key, "%v is not a whole number", x)
				}
			}
		case key == "step" && p.Type == catalog.ParamInt:
			if n, ok := v.(json.Number); !ok || !isInt(n) || strings.HasPrefix(n.String(), "-") || n.String() == "0" {
				add(key, "%v is not a positive whole number", v)
			}
		case key == "step" && p.Type == catalog.ParamDate:
			if s, _ := v.(string); DateGrids[s] == "" {
				add(key, "%v is not a date grid; use one of %s", v, strings.Join(slices.Sorted(maps.Keys(DateGrids)), ", "))
			}
		default:
			add(key, "a %s parameter takes %s", p.Type, map[catalog.ParamType]string{
				catalog.ParamInt: "min, max and a grid (values or step)", catalog.ParamDate: "min, max and a grid (step)",
				catalog.ParamEnum: "values", catalog.ParamCodelist: "values",
			}[p.Type])
		}
	}
	// Every request carries every parameter, defaults included, so a
	// default off the grid would refuse every request that leaves it out.
	if g, ok := GridOf(r); ok && p.Default != nil && (p.Type == catalog.ParamInt || p.Type == catalog.ParamDate) && !g.Allows(*p.Default) {
		add("step", "the definition's default %s is not on the approved grid (%s), so every request that leaves %s out would be refused", p.Default, g, p.Name)
	}
}

func isInt(n json.Number) bool { _, err := n.Int64(); return err == nil }

func isDate(s string) bool {
	_, err := time.Parse(time.DateOnly, s)
	return err == nil
}

func isTime(s string) bool {
	_, err := time.Parse(time.RFC3339, s)
	return err == nil
}

// DefinitionFile parses the definition at p against the codelists of the
// bundle it sits in: p is BUNDLE/definitions/ID/definition.yaml and the
// codelists are BUNDLE/codelists/*.csv. A file that is not in a directory
// under definitions/ is parsed against DIR/codelists/*.csv, DIR being the
// directory it is in. It is for checking or hashing a draft before it is
// signed.
func DefinitionFile(p string) (*catalog.Definition, error) {
	src, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	root := filepath.Dir(p)
	if filepath.Base(filepath.Dir(root)) == catalog.DefinitionsDir {
		root = filepath.Dir(filepath.Dir(root))
	}
	lists, err := filepath.Glob(filepath.Join(root, catalog.CodelistsDir, "*.csv"))
	if err != nil {
		return nil, err
	}
	f := files{}
	for _, name := range lists {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		f[path.Join(catalog.CodelistsDir, filepath.Base(name))] = b
	}
	cat, err := catalog.Load(f.asFS())
	if err != nil {
		return nil, fmt.Errorf("codelists of %s: %w", root, err)
	}
	return cat.ParseDefinition(p, src)
}

// ParametersOf gives a bound definition's parameters as policy expects
// them: int parameters as numbers, dates as YYYY-MM-DD strings, enum and
// codelist values as strings. (The catalogue's wire form, Bound.Params, is
// all strings, which approved numeric ranges would refuse.)
func ParametersOf(b *catalog.Bound) map[string]any {
	out := map[string]any{}
	for _, p := range b.Definition().Parameters {
		v, ok := b.Value(p.Name)
		if !ok {
			continue
		}
		if v.Type == catalog.ParamInt {
			out[p.Name] = v.Int
		} else {
			out[p.Name] = v.String()
		}
	}
	return out
}
