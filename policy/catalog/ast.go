package catalog

import (
	"fmt"
	"slices"
	"strings"

	"github.com/havenhealth/haven/cdm"
)

// Definition is one approved query, parsed and checked. Every table and
// column name in it has been looked up in cdm, every codelist resolved,
// every parameter and variable reference checked, so the planner and the
// nodes' SQL compilers can walk it without re-validating.
//
// A Definition is immutable once parsed; share it freely.
type Definition struct {
	ID          string
	Version     int64
	Title       string
	Description string
	// Parameters in name order.
	Parameters []*Parameter
	Population *Population
	// Variables in name order.
	Variables []*Variable
	// Measures in declared order, which is the order of the released table's
	// columns.
	Measures []*Measure
	// GroupBy names variables, in declared order.
	GroupBy []string

	file      string
	codelists map[string]*Codelist // every codelist the definition can use
	canonical []byte
	hash      string
}

// File is the name the definition was parsed from, as used in error positions.
func (d *Definition) File() string { return d.file }

// Parameter returns the parameter called name.
func (d *Definition) Parameter(name string) (*Parameter, bool) {
	i, ok := slices.BinarySearchFunc(d.Parameters, name, func(p *Parameter, n string) int { return strings.Compare(p.Name, n) })
	if !ok {
		return nil, false
	}
	return d.Parameters[i], true
}

// Variable returns the variable called name.
func (d *Definition) Variable(name string) (*Variable, bool) {
	i, ok := slices.BinarySearchFunc(d.Variables, name, func(v *Variable, n string) int { return strings.Compare(v.Name, n) })
	if !ok {
		return nil, false
	}
	return d.Variables[i], true
}

// Measure returns the measure called name, or nil.
func (d *Definition) Measure(name string) *Measure {
	for _, m := range d.Measures {
		if m.Name == name {
			return m
		}
	}
	return nil
}

