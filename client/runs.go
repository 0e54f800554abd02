package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/apache/arrow/go/v17/arrow/flight"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/release"
	"github.com/havenhealth/haven/wire"
)

// Definitions lists every approved definition, reading all pages.
func (c *Client) Definitions(ctx context.Context) ([]*havenv1.DefinitionSummary, error) {
	var out []*havenv1.DefinitionSummary
	token := ""
	for {
		resp, err := c.coord.ListDefinitions(ctx, &havenv1.ListDefinitionsRequest{PageToken: token})
		if err != nil {
			return nil, Explain(err)
		}
		out = append(out, resp.GetDefinitions()...)
		if token = resp.GetNextPageToken(); token == "" {
			return out, nil
		}
	}
}

// Definition returns one definition: its summary, codelists and source.
func (c *Client) Definition(ctx context.Context, id string) (*havenv1.GetDefinitionResponse, error) {
	resp, err := c.coord.GetDefinition(ctx, &havenv1.GetDefinitionRequest{Id: id})
	if err != nil {
		return nil, Explain(err)
	}
	return resp, nil
}

// ParseParams turns name=value strings into typed values, using the
// definition's declared parameter types. Every problem is reported at
// once, one a line: a string that is not name=value, a name the
// definition does not declare (listing those it does), a name given twice,
// a value that is not of its parameter's type. Ranges, allowed values and
// grids are the coordinator's to check.
func ParseParams(d *havenv1.DefinitionSummary, raw []string) (map[string]*havenv1.ParameterValue, error) {
	specs := map[string]*havenv1.ParameterSpec{}
	for _, p := range d.GetParameters() {
		specs[p.GetName()] = p
	}
	known := slices.Sorted(maps.Keys(specs))
	out := map[string]*havenv1.ParameterValue{}
	var problems []string
	for _, kv := range raw {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			problems = append(problems, fmt.Sprintf("--param %q: want name=value", kv))
			continue
		}
		spec, ok := specs[name]
		if !ok {
			problems = append(problems, fmt.Sprintf("unknown parameter %q: %s takes %s", name, d.GetId(), strings.Join(known, ", ")))
			continue
		}
		if _, dup := out[name]; dup {
			problems = append(problems, fmt.Sprintf("parameter %s is given twice", name))
			continue
		}
		if _, err := wire.ParseParamType(spec.GetType()); err != nil {
			problems = append(problems, fmt.Sprintf("parameter %s has a type this client does not know", name))
			continue
		}
		v, err := wire.ParseValue(spec.GetType(), value)
		if err != nil {
			problems = append(problems, fmt.Sprintf("parameter %s: %v", name, err))
			continue
		}
		out[name] = v
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "\n"))
	}
	return out, nil
}

// Submission is a run to submit.
type Submission struct {
	// Definition is the approved definition's id.
	Definition string
	// Params are name=value strings (ParseParams); those left out take
	// the definition's defaults.
	Params []string
	// Purpose is one the definition's approval allows.
	Purpose string
	// ClientRequestID, if set, makes retrying the submission return the
	// same run.
	ClientRequestID string
}

// Submit reads the definition, parses the parameters against it and
// submits the run (SubmitTo). A run the policy refuses is returned, not an
// error: its state and reasons say why (see Outcome).
func (c *Client) Submit(ctx context.Context, s Submission) (*havenv1.Run, error) {
	def, err := c.Definition(ctx, s.Definition)
	if err != nil {
		return nil, err
	}
	return c.SubmitTo(ctx, def.GetDefinition(), s)
}

// SubmitTo parses the parameters against def, the definition as the
// coordinator described it, and submits the run.
func (c *Client) SubmitTo(ctx context.Context, def *havenv1.DefinitionSummary, s Submission) (*havenv1.Run, error) {
	values, err := ParseParams(def, s.Params)
	if err != nil {
		return nil, err
	}
	resp, err := c.coord.SubmitRun(ctx, &havenv1.SubmitRunRequest{DefinitionId: s.Definition, Parameters: values,
		Purpose: s.Purpose, ClientRequestId: s.ClientRequestID})
	if err != nil {
		return nil, Explain(err)
	}
	return resp.GetRun(), nil
}

// CheckRunID checks a run id before it is sent.
func CheckRunID(id string) error {
	if err := havenv1.CheckID(id); err != nil {
		return fmt.Errorf("run id: %w", err)
	}
	return nil
}

// Run returns a run as the coordinator holds it now.
func (c *Client) Run(ctx context.Context, id string) (*havenv1.Run, error) {
	resp, err := c.coord.GetRun(ctx, &havenv1.GetRunRequest{RunId: id})
	if err != nil {
		return nil, Explain(err)
	}
	return resp.GetRun(), nil
}

// Cancel cancels a run in progress, giving reason for the run register.
func (c *Client) Cancel(ctx context.Context, id, reason string) (*havenv1.Run, error) {
	resp, err := c.coord.CancelRun(ctx, &havenv1.CancelRunRequest{RunId: id, Reason: reason})
	if err != nil {
		return nil, Explain(err)
	}
	return resp.GetRun(), nil
}

