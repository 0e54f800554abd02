package arrowsafe

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/havenhealth/haven/internal/arrowsafe/arrowsafetest"
)

// Every message the Arrow writer makes of Haven's types passes, and what
// VerifyMessage reads is what the Arrow reader reads.
func TestVerifyMessageAcceptsWriterOutput(t *testing.T) {
	recs := []arrow.Record{havenRecord(0), havenRecord(1), havenRecord(100)}
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	msgs := split(t, encode(t, havenSchema, recs))
	if len(msgs) != 4 {
		t.Fatalf("%d messages, want 4", len(msgs))
	}
	for i, m := range msgs {
		h, err := VerifyMessage(m.meta)
		if err != nil {
			t.Fatalf("message %d refused: %v", i, err)
		}
		msg := ipc.NewMessage(memory.NewBufferBytes(m.meta), memory.NewBufferBytes(m.body))
		if h.Type != msg.Type() || h.BodyLength != msg.BodyLen() {
			t.Errorf("message %d: read %s of %d bytes, the Arrow reader %s of %d", i, h.Type, h.BodyLength, msg.Type(), msg.BodyLen())
		}
		msg.Release()
		if err := h.CheckBody(int64(len(m.body))); err != nil {
			t.Errorf("message %d: body refused: %v", i, err)
		}
	}
}

// Type tables that hold a string (a timestamp's time zone) or a vector (a
// union's type ids) are followed too.
func TestVerifyMessageTypeTables(t *testing.T) {
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "t", Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "Europe/London"}},
		{Name: "u", Type: arrow.SparseUnionOf([]arrow.Field{{Name: "a", Type: arrow.PrimitiveTypes.Int64}}, []arrow.UnionTypeCode{5})},
	}, nil)
	meta := split(t, encode(t, schema, nil))[0].meta
	if _, err := VerifyMessage(meta); err != nil {
		t.Fatalf("refused: %v", err)
	}
	// Cut the metadata short of each of its last bytes, where the type
	// tables lie: each cut is refused, none panics.
	for n := len(meta) - 64; n < len(meta)-8; n++ {
		if _, err := VerifyMessage(meta[:n]); err == nil {
			t.Errorf("metadata cut to %d of %d bytes accepted", n, len(meta))
		}
	}
}

func TestVerifyMessageRefuses(t *testing.T) {
	schema, batch := havenMessages(t)

	// A schema with a dictionary-encoded field, and a compressed batch,
	// as the Arrow writer makes them.
	dictType := &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int8, ValueType: arrow.BinaryTypes.String}
	dictSchema := split(t, encode(t, arrow.NewSchema([]arrow.Field{{Name: "sex", Type: dictType}}, nil), nil))[0]
	dictBatch, _ := arrowsafetest.DictionaryBatch(t)
	rec := havenRecord(50)
	defer rec.Release()
	compressed := split(t, encode(t, havenSchema, []arrow.Record{rec}, ipc.WithLZ4()))

	tests := []struct {
		name string
		meta []byte
		want string
	}{
		{"empty", nil, "outside"},
		{"too short", []byte{1, 2, 3}, "outside"},
		{"root outside", []byte{0xff, 0xff, 0, 0, 0, 0, 0, 0}, "outside"},
		{"vtable outside", []byte{4, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f}, "vtable"},
		{"truncated schema", schema.meta[:len(schema.meta)/2], "outside"},
		{"truncated batch", batch.meta[:len(batch.meta)-40], "outside"},
		{"lying field count", arrowsafetest.SetFieldCount(t, schema.meta, 1<<30), "vector of 1073741824 elements"},
		{"lying buffer count", arrowsafetest.SetBufferCount(t, batch.meta, 0x7fffffff), "vector of 2147483647 elements"},
		{"too big", make([]byte, MaxMetadata+8), "over the limit"},
		{"dictionary-encoded field", dictSchema.meta, "dictionary-encoded field"},
		{"dictionary batch", dictBatch, "DictionaryBatch message"},
		{"compressed batch", compressed[1].meta, "compressed record batch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := VerifyMessage(tt.meta)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to say %q", err, tt.want)
			}
		})
	}
}

// The body length is read with every offset checked; a message without
// the field has no body.
func TestVerifyMessageBodyLength(t *testing.T) {
	schema, batch := havenMessages(t)
	for name, m := range map[string]message{"schema": schema, "batch": batch} {
		h, err := VerifyMessage(m.meta)
		if err != nil || h.BodyLength != int64(len(m.body)) {
			t.Errorf("%s: body length %d, %v; want %d", name, h.BodyLength, err, len(m.body))
		}
	}
	lying := arrowsafetest.SetBodyLength(t, batch.meta, 240<<30)
	if h, err := VerifyMessage(lying); err != nil || h.BodyLength != 240<<30 {
		t.Errorf("a lying body length is the caller's to check: %d, %v", h.BodyLength, err)
	}
}

