package policy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/havenhealth/haven/policy/ptable"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// Modes of a task, as the planner assigns them (DESIGN.md §6).
const (
	ModeAggregate = "aggregate"
	ModeLinkage   = "linkage"
)

// Requester is who asks for a run.
type Requester struct {
	ID    string   `json:"id"`
	Org   string   `json:"org"`
	Roles []string `json:"roles"`
}

// DefinitionRef names a query definition by id and canonical hash.
type DefinitionRef struct {
	ID   string `json:"id"`
	Hash string `json:"hash"`
	// Codelists are the names of the codelists the definition uses.
	Codelists []string `json:"codelists,omitempty"`
}

// SubmitCounts are the requester's recent activity, for rate limits.
type SubmitCounts struct {
	// RunsLast24h are the requester's submissions in the last 24 hours
	// that policy did not refuse.
	RunsLast24h int `json:"runs_last_24h"`
	// RefusedLast24h are those it refused.
	RefusedLast24h int `json:"refused_last_24h"`
	// ActiveRuns are the requester's runs in progress, OrgActiveRuns
	// their organisation's.
	ActiveRuns    int `json:"active_runs"`
	OrgActiveRuns int `json:"org_active_runs"`
}

// SubmitInput is the input of haven/submit, evaluated by the coordinator
// before it plans a run.
type SubmitInput struct {
	// Now is the time of the request. It must be set: approvals expire.
	Now        time.Time      `json:"now"`
	Requester  Requester      `json:"requester"`
	Definition DefinitionRef  `json:"definition"`
	Parameters map[string]any `json:"parameters"`
	Purpose    string         `json:"purpose"`
	// Counts is required while the bundle sets a rate limit.
	Counts *SubmitCounts `json:"counts,omitempty"`
	// History is the release ledger's record of the definition, required
	// while the bundle sets release-ledger rules (data.ledger:
	// near-duplicates, query budgets). Submit reduces it to Ledger with
	// the active bundle's rules; it is not itself policy input.
	History *LedgerHistory `json:"-"`
	// Ledger is what policy sees of the ledger. Submit sets it from
	// History; a caller sets it only to give a summary it made itself
	// (tests of the Rego).
	Ledger *SubmitLedger `json:"ledger,omitempty"`
}

// Task is a task as a node received it.
type Task struct {
	Definition   DefinitionRef  `json:"definition"`
	Purpose      string         `json:"purpose"`
	Mode         string         `json:"mode"`
	RequesterOrg string         `json:"requester_org"`
	Codelists    []string       `json:"codelists"`
	Parameters   map[string]any `json:"parameters"`
}

// Site is what a node knows of itself.
type Site struct {
	ODS            string `json:"ods"`
	Kind           string `json:"kind"` // "gp" or "trust", as cdm.SiteKind
	Paused         bool   `json:"paused"`
	BundleRevision string `json:"bundle_revision"`
}

// ParticipateInput is the input of haven/participate, evaluated by a node
// before it runs a task.
type ParticipateInput struct {
	// Now is the node's time. It must be set: approvals expire.
	Now  time.Time `json:"now"`
	Task Task      `json:"task"`
	Site Site      `json:"site"`
}

// Measure is one column of a released table.
type Measure struct {
	Name string `json:"name"`
	Kind string `json:"kind"` // count, sum, mean, min or max
	// Dominance reports that the definition asks for the dominance rule on
	// the measure, so that its plan carries each cell's largest
	// contributions. Policy decides which measures the rule applies to
	// (DisclosureDecision.DominanceMeasures); the reference policy applies
	// it to every sum and to the means that ask.
	Dominance bool `json:"dominance"`
}

// TableShape describes a table without its values.
type TableShape struct {
	Rows     int       `json:"rows"`
	Measures []Measure `json:"measures"`
}

// Answered counts what was expected and what answered.
type Answered struct {
	Expected int64 `json:"expected"`
	Answered int64 `json:"answered"`
}

