package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/havenhealth/haven/node/audit"
	"github.com/havenhealth/haven/node/connector"
	"github.com/havenhealth/haven/node/optout"
	"github.com/havenhealth/haven/node/pseudonym"
	"github.com/havenhealth/haven/node/sqlgen"
	"github.com/havenhealth/haven/policy"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/wire"
)

// Reason codes the node gives itself, beside those policy gives.
const (
	CodeSitePaused            = havenv1.ReasonSitePaused
	CodeSiteKindMismatch      = "site_kind_mismatch"
	CodeDefinitionNotInBundle = "definition_not_in_bundle"
	CodeDefinitionMismatch    = "definition_hash_mismatch"
	CodeRunReplayed           = "run_replayed"
	CodeInvalidTask           = "invalid_task"
	// CodeNoPerturbationSecret: the run perturbs counts by record keys and
	// this site has no perturbation secret to derive them.
	CodeNoPerturbationSecret = "no_perturbation_secret"
)

// taskError is a failure with the code the coordinator should see.
type taskError struct {
	code havenv1.TaskErrorCode
	msg  string
}

func (e *taskError) Error() string { return e.msg }

func taskErr(code havenv1.TaskErrorCode, format string, args ...any) *taskError {
	return &taskError{code: code, msg: fmt.Sprintf(format, args...)}
}

func failed(taskID string, code havenv1.TaskErrorCode, msg string) *havenv1.TaskOutcome {
	return &havenv1.TaskOutcome{Outcome: &havenv1.TaskOutcome_Failed{Failed: &havenv1.TaskFailed{
		TaskId: taskID, Code: code, Message: audit.Redact(msg),
	}}}
}

// stopCode is the error code of a task whose context ended.
func stopCode(ctx context.Context) havenv1.TaskErrorCode {
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errCancelled):
		return havenv1.TaskErrorCode_TASK_ERROR_CODE_CANCELLED
	case errors.Is(cause, errStopping):
		return havenv1.TaskErrorCode_TASK_ERROR_CODE_ABANDONED
	case errors.Is(cause, context.DeadlineExceeded):
		return havenv1.TaskErrorCode_TASK_ERROR_CODE_DEADLINE_EXCEEDED
	}
	return havenv1.TaskErrorCode_TASK_ERROR_CODE_CANCELLED
}

// job is one task on its way through Execute.
type job struct {
	t       *havenv1.Task
	started time.Time
	rec     audit.Record // the fields every audit record of the task shares

	def      *catalog.Definition
	bound    *catalog.Bound
	plan     *catalog.Plan
	siteTask catalog.SiteTask
	decision policy.Decision
	prog     *sqlgen.Program
	// network is the version of the network type 1 list the task used.
	network optout.Version
	// keyRange is R when the task asks for record keys, else 0.
	keyRange int
}

// Execute runs one task to its outcome, writing the audit log and sending
// acceptance and progress as it goes. It does not report the outcome;
// Submit does. Tests and benchmarks call it directly.
func (r *Runner) Execute(ctx context.Context, t *havenv1.Task) *havenv1.TaskOutcome {
	j := &job{t: t, started: r.cfg.Now()}
	j.rec = audit.Record{
		TaskID: t.GetTaskId(), RunID: t.GetRunId(),
		DefinitionID: t.GetDefinitionId(), DefinitionVersion: t.GetDefinitionVersion(), DefinitionHash: t.GetDefinitionHash(),
		Purpose: t.GetPurpose(), RequesterOrg: t.GetRequesterOrg(), Mode: wire.ModeName(t.GetMode()),
		Parameters: havenv1.ParameterTexts(t.GetParameters()),
	}
	r.audit(j, audit.Record{Event: audit.EventReceived})
	r.log.LogAttrs(ctx, slog.LevelInfo, "task received", slog.String("task_id", t.GetTaskId()), slog.String("run_id", t.GetRunId()),
		slog.String("definition", t.GetDefinitionId()), slog.String("purpose", t.GetPurpose()), slog.String("requester_org", t.GetRequesterOrg()))

	if t.GetDeadline() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, t.GetDeadline().AsTime())
		defer cancel()
	}
	if ctx.Err() != nil {
		// Past its deadline, or cancelled, before anything was decided.
		return r.failed(ctx, j, taskErr(stopCode(ctx), "the task ended before it started"))
	}

	// On record before the run id is claimed: if the node dies from here
	// on, its next Register reports the task abandoned rather than never
	// received.
	if err := r.cfg.Journal.Started(t.GetTaskId(), t.GetRunId()); err != nil {
		return r.failed(ctx, j, taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_INTERNAL, "task journal: %v", err))
	}
	if refusal := r.decide(ctx, j); refusal != nil {
		return r.refused(ctx, j, refusal)
	}
	done, err := r.run(ctx, j)
	if err != nil {
		return r.failed(ctx, j, err)
	}
	return done
}