func TestCheckBody(t *testing.T) {
	_, batch := havenMessages(t)
	n := int64(len(batch.body))
	// Buffer 1 is the first column's values: it has some length.
	h, _ := VerifyMessage(batch.meta)
	first := h.buffers[1]
	tests := []struct {
		name string
		meta []byte
		body int64
		want string
	}{
		{"lying buffer length", arrowsafetest.SetBuffer(t, batch.meta, 1, first.offset, 240<<30), n, "runs past the body"},
		{"buffer beyond the body", arrowsafetest.SetBuffer(t, batch.meta, 1, n+64, 8), n, "runs past the body"},
		{"negative buffer length", arrowsafetest.SetBuffer(t, batch.meta, 1, first.offset, -8), n, "has length -8"},
		{"negative buffer offset", arrowsafetest.SetBuffer(t, batch.meta, 1, -8, first.length), n, "starts before"},
		{"overlapping buffers", arrowsafetest.SetBuffer(t, batch.meta, 3, first.offset, first.length), n, "starts before the end"},
		{"truncated body", batch.meta, n - 8, "the metadata says"},
		{"lying body length", arrowsafetest.SetBodyLength(t, batch.meta, n+8), n, "the metadata says"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := VerifyMessage(tt.meta)
			if err != nil {
				t.Fatalf("metadata refused: %v", err)
			}
			err = h.CheckBody(tt.body)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to say %q", err, tt.want)
			}
		})
	}
}

// TestVerifyMessageSurvivesCorruption flips each byte of real metadata and
// cuts it at each length. VerifyMessage must not panic, and what it
// accepts the Arrow reader reads without a fatal allocation.
func TestVerifyMessageSurvivesCorruption(t *testing.T) {
	schema, batch := havenMessages(t)
	for _, m := range []message{schema, batch} {
		for i := range m.meta {
			bad := bytes.Clone(m.meta)
			bad[i] ^= 0xA5
			readMessages(t, schema, message{bad, m.body})
		}
		for n := range len(m.meta) {
			if _, err := VerifyMessage(m.meta[:n]); err == nil && n < 8 {
				t.Errorf("metadata of %d bytes accepted", n)
			}
		}
	}
}

func FuzzVerifyMessage(f *testing.F) {
	schema, batch := havenMessages(f)
	f.Add(schema.meta, schema.body)
	f.Add(batch.meta, batch.body)
	f.Fuzz(func(t *testing.T, meta, body []byte) {
		readMessages(t, schema, message{meta, body})
	})
}

// readMessages reads msgs, as a careful reader would: each verified, the
// body checked, a capped allocator, reads guarded, records validated. The
// schema message comes first unless m is one itself. Reading may fail; it
// must not crash.
func readMessages(t *testing.T, schema, m message) {
	t.Helper()
	msgs := []message{schema, m}
	if h, err := VerifyMessage(m.meta); err == nil && h.Type == ipc.MessageSchema {
		msgs = msgs[1:]
	}
	for _, m := range msgs {
		h, err := VerifyMessage(m.meta)
		if err != nil {
			return
		}
		if h.CheckBody(int64(len(m.body))) != nil {
			return
		}
	}
	src := &messageSource{msgs: msgs}
	_ = Guard(func() error {
		rdr, err := ipc.NewReaderFromMessageReader(src, ipc.WithAllocator(NewCappedAllocator(1<<20)))
		if err != nil {
			return err
		}
		defer rdr.Release()
		for rdr.Next() {
			rec := rdr.Record()
			if err := ValidateRecord(rec); err != nil {
				return err
			}
			for _, col := range rec.Columns() {
				for i := range col.Len() {
					_ = col.ValueStr(i)
				}
			}
		}
		return rdr.Err()
	})
}

// messageSource is an ipc.MessageReader over messages in memory.
type messageSource struct {
	msgs []message
	cur  *ipc.Message
}

func (s *messageSource) Message() (*ipc.Message, error) {
	if s.cur != nil {
		s.cur.Release()
		s.cur = nil
	}
	if len(s.msgs) == 0 {
		return nil, io.EOF
	}
	m := s.msgs[0]
	s.msgs = s.msgs[1:]
	s.cur = ipc.NewMessage(memory.NewBufferBytes(m.meta), memory.NewBufferBytes(m.body))
	return s.cur, nil
}

func (s *messageSource) Retain() {}
func (s *messageSource) Release() {
	if s.cur != nil {
		s.cur.Release()
		s.cur = nil
	}
}
