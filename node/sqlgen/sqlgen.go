package sqlgen

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/policy/catalog"
)

// Options are the facts about the site a program is compiled for. They
// reach the SQL only as bound parameters.
type Options struct {
	// SiteODS is the ODS code of the site. At a GP practice only
	// registrations with this practice count; it is required there.
	SiteODS string
	// NDOP holds the NHS numbers on the national data opt-out list; the
	// node passes those relevant to the site. Patients on it are left out
	// of every statement. nil is an empty list.
	NDOP []string
	// Network holds the NHS numbers of the site's patients whose keyed
	// hash is on the network type 1 opt-out list: objections recorded at
	// another practice (node/optout Network). They are left out like those
	// on NDOP; both travel in the one bound list. nil is an empty list.
	Network []string
}

// Statement names.
const (
	StatementResult            = "result"
	StatementMembers           = "members"
	StatementKeys              = "keys"
	StatementCheckedResult     = "checked_result"
	StatementInvalidNHSNumbers = "invalid_nhs_numbers"
	StatementBadValues         = "bad_values"
)

// ColMembers is the last column of an aggregate program's CheckedResult:
// the NHS numbers of the cell's patients.
const ColMembers = "members"

// FieldStrings is the Column type of a list of strings (Arrow
// list<utf8>), which only CheckedResult's members column has: no plan
// field is one.
const FieldStrings catalog.FieldType = "strings"

// Column is one column a statement returns.
type Column struct {
	Name string
	// Type is the column's logical type. Result columns have the type of
	// the plan field they carry, except the first column of a linkage
	// result, nhs_number, which is a FieldString. Every integer, days
	// included, is a 64-bit SQL integer (BIGINT) and a FieldDays column a
	// list of them, since connectors return int64 only; the node narrows
	// days to the plan's int32 when it builds the upload.
	Type catalog.FieldType
}

// Statement is one SQL statement with its arguments.
//
// Args holds Go values of these types only: string, int64, float64, bool,
// time.Time (a calendar day: midnight UTC) and []string. Placeholders are
// $1, $2 … in the order of Args. The SQL text depends on the definition,
// the plan, the site kind and the dialect, never on a parameter value, a
// codelist's codes or a site fact: those are all in Args.
type Statement struct {
	Name    string
	SQL     string
	Args    []any
	Columns []Column
	// SHA256 is the hex SHA-256 of SQL, for the node's audit log.
	SHA256 string
}

// Program is a task compiled to SQL for one site.
type Program struct {
	Definition string // definition id
	Hash       string // definition hash
	Mode       catalog.Mode
	Kind       cdm.SiteKind
	Dialect    string

	// Result computes what the site sends. In aggregate mode its columns
	// are exactly the fields of the site's task, one row per non-empty
	// cell, ordered by the group columns. In linkage mode its first column
	// is the patient's nhs_number, which the node replaces with the run
	// pseudonym, and the other columns are the task's other fields, one row
	// per relevant patient, ordered by nhs_number.
	Result Statement
	// Members lists the nhs_number of every patient counted in an aggregate
	// Result, ordered, so that the node can check them against its opt-out
	// set before anything leaves. It is nil in linkage mode, where Result
	// itself carries the numbers.
	Members *Statement
	// CheckedResult is set in aggregate mode: Result with one more, last
	// column, members, the list of the NHS numbers of the cell's patients
	// in byte order. Together they are exactly Members' numbers. A node
	// runs it in place of Result and Members, which would compute the
	// population twice, checks the numbers as it would Members' and drops
	// the column before anything leaves the site.
	CheckedResult *Statement
	// Keys is set in aggregate mode when the plan has record keys: one row
	// per patient of the population, ordered by nhs_number, with the
	// patient's nhs_number, the group columns and, for each cell key field
	// of the task (<measure>__key), a bool saying whether that count counts
	// the patient. The node adds up the patients' record keys per cell in
	// Go; Result leaves the key fields out. In linkage mode Result leaves
	// out record_key, which the node derives from nhs_number.
	Keys *Statement
	// InvalidNHSNumbers returns one row with one int64 column per table in
	// Tables, named after it: the number of the table's rows whose
	// nhs_number fails the modulus-11 check and which every statement
	// therefore leaves out.
	InvalidNHSNumbers Statement
	// Tables lists the CDM tables the program reads, in CDM order.
	Tables []string
}

