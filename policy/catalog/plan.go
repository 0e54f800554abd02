package catalog

import (
	"fmt"
	"strings"

	"github.com/apache/arrow/go/v17/arrow"

	"github.com/havenhealth/haven/cdm"
)

// Mode is how a run is answered (DESIGN §6).
type Mode string

// Plan modes.
const (
	// ModeAggregate: every variable comes from the practice the patient is
	// registered with, so each GP node returns cells (group → measure
	// partials) and the coordinator adds them. No patient-level data leaves
	// a site.
	ModeAggregate Mode = "aggregate"
	// ModeLinkage: some value needs another provider, or patients must be
	// counted once across trusts, so nodes return one row per relevant
	// patient keyed by the run pseudonym, carrying only the derived fields
	// the definition needs; the coordinator links, combines and aggregates.
	ModeLinkage Mode = "linkage"
)

// RowKind is what one row of a site's output stands for.
type RowKind string

// Row kinds.
const (
	RowsCells    RowKind = "cells"    // one row per group: group columns, then measure partials
	RowsPatients RowKind = "patients" // one row per patient: pseudonym, then derived fields
)

// FieldType is the logical type of an output field, with a fixed Arrow type.
type FieldType string

// Field types.
const (
	FieldString    FieldType = "string"    // utf8
	FieldInt64     FieldType = "int64"     // int64
	FieldFloat64   FieldType = "float64"   // float64
	FieldBool      FieldType = "bool"      // bool
	FieldPseudonym FieldType = "pseudonym" // fixed_size_binary(16): HMAC-SHA256(k_r, nhs_number)[:16] (DESIGN §7)
	FieldDay       FieldType = "day"       // int32: days after the field's Anchor date
	FieldDays      FieldType = "days"      // list<int32>: days after the field's Anchor date, ascending
)

// PseudonymBytes is the length of a run pseudonym.
const PseudonymBytes = 16

// Arrow returns the Arrow type a field of type t has on the wire.
func (t FieldType) Arrow() arrow.DataType {
	switch t {
	case FieldString:
		return arrow.BinaryTypes.String
	case FieldInt64:
		return arrow.PrimitiveTypes.Int64
	case FieldFloat64:
		return arrow.PrimitiveTypes.Float64
	case FieldBool:
		return arrow.FixedWidthTypes.Boolean
	case FieldPseudonym:
		return &arrow.FixedSizeBinaryType{ByteWidth: PseudonymBytes}
	case FieldDay:
		return arrow.PrimitiveTypes.Int32
	case FieldDays:
		return arrow.ListOf(arrow.PrimitiveTypes.Int32)
	}
	panic(fmt.Sprintf("catalog: Arrow of unknown field type %q", string(t))) // unreachable: plans build only the types above
}

// Role says what a field carries.
type Role string

// Field roles.
const (
	RoleKey        Role = "key"        // the run pseudonym; rows from different sites are matched on it
	RolePopulation Role = "population" // in_population: the patient is in the population at this site
	RoleGroup      Role = "group"      // a group_by variable of a cell
	RolePartial    Role = "partial"    // a measure partial of a cell
	RoleVariable   Role = "variable"   // a derived per-patient value, or a part of one
	// RoleRecordKey is the patient's record key for cell-key perturbation
	// (node/pseudonym RecordKeyer), on the rows that define a linkage
	// population. Like the pseudonym it is computed by the node in Go, never
	// in SQL, because it needs the perturbation secret.
	RoleRecordKey Role = "record_key"
)

// Partial names the part of a measure a cell field holds. A measure's
// partials are named <measure>__<partial>, except a count, which is named
// after the measure itself.
//
// What n counts depends on the measure, because the coordinator's
// disclosure control reads it as the number of contributors: a sum from
// fewer than the minimum cell count of them is withheld. For a sum, n is
// the patients whose value is non-null and non-zero, since a patient who
// adds 0 contributes nothing to protect: a sum over 50 patients of whom
// one had an admission is that patient's admissions. For a mean, min or
// max, n is the patients with a non-null value, zeros included; a mean
// divides its sum by it. A sum's top is likewise the largest non-zero
// value, so it is null exactly when n is 0. Sites compute these in one
// way whatever the plan's mode, and the coordinator's linkage counts the
// same way, so a measure means the same in aggregate and linkage mode.
type Partial string

