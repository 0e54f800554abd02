package sqlgen

import (
	"fmt"
	"slices"
	"strings"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/policy/catalog"
)

// members is the Members statement of an aggregate program.
func (c *compiler) members() (string, []Column) {
	ctes := []cte{c.ndopCTE(), c.ptCTE(), c.gpSubjects()}
	q := "SELECT s.nhs_number AS nhs_number\nFROM subj AS s\nORDER BY " + c.d.orderText("s.nhs_number")
	return with(ctes, q), []Column{{Name: cdm.ColNHSNumber, Type: catalog.FieldString}}
}

// cells is the Result statement of an aggregate program: per-patient
// values in pv, then one row per non-empty group. Cell keys are left out:
// the node adds them from the Keys statement.
func (c *compiler) cells() (string, []Column) { return c.cellsWith(false) }

// checkedCells is the CheckedResult statement: cells with the list of
// each cell's patients as one more, last column.
func (c *compiler) checkedCells() (string, []Column) { return c.cellsWith(true) }

// cellsWith is cells, with the members column last when members is set.
func (c *compiler) cellsWith(members bool) (string, []Column) {
	ctes := c.pvCTEs()
	var sel, groups, order []string
	var cols []Column
	for _, f := range c.task.Fields {
		if f.Partial.IsKey() {
			continue
		}
		cols = append(cols, Column{Name: f.Name, Type: f.Type})
		switch f.Role {
		case catalog.RoleGroup:
			g := "pv." + c.quote(f.Source)
			sel = append(sel, g+" AS "+c.quote(f.Name))
			groups = append(groups, g)
			if f.Type == catalog.FieldString {
				g = c.d.orderText(g)
			}
			order = append(order, g+" ASC NULLS LAST")
		case catalog.RolePartial:
			sel = append(sel, c.partial(f)+" AS "+c.quote(f.Name))
		default:
			c.fail("field %s: a cell has no %s fields", f.Name, f.Role)
		}
	}
	if members {
		for _, f := range c.task.Fields {
			if f.Name == ColMembers {
				c.fail("field %s: the name is the members column's", f.Name)
			}
		}
		sel = append(sel, c.d.textListAgg("pv.nhs_number")+" AS "+ColMembers)
		cols = append(cols, Column{Name: ColMembers, Type: FieldStrings})
	}
	q := "SELECT " + strings.Join(sel, ",\n  ") + "\nFROM pv"
	if len(groups) > 0 {
		q += "\nGROUP BY " + strings.Join(groups, ", ")
	}
	// Without groups an aggregate returns a row even for no patients; a
	// cell exists only where there are some.
	q += "\nHAVING count(*) > 0"
	if len(order) > 0 {
		q += "\nORDER BY " + strings.Join(order, ", ")
	}
	return with(ctes, q), cols
}

// keys is the Keys statement of an aggregate program with record keys:
// one row per patient of pv, with nhs_number, the group columns and, for
// each cell key field, whether the partial it keys counts the patient: a
// count's where; a sum's n, its contributors (non-zero values); a mean's
// n, a non-null value; a bool mean's sum, a true value. The node derives
// each patient's record key in Go (the perturbation secret never reaches
// SQL) and adds them up per cell.
func (c *compiler) keys() (string, []Column) {
	ctes := c.pvCTEs()
	sel := []string{"pv.nhs_number AS nhs_number"}
	cols := []Column{{Name: cdm.ColNHSNumber, Type: catalog.FieldString}}
	for _, f := range c.task.Fields {
		switch {
		case f.Role == catalog.RoleGroup:
			sel = append(sel, "pv."+c.quote(f.Source)+" AS "+c.quote(f.Name))
		case f.Partial.IsKey():
			m := c.measure(f)
			if m == nil {
				continue
			}
			var conds []string
			if m.Where != nil {
				conds = append(conds, c.cond(m.Where))
			}
			switch f.Partial {
			case catalog.PartialNKey:
				val := c.numeric(m.Of)
				if m.Agg == catalog.AggSum {
					conds = append(conds, val+" <> 0")
				} else {
					conds = append(conds, val+" IS NOT NULL")
				}
			case catalog.PartialSumKey:
				conds = append(conds, c.numeric(m.Of)+" = 1")
			}
			counted := "TRUE"
			if len(conds) > 0 {
				// A NULL condition fails, as FILTER treats it.
				counted = "coalesce(" + and(conds) + ", FALSE)"
			}
			sel = append(sel, counted+" AS "+c.quote(f.Name))
			f.Type = catalog.FieldBool
		default:
			continue
		}
		cols = append(cols, Column{Name: f.Name, Type: f.Type})
	}
	q := "SELECT " + strings.Join(sel, ",\n  ") + "\nFROM pv\nORDER BY " + c.d.orderText("pv.nhs_number")
	return with(ctes, q), cols
}

