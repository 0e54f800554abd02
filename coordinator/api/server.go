// Package api serves the Coordinator service, the commissioner's API: the
// approved catalogue, submitting runs, following them and cancelling
// them. The caller is the authenticated principal (coordinator/authn),
// never a request field.
//
// A submission is checked in order: the definition is in the signed
// catalogue (NotFound otherwise), every parameter value has its declared
// type and passes the definition's own ranges (InvalidArgument naming the
// parameter), and then haven/submit decides. A run the policy refuses is
// still recorded, in RUN_STATE_REFUSED with the policy's reasons (not
// approved, role not permitted, purpose not permitted, parameter outside
// the approved range), so the register shows it and the CLI can say why.
package api

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"maps"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/havenhealth/haven/coordinator/admission"
	"github.com/havenhealth/haven/coordinator/authn"
	"github.com/havenhealth/haven/coordinator/dispatch"
	"github.com/havenhealth/haven/coordinator/store"
	"github.com/havenhealth/haven/policy"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/wire"
)

// Governance is the active governance bundle (policy.Engine).
type Governance interface {
	Catalog() *catalog.Catalog
	Files() fs.FS
	Revision() string
	Submit(ctx context.Context, in policy.SubmitInput) (policy.Decision, error)
	// LedgerLookback is how much of the release ledger haven/submit
	// needs to see (policy.Engine.LedgerLookback).
	LedgerLookback() time.Duration
}

// Runs is the dispatcher.
type Runs interface {
	Submit(ctx context.Context, sub dispatch.Submission) (*havenv1.Run, error)
	GetRun(ctx context.Context, p authn.Principal, id string) (*havenv1.Run, error)
	ListRuns(ctx context.Context, p authn.Principal, q store.ListQuery) ([]*havenv1.Run, string, error)
	FindSubmitted(ctx context.Context, p authn.Principal, clientRequestID string) (*havenv1.Run, bool, error)
	CancelRun(ctx context.Context, p authn.Principal, runID, reason string) (*havenv1.Run, error)
	Watch(ctx context.Context, p authn.Principal, runID string) (*dispatch.Watch, error)
}

// Server implements havenv1.CoordinatorServer.
type Server struct {
	havenv1.UnimplementedCoordinatorServer
	gov   Governance
	runs  Runs
	admit *admission.Controller
	log   *slog.Logger
	now   func() time.Time

	mu           sync.Mutex
	approvals    map[string]approval // of revision approvRev
	purposes     []string            // data.purposes of revision approvRev, sorted
	rolePurposes map[string][]string // data.roles[role].purposes of revision approvRev
	approvRev    string
}

// New returns the Coordinator service; admit counts submissions for
// haven/submit's limits.
func New(gov Governance, runs Runs, admit *admission.Controller, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{gov: gov, runs: runs, admit: admit, log: log, now: time.Now}
}

func principal(ctx context.Context) (authn.Principal, error) {
	p, ok := authn.FromContext(ctx)
	if !ok || p.Kind != authn.KindUser {
		return authn.Principal{}, status.Error(codes.PermissionDenied, "the Coordinator service is for users")
	}
	return p, nil
}

// internal hides an unexpected error's detail from the caller and logs it.
func (s *Server) internal(ctx context.Context, what string, err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	s.log.LogAttrs(ctx, slog.LevelError, what, slog.String("error", err.Error()))
	return status.Errorf(codes.Internal, "%s failed; the coordinator's log has the detail", what)
}

const (
	defaultPageSize = 50
	maxPageSize     = 500
)

// ListDefinitions implements havenv1.CoordinatorServer.
func (s *Server) ListDefinitions(ctx context.Context, req *havenv1.ListDefinitionsRequest) (*havenv1.ListDefinitionsResponse, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		return nil, status.Error(codes.InvalidArgument, "page_size is negative")
	case size == 0:
		size = defaultPageSize
	}
	size = min(size, maxPageSize)
	after := ""
	if tok := req.GetPageToken(); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, "page_token is not one this server gave")
		}
		after = string(b)
	}
	approvals := s.approvalsNow()
	resp := &havenv1.ListDefinitionsResponse{}
	for _, d := range s.gov.Catalog().Definitions() {
		if d.ID <= after {
			continue
		}
		if len(resp.Definitions) == size {
			resp.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(resp.Definitions[size-1].Id))
			break
		}
		resp.Definitions = append(resp.Definitions, s.forCaller(summary(d, approvals), p))
	}
	return resp, nil
}

