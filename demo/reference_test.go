package demo_test

// An independent answer to the demo's two queries, computed in plain Go
// from the synthetic network's Parquet files and the rules documented in
// policy/catalog and node/sqlgen (registration, age, opt-outs, events
// after death, duplicates), so that the released tables are checked
// against something that shares no code with the nodes' SQL or the
// coordinator's linkage.

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/apache/arrow/go/v17/parquet"
	"github.com/apache/arrow/go/v17/parquet/pqarrow"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/disclosure"
	"github.com/havenhealth/haven/integration/releasecheck"
	"github.com/havenhealth/haven/synth"
)

// nullDay marks a missing date.
const nullDay = int32(-1 << 31)

// siteTable is one CDM table of one site, column by column.
type siteTable struct {
	t    testing.TB
	name string
	tbl  arrow.Table
}

func readSiteTable(t testing.TB, n *synth.Network, s synth.Site, table string) *siteTable {
	t.Helper()
	f, ok := s.Files[table]
	if !ok {
		t.Fatalf("site %s has no %s file", s.ODS, table)
	}
	file, err := os.Open(n.Path(f.Path))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	tbl, err := pqarrow.ReadTable(context.Background(), file, parquet.NewReaderProperties(memory.DefaultAllocator),
		pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		t.Fatalf("read %s: %v", f.Path, err)
	}
	t.Cleanup(tbl.Release)
	return &siteTable{t: t, name: s.ODS + "/" + table, tbl: tbl}
}

func (st *siteTable) rows() int { return int(st.tbl.NumRows()) }

func (st *siteTable) chunks(col string) []arrow.Array {
	idx := st.tbl.Schema().FieldIndices(col)
	if len(idx) != 1 {
		st.t.Fatalf("%s: no column %s", st.name, col)
	}
	return st.tbl.Column(idx[0]).Data().Chunks()
}

// strings returns a string column; NULL is "".
func (st *siteTable) strings(col string) []string {
	var out []string
	for _, c := range st.chunks(col) {
		a, ok := c.(*array.String)
		if !ok {
			st.t.Fatalf("%s.%s is %s, want utf8", st.name, col, c.DataType())
		}
		for i := range a.Len() {
			if a.IsValid(i) {
				out = append(out, a.Value(i))
			} else {
				out = append(out, "")
			}
		}
	}
	return out
}

// days returns a date column as days since 1970; NULL is nullDay.
func (st *siteTable) days(col string) []int32 {
	var out []int32
	for _, c := range st.chunks(col) {
		a, ok := c.(*array.Date32)
		if !ok {
			st.t.Fatalf("%s.%s is %s, want date32", st.name, col, c.DataType())
		}
		for i := range a.Len() {
			if a.IsValid(i) {
				out = append(out, int32(a.Value(i)))
			} else {
				out = append(out, nullDay)
			}
		}
	}
	return out
}

func dayOf(t testing.TB, s string) int32 {
	t.Helper()
	d, err := time.Parse(time.DateOnly, s)
	if err != nil {
		t.Fatal(err)
	}
	return int32(d.Unix() / 86400)
}

// person is what a site's patient table says of one valid NHS number:
// where a number has several rows, each column's smallest value.
type person struct {
	birth, death int32
	sex          string
}

func patients(st *siteTable) map[string]person {
	nhs, birth, death, sex := st.strings(cdm.ColNHSNumber), st.days(cdm.ColBirthDate), st.days(cdm.ColDateOfDeath), st.strings(cdm.ColSex)
	out := map[string]person{}
	for i := range st.rows() {
		if !cdm.ValidNHSNumber(nhs[i]) {
			continue
		}
		p, seen := out[nhs[i]]
		if !seen {
			out[nhs[i]] = person{birth: birth[i], death: death[i], sex: sex[i]}
			continue
		}
		p.birth = minDay(p.birth, birth[i])
		p.death = minDay(p.death, death[i])
		if sex[i] != "" && (p.sex == "" || sex[i] < p.sex) {
			p.sex = sex[i]
		}
		out[nhs[i]] = p
	}
	return out
}

