package connector

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	connectorv1 "github.com/havenhealth/haven/proto/haven/connector/v1"
)

// chunkSize is the most Arrow IPC bytes sent in one gRPC message: well
// under gRPC's 4 MiB default, big enough that per-message cost vanishes.
const chunkSize = 256 << 10

// server is the plugin side of the protocol: it decodes requests, hands
// typed values to the Backend and streams what the Backend writes.
type server struct {
	connectorv1.UnimplementedConnectorServer
	backend Backend
	logger  *slog.Logger
}

func newServer(b Backend, logger *slog.Logger) *server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &server{backend: b, logger: logger}
}

func (s *server) Describe(ctx context.Context, _ *connectorv1.DescribeRequest) (*connectorv1.DescribeResponse, error) {
	d, err := s.backend.Describe(ctx)
	if err != nil {
		s.logger.Warn("describe failed", "error", err)
		return nil, toStatus(ctx, err)
	}
	return descriptionToProto(d), nil
}

func (s *server) Query(req *connectorv1.QueryRequest, stream grpc.ServerStreamingServer[connectorv1.QueryResponse]) error {
	ctx := stream.Context()
	q, err := queryFromProto(req)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "query: %v", err)
	}
	began := time.Now()
	version := s.dataVersion()
	w := &chunkWriter{stream: stream, max: q.MaxBytes}
	stopFlusher := w.flushEvery(flushInterval)
	err = s.backend.Query(ctx, q, w)
	if after := s.dataVersion(); after != version {
		version = "" // the data changed as the query read it
	}
	stopFlusher()
	if err == nil {
		err = w.flush()
	}
	if w.limit != nil {
		// The backend may have wrapped the error beyond recognition (an
		// Arrow writer's message); the writer knows what happened.
		err = w.limit
	}
	if err == nil {
		err = stream.Send(&connectorv1.QueryResponse{Part: &connectorv1.QueryResponse_Done{Done: &connectorv1.QueryDone{Bytes: w.total, DataVersion: version}}})
	}
	// Neither the arguments nor the error's text are logged: either may
	// quote a value that identifies someone (a database's conversion
	// error names the value it choked on). The node gets the text and
	// decides where it may go.
	attrs := []any{"bytes", w.total, "args", len(q.Args), "elapsed", time.Since(began).Round(time.Microsecond)}
	if err != nil {
		st := toStatus(ctx, err)
		s.logger.Info("query stopped", append(attrs, "code", status.Code(st).String())...)
		return st
	}
	s.logger.Debug("query done", attrs...)
	return nil
}

// dataVersion is the backend's data version, or "" when it has none or
// cannot tell.
func (s *server) dataVersion() string {
	dv, ok := s.backend.(DataVersioner)
	if !ok {
		return ""
	}
	v, err := dv.DataVersion()
	if err != nil || len(v) > MaxDataVersion {
		if err != nil {
			s.logger.Warn("data version unknown", "error", err)
		}
		return ""
	}
	return v
}

// toStatus turns a backend's error into the status the host reads: a
// crossed limit with its detail, a cancellation as such, anything else
// with its message.
func toStatus(ctx context.Context, err error) error {
	if le, ok := errors.AsType[*LimitError](err); ok {
		st := status.New(codes.ResourceExhausted, le.Error())
		if withDetail, derr := st.WithDetails(&connectorv1.LimitExceeded{Limit: string(le.Limit), Max: le.Max}); derr == nil {
			st = withDetail
		}
		return st.Err()
	}
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Unknown, err.Error())
}

// chunkWriter cuts the Backend's Arrow IPC stream into messages and holds
// it to the byte limit. A full chunk goes at once; a partial one goes
// within flushInterval, so a slow query's first rows are not held back.
type chunkWriter struct {
	stream grpc.ServerStreamingServer[connectorv1.QueryResponse]
	max    int64

	mu    sync.Mutex
	total int64 // bytes accepted
	buf   []byte
	limit *LimitError
	err   error // the first Send error, sticky
}

// flushInterval is the longest a partial chunk waits to be sent.
const flushInterval = 50 * time.Millisecond

func (w *chunkWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.limit != nil:
		return 0, w.limit
	case w.err != nil:
		return 0, w.err
	case w.total+int64(len(p)) > w.max:
		w.limit = &LimitError{Limit: LimitBytes, Max: w.max}
		return 0, w.limit
	}
	w.total += int64(len(p))
	n := len(p)
	for len(p) > 0 {
		if w.buf == nil {
			w.buf = make([]byte, 0, chunkSize)
		}
		k := min(len(p), chunkSize-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		if len(w.buf) == chunkSize {
			if err := w.flushLocked(); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

// flushEvery sends partial chunks every d until the returned func is
// called; that func returns once the flusher has stopped.
func (w *chunkWriter) flushEvery(d time.Duration) (stop func()) {
	quit, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				_ = w.flush() // a failed Send is sticky: the next Write reports it
			}
		}
	}()
	return func() {
		close(quit)
		<-stopped
	}
}

func (w *chunkWriter) flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flushLocked()
}

// flushLocked sends what is buffered. Each message gets its own buffer:
// gRPC may read a sent message after Send returns.
func (w *chunkWriter) flushLocked() error {
	if w.err != nil {
		return w.err
	}
	if len(w.buf) == 0 {
		return nil
	}
	msg := &connectorv1.QueryResponse{Part: &connectorv1.QueryResponse_ArrowIpc{ArrowIpc: w.buf}}
	w.buf = nil
	w.err = w.stream.Send(msg)
	return w.err
}
