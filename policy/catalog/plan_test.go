package catalog

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"

	"github.com/havenhealth/haven/cdm"
)

// describeField renders a field compactly: name type role combine, then
// optional flags.
func describeField(f Field) string {
	s := fmt.Sprintf("%s %s %s %s", f.Name, f.Type, f.Role, f.Combine)
	if f.Partial != "" {
		s += " partial=" + string(f.Partial)
	}
	if f.Nullable {
		s += " null"
	}
	if f.Anchor != nil {
		s += " from=" + f.Anchor.String()
	}
	return s
}

// TestPlanContract pins down, for each reference definition, exactly what
// each kind of site returns: the contract between node and coordinator.
func TestPlanContract(t *testing.T) {
	type task struct {
		kind      cdm.SiteKind
		rows      RowKind
		evalPop   bool
		variables string
		fields    []string
	}
	tests := []struct {
		id    string
		mode  Mode
		tasks []task
	}{
		{"t2dm-prevalence", ModeAggregate, []task{{cdm.KindGP, RowsCells, true, "age_band has_t2dm practice sex", []string{
			"practice string group key",
			"age_band string group key",
			"sex string group key",
			"patients int64 partial sum partial=count",
			"t2dm int64 partial sum partial=count",
			"prevalence__sum int64 partial sum partial=sum",
			"prevalence__n int64 partial sum partial=n",
		}}}},
		{"bp-control-hypertension", ModeAggregate, []task{{cdm.KindGP, RowsCells, true, "age_band latest_sbp practice", []string{
			"practice string group key",
			"age_band string group key",
			"patients int64 partial sum partial=count",
			"measured int64 partial sum partial=count",
			"controlled int64 partial sum partial=count",
			"mean_sbp__sum float64 partial sum partial=sum",
			"mean_sbp__n int64 partial sum partial=n",
		}}}},
		{"statins-chd", ModeAggregate, []task{{cdm.KindGP, RowsCells, true, "age_band sex statin_issues", []string{
			"age_band string group key",
			"sex string group key",
			"patients int64 partial sum partial=count",
			"on_statin int64 partial sum partial=count",
			"statin_issues__sum int64 partial sum partial=sum",
			"statin_issues__n int64 partial sum partial=n",
			"statin_issues__top int64 partial max partial=top null",
		}}}},
		{"t2dm-emergency-admissions", ModeLinkage, []task{
			{cdm.KindGP, RowsPatients, true, "age_band sex", []string{
				"pseudonym pseudonym key key",
				"age_band string variable once",
				"sex string variable once",
			}},
			{cdm.KindTrust, RowsPatients, false, "emergency_admissions", []string{
				"pseudonym pseudonym key key",
				"emergency_admissions int64 variable sum",
			}},
		}},
		{"copd-ae-attendances", ModeLinkage, []task{
			{cdm.KindGP, RowsPatients, true, "age_band sex", []string{
				"pseudonym pseudonym key key",
				"age_band string variable once",
				"sex string variable once",
			}},
			{cdm.KindTrust, RowsPatients, false, "ae_attendances copd_admissions", []string{
				"pseudonym pseudonym key key",
				"ae_attendances int64 variable sum",
				"copd_admissions int64 variable sum",
			}},
		}},
		{"emergency-readmissions-30d", ModeLinkage, []task{
			{cdm.KindTrust, RowsPatients, true, "readmissions trust", []string{
				"pseudonym pseudonym key key",
				"in_population bool population any",
				"readmissions__discharge_days days variable concat from=$start",
				"readmissions__admission_days days variable concat from=$start",
				"trust__first_day day variable earliest null from=$start",
			}},
		}},
	}
	c := loadBundle(t)
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			d, ok := c.Get(tt.id)
			if !ok {
				t.Fatalf("no definition %s", tt.id)
			}
			p := d.Plan()
			if p.Mode != tt.mode || p.Definition != d.ID || p.Hash != d.Hash() || p.Reason == "" {
				t.Errorf("plan = %s %s %s reason %q", p.Mode, p.Definition, p.Hash, p.Reason)
			}
			if len(p.Tasks) != len(tt.tasks) {
				t.Fatalf("%d tasks, want %d:\n%s", len(p.Tasks), len(tt.tasks), p)
			}
			for i, w := range tt.tasks {
				got := p.Tasks[i]
				if got.Kind != w.kind || got.Rows != w.rows || got.EvaluatesPopulation != w.evalPop || strings.Join(got.Variables, " ") != w.variables {
					t.Errorf("task %d = %s %s population=%v vars=%v, want %s %s population=%v vars=%s",
						i, got.Kind, got.Rows, got.EvaluatesPopulation, got.Variables, w.kind, w.rows, w.evalPop, w.variables)
				}
				var fields []string
				for _, f := range got.Fields {
					fields = append(fields, describeField(f))
				}
				if g, w := strings.Join(fields, "\n"), strings.Join(w.fields, "\n"); g != w {
					t.Errorf("%s fields:\n%s\nwant:\n%s", got.Kind, g, w)
				}
			}
		})
	}
}