// minDay is the earlier of two dates, ignoring NULL as SQL's MIN does.
func minDay(a, b int32) int32 {
	switch {
	case a == nullDay:
		return b
	case b == nullDay:
		return a
	}
	return min(a, b)
}

// afterDeath reports whether day d is after the person's death: events
// dated then are ignored.
func (p person) afterDeath(d int32) bool { return p.death != nullDay && d > p.death }

// aliveOn reports whether the person was alive on day d.
func (p person) aliveOn(d int32) bool { return p.death == nullDay || p.death > d }

// age is whole years on day d: the difference of the years, less one if
// the birthday falls after d's month and day. ok is false for no birth.
func (p person) age(d int32) (int, bool) {
	if p.birth == nullDay {
		return 0, false
	}
	b, on := time.Unix(int64(p.birth)*86400, 0).UTC(), time.Unix(int64(d)*86400, 0).UTC()
	age := on.Year() - b.Year()
	if on.Month() < b.Month() || on.Month() == b.Month() && on.Day() < b.Day() {
		age--
	}
	return age, true
}

// ageBand10 is the label of a ten-year band, top band 90+.
func ageBand10(age int) string {
	if age >= 90 {
		return "90+"
	}
	lo := age / 10 * 10
	return fmt.Sprintf("%d-%d", lo, lo+9)
}

// registeredOn returns the valid NHS numbers registered at the practice on
// day d: a registration that ends on d is over that day.
func registeredOn(st *siteTable, ods string, d int32) map[string]bool {
	nhs, practice, start, end := st.strings(cdm.ColNHSNumber), st.strings(cdm.ColPracticeODS), st.days(cdm.ColStartDate), st.days(cdm.ColEndDate)
	out := map[string]bool{}
	for i := range st.rows() {
		if practice[i] == ods && cdm.ValidNHSNumber(nhs[i]) && start[i] != nullDay && start[i] <= d && (end[i] == nullDay || end[i] > d) {
			out[nhs[i]] = true
		}
	}
	return out
}

// type1OptOuts returns the numbers with a type 1 objection at the practice.
func type1OptOuts(st *siteTable) map[string]bool {
	nhs, kind := st.strings(cdm.ColNHSNumber), st.strings(cdm.ColKind)
	out := map[string]bool{}
	for i := range st.rows() {
		if kind[i] == cdm.OptOutType1 {
			out[nhs[i]] = true
		}
	}
	return out
}

// networkType1 returns the numbers with a type 1 objection at any
// practice of the network: an objection holds wherever the patient's
// record sits, at her former practices and at every trust (DESIGN §7).
func networkType1(t testing.TB, n *synth.Network) map[string]bool {
	out := map[string]bool{}
	for _, s := range n.SitesOfKind(cdm.KindGP) {
		for nhs := range type1OptOuts(readSiteTable(t, n, s, cdm.TableOptOut)) {
			out[nhs] = true
		}
	}
	return out
}

// eventOnOrBefore returns the patients with an event coded in codes on or
// before d and not after their death.
func eventOnOrBefore(st *siteTable, people map[string]person, codes map[string]bool, d int32) map[string]bool {
	nhs, code, day := st.strings(cdm.ColNHSNumber), st.strings(cdm.ColSNOMEDCode), st.days(cdm.ColEventDate)
	out := map[string]bool{}
	for i := range st.rows() {
		p, ok := people[nhs[i]]
		if !ok || !codes[code[i]] || day[i] == nullDay || day[i] > d || p.afterDeath(day[i]) {
			continue
		}
		out[nhs[i]] = true
	}
	return out
}

// meanValues says what each mean measure of the reference answers
// averages, which decides how disclosure control releases it.
var meanValues = map[string]disclosure.ValueKind{
	"prevalence": disclosure.ValueBinary, // of has_t2dm, 0 or 1
}

