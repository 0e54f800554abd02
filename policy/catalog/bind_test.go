package catalog

import (
	"errors"
	"maps"
	"strings"
	"testing"
	"time"
)

func TestBind(t *testing.T) {
	c := loadBundle(t)
	// A definition exercising every parameter type, and one with no default.
	withKinds := parseGood(t, `
id: kinds
version: 1
title: Every parameter type
parameters:
  index_date: {type: date, min: 2015-01-01, max: 2030-12-31}
  days: {type: int, min: 1, max: 100, default: 30}
  method: {type: enum, values: [emergency, elective], default: emergency}
  condition: {type: codelist, values: [t2dm, copd], default: t2dm}
population:
  registered_on: $index_date
  has_event: {table: clinical_event, codelist: $condition, on_or_before: $index_date}
variables:
  n: {count: {table: apc_episode, where: {admission_method: $method}, between: [$index_date, $index_date + days]}}
measures: [{name: n, sum: n}]
`)
	t2dm, _ := c.Get("t2dm-emergency-admissions")
	readmit, _ := c.Get("emergency-readmissions-30d")
	tests := []struct {
		name   string
		def    *Definition
		values map[string]string
		want   map[string]string // the bound wire form, when binding succeeds
		errs   []string          // error substrings, when it fails
	}{
		{name: "defaults", def: t2dm, values: nil,
			want: map[string]string{"index_date": "2023-04-01", "followup_days": "365"}},
		{name: "given values", def: t2dm, values: map[string]string{"index_date": "2020-02-29", "followup_days": "30"},
			want: map[string]string{"index_date": "2020-02-29", "followup_days": "30"}},
		{name: "every type", def: withKinds, values: map[string]string{"index_date": "2024-01-01", "method": "elective", "condition": "copd"},
			want: map[string]string{"index_date": "2024-01-01", "days": "30", "method": "elective", "condition": "copd"}},
		{name: "unknown parameter", def: t2dm, values: map[string]string{"followup_day": "30"},
			errs: []string{`parameters.followup_day: unknown parameter "followup_day" (did you mean "followup_days"?)`}},
		{name: "missing required", def: withKinds, values: nil,
			errs: []string{"parameters.index_date: missing value for parameter index_date (a date from 2015-01-01 to 2030-12-31, no default)"}},
		{name: "not a date", def: t2dm, values: map[string]string{"index_date": "01/04/2023"},
			errs: []string{`parameters.index_date: parameter index_date: "01/04/2023" is not a date: want YYYY-MM-DD`}},
		{name: "impossible date", def: t2dm, values: map[string]string{"index_date": "2023-02-29"},
			errs: []string{`"2023-02-29" is not a date`}},
		{name: "not an int", def: t2dm, values: map[string]string{"followup_days": "a year"},
			errs: []string{`parameters.followup_days: parameter followup_days: "a year" is not a whole number`}},
		{name: "int with spaces", def: t2dm, values: map[string]string{"followup_days": " 365"},
			errs: []string{`" 365" is not a whole number`}},
		{name: "int with plus", def: t2dm, values: map[string]string{"followup_days": "+365"},
			errs: []string{`"+365" is not a whole number`}},
		{name: "below min", def: t2dm, values: map[string]string{"followup_days": "29"},
			errs: []string{"parameter followup_days: 29 is below the minimum 30"}},
		{name: "above max", def: t2dm, values: map[string]string{"followup_days": "731"},
			errs: []string{"parameter followup_days: 731 is above the maximum 730"}},
		{name: "date below min", def: t2dm, values: map[string]string{"index_date": "2014-12-31"},
			errs: []string{"parameter index_date: 2014-12-31 is below the minimum 2015-01-01"}},
		{name: "enum not allowed", def: withKinds, values: map[string]string{"index_date": "2024-01-01", "method": "emergancy"},
			errs: []string{`parameter method: "emergancy" is not allowed (did you mean "emergency"?)`}},
		{name: "codelist not allowed", def: withKinds, values: map[string]string{"index_date": "2024-01-01", "condition": "statins"},
			errs: []string{`parameter condition: "statins" is not allowed`}},
		{name: "every error at once", def: withKinds, values: map[string]string{"days": "0", "method": "x", "extra": "1"},
			errs: []string{"parameters.days:", "parameters.method:", "parameters.extra:", "parameters.index_date: missing"}},
		{name: "window empty with these values", def: readmit, values: map[string]string{"start": "2024-01-01", "end": "2023-01-01"},
			errs: []string{"population.has_event: the window from $start (2024-01-01) to $end (2023-01-01) is empty", "variables.trust.first_trust:", "variables.readmissions.readmissions.index:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.def.Bind(tt.values)
			if tt.errs != nil {
				if err == nil {
					t.Fatalf("bound without error: %v", b.Params())
				}
				var list ErrorList
				if !errors.As(err, &list) || len(list) != len(tt.errs) {
					t.Errorf("want %d errors in an ErrorList, got:\n%v", len(tt.errs), err)
				}
				for _, w := range tt.errs {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error lacks %q:\n%v", w, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := b.Params(); !maps.Equal(got, tt.want) {
				t.Errorf("Params() = %v, want %v", got, tt.want)
			}
			// The wire form round-trips.
			b2, err := tt.def.Bind(b.Params())
			if err != nil {
				t.Fatalf("rebinding the wire form: %v", err)
			}
			if !maps.Equal(b2.vals, b.vals) {
				t.Errorf("round trip changed values: %v, then %v", b.vals, b2.vals)
			}
		})
	}
}

func TestBoundResolves(t *testing.T) {
	c := loadBundle(t)
	d, _ := c.Get("t2dm-emergency-admissions")
	b, err := d.Bind(map[string]string{"index_date": "2023-12-01", "followup_days": "60"})
	if err != nil {
		t.Fatal(err)
	}
	v, _ := d.Variable("emergency_admissions")
	ev := v.Expr.(*CountVar).Events
	r := b.Window(ev.Window)
	if r.From == nil || r.To == nil || *r.From != DateOf(2023, time.December, 1) || *r.To != DateOf(2024, time.January, 30) {
		t.Errorf("window = %v to %v, want 2023-12-01 to 2024-01-30", r.From, r.To)
	}
	if got := b.FilterValues(ev.Where[0]); len(got) != 1 || got[0] != "emergency" {
		t.Errorf("FilterValues = %v", got)
	}
	if got := b.Number(d.Measures[1].Where.Terms[0].Value); got != 0 {
		t.Errorf("Number = %v", got)
	}
	var ec *EventCriterion
	var ac *AgeCriterion
	for _, c := range d.Population.Criteria {
		switch c := c.(type) {
		case *EventCriterion:
			ec = c
		case *AgeCriterion:
			ac = c
		}
	}
	if ec == nil || ac == nil {
		t.Fatalf("population criteria %v: want an event and an age criterion", d.Population.Criteria)
	}
	if cl := b.Codelist(*ec.Events.Codelist); cl == nil || cl.Name != "t2dm" {
		t.Errorf("Codelist = %v", cl)
	}
	if got := b.Int(*ac.Min); got != 18 {
		t.Errorf("Int(min age) = %d", got)
	}

	// A codelist parameter resolves to the chosen list.
	kinds := parseGood(t, goodHeader+`
  condition: {type: codelist, values: [t2dm, copd], default: t2dm}
  threshold: {type: int, default: 3}
population:
  registered_on: $index_date
  has_event: {table: clinical_event, codelist: $condition, on_or_before: $index_date}
variables:
  n: {count: {table: clinical_event, codelist: copd, on_or_before: $index_date}}
measures: [{name: m, count: patients, where: n > $threshold}]
`)
	b, err = kinds.Bind(map[string]string{"condition": "copd"})
	if err != nil {
		t.Fatal(err)
	}
	ref := kinds.Population.Criteria[0].(*EventCriterion).Events.Codelist
	if cl := b.Codelist(*ref); cl == nil || cl.Name != "copd" || cl.System != SNOMEDCT {
		t.Errorf("Codelist($condition) = %v", cl)
	}
	if got := b.Number(kinds.Measures[0].Where.Terms[0].Value); got != 3 {
		t.Errorf("Number($threshold) = %v", got)
	}
	if v, ok := b.Value("condition"); !ok || v.Str != "copd" || v.Type != ParamCodelist {
		t.Errorf("Value(condition) = %+v, %v", v, ok)
	}
}

func TestBindDateOverflow(t *testing.T) {
	d := parseGood(t, goodHeader+`
  days: {type: int, default: 1}
population:
  registered_on: $index_date
  has_event: {table: clinical_event, codelist: t2dm, between: [$index_date, $index_date + days]}
measures: [{name: m, count: patients}]
`)
	_, err := d.Bind(map[string]string{"index_date": "9999-12-01", "days": "9223372036854775807"})
	if err == nil || !strings.Contains(err.Error(), "falls outside the years 1000 to 9999") {
		t.Errorf("err = %v, want an out-of-range date", err)
	}
}

func TestDate(t *testing.T) {
	for _, s := range []string{"1970-01-01", "2024-02-29", "1000-01-01", "9999-12-31", "1969-12-31"} {
		d, err := ParseDate(s)
		if err != nil {
			t.Errorf("ParseDate(%q): %v", s, err)
			continue
		}
		if d.String() != s {
			t.Errorf("ParseDate(%q).String() = %q", s, d)
		}
	}
	if d, _ := ParseDate("1970-01-02"); d != 1 {
		t.Errorf("1970-01-02 = %d, want day 1 as in Arrow date32", d)
	}
	for _, s := range []string{"2023-02-29", "0999-12-31", "2024-1-01", "2024-01-01T00:00:00Z", "", "24-01-01"} {
		if _, err := ParseDate(s); err == nil {
			t.Errorf("ParseDate(%q) succeeded", s)
		}
	}
}