// refusal is a decision not to run a task.
type refusal struct {
	reasons []policy.Reason
}

func refuse(code, format string, args ...any) *refusal {
	return &refusal{reasons: []policy.Reason{{Code: code, Message: fmt.Sprintf(format, args...), Source: "node"}}}
}

// decide makes steps 1–5 of the package comment, and on yes leaves the
// bound definition, plan, decision and compiled program in j.
func (r *Runner) decide(ctx context.Context, j *job) *refusal {
	t := j.t
	if err := havenv1.CheckID(t.GetTaskId()); err != nil {
		return refuse(CodeInvalidTask, "task %v", err)
	}
	if err := havenv1.CheckID(t.GetRunId()); err != nil {
		return refuse(CodeInvalidTask, "run %v", err)
	}
	j.decision.Revision = r.cfg.Policy.Revision()

	pause, err := r.cfg.Pause()
	if err != nil {
		r.log.Error("pause switch unreadable; refusing tasks until it is fixed", "error", err)
		return refuse(CodeSitePaused, "the site's pause switch cannot be read, so the site counts as paused")
	}
	if pause.Paused {
		return refuse(CodeSitePaused, "this site is paused by its provider")
	}
	if want := wire.SiteKind(r.cfg.Kind); t.GetSiteKind() != want {
		return refuse(CodeSiteKindMismatch, "the task is for %s sites and this is a %s site", wire.SiteKindName(t.GetSiteKind()), r.cfg.Kind)
	}

	// The catalogue and the policy must come from the same bundle, so the
	// catalogue is taken once here, with the revision above.
	cat := r.cfg.Policy.Catalog()
	def, ok := cat.Get(t.GetDefinitionId())
	if !ok {
		return refuse(CodeDefinitionNotInBundle, "definition %q is not in this node's signed bundle (revision %s)", t.GetDefinitionId(), j.decision.Revision)
	}
	if def.Hash() != t.GetDefinitionHash() || def.Version != int64(t.GetDefinitionVersion()) {
		return refuse(CodeDefinitionMismatch, "definition %q version %d differs from the one in this node's signed bundle (version %d)",
			def.ID, t.GetDefinitionVersion(), def.Version)
	}
	j.def = def
	params, err := wireParams(def, t.GetParameters())
	if err == nil {
		j.bound, err = def.Bind(params)
	}
	if err != nil {
		return refuse(CodeInvalidTask, "the parameters do not fit definition %s: %v", def.ID, err)
	}
	if kr := t.GetRecordKeyRange(); kr > 0 {
		if !r.cfg.PerturbationSecret.IsSet() {
			return refuse(CodeNoPerturbationSecret, "the run releases counts with cell-key perturbation, which needs each patient's record key, and this site has no perturbation secret (linkage.perturbation_secret_file); ask the key custodian for one")
		}
		if !r.cfg.Policy.HasKeyRange(int(kr)) {
			return refuse(CodeInvalidTask, "the task asks for record keys in [0, %d), the key range of no perturbation table in this node's signed bundle (revision %s)", kr, j.decision.Revision)
		}
		j.keyRange = int(kr)
	}
	j.plan = def.PlanWith(catalog.PlanOptions{RecordKeys: j.keyRange > 0})
	if got, want := wire.ModeName(t.GetMode()), string(j.plan.Mode); got != want {
		return refuse(CodeInvalidTask, "the task asks for %s mode; definition %s is answered in %s mode", got, def.ID, want)
	}
	st, ok := j.plan.Task(r.cfg.Kind)
	if !ok {
		return refuse(CodeInvalidTask, "%s sites take no part in definition %s", r.cfg.Kind, def.ID)
	}
	j.siteTask = st
	if want := fieldNames(st.Fields); !slices.Equal(t.GetOutputFields(), want) {
		return refuse(CodeInvalidTask, "the task's output fields %v are not those the definition gives %s sites: %v", t.GetOutputFields(), r.cfg.Kind, want)
	}

	in := policy.ParticipateInput{
		Now: r.cfg.Now().UTC(),
		Task: policy.Task{
			Definition:   policy.DefinitionRef{ID: def.ID, Hash: def.Hash(), Codelists: def.CodelistNames()},
			Purpose:      t.GetPurpose(),
			Mode:         string(j.plan.Mode),
			RequesterOrg: t.GetRequesterOrg(),
			Codelists:    def.CodelistNames(),
			Parameters:   policy.ParametersOf(j.bound),
		},
		Site: policy.Site{ODS: r.cfg.ODS, Kind: string(r.cfg.Kind), Paused: pause.Paused, BundleRevision: j.decision.Revision},
	}
	d, err := r.cfg.Policy.Participate(ctx, in)
	if err != nil {
		// The decision denies already; say why in the node's log.
		r.log.Warn("participate policy failed; the task is refused", "task_id", t.GetTaskId(), "error", err)
		d.Allow = false
	}
	j.decision = d
	if !d.Allow {
		if len(d.Reasons) == 0 {
			d.Reasons = []policy.Reason{{Code: policy.CodePolicyError, Message: "policy did not allow the task"}}
		}
		return &refusal{reasons: d.Reasons}
	}

	if err := r.cfg.Ledger.Claim(t.GetRunId()); err != nil {
		if errors.Is(err, pseudonym.ErrReplayedRun) {
			return refuse(CodeRunReplayed, "run %s was seen before; a repeated run id could link two results", t.GetRunId())
		}
		r.log.Error("run ledger", "error", err)
		return refuse(CodeRunReplayed, "the run ledger could not record this run, so it cannot be shown to be new")
	}
	return nil
}

