package releasecheck

import (
	"strings"
	"testing"

	"github.com/havenhealth/haven/coordinator/disclosure"
	"github.com/havenhealth/haven/policy/ptable"
	"github.com/havenhealth/haven/release"
)

// perturbedTable is a released one-dimension table of one count, cells
// a and b and the total, with values as given, released through the
// reference bundle's p-table.
func perturbedTable(pt *ptable.Table, a, b, total float64) *release.Table {
	row := func(kind release.RowKind, key string, v float64) release.Row {
		return release.Row{Kind: kind, Key: []string{key}, MarginDim: -1, Values: []release.Value{{Released: true, Value: v}}}
	}
	return &release.Table{
		Meta: release.Meta{MinCellCount: 8, RoundingBase: 5,
			PerturbationTable: "disclosure/ptable-8-5.csv", PerturbationKeyRange: int64(pt.KeyRange())},
		Dims:     []string{"group"},
		Measures: []release.Measure{{Name: "patients", Kind: disclosure.KindCount}},
		Rows:     []release.Row{row(release.RowCell, "a", a), row(release.RowCell, "b", b), row(release.RowTotal, "", total)},
	}
}

// otherOutcome is a value count c can be released as, within its bounds,
// that key k does not give.
func otherOutcome(t *testing.T, pt *ptable.Table, c int64, k uint64) float64 {
	t.Helper()
	for _, o := range pt.Outcomes(c) {
		if o.Value != pt.Release(c, k) {
			return float64(o.Value)
		}
	}
	t.Fatalf("count %d has one outcome in the reference p-table", c)
	return 0
}

// TestCheckExact shows that with cell keys in the true table a perturbed
// count must be exactly the p-table's value for its count and key (a
// value inside the bounds but for another key is a problem), that a
// margin's key is the sum of its cells' keys, and that without keys only
// the bounds are checked.
func TestCheckExact(t *testing.T) {
	pt := MustPTable(t, "../../policy/bundle")
	if pt == nil {
		t.Fatal("the reference bundle has no p-table")
	}
	const ca, cb = 7, 23
	// Record keys of the patients of a and b; the keys of a add past R.
	keysA := []uint64{200, 100, 9, 0, 255, 17, 31}
	var ka, kb uint64
	for _, k := range keysA {
		ka += k
	}
	for i := range cb {
		kb += uint64(i * 11 % pt.KeyRange())
	}
	truth := func(keyed ...string) TrueTable {
		tt := TrueTable{}
		for _, c := range []struct {
			key   string
			count int
			k     uint64
		}{{"a", ca, ka}, {"b", cb, kb}} {
			cell := tt.Cell(c.key)
			cell.Add("patients", float64(c.count), false)
			for _, want := range keyed {
				if want == c.key {
					cell.AddKey("patients", c.k)
				}
			}
		}
		return tt
	}
	rel := func(c int64, k uint64) float64 { return float64(pt.Release(c, k)) }
	right := perturbedTable(pt, rel(ca, ka), rel(cb, kb), rel(ca+cb, ka+kb))
	wrongA := perturbedTable(pt, otherOutcome(t, pt, ca, ka), rel(cb, kb), rel(ca+cb, ka+kb))
	wrongTotal := perturbedTable(pt, rel(ca, ka), rel(cb, kb), otherOutcome(t, pt, ca+cb, ka+kb))
	for _, tc := range []struct {
		name      string
		tab       *release.Table
		truth     TrueTable
		exact     int
		wantProbs []string
	}{
		{"keyed, right", right, truth("a", "b"), 3, nil},
		{"keyed, a released for another key", wrongA, truth("a", "b"), 2, []string{"cell a patients: released", "but the p-table releases"}},
		{"keyed, total for another key", wrongTotal, truth("a", "b"), 2, []string{"total total patients: released"}},
		{"unkeyed, a released for another key", wrongA, truth(), 0, nil},
		{"keys in some cells only", right, truth("a"), 0, []string{"cell keys in some cells but not all"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, probs := Check(tc.tab, tc.truth, nil, pt)
			if st.Exact != tc.exact {
				t.Errorf("%d counts checked exactly, want %d", st.Exact, tc.exact)
			}
			if tc.wantProbs == nil {
				if len(probs) != 0 {
					t.Errorf("problems %q, want none", probs)
				}
				return
			}
			if len(probs) != 1 {
				t.Fatalf("problems %q, want one containing %q", probs, tc.wantProbs)
			}
			for _, want := range tc.wantProbs {
				if !strings.Contains(probs[0], want) {
					t.Errorf("problem %q does not contain %q", probs[0], want)
				}
			}
		})
	}
}

// TestDiff shows that Diff finds a changed value, a changed reason and a
// changed row, and nothing between a table and its copy.
func TestDiff(t *testing.T) {
	pt := MustPTable(t, "../../policy/bundle")
	base := func() *release.Table { return perturbedTable(pt, 10, 25, 35) }
	same := base()
	same.Meta.RunID = "another run"
	value := base()
	value.Rows[1].Values[0].Value = 20
	reason := base()
	reason.Rows[0].Values[0] = release.Value{Reason: disclosure.CodeAttributeDisclosure}
	row := base()
	row.Rows[1].Key = []string{"c"}
	for _, tc := range []struct {
		name string
		b    *release.Table
		want string
	}{
		{"copy", same, ""},
		{"value", value, "cell [b] patients: released 25, then released 20"},
		{"reason", reason, "cell [a] patients: released 10, then missing as attribute_disclosure"},
		{"row", row, "row 1 is cell [b], then cell [c]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Diff(base(), tc.b)
			switch {
			case tc.want == "" && len(got) != 0:
				t.Errorf("Diff = %q, want none", got)
			case tc.want != "" && (len(got) != 1 || got[0] != tc.want):
				t.Errorf("Diff = %q, want [%q]", got, tc.want)
			}
		})
	}
}
