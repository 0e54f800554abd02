package linkage

import (
	"fmt"
	"math"
	"slices"

	"github.com/apache/arrow/go/v17/arrow"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/disclosure"
	"github.com/havenhealth/haven/policy/catalog"
)

// maxValue is the largest count, sum or number a site may send: far above
// any real value, and low enough that totals over every site of a national
// run stay exact in an int64 and in a float64.
const maxValue = 1 << 40

// kindSpec is what the run expects from sites of one kind.
type kindSpec struct {
	kind      cdm.SiteKind
	task      catalog.SiteTask
	schema    *arrow.Schema
	exclusive bool      // one site per patient: practices, where patients are registered
	cols      []colSpec // one per field of the task, in schema order
}

// colSpec is one field of a kind's records.
type colSpec struct {
	field catalog.Field
	// store is the patient-table column (linkage) the field is combined
	// into; -1 for the pseudonym.
	store int
	// dict encodes string fields.
	dict *dictionary
	// maxDay bounds day and day-list values (inclusive); -1 when the
	// window is open-ended.
	maxDay int32
	// measure is the index of the measure a partial belongs to (aggregate).
	measure int
	// keyRange bounds a record key field (linkage): values lie in
	// [0, keyRange). 0 for every other field.
	keyRange int64
}

// varHow is how a variable's value is read from the patient table.
type varHow int

const (
	fromColumn   varHow = iota // one stored column
	firstTrust                 // an earliest-day column; the value is the winning site
	readmissions               // two day-list columns
)

// varSpec is one variable of the definition, as the linkage evaluates it.
type varSpec struct {
	name   string
	typ    catalog.ValueType
	how    varHow
	col    int // stored column; discharge days for readmissions
	col2   int // admission days for readmissions
	within int32
}

// cond is one comparison of a measure's where, resolved.
type cond struct {
	v  int // variable index
	op catalog.Op
	x  float64
}

// measureSpec is one measure of the definition.
type measureSpec struct {
	name      string
	kind      disclosure.Kind
	of        int // variable index; -1 for a count
	where     []cond
	dominance bool
	// Aggregate mode: the record fields holding the partials, by kind.
	count, sum, n, min, max, top int
	// The cell keys of the count, of n and of the sum (catalog.Partial
	// IsKey); -1 without record keys or where the plan keys none.
	key, nKey, sumKey int
	// binary says the measure is of a bool variable: a mean's sum then
	// counts patients and is keyed.
	binary bool
}

// dimSpec is one group_by variable.
type dimSpec struct {
	name string
	v    int // variable index (linkage) or field index (aggregate)
	typ  catalog.ValueType
	dict *dictionary // string dimensions; nil for bool and first trust
	site bool        // values are site ids (first trust)
}