// refused reports a refusal in the log and the audit.
func (r *Runner) refused(ctx context.Context, j *job, rf *refusal) *havenv1.TaskOutcome {
	tr := &havenv1.TaskRefused{TaskId: j.t.GetTaskId(), DecisionId: j.decision.ID, BundleRevision: j.decision.Revision}
	rec := audit.Record{Event: audit.EventRefused, DecisionID: j.decision.ID, BundleRevision: j.decision.Revision, Allow: new(bool)}
	codes := make([]string, len(rf.reasons))
	for i, rs := range rf.reasons {
		tr.Reasons = append(tr.Reasons, &havenv1.PolicyReason{Code: rs.Code, Message: rs.Message})
		rec.Reasons = append(rec.Reasons, audit.Reason{Code: rs.Code, Message: rs.Message, Source: rs.Source})
		codes[i] = rs.Code
	}
	rec.DurationMilliseconds = r.cfg.Now().Sub(j.started).Milliseconds()
	r.audit(j, rec)
	r.log.LogAttrs(ctx, slog.LevelInfo, "task refused", slog.String("task_id", j.t.GetTaskId()), slog.Any("reasons", codes))
	return &havenv1.TaskOutcome{Outcome: &havenv1.TaskOutcome_Refused{Refused: tr}}
}

// failed reports a failure in the log and the audit.
func (r *Runner) failed(ctx context.Context, j *job, err error) *havenv1.TaskOutcome {
	var te *taskError
	if !errors.As(err, &te) {
		te = &taskError{code: havenv1.TaskErrorCode_TASK_ERROR_CODE_INTERNAL, msg: err.Error()}
	}
	if ctx.Err() != nil && te.code != havenv1.TaskErrorCode_TASK_ERROR_CODE_LIMIT_EXCEEDED {
		te = &taskError{code: stopCode(ctx), msg: fmt.Sprintf("%s: %v", context.Cause(ctx), te.msg)}
	}
	msg := audit.Redact(te.msg)
	r.audit(j, audit.Record{Event: audit.EventFailed, ErrorCode: te.code.String(), Message: msg,
		DurationMilliseconds: r.cfg.Now().Sub(j.started).Milliseconds()})
	r.log.LogAttrs(ctx, slog.LevelWarn, "task failed", slog.String("task_id", j.t.GetTaskId()),
		slog.String("code", te.code.String()), slog.String("error", msg))
	return failed(j.t.GetTaskId(), te.code, msg)
}

