package connector

import (
	"errors"
	"fmt"
	"strings"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/bitutil"
	"github.com/apache/arrow/go/v17/arrow/memory"
)

// The host reads Arrow from a process it does not trust. The Arrow reader
// was written for honest peers: lengths in a message are believed, and a
// lie shows up as a panic or a huge allocation. So every read is guarded,
// every allocation is capped by the bytes the stream may still carry, and
// every record is validated before the caller sees it.

// guard runs f, turning a panic into an error.
func guard(f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			if le, ok := p.(*LimitError); ok {
				err = le
				return
			}
			err = fmt.Errorf("%w: reading the Arrow stream failed: %v", ErrMalformedResult, p)
		}
	}()
	return f()
}

// cappedAllocator refuses any one allocation larger than the byte limit.
// streamSource has already checked each message's lengths against what
// the limit still allows; this is the second line, for lengths inside a
// message (a compressed buffer's claimed size, say), where a lie would
// otherwise only exhaust memory.
type cappedAllocator struct {
	max int64
	mem memory.GoAllocator
}

var _ memory.Allocator = (*cappedAllocator)(nil)

// allocSlack covers the Arrow allocator's rounding of capacities up to a
// multiple of 64 bytes.
const allocSlack = 64

func (a *cappedAllocator) check(size int) {
	if int64(size) > a.max+allocSlack {
		// Recovered by guard or by the Arrow reader, which wraps it; the
		// Allocator interface has no error return.
		panic(&LimitError{Limit: LimitBytes, Max: a.max})
	}
}

func (a *cappedAllocator) Allocate(size int) []byte {
	a.check(size)
	return a.mem.Allocate(size)
}

func (a *cappedAllocator) Reallocate(size int, b []byte) []byte {
	a.check(size)
	return a.mem.Reallocate(size, b)
}

func (a *cappedAllocator) Free(b []byte) { a.mem.Free(b) }

// resultType reports whether t is one of the types a connector returns.
func resultType(t arrow.DataType) bool {
	switch t.ID() {
	case arrow.INT64, arrow.FLOAT64, arrow.BOOL, arrow.DATE32, arrow.STRING, arrow.BINARY:
		return true
	case arrow.LIST:
		switch t.(*arrow.ListType).Elem().ID() {
		case arrow.STRING, arrow.INT64:
			return true
		}
	}
	return false
}

// ResultTypes names the Arrow types a connector's result columns may have.
const ResultTypes = "int64, float64, bool, date32, utf8, binary, list<utf8> and list<int64>"

// checkResultSchema checks that every column has a result type.
func checkResultSchema(s *arrow.Schema) error {
	for i, f := range s.Fields() {
		if !resultType(f.Type) {
			return fmt.Errorf("column %d %q has Arrow type %s; connectors return only %s", i+1, f.Name, f.Type, ResultTypes)
		}
	}
	return nil
}

// compareSchemas explains how got differs from want in names or types.
func compareSchemas(got, want *arrow.Schema) error {
	var diffs []string
	if got.NumFields() != want.NumFields() {
		diffs = append(diffs, fmt.Sprintf("%d columns, want %d", got.NumFields(), want.NumFields()))
	}
	for i := range min(got.NumFields(), want.NumFields()) {
		g, w := got.Field(i), want.Field(i)
		if g.Name != w.Name || !arrow.TypeEqual(g.Type, w.Type) {
			diffs = append(diffs, fmt.Sprintf("column %d is %q %s, want %q %s", i+1, g.Name, g.Type, w.Name, w.Type))
		}
	}
	if len(diffs) > 0 {
		return errors.New(strings.Join(diffs, "; "))
	}
	return nil
}

// validateRecord checks what the Arrow reader does not: that validity
// bitmaps, values and offsets cover every row and that offsets run forward
// inside their data, so that reading any value cannot go out of bounds.
func validateRecord(rec arrow.Record) error {
	for i, col := range rec.Columns() {
		if int64(col.Len()) != rec.NumRows() {
			return fmt.Errorf("%w: column %d has %d rows, the record %d", ErrMalformedResult, i+1, col.Len(), rec.NumRows())
		}
		if err := validateData(col.Data()); err != nil {
			return fmt.Errorf("%w: column %d %q: %v", ErrMalformedResult, i+1, rec.ColumnName(i), err)
		}
	}
	return nil
}

func validateData(d arrow.ArrayData) error {
	off, n := d.Offset(), d.Len()
	if off < 0 || n < 0 {
		return fmt.Errorf("offset %d, length %d", off, n)
	}
	end := off + n
	bufs := d.Buffers()
	bufLen := func(i int) int {
		if i >= len(bufs) || bufs[i] == nil {
			return 0
		}
		return bufs[i].Len()
	}
	if len(bufs) > 0 && bufs[0] != nil && bufLen(0) < int(bitutil.BytesForBits(int64(end))) {
		return fmt.Errorf("validity bitmap of %d bytes for %d rows", bufLen(0), end)
	}
	if d.NullN() > 0 && (len(bufs) == 0 || bufs[0] == nil) {
		return fmt.Errorf("%d nulls but no validity bitmap", d.NullN())
	}
	switch d.DataType().ID() {
	case arrow.INT64, arrow.FLOAT64:
		if bufLen(1) < end*8 {
			return fmt.Errorf("%d bytes of values for %d rows", bufLen(1), end)
		}
	case arrow.DATE32:
		if bufLen(1) < end*4 {
			return fmt.Errorf("%d bytes of values for %d rows", bufLen(1), end)
		}
	case arrow.BOOL:
		if bufLen(1) < int(bitutil.BytesForBits(int64(end))) {
			return fmt.Errorf("%d bytes of values for %d rows", bufLen(1), end)
		}
	case arrow.STRING, arrow.BINARY:
		return validateOffsets(bufs, n, off, bufLen(2))
	case arrow.LIST:
		children := d.Children()
		if len(children) != 1 {
			return fmt.Errorf("list with %d children", len(children))
		}
		if err := validateOffsets(bufs, n, off, children[0].Len()); err != nil {
			return err
		}
		if err := validateData(children[0]); err != nil {
			return fmt.Errorf("list values: %v", err)
		}
	default:
		return fmt.Errorf("type %s", d.DataType())
	}
	return nil
}

// validateOffsets checks the n+1 offsets from off: present, non-negative,
// non-decreasing and ending inside limit.
func validateOffsets(bufs []*memory.Buffer, n, off, limit int) error {
	if n == 0 {
		return nil
	}
	if len(bufs) < 2 || bufs[1] == nil || bufs[1].Len() < (off+n+1)*4 {
		return fmt.Errorf("offsets missing or short for %d rows", n)
	}
	offsets := arrow.Int32Traits.CastFromBytes(bufs[1].Bytes())[off : off+n+1]
	if offsets[0] < 0 {
		return fmt.Errorf("negative offset %d", offsets[0])
	}
	for i := 1; i < len(offsets); i++ {
		if offsets[i] < offsets[i-1] {
			return fmt.Errorf("offsets go backwards at row %d", i)
		}
	}
	if last := int(offsets[n]); last > limit {
		return fmt.Errorf("offset %d beyond %d values", last, limit)
	}
	return nil
}
