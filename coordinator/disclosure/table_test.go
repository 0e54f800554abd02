package disclosure

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
)

func TestApplyRejectsBadTables(t *testing.T) {
	count := []Measure{{Name: "patients", Kind: KindCount}}
	sum := []Measure{{Name: "cost", Kind: KindSum, Dominance: true}}
	one := func(key []string, in Input) []Cell { return []Cell{{Key: key, Values: []Input{in}}} }
	tests := []struct {
		name  string
		table Table
		want  string
	}{
		{"unnamed dimension", Table{Dims: []string{"sex", ""}, Measures: count}, "dimension 1 has no name"},
		{"dimension twice", Table{Dims: []string{"sex", "sex"}, Measures: count}, `dimension "sex" appears twice`},
		{"no measures", Table{Dims: []string{"sex"}}, "no measures"},
		{"unnamed measure", Table{Measures: []Measure{{Kind: KindCount}}}, "measure 0 has no name"},
		{"measure twice", Table{Measures: []Measure{{Name: "n", Kind: KindCount}, {Name: "n", Kind: KindSum}}}, `measure "n" appears twice`},
		{"unknown kind", Table{Measures: []Measure{{Name: "n", Kind: "median"}}}, `measure "n": unknown kind "median"`},
		{"dominance on a count", Table{Measures: []Measure{{Name: "n", Kind: KindCount, Dominance: true}}}, "only to sum and mean"},
		{"short key", Table{Dims: []string{"age", "sex"}, Measures: count, Cells: one([]string{"40-49"}, Input{Count: 9})}, "cell 0 has 1 key values for 2 dimensions"},
		{"missing value", Table{Dims: []string{"sex"}, Measures: count, Cells: []Cell{{Key: []string{"F"}}}}, `cell {sex="F"} has 0 values for 1 measures`},
		{"cell twice", Table{Dims: []string{"sex"}, Measures: count, Cells: append(one([]string{"F"}, Input{Count: 9}), one([]string{"F"}, Input{Count: 10})...)}, `cell {sex="F"} appears twice`},
		{"negative count", Table{Dims: []string{"sex"}, Measures: count, Cells: one([]string{"M"}, Input{Count: -3})}, `cell {sex="M"}: measure "patients": count -3 is negative`},
		{"huge count", Table{Dims: []string{"sex"}, Measures: count, Cells: one([]string{"M"}, Input{Count: 1 << 60})}, "is too large"},
		{"totals too large", Table{Dims: []string{"sex"}, Measures: count, Cells: append(one([]string{"F"}, Input{Count: 1 << 53}), one([]string{"M"}, Input{Count: 1 << 53})...)}, `measure "patients": totals exceed`},
		{"negative contributors", Table{Measures: sum, Cells: one(nil, Input{N: -1})}, "contributor count -1 is negative"},
		{"NaN sum", Table{Measures: sum, Cells: one(nil, Input{N: 9, Sum: math.NaN()})}, "sum NaN is not a finite number"},
		{"infinite sum", Table{Measures: sum, Cells: one(nil, Input{N: 9, Sum: math.Inf(1)})}, "sum +Inf is not a finite number"},
		{"sum of nobody", Table{Measures: sum, Cells: one(nil, Input{Sum: 4})}, "sum 4 with no contributors"},
		{"negative sum under dominance", Table{Measures: sum, Cells: one(nil, Input{N: 9, Sum: -4, TopContributions: []float64{1}})}, "sum -4 is negative"},
		{"no top contributions", Table{Measures: sum, Cells: one(nil, Input{N: 9, Sum: 40})}, "0 top contributions given, the dominance rule needs 1"},
		{"more tops than contributors", Table{Measures: sum, Cells: one(nil, Input{N: 1, Sum: 4, TopContributions: []float64{3, 1}})}, "2 top contributions from 1 contributors"},
		{"tops ascending", Table{Measures: sum, Cells: one(nil, Input{N: 9, Sum: 40, TopContributions: []float64{3, 5}})}, "not in descending order"},
		{"negative top", Table{Measures: sum, Cells: one(nil, Input{N: 9, Sum: 40, TopContributions: []float64{-1}})}, "top contribution 0 is -1"},
		{"tops exceed sum", Table{Measures: sum, Cells: one(nil, Input{N: 9, Sum: 40, TopContributions: []float64{41}})}, "more than the sum 40"},
		{"NaN max", Table{Measures: []Measure{{Name: "oldest", Kind: KindMax}}, Cells: one(nil, Input{N: 9, Max: math.NaN()})}, "max NaN"},
		{"NaN min", Table{Measures: []Measure{{Name: "youngest", Kind: KindMin}}, Cells: one(nil, Input{N: 9, Min: math.Inf(-1)})}, "min -Inf"},
		{"unknown value kind", Table{Measures: []Measure{{Name: "m", Kind: KindMean, Values: "ordinal"}}}, `measure "m": unknown value kind "ordinal"`},
		{"fractional binary sum", Table{Measures: []Measure{{Name: "m", Kind: KindMean, Values: ValueBinary}}, Cells: one(nil, Input{N: 9, Sum: 2.5})}, "sum 2.5 of binary values"},
		{"binary sum above N", Table{Measures: []Measure{{Name: "m", Kind: KindMean, Values: ValueBinary}}, Cells: one(nil, Input{N: 9, Sum: 10})}, "sum 10 of binary values"},
		{"negative integer sum", Table{Measures: []Measure{{Name: "m", Kind: KindMean, Values: ValueInteger}}, Cells: one(nil, Input{N: 9, Sum: -1})}, "sum -1 of integer values"},
		{"fractional integer sum", Table{Measures: []Measure{{Name: "m", Kind: KindSum, Values: ValueInteger}}, Cells: one(nil, Input{N: 9, Sum: 0.5})}, "sum 0.5 of integer values"},
		{"two cells without dimensions", Table{Measures: count, Cells: append(one(nil, Input{Count: 9}), one(nil, Input{Count: 9})...)}, "cell {} appears twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Apply(context.Background(), tt.table, DefaultThresholds())
			if !errors.Is(err, ErrTable) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Apply() = %v, %v; want ErrTable mentioning %q", r, err, tt.want)
			}
		})
	}
}

func TestApplyRejectsBadThresholds(t *testing.T) {
	table := Table{Measures: []Measure{{Name: "patients", Kind: KindCount}}}
	_, err := Apply(context.Background(), table, Thresholds{MinCount: 8})
	if !errors.Is(err, ErrThresholds) {
		t.Fatalf("Apply() error = %v, want ErrThresholds", err)
	}
}

func TestApplyCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	table := Table{Measures: []Measure{{Name: "patients", Kind: KindCount}}}
	if _, err := Apply(ctx, table, DefaultThresholds()); !errors.Is(err, context.Canceled) {
		t.Fatalf("Apply() error = %v, want context.Canceled", err)
	}
}
