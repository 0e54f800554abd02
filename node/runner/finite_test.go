package runner

import (
	"math"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
)

// record builds a one-row-per-value record with an int64 column n and a
// float64 column x (NULL where valid is false) and a list<float64> column
// xs holding lists.
func record(t *testing.T, xs []float64, valid []bool, lists [][]float64) arrow.Record {
	t.Helper()
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "n", Type: arrow.PrimitiveTypes.Int64},
		{Name: "x", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		{Name: "xs", Type: arrow.ListOf(arrow.PrimitiveTypes.Float64)},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for i, x := range xs {
		b.Field(0).(*array.Int64Builder).Append(int64(i))
		b.Field(1).(*array.Float64Builder).AppendValues([]float64{x}, []bool{valid[i]})
		lb := b.Field(2).(*array.ListBuilder)
		lb.Append(true)
		lb.ValueBuilder().(*array.Float64Builder).AppendValues(lists[i], nil)
	}
	rec := b.NewRecord()
	t.Cleanup(rec.Release)
	return rec
}

func TestCheckFinite(t *testing.T) {
	inf, nan := math.Inf(1), math.NaN()
	for _, tc := range []struct {
		name    string
		xs      []float64
		valid   []bool
		lists   [][]float64
		wantErr string
	}{
		{"finite", []float64{1, -2.5, math.MaxFloat64}, []bool{true, true, true}, [][]float64{{1}, {}, {3, 4}}, ""},
		{"a NULL over a NaN slot is no value", []float64{1, nan}, []bool{true, false}, [][]float64{{1}, {2}}, ""},
		{"+Inf", []float64{1, inf}, []bool{true, true}, [][]float64{{1}, {2}}, "column x holds +Inf (row 1"},
		{"-Inf", []float64{math.Inf(-1)}, []bool{true}, [][]float64{{1}}, "column x holds -Inf"},
		{"NaN", []float64{nan}, []bool{true}, [][]float64{{1}}, "column x holds NaN"},
		{"NaN in a list", []float64{1, 2}, []bool{true, true}, [][]float64{{1}, {2, nan}}, "column xs holds NaN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := record(t, tc.xs, tc.valid, tc.lists)
			err := checkFinite([]arrow.Record{rec, rec})
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("err = %v, want none", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "nothing was sent")):
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}
