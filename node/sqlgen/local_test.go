package sqlgen

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/policy/catalog"
)

func TestSiteOptOutsStatement(t *testing.T) {
	for _, d := range Dialects() {
		st, err := SiteOptOuts(d)
		if err != nil {
			t.Fatalf("%s: %v", d.Name(), err)
		}
		wantSQL := "SELECT nhs_number FROM opt_out WHERE kind = CAST($1 AS " + d.textType() + ")"
		if st.Name != StatementSiteOptOuts || st.SQL != wantSQL {
			t.Errorf("%s: statement %s:\n%s\nwant %s", d.Name(), st.Name, st.SQL, wantSQL)
		}
		if !reflect.DeepEqual(st.Args, []any{cdm.OptOutType1}) {
			t.Errorf("%s: args %v, want the type 1 kind bound", d.Name(), st.Args)
		}
		if want := []Column{{Name: cdm.ColNHSNumber, Type: catalog.FieldString}}; !reflect.DeepEqual(st.Columns, want) {
			t.Errorf("%s: columns %v, want %v", d.Name(), st.Columns, want)
		}
		if len(st.SHA256) != 64 {
			t.Errorf("%s: hash %q", d.Name(), st.SHA256)
		}
	}
	if _, err := SiteOptOuts(nil); err == nil {
		t.Error("SiteOptOuts(nil) succeeded")
	}
}

func TestSiteNumbersStatement(t *testing.T) {
	tests := []struct {
		name   string
		kind   cdm.SiteKind
		tables []string
		// unions lists the tables after the patient table, in order.
		unions []string
		err    string
	}{
		{name: "patient only", kind: cdm.KindGP, tables: nil},
		{name: "patient named", kind: cdm.KindGP, tables: []string{cdm.TablePatient}},
		{name: "practice", kind: cdm.KindGP,
			tables: []string{cdm.TablePatient, cdm.TableRegistration, cdm.TableClinicalEvent, cdm.TableMedication, cdm.TableOptOut},
			unions: []string{cdm.TableRegistration, cdm.TableClinicalEvent, cdm.TableMedication}},
		{name: "CDM order, once each", kind: cdm.KindGP,
			tables: []string{cdm.TableMedication, cdm.TableClinicalEvent, cdm.TableMedication},
			unions: []string{cdm.TableClinicalEvent, cdm.TableMedication}},
		{name: "trust", kind: cdm.KindTrust, tables: []string{cdm.TableAPCEpisode, cdm.TableAEAttendance},
			unions: []string{cdm.TableAPCEpisode, cdm.TableAEAttendance}},
		{name: "unknown table", kind: cdm.KindGP, tables: []string{"patient; DROP TABLE x"}, err: "unknown CDM table"},
		{name: "table of another kind", kind: cdm.KindTrust, tables: []string{cdm.TableClinicalEvent}, err: "not held by trust sites"},
	}
	for _, tt := range tests {
		for _, d := range Dialects() {
			st, err := SiteNumbers(tt.kind, d, tt.tables)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("%s %s: err = %v, want %q", tt.name, d.Name(), err, tt.err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s %s: %v", tt.name, d.Name(), err)
			}
			want := "SELECT nhs_number, CAST(sum(patient_rows) AS BIGINT) AS patient_rows\nFROM (SELECT nhs_number, 1 AS patient_rows FROM patient"
			for _, u := range tt.unions {
				want += "\n      UNION ALL SELECT nhs_number, 0 FROM " + u
			}
			want += ") AS site\nGROUP BY nhs_number"
			if st.Name != StatementSiteNumbers || st.SQL != want {
				t.Errorf("%s %s: statement %s:\n%s\nwant\n%s", tt.name, d.Name(), st.Name, st.SQL, want)
			}
			if len(st.Args) != 0 {
				t.Errorf("%s %s: args %v", tt.name, d.Name(), st.Args)
			}
			cols := []Column{{Name: cdm.ColNHSNumber, Type: catalog.FieldString}, {Name: ColPatientRows, Type: catalog.FieldInt64}}
			if !reflect.DeepEqual(st.Columns, cols) {
				t.Errorf("%s %s: columns %v", tt.name, d.Name(), st.Columns)
			}
		}
	}
	if _, err := SiteNumbers(cdm.KindGP, nil, nil); err == nil {
		t.Error("SiteNumbers without a dialect succeeded")
	}
}

