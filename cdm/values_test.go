package cdm

import (
	"math"
	"testing"
)

func TestValidValue(t *testing.T) {
	const sbp, dbp, other = "163030003", "271650006", "27113001" // systolic, diastolic, body weight
	for _, tc := range []struct {
		name          string
		table, column string
		code          string
		v             float64
		want          bool
	}{
		{"systolic", TableClinicalEvent, ColNumericValue, sbp, 135, true},
		{"systolic at the floor", TableClinicalEvent, ColNumericValue, sbp, 20, true},
		{"systolic at the ceiling", TableClinicalEvent, ColNumericValue, sbp, 400, true},
		{"systolic impossible", TableClinicalEvent, ColNumericValue, sbp, 4000, false},
		{"systolic below the floor", TableClinicalEvent, ColNumericValue, sbp, 19.9, false},
		{"systolic +Inf", TableClinicalEvent, ColNumericValue, sbp, math.Inf(1), false},
		{"diastolic impossible", TableClinicalEvent, ColNumericValue, dbp, 301, false},
		{"unknown unit, large", TableClinicalEvent, ColNumericValue, other, 4000, true},
		{"unknown unit, negative", TableClinicalEvent, ColNumericValue, other, -5, true},
		{"unknown unit, +Inf", TableClinicalEvent, ColNumericValue, other, math.Inf(1), false},
		{"unknown unit, -Inf", TableClinicalEvent, ColNumericValue, other, math.Inf(-1), false},
		{"unknown unit, NaN", TableClinicalEvent, ColNumericValue, other, math.NaN(), false},
		{"not a numeric column", TableClinicalEvent, ColSNOMEDCode, sbp, 135, false},
		{"no such table", "nope", ColNumericValue, sbp, 135, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ValidValue(tc.table, tc.column, tc.code, tc.v); got != tc.want {
				t.Errorf("ValidValue(%s, %s, %s, %v) = %v, want %v", tc.table, tc.column, tc.code, tc.v, got, tc.want)
			}
		})
	}
}

func TestNumericColumns(t *testing.T) {
	for _, tb := range Tables() {
		for _, c := range NumericColumns(tb.Name) {
			if _, _, ok := CodeColumn(tb.Name, c); !ok {
				t.Errorf("%s.%s: a Float64 column without a value rule", tb.Name, c)
			}
		}
	}
	if got := NumericColumns(TableClinicalEvent); len(got) != 1 || got[0] != ColNumericValue {
		t.Errorf("NumericColumns(clinical_event) = %v, want [numeric_value]", got)
	}
	// Every code range is finite and names a code column the table has.
	for _, tb := range Tables() {
		for _, c := range NumericColumns(tb.Name) {
			cc, ranges, _ := CodeColumn(tb.Name, c)
			if len(ranges) > 0 {
				if _, ok := tb.Column(cc); !ok {
					t.Errorf("%s.%s: code column %q not in the table", tb.Name, c, cc)
				}
			}
			for _, r := range ranges {
				if !(r.Range.Min < r.Range.Max) || math.IsInf(r.Range.Min, 0) || math.IsInf(r.Range.Max, 0) || len(r.Codes) == 0 {
					t.Errorf("%s.%s: bad range %+v", tb.Name, c, r)
				}
			}
		}
	}
}