// Coverage is how much of the network answered a run.
type Coverage struct {
	Sites      Answered `json:"sites"`
	Population Answered `json:"population"`
	// Trusts counts the trusts the plan asked; Activity their hospital
	// activity records (apc_episode plus ae_attendance rows, as each
	// trust's node reported them). Both are zero when no trust is asked.
	Trusts   Answered `json:"trusts"`
	Activity Answered `json:"activity"`
	// MissingTrusts are the trusts asked that did not answer. Nil reaches
	// policy as null, which the reference policy refuses as malformed
	// coverage: give an empty list when every trust answered.
	MissingTrusts []MissingSite `json:"missing_trusts"`
}

// MissingSite is a site asked that did not answer.
type MissingSite struct {
	ODS string `json:"ods"`
	// State says why, in words: paused, refused, failed, timed out …
	State string `json:"state"`
	// Activity is a trust's hospital activity records.
	Activity int64 `json:"activity"`
}

// DiscloseInput is the input of haven/disclose, evaluated by the
// coordinator before it releases a table.
type DiscloseInput struct {
	Purpose  string     `json:"purpose"`
	Table    TableShape `json:"table"`
	Coverage Coverage   `json:"coverage"`
}

// Reason explains a denial.
type Reason struct {
	// Code is stable, for programs: e.g. approval_expired.
	Code string `json:"code"`
	// Message is for people. It never repeats input values.
	Message string `json:"message"`
	// Source is "site" for a reason a site's own policy gave.
	Source string `json:"source,omitempty"`
}

// Codes of the reasons the engine itself gives when policy cannot decide.
const (
	CodePolicyError     = "policy_error"
	CodePolicyUndefined = "policy_undefined"
	CodePolicyTimeout   = "policy_timeout"
)

// CodeRefusedLimitExceeded is the haven/submit reason that the requester
// has had as many submissions refused as the bundle allows in a day; the
// coordinator then stores nothing of the request.
const CodeRefusedLimitExceeded = "refused_limit_exceeded"

// Decision is the outcome of a decision: allow, or deny with reasons.
type Decision struct {
	Allow   bool     `json:"allow"`
	Reasons []Reason `json:"reasons"`
	// ID identifies this decision in the decision log and audit.
	ID string `json:"decision_id"`
	// Revision is the revision of the bundle that decided.
	Revision string `json:"bundle_revision"`
}

// Dominance is the rule for sums and means: a cell is withheld when its N
// largest contributions make up more than K of it.
type Dominance struct {
	N int     `json:"n"`
	K float64 `json:"k"`
}

// Thresholds are the disclosure-control settings for one release.
type Thresholds struct {
	// MinCellCount: counts from 1 to MinCellCount-1 are withheld.
	MinCellCount int `json:"min_cell_count"`
	// RoundingBase: released counts are rounded to a multiple of it.
	RoundingBase int       `json:"rounding_base"`
	Dominance    Dominance `json:"dominance"`
	// AttributeDisclosure withholds every count of a group whose total is
	// below MinCellCount, so that a released 0, or a count equal to the
	// group's total, says nothing about each of its few members.
	AttributeDisclosure bool `json:"attribute_disclosure"`
}

// DisclosureDecision is the outcome of haven/disclose.
type DisclosureDecision struct {
	Decision
	// Thresholds are zero when the decision denies.
	Thresholds Thresholds `json:"thresholds"`
	// DominanceMeasures are the measures the dominance rule applies to.
	DominanceMeasures []string `json:"dominance_measures"`
	// Partial reports that some sites or population did not answer.
	Partial bool `json:"partial"`
	// PerturbationTable is the bundle path of the cell-key perturbation
	// table counts are released through; empty when perturbation is off.
	PerturbationTable string `json:"perturbation_table,omitempty"`
	// Perturbation is that table, as validated when the bundle was
	// loaded; nil when perturbation is off.
	Perturbation *ptable.Table `json:"-"`
}

// Submit evaluates haven/submit. The returned decision is always usable:
// on any failure it denies, with a reason whose code is one of the
// CodePolicy* codes, and err says what failed.
func (e *Engine) Submit(ctx context.Context, in SubmitInput) (Decision, error) {
	return e.evaluate(ctx, submitDecision, in, requireNow(in.Now), nil)
}

