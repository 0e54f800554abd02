package dispatch

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/havenhealth/haven/coordinator/access"
	"github.com/havenhealth/haven/coordinator/audit"
	"github.com/havenhealth/haven/coordinator/authn"
	"github.com/havenhealth/haven/coordinator/store"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/wire"
)

// notFound is what a caller who may not see a run is told, so that run ids
// of other organisations cannot be probed.
func notFound(id string) error { return status.Errorf(codes.NotFound, "no run %q", id) }

// load returns the run with id as it stands, in memory or in the store.
func (d *Dispatcher) load(ctx context.Context, id string) (*havenv1.Run, error) {
	if r := d.lookup(id); r != nil {
		r.mu.Lock()
		defer r.mu.Unlock()
		run := proto.Clone(r.run).(*havenv1.Run)
		if run.State == havenv1.RunState_RUN_STATE_PENDING {
			run.QueuePosition = d.queuePosition(id)
		}
		return run, nil
	}
	run, err := d.cfg.Store.GetRun(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("get run %s: %w", id, err)
	}
	return run, nil
}

// GetRun returns a run p may see.
func (d *Dispatcher) GetRun(ctx context.Context, p authn.Principal, id string) (*havenv1.Run, error) {
	run, err := d.load(ctx, id)
	if err != nil {
		return nil, err
	}
	if !access.MayRead(p, run) {
		return nil, notFound(id)
	}
	return run, nil
}

// ListRuns lists runs newest first: every run for an operator, the runs of
// the caller's organisation otherwise.
func (d *Dispatcher) ListRuns(ctx context.Context, p authn.Principal, q store.ListQuery) ([]*havenv1.Run, string, error) {
	if !p.Operator {
		q.RequesterOrg = p.Org
	}
	runs, next, err := d.cfg.Store.ListRuns(ctx, q)
	if err != nil {
		return nil, "", err
	}
	// The stored snapshot of a run in progress may be a moment behind.
	for i, run := range runs {
		if r := d.lookup(run.Id); r != nil {
			r.mu.Lock()
			runs[i] = proto.Clone(r.run).(*havenv1.Run)
			r.mu.Unlock()
		}
	}
	return runs, next, nil
}

