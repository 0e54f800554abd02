package disclosure

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// want describes an expected value: released with a value, or not
// released with a code.
type want struct {
	status Status
	value  float64
	code   Code
}

func rel(v float64) want      { return want{StatusReleased, v, ""} }
func wh(c Code) want          { return want{StatusWithheld, 0, c} }
func na(c Code) want          { return want{StatusNotApplicable, 0, c} }
func (w want) String() string { return fmt.Sprintf("%s %v %s", w.status, w.value, w.code) }

func (w want) check(got Value) error {
	if got.Status != w.status || got.Value != w.value || got.Reason.Code != w.code {
		return fmt.Errorf("got %s %v %s, want %s", got.Status, got.Value, got.Reason.Code, w)
	}
	if got.Status != StatusReleased && got.Reason.Message == "" {
		return fmt.Errorf("%s without a message", got.Status)
	}
	return nil
}

func mustApply(t *testing.T, table Table, th Thresholds) *Released {
	t.Helper()
	r, err := Apply(context.Background(), table, th)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return r
}

// TestPrimaryRules checks each primary rule on a table without dimensions:
// one cell, no margins, so nothing else is withheld.
func TestPrimaryRules(t *testing.T) {
	def := DefaultThresholds()
	minMax := def
	minMax.ReleaseMinMax = true
	twoDominate := def
	twoDominate.Dominance = Dominance{N: 2, K: 0.8}
	count := Measure{Name: "patients", Kind: KindCount}
	sum := Measure{Name: "bed_days", Kind: KindSum}
	domSum := Measure{Name: "bed_days", Kind: KindSum, Dominance: true}
	mean := Measure{Name: "systolic", Kind: KindMean, Values: ValueContinuous}
	domMean := Measure{Name: "bed_days", Kind: KindMean, Values: ValueContinuous, Dominance: true}
	binMean := Measure{Name: "prevalence", Kind: KindMean, Values: ValueBinary}
	intMean := Measure{Name: "admissions", Kind: KindMean, Values: ValueInteger}
	anyMean := Measure{Name: "age", Kind: KindMean}
	high := Thresholds{MinCount: 12, RoundingBase: 5, Dominance: def.Dominance}
	minM := Measure{Name: "youngest", Kind: KindMin}
	maxM := Measure{Name: "oldest", Kind: KindMax}
	tests := []struct {
		name string
		m    Measure
		in   Input
		th   Thresholds
		want want
	}{
		{"zero count is released", count, Input{Count: 0}, def, rel(0)},
		{"count of one", count, Input{Count: 1}, def, wh(CodeLowCount)},
		{"count of seven", count, Input{Count: 7}, def, wh(CodeLowCount)},
		{"count of eight rounds up", count, Input{Count: 8}, def, rel(10)},
		{"count of 12 rounds down", count, Input{Count: 12}, def, rel(10)},
		{"count of 13 rounds up", count, Input{Count: 13}, def, rel(15)},
		{"count under a higher minimum", count, Input{Count: 9}, Thresholds{MinCount: 10, RoundingBase: 5, Dominance: def.Dominance}, wh(CodeLowCount)},
		{"count at a minimum that rounds below itself", count, Input{Count: 12}, Thresholds{MinCount: 12, RoundingBase: 5, Dominance: def.Dominance}, rel(15)},

		{"sum of nobody", sum, Input{}, def, rel(0)},
		{"sum of seven patients", sum, Input{N: 7, Sum: 300}, def, wh(CodeFewContributors)},
		{"sum rounds", sum, Input{N: 8, Sum: 47}, def, rel(45)},
		{"sum rounds half up", sum, Input{N: 8, Sum: 47.5}, def, rel(50)},
		{"sum may be negative", sum, Input{N: 30, Sum: -123}, def, rel(-125)},
		{"dominated sum", domSum, Input{N: 10, Sum: 100, TopContributions: []float64{81}}, def, wh(CodeDominance)},
		{"sum at the dominance limit", domSum, Input{N: 10, Sum: 100, TopContributions: []float64{80}}, def, rel(100)},
		{"sum dominated by two", domSum, Input{N: 10, Sum: 100, TopContributions: []float64{50, 31}}, twoDominate, wh(CodeDominance)},
		{"sum not dominated by two", domSum, Input{N: 10, Sum: 100, TopContributions: []float64{50, 30}}, twoDominate, rel(100)},
		{"dominance ignored without the flag", sum, Input{N: 10, Sum: 100, TopContributions: []float64{99}}, def, rel(100)},
		{"few contributors before dominance", domSum, Input{N: 2, Sum: 100, TopContributions: []float64{99}}, def, wh(CodeFewContributors)},
		{"all-zero sum is not dominated", domSum, Input{N: 10, Sum: 0, TopContributions: []float64{0}}, def, rel(0)},

		{"mean of nobody", mean, Input{}, def, na(CodeNoPatients)},
		{"mean of five", mean, Input{N: 5, Sum: 250}, def, wh(CodeFewContributors)},
		{"mean to four figures", mean, Input{N: 9, Sum: 100}, def, rel(11.11)},
		{"mean of a large group", mean, Input{N: 3000, Sum: 123456}, def, rel(41.15)},
		{"dominated mean", domMean, Input{N: 10, Sum: 100, TopContributions: []float64{90}}, def, wh(CodeDominance)},
		{"continuous mean with a small sum", mean, Input{N: 298, Sum: 2}, def, rel(0.006711)},

		// The demo's practice G80001, 20-29, F: 0.006711 × 298 gave back
		// a withheld count of 2.
		{"binary mean of two in 298", binMean, Input{N: 298, Sum: 2}, def, wh(CodeFewContributors)},
		{"binary mean of seven", binMean, Input{N: 300, Sum: 7}, def, wh(CodeFewContributors)},
		{"binary mean of nobody with the flag", binMean, Input{N: 298, Sum: 0}, def, rel(0)},
		{"binary mean of five in five", binMean, Input{N: 5, Sum: 5}, def, wh(CodeFewContributors)},
		// 12/295 = 0.04068 to 4 figures pins N = 295; R(12)/R(295) does not.
		{"binary mean from rounded figures", binMean, Input{N: 295, Sum: 12}, def, rel(10.0 / 295)},
		{"binary mean at the minimum", binMean, Input{N: 9, Sum: 8}, def, rel(1)},
		{"binary mean of all", binMean, Input{N: 298, Sum: 298}, def, rel(1)},
		{"binary mean never rounds below the minimum", binMean, Input{N: 41, Sum: 12}, high, rel(15.0 / 40)},
		{"integer mean with a small sum", intMean, Input{N: 100, Sum: 5}, def, wh(CodeFewContributors)},
		{"integer mean from rounded figures", intMean, Input{N: 47, Sum: 123}, def, rel(125.0 / 45)},
		{"unspecified mean is treated as integer", anyMean, Input{N: 9, Sum: 100}, def, rel(100.0 / 10)},
		{"unspecified mean with a small sum", anyMean, Input{N: 30, Sum: 7.5}, def, wh(CodeFewContributors)},
		{"unspecified mean with a fractional sum", anyMean, Input{N: 30, Sum: 47.5}, def, rel(50.0 / 30)},
		{"unspecified mean with a negative sum", anyMean, Input{N: 30, Sum: -123}, def, rel(-125.0 / 30)},

		{"max withheld by default", maxM, Input{N: 20, Max: 97}, def, wh(CodeMinMaxDisclosive)},
		{"min withheld by default", minM, Input{N: 20, Min: 18}, def, wh(CodeMinMaxDisclosive)},
		{"max released when allowed", maxM, Input{N: 20, Max: 97.25}, minMax, rel(97.25)},
		{"min released when allowed", minM, Input{N: 20, Min: 18}, minMax, rel(18)},
		{"max of few patients", maxM, Input{N: 3, Max: 97}, minMax, wh(CodeFewContributors)},
		{"min of nobody", minM, Input{}, minMax, na(CodeNoPatients)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustApply(t, Table{Measures: []Measure{tt.m}, Cells: []Cell{{Values: []Input{tt.in}}}}, tt.th)
			if len(r.Cells) != 1 || r.Margins != nil || r.Total != nil {
				t.Fatalf("got %d cells, margins %v, total %v; want one cell and nothing else", len(r.Cells), r.Margins, r.Total)
			}
			if err := tt.want.check(r.Cells[0].Values[0]); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// cells builds a two-dimensional table of one count measure from rows of
// counts; row i, column j has key (r<i>, c<j>).
func grid2(counts [][]int64) Table {
	t := Table{Dims: []string{"row", "col"}, Measures: []Measure{{Name: "patients", Kind: KindCount}}}
	for i, row := range counts {
		for j, c := range row {
			t.Cells = append(t.Cells, Cell{Key: []string{fmt.Sprintf("r%d", i+1), fmt.Sprintf("c%d", j+1)}, Values: []Input{{Count: c}}})
		}
	}
	return t
}

// pattern renders measure j of a released two-dimensional table as rows of
// ".", "P" (withheld by a primary rule) and "S" (secondary), then the row
// margins, the column margins and the total.
func pattern(r *Released, j int) string {
	mark := func(v Value) string {
		switch {
		case v.Status == StatusReleased:
			return "."
		case v.Reason.Code == CodeSecondary:
			return "S"
		}
		return "P"
	}
	var b strings.Builder
	row := ""
	for _, c := range r.Cells {
		if c.Key[0] != row && row != "" {
			b.WriteByte(' ')
		}
		row = c.Key[0]
		b.WriteString(mark(c.Values[j]))
	}
	b.WriteString(" |")
	dim := ""
	for _, m := range r.Margins {
		if m.Dim != dim {
			b.WriteByte(' ')
			dim = m.Dim
		}
		b.WriteString(mark(m.Values[j]))
	}
	b.WriteString(" | " + mark(r.Total[j]))
	return b.String()
}

func TestSecondary(t *testing.T) {
	tests := []struct {
		name   string
		counts [][]int64
		want   string
	}{
		{
			"nothing small",
			[][]int64{{10, 20}, {30, 40}},
			".. .. | .. .. | .",
		},
		{
			// The 3 needs a partner in its row and its column, and those
			// need one more to close the rectangle.
			"one small cell",
			[][]int64{{3, 20}, {30, 40}},
			"PS SS | .. .. | .",
		},
		{
			"smallest complements, zeros last",
			[][]int64{{3, 0, 50, 11}, {0, 40, 60, 9}, {30, 60, 70, 80}},
			"P..S .S.S SS.. | ... .... | .",
		},
		{
			// Every row and column has two withheld cells or none, yet the
			// r2,c3 cell joins two closed rectangles and is their
			// difference: (r1 + r2) − (c1 + c2). Only the exact audit
			// finds it; one more cell in r2 (r2,c4) puts it on a cycle.
			"bridge between two rectangles",
			[][]int64{
				{3, 3, 50, 50},
				{3, 3, 3, 50},
				{50, 50, 3, 3},
				{50, 50, 3, 3},
			},
			"PP.. PPPS ..PP ..PP | .... .... | .",
		},
		{
			// The r1 margin is small, and the row margins add up to the
			// total, so another row margin goes too.
			"small margin",
			[][]int64{{2, 3}, {20, 30}, {40, 50}},
			"PP SS .. | PS. .. | .",
		},
		{
			"everything small",
			[][]int64{{1, 2}, {3, 1}},
			"PP PP | PP PP | P",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustApply(t, grid2(tt.counts), DefaultThresholds())
			if got := pattern(r, 0); got != tt.want {
				t.Errorf("withheld\n got %s\nwant %s", got, tt.want)
			}
			if det := derivable(r, 0); len(det) > 0 {
				t.Errorf("derivable: %v", det)
			}
		})
	}
}

// TestMarginsAndTotal checks that margins and the total are rounded from
// the true values, not added up from rounded cells, and that only additive
// measures get them.
func TestMarginsAndTotal(t *testing.T) {
	table := Table{
		Dims: []string{"age", "sex"},
		Measures: []Measure{
			{Name: "patients", Kind: KindCount},
			{Name: "bed_days", Kind: KindSum},
			{Name: "mean_age", Kind: KindMean},
		},
	}
	for _, c := range []struct {
		age, sex string
		n        int64
	}{{"40-49", "F", 12}, {"40-49", "M", 12}, {"50-59", "F", 12}, {"50-59", "M", 13}} {
		table.Cells = append(table.Cells, Cell{Key: []string{c.age, c.sex}, Values: []Input{
			{Count: c.n}, {N: c.n, Sum: float64(2 * c.n)}, {N: c.n, Sum: float64(45 * c.n)},
		}})
	}
	r := mustApply(t, table, DefaultThresholds())
	wantMargins := []struct {
		dim, cat string
		count    float64
		sum      float64
	}{
		{"age", "40-49", 25, 50}, // 24 → 25, though the cells show 10 + 10
		{"age", "50-59", 25, 50},
		{"sex", "F", 25, 50},
		{"sex", "M", 25, 50},
	}
	if len(r.Margins) != len(wantMargins) {
		t.Fatalf("got %d margins, want %d", len(r.Margins), len(wantMargins))
	}
	for i, w := range wantMargins {
		m := r.Margins[i]
		if m.Dim != w.dim || m.Category != w.cat {
			t.Errorf("margin %d is %s=%s, want %s=%s", i, m.Dim, m.Category, w.dim, w.cat)
		}
		for j, wv := range []want{rel(w.count), rel(w.sum), na(CodeNotAdditive)} {
			if err := wv.check(m.Values[j]); err != nil {
				t.Errorf("margin %s=%s %s: %v", m.Dim, m.Category, table.Measures[j].Name, err)
			}
		}
	}
	for j, wv := range []want{rel(50), rel(100), na(CodeNotAdditive)} {
		if err := wv.check(r.Total[j]); err != nil {
			t.Errorf("total %s: %v", table.Measures[j].Name, err)
		}
	}
	if err := rel(10).check(r.Cells[0].Values[0]); err != nil {
		t.Errorf("cell: %v", err)
	}
}

// TestMarginPrimary checks that margins go through the primary rules:
// here the sex=M margin counts 5 patients.
func TestMarginPrimary(t *testing.T) {
	r := mustApply(t, grid2([][]int64{{40, 2}, {40, 3}, {40, 0}}), DefaultThresholds())
	if err := wh(CodeLowCount).check(r.Margins[4].Values[0]); err != nil || r.Margins[4].Category != "c2" {
		t.Fatalf("margin %s=%s: %v", r.Margins[4].Dim, r.Margins[4].Category, err)
	}
	if det := derivable(r, 0); len(det) > 0 {
		t.Errorf("derivable: %v", det)
	}
}

func TestOneAndNoDimensions(t *testing.T) {
	one := Table{Dims: []string{"sex"}, Measures: []Measure{{Name: "patients", Kind: KindCount}}, Cells: []Cell{
		{Key: []string{"F"}, Values: []Input{{Count: 3}}},
		{Key: []string{"M"}, Values: []Input{{Count: 30}}},
		{Key: []string{"U"}, Values: []Input{{Count: 20}}},
	}}
	r := mustApply(t, one, DefaultThresholds())
	if r.Margins != nil {
		t.Errorf("a one-dimensional table got margins %v", r.Margins)
	}
	// The total gives away the 3 unless the smallest other cell goes too.
	for i, w := range []want{wh(CodeLowCount), rel(30), wh(CodeSecondary)} {
		if err := w.check(r.Cells[i].Values[0]); err != nil {
			t.Errorf("cell %v: %v", r.Cells[i].Key, err)
		}
	}
	if err := rel(55).check(r.Total[0]); err != nil {
		t.Errorf("total: %v", err)
	}

	none := Table{Measures: []Measure{{Name: "patients", Kind: KindCount}}}
	r = mustApply(t, none, DefaultThresholds())
	if len(r.Cells) != 0 || r.Margins != nil || r.Total != nil {
		t.Errorf("an empty table without dimensions gave %+v", r)
	}
}

// TestMeasuresSuppressedApart checks that each measure has its own pattern,
// and that a sum over too few patients is withheld whatever its size.
func TestMeasuresSuppressedApart(t *testing.T) {
	table := Table{
		Dims: []string{"sex"},
		Measures: []Measure{
			{Name: "patients", Kind: KindCount},
			{Name: "admitted", Kind: KindCount},
			{Name: "admissions", Kind: KindSum},
		},
		Cells: []Cell{
			{Key: []string{"F"}, Values: []Input{{Count: 200}, {Count: 3}, {N: 3, Sum: 400}}},
			{Key: []string{"M"}, Values: []Input{{Count: 180}, {Count: 40}, {N: 40, Sum: 60}}},
		},
	}
	r := mustApply(t, table, DefaultThresholds())
	wants := [][]want{
		{rel(200), wh(CodeLowCount), wh(CodeFewContributors)},
		{rel(180), wh(CodeSecondary), wh(CodeSecondary)},
	}
	for i, row := range wants {
		for j, w := range row {
			if err := w.check(r.Cells[i].Values[j]); err != nil {
				t.Errorf("cell %v %s: %v", r.Cells[i].Key, table.Measures[j].Name, err)
			}
		}
	}
	for j, w := range []want{rel(380), rel(45), rel(460)} {
		if err := w.check(r.Total[j]); err != nil {
			t.Errorf("total %s: %v", table.Measures[j].Name, err)
		}
	}
	got := r.WithheldCounts()
	if got[CodeLowCount] != 1 || got[CodeFewContributors] != 1 || got[CodeSecondary] != 2 || len(got) != 3 {
		t.Errorf("WithheldCounts() = %v", got)
	}
}

// TestMarginDominance checks that a margin's dominance is judged from the
// largest contributions of all its cells.
func TestMarginDominance(t *testing.T) {
	table := Table{Dims: []string{"age", "sex"}, Measures: []Measure{{Name: "bed_days", Kind: KindSum, Dominance: true}}}
	add := func(age, sex string, n int64, sum float64, top ...float64) {
		table.Cells = append(table.Cells, Cell{Key: []string{age, sex}, Values: []Input{{N: n, Sum: sum, TopContributions: top}}})
	}
	// In age 80+ one patient has 500 of the 600 bed days: the F cell and
	// the age margin are dominated. The sex=F margin, with 40-49 F's 900
	// days, is not. The age margins add up to the total, so the 40-49
	// margin goes too, and one of its cells with it.
	add("80+", "F", 10, 510, 500)
	add("80+", "M", 10, 90, 10)
	add("40-49", "F", 100, 900, 20)
	add("40-49", "M", 100, 900, 20)
	r := mustApply(t, table, DefaultThresholds())
	wantCells := []want{wh(CodeSecondary), rel(900), wh(CodeDominance), rel(90)} // 40-49 F, 40-49 M, 80+ F, 80+ M
	for i, w := range wantCells {
		if err := w.check(r.Cells[i].Values[0]); err != nil {
			t.Errorf("cell %v: %v", r.Cells[i].Key, err)
		}
	}
	wantMargins := []want{wh(CodeSecondary), wh(CodeDominance), rel(1410), rel(990)} // 40-49, 80+, F, M
	for i, w := range wantMargins {
		if err := w.check(r.Margins[i].Values[0]); err != nil {
			t.Errorf("margin %s=%s: %v", r.Margins[i].Dim, r.Margins[i].Category, err)
		}
	}
	if err := rel(2400).check(r.Total[0]); err != nil {
		t.Errorf("total: %v", err)
	}
	if det := derivable(r, 0); len(det) > 0 {
		t.Errorf("derivable: %v", det)
	}
}

// TestMeansGuardWithheldValues checks that a binary or integer mean, being
// R(Sum)/R(N), is withheld where the count or sum it would give back is
// withheld: t2dm 30 and a prevalence of 0.2 give patients 150.
func TestMeansGuardWithheldValues(t *testing.T) {
	table := Table{
		Dims: []string{"sex"},
		Measures: []Measure{
			{Name: "patients", Kind: KindCount},
			{Name: "t2dm", Kind: KindCount},
			{Name: "prevalence", Kind: KindMean, Values: ValueBinary},
			{Name: "sbp", Kind: KindMean, Values: ValueContinuous},
		},
		Cells: []Cell{
			// patients 5 is withheld, so F's patients are withheld
			// (secondary) lest the total give M's back.
			{Key: []string{"F"}, Values: []Input{{Count: 150}, {Count: 30}, {N: 150, Sum: 30}, {N: 150, Sum: 19500}}},
			{Key: []string{"M"}, Values: []Input{{Count: 5}, {Count: 0}, {N: 5, Sum: 0}, {N: 5, Sum: 650}}},
		},
	}
	r := mustApply(t, table, DefaultThresholds())
	f := r.Cells[0].Values
	for _, c := range []struct {
		name string
		got  Value
		want want
	}{
		{"F patients", f[0], wh(CodeSecondary)},
		{"F t2dm", f[1], rel(30)},
		{"F prevalence", f[2], wh(CodeSecondary)},
		{"F sbp", f[3], rel(130)}, // a continuous mean does not give N back
		{"M prevalence", r.Cells[1].Values[2], wh(CodeFewContributors)},
	} {
		if err := c.want.check(c.got); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}

	// A sum withheld for dominance is not given back by the integer mean
	// of the same values beside a released count of its contributors.
	dom := Table{
		Measures: []Measure{
			{Name: "admitted", Kind: KindCount},
			{Name: "admissions", Kind: KindSum, Dominance: true},
			{Name: "mean_admissions", Kind: KindMean, Values: ValueInteger},
		},
		Cells: []Cell{{Values: []Input{{Count: 20}, {N: 20, Sum: 100, TopContributions: []float64{81}}, {N: 20, Sum: 100}}}},
	}
	r = mustApply(t, dom, DefaultThresholds())
	for j, w := range []want{rel(20), wh(CodeDominance), wh(CodeSecondary)} {
		if err := w.check(r.Cells[0].Values[j]); err != nil {
			t.Errorf("%s: %v", dom.Measures[j].Name, err)
		}
	}
}
