package sqlgen

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/policy/catalog"
)

// reference computes in plain Go, from a site's raw rows, what a compiled
// program must return there. It follows the semantics in doc.go one rule
// at a time and shares no code with the compiler.
type reference struct {
	t    testing.TB
	b    *catalog.Bound
	def  *catalog.Definition
	task catalog.SiteTask
	sd   *siteData
	ndop map[string]bool

	patients map[string]*patientRow           // valid numbers, rows merged
	regs     map[string][]registrationRow     // valid numbers
	events   map[string]map[string][]eventRow // table → valid number → rows
	type1    map[string]bool
}

func newReference(t testing.TB, b *catalog.Bound, kind cdm.SiteKind, sd *siteData, ndop []string) *reference {
	task, ok := b.Definition().Plan().Task(kind)
	if !ok {
		t.Fatalf("%s: no %s task", b.Definition().ID, kind)
	}
	r := &reference{t: t, b: b, def: b.Definition(), task: task, sd: sd, ndop: map[string]bool{},
		patients: map[string]*patientRow{}, regs: map[string][]registrationRow{},
		events: map[string]map[string][]eventRow{}, type1: map[string]bool{}}
	for _, n := range ndop {
		r.ndop[n] = true
	}
	for _, p := range sd.patients {
		if !cdm.ValidNHSNumber(p.nhs) {
			continue
		}
		m, ok := r.patients[p.nhs]
		if !ok {
			c := p
			r.patients[p.nhs] = &c
			continue
		}
		// Several rows for one number: the smallest of each column.
		m.birth = minDate(m.birth, p.birth)
		m.death = minDate(m.death, p.death)
		m.sex = min(m.sex, p.sex)
		m.practice = minString(m.practice, p.practice)
	}
	for _, g := range sd.regs {
		if cdm.ValidNHSNumber(g.nhs) {
			r.regs[g.nhs] = append(r.regs[g.nhs], g)
		}
	}
	for table, rows := range sd.events {
		byNHS := map[string][]eventRow{}
		for _, e := range rows {
			if cdm.ValidNHSNumber(e.nhs) {
				byNHS[e.nhs] = append(byNHS[e.nhs], e)
			}
		}
		r.events[table] = byNHS
	}
	for _, o := range sd.optOuts {
		if o.kind == cdm.OptOutType1 {
			r.type1[o.nhs] = true
		}
	}
	return r
}

func minDate(a, b *catalog.Date) *catalog.Date {
	switch {
	case a == nil:
		return b
	case b == nil || *a <= *b:
		return a
	}
	return b
}

func minString(a, b *string) *string {
	switch {
	case a == nil:
		return b
	case b == nil || *a <= *b:
		return a
	}
	return b
}

func (r *reference) death(nhs string) *catalog.Date {
	if p := r.patients[nhs]; p != nil {
		return p.death
	}
	return nil
}

func (r *reference) optedOut(nhs string) bool {
	return r.ndop[nhs] || (r.task.Kind == cdm.KindGP && r.type1[nhs])
}

func ageOn(birth *catalog.Date, on catalog.Date) (int64, bool) {
	if birth == nil {
		return 0, false
	}
	by, bm, bd := birth.Time().Date()
	oy, om, od := on.Time().Date()
	age := int64(oy - by)
	if int(om)*100+od < int(bm)*100+bd {
		age--
	}
	return age, true
}

func (r *reference) registeredHere(nhs string, on catalog.Date) *string {
	var best *string
	for _, g := range r.regs[nhs] {
		if g.ods == r.sd.site.ODS && g.start != nil && *g.start <= on && (g.end == nil || *g.end > on) {
			best = minString(best, &g.ods)
		}
	}
	return best
}

// eventDate returns the value of a date column of row e.
func (r *reference) eventDate(e eventRow, column string) *catalog.Date {
	if column == cdm.ColDischargeDate {
		return e.discharge
	}
	return &e.date
}

// matches reports whether row e of ev's table is one of the patient's
// events under ev.
func (r *reference) matches(ev catalog.Events, e eventRow, death *catalog.Date) bool {
	w := r.b.Window(ev.Window)
	d := r.eventDate(e, ev.DateColumn)
	if d == nil || (w.From != nil && *d < *w.From) || (w.To != nil && *d > *w.To) {
		return false
	}
	if ev.Codelist != nil {
		cl := r.b.Codelist(*ev.Codelist)
		if e.code == nil || !cl.Matches(*e.code) {
			return false
		}
	}
	// A row with a bad numeric value is left out (cdm.ValidValue).
	if e.value != nil {
		code := ""
		if e.code != nil {
			code = *e.code
		}
		if !cdm.ValidValue(ev.Table, cdm.ColNumericValue, code, *e.value) {
			return false
		}
	}
	for _, f := range ev.Where {
		if f.Column != cdm.ColAdmissionMethod {
			r.t.Fatalf("reference: no filter on %s", f.Column)
		}
		if !slices.Contains(r.b.FilterValues(f), e.method) {
			return false
		}
	}
	return death == nil || e.date <= *death
}

