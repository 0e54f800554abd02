package dispatch

import (
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
)

func TestConcat(t *testing.T) {
	schema := arrow.NewSchema([]arrow.Field{{Name: "n", Type: arrow.PrimitiveTypes.Int64}, {Name: "s", Type: arrow.BinaryTypes.String}}, nil)
	rec := func(vals ...int64) arrow.Record {
		b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
		defer b.Release()
		for _, v := range vals {
			b.Field(0).(*array.Int64Builder).Append(v)
			b.Field(1).(*array.StringBuilder).Append(strings.Repeat("x", int(v)))
		}
		return b.NewRecord()
	}
	parts := []arrow.Record{rec(1, 2), rec(), rec(3), rec(4, 5, 6)}
	defer func() {
		for _, p := range parts {
			p.Release()
		}
	}()
	got, err := concat(schema, parts)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Release()
	if got.NumRows() != 6 {
		t.Fatalf("%d rows, want 6", got.NumRows())
	}
	for i := range 6 {
		if n := got.Column(0).(*array.Int64).Value(i); n != int64(i+1) || got.Column(1).(*array.String).Value(i) != strings.Repeat("x", i+1) {
			t.Errorf("row %d: %d", i, n)
		}
	}
	if none, err := concat(schema, []arrow.Record{parts[1]}); none != nil || err != nil {
		t.Errorf("an upload of no rows gave %v, %v", none, err)
	}
}

func TestRedact(t *testing.T) {
	msg := `batch from gp site A81001: field sex: row 0: unknown value "9434765919"; want one of ["F" "I" "M" "U"]`
	got := Redact(msg)
	if strings.Contains(got, "9434765919") || !strings.Contains(got, "field sex: row 0") {
		t.Errorf("Redact = %s", got)
	}
}
