package arrowsafe

import (
	"encoding/binary"
	"fmt"

	"github.com/apache/arrow/go/v17/arrow/ipc"
)

// The Arrow reader decodes each message's metadata, a flatbuffer, without
// checking it, and sizes some allocations by vector lengths found there
// (the fields of a schema, a field's children, key-value metadata, a
// union's type ids). So VerifyMessage checks, before the reader sees a
// message, that each table, vector and string the reader may follow lies
// inside the metadata, which is itself capped at MaxMetadata. Reads that
// stay inside the metadata can at worst panic on nonsense, which Guard
// recovers.
//
// Only schema and record batch messages are accepted. Haven's peers send
// no dictionaries (a dictionary batch is read into memory the reader
// keeps, and every schema Haven expects is dictionary-free), no tensors
// and no compressed buffers (a compressed buffer states its own
// uncompressed size, which nothing here could check before the reader
// allocates it). Field numbers follow format/Message.fbs and
// format/Schema.fbs.

// MaxMetadata is the largest message metadata (the flatbuffer that
// describes a schema or a batch's buffers) VerifyMessage accepts. Real
// ones are a few KiB; the cap bounds what a verified flatbuffer can make
// the reader allocate.
const MaxMetadata = 1 << 20

// maxFieldDepth bounds nested fields; Haven's schemas nest at most a list
// of a primitive.
const maxFieldDepth = 32

// Field type ids whose tables hold vectors or strings (Type union).
const (
	typeTimestamp = 10
	typeUnion     = 14
)

// Header is what VerifyMessage learnt of a message from its metadata.
type Header struct {
	// Type is ipc.MessageSchema or ipc.MessageRecordBatch.
	Type ipc.MessageType
	// BodyLength is the length of the message's body, as the metadata
	// states it; a caller framing the body must check it before it reads
	// that many bytes.
	BodyLength int64

	buffers []bufferSpan // a record batch's buffers, as stated
}

// bufferSpan is a Buffer struct of a record batch: where one buffer lies
// in the body.
type bufferSpan struct{ offset, length int64 }

// CheckBody checks a message's body of n bytes against its metadata: the
// metadata's body length is n, and a record batch's buffers lie inside
// the body, in order and without overlapping. The reader copies each
// buffer out of the body into an allocation of the buffer's stated
// length, so after CheckBody it allocates at most n bytes for the batch.
func (h Header) CheckBody(n int64) error {
	if h.BodyLength != n {
		return fmt.Errorf("a body of %d bytes, but the metadata says %d", n, h.BodyLength)
	}
	var end int64
	for i, b := range h.buffers {
		switch {
		case b.offset < end:
			return fmt.Errorf("buffer %d at %d starts before the end of the one before it, at %d", i, b.offset, end)
		case b.length < 0:
			return fmt.Errorf("buffer %d has length %d", i, b.length)
		case b.length > n-b.offset:
			return fmt.Errorf("buffer %d (%d bytes at %d) runs past the body of %d bytes", i, b.length, b.offset, n)
		}
		end = b.offset + b.length
	}
	return nil
}

// VerifyMessage checks meta, the flatbuffer metadata of one Arrow IPC
// message, as described above, and returns what it says of the message.
// It does not look at the body; see Header.CheckBody.
func VerifyMessage(meta []byte) (Header, error) {
	if len(meta) > MaxMetadata {
		return Header{}, fmt.Errorf("metadata of %d bytes is over the limit of %d", len(meta), MaxMetadata)
	}
	v := fbVerifier{meta}
	root, err := v.u32(0)
	if err != nil {
		return Header{}, err
	}
	m, err := v.table(root)
	if err != nil {
		return Header{}, err
	}
	for _, f := range []struct{ slot, size int }{{0, 2}, {1, 1}, {3, 8}} {
		if err := v.scalar(m, f.slot, f.size); err != nil {
			return Header{}, err
		}
	}
	if err := v.keyValues(m, 4); err != nil {
		return Header{}, err
	}
	var h Header
	if p := v.field(m, 1); p != 0 {
		h.Type = ipc.MessageType(meta[p])
	}
	if p := v.field(m, 3); p != 0 {
		h.BodyLength = int64(binary.LittleEndian.Uint64(meta[p:]))
	}
	at, ok, err := v.ref(m, 2)
	if err != nil {
		return Header{}, err
	}
	if !ok {
		return Header{}, fmt.Errorf("message has no header")
	}
	t, err := v.table(at)
	if err != nil {
		return Header{}, err
	}
	switch h.Type {
	case ipc.MessageSchema:
		err = v.schema(t)
	case ipc.MessageRecordBatch:
		h.buffers, err = v.recordBatch(t)
	default:
		err = fmt.Errorf("%s message: only schema and record batch messages are accepted", h.Type)
	}
	if err != nil {
		return Header{}, err
	}
	return h, nil
}