// GetDefinition implements havenv1.CoordinatorServer.
func (s *Server) GetDefinition(ctx context.Context, req *havenv1.GetDefinitionRequest) (*havenv1.GetDefinitionResponse, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	d, err := s.definition(req.GetId())
	if err != nil {
		return nil, err
	}
	if v := req.GetVersion(); v != 0 && int64(v) != d.Version {
		return nil, status.Errorf(codes.NotFound, "definition %s version %d is not in force; the approved catalogue has version %d", d.ID, v, d.Version)
	}
	files := s.gov.Files()
	src, err := fs.ReadFile(files, d.File())
	if err != nil {
		return nil, s.internal(ctx, "read definition source", err)
	}
	resp := &havenv1.GetDefinitionResponse{Definition: s.forCaller(summary(d, s.approvalsNow()), p), Source: string(src)}
	for _, cl := range d.Codelists() {
		cs := &havenv1.CodelistSummary{Name: cl.Name, CodeCount: int64(cl.Len())}
		if b, err := fs.ReadFile(files, path.Join(catalog.CodelistsDir, cl.Name+".csv")); err == nil {
			sum := sha256.Sum256(b)
			cs.Sha256 = hex.EncodeToString(sum[:])
		}
		resp.Codelists = append(resp.Codelists, cs)
	}
	return resp, nil
}

func (s *Server) definition(id string) (*catalog.Definition, error) {
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "definition id is required")
	}
	cat := s.gov.Catalog()
	d, ok := cat.Get(id)
	if !ok {
		ids := make([]string, 0)
		for _, d := range cat.Definitions() {
			ids = append(ids, d.ID)
		}
		return nil, status.Errorf(codes.NotFound, "no definition %s in the approved catalogue (bundle %s); it has: %s",
			quote(id), s.gov.Revision(), strings.Join(ids, ", "))
	}
	return d, nil
}

// SubmitRun implements havenv1.CoordinatorServer.
//
// A request that is malformed or over a bound (see bounds.go) is refused
// with InvalidArgument and nothing is stored. A well-formed request is
// decided by haven/submit and stored, allowed or refused, unless the
// requester has reached the bundle's limit of refused submissions: then
// it is refused with ResourceExhausted and nothing is stored, so refused
// requests cannot grow the store and audit log without bound.
func (s *Server) SubmitRun(ctx context.Context, req *havenv1.SubmitRunRequest) (*havenv1.SubmitRunResponse, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.checkSubmit(req); err != nil {
		return nil, err
	}
	if crid := req.GetClientRequestId(); crid != "" {
		run, ok, err := s.runs.FindSubmitted(ctx, p, crid)
		if err != nil {
			return nil, s.internal(ctx, "look up client_request_id", err)
		}
		if ok {
			return &havenv1.SubmitRunResponse{Run: run}, nil
		}
	}
	d, err := s.definition(req.GetDefinitionId())
	if err != nil {
		return nil, err
	}
	raw, err := rawParameters(d, req.GetParameters())
	if err != nil {
		return nil, err
	}
	bound, err := d.Bind(raw)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "parameters of %s:\n%v", d.ID, err)
	}
	now := s.now()
	// Counting, deciding and storing happen under the requester's
	// admission lock, so parallel submissions are counted one by one.
	counts, release, err := s.admit.Begin(ctx, admission.Requester{Org: p.Org, ID: p.ID}, now)
	if err != nil {
		return nil, s.internal(ctx, "count submissions", err)
	}
	defer release()
	in := policy.SubmitInput{
		Now:        now,
		Requester:  policy.Requester{ID: p.ID, Org: p.Org, Roles: p.Roles},
		Definition: policy.DefinitionRef{ID: d.ID, Hash: d.Hash(), Codelists: d.CodelistNames()},
		Parameters: policy.ParametersOf(bound),
		Purpose:    req.GetPurpose(),
		Counts: &policy.SubmitCounts{RunsLast24h: counts.Started, RefusedLast24h: counts.Refused,
			ActiveRuns: counts.Active, OrgActiveRuns: counts.OrgActive},
	}
	decide := func(ctx context.Context, ledger *policy.LedgerHistory) policy.Decision {
		in.History = ledger
		dec, err := s.gov.Submit(ctx, in)
		if err != nil {
			// The decision denies with a policy_error reason; the run records it.
			s.log.LogAttrs(ctx, slog.LevelError, "haven/submit failed", slog.String("definition", d.ID), slog.String("error", err.Error()))
		}
		return dec
	}
	// A requester past the cap on refused submissions is turned away
	// with nothing stored: refusals are stored to be seen, but not without
	// bound.
	turnAway := func(dec policy.Decision) error {
		r, ok := reason(dec, policy.CodeRefusedLimitExceeded)
		if !ok {
			return nil
		}
		s.log.LogAttrs(ctx, slog.LevelWarn, "submission refused and not stored", slog.String("requester", p.String()),
			slog.Int("refused_last_24h", counts.Refused))
		return status.Errorf(codes.ResourceExhausted, "%s; nothing was stored", r.Message)
	}
	run, err := s.runs.Submit(ctx, dispatch.Submission{Definition: d, Bound: bound, Purpose: req.GetPurpose(),
		Requester: p, ClientRequestID: req.GetClientRequestId(), Decide: decide, TurnAway: turnAway,
		LedgerLookback: s.gov.LedgerLookback()})
	if err != nil {
		return nil, s.internal(ctx, "submit run", err)
	}
	return &havenv1.SubmitRunResponse{Run: run}, nil
}

