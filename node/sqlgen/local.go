package sqlgen

import (
	"errors"
	"fmt"
	"strings"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/policy/catalog"
)

// Local statements: those the node runs for itself about the site's data,
// not a task's program. Their results never leave the site. They follow
// Compile's rules: identifiers from cdm, every value a bound argument.

// Names of the local statements.
const (
	StatementSiteOptOuts     = "site_opt_outs"
	StatementSiteNumbers     = "site_numbers"
	StatementTableNHSNumbers = "table_nhs_numbers"
	StatementNumericValues   = "numeric_values"
)

// ColPatientRows is the second column of the SiteNumbers statement: how
// many patient rows carry the number.
const ColPatientRows = "patient_rows"

// bareCompiler is a compiler for statements that belong to no definition:
// it knows the CDM, the site kind and the dialect, and reads no table yet.
func bareCompiler(k cdm.SiteKind, d Dialect) *compiler {
	c := &compiler{kind: k, d: d, schema: map[string]cdm.Table{}, tables: map[string]bool{}}
	for _, t := range cdm.Tables() {
		c.schema[t.Name] = t
	}
	return c
}

// tablesCompiler is the compiler of a statement over the given tables of
// a site of kind k, rather than over a program's (the node's per-table
// counts and listings: SiteNumbers, InvalidCounts, BadValueCounts). A
// name that is not a CDM table is an error naming what was being
// compiled.
func tablesCompiler(what string, k cdm.SiteKind, d Dialect, tables []string) (*compiler, error) {
	c := bareCompiler(k, d)
	for _, t := range tables {
		if _, ok := c.schema[t]; !ok {
			return nil, fmt.Errorf("%s: unknown CDM table %q", what, t)
		}
		c.tables[t] = true
	}
	return c, nil
}

// SiteOptOuts returns the statement that reads the type 1 opt-outs the
// site records in its opt_out table: one string column, nhs_number, a row
// for each type 1 row of the table, numbers as they are (unchecked, not
// made distinct). It does not depend on the site kind: a practice must
// hold the table and a trust may, and the caller asks the connector
// whether it does before running this.
func SiteOptOuts(d Dialect) (Statement, error) {
	if d == nil {
		return Statement{}, errors.New("site opt-outs: no SQL dialect")
	}
	c := bareCompiler("", d)
	return c.statement(StatementSiteOptOuts, c.siteOptOuts)
}

// anyTable is table for statements that do not depend on the site kind:
// it returns the CDM's own spelling of the name, whoever holds the table.
func (c *compiler) anyTable(name string) string {
	t, ok := c.schema[name]
	if !ok {
		c.fail("unknown CDM table %q", name)
		return "invalid"
	}
	return t.Name
}

// siteOptOuts is the SiteOptOuts statement.
func (c *compiler) siteOptOuts() (string, []Column) {
	t := c.anyTable(cdm.TableOptOut)
	nhs := c.col(t, cdm.ColNHSNumber)
	q := fmt.Sprintf("SELECT %s FROM %s WHERE %s = %s", nhs, t, c.col(t, cdm.ColKind), c.text(cdm.OptOutType1))
	return q, []Column{{Name: nhs, Type: catalog.FieldString}}
}

// SiteNumbers returns the statement that lists every NHS number in the
// patient table and in the given tables of a site of kind k, once each,
// with the number of patient rows that carry it: two columns, nhs_number
// (string) and patient_rows (int64), in no particular order. Numbers are
// as the tables hold them, invalid ones and NULL included. Tables other
// than the patient table that have no nhs_number column are skipped, as
// is opt_out, whose numbers are objections rather than anyone's data; a
// name that is not a CDM table is an error.
func SiteNumbers(k cdm.SiteKind, d Dialect, tables []string) (Statement, error) {
	if d == nil {
		return Statement{}, errors.New("site NHS numbers: no SQL dialect")
	}
	c, err := tablesCompiler("site NHS numbers", k, d, tables)
	if err != nil {
		return Statement{}, err
	}
	return c.statement(StatementSiteNumbers, c.siteNumbers)
}

// siteNumbers is the SiteNumbers statement: a union of every table's
// numbers, each patient row counting one, summed per number.
func (c *compiler) siteNumbers() (string, []Column) {
	pt := c.table(cdm.TablePatient)
	nhs := c.col(pt, cdm.ColNHSNumber)
	var b strings.Builder
	b.WriteString("SELECT " + nhs + ", CAST(sum(" + ColPatientRows + ") AS BIGINT) AS " + ColPatientRows +
		"\nFROM (SELECT " + nhs + ", 1 AS " + ColPatientRows + " FROM " + pt)
	for _, name := range c.tableList() {
		if _, has := c.schema[name].Column(cdm.ColNHSNumber); !has || name == cdm.TablePatient || name == cdm.TableOptOut {
			continue
		}
		b.WriteString("\n      UNION ALL SELECT " + c.col(name, cdm.ColNHSNumber) + ", 0 FROM " + c.table(name))
	}
	b.WriteString(") AS site\nGROUP BY " + nhs)
	return b.String(), []Column{{Name: nhs, Type: catalog.FieldString}, {Name: ColPatientRows, Type: catalog.FieldInt64}}
}

// TableNHSNumbers returns the statement that reads the NHS number of
// every row of a CDM table, as the table holds it (unchecked, NULL
// included): one string column, nhs_number. The node's configuration
// check counts the invalid ones in Go, apart from the SQL's own test
// (InvalidCounts), so that the two can be held against each other.
func TableNHSNumbers(d Dialect, table string) (Statement, error) {
	if d == nil {
		return Statement{}, errors.New("table NHS numbers: no SQL dialect")
	}
	c := bareCompiler("", d)
	return c.statement(StatementTableNHSNumbers, func() (string, []Column) {
		t := c.anyTable(table)
		nhs := c.col(t, cdm.ColNHSNumber)
		return "SELECT " + nhs + " FROM " + t, []Column{{Name: nhs, Type: catalog.FieldString}}
	})
}

// NumericValues returns the statement that reads the non-NULL values of
// a numeric column of a CDM table (cdm.NumericColumns): a float64 column
// named after it, then, where the CDM gives the value a range by the
// row's code (cdm.CodeColumn), that code as a string column named after
// its column. The node's configuration check tests each value with
// cdm.ValidValue in Go.
func NumericValues(d Dialect, table, column string) (Statement, error) {
	if d == nil {
		return Statement{}, errors.New("numeric values: no SQL dialect")
	}
	codeCol, _, ok := cdm.CodeColumn(table, column)
	if !ok {
		return Statement{}, fmt.Errorf("numeric values: %s.%s is not a numeric CDM column", table, column)
	}
	c := bareCompiler("", d)
	return c.statement(StatementNumericValues, func() (string, []Column) {
		t := c.anyTable(table)
		val := c.col(t, column)
		sel := val
		cols := []Column{{Name: val, Type: catalog.FieldFloat64}}
		if codeCol != "" {
			code := c.col(t, codeCol)
			sel += ", " + code
			cols = append(cols, Column{Name: code, Type: catalog.FieldString})
		}
		return "SELECT " + sel + " FROM " + t + " WHERE " + val + " IS NOT NULL", cols
	})
}
