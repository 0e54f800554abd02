package dispatch

import (
	"context"
	"errors"
	"regexp"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/havenhealth/haven/coordinator/audit"
	"github.com/havenhealth/haven/coordinator/linkage"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/wire"
)

// Upload is one Flight upload of a task's partial result, opened by
// OpenUpload and ended by exactly one of Commit and Abort.
type Upload struct {
	d        *Dispatcher
	r        *activeRun
	s        *siteRun
	combiner Combiner // the run's, which decodes the upload
	schema   *arrow.Schema
	limits   *havenv1.UploadLimits
}

// Schema is the schema the upload must have: the plan's for the site's
// kind.
func (u *Upload) Schema() *arrow.Schema { return u.schema }

// Limits are the task's upload limits.
func (u *Upload) Limits() *havenv1.UploadLimits { return u.limits }

// TaskID names the task.
func (u *Upload) TaskID() string { return u.s.taskID }

// OpenUpload checks that site may upload the result of task taskID now and
// reserves the task for one upload. Errors are gRPC statuses: NotFound for
// a task no run in progress has, PermissionDenied for another site's task,
// FailedPrecondition for a task that already has an outcome, AlreadyExists
// for a task whose upload was received or is under way.
func (d *Dispatcher) OpenUpload(ctx context.Context, site, taskID string) (*Upload, error) {
	d.mu.Lock()
	ref, ok := d.tasks[taskID]
	d.mu.Unlock()
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no run in progress has task %q", taskID)
	}
	if ref.ods != site {
		d.log.WarnContext(ctx, "upload for another site's task refused", "site", site, "task", taskID)
		return nil, status.Errorf(codes.PermissionDenied, "task %q was not issued to site %s", taskID, site)
	}
	r := ref.run
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.sites[site]
	switch {
	case r.ended || r.run.State != havenv1.RunState_RUN_STATE_RUNNING:
		return nil, status.Errorf(codes.FailedPrecondition, "run %s is %s and takes no more uploads", r.id, wire.RunStateName(r.run.State))
	case finalSite(s.status.State):
		return nil, status.Errorf(codes.FailedPrecondition, "task %q is already %s", taskID, wire.SiteStateName(s.status.State))
	case s.uploading:
		// Aborted, not AlreadyExists: a node whose connection dropped mid-upload
		// may try again before this side has seen the old stream end, and
		// should retry rather than give its task up.
		return nil, status.Errorf(codes.Aborted, "an upload for task %q is already under way; try again when it ends", taskID)
	case s.staged != nil:
		return nil, status.Errorf(codes.AlreadyExists, "the upload for task %q was already received", taskID)
	}
	s.uploading = true
	return &Upload{d: d, r: r, s: s, combiner: r.combiner, schema: s.schema, limits: proto.Clone(d.cfg.Limits).(*havenv1.UploadLimits)}, nil
}

// Commit decodes and checks every row of the upload and, if all is well,
// stages the decoded upload for the node's TaskDone, which applies it
// without decoding it again; the run itself is not touched until then. It
// does not retain recs. A rejected upload leaves nothing behind, and the
// error (InvalidArgument) says what was wrong.
func (u *Upload) Commit(ctx context.Context, recs []arrow.Record, rc *havenv1.UploadReceipt) error {
	rec, err := concat(u.schema, recs)
	var batch *linkage.Staged
	if err == nil && rec != nil {
		batch, err = u.decode(ctx, rec)
	}
	if rec != nil {
		rec.Release() // the staged batch holds what it needs of it
	}
	r, s := u.r, u.s
	r.mu.Lock()
	defer r.mu.Unlock()
	s.uploading = false
	// The combiner is closed (ErrClosed) only when the run ends.
	if errors.Is(err, linkage.ErrClosed) || (err == nil && (r.ended || r.run.State != havenv1.RunState_RUN_STATE_RUNNING || finalSite(s.status.State))) {
		err = status.Errorf(codes.FailedPrecondition, "run %s no longer takes this upload (run %s, site %s)", r.id,
			r.run.State, wire.SiteStateName(s.status.State))
	}
	if err != nil {
		batch.Release()
		u.d.cfg.Metrics.Upload(false, 0, 0)
		u.d.audit(ctx, audit.KindNodeResponse, r.id, s.ods, map[string]any{"task_id": s.taskID, "response": "upload_rejected",
			"rows": rc.GetRows(), "bytes": rc.GetBytes(), "batches": rc.GetBatches(), "error": Redact(status.Convert(err).Message())})
		return err
	}
	s.staged = &staged{batch: batch, rows: rc.GetRows(), bytes: rc.GetBytes(), batches: rc.GetBatches()}
	u.d.cfg.Metrics.Upload(true, rc.GetRows(), rc.GetBytes())
	u.d.audit(ctx, audit.KindNodeResponse, r.id, s.ods, map[string]any{"task_id": s.taskID, "response": "upload_received",
		"rows": rc.GetRows(), "bytes": rc.GetBytes(), "batches": rc.GetBatches()})
	return nil
}

