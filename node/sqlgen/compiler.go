package sqlgen

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/policy/catalog"
)

// compiler holds what one Compile call writes SQL for. Generators append
// arguments as they write; the first error is kept in err and the rest of
// the generation carries on harmlessly, so that the SQL-writing code reads
// straight through.
type compiler struct {
	b    *catalog.Bound
	def  *catalog.Definition
	task catalog.SiteTask
	kind cdm.SiteKind
	d    Dialect
	opts Options

	// schema is the CDM, looked up once: cdm.Lookup builds the model
	// afresh on every call.
	schema map[string]cdm.Table
	tables map[string]bool // the tables the task reads
	args   []any
	err    error
}

func newCompiler(b *catalog.Bound, task catalog.SiteTask, kind cdm.SiteKind, d Dialect, opts Options) *compiler {
	c := &compiler{b: b, def: b.Definition(), task: task, kind: kind, d: d, opts: opts, schema: map[string]cdm.Table{}}
	for _, t := range cdm.Tables() {
		c.schema[t.Name] = t
	}
	return c
}

func (c *compiler) fail(format string, a ...any) {
	if c.err == nil {
		c.err = fmt.Errorf(format, a...)
	}
}

// Arguments. Each call binds a new placeholder, even for a value bound
// before: reusing one by value would make the SQL text depend on whether
// two parameter values happen to be equal.

func (c *compiler) arg(v any) string {
	c.args = append(c.args, v)
	return "$" + strconv.Itoa(len(c.args))
}

func (c *compiler) date(d catalog.Date) string { return "CAST(" + c.arg(d.Time()) + " AS DATE)" }
func (c *compiler) int(n int64) string         { return "CAST(" + c.arg(n) + " AS BIGINT)" }
func (c *compiler) float(f float64) string {
	return "CAST(" + c.arg(f) + " AS " + c.d.doubleType() + ")"
}
func (c *compiler) text(s string) string { return "CAST(" + c.arg(s) + " AS " + c.d.textType() + ")" }
func (c *compiler) texts(ss []string) string {
	v := slices.Clone(ss)
	if v == nil {
		v = []string{} // a NULL array would make every membership test NULL
	}
	return c.d.textArray(c.arg(v))
}

// quote quotes a name from the definition or the plan. Names are checked
// against identRE, so quoting only stops them being read as keywords.
func (c *compiler) quote(name string) string {
	if !identRE.MatchString(name) {
		c.fail("name %q is not a lowercase identifier", name)
		return `"invalid"`
	}
	return `"` + name + `"`
}

// Identifiers from the CDM. table and col look the names up in the CDM and
// return its own spelling, so that nothing else can reach the SQL text.

func (c *compiler) table(name string) string {
	t, ok := c.schema[name]
	if !ok {
		c.fail("unknown CDM table %q", name)
		return "invalid"
	}
	if !t.HeldByKind(c.kind) {
		c.fail("table %s is not held by %s sites", t.Name, c.kind)
	}
	return t.Name
}

func (c *compiler) col(table, name string) string {
	t, ok := c.schema[table]
	if !ok {
		c.fail("unknown CDM table %q", table)
		return "invalid"
	}
	col, ok := t.Column(name)
	if !ok {
		c.fail("table %s has no column %q", t.Name, name)
		return "invalid"
	}
	return col.Name
}

// eventDateColumn is the column that dates an event table's rows: the day
// an event happened, for the rule that events after death are ignored.
func eventDateColumn(table string) string {
	switch table {
	case cdm.TableClinicalEvent:
		return cdm.ColEventDate
	case cdm.TableMedication:
		return cdm.ColIssueDate
	case cdm.TableAPCEpisode:
		return cdm.ColAdmissionDate
	case cdm.TableAEAttendance:
		return cdm.ColArrivalDate
	}
	return ""
}

