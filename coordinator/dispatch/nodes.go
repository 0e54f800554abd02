package dispatch

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/havenhealth/haven/coordinator/audit"
	"github.com/havenhealth/haven/coordinator/nodelink"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

var _ nodelink.Handler = (*Dispatcher)(nil)

// taskID returns the task a task message is about.
func taskID(m *havenv1.NodeMessage) string {
	switch b := m.GetBody().(type) {
	case *havenv1.NodeMessage_TaskAccepted:
		return b.TaskAccepted.GetTaskId()
	case *havenv1.NodeMessage_TaskRefused:
		return b.TaskRefused.GetTaskId()
	case *havenv1.NodeMessage_TaskProgress:
		return b.TaskProgress.GetTaskId()
	case *havenv1.NodeMessage_TaskDone:
		return b.TaskDone.GetTaskId()
	case *havenv1.NodeMessage_TaskFailed:
		return b.TaskFailed.GetTaskId()
	}
	return ""
}

// TaskMessage implements nodelink.Handler. Messages are idempotent by
// task id: once a site's task has an outcome, later messages about it are
// ignored, so a node may report an outcome again when in doubt.
func (d *Dispatcher) TaskMessage(ctx context.Context, ods string, m *havenv1.NodeMessage) {
	id := taskID(m)
	d.mu.Lock()
	ref, ok := d.tasks[id]
	d.mu.Unlock()
	if !ok {
		d.log.LogAttrs(ctx, slog.LevelDebug, "message about a task not in progress", slog.String("site", ods), slog.String("task", id))
		if m.GetTaskAccepted() != nil {
			// The node is running something no run wants.
			d.sendCancel(ctx, ods, id, "the coordinator has no run in progress for this task")
		}
		return
	}
	if ref.ods != ods {
		d.log.LogAttrs(ctx, slog.LevelWarn, "site reported on another site's task; ignored",
			slog.String("site", ods), slog.String("task", id), slog.String("task_site", ref.ods))
		return
	}
	r := ref.run
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.sites[ods]
	if r.ended || s == nil {
		return
	}
	if _, progress := m.GetBody().(*havenv1.NodeMessage_TaskProgress); !progress && finalSite(s.status.State) {
		d.log.LogAttrs(ctx, slog.LevelDebug, "outcome for a task that already has one; ignored",
			slog.String("site", ods), slog.String("task", id), slog.String("state", s.status.State.String()))
		return
	}
	if r.run.State != havenv1.RunState_RUN_STATE_RUNNING {
		return
	}
	now := d.cfg.Clock.Now()
	switch b := m.GetBody().(type) {
	case *havenv1.NodeMessage_TaskAccepted:
		a := b.TaskAccepted
		if s.status.State == havenv1.SiteState_SITE_STATE_ACCEPTED {
			return
		}
		d.audit(ctx, audit.KindNodeResponse, r.id, ods, map[string]any{"task_id": id, "response": "accepted",
			"sql_hash": a.GetSqlHash(), "decision_id": a.GetDecisionId(), "bundle_revision": a.GetBundleRevision()})
		d.setSite(ctx, r, s, havenv1.SiteState_SITE_STATE_ACCEPTED, now, nil)
	case *havenv1.NodeMessage_TaskRefused:
		f := b.TaskRefused
		reasons := f.GetReasons()
		if len(reasons) == 0 {
			reasons = []*havenv1.PolicyReason{{Code: "unspecified", Message: "the site gave no reason"}}
		}
		codes := make([]string, len(reasons))
		for i, rs := range reasons {
			codes[i] = rs.GetCode()
		}
		d.audit(ctx, audit.KindNodeResponse, r.id, ods, map[string]any{"task_id": id, "response": "refused",
			"reasons": codes, "decision_id": f.GetDecisionId(), "bundle_revision": f.GetBundleRevision()})
		s.staged.release()
		s.staged = nil
		state := havenv1.SiteState_SITE_STATE_REFUSED
		if slices.Contains(codes, havenv1.ReasonSitePaused) {
			state = havenv1.SiteState_SITE_STATE_PAUSED // paused after it registered
		}
		d.setSite(ctx, r, s, state, now, func(st *havenv1.SiteStatus) {
			st.Reasons = cloneReasons(reasons)
		})
		d.checkComplete(ctx, r)
	case *havenv1.NodeMessage_TaskProgress:
		// Advisory; the upload itself is what counts.
	case *havenv1.NodeMessage_TaskDone:
		d.taskDone(ctx, r, s, b.TaskDone)
		d.checkComplete(ctx, r)
	case *havenv1.NodeMessage_TaskFailed:
		f := b.TaskFailed
		d.audit(ctx, audit.KindNodeResponse, r.id, ods, map[string]any{"task_id": id, "response": "failed",
			"code": f.GetCode().String(), "message": f.GetMessage()})
		s.staged.release()
		s.staged = nil
		d.setSite(ctx, r, s, havenv1.SiteState_SITE_STATE_FAILED, now, func(st *havenv1.SiteStatus) {
			st.Error = fmt.Sprintf("%s: %s", strings.TrimPrefix(f.GetCode().String(), "TASK_ERROR_CODE_"), f.GetMessage())
		})
		d.checkComplete(ctx, r)
	}
}