// Measure partials.
const (
	PartialCount Partial = "count" // patients in the cell meeting the measure's where
	PartialSum   Partial = "sum"   // sum of the variable over them (bool counts 1)
	PartialN     Partial = "n"     // contributors: for a sum, those with a non-zero value; otherwise those with a non-null value
	PartialMin   Partial = "min"   // smallest value; null when n is 0
	PartialMax   Partial = "max"   // largest value; null when n is 0
	PartialTop   Partial = "top"   // largest single contribution, for the dominance rule; null when n is 0
	// PartialKey is a count's cell key: the sum, mod the bundle's key range
	// R, of the record keys of the patients the count counts. Present only
	// in plans with record keys (PlanOptions.RecordKeys).
	PartialKey Partial = "key"
	// PartialNKey is the cell key of a sum's or mean's n: the sum mod R of
	// the record keys of the patients n counts. Disclosure control decides
	// the few-contributors rule on n perturbed by it, so that whether a
	// value is withheld proves nothing about n crossing the threshold.
	PartialNKey Partial = "n_key"
	// PartialSumKey is the cell key of a mean's sum when the mean is of a
	// bool variable: the sum mod R of the record keys of the patients whose
	// value is true. The sum is then a count of patients, perturbed like
	// one, and the mean is released as the perturbed sum over the
	// perturbed n.
	PartialSumKey Partial = "sum_key"
)

// IsKey says whether p is a cell key (PartialKey, PartialNKey or
// PartialSumKey): a sum of record keys mod R, which only the node can
// compute, in Go, and which the coordinator adds mod R.
func (p Partial) IsKey() bool {
	return p == PartialKey || p == PartialNKey || p == PartialSumKey
}

// Keys returns the partial that key partial p keys: the count, n or sum
// whose patients' record keys it sums.
func (p Partial) Keys() Partial {
	switch p {
	case PartialKey:
		return PartialCount
	case PartialNKey:
		return PartialN
	case PartialSumKey:
		return PartialSum
	}
	return ""
}

// Combine says how the coordinator merges one field across the sites that
// send it.
type Combine string

// Combine rules.
const (
	CombineKey      Combine = "key"      // matched or grouped on, not merged
	CombineOnce     Combine = "once"     // only one site sends a row per patient (the registering practice)
	CombineSum      Combine = "sum"      // added
	CombineMin      Combine = "min"      // smallest wins; for categories reported by several trusts, a deterministic choice
	CombineMax      Combine = "max"      // largest wins
	CombineAny      Combine = "any"      // logical or
	CombineConcat   Combine = "concat"   // lists appended (then sorted)
	CombineEarliest Combine = "earliest" // smallest day wins and the sending site's ODS code becomes the variable's value; ties go to the smaller ODS code
	CombineKeySum   Combine = "key_sum"  // added mod the key range R: a cell key
)

// Field is one column a site returns.
type Field struct {
	Name     string
	Type     FieldType
	Nullable bool
	Role     Role
	// Source is the variable or measure the field carries; empty for the
	// pseudonym and the population flag.
	Source string
	// Partial is set for RolePartial fields.
	Partial Partial
	Combine Combine
	// Anchor is the date that day 0 stands for, in FieldDay and FieldDays
	// fields: days are sent instead of dates, relative to a date of the
	// definition, and resolved with the run's parameters.
	Anchor *DateExpr
}

// SiteTask is what every site of one kind computes and returns for a run:
// the contract between node and coordinator.
//
// In aggregate mode a GP node returns one row per non-empty cell. In linkage
// mode a node returns one row per relevant patient: where the task evaluates
// the population (EvaluatesPopulation), a row for each patient in it (a GP
// population) or for each patient with something to report (a hospital
// population: in_population true, or any variable field non-empty); where it
// does not, a row only for patients with something to report: a count above
// 0, an exists that is true, a first day that is not null, or a day list
// that is not empty. Identifying columns never appear.
type SiteTask struct {
	Kind                cdm.SiteKind
	Rows                RowKind
	EvaluatesPopulation bool
	// Variables are those this kind of site derives, in name order.
	Variables []string
	Fields    []Field
}