// compile checks that the plan, definition and bound belong together and
// derives everything Add and Table need from them.
func (r *Run) compile(plan *catalog.Plan, def *catalog.Definition, b *catalog.Bound) error {
	switch {
	case plan == nil || def == nil || b == nil:
		return fmt.Errorf("linkage: plan, definition and bound parameters are all required")
	case plan.Definition != def.ID || plan.Hash != def.Hash():
		return fmt.Errorf("linkage: plan is for %s (%.12s), not definition %s (%.12s)", plan.Definition, plan.Hash, def.ID, def.Hash())
	case b.Definition() != def:
		return fmt.Errorf("linkage: parameters are bound to definition %s, not %s", b.Definition().ID, def.ID)
	case plan.Mode != catalog.ModeAggregate && plan.Mode != catalog.ModeLinkage:
		return fmt.Errorf("linkage: plan %s has unknown mode %q", plan.Definition, plan.Mode)
	case len(plan.Tasks) == 0:
		return fmt.Errorf("linkage: plan %s has no tasks", plan.Definition)
	}
	r.plan, r.def, r.bound, r.mode = plan, def, b, plan.Mode
	r.keyCol = -1
	switch {
	case plan.RecordKeys && (r.opts.KeyRange < 1 || r.opts.KeyRange > 1<<20):
		return fmt.Errorf("linkage: plan %s carries record keys but the key range %d is not from 1 to 2^20", plan.Definition, r.opts.KeyRange)
	case !plan.RecordKeys && r.opts.KeyRange != 0:
		return fmt.Errorf("linkage: a key range is set but plan %s carries no record keys", plan.Definition)
	}

	dicts := map[string]*dictionary{} // by variable name
	dictFor := func(v *catalog.Variable) *dictionary {
		if d, ok := dicts[v.Name]; ok {
			return d
		}
		d := newDictionary(vocabulary(v.Expr))
		dicts[v.Name] = d
		return d
	}
	for _, v := range def.Variables {
		r.vars = append(r.vars, varSpec{name: v.Name, typ: v.Expr.Type(), col: -1, col2: -1})
	}
	varIndex := func(name string) (int, error) {
		i := slices.IndexFunc(r.vars, func(v varSpec) bool { return v.name == name })
		if i < 0 {
			return 0, fmt.Errorf("linkage: plan %s names variable %q, which definition %s lacks", plan.Definition, name, def.ID)
		}
		return i, nil
	}

	for _, t := range plan.Tasks {
		schema, _ := plan.Schema(t.Kind)
		ks := &kindSpec{kind: t.Kind, task: t, schema: schema, exclusive: t.Kind == cdm.KindGP}
		wantRows := catalog.RowsPatients
		if r.mode == catalog.ModeAggregate {
			wantRows = catalog.RowsCells
		}
		if t.Rows != wantRows {
			return fmt.Errorf("linkage: %s task of plan %s returns %s in %s mode", t.Kind, plan.Definition, t.Rows, r.mode)
		}
		if r.kinds[t.Kind] != nil {
			return fmt.Errorf("linkage: plan %s has two %s tasks", plan.Definition, t.Kind)
		}
		for i, f := range t.Fields {
			c := colSpec{field: f, store: -1, maxDay: -1, measure: -1}
			if f.Role == catalog.RoleGroup || f.Type == catalog.FieldString {
				v, ok := def.Variable(f.Source)
				if !ok {
					return fmt.Errorf("linkage: field %s of plan %s comes from unknown variable %q", f.Name, plan.Definition, f.Source)
				}
				if f.Type == catalog.FieldString {
					c.dict = dictFor(v)
				}
			}
			if f.Anchor != nil {
				c.maxDay = r.windowDays(def, f)
			}
			if f.Role == catalog.RoleRecordKey {
				c.keyRange = int64(r.opts.KeyRange)
			}
			if err := r.checkField(ks, i, f); err != nil {
				return err
			}
			ks.cols = append(ks.cols, c)
		}
		r.kinds[t.Kind] = ks
	}

	for _, m := range def.Measures {
		ms := measureSpec{name: m.Name, kind: disclosure.Kind(m.Agg), of: -1, dominance: m.Dominance,
			count: -1, sum: -1, n: -1, min: -1, max: -1, top: -1, key: -1, nKey: -1, sumKey: -1}
		if m.Agg != catalog.AggCount {
			i, err := varIndex(m.Of)
			if err != nil {
				return err
			}
			ms.of = i
			ms.binary = r.vars[i].typ == catalog.TypeBool
		}
		if m.Where != nil {
			for _, term := range m.Where.Terms {
				i, err := varIndex(term.Var)
				if err != nil {
					return err
				}
				ms.where = append(ms.where, cond{v: i, op: term.Op, x: b.Number(term.Value)})
			}
		}
		r.measures = append(r.measures, ms)
		dm := disclosure.Measure{Name: m.Name, Kind: ms.kind,
			Dominance:  m.Dominance && (ms.kind == disclosure.KindSum || ms.kind == disclosure.KindMean),
			GroupTotal: m.Agg == catalog.AggCount && m.Where == nil}
		if ms.of >= 0 {
			dm.Values = valueKind(r.vars[ms.of].typ)
		}
		r.table.Measures = append(r.table.Measures, dm)
	}
	r.table.Dims = slices.Clone(def.GroupBy)

	if r.mode == catalog.ModeAggregate {
		return r.compileCells(dictFor)
	}
	return r.compilePatients(dictFor, varIndex)
}