func reason(dec policy.Decision, code string) (policy.Reason, bool) {
	for _, r := range dec.Reasons {
		if r.Code == code {
			return r, true
		}
	}
	return policy.Reason{}, false
}

// checkSubmit checks a submission's fields against the bounds, and its
// purpose against the bundle's list, before anything is looked up.
func (s *Server) checkSubmit(req *havenv1.SubmitRunRequest) error {
	var bad problems
	if err := checkText("definition_id", req.GetDefinitionId(), MaxIDBytes); err != nil {
		bad.addf("%v", err)
	} else if req.GetDefinitionId() == "" {
		bad.addf("definition_id is required")
	}
	if crid := req.GetClientRequestId(); crid != "" {
		if err := havenv1.CheckID(crid); err != nil {
			bad.addf("client_request_id %s: %v", quote(crid), err)
		}
	}
	purposes := s.purposesNow()
	switch p := req.GetPurpose(); {
	case p == "":
		bad.addf("purpose is required; the bundle's purposes are: %s", strings.Join(purposes, ", "))
	case len(p) > MaxPurposeBytes:
		bad.addf("purpose is %d bytes, over the limit of %d", len(p), MaxPurposeBytes)
	case !slices.Contains(purposes, p):
		bad.addf("purpose %s is not one of the bundle's purposes: %s", quote(p), strings.Join(purposes, ", "))
	}
	params := req.GetParameters()
	if len(params) > MaxParameters {
		bad.addf("%d parameters, over the limit of %d", len(params), MaxParameters)
	} else {
		for _, name := range slices.Sorted(maps.Keys(params)) {
			if err := checkText("parameter name", name, MaxParameterNameBytes); err != nil {
				bad.addf("%v", err)
				continue
			}
			if v, _, ok := params[name].Text(); ok {
				if err := checkText("parameters."+name, v, MaxParameterValueBytes); err != nil {
					bad.addf("%v", err)
				}
			}
		}
	}
	if !bad.empty() {
		return bad.err("the submission was refused and nothing was stored")
	}
	return nil
}

// rawParameters turns wire values into the strings catalog.Bind reads,
// checking that each value has its parameter's type. Names the definition
// does not declare are passed on for Bind to report, with suggestions.
func rawParameters(d *catalog.Definition, in map[string]*havenv1.ParameterValue) (map[string]string, error) {
	out := make(map[string]string, len(in))
	var bad problems
	for _, name := range slices.Sorted(maps.Keys(in)) {
		v := in[name]
		p, declared := d.Parameter(name)
		s, kind, ok := wire.ValueText(v)
		if !ok {
			bad.addf("parameters.%s: no value given", name)
			continue
		}
		if declared && p.Type != kind {
			bad.addf("parameters.%s: parameter %s is a %s, not a %s", name, name, p.Type, kind)
			continue
		}
		out[name] = s
	}
	if !bad.empty() {
		return nil, bad.err("parameters of " + d.ID)
	}
	return out, nil
}

