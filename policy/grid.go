package policy

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/havenhealth/haven/policy/catalog"
)

// DateGrids are the steps an approval may restrict a date parameter to
// (data.approvals.<id>.parameters.<name>.step), with how people read them.
// haven.lib in the bundle implements the same grids; TestDateGridsMatchRego
// keeps the two lists equal.
var DateGrids = map[string]string{
	"month_start":   "month starts",
	"quarter_start": "quarter starts (1 January, April, July, October)",
	"month_end":     "month ends",
}

// Grid is an approval's restriction of a parameter to a grid of values,
// beside its min and max: a date step, an int step counted from the
// minimum (or 0), or a list of allowed ints.
type Grid struct {
	DateStep string  // one of DateGrids, for a date
	Every    int64   // an int step, > 0
	From     int64   // where Every counts from
	Values   []int64 // allowed ints, sorted
}

// GridOf reads the grid of one approved range (the object in data.json);
// ok is false when the range sets none. It does not check the range: see
// ApprovalProblems.
func GridOf(r map[string]any) (g Grid, ok bool) {
	switch step := r["step"].(type) {
	case string:
		g.DateStep, ok = step, true
	case json.Number:
		g.Every, _ = step.Int64()
		ok = true
	case float64:
		g.Every, ok = int64(step), true
	}
	if ok && g.Every != 0 {
		g.From = intOf(r["min"])
	}
	if list, isList := r["values"].([]any); isList {
		for _, x := range list {
			if n, isNum := numberOf(x); isNum {
				g.Values = append(g.Values, n)
			}
		}
		if len(g.Values) > 0 {
			slices.Sort(g.Values)
			ok = true
		}
	}
	return g, ok
}

func numberOf(x any) (int64, bool) {
	switch n := x.(type) {
	case json.Number:
		v, err := n.Int64()
		return v, err == nil
	case float64:
		return int64(n), float64(int64(n)) == n
	}
	return 0, false
}

func intOf(x any) int64 {
	n, _ := numberOf(x)
	return n
}

// String says what the grid allows, for the catalogue and the CLI.
func (g Grid) String() string {
	switch {
	case g.DateStep != "":
		if s, ok := DateGrids[g.DateStep]; ok {
			return s
		}
		return fmt.Sprintf("%q (a grid Haven does not know)", g.DateStep)
	case g.Every > 0:
		return fmt.Sprintf("every %d from %d", g.Every, g.From)
	case len(g.Values) > 0:
		s := make([]string, len(g.Values))
		for i, v := range g.Values {
			s[i] = fmt.Sprint(v)
		}
		return "one of " + strings.Join(s, ", ")
	}
	return "any value in range"
}

// Allows reports whether v lies on the grid, as haven/submit decides it.
func (g Grid) Allows(v catalog.Value) bool {
	switch {
	case g.DateStep != "":
		if v.Type != catalog.ParamDate {
			return false
		}
		t := v.Date.Time()
		switch g.DateStep {
		case "month_start":
			return t.Day() == 1
		case "quarter_start":
			return t.Day() == 1 && (t.Month()-1)%3 == 0
		case "month_end":
			return t.AddDate(0, 0, 1).Day() == 1
		}
		return false
	case g.Every != 0:
		return v.Type == catalog.ParamInt && g.Every > 0 && (v.Int-g.From)%g.Every == 0 &&
			(len(g.Values) == 0 || slices.Contains(g.Values, v.Int))
	case len(g.Values) > 0:
		return v.Type == catalog.ParamInt && slices.Contains(g.Values, v.Int)
	}
	return true
}