// Statements returns the program's statements: Result, then Members,
// CheckedResult and Keys when set, then InvalidNHSNumbers.
func (p *Program) Statements() []Statement {
	out := []Statement{p.Result}
	if p.Members != nil {
		out = append(out, *p.Members)
	}
	if p.CheckedResult != nil {
		out = append(out, *p.CheckedResult)
	}
	if p.Keys != nil {
		out = append(out, *p.Keys)
	}
	return append(out, p.InvalidNHSNumbers)
}

// identRE is what every identifier taken from a definition or a plan (a
// variable, measure or field name) must look like before it is quoted
// into SQL. The catalogue checks the same, so a mismatch means the
// definition did not come from it.
var identRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// Compile compiles the task that sites of kind take in plan into SQL for
// dialect d. plan must be b's definition's plan, as Definition.PlanWith
// returns it. Every value — parameters, codelist codes, vocabulary values,
// band labels and limits, the site's ODS code and the opt-out list — is a
// bound argument; every identifier comes from cdm or is a name from
// the plan checked against ^[a-z][a-z0-9_]*$.
func Compile(b *catalog.Bound, plan *catalog.Plan, kind cdm.SiteKind, d Dialect, opts Options) (*Program, error) {
	if b == nil || b.Definition() == nil {
		return nil, errors.New("compile: no bound definition")
	}
	def := b.Definition()
	if plan == nil {
		return nil, fmt.Errorf("compile %s: no plan", def.ID)
	}
	if d == nil {
		return nil, fmt.Errorf("compile %s: no SQL dialect", def.ID)
	}
	if plan.Definition != def.ID || plan.Hash != def.Hash() {
		return nil, fmt.Errorf("compile %s: the plan is for definition %s (hash %s), not this one (hash %s)", def.ID, plan.Definition, plan.Hash, def.Hash())
	}
	// The plan says what leaves the site, so it must be exactly the one
	// the signed definition implies, not one that merely names it.
	if !reflect.DeepEqual(plan, def.PlanWith(catalog.PlanOptions{RecordKeys: plan.RecordKeys})) {
		return nil, fmt.Errorf("compile %s: the plan differs from the definition's own plan", def.ID)
	}
	task, ok := plan.Task(kind)
	if !ok {
		return nil, fmt.Errorf("compile %s: %s sites take no part in this definition's %s plan", def.ID, kind, plan.Mode)
	}
	if def.Population == nil {
		return nil, fmt.Errorf("compile %s: the definition has no population", def.ID)
	}
	if kind == cdm.KindGP && opts.SiteODS == "" {
		return nil, fmt.Errorf("compile %s: no site ODS code: a GP practice counts only its own registrations", def.ID)
	}
	for _, f := range task.Fields {
		if !identRE.MatchString(f.Name) {
			return nil, fmt.Errorf("compile %s: field name %q is not a lowercase identifier", def.ID, f.Name)
		}
	}
	for _, v := range def.Variables {
		if !identRE.MatchString(v.Name) {
			return nil, fmt.Errorf("compile %s: variable name %q is not a lowercase identifier", def.ID, v.Name)
		}
		// The statements carry the patient's number under this name.
		if v.Name == cdm.ColNHSNumber {
			return nil, fmt.Errorf("compile %s: a variable cannot be called %s", def.ID, cdm.ColNHSNumber)
		}
	}

	c := newCompiler(b, task, kind, d, opts)
	c.collectTables()
	if c.err != nil {
		return nil, fmt.Errorf("compile %s for %s sites: %w", def.ID, kind, c.err)
	}
	p := &Program{Definition: def.ID, Hash: def.Hash(), Mode: plan.Mode, Kind: kind, Dialect: d.Name(), Tables: c.tableList()}

	var err error
	switch task.Rows {
	case catalog.RowsCells:
		if kind != cdm.KindGP || !task.EvaluatesPopulation {
			return nil, fmt.Errorf("compile %s: cells are computed only by GP practices that evaluate the population", def.ID)
		}
		p.Result, err = c.statement(StatementResult, c.cells)
		if err == nil {
			var m Statement
			m, err = c.statement(StatementMembers, c.members)
			p.Members = &m
		}
		if err == nil {
			var cr Statement
			cr, err = c.statement(StatementCheckedResult, c.checkedCells)
			p.CheckedResult = &cr
		}
		if err == nil && plan.RecordKeys {
			var k Statement
			k, err = c.statement(StatementKeys, c.keys)
			p.Keys = &k
		}
	case catalog.RowsPatients:
		p.Result, err = c.statement(StatementResult, c.patients)
	default:
		err = fmt.Errorf("unknown row kind %q", task.Rows)
	}
	if err == nil {
		p.InvalidNHSNumbers, err = c.statement(StatementInvalidNHSNumbers, c.invalidCounts)
	}
	if err != nil {
		return nil, fmt.Errorf("compile %s for %s sites: %w", def.ID, kind, err)
	}
	return p, nil
}

