package connector

import (
	"encoding/binary"
	"fmt"
	"io"

	"google.golang.org/grpc"

	"github.com/havenhealth/haven/internal/arrowsafe"
	connectorv1 "github.com/havenhealth/haven/proto/haven/connector/v1"
)

// maxMetadata is the largest Arrow message metadata (the flatbuffer that
// describes a schema or a batch's buffers) the host accepts: checked in
// the framing, it stops a lying length before anyone allocates it.
const maxMetadata = arrowsafe.MaxMetadata

// streamSource reads the Arrow IPC bytes out of a Query stream for the
// Arrow reader. On the way it counts them against the byte limit and
// follows the IPC framing (continuation, metadata length, metadata, body),
// checking every length against what the limit still allows before the
// reader, which believes lengths, allocates for it.
type streamSource struct {
	stream grpc.ServerStreamingClient[connectorv1.QueryResponse]
	max    int64
	total  int64 // bytes received
	read   int64 // bytes handed to the reader
	buf    []byte
	done   *connectorv1.QueryDone
	err    error // the first error met, sticky

	// Framing state.
	state  frameState
	need   int64 // bytes left in the current segment
	prefix [8]byte
	meta   []byte
}

type frameState uint8

const (
	framePrefix frameState = iota // continuation token and metadata length
	frameMeta                     // the message's flatbuffer
	frameBody                     // the message's body
	frameEnded                    // after the end-of-stream marker
)

func (s *streamSource) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for len(s.buf) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		if s.done != nil {
			return 0, io.EOF
		}
		if err := s.recv(); err != nil {
			s.err = err
			return 0, err
		}
	}
	if s.state == framePrefix && s.need == 0 {
		s.need = int64(len(s.prefix))
	}
	if s.state == frameEnded {
		s.err = fmt.Errorf("%w: %d bytes after the end of the Arrow stream", ErrMalformedResult, len(s.buf))
		return 0, s.err
	}
	// Hand over no more than the current segment, so each length is
	// checked before the bytes that carry it reach the reader.
	n := int(min(int64(len(p)), int64(len(s.buf)), s.need))
	if err := s.frame(s.buf[:n]); err != nil {
		s.err = err
		return 0, err
	}
	copy(p, s.buf[:n])
	s.buf = s.buf[n:]
	s.read += int64(n)
	return n, nil
}

// frame follows b, the next bytes of the current segment, and checks the
// segment when b completes it.
func (s *streamSource) frame(b []byte) error {
	s.need -= int64(len(b))
	switch s.state {
	case framePrefix:
		at := len(s.prefix) - int(s.need) - len(b)
		copy(s.prefix[at:], b)
		if s.need > 0 {
			return nil
		}
		if cont := binary.LittleEndian.Uint32(s.prefix[:4]); cont != 0xFFFFFFFF {
			return fmt.Errorf("%w: no Arrow IPC continuation token (got %#08x)", ErrMalformedResult, cont)
		}
		n := int32(binary.LittleEndian.Uint32(s.prefix[4:]))
		switch {
		case n == 0:
			s.state = frameEnded
			return nil
		case n < 0 || n%8 != 0 || n > maxMetadata:
			return fmt.Errorf("%w: Arrow message metadata length %d", ErrMalformedResult, n)
		case int64(n) > s.budget(len(b)):
			return &LimitError{Limit: LimitBytes, Max: s.max}
		}
		s.state, s.need = frameMeta, int64(n)
		s.meta = s.meta[:0]
	case frameMeta:
		s.meta = append(s.meta, b...)
		if s.need > 0 {
			return nil
		}
		h, err := arrowsafe.VerifyMessage(s.meta)
		if err != nil {
			return fmt.Errorf("%w: Arrow message metadata: %v", ErrMalformedResult, err)
		}
		switch body := h.BodyLength; {
		case body < 0 || body%8 != 0:
			return fmt.Errorf("%w: Arrow message body length %d", ErrMalformedResult, body)
		case body > s.budget(len(b)):
			return &LimitError{Limit: LimitBytes, Max: s.max}
		case body == 0:
			s.state, s.need = framePrefix, 0
		default:
			s.state, s.need = frameBody, body
		}
	case frameBody:
		if s.need == 0 {
			s.state = framePrefix
		}
	}
	return nil
}

// budget is how many more bytes the stream may carry after the n bytes
// being handed over now.
func (s *streamSource) budget(n int) int64 { return s.max - s.read - int64(n) }

// recv takes the next message off the stream.
func (s *streamSource) recv() error {
	msg, err := s.stream.Recv()
	if err == io.EOF {
		return fmt.Errorf("%w: the stream ended without the plugin saying it was complete", ErrMalformedResult)
	}
	if err != nil {
		return err
	}
	switch part := msg.GetPart().(type) {
	case *connectorv1.QueryResponse_ArrowIpc:
		if s.total+int64(len(part.ArrowIpc)) > s.max {
			return &LimitError{Limit: LimitBytes, Max: s.max}
		}
		s.total += int64(len(part.ArrowIpc))
		s.buf = part.ArrowIpc
	case *connectorv1.QueryResponse_Done:
		s.done = part.Done
	default:
		return fmt.Errorf("%w: empty message in the stream", ErrMalformedResult)
	}
	return nil
}

// finish is called once the Arrow reader has seen the end of the stream.
// It checks that the stream ended as a complete one: the end-of-stream
// marker, then the plugin's QueryDone counting exactly the bytes received,
// then the end of the call.
func (s *streamSource) finish() error {
	if s.err != nil {
		return s.err
	}
	if s.state != frameEnded {
		return fmt.Errorf("%w: the Arrow stream has no end-of-stream marker", ErrMalformedResult)
	}
	for s.done == nil || len(s.buf) > 0 {
		if len(s.buf) > 0 {
			return fmt.Errorf("%w: %d bytes after the end of the Arrow stream", ErrMalformedResult, len(s.buf))
		}
		if err := s.recv(); err != nil {
			s.err = err
			return err
		}
	}
	if s.done.GetBytes() != s.total {
		return fmt.Errorf("%w: plugin says it sent %d bytes, %d arrived", ErrMalformedResult, s.done.GetBytes(), s.total)
	}
	if n := len(s.done.GetDataVersion()); n > MaxDataVersion {
		return fmt.Errorf("%w: a data version of %d bytes", ErrMalformedResult, n)
	}
	if _, err := s.stream.Recv(); err != io.EOF {
		if err == nil {
			return fmt.Errorf("%w: messages after the end of the result", ErrMalformedResult)
		}
		s.err = err
		return err
	}
	return nil
}
