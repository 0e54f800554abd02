// Package runner runs the tasks a coordinator sends a node, from the
// decision to take part to the upload of the result (DESIGN §2, §6–§8).
//
// For each task, in order, and stopping at the first no:
//
//  1. the site is not paused (the switch is read from disk for every task);
//  2. the task is for this kind of site;
//  3. its definition, by id, version and hash, is in the verified bundle's
//     catalogue, and its parameters bind to it;
//  4. haven/participate, with the site's own rules, allows it (any policy
//     error denies);
//  5. its run id was never seen before (the persistent run ledger).
//
// A no at steps 1–5 is a TaskRefused with reasons, and nothing is queried.
// Then the task is compiled to SQL for the connector's dialect and run
// within the node's limits. The SQL binds only the part of the national
// opt-out list that matters at this site: the numbers on it that appear
// in the tables the task reads, read afresh for every task (at national
// scale the whole list is millions of numbers; a site holds a few
// thousand of them). The network type 1 list (objections other practices
// published, as keyed hashes; node/optout Network) is matched against the
// site's numbers by hashing each, and those found are bound in the same
// list; a node that never received the network list runs no task. On the
// way out the result is checked again in Go, against the whole national
// list and by hashing every number against the network list: every NHS
// number it rests on (linkage rows, or the members of an aggregate's
// cells) must be valid and on no opt-out list, or the task is
// aborted and nothing is sent. Linkage rows have their NHS number replaced
// by the run pseudonym. The result goes up with Flight DoPut in batches
// within the task's limits, retried while the coordinator is unreachable
// and the deadline allows, and the node reports TaskDone with exactly what
// it sent, after writing the same to its audit log.
package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/apache/arrow/go/v17/arrow"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/node/audit"
	"github.com/havenhealth/haven/node/connector"
	"github.com/havenhealth/haven/node/optout"
	"github.com/havenhealth/haven/node/pseudonym"
	"github.com/havenhealth/haven/node/sqlgen"
	"github.com/havenhealth/haven/node/state"
	"github.com/havenhealth/haven/policy"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// Policy is the node's policy engine (*policy.Engine).
type Policy interface {
	Participate(ctx context.Context, in policy.ParticipateInput) (policy.Decision, error)
	// Catalog is the approved catalogue of the active, verified bundle.
	Catalog() *catalog.Catalog
	// Revision is the active bundle's revision.
	Revision() string
	// HasKeyRange reports whether r is the key range of a perturbation
	// table in the active bundle.
	HasKeyRange(r int) bool
}

// Records is a query result read batch by batch (*connector.Result).
type Records interface {
	Next() bool
	// Record is valid until the next call to Next.
	Record() arrow.Record
	Err() error
	Close() error
}

// Source is the site's data: the connector plugin.
type Source interface {
	// Dialect is the SQL dialect the connector runs.
	Dialect(ctx context.Context) (sqlgen.Dialect, error)
	// HasTable reports whether the site holds the CDM table.
	HasTable(ctx context.Context, name string) (bool, error)
	Query(ctx context.Context, q connector.Query) (Records, error)
}

// Link is the control link to the coordinator (*session.Session).
type Link interface {
	// Send sends an advisory message (acceptance, progress) if a link is up.
	Send(msg *havenv1.NodeMessage) error
	// Report records an outcome durably and sends it when it can.
	Report(o *havenv1.TaskOutcome) error
}

// Journal records which tasks are running (*state.Journal).
type Journal interface {
	Started(taskID, runID string) error
	Lookup(taskID string) (running bool, outcome *havenv1.TaskOutcome, confirmed bool)
}

// Ledger refuses a run id seen before (*pseudonym.Ledger).
type Ledger interface {
	Claim(runID string) error
}

// Uploader sends a task's result to the coordinator (*FlightUploader).
type Uploader interface {
	Upload(ctx context.Context, taskID string, schema *arrow.Schema, batches []arrow.Record) (Sent, error)
}

// Sent is what an upload sent and what the coordinator said it received.
type Sent struct {
	Rows, Bytes, Batches int64
	Receipt              *havenv1.UploadReceipt
}

// Limits bound one task, whatever the task itself allows.
type Limits struct {
	MaxRows      int64
	MaxBytes     int64
	QueryTimeout time.Duration
}

// DefaultMaxBatchBytes caps a record batch when a task sets no
// max_batch_bytes: well under gRPC's default 4 MiB message limit.
const DefaultMaxBatchBytes = 1 << 20

// Config is what a Runner needs. Every field but Logger, Now, Concurrency
// and RetryBackoff is required.
type Config struct {
	ODS  string
	Kind cdm.SiteKind

	Policy   Policy
	Source   Source
	Link     Link
	Journal  Journal
	Ledger   Ledger
	Uploader Uploader
	Audit    *audit.Log
	Secret   pseudonym.Secret
	// PerturbationSecret derives record keys for cell-key perturbation.
	// Optional: without it the node refuses tasks that need record keys.
	PerturbationSecret pseudonym.PerturbationSecret
	// NDOP returns the national data opt-out list in force.
	NDOP func() *optout.Set
	// Network returns the network type 1 opt-out list in force; nil until
	// the node first received one, and then the node runs no task.
	Network func() *optout.Network
	// Pause reads the pause switch; an error counts as paused.
	Pause func() (state.Pause, error)

	Limits Limits
	// Concurrency is how many tasks run at once; zero means 1.
	Concurrency int
	// RetryBackoff is the first wait before retrying an upload the
	// coordinator could not take; it doubles up to a minute. Zero means 1s.
	RetryBackoff time.Duration

	// OnFinished, if set, is called after each task's outcome is
	// recorded (the node rewrites its metrics file then).
	OnFinished func()

	Logger *slog.Logger
	Now    func() time.Time
}

