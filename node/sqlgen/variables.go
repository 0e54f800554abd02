package sqlgen

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/policy/catalog"
)

// varSQL is how the variables of a task are computed for the subjects s:
// CTEs keyed by nhs_number, the joins that bring them to s, and one
// expression per output field.
type varSQL struct {
	ctes  []cte
	joins []string
	// fields maps each field name to its expression.
	fields map[string]string
	// report holds conditions meaning the patient has something to report
	// (see SiteTask): a count above 0, an exists that is true, a value or a
	// first day that is not NULL, a day list that is not empty.
	report []string
	// ages are the age columns the expressions read from s, added to the
	// subjects by ageCTE.
	ages []ageColumn
}

type ageColumn struct {
	key  string // the date expression, as written: equal texts share a column
	name string
	on   catalog.Date
}

// ageOf returns the column of s that holds the age on on.
func (vs *varSQL) ageOf(b *catalog.Bound, on catalog.DateExpr) string {
	key := on.String()
	for _, a := range vs.ages {
		if a.key == key {
			return "s." + a.name
		}
	}
	name := "age_" + strconv.Itoa(len(vs.ages))
	vs.ages = append(vs.ages, ageColumn{key: key, name: name, on: b.Date(on)})
	return "s." + name
}

// ageCTE adds the age columns to the subjects; it returns the name the
// final query reads subjects from.
func (c *compiler) ageCTE(vs *varSQL) (string, []cte) {
	if len(vs.ages) == 0 {
		return "subj", nil
	}
	sel := []string{"s.*"}
	for _, a := range vs.ages {
		sel = append(sel, c.age("s.birth_date", a.on)+" AS "+a.name)
	}
	return "sx", []cte{{"sx", "SELECT " + strings.Join(sel, ", ") + "\nFROM subj AS s"}}
}

// compileVariables compiles the task's variables for subjects s.
func (c *compiler) compileVariables() *varSQL {
	vs := &varSQL{fields: map[string]string{}}
	for i, v := range c.variables() {
		c.variable(vs, "v"+strconv.Itoa(i), v)
	}
	return vs
}

// eventsFrom is the FROM and WHERE of the rows of ev for each patient,
// with the patient's date of death from pt. The CTEs built on it are
// joined to the subjects, whose numbers are checked, so a row with an
// invalid number never counts.
func (c *compiler) eventsFrom(ev catalog.Events) string {
	t := c.table(ev.Table)
	conds := c.eventConds(ev, "e", "dth.date_of_death")
	if len(conds) == 0 {
		conds = []string{"TRUE"}
	}
	return fmt.Sprintf("FROM %s AS e\nLEFT JOIN pt AS dth ON dth.nhs_number = e.%s\nWHERE %s",
		t, c.col(t, cdm.ColNHSNumber), strings.Join(conds, "\n  AND "))
}

