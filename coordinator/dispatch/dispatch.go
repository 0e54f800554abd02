// Package dispatch runs runs: it records a submission, asks the planner
// which sites to ask, sends each its Task down its node link, follows what
// the sites answer, stages their Flight uploads, and when every site has
// answered or the deadline has passed, links the results
// (coordinator/linkage), asks haven/disclose for the thresholds, applies
// disclosure control and stores the released table.
//
// # State
//
// Each run in progress lives in memory as an activeRun: its Run snapshot
// (the same message the job store keeps and WatchRun streams), one entry
// per site, the run's linkage state and the uploads waiting for their
// TaskDone. Every change to a run happens under the run's own lock and
// produces one RunEvent. State changes are written to the job store at
// once; changes to a site's status are written at most every
// Config.PersistInterval, since an interrupted run is never resumed from
// the store anyway.
//
// # Uploads
//
// A site's upload is checked (schema, limits, every row, by a scratch
// linkage run) and held as staged; it is added to the run only when the
// node's TaskDone arrives and agrees with what was received. A rejected or
// failed upload, or a TaskFailed, leaves the run exactly as it was.
//
// # Memory
//
// Linked rows exist only inside the run's linkage state, which is dropped
// when the run ends however it ends. The job store receives the Run
// snapshot (no patient data) and the released table; the audit log
// receives identifiers and counts.
package dispatch

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/havenhealth/haven/coordinator/audit"
	"github.com/havenhealth/haven/coordinator/authn"
	"github.com/havenhealth/haven/coordinator/disclosure"
	"github.com/havenhealth/haven/coordinator/finish"
	"github.com/havenhealth/haven/coordinator/linkage"
	"github.com/havenhealth/haven/coordinator/metrics"
	"github.com/havenhealth/haven/coordinator/nodelink"
	"github.com/havenhealth/haven/coordinator/planner"
	"github.com/havenhealth/haven/coordinator/queue"
	"github.com/havenhealth/haven/coordinator/store"
	"github.com/havenhealth/haven/policy"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/wire"
)

// Links is the registry of node links (nodelink.Server).
type Links interface {
	Sites() []nodelink.SiteInfo
	Send(ods string, m *havenv1.CoordinatorMessage) error
}

// Auditor appends to the audit log (audit.Log).
type Auditor interface {
	Append(ctx context.Context, r audit.Record) (audit.Entry, error)
}

// Combiner links and aggregates one run's uploads (linkage.Run). An
// upload is decoded and checked once, by Decode when it is received, and
// the staged result applied when the node reports its task done.
type Combiner interface {
	Decode(ctx context.Context, site linkage.Site, rec arrow.Record) (*linkage.Staged, error)
	Apply(ctx context.Context, st *linkage.Staged) error
	Table(ctx context.Context) (disclosure.Table, linkage.Stats, error)
	Close()
}

// CombinerFactory makes the Combiner of run runID.
// keyRange is R of the run's cell-key perturbation when plan carries record
// keys, else 0.
type CombinerFactory func(runID string, plan *catalog.Plan, def *catalog.Definition, b *catalog.Bound, keyRange int) (Combiner, error)

// NewLinkage returns the CombinerFactory of a real coordinator: linkage
// runs that keep their patient table within memoryBudget bytes (0: no
// budget), spilling to files in spillDir named for the run
// (linkage.Options).
func NewLinkage(memoryBudget int64, spillDir string) CombinerFactory {
	return func(runID string, plan *catalog.Plan, def *catalog.Definition, b *catalog.Bound, keyRange int) (Combiner, error) {
		return linkage.New(plan, def, b, linkage.Options{KeyRange: keyRange, MemoryBudget: memoryBudget, SpillDir: spillDir, RunID: runID})
	}
}

