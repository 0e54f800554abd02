package sqlgen

import (
	"fmt"
	"slices"
	"strings"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/policy/catalog"
)

// The population CTEs. Every statement starts from these:
//
//	ndop  the national data opt-out list and the site's patients on the
//	      network type 1 list, unnested from one argument
//	pt    the site's patient table: one row per valid NHS number
//	subj  the patients the statement is about, each with pt's columns
//	      (NULL where the site has no patient row), never on ndop

// ndopCTE unnests the opt-out lists the node binds: the national list and
// the network type 1 list, as one argument (the SQL text is the same
// whichever list a number came from).
func (c *compiler) ndopCTE() cte {
	list := c.opts.NDOP
	if len(c.opts.Network) > 0 {
		list = append(slices.Clone(c.opts.NDOP), c.opts.Network...)
	}
	return cte{"ndop", "SELECT DISTINCT unnest(" + c.texts(list) + ") AS nhs_number"}
}

// notOptedOut is true when the patient s is on neither opt-out list that
// applies at this site: the national list everywhere, and a type 1
// objection recorded in a practice's own opt_out table.
func (c *compiler) notOptedOut(s string) []string {
	conds := []string{"NOT EXISTS (SELECT 1 FROM ndop AS n WHERE n.nhs_number = " + s + ".nhs_number)"}
	if c.kind == cdm.KindGP {
		t := c.table(cdm.TableOptOut)
		conds = append(conds, fmt.Sprintf("NOT EXISTS (SELECT 1 FROM %s AS o WHERE o.%s = %s.nhs_number AND o.%s = %s)",
			t, c.col(t, cdm.ColNHSNumber), s, c.col(t, cdm.ColKind), c.text(cdm.OptOutType1)))
	}
	return conds
}

// patientColumns are the columns of pt besides nhs_number: those every
// statement may need, then the patient columns the task's variables read.
func (c *compiler) patientColumns() []string {
	cols := []string{cdm.ColBirthDate, cdm.ColDateOfDeath}
	for _, v := range c.variables() {
		if cv, ok := v.Expr.(*catalog.ColumnVar); ok {
			if name := c.col(cdm.TablePatient, cv.Column); !slices.Contains(cols, name) {
				cols = append(cols, name)
			}
		}
	}
	return cols
}

// ptCTE reads the patient table. Rows with an invalid NHS number are left
// out; several rows for one number become one, taking the smallest value
// of each column (the earliest birth and death dates), so that a patient
// is never counted twice.
func (c *compiler) ptCTE() cte {
	t := c.table(cdm.TablePatient)
	nhs := c.col(t, cdm.ColNHSNumber)
	sel := []string{"p." + nhs + " AS nhs_number"}
	for _, col := range c.patientColumns() {
		col = c.col(t, col)
		sel = append(sel, fmt.Sprintf("min(p.%s) AS %s", col, col))
	}
	return cte{"pt", fmt.Sprintf("SELECT %s\nFROM %s AS p\nWHERE %s\nGROUP BY p.%s", strings.Join(sel, ", "), t, c.d.validNHS("p."+nhs), nhs)}
}

// subjectColumns selects the patient's number from alias key and pt's
// other columns from alias a.
func (c *compiler) subjectColumns(key, a string) string {
	sel := []string{key + ".nhs_number"}
	for _, col := range c.patientColumns() {
		sel = append(sel, a+"."+col)
	}
	return strings.Join(sel, ", ")
}

// registeredHere is true when patient s was registered with this practice
// on day d: a registration row here with start_date ≤ d and an end_date
// that is NULL or after d. A registration that ends on d is over on d, so
// that a patient who transfers on d is counted at the new practice only.
func (c *compiler) registeredHere(s string, d catalog.Date) string {
	t := c.table(cdm.TableRegistration)
	conds := append([]string{fmt.Sprintf("r.%s = %s.nhs_number", c.col(t, cdm.ColNHSNumber), s)}, c.registrationConds("r", d)...)
	return fmt.Sprintf("EXISTS (SELECT 1 FROM %s AS r WHERE %s)", t, and(conds))
}

// registrationConds selects the registration rows r with this practice
// that are open on day d.
func (c *compiler) registrationConds(r string, d catalog.Date) []string {
	t := cdm.TableRegistration
	end := r + "." + c.col(t, cdm.ColEndDate)
	return []string{
		fmt.Sprintf("%s.%s = %s", r, c.col(t, cdm.ColPracticeODS), c.text(c.opts.SiteODS)),
		fmt.Sprintf("%s.%s <= %s", r, c.col(t, cdm.ColStartDate), c.date(d)),
		fmt.Sprintf("(%s IS NULL OR %s > %s)", end, end, c.date(d)),
	}
}