func (r *reference) matching(ev catalog.Events, nhs string) []eventRow {
	var out []eventRow
	death := r.death(nhs)
	for _, e := range r.events[ev.Table][nhs] {
		if r.matches(ev, e, death) {
			out = append(out, e)
		}
	}
	return out
}

// identity tells events apart: rows equal in it are one event.
func identity(table string, e eventRow) string {
	code := "<null>"
	if e.code != nil {
		code = *e.code
	}
	switch table {
	case cdm.TableAPCEpisode:
		return e.episode
	case cdm.TableClinicalEvent:
		v := "<null>"
		if e.value != nil {
			v = fmt.Sprint(*e.value)
		}
		return fmt.Sprint(e.date, "|", code, "|", v)
	}
	return fmt.Sprint(e.date, "|", code)
}

func (r *reference) holds(c catalog.Criterion, nhs string) bool {
	p := r.patients[nhs]
	switch c := c.(type) {
	case *catalog.AgeCriterion:
		var birth *catalog.Date
		if p != nil {
			birth = p.birth
		}
		age, ok := ageOn(birth, r.b.Date(c.On))
		if !ok {
			return false
		}
		return (c.Min == nil || age >= r.b.Int(*c.Min)) && (c.Max == nil || age <= r.b.Int(*c.Max))
	case *catalog.AliveCriterion:
		d := r.death(nhs)
		return d == nil || *d > r.b.Date(c.On)
	case *catalog.EventCriterion:
		return len(r.matching(c.Events, nhs)) > 0
	case *catalog.AllOf:
		for _, x := range c.Criteria {
			if !r.holds(x, nhs) {
				return false
			}
		}
		return true
	case *catalog.AnyOf:
		for _, x := range c.Criteria {
			if r.holds(x, nhs) {
				return true
			}
		}
		return false
	case *catalog.NoneOf:
		for _, x := range c.Criteria {
			if r.holds(x, nhs) {
				return false
			}
		}
		return true
	}
	r.t.Fatalf("reference: criterion %T", c)
	return false
}

func (r *reference) inPopulation(nhs string) bool {
	for _, c := range r.def.Population.Criteria {
		if !r.holds(c, nhs) {
			return false
		}
	}
	return true
}

// gpPopulation lists the practice's population, sorted.
func (r *reference) gpPopulation() []string {
	on := r.b.Date(*r.def.Population.RegisteredOn)
	var out []string
	for nhs := range r.patients {
		if r.registeredHere(nhs, on) != nil && !r.optedOut(nhs) && r.inPopulation(nhs) {
			out = append(out, nhs)
		}
	}
	slices.Sort(out)
	return out
}

