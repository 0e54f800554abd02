// Package arrowsafe reads Arrow IPC from a peer that is not trusted: a
// connector plugin feeding a node, or a node uploading to the coordinator.
//
// The Arrow reader (arrow/go v17 ipc) was written for honest peers. It
// decodes each message's metadata, a flatbuffer, without checking it, and
// sizes allocations by lengths found there: the fields of a schema, a
// buffer's length. A lying length is an allocation of any size, and a
// failed allocation is a fatal out-of-memory that recover cannot catch,
// so one crafted message would take the whole process down. Lies that
// allocate nothing show up as panics, or as arrays whose offsets point
// outside their data.
//
// So whoever reads untrusted Arrow does four things, all here:
//
//   - VerifyMessage checks each message's flatbuffer before the reader
//     sees it, so every length the reader follows stays inside the
//     metadata; Header.CheckBody checks that a record batch's buffers lie
//     inside its body.
//   - A CappedAllocator refuses any one allocation over a bound the caller
//     knows no honest message needs.
//   - Guard turns what panics are left into errors.
//   - ValidateRecord checks each record the reader returns, so that
//     reading any value of it stays in bounds.
//
// Nothing here knows about the transport; the callers frame the messages
// (node/connector from a byte stream, coordinator/flightsvc from Flight
// DoPut) and say what a refusal means to their peer.
package arrowsafe

import (
	"fmt"

	"github.com/apache/arrow/go/v17/arrow/memory"
)

// PanicError is a panic that Guard recovered.
type PanicError struct {
	Value any // what was passed to panic
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// Unwrap returns the panic's value if it is an error.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// Guard runs f and returns its error. A panic in f is returned as an
// error too: a CappedAllocator's refusal as its *AllocError, anything
// else as a *PanicError.
func Guard(f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			if ae, ok := p.(*AllocError); ok {
				err = ae
				return
			}
			err = &PanicError{Value: p}
		}
	}()
	return f()
}

// AllocError is how a CappedAllocator refuses an allocation: it panics
// with one, since the memory.Allocator interface has no error return.
// Guard returns it as it is; the Arrow reader, which recovers panics
// itself, wraps it in the error it returns, where errors.As finds it.
type AllocError struct {
	Size int   // bytes asked for
	Max  int64 // the allocator's bound
}

func (e *AllocError) Error() string {
	return fmt.Sprintf("an allocation of %d bytes is over the bound of %d", e.Size, e.Max)
}

// CappedAllocator is a memory.Allocator that refuses any one allocation
// of more than its bound. It is the second line, behind VerifyMessage and
// Header.CheckBody: it catches a length inside a message that those do
// not, where a lie would otherwise only exhaust memory.
type CappedAllocator struct {
	max int64
	mem memory.GoAllocator
}

var _ memory.Allocator = (*CappedAllocator)(nil)

// NewCappedAllocator returns an allocator that refuses any one allocation
// of more than max bytes.
func NewCappedAllocator(max int64) *CappedAllocator {
	return &CappedAllocator{max: max}
}

// allocSlack covers the Arrow allocator's rounding of capacities up to a
// multiple of 64 bytes.
const allocSlack = 64

func (a *CappedAllocator) check(size int) {
	if int64(size) > a.max+allocSlack {
		panic(&AllocError{Size: size, Max: a.max})
	}
}

// Allocate allocates size bytes, or panics with an *AllocError.
func (a *CappedAllocator) Allocate(size int) []byte {
	a.check(size)
	return a.mem.Allocate(size)
}

// Reallocate grows or shrinks b to size bytes, or panics with an
// *AllocError.
func (a *CappedAllocator) Reallocate(size int, b []byte) []byte {
	a.check(size)
	return a.mem.Reallocate(size, b)
}

// Free frees b.
func (a *CappedAllocator) Free(b []byte) { a.mem.Free(b) }
