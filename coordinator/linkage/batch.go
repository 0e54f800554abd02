package linkage

import (
	"errors"
	"fmt"
	"math"
	"unsafe"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/bitutil"

	"github.com/havenhealth/haven/policy/catalog"
)

// ErrBadBatch is wrapped by every error about a record a site sent. The run
// is unchanged by a batch rejected with it.
var ErrBadBatch = errors.New("bad batch")

// BatchError says what was wrong with a rejected batch. It wraps
// ErrBadBatch.
type BatchError struct {
	Site  Site
	Field string // the field at fault, if one is
	Row   int    // the row at fault, from 0, or -1
	Msg   string
}

func (e *BatchError) Error() string {
	s := fmt.Sprintf("batch from %s site %s", e.Site.Kind, e.Site.ODS)
	if e.Field != "" {
		s += ": field " + e.Field
	}
	if e.Row >= 0 {
		s += fmt.Sprintf(": row %d", e.Row)
	}
	return s + ": " + e.Msg
}

func (e *BatchError) Unwrap() error { return ErrBadBatch }

// batch is a record that passed validation, decoded into plain slices. The
// numeric slices alias the record's buffers, so a batch lives only as long
// as its Staged holds the record; whatever the run keeps is copied out of
// it.
type batch struct {
	site Site
	// state is the site's state in the run, set by Apply.
	state *siteState
	ks    *kindSpec
	n     int
	keys  []byte   // pseudonyms, 16 bytes each (linkage)
	hash  []uint64 // the pseudonyms' hashes (linkage)
	cols  []bcol   // parallel to ks.cols
	// groups are the cells' packed group values (aggregate), values their
	// group values as strings, Missing for null.
	groups []string
	values [][]string
}

// bcol is one decoded column. Only the slice for the field's type is set.
type bcol struct {
	valid []bool // nil when every row is valid
	i64   []int64
	f64   []float64
	b     []bool
	i32   []int32 // days, and the values of day lists
	offs  []int32 // day lists: n+1 offsets into i32
	// codes holds string values as code+1, 0 for null: dictionary codes for
	// a fixed vocabulary, codes into local until the batch is accepted
	// otherwise.
	codes []int32
	local *localDict
}

func (c *bcol) isValid(i int) bool { return c.valid == nil || c.valid[i] }

func (c *bcol) validAt(i int32) bool { return c.valid == nil || c.valid[i] }