// TestPlanNeverSendsIdentifiers checks every field of every reference plan
// against the CDM's identifying columns.
func TestPlanNeverSendsIdentifiers(t *testing.T) {
	identifying := map[string]bool{}
	for _, tbl := range cdm.Tables() {
		for _, col := range tbl.Columns {
			if col.Sensitivity == cdm.Identifying {
				identifying[col.Name] = true
			}
		}
	}
	for _, d := range loadBundle(t).Definitions() {
		for _, task := range d.Plan().Tasks {
			for _, f := range task.Fields {
				if identifying[f.Name] || identifying[f.Source] {
					t.Errorf("%s: %s sends %s", d.ID, task.Kind, f.Name)
				}
				if f.Type == FieldString && f.Role == RoleVariable && f.Source != "" {
					v, _ := d.Variable(f.Source)
					if cv, ok := v.Expr.(*ColumnVar); ok && identifying[cv.Column] {
						t.Errorf("%s: %s derives %s from an identifying column", d.ID, task.Kind, f.Name)
					}
				}
			}
		}
	}
}

func TestPlanSchema(t *testing.T) {
	c := loadBundle(t)
	d, _ := c.Get("emergency-readmissions-30d")
	p := d.Plan()
	s, ok := p.Schema(cdm.KindTrust)
	if !ok {
		t.Fatal("no trust schema")
	}
	want := []arrow.DataType{
		&arrow.FixedSizeBinaryType{ByteWidth: 16},
		arrow.FixedWidthTypes.Boolean,
		arrow.ListOf(arrow.PrimitiveTypes.Int32),
		arrow.ListOf(arrow.PrimitiveTypes.Int32),
		arrow.PrimitiveTypes.Int32,
	}
	if s.NumFields() != len(want) {
		t.Fatalf("schema %v", s)
	}
	for i, w := range want {
		if !arrow.TypeEqual(s.Field(i).Type, w) {
			t.Errorf("field %s is %s, want %s", s.Field(i).Name, s.Field(i).Type, w)
		}
	}
	md := s.Metadata()
	for k, v := range map[string]string{"haven.definition.id": d.ID, "haven.definition.hash": d.Hash(), "haven.plan.mode": "linkage", "haven.site.kind": "trust", "haven.plan.rows": "patients"} {
		if i := md.FindKey(k); i < 0 || md.Values()[i] != v {
			t.Errorf("metadata %s missing or not %q: %v", k, v, md)
		}
	}
	if _, ok := p.Schema(cdm.KindGP); ok {
		t.Error("a hospital population plan has a GP schema")
	}
	agg, _ := c.Get("bp-control-hypertension")
	s, _ = agg.Plan().Schema(cdm.KindGP)
	if f, _ := s.FieldsByName("mean_sbp__sum"); len(f) != 1 || !arrow.TypeEqual(f[0].Type, arrow.PrimitiveTypes.Float64) {
		t.Errorf("mean_sbp__sum = %v", f)
	}
}

// TestPlanMinMaxAndNullable covers the partials no reference definition
// uses, and nullable group columns.
func TestPlanMinMaxAndNullable(t *testing.T) {
	d := parseGood(t, goodHeader+`
population: {registered_on: $index_date}
variables:
  age: {age: {on: $index_date}}
  sbp: {latest: {table: clinical_event, codelist: systolic-bp, on_or_before: $index_date}}
  practice: {column: patient.practice_ods}
  on_statin: {exists: {table: medication, codelist: statins, on_or_before: $index_date}}
measures:
  - {name: youngest, min: age}
  - {name: highest, max: sbp}
  - {name: mean_age, mean: age, dominance: true}
group_by: [practice, on_statin]
`)
	p := d.Plan()
	if p.Mode != ModeAggregate {
		t.Fatalf("mode %s", p.Mode)
	}
	var got []string
	for _, f := range p.Tasks[0].Fields {
		got = append(got, describeField(f))
	}
	want := []string{
		"practice string group key null",
		"on_statin bool group key",
		"youngest__min int64 partial min partial=min null",
		"youngest__n int64 partial sum partial=n",
		"highest__max float64 partial max partial=max null",
		"highest__n int64 partial sum partial=n",
		"mean_age__sum int64 partial sum partial=sum",
		"mean_age__n int64 partial sum partial=n",
		"mean_age__top int64 partial max partial=top null",
	}
	if g, w := strings.Join(got, "\n"), strings.Join(want, "\n"); g != w {
		t.Errorf("fields:\n%s\nwant:\n%s", g, w)
	}
}

