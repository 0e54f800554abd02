package arrowsafe

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/ipc"
)

func TestGuard(t *testing.T) {
	sentinel := errors.New("read failed")
	tests := []struct {
		name  string
		f     func() error
		check func(error) bool
	}{
		{"no panic", func() error { return nil }, func(err error) bool { return err == nil }},
		{"error", func() error { return sentinel }, func(err error) bool { return err == sentinel }},
		{"panic", func() error { panic("nonsense") }, func(err error) bool {
			pe, ok := errors.AsType[*PanicError](err)
			return ok && pe.Value == "nonsense" && strings.Contains(err.Error(), "nonsense")
		}},
		{"runtime error", func() error {
			var b []byte
			_ = b[len(b)+3]
			return nil
		}, func(err error) bool {
			_, ok := errors.AsType[*PanicError](err)
			return ok && strings.Contains(err.Error(), "index out of range")
		}},
		{"panic with an error", func() error { panic(sentinel) }, func(err error) bool { return errors.Is(err, sentinel) }},
		{"allocator refusal", func() error { NewCappedAllocator(100).Allocate(1 << 40); return nil }, func(err error) bool {
			ae, ok := err.(*AllocError)
			return ok && ae.Size == 1<<40 && ae.Max == 100
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Guard(tt.f); !tt.check(err) {
				t.Errorf("Guard returned %v (%T)", err, err)
			}
		})
	}
}

func TestCappedAllocator(t *testing.T) {
	a := NewCappedAllocator(1000)
	b := a.Allocate(1000 + allocSlack)
	if len(b) != 1000+allocSlack {
		t.Fatalf("allocated %d bytes", len(b))
	}
	b = a.Reallocate(10, b)
	a.Free(b)
	if err := Guard(func() error { a.Reallocate(2000, nil); return nil }); err == nil {
		t.Error("a reallocation over the bound was allowed")
	}

	// Through the Arrow reader, which recovers the panic and wraps it.
	rec := havenRecord(500)
	defer rec.Release()
	data := encode(t, havenSchema, []arrow.Record{rec})
	read := func(max int64) error {
		return Guard(func() error {
			rdr, err := ipc.NewReader(strings.NewReader(string(data)), ipc.WithAllocator(NewCappedAllocator(max)))
			if err != nil {
				return err
			}
			defer rdr.Release()
			for rdr.Next() {
			}
			if err := rdr.Err(); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			return nil
		})
	}
	if err := read(1 << 20); err != nil {
		t.Fatalf("under a generous bound: %v", err)
	}
	err := read(1000)
	if ae, ok := errors.AsType[*AllocError](err); !ok || ae.Max != 1000 {
		t.Errorf("a 500-row batch under a 1000-byte bound: %v, want an *AllocError", err)
	}
}