// Abort ends an upload that failed before Commit, recording why.
func (u *Upload) Abort(ctx context.Context, rc *havenv1.UploadReceipt, cause error) {
	r, s := u.r, u.s
	r.mu.Lock()
	defer r.mu.Unlock()
	s.uploading = false
	u.d.cfg.Metrics.Upload(false, 0, 0)
	u.d.audit(ctx, audit.KindNodeResponse, r.id, s.ods, map[string]any{"task_id": s.taskID, "response": "upload_rejected",
		"rows": rc.GetRows(), "bytes": rc.GetBytes(), "batches": rc.GetBatches(), "error": Redact(status.Convert(cause).Message())})
}

// decode decodes and checks every row of the upload with the run's
// combiner, which leaves the run untouched until the result is applied.
// linkage.ErrClosed is returned as it is, for Commit to report.
func (u *Upload) decode(ctx context.Context, rec arrow.Record) (*linkage.Staged, error) {
	batch, err := u.combiner.Decode(ctx, linkageSite(u.s), rec)
	switch {
	case errors.Is(err, linkage.ErrClosed):
		return nil, err
	case err != nil:
		return nil, status.Errorf(codes.InvalidArgument, "upload for task %q rejected: %v", u.s.taskID, err)
	}
	return batch, nil
}

// concat joins an upload's batches into one record, so that it is added
// to the run in one step that either wholly succeeds or changes nothing.
// It returns nil for an upload of no rows.
func concat(schema *arrow.Schema, recs []arrow.Record) (rec arrow.Record, err error) {
	defer func() {
		if p := recover(); p != nil {
			rec, err = nil, status.Errorf(codes.InvalidArgument, "malformed record batch: %v", p)
		}
	}()
	var n int64
	var nonEmpty []arrow.Record
	for _, r := range recs {
		if r.NumRows() > 0 {
			nonEmpty = append(nonEmpty, r)
			n += r.NumRows()
		}
	}
	switch len(nonEmpty) {
	case 0:
		return nil, nil
	case 1:
		nonEmpty[0].Retain()
		return nonEmpty[0], nil
	}
	cols := make([]arrow.Array, schema.NumFields())
	defer func() {
		for _, c := range cols {
			if c != nil {
				c.Release()
			}
		}
	}()
	for i := range cols {
		parts := make([]arrow.Array, len(nonEmpty))
		for j, r := range nonEmpty {
			parts[j] = r.Column(i)
		}
		c, err := array.Concatenate(parts, memory.DefaultAllocator)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "join the upload's batches: field %s: %v", schema.Field(i).Name, err)
		}
		cols[i] = c
	}
	return array.NewRecord(schema, cols, n), nil
}

// quoted matches a double-quoted string in an error message.
var quoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

// Redact hides the values an error message quotes. Messages about a
// site's upload quote what the site sent, which a faulty site could make
// an identifier; the site is told in full, but what the coordinator logs,
// audits or stores says only where the fault was.
func Redact(msg string) string { return quoted.ReplaceAllString(msg, `"…"`) }
