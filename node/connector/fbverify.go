package connector

import (
	"encoding/binary"
	"fmt"
)

// The Arrow reader decodes each message's metadata, a flatbuffer, without
// checking it, and sizes some allocations by vector lengths found there
// (the fields of a schema, a field's children, key-value metadata, a
// union's type ids). A lying length is an allocation of any size, and a
// failed allocation kills the process. So the host verifies every
// message's flatbuffer before the reader sees it: each table, vector and
// string that the reader may follow must lie inside the buffer, which is
// itself capped at maxMetadata. Reads that stay inside the buffer can at
// worst panic on nonsense, which guard recovers.
//
// Only schema and record batch messages are accepted: connectors send no
// dictionaries, tensors or compressed buffers. Field numbers follow
// format/Message.fbs and format/Schema.fbs.

// maxFieldDepth bounds nested fields; results nest at most a list of
// strings.
const maxFieldDepth = 32

// Message header types (MessageHeader union).
const (
	headerSchema      = 1
	headerRecordBatch = 3
)

// Field type ids whose tables hold vectors or strings (Type union).
const (
	typeTimestamp = 10
	typeUnion     = 14
)

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

// verifyMessage checks an Arrow Message flatbuffer (the metadata of one
// IPC message) as described above.
func verifyMessage(b []byte) error {
	v := fbVerifier{b}
	root, err := v.u32(0)
	if err != nil {
		return err
	}
	m, err := v.table(root)
	if err != nil {
		return err
	}
	for _, f := range []struct{ slot, size int }{{0, 2}, {1, 1}, {3, 8}} {
		if err := v.scalar(m, f.slot, f.size); err != nil {
			return err
		}
	}
	if err := v.keyValues(m, 4); err != nil {
		return err
	}
	var kind byte
	if p := v.field(m, 1); p != 0 {
		kind = b[p]
	}
	at, ok, err := v.ref(m, 2)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("message has no header")
	}
	h, err := v.table(at)
	if err != nil {
		return err
	}
	switch kind {
	case headerSchema:
		return v.schema(h)
	case headerRecordBatch:
		return v.recordBatch(h)
	}
	return fmt.Errorf("message type %d: connectors send only schemas and record batches", kind)
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
		return fmt.Errorf("dictionary-encoded field: connectors send no dictionaries")
	}
	if err := v.tables(f, 5, func(c fbTable) error { return v.schemaField(c, depth+1) }); err != nil {
		return err
	}
	return v.keyValues(f, 6)
}

func (v fbVerifier) recordBatch(r fbTable) error {
	if err := v.scalar(r, 0, 8); err != nil {
		return err
	}
	if _, _, err := v.vector(r, 1, 16); err != nil { // FieldNode structs
		return err
	}
	if _, _, err := v.vector(r, 2, 16); err != nil { // Buffer structs
		return err
	}
	if p := v.field(r, 3); p != 0 {
		return fmt.Errorf("compressed record batch: connectors send uncompressed batches")
	}
	_, _, err := v.vector(r, 4, 8)
	return err
}
