package disclosure

import (
	"bytes"
	"context"
	"testing"

	"github.com/havenhealth/haven/release"
)

// A released table read back from its encoding holds every value as
// released, each missing one with its reason, in release's row order.
func TestEncodeReadBack(t *testing.T) {
	tab := Table{Dims: []string{"age_band", "sex"}, Measures: []Measure{
		{Name: "patients", Kind: KindCount},
		{Name: "mean_sbp", Kind: KindMean},
	}}
	for _, c := range []struct {
		band, sex string
		n         int64
	}{{"18-39", "F", 120}, {"18-39", "M", 3}, {"40-59", "F", 60}, {"40-59", "M", 44}} {
		tab.Cells = append(tab.Cells, Cell{Key: []string{c.band, c.sex}, Values: []Input{
			{Count: c.n}, {Sum: float64(c.n) * 131.5, N: c.n}}})
	}
	rel, err := Apply(context.Background(), tab, DefaultThresholds())
	if err != nil {
		t.Fatal(err)
	}
	b, err := rel.Encode(release.Meta{RunID: "run-1"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := release.ReadIPC(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	wantRows := len(rel.Cells) + len(rel.Margins) + 1
	if len(got.Rows) != wantRows || got.Meta.RunID != "run-1" {
		t.Fatalf("%d rows, run %q; want %d rows of run-1", len(got.Rows), got.Meta.RunID, wantRows)
	}
	if got.Rows[0].Kind != release.RowCell || got.Rows[len(rel.Cells)].Kind != release.RowMargin || got.Rows[wantRows-1].Kind != release.RowTotal {
		t.Errorf("row kinds %v %v %v", got.Rows[0].Kind, got.Rows[len(rel.Cells)].Kind, got.Rows[wantRows-1].Kind)
	}
	// The 3 in (18-39, M) is withheld with its reason; the mean's margins
	// do not exist.
	low := got.Rows[1]
	if low.Key[0] != "18-39" || low.Key[1] != "M" || low.Values[0].Released || low.Values[0].Reason != CodeLowCount || !low.Values[0].Withheld() {
		t.Errorf("low cell %+v", low)
	}
	m := got.Rows[len(rel.Cells)]
	if m.MarginDim != 0 || m.Key[0] != rel.Margins[0].Category || m.Key[1] != "" || m.Values[1].Reason != CodeNotAdditive || m.Values[1].Withheld() {
		t.Errorf("margin %+v", m)
	}
	for i, c := range rel.Cells {
		for j, v := range c.Values {
			g := got.Rows[i].Values[j]
			if (v.Status == StatusReleased) != g.Released || (g.Released && g.Value != v.Value) || (!g.Released && g.Reason != v.Reason.Code) {
				t.Errorf("cell %v measure %d: %+v, want %+v", c.Key, j, g, v)
			}
		}
	}
	if _, err := (*Released)(nil).Encode(release.Meta{}); err == nil {
		t.Error("a nil table encoded")
	}
}

// Every code disclosure control gives has words of its own for readers of
// the table (release.Code.Text).
func TestEveryCodeHasText(t *testing.T) {
	fallback := release.Code("unknown").Text()
	for _, c := range []Code{CodeLowCount, CodeFewContributors, CodeDominance, CodeSecondary, CodeMinMaxDisclosive,
		CodeAttributeDisclosure, CodeNoPatients, CodeNotAdditive} {
		if c.Text() == fallback {
			t.Errorf("code %s has no text of its own", c)
		}
	}
}