// Config is what a Dispatcher needs.
type Config struct {
	Store  store.Store
	Audit  Auditor
	Policy finish.Discloser
	Links  Links
	// Members are the configured member sites; with none, a run asks the
	// sites that have connected since start-up.
	Members []planner.Site
	// LinkageKeyID, if set, restricts linkage runs to nodes holding it.
	LinkageKeyID string
	// Limits cap each task's upload.
	Limits *havenv1.UploadLimits
	// Deadline is how long sites have to answer, from when a run leaves
	// the queue.
	Deadline time.Duration
	// MaxRunning is how many runs are dispatched at once; admitted runs
	// beyond it wait, PENDING, in a fair queue (coordinator/queue). Zero
	// means DefaultMaxRunning.
	MaxRunning int
	Logger     *slog.Logger
	// Clock tells the time and runs the deadline timers and the persist
	// ticker; nil means the real clock. Tests drive run deadlines with a
	// fake one (clockwork.NewFakeClock) instead of sleeping.
	Clock clockwork.Clock
	// SigningKey, if set, signs every released table (release.Sign);
	// without one, tables are released unsigned.
	SigningKey ed25519.PrivateKey
	// Metrics, if set, is told of finished runs and uploads.
	Metrics *metrics.Metrics
	// LinkageMemoryBudget and SpillDir bound the memory of each linkage
	// run's patient table and say where it spills beyond that (see
	// NewLinkage); a zero budget holds everything in memory.
	LinkageMemoryBudget int64
	SpillDir            string
	// NewCombiner makes each run's combiner; nil means NewLinkage with
	// LinkageMemoryBudget and SpillDir.
	NewCombiner CombinerFactory
	// ReconnectGrace is how recently a site must have been heard from for
	// it to keep its place when its link is down as its task is due: it
	// is sent the task when it links again, until the deadline (a network
	// blip, a coordinator restart). A site unheard for longer is
	// DISCONNECTED at once, so that a run need not wait for a site that
	// is gone. Default one minute.
	ReconnectGrace time.Duration
	// PersistInterval bounds how stale the stored snapshot of a run in
	// progress may be; zero means 250ms.
	PersistInterval time.Duration
}

// DefaultMaxRunning is how many runs are dispatched at once by default.
const DefaultMaxRunning = 16

// Dispatcher runs runs. It is safe for concurrent use.
type Dispatcher struct {
	cfg      Config
	log      *slog.Logger
	finisher *finish.Step

	mu     sync.Mutex
	runs   map[string]*activeRun // runs in progress or queued, by id
	tasks  map[string]taskRef    // their tasks, by task id
	closed bool
	// queue holds the ids of admitted runs waiting for one of the
	// MaxRunning slots; running counts the runs holding one.
	queue   *queue.Queue
	running int

	stop     chan struct{}
	stopOnce sync.Once
	loops    sync.WaitGroup
	finishes sync.WaitGroup
}

type taskRef struct {
	run *activeRun
	ods string
}