// FindSubmitted returns the run a requester submitted with a client
// request id, if any.
func (d *Dispatcher) FindSubmitted(ctx context.Context, p authn.Principal, clientRequestID string) (*havenv1.Run, bool, error) {
	run, err := d.cfg.Store.FindRunByClientRequestID(ctx, p.Org, p.ID, clientRequestID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if r := d.lookup(run.Id); r != nil {
		r.mu.Lock()
		run = proto.Clone(r.run).(*havenv1.Run)
		r.mu.Unlock()
	}
	return run, true, nil
}

// mayAct says whether p may act on run, as access.MayAct: nil if so,
// else the error p is given. A run p may not read is not found, so that
// its id tells nothing; one p may read but not act on is refused, naming
// what, the act, p may not do.
func mayAct(p authn.Principal, run *havenv1.Run, what string) error {
	if !access.MayRead(p, run) {
		return notFound(run.GetId())
	}
	if !access.MayAct(p, run) {
		return status.Errorf(codes.PermissionDenied, "only the requester of run %s or an operator may %s", run.GetId(), what)
	}
	return nil
}

// Release returns the released table of a run, as Arrow IPC, to its
// requester or an operator.
func (d *Dispatcher) Release(ctx context.Context, p authn.Principal, runID string) ([]byte, error) {
	run, err := d.load(ctx, runID)
	if err != nil {
		return nil, err
	}
	if err := mayAct(p, run, "fetch its table"); err != nil {
		return nil, err
	}
	if run.State != havenv1.RunState_RUN_STATE_RELEASED {
		msg := fmt.Sprintf("run %s is %s; there is no released table", runID, wire.RunStateName(run.State))
		if run.Error != "" {
			msg += ": " + run.Error
		}
		return nil, status.Error(codes.FailedPrecondition, msg)
	}
	rel, err := d.cfg.Store.GetRelease(ctx, runID)
	if err != nil {
		return nil, fmt.Errorf("fetch release of %s: %w", runID, err)
	}
	return rel.Table, nil
}

// CancelRun stops a run in progress at the request of its requester or an
// operator; its sites are sent CancelTask. A finished run is returned as it
// is.
func (d *Dispatcher) CancelRun(ctx context.Context, p authn.Principal, runID, reason string) (*havenv1.Run, error) {
	r := d.lookup(runID)
	if r == nil {
		run, err := d.load(ctx, runID)
		if err != nil {
			return nil, err
		}
		if err := mayAct(p, run, "cancel it"); err != nil {
			return nil, err
		}
		return run, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := mayAct(p, r.run, "cancel it"); err != nil {
		return nil, err
	}
	if FinalRun(r.run.State) {
		return proto.Clone(r.run).(*havenv1.Run), nil
	}
	if reason == "" {
		reason = "cancelled by " + p.ID
	}
	now := d.cfg.Clock.Now()
	d.cancelTasks(ctx, r, "run cancelled: "+reason)
	r.run.Error = reason
	d.audit(ctx, audit.KindRunState, r.id, p.Actor(), map[string]any{"state": "cancelled", "reason": reason})
	d.setState(ctx, r, havenv1.RunState_RUN_STATE_CANCELLED, now)
	r.end()
	d.forget(r)
	return proto.Clone(r.run).(*havenv1.Run), nil
}

// cancelTasks sends CancelTask to every site still working on the run.
// r.mu is held.
func (d *Dispatcher) cancelTasks(ctx context.Context, r *activeRun, reason string) {
	for _, ods := range r.order() {
		s := r.sites[ods]
		if !s.sent || finalSite(s.status.State) {
			continue
		}
		err := d.cfg.Links.Send(ods, &havenv1.CoordinatorMessage{Body: &havenv1.CoordinatorMessage_CancelTask{
			CancelTask: &havenv1.CancelTask{TaskId: s.taskID, Reason: reason}}})
		data := map[string]any{"site": ods, "task_id": s.taskID, "cancel": reason, "sent": err == nil}
		if err != nil {
			data["error"] = err.Error()
		}
		d.audit(ctx, audit.KindDispatch, r.id, "coordinator", data)
	}
}

// ErrWatcherBehind ends a watch whose reader fell too far behind.
var ErrWatcherBehind = errors.New("the watcher fell behind; watch again for a fresh snapshot")

// ErrShuttingDown ends watches when the coordinator stops.
var ErrShuttingDown = errors.New("the coordinator is shutting down")

// watcher receives a run's events.
type watcher struct {
	ch   chan *havenv1.RunEvent
	once sync.Once
	mu   sync.Mutex
	err  error
}

// watchBuffer is how many events a watcher may fall behind by.
const watchBuffer = 256

func (w *watcher) close(err error) {
	w.once.Do(func() {
		w.mu.Lock()
		w.err = err
		w.mu.Unlock()
		close(w.ch)
	})
}

// Watch follows one run.
type Watch struct {
	// First is the snapshot event.
	First *havenv1.RunEvent
	// C carries the events after the snapshot; it is nil when the run had
	// already finished, and is closed after the final state's event.
	C <-chan *havenv1.RunEvent
	w *watcher
	r *activeRun
}

// Err says why C was closed: nil after the run's final event,
// ErrWatcherBehind or ErrShuttingDown otherwise.
func (w *Watch) Err() error {
	if w.w == nil {
		return nil
	}
	w.w.mu.Lock()
	defer w.w.mu.Unlock()
	return w.w.err
}

// Stop ends the watch.
func (w *Watch) Stop() {
	if w.r == nil {
		return
	}
	w.r.mu.Lock()
	delete(w.r.watchers, w.w)
	w.r.mu.Unlock()
	w.w.close(nil)
}

// Watch returns a run's snapshot and, while the run is in progress, a
// channel of its further events.
func (d *Dispatcher) Watch(ctx context.Context, p authn.Principal, runID string) (*Watch, error) {
	now := d.cfg.Clock.Now()
	if r := d.lookup(runID); r != nil {
		r.mu.Lock()
		defer r.mu.Unlock()
		if !access.MayRead(p, r.run) {
			return nil, notFound(runID)
		}
		wt := &Watch{First: r.snapshotEvent(now)}
		if run := wt.First.GetRun(); run.GetState() == havenv1.RunState_RUN_STATE_PENDING {
			run.QueuePosition = d.queuePosition(runID)
		}
		if !r.ended && !FinalRun(r.run.State) {
			w := &watcher{ch: make(chan *havenv1.RunEvent, watchBuffer)}
			r.watchers[w] = struct{}{}
			wt.C, wt.w, wt.r = w.ch, w, r
		}
		return wt, nil
	}
	run, err := d.GetRun(ctx, p, runID)
	if err != nil {
		return nil, err
	}
	// Not in memory: the run has finished, so its history is complete and
	// the snapshot is its last word.
	return &Watch{First: &havenv1.RunEvent{Kind: havenv1.RunEventKind_RUN_EVENT_KIND_SNAPSHOT, Sequence: 1,
		At: timestamppb.New(now), Run: run}}, nil
}
