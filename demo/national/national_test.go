package national

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

func TestParseScales(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int64
		bad  bool
	}{
		{in: "1.5M,6M,15M,60M", want: []int64{1_500_000, 6_000_000, 15_000_000, 60_000_000}},
		{in: "250k, 1000", want: []int64{250_000, 1000}},
		{in: "", bad: true},
		{in: "1.5G", bad: true},
		{in: "-3M", bad: true},
		{in: "2000M", bad: true},
	} {
		got, err := ParseScales(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("ParseScales(%q) = %v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || len(got) != len(tc.want) {
			t.Errorf("ParseScales(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("ParseScales(%q)[%d] = %d, want %d", tc.in, i, got[i], tc.want[i])
			}
			if back, _ := ParseScales(ScaleName(got[i])); len(back) != 1 || back[0] != got[i] {
				t.Errorf("ScaleName(%d) = %q does not read back", got[i], ScaleName(got[i]))
			}
		}
	}
}

// TestPopulationAddsUp checks the generated population against itself:
// the sites' answers hold every patient once, the trusts' rows are the
// patients admitted, and the central answers count the same people.
func TestPopulationAddsUp(t *testing.T) {
	const practices, trusts, size = 60, 7, 30_000
	pop := newPopulation(3, practices, trusts, size)
	if got := pop.first[practices]; got != size {
		t.Fatalf("lists add up to %d, want %d", got, size)
	}
	practiceSchema := arrow.NewSchema([]arrow.Field{
		{Name: "pseudonym", Type: &arrow.FixedSizeBinaryType{ByteWidth: catalog.PseudonymBytes}},
		{Name: "age_band", Type: arrow.BinaryTypes.String}, {Name: "sex", Type: arrow.BinaryTypes.String}}, nil)
	trustSchema := arrow.NewSchema([]arrow.Field{
		{Name: "pseudonym", Type: &arrow.FixedSizeBinaryType{ByteWidth: catalog.PseudonymBytes}},
		{Name: "emergency_admissions", Type: arrow.PrimitiveTypes.Int64}}, nil)
	bands := make([]string, 120)
	for a := range bands {
		bands[a] = []string{"18-39", "40-64", "65+"}[min(a/40, 2)]
	}
	seen := map[string]bool{}
	for p := range practices {
		for _, r := range pop.practiceRows(p, practiceSchema, bands, "run-1") {
			col := r.Column(0).(*array.FixedSizeBinary)
			for i := range col.Len() {
				k := string(col.Value(i))
				if seen[k] {
					t.Fatalf("practice %d repeats a pseudonym", p)
				}
				seen[k] = true
			}
			r.Release()
		}
	}
	if len(seen) != size {
		t.Fatalf("practices sent %d patients, want %d", len(seen), size)
	}
	var admitted, admissions int64
	for tr := range trusts {
		n := pop.trustRowCount(tr)
		var rows int64
		for _, r := range pop.trustRows(tr, trustSchema, "run-1") {
			col := r.Column(0).(*array.FixedSizeBinary)
			for i := range col.Len() {
				if !seen[string(col.Value(i))] {
					t.Fatalf("trust %d sent a pseudonym no practice did", tr)
				}
				admissions += r.Column(1).(*array.Int64).Value(i)
			}
			rows += r.NumRows()
			r.Release()
		}
		if rows != n {
			t.Errorf("trust %d sent %d rows, counted %d", tr, rows, n)
		}
		admitted += n
	}
	if admitted < size*3/10 || admitted > size*5/10 {
		t.Errorf("%d of %d admitted, want about four in ten", admitted, size)
	}
	truth := pop.t2dmTruth(bands, nil, nil)
	if got := truth.Total("patients"); got != size {
		t.Errorf("central answer counts %v patients, want %d", got, size)
	}
	if got := truth.Total("admitted"); got != float64(admitted) {
		t.Errorf("central answer counts %v admitted, the trusts sent %d", got, admitted)
	}
	if got := truth.Total("admissions"); got != float64(admissions) {
		t.Errorf("central answer counts %v admissions, the trusts sent %d", got, admissions)
	}
	if got := pop.statinsTruth(bands, nil).Total("patients"); got != size {
		t.Errorf("statins central answer counts %v patients, want %d", got, size)
	}
	// Another run gives everyone other pseudonyms; the same run the same.
	r1 := pop.practiceRows(0, practiceSchema, bands, "run-1")[0]
	r2 := pop.practiceRows(0, practiceSchema, bands, "run-2")[0]
	r1b := pop.practiceRows(0, practiceSchema, bands, "run-1")[0]
	if bytes.Equal(r1.Column(0).(*array.FixedSizeBinary).Value(0), r2.Column(0).(*array.FixedSizeBinary).Value(0)) {
		t.Error("two runs gave a patient the same pseudonym")
	}
	if !bytes.Equal(r1.Column(0).(*array.FixedSizeBinary).Value(0), r1b.Column(0).(*array.FixedSizeBinary).Value(0)) {
		t.Error("one run gave a patient two pseudonyms")
	}
}

// TestSimulation runs a small national simulation end to end against a
// real coordinator process: two scales, then the fault run, every table
// checked by its totals.
func TestSimulation(t *testing.T) {
	if testing.Short() {
		t.Skip("builds haven and runs a coordinator")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin, "./cmd/haven")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build haven: %v\n%s", err, out)
	}
	var progress bytes.Buffer
	opts := Options{Haven: filepath.Join(bin, "haven"), BundleSource: filepath.Join(root, "policy", "bundle"), Dir: t.TempDir(),
		Practices: 40, Trusts: 20, Scales: []int64{4000, 12_000}, Seed: 2, Dials: 16,
		Faults: true, FaultDeadline: 20 * time.Second, Progress: &progress}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	rep, err := Run(ctx, opts)
	if err != nil {
		t.Fatalf("%v\nprogress:\n%s", err, progress.String())
	}
	if len(rep.Scales) != 2 {
		t.Fatalf("%d scales measured, want 2", len(rep.Scales))
	}
	for _, s := range rep.Scales {
		pop := newPopulation(2, 40, 20, s.Patients)
		var trustRows int64
		for tr := range 20 {
			trustRows += pop.trustRowCount(tr)
		}
		if s.RowsLinked != s.Patients+trustRows {
			t.Errorf("%s: %d rows linked, want %d patients and %d trust rows", ScaleName(s.Patients), s.RowsLinked, s.Patients, trustRows)
		}
	}
	f := rep.Faults
	if f == nil || len(f.Runs) != 2 {
		t.Fatalf("fault run: %+v", f)
	}
	if f.SilentGPs != 2 || f.SilentTrusts != 1 {
		t.Errorf("%d practices and %d trusts silent, want 2 and 1", f.SilentGPs, f.SilentTrusts)
	}
	if got := f.Runs[0].Run.GetState(); got != havenv1.RunState_RUN_STATE_RELEASED {
		t.Errorf("the aggregate fault run ended %s, want released over the practices that answered", got)
	}
	if got := f.Runs[1].Run.GetState(); got != havenv1.RunState_RUN_STATE_REFUSED {
		t.Errorf("the linkage fault run ended %s, want refused for the trust missing", got)
	}
	var out bytes.Buffer
	rep.Print(&out)
	for _, want := range []string{"rows linked", "12k", "Faults at 4k patients", "refused by policy: trust_missing"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the report lacks %q:\n%s", want, out.String())
		}
	}
}