// Field returns the field called name.
func (t SiteTask) Field(name string) (Field, bool) {
	for _, f := range t.Fields {
		if f.Name == name {
			return f, true
		}
	}
	return Field{}, false
}

// Plan is how a definition is answered: the mode, and what each kind of
// site returns. It depends on the definition only, not on parameter values.
type Plan struct {
	Definition string // id
	Hash       string
	Mode       Mode
	// Population is where the population is evaluated.
	Population cdm.SiteKind
	// Reason says, for people, why the mode was chosen.
	Reason string
	// Tasks holds one task per kind of site that takes part, GP first.
	Tasks []SiteTask
	// RecordKeys says that sites send record keys for cell-key
	// perturbation: a <measure>__key cell key beside every count in
	// aggregate mode, a record_key on the population rows in linkage mode.
	RecordKeys bool
}

// PlanOptions are the choices a plan depends on besides the definition.
type PlanOptions struct {
	// RecordKeys adds the record key fields cell-key perturbation needs
	// (Plan.RecordKeys). The bundle decides it: sites send keys exactly when
	// its disclosure rules perturb counts.
	RecordKeys bool
}

// Task returns the task for sites of kind k, if they take part.
func (p *Plan) Task(k cdm.SiteKind) (SiteTask, bool) {
	for _, t := range p.Tasks {
		if t.Kind == k {
			return t, true
		}
	}
	return SiteTask{}, false
}

// Schema returns the Arrow schema a site of kind k must send, with metadata
// naming the definition, its hash, the mode and the site kind, so an upload
// can be checked against the plan before any row is read.
func (p *Plan) Schema(k cdm.SiteKind) (*arrow.Schema, bool) {
	t, ok := p.Task(k)
	if !ok {
		return nil, false
	}
	fields := make([]arrow.Field, len(t.Fields))
	for i, f := range t.Fields {
		fields[i] = arrow.Field{Name: f.Name, Type: f.Type.Arrow(), Nullable: f.Nullable}
	}
	md := arrow.NewMetadata(
		[]string{"haven.definition.id", "haven.definition.hash", "haven.plan.mode", "haven.site.kind", "haven.plan.rows"},
		[]string{p.Definition, p.Hash, string(p.Mode), string(k), string(t.Rows)},
	)
	return arrow.NewSchema(fields, &md), true
}

// Field names the plans use besides variable and measure names.
const (
	FieldNamePseudonym    = "pseudonym"
	FieldNameInPopulation = "in_population"
	FieldNameRecordKey    = "record_key"
)

// Plan classifies the definition and lists exactly what each kind of site
// returns (DESIGN §6), without record keys.
func (d *Definition) Plan() *Plan { return d.PlanWith(PlanOptions{}) }

// PlanWith is Plan with options. Record keys never change the mode or the
// other fields: they only add fields.
//
// In aggregate mode every count measure gains a <measure>__key field (the
// cell key, CombineKeySum), every sum and mean a <measure>__n_key after its
// n, and a mean of a bool variable a <measure>__sum_key after its sum
// (Definition.keyFor). In linkage mode only the tasks that evaluate
// the population gain a record_key field, right after the pseudonym: the
// coordinator needs a key only for the patients it counts, so a trust that
// merely reports on a GP population sends none. What the coordinator can
// learn from a record key is in node/pseudonym.
func (d *Definition) PlanWith(o PlanOptions) *Plan {
	p := d.plan()
	if !o.RecordKeys {
		return p
	}
	p.RecordKeys = true
	for i := range p.Tasks {
		t := &p.Tasks[i]
		switch {
		case t.Rows == RowsCells:
			var fs []Field
			for _, f := range t.Fields {
				fs = append(fs, f)
				if f.Role != RolePartial {
					continue
				}
				if k := d.keyFor(f); k != "" {
					fs = append(fs, Field{Name: f.Source + "__" + string(k), Type: FieldInt64, Role: RolePartial,
						Source: f.Source, Partial: k, Combine: CombineKeySum})
				}
			}
			t.Fields = fs
		case t.EvaluatesPopulation:
			// Every trust sends the same key for a patient (it comes from
			// the NHS number alone), so any of them will do.
			c := CombineOnce
			if t.Kind == cdm.KindTrust {
				c = CombineMin
			}
			key := Field{Name: FieldNameRecordKey, Type: FieldInt64, Role: RoleRecordKey, Combine: c}
			t.Fields = append(t.Fields[:1:1], append([]Field{key}, t.Fields[1:]...)...)
		}
	}
	return p
}

