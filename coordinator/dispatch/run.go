package dispatch

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/jonboulle/clockwork"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/linkage"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/wire"
)

// activeRun is a run in progress. Everything in it is guarded by mu.
type activeRun struct {
	id         string
	def        *catalog.Definition
	bound      *catalog.Bound
	plan       *catalog.Plan
	decisionID string // of haven/submit
	keyRange   int    // R when the plan carries record keys, else 0
	org        string // the requester's organisation: its turn in the queue
	// slot says the run holds one of the dispatcher's MaxRunning slots;
	// guarded by the dispatcher's mu, not the run's.
	slot bool

	mu       sync.Mutex
	run      *havenv1.Run // the snapshot; Coverage.Sites point at the sites' statuses
	combiner Combiner
	sites    map[string]*siteRun // by ODS code
	seq      uint64              // events so far
	watchers map[*watcher]struct{}
	timer    clockwork.Timer // the deadline
	dirty    bool            // the stored snapshot is behind
	ended    bool            // final; combiner and staged uploads released
}

// siteRun is one site's part in a run.
type siteRun struct {
	ods        string
	kind       cdm.SiteKind
	population int64
	activity   int64 // a trust's hospital activity records
	taskID     string
	fields     []string
	schema     *arrow.Schema
	status     *havenv1.SiteStatus
	sent       bool    // the task went down the site's link at least once
	uploading  bool    // a DoPut is in progress
	staged     *staged // a checked upload waiting for TaskDone
	// linkLost is when the site's link dropped while its task was open;
	// zero while the link is up.
	linkLost time.Time
}

// staged is a checked upload, held until the node's TaskDone.
type staged struct {
	batch   *linkage.Staged // decoded and checked; nil for an upload of no rows
	rows    int64
	bytes   int64
	batches int64
}

func (s *staged) release() {
	if s != nil {
		s.batch.Release()
		s.batch = nil
	}
}

func newActiveRun(run *havenv1.Run, def *catalog.Definition, b *catalog.Bound, plan *catalog.Plan, c Combiner, decisionID string) *activeRun {
	return &activeRun{id: run.Id, def: def, bound: b, plan: plan, decisionID: decisionID, run: run, combiner: c,
		sites: map[string]*siteRun{}, seq: 1, watchers: map[*watcher]struct{}{}}
}

func (r *activeRun) order() []string { return slices.Sorted(maps.Keys(r.sites)) }

// final reports whether a site state is an answer (or the lack of one
// that nothing will change before the deadline).
func finalSite(s havenv1.SiteState) bool {
	switch s {
	case havenv1.SiteState_SITE_STATE_PENDING, havenv1.SiteState_SITE_STATE_ACCEPTED:
		return false
	}
	return true
}

// FinalRun reports whether a run state is final.
func FinalRun(s havenv1.RunState) bool { return wire.FinalRun(s) }

// updateCoverage recomputes the run's coverage from its sites. Population
// is counted only at the sites where the plan evaluates the population:
// in a linkage run the trusts' catchments are the same people as the
// practices' lists, and adding both would count everyone twice. Trusts are
// counted on their own, with the hospital activity they hold, since a
// missing trust leaves out activity even when every practice answered.
func (r *activeRun) updateCoverage() {
	c := r.run.Coverage
	c.SitesExpected, c.SitesAnswered, c.PopulationExpected, c.PopulationAnswered = 0, 0, 0, 0
	c.TrustsExpected, c.TrustsAnswered, c.ActivityExpected, c.ActivityAnswered = 0, 0, 0, 0
	c.OptOutsHonoured = 0
	for _, s := range r.sites {
		r.count(s, 1)
	}
}

// count adds site s's part to the run's coverage (sign 1) or takes it
// away (sign -1). setSite takes a site's part away before changing its
// status and adds it back after, so that a change costs the same at 6,730
// sites as at ten (recounting every site at each change was a sixth of a
// national linkage run's CPU).
func (r *activeRun) count(s *siteRun, sign int64) {
	c := r.run.Coverage
	c.SitesExpected += int32(sign)
	c.OptOutsHonoured += sign * s.status.OptOutsHonoured
	done := s.status.State == havenv1.SiteState_SITE_STATE_DONE
	if done {
		c.SitesAnswered += int32(sign)
	}
	if s.kind == cdm.KindTrust {
		c.TrustsExpected += int32(sign)
		c.ActivityExpected += sign * s.activity
		if done {
			c.TrustsAnswered += int32(sign)
			c.ActivityAnswered += sign * s.activity
		}
	}
	if s.kind != r.plan.Population {
		return
	}
	c.PopulationExpected += sign * s.population
	if done {
		c.PopulationAnswered += sign * s.population
	}
}

// runMoves lists the legal moves of a run's state. A run is stored as
// PENDING when it is admitted (or straight away as REFUSED or FAILED, which
// never pass through setState), RUNNING once its tasks are sent, LINKING
// once every site has answered or the deadline has passed, and ends in one
// of the final states; it can be cancelled or interrupted at any point
// before that. Anything else is a bug, logged and not acted on: a
// cancelled run, say, is never released.
var runMoves = map[havenv1.RunState][]havenv1.RunState{
	havenv1.RunState_RUN_STATE_PENDING: {havenv1.RunState_RUN_STATE_RUNNING, havenv1.RunState_RUN_STATE_REFUSED,
		havenv1.RunState_RUN_STATE_FAILED, havenv1.RunState_RUN_STATE_CANCELLED, havenv1.RunState_RUN_STATE_INTERRUPTED},
	havenv1.RunState_RUN_STATE_RUNNING: {havenv1.RunState_RUN_STATE_LINKING, havenv1.RunState_RUN_STATE_FAILED,
		havenv1.RunState_RUN_STATE_CANCELLED, havenv1.RunState_RUN_STATE_INTERRUPTED},
	havenv1.RunState_RUN_STATE_LINKING: {havenv1.RunState_RUN_STATE_RELEASED, havenv1.RunState_RUN_STATE_REFUSED,
		havenv1.RunState_RUN_STATE_FAILED, havenv1.RunState_RUN_STATE_CANCELLED, havenv1.RunState_RUN_STATE_INTERRUPTED},
}