// gpSubjects is the GP population: patients registered here on the
// population's date, not opted out, meeting every criterion.
func (c *compiler) gpSubjects() cte {
	pop := c.def.Population
	if pop.RegisteredOn == nil {
		c.fail("a GP population needs registered_on")
		return cte{"subj", "SELECT NULL"}
	}
	conds := []string{c.registeredHere("s", c.b.Date(*pop.RegisteredOn))}
	conds = append(conds, c.notOptedOut("s")...)
	conds = append(conds, c.criteria(pop.Criteria, "s")...)
	return cte{"subj", fmt.Sprintf("SELECT %s\nFROM pt AS s\nWHERE %s", c.subjectColumns("s", "s"), strings.Join(conds, "\n  AND "))}
}

// trustSubjects are the patients a trust reports on: keys lists queries
// of nhs_number; each patient gets pt's columns (NULL where the trust has
// no patient row) and, where the trust evaluates the population, in_pop.
func (c *compiler) trustSubjects(keys []string) cte {
	if len(keys) == 0 {
		c.fail("nothing to report at %s sites", c.kind)
		keys = []string{"SELECT nhs_number FROM pt WHERE FALSE"}
	}
	conds := append([]string{c.d.validNHS("k.nhs_number")}, c.notOptedOut("k")...)
	inner := fmt.Sprintf("SELECT %s\nFROM (%s) AS k\nLEFT JOIN pt ON pt.nhs_number = k.nhs_number\nWHERE %s",
		c.subjectColumns("k", "pt"), strings.Join(keys, "\n  UNION "), strings.Join(conds, "\n  AND "))
	if !c.task.EvaluatesPopulation {
		return cte{"subj", inner}
	}
	return cte{"subj", fmt.Sprintf("SELECT s.*, %s AS in_pop\nFROM (%s) AS s", and(c.criteria(c.def.Population.Criteria, "s")), inner)}
}

// criteria compiles population criteria about patient s, one condition
// each. Every condition is true or false, never NULL, so that none_of
// means what it says for a patient with unknown age.
func (c *compiler) criteria(cs []catalog.Criterion, s string) []string {
	var out []string
	for _, cr := range cs {
		out = append(out, c.criterion(cr, s))
	}
	return out
}

func (c *compiler) criterion(cr catalog.Criterion, s string) string {
	switch cr := cr.(type) {
	case *catalog.AgeCriterion:
		age := c.age(s+".birth_date", c.b.Date(cr.On))
		var conds []string
		if cr.Min != nil {
			conds = append(conds, age+" >= "+c.int(c.b.Int(*cr.Min)))
		}
		if cr.Max != nil {
			conds = append(conds, age+" <= "+c.int(c.b.Int(*cr.Max)))
		}
		if len(conds) == 0 {
			conds = append(conds, age+" IS NOT NULL")
		}
		return "coalesce(" + and(conds) + ", false)"
	case *catalog.AliveCriterion:
		return fmt.Sprintf("(%s.date_of_death IS NULL OR %s.date_of_death > %s)", s, s, c.date(c.b.Date(cr.On)))
	case *catalog.EventCriterion:
		// An uncorrelated IN, not a correlated EXISTS: PostgreSQL runs a
		// correlated subquery in a select list (a trust's in_pop) once per
		// row, but hashes an uncorrelated one. NULL numbers are left out
		// of the subquery so that the test is never NULL.
		nhs := "e." + c.col(cr.Events.Table, cdm.ColNHSNumber)
		return fmt.Sprintf("%s.nhs_number IN (SELECT %s\n%s\n  AND %s IS NOT NULL)", s, nhs, c.eventsFrom(cr.Events), nhs)
	case *catalog.AllOf:
		return and(c.criteria(cr.Criteria, s))
	case *catalog.AnyOf:
		return or(c.criteria(cr.Criteria, s))
	case *catalog.NoneOf:
		return "NOT " + or(c.criteria(cr.Criteria, s))
	}
	c.fail("unknown population criterion %T", cr)
	return "FALSE"
}

