package sqlgen

import (
	"database/sql"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/policy/catalog"
	"github.com/havenhealth/haven/synth"
)

// Hand-made sites: a few patients each, written to show one rule at a
// time, loaded into real tables.

// sqlType is the column type a dialect's table gets for a CDM type.
func sqlType(d Dialect, t cdm.Type) string {
	pg := d.Name() == PostgreSQL().Name()
	switch t {
	case cdm.Date:
		return "DATE"
	case cdm.Float64:
		if pg {
			return "DOUBLE PRECISION"
		}
		return "DOUBLE"
	case cdm.StringList:
		if pg {
			return "TEXT[]"
		}
		return "VARCHAR[]"
	}
	if pg {
		return "TEXT"
	}
	return "VARCHAR"
}

// tableRows returns sd's rows of table in CDM column order.
func tableRows(sd *siteData, table string) [][]any {
	date := func(d *catalog.Date) any {
		if d == nil {
			return nil
		}
		return d.Time()
	}
	str := func(s *string) any {
		if s == nil {
			return nil
		}
		return *s
	}
	var out [][]any
	switch table {
	case cdm.TablePatient:
		for _, p := range sd.patients {
			out = append(out, []any{p.nhs, date(p.birth), p.sex, date(p.death), str(p.lsoa), str(p.practice)})
		}
	case cdm.TableRegistration:
		for _, g := range sd.regs {
			out = append(out, []any{g.nhs, g.ods, date(g.start), date(g.end)})
		}
	case cdm.TableOptOut:
		for _, o := range sd.optOuts {
			out = append(out, []any{o.nhs, o.kind, day("2020-01-01").Time()})
		}
	case cdm.TableClinicalEvent:
		for _, e := range sd.events[table] {
			var v any
			if e.value != nil {
				v = *e.value
			}
			out = append(out, []any{e.nhs, e.date.Time(), str(e.code), v})
		}
	case cdm.TableMedication:
		for _, e := range sd.events[table] {
			out = append(out, []any{e.nhs, e.date.Time(), str(e.code)})
		}
	case cdm.TableAPCEpisode:
		for _, e := range sd.events[table] {
			out = append(out, []any{e.nhs, e.episode, e.date.Time(), date(e.discharge), e.method, str(e.code), nil})
		}
	case cdm.TableAEAttendance:
		for _, e := range sd.events[table] {
			out = append(out, []any{e.nhs, e.date.Time(), str(e.code)})
		}
	}
	return out
}

// loadTables creates the CDM tables of sd's kind in db and fills them.
func loadTables(t testing.TB, db *sql.DB, d Dialect, sd *siteData) {
	t.Helper()
	for _, tbl := range cdm.TablesFor(sd.site.Kind) {
		var defs, ph []string
		for i, c := range tbl.Columns {
			defs = append(defs, c.Name+" "+sqlType(d, c.Type))
			ph = append(ph, fmt.Sprintf("$%d", i+1))
		}
		if _, err := db.Exec("CREATE TABLE " + tbl.Name + " (" + strings.Join(defs, ", ") + ")"); err != nil {
			t.Fatalf("create %s: %v", tbl.Name, err)
		}
		ins := "INSERT INTO " + tbl.Name + " VALUES (" + strings.Join(ph, ", ") + ")"
		for _, row := range tableRows(sd, tbl.Name) {
			if _, err := db.Exec(ins, row...); err != nil {
				t.Fatalf("insert into %s: %v", tbl.Name, err)
			}
		}
	}
}

func day(s string) catalog.Date {
	d, err := catalog.ParseDate(s)
	if err != nil {
		panic(err) // test data written in this file
	}
	return d
}

func dayp(s string) *catalog.Date {
	if s == "" {
		return nil
	}
	d := day(s)
	return &d
}

func strp(s string) *string { return &s }
func fp(f float64) *float64 { return &f }