// prevalence answers t2dm-prevalence: group (practice, age_band, sex);
// measures patients, t2dm (counts) and prevalence (mean of has_t2dm).
func prevalence(t testing.TB, n *synth.Network, bundle string, indexDate string, minAge int) releasecheck.TrueTable {
	d := dayOf(t, indexDate)
	ndop := releasecheck.MustReadNDOP(t, n)
	t2dm := releasecheck.MustReadCodelist(t, bundle, "t2dm")
	objected := networkType1(t, n)
	out := releasecheck.TrueTable{}
	for _, s := range n.SitesOfKind(cdm.KindGP) {
		people := patients(readSiteTable(t, n, s, cdm.TablePatient))
		reg := registeredOn(readSiteTable(t, n, s, cdm.TableRegistration), s.ODS, d)
		diabetic := eventOnOrBefore(readSiteTable(t, n, s, cdm.TableClinicalEvent), people, t2dm, d)
		for nhs, p := range people {
			age, ok := p.age(d)
			if !reg[nhs] || ndop[nhs] || objected[nhs] || !ok || age < minAge || !p.aliveOn(d) {
				continue
			}
			has := 0.0
			if diabetic[nhs] {
				has = 1
			}
			c := out.Cell(s.ODS, ageBand10(age), p.sex)
			c.Add("patients", 1, false)
			c.Add("t2dm", has, false)
			c.Add("prevalence", has, true)
		}
	}
	return out
}

// emergencyAdmissions answers t2dm-emergency-admissions: the practices'
// population (registered and alive on the index date, 18 or over, type 2
// diabetes on or before it), each patient's distinct emergency episodes at every trust
// in the follow-up window, grouped by (age_band, sex).
func emergencyAdmissions(t testing.TB, n *synth.Network, bundle string, indexDate string, followup int32) releasecheck.TrueTable {
	d := dayOf(t, indexDate)
	end := d + followup
	ndop := releasecheck.MustReadNDOP(t, n)
	t2dm := releasecheck.MustReadCodelist(t, bundle, "t2dm")
	objected := networkType1(t, n)

	admissions := map[string]int{} // NHS number → emergency episodes across trusts
	for _, s := range n.SitesOfKind(cdm.KindTrust) {
		people := patients(readSiteTable(t, n, s, cdm.TablePatient))
		st := readSiteTable(t, n, s, cdm.TableAPCEpisode)
		nhs, id, day, method := st.strings(cdm.ColNHSNumber), st.strings(cdm.ColEpisodeID), st.days(cdm.ColAdmissionDate), st.strings(cdm.ColAdmissionMethod)
		seen := map[[2]string]bool{}
		for i := range st.rows() {
			if !cdm.ValidNHSNumber(nhs[i]) || ndop[nhs[i]] || objected[nhs[i]] || method[i] != cdm.AdmissionEmergency ||
				day[i] == nullDay || day[i] < d || day[i] > end {
				continue
			}
			if p, ok := people[nhs[i]]; ok && p.afterDeath(day[i]) {
				continue
			}
			if k := [2]string{nhs[i], id[i]}; !seen[k] {
				seen[k] = true
				admissions[nhs[i]]++
			}
		}
	}

	out := releasecheck.TrueTable{}
	for _, s := range n.SitesOfKind(cdm.KindGP) {
		people := patients(readSiteTable(t, n, s, cdm.TablePatient))
		reg := registeredOn(readSiteTable(t, n, s, cdm.TableRegistration), s.ODS, d)
		diabetic := eventOnOrBefore(readSiteTable(t, n, s, cdm.TableClinicalEvent), people, t2dm, d)
		for nhs, p := range people {
			age, ok := p.age(d)
			if !reg[nhs] || ndop[nhs] || objected[nhs] || !ok || age < 18 || !diabetic[nhs] || !p.aliveOn(d) {
				continue
			}
			a := admissions[nhs]
			c := out.Cell(ageBand10(age), p.sex)
			c.Add("patients", 1, false)
			admitted := 0.0
			if a > 0 {
				admitted = 1
			}
			c.Add("admitted", admitted, false)
			// Only trusts report, and only for patients with an
			// admission: the others have no value to sum.
			c.Add("admissions", float64(a), a > 0)
		}
	}
	return out
}
