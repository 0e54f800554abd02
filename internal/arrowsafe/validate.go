package arrowsafe

import (
	"fmt"
	"math"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/bitutil"
	"github.com/apache/arrow/go/v17/arrow/memory"
)

// ValidateRecord checks what the Arrow reader does not: that every column
// has the record's rows, that validity bitmaps, values and offsets cover
// every row, that a column's null count is what its bitmap says, and that
// offsets run forward inside their data, so that reading any value cannot
// go out of bounds.
//
// It knows the types Haven exchanges: int32, int64, float64, bool, date32,
// utf8, binary, fixed_size_binary and lists of these. A column of any
// other type is an error.
func ValidateRecord(rec arrow.Record) error {
	for i, col := range rec.Columns() {
		if int64(col.Len()) != rec.NumRows() {
			return fmt.Errorf("column %d has %d rows, the record %d", i+1, col.Len(), rec.NumRows())
		}
		if err := validateData(col.Data()); err != nil {
			return fmt.Errorf("column %d %q: %v", i+1, rec.ColumnName(i), err)
		}
	}
	return nil
}

func validateData(d arrow.ArrayData) error {
	off, n := d.Offset(), d.Len()
	if off < 0 || n < 0 || n > math.MaxInt-off {
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
	// covers reports whether buffer i holds width bytes for each of the
	// first end rows; the division keeps a lying length from overflowing.
	covers := func(i, width int) bool { return bufLen(i)/width >= end }
	if len(bufs) > 0 && bufs[0] != nil {
		if bufLen(0) < bytesForBits(end) {
			return fmt.Errorf("validity bitmap of %d bytes for %d rows", bufLen(0), end)
		}
		// Code that sees no nulls skips the bitmap, so the count must
		// agree with it. An unknown count is worked out from the bitmap.
		nulls := n - bitutil.CountSetBits(bufs[0].Bytes(), off, n)
		if got := d.NullN(); got != array.UnknownNullCount && got != nulls {
			return fmt.Errorf("null count %d, but the validity bitmap has %d nulls", got, nulls)
		}
	} else if d.NullN() != 0 {
		return fmt.Errorf("%d nulls but no validity bitmap", d.NullN())
	}
	switch dt := d.DataType(); dt.ID() {
	case arrow.INT64, arrow.FLOAT64:
		if !covers(1, 8) {
			return fmt.Errorf("%d bytes of values for %d rows", bufLen(1), end)
		}
	case arrow.INT32, arrow.DATE32:
		if !covers(1, 4) {
			return fmt.Errorf("%d bytes of values for %d rows", bufLen(1), end)
		}
	case arrow.FIXED_SIZE_BINARY:
		if w := dt.(*arrow.FixedSizeBinaryType).ByteWidth; w < 1 || !covers(1, w) {
			return fmt.Errorf("%d bytes of values for %d rows of %d bytes", bufLen(1), end, w)
		}
	case arrow.BOOL:
		if bufLen(1) < bytesForBits(end) {
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
		return fmt.Errorf("type %s", dt)
	}
	return nil
}

// bytesForBits is how many bytes hold n bits, without overflowing.
func bytesForBits(n int) int { return n/8 + min(n%8, 1) }

// validateOffsets checks the n+1 offsets from off: present, non-negative,
// non-decreasing and ending inside limit.
func validateOffsets(bufs []*memory.Buffer, n, off, limit int) error {
	if n == 0 {
		return nil
	}
	if len(bufs) < 2 || bufs[1] == nil || bufs[1].Len()/4 < off+n+1 {
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