// withLedger is in with its ledger history reduced by s's rules, so that
// the summary and the decision read the same bundle.
func (in SubmitInput) withLedger(s *state) SubmitInput {
	if in.History != nil {
		in.Ledger = s.ledger.summarise(in.Now, in.Requester, in.Parameters, in.History)
	}
	return in
}

// Participate evaluates haven/participate, with the site's own narrowing.
// On any failure it denies, as Submit does.
func (e *Engine) Participate(ctx context.Context, in ParticipateInput) (Decision, error) {
	return e.evaluate(ctx, participateDecision, in, requireNow(in.Now), nil)
}

// Disclose evaluates haven/disclose. On any failure it denies, as Submit
// does, and the thresholds are zero.
func (e *Engine) Disclose(ctx context.Context, in DiscloseInput) (DisclosureDecision, error) {
	var dd DisclosureDecision
	d, err := e.evaluate(ctx, discloseDecision, in, nil, func(s *state, v map[string]any) error {
		return decodeDisclosure(s, v, &dd)
	})
	dd.Decision = d
	if !d.Allow {
		dd.Thresholds, dd.DominanceMeasures, dd.PerturbationTable, dd.Perturbation = Thresholds{}, nil, "", nil
	}
	return dd, err
}

// Eval evaluates the named decision ("submit", "participate" or
// "disclose", with or without the "haven/" prefix) on raw JSON input, for
// tools that take input from a file. The result is the decision as policy
// returned it, after the same checks the typed methods make.
func (e *Engine) Eval(ctx context.Context, name string, input json.RawMessage) (Decision, map[string]any, error) {
	k, err := parseDecisionName(name)
	if err != nil {
		return Decision{}, nil, err
	}
	var raw map[string]any
	d, err := e.evaluate(ctx, k, input, nil, func(_ *state, v map[string]any) error {
		raw = v
		return nil
	})
	return d, raw, err
}

func requireNow(t time.Time) error {
	if t.IsZero() {
		return errors.New("input: now is not set")
	}
	return nil
}

// decisionKind names one of the three decisions.
type decisionKind int

const (
	submitDecision decisionKind = iota
	participateDecision
	discloseDecision
	numDecisions
)

var decisionNames = [numDecisions]string{"haven/submit", "haven/participate", "haven/disclose"}

func (k decisionKind) String() string { return decisionNames[k] }

// ref is the rule that holds the decision, e.g. data.haven.submit.decision.
func (k decisionKind) ref() ast.Ref {
	return ast.MustParseRef("data." + strings.ReplaceAll(decisionNames[k], "/", ".") + ".decision")
}

func parseDecisionName(name string) (decisionKind, error) {
	for k, n := range decisionNames {
		if name == n || "haven/"+name == n {
			return decisionKind(k), nil
		}
	}
	return 0, fmt.Errorf("unknown decision %q: want submit, participate or disclose", name)
}

// evaluate runs decision k on input and fails closed: whatever goes wrong,
// the decision it returns denies, and it is logged either way. check is an
// error already found in the input; extra decodes what a decision returns
// beyond allow and reasons.
func (e *Engine) evaluate(ctx context.Context, k decisionKind, input any, check error, extra func(*state, map[string]any) error) (Decision, error) {
	began := time.Now()
	s := e.active.Load()
	d := Decision{ID: rand.Text(), Revision: s.revision}
	if e.cfg.Observe != nil {
		defer func() { e.cfg.Observe(k.String(), time.Since(began)) }()
	}
	if in, ok := input.(SubmitInput); ok {
		input = in.withLedger(s)
	}
	body, err := json.Marshal(input)
	sum := sha256.Sum256(body)
	if err != nil {
		err = fmt.Errorf("%s: encode input: %w", k, err)
	} else {
		err = e.decide(ctx, s, k, input, body, check, &d, extra)
	}
	if err != nil {
		d.Allow = false
		d.Reasons = []Reason{failureReason(err)}
	}
	e.logDecision(ctx, k, d, sum, err)
	return d, err
}