func (c *compiler) variable(vs *varSQL, name string, v *catalog.Variable) {
	join := func(cteName string) {
		vs.joins = append(vs.joins, fmt.Sprintf("LEFT JOIN %s ON %s.nhs_number = s.nhs_number", cteName, cteName))
	}
	switch x := v.Expr.(type) {
	case *catalog.ColumnVar:
		vs.fields[v.Name] = "s." + c.col(cdm.TablePatient, x.Column)

	case *catalog.AgeVar:
		vs.fields[v.Name] = vs.ageOf(c.b, x.On)

	case *catalog.AgeBandVar:
		age := vs.ageOf(c.b, x.On)
		bands := x.Bands()
		var b strings.Builder
		b.WriteString("CASE")
		// Highest band first, so each test needs only a lower bound.
		for i := len(bands) - 1; i >= 0; i-- {
			fmt.Fprintf(&b, " WHEN %s >= %s THEN %s", age, c.int(bands[i].Min), c.text(bands[i].Label))
		}
		b.WriteString(" ELSE NULL END")
		vs.fields[v.Name] = b.String()

	case *catalog.PracticeVar:
		t := c.table(cdm.TableRegistration)
		nhs := c.col(t, cdm.ColNHSNumber)
		vs.ctes = append(vs.ctes, cte{name, fmt.Sprintf("SELECT r.%s AS nhs_number, min(r.%s) AS value\nFROM %s AS r\nWHERE %s\nGROUP BY r.%s",
			nhs, c.col(t, cdm.ColPracticeODS), t, and(c.registrationConds("r", c.b.Date(x.On))), nhs)})
		join(name)
		vs.fields[v.Name] = name + ".value"

	case *catalog.CountVar:
		t := x.Events.Table
		sel := []string{"e." + c.col(t, cdm.ColNHSNumber) + " AS nhs_number"}
		for _, col := range identityColumns(t) {
			sel = append(sel, "e."+c.col(t, col)+" AS "+col)
		}
		vs.ctes = append(vs.ctes, cte{name, fmt.Sprintf("SELECT x.nhs_number, count(*) AS value\nFROM (SELECT DISTINCT %s\n%s) AS x\nGROUP BY x.nhs_number",
			strings.Join(sel, ", "), c.eventsFrom(x.Events))})
		join(name)
		vs.fields[v.Name] = "CAST(coalesce(" + name + ".value, 0) AS BIGINT)"
		vs.report = append(vs.report, name+".value > 0")

	case *catalog.ExistsVar:
		t := x.Events.Table
		vs.ctes = append(vs.ctes, cte{name, fmt.Sprintf("SELECT DISTINCT e.%s AS nhs_number\n%s",
			c.col(t, cdm.ColNHSNumber), c.eventsFrom(x.Events))})
		join(name)
		vs.fields[v.Name] = "(" + name + ".nhs_number IS NOT NULL)"
		vs.report = append(vs.report, name+".nhs_number IS NOT NULL")

	case *catalog.LatestVar:
		t := x.Events.Table
		val := "e." + c.col(t, x.Column)
		dc := "e." + c.col(t, x.Events.DateColumn)
		vs.ctes = append(vs.ctes, cte{name, fmt.Sprintf(
			"SELECT x.nhs_number, x.value\nFROM (SELECT e.%s AS nhs_number, CAST(%s AS %s) AS value, row_number() OVER (PARTITION BY e.%s ORDER BY %s DESC, %s DESC) AS rn\n%s\n  AND %s IS NOT NULL) AS x\nWHERE x.rn = 1",
			c.col(t, cdm.ColNHSNumber), val, c.d.doubleType(), c.col(t, cdm.ColNHSNumber), dc, val, c.eventsFrom(x.Events), val)})
		join(name)
		vs.fields[v.Name] = name + ".value"
		vs.report = append(vs.report, name+".value IS NOT NULL")

	case *catalog.FirstTrustVar:
		t := x.Events.Table
		w := c.b.Window(x.Events.Window)
		if w.From == nil {
			c.fail("variable %s: first_trust needs a window with a start", v.Name)
			return
		}
		vs.ctes = append(vs.ctes, cte{name, fmt.Sprintf("SELECT e.%s AS nhs_number, CAST(min(e.%s) - %s AS BIGINT) AS value\n%s\nGROUP BY e.%s",
			c.col(t, cdm.ColNHSNumber), c.col(t, x.Events.DateColumn), c.date(*w.From), c.eventsFrom(x.Events), c.col(t, cdm.ColNHSNumber))})
		join(name)
		vs.fields[v.Name+"__first_day"] = name + ".value"
		vs.report = append(vs.report, name+".value IS NOT NULL")

	case *catalog.ReadmissionsVar:
		w := c.b.Window(x.Index.Window)
		if w.From == nil || w.To == nil {
			c.fail("variable %s: readmissions need an index window with both ends", v.Name)
			return
		}
		within := c.b.Int(x.WithinDays)
		last := catalog.Date(int64(*w.To) + within)
		// Admissions that could be readmissions after an index discharge:
		// from the window's start to within days after its end.
		admissions := catalog.Events{Table: cdm.TableAPCEpisode, DateColumn: cdm.ColAdmissionDate,
			Where: x.Where, Window: catalog.Window{From: &catalog.DateExpr{Date: *w.From}, To: &catalog.DateExpr{Date: last}}}
		days := func(cteName string, ev catalog.Events) {
			t := ev.Table
			vs.ctes = append(vs.ctes, cte{cteName, fmt.Sprintf(
				"SELECT x.nhs_number, %s AS value\nFROM (SELECT DISTINCT e.%s AS nhs_number, e.%s AS episode_id, CAST(e.%s - %s AS BIGINT) AS day\n%s) AS x\nGROUP BY x.nhs_number",
				c.d.intListAgg("x.day"), c.col(t, cdm.ColNHSNumber), c.col(t, cdm.ColEpisodeID), c.col(t, ev.DateColumn), c.date(*w.From), c.eventsFrom(ev))})
			join(cteName)
			vs.report = append(vs.report, cteName+".value IS NOT NULL")
		}
		days(name+"d", x.Index)
		days(name+"a", admissions)
		vs.fields[v.Name+"__discharge_days"] = "coalesce(" + name + "d.value, " + c.d.emptyIntList() + ")"
		vs.fields[v.Name+"__admission_days"] = "coalesce(" + name + "a.value, " + c.d.emptyIntList() + ")"

	default:
		c.fail("variable %s: unknown kind %T", v.Name, v.Expr)
	}
}