// variable computes v for nhs: its fields, and whether it gives the
// patient something to report.
func (r *reference) variable(v *catalog.Variable, nhs string) (map[string]any, bool) {
	p := r.patients[nhs]
	one := func(x any) map[string]any { return map[string]any{v.Name: x} }
	switch x := v.Expr.(type) {
	case *catalog.ColumnVar:
		if p == nil {
			return one(nil), false
		}
		switch x.Column {
		case cdm.ColSex:
			return one(p.sex), false
		case cdm.ColPracticeODS:
			if p.practice == nil {
				return one(nil), false
			}
			return one(*p.practice), false
		}
		r.t.Fatalf("reference: column %s", x.Column)
	case *catalog.AgeVar, *catalog.AgeBandVar:
		var birth *catalog.Date
		if p != nil {
			birth = p.birth
		}
		var on catalog.DateExpr
		if a, ok := x.(*catalog.AgeVar); ok {
			on = a.On
		} else {
			on = x.(*catalog.AgeBandVar).On
		}
		age, ok := ageOn(birth, r.b.Date(on))
		if !ok {
			return one(nil), false
		}
		band, isBand := x.(*catalog.AgeBandVar)
		if !isBand {
			return one(age), false
		}
		for _, b := range band.Bands() {
			if age >= b.Min && (b.Max < 0 || age <= b.Max) {
				return one(b.Label), false
			}
		}
		return one(nil), false
	case *catalog.PracticeVar:
		if ods := r.registeredHere(nhs, r.b.Date(x.On)); ods != nil {
			return one(*ods), false
		}
		return one(nil), false
	case *catalog.CountVar:
		seen := map[string]bool{}
		for _, e := range r.matching(x.Events, nhs) {
			seen[identity(x.Events.Table, e)] = true
		}
		return one(int64(len(seen))), len(seen) > 0
	case *catalog.ExistsVar:
		ok := len(r.matching(x.Events, nhs)) > 0
		return one(ok), ok
	case *catalog.LatestVar:
		var best *eventRow
		for _, e := range r.matching(x.Events, nhs) {
			if e.value == nil {
				continue
			}
			if best == nil || e.date > best.date || (e.date == best.date && *e.value > *best.value) {
				best = &e
			}
		}
		if best == nil {
			return one(nil), false
		}
		return one(*best.value), true
	case *catalog.FirstTrustVar:
		from := r.b.Date(*x.Events.Window.From)
		var first *catalog.Date
		for _, e := range r.matching(x.Events, nhs) {
			first = minDate(first, r.eventDate(e, x.Events.DateColumn))
		}
		if first == nil {
			return map[string]any{v.Name + "__first_day": nil}, false
		}
		return map[string]any{v.Name + "__first_day": int64(*first - from)}, true
	case *catalog.ReadmissionsVar:
		w := r.b.Window(x.Index.Window)
		last := catalog.Date(int64(*w.To) + r.b.Int(x.WithinDays))
		admissions := catalog.Events{Table: cdm.TableAPCEpisode, DateColumn: cdm.ColAdmissionDate, Where: x.Where,
			Window: catalog.Window{From: &catalog.DateExpr{Date: *w.From}, To: &catalog.DateExpr{Date: last}}}
		days := func(ev catalog.Events) []int64 {
			seen := map[string]bool{}
			out := []int64{}
			for _, e := range r.matching(ev, nhs) {
				d := int64(*r.eventDate(e, ev.DateColumn) - *w.From)
				if k := fmt.Sprint(e.episode, "|", d); !seen[k] {
					seen[k] = true
					out = append(out, d)
				}
			}
			slices.Sort(out)
			return out
		}
		dis, adm := days(x.Index), days(admissions)
		return map[string]any{v.Name + "__discharge_days": dis, v.Name + "__admission_days": adm}, len(dis) > 0 || len(adm) > 0
	}
	r.t.Fatalf("reference: variable %T", v.Expr)
	return nil, false
}

// vars computes every variable of the task for nhs.
func (r *reference) vars(nhs string) (map[string]any, bool) {
	out := map[string]any{}
	report := false
	for _, name := range r.task.Variables {
		v, _ := r.def.Variable(name)
		f, rep := r.variable(v, nhs)
		for k, x := range f {
			out[k] = x
		}
		report = report || rep
	}
	return out, report
}

// patients is the expected linkage Result.
func (r *reference) patientRows() [][]any {
	var subjects []string
	switch {
	case r.task.Kind == cdm.KindGP:
		subjects = r.gpPopulation()
	default:
		keys := map[string]bool{}
		if r.task.EvaluatesPopulation {
			for nhs := range r.patients {
				keys[nhs] = true
			}
			tables := map[string]bool{}
			walk(r.def.Population.Criteria, func(ev catalog.Events) { tables[ev.Table] = true })
			for _, name := range r.task.Variables {
				v, _ := r.def.Variable(name)
				tables[v.Expr.Table()] = true
			}
			for table := range tables {
				for nhs := range r.events[table] {
					keys[nhs] = true
				}
			}
		} else {
			for _, byNHS := range r.events {
				for nhs := range byNHS {
					keys[nhs] = true
				}
			}
		}
		for nhs := range keys {
			if !r.ndop[nhs] {
				subjects = append(subjects, nhs)
			}
		}
		slices.Sort(subjects)
	}
	var rows [][]any
	for _, nhs := range subjects {
		vals, report := r.vars(nhs)
		inPop := false
		if r.task.Kind == cdm.KindTrust && r.task.EvaluatesPopulation {
			inPop = r.inPopulation(nhs)
		}
		if r.task.Kind == cdm.KindTrust && !inPop && !report {
			continue
		}
		var row []any
		for _, f := range r.task.Fields {
			switch f.Role {
			case catalog.RoleKey:
				row = append(row, nhs)
			case catalog.RolePopulation:
				row = append(row, inPop)
			default:
				x, ok := vals[f.Name]
				if !ok {
					r.t.Fatalf("reference: no value for field %s", f.Name)
				}
				row = append(row, x)
			}
		}
		rows = append(rows, row)
	}
	return rows
}