// decide evaluates and checks one decision, filling in d.
func (e *Engine) decide(ctx context.Context, s *state, k decisionKind, input any, body []byte, check error, d *Decision, extra func(*state, map[string]any) error) error {
	if check != nil {
		return fmt.Errorf("%s: %w", k, check)
	}
	v, err := inputValue(input, body)
	if err != nil {
		return fmt.Errorf("%s: %w", k, err)
	}
	result, err := s.eval(ctx, k, v, e.cfg.Timeout)
	if err != nil {
		return err
	}
	if err := decodeDecision(result, d); err != nil {
		return fmt.Errorf("%s: malformed decision: %w", k, err)
	}
	if extra != nil {
		if err := extra(s, result); err != nil {
			return fmt.Errorf("%s: malformed decision: %w", k, err)
		}
	}
	return nil
}

// Errors of evaluation, for errors.Is.
var (
	ErrUndefined = errors.New("decision is undefined")
	ErrTimeout   = errors.New("decision timed out")
)

// inputValue is the Rego value of an input: built directly for the typed
// inputs, decoded from its JSON for any other.
func inputValue(input any, body []byte) (ast.Value, error) {
	if iv, ok := input.(interface{ astValue() (ast.Value, error) }); ok {
		return iv.astValue()
	}
	v, err := ast.ValueFromReader(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("parse input: %w", err)
	}
	return v, nil
}

func (s *state) eval(ctx context.Context, k decisionKind, v ast.Value, timeout time.Duration) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rs, err := s.queries[k].Eval(ctx, rego.EvalParsedInput(v))
	if ctx.Err() != nil && (err != nil || len(rs) == 0) {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("%s: %w after %v", k, ErrTimeout, timeout)
		}
		return nil, fmt.Errorf("%s: %w", k, ctx.Err())
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", k, err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil, fmt.Errorf("%s: %w", k, ErrUndefined)
	}
	if len(rs) > 1 {
		return nil, fmt.Errorf("%s: %d results, want one", k, len(rs))
	}
	obj, ok := rs[0].Expressions[0].Value.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: malformed decision: %T, want an object", k, rs[0].Expressions[0].Value)
	}
	return obj, nil
}

func failureReason(err error) Reason {
	switch {
	case errors.Is(err, ErrTimeout):
		return Reason{Code: CodePolicyTimeout, Message: "policy did not decide in time, so the request is denied"}
	case errors.Is(err, ErrUndefined):
		return Reason{Code: CodePolicyUndefined, Message: "policy gave no decision for this input, so the request is denied"}
	}
	return Reason{Code: CodePolicyError, Message: "policy could not be evaluated, so the request is denied"}
}

// logDecision writes the decision log record. It holds the digest of the
// input, never the input: inputs carry parameters and may one day carry
// more. For the same reason an evaluation error is logged by its kind and
// Rego location only, since OPA's messages can quote input values.
func (e *Engine) logDecision(ctx context.Context, k decisionKind, d Decision, sum [sha256.Size]byte, err error) {
	codes := make([]string, len(d.Reasons))
	for i, r := range d.Reasons {
		codes[i] = r.Code
	}
	attrs := []slog.Attr{
		slog.String("decision", k.String()),
		slog.String("decision_id", d.ID),
		slog.Bool("allow", d.Allow),
		slog.Any("reasons", codes),
		slog.String("bundle_revision", d.Revision),
		slog.String("input_sha256", hex.EncodeToString(sum[:])),
	}
	level := slog.LevelInfo
	if err != nil {
		level = slog.LevelWarn
		attrs = append(attrs, slog.String("failure", failureKind(err)))
	}
	e.log.LogAttrs(ctx, level, "policy decision", attrs...)
}

func failureKind(err error) string {
	if errors.Is(err, ErrTimeout) {
		return "timeout"
	}
	if errors.Is(err, ErrUndefined) {
		return "undefined"
	}
	if te, ok := errors.AsType[*topdown.Error](err); ok {
		loc := ""
		if te.Location != nil {
			loc = " at " + te.Location.String()
		}
		return "rego " + te.Code + loc
	}
	return "error"
}