func cloneReasons(rs []*havenv1.PolicyReason) []*havenv1.PolicyReason {
	out := make([]*havenv1.PolicyReason, len(rs))
	for i, r := range rs {
		out[i] = proto.Clone(r).(*havenv1.PolicyReason)
	}
	return out
}

// taskDone applies a site's staged upload once the node's own figures
// agree with what was received. r.mu is held.
func (d *Dispatcher) taskDone(ctx context.Context, r *activeRun, s *siteRun, done *havenv1.TaskDone) {
	now := d.cfg.Clock.Now()
	up := s.staged
	s.staged = nil
	defer up.release()
	fail := func(msg string) {
		d.audit(ctx, audit.KindNodeResponse, r.id, s.ods, map[string]any{"task_id": s.taskID, "response": "done_rejected",
			"rows": done.GetRows(), "bytes": done.GetBytes(), "batches": done.GetBatches(), "error": msg})
		d.setSite(ctx, r, s, havenv1.SiteState_SITE_STATE_FAILED, now, func(st *havenv1.SiteStatus) { st.Error = msg })
	}
	var got staged
	if up != nil {
		got = *up
	}
	switch {
	case up == nil && done.GetRows() > 0:
		fail(fmt.Sprintf("the node reports %d rows sent, but no upload was received", done.GetRows()))
		return
	case done.GetRows() != got.rows || done.GetBytes() != got.bytes || done.GetBatches() != got.batches:
		fail(fmt.Sprintf("the node reports %d rows, %d bytes in %d batches; the coordinator received %d rows, %d bytes in %d batches",
			done.GetRows(), done.GetBytes(), done.GetBatches(), got.rows, got.bytes, got.batches))
		return
	case len(done.GetFields()) > 0 && !slices.Equal(done.GetFields(), s.fields):
		fail(fmt.Sprintf("the node reports fields %v; the task asked for %v", done.GetFields(), s.fields))
		return
	}
	if up != nil && up.batch != nil {
		if err := r.combiner.Apply(ctx, up.batch); err != nil {
			fail("the upload could not be linked: " + Redact(err.Error()))
			return
		}
	}
	d.audit(ctx, audit.KindNodeResponse, r.id, s.ods, map[string]any{"task_id": s.taskID, "response": "done",
		"rows": got.rows, "bytes": got.bytes, "batches": got.batches, "fields": s.fields,
		"rows_excluded_invalid_nhs_number": done.GetRowsExcludedInvalidNhsNumber(),
		"rows_excluded_opt_out":            done.GetRowsExcludedOptOut()})
	d.setSite(ctx, r, s, havenv1.SiteState_SITE_STATE_DONE, now, func(st *havenv1.SiteStatus) {
		st.Rows, st.Bytes, st.Error = got.rows, got.bytes, ""
		st.OptOutsHonoured = done.GetRowsExcludedOptOut()
	})
}

// NodeConnected implements nodelink.Handler: it sends a reconnected site
// the tasks it never received, and cancels the tasks it runs that no run
// wants any more.
func (d *Dispatcher) NodeConnected(ctx context.Context, site nodelink.SiteInfo, running []string) {
	for _, id := range running {
		d.mu.Lock()
		ref, ok := d.tasks[id]
		d.mu.Unlock()
		wanted := ok && ref.ods == site.ODS
		if wanted {
			ref.run.mu.Lock()
			s := ref.run.sites[site.ODS]
			wanted = !ref.run.ended && ref.run.run.State == havenv1.RunState_RUN_STATE_RUNNING && s != nil && !finalSite(s.status.State)
			ref.run.mu.Unlock()
		}
		if !wanted {
			d.sendCancel(ctx, site.ODS, id, "the coordinator no longer needs this task")
		}
	}

	now := d.cfg.Clock.Now()
	for _, r := range d.runsWith(site.ODS) {
		r.mu.Lock()
		s := r.sites[site.ODS]
		if !s.linkLost.IsZero() {
			s.linkLost = time.Time{}
			if !finalSite(s.status.State) {
				d.setSite(ctx, r, s, s.status.State, now, func(st *havenv1.SiteStatus) { st.Error = "" })
			}
		}
		switch {
		case r.ended || r.run.State != havenv1.RunState_RUN_STATE_RUNNING || !now.Before(r.run.Deadline.AsTime()):
		case s.status.State == havenv1.SiteState_SITE_STATE_DISCONNECTED || s.status.State == havenv1.SiteState_SITE_STATE_PENDING && !s.sent:
			// Never sent its task: planned while its link was down. The
			// planner's checks are made now, with what the site says.
			if site.Population > 0 {
				s.population = site.Population
			}
			if site.Activity > 0 {
				s.activity = site.Activity
			}
			switch {
			case site.Paused:
				d.setSite(ctx, r, s, havenv1.SiteState_SITE_STATE_PAUSED, now, func(st *havenv1.SiteStatus) { st.Error = "" })
			case r.plan.Mode == catalog.ModeLinkage && d.cfg.LinkageKeyID != "" && site.LinkageKeyID != d.cfg.LinkageKeyID:
				d.setSite(ctx, r, s, havenv1.SiteState_SITE_STATE_FAILED, now, func(st *havenv1.SiteStatus) {
					st.Error = fmt.Sprintf("the node holds linkage key %q, the network uses %q; its pseudonyms could not be linked", site.LinkageKeyID, d.cfg.LinkageKeyID)
				})
			default:
				d.sendTask(ctx, r, s, now)
			}
		case !finalSite(s.status.State) && !slices.Contains(running, s.taskID):
			// Neither running nor reported: the task never reached the node.
			d.sendTask(ctx, r, s, now)
		}
		r.mu.Unlock()
	}
}

