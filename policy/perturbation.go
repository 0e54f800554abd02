package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/havenhealth/haven/policy/ptable"
)

// loadPTables reads and validates every perturbation table that
// data.disclosure names, for the defaults and for each purpose (which may
// name its own table and a stricter threshold), so that a bundle with a
// missing, malformed or unsafe table is refused when it is loaded rather
// than when a table is released. A table named by several scopes is checked
// against each scope's threshold and rounding base.
func loadPTables(data map[string]any, f files) (map[string]*ptable.Table, error) {
	d, _ := data["disclosure"].(map[string]any)
	if d == nil {
		return nil, nil
	}
	scopes := map[string]map[string]any{"data.disclosure": withoutPurposes(d)}
	purposes, _ := d["purposes"].(map[string]any)
	for name, p := range purposes {
		po, ok := p.(map[string]any)
		if !ok {
			continue // haven/disclose refuses it (thresholds_invalid)
		}
		scopes["data.disclosure.purposes."+name] = mergeObjects(withoutPurposes(d), po)
	}
	tables := map[string]*ptable.Table{}
	for _, scope := range slices.Sorted(func(yield func(string) bool) {
		for k := range scopes {
			if !yield(k) {
				return
			}
		}
	}) {
		s := scopes[scope]
		pert, ok := s["perturbation"]
		if !ok {
			continue
		}
		po, ok := pert.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s.perturbation must be an object", scope)
		}
		name, ok := po["table"].(string)
		if !ok || name == "" {
			return nil, fmt.Errorf("%s.perturbation.table must name a file of the bundle", scope)
		}
		th, okT := wholeNumber(s["min_cell_count"])
		base, okB := wholeNumber(s["rounding_base"])
		if !okT || !okB {
			return nil, fmt.Errorf("%s: min_cell_count and rounding_base must be whole numbers to check perturbation table %s against", scope, name)
		}
		t := tables[name]
		if t == nil {
			b, ok := f[strings.TrimPrefix(name, "/")]
			if !ok {
				return nil, fmt.Errorf("%s.perturbation.table: %s is not in the bundle", scope, name)
			}
			var err error
			if t, err = ptable.Parse(bytes.NewReader(b), name); err != nil {
				return nil, fmt.Errorf("%s.perturbation.table: %w", scope, err)
			}
		}
		if err := t.Validate(th, base); err != nil {
			return nil, fmt.Errorf("%s.perturbation.table %s (min_cell_count %d, rounding_base %d): %w", scope, name, th, base, err)
		}
		tables[name] = t
	}
	return tables, nil
}

func withoutPurposes(d map[string]any) map[string]any {
	out := make(map[string]any, len(d))
	for k, v := range d {
		if k != "purposes" {
			out[k] = v
		}
	}
	return out
}

// mergeObjects overlays b on a recursively, as Rego's object.union does.
func mergeObjects(a, b map[string]any) map[string]any {
	out := make(map[string]any, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		ao, aok := out[k].(map[string]any)
		bo, bok := v.(map[string]any)
		if aok && bok {
			out[k] = mergeObjects(ao, bo)
			continue
		}
		out[k] = v
	}
	return out
}

func wholeNumber(v any) (int, bool) {
	var f float64
	switch n := v.(type) {
	case json.Number:
		var err error
		if f, err = n.Float64(); err != nil {
			return 0, false
		}
	case float64:
		f = n
	case int:
		return n, true
	default:
		return 0, false
	}
	if f != float64(int(f)) {
		return 0, false
	}
	return int(f), true
}

// HasKeyRange reports whether r is the key range R of a perturbation table
// in the active bundle. A node derives record keys only in a range its own
// signed bundle states, so a coordinator cannot ask for wider keys (more
// bits per patient) than the network agreed to.
func (e *Engine) HasKeyRange(r int) bool {
	for _, t := range e.active.Load().ptables {
		if t.KeyRange() == r {
			return true
		}
	}
	return false
}