// decode checks rec against the schema and the field rules of the site's
// kind and decodes it. Malformed arrays can make Arrow's accessors panic;
// decode turns that into an error, and nothing has been applied yet.
func decode(site Site, ks *kindSpec, rec arrow.Record) (b *batch, err error) {
	defer func() {
		if p := recover(); p != nil {
			b, err = nil, &BatchError{Site: site, Row: -1, Msg: fmt.Sprintf("malformed record: %v", p)}
		}
	}()
	if err := catalog.CheckSchema(rec.Schema(), ks.schema); err != nil {
		var field string
		if se, ok := errors.AsType[*catalog.SchemaError](err); ok {
			field = se.Field
		}
		return nil, &BatchError{Site: site, Field: field, Row: -1, Msg: err.Error()}
	}
	if rec.NumCols() != int64(len(ks.cols)) {
		return nil, &BatchError{Site: site, Row: -1, Msg: fmt.Sprintf("record has %d columns for %d fields", rec.NumCols(), len(ks.cols))}
	}
	if rec.NumRows() > math.MaxInt32 {
		return nil, &BatchError{Site: site, Row: -1, Msg: fmt.Sprintf("%d rows is too many for one batch", rec.NumRows())}
	}
	b = &batch{site: site, ks: ks, n: int(rec.NumRows()), cols: make([]bcol, len(ks.cols))}
	for i := range ks.cols {
		if err := b.decodeColumn(i, rec.Column(i)); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func (b *batch) decodeColumn(i int, arr arrow.Array) error {
	f := b.ks.cols[i].field
	c := &b.cols[i]
	bad := func(row int, format string, args ...any) error {
		return &BatchError{Site: b.site, Field: f.Name, Row: row, Msg: fmt.Sprintf(format, args...)}
	}
	if arr.Len() != b.n {
		return bad(-1, "column has %d rows; the record has %d", arr.Len(), b.n)
	}
	if b.n == 0 {
		return nil
	}
	d := arr.Data()
	valid, err := validity(d)
	if err != nil {
		return bad(-1, "%v", err)
	}
	if valid != nil && !f.Nullable {
		row := 0
		for valid[row] {
			row++
		}
		return bad(row, "null, but the field is not nullable")
	}
	c.valid = valid
	off, n := d.Offset(), b.n
	switch f.Type {
	case catalog.FieldPseudonym:
		raw, err := fixedWidth(d, catalog.PseudonymBytes)
		if err != nil {
			return bad(-1, "%v", err)
		}
		b.keys = raw
	case catalog.FieldInt64:
		raw, err := fixedWidth(d, 8)
		if err != nil {
			return bad(-1, "%v", err)
		}
		c.i64 = unsafe.Slice((*int64)(unsafe.Pointer(unsafe.SliceData(raw))), n)
		for row, v := range c.i64 {
			if !c.isValid(row) {
				continue
			}
			if v < 0 {
				return bad(row, "%d is negative", v)
			}
			if v > maxValue {
				return bad(row, "%d is implausibly large (over 2^40)", v)
			}
			if kr := b.ks.cols[i].keyRange; kr > 0 && v >= kr {
				return bad(row, "record key %d is outside 0-%d", v, kr-1)
			}
		}
	case catalog.FieldFloat64:
		raw, err := fixedWidth(d, 8)
		if err != nil {
			return bad(-1, "%v", err)
		}
		c.f64 = unsafe.Slice((*float64)(unsafe.Pointer(unsafe.SliceData(raw))), n)
		for row, v := range c.f64 {
			if !c.isValid(row) {
				continue
			}
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return bad(row, "%v is not a finite number", v)
			}
			if math.Abs(v) > maxValue {
				return bad(row, "%v is implausibly large (over 2^40)", v)
			}
		}
	case catalog.FieldBool:
		bits, err := buffer(d, 1, (off+n+7)/8)
		if err != nil {
			return bad(-1, "%v", err)
		}
		c.b = make([]bool, n)
		for row := range c.b {
			c.b[row] = bitutil.BitIsSet(bits, off+row)
		}
	case catalog.FieldDay:
		raw, err := fixedWidth(d, 4)
		if err != nil {
			return bad(-1, "%v", err)
		}
		c.i32 = unsafe.Slice((*int32)(unsafe.Pointer(unsafe.SliceData(raw))), n)
		max := b.ks.cols[i].maxDay
		for row, v := range c.i32 {
			if c.isValid(row) && (v < 0 || (max >= 0 && v > max)) {
				return bad(row, "day %d is outside the window (0 to %s)", v, dayBound(max))
			}
		}
	case catalog.FieldDays:
		return b.decodeDays(c, d, b.ks.cols[i].maxDay, bad)
	case catalog.FieldString:
		return b.decodeStrings(c, d, b.ks.cols[i].dict, bad)
	default:
		return bad(-1, "unsupported field type %s", f.Type)
	}
	return nil
}

func dayBound(max int32) string {
	if max < 0 {
		return "open"
	}
	return fmt.Sprint(max)
}

func (b *batch) decodeStrings(c *bcol, d arrow.ArrayData, dict *dictionary, bad func(int, string, ...any) error) error {
	n := b.n
	offs, err := offsets(d, n)
	if err != nil {
		return bad(-1, "%v", err)
	}
	var data []byte
	if bufs := d.Buffers(); len(bufs) > 2 && bufs[2] != nil {
		data = bufs[2].Bytes()
	}
	if err := checkOffsets(offs, len(data)); err != nil {
		return bad(-1, "%v", err)
	}
	c.codes = make([]int32, n)
	if !dict.fixed {
		c.local = &localDict{}
	}
	for row := range n {
		if !c.isValid(row) {
			continue
		}
		v := data[offs[row]:offs[row+1]]
		if dict.fixed {
			code, ok := dict.lookup(v)
			if !ok {
				return bad(row, "unknown value %q; want one of %q", clip(v), dict.values)
			}
			c.codes[row] = code + 1
			continue
		}
		if !validToken(v) {
			return bad(row, "%q is not a code (1 to 32 printable characters, no spaces)", clip(v))
		}
		c.codes[row] = c.local.code(v) + 1
	}
	return nil
}

func (b *batch) decodeDays(c *bcol, d arrow.ArrayData, max int32, bad func(int, string, ...any) error) error {
	n := b.n
	offs, err := offsets(d, n)
	if err != nil {
		return bad(-1, "%v", err)
	}
	children := d.Children()
	if len(children) != 1 {
		return bad(-1, "list array has %d children", len(children))
	}
	child := children[0]
	raw, err := fixedWidth(child, 4)
	if err != nil {
		return bad(-1, "list values: %v", err)
	}
	values := unsafe.Slice((*int32)(unsafe.Pointer(unsafe.SliceData(raw))), child.Len())
	if err := checkOffsets(offs, len(values)); err != nil {
		return bad(-1, "%v", err)
	}
	childValid, err := validity(child)
	if err != nil {
		return bad(-1, "list values: %v", err)
	}
	for row := range n {
		prev := int32(-1)
		for j := offs[row]; j < offs[row+1]; j++ {
			v := values[j]
			switch {
			case childValid != nil && !childValid[j]:
				return bad(row, "null day in the list")
			case v < 0 || (max >= 0 && v > max):
				return bad(row, "day %d is outside the window (0 to %s)", v, dayBound(max))
			case v < prev:
				return bad(row, "days are not in ascending order (%d after %d)", v, prev)
			}
			prev = v
		}
	}
	c.offs, c.i32 = offs, values
	return nil
}

// validity reads the validity bitmap of d's rows: nil when every row is
// valid. It trusts the bitmap, not the array's claimed null count.
func validity(d arrow.ArrayData) ([]bool, error) {
	bufs := d.Buffers()
	if len(bufs) == 0 || bufs[0] == nil || bufs[0].Len() == 0 {
		return nil, nil
	}
	off, n := d.Offset(), d.Len()
	bits := bufs[0].Bytes()
	if len(bits) < (off+n+7)/8 {
		return nil, fmt.Errorf("validity bitmap has %d bytes for %d rows", len(bits), off+n)
	}
	if bitutil.CountSetBits(bits, off, n) == n {
		return nil, nil
	}
	valid := make([]bool, n)
	for i := range valid {
		valid[i] = bitutil.BitIsSet(bits, off+i)
	}
	return valid, nil
}

// buffer returns buffer i of d, checking it holds at least size bytes.
func buffer(d arrow.ArrayData, i, size int) ([]byte, error) {
	bufs := d.Buffers()
	if len(bufs) <= i || bufs[i] == nil {
		if size == 0 {
			return nil, nil
		}
		return nil, fmt.Errorf("missing data buffer")
	}
	b := bufs[i].Bytes()
	if len(b) < size {
		return nil, fmt.Errorf("data buffer has %d bytes; %d rows need %d", len(b), d.Len(), size)
	}
	return b, nil
}

// fixedWidth returns the value bytes of d's rows, width bytes each.
func fixedWidth(d arrow.ArrayData, width int) ([]byte, error) {
	off, n := d.Offset(), d.Len()
	b, err := buffer(d, 1, (off+n)*width)
	if err != nil {
		return nil, err
	}
	b = b[off*width : (off+n)*width]
	if (width == 4 || width == 8) && n > 0 && uintptr(unsafe.Pointer(&b[0]))%uintptr(width) != 0 {
		// Arrow buffers are aligned; one that is not was built by hand, and
		// is copied rather than read through a misaligned pointer.
		c := make([]byte, len(b)+width)
		shift := (width - int(uintptr(unsafe.Pointer(&c[0]))%uintptr(width))) % width
		copy(c[shift:], b)
		b = c[shift : shift+len(b)]
	}
	return b, nil
}

// offsets returns the n+1 int32 offsets of a string or list array's rows.
func offsets(d arrow.ArrayData, n int) ([]int32, error) {
	off := d.Offset()
	raw, err := buffer(d, 1, (off+n+1)*4)
	if err != nil {
		return nil, fmt.Errorf("offsets: %v", err)
	}
	raw = raw[off*4 : (off+n+1)*4]
	if uintptr(unsafe.Pointer(&raw[0]))%4 != 0 {
		c := make([]int32, n+1)
		for i := range c {
			c[i] = int32(uint32(raw[4*i]) | uint32(raw[4*i+1])<<8 | uint32(raw[4*i+2])<<16 | uint32(raw[4*i+3])<<24)
		}
		return c, nil
	}
	return unsafe.Slice((*int32)(unsafe.Pointer(&raw[0])), n+1), nil
}

// checkOffsets checks that offsets ascend within a buffer of size elements.
func checkOffsets(offs []int32, size int) error {
	for i, o := range offs {
		if o < 0 || int(o) > size || (i > 0 && o < offs[i-1]) {
			return fmt.Errorf("offset %d at index %d is out of order or outside the %d values", o, i, size)
		}
	}
	return nil
}

// clip shortens a bad value for an error message.
func clip(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "…"
	}
	return string(b)
}