// New returns a dispatcher; Start begins its background work.
func New(cfg Config) (*Dispatcher, error) {
	switch {
	case cfg.Store == nil, cfg.Audit == nil, cfg.Policy == nil, cfg.Links == nil:
		return nil, errors.New("dispatch: store, audit, policy and links are required")
	case cfg.Limits == nil:
		return nil, errors.New("dispatch: upload limits are required")
	case cfg.Deadline <= 0:
		return nil, errors.New("dispatch: the run deadline must be positive")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.NewCombiner == nil {
		cfg.NewCombiner = NewLinkage(cfg.LinkageMemoryBudget, cfg.SpillDir)
	}
	if cfg.ReconnectGrace <= 0 {
		cfg.ReconnectGrace = time.Minute
	}
	if cfg.PersistInterval <= 0 {
		cfg.PersistInterval = 250 * time.Millisecond
	}
	if cfg.MaxRunning <= 0 {
		cfg.MaxRunning = DefaultMaxRunning
	}
	return &Dispatcher{cfg: cfg, log: cfg.Logger, runs: map[string]*activeRun{}, tasks: map[string]taskRef{},
		finisher: &finish.Step{Policy: cfg.Policy, SigningKey: cfg.SigningKey, Now: cfg.Clock.Now, Log: cfg.Logger},
		queue:    queue.New(), stop: make(chan struct{})}, nil
}

// Start begins writing the snapshots of runs in progress to the store.
func (d *Dispatcher) Start() {
	d.loops.Add(1)
	go d.persistLoop()
}

// Submission is a checked request for a run.
type Submission struct {
	Definition *catalog.Definition
	Bound      *catalog.Bound
	Purpose    string
	Requester  authn.Principal
	// ClientRequestID makes retried submissions idempotent.
	ClientRequestID string
	// Decide evaluates haven/submit on the release ledger's view of the
	// definition. It is called inside the job-store transaction that
	// records the run, so that the ledger cannot change between the
	// decision and the record; it must not use the store. It always
	// returns a usable decision (policy.Engine.Submit denies on failure).
	Decide func(ctx context.Context, ledger *policy.LedgerHistory) policy.Decision
	// TurnAway, if set, sees the decision before anything is stored; an
	// error from it is returned by Submit as it is, and nothing is stored
	// (admission's cap on refused submissions).
	TurnAway func(policy.Decision) error
	// LedgerLookback is how far back the bundle's ledger rules look
	// (policy.Engine.LedgerLookback); the decision is shown the ledger
	// that far back. Zero reads none: a bundle without ledger rules needs
	// none, and reading every run of a definition on every submission
	// would cost more than the rest of admission.
	LedgerLookback time.Duration
}

// CodeLedgerUnavailable is the reason a submission is refused when the
// release ledger cannot be read: policy that cannot see it cannot decide.
const CodeLedgerUnavailable = "ledger_unavailable"

// ledgerHistory is the policy input of a ledger view.
func ledgerHistory(v store.LedgerView) *policy.LedgerHistory {
	out := &policy.LedgerHistory{Since: v.Since, Entries: make([]policy.LedgerEntry, len(v.Entries))}
	for i, e := range v.Entries {
		out.Entries[i] = policy.LedgerEntry{RunID: e.RunID, Requester: policy.LedgerRequester{ID: e.RequesterID, Org: e.RequesterOrg},
			Parameters: e.Parameters, SubmittedAt: e.SubmittedAt, Released: e.Released()}
	}
	return out
}

// NewID returns a fresh, unguessable run or task id with a prefix.
func NewID(prefix string) string { return prefix + "-" + rand.Text() }

// Submit records a run and, if haven/submit allowed it, plans it and sends
// its tasks. It returns the run as it stands after dispatch: REFUSED with
// the policy's reasons, FAILED if it could not be planned, or RUNNING.
func (d *Dispatcher) Submit(ctx context.Context, sub Submission) (*havenv1.Run, error) {
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return nil, status.Error(codes.Unavailable, "the coordinator is shutting down; submit again later")
	}
	def := sub.Definition
	now := d.cfg.Clock.Now()
	keyRange := d.keyRange(ctx, sub, def)
	plan := def.PlanWith(catalog.PlanOptions{RecordKeys: keyRange > 0})
	run := &havenv1.Run{
		Id:                NewID("run"),
		DefinitionId:      def.ID,
		DefinitionVersion: uint32(def.Version),
		DefinitionHash:    def.Hash(),
		Parameters:        wire.Parameters(sub.Bound),
		Purpose:           sub.Purpose,
		Requester:         &havenv1.Requester{Id: sub.Requester.ID, Org: sub.Requester.Org, Roles: slices.Sorted(slices.Values(sub.Requester.Roles))},
		Mode:              wire.Mode(plan.Mode),
		State:             havenv1.RunState_RUN_STATE_PENDING,
		SubmittedAt:       timestamppb.New(now),
		UpdatedAt:         timestamppb.New(now),
		ClientRequestId:   sub.ClientRequestID,
		Coverage:          &havenv1.Coverage{},
	}

	// Read the ledger, decide and record the run (with its ledger entry
	// when admitted) in one transaction, so that two submissions cannot
	// both be counted against a ledger that holds neither.
	refuse := func(dec policy.Decision) {
		run.State = havenv1.RunState_RUN_STATE_REFUSED
		run.PolicyReasons = wireReasons(dec.Reasons)
		run.FinishedAt = run.UpdatedAt
	}
	var dec policy.Decision
	lookback := max(sub.LedgerLookback, 0)
	var turnedAway error
	_, err := d.cfg.Store.AdmitRun(ctx, store.LedgerQuery{DefinitionID: def.ID, Since: now.Add(-lookback), Skip: lookback == 0},
		func(v store.LedgerView) (*havenv1.Run, error) {
			dec = sub.Decide(ctx, ledgerHistory(v))
			if sub.TurnAway != nil {
				if err := sub.TurnAway(dec); err != nil {
					turnedAway = err
					return nil, err
				}
			}
			run.BundleRevision = dec.Revision
			if !dec.Allow {
				refuse(dec)
			}
			return run, nil
		})
	if turnedAway != nil {
		// Nothing is stored or audited for a submission turned away.
		return nil, turnedAway
	}
	actor := sub.Requester.Actor()
	d.audit(ctx, audit.KindSubmission, run.Id, actor, map[string]any{
		"definition": def.ID, "version": def.Version, "hash": def.Hash(), "mode": plan.Mode,
		"parameters": sub.Bound.Params(), "purpose": sub.Purpose, "requester_org": sub.Requester.Org,
		"client_request_id": sub.ClientRequestID, "auth": sub.Requester.Method,
	})
	if errors.Is(err, store.ErrLedger) {
		// Fail closed: without the ledger nothing is admitted. The refusal
		// is recorded (without the ledger) so that the requester sees why.
		d.log.LogAttrs(ctx, slog.LevelError, "release ledger unavailable; submission refused", slog.String("run", run.Id), slog.String("error", err.Error()))
		dec = policy.Decision{Reasons: []policy.Reason{{Code: CodeLedgerUnavailable,
			Message: "the coordinator could not read its release ledger, so haven/submit could not check near-duplicates and budgets; nothing runs until it can (the operator has the detail)"}}}
		refuse(dec)
		err = d.create(ctx, run)
	}
	if err != nil {
		return nil, d.storeError(run, err)
	}
	d.audit(ctx, audit.KindDecision, run.Id, "coordinator", decisionData("haven/submit", dec))
	if !dec.Allow {
		d.audit(ctx, audit.KindRunState, run.Id, "coordinator", map[string]any{"state": "refused", "by": "haven/submit",
			"reasons": reasonCodes(dec.Reasons)})
		return run, nil
	}

	r := newActiveRun(run, def, sub.Bound, plan, nil, dec.ID)
	r.keyRange = keyRange
	r.org = sub.Requester.Org
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		r.mu.Lock()
		defer r.mu.Unlock()
		d.interruptLocked(ctx, r, "the coordinator is shutting down")
		return proto.Clone(r.run).(*havenv1.Run), nil
	}
	d.runs[run.Id] = r
	start := d.running < d.cfg.MaxRunning && d.queue.Len() == 0
	if start {
		d.running++
		r.slot = true
	} else {
		d.queue.Push(r.org, run.Id)
	}
	pos := d.queue.Position(run.Id)
	d.mu.Unlock()
	if !start {
		d.audit(ctx, audit.KindRunState, run.Id, "coordinator", map[string]any{"state": "queued", "position": pos})
		d.log.LogAttrs(ctx, slog.LevelInfo, "run queued", slog.String("run", run.Id), slog.Int("position", pos))
		r.mu.Lock()
		defer r.mu.Unlock()
		out := proto.Clone(r.run).(*havenv1.Run)
		out.QueuePosition = uint32(pos)
		return out, nil
	}
	return d.begin(ctx, r)
}

