package synth

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/havenhealth/haven/cdm"
)

func TestSpoiltNHSNumbersAreInvalid(t *testing.T) {
	r := newRNG()
	r.seed(1, streamDirty, 0, 0)
	lengths := map[int]int{}
	for i := range 20000 {
		nhs, err := nhsNumber(i%50, i)
		if err != nil {
			t.Fatal(err)
		}
		bad := spoilNHSNumber(r, nhs)
		if cdm.ValidNHSNumber(bad) {
			t.Fatalf("spoilt %s into valid %s", nhs, bad)
		}
		lengths[len(bad)]++
	}
	if lengths[9] == 0 || lengths[10] == 0 || lengths[11] == 0 {
		t.Errorf("spoilt lengths %v, want some of 9, 10 and 11", lengths)
	}
}

func TestFormatting(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{lsoaCode(12345), "E01012345"},
		{lsoaCode(1), "E01000001"},
		{lsoaCode(0), ""},
		{string(appendPadded(nil, 42, 9)), "000000042"},
		{string(appendPadded([]byte("RA1-"), 1234567890, 9)), "RA1-1234567890"},
		{siteFilePath("G80001", cdm.TableOptOut), "sites/G80001/opt_out.parquet"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestSinkCountsDefects(t *testing.T) {
	dir := t.TempDir()
	tf, err := createTableFile(dir, "sites/X/clinical_event.parquet", mustTable(t, cdm.TableClinicalEvent))
	if err != nil {
		t.Fatal(err)
	}
	r := newRNG()
	r.seed(1, streamDirty, 9, 9)
	s := newSink[eventRow](tf, r, 0.1, 0.05)
	const n = rowGroupRows + 500 // more than one row group
	nhs, _ := nhsNumber(0, 0)
	for i := range n {
		e := eventRow{nhs: nhs, gpEvent: gpEvent{date: historyStart + day(i%3000), code: SNOMEDSystolicBP, value: 120, late: i%1000 == 0}}
		if err := s.add(e); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tf.close(); err != nil {
		t.Fatal(err)
	}
	st := s.stats
	if st.Rows != n+st.DuplicateRows {
		t.Errorf("%d rows for %d adds and %d duplicates", st.Rows, n, st.DuplicateRows)
	}
	tbl := readParquet(t, filepath.Join(dir, "sites", "X", "clinical_event.parquet"))
	if tbl.NumRows() != st.Rows {
		t.Errorf("file has %d rows, stats say %d", tbl.NumRows(), st.Rows)
	}
	bad := int64(0)
	for _, x := range strs(t, tbl, cdm.ColNHSNumber) {
		if !cdm.ValidNHSNumber(x) {
			bad++
		}
	}
	if bad != st.InvalidNHSNumbers || bad < n/20 || bad > n/5 {
		t.Errorf("%d invalid numbers in the file, stats say %d, of %d rows", bad, st.InvalidNHSNumbers, st.Rows)
	}
	if st.EventsAfterDeath < n/1000 {
		t.Errorf("%d late rows counted, want at least %d", st.EventsAfterDeath, n/1000)
	}
}

// TestTableFilesAreReproducible writes a file large enough for several
// row groups of nearly unique values twice and expects the same bytes.
func TestTableFilesAreReproducible(t *testing.T) {
	var files [2][]byte
	for k := range files {
		dir := t.TempDir()
		tf, err := createTableFile(dir, "t.parquet", mustTable(t, cdm.TableAPCEpisode))
		if err != nil {
			t.Fatal(err)
		}
		s := newSink[episodeRow](tf, nil, 0, 0)
		for i := range 2*rowGroupRows + 10 {
			nhs, err := nhsNumber(i/maxCohort, i%maxCohort)
			if err != nil {
				t.Fatal(err)
			}
			ep := hospitalEpisode{admission: historyStart + day(i%4000), discharge: noDay, method: cdm.AdmissionEmergency,
				diagnosis: ICD10ChestPain, procedures: []string{OPCSColonoscopy}}
			if err := s.add(episodeRow{nhs: nhs, id: "RA0-" + lsoaCode(i+1), hospitalEpisode: ep}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := tf.close(); err != nil {
			t.Fatal(err)
		}
		if files[k], err = os.ReadFile(filepath.Join(dir, "t.parquet")); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(files[0], files[1]) {
		t.Error("the same rows written twice gave different files")
	}
}
