package connector

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	connectorv1 "github.com/havenhealth/haven/proto/haven/connector/v1"
)

// exitGrace is how long a failed call waits to learn whether the plugin
// process died: the connection drops a moment before go-plugin reaps it.
const exitGrace = 2 * time.Second

// grpcClient is the host side of the protocol. It trusts nothing the
// plugin sends: descriptions are validated, result streams are checked
// message by message (see Result).
type grpcClient struct {
	rpc    connectorv1.ConnectorClient
	exited <-chan struct{} // closed once the plugin process has exited

	// Timeouts for a Describe call and for a whole Query result; zero
	// means none. Host sets them.
	describeTimeout time.Duration
	queryTimeout    time.Duration
}

func (c *grpcClient) Describe(ctx context.Context) (Description, error) {
	cctx, cancel := withTimeout(ctx, c.describeTimeout)
	defer cancel()
	resp, err := c.rpc.Describe(cctx, &connectorv1.DescribeRequest{})
	if err != nil {
		return Description{}, c.callError(ctx, cctx, "describe", c.describeTimeout, err)
	}
	d := descriptionFromProto(resp)
	if err := d.validate(); err != nil {
		return Description{}, fmt.Errorf("connector describe: %w: %v", ErrMalformedResult, err)
	}
	return d, nil
}

// Query starts q and returns once the result's schema has arrived, so a
// statement the plugin rejects fails here rather than at the first Next.
func (c *grpcClient) Query(ctx context.Context, q Query) (*Result, error) {
	if q.SQL == "" {
		return nil, errors.New("connector query: no SQL")
	}
	q = q.withDefaults()
	req, err := queryToProto(q)
	if err != nil {
		return nil, fmt.Errorf("connector query: %w", err)
	}
	cctx, cancel := withTimeout(ctx, c.queryTimeout)
	stream, err := c.rpc.Query(cctx, req)
	if err != nil {
		cancel()
		return nil, c.callError(ctx, cctx, "query", c.queryTimeout, err)
	}
	return c.newResult(ctx, cctx, cancel, stream, q)
}

// newResult reads the schema off stream, the call started with cctx (ctx
// plus the query timeout), whose cancel stops it.
func (c *grpcClient) newResult(ctx, cctx context.Context, cancel context.CancelFunc, stream grpc.ServerStreamingClient[connectorv1.QueryResponse], q Query) (*Result, error) {
	r := &Result{
		c:       c,
		parent:  ctx,
		ctx:     cctx,
		cancel:  cancel,
		src:     &streamSource{stream: stream, max: q.MaxBytes},
		maxRows: q.MaxRows,
	}
	if err := r.open(q); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// callError turns a failed call into the error the node sees: a crossed
// limit, a timeout or cancellation, a plugin that died, or the plugin's
// own error message.
func (c *grpcClient) callError(parent, call context.Context, op string, timeout time.Duration, err error) error {
	if errors.Is(err, ErrLimitExceeded) || errors.Is(err, ErrMalformedResult) {
		return fmt.Errorf("connector %s: %w", op, err)
	}
	st, _ := status.FromError(err)
	if st.Code() == codes.DeadlineExceeded || st.Code() == codes.Canceled {
		// gRPC's own deadline timer may fire a moment before the
		// context's; let the context catch up before asking it why.
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-call.Done():
		case <-t.C:
		}
		t.Stop()
	}
	switch {
	case st.Code() == codes.ResourceExhausted:
		for _, d := range st.Details() {
			if le, ok := d.(*connectorv1.LimitExceeded); ok && (le.GetLimit() == string(LimitRows) || le.GetLimit() == string(LimitBytes)) {
				return fmt.Errorf("connector %s: %w", op, &LimitError{Limit: Limit(le.GetLimit()), Max: le.GetMax()})
			}
		}
	case parent.Err() != nil:
		return fmt.Errorf("connector %s: %w", op, parent.Err())
	case errors.Is(call.Err(), context.DeadlineExceeded):
		return fmt.Errorf("connector %s: no answer from the plugin within %v: %w", op, timeout, context.DeadlineExceeded)
	}
	if c.hasExited(st.Code()) {
		return fmt.Errorf("connector %s: %w (%s)", op, ErrPluginExited, st.Message())
	}
	return fmt.Errorf("connector %s: plugin error: %s (%s)", op, st.Message(), st.Code())
}

// hasExited reports whether the plugin process is gone. After a transport
// failure it waits a moment for go-plugin to notice the exit.
func (c *grpcClient) hasExited(code codes.Code) bool {
	select {
	case <-c.exited:
		return true
	default:
	}
	if code != codes.Unavailable && code != codes.Canceled && code != codes.Internal {
		return false
	}
	t := time.NewTimer(exitGrace)
	defer t.Stop()
	select {
	case <-c.exited:
		return true
	case <-t.C:
		return false
	}
}