// decodeDecision checks the {allow, reasons} every decision returns. A
// decision that allows must give no reasons and one that denies must give
// at least one; anything else is malformed and so denies.
func decodeDecision(v map[string]any, d *Decision) error {
	allow, ok := v["allow"].(bool)
	if !ok {
		return errors.New("allow is missing or not a boolean")
	}
	rs, ok := v["reasons"].([]any)
	if !ok {
		return errors.New("reasons is missing or not a list")
	}
	reasons := make([]Reason, 0, len(rs))
	for i, r := range rs {
		m, ok := r.(map[string]any)
		if !ok {
			return fmt.Errorf("reasons[%d] is not an object", i)
		}
		code, _ := m["code"].(string)
		msg, _ := m["message"].(string)
		src, _ := m["source"].(string)
		if code == "" || msg == "" {
			return fmt.Errorf("reasons[%d] needs a code and a message", i)
		}
		reasons = append(reasons, Reason{Code: code, Message: msg, Source: src})
	}
	if allow && len(reasons) > 0 {
		return errors.New("allows but gives reasons")
	}
	if !allow && len(reasons) == 0 {
		return errors.New("denies without a reason")
	}
	d.Allow, d.Reasons = allow, reasons
	return nil
}

func decodeDisclosure(s *state, v map[string]any, dd *DisclosureDecision) error {
	t, ok := v["thresholds"].(map[string]any)
	if !ok {
		return errors.New("thresholds is missing or not an object")
	}
	dom, ok := t["dominance"].(map[string]any)
	if !ok {
		return errors.New("thresholds.dominance is missing or not an object")
	}
	var err error
	num := func(m map[string]any, key string) float64 {
		n, ok := m[key].(json.Number)
		if !ok {
			err = errors.Join(err, fmt.Errorf("%s is missing or not a number", key))
			return 0
		}
		f, ferr := n.Float64()
		err = errors.Join(err, ferr)
		return f
	}
	integer := func(m map[string]any, key string) int {
		f := num(m, key)
		if f != float64(int(f)) {
			err = errors.Join(err, fmt.Errorf("%s is not a whole number", key))
		}
		return int(f)
	}
	dd.Thresholds = Thresholds{
		MinCellCount: integer(t, "min_cell_count"),
		RoundingBase: integer(t, "rounding_base"),
		Dominance:    Dominance{N: integer(dom, "n"), K: num(dom, "k")},
	}
	if dd.Thresholds.AttributeDisclosure, ok = t["attribute_disclosure"].(bool); !ok {
		err = errors.Join(err, errors.New("attribute_disclosure is missing or not a boolean"))
	}
	if err != nil {
		return fmt.Errorf("thresholds: %w", err)
	}
	switch p := v["perturbation"].(type) {
	case nil:
	case map[string]any:
		name, ok := p["table"].(string)
		if !ok {
			return errors.New("perturbation.table is missing or not a string")
		}
		// Only tables checked when the bundle was loaded can be used, so a
		// policy cannot point at an unchecked file.
		if dd.Perturbation = s.ptables[name]; dd.Perturbation == nil {
			return fmt.Errorf("perturbation.table %q is not a perturbation table data.disclosure names", name)
		}
		dd.PerturbationTable = name
	default:
		return errors.New("perturbation is neither null nor an object")
	}
	ms, ok := v["dominance_measures"].([]any)
	if !ok {
		return errors.New("dominance_measures is missing or not a list")
	}
	dd.DominanceMeasures = make([]string, 0, len(ms))
	for i, m := range ms {
		s, ok := m.(string)
		if !ok {
			return fmt.Errorf("dominance_measures[%d] is not a string", i)
		}
		dd.DominanceMeasures = append(dd.DominanceMeasures, s)
	}
	if dd.Partial, ok = v["partial"].(bool); !ok {
		return errors.New("partial is missing or not a boolean")
	}
	return nil
}
