package catalog

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/havenhealth/haven/cdm"
)

// Event selections: which CDM table, which codes, which column filters.

// eventTable describes a CDM table that records events a definition can
// select: which column dates them and which holds their codes.
type eventTable struct {
	table      cdm.Table
	dateColumn string
	codeColumn string
	system     CodeSystem
}

func lookupEventTable(name string) (eventTable, bool) {
	t, ok := cdm.Lookup(name)
	if !ok {
		return eventTable{}, false
	}
	et := eventTable{table: t}
	switch t.Name {
	case cdm.TableClinicalEvent:
		et.dateColumn, et.codeColumn, et.system = cdm.ColEventDate, cdm.ColSNOMEDCode, SNOMEDCT
	case cdm.TableMedication:
		et.dateColumn, et.codeColumn, et.system = cdm.ColIssueDate, cdm.ColDMDCode, DMD
	case cdm.TableAPCEpisode:
		et.dateColumn, et.codeColumn, et.system = cdm.ColAdmissionDate, cdm.ColPrimaryDiagnosis, ICD10
	case cdm.TableAEAttendance:
		et.dateColumn, et.codeColumn, et.system = cdm.ColArrivalDate, cdm.ColDiagnosisSNOMED, SNOMEDCT
	default:
		return eventTable{}, false
	}
	return et, true
}

func eventTableNames() []string {
	return []string{cdm.TableClinicalEvent, cdm.TableMedication, cdm.TableAPCEpisode, cdm.TableAEAttendance}
}

// tableSite is the kind of site that holds a table, or "" for tables every
// site holds (patient), which are read where the population is evaluated.
func tableSite(name string) cdm.SiteKind {
	t, ok := cdm.Lookup(name)
	if !ok || len(t.HeldBy) != 1 {
		return ""
	}
	return t.HeldBy[0]
}

// tableRef resolves the `table` field of an event selection.
func (p *parser) tableRef(n *yaml.Node, path string) (eventTable, bool) {
	name, ok := p.str(n, path)
	if !ok {
		return eventTable{}, false
	}
	if et, ok := lookupEventTable(name); ok {
		return et, true
	}
	switch name {
	case cdm.TableOptOut:
		p.errorf(n, path, "table opt_out cannot be queried: nodes apply opt-outs to every query themselves")
	case cdm.TablePatient:
		p.errorf(n, path, "table patient holds one row per person: use column, age or age_band variables, or age_on and alive_on criteria")
	case cdm.TableRegistration:
		p.errorf(n, path, "table registration is read by registered_on and registered_practice, not as events")
	default:
		p.errorf(n, path, "unknown table %q%s", name, suggest(name, eventTableNames()))
	}
	return eventTable{}, false
}

// events reads an event selection: table (unless implied), codelist,
// where, and a date window. extra lists further fields the caller reads
// itself.
func (p *parser) events(n *yaml.Node, path string, implied string, extra ...string) (Events, fieldSet, bool) {
	allowed := append([]string{"codelist", "where", "between", "on_or_before", "on_or_after"}, extra...)
	if implied == "" {
		allowed = append(allowed, "table")
	}
	var ev Events
	fs, ok := p.fields(n, path, allowed...)
	if !ok {
		return ev, fs, false
	}
	var et eventTable
	if implied != "" {
		et, _ = lookupEventTable(implied)
	} else {
		if !p.require(fs, "table") {
			return ev, fs, false
		}
		if et, ok = p.tableRef(fs.get("table"), fs.at("table")); !ok {
			return ev, fs, false
		}
	}
	ev.Table, ev.DateColumn, ev.CodeColumn = et.table.Name, et.dateColumn, et.codeColumn
	good := true
	if c := fs.get("codelist"); c != nil {
		ev.Codelist, ok = p.codelistRef(c, fs.at("codelist"), et)
		good = good && ok
	}
	if w := fs.get("where"); w != nil {
		ev.Where, ok = p.filters(w, fs.at("where"), et.table)
		good = good && ok
	}
	ev.Window, ok = p.window(fs)
	good = good && ok
	return ev, fs, good
}

func (p *parser) codelistRef(n *yaml.Node, path string, et eventTable) (*CodelistRef, bool) {
	s, ok := p.str(n, path)
	if !ok {
		return nil, false
	}
	check := func(c *Codelist, how string) bool {
		if c.System != et.system {
			p.errorf(n, path, "%scodelist %s holds %s codes but %s.%s holds %s codes", how, c.Name, c.System, et.table.Name, et.codeColumn, et.system)
			return false
		}
		return true
	}
	if name, isParam := strings.CutPrefix(s, "$"); isParam {
		if !p.useParam(n, 0, path, name, ParamCodelist, false) {
			return nil, false
		}
		good := true
		for _, v := range p.allowed(name) {
			if !check(p.codelists[v], fmt.Sprintf("$%s allows %s: ", name, v)) {
				good = false
			}
		}
		return &CodelistRef{Param: name}, good
	}
	c, ok := p.codelists[s]
	if !ok {
		if !p.broken[s] {
			p.errorf(n, path, "unknown codelist %q%s", s, suggest(s, slices.Sorted(maps.Keys(p.codelists))))
		}
		return nil, false
	}
	p.usedCodelists[s] = c
	if !check(c, "") {
		return nil, false
	}
	return &CodelistRef{Name: s}, true
}

