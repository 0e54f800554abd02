package catalog

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadDefinitions parses each testdata/bad_*.yaml and checks that every
// expected error is reported, with its position and field path, and no
// others: the count pins down that one mistake gives one error.
func TestBadDefinitions(t *testing.T) {
	tests := []struct {
		file string
		want []string
	}{
		{"bad_unknown_table.yaml", []string{
			`:10:20: variables.admissions.count.table: unknown table "apc_episodes" (did you mean "apc_episode"?)`,
			`:12:20: variables.prescriptions.count.table: table opt_out cannot be queried`,
		}},
		{"bad_unknown_column.yaml", []string{
			`:9:20: variables.gender.column: unknown column "gender" in table patient`,
			`:13:15: variables.admissions.count.where.admision_method: unknown column "admision_method" in table apc_episode (did you mean "admission_method"?)`,
		}},
		{"bad_param_undeclared.yaml", []string{
			`:8:36: population.age_on.min: parameter $min_age is not declared`,
			`:11:70: variables.admissions.count.between[1]: "followup_days" is not a declared int parameter`,
			`:14:59: measures[1].where: parameter $threshold is not declared`,
		}},
		{"bad_param_unused.yaml", []string{
			`:6:3: parameters.followup_days: parameter followup_days is declared but never used`,
			`:7:3: parameters.method: parameter method is declared but never used`,
		}},
		{"bad_impossible_range.yaml", []string{
			`:5:50: parameters.index_date.max: impossible range: min 2024-01-01 is above max 2020-01-01`,
			`:6:58: parameters.followup_days.default: default 1000 is above max 730`,
			`:10:40: population.age_on.max: impossible range: min 65 is above max 18`,
			`:13:42: variables.admissions.count.between: impossible range: 2024-02-01 is after 2024-01-01`,
			`:15:42: variables.later.count.between: impossible range: $start + 30 is after $start`,
		}},
		{"bad_unknown_field.yaml", []string{
			`:1:1: missing required field "title"`,
			`:3:1: titel: unknown field "titel"`,
			`:5:49: parameters.index_date.descripton: unknown field "descripton" (did you mean "description"?)`,
			`:10:70: variables.admissions.count.codlist: unknown field "codlist" (did you mean "codelist"?)`,
			`:12:41: measures[0].dominace: unknown field "dominace" (did you mean "dominance"?)`,
		}},
		{"bad_wrong_type.yaml", []string{
			`:2:10: version: want an integer, got the string "1"`,
			`:3:8: title: want a string, got a list`,
			`:5:37: parameters.index_date.default: want a date (YYYY-MM-DD), got the integer 20240101`,
			`:6:30: parameters.days.default: want an integer, got the string "30"`,
			`:13:52: measures[0].dominance: want true or false, got the string "yes"`,
			`:14:11: group_by: want a list, got the string "admissions"`,
		}},
		{"bad_unknown_codelist.yaml", []string{
			`:6:46: parameters.condition.values[1]: unknown codelist "asthma"`,
			`:9:48: population.has_event.codelist: unknown codelist "t2dn" (did you mean "t2dm"?)`,
		}},
		{"bad_identifying_output.yaml", []string{
			`:9:17: variables.nhs.column: patient.nhs_number identifies a person and never leaves a site`,
			`:10:18: variables.area.column: patient.lsoa identifies a person`,
			`:11:18: variables.born.column: patient.birth_date identifies a person`,
		}},
		{"bad_mixed_tables.yaml", []string{
			`:12:15: variables.female_admissions.count.where.sex: column "sex" is not in table apc_episode but in patient: a variable reads one table`,
			`:12:23: variables.female_admissions.count.where.patient.practice_ods: a variable reads one table (apc_episode)`,
			`:15:46: variables.diagnoses.count.codelist: codelist copd-icd10 holds icd-10 codes but clinical_event.snomed_code holds snomed-ct codes`,
		}},
		{"bad_vocabulary.yaml", []string{
			`:11:59: variables.a.count.where.admission_method: "emergancy" is not a value of apc_episode.admission_method (did you mean "emergency"?)`,
			`:13:70: variables.b.count.where.admission_method[1]: duplicate value "elective"`,
			`:15:59: variables.c.count.where.admission_method: $method allows "urgent", which is not a value of apc_episode.admission_method`,
			`:17:41: variables.d.count.where.primary_diagnosis: column apc_episode.primary_diagnosis has no fixed vocabulary`,
		}},
		{"bad_population_mixed.yaml", []string{
			`:8:14: population.has_event: a population registered with a practice (registered_on) is evaluated at GP practices, which do not hold apc_episode`,
		}},
		{"bad_gp_variable_hospital_population.yaml", []string{
			`:9:3: variables.practice: variable practice reads registration, held by GP practices, but the population is defined by hospital activity`,
		}},
		{"bad_no_population_basis.yaml", []string{
			`:7:3: population: say who is counted`,
		}},
		{"bad_condition.yaml", []string{
			`:13:51: measures[0].where: want a number or $parameter`,
			`:14:39: measures[1].where: variable sex is a string; conditions compare numbers`,
			`:15:54: measures[2].where: unexpected "or": join comparisons with ` + "`and`",
			`:16:39: measures[3].where: variable admision is not defined (did you mean "admissions"?)`,
			`:17:54: measures[4].where: unexpected ";" in condition`,
		}},
		{"bad_undefined_variable.yaml", []string{
			`:12:29: measures[0].sum: variable emergency_admissions is not defined`,
			`:13:17: group_by[1]: variable age_band is not defined`,
			`:13:27: group_by[2]: cannot group by age: it is an int`,
		}},
		{"bad_yaml_syntax.yaml", []string{
			`bad_yaml_syntax.yaml:4: invalid YAML: did not find expected ',' or ']'`,
		}},
		{"bad_alias.yaml", []string{
			`:8:13: population.alive_on: YAML aliases (*d) are not allowed`,
		}},
		{"bad_duplicate_key.yaml", []string{
			`:4:1: version: duplicate key "version" (first at line 2)`,
		}},
		{"bad_many_mistakes.yaml", []string{
			`:2:5: id: id "Bad_Many" must be a slug`,
			`:3:10: version: version must be 1 or more, got 0`,
			`:5:1: colour: unknown field "colour"`,
			`:7:50: parameters.index_date.max: impossible range`,
			`:8:3: parameters.unused_days: parameter unused_days is declared but never used`,
			`:9:17: parameters.weird.type: unknown parameter type "string"`,
			`:11:18: population.registered_on: parameter $index_dat is not declared (did you mean "index_date"?)`,
			`:12:48: population.has_event.codelist: unknown codelist "no-such-list"`,
			`:14:17: variables.nhs.column: patient.nhs_number identifies a person`,
			`:18:33: variables.admissions.count.where.admission_method: "emergancy" is not a value`,
			`:18:44: variables.admissions.count.where.sex: column "sex" is not in table apc_episode`,
			`:19:16: variables.admissions.count.between: impossible range: 2024-03-01 is after 2024-01-01`,
			`:21:20: variables.events.count.table: unknown table "clinical_events"`,
			`:22:3: variables.spare: variable spare is defined but never used`,
			`:25:59: measures[0].where: parameter $limit is not declared`,
			`:26:24: measures[1].sum: variable missing_variable is not defined`,
			`:26:53: measures[1].dominance: want true or false`,
			`:27:5: measures[2].name: duplicate measure name "admitted" (first at line 25)`,
			`:28:30: group_by[3]: sex is already grouped by`,
		}},
	}
	cls := codelistMap(loadBundle(t))
	covered := map[string]bool{}
	for _, tt := range tests {
		covered[tt.file] = true
		t.Run(tt.file, func(t *testing.T) {
			src, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			d, err := ParseDefinition(tt.file, src, cls)
			if err == nil {
				t.Fatalf("parsed without error: %s", d.Canonical())
			}
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("error is %T, want ErrorList", err)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Errorf("got %d errors, want %d:\n%v", len(lines), len(tt.want), err)
			}
			for _, w := range tt.want {
				found := false
				for _, l := range lines {
					if strings.HasPrefix(l, tt.file+":") && strings.Contains(l, w) {
						found = true
					}
				}
				if !found {
					t.Errorf("missing error %q in:\n%v", w, err)
				}
			}
			// Error() lists errors in position order.
			for i := 1; i < len(list); i++ {
				a, b := list[i-1].Pos, list[i].Pos
				if a.Line > b.Line || a.Line == b.Line && a.Column > b.Column {
					t.Errorf("errors out of order: %v before %v", list[i-1], list[i])
				}
			}
		})
	}
	files, _ := filepath.Glob("testdata/bad_*.yaml")
	for _, f := range files {
		if !covered[filepath.Base(f)] {
			t.Errorf("%s has no test case", f)
		}
	}
}