func (c *Config) checkAndSetDefaults() error {
	var missing []string
	for name, ok := range map[string]bool{
		"ODS": c.ODS != "", "Kind": c.Kind != "", "Policy": c.Policy != nil, "Source": c.Source != nil,
		"Link": c.Link != nil, "Journal": c.Journal != nil, "Ledger": c.Ledger != nil,
		"Uploader": c.Uploader != nil, "Audit": c.Audit != nil, "NDOP": c.NDOP != nil, "Pause": c.Pause != nil,
		"Network": c.Network != nil,
	} {
		if !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return fmt.Errorf("runner: config lacks %v", missing)
	}
	if _, err := pseudonym.NewDeriver(c.Secret, "check"); err != nil {
		return fmt.Errorf("runner: %w", err)
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 1
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = time.Second
	}
	if c.Limits.MaxRows <= 0 {
		c.Limits.MaxRows = connector.DefaultMaxRows
	}
	if c.Limits.MaxBytes <= 0 {
		c.Limits.MaxBytes = connector.DefaultMaxBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Runner runs tasks. Its methods are safe for concurrent use.
type Runner struct {
	cfg Config
	log *slog.Logger
	sem chan struct{}

	mu      sync.Mutex
	base    context.Context // tasks run under it; cancelled by Shutdown
	stop    context.CancelCauseFunc
	running map[string]*running
	recent  []state.TaskSummary
	totals  Totals
	// invalidCounts holds recent counts of invalid NHS numbers, by
	// table.
	invalidCounts map[string]cachedCount
	// cuts holds, by the tables a task reads, the opt-out lists last cut
	// to the site's numbers, for reuse while the data and the lists stay
	// the same.
	cuts map[string]*siteCut
	// networkUsed is the network opt-out list version each running task
	// read, for Recent.
	networkUsed map[string]string
	wg          sync.WaitGroup

	// hasher hashes NHS numbers for the network type 1 list; each task
	// uses a clone.
	hasher *pseudonym.OptOutHasher
}

type running struct {
	cancel context.CancelCauseFunc
	task   *havenv1.Task
	// resend is set when the coordinator sent the task again while it ran:
	// it may have missed the outcome, so it is reported once more.
	resend bool
}

// maxRecent is how many finished tasks Recent remembers.
const maxRecent = 20

// New returns a runner. It starts no goroutines until a task arrives.
func New(cfg Config) (*Runner, error) {
	if err := cfg.checkAndSetDefaults(); err != nil {
		return nil, err
	}
	hasher, err := pseudonym.NewOptOutHasher(cfg.Secret)
	if err != nil {
		return nil, fmt.Errorf("runner: %w", err)
	}
	base, stop := context.WithCancelCause(context.Background())
	return &Runner{
		hasher:      hasher,
		networkUsed: map[string]string{},
		cfg:         cfg,
		log:         cfg.Logger,
		sem:         make(chan struct{}, cfg.Concurrency),
		base:        base,
		stop:        stop,
		running:     map[string]*running{},

		invalidCounts: map[string]cachedCount{},
		cuts:          map[string]*siteCut{},
	}, nil
}

// Errors that cancel a task's context, so that the task knows why it
// stopped.
var (
	errCancelled = errors.New("cancelled by the coordinator")
	errStopping  = errors.New("the node is stopping")
)

// Submit starts a task received from the coordinator and returns at once.
// A task the node already has (running, or finished with an outcome the
// coordinator may lack) is not run again: a running one is left alone and
// a finished one's outcome is reported again.
func (r *Runner) Submit(t *havenv1.Task) {
	id := t.GetTaskId()
	r.mu.Lock()
	if r.base.Err() != nil {
		r.mu.Unlock()
		r.log.Warn("task arrived while the node is stopping; it will be reported as abandoned", "task_id", id)
		r.report(state.Abandoned(id, "the node was stopping when the task arrived"))
		return
	}
	if rt, ok := r.running[id]; ok {
		// The outcome may be on its way already (reported, not yet
		// removed from running); report it again when the task ends.
		rt.resend = true
		r.mu.Unlock()
		r.log.Info("task sent again while running; its outcome will be reported again", "task_id", id)
		return
	}
	if isRunning, outcome, confirmed := r.cfg.Journal.Lookup(id); isRunning || outcome != nil || confirmed {
		r.mu.Unlock()
		r.log.Info("task already known to this node; not run again", "task_id", id, "outcome_reported_again", outcome != nil)
		if outcome != nil {
			r.report(outcome)
		}
		return
	}
	ctx, cancel := context.WithCancelCause(r.base)
	r.running[id] = &running{cancel: cancel, task: t}
	r.wg.Add(1)
	r.mu.Unlock()

	go func() {
		defer r.wg.Done()
		defer cancel(nil)
		var o *havenv1.TaskOutcome
		select {
		case r.sem <- struct{}{}:
			o = r.Execute(ctx, t)
			<-r.sem
		case <-ctx.Done():
			o = failed(t.GetTaskId(), stopCode(ctx), "stopped before it started: "+context.Cause(ctx).Error())
		}
		r.report(o)
		r.mu.Lock()
		resend := r.running[id].resend
		delete(r.running, id)
		r.remember(t, o)
		r.mu.Unlock()
		if resend {
			r.report(o)
		}
		if r.cfg.OnFinished != nil {
			r.cfg.OnFinished()
		}
	}()
}

// Cancel stops a task the coordinator no longer wants. A task the node
// does not know is ignored.
func (r *Runner) Cancel(taskID, reason string) {
	r.mu.Lock()
	rt, ok := r.running[taskID]
	r.mu.Unlock()
	if !ok {
		return
	}
	r.log.Info("task cancelled by the coordinator", "task_id", taskID, "reason", audit.Redact(reason))
	rt.cancel(errCancelled)
}

// Running is the number of tasks running now.
func (r *Runner) Running() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.running)
}

