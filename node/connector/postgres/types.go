package postgres

import (
	"errors"
	"fmt"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// column reads one result column: rows are scanned into dest, and add
// appends the scanned value to the column's builder, returning about how
// many bytes it took.
type column struct {
	name string
	dest any
	add  func(b array.Builder) (int, error)
}

// supportedTypes names what a result column may be, for the error that
// refuses anything else.
const supportedTypes = "smallint, integer, bigint, real, double precision, numeric, text, varchar, char, date, " +
	"boolean, bytea, text[] and integer arrays"

// resultColumns maps each result column's PostgreSQL type to one of the
// Arrow types connectors return (connector.ResultTypes): integers to int64, floats and numeric to
// float64, text types to utf8, date to date32, boolean, bytea to binary,
// text arrays to list<utf8> and integer arrays to list<int64>.
func resultColumns(fds []pgconn.FieldDescription, types *pgtype.Map) ([]column, *arrow.Schema, error) {
	cols := make([]column, len(fds))
	fields := make([]arrow.Field, len(fds))
	seen := map[string]bool{}
	for i, fd := range fds {
		if seen[fd.Name] {
			return nil, nil, fmt.Errorf("two result columns are named %q", fd.Name)
		}
		seen[fd.Name] = true
		c, t, ok := columnFor(fd.DataTypeOID)
		if !ok {
			name := fmt.Sprintf("oid %d", fd.DataTypeOID)
			if pt, ok := types.TypeForOID(fd.DataTypeOID); ok {
				name = pt.Name
			}
			return nil, nil, fmt.Errorf("column %d %q has type %s, which connectors do not return; cast it to one of %s",
				i+1, fd.Name, name, supportedTypes)
		}
		c.name = fd.Name
		cols[i] = c
		fields[i] = arrow.Field{Name: fd.Name, Type: t, Nullable: true}
	}
	return cols, arrow.NewSchema(fields, nil), nil
}

func columnFor(oid uint32) (column, arrow.DataType, bool) {
	switch oid {
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID:
		v := new(pgtype.Int8)
		return column{dest: v, add: func(b array.Builder) (int, error) {
			if !v.Valid {
				b.AppendNull()
			} else {
				b.(*array.Int64Builder).Append(v.Int64)
			}
			return 8, nil
		}}, arrow.PrimitiveTypes.Int64, true
	case pgtype.Float4OID, pgtype.Float8OID, pgtype.NumericOID:
		v := new(pgtype.Float8)
		return column{dest: v, add: func(b array.Builder) (int, error) {
			if !v.Valid {
				b.AppendNull()
			} else {
				b.(*array.Float64Builder).Append(v.Float64)
			}
			return 8, nil
		}}, arrow.PrimitiveTypes.Float64, true
	case pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID:
		v := new(pgtype.Text)
		return column{dest: v, add: func(b array.Builder) (int, error) {
			if !v.Valid {
				b.AppendNull()
				return 4, nil
			}
			b.(*array.StringBuilder).Append(v.String)
			return 4 + len(v.String), nil
		}}, arrow.BinaryTypes.String, true
	case pgtype.DateOID:
		v := new(pgtype.Date)
		return column{dest: v, add: func(b array.Builder) (int, error) {
			switch {
			case !v.Valid:
				b.AppendNull()
			case v.InfinityModifier != pgtype.Finite:
				return 0, errors.New("infinite date")
			default:
				b.(*array.Date32Builder).Append(arrow.Date32FromTime(v.Time))
			}
			return 4, nil
		}}, arrow.FixedWidthTypes.Date32, true
	case pgtype.BoolOID:
		v := new(pgtype.Bool)
		return column{dest: v, add: func(b array.Builder) (int, error) {
			if !v.Valid {
				b.AppendNull()
			} else {
				b.(*array.BooleanBuilder).Append(v.Bool)
			}
			return 1, nil
		}}, arrow.FixedWidthTypes.Boolean, true
	case pgtype.ByteaOID:
		v := new([]byte)
		return column{dest: v, add: func(b array.Builder) (int, error) {
			if *v == nil { // pgx scans NULL as nil and '' as an empty slice
				b.AppendNull()
				return 4, nil
			}
			b.(*array.BinaryBuilder).Append(*v)
			return 4 + len(*v), nil
		}}, arrow.BinaryTypes.Binary, true
	case pgtype.TextArrayOID, pgtype.VarcharArrayOID, pgtype.BPCharArrayOID:
		v := new(pgtype.Array[pgtype.Text])
		return column{dest: v, add: func(b array.Builder) (int, error) {
			lb := b.(*array.ListBuilder)
			if !v.Valid {
				lb.AppendNull()
				return 4, nil
			}
			if len(v.Dims) > 1 {
				return 0, fmt.Errorf("%d-dimensional array", len(v.Dims))
			}
			lb.Append(true)
			eb := lb.ValueBuilder().(*array.StringBuilder)
			n := 4
			for _, e := range v.Elements {
				if !e.Valid {
					eb.AppendNull()
				} else {
					eb.Append(e.String)
				}
				n += 4 + len(e.String)
			}
			return n, nil
		}}, arrow.ListOf(arrow.BinaryTypes.String), true
	case pgtype.Int2ArrayOID, pgtype.Int4ArrayOID, pgtype.Int8ArrayOID:
		v := new(pgtype.Array[pgtype.Int8])
		return column{dest: v, add: func(b array.Builder) (int, error) {
			lb := b.(*array.ListBuilder)
			if !v.Valid {
				lb.AppendNull()
				return 4, nil
			}
			if len(v.Dims) > 1 {
				return 0, fmt.Errorf("%d-dimensional array", len(v.Dims))
			}
			lb.Append(true)
			eb := lb.ValueBuilder().(*array.Int64Builder)
			for _, e := range v.Elements {
				if !e.Valid {
					eb.AppendNull()
				} else {
					eb.Append(e.Int64)
				}
			}
			return 4 + 8*len(v.Elements), nil
		}}, arrow.ListOf(arrow.PrimitiveTypes.Int64), true
	}
	return column{}, nil, false
}