// InvalidCounts returns the InvalidNHSNumbers statement for the given
// tables of a site of kind k: one row with one int64 column per table, in
// CDM order. A program's InvalidNHSNumbers is InvalidCounts of its Tables;
// a node counts tables one set at a time and reuses the counts, so that
// the count, which scans whole tables, need not hold up a task.
func InvalidCounts(k cdm.SiteKind, d Dialect, tables []string) (Statement, error) {
	if len(tables) == 0 {
		return Statement{}, errors.New("invalid NHS number counts: no tables")
	}
	c, err := tablesCompiler("invalid NHS number counts", k, d, tables)
	if err != nil {
		return Statement{}, err
	}
	return c.statement(StatementInvalidNHSNumbers, c.invalidCounts)
}

// BadValueCounts returns the statement that counts, for each of the given
// tables of a site of kind k that has a numeric column, the rows holding a
// value cdm.ValidValue rejects (non-finite, or impossible for the row's
// code): one row with one int64 column per such table, named after it, in
// CDM order. Every statement leaves these rows out, as it leaves out rows
// with an invalid NHS number; tables without numeric columns get no
// column, and when none of the tables has one the error says so.
func BadValueCounts(k cdm.SiteKind, d Dialect, tables []string) (Statement, error) {
	c, err := tablesCompiler("bad value counts", k, d, tables)
	if err != nil {
		return Statement{}, err
	}
	if !slices.ContainsFunc(tables, func(t string) bool { return len(cdm.NumericColumns(t)) > 0 }) {
		return Statement{}, errors.New("bad value counts: none of the tables has a numeric column")
	}
	return c.statement(StatementBadValues, c.badValueCounts)
}

// statement runs one statement's generator on a fresh argument list.
func (c *compiler) statement(name string, gen func() (string, []Column)) (Statement, error) {
	c.args = nil
	c.err = nil
	sql, cols := gen()
	if c.err != nil {
		return Statement{}, fmt.Errorf("%s: %w", name, c.err)
	}
	sql, args, err := renumber(sql, c.args)
	if err != nil {
		return Statement{}, fmt.Errorf("%s: %w", name, err)
	}
	for _, a := range args {
		switch a.(type) {
		case string, int64, float64, bool, time.Time, []string:
		default:
			return Statement{}, fmt.Errorf("%s: argument of type %T", name, a) // unreachable: the helpers bind only the types above
		}
	}
	sum := sha256.Sum256([]byte(sql))
	return Statement{Name: name, SQL: sql, Args: args, Columns: cols, SHA256: hex.EncodeToString(sum[:])}, nil
}

// renumber rewrites the placeholders of sql to run $1, $2 … in the order
// they first appear, and returns the arguments in that order, leaving out
// any the text does not use (PostgreSQL cannot type an unused one). The
// generators bind arguments in the order they write expressions, which is
// not the order the expressions end up in. A '$' followed by digits is
// always a placeholder: the text holds no string literal, and no
// identifier contains '$'.
func renumber(sql string, args []any) (string, []any, error) {
	var b strings.Builder
	b.Grow(len(sql))
	var out []any
	seen := map[int]int{}
	for i := 0; i < len(sql); {
		j := i + 1
		for sql[i] == '$' && j < len(sql) && sql[j] >= '0' && sql[j] <= '9' {
			j++
		}
		if j == i+1 {
			b.WriteByte(sql[i])
			i++
			continue
		}
		old, err := strconv.Atoi(sql[i+1 : j])
		if err != nil || old < 1 || old > len(args) {
			return "", nil, fmt.Errorf("placeholder %s has no argument", sql[i:j]) // unreachable: placeholders come from compiler.arg
		}
		n, ok := seen[old]
		if !ok {
			out = append(out, args[old-1])
			n = len(out)
			seen[old] = n
		}
		b.WriteString("$" + strconv.Itoa(n))
		i = j
	}
	return b.String(), out, nil
}