const goodHeader = `
id: example
version: 1
title: Example
parameters:
  index_date: {type: date, default: 2024-01-01}
`

// parseGood parses a definition that must be valid.
func parseGood(t *testing.T, src string) *Definition {
	t.Helper()
	d, err := ParseDefinition("example.yaml", []byte(src), codelistMap(loadBundle(t)))
	if err != nil {
		t.Fatalf("unexpected errors:\n%v\nin:\n%s", err, src)
	}
	return d
}

func parseBad(t *testing.T, src string) string {
	t.Helper()
	d, err := ParseDefinition("example.yaml", []byte(src), codelistMap(loadBundle(t)))
	if err == nil {
		t.Fatalf("parsed without error: %s", d.Canonical())
	}
	return err.Error()
}

// TestEquivalentSpellings checks that each pair of definitions, written
// differently but meaning the same, has one hash.
func TestEquivalentSpellings(t *testing.T) {
	pop := goodHeader + `
population:
  registered_on: $index_date
measures:
  - {name: patients, count: patients}
`
	tests := []struct{ name, a, b string }{
		{"has_medication is has_event on medication",
			goodHeader + `
population:
  registered_on: $index_date
  has_medication: {codelist: statins, on_or_before: $index_date}
measures: [{name: patients, count: patients}]
`, goodHeader + `
population:
  registered_on: $index_date
  has_event: {table: medication, codelist: statins, on_or_before: $index_date}
measures: [{name: patients, count: patients}]
`},
		{"nested all_of flattens, order does not matter",
			goodHeader + `
population:
  registered_on: $index_date
  alive_on: $index_date
  all_of:
    - {age_on: {date: $index_date, min: 18}}
    - {has_event: {table: clinical_event, codelist: t2dm, on_or_before: $index_date}}
measures: [{name: patients, count: patients}]
`, goodHeader + `
population:
  all_of:
    - has_event: {table: clinical_event, codelist: t2dm, on_or_before: $index_date}
      alive_on: $index_date
  age_on: {min: 18, date: $index_date}
  registered_on: $index_date
measures: [{name: patients, count: patients}]
`},
		{"literal date arithmetic folds",
			goodHeader + `
population:
  registered_on: $index_date
  has_event: {table: clinical_event, codelist: t2dm, between: [2020-01-01 + 31, 2020-03-01 - 1]}
measures: [{name: patients, count: patients}]
`, goodHeader + `
population:
  registered_on: $index_date
  has_event: {table: clinical_event, codelist: t2dm, between: ["2020-02-01", 2020-02-29]}
measures: [{name: patients, count: patients}]
`},
		{"zero offset and spacing",
			goodHeader + `
population:
  registered_on: $index_date + 0
measures: [{name: patients, count: patients}]
`, pop},
		{"band width and bands",
			goodHeader + `
population: {registered_on: $index_date}
variables: {band: {age_band: {on: $index_date, width: 20, top: 80}}}
measures: [{name: patients, count: patients}]
group_by: [band]
`, goodHeader + `
population: {registered_on: $index_date}
variables: {band: {age_band: {on: $index_date, bands: [20, 40, 60, 80]}}}
measures: [{name: patients, count: patients}]
group_by: [band]
`},
		{"condition spacing and number form",
			goodHeader + `
population: {registered_on: $index_date}
variables:
  sbp: {latest: {table: clinical_event, codelist: systolic-bp, on_or_before: $index_date}}
measures: [{name: controlled, count: patients, where: "sbp<140.0 and sbp>=0"}]
`, goodHeader + `
population: {registered_on: $index_date}
variables:
  sbp: {latest: {table: clinical_event, codelist: systolic-bp, on_or_before: $index_date}}
measures: [{name: controlled, count: patients, where: sbp < 140 and sbp >= -0}]
`},
		{"filter value order",
			goodHeader + `
population: {registered_on: $index_date}
variables:
  n: {count: {table: apc_episode, where: {admission_method: [maternity, emergency]}, on_or_after: $index_date}}
measures: [{name: n, sum: n}]
`, goodHeader + `
population: {registered_on: $index_date}
variables:
  n: {count: {table: apc_episode, where: {admission_method: [emergency, maternity]}, on_or_after: $index_date}}
measures: [{name: n, sum: n, dominance: true}]
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := parseGood(t, tt.a), parseGood(t, tt.b)
			if a.Hash() != b.Hash() {
				t.Errorf("hashes differ:\n%s\n%s", a.Canonical(), b.Canonical())
			}
		})
	}
}

// TestLanguageFeatures parses definitions using each construct and checks
// the AST they produce.
func TestLanguageFeatures(t *testing.T) {
	d := parseGood(t, goodHeader+`
  lookback: {type: int, min: 1, max: 3650, default: 365}
  method: {type: enum, values: [emergency, elective], default: emergency}
  condition: {type: codelist, values: [t2dm, chd, copd], default: t2dm}
  threshold: {type: int, default: 2}
population:
  registered_on: $index_date
  any_of:
    - {has_event: {table: clinical_event, codelist: $condition, on_or_before: $index_date}}
    - {has_medication: {codelist: statins, between: [$index_date - lookback, $index_date]}}
  none_of:
    - {age_on: {date: $index_date, max: 17}}
variables:
  age: {age: {on: $index_date}}
  admissions:
    count: {table: apc_episode, where: {admission_method: $method}, on_or_after: $index_date}
  first: {first_trust: {table: ae_attendance, on_or_after: $index_date}}
  practice: {column: patient.practice_ods}
measures:
  - {name: patients, count: patients, where: admissions >= $threshold and age < 65}
  - {name: oldest, max: age}
  - {name: youngest, min: age}
group_by: [first, practice]
`)
	if d.Population.Site != "gp" || d.Population.RegisteredOn == nil || len(d.Population.Criteria) != 2 {
		t.Fatalf("population = %+v", d.Population)
	}
	any_, ok := d.Population.Criteria[0].(*AnyOf)
	if !ok || len(any_.Criteria) != 2 {
		t.Fatalf("first criterion = %#v, want any_of with two", d.Population.Criteria[0])
	}
	med := any_.Criteria[1].(*EventCriterion).Events
	if med.Table != "medication" || med.DateColumn != "issue_date" || med.CodeColumn != "dmd_code" ||
		med.Window.From.String() != "$index_date - $lookback" {
		t.Errorf("has_medication = %+v", med)
	}
	if ev := any_.Criteria[0].(*EventCriterion).Events; ev.Codelist.Param != "condition" {
		t.Errorf("codelist parameter = %+v", ev.Codelist)
	}
	v, _ := d.Variable("admissions")
	if f := v.Expr.(*CountVar).Events.Where; len(f) != 1 || f[0].Param != "method" || f[0].Column != "admission_method" {
		t.Errorf("enum filter = %+v", f)
	}
	if got := d.Measures[0].Where.String(); got != "admissions >= $threshold and age < 65" {
		t.Errorf("condition = %q", got)
	}
	if got := d.CodelistNames(); strings.Join(got, ",") != "chd,copd,statins,t2dm" {
		t.Errorf("codelists = %v", got)
	}
	// first_trust comes from trusts: linkage, and practice_ods is nullable.
	p := d.Plan()
	if p.Mode != ModeLinkage {
		t.Errorf("mode = %s", p.Mode)
	}
	gp, _ := p.Task("gp")
	if f, _ := gp.Field("practice"); !f.Nullable {
		t.Errorf("practice field = %+v, want nullable", f)
	}
}

func TestMoreBadDefinitions(t *testing.T) {
	// Cases whose mistake must be the only error reported: one mistake must
	// not cascade (e.g. a parameter named in a broken expression reported
	// as unused).
	only := map[string]bool{"empty": true, "date expression junk": true, "sum of a category": true, "band top not a multiple": true}
	tests := []struct{ name, src, want string }{
		{"empty", "", "example.yaml: empty definition"},
		{"not a mapping", "- 1\n- 2\n", "example.yaml:1:1: want a mapping, got a list"},
		{"two documents", goodHeader + "population: {registered_on: $index_date}\nmeasures: [{name: p, count: patients}]\n---\nid: x\n", "a definition is one YAML document"},
		{"hospital population with only absence", goodHeader + `
population:
  none_of: [{has_event: {table: apc_episode, on_or_after: $index_date}}]
measures: [{name: p, count: patients}]
`, "population: a hospital population needs hospital activity that patients have"},
		{"GP table without registration", goodHeader + `
population:
  has_event: {table: clinical_event, codelist: t2dm, on_or_before: $index_date}
measures: [{name: p, count: patients}]
`, "population.has_event: a population selected on clinical_event needs registered_on"},
		{"registered_on nested", goodHeader + `
population:
  all_of: [{registered_on: $index_date}]
measures: [{name: p, count: patients}]
`, `population.all_of[0].registered_on: unknown field "registered_on"`},
		{"window missing", goodHeader + `
population:
  registered_on: $index_date
  has_event: {table: clinical_event, codelist: t2dm}
measures: [{name: p, count: patients}]
`, "population.has_event: missing date window"},
		{"two windows", goodHeader + `
population:
  registered_on: $index_date
  has_event: {table: clinical_event, codelist: t2dm, on_or_before: $index_date, on_or_after: 2000-01-01}
measures: [{name: p, count: patients}]
`, "give one date window"},
		{"date parameter as offset", goodHeader + `
population:
  registered_on: $index_date + $index_date
measures: [{name: p, count: patients}]
`, "parameter $index_date is a date parameter; a int parameter is needed here"},
		{"bad date literal", goodHeader + `
population:
  registered_on: 2024-02-30
measures: [{name: p, count: patients}]
`, `population.registered_on: "2024-02-30" is not a date`},
		{"date expression junk", goodHeader + `
population:
  registered_on: $index_date * 2
measures: [{name: p, count: patients}]
`, `:9:30: population.registered_on: unexpected "* 2": want + or -`},
		{"latest without codelist", goodHeader + `
population: {registered_on: $index_date}
variables:
  v: {latest: {table: clinical_event, on_or_before: $index_date}}
measures: [{name: m, mean: v}]
`, "latest needs a codelist"},
		{"latest of a table without values", goodHeader + `
population: {registered_on: $index_date}
variables:
  v: {latest: {table: medication, codelist: statins, on_or_before: $index_date}}
measures: [{name: m, mean: v}]
`, "latest needs a table with one numeric value column; medication has none"},
		{"sum of a category", goodHeader + `
population: {registered_on: $index_date}
variables:
  sex: {column: patient.sex}
measures: [{name: m, sum: sex}]
`, "cannot sum variable sex: it is a string"},
		{"count of a variable", goodHeader + `
population: {registered_on: $index_date}
measures: [{name: m, count: admissions}]
`, "count counts patients"},
		{"two aggregates", goodHeader + `
population: {registered_on: $index_date}
measures: [{name: m, count: patients, sum: x}]
`, "a measure computes one thing"},
		{"dominance on a count", goodHeader + `
population: {registered_on: $index_date}
measures: [{name: m, count: patients, dominance: true}]
`, "dominance applies to sum and mean measures, not count"},
		{"two derivations", goodHeader + `
population: {registered_on: $index_date}
variables:
  v: {age: {on: $index_date}, column: patient.sex}
measures: [{name: m, max: v}]
`, "a variable is derived one way"},
		{"reserved variable name", goodHeader + `
population: {registered_on: $index_date}
variables:
  pseudonym: {column: patient.sex}
measures: [{name: m, count: patients}]
group_by: [pseudonym]
`, `"pseudonym" is reserved`},
		{"double underscore", goodHeader + `
population: {registered_on: $index_date}
measures: [{name: a__sum, count: patients}]
`, "must not contain __"},
		{"group and measure share a name", goodHeader + `
population: {registered_on: $index_date}
variables: {sex: {column: patient.sex}}
measures: [{name: sex, count: patients}]
group_by: [sex]
`, "sex names both a grouping variable and a measure"},
		{"column of a many-row table", goodHeader + `
population: {registered_on: $index_date}
variables: {code: {column: clinical_event.snomed_code}}
measures: [{name: m, count: patients}]
group_by: [code]
`, "a column variable reads the patient table"},
		{"date column as output", goodHeader + `
population: {registered_on: $index_date}
variables: {died: {column: patient.date_of_death}}
measures: [{name: m, count: patients}]
group_by: [died]
`, "patient.date_of_death is a date; only categorical (string) columns can be output"},
		{"band bounds not rising", goodHeader + `
population: {registered_on: $index_date}
variables: {b: {age_band: {on: $index_date, bands: [18, 65, 40]}}}
measures: [{name: m, count: patients}]
group_by: [b]
`, "bands[2]: band bounds must rise"},
		{"band top not a multiple", goodHeader + `
population: {registered_on: $index_date}
variables: {b: {age_band: {on: $index_date, width: 20, top: 90}}}
measures: [{name: m, count: patients}]
group_by: [b]
`, "top 90 must be a multiple of width 20"},
		{"age out of range", goodHeader + `
population:
  registered_on: $index_date
  age_on: {date: $index_date, min: 200}
measures: [{name: m, count: patients}]
`, "population.age_on.min: 200 is out of range: want 0 to 130"},
		{"first_trust at a GP table", goodHeader + `
population: {registered_on: $index_date}
variables: {t: {first_trust: {table: clinical_event, codelist: t2dm, on_or_after: $index_date}}}
measures: [{name: m, count: patients}]
group_by: [t]
`, "first_trust reads hospital activity"},
		{"readmissions without an index window start", goodHeader + `
population: {registered_on: $index_date}
variables:
  r: {readmissions: {index: {on_or_before: $index_date}, within_days: 30}}
measures: [{name: m, sum: r}]
`, "index needs between"},
		{"readmissions window too long", goodHeader + `
population: {registered_on: $index_date}
variables:
  r: {readmissions: {index: {between: [$index_date, $index_date + 30]}, within_days: 400}}
measures: [{name: m, sum: r}]
`, "within_days: 400 is out of range: want 1 to 366"},
		{"enum without values", goodHeader + `
  m: {type: enum}
population: {registered_on: $index_date}
measures: [{name: m, count: patients}]
`, `parameters.m: missing required field "values"`},
		{"enum default not allowed", goodHeader + `
  m: {type: enum, values: [emergency], default: elective}
population: {registered_on: $index_date}
variables: {n: {count: {table: apc_episode, where: {admission_method: $m}, on_or_after: $index_date}}}
measures: [{name: n, sum: n}]
`, `default "elective" is not one of the values`},
		{"min on an enum", goodHeader + `
  m: {type: enum, values: [emergency], min: 1}
population: {registered_on: $index_date}
variables: {n: {count: {table: apc_episode, where: {admission_method: $m}, on_or_after: $index_date}}}
measures: [{name: n, sum: n}]
`, "min applies to date and int parameters"},
		{"codelist parameter of the wrong system", goodHeader + `
  c: {type: codelist, values: [t2dm, statins], default: t2dm}
population:
  registered_on: $index_date
  has_event: {table: clinical_event, codelist: $c, on_or_before: $index_date}
measures: [{name: m, count: patients}]
`, "$c allows statins: codelist statins holds dmd codes but clinical_event.snomed_code holds snomed-ct codes"},
		{"enum used as a date", goodHeader + `
  m: {type: enum, values: [a], default: a}
population: {registered_on: $m}
measures: [{name: m, count: patients}]
`, "parameter $m is a enum parameter; a date parameter is needed here"},
		{"null value", goodHeader + `
population: {registered_on: }
measures: [{name: m, count: patients}]
`, "population.registered_on: want a date: YYYY-MM-DD, $parameter, or either plus or minus days, got nothing (null)"},
		{"non-string key", goodHeader + `
population: {registered_on: $index_date, 3: x}
measures: [{name: m, count: patients}]
`, "keys must be plain names"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseBad(t, tt.src)
			if !strings.Contains(got, tt.want) {
				t.Errorf("errors lack %q:\n%s", tt.want, got)
			}
			if only[tt.name] && strings.Count(got, "\n") > 0 {
				t.Errorf("one mistake gave several errors:\n%s", got)
			}
		})
	}
}

func TestParseDateExpr(t *testing.T) {
	tests := []struct {
		in, want string // want is the canonical form, or "error: <substring>"
	}{
		{"2020-01-01", "2020-01-01"},
		{"$d", "$d"},
		{"$d + 30", "$d + 30"},
		{"$d+30", "$d + 30"},
		{"$d - 365", "$d - 365"},
		{"$d + 0", "$d"},
		{"$d + n", "$d + $n"},
		{"$d - $n", "$d - $n"},
		{"2020-01-31 + 1", "2020-02-01"},
		{"2020-03-01-1", "2020-02-29"},
		{"2021-03-01 - 1", "2021-02-28"},
		{"", "error: empty date"},
		{"$", "error: want a parameter name"},
		{"$D", "error: want a parameter name"},
		{"20-01-01", "error: is not a date"},
		{"2020-01-01T00:00", "error: unexpected"},
		{"$d + ", "error: want a number of days"},
		{"$d + -5", "error: unexpected \"-\""},
		{"$d + 5 + 5", "error: unexpected \"+ 5\""},
		{"$d + 99999999999", "error: too large"},
		{"9999-12-31 + 1", "error: outside the years"},
		{"today", "error: unexpected \"t\""},
	}
	for _, tt := range tests {
		e, _, err := parseDateExpr(tt.in)
		var got string
		if err != nil {
			got = "error: " + err.msg
		} else {
			got = e.String()
		}
		if got != tt.want && !(strings.HasPrefix(tt.want, "error: ") && strings.HasPrefix(got, "error: ") && strings.Contains(got, strings.TrimPrefix(tt.want, "error: "))) {
			t.Errorf("parseDateExpr(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseCond(t *testing.T) {
	tests := []struct{ in, want string }{
		{"a > 0", "a > 0"},
		{"a>0 and b<=$x", "a > 0 and b <= $x"},
		{"a == 1.50", "a == 1.5"},
		{"a != -2", "a != -2"},
		{"a >= 0.0", "a >= 0"},
		{"", "error: empty condition"},
		{"a", "error: want a comparison operator"},
		{"a >", "error: want a number"},
		{"a = 1", "error: unknown operator \"=\""},
		{"a > b", "error: want a number or $parameter"},
		{"1 > a", "error: want a variable name"},
		{"a > 1 and", "error: want a variable name"},
		{"a > 1 b > 2", "error: join comparisons with `and`"},
		{"a > 1 AND b > 2", "error: unexpected \"A\""},
		{"a > -", "error: is not a number"},
		{"a > 1 or 1=1", "error: unknown operator \"=\""},
		{"a > '1'", "error: unexpected \"'\""},
	}
	for _, tt := range tests {
		c, _, err := parseCond(tt.in)
		var got string
		if err != nil {
			got = "error: " + err.msg
		} else {
			got = c.String()
		}
		if got != tt.want && !(strings.HasPrefix(tt.want, "error: ") && strings.HasPrefix(got, "error: ") && strings.Contains(got, strings.TrimPrefix(tt.want, "error: "))) {
			t.Errorf("parseCond(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestAgeBands(t *testing.T) {
	d := parseGood(t, goodHeader+`
population: {registered_on: $index_date}
variables:
  a: {age_band: {on: $index_date, width: 25}}
  b: {age_band: {on: $index_date, bands: [18, 65]}}
measures: [{name: m, count: patients}]
group_by: [a, b]
`)
	labels := func(name string) string {
		v, _ := d.Variable(name)
		var ls []string
		for _, b := range v.Expr.(*AgeBandVar).Bands() {
			ls = append(ls, b.Label)
		}
		return strings.Join(ls, " ")
	}
	if got := labels("a"); got != "0-24 25-49 50-74 75+" {
		t.Errorf("width 25 bands = %s", got)
	}
	if got := labels("b"); got != "0-17 18-64 65+" {
		t.Errorf("explicit bands = %s", got)
	}
}