// begin plans a run that holds a slot, sends its tasks and starts its
// deadline. It takes r.mu.
func (d *Dispatcher) begin(ctx context.Context, r *activeRun) (*havenv1.Run, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	run := r.run
	if r.ended || run.State != havenv1.RunState_RUN_STATE_PENDING {
		// Cancelled or interrupted while it waited; forget gave the slot
		// back.
		return proto.Clone(run).(*havenv1.Run), nil
	}
	now := d.cfg.Clock.Now()
	fail := func(msg string) (*havenv1.Run, error) {
		run.Error = msg
		d.audit(ctx, audit.KindRunState, run.Id, "coordinator", map[string]any{"state": "failed", "error": msg})
		d.log.LogAttrs(ctx, slog.LevelWarn, "run failed", slog.String("run", run.Id), slog.String("error", msg))
		d.setState(ctx, r, havenv1.RunState_RUN_STATE_FAILED, now)
		r.end()
		d.forget(r)
		return proto.Clone(run).(*havenv1.Run), nil
	}
	infos := d.cfg.Links.Sites()
	// When each site whose link is down was last heard from, read from
	// the same listing the planner sees rather than once per such site.
	downSince := map[string]time.Time{}
	for _, si := range infos {
		if !si.Connected {
			downSince[si.ODS] = si.LastSeen
		}
	}
	assign, err := planner.Assign(r.plan, planner.Merge(d.cfg.Members, liveSites(infos)),
		planner.Options{LinkageKeyID: d.cfg.LinkageKeyID})
	if err != nil {
		return fail(fmt.Sprintf("could not plan the run: %v", err))
	}
	combiner, err := d.cfg.NewCombiner(r.id, r.plan, r.def, r.bound, r.keyRange)
	if err != nil {
		return fail(fmt.Sprintf("could not prepare linkage: %v", err))
	}
	r.combiner = combiner
	run.Deadline = timestamppb.New(now.Add(d.cfg.Deadline))
	for _, a := range assign {
		st := &havenv1.SiteStatus{SiteOds: a.Site.ODS, Kind: wire.SiteKind(a.Site.Kind), State: a.State,
			Error: a.Error, UpdatedAt: timestamppb.New(now)}
		schema, _ := r.plan.Schema(a.Site.Kind)
		s := &siteRun{ods: a.Site.ODS, kind: a.Site.Kind, population: a.Site.Population, activity: a.Site.Activity, status: st, schema: schema,
			taskID: NewID("task"), fields: fieldNames(a.Task)}
		r.sites[s.ods] = s
		run.Coverage.Sites = append(run.Coverage.Sites, st)
	}
	r.updateCoverage()
	if err := d.cfg.Store.UpdateRun(ctx, run); err != nil {
		d.log.LogAttrs(ctx, slog.LevelError, "store run", slog.String("run", run.Id), slog.String("error", err.Error()))
		return fail("the run could not be stored: " + err.Error())
	}

	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		d.interruptLocked(ctx, r, "the coordinator is shutting down")
		d.forget(r)
		return proto.Clone(run).(*havenv1.Run), nil
	}
	for _, s := range r.sites {
		d.tasks[s.taskID] = taskRef{run: r, ods: s.ods}
	}
	d.mu.Unlock()

	for _, ods := range r.order() {
		s := r.sites[ods]
		switch {
		case s.status.State == havenv1.SiteState_SITE_STATE_PENDING:
			d.sendTask(ctx, r, s, now)
		case s.status.State == havenv1.SiteState_SITE_STATE_DISCONNECTED && d.recent(downSince[s.ods], now):
			// Planned while its link was down, but heard from a moment
			// ago: sendTask keeps its place for when it links again.
			d.sendTask(ctx, r, s, now)
		default:
			d.audit(ctx, audit.KindDispatch, run.Id, "coordinator", map[string]any{"site": s.ods, "kind": s.kind,
				"sent": false, "state": wire.SiteStateName(s.status.State), "error": s.status.Error})
		}
	}
	d.setState(ctx, r, havenv1.RunState_RUN_STATE_RUNNING, now)
	r.timer = d.cfg.Clock.AfterFunc(d.cfg.Clock.Until(run.Deadline.AsTime()), func() { d.deadline(r) })
	d.checkComplete(ctx, r)
	return proto.Clone(run).(*havenv1.Run), nil
}

