package release

import (
	"bytes"
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/ipc"

	"github.com/havenhealth/haven/coordinator/disclosure"
)

func released(t *testing.T) *disclosure.Released {
	t.Helper()
	tab := disclosure.Table{Dims: []string{"age_band", "sex"}, Measures: []disclosure.Measure{
		{Name: "patients", Kind: disclosure.KindCount},
		{Name: "mean_sbp", Kind: disclosure.KindMean},
	}}
	for _, c := range []struct {
		band, sex string
		n         int64
	}{{"18-39", "F", 120}, {"18-39", "M", 3}, {"40-59", "F", 60}, {"40-59", "M", 44}} {
		tab.Cells = append(tab.Cells, disclosure.Cell{Key: []string{c.band, c.sex}, Values: []disclosure.Input{
			{Count: c.n}, {Sum: float64(c.n) * 131.5, N: c.n}}})
	}
	rel, err := disclosure.Apply(context.Background(), tab, disclosure.DefaultThresholds())
	if err != nil {
		t.Fatal(err)
	}
	return rel
}

func TestRoundTrip(t *testing.T) {
	rel := released(t)
	meta := Meta{RunID: "run-1", DefinitionID: "bp", DefinitionVersion: 2, DefinitionHash: strings.Repeat("a", 64),
		Purpose: "commissioning", ReleasedAt: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC), MinCellCount: 8, RoundingBase: 5,
		SitesExpected: 4, SitesAnswered: 3, PopulationExpected: 1000, PopulationAnswered: 950,
		TrustsExpected: 2, TrustsAnswered: 1, ActivityExpected: 4000, ActivityAnswered: 2500,
		Parameters:  map[string]string{"index_date": "2024-04-01", "lookback_days": "365"},
		SubmittedAt: time.Date(2026, 3, 1, 8, 59, 1, 5, time.UTC), DominanceN: 1, DominanceK: 0.8,
		NodeVersions:      map[string]string{"A81001": "v1.2.0", "RA1": "v1.1.9"},
		PerturbationTable: "disclosure/ptable-8-5.csv", PerturbationKeyRange: 256}
	b, err := Encode(rel, meta)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ReadIPC(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Meta, meta) {
		t.Errorf("meta %+v, want %+v", got.Meta, meta)
	}
	wantRows := len(rel.Cells) + len(rel.Margins) + 1
	if len(got.Rows) != wantRows {
		t.Fatalf("%d rows, want %d", len(got.Rows), wantRows)
	}
	var kinds []RowKind
	for _, r := range got.Rows {
		kinds = append(kinds, r.Kind)
	}
	if kinds[0] != RowCell || kinds[len(rel.Cells)] != RowMargin || kinds[wantRows-1] != RowTotal {
		t.Errorf("row kinds %v", kinds)
	}
	// The 3 in (18-39, M) is withheld with its reason; the mean margins do
	// not exist.
	low := got.Rows[1]
	if low.Key[0] != "18-39" || low.Key[1] != "M" || low.Values[0].Released || low.Values[0].Reason != disclosure.CodeLowCount || !low.Values[0].Withheld() {
		t.Errorf("low cell %+v", low)
	}
	m := got.Rows[len(rel.Cells)]
	if m.MarginDim != 0 || m.Key[0] != rel.Margins[0].Category || m.Key[1] != "" || m.Values[1].Reason != disclosure.CodeNotAdditive || m.Values[1].Withheld() {
		t.Errorf("margin %+v", m)
	}
	for i, c := range rel.Cells {
		for j, v := range c.Values {
			g := got.Rows[i].Values[j]
			if (v.Status == disclosure.StatusReleased) != g.Released || (g.Released && g.Value != v.Value) {
				t.Errorf("cell %v measure %d: %+v, want %+v", c.Key, j, g, v)
			}
		}
	}
}

// Counts travel as whole numbers (int64), the other measures as float64;
// a count that is not whole is refused rather than truncated.
func TestCountsAreIntegers(t *testing.T) {
	rel := released(t)
	b, err := Encode(rel, Meta{RunID: "run-1"})
	if err != nil {
		t.Fatal(err)
	}
	rdr, err := ipc.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer rdr.Release()
	s := rdr.Schema()
	for name, want := range map[string]arrow.DataType{"patients": arrow.PrimitiveTypes.Int64, "mean_sbp": arrow.PrimitiveTypes.Float64} {
		i := s.FieldIndices(name)
		if len(i) != 1 || !arrow.TypeEqual(s.Field(i[0]).Type, want) {
			t.Errorf("column %s: %v, want %s", name, s.Fields(), want)
		}
	}
	rel.Total[0] = disclosure.Value{Status: disclosure.StatusReleased, Value: 120.5}
	if _, err := Encode(rel, Meta{RunID: "run-1"}); err == nil || !strings.Contains(err.Error(), "not a whole number") {
		t.Errorf("a count of 120.5 encoded: %v", err)
	}
}

func TestNameClashes(t *testing.T) {
	for _, tc := range []struct {
		dims []string
		ms   []Measure
		want string
	}{
		{[]string{"row_kind"}, []Measure{{Name: "n", Kind: disclosure.KindCount}}, `"row_kind" is used twice`},
		{[]string{"sex"}, []Measure{{Name: "sex", Kind: disclosure.KindCount}}, `"sex" is used twice`},
		{nil, []Measure{{Name: "a__withheld", Kind: disclosure.KindCount}, {Name: "a", Kind: disclosure.KindCount}}, `"a__withheld" is used twice`},
	} {
		if _, err := Schema(tc.dims, tc.ms, Meta{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: %v, want %q", tc.dims, tc.ms, err, tc.want)
		}
	}
}

func TestReadRejectsGarbage(t *testing.T) {
	if _, err := ReadIPC(strings.NewReader("not arrow")); err == nil {
		t.Error("no error reading garbage")
	}
}