func (v fbVerifier) schema(s fbTable) error {
	if err := v.scalar(s, 0, 2); err != nil {
		return err
	}
	if err := v.tables(s, 1, func(f fbTable) error { return v.schemaField(f, 0) }); err != nil {
		return err
	}
	if err := v.keyValues(s, 2); err != nil {
		return err
	}
	_, _, err := v.vector(s, 3, 8)
	return err
}

func (v fbVerifier) schemaField(f fbTable, depth int) error {
	if depth > maxFieldDepth {
		return fmt.Errorf("fields nested deeper than %d", maxFieldDepth)
	}
	if _, _, err := v.vector(f, 0, 1); err != nil { // name
		return err
	}
	if err := v.scalar(f, 1, 1); err != nil {
		return err
	}
	if err := v.scalar(f, 2, 1); err != nil {
		return err
	}
	if at, ok, err := v.ref(f, 3); err != nil {
		return err
	} else if ok {
		typ, err := v.table(at)
		if err != nil {
			return err
		}
		var id byte
		if p := v.field(f, 2); p != 0 {
			id = v.b[p]
		}
		switch id {
		case typeTimestamp: // timezone
			if _, _, err := v.vector(typ, 1, 1); err != nil {
				return err
			}
		case typeUnion: // typeIds
			if _, _, err := v.vector(typ, 1, 4); err != nil {
				return err
			}
		}
	}
	if _, ok, err := v.ref(f, 4); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("dictionary-encoded field: dictionaries are not accepted")
	}
	if err := v.tables(f, 5, func(c fbTable) error { return v.schemaField(c, depth+1) }); err != nil {
		return err
	}
	return v.keyValues(f, 6)
}

func (v fbVerifier) recordBatch(r fbTable) ([]bufferSpan, error) {
	if err := v.scalar(r, 0, 8); err != nil {
		return nil, err
	}
	if _, _, err := v.vector(r, 1, 16); err != nil { // FieldNode structs
		return nil, err
	}
	start, n, err := v.vector(r, 2, 16) // Buffer structs
	if err != nil {
		return nil, err
	}
	if p := v.field(r, 3); p != 0 {
		return nil, fmt.Errorf("compressed record batch: only uncompressed batches are accepted")
	}
	if _, _, err := v.vector(r, 4, 8); err != nil {
		return nil, err
	}
	buffers := make([]bufferSpan, n)
	for i := range buffers {
		at := start + 16*i // inside the checked vector
		buffers[i] = bufferSpan{
			offset: int64(binary.LittleEndian.Uint64(v.b[at:])),
			length: int64(binary.LittleEndian.Uint64(v.b[at+8:])),
		}
	}
	return buffers, nil
}

type fbTable struct {
	pos    int // start of the table
	vt     int // start of its vtable
	vtSize int // bytes in the vtable
	inline int // bytes of the table's inline data
}

type fbVerifier struct{ b []byte }

func (v fbVerifier) u32(at int) (int, error) {
	if at < 0 || at+4 > len(v.b) {
		return 0, fmt.Errorf("offset %d outside %d bytes", at, len(v.b))
	}
	return int(binary.LittleEndian.Uint32(v.b[at:])), nil
}