func (d *Dispatcher) create(ctx context.Context, run *havenv1.Run) error {
	return d.cfg.Store.CreateRun(ctx, run)
}

// storeError is what a submitter is told when its run could not be stored.
func (d *Dispatcher) storeError(run *havenv1.Run, err error) error {
	if errors.Is(err, store.ErrAlreadyExists) && run.ClientRequestId != "" {
		return status.Errorf(codes.AlreadyExists, "a run with client request id %q is being submitted; retry to get it", run.ClientRequestId)
	}
	return fmt.Errorf("store run %s: %w", run.Id, err)
}

// sendTask sends a site its task and marks it pending. r.mu is held.
func (d *Dispatcher) sendTask(ctx context.Context, r *activeRun, s *siteRun, now time.Time) {
	task := d.task(r, s, now)
	err := d.cfg.Links.Send(s.ods, &havenv1.CoordinatorMessage{Body: &havenv1.CoordinatorMessage_Task{Task: task}})
	data := map[string]any{"site": s.ods, "kind": s.kind, "task_id": s.taskID, "sent": err == nil,
		"deadline": r.run.Deadline.AsTime(), "limits": map[string]int64{"max_rows": task.Limits.MaxRows,
			"max_bytes": task.Limits.MaxBytes, "max_batch_bytes": task.Limits.MaxBatchBytes}}
	switch {
	case err != nil && d.heardRecently(s.ods, now):
		// Heard from a moment ago: its link is being made again. It keeps
		// its place, NodeConnected sends the task when it is back, and
		// the deadline names it DISCONNECTED if it is not.
		data["error"] = err.Error()
		if s.linkLost.IsZero() {
			s.linkLost = now
		}
		d.setSite(ctx, r, s, havenv1.SiteState_SITE_STATE_PENDING, now, func(st *havenv1.SiteStatus) {
			st.Error = "the site's link is down; its task goes when it links again, until the deadline"
		})
	case err != nil:
		data["error"] = err.Error()
		d.setSite(ctx, r, s, havenv1.SiteState_SITE_STATE_DISCONNECTED, now, func(st *havenv1.SiteStatus) {
			st.Error = "the task could not be sent: " + err.Error()
		})
	default:
		s.sent = true
		d.setSite(ctx, r, s, havenv1.SiteState_SITE_STATE_PENDING, now, func(st *havenv1.SiteStatus) { st.Error = "" })
	}
	d.audit(ctx, audit.KindDispatch, r.run.Id, "coordinator", data)
}

