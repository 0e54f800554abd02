package release

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/ipc"
)

// fixture is a small released table: a count and a mean by age band and
// sex, one count withheld, the mean's margins and total not given.
func fixture() *Table {
	val := func(v float64) Value { return Value{Released: true, Value: v} }
	why := func(c Code) Value { return Value{Reason: c} }
	cell := func(band, sex string, vs ...Value) Row {
		return Row{Kind: RowCell, Key: []string{band, sex}, MarginDim: -1, Values: vs}
	}
	margin := func(d int, cat string, n float64) Row {
		key := []string{"", ""}
		key[d] = cat
		return Row{Kind: RowMargin, Key: key, MarginDim: d, Values: []Value{val(n), why(CodeNotAdditive)}}
	}
	return &Table{
		Dims:     []string{"age_band", "sex"},
		Measures: []Measure{{Name: "patients", Kind: KindCount}, {Name: "mean_sbp", Kind: "mean"}},
		Rows: []Row{
			cell("18-39", "F", val(120), val(131.5)),
			cell("18-39", "M", why("low_count"), why("low_count")),
			cell("40-59", "F", val(60), val(131.5)),
			cell("40-59", "M", val(45), val(131.5)),
			margin(0, "18-39", 125), margin(0, "40-59", 105),
			margin(1, "F", 180), margin(1, "M", 50),
			{Kind: RowTotal, Key: []string{"", ""}, MarginDim: -1, Values: []Value{val(230), why(CodeNotAdditive)}},
		},
	}
}

func TestRoundTrip(t *testing.T) {
	tab := fixture()
	tab.Meta = Meta{RunID: "run-1", DefinitionID: "bp", DefinitionVersion: 2, DefinitionHash: strings.Repeat("a", 64),
		Purpose: "commissioning", ReleasedAt: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC), MinCellCount: 8, RoundingBase: 5,
		SitesExpected: 4, SitesAnswered: 3, PopulationExpected: 1000, PopulationAnswered: 950,
		TrustsExpected: 2, TrustsAnswered: 1, ActivityExpected: 4000, ActivityAnswered: 2500,
		Parameters:  map[string]string{"index_date": "2024-04-01", "lookback_days": "365"},
		SubmittedAt: time.Date(2026, 3, 1, 8, 59, 1, 5, time.UTC), DominanceN: 1, DominanceK: 0.8,
		NodeVersions:      map[string]string{"A81001": "v1.2.0", "RA1": "v1.1.9"},
		PerturbationTable: "disclosure/ptable-8-5.csv", PerturbationKeyRange: 256}
	b, err := Encode(tab)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ReadIPC(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, tab) {
		t.Errorf("read back\n%+v\nwant\n%+v", got, tab)
	}
	low := got.Rows[1].Values[0]
	if !low.Withheld() || got.Rows[4].Values[1].Withheld() {
		t.Errorf("Withheld: low count %v, a mean's margin %v", low.Withheld(), got.Rows[4].Values[1].Withheld())
	}
}

// Bad rows are refused, naming the row.
func TestEncodeRefusesBadRows(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Table)
		want string
	}{
		{"short key", func(t *Table) { t.Rows[0].Key = []string{"18-39"} }, "row 0: 1 key values for 2 dimensions"},
		{"missing value", func(t *Table) { t.Rows[2].Values = t.Rows[2].Values[:1] }, "row 2: 1 values for 2 measures"},
		{"no reason", func(t *Table) { t.Rows[1].Values[0] = Value{} }, "row 1: measure patients: a value that was not released has no reason"},
		{"margin dimension", func(t *Table) { t.Rows[4].MarginDim = 2 }, "row 4: a margin over dimension 2 of 2"},
		{"row kind", func(t *Table) { t.Rows[3].Kind = "subtotal" }, `row 3: row kind "subtotal"`},
	} {
		tab := fixture()
		tc.edit(tab)
		if _, err := Encode(tab); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

// Counts travel as whole numbers (int64), the other measures as float64;
// a count that is not whole is refused rather than truncated.
func TestCountsAreIntegers(t *testing.T) {
	tab := fixture()
	tab.Meta = Meta{RunID: "run-1"}
	b, err := Encode(tab)
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
	tab.Rows[len(tab.Rows)-1].Values[0].Value = 120.5
	if _, err := Encode(tab); err == nil || !strings.Contains(err.Error(), "not a whole number") {
		t.Errorf("a count of 120.5 encoded: %v", err)
	}
}

func TestNameClashes(t *testing.T) {
	for _, tc := range []struct {
		dims []string
		ms   []Measure
		want string
	}{
		{[]string{"row_kind"}, []Measure{{Name: "n", Kind: KindCount}}, `"row_kind" is used twice`},
		{[]string{"sex"}, []Measure{{Name: "sex", Kind: KindCount}}, `"sex" is used twice`},
		{nil, []Measure{{Name: "a__withheld", Kind: KindCount}, {Name: "a", Kind: KindCount}}, `"a__withheld" is used twice`},
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