// Recent returns the last tasks that finished, newest first.
func (r *Runner) Recent() []state.TaskSummary {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.recent)
}

// Outcomes a task is counted under in Totals.
const (
	OutcomeDone      = "done"
	OutcomeRefused   = "refused"
	OutcomeFailed    = "failed"
	OutcomeCancelled = "cancelled" // by the coordinator
)

// Totals is what the runner has done since it started.
type Totals struct {
	// Tasks counts finished tasks by outcome (Outcome*).
	Tasks map[string]int64
	// Rows and Bytes are what finished tasks sent.
	Rows, Bytes int64
	// Last is when the last task finished; zero if none has.
	Last time.Time
}

// Totals returns what the runner has done since it started.
func (r *Runner) Totals() Totals {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.totals
	t.Tasks = maps.Clone(r.totals.Tasks)
	if t.Tasks == nil {
		t.Tasks = map[string]int64{}
	}
	return t
}

// Shutdown stops taking tasks, cancels those running (each is reported as
// abandoned) and waits for them until ctx ends.
func (r *Runner) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	r.stop(errStopping) // and so every task's context, with this cause
	r.mu.Unlock()
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("runner: tasks still running at shutdown: %w", ctx.Err())
	}
}

func (r *Runner) report(o *havenv1.TaskOutcome) {
	if err := r.cfg.Link.Report(o); err != nil {
		r.log.Error("could not record a task outcome", "task_id", state.OutcomeTaskID(o), "error", err)
	}
}

// usedNetwork notes which network list version a task read, for Recent.
func (r *Runner) usedNetwork(j *job) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, running := r.running[j.t.GetTaskId()]; running {
		r.networkUsed[j.t.GetTaskId()] = j.network.String()
	}
}

// SiteOptOuts reads the type 1 opt-outs the site records, for the node to
// publish to the network.
func (r *Runner) SiteOptOuts(ctx context.Context) (*optout.Set, error) {
	s, _, err := r.siteOptOuts(ctx)
	return s, err
}

// remember adds a finished task to Recent. The caller holds mu.
func (r *Runner) remember(t *havenv1.Task, o *havenv1.TaskOutcome) {
	s := state.TaskSummary{TaskID: t.GetTaskId(), RunID: t.GetRunId(), DefinitionID: t.GetDefinitionId(), At: r.cfg.Now().UTC(),
		NetworkOptOutVersion: r.networkUsed[t.GetTaskId()]}
	delete(r.networkUsed, t.GetTaskId())
	switch x := o.GetOutcome().(type) {
	case *havenv1.TaskOutcome_Done:
		s.Outcome, s.Rows, s.Bytes = OutcomeDone, x.Done.GetRows(), x.Done.GetBytes()
	case *havenv1.TaskOutcome_Failed:
		s.Outcome, s.Detail = OutcomeFailed, x.Failed.GetCode().String()
	case *havenv1.TaskOutcome_Refused:
		s.Outcome = OutcomeRefused
		for _, rs := range x.Refused.GetReasons() {
			s.Detail += rs.GetCode() + " "
		}
	}
	outcome := s.Outcome
	if f := o.GetFailed(); f != nil && f.GetCode() == havenv1.TaskErrorCode_TASK_ERROR_CODE_CANCELLED {
		outcome = OutcomeCancelled
	}
	if r.totals.Tasks == nil {
		r.totals.Tasks = map[string]int64{}
	}
	r.totals.Tasks[outcome]++
	r.totals.Rows += s.Rows
	r.totals.Bytes += s.Bytes
	r.totals.Last = s.At
	r.recent = append([]state.TaskSummary{s}, r.recent...)
	if len(r.recent) > maxRecent {
		r.recent = r.recent[:maxRecent]
	}
}