func checkRunID(id string) error {
	if err := havenv1.CheckID(id); err != nil {
		return status.Errorf(codes.InvalidArgument, "run_id: %v", err)
	}
	return nil
}

// GetRun implements havenv1.CoordinatorServer.
func (s *Server) GetRun(ctx context.Context, req *havenv1.GetRunRequest) (*havenv1.GetRunResponse, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkRunID(req.GetRunId()); err != nil {
		return nil, err
	}
	run, err := s.runs.GetRun(ctx, p, req.GetRunId())
	if err != nil {
		return nil, s.internal(ctx, "get run", err)
	}
	return &havenv1.GetRunResponse{Run: run}, nil
}

// WatchRun implements havenv1.CoordinatorServer.
func (s *Server) WatchRun(req *havenv1.WatchRunRequest, stream havenv1.Coordinator_WatchRunServer) error {
	ctx := stream.Context()
	p, err := principal(ctx)
	if err != nil {
		return err
	}
	if err := checkRunID(req.GetRunId()); err != nil {
		return err
	}
	w, err := s.runs.Watch(ctx, p, req.GetRunId())
	if err != nil {
		return s.internal(ctx, "watch run", err)
	}
	defer w.Stop()
	if err := stream.Send(w.First); err != nil {
		return err
	}
	if w.C == nil {
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.C:
			if !ok {
				switch err := w.Err(); {
				case errors.Is(err, dispatch.ErrWatcherBehind):
					return status.Error(codes.ResourceExhausted, err.Error())
				case err != nil:
					return status.Error(codes.Unavailable, err.Error())
				}
				return nil
			}
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
	}
}

// CancelRun implements havenv1.CoordinatorServer.
func (s *Server) CancelRun(ctx context.Context, req *havenv1.CancelRunRequest) (*havenv1.CancelRunResponse, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkRunID(req.GetRunId()); err != nil {
		return nil, err
	}
	if len(req.GetReason()) > MaxReasonBytes {
		return nil, status.Errorf(codes.InvalidArgument, "reason is %d bytes, over the limit of %d", len(req.GetReason()), MaxReasonBytes)
	}
	run, err := s.runs.CancelRun(ctx, p, req.GetRunId(), req.GetReason())
	if err != nil {
		return nil, s.internal(ctx, "cancel run", err)
	}
	return &havenv1.CancelRunResponse{Run: run}, nil
}

// ListRuns implements havenv1.CoordinatorServer.
func (s *Server) ListRuns(ctx context.Context, req *havenv1.ListRunsRequest) (*havenv1.ListRunsResponse, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetPageSize() < 0 {
		return nil, status.Error(codes.InvalidArgument, "page_size is negative")
	}
	runs, next, err := s.runs.ListRuns(ctx, p, store.ListQuery{States: req.GetStates(), DefinitionID: req.GetDefinitionId(),
		PageSize: min(int(req.GetPageSize()), maxPageSize), PageToken: req.GetPageToken()})
	if err != nil {
		if strings.Contains(err.Error(), "page token") {
			return nil, status.Error(codes.InvalidArgument, "page_token is not one this server gave")
		}
		return nil, s.internal(ctx, "list runs", err)
	}
	return &havenv1.ListRunsResponse{Runs: runs, NextPageToken: next}, nil
}

// approval is one entry of the bundle's data.json approvals.
type approval struct {
	Hash       string   `json:"hash"`
	Approver   string   `json:"approver"`
	ApprovedOn string   `json:"approved_on"`
	Expires    string   `json:"expires"`
	Purposes   []string `json:"purposes"`
	Roles      []string `json:"roles"`
	// Parameters are the approved ranges, for the grids they set.
	Parameters map[string]map[string]any `json:"parameters"`
}

// approvalsNow returns the approvals of the active bundle, read once per
// revision from the verified data.json.
func (s *Server) approvalsNow() map[string]approval {
	a, _ := s.bundleData()
	return a
}

