package arrowsafe

import (
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
)

func TestValidateData(t *testing.T) {
	buf := func(b ...byte) *memory.Buffer { return memory.NewBufferBytes(b) }
	offsets := func(o ...int32) *memory.Buffer { return memory.NewBufferBytes(arrow.Int32Traits.CastToBytes(o)) }
	str := arrow.BinaryTypes.String
	tests := []struct {
		name string
		data *array.Data
		want string // "" for valid
	}{
		{"good string", array.NewData(str, 2, []*memory.Buffer{nil, offsets(0, 2, 5), buf('a', 'b', 'c', 'd', 'e')}, nil, 0, 0), ""},
		{"offsets backwards", array.NewData(str, 2, []*memory.Buffer{nil, offsets(0, 5, 2), buf('a', 'b', 'c', 'd', 'e')}, nil, 0, 0), "backwards"},
		{"offset past data", array.NewData(str, 2, []*memory.Buffer{nil, offsets(0, 2, 9), buf('a', 'b')}, nil, 0, 0), "beyond"},
		{"negative offset", array.NewData(str, 1, []*memory.Buffer{nil, offsets(-1, 1), buf('a', 'b')}, nil, 0, 0), "negative"},
		{"short offsets", array.NewData(str, 3, []*memory.Buffer{nil, offsets(0, 1), buf('a')}, nil, 0, 0), "short"},
		{"short bitmap", array.NewData(arrow.PrimitiveTypes.Int64, 20, []*memory.Buffer{buf(0xff), memory.NewBufferBytes(make([]byte, 160))}, nil, 1, 0), "validity bitmap"},
		{"nulls without bitmap", array.NewData(arrow.PrimitiveTypes.Int64, 2, []*memory.Buffer{nil, memory.NewBufferBytes(make([]byte, 16))}, nil, 1, 0), "no validity bitmap"},
		{"short values", array.NewData(arrow.PrimitiveTypes.Float64, 3, []*memory.Buffer{nil, memory.NewBufferBytes(make([]byte, 16))}, nil, 0, 0), "bytes of values"},
		{"short bools", array.NewData(arrow.FixedWidthTypes.Boolean, 9, []*memory.Buffer{nil, buf(0xff)}, nil, 0, 0), "bytes of values"},
		{"list past child", array.NewData(arrow.ListOf(str), 1, []*memory.Buffer{nil, offsets(0, 3)},
			[]arrow.ArrayData{array.NewData(str, 1, []*memory.Buffer{nil, offsets(0, 1), buf('a')}, nil, 0, 0)}, 0, 0), "beyond"},
		{"bad list child", array.NewData(arrow.ListOf(str), 1, []*memory.Buffer{nil, offsets(0, 1)},
			[]arrow.ArrayData{array.NewData(str, 1, []*memory.Buffer{nil, offsets(1, 0), buf('a')}, nil, 0, 0)}, 0, 0), "list values"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := validateData(tt.data)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("valid data refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("err = %v, want it to say %q", err, tt.want)
			}
		})
	}
}

// Types the node's connectors do not return but uploads carry.
func TestValidateDataUploadTypes(t *testing.T) {
	buf := func(n int) *memory.Buffer { return memory.NewBufferBytes(make([]byte, n)) }
	bits := func(b ...byte) *memory.Buffer { return memory.NewBufferBytes(b) }
	offsets := func(o ...int32) *memory.Buffer { return memory.NewBufferBytes(arrow.Int32Traits.CastToBytes(o)) }
	i32, fsb := arrow.PrimitiveTypes.Int32, &arrow.FixedSizeBinaryType{ByteWidth: 16}
	tests := []struct {
		name string
		data *array.Data
		want string // "" for valid
	}{
		{"good int32", array.NewData(i32, 3, []*memory.Buffer{nil, buf(12)}, nil, 0, 0), ""},
		{"short int32", array.NewData(i32, 4, []*memory.Buffer{nil, buf(12)}, nil, 0, 0), "bytes of values"},
		{"good pseudonyms", array.NewData(fsb, 2, []*memory.Buffer{nil, buf(32)}, nil, 0, 0), ""},
		{"short pseudonyms", array.NewData(fsb, 3, []*memory.Buffer{nil, buf(32)}, nil, 0, 0), "rows of 16 bytes"},
		{"pseudonyms of a lying length", array.NewData(fsb, 1<<62, []*memory.Buffer{nil, buf(32)}, nil, 0, 0), "rows of 16 bytes"},
		{"good list<int32>", array.NewData(arrow.ListOf(i32), 2, []*memory.Buffer{nil, offsets(0, 1, 3)},
			[]arrow.ArrayData{array.NewData(i32, 3, []*memory.Buffer{nil, buf(12)}, nil, 0, 0)}, 0, 0), ""},
		{"short list<int32> values", array.NewData(arrow.ListOf(i32), 2, []*memory.Buffer{nil, offsets(0, 1, 3)},
			[]arrow.ArrayData{array.NewData(i32, 3, []*memory.Buffer{nil, buf(8)}, nil, 0, 0)}, 0, 0), "list values"},
		{"null count agrees", array.NewData(i32, 3, []*memory.Buffer{bits(0b101), buf(12)}, nil, 1, 0), ""},
		{"null count unknown", array.NewData(i32, 3, []*memory.Buffer{bits(0b101), buf(12)}, nil, array.UnknownNullCount, 0), ""},
		{"null count lies", array.NewData(i32, 3, []*memory.Buffer{bits(0b101), buf(12)}, nil, 2, 0), "null count 2"},
		{"negative null count", array.NewData(i32, 3, []*memory.Buffer{nil, buf(12)}, nil, -5, 0), "no validity bitmap"},
		{"other type", array.NewData(arrow.PrimitiveTypes.Int16, 1, []*memory.Buffer{nil, buf(2)}, nil, 0, 0), "type int16"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := validateData(tt.data)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("valid data refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("err = %v, want it to say %q", err, tt.want)
			}
		})
	}
}

func TestValidateRecord(t *testing.T) {
	rec := havenRecord(40)
	defer rec.Release()
	if err := ValidateRecord(rec); err != nil {
		t.Fatalf("a record the builder made refused: %v", err)
	}
	// A slice has an offset and, where there are nulls, an unknown null
	// count.
	part := rec.NewSlice(3, 17)
	defer part.Release()
	if err := ValidateRecord(part); err != nil {
		t.Fatalf("a slice refused: %v", err)
	}
	// A boolean column with values for one byte's rows of its nine: the
	// array does not check that itself.
	data := array.NewData(arrow.FixedWidthTypes.Boolean, 9, []*memory.Buffer{nil, memory.NewBufferBytes([]byte{0xff})}, nil, 0, 0)
	defer data.Release()
	col := array.MakeFromData(data)
	defer col.Release()
	schema := arrow.NewSchema([]arrow.Field{{Name: "flag", Type: arrow.FixedWidthTypes.Boolean}}, nil)
	bad := array.NewRecord(schema, []arrow.Array{col}, 9)
	defer bad.Release()
	err := ValidateRecord(bad)
	if err == nil || !strings.Contains(err.Error(), `column 1 "flag": 1 bytes of values for 9 rows`) {
		t.Errorf("err = %v, want the column and the fault named", err)
	}
}