// valueKind is the disclosure value kind of a variable of type t: how
// strictly a mean of it is controlled. Every int variable of the catalogue
// (age, counts of events, readmissions) is a whole number ≥ 0; a type this
// does not know is left unspecified, which disclosure controls as integer.
func valueKind(t catalog.ValueType) disclosure.ValueKind {
	switch t {
	case catalog.TypeBool:
		return disclosure.ValueBinary
	case catalog.TypeInt:
		return disclosure.ValueInteger
	case catalog.TypeFloat:
		return disclosure.ValueContinuous
	}
	return disclosure.ValueUnspecified
}

// checkField rejects field shapes the run does not know how to combine, so
// a plan from a newer catalogue fails here rather than mid-run.
func (r *Run) checkField(ks *kindSpec, i int, f catalog.Field) error {
	bad := func(why string) error {
		return fmt.Errorf("linkage: plan %s: %s field %s (%s, %s, combine %s): %s", r.plan.Definition, ks.kind, f.Name, f.Type, f.Role, f.Combine, why)
	}
	if r.mode == catalog.ModeAggregate {
		switch f.Role {
		case catalog.RoleGroup:
			if f.Type != catalog.FieldString && f.Type != catalog.FieldBool {
				return bad("group fields are strings or bools")
			}
		case catalog.RolePartial:
		default:
			return bad("aggregate plans carry group and partial fields only")
		}
		return nil
	}
	if i == 0 {
		if f.Role != catalog.RoleKey || f.Type != catalog.FieldPseudonym {
			return bad("the first field of a patient row is the pseudonym")
		}
		return nil
	}
	if f.Role == catalog.RoleRecordKey {
		// The same key comes from every site that has the patient (it is
		// derived from the NHS number alone), so a practice sends it once
		// and trusts' copies are combined by taking any, the smallest.
		want := catalog.CombineMin
		if ks.exclusive {
			want = catalog.CombineOnce
		}
		switch {
		case !r.plan.RecordKeys:
			return bad("a record key in a plan without record keys")
		case i != 1 || ks.kind != r.plan.Population:
			return bad("record keys come right after the pseudonym, from the sites that evaluate the population")
		case f.Type != catalog.FieldInt64 || f.Nullable || f.Combine != want:
			return bad("a record key is a non-null int64 combined " + string(want))
		}
		return nil
	}
	if ks.exclusive {
		if f.Role != catalog.RoleVariable || f.Combine != catalog.CombineOnce {
			return bad("a practice's fields are its own patients' values (combine once)")
		}
		if f.Type == catalog.FieldDay || f.Type == catalog.FieldDays || f.Type == catalog.FieldPseudonym {
			return bad("not supported from practices")
		}
		return nil
	}
	ok := false
	switch f.Combine {
	case catalog.CombineSum:
		ok = f.Type == catalog.FieldInt64 || f.Type == catalog.FieldFloat64
	case catalog.CombineAny:
		ok = f.Type == catalog.FieldBool
	case catalog.CombineMin, catalog.CombineMax:
		ok = f.Type == catalog.FieldInt64 || f.Type == catalog.FieldFloat64 || f.Type == catalog.FieldString
	case catalog.CombineConcat:
		ok = f.Type == catalog.FieldDays
	case catalog.CombineEarliest:
		ok = f.Type == catalog.FieldDay
	}
	if !ok || (f.Role == catalog.RolePopulation) != (f.Name == catalog.FieldNameInPopulation) {
		return bad("not supported")
	}
	return nil
}

// windowDays is the largest day a day field may carry: the length of the
// window its days count from, plus the readmission follow-up for admission
// days. -1 when the window has no end.
func (r *Run) windowDays(def *catalog.Definition, f catalog.Field) int32 {
	v, ok := def.Variable(f.Source)
	if !ok {
		return -1
	}
	from := r.bound.Date(*f.Anchor)
	var to *catalog.DateExpr
	var extra int64
	switch x := v.Expr.(type) {
	case *catalog.FirstTrustVar:
		to = x.Events.Window.To
	case *catalog.ReadmissionsVar:
		to = x.Index.Window.To
		if f.Name == v.Name+"__admission_days" {
			extra = r.bound.Int(x.WithinDays)
		}
	}
	if to == nil {
		return -1
	}
	n := int64(r.bound.Date(*to)) - int64(from) + extra
	if n < 0 || n > math.MaxInt32 {
		return -1
	}
	return int32(n)
}

