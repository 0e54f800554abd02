//go:build duckdb_arrow

package duckdb

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// DuckDB's Arrow output follows its own types: INTEGER is int32, a
// DECIMAL literal is decimal128, SUM(BIGINT) is HUGEINT and so
// decimal128(38, 0), a list's element is called "l". Connectors return
// one set of types whatever the store (connector.ResultTypes), so each
// column is mapped onto it: integers widen to int64, FLOAT and DECIMAL
// become float64 (as PostgreSQL's numeric does in the other connector),
// lists get the usual element name and their elements the same mapping.
// Anything else is refused by name before a row is sent.

// supportedTypes names what a result column may be, for the error that
// refuses anything else.
const supportedTypes = "BIGINT (or a smaller integer), DOUBLE, FLOAT, DECIMAL, VARCHAR, DATE, BOOLEAN, BLOB, " +
	"VARCHAR[] and integer lists"

// convert maps one column; the result is a new reference.
type convert func(arrow.Array) (arrow.Array, error)

type normaliser struct {
	schema *arrow.Schema
	conv   []convert
}

func newNormaliser(in *arrow.Schema) (*normaliser, error) {
	n := &normaliser{conv: make([]convert, in.NumFields())}
	fields := make([]arrow.Field, in.NumFields())
	seen := map[string]bool{}
	for i, f := range in.Fields() {
		if seen[f.Name] {
			return nil, fmt.Errorf("two result columns are named %q", f.Name)
		}
		seen[f.Name] = true
		t, c, ok := converterFor(f.Type)
		if !ok {
			return nil, fmt.Errorf("column %d %q has Arrow type %s, which connectors do not return; cast it to one of %s",
				i+1, f.Name, f.Type, supportedTypes)
		}
		fields[i] = arrow.Field{Name: f.Name, Type: t, Nullable: true}
		n.conv[i] = c
	}
	n.schema = arrow.NewSchema(fields, nil)
	return n, nil
}

// apply maps a record batch; the caller releases the result.
func (n *normaliser) apply(rec arrow.RecordBatch) (arrow.RecordBatch, error) {
	cols := make([]arrow.Array, len(n.conv))
	defer func() {
		for _, c := range cols {
			if c != nil {
				c.Release()
			}
		}
	}()
	for i, c := range n.conv {
		col, err := c(rec.Column(i))
		if err != nil {
			return nil, fmt.Errorf("column %q: %w", n.schema.Field(i).Name, err)
		}
		cols[i] = col
	}
	return array.NewRecordBatch(n.schema, cols, rec.NumRows()), nil
}

func same(a arrow.Array) (arrow.Array, error) {
	a.Retain()
	return a, nil
}

// converterFor returns the result type for t and how to get there.
func converterFor(t arrow.DataType) (arrow.DataType, convert, bool) {
	switch t.ID() {
	case arrow.INT64:
		return arrow.PrimitiveTypes.Int64, same, true
	case arrow.FLOAT64:
		return arrow.PrimitiveTypes.Float64, same, true
	case arrow.BOOL:
		return arrow.FixedWidthTypes.Boolean, same, true
	case arrow.DATE32:
		return arrow.FixedWidthTypes.Date32, same, true
	case arrow.STRING:
		return arrow.BinaryTypes.String, same, true
	case arrow.BINARY:
		return arrow.BinaryTypes.Binary, same, true
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.UINT8, arrow.UINT16, arrow.UINT32:
		return arrow.PrimitiveTypes.Int64, toInt64, true
	case arrow.FLOAT32, arrow.DECIMAL128:
		return arrow.PrimitiveTypes.Float64, toFloat64, true
	case arrow.LIST:
		et, ec, ok := converterFor(t.(*arrow.ListType).Elem())
		if !ok || (et.ID() != arrow.STRING && et.ID() != arrow.INT64) {
			return nil, nil, false
		}
		lt := arrow.ListOf(et)
		return lt, func(a arrow.Array) (arrow.Array, error) { return relist(a.(*array.List), lt, ec) }, true
	}
	return nil, nil, false
}

func toInt64(a arrow.Array) (arrow.Array, error) {
	b := array.NewInt64Builder(memory.DefaultAllocator)
	defer b.Release()
	b.Reserve(a.Len())
	for i := range a.Len() {
		if a.IsNull(i) {
			b.AppendNull()
			continue
		}
		switch v := a.(type) {
		case *array.Int8:
			b.Append(int64(v.Value(i)))
		case *array.Int16:
			b.Append(int64(v.Value(i)))
		case *array.Int32:
			b.Append(int64(v.Value(i)))
		case *array.Uint8:
			b.Append(int64(v.Value(i)))
		case *array.Uint16:
			b.Append(int64(v.Value(i)))
		case *array.Uint32:
			b.Append(int64(v.Value(i)))
		default:
			return nil, fmt.Errorf("no conversion from %s to int64", a.DataType())
		}
	}
	return b.NewArray(), nil
}

func toFloat64(a arrow.Array) (arrow.Array, error) {
	b := array.NewFloat64Builder(memory.DefaultAllocator)
	defer b.Release()
	b.Reserve(a.Len())
	for i := range a.Len() {
		if a.IsNull(i) {
			b.AppendNull()
			continue
		}
		switch v := a.(type) {
		case *array.Float32:
			b.Append(float64(v.Value(i)))
		case *array.Decimal128:
			b.Append(v.Value(i).ToFloat64(v.DataType().(*arrow.Decimal128Type).Scale))
		default:
			return nil, fmt.Errorf("no conversion from %s to float64", a.DataType())
		}
	}
	return b.NewArray(), nil
}

// relist gives a list the element name and type connectors use, mapping
// its elements with ec; validity and offsets are shared, not copied.
func relist(l *array.List, to *arrow.ListType, ec convert) (arrow.Array, error) {
	values, err := ec(l.ListValues())
	if err != nil {
		return nil, err
	}
	defer values.Release()
	d := l.Data()
	data := array.NewData(to, d.Len(), d.Buffers(), []arrow.ArrayData{values.Data()}, d.NullN(), d.Offset())
	defer data.Release()
	return array.MakeFromData(data), nil
}