// heardRecently reports whether the node-link server heard from site ods
// within ReconnectGrace of now. It reads every site, so it is asked only
// of a site whose send just failed, which the planner saw linked.
func (d *Dispatcher) heardRecently(ods string, now time.Time) bool {
	for _, si := range d.cfg.Links.Sites() {
		if si.ODS == ods {
			return d.recent(si.LastSeen, now)
		}
	}
	return false
}

// recent reports whether a site last heard from at seen is within
// ReconnectGrace of now; a zero seen (never heard from) is not.
func (d *Dispatcher) recent(seen, now time.Time) bool {
	return !seen.IsZero() && now.Sub(seen) <= d.cfg.ReconnectGrace
}

// task builds the Task a site is sent.
func (d *Dispatcher) task(r *activeRun, s *siteRun, now time.Time) *havenv1.Task {
	run := r.run
	return &havenv1.Task{
		TaskId:            s.taskID,
		RunId:             run.Id,
		DefinitionId:      run.DefinitionId,
		DefinitionVersion: run.DefinitionVersion,
		DefinitionHash:    run.DefinitionHash,
		Parameters:        run.Parameters,
		Purpose:           run.Purpose,
		RequesterOrg:      run.Requester.GetOrg(),
		Mode:              run.Mode,
		SiteKind:          wire.SiteKind(s.kind),
		OutputFields:      s.fields,
		RecordKeyRange:    uint32(r.keyRange),
		Limits:            proto.Clone(d.cfg.Limits).(*havenv1.UploadLimits),
		Deadline:          run.Deadline,
		IssuedAt:          timestamppb.New(now),
		BundleRevision:    run.BundleRevision,
		SubmitDecisionId:  r.decisionID,
	}
}

func fieldNames(t catalog.SiteTask) []string {
	out := make([]string, len(t.Fields))
	for i, f := range t.Fields {
		out[i] = f.Name
	}
	return out
}

func liveSites(infos []nodelink.SiteInfo) []planner.Site {
	out := make([]planner.Site, len(infos))
	for i, si := range infos {
		out[i] = planner.Site{ODS: si.ODS, Kind: si.Kind, Population: si.Population, Activity: si.Activity, Connected: si.Connected,
			Paused: si.Paused, LinkageKeyID: si.LinkageKeyID}
	}
	return out
}

// active returns the runs in progress or queued. It takes d.mu, so that
// the caller may then take each run's lock without holding d's.
func (d *Dispatcher) active() []*activeRun {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Collect(maps.Values(d.runs))
}

// lookup returns the run in progress with id.
func (d *Dispatcher) lookup(id string) *activeRun {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.runs[id]
}