func (v fbVerifier) table(pos int) (fbTable, error) {
	soff, err := v.u32(pos)
	if err != nil {
		return fbTable{}, err
	}
	t := fbTable{pos: pos, vt: pos - int(int32(uint32(soff)))}
	if t.vt < 0 || t.vt+4 > len(v.b) {
		return fbTable{}, fmt.Errorf("vtable at %d outside %d bytes", t.vt, len(v.b))
	}
	t.vtSize = int(binary.LittleEndian.Uint16(v.b[t.vt:]))
	t.inline = int(binary.LittleEndian.Uint16(v.b[t.vt+2:]))
	if t.vtSize < 4 || t.vtSize%2 != 0 || t.vt+t.vtSize > len(v.b) {
		return fbTable{}, fmt.Errorf("vtable of %d bytes at %d", t.vtSize, t.vt)
	}
	if t.inline < 4 || pos+t.inline > len(v.b) {
		return fbTable{}, fmt.Errorf("table of %d bytes at %d", t.inline, pos)
	}
	for slot := 0; 4+2*slot < t.vtSize; slot++ {
		if off := int(binary.LittleEndian.Uint16(v.b[t.vt+4+2*slot:])); off >= t.inline {
			return fbTable{}, fmt.Errorf("field %d at %d outside its table of %d bytes", slot, off, t.inline)
		}
	}
	return t, nil
}

// field returns where slot's inline data starts, or 0 if it is absent.
func (v fbVerifier) field(t fbTable, slot int) int {
	at := 4 + 2*slot
	if at+2 > t.vtSize {
		return 0
	}
	off := int(binary.LittleEndian.Uint16(v.b[t.vt+at:]))
	if off == 0 {
		return 0
	}
	return t.pos + off
}

// scalar checks that slot's value of size bytes lies inside its table.
func (v fbVerifier) scalar(t fbTable, slot, size int) error {
	if p := v.field(t, slot); p != 0 && p+size > t.pos+t.inline {
		return fmt.Errorf("field %d runs past its table", slot)
	}
	return nil
}

// ref follows slot's offset to what it refers to.
func (v fbVerifier) ref(t fbTable, slot int) (target int, ok bool, err error) {
	p := v.field(t, slot)
	if p == 0 {
		return 0, false, nil
	}
	if err := v.scalar(t, slot, 4); err != nil {
		return 0, false, err
	}
	off, err := v.u32(p)
	if err != nil {
		return 0, false, err
	}
	return p + off, true, nil
}

// vector checks slot's vector of n elements of size bytes and returns
// where its elements start.
func (v fbVerifier) vector(t fbTable, slot, size int) (start, n int, err error) {
	at, ok, err := v.ref(t, slot)
	if err != nil || !ok {
		return 0, 0, err
	}
	if n, err = v.u32(at); err != nil {
		return 0, 0, err
	}
	if int64(at)+4+int64(n)*int64(size) > int64(len(v.b)) {
		return 0, 0, fmt.Errorf("vector of %d elements at %d outside %d bytes", n, at, len(v.b))
	}
	return at + 4, n, nil
}

// tables checks slot's vector of tables with each.
func (v fbVerifier) tables(t fbTable, slot int, each func(fbTable) error) error {
	start, n, err := v.vector(t, slot, 4)
	if err != nil {
		return err
	}
	for i := range n {
		at := start + 4*i
		off, _ := v.u32(at) // inside the checked vector
		elem, err := v.table(at + off)
		if err != nil {
			return err
		}
		if err := each(elem); err != nil {
			return err
		}
	}
	return nil
}

func (v fbVerifier) keyValues(t fbTable, slot int) error {
	return v.tables(t, slot, func(kv fbTable) error {
		if _, _, err := v.vector(kv, 0, 1); err != nil {
			return err
		}
		_, _, err := v.vector(kv, 1, 1)
		return err
	})
}