// nhsNumbers mints valid NHS numbers from serials.
func nhsNumber(t testing.TB, serial uint32) string {
	t.Helper()
	n, _, err := cdm.NHSNumberFromSerial(serial)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// noCheckDigit returns a 10-digit string whose first nine digits have no
// valid check digit (modulus 11 gives 10).
func noCheckDigit(t testing.TB) string {
	t.Helper()
	for s := 400000000; s < 400001000; s++ {
		first := fmt.Sprint(s)
		var nine [9]byte
		for i := range nine {
			nine[i] = first[i] - '0'
		}
		if _, ok := cdm.NHSCheckDigit(nine); !ok {
			return first + "5"
		}
	}
	t.Fatal("no nine digits without a check digit")
	return ""
}

// wrongCheckDigit returns a valid number with its check digit changed.
func wrongCheckDigit(t testing.TB, serial uint32) string {
	n := nhsNumber(t, serial)
	last := (n[9]-'0'+1)%10 + '0'
	return n[:9] + string(rune(last))
}

// Codes used below, from the bundle's codelists.
const (
	codeT2DM   = "44054006"
	codeSBP    = "271649006"
	codeStatin = "319996000"
)

// gpCase is the hand-made practice: each patient shows a rule.
type gpCase struct {
	sd                                    *siteData
	ndop                                  []string
	p1, p2, p8, p12, p14, p15             string // in the population on 2024-01-01
	p3, p4, p5, p6, p7, p9, p10, p11, p13 string // not
}

func newGPCase(t testing.TB) *gpCase {
	g := &gpCase{sd: &siteData{site: synth.Site{ODS: "A00001", Kind: cdm.KindGP}, events: map[string][]eventRow{}}}
	n := func(i uint32) string { return nhsNumber(t, 1_000_000+i*100) }
	g.p1, g.p2, g.p6, g.p7, g.p8, g.p9, g.p10 = n(1), n(2), n(6), n(7), n(8), n(9), n(10)
	g.p11, g.p12, g.p13, g.p14, g.p15 = n(11), n(12), n(13), n(14), n(15)
	g.p3, g.p4, g.p5 = wrongCheckDigit(t, 1_000_300), noCheckDigit(t), "12345678AB"
	sd := g.sd
	patient := func(nhs, birth, sex, death string) {
		sd.patients = append(sd.patients, patientRow{nhs: nhs, birth: dayp(birth), sex: sex, death: dayp(death), lsoa: strp("E01000001"), practice: strp("A00001")})
	}
	reg := func(nhs, ods, start, end string) {
		sd.regs = append(sd.regs, registrationRow{nhs: nhs, ods: ods, start: dayp(start), end: dayp(end)})
	}
	event := func(nhs, date, code string, value *float64) {
		sd.events[cdm.TableClinicalEvent] = append(sd.events[cdm.TableClinicalEvent], eventRow{nhs: nhs, date: day(date), code: strp(code), value: value})
	}
	issue := func(nhs, date string) {
		sd.events[cdm.TableMedication] = append(sd.events[cdm.TableMedication], eventRow{nhs: nhs, date: day(date), code: strp(codeStatin)})
	}
	for _, p := range []string{g.p1, g.p2, g.p3, g.p4, g.p5, g.p6, g.p7, g.p8, g.p15} {
		reg(p, "A00001", "2010-01-01", "")
	}
	// p1: diabetic (a duplicated row), three statin issues of which two
	// are one duplicated row, readings with a tie on the latest day and a
	// later one without a value.
	patient(g.p1, "1950-06-15", "F", "")
	event(g.p1, "2020-01-01", codeT2DM, nil)
	event(g.p1, "2020-01-01", codeT2DM, nil)
	issue(g.p1, "2023-06-01")
	issue(g.p1, "2023-06-01")
	issue(g.p1, "2023-07-01")
	event(g.p1, "2023-05-01", codeSBP, fp(150))
	event(g.p1, "2023-11-01", codeSBP, fp(130))
	event(g.p1, "2023-11-01", codeSBP, fp(135))
	event(g.p1, "2023-12-01", codeSBP, nil)
	// p2: born on 29 February.
	patient(g.p2, "2000-02-29", "M", "")
	event(g.p2, "2023-01-01", codeSBP, fp(118))
	// p3, p4, p5: invalid NHS numbers, otherwise like p1.
	for _, p := range []string{g.p3, g.p4, g.p5} {
		patient(p, "1950-06-15", "F", "")
		event(p, "2020-01-01", codeT2DM, nil)
		issue(p, "2023-06-01")
	}
	// p6: type 1 objection; p7: national opt-out.
	patient(g.p6, "1960-01-01", "M", "")
	sd.optOuts = append(sd.optOuts, optOutRow{nhs: g.p6, kind: cdm.OptOutType1}, optOutRow{nhs: g.p7, kind: cdm.OptOutNDOP})
	patient(g.p7, "1960-01-01", "F", "")
	g.ndop = []string{g.p7, g.p3}
	// p8: died, but the registration was never closed; a reading and an
	// issue after death are ignored.
	patient(g.p8, "1940-01-01", "M", "2023-06-01")
	event(g.p8, "2023-05-01", codeSBP, fp(120))
	event(g.p8, "2023-09-01", codeSBP, fp(200))
	issue(g.p8, "2023-06-01")
	issue(g.p8, "2023-06-02")
	// p9: registered elsewhere only. p10…p13: registration boundaries;
	// p11's registration ends on the index date, so it is over that day.
	patient(g.p9, "1970-01-01", "F", "")
	reg(g.p9, "B00002", "2010-01-01", "")
	for _, p := range []string{g.p10, g.p11, g.p12, g.p13} {
		patient(p, "1980-01-01", "M", "")
	}
	reg(g.p10, "A00001", "2010-01-01", "2023-12-31")
	reg(g.p11, "A00001", "2010-01-01", "2024-01-01")
	reg(g.p12, "A00001", "2024-01-01", "")
	reg(g.p13, "A00001", "2024-01-02", "")
	// p14: two patient rows that disagree, and an exact duplicate
	// registration: counted once, earliest birth, smallest sex code.
	patient(g.p14, "1990-05-05", "M", "")
	patient(g.p14, "1991-05-05", "F", "")
	reg(g.p14, "A00001", "2015-01-01", "")
	reg(g.p14, "A00001", "2015-01-01", "")
	// p15: no birth date.
	patient(g.p15, "", "U", "")
	return g
}

// openHandmade loads sd into a fresh database of tdb's dialect.
func openHandmade(t testing.TB, tdb testDB, sd *siteData) *sql.DB {
	t.Helper()
	db := tdb.open(t)
	loadTables(t, db, tdb.d, sd)
	return db
}

// eachDialect runs f once per dialect under test.
func eachDialect(t *testing.T, f func(t *testing.T, tdb testDB)) {
	for _, tdb := range testDialects(t) {
		t.Run(tdb.d.Name(), func(t *testing.T) { f(t, tdb) })
	}
}

// parseDefinition parses a test definition against the bundle's codelists.
func parseDefinition(t testing.TB, src string) *catalog.Definition {
	t.Helper()
	d, err := loadBundle(t).ParseDefinition("edge.yaml", []byte(src))
	if err != nil {
		t.Fatalf("parse:\n%v", err)
	}
	return d
}

func bind(t testing.TB, d *catalog.Definition, params map[string]string) *catalog.Bound {
	t.Helper()
	b, err := d.Bind(params)
	if err != nil {
		t.Fatalf("bind %s: %v", d.ID, err)
	}
	return b
}

// byNHS indexes linkage rows by their first column.
func byNHS(rows [][]any) map[string][]any {
	out := map[string][]any{}
	for _, r := range rows {
		out[r[0].(string)] = r
	}
	return out
}

// gpLinkageDef has a GP population and a hospital variable, so the GP
// returns one row per patient with every GP variable: each rule shows in
// one patient's row.
const gpLinkageDef = `
id: edge
version: 1
title: Edge cases
parameters:
  index_date: {type: date, default: 2024-01-01}
  lookback: {type: int, default: 365}
population:
  registered_on: $index_date
variables:
  age: {age: {on: $index_date}}
  band: {age_band: {on: $index_date, bands: [18, 40, 65]}}
  sex: {column: patient.sex}
  practice: {registered_practice: {on: $index_date}}
  sbp: {latest: {table: clinical_event, codelist: systolic-bp, between: [$index_date - lookback, $index_date]}}
  statins: {count: {table: medication, codelist: statins, between: [$index_date - lookback, $index_date]}}
  diabetic: {exists: {table: clinical_event, codelist: t2dm, on_or_before: $index_date}}
  admissions:
    count: {table: apc_episode, codelist: copd-icd10, where: {admission_method: [emergency, elective]}, between: [$index_date, $index_date + 365]}
measures:
  - {name: patients, count: patients}
  - {name: youngest, min: age}
  - {name: highest, max: sbp}
  - {name: issues, sum: statins}
  - {name: diabetics, count: patients, where: diabetic == 1}
  - {name: admitted, count: patients, where: admissions > 0}
group_by: [band, sex, practice]
`

func TestHandmadePractice(t *testing.T) {
	eachDialect(t, func(t *testing.T, tdb testDB) {
		g := newGPCase(t)
		db := openHandmade(t, tdb, g.sd)
		d := parseDefinition(t, gpLinkageDef)
		p := d.Plan()
		if p.Mode != catalog.ModeLinkage {
			t.Fatalf("plan mode %s", p.Mode)
		}
		b := bind(t, d, nil)
		prog, err := Compile(b, p, cdm.KindGP, tdb.d, Options{SiteODS: g.sd.site.ODS, NDOP: g.ndop})
		if err != nil {
			t.Fatal(err)
		}
		rows, err := query(t.Context(), db, prog.Result)
		if err != nil {
			t.Fatal(err)
		}
		cols := map[string]int{}
		for i, c := range prog.Result.Columns {
			cols[c.Name] = i
		}
		got := byNHS(rows)
		// Fields: nhs_number, age, band, diabetic, practice, sbp, sex, statins.
		type want struct {
			age      any
			band     any
			diabetic bool
			sbp      any
			sex      string
			statins  int64
		}
		wants := map[string]want{
			g.p1:  {int64(73), "65+", true, 135.0, "F", 2},
			g.p2:  {int64(23), "18-39", false, 118.0, "M", 0},
			g.p8:  {int64(84), "65+", false, 120.0, "M", 1},
			g.p12: {int64(44), "40-64", false, nil, "M", 0},
			g.p14: {int64(33), "18-39", false, nil, "F", 0},
			g.p15: {nil, nil, false, nil, "U", 0},
		}
		if len(got) != len(wants) {
			t.Errorf("%d patients, want %d: %v", len(got), len(wants), rows)
		}
		for nhs, w := range wants {
			r, ok := got[nhs]
			if !ok {
				t.Errorf("patient %s missing", nhs)
				continue
			}
			check := func(field string, want any) {
				if g := r[cols[field]]; !sameValue(g, want) {
					t.Errorf("patient %s: %s = %#v, want %#v", nhs, field, g, want)
				}
			}
			check("age", w.age)
			check("band", w.band)
			check("diabetic", w.diabetic)
			check("sbp", w.sbp)
			check("sex", w.sex)
			check("statins", w.statins)
			check("practice", "A00001")
		}

		// The same against the reference.
		ref := newReference(t, b, cdm.KindGP, g.sd, g.ndop).patientRows()
		sortRows(rows)
		sortRows(ref)
		if diff := diffRows(rows, ref); diff != "" {
			t.Errorf("reference:\n%s", diff)
		}

		counts, err := query(t.Context(), db, prog.InvalidNHSNumbers)
		if err != nil {
			t.Fatal(err)
		}
		wantCounts := map[string]int64{cdm.TablePatient: 3, cdm.TableRegistration: 3, cdm.TableClinicalEvent: 3, cdm.TableMedication: 3, cdm.TableOptOut: 0}
		for i, c := range prog.InvalidNHSNumbers.Columns {
			if counts[0][i] != wantCounts[c.Name] {
				t.Errorf("invalid NHS numbers in %s: %v, want %d", c.Name, counts[0][i], wantCounts[c.Name])
			}
			delete(wantCounts, c.Name)
		}
		if len(wantCounts) > 0 {
			t.Errorf("no invalid-number counts for %v", wantCounts)
		}
	})
}

// TestHandmadeAgeOnLeapDay: someone born on 29 February turns a year
// older on 1 March in other years.
func TestHandmadeAgeOnLeapDay(t *testing.T) {
	eachDialect(t, func(t *testing.T, tdb testDB) {
		g := newGPCase(t)
		db := openHandmade(t, tdb, g.sd)
		d := parseDefinition(t, gpLinkageDef)
		for _, tt := range []struct {
			on   string
			want int64
		}{{"2023-02-27", 22}, {"2023-02-28", 22}, {"2023-03-01", 23}, {"2024-02-28", 23}, {"2024-02-29", 24}} {
			b := bind(t, d, map[string]string{"index_date": tt.on})
			prog, err := Compile(b, d.Plan(), cdm.KindGP, tdb.d, Options{SiteODS: g.sd.site.ODS})
			if err != nil {
				t.Fatal(err)
			}
			rows, err := query(t.Context(), db, prog.Result)
			if err != nil {
				t.Fatal(err)
			}
			r, ok := byNHS(rows)[g.p2]
			if !ok {
				t.Fatalf("on %s: patient missing", tt.on)
			}
			if r[1] != tt.want {
				t.Errorf("age on %s = %v, want %d", tt.on, r[1], tt.want)
			}
			if a, _ := ageOn(dayp("2000-02-29"), day(tt.on)); a != tt.want {
				t.Errorf("reference age on %s = %d, want %d", tt.on, a, tt.want)
			}
		}
	})
}

// TestHandmadeCells checks the aggregate partials, including min, max and
// top, which no reference definition uses, against the reference and by
// hand.
func TestHandmadeCells(t *testing.T) {
	eachDialect(t, func(t *testing.T, tdb testDB) {
		g := newGPCase(t)
		db := openHandmade(t, tdb, g.sd)
		src := strings.Replace(gpLinkageDef, "  admissions:\n    count: {table: apc_episode, codelist: copd-icd10, where: {admission_method: [emergency, elective]}, between: [$index_date, $index_date + 365]}\n", "", 1)
		src = strings.Replace(src, "  - {name: admitted, count: patients, where: admissions > 0}\n", "  - {name: mean_sbp, mean: sbp, dominance: true}\n", 1)
		d := parseDefinition(t, src)
		p := d.Plan()
		if p.Mode != catalog.ModeAggregate {
			t.Fatalf("plan mode %s", p.Mode)
		}
		b := bind(t, d, nil)
		prog, err := Compile(b, p, cdm.KindGP, tdb.d, Options{SiteODS: g.sd.site.ODS, NDOP: g.ndop})
		if err != nil {
			t.Fatal(err)
		}
		rows, err := query(t.Context(), db, prog.Result)
		if err != nil {
			t.Fatal(err)
		}
		want := newReference(t, b, cdm.KindGP, g.sd, g.ndop).cellRows()
		sortRows(want)
		got := append([][]any(nil), rows...)
		sortRows(got)
		if diff := diffRows(got, want); diff != "" {
			t.Errorf("reference:\n%s", diff)
		}
		// By hand: band, sex, practice, patients, youngest__min, youngest__n,
		// highest__max, highest__n, issues__sum, issues__n, issues__top,
		// diabetics, mean_sbp__sum, mean_sbp__n, mean_sbp__top; ordered by
		// band, sex, practice with NULLs last.
		// A sum's n and top leave out the patients who add 0 to it.
		byHand := [][]any{
			{"18-39", "F", "A00001", int64(1), int64(33), int64(1), nil, int64(0), int64(0), int64(0), nil, int64(0), 0.0, int64(0), nil},
			{"18-39", "M", "A00001", int64(1), int64(23), int64(1), 118.0, int64(1), int64(0), int64(0), nil, int64(0), 118.0, int64(1), 118.0},
			{"40-64", "M", "A00001", int64(1), int64(44), int64(1), nil, int64(0), int64(0), int64(0), nil, int64(0), 0.0, int64(0), nil},
			{"65+", "F", "A00001", int64(1), int64(73), int64(1), 135.0, int64(1), int64(2), int64(1), int64(2), int64(1), 135.0, int64(1), 135.0},
			{"65+", "M", "A00001", int64(1), int64(84), int64(1), 120.0, int64(1), int64(1), int64(1), int64(1), int64(0), 120.0, int64(1), 120.0},
			{nil, "U", "A00001", int64(1), nil, int64(0), nil, int64(0), int64(0), int64(0), nil, int64(0), 0.0, int64(0), nil},
		}
		if diff := diffRows(rows, byHand); diff != "" {
			t.Errorf("by hand (in SQL order):\n%s", diff)
		}

		members, err := query(t.Context(), db, *prog.Members)
		if err != nil {
			t.Fatal(err)
		}
		wantMembers := []string{g.p1, g.p2, g.p8, g.p12, g.p14, g.p15}
		if len(members) != len(wantMembers) {
			t.Errorf("members %v, want %v", members, wantMembers)
		}
		in := byNHS(members)
		for _, m := range wantMembers {
			if _, ok := in[m]; !ok {
				t.Errorf("member %s missing", m)
			}
		}
	})
}

// sumContributorsDef puts the hand-made practice's population in one cell,
// where some patients add 0 to a sum and others do not.
const sumContributorsDef = `
id: edge
version: 1
title: Contributors to sums
parameters:
  index_date: {type: date, default: 2024-01-01}
  lookback: {type: int, default: 365}
population:
  registered_on: $index_date
variables:
  practice: {registered_practice: {on: $index_date}}
  age: {age: {on: $index_date}}
  statins: {count: {table: medication, codelist: statins, between: [$index_date - lookback, $index_date]}}
  diabetic: {exists: {table: clinical_event, codelist: t2dm, on_or_before: $index_date}}
measures:
  - {name: patients, count: patients}
  - {name: issues, sum: statins}
  - {name: older_issues, sum: statins, where: age >= 40}
  - {name: diabetics, sum: diabetic}
  - {name: mean_issues, mean: statins}
group_by: [practice]
`

// TestHandmadeSumContributors: a sum's n counts the patients whose value
// is not 0, the contributors the disclosure rule for few contributors
// needs, while a mean's n counts every value, zeros included, as its
// divisor. Of the six patients in the population only p1 (2 issues) and
// p8 (1) had statins, and only p1 is diabetic: counting every non-null
// value, as sums once did, would give issues__n 6, older_issues__n 3 and
// diabetics__n 6.
func TestHandmadeSumContributors(t *testing.T) {
	eachDialect(t, func(t *testing.T, tdb testDB) {
		g := newGPCase(t)
		db := openHandmade(t, tdb, g.sd)
		d := parseDefinition(t, sumContributorsDef)
		p := d.Plan()
		if p.Mode != catalog.ModeAggregate {
			t.Fatalf("plan mode %s", p.Mode)
		}
		b := bind(t, d, nil)
		prog, err := Compile(b, p, cdm.KindGP, tdb.d, Options{SiteODS: g.sd.site.ODS, NDOP: g.ndop})
		if err != nil {
			t.Fatal(err)
		}
		rows, err := query(t.Context(), db, prog.Result)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, c := range prog.Result.Columns {
			names = append(names, c.Name)
		}
		wantNames := []string{"practice", "patients", "issues__sum", "issues__n", "issues__top",
			"older_issues__sum", "older_issues__n", "older_issues__top", "diabetics__sum", "diabetics__n", "diabetics__top",
			"mean_issues__sum", "mean_issues__n"}
		if !slices.Equal(names, wantNames) {
			t.Fatalf("columns %v, want %v", names, wantNames)
		}
		byHand := [][]any{{"A00001", int64(6),
			int64(3), int64(2), int64(2), // p1 and p8 of six
			int64(3), int64(2), int64(2), // p1 and p8 of the three aged 40 or over (p1, p8, p12)
			int64(1), int64(1), int64(1), // a bool counts 1: p1 alone
			int64(3), int64(6), // a mean divides by every value
		}}
		if diff := diffRows(rows, byHand); diff != "" {
			t.Errorf("by hand:\n%s", diff)
		}
		want := newReference(t, b, cdm.KindGP, g.sd, g.ndop).cellRows()
		if diff := diffRows(rows, want); diff != "" {
			t.Errorf("reference:\n%s", diff)
		}
	})
}

// trustCase is the hand-made trust.
type trustCase struct {
	sd                     *siteData
	ndop                   []string
	t1, t2, t3, t4, t5, t6 string
	t7                     string
}

func newTrustCase(t testing.TB) *trustCase {
	c := &trustCase{sd: &siteData{site: synth.Site{ODS: "RX1", Kind: cdm.KindTrust}, events: map[string][]eventRow{}}}
	n := func(i uint32) string { return nhsNumber(t, 2_000_000+i*100) }
	c.t1, c.t2, c.t4, c.t5, c.t6, c.t7 = n(1), n(2), n(4), n(5), n(6), n(7)
	c.t3 = wrongCheckDigit(t, 2_000_300)
	c.ndop = []string{c.t4}
	sd := c.sd
	patient := func(nhs, birth, death string) {
		sd.patients = append(sd.patients, patientRow{nhs: nhs, birth: dayp(birth), sex: "F", death: dayp(death)})
	}
	episode := func(nhs, id, adm, dis, method, diag string) {
		sd.events[cdm.TableAPCEpisode] = append(sd.events[cdm.TableAPCEpisode], eventRow{nhs: nhs, episode: id,
			date: day(adm), discharge: dayp(dis), method: method, code: strp(diag)})
	}
	patient(c.t1, "1950-01-01", "2024-06-01")
	patient(c.t2, "1950-01-01", "")
	patient(c.t3, "1950-01-01", "")
	patient(c.t4, "1950-01-01", "")
	patient(c.t5, "1950-01-01", "")
	// t6 and t7 have no patient row here.
	// t1: one episode written twice, one coded without a dot, one after
	// death, and two whose codes do not fall under J44.
	episode(c.t1, "E1", "2024-02-01", "2024-02-05", cdm.AdmissionEmergency, "J44.1")
	episode(c.t1, "E1", "2024-02-01", "2024-02-05", cdm.AdmissionEmergency, "J44.1")
	episode(c.t1, "E2", "2024-03-01", "2024-03-02", cdm.AdmissionElective, "J441")
	episode(c.t1, "E3", "2024-07-01", "2024-07-03", cdm.AdmissionEmergency, "J44.0")
	episode(c.t1, "E4", "2024-02-10", "2024-02-11", cdm.AdmissionEmergency, "J.4.4")
	episode(c.t1, "E5", "2024-02-11", "2024-02-12", cdm.AdmissionEmergency, "I10")
	// t2: a maternity episode and one before the window.
	episode(c.t2, "E6", "2024-01-05", "2024-01-06", cdm.AdmissionMaternity, "J44")
	episode(c.t2, "E7", "2023-12-31", "2024-01-02", cdm.AdmissionEmergency, "J44")
	// t3: invalid number; t4: national opt-out.
	episode(c.t3, "E9", "2024-02-01", "2024-02-02", cdm.AdmissionEmergency, "J44")
	episode(c.t4, "E8", "2024-02-01", "2024-02-02", cdm.AdmissionEmergency, "J44")
	// Readmissions, for the period 2024-01-01 to 2024-03-31, 30 days.
	episode(c.t5, "E10", "2024-01-10", "2024-01-15", cdm.AdmissionEmergency, "J44")
	episode(c.t5, "E11", "2024-02-01", "2024-02-03", cdm.AdmissionEmergency, "J44")
	episode(c.t5, "E12", "2024-02-05", "2024-02-06", cdm.AdmissionElective, "J44")
	episode(c.t5, "E13", "2024-04-20", "2024-04-22", cdm.AdmissionEmergency, "J44")
	episode(c.t6, "E14", "2024-04-10", "", cdm.AdmissionEmergency, "J44")
	episode(c.t7, "E15", "2023-12-20", "2024-01-02", cdm.AdmissionEmergency, "J44")
	sd.events[cdm.TableAEAttendance] = append(sd.events[cdm.TableAEAttendance], eventRow{nhs: c.t2, date: day("2024-01-05")})
	return c
}

func TestHandmadeTrustCounts(t *testing.T) {
	eachDialect(t, func(t *testing.T, tdb testDB) {
		c := newTrustCase(t)
		db := openHandmade(t, tdb, c.sd)
		d := parseDefinition(t, gpLinkageDef)
		b := bind(t, d, nil)
		prog, err := Compile(b, d.Plan(), cdm.KindTrust, tdb.d, Options{SiteODS: c.sd.site.ODS, NDOP: c.ndop})
		if err != nil {
			t.Fatal(err)
		}
		rows, err := query(t.Context(), db, prog.Result)
		if err != nil {
			t.Fatal(err)
		}
		// t1: E1 (once) and E2; E3 is after death, E4 and E5 are not COPD.
		// t2 has nothing in the window; t3 and t4 are left out. t6 has no
		// patient row, which does not matter.
		want := [][]any{{c.t1, int64(2)}, {c.t5, int64(4)}, {c.t6, int64(1)}}
		sortRows(want)
		if diff := diffRows(rows, want); diff != "" {
			t.Errorf("by hand:\n%s", diff)
		}
		ref := newReference(t, b, cdm.KindTrust, c.sd, c.ndop).patientRows()
		if diff := diffRows(rows, ref); diff != "" {
			t.Errorf("reference:\n%s", diff)
		}
		counts, err := query(t.Context(), db, prog.InvalidNHSNumbers)
		if err != nil {
			t.Fatal(err)
		}
		if names := fmt.Sprint(prog.Tables); names != "[patient apc_episode]" {
			t.Errorf("tables %s", names)
		}
		if fmt.Sprint(counts) != "[[1 1]]" {
			t.Errorf("invalid counts %v, want [[1 1]]", counts)
		}
	})
}

func TestHandmadeReadmissions(t *testing.T) {
	eachDialect(t, func(t *testing.T, tdb testDB) {
		c := newTrustCase(t)
		db := openHandmade(t, tdb, c.sd)
		d, ok := loadBundle(t).Get("emergency-readmissions-30d")
		if !ok {
			t.Fatal("no emergency-readmissions-30d")
		}
		b := bind(t, d, map[string]string{"start": "2024-01-01", "end": "2024-03-31", "window_days": "30"})
		prog, err := Compile(b, d.Plan(), cdm.KindTrust, tdb.d, Options{SiteODS: c.sd.site.ODS, NDOP: c.ndop})
		if err != nil {
			t.Fatal(err)
		}
		rows, err := query(t.Context(), db, prog.Result)
		if err != nil {
			t.Fatal(err)
		}
		// nhs_number, in_population, discharge days, admission days, first day.
		// t1: E1 (day 31) and E4, E5 (days 40, 41) are emergencies in the
		// period; E3 (after death) is not seen.
		want := [][]any{
			{c.t1, true, []int64{35, 41, 42}, []int64{31, 40, 41}, int64(31)},
			{c.t2, false, []int64{1}, []int64{}, nil},
			{c.t5, true, []int64{14, 33}, []int64{9, 31, 110}, int64(9)},
			{c.t6, false, []int64{}, []int64{100}, nil},
			{c.t7, false, []int64{1}, []int64{}, nil},
		}
		sortRows(want)
		if diff := diffRows(rows, want); diff != "" {
			t.Errorf("by hand:\n%s", diff)
		}
		ref := newReference(t, b, cdm.KindTrust, c.sd, c.ndop).patientRows()
		if diff := diffRows(rows, ref); diff != "" {
			t.Errorf("reference:\n%s", diff)
		}
	})
}

// hospitalDef has a hospital population with a criterion on age, which a
// patient without a patient row at the trust cannot meet, inside none_of.
const hospitalDef = `
id: hospital-edge
version: 1
title: Hospital population edge cases
parameters:
  index_date: {type: date, default: 2024-01-01}
population:
  has_event: {table: apc_episode, where: {admission_method: emergency}, between: [$index_date, $index_date + 120]}
  none_of:
    - {age_on: {date: $index_date, max: 40}}
variables:
  sex: {column: patient.sex}
  band: {age_band: {on: $index_date, bands: [40, 65]}}
  attended: {exists: {table: ae_attendance, between: [$index_date, $index_date + 120]}}
  admissions: {count: {table: apc_episode, codelist: copd-icd10, between: [$index_date, $index_date + 120]}}
measures:
  - {name: patients, count: patients}
  - {name: admitted, count: patients, where: admissions > 0 and attended == 1}
group_by: [sex, band]
`

func TestHandmadeHospitalPopulation(t *testing.T) {
	eachDialect(t, func(t *testing.T, tdb testDB) {
		c := newTrustCase(t)
		db := openHandmade(t, tdb, c.sd)
		d := parseDefinition(t, hospitalDef)
		b := bind(t, d, nil)
		prog, err := Compile(b, d.Plan(), cdm.KindTrust, tdb.d, Options{SiteODS: c.sd.site.ODS, NDOP: c.ndop})
		if err != nil {
			t.Fatal(err)
		}
		rows, err := query(t.Context(), db, prog.Result)
		if err != nil {
			t.Fatal(err)
		}
		// nhs_number, in_population, admissions, attended, band, sex.
		// t2 is not in the population (no emergency in the period) but
		// attended A&E; t6 has no patient row, so no known age, so
		// none_of [age ≤ 40] holds; t7 has nothing in the period.
		want := [][]any{
			{c.t1, true, int64(2), false, "65+", "F"},
			{c.t2, false, int64(1), true, "65+", "F"},
			{c.t5, true, int64(4), false, "65+", "F"},
			{c.t6, true, int64(1), false, nil, nil},
		}
		sortRows(want)
		if diff := diffRows(rows, want); diff != "" {
			t.Errorf("by hand:\n%s", diff)
		}
		ref := newReference(t, b, cdm.KindTrust, c.sd, c.ndop).patientRows()
		if diff := diffRows(rows, ref); diff != "" {
			t.Errorf("reference:\n%s", diff)
		}
	})
}

// TestHandmadeNetworkOptOut: a patient whose type 1 objection was recorded
// at another practice (Options.Network) is left out at a practice and at a
// trust exactly as one on the national list, and nobody else is.
func TestHandmadeNetworkOptOut(t *testing.T) {
	eachDialect(t, func(t *testing.T, tdb testDB) {
		g := newGPCase(t)
		db := openHandmade(t, tdb, g.sd)
		d := parseDefinition(t, gpLinkageDef)
		b := bind(t, d, nil)
		run := func(network []string) map[string][]any {
			prog, err := Compile(b, d.Plan(), cdm.KindGP, tdb.d, Options{SiteODS: g.sd.site.ODS, NDOP: g.ndop, Network: network})
			if err != nil {
				t.Fatal(err)
			}
			rows, err := query(t.Context(), db, prog.Result)
			if err != nil {
				t.Fatal(err)
			}
			return byNHS(rows)
		}
		before, after := run(nil), run([]string{g.p1, g.p2})
		if _, ok := before[g.p1]; !ok {
			t.Fatal("the case lost its patient p1")
		}
		for _, gone := range []string{g.p1, g.p2} {
			if _, ok := after[gone]; ok {
				t.Errorf("patient %s on the network list was counted", gone)
			}
			delete(before, gone)
		}
		if fmt.Sprint(before) != fmt.Sprint(after) {
			t.Errorf("the network list changed other patients:\n%v\n%v", before, after)
		}

		c := newTrustCase(t)
		tdb2 := openHandmade(t, tdb, c.sd)
		prog, err := Compile(b, d.Plan(), cdm.KindTrust, tdb.d, Options{SiteODS: c.sd.site.ODS, NDOP: c.ndop, Network: []string{c.t1}})
		if err != nil {
			t.Fatal(err)
		}
		rows, err := query(t.Context(), tdb2, prog.Result)
		if err != nil {
			t.Fatal(err)
		}
		want := [][]any{{c.t5, int64(4)}, {c.t6, int64(1)}}
		sortRows(want)
		if diff := diffRows(rows, want); diff != "" {
			t.Errorf("trust with t1 on the network list:\n%s", diff)
		}
	})
}

// TestHandmadeBadValues: readings that are not finite, or impossible for
// their code, are left out of every statement and counted; a value under
// a code whose unit the CDM does not know is held to finiteness only.
func TestHandmadeBadValues(t *testing.T) {
	eachDialect(t, func(t *testing.T, tdb testDB) {
		g := newGPCase(t)
		event := func(nhs, date, code string, v float64) {
			g.sd.events[cdm.TableClinicalEvent] = append(g.sd.events[cdm.TableClinicalEvent],
				eventRow{nhs: nhs, date: day(date), code: strp(code), value: fp(v)})
		}
		// p2's good reading is 118 on 2023-01-01; later bad ones must not
		// replace it as the latest.
		event(g.p2, "2023-06-01", codeSBP, math.Inf(1))
		event(g.p2, "2023-07-01", codeSBP, 4000)
		event(g.p2, "2023-08-01", codeSBP, math.NaN())
		event(g.p2, "2023-09-01", codeSBP, 19)
		// p12 has only a bad reading: no latest value.
		event(g.p12, "2023-06-01", codeSBP, math.Inf(-1))
		// p14: diabetic by a row whose large value has no known unit;
		// p15: not, the row's value being infinite.
		event(g.p14, "2023-06-01", codeT2DM, 4000)
		event(g.p15, "2023-06-01", codeT2DM, math.Inf(1))
		db := openHandmade(t, tdb, g.sd)
		d := parseDefinition(t, gpLinkageDef)
		b := bind(t, d, nil)
		prog, err := Compile(b, d.Plan(), cdm.KindGP, tdb.d, Options{SiteODS: g.sd.site.ODS, NDOP: g.ndop})
		if err != nil {
			t.Fatal(err)
		}
		rows, err := query(t.Context(), db, prog.Result)
		if err != nil {
			t.Fatal(err)
		}
		cols := map[string]int{}
		for i, c := range prog.Result.Columns {
			cols[c.Name] = i
		}
		got := byNHS(rows)
		for _, w := range []struct {
			nhs, field string
			want       any
		}{
			{g.p2, "sbp", 118.0}, {g.p12, "sbp", nil}, {g.p1, "sbp", 135.0},
			{g.p14, "diabetic", true}, {g.p15, "diabetic", false},
		} {
			r, ok := got[w.nhs]
			if !ok {
				t.Errorf("patient %s missing", w.nhs)
				continue
			}
			if v := r[cols[w.field]]; !sameValue(v, w.want) {
				t.Errorf("patient %s: %s = %#v, want %#v", w.nhs, w.field, v, w.want)
			}
		}
		ref := newReference(t, b, cdm.KindGP, g.sd, g.ndop).patientRows()
		sortRows(rows)
		sortRows(ref)
		if diff := diffRows(rows, ref); diff != "" {
			t.Errorf("reference:\n%s", diff)
		}

		st, err := BadValueCounts(cdm.KindGP, tdb.d, prog.Tables)
		if err != nil {
			t.Fatal(err)
		}
		counts, err := query(t.Context(), db, st)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Columns) != 1 || st.Columns[0].Name != cdm.TableClinicalEvent || len(counts) != 1 {
			t.Fatalf("bad value counts: columns %v, rows %v; want one column, clinical_event", st.Columns, counts)
		}
		if counts[0][0] != int64(6) {
			t.Errorf("bad values in clinical_event: %v, want 6", counts[0][0])
		}
		for _, v := range st.Args {
			if f, ok := v.(float64); ok && (math.IsInf(f, 0) || math.IsNaN(f)) {
				t.Errorf("a bound argument is %v", f)
			}
		}
	})
}

func TestBadValueCountsErrors(t *testing.T) {
	if _, err := BadValueCounts(cdm.KindGP, DuckDB(), []string{cdm.TablePatient, cdm.TableMedication}); err == nil || !strings.Contains(err.Error(), "numeric column") {
		t.Errorf("no numeric tables: err = %v", err)
	}
	if _, err := BadValueCounts(cdm.KindGP, DuckDB(), []string{"patients; DROP TABLE x"}); err == nil || !strings.Contains(err.Error(), "unknown CDM table") {
		t.Errorf("unknown table: err = %v", err)
	}
}