// compileCells maps each measure to its partial fields.
func (r *Run) compileCells(dictFor func(*catalog.Variable) *dictionary) error {
	ks := r.kinds[cdm.KindGP]
	if ks == nil || len(r.kinds) != 1 {
		return fmt.Errorf("linkage: aggregate plan %s must have exactly one task, for practices", r.plan.Definition)
	}
	for i := range ks.cols {
		c := &ks.cols[i]
		f := c.field
		if f.Role != catalog.RolePartial {
			continue
		}
		j := slices.IndexFunc(r.measures, func(m measureSpec) bool { return m.name == f.Source })
		if j < 0 {
			return fmt.Errorf("linkage: partial %s of plan %s belongs to unknown measure %q", f.Name, r.plan.Definition, f.Source)
		}
		c.measure = j
		m := &r.measures[j]
		var slot *int
		switch f.Partial {
		case catalog.PartialCount:
			slot = &m.count
		case catalog.PartialSum:
			slot = &m.sum
		case catalog.PartialN:
			slot = &m.n
		case catalog.PartialMin:
			slot = &m.min
		case catalog.PartialMax:
			slot = &m.max
		case catalog.PartialTop:
			slot = &m.top
		case catalog.PartialKey, catalog.PartialNKey, catalog.PartialSumKey:
			ok := f.Combine == catalog.CombineKeySum
			switch f.Partial {
			case catalog.PartialKey:
				ok, slot = ok && m.kind == disclosure.KindCount, &m.key
			case catalog.PartialNKey:
				ok, slot = ok && (m.kind == disclosure.KindSum || m.kind == disclosure.KindMean), &m.nKey
			case catalog.PartialSumKey:
				ok, slot = ok && m.kind == disclosure.KindMean && m.binary, &m.sumKey
			}
			if !ok {
				return fmt.Errorf("linkage: partial %s of plan %s: a cell key belongs to a count, a sum's or mean's n, or a bool mean's sum, and is combined as a key sum", f.Name, r.plan.Definition)
			}
		}
		if slot == nil || *slot >= 0 {
			return fmt.Errorf("linkage: partial %s of plan %s: unexpected or repeated partial %q", f.Name, r.plan.Definition, f.Partial)
		}
		counted := f.Partial == catalog.PartialCount || f.Partial == catalog.PartialN || f.Partial.IsKey()
		if (counted && f.Type != catalog.FieldInt64) || (f.Type != catalog.FieldInt64 && f.Type != catalog.FieldFloat64) {
			return fmt.Errorf("linkage: partial %s of plan %s: a %s partial cannot be %s", f.Name, r.plan.Definition, f.Partial, f.Type)
		}
		*slot = i
	}
	for _, m := range r.measures {
		var missing bool
		switch m.kind {
		case disclosure.KindCount:
			missing = m.count < 0 || (r.plan.RecordKeys && m.key < 0)
		case disclosure.KindSum, disclosure.KindMean:
			missing = m.sum < 0 || m.n < 0 || (m.dominance && m.top < 0) ||
				(r.plan.RecordKeys && (m.nKey < 0 || (m.kind == disclosure.KindMean && m.binary && m.sumKey < 0)))
		case disclosure.KindMin:
			missing = m.min < 0 || m.n < 0
		case disclosure.KindMax:
			missing = m.max < 0 || m.n < 0
		}
		if missing {
			return fmt.Errorf("linkage: plan %s lacks a partial of %s measure %s", r.plan.Definition, m.kind, m.name)
		}
	}
	for _, g := range r.def.GroupBy {
		i := slices.IndexFunc(ks.cols, func(c colSpec) bool { return c.field.Role == catalog.RoleGroup && c.field.Source == g })
		if i < 0 {
			return fmt.Errorf("linkage: plan %s sends no group field for %s", r.plan.Definition, g)
		}
		v, _ := r.def.Variable(g)
		r.dims = append(r.dims, dimSpec{name: g, v: i, typ: v.Expr.Type(), dict: ks.cols[i].dict})
	}
	return nil
}