// Codelists returns every codelist the definition may use, in name order:
// those it names and every value a codelist parameter allows. They are all
// part of the hash.
func (d *Definition) Codelists() []*Codelist {
	out := make([]*Codelist, 0, len(d.codelists))
	for _, c := range d.codelists {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *Codelist) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// CodelistNames returns the names of Codelists, for policy input.
func (d *Definition) CodelistNames() []string {
	out := make([]string, 0, len(d.codelists))
	for n := range d.codelists {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Codelist returns a codelist the definition uses by name.
func (d *Definition) Codelist(name string) (*Codelist, bool) {
	c, ok := d.codelists[name]
	return c, ok
}

// ParamType is the type of a definition parameter.
type ParamType string

// Parameter types.
const (
	ParamDate     ParamType = "date"     // a calendar day, YYYY-MM-DD
	ParamInt      ParamType = "int"      // a whole number
	ParamEnum     ParamType = "enum"     // one of a declared list of strings
	ParamCodelist ParamType = "codelist" // the name of one of a declared list of codelists
)

// Parameter is a value the commissioner fills in when running a definition.
type Parameter struct {
	Name        string
	Type        ParamType
	Description string
	// Min and Max bound date and int parameters, inclusive; nil means unbounded.
	Min, Max *Value
	// Default is used when no value is given; nil means the value is required.
	Default *Value
	// Values lists what an enum or codelist parameter allows, sorted.
	Values []string
	Pos    Pos
}

// Value is a typed parameter value.
type Value struct {
	Type ParamType
	Date Date   // when Type is ParamDate
	Int  int64  // when Type is ParamInt
	Str  string // when Type is ParamEnum or ParamCodelist
}

// String returns the value in its wire form: YYYY-MM-DD, a decimal integer,
// or the string itself. Bind accepts exactly these forms.
func (v Value) String() string {
	switch v.Type {
	case ParamDate:
		return v.Date.String()
	case ParamInt:
		return fmt.Sprint(v.Int)
	}
	return v.Str
}

// IntExpr is a whole number written in the definition (Param empty) or taken
// from an int parameter.
type IntExpr struct {
	Value int64
	Param string
}

// DateExpr is a date: a literal day or a date parameter, moved by an
// optional number of days.
//
// In definitions: `2020-01-01`, `$index_date`, `$index_date + 365`,
// `$index_date - $lookback_days`, or `$index_date + followup_days` where
// followup_days is a declared int parameter.
type DateExpr struct {
	// Param is the date parameter the expression starts from; when empty the
	// expression starts from Date.
	Param string
	Date  Date
	// Offset is added in days. A literal offset carries its own sign; a
	// parameter offset is subtracted when Negate is set.
	Offset IntExpr
	Negate bool
}

// Window bounds the dates of events, inclusively at both ends. A nil bound
// is open. In definitions: `between: [a, b]`, `on_or_before: b` or
// `on_or_after: a`.
type Window struct {
	From, To *DateExpr
}

// Filter restricts rows to those whose Column holds one of Values, or, when
// Param is set, the value of that enum parameter. Only columns with a fixed
// CDM vocabulary can be filtered, and every value is in that vocabulary.
type Filter struct {
	Column string
	Values []string // sorted
	Param  string
}

// CodelistRef names a codelist directly (Name) or through a codelist
// parameter (Param).
type CodelistRef struct {
	Name  string
	Param string
}

// Events selects rows of one CDM event table for one patient.
type Events struct {
	Table string
	// DateColumn is the column Window applies to: the table's event date
	// (event_date, issue_date, admission_date, arrival_date), or
	// discharge_date for the index episodes of a readmission.
	DateColumn string
	// CodeColumn holds the codes Codelist matches: snomed_code, dmd_code,
	// primary_diagnosis or diagnosis_snomed.
	CodeColumn string
	// Codelist restricts rows to codes in the list; nil means any code.
	Codelist *CodelistRef
	// Where holds column filters, sorted by column.
	Where  []Filter
	Window Window
}

// Population says who is counted.
type Population struct {
	// Site is where the population is evaluated. For cdm.KindGP the patients
	// are those registered on RegisteredOn, counted at the practice they are
	// registered with, so per-practice results add up without double
	// counting. For cdm.KindTrust the patients are those with hospital
	// activity meeting the criteria at one trust or more, counted once across
	// trusts.
	Site         cdm.SiteKind
	RegisteredOn *DateExpr
	// Criteria must all hold. registered_on is not among them.
	Criteria []Criterion
}

// Criterion is one condition a patient meets to be in the population:
// *AgeCriterion, *AliveCriterion, *EventCriterion, *AllOf, *AnyOf or *NoneOf.
type Criterion interface{ isCriterion() }

// AgeCriterion holds when the patient's age in whole years on On is at least
// Min and at most Max (either may be nil).
type AgeCriterion struct {
	On       DateExpr
	Min, Max *IntExpr
}

// AliveCriterion holds when the patient had not died by On (date_of_death is
// null or after On).
type AliveCriterion struct{ On DateExpr }

// EventCriterion holds when the patient has at least one row matching Events.
// Both has_event and has_medication parse to it.
type EventCriterion struct{ Events Events }

// AllOf holds when every one of its criteria holds.
type AllOf struct{ Criteria []Criterion }

// AnyOf holds when at least one of its criteria holds.
type AnyOf struct{ Criteria []Criterion }

// NoneOf holds when none of its criteria holds.
type NoneOf struct{ Criteria []Criterion }

func (*AgeCriterion) isCriterion()   {}
func (*AliveCriterion) isCriterion() {}
func (*EventCriterion) isCriterion() {}
func (*AllOf) isCriterion()          {}
func (*AnyOf) isCriterion()          {}
func (*NoneOf) isCriterion()         {}

// ValueType is the logical type of a variable's per-patient value.
type ValueType string

// Variable value types.
const (
	TypeString ValueType = "string" // a category: sex, age band, ODS code
	TypeInt    ValueType = "int"
	TypeFloat  ValueType = "float"
	TypeBool   ValueType = "bool" // counts as 0 or 1 in conditions and means
)

func (t ValueType) article() string {
	if t == TypeInt {
		return "an int"
	}
	return "a " + string(t)
}

// Numeric reports whether values of t can be summed and compared with numbers.
func (t ValueType) Numeric() bool { return t == TypeInt || t == TypeFloat || t == TypeBool }

// Variable is one derived per-patient value.
type Variable struct {
	Name string
	Expr VarExpr
	Pos  Pos
}

// VarExpr says how a variable is derived: *ColumnVar, *AgeVar, *AgeBandVar,
// *PracticeVar, *CountVar, *ExistsVar, *LatestVar, *FirstTrustVar or
// *ReadmissionsVar. Each reads exactly one CDM table.
type VarExpr interface {
	// Table is the CDM table the value is derived from.
	Table() string
	// Type is the logical type of the value.
	Type() ValueType
	isVarExpr()
}

// ColumnVar is a column of the patient table, e.g. `{column: patient.sex}`.
// Only plain (non-identifying) string columns qualify.
type ColumnVar struct {
	Column   string
	Nullable bool
}

// AgeVar is the patient's age in whole years on On: `{age: {on: $d}}`.
type AgeVar struct{ On DateExpr }

// AgeBandVar is the patient's age band on On:
// `{age_band: {on: $d, width: 10, top: 90}}` or
// `{age_band: {on: $d, bands: [18, 40, 65, 80]}}`.
type AgeBandVar struct {
	On DateExpr
	// Bounds are the inclusive lower bounds of the bands, ascending, starting
	// at 0; the last band is open-ended.
	Bounds []int64
}

// AgeBand is one band of an AgeBandVar.
type AgeBand struct {
	Min   int64
	Max   int64 // inclusive; -1 for the open top band
	Label string
}

// Bands returns the bands in order, with labels such as "0-17", "18-39", "80+".
func (v *AgeBandVar) Bands() []AgeBand {
	out := make([]AgeBand, len(v.Bounds))
	for i, lo := range v.Bounds {
		if i == len(v.Bounds)-1 {
			out[i] = AgeBand{Min: lo, Max: -1, Label: fmt.Sprintf("%d+", lo)}
			continue
		}
		hi := v.Bounds[i+1] - 1
		out[i] = AgeBand{Min: lo, Max: hi, Label: fmt.Sprintf("%d-%d", lo, hi)}
	}
	return out
}

// PracticeVar is the ODS code of the practice the patient was registered
// with on On: `{registered_practice: {on: $d}}`.
type PracticeVar struct{ On DateExpr }

// CountVar is the number of the patient's rows matching Events:
// `{count: {table: apc_episode, where: {...}, between: [a, b]}}`.
type CountVar struct{ Events Events }

// ExistsVar is whether the patient has a row matching Events.
type ExistsVar struct{ Events Events }

// LatestVar is the numeric value of the patient's most recent row matching
// Events (ties on date broken by the larger value), or null when none.
type LatestVar struct {
	Events Events
	// Column holds the value: the table's numeric column.
	Column string
}

// FirstTrustVar is the ODS code of the trust where the patient's earliest
// row matching Events happened (ties broken by the smaller ODS code).
// Because no one trust sees the others' rows, it is resolved by the
// coordinator: each trust reports the day of its earliest matching row,
// counted from Events.Window.From, and the coordinator takes the sending
// trust's ODS code for the smallest day.
type FirstTrustVar struct{ Events Events }

// ReadmissionsVar counts readmissions: episodes matching Where that begin
// within WithinDays days after the discharge of an index episode, at any
// trust. Index selects the index episodes by their discharge date. An
// admission on the day of the discharge is not counted, so an episode is
// never its own readmission; each admission counts once however many index
// discharges precede it.
//
// No one trust sees the others' episodes, so each trust reports day numbers
// counted from Index.Window.From: the discharge days of its index episodes,
// and the admission days of its episodes matching Where that begin from
// Index.Window.From up to WithinDays after Index.Window.To. The coordinator
// merges them per patient and counts the admission days a for which some
// discharge day d has d < a ≤ d + WithinDays.
type ReadmissionsVar struct {
	Index      Events
	WithinDays IntExpr
	Where      []Filter
}

func (*ColumnVar) Table() string       { return cdm.TablePatient }
func (*AgeVar) Table() string          { return cdm.TablePatient }
func (*AgeBandVar) Table() string      { return cdm.TablePatient }
func (*PracticeVar) Table() string     { return cdm.TableRegistration }
func (v *CountVar) Table() string      { return v.Events.Table }
func (v *ExistsVar) Table() string     { return v.Events.Table }
func (v *LatestVar) Table() string     { return v.Events.Table }
func (v *FirstTrustVar) Table() string { return v.Events.Table }
func (*ReadmissionsVar) Table() string { return cdm.TableAPCEpisode }

func (*ColumnVar) Type() ValueType       { return TypeString }
func (*AgeVar) Type() ValueType          { return TypeInt }
func (*AgeBandVar) Type() ValueType      { return TypeString }
func (*PracticeVar) Type() ValueType     { return TypeString }
func (*CountVar) Type() ValueType        { return TypeInt }
func (*ExistsVar) Type() ValueType       { return TypeBool }
func (*LatestVar) Type() ValueType       { return TypeFloat }
func (*FirstTrustVar) Type() ValueType   { return TypeString }
func (*ReadmissionsVar) Type() ValueType { return TypeInt }

func (*ColumnVar) isVarExpr()       {}
func (*AgeVar) isVarExpr()          {}
func (*AgeBandVar) isVarExpr()      {}
func (*PracticeVar) isVarExpr()     {}
func (*CountVar) isVarExpr()        {}
func (*ExistsVar) isVarExpr()       {}
func (*LatestVar) isVarExpr()       {}
func (*FirstTrustVar) isVarExpr()   {}
func (*ReadmissionsVar) isVarExpr() {}

// Aggregate is what a measure computes over the patients of a cell.
type Aggregate string

// Measure aggregates.
const (
	AggCount Aggregate = "count" // number of patients (meeting Where)
	AggSum   Aggregate = "sum"
	AggMean  Aggregate = "mean"
	AggMin   Aggregate = "min"
	AggMax   Aggregate = "max"
)

// Measure is one column of the released table.
type Measure struct {
	Name string
	Agg  Aggregate
	// Of is the variable aggregated; empty for AggCount, which counts patients.
	Of string
	// Where, when set, restricts the patients the measure covers.
	Where *Cond
	// Dominance asks for the largest single patient's contribution to be
	// reported alongside a sum or mean, for the dominance rule (DESIGN §9).
	// It defaults to true for a sum and false for a mean.
	Dominance bool
	Pos       Pos
}

// Cond is a conjunction of comparisons: `emergency_admissions > 0 and
// latest_sbp < $target`. A patient whose variable is null fails every
// comparison on it.
type Cond struct {
	Terms []Comparison
}

// Comparison compares a numeric variable with a number or an int parameter.
type Comparison struct {
	Var   string
	Op    Op
	Value Operand
}

// Op is a comparison operator.
type Op string

// Comparison operators.
const (
	OpLT Op = "<"
	OpLE Op = "<="
	OpGT Op = ">"
	OpGE Op = ">="
	OpEQ Op = "=="
	OpNE Op = "!="
)

// Operand is a number written in the definition (Param empty) or an int
// parameter.
type Operand struct {
	Number float64
	Param  string
}