// NodeDisconnected implements nodelink.Handler. A site whose link drops
// keeps its place: its node may finish the task and report when it is
// back (a node that restarts reports the task abandoned), until the
// deadline. Meanwhile its status says the link is down, and if it is
// still down at the deadline the site is named DISCONNECTED.
func (d *Dispatcher) NodeDisconnected(ctx context.Context, ods string) {
	d.log.LogAttrs(ctx, slog.LevelDebug, "site link down; its tasks wait for the deadline", slog.String("site", ods))
	now := d.cfg.Clock.Now()
	for _, r := range d.runsWith(ods) {
		r.mu.Lock()
		s := r.sites[ods]
		if !r.ended && r.run.State == havenv1.RunState_RUN_STATE_RUNNING && !finalSite(s.status.State) {
			s.linkLost = now
			d.setSite(ctx, r, s, s.status.State, now, func(st *havenv1.SiteStatus) {
				st.Error = "the node's link dropped at " + now.UTC().Format(timeFormat) + "; waiting until the deadline for it to reconnect and report"
			})
		}
		r.mu.Unlock()
	}
}

// runsWith returns the active runs that include site ods.
func (d *Dispatcher) runsWith(ods string) []*activeRun {
	d.mu.Lock()
	defer d.mu.Unlock()
	var runs []*activeRun
	for _, r := range d.runs {
		if _, ok := r.sites[ods]; ok {
			runs = append(runs, r)
		}
	}
	return runs
}

// timeFormat is how times appear in site errors.
const timeFormat = "2006-01-02 15:04:05Z"

func (d *Dispatcher) sendCancel(ctx context.Context, ods, taskID, reason string) {
	err := d.cfg.Links.Send(ods, &havenv1.CoordinatorMessage{Body: &havenv1.CoordinatorMessage_CancelTask{
		CancelTask: &havenv1.CancelTask{TaskId: taskID, Reason: reason}}})
	if err != nil {
		d.log.LogAttrs(ctx, slog.LevelWarn, "cancel not sent", slog.String("site", ods), slog.String("task", taskID),
			slog.String("error", err.Error()))
	}
}

// checkComplete finishes the run once no site is still expected to
// answer. r.mu is held.
func (d *Dispatcher) checkComplete(ctx context.Context, r *activeRun) {
	if r.ended || r.run.State != havenv1.RunState_RUN_STATE_RUNNING {
		return
	}
	for _, s := range r.sites {
		if !finalSite(s.status.State) {
			return
		}
	}
	d.link(ctx, r)
}

// deadline is called when a run's deadline passes: sites still working
// are timed out and cancelled, and the run is finished with what arrived.
func (d *Dispatcher) deadline(r *activeRun) {
	ctx := context.Background()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended || r.run.State != havenv1.RunState_RUN_STATE_RUNNING {
		return
	}
	now := d.cfg.Clock.Now()
	d.cancelTasks(ctx, r, "the run's deadline passed")
	for _, ods := range r.order() {
		s := r.sites[ods]
		if finalSite(s.status.State) {
			continue
		}
		s.staged.release()
		s.staged = nil
		if !s.linkLost.IsZero() {
			d.audit(ctx, audit.KindNodeResponse, r.id, ods, map[string]any{"task_id": s.taskID, "response": "disconnected"})
			d.setSite(ctx, r, s, havenv1.SiteState_SITE_STATE_DISCONNECTED, now, func(st *havenv1.SiteStatus) {
				st.Error = "the node's link dropped at " + s.linkLost.UTC().Format(timeFormat) + " and was not back by the deadline"
			})
			continue
		}
		d.audit(ctx, audit.KindNodeResponse, r.id, ods, map[string]any{"task_id": s.taskID, "response": "timed_out"})
		d.setSite(ctx, r, s, havenv1.SiteState_SITE_STATE_TIMED_OUT, now, func(st *havenv1.SiteStatus) {
			st.Error = "no result by the deadline " + r.run.Deadline.AsTime().UTC().Format(timeFormat)
		})
	}
	d.link(ctx, r)
}