func walk(cs []catalog.Criterion, f func(catalog.Events)) {
	for _, c := range cs {
		switch c := c.(type) {
		case *catalog.EventCriterion:
			f(c.Events)
		case *catalog.AllOf:
			walk(c.Criteria, f)
		case *catalog.AnyOf:
			walk(c.Criteria, f)
		case *catalog.NoneOf:
			walk(c.Criteria, f)
		}
	}
}

// number is a variable's value as a number for conditions and sums.
func number(x any) (float64, bool) {
	switch x := x.(type) {
	case int64:
		return float64(x), true
	case float64:
		return x, true
	case bool:
		if x {
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

func (r *reference) meets(w *catalog.Cond, vals map[string]any) bool {
	if w == nil {
		return true
	}
	for _, t := range w.Terms {
		x, ok := number(vals[t.Var])
		if !ok {
			return false
		}
		y := r.b.Number(t.Value)
		var hold bool
		switch t.Op {
		case catalog.OpLT:
			hold = x < y
		case catalog.OpLE:
			hold = x <= y
		case catalog.OpGT:
			hold = x > y
		case catalog.OpGE:
			hold = x >= y
		case catalog.OpEQ:
			hold = x == y
		case catalog.OpNE:
			hold = x != y
		}
		if !hold {
			return false
		}
	}
	return true
}

// cellRows is the expected aggregate Result.
func (r *reference) cellRows() [][]any {
	type cell struct {
		key  []any
		pats []map[string]any
	}
	cells := map[string]*cell{}
	for _, nhs := range r.gpPopulation() {
		vals, _ := r.vars(nhs)
		var key []any
		for _, g := range r.def.GroupBy {
			key = append(key, vals[g])
		}
		k := fmt.Sprintf("%#v", key)
		if cells[k] == nil {
			cells[k] = &cell{key: key}
		}
		cells[k].pats = append(cells[k].pats, vals)
	}
	var rows [][]any
	for _, c := range cells {
		row := slices.Clone(c.key)
		for _, f := range r.task.Fields {
			if f.Role != catalog.RolePartial {
				continue
			}
			var m *catalog.Measure
			for _, x := range r.def.Measures {
				if x.Name == f.Source {
					m = x
				}
			}
			var n, count int64
			var sum, lo, hi float64
			for _, vals := range c.pats {
				if !r.meets(m.Where, vals) {
					continue
				}
				count++
				if m.Of == "" {
					continue
				}
				x, ok := number(vals[m.Of])
				if !ok {
					continue
				}
				// A patient who adds 0 to a sum is none of its
				// contributors, so counts neither in n nor for top
				// (catalog.Partial).
				if m.Agg == catalog.AggSum && x == 0 {
					continue
				}
				if n == 0 || x < lo {
					lo = x
				}
				if n == 0 || x > hi {
					hi = x
				}
				n++
				sum += x
			}
			typed := func(x float64) any {
				if f.Type == catalog.FieldFloat64 {
					return x
				}
				return int64(math.Round(x))
			}
			orNull := func(x float64) any {
				if n == 0 {
					return nil
				}
				return typed(x)
			}
			switch f.Partial {
			case catalog.PartialCount:
				row = append(row, count)
			case catalog.PartialSum:
				row = append(row, typed(sum))
			case catalog.PartialN:
				row = append(row, n)
			case catalog.PartialMin:
				row = append(row, orNull(lo))
			case catalog.PartialMax, catalog.PartialTop:
				row = append(row, orNull(hi))
			}
		}
		rows = append(rows, row)
	}
	return rows
}

// sortRows puts rows in a canonical order for comparison.
func sortRows(rows [][]any) {
	slices.SortFunc(rows, func(a, b []any) int { return cmp.Compare(fmt.Sprintf("%#v", a), fmt.Sprintf("%#v", b)) })
}

// sameValue compares a result value with an expected one; floats may
// differ in their last bits, as sums are added in another order.
func sameValue(got, want any) bool {
	if g, ok := got.(float64); ok {
		w, ok := want.(float64)
		return ok && math.Abs(g-w) <= 1e-9*math.Max(1, math.Abs(w))
	}
	return fmt.Sprintf("%#v", got) == fmt.Sprintf("%#v", want)
}

// diffRows describes the differences between two sorted row sets, or "".
func diffRows(got, want [][]any) string {
	var b strings.Builder
	if len(got) != len(want) {
		fmt.Fprintf(&b, "%d rows, want %d\n", len(got), len(want))
	}
	shown := 0
	for i := 0; i < max(len(got), len(want)) && shown < 5; i++ {
		var g, w []any
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		same := len(g) == len(w)
		for j := 0; same && j < len(g); j++ {
			same = sameValue(g[j], w[j])
		}
		if !same {
			fmt.Fprintf(&b, "row %d: got %v, want %v\n", i, g, w)
			shown++
		}
	}
	return b.String()
}