// forget removes a finished run from memory, gives its slot (or its place
// in the queue) back, and starts the queued runs that now have a slot, each
// in its own goroutine: the caller may hold another run's lock.
func (d *Dispatcher) forget(r *activeRun) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.runs[r.id] == r {
		delete(d.runs, r.id)
	}
	for _, s := range r.sites {
		delete(d.tasks, s.taskID)
	}
	if r.slot {
		r.slot = false
		d.running--
	} else {
		d.queue.Remove(r.id)
	}
	for !d.closed && d.running < d.cfg.MaxRunning {
		id, ok := d.queue.Pop()
		if !ok {
			break
		}
		next := d.runs[id]
		if next == nil {
			continue
		}
		next.slot = true
		d.running++
		d.finishes.Add(1)
		go func() {
			defer d.finishes.Done()
			if _, err := d.begin(context.Background(), next); err != nil {
				d.log.LogAttrs(context.Background(), slog.LevelError, "start a queued run", slog.String("run", next.id), slog.String("error", err.Error()))
			}
		}()
	}
}

// queuePosition is run id's place in the queue, from 1, or 0.
func (d *Dispatcher) queuePosition(id string) uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return uint32(d.queue.Position(id))
}

func (d *Dispatcher) audit(ctx context.Context, kind audit.Kind, runID, actor string, data any) {
	if _, err := d.cfg.Audit.Append(context.WithoutCancel(ctx), audit.Record{Kind: kind, RunID: runID, Actor: actor, Data: data}); err != nil {
		d.log.LogAttrs(ctx, slog.LevelError, "audit append failed", slog.String("run", runID),
			slog.String("kind", string(kind)), slog.String("error", err.Error()))
	}
}

func decisionData(name string, dec policy.Decision) map[string]any {
	return map[string]any{"decision": name, "decision_id": dec.ID, "allow": dec.Allow,
		"reasons": reasonCodes(dec.Reasons), "bundle_revision": dec.Revision}
}

func reasonCodes(rs []policy.Reason) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Code
	}
	return out
}

func wireReasons(rs []policy.Reason) []*havenv1.PolicyReason {
	out := make([]*havenv1.PolicyReason, len(rs))
	for i, r := range rs {
		out[i] = &havenv1.PolicyReason{Code: r.Code, Message: r.Message}
	}
	return out
}

// ActiveRuns counts the runs in progress by state ("pending", "running",
// "linking"), for the metrics.
func (d *Dispatcher) ActiveRuns() map[string]int {
	out := map[string]int{}
	for _, r := range d.active() {
		r.mu.Lock()
		if !r.ended {
			out[wire.RunStateName(r.run.State)]++
		}
		r.mu.Unlock()
	}
	return out
}

// linkageSite names a site to the linkage.
func linkageSite(s *siteRun) linkage.Site { return linkage.Site{ODS: s.ods, Kind: s.kind} }

// keyRange is R of the cell-key perturbation the run's release will use,
// asked of haven/disclose at submission for the run's purpose with a table
// of the definition's measures, or 0 when counts will not be perturbed.
// Aggregate plans then ask practices for cell key sums, linkage plans ask
// the sites that evaluate the population for record keys. A run whose
// bundle changed R in between fails closed at release
// (disclosureThresholds).
func (d *Dispatcher) keyRange(ctx context.Context, sub Submission, def *catalog.Definition) int {
	ms := make([]policy.Measure, len(def.Measures))
	for i, m := range def.Measures {
		ms[i] = policy.Measure{Name: m.Name, Kind: string(m.Agg), Dominance: m.Dominance}
	}
	dec, err := d.cfg.Policy.Disclose(ctx, policy.DiscloseInput{
		Purpose: sub.Purpose,
		Table:   policy.TableShape{Rows: 1, Measures: ms},
		// Full coverage: the question is how a release would be
		// controlled, not whether this one may be.
		Coverage: policy.Coverage{Sites: policy.Answered{Expected: 1, Answered: 1},
			Population: policy.Answered{Expected: 1, Answered: 1}, MissingTrusts: []policy.MissingSite{}},
	})
	if err != nil || !dec.Allow || dec.Perturbation == nil {
		return 0
	}
	return dec.Perturbation.KeyRange()
}
