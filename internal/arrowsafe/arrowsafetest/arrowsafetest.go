// Package arrowsafetest crafts lying Arrow IPC messages for the tests of
// code that reads Arrow from a peer it does not trust. Each function takes
// the metadata (the flatbuffer) of a real message, as an Arrow writer made
// it, and returns a copy with one length or offset changed, as a faulty or
// hostile peer might send it.
package arrowsafetest

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"github.com/apache/arrow/go/v17/arrow/memory"
)

// Field numbers of format/Message.fbs and format/Schema.fbs.
const (
	messageHeader     = 2
	messageBodyLength = 3
	schemaFields      = 1
	batchNodes        = 1
	batchBuffers      = 2
)

// SetBuffer returns a copy of meta, a record batch's metadata, in which
// buffer i lies at offset and has length bytes.
func SetBuffer(tb testing.TB, meta []byte, i int, offset, length int64) []byte {
	tb.Helper()
	out := bytes.Clone(meta)
	at := element(tb, out, batchBuffers, i, 16)
	binary.LittleEndian.PutUint64(out[at:], uint64(offset))
	binary.LittleEndian.PutUint64(out[at+8:], uint64(length))
	return out
}

// SetNode returns a copy of meta, a record batch's metadata, in which
// field node i (a column, or a child of one) has length rows and nulls
// nulls.
func SetNode(tb testing.TB, meta []byte, i int, length, nulls int64) []byte {
	tb.Helper()
	out := bytes.Clone(meta)
	at := element(tb, out, batchNodes, i, 16)
	binary.LittleEndian.PutUint64(out[at:], uint64(length))
	binary.LittleEndian.PutUint64(out[at+8:], uint64(nulls))
	return out
}

// SetBufferCount returns a copy of meta, a record batch's metadata, whose
// vector of buffers claims n of them.
func SetBufferCount(tb testing.TB, meta []byte, n uint32) []byte {
	tb.Helper()
	out := bytes.Clone(meta)
	binary.LittleEndian.PutUint32(out[vector(tb, out, batchBuffers):], n)
	return out
}

// SetFieldCount returns a copy of meta, a schema's metadata, whose vector
// of fields claims n of them.
func SetFieldCount(tb testing.TB, meta []byte, n uint32) []byte {
	tb.Helper()
	out := bytes.Clone(meta)
	binary.LittleEndian.PutUint32(out[vector(tb, out, schemaFields):], n)
	return out
}

// SetBodyLength returns a copy of meta in which the message claims a body
// of n bytes.
func SetBodyLength(tb testing.TB, meta []byte, n int64) []byte {
	tb.Helper()
	out := bytes.Clone(meta)
	root := int(u32(tb, out, 0))
	at := field(tb, out, root, messageBodyLength)
	if at == 0 {
		tb.Fatalf("arrowsafetest: the message has no bodyLength field to set")
	}
	binary.LittleEndian.PutUint64(out[at:], uint64(n))
	return out
}

// DictionaryBatch returns the metadata and body of a dictionary batch, as
// the Arrow writer sends one ahead of a batch with a dictionary-encoded
// column.
func DictionaryBatch(tb testing.TB) (meta, body []byte) {
	tb.Helper()
	dt := &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int8, ValueType: arrow.BinaryTypes.String}
	schema := arrow.NewSchema([]arrow.Field{{Name: "sex", Type: dt}}, nil)
	b := array.NewDictionaryBuilder(memory.DefaultAllocator, dt).(*array.BinaryDictionaryBuilder)
	defer b.Release()
	if err := b.AppendString("F"); err != nil {
		tb.Fatal(err)
	}
	arr := b.NewArray()
	defer arr.Release()
	rec := array.NewRecord(schema, []arrow.Array{arr}, 1)
	defer rec.Release()
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(schema))
	if err := w.Write(rec); err != nil {
		tb.Fatal(err)
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	// The stream is the schema, the dictionary batch, the record batch.
	data := buf.Bytes()
	for range 3 {
		if len(data) < 8 {
			break
		}
		n := int(binary.LittleEndian.Uint32(data[4:]))
		meta = data[8 : 8+n]
		msg := ipc.NewMessage(memory.NewBufferBytes(meta), memory.NewBufferBytes(nil))
		typ, bodyLen := msg.Type(), int(msg.BodyLen())
		msg.Release()
		if typ == ipc.MessageDictionaryBatch {
			return meta, data[8+n : 8+n+bodyLen]
		}
		data = data[8+n+bodyLen:]
	}
	tb.Fatal("arrowsafetest: the Arrow writer wrote no dictionary batch")
	return nil, nil
}

// element returns where element i, of size bytes, of the message header's
// vector in slot lies.
func element(tb testing.TB, b []byte, slot, i, size int) int {
	tb.Helper()
	at := vector(tb, b, slot)
	if n := int(u32(tb, b, at)); i < 0 || i >= n {
		tb.Fatalf("arrowsafetest: element %d of a vector of %d", i, n)
	}
	return at + 4 + i*size
}

// vector returns where the message header's vector in slot starts (at its
// length).
func vector(tb testing.TB, b []byte, slot int) int {
	tb.Helper()
	root := int(u32(tb, b, 0))
	hdr := ref(tb, b, root, messageHeader)
	return ref(tb, b, hdr, slot)
}

// ref follows the offset in slot of the table at pos.
func ref(tb testing.TB, b []byte, pos, slot int) int {
	tb.Helper()
	at := field(tb, b, pos, slot)
	if at == 0 {
		tb.Fatalf("arrowsafetest: field %d of the table at %d is absent", slot, pos)
	}
	return at + int(u32(tb, b, at))
}

// field returns where slot's data of the table at pos lies, or 0 if the
// table does not have it.
func field(tb testing.TB, b []byte, pos, slot int) int {
	tb.Helper()
	vt := pos - int(int32(u32(tb, b, pos)))
	if vt < 0 || vt+4 > len(b) {
		tb.Fatalf("arrowsafetest: not the metadata an Arrow writer makes")
	}
	at := vt + 4 + 2*slot
	if at+2 > vt+int(binary.LittleEndian.Uint16(b[vt:])) {
		return 0
	}
	off := int(binary.LittleEndian.Uint16(b[at:]))
	if off == 0 {
		return 0
	}
	return pos + off
}

func u32(tb testing.TB, b []byte, at int) uint32 {
	tb.Helper()
	if at < 0 || at+4 > len(b) {
		tb.Fatalf("arrowsafetest: offset %d outside %d bytes of metadata", at, len(b))
	}
	return binary.LittleEndian.Uint32(b[at:])
}