// purposesNow returns the keys of the active bundle's data.purposes,
// sorted: the purposes a submission may state.
func (s *Server) purposesNow() []string {
	_, p := s.bundleData()
	return p
}

func (s *Server) bundleData() (map[string]approval, []string) {
	rev := s.gov.Revision()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.approvals != nil && s.approvRev == rev {
		return s.approvals, s.purposes
	}
	var data struct {
		Approvals map[string]approval `json:"approvals"`
		Purposes  map[string]any      `json:"purposes"`
		Roles     map[string]struct {
			Purposes []string `json:"purposes"`
		} `json:"roles"`
	}
	b, err := fs.ReadFile(s.gov.Files(), "data.json")
	if err == nil {
		err = json.Unmarshal(b, &data)
	}
	if err != nil {
		s.log.Warn("governance bundle has no readable approvals; definitions are listed without them", "error", err)
	}
	if data.Approvals == nil {
		data.Approvals = map[string]approval{}
	}
	s.approvals, s.approvRev = data.Approvals, rev
	s.purposes = slices.Sorted(maps.Keys(data.Purposes))
	s.rolePurposes = map[string][]string{}
	for role, r := range data.Roles {
		s.rolePurposes[role] = r.Purposes
	}
	return s.approvals, s.purposes
}

// forCaller adds to sum the purposes p may state in a run of it, as
// haven/submit's role and purpose rules read the bundle's data: a role of
// p's must be one the approval allows, and a purpose must be the
// approval's and one a role of p's may state. The policy still decides;
// this lets a form offer only what would pass.
func (s *Server) forCaller(sum *havenv1.DefinitionSummary, p authn.Principal) *havenv1.DefinitionSummary {
	ap := sum.GetApproval()
	if ap == nil || !slices.ContainsFunc(p.Roles, func(r string) bool { return slices.Contains(ap.GetAllowedRoles(), r) }) {
		return sum
	}
	s.bundleData()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, purpose := range ap.GetAllowedPurposes() {
		if slices.ContainsFunc(p.Roles, func(r string) bool { return slices.Contains(s.rolePurposes[r], purpose) }) {
			sum.CallerPurposes = append(sum.CallerPurposes, purpose)
		}
	}
	return sum
}

// summary describes a definition for the catalogue. The approval is
// included only when it names the definition's current hash: an edited
// definition is unapproved until the board approves it again.
func summary(d *catalog.Definition, approvals map[string]approval) *havenv1.DefinitionSummary {
	plan := d.Plan()
	out := &havenv1.DefinitionSummary{
		Id:          d.ID,
		Version:     uint32(d.Version),
		Title:       d.Title,
		Description: strings.TrimSpace(d.Description),
		Sha256:      d.Hash(),
		Mode:        wire.Mode(plan.Mode),
		GroupBy:     slices.Clone(d.GroupBy),
	}
	for _, m := range d.Measures {
		out.Measures = append(out.Measures, m.Name)
	}
	for _, p := range d.Parameters {
		spec := &havenv1.ParameterSpec{Name: p.Name, Type: wire.ParamType(p.Type), Description: p.Description,
			AllowedValues: slices.Clone(p.Values)}
		if p.Min != nil {
			spec.Min = wire.Value(*p.Min)
		}
		if p.Max != nil {
			spec.Max = wire.Value(*p.Max)
		}
		if p.Default != nil {
			spec.DefaultValue = wire.Value(*p.Default)
		}
		out.Parameters = append(out.Parameters, spec)
	}
	if a, ok := approvals[d.ID]; ok && a.Hash == d.Hash() {
		for _, spec := range out.Parameters {
			if g, ok := policy.GridOf(a.Parameters[spec.Name]); ok {
				spec.ApprovedGrid = g.String()
			}
		}
		ap := &havenv1.Approval{Approver: a.Approver, AllowedPurposes: slices.Clone(a.Purposes), AllowedRoles: slices.Clone(a.Roles)}
		if t, err := time.Parse(time.DateOnly, a.ApprovedOn); err == nil {
			ap.ApprovedAt = timestamppb.New(t)
		}
		if t, err := time.Parse(time.RFC3339, a.Expires); err == nil {
			ap.ExpiresAt = timestamppb.New(t)
		}
		out.Approval = ap
	}
	return out
}
