package dispatch

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/audit"
	"github.com/havenhealth/haven/coordinator/linkage"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// TestUploadDecodedAtCommit follows one site's uploads through a run: a
// bad upload is refused at Commit naming the field and row; a good one is
// staged at Commit without touching the run, and the node's TaskDone
// applies it, giving the table that adding the upload directly gives.
func TestUploadDecodedAtCommit(t *testing.T) {
	ctx := context.Background()
	c, err := catalog.Load(os.DirFS("../../policy/bundle"))
	if err != nil {
		t.Fatal(err)
	}
	def, ok := c.Get("t2dm-emergency-admissions")
	if !ok {
		t.Fatal("no definition t2dm-emergency-admissions")
	}
	bound, err := def.Bind(nil)
	if err != nil {
		t.Fatal(err)
	}
	plan := def.Plan()
	schema, _ := plan.Schema(cdm.KindGP)
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	gpRecord := func(sexes ...string) arrow.Record {
		b := array.NewRecordBuilder(mem, schema)
		defer b.Release()
		for i, sex := range sexes {
			b.Field(0).(*array.FixedSizeBinaryBuilder).Append(append(make([]byte, 15), byte(len(sexes)*10+i)))
			b.Field(1).(*array.StringBuilder).Append("50-59")
			b.Field(2).(*array.StringBuilder).Append(sex)
		}
		return b.NewRecord()
	}

	log, err := audit.Open(filepath.Join(t.TempDir(), "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	d := &Dispatcher{cfg: Config{Audit: log, Limits: &havenv1.UploadLimits{}, Clock: clockwork.NewRealClock()},
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), runs: map[string]*activeRun{}, tasks: map[string]taskRef{}}
	combiner, err := NewLinkage(0, "")("run-test", plan, def, bound, 0)
	if err != nil {
		t.Fatal(err)
	}
	run := &havenv1.Run{Id: "run-1", State: havenv1.RunState_RUN_STATE_RUNNING, Coverage: &havenv1.Coverage{}}
	r := newActiveRun(run, def, bound, plan, combiner, "")
	defer func() {
		r.mu.Lock()
		r.end()
		r.mu.Unlock()
	}()
	s := &siteRun{ods: "A81001", kind: cdm.KindGP, taskID: "task-1", schema: schema,
		status: &havenv1.SiteStatus{SiteOds: "A81001", State: havenv1.SiteState_SITE_STATE_ACCEPTED}}
	r.sites[s.ods] = s
	d.tasks[s.taskID] = taskRef{run: r, ods: s.ods}

	commit := func(recs ...arrow.Record) (*havenv1.UploadReceipt, error) {
		t.Helper()
		defer func() {
			for _, rec := range recs {
				rec.Release()
			}
		}()
		up, err := d.OpenUpload(ctx, s.ods, s.taskID)
		if err != nil {
			t.Fatalf("OpenUpload: %v", err)
		}
		rc := &havenv1.UploadReceipt{TaskId: s.taskID, Rows: 3, Bytes: 300, Batches: int64(len(recs))}
		return rc, up.Commit(ctx, recs, rc)
	}

	// Rows count across the upload's batches, which Commit joins.
	_, err = commit(gpRecord("F"), gpRecord("M", "X"))
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "field sex: row 2") {
		t.Fatalf("Commit of a bad upload = %v; want InvalidArgument naming field sex, row 2", err)
	}
	if s.staged != nil || s.uploading {
		t.Fatalf("a refused upload left staged %v, uploading %v", s.staged, s.uploading)
	}

	rc, err := commit(gpRecord("F"), gpRecord("M", "I"))
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if s.staged == nil || s.staged.batch == nil {
		t.Fatal("Commit staged nothing")
	}
	if _, st, err := combiner.Table(ctx); err != nil || st.Batches != 0 || st.Sites != 0 {
		t.Fatalf("after Commit the run has %+v, %v; want it untouched until TaskDone", st, err)
	}

	r.mu.Lock()
	d.taskDone(ctx, r, s, &havenv1.TaskDone{TaskId: s.taskID, Rows: rc.Rows, Bytes: rc.Bytes, Batches: rc.Batches})
	state, staged := s.status.State, s.staged
	r.mu.Unlock()
	if state != havenv1.SiteState_SITE_STATE_DONE || staged != nil {
		t.Fatalf("after TaskDone the site is %s (%s), staged %v", state, s.status.Error, staged)
	}
	got, gotStats, err := combiner.Table(ctx)
	if err != nil {
		t.Fatal(err)
	}

	ref, err := linkage.New(plan, def, bound, linkage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	for _, rec := range []arrow.Record{gpRecord("F"), gpRecord("M", "I")} {
		err := ref.Add(ctx, linkageSite(s), rec)
		rec.Release()
		if err != nil {
			t.Fatal(err)
		}
	}
	want, wantStats, err := ref.Table(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Commit joins the batches into one.
	wantStats.Batches = 1
	gotStats.MemoryBytes, wantStats.MemoryBytes = 0, 0
	if !reflect.DeepEqual(got, want) || gotStats != wantStats {
		t.Errorf("table after TaskDone = %+v, %+v; want %+v, %+v", got, gotStats, want, wantStats)
	}
}