func (r *Runner) audit(j *job, rec audit.Record) {
	full := j.rec
	full.Event = rec.Event
	full.DecisionID, full.BundleRevision, full.Allow, full.Reasons = rec.DecisionID, rec.BundleRevision, rec.Allow, rec.Reasons
	full.SQL = rec.SQL
	full.Rows, full.Bytes, full.Batches, full.Fields = rec.Rows, rec.Bytes, rec.Batches, rec.Fields
	full.ExcludedInvalidNHS, full.ExcludedOptOut, full.Receipt = rec.ExcludedInvalidNHS, rec.ExcludedOptOut, rec.Receipt
	full.NetworkOptOutVersion = rec.NetworkOptOutVersion
	full.DurationMilliseconds, full.ErrorCode, full.Message = rec.DurationMilliseconds, rec.ErrorCode, rec.Message
	if rec.Event != audit.EventReceived {
		full.Parameters = nil // once per task is enough
	}
	if err := r.cfg.Audit.Append(full); err != nil {
		r.log.Error("audit log", "error", err)
	}
}

func (r *Runner) progress(j *job, stage havenv1.TaskStage, rows, bytes int64) {
	_ = r.cfg.Link.Send(&havenv1.NodeMessage{Body: &havenv1.NodeMessage_TaskProgress{TaskProgress: &havenv1.TaskProgress{
		TaskId: j.t.GetTaskId(), Stage: stage, Rows: rows, Bytes: bytes,
	}}})
}