// wantSiteNumbers is SiteNumbers computed in Go from sd's rows: each
// number in the tables, with the count of its patient rows.
func wantSiteNumbers(sd *siteData, tables []string) map[string]int64 {
	out := map[string]int64{}
	for _, row := range tableRows(sd, cdm.TablePatient) {
		out[row[0].(string)]++
	}
	for _, t := range tables {
		if t == cdm.TablePatient || t == cdm.TableOptOut {
			continue
		}
		for _, row := range tableRows(sd, t) {
			out[row[0].(string)] += 0
		}
	}
	return out
}

// TestLocalStatementsRun runs the local statements on the hand-made
// practice and trust in each dialect.
func TestLocalStatementsRun(t *testing.T) {
	eachDialect(t, func(t *testing.T, tdb testDB) {
		g := newGPCase(t)
		// An objector the practice holds nothing else about: a number
		// only in opt_out is nobody's data, so not a site number.
		objector := nhsNumber(t, 9_000_000)
		g.sd.optOuts = append(g.sd.optOuts, optOutRow{nhs: objector, kind: cdm.OptOutType1})
		type1 := []string{g.p6, objector}
		slices.Sort(type1)
		tr := newTrustCase(t)
		for _, tt := range []struct {
			name    string
			sd      *siteData
			optOuts []string // sorted; nil: the site has no opt_out table
		}{
			{name: "practice", sd: g.sd, optOuts: type1},
			{name: "trust", sd: tr.sd},
		} {
			db := openHandmade(t, tdb, tt.sd)
			if tt.optOuts != nil {
				st, err := SiteOptOuts(tdb.d)
				if err != nil {
					t.Fatal(err)
				}
				rows, err := query(t.Context(), db, st)
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, r := range rows {
					got = append(got, r[0].(string))
				}
				if slices.Sort(got); !slices.Equal(got, tt.optOuts) {
					t.Errorf("%s: type 1 opt-outs %v, want %v", tt.name, got, tt.optOuts)
				}
			}
			var tables []string
			for _, tbl := range cdm.TablesFor(tt.sd.site.Kind) {
				tables = append(tables, tbl.Name)
			}
			st, err := SiteNumbers(tt.sd.site.Kind, tdb.d, tables)
			if err != nil {
				t.Fatal(err)
			}
			rows, err := query(t.Context(), db, st)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]int64{}
			for _, r := range rows {
				n := r[0].(string)
				if _, dup := got[n]; dup {
					t.Errorf("%s: number %s listed twice", tt.name, n)
				}
				got[n] = r[1].(int64)
			}
			want := wantSiteNumbers(tt.sd, tables)
			if _, ok := want[objector]; ok {
				t.Fatal("the objector is among the expected site numbers")
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s: site numbers\n%v\nwant\n%v", tt.name, got, want)
			}
		}
	})
}