// filters reads `where: {column: value | [values] | $enum_param}`.
func (p *parser) filters(n *yaml.Node, path string, t cdm.Table) ([]Filter, bool) {
	es, ok := p.entries(n, path)
	if !ok {
		return nil, false
	}
	if len(es) == 0 {
		p.errorf(n, path, "empty where: remove it or name a column")
		return nil, false
	}
	var out []Filter
	good := true
	for _, e := range es {
		cpath := join(path, e.key)
		col, ok := p.filterColumn(e, cpath, t)
		if !ok {
			good = false
			continue
		}
		f := Filter{Column: col.Name}
		if f.Values, f.Param, ok = p.filterValues(e.val, cpath, t, col); !ok {
			good = false
			continue
		}
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b Filter) int { return strings.Compare(a.Column, b.Column) })
	return out, good
}

func (p *parser) filterColumn(e entry, path string, t cdm.Table) (cdm.Column, bool) {
	if tbl, _, dotted := strings.Cut(e.key, "."); dotted {
		p.errorf(e.keyNode, path, "a variable reads one table (%s); %q names a column of %s", t.Name, e.key, tbl)
		return cdm.Column{}, false
	}
	col, ok := t.Column(e.key)
	if !ok {
		var elsewhere []string
		for _, other := range cdm.Tables() {
			if _, has := other.Column(e.key); has {
				elsewhere = append(elsewhere, other.Name)
			}
		}
		if len(elsewhere) > 0 {
			p.errorf(e.keyNode, path, "column %q is not in table %s but in %s: a variable reads one table", e.key, t.Name, strings.Join(elsewhere, ", "))
		} else {
			p.errorf(e.keyNode, path, "unknown column %q in table %s%s", e.key, t.Name, suggest(e.key, t.ColumnNames()))
		}
		return cdm.Column{}, false
	}
	if len(col.Vocabulary) == 0 {
		var vocab []string
		for _, c := range t.Columns {
			if len(c.Vocabulary) > 0 {
				vocab = append(vocab, c.Name)
			}
		}
		hint := "; select codes with a codelist"
		if len(vocab) > 0 {
			hint = fmt.Sprintf("; %s can be filtered, codes need a codelist", strings.Join(vocab, ", "))
		}
		p.errorf(e.keyNode, path, "column %s.%s has no fixed vocabulary to filter on%s", t.Name, col.Name, hint)
		return cdm.Column{}, false
	}
	return col, true
}

func (p *parser) filterValues(n *yaml.Node, path string, t cdm.Table, col cdm.Column) ([]string, string, bool) {
	inVocab := func(v string, at *yaml.Node, atPath string) bool {
		if !slices.Contains(col.Vocabulary, v) {
			p.errorf(at, atPath, "%q is not a value of %s.%s%s", v, t.Name, col.Name, suggest(v, col.Vocabulary))
			return false
		}
		return true
	}
	if n.Kind == yaml.ScalarNode {
		s, ok := p.str(n, path)
		if !ok {
			return nil, "", false
		}
		if name, isParam := strings.CutPrefix(s, "$"); isParam {
			if !p.useParam(n, 0, path, name, ParamEnum, false) {
				return nil, "", false
			}
			good := true
			for _, v := range p.allowed(name) {
				if !slices.Contains(col.Vocabulary, v) {
					p.errorf(n, path, "$%s allows %q, which is not a value of %s.%s", name, v, t.Name, col.Name)
					good = false
				}
			}
			return nil, name, good
		}
		if !inVocab(s, n, path) {
			return nil, "", false
		}
		return []string{s}, "", true
	}
	items, ok := p.seq(n, path)
	if !ok {
		return nil, "", false
	}
	if len(items) == 0 {
		p.errorf(n, path, "empty list of values: nothing would match")
		return nil, "", false
	}
	var vals []string
	good := true
	for i, it := range items {
		ipath := index(path, i)
		s, ok := p.str(it, ipath)
		if !ok || !inVocab(s, it, ipath) {
			good = false
			continue
		}
		if slices.Contains(vals, s) {
			p.errorf(it, ipath, "duplicate value %q", s)
			good = false
			continue
		}
		vals = append(vals, s)
	}
	slices.Sort(vals)
	return vals, "", good
}