// run compiles, queries, checks, pseudonymises and uploads an accepted
// task.
func (r *Runner) run(ctx context.Context, j *job) (*havenv1.TaskOutcome, error) {
	dialect, err := r.cfg.Source.Dialect(ctx)
	if err != nil {
		return nil, taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_CONNECTOR, "connector: %v", err)
	}
	// The SQL text does not depend on the opt-out list, only its arguments
	// do. A first compile, binding none, names the statements for the
	// record and the tables the program reads.
	j.prog, err = r.compile(j, dialect, nil, nil)
	if err != nil {
		return nil, err
	}
	hashes := statementHashes(j.prog)
	// The hash the coordinator records is of the statement whose rows
	// leave the site: in aggregate mode the checked result, which is the
	// result with its cells' patients beside it for the check.
	sqlHash := resultStatement(j.prog).SHA256
	_ = r.cfg.Link.Send(&havenv1.NodeMessage{Body: &havenv1.NodeMessage_TaskAccepted{TaskAccepted: &havenv1.TaskAccepted{
		TaskId: j.t.GetTaskId(), SqlHash: sqlHash, DecisionId: j.decision.ID, BundleRevision: j.decision.Revision,
	}}})
	r.audit(j, audit.Record{Event: audit.EventAccepted, DecisionID: j.decision.ID, BundleRevision: j.decision.Revision,
		Allow: ptr(true), SQL: hashes})
	r.log.LogAttrs(ctx, slog.LevelInfo, "task accepted", slog.String("task_id", j.t.GetTaskId()),
		slog.String("decision_id", j.decision.ID), slog.String("sql_sha256", sqlHash))
	r.progress(j, havenv1.TaskStage_TASK_STAGE_COMPILING, 0, 0)

	r.progress(j, havenv1.TaskStage_TASK_STAGE_QUERYING, 0, 0)
	// Counting the rows left out for invalid NHS numbers scans every
	// table the program reads and decides nothing, so it runs beside the
	// rest. Its statement binds no opt-out list.
	qctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var invalid int64
	var invalidErr error
	counted := make(chan struct{})
	go func(p *sqlgen.Program) {
		defer close(counted)
		invalid, invalidErr = r.invalidCount(qctx, p)
	}(j.prog)
	defer func() { cancel(); <-counted }()

	// What must not leave: the national list, the site's own type 1
	// objections, read fresh for every task, and the network type 1 list
	// the coordinator relays (objections recorded at other practices, as
	// keyed hashes). A node that never received the network list runs
	// nothing: it cannot tell whom another practice must not count.
	network := r.cfg.Network()
	if network == nil {
		return nil, taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_INTERNAL,
			"the network type 1 opt-out list has not been received from the coordinator yet; nothing was queried")
	}
	j.network = network.Version()
	r.usedNetwork(j)
	hasher := r.hasher.Clone()
	ndop := r.cfg.NDOP()
	siteOptOuts, version, err := r.siteOptOuts(ctx)
	if err != nil {
		return nil, err
	}
	optOuts := ndop.Union(siteOptOuts)
	// The SQL leaves out national objectors by matching the list bound as
	// one argument; only those whose numbers are in the tables it reads
	// can make a difference. So the node binds the national list cut to
	// the site's own numbers, read afresh for every task from the data
	// the task reads (a site's data may change between tasks; a number
	// missed here would not leak, it would fail the check below). The
	// site's numbers are hashed once each to find those on the network
	// list, which are bound with them. The check before upload still holds
	// the result against the whole national list and hashes every number
	// it rests on again.
	//
	// Reading and hashing the numbers is a fifth of a practice's task, and
	// gives the same answer until the data or a list changes: so the cut
	// is reused while the connector names the same version of the data as
	// when it was made (the opt-out read above says which it is now) and
	// the national and network lists are the same ones.
	cut := r.cachedCut(j.prog.Tables, version, ndop, network)
	if cut == nil {
		var onNetwork optout.Builder
		numbers, excluded, numbersVersion, err := r.siteNumbers(ctx, dialect, j.prog.Tables, func(n string) bool {
			if network.ContainsNumber(hasher, n) {
				onNetwork.Add(n)
				return true
			}
			return optOuts.Contains(n)
		})
		if err != nil {
			return nil, err
		}
		cut = &siteCut{version: numbersVersion, ndop: ndop, network: network, numbers: numbers.Len(),
			relevant: ndop.Intersect(numbers), matched: onNetwork.Set(), excluded: excluded}
		// Kept only if both reads saw the same data: the site's own
		// opt-outs went into the count of rows left out.
		if numbersVersion == version {
			r.keepCut(j.prog.Tables, cut)
		}
	} else {
		r.log.LogAttrs(ctx, slog.LevelDebug, "site numbers reused: the data and the opt-out lists are unchanged", slog.String("task_id", j.t.GetTaskId()),
			slog.String("data_version", version))
	}
	relevant, networkMatched, excludedOptOut := cut.relevant, cut.matched, cut.excluded
	if j.prog, err = r.compile(j, dialect, relevant.Strings(), networkMatched.Strings()); err != nil {
		return nil, err
	}
	if again := statementHashes(j.prog); !maps.Equal(again, hashes) {
		return nil, taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_INTERNAL, "compile: the SQL changed with the opt-out list bound")
	}
	r.log.LogAttrs(ctx, slog.LevelDebug, "opt-out lists cut to the site", slog.String("task_id", j.t.GetTaskId()),
		slog.Int("national", ndop.Len()), slog.Int("site_numbers", cut.numbers), slog.Int("bound", relevant.Len()),
		slog.Int("network", network.Len()), slog.Int("network_bound", networkMatched.Len()),
		slog.String("network_version", j.network.String()))

	out, err := r.result(ctx, j)
	if err != nil {
		return nil, err
	}
	defer out.release()
	r.progress(j, havenv1.TaskStage_TASK_STAGE_CHECKING, out.rows, 0)
	if err := r.check(ctx, j, out, func(n string) bool { return optOuts.Contains(n) || network.ContainsNumber(hasher, n) }); err != nil {
		return nil, err
	}
	// Only once checked do the numbers give way to pseudonyms: the check
	// needs the numbers themselves.
	if err := r.pseudonymise(j, out); err != nil {
		return nil, err
	}
	if err := r.cellKeys(ctx, j, out); err != nil {
		return nil, err
	}
	<-counted
	if invalidErr != nil {
		return nil, invalidErr
	}

	batches, total, err := r.batch(j, out)
	if err != nil {
		return nil, err
	}
	defer release(batches)
	if err := checkFinite(batches); err != nil {
		return nil, err
	}
	r.progress(j, havenv1.TaskStage_TASK_STAGE_UPLOADING, 0, 0)
	sent, err := r.upload(ctx, j, out.schema, batches)
	if err != nil {
		return nil, err
	}
	if sent.Bytes != total {
		r.log.Warn("upload size differs from the estimate", "task_id", j.t.GetTaskId(), "estimated", total, "sent", sent.Bytes)
	}

	dur := r.cfg.Now().Sub(j.started)
	done := &havenv1.TaskDone{
		TaskId: j.t.GetTaskId(), Rows: sent.Rows, Bytes: sent.Bytes, Batches: sent.Batches,
		Fields:                       fieldNames(j.siteTask.Fields),
		RowsExcludedInvalidNhsNumber: invalid,
		RowsExcludedOptOut:           excludedOptOut,
		Duration:                     durationpb.New(dur),
	}
	rc := sent.Receipt
	r.audit(j, audit.Record{Event: audit.EventDone, DecisionID: j.decision.ID, BundleRevision: j.decision.Revision, SQL: hashes,
		Rows: done.Rows, Bytes: done.Bytes, Batches: done.Batches, Fields: done.Fields,
		ExcludedInvalidNHS: invalid, ExcludedOptOut: excludedOptOut, NetworkOptOutVersion: j.network.String(),
		Receipt:              &audit.Receipt{Rows: rc.GetRows(), Bytes: rc.GetBytes(), Batches: rc.GetBatches()},
		DurationMilliseconds: dur.Milliseconds()})
	r.log.LogAttrs(ctx, slog.LevelInfo, "task done", slog.String("task_id", j.t.GetTaskId()),
		slog.Int64("rows", done.Rows), slog.Int64("bytes", done.Bytes), slog.Int64("batches", done.Batches), slog.Duration("duration", dur))
	return &havenv1.TaskOutcome{Outcome: &havenv1.TaskOutcome_Done{Done: done}}, nil
}