func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// Result is a query's result, read record by record as it streams in from
// the plugin. It is not safe for concurrent use. Close it when done, or to
// stop the query early.
//
//	res, err := conn.Query(ctx, q)
//	if err != nil { ... }
//	defer res.Close()
//	for res.Next() {
//		rec := res.Record() // valid until the next call to Next
//	}
//	if err := res.Err(); err != nil { ... }
type Result struct {
	c       *grpcClient
	parent  context.Context // the caller's
	ctx     context.Context // the call's: parent plus timeout
	cancel  context.CancelFunc
	src     *streamSource
	rdr     *ipc.Reader // nil once released
	schema  *arrow.Schema
	maxRows int64
	rows    int64
	err     error
	ended   bool // the stream ended complete
}

// open reads and checks the schema.
func (r *Result) open(q Query) error {
	err := guard(func() error {
		rdr, err := ipc.NewReader(r.src, ipc.WithAllocator(newAllocator(q.MaxBytes)))
		if err != nil {
			return err
		}
		r.rdr = rdr
		r.schema = rdr.Schema()
		return nil
	})
	if err != nil {
		return r.readError(err)
	}
	if err := checkResultSchema(r.schema); err != nil {
		return fmt.Errorf("connector query: %w: %v", ErrMalformedResult, err)
	}
	if q.Schema != nil {
		if err := compareSchemas(r.schema, q.Schema); err != nil {
			return fmt.Errorf("connector query: %w: %v", ErrSchemaMismatch, err)
		}
	}
	return nil
}

// Schema returns the result's schema.
func (r *Result) Schema() *arrow.Schema { return r.schema }

// Next advances to the next record batch. It returns false at the end of
// the result or on error; Err says which.
func (r *Result) Next() bool {
	if r.err != nil || r.rdr == nil {
		return false
	}
	var more bool
	err := guard(func() error {
		more = r.rdr.Next()
		if !more {
			return r.rdr.Err()
		}
		return validateRecord(r.rdr.Record())
	})
	if err != nil {
		r.fail(r.readError(err))
		return false
	}
	if !more {
		if err := r.finish(); err != nil {
			r.fail(err)
			return false
		}
		r.ended = true
		r.release()
		return false
	}
	r.rows += r.rdr.Record().NumRows()
	if r.rows > r.maxRows {
		r.fail(fmt.Errorf("connector query: %w", &LimitError{Limit: LimitRows, Max: r.maxRows}))
		return false
	}
	return true
}

// Record returns the current record batch. It is valid until the next call
// to Next or Close; Retain it to keep it longer.
func (r *Result) Record() arrow.Record {
	if r.err != nil || r.rdr == nil {
		return nil
	}
	return r.rdr.Record()
}

// Err returns the error that stopped the result, or nil if it ended
// normally or has not ended.
func (r *Result) Err() error { return r.err }

// Rows returns the number of rows read so far.
func (r *Result) Rows() int64 { return r.rows }

// Bytes returns the number of Arrow IPC bytes received so far.
func (r *Result) Bytes() int64 { return r.src.total }

// DataVersion returns the version of the data the query read, as the
// plugin reported it, once the result has ended normally; "" before, after
// an error, or when the plugin cannot tell (see DataVersioner).
func (r *Result) DataVersion() string {
	if r.err != nil || !r.ended {
		return ""
	}
	return r.src.done.GetDataVersion()
}

// Close stops the query if it is still running and releases the result.
// It is safe to call more than once.
func (r *Result) Close() error {
	r.release()
	return nil
}

func (r *Result) fail(err error) {
	r.err = err
	r.release()
}

func (r *Result) release() {
	r.cancel()
	if r.rdr != nil {
		r.rdr.Release()
		r.rdr = nil
	}
}

// finish checks that the stream ended as a complete one: the Arrow
// end-of-stream marker, then the plugin's QueryDone counting exactly the
// bytes received, then the end of the call.
func (r *Result) finish() error {
	if err := r.src.finish(); err != nil {
		return r.readError(err)
	}
	return nil
}

// readError classifies an error met while reading the stream. What the
// transport said (the plugin's error, a crossed limit, a cancellation)
// wins over what the Arrow reader made of the bytes it had.
func (r *Result) readError(err error) error {
	if srcErr := r.src.err; srcErr != nil {
		err = srcErr
	}
	if _, ok := status.FromError(err); ok || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return r.c.callError(r.parent, r.ctx, "query", r.c.queryTimeout, err)
	}
	if errors.Is(err, ErrLimitExceeded) || errors.Is(err, ErrMalformedResult) {
		return fmt.Errorf("connector query: %w", err)
	}
	return fmt.Errorf("connector query: %w: %v", ErrMalformedResult, err)
}