// canMoveRun says whether a run may move from one state to another.
func canMoveRun(from, to havenv1.RunState) bool {
	return slices.Contains(runMoves[from], to)
}

// setState moves the run to state, stores it and emits an event. r.mu is
// held. An illegal move (runMoves) is logged as an error and not made.
func (d *Dispatcher) setState(ctx context.Context, r *activeRun, state havenv1.RunState, now time.Time) {
	prev := r.run.State
	if prev == state {
		return
	}
	if !canMoveRun(prev, state) {
		d.log.LogAttrs(ctx, slog.LevelError, "illegal run state change refused", slog.String("run", r.id),
			slog.String("state", prev.String()), slog.String("to", state.String()))
		return
	}
	r.run.State = state
	r.run.UpdatedAt = timestamppb.New(now)
	if FinalRun(state) {
		r.run.FinishedAt = r.run.UpdatedAt
		d.cfg.Metrics.RunFinished(wire.RunStateName(state), now.Sub(r.run.GetSubmittedAt().AsTime()))
	}
	d.persistLocked(ctx, r)
	d.log.LogAttrs(ctx, slog.LevelInfo, "run state", slog.String("run", r.id), slog.String("state", state.String()),
		slog.String("previous", prev.String()))
	r.emit(&havenv1.RunEvent{Kind: havenv1.RunEventKind_RUN_EVENT_KIND_STATE_CHANGED, PreviousState: prev}, now)
}

// setSite changes a site's status, emits an event and marks the snapshot
// for storing. r.mu is held.
func (d *Dispatcher) setSite(_ context.Context, r *activeRun, s *siteRun, state havenv1.SiteState, now time.Time, edit func(*havenv1.SiteStatus)) {
	r.count(s, -1)
	s.status.State = state
	if edit != nil {
		edit(s.status)
	}
	r.count(s, 1)
	s.status.UpdatedAt = timestamppb.New(now)
	r.run.UpdatedAt = s.status.UpdatedAt
	r.dirty = true
	r.emit(&havenv1.RunEvent{Kind: havenv1.RunEventKind_RUN_EVENT_KIND_SITE_CHANGED, SiteOds: s.ods}, now)
}

// persistLocked writes the run's snapshot to the store. r.mu is held, so
// writes of one run never overtake each other.
func (d *Dispatcher) persistLocked(ctx context.Context, r *activeRun) {
	if err := d.cfg.Store.UpdateRun(context.WithoutCancel(ctx), r.run); err != nil {
		r.dirty = true
		d.log.LogAttrs(ctx, slog.LevelError, "store run", slog.String("run", r.id), slog.String("error", err.Error()))
		return
	}
	r.dirty = false
}

// persistLoop writes the snapshots of runs whose sites changed.
func (d *Dispatcher) persistLoop() {
	defer d.loops.Done()
	t := d.cfg.Clock.NewTicker(d.cfg.PersistInterval)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.Chan():
		}
		for _, r := range d.active() {
			r.mu.Lock()
			if r.dirty && !r.ended {
				d.persistLocked(context.Background(), r)
			}
			r.mu.Unlock()
		}
	}
}

// emit numbers an event, fills in the run and sends it to the watchers.
// A watcher that cannot keep up is dropped rather than slowing the run.
// r.mu is held.
func (r *activeRun) emit(ev *havenv1.RunEvent, now time.Time) {
	r.seq++
	if len(r.watchers) == 0 {
		return
	}
	ev.Sequence = r.seq
	ev.At = timestamppb.New(now)
	ev.Run = proto.Clone(r.run).(*havenv1.Run)
	final := FinalRun(r.run.State)
	for w := range r.watchers {
		select {
		case w.ch <- ev:
			if final {
				w.close(nil)
				delete(r.watchers, w)
			}
		default:
			w.close(ErrWatcherBehind)
			delete(r.watchers, w)
		}
	}
}

// snapshotEvent is the first event of a watch. r.mu is held.
func (r *activeRun) snapshotEvent(now time.Time) *havenv1.RunEvent {
	return &havenv1.RunEvent{Kind: havenv1.RunEventKind_RUN_EVENT_KIND_SNAPSHOT, Sequence: r.seq,
		At: timestamppb.New(now), Run: proto.Clone(r.run).(*havenv1.Run)}
}

// end releases what a finished run holds in memory: the linkage state,
// staged uploads and the deadline timer. r.mu is held.
func (r *activeRun) end() {
	if r.ended {
		return
	}
	r.ended = true
	if r.timer != nil {
		r.timer.Stop()
	}
	for _, s := range r.sites {
		s.staged.release()
		s.staged = nil
	}
	if r.combiner != nil {
		r.combiner.Close()
	}
	for w := range r.watchers {
		w.close(nil)
		delete(r.watchers, w)
	}
}