func ptr[T any](v T) *T { return &v }

// compile compiles the task for the connector's dialect, binding ndop as
// the national opt-out list and network as the site's patients on the
// network type 1 list.
func (r *Runner) compile(j *job, d sqlgen.Dialect, ndop, network []string) (*sqlgen.Program, error) {
	p, err := sqlgen.Compile(j.bound, j.plan, r.cfg.Kind, d, sqlgen.Options{SiteODS: r.cfg.ODS, NDOP: ndop, Network: network})
	if err != nil {
		return nil, taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_INTERNAL, "compile: %v", err)
	}
	return p, nil
}

// statementHashes maps each statement of p to the SHA-256 of its SQL.
func statementHashes(p *sqlgen.Program) map[string]string {
	out := map[string]string{}
	for _, s := range p.Statements() {
		out[s.Name] = s.SHA256
	}
	return out
}

// wireParams turns the task's typed parameter values into the strings
// Bind takes, checking that each value's kind is the parameter's type.
func wireParams(def *catalog.Definition, in map[string]*havenv1.ParameterValue) (map[string]string, error) {
	out := make(map[string]string, len(in))
	for _, name := range slices.Sorted(maps.Keys(in)) {
		v := in[name]
		p, ok := def.Parameter(name)
		if !ok {
			return nil, fmt.Errorf("unknown parameter %q", name)
		}
		s, kind, ok := wire.ValueText(v)
		if !ok {
			return nil, fmt.Errorf("parameter %s has no value", name)
		}
		if kind != p.Type {
			return nil, fmt.Errorf("parameter %s is a %s, the task gives a %s", name, p.Type, kind)
		}
		out[name] = s
	}
	return out, nil
}

func fieldNames(fs []catalog.Field) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.Name
	}
	return out
}

// statementQuery is a sqlgen statement the node runs for itself, whose
// rows never leave the site (opt-outs, site numbers, members, keys,
// counts), under the node's own row and byte limits.
func (r *Runner) statementQuery(st sqlgen.Statement) connector.Query {
	return connector.Query{SQL: st.SQL, Args: args(st.Args), MaxRows: r.cfg.Limits.MaxRows, MaxBytes: r.cfg.Limits.MaxBytes}
}