// keyFor returns the key partial that follows partial field f in a plan
// with record keys, or "": every count is keyed, the n of every sum and
// mean, and the sum of a mean of a bool variable, which counts patients.
func (d *Definition) keyFor(f Field) Partial {
	m := d.Measure(f.Source)
	if m == nil {
		return ""
	}
	switch {
	case f.Partial == PartialCount:
		return PartialKey
	case f.Partial == PartialN && (m.Agg == AggSum || m.Agg == AggMean):
		return PartialNKey
	case f.Partial == PartialSum && m.Agg == AggMean:
		if v, ok := d.Variable(m.Of); ok && v.Expr.Type() == TypeBool {
			return PartialSumKey
		}
	}
	return ""
}

func (d *Definition) plan() *Plan {
	pop := cdm.KindGP
	if d.Population != nil && d.Population.Site != "" {
		pop = d.Population.Site
	}
	p := &Plan{Definition: d.ID, Hash: d.hash, Population: pop}
	bySite := map[cdm.SiteKind][]*Variable{}
	for _, v := range d.Variables {
		s := variableSite(v.Expr, pop)
		bySite[s] = append(bySite[s], v)
	}
	switch {
	case pop == cdm.KindTrust:
		p.Mode = ModeLinkage
		p.Reason = "the population is defined by hospital activity and a patient may attend several trusts, so each trust returns one row per patient under the run pseudonym and the coordinator counts each patient once"
	case len(bySite[cdm.KindTrust]) > 0:
		p.Mode = ModeLinkage
		v := bySite[cdm.KindTrust][0]
		p.Reason = fmt.Sprintf("variable %s comes from hospital trusts (%s), not from the practice where the patient is registered, so sites return one row per patient under the run pseudonym and the coordinator links them", v.Name, v.Expr.Table())
	default:
		p.Mode = ModeAggregate
		p.Reason = "every variable comes from the practice where the patient is registered, so each practice returns counts for its own patients and the coordinator adds them; no patient-level data leaves a site"
		p.Tasks = []SiteTask{d.cellTask(bySite[cdm.KindGP])}
		return p
	}
	for _, k := range cdm.SiteKinds() {
		vars := bySite[k]
		if k != pop && len(vars) == 0 {
			continue
		}
		p.Tasks = append(p.Tasks, patientTask(k, k == pop, vars))
	}
	return p
}

