package arrowsafe

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"github.com/apache/arrow/go/v17/arrow/memory"
)

// havenSchema has every type Haven exchanges.
var havenSchema = arrow.NewSchema([]arrow.Field{
	{Name: "n", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "x", Type: arrow.PrimitiveTypes.Float64},
	{Name: "b", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
	{Name: "d", Type: arrow.FixedWidthTypes.Date32},
	{Name: "i", Type: arrow.PrimitiveTypes.Int32, Nullable: true},
	{Name: "s", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "y", Type: arrow.BinaryTypes.Binary},
	{Name: "p", Type: &arrow.FixedSizeBinaryType{ByteWidth: 16}, Nullable: true},
	{Name: "l", Type: arrow.ListOf(arrow.PrimitiveTypes.Int32), Nullable: true},
}, nil)

// havenRecord is a record of havenSchema with nulls in every nullable
// column.
func havenRecord(rows int) arrow.Record {
	b := array.NewRecordBuilder(memory.DefaultAllocator, havenSchema)
	defer b.Release()
	for i := range rows {
		null := i%5 == 2
		appendOrNull := func(f int, app func()) {
			if null && havenSchema.Field(f).Nullable {
				b.Field(f).AppendNull()
				return
			}
			app()
		}
		appendOrNull(0, func() { b.Field(0).(*array.Int64Builder).Append(int64(i)) })
		appendOrNull(1, func() { b.Field(1).(*array.Float64Builder).Append(float64(i) / 3) })
		appendOrNull(2, func() { b.Field(2).(*array.BooleanBuilder).Append(i%2 == 0) })
		appendOrNull(3, func() { b.Field(3).(*array.Date32Builder).Append(arrow.Date32(19000 + i)) })
		appendOrNull(4, func() { b.Field(4).(*array.Int32Builder).Append(int32(i)) })
		appendOrNull(5, func() { b.Field(5).(*array.StringBuilder).Append(fmt.Sprint("code-", i)) })
		appendOrNull(6, func() { b.Field(6).(*array.BinaryBuilder).Append([]byte{byte(i), 1}) })
		appendOrNull(7, func() { b.Field(7).(*array.FixedSizeBinaryBuilder).Append(bytes.Repeat([]byte{byte(i)}, 16)) })
		appendOrNull(8, func() {
			lb := b.Field(8).(*array.ListBuilder)
			lb.Append(true)
			for j := range i % 3 {
				lb.ValueBuilder().(*array.Int32Builder).Append(int32(j))
			}
		})
	}
	return b.NewRecord()
}

// encode writes recs of schema as an Arrow IPC stream.
func encode(t testing.TB, schema *arrow.Schema, recs []arrow.Record, opts ...ipc.Option) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, append([]ipc.Option{ipc.WithSchema(schema)}, opts...)...)
	for _, r := range recs {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// message is one IPC message: its metadata, as Flight's data_header
// carries it, and its body.
type message struct{ meta, body []byte }

// split cuts an IPC stream into its messages, trusting it: it is one the
// Arrow writer made.
func split(t testing.TB, data []byte) []message {
	t.Helper()
	var out []message
	for len(data) >= 8 {
		n := int(binary.LittleEndian.Uint32(data[4:]))
		if n == 0 {
			break
		}
		meta := data[8 : 8+n]
		msg := ipc.NewMessage(memory.NewBufferBytes(meta), memory.NewBufferBytes(nil))
		body := int(msg.BodyLen())
		msg.Release()
		out = append(out, message{meta: meta, body: data[8+n : 8+n+body]})
		data = data[8+n+body:]
	}
	return out
}

// havenMessages is a schema message and a record batch of havenSchema.
func havenMessages(t testing.TB) (schema, batch message) {
	t.Helper()
	rec := havenRecord(7)
	defer rec.Release()
	msgs := split(t, encode(t, havenSchema, []arrow.Record{rec}))
	if len(msgs) != 2 {
		t.Fatalf("%d messages, want a schema and a batch", len(msgs))
	}
	return msgs[0], msgs[1]
}
