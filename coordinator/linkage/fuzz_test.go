package linkage_test

import (
	"context"
	"errors"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/linkage"
)

// FuzzAdd builds records of the readmissions plan's trust schema (every
// kind of field a trust sends) whose buffers, lengths and offsets are cut
// from the fuzzer's bytes, as a hostile or broken node might send them.
// Add must return an error or nil, never panic, and the run must still
// produce a table.
//
// The bytes go straight into Arrow arrays, not through the IPC reader:
// that is the transport's to harden (arrow v17's reader can be made to
// allocate without bound by a crafted schema).
func FuzzAdd(f *testing.F) {
	fx := newFixture(f, loadCatalog(f), "emergency-readmissions-30d")
	schema, _ := fx.plan.Schema(cdm.KindTrust)
	f.Add(uint8(2), uint8(0), []byte("0123456789abcdef0123456789abcdef\x03\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00"))
	f.Add(uint8(1), uint8(1), []byte("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"))
	f.Add(uint8(3), uint8(2), []byte{})

	site := linkage.Site{ODS: "RXA", Kind: cdm.KindTrust}
	f.Fuzz(func(t *testing.T, n, off uint8, data []byte) {
		rec := hostileRecord(schema, int(n%8), int(off%4), data)
		if rec == nil {
			return // Arrow itself refused the arrays
		}
		defer rec.Release()
		r := fx.newRun(t, linkage.Options{Partitions: 2})
		if err := r.Add(context.Background(), site, rec); err != nil && !errors.Is(err, linkage.ErrBadBatch) {
			t.Fatalf("Add: %v is not a bad-batch error", err)
		}
		if _, _, err := r.Table(context.Background()); err != nil {
			t.Fatalf("Table: %v", err)
		}
	})
}

// hostileRecord builds a record of n rows at offset off, every buffer a
// slice of data, or nil if Arrow's constructors reject them.
func hostileRecord(schema *arrow.Schema, n, off int, data []byte) (rec arrow.Record) {
	next := func(size int) *memory.Buffer {
		if len(data) == 0 {
			return nil
		}
		size = min(size, len(data))
		b := memory.NewBufferBytes(data[:size])
		data = data[size:]
		return b
	}
	defer func() {
		if recover() != nil {
			rec = nil
		}
	}()
	cols := make([]arrow.Array, schema.NumFields())
	for i, fld := range schema.Fields() {
		var d arrow.ArrayData
		size := int(data0(data)) // how many bytes this buffer takes
		switch fld.Type.ID() {
		case arrow.LIST:
			child := array.NewData(arrow.PrimitiveTypes.Int32, int(data0(data)%16), []*memory.Buffer{next(2), next(size)}, nil, -1, 0)
			d = array.NewData(fld.Type, n, []*memory.Buffer{next(1), next(size)}, []arrow.ArrayData{child}, -1, off)
			child.Release()
		default:
			d = array.NewData(fld.Type, n, []*memory.Buffer{next(1), next(size)}, nil, -1, off)
		}
		cols[i] = array.MakeFromData(d)
		d.Release()
	}
	rec = array.NewRecord(schema, cols, int64(n))
	for _, c := range cols {
		c.Release()
	}
	return rec
}

func data0(b []byte) byte {
	if len(b) == 0 {
		return 0
	}
	return b[0]
}
