package runner

import (
	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/flight"
	"github.com/apache/arrow/go/v17/arrow/ipc"

	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// bodyCounter is a Flight data stream that only counts: the bytes of
// data_body of every message, the measure UploadLimits and TaskDone use.
type bodyCounter struct{ bytes int64 }

func (c *bodyCounter) Send(fd *flight.FlightData) error {
	c.bytes += int64(len(fd.DataBody))
	return nil
}

// bodySize is the data_body length rec would have as a Flight message,
// found by encoding it exactly as the upload will.
func bodySize(schema *arrow.Schema, rec arrow.Record) (int64, error) {
	var c bodyCounter
	w := flight.NewRecordWriter(&c, ipc.WithSchema(schema))
	if err := w.Write(rec); err != nil {
		return 0, err
	}
	if err := w.Close(); err != nil {
		return 0, err
	}
	return c.bytes, nil
}

// batch cuts the result into record batches that each fit the task's
// max_batch_bytes, and checks the whole against its row and byte limits
// and the node's. It returns the batches (the caller releases them) and
// their total size.
func (r *Runner) batch(j *job, out *output) ([]arrow.Record, int64, error) {
	// Pending rows have not been through pseudonymise or cellKeys; they
	// must not be dropped from the upload without a word.
	if len(out.pending) > 0 {
		return nil, 0, taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_INTERNAL, "%d result batches were never made ready to send; nothing was sent", len(out.pending))
	}
	lim := j.t.GetLimits()
	maxBatch := lim.GetMaxBatchBytes()
	if maxBatch <= 0 {
		maxBatch = DefaultMaxBatchBytes
	}
	maxRows, maxBytes := r.cfg.Limits.MaxRows, r.cfg.Limits.MaxBytes
	if l := lim.GetMaxRows(); l > 0 {
		maxRows = min(maxRows, l)
	}
	if l := lim.GetMaxBytes(); l > 0 {
		maxBytes = min(maxBytes, l)
	}
	if out.rows > maxRows {
		return nil, 0, taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_LIMIT_EXCEEDED, "the result has %d rows, over the limit of %d; nothing was sent", out.rows, maxRows)
	}
	var batches []arrow.Record
	var total int64
	fail := func(err error) ([]arrow.Record, int64, error) {
		release(batches)
		return nil, 0, err
	}
	for _, rec := range out.records {
		parts, size, err := split(out.schema, rec, maxBatch)
		if err != nil {
			return fail(err)
		}
		batches = append(batches, parts...)
		total += size
		if total > maxBytes {
			return fail(taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_LIMIT_EXCEEDED, "the result is over the limit of %d bytes; nothing was sent", maxBytes))
		}
	}
	return batches, total, nil
}

// split cuts rec into slices of at most maxBatch body bytes each. A record
// that fits is returned as it is, retained.
func split(schema *arrow.Schema, rec arrow.Record, maxBatch int64) ([]arrow.Record, int64, error) {
	size, err := bodySize(schema, rec)
	if err != nil {
		return nil, 0, taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_INTERNAL, "encode a batch: %v", err)
	}
	if size <= maxBatch || rec.NumRows() == 0 {
		rec.Retain()
		return []arrow.Record{rec}, size, nil
	}
	var out []arrow.Record
	var total int64
	n := rec.NumRows()
	// Start from the share of rows that should fit, with room for
	// padding, and halve whenever a slice is still too big.
	step := max(1, int64(float64(n)*float64(maxBatch)/float64(size)*0.9))
	for from := int64(0); from < n; {
		k := min(step, n-from)
		part := rec.NewSlice(from, from+k)
		ps, err := bodySize(schema, part)
		if err != nil {
			part.Release()
			release(out)
			return nil, 0, taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_INTERNAL, "encode a batch: %v", err)
		}
		if ps > maxBatch {
			part.Release()
			if k == 1 {
				release(out)
				return nil, 0, taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_LIMIT_EXCEEDED, "one row is larger than the batch limit of %d bytes; nothing was sent", maxBatch)
			}
			step = max(1, k/2)
			continue
		}
		out = append(out, part)
		total += ps
		from += k
	}
	return out, total, nil
}