// compilePatients lays out the patient table's columns and says how each
// variable is read from them.
func (r *Run) compilePatients(dictFor func(*catalog.Variable) *dictionary, varIndex func(string) (int, error)) error {
	popKind := r.plan.Population
	if r.kinds[popKind] == nil {
		return fmt.Errorf("linkage: plan %s evaluates the population at %s sites but has no %s task", r.plan.Definition, popKind, popKind)
	}
	r.popKind, r.popCol = popKind, -1
	for _, k := range cdm.SiteKinds() {
		ks := r.kinds[k]
		if ks == nil {
			continue
		}
		for i := 1; i < len(ks.cols); i++ {
			c := &ks.cols[i]
			c.store = len(r.layout)
			r.layout = append(r.layout, storeSpec{typ: c.field.Type, combine: c.field.Combine, exclusive: ks.exclusive, dict: c.dict})
			if c.field.Role == catalog.RoleRecordKey {
				r.keyCol = c.store
			}
			if c.field.Role == catalog.RolePopulation {
				if k != popKind {
					return fmt.Errorf("linkage: plan %s: %s sites send %s but the population is evaluated at %s sites", r.plan.Definition, k, c.field.Name, popKind)
				}
				r.popCol = c.store
			}
		}
	}
	if r.plan.RecordKeys && r.keyCol < 0 {
		return fmt.Errorf("linkage: plan %s carries record keys but its %s task sends none", r.plan.Definition, popKind)
	}
	for vi := range r.vars {
		vs := &r.vars[vi]
		v, _ := r.def.Variable(vs.name)
		var ks *kindSpec
		for _, k := range r.kinds {
			if slices.Contains(k.task.Variables, vs.name) {
				ks = k
			}
		}
		if ks == nil {
			return fmt.Errorf("linkage: plan %s has no task that derives variable %s", r.plan.Definition, vs.name)
		}
		field := func(name string) (int, error) {
			i := slices.IndexFunc(ks.cols, func(c colSpec) bool { return c.field.Name == name && c.field.Source == vs.name })
			if i < 0 {
				return -1, fmt.Errorf("linkage: plan %s: %s sites send no field %s for variable %s", r.plan.Definition, ks.kind, name, vs.name)
			}
			return ks.cols[i].store, nil
		}
		var err error
		switch x := v.Expr.(type) {
		case *catalog.ReadmissionsVar:
			vs.how = readmissions
			vs.within = int32(min(r.bound.Int(x.WithinDays), math.MaxInt32))
			if vs.col, err = field(vs.name + "__discharge_days"); err == nil {
				vs.col2, err = field(vs.name + "__admission_days")
			}
		case *catalog.FirstTrustVar:
			vs.how = firstTrust
			vs.col, err = field(vs.name + "__first_day")
		default:
			vs.how = fromColumn
			vs.col, err = field(vs.name)
		}
		if err != nil {
			return err
		}
	}
	for _, g := range r.def.GroupBy {
		i, err := varIndex(g)
		if err != nil {
			return err
		}
		d := dimSpec{name: g, v: i, typ: r.vars[i].typ}
		switch {
		case r.vars[i].how == firstTrust:
			d.site = true
		case d.typ == catalog.TypeString:
			v, _ := r.def.Variable(g)
			d.dict = dictFor(v)
		case d.typ != catalog.TypeBool:
			return fmt.Errorf("linkage: definition %s groups by %s, a %s; only strings and bools can be grouped on", r.def.ID, g, d.typ)
		}
		r.dims = append(r.dims, d)
	}
	return nil
}

// vocabulary returns the values a string variable can take, in their
// natural order, or nil when they are not known in advance (ODS codes).
func vocabulary(v catalog.VarExpr) []string {
	switch x := v.(type) {
	case *catalog.AgeBandVar:
		bands := x.Bands()
		out := make([]string, len(bands))
		for i, b := range bands {
			out[i] = b.Label
		}
		return out
	case *catalog.ColumnVar:
		if t, ok := cdm.Lookup(x.Table()); ok {
			if c, ok := t.Column(x.Column); ok && len(c.Vocabulary) > 0 {
				return slices.Clone(c.Vocabulary)
			}
		}
	}
	return nil
}