// age is the age in whole years on day on of a patient born on birth (a
// date expression): the difference of the years, less one if the
// birthday's month and day come after on's. Someone born on 29 February
// turns a year older on 1 March in other years. NULL when birth is NULL.
func (c *compiler) age(birth string, on catalog.Date) string {
	y, m, d := on.Time().Date()
	part := func(p string) string { return fmt.Sprintf("CAST(EXTRACT(%s FROM %s) AS BIGINT)", p, birth) }
	return fmt.Sprintf("(%s - %s - CASE WHEN %s < %s * 100 + %s THEN 1 ELSE 0 END)",
		c.int(int64(y)), part("YEAR"), c.int(int64(m)*100+int64(d)), part("MONTH"), part("DAY"))
}

// eventConds are the conditions a row e of ev's table meets to be one of
// the patient's events: the window on ev's date column, the codelist, the
// column filters, and, where death is the patient's date of death (or
// NULL), not dated after it. The row's NHS number is not checked here:
// events only ever count for a number that was (see subjects).
func (c *compiler) eventConds(ev catalog.Events, e, death string) []string {
	t := c.table(ev.Table)
	var conds []string
	dc := e + "." + c.col(t, ev.DateColumn)
	w := c.b.Window(ev.Window)
	if w.From != nil {
		conds = append(conds, dc+" >= "+c.date(*w.From))
	}
	if w.To != nil {
		conds = append(conds, dc+" <= "+c.date(*w.To))
	}
	if ev.Codelist != nil {
		cl := c.b.Codelist(*ev.Codelist)
		if cl == nil {
			c.fail("codelist %v is not in the definition", *ev.Codelist)
		} else {
			conds = append(conds, c.codeMatch(e+"."+c.col(t, ev.CodeColumn), cl))
		}
	}
	conds = append(conds, c.filters(ev.Table, ev.Where, e)...)
	conds = append(conds, c.validValues(t, e)...)
	if death != "" {
		ed := e + "." + c.col(t, eventDateColumn(t))
		conds = append(conds, fmt.Sprintf("(%s IS NULL OR %s <= %s)", death, ed, death))
	}
	return conds
}

// validValues are the conditions a row e of table meets when each of its
// numeric columns is NULL or holds a valid value (cdm.ValidValue): finite,
// and in its code's range where the CDM knows one. Finiteness is a BETWEEN
// on the largest finite doubles, which NaN fails in both dialects (both
// order NaN above every number) as ±Inf do; so the test needs no
// dialect's isfinite and no literal, and is never NULL for a non-NULL
// value. A NULL code is in no code's range.
func (c *compiler) validValues(table, e string) []string {
	var out []string
	for _, col := range cdm.NumericColumns(table) {
		x := e + "." + c.col(table, col)
		codeCol, ranges, _ := cdm.CodeColumn(table, col)
		conds := []string{c.between(x, cdm.Finite())}
		for _, r := range ranges {
			in := c.d.inArray(e+"."+c.col(table, codeCol), c.texts(r.Codes))
			conds = append(conds, fmt.Sprintf("NOT (coalesce(%s, false) AND NOT %s)", in, c.between(x, r.Range)))
		}
		out = append(out, fmt.Sprintf("(%s IS NULL OR %s)", x, and(conds)))
	}
	return out
}

func (c *compiler) between(x string, r cdm.Range) string {
	return fmt.Sprintf("(%s BETWEEN %s AND %s)", x, c.float(r.Min), c.float(r.Max))
}

// filters restricts rows e of table to the values each filter allows.
func (c *compiler) filters(table string, fs []catalog.Filter, e string) []string {
	var out []string
	for _, f := range fs {
		out = append(out, c.d.inArray(e+"."+c.col(table, f.Column), c.texts(c.b.FilterValues(f))))
	}
	return out
}

// codeMatch is true when the code x falls under cl, as cl.Matches says:
// equal to a code of the list, or, for ICD-10, starting with one once its
// first dot is removed.
func (c *compiler) codeMatch(x string, cl *catalog.Codelist) string {
	codes := c.texts(cl.Values())
	if !cl.System.PrefixMatch() {
		return c.d.inArray(x, codes)
	}
	dot := c.text(".")
	at := "strpos(" + x + ", " + dot + ")"
	norm := fmt.Sprintf("(CASE WHEN %s > 0 THEN left(%s, %s - 1) || substr(%s, %s + 1) ELSE %s END)", at, x, at, x, at, x)
	return fmt.Sprintf("EXISTS (SELECT 1 FROM (SELECT unnest(%s) AS code) AS cl WHERE starts_with(%s, cl.code))", codes, norm)
}