// identityColumns are the columns that tell one event from another: rows
// of one patient that agree on them are one event. For admitted patient
// care that is the episode id; elsewhere it is every column.
func identityColumns(table string) []string {
	switch table {
	case cdm.TableClinicalEvent:
		return []string{cdm.ColEventDate, cdm.ColSNOMEDCode, cdm.ColNumericValue}
	case cdm.TableMedication:
		return []string{cdm.ColIssueDate, cdm.ColDMDCode}
	case cdm.TableAPCEpisode:
		return []string{cdm.ColEpisodeID}
	case cdm.TableAEAttendance:
		return []string{cdm.ColArrivalDate, cdm.ColDiagnosisSNOMED}
	}
	return nil
}

// collectTables records every table the task reads.
func (c *compiler) collectTables() {
	c.tables = map[string]bool{cdm.TablePatient: true}
	if c.kind == cdm.KindGP {
		c.tables[cdm.TableRegistration] = true
		c.tables[cdm.TableOptOut] = true
	}
	if c.task.EvaluatesPopulation {
		c.walkCriteria(c.def.Population.Criteria, func(ev catalog.Events) { c.tables[ev.Table] = true })
	}
	for _, v := range c.variables() {
		c.tables[v.Expr.Table()] = true
	}
	for t := range c.tables {
		c.table(t) // checks the kind holds it
	}
}

func (c *compiler) tableList() []string {
	var out []string
	for _, t := range cdm.TableNames() {
		if c.tables[t] {
			out = append(out, t)
		}
	}
	return out
}

// eventTables lists the event tables the task reads, in CDM order.
func (c *compiler) eventTables() []string {
	var out []string
	for _, t := range c.tableList() {
		if eventDateColumn(t) != "" {
			out = append(out, t)
		}
	}
	return out
}

func (c *compiler) walkCriteria(cs []catalog.Criterion, f func(catalog.Events)) {
	for _, cr := range cs {
		switch cr := cr.(type) {
		case *catalog.EventCriterion:
			f(cr.Events)
		case *catalog.AllOf:
			c.walkCriteria(cr.Criteria, f)
		case *catalog.AnyOf:
			c.walkCriteria(cr.Criteria, f)
		case *catalog.NoneOf:
			c.walkCriteria(cr.Criteria, f)
		}
	}
}

// variables returns the task's variables, in name order.
func (c *compiler) variables() []*catalog.Variable {
	var out []*catalog.Variable
	for _, name := range c.task.Variables {
		v, ok := c.def.Variable(name)
		if !ok {
			c.fail("the plan names variable %q, which the definition does not define", name)
			continue
		}
		out = append(out, v)
	}
	return out
}

// validNHSByChar is true when the expression x (a column) holds a valid NHS
// number: ten ASCII digits whose check digit is right (cdm.CheckNHSNumber).
// It is plain arithmetic on character codes, so nothing can fail to cast,
// inside a CASE so that the digits are only read in a string of the right
// length. With the first nine digits weighted 10 down to 2, the check digit
// d is 11 - (sum mod 11), 11 standing for 0; that is, sum + d ≡ 0 (mod 11),
// which is what the SQL tests, giving the check digit weight 1. When
// 11 - (sum mod 11) is 10, no number with those nine digits is valid: no
// digit d then makes sum + d a multiple of 11, so the same test rejects it.
//
// PostgreSQL uses it as it is; DuckDB, where it was a fifth of a practice's
// aggregate, uses validNHSByNumber.
func validNHSByChar(x string) string {
	var digits, terms []string
	for i := 1; i <= 10; i++ {
		code := fmt.Sprintf("ascii(substr(%s, %d, 1))", x, i)
		digits = append(digits, code+" BETWEEN 48 AND 57")
		terms = append(terms, fmt.Sprintf("(%s - 48) * %d", code, 11-i))
	}
	return fmt.Sprintf("(CASE WHEN length(%s) = 10 AND %s THEN (%s) %% 11 = 0 ELSE false END)",
		x, strings.Join(digits, " AND "), strings.Join(terms, " + "))
}