// pvCTEs are the CTEs of an aggregate program up to pv, which holds one
// row per patient of the population: nhs_number and every variable.
func (c *compiler) pvCTEs() []cte {
	ctes := []cte{c.ndopCTE(), c.ptCTE(), c.gpSubjects()}
	vs := c.compileVariables()
	ctes = append(ctes, vs.ctes...)
	from, ages := c.ageCTE(vs)
	ctes = append(ctes, ages...)

	var pv []string
	pv = append(pv, "s.nhs_number")
	for _, v := range c.variables() {
		expr, ok := vs.fields[v.Name]
		if !ok {
			c.fail("variable %s has no single value to aggregate", v.Name)
			continue
		}
		pv = append(pv, expr+" AS "+c.quote(v.Name))
	}
	return append(ctes, cte{"pv", fmt.Sprintf("SELECT %s\nFROM %s AS s\n%s", strings.Join(pv, ",\n  "), from, strings.Join(vs.joins, "\n"))})
}

// measure is the measure a partial field belongs to, or nil after failing.
func (c *compiler) measure(f catalog.Field) *catalog.Measure {
	for _, x := range c.def.Measures {
		if x.Name == f.Source {
			return x
		}
	}
	c.fail("field %s: no measure %q", f.Name, f.Source)
	return nil
}

// partial computes one measure partial over the patients of a group.
func (c *compiler) partial(f catalog.Field) string {
	m := c.measure(f)
	if m == nil {
		return "NULL"
	}
	var where []string
	if m.Where != nil {
		where = append(where, c.cond(m.Where))
	}
	filter := func(conds []string) string {
		switch len(conds) {
		case 0:
			return ""
		case 1:
			return " FILTER (WHERE " + conds[0] + ")"
		}
		return " FILTER (WHERE " + and(conds) + ")"
	}
	if f.Partial == catalog.PartialCount {
		return "count(*)" + filter(where)
	}
	val := c.numeric(m.Of)
	typ := "BIGINT"
	if f.Type == catalog.FieldFloat64 {
		typ = c.d.doubleType()
	}
	// A sum's contributors, and so its n and top, are the patients whose
	// value is not zero (catalog.Partial): the disclosure rule for few
	// contributors must not count those who add nothing.
	contributors := where
	if m.Agg == catalog.AggSum {
		contributors = append(slices.Clip(where), val+" <> 0")
	}
	switch f.Partial {
	case catalog.PartialSum:
		return fmt.Sprintf("CAST(coalesce(sum(%s)%s, 0) AS %s)", val, filter(where), typ)
	case catalog.PartialN:
		return fmt.Sprintf("count(%s)%s", val, filter(contributors))
	case catalog.PartialMin:
		return fmt.Sprintf("CAST(min(%s)%s AS %s)", val, filter(where), typ)
	case catalog.PartialMax:
		return fmt.Sprintf("CAST(max(%s)%s AS %s)", val, filter(where), typ)
	case catalog.PartialTop:
		return fmt.Sprintf("CAST(max(%s)%s AS %s)", val, filter(contributors), typ)
	}
	c.fail("field %s: unknown partial %q", f.Name, f.Partial)
	return "NULL"
}