// RunFilter says which runs Runs lists.
type RunFilter struct {
	States     []havenv1.RunState // any state if empty
	Definition string             // any definition if empty
	Limit      int                // the most runs to list; at least 1
}

// maxRunsPage is the largest page of runs asked for at once.
const maxRunsPage = 500

// ParseRunState reads a run state as people write it: "released",
// "pending", … in any case.
func ParseRunState(s string) (havenv1.RunState, error) {
	v, ok := havenv1.RunState_value["RUN_STATE_"+strings.ToUpper(s)]
	if !ok || v == 0 {
		return 0, fmt.Errorf("%q: want pending, running, linking, released, refused, failed, cancelled or interrupted", s)
	}
	return havenv1.RunState(v), nil
}

// Runs lists the runs the filter selects, newest first, reading pages
// until the limit.
func (c *Client) Runs(ctx context.Context, f RunFilter) ([]*havenv1.Run, error) {
	if f.Limit < 1 {
		return nil, errors.New("the limit must be at least 1")
	}
	var out []*havenv1.Run
	token := ""
	for len(out) < f.Limit {
		resp, err := c.coord.ListRuns(ctx, &havenv1.ListRunsRequest{States: f.States, DefinitionId: f.Definition,
			PageToken: token, PageSize: int32(min(f.Limit-len(out), maxRunsPage))})
		if err != nil {
			return nil, Explain(err)
		}
		out = append(out, resp.GetRuns()...)
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	return out, nil
}

// Follow watches a run until it reaches a final state and returns it as it
// ended, calling progress (if not nil) with each state of the run seen on
// the way. A watch that falls behind is started again from a fresh
// snapshot; any other error ends the follow.
func (c *Client) Follow(ctx context.Context, runID string, progress func(*havenv1.Run)) (*havenv1.Run, error) {
	for {
		stream, err := c.coord.WatchRun(ctx, &havenv1.WatchRunRequest{RunId: runID})
		if err != nil {
			return nil, Explain(err)
		}
		for {
			ev, err := stream.Recv()
			if status.Code(err) == codes.ResourceExhausted {
				break // fell behind; watch again from a fresh snapshot
			}
			if err != nil {
				return nil, Explain(err)
			}
			run := ev.GetRun()
			if progress != nil {
				progress(run)
			}
			if wire.FinalRun(run.GetState()) {
				return run, nil
			}
		}
	}
}

// Outcome is nil for a run that is released or still going, and an error
// saying why otherwise: the policy's reasons for a refusal, the error of a
// run that failed, was cancelled or was interrupted.
func Outcome(run *havenv1.Run) error {
	switch run.GetState() {
	case havenv1.RunState_RUN_STATE_REFUSED:
		var b strings.Builder
		fmt.Fprintf(&b, "run %s was refused by policy:", SafeText(run.GetId()))
		for _, r := range run.GetPolicyReasons() {
			fmt.Fprintf(&b, "\n  %s: %s", SafeText(r.GetCode()), SafeText(r.GetMessage()))
		}
		return errors.New(b.String())
	case havenv1.RunState_RUN_STATE_FAILED, havenv1.RunState_RUN_STATE_CANCELLED, havenv1.RunState_RUN_STATE_INTERRUPTED:
		return fmt.Errorf("run %s is %s: %s", SafeText(run.GetId()), StateLabel(run.GetState()), SafeText(run.GetError()))
	}
	return nil
}

// Records opens a run's released table with Flight DoGet. The caller
// releases the reader; ReadTable or WriteArrow consume it.
func (c *Client) Records(ctx context.Context, runID string) (*flight.Reader, error) {
	tkt, err := havenv1.NewTableTicket(runID)
	if err != nil {
		return nil, err
	}
	stream, err := c.flight().DoGet(ctx, tkt)
	if err != nil {
		return nil, Explain(err)
	}
	rdr, err := flight.NewRecordReader(stream)
	if err != nil {
		return nil, Explain(err)
	}
	return rdr, nil
}

// ReadTable decodes a released table from rdr, checking its columns
// against the dimensions and measures its provenance names.
func ReadTable(rdr *flight.Reader) (*release.Table, error) {
	tab, err := release.Read(rdr)
	if err != nil {
		return nil, Explain(err)
	}
	return tab, nil
}

// Fetch reads and decodes a run's released table.
func (c *Client) Fetch(ctx context.Context, runID string) (*release.Table, error) {
	rdr, err := c.Records(ctx, runID)
	if err != nil {
		return nil, err
	}
	defer rdr.Release()
	return ReadTable(rdr)
}

// WriteArrow copies rdr to w as the Arrow IPC stream the coordinator
// released, schema metadata (provenance and signature) included, so that
// Verify can check it.
func WriteArrow(w io.Writer, rdr *flight.Reader) error {
	iw := ipc.NewWriter(w, ipc.WithSchema(rdr.Schema()))
	for rdr.Next() {
		if err := iw.Write(rdr.Record()); err != nil {
			return err
		}
	}
	if err := rdr.Err(); err != nil && !errors.Is(err, io.EOF) {
		return Explain(err)
	}
	return iw.Close()
}
