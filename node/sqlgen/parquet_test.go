package sqlgen

import (
	"context"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/apache/arrow/go/v17/parquet/file"
	"github.com/apache/arrow/go/v17/parquet/pqarrow"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/policy/catalog"
	"github.com/havenhealth/haven/synth"
)

// Raw rows of a site's CDM tables, read straight from its Parquet files
// for the reference computation. NULLs are nil pointers.

type patientRow struct {
	nhs      string
	birth    *catalog.Date
	sex      string
	death    *catalog.Date
	lsoa     *string
	practice *string
}

type registrationRow struct {
	nhs, ods   string
	start, end *catalog.Date
}

// eventRow is a row of any event table; fields a table lacks are zero.
type eventRow struct {
	nhs       string
	date      catalog.Date  // event_date, issue_date, admission_date or arrival_date
	discharge *catalog.Date // apc_episode
	code      *string       // snomed_code, dmd_code, primary_diagnosis or diagnosis_snomed
	value     *float64      // clinical_event
	episode   string        // apc_episode
	method    string        // apc_episode
}

type optOutRow struct{ nhs, kind string }

// siteData is everything one site holds.
type siteData struct {
	site     synth.Site
	patients []patientRow
	regs     []registrationRow
	events   map[string][]eventRow // by table
	optOuts  []optOutRow
}

// readSite reads every table of site s.
func readSite(t testing.TB, n *synth.Network, s synth.Site) *siteData {
	t.Helper()
	sd := &siteData{site: s, events: map[string][]eventRow{}}
	for _, tbl := range cdm.TablesFor(s.Kind) {
		cols := readColumns(t, n.Path(s.Files[tbl.Name].Path))
		rows := cols.rows
		switch tbl.Name {
		case cdm.TablePatient:
			for i := range rows {
				sd.patients = append(sd.patients, patientRow{nhs: cols.str(cdm.ColNHSNumber, i), birth: cols.date(cdm.ColBirthDate, i),
					sex: cols.str(cdm.ColSex, i), death: cols.date(cdm.ColDateOfDeath, i), lsoa: cols.strp(cdm.ColLSOA, i), practice: cols.strp(cdm.ColPracticeODS, i)})
			}
		case cdm.TableRegistration:
			for i := range rows {
				sd.regs = append(sd.regs, registrationRow{nhs: cols.str(cdm.ColNHSNumber, i), ods: cols.str(cdm.ColPracticeODS, i),
					start: cols.date(cdm.ColStartDate, i), end: cols.date(cdm.ColEndDate, i)})
			}
		case cdm.TableOptOut:
			for i := range rows {
				sd.optOuts = append(sd.optOuts, optOutRow{nhs: cols.str(cdm.ColNHSNumber, i), kind: cols.str(cdm.ColKind, i)})
			}
		case cdm.TableClinicalEvent:
			for i := range rows {
				sd.events[tbl.Name] = append(sd.events[tbl.Name], eventRow{nhs: cols.str(cdm.ColNHSNumber, i), date: *cols.date(cdm.ColEventDate, i),
					code: cols.strp(cdm.ColSNOMEDCode, i), value: cols.float(cdm.ColNumericValue, i)})
			}
		case cdm.TableMedication:
			for i := range rows {
				sd.events[tbl.Name] = append(sd.events[tbl.Name], eventRow{nhs: cols.str(cdm.ColNHSNumber, i), date: *cols.date(cdm.ColIssueDate, i),
					code: cols.strp(cdm.ColDMDCode, i)})
			}
		case cdm.TableAPCEpisode:
			for i := range rows {
				sd.events[tbl.Name] = append(sd.events[tbl.Name], eventRow{nhs: cols.str(cdm.ColNHSNumber, i), date: *cols.date(cdm.ColAdmissionDate, i),
					discharge: cols.date(cdm.ColDischargeDate, i), code: cols.strp(cdm.ColPrimaryDiagnosis, i),
					episode: cols.str(cdm.ColEpisodeID, i), method: cols.str(cdm.ColAdmissionMethod, i)})
			}
		case cdm.TableAEAttendance:
			for i := range rows {
				sd.events[tbl.Name] = append(sd.events[tbl.Name], eventRow{nhs: cols.str(cdm.ColNHSNumber, i), date: *cols.date(cdm.ColArrivalDate, i),
					code: cols.strp(cdm.ColDiagnosisSNOMED, i)})
			}
		}
	}
	return sd
}

// columns holds one Parquet file's columns, each as one Arrow array.
type columns struct {
	rows int
	byID map[string]arrow.Array
}

func readColumns(t testing.TB, path string) *columns {
	t.Helper()
	pf, err := file.OpenParquetFile(path, false)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer pf.Close()
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: 1 << 16}, memory.DefaultAllocator)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	tbl, err := fr.ReadTable(context.Background())
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer tbl.Release()
	c := &columns{rows: int(tbl.NumRows()), byID: map[string]arrow.Array{}}
	for i := 0; i < int(tbl.NumCols()); i++ {
		col := tbl.Column(i)
		arr, err := array.Concatenate(col.Data().Chunks(), memory.DefaultAllocator)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		t.Cleanup(arr.Release)
		c.byID[col.Name()] = arr
	}
	return c
}

func (c *columns) str(name string, i int) string {
	if p := c.strp(name, i); p != nil {
		return *p
	}
	return ""
}

func (c *columns) strp(name string, i int) *string {
	a := c.byID[name].(*array.String)
	if a.IsNull(i) {
		return nil
	}
	s := a.Value(i)
	return &s
}

func (c *columns) date(name string, i int) *catalog.Date {
	a := c.byID[name].(*array.Date32)
	if a.IsNull(i) {
		return nil
	}
	d := catalog.Date(a.Value(i))
	return &d
}

func (c *columns) float(name string, i int) *float64 {
	a := c.byID[name].(*array.Float64)
	if a.IsNull(i) {
		return nil
	}
	v := a.Value(i)
	return &v
}