// cellTask is the GP task of an aggregate plan.
func (d *Definition) cellTask(vars []*Variable) SiteTask {
	t := SiteTask{Kind: cdm.KindGP, Rows: RowsCells, EvaluatesPopulation: true, Variables: names(vars)}
	for _, g := range d.GroupBy {
		v, _ := d.Variable(g)
		t.Fields = append(t.Fields, Field{Name: g, Type: valueField(v.Expr.Type()), Nullable: nullable(v.Expr),
			Role: RoleGroup, Source: g, Combine: CombineKey})
	}
	for _, m := range d.Measures {
		part := func(p Partial, typ FieldType, nullable bool, c Combine) {
			t.Fields = append(t.Fields, Field{Name: m.Name + "__" + string(p), Type: typ, Nullable: nullable,
				Role: RolePartial, Source: m.Name, Partial: p, Combine: c})
		}
		if m.Agg == AggCount {
			t.Fields = append(t.Fields, Field{Name: m.Name, Type: FieldInt64, Role: RolePartial,
				Source: m.Name, Partial: PartialCount, Combine: CombineSum})
			continue
		}
		v, _ := d.Variable(m.Of)
		typ := FieldInt64
		if v.Expr.Type() == TypeFloat {
			typ = FieldFloat64
		}
		switch m.Agg {
		case AggSum, AggMean:
			part(PartialSum, typ, false, CombineSum)
			part(PartialN, FieldInt64, false, CombineSum)
			if m.Dominance {
				part(PartialTop, typ, true, CombineMax)
			}
		case AggMin:
			part(PartialMin, typ, true, CombineMin)
			part(PartialN, FieldInt64, false, CombineSum)
		case AggMax:
			part(PartialMax, typ, true, CombineMax)
			part(PartialN, FieldInt64, false, CombineSum)
		}
	}
	return t
}

// patientTask is one kind's task in a linkage plan.
func patientTask(k cdm.SiteKind, evaluatesPop bool, vars []*Variable) SiteTask {
	t := SiteTask{Kind: k, Rows: RowsPatients, EvaluatesPopulation: evaluatesPop, Variables: names(vars)}
	t.Fields = append(t.Fields, Field{Name: FieldNamePseudonym, Type: FieldPseudonym, Role: RoleKey, Combine: CombineKey})
	// A hospital population is the union over trusts, so each trust says
	// whether the patient is in its part; a GP population comes from one
	// practice per patient, which sends only its population's rows.
	severalSites := k == cdm.KindTrust
	if evaluatesPop && severalSites {
		t.Fields = append(t.Fields, Field{Name: FieldNameInPopulation, Type: FieldBool, Role: RolePopulation, Combine: CombineAny})
	}
	for _, v := range vars {
		add := func(suffix string, typ FieldType, nullable bool, c Combine, anchor *DateExpr) {
			name := v.Name
			if suffix != "" {
				name += "__" + suffix
			}
			t.Fields = append(t.Fields, Field{Name: name, Type: typ, Nullable: nullable, Role: RoleVariable,
				Source: v.Name, Combine: c, Anchor: anchor})
		}
		switch x := v.Expr.(type) {
		case *ReadmissionsVar:
			add("discharge_days", FieldDays, false, CombineConcat, x.Index.Window.From)
			add("admission_days", FieldDays, false, CombineConcat, x.Index.Window.From)
		case *CountVar:
			c := CombineOnce
			if severalSites {
				c = CombineSum
			}
			add("", FieldInt64, false, c, nil)
		case *ExistsVar:
			c := CombineOnce
			if severalSites {
				c = CombineAny
			}
			add("", FieldBool, false, c, nil)
		case *FirstTrustVar:
			add("first_day", FieldDay, true, CombineEarliest, x.Events.Window.From)
		default:
			c := CombineOnce
			if severalSites {
				c = CombineMin
			}
			add("", valueField(x.Type()), nullable(x), c, nil)
		}
	}
	return t
}

func names(vs []*Variable) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.Name
	}
	return out
}

func valueField(t ValueType) FieldType {
	switch t {
	case TypeInt:
		return FieldInt64
	case TypeFloat:
		return FieldFloat64
	case TypeBool:
		return FieldBool
	}
	return FieldString
}

// nullable reports whether a variable's value can be null for a patient in
// the population.
func nullable(v VarExpr) bool {
	switch v := v.(type) {
	case *ColumnVar:
		return v.Nullable
	case *LatestVar, *FirstTrustVar:
		return true
	}
	return false
}

// String summarises the plan for logs and the CLI, one line per task.
func (p *Plan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s mode, population at %s sites", p.Definition, p.Mode, p.Population)
	for _, t := range p.Tasks {
		fmt.Fprintf(&b, "\n  %s returns %s:", t.Kind, t.Rows)
		for _, f := range t.Fields {
			fmt.Fprintf(&b, " %s(%s)", f.Name, f.Type)
		}
	}
	return b.String()
}