func TestTableStatements(t *testing.T) {
	tests := []struct {
		name   string
		build  func(d Dialect) (Statement, error)
		stName string
		sql    string
		cols   []Column
		err    string
	}{
		{name: "numbers of a table", build: func(d Dialect) (Statement, error) { return TableNHSNumbers(d, cdm.TableAPCEpisode) },
			stName: StatementTableNHSNumbers, sql: "SELECT nhs_number FROM apc_episode",
			cols: []Column{{Name: cdm.ColNHSNumber, Type: catalog.FieldString}}},
		{name: "numbers of opt_out", build: func(d Dialect) (Statement, error) { return TableNHSNumbers(d, cdm.TableOptOut) },
			stName: StatementTableNHSNumbers, sql: "SELECT nhs_number FROM opt_out",
			cols: []Column{{Name: cdm.ColNHSNumber, Type: catalog.FieldString}}},
		{name: "numbers of no table", build: func(d Dialect) (Statement, error) { return TableNHSNumbers(d, "patient; DROP TABLE x") },
			err: "unknown CDM table"},
		{name: "values with their codes", build: func(d Dialect) (Statement, error) {
			return NumericValues(d, cdm.TableClinicalEvent, cdm.ColNumericValue)
		},
			stName: StatementNumericValues, sql: "SELECT numeric_value, snomed_code FROM clinical_event WHERE numeric_value IS NOT NULL",
			cols: []Column{{Name: cdm.ColNumericValue, Type: catalog.FieldFloat64}, {Name: cdm.ColSNOMEDCode, Type: catalog.FieldString}}},
		{name: "not a numeric column", build: func(d Dialect) (Statement, error) {
			return NumericValues(d, cdm.TableClinicalEvent, cdm.ColSNOMEDCode)
		}, err: "not a numeric CDM column"},
		{name: "no such column", build: func(d Dialect) (Statement, error) {
			return NumericValues(d, cdm.TableClinicalEvent, "numeric_value; DROP TABLE x")
		}, err: "not a numeric CDM column"},
	}
	for _, tt := range tests {
		for _, d := range Dialects() {
			st, err := tt.build(d)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("%s %s: err = %v, want %q", tt.name, d.Name(), err, tt.err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s %s: %v", tt.name, d.Name(), err)
			}
			if st.Name != tt.stName || st.SQL != tt.sql || len(st.Args) != 0 || !reflect.DeepEqual(st.Columns, tt.cols) {
				t.Errorf("%s %s: statement %s %q args %v columns %v;\nwant %s %q, no args, columns %v",
					tt.name, d.Name(), st.Name, st.SQL, st.Args, st.Columns, tt.stName, tt.sql, tt.cols)
			}
		}
		if _, err := tt.build(nil); err == nil {
			t.Errorf("%s: no dialect, no error", tt.name)
		}
	}
}

// TestTableStatementsRun runs TableNHSNumbers on every table of the
// hand-made practice, and NumericValues on its readings, in each dialect.
func TestTableStatementsRun(t *testing.T) {
	eachDialect(t, func(t *testing.T, tdb testDB) {
		g := newGPCase(t)
		db := openHandmade(t, tdb, g.sd)
		for _, tbl := range cdm.TablesFor(cdm.KindGP) {
			st, err := TableNHSNumbers(tdb.d, tbl.Name)
			if err != nil {
				t.Fatal(err)
			}
			rows, err := query(t.Context(), db, st)
			if err != nil {
				t.Fatal(err)
			}
			var got, want []string
			for _, r := range rows {
				got = append(got, r[0].(string))
			}
			for _, r := range tableRows(g.sd, tbl.Name) {
				want = append(want, r[0].(string))
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("%s: numbers %v, want %v", tbl.Name, got, want)
			}
		}

		st, err := NumericValues(tdb.d, cdm.TableClinicalEvent, cdm.ColNumericValue)
		if err != nil {
			t.Fatal(err)
		}
		got, err := query(t.Context(), db, st)
		if err != nil {
			t.Fatal(err)
		}
		var want [][]any
		for _, e := range g.sd.events[cdm.TableClinicalEvent] {
			if e.value != nil {
				want = append(want, []any{*e.value, *e.code})
			}
		}
		sortRows(got)
		sortRows(want)
		if len(want) == 0 {
			t.Fatal("the hand-made practice has no readings")
		}
		if diff := diffRows(got, want); diff != "" {
			t.Errorf("numeric values:\n%s", diff)
		}
	})
}