// numeric is the value of variable name in pv as a number: a bool counts
// 1 or 0, and stays NULL when NULL.
func (c *compiler) numeric(name string) string {
	v, ok := c.def.Variable(name)
	if !ok {
		c.fail("no variable %q", name)
		return "NULL"
	}
	col := "pv." + c.quote(name)
	if v.Expr.Type() == catalog.TypeBool {
		return "(CASE WHEN " + col + " THEN 1 WHEN NOT " + col + " THEN 0 END)"
	}
	return col
}

// cond compiles a measure condition. A NULL value makes its comparison
// NULL, which FILTER treats as false: the patient fails it.
func (c *compiler) cond(w *catalog.Cond) string {
	var terms []string
	for _, t := range w.Terms {
		var op string
		switch t.Op {
		case catalog.OpLT, catalog.OpLE, catalog.OpGT, catalog.OpGE:
			op = string(t.Op)
		case catalog.OpEQ:
			op = "="
		case catalog.OpNE:
			op = "<>"
		default:
			c.fail("unknown comparison %q", t.Op)
			return "FALSE"
		}
		terms = append(terms, fmt.Sprintf("%s %s %s", c.numeric(t.Var), op, c.float(c.b.Number(t.Value))))
	}
	return and(terms)
}

// patients is the Result statement of a linkage program: one row per
// relevant patient, nhs_number first.
func (c *compiler) patients() (string, []Column) {
	ctes := []cte{c.ndopCTE(), c.ptCTE()}
	vs := c.compileVariables()
	var where []string
	if c.kind == cdm.KindGP {
		// The practice's population: every patient in it has a row.
		ctes = append(ctes, c.gpSubjects())
		ctes = append(ctes, vs.ctes...)
	} else {
		ctes = append(ctes, vs.ctes...)
		var keys []string
		if c.task.EvaluatesPopulation {
			// Everyone the trust knows of might be in the population.
			keys = append(keys, "SELECT nhs_number FROM pt")
			for _, t := range c.eventTables() {
				keys = append(keys, fmt.Sprintf("SELECT e.%s FROM %s AS e", c.col(t, cdm.ColNHSNumber), c.table(t)))
			}
			where = append(where, "s.in_pop")
		} else {
			// Only patients with something to report: each variable's
			// CTE holds exactly those.
			for _, x := range vs.ctes {
				keys = append(keys, "SELECT nhs_number FROM "+x.name)
			}
		}
		ctes = append(ctes, c.trustSubjects(keys))
		where = append(where, vs.report...)
	}
	from, ages := c.ageCTE(vs)
	ctes = append(ctes, ages...)

	var sel []string
	var cols []Column
	for _, f := range c.task.Fields {
		switch {
		case f.Role == catalog.RoleKey:
			sel = append(sel, "s.nhs_number AS nhs_number")
			cols = append(cols, Column{Name: cdm.ColNHSNumber, Type: catalog.FieldString})
			continue
		case f.Role == catalog.RoleRecordKey:
			// The node derives it from nhs_number in Go, as it does the
			// pseudonym: the perturbation secret never reaches SQL.
			continue
		case f.Role == catalog.RolePopulation:
			if !c.task.EvaluatesPopulation || c.kind == cdm.KindGP {
				c.fail("field %s: this task does not evaluate the population", f.Name)
			}
			sel = append(sel, "s.in_pop AS "+c.quote(f.Name))
		default:
			expr, ok := vs.fields[f.Name]
			if !ok {
				c.fail("field %s: no expression for it", f.Name)
				continue
			}
			sel = append(sel, expr+" AS "+c.quote(f.Name))
		}
		cols = append(cols, Column{Name: f.Name, Type: f.Type})
	}
	q := fmt.Sprintf("SELECT %s\nFROM %s AS s\n%s", strings.Join(sel, ",\n  "), from, strings.Join(vs.joins, "\n"))
	if len(where) > 0 {
		q += "\nWHERE " + or(where)
	}
	q += "\nORDER BY " + c.d.orderText("s.nhs_number")
	return with(ctes, q), cols
}
