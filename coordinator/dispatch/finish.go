package dispatch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"

	"google.golang.org/protobuf/proto"

	"github.com/havenhealth/haven/coordinator/audit"
	"github.com/havenhealth/haven/coordinator/finish"
	"github.com/havenhealth/haven/coordinator/store"
	"github.com/havenhealth/haven/policy"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/wire"
)

// link moves the run to LINKING and finishes it in the background, so
// that reading the run is not held up while its table is computed. r.mu is
// held.
func (d *Dispatcher) link(ctx context.Context, r *activeRun) {
	if r.timer != nil {
		r.timer.Stop()
	}
	d.setState(ctx, r, havenv1.RunState_RUN_STATE_LINKING, d.cfg.Clock.Now())
	cov := proto.Clone(r.run.Coverage).(*havenv1.Coverage)
	d.finishes.Add(1)
	go func() {
		defer d.finishes.Done()
		d.finish(context.WithoutCancel(ctx), r, cov)
	}()
}

// finish computes, controls and stores the run's table. Nothing else adds
// to the combiner once the run is LINKING, so it is read without r.mu.
func (d *Dispatcher) finish(ctx context.Context, r *activeRun, cov *havenv1.Coverage) {
	var out finish.Outcome
	table, stats, err := r.combiner.Table(ctx)
	if err != nil {
		out = finish.Outcome{State: havenv1.RunState_RUN_STATE_FAILED, Err: fmt.Sprintf("linkage: %v", err)}
	} else {
		if stats.SpilledBytes > 0 {
			d.log.LogAttrs(ctx, slog.LevelInfo, "linkage spilled to disk to keep within its memory budget", slog.String("run", r.id),
				slog.Int64("spilled_bytes", stats.SpilledBytes), slog.Int("spilled_partitions", stats.SpilledPartitions),
				slog.Int64("memory_bytes", stats.MemoryBytes))
			d.cfg.Metrics.LinkageSpilled(stats.SpilledBytes)
		}
		out = d.finisher.Finish(ctx, table, stats, finish.Run{Run: r.run, Params: r.bound.Params(), KeyRange: r.keyRange,
			Coverage: cov, MissingTrusts: missingTrusts(r, cov), NodeVersions: answeredVersions(d.cfg.Links, cov)})
	}
	if out.Decision != nil {
		data := decisionData("haven/disclose", out.Decision.Decision)
		data["partial"] = out.Decision.Partial
		if out.DecisionErr != nil {
			data["error"] = out.DecisionErr.Error()
		}
		d.audit(ctx, audit.KindDecision, r.id, "coordinator", data)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended || r.run.State != havenv1.RunState_RUN_STATE_LINKING {
		return // cancelled or interrupted meanwhile
	}
	now := d.cfg.Clock.Now()
	if out.State == havenv1.RunState_RUN_STATE_RELEASED {
		sum := sha256.Sum256(out.Table)
		digest := hex.EncodeToString(sum[:])
		err := d.cfg.Store.PutRelease(ctx, store.Release{RunID: r.id, CreatedAt: now, Table: out.Table, SHA256: digest})
		if err != nil {
			out = finish.Outcome{State: havenv1.RunState_RUN_STATE_FAILED, Err: "the released table could not be stored: " + err.Error()}
		} else {
			out.Audit["sha256"] = digest
			out.Audit["bytes"] = len(out.Table)
			d.audit(ctx, audit.KindRelease, r.id, "coordinator", out.Audit)
			r.run.Release = out.Summary
		}
	}
	switch out.State {
	case havenv1.RunState_RUN_STATE_REFUSED:
		r.run.PolicyReasons = wireReasons(out.Decision.Reasons)
		d.audit(ctx, audit.KindRunState, r.id, "coordinator", map[string]any{"state": "refused", "by": "haven/disclose",
			"reasons": reasonCodes(out.Decision.Reasons)})
	case havenv1.RunState_RUN_STATE_FAILED:
		r.run.Error = out.Err
		d.audit(ctx, audit.KindRunState, r.id, "coordinator", map[string]any{"state": "failed", "error": out.Err})
		d.log.LogAttrs(ctx, slog.LevelWarn, "run failed", slog.String("run", r.id), slog.String("error", out.Err))
	}
	d.setState(ctx, r, out.State, now)
	r.end()
	d.forget(r)
}

// answeredVersions are the node software versions of the sites of cov
// that answered, as their nodes last reported them.
func answeredVersions(links Links, cov *havenv1.Coverage) map[string]string {
	known := map[string]string{}
	for _, s := range links.Sites() {
		known[s.ODS] = s.NodeVersion
	}
	out := map[string]string{}
	for _, st := range cov.GetSites() {
		if st.GetState() == havenv1.SiteState_SITE_STATE_DONE {
			v := known[st.GetSiteOds()]
			if v == "" {
				v = "unknown"
			}
			out[st.GetSiteOds()] = v
		}
	}
	return out
}

// missingTrusts lists the trusts of cov that did not answer, with their
// activity. The run is LINKING, so its sites no longer change; r.sites is
// read without r.mu as the combiner is.
func missingTrusts(r *activeRun, cov *havenv1.Coverage) []policy.MissingSite {
	out := []policy.MissingSite{}
	for _, st := range cov.GetSites() {
		if st.GetKind() != havenv1.SiteKind_SITE_KIND_TRUST || st.GetState() == havenv1.SiteState_SITE_STATE_DONE {
			continue
		}
		var activity int64
		if s := r.sites[st.GetSiteOds()]; s != nil {
			activity = s.activity
		}
		out = append(out, policy.MissingSite{ODS: st.GetSiteOds(), State: wire.SiteStateName(st.GetState()), Activity: activity})
	}
	return out
}

// Shutdown stops the dispatcher: every run in progress is marked
// INTERRUPTED (its linked rows were only in memory), its sites are sent
// CancelTask, its watchers are told, and its audit entry written. It waits
// for runs being linked to stop.
func (d *Dispatcher) Shutdown(ctx context.Context, reason string) {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	// Closed, the dispatcher adds no run; forget only removes them.
	for _, r := range d.active() {
		r.mu.Lock()
		d.interruptLocked(ctx, r, reason)
		r.mu.Unlock()
		d.forget(r)
	}
	d.stopOnce.Do(func() { close(d.stop) })
	d.loops.Wait()
	d.finishes.Wait()
}

// interruptLocked marks a run interrupted. r.mu is held.
func (d *Dispatcher) interruptLocked(ctx context.Context, r *activeRun, reason string) {
	if r.ended || FinalRun(r.run.State) {
		return
	}
	d.cancelTasks(ctx, r, "the run was interrupted: "+reason)
	r.run.Error = reason
	d.audit(ctx, audit.KindRunState, r.id, "coordinator", map[string]any{"state": "interrupted", "reason": reason,
		"previous": r.run.State.String()})
	d.setState(ctx, r, havenv1.RunState_RUN_STATE_INTERRUPTED, d.cfg.Clock.Now())
	for w := range r.watchers {
		w.close(ErrShuttingDown)
	}
	r.end()
}
