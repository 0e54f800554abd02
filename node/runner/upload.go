package runner

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/flight"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/havenhealth/haven/node/audit"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// FlightUploader uploads results with Arrow Flight DoPut, on the same
// connection as the control link.
type FlightUploader struct {
	client flight.FlightServiceClient
}

// NewFlightUploader returns an uploader over cc, normally the node's one
// mTLS connection to the coordinator.
func NewFlightUploader(cc grpc.ClientConnInterface) *FlightUploader {
	return &FlightUploader{client: flight.NewFlightServiceClient(cc)}
}

// countingStream counts what goes up a DoPut stream.
type countingStream struct {
	flight.FlightService_DoPutClient
	bytes, messages int64
}

func (c *countingStream) Send(fd *flight.FlightData) error {
	if err := c.FlightService_DoPutClient.Send(fd); err != nil {
		return err
	}
	c.bytes += int64(len(fd.DataBody))
	c.messages++
	return nil
}

// Upload sends batches under the task's descriptor and returns what was
// sent and the coordinator's receipt.
func (u *FlightUploader) Upload(ctx context.Context, taskID string, schema *arrow.Schema, batches []arrow.Record) (Sent, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the call if we leave early
	stream, err := u.client.DoPut(ctx)
	if err != nil {
		return Sent{}, err
	}
	cs := &countingStream{FlightService_DoPutClient: stream}
	w := flight.NewRecordWriter(cs, ipc.WithSchema(schema))
	w.SetFlightDescriptor(havenv1.TaskDescriptor(taskID))
	var sent Sent
	for _, b := range batches {
		if err := w.Write(b); err != nil {
			return Sent{}, sendErr(stream, err)
		}
		sent.Rows += b.NumRows()
		sent.Batches++
	}
	// Close sends the schema if no batch did, so an empty result still
	// names its task.
	if err := w.Close(); err != nil {
		return Sent{}, sendErr(stream, err)
	}
	sent.Bytes = cs.bytes
	if err := stream.CloseSend(); err != nil {
		return Sent{}, err
	}
	for {
		res, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Sent{}, err
		}
		if len(res.GetAppMetadata()) == 0 {
			continue
		}
		var rc havenv1.UploadReceipt
		if err := proto.Unmarshal(res.GetAppMetadata(), &rc); err != nil {
			return Sent{}, status.Errorf(codes.Internal, "the coordinator's receipt is not a haven.v1.UploadReceipt: %v", err)
		}
		sent.Receipt = &rc
	}
	if sent.Receipt == nil {
		return Sent{}, status.Error(codes.Internal, "the coordinator ended the upload without a receipt")
	}
	return sent, nil
}

// sendErr returns the status the call ended with when a send fails; gRPC
// reports only io.EOF on the send side.
func sendErr(stream flight.FlightService_DoPutClient, err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	for {
		if _, rerr := stream.Recv(); rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return err
			}
			return rerr
		}
	}
}

// retryable reports whether an upload error means the same upload may be
// tried again: the coordinator could not be reached (Unavailable), or it
// still holds an earlier attempt of this upload open (Aborted), as after a
// connection that dropped mid-upload.
func retryable(err error) bool {
	st, ok := status.FromError(err)
	return ok && (st.Code() == codes.Unavailable || st.Code() == codes.Aborted)
}

// upload sends the batches, retrying while the coordinator is unreachable
// and the task's deadline allows, and checks the receipt.
func (r *Runner) upload(ctx context.Context, j *job, schema *arrow.Schema, batches []arrow.Record) (Sent, error) {
	id := j.t.GetTaskId()
	wait := r.cfg.RetryBackoff
	for attempt := 1; ; attempt++ {
		sent, err := r.cfg.Uploader.Upload(ctx, id, schema, batches)
		if err == nil {
			rc := sent.Receipt
			if rc.GetTaskId() != id || rc.GetRows() != sent.Rows || rc.GetBytes() != sent.Bytes || rc.GetBatches() != sent.Batches {
				return Sent{}, taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_UPLOAD,
					"the coordinator's receipt (task %s: %d rows, %d bytes, %d batches) does not match what was sent (%d rows, %d bytes, %d batches)",
					rc.GetTaskId(), rc.GetRows(), rc.GetBytes(), rc.GetBatches(), sent.Rows, sent.Bytes, sent.Batches)
			}
			return sent, nil
		}
		if ctx.Err() != nil || !retryable(err) {
			return Sent{}, taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_UPLOAD, "upload (attempt %d): %v", attempt, err)
		}
		r.log.LogAttrs(ctx, slog.LevelWarn, "upload not taken yet; will retry",
			slog.String("task_id", id), slog.Int("attempt", attempt), slog.Duration("retry_in", wait), slog.String("error", audit.Redact(err.Error())))
		select {
		case <-ctx.Done():
			return Sent{}, taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_UPLOAD, "upload: gave up after %d attempts: %v", attempt, err)
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Minute)
	}
}