// TestPlanHospitalPopulationWithPatientFields: a hospital population's
// patient-table variables come from the trusts, which may disagree, so the
// coordinator needs a deterministic rule.
func TestPlanHospitalPopulationWithPatientFields(t *testing.T) {
	d := parseGood(t, goodHeader+`
population:
  has_event: {table: ae_attendance, between: [$index_date, $index_date + 30]}
  age_on: {date: $index_date, min: 65}
variables:
  sex: {column: patient.sex}
  attended: {exists: {table: ae_attendance, between: [$index_date, $index_date + 30]}}
  admissions: {count: {table: apc_episode, where: {admission_method: emergency}, between: [$index_date, $index_date + 30]}}
measures:
  - {name: patients, count: patients}
  - {name: admitted, count: patients, where: admissions > 0 and attended == 1}
group_by: [sex]
`)
	p := d.Plan()
	if p.Mode != ModeLinkage || p.Population != cdm.KindTrust || len(p.Tasks) != 1 {
		t.Fatalf("plan:\n%s", p)
	}
	var got []string
	for _, f := range p.Tasks[0].Fields {
		got = append(got, describeField(f))
	}
	want := "pseudonym pseudonym key key\nin_population bool population any\nadmissions int64 variable sum\nattended bool variable any\nsex string variable min"
	if g := strings.Join(got, "\n"); g != want {
		t.Errorf("fields:\n%s\nwant:\n%s", g, want)
	}
}

// TestPlanRecordKeys: with record keys, every aggregate count gains its
// cell key right after it, the population-defining linkage tasks gain
// record_key right after the pseudonym, the other tasks (trusts reporting
// on a GP population) gain nothing, and nothing else changes.
func TestPlanRecordKeys(t *testing.T) {
	c := loadBundle(t)
	var sawAgg, sawLinkage, sawBare bool
	for _, d := range c.Definitions() {
		plain, keyed := d.Plan(), d.PlanWith(PlanOptions{RecordKeys: true})
		if plain.RecordKeys || !keyed.RecordKeys {
			t.Errorf("%s: RecordKeys plain %v keyed %v", d.ID, plain.RecordKeys, keyed.RecordKeys)
		}
		if keyed.Mode != plain.Mode || len(keyed.Tasks) != len(plain.Tasks) {
			t.Fatalf("%s: record keys changed the plan's shape:\n%s\n%s", d.ID, plain, keyed)
		}
		for i, kt := range keyed.Tasks {
			pt := plain.Tasks[i]
			var stripped []Field
			var keys []string
			for j, f := range kt.Fields {
				switch {
				case f.Partial.IsKey():
					prev := kt.Fields[j-1]
					if prev.Partial != f.Partial.Keys() || prev.Source != f.Source || f.Name != f.Source+"__"+string(f.Partial) ||
						f.Combine != CombineKeySum || f.Type != FieldInt64 || f.Nullable {
						t.Errorf("%s: %s key field %s does not follow the partial it keys (after %s)", d.ID, kt.Kind, describeField(f), prev.Name)
					}
					keys = append(keys, f.Name)
				case f.Role == RoleRecordKey:
					if j != 1 || kt.Fields[0].Name != FieldNamePseudonym || f.Name != FieldNameRecordKey || !kt.EvaluatesPopulation {
						t.Errorf("%s: %s record key at %d: %s", d.ID, kt.Kind, j, describeField(f))
					}
					keys = append(keys, f.Name)
				default:
					stripped = append(stripped, f)
				}
			}
			if !reflect.DeepEqual(stripped, pt.Fields) {
				t.Errorf("%s: %s: record keys changed other fields", d.ID, kt.Kind)
			}
			// Every count, every n of a sum or mean, and the sum of a mean
			// of a bool variable is keyed.
			counts := 0
			for _, f := range pt.Fields {
				m := d.Measure(f.Source)
				switch {
				case f.Partial == PartialCount:
					counts++
				case f.Partial == PartialN && m != nil && (m.Agg == AggSum || m.Agg == AggMean):
					counts++
				case f.Partial == PartialSum && m != nil && m.Agg == AggMean:
					if v, ok := d.Variable(m.Of); ok && v.Expr.Type() == TypeBool {
						counts++
					}
				}
			}
			switch {
			case kt.Rows == RowsCells:
				sawAgg = true
				if len(keys) != counts || counts == 0 {
					t.Errorf("%s: %d keys for %d counts, sums' and means' n, and bool means' sums", d.ID, len(keys), counts)
				}
			case kt.EvaluatesPopulation:
				sawLinkage = true
				if len(keys) != 1 {
					t.Errorf("%s: %s population task has keys %v", d.ID, kt.Kind, keys)
				}
			default:
				sawBare = true
				if len(keys) != 0 {
					t.Errorf("%s: %s does not define the population but sends %v", d.ID, kt.Kind, keys)
				}
			}
		}
	}
	if !sawAgg || !sawLinkage || !sawBare {
		t.Errorf("the reference bundle did not exercise every case: aggregate %v, population rows %v, other rows %v", sawAgg, sawLinkage, sawBare)
	}
}