// validNHSByNumber is validNHSByChar for DuckDB, on a BIGINT rather
// than on characters: several times cheaper per row. TRY_CAST reads x as
// a number (NULL if it cannot, and it also takes forms such as "+1" or
// "1e3"), and x holds ten ASCII digits exactly when it equals the last ten
// digits of that number plus 10^10 written out, which are always ten
// digits; the modulo keeps the sum from overflowing whatever the number.
// The check digit test is then the same as validNHSByChar's, digit i
// being the number divided by 10^(10-i), modulo 10. It holds no string
// literal.
func validNHSByNumber(x string) string {
	n := "TRY_CAST(" + x + " AS BIGINT)"
	var terms []string
	for i := 1; i <= 10; i++ {
		d := n
		if p := 10 - i; p > 0 {
			d = "(" + n + " // " + strconv.FormatInt(pow10(p), 10) + ")"
		}
		terms = append(terms, fmt.Sprintf("(%s %% 10) * %d", d, 11-i))
	}
	return fmt.Sprintf("(CASE WHEN length(%s) = 10 AND substr(CAST(%s %% 10000000000 + 10000000000 AS VARCHAR), 2) = %s THEN (%s) %% 11 = 0 ELSE false END)",
		x, n, x, strings.Join(terms, " + "))
}

func pow10(p int) int64 {
	v := int64(1)
	for range p {
		v *= 10
	}
	return v
}

// cte is one named common table expression.
type cte struct{ name, body string }

func with(ctes []cte, query string) string {
	if len(ctes) == 0 {
		return query
	}
	var b strings.Builder
	b.WriteString("WITH ")
	for i, x := range ctes {
		if i > 0 {
			b.WriteString(",\n")
		}
		b.WriteString(x.name + " AS (\n" + x.body + "\n)")
	}
	b.WriteString("\n" + query)
	return b.String()
}

func and(conds []string) string {
	if len(conds) == 0 {
		return "TRUE"
	}
	return "(" + strings.Join(conds, " AND ") + ")"
}

func or(conds []string) string {
	if len(conds) == 0 {
		return "FALSE"
	}
	return "(" + strings.Join(conds, " OR ") + ")"
}

// invalidCounts is the InvalidNHSNumbers statement.
func (c *compiler) invalidCounts() (string, []Column) {
	var sel []string
	var cols []Column
	for _, t := range c.tableList() {
		name := c.table(t)
		nhs := c.col(t, cdm.ColNHSNumber)
		// The check is costly string arithmetic and a table holds many
		// rows per number, so each distinct number is checked once and
		// its rows added up: at a practice this is several times faster
		// than checking every row. NULL makes a group of its own, and
		// fails the check as it would row by row.
		sel = append(sel, fmt.Sprintf("(SELECT CAST(coalesce(sum(t.n), 0) AS BIGINT) FROM (SELECT %s, count(*) AS n FROM %s GROUP BY %s) AS t WHERE NOT %s) AS %s",
			nhs, name, nhs, c.d.validNHS("t."+nhs), name))
		cols = append(cols, Column{Name: name, Type: catalog.FieldInt64})
	}
	return "SELECT " + strings.Join(sel, ",\n  "), cols
}

// badValueCounts is the BadValues statement.
func (c *compiler) badValueCounts() (string, []Column) {
	var sel []string
	var cols []Column
	for _, t := range c.tableList() {
		valid := c.validValues(t, "t")
		if len(valid) == 0 {
			continue
		}
		name := c.table(t)
		sel = append(sel, fmt.Sprintf("(SELECT count(*) FROM %s AS t WHERE NOT %s) AS %s", name, and(valid), name))
		cols = append(cols, Column{Name: name, Type: catalog.FieldInt64})
	}
	return "SELECT " + strings.Join(sel, ",\n  "), cols
}
