package cdm

import (
	"math"
	"slices"
)

// Range is a closed interval of plausible values of a numeric column.
// Contains is false for NaN and, for a finite Range, for ±Inf.
type Range struct{ Min, Max float64 }

// Contains reports whether v lies in r, ends included.
func (r Range) Contains(v float64) bool { return v >= r.Min && v <= r.Max }

// Finite is the range every Float64 column is held to: any finite value.
// A NaN or infinite value is never a measurement, whatever the code.
func Finite() Range { return Range{Min: -math.MaxFloat64, Max: math.MaxFloat64} }

// CodeRange is the plausible range of the values recorded under some
// codes, where the CDM knows their unit.
type CodeRange struct {
	Codes []string
	Unit  string
	Range Range
}

// The rule for numeric values. Every value of a Float64 column must be
// finite (NULL is allowed where the column is nullable: no reading). Where
// a row's code fixes the unit, the value must also lie in the code's
// physiologically possible range, set wide so that only a value no living
// patient can have (a mis-keyed 4000 mmHg) falls outside. A row holding an
// invalid value is left out of every query, as a row with an invalid NHS
// number is, and counted.

// CodeColumn returns the column whose code fixes the unit of the Float64
// column column of table, and the ranges per code; ok is false when the
// column is not a CDM Float64 column. A column with no code ranges is held
// to Finite only.
func CodeColumn(table, column string) (codeColumn string, ranges []CodeRange, ok bool) {
	t, found := Lookup(table)
	if !found {
		return "", nil, false
	}
	c, found := t.Column(column)
	if !found || c.Type != Float64 {
		return "", nil, false
	}
	if table == TableClinicalEvent && column == ColNumericValue {
		return ColSNOMEDCode, []CodeRange{
			// SNOMED CT systolic readings (policy/bundle/codelists/systolic-bp.csv).
			{Codes: []string{"271649006", "72313002", "163030003", "407554009", "407556006", "400974009"},
				Unit: "mmHg", Range: Range{Min: 20, Max: 400}},
			// SNOMED CT diastolic readings.
			{Codes: []string{"271650006", "1091811000000102", "163031004"},
				Unit: "mmHg", Range: Range{Min: 10, Max: 300}},
		}, true
	}
	return "", nil, true
}

// NumericColumns returns the Float64 columns of table, in schema order.
func NumericColumns(table string) []string {
	t, ok := Lookup(table)
	if !ok {
		return nil
	}
	var out []string
	for _, c := range t.Columns {
		if c.Type == Float64 {
			out = append(out, c.Name)
		}
	}
	return out
}

// ValidValue reports whether v is a valid value of the Float64 column
// column of table in a row whose code (in the column CodeColumn names) is
// code: finite, and within the code's range where the CDM knows one. It
// is false for a column that is not a CDM Float64 column.
func ValidValue(table, column, code string, v float64) bool {
	_, ranges, ok := CodeColumn(table, column)
	if !ok || !Finite().Contains(v) {
		return false
	}
	for _, r := range ranges {
		if slices.Contains(r.Codes, code) && !r.Range.Contains(v) {
			return false
		}
	}
	return true
}
