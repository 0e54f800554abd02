package httpapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/havenhealth/haven/client"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/release"
)

// route is one operation: what the router serves and what the OpenAPI
// document says of it, in one place.
type route struct {
	method, path string
	op, summary  string
	// public routes need no caller.
	public bool
	params []param
	// body is the request body's message; nil for none.
	body proto.Message
	// resp is the message of a 200 answer in JSON; media lists the 200
	// answer's media types when they are not that message.
	resp   proto.Message
	media  []string
	handle http.HandlerFunc
}

// param is a path or query parameter.
type param struct {
	name, in, typ, desc string
	required, repeated  bool
	enum                []string
}

var (
	pageSize  = param{name: "page_size", in: "query", typ: "integer", desc: "Most items in one page; 0 for the default (50), at most 500."}
	pageToken = param{name: "page_token", in: "query", typ: "string", desc: "next_page_token of the previous page."}
	runIDPath = param{name: "run_id", in: "path", typ: "string", required: true, desc: "The run's id."}
)

// Media types of answers that are not one JSON message.
const (
	mediaJSON   = "application/json"
	mediaNDJSON = "application/x-ndjson"
	mediaSSE    = "text/event-stream"
	mediaCSV    = "text/csv"
	mediaArrow  = "application/vnd.apache.arrow.stream"
)

// OpenAPIPath is where the OpenAPI document is served.
const OpenAPIPath = "/v1/openapi.json"

// table is the API's routes.
func (h *Handler) table() []route {
	return []route{
		{method: "GET", path: OpenAPIPath, op: "getOpenAPI", summary: "This OpenAPI 3 document; no caller identity needed.",
			public: true, media: []string{mediaJSON}, handle: h.openAPI},
		{method: "GET", path: "/v1/definitions", op: "listDefinitions", summary: "The approved catalogue: each definition with its parameters and approval.",
			params: []param{pageSize, pageToken}, resp: &havenv1.ListDefinitionsResponse{}, handle: h.listDefinitions},
		{method: "GET", path: "/v1/definitions/{id}", op: "getDefinition", summary: "One definition, its source and its codelists.",
			params: []param{{name: "id", in: "path", typ: "string", required: true, desc: "The definition's id."},
				{name: "version", in: "query", typ: "integer", desc: "The version expected; 0 or absent for the one in force."}},
			resp: &havenv1.GetDefinitionResponse{}, handle: h.getDefinition},
		{method: "POST", path: "/v1/runs", op: "submitRun", summary: "Submit a run of a definition; a run the policy refuses is recorded, refused, with its reasons.",
			body: &havenv1.SubmitRunRequest{}, resp: &havenv1.SubmitRunResponse{}, handle: h.submitRun},
		{method: "GET", path: "/v1/runs", op: "listRuns", summary: "The runs the caller may see, newest first.",
			params: []param{pageSize, pageToken,
				{name: "state", in: "query", typ: "string", repeated: true, enum: stateNames(), desc: "Only runs in one of these states; repeat for more."},
				{name: "definition_id", in: "query", typ: "string", desc: "Only runs of this definition."}},
			resp: &havenv1.ListRunsResponse{}, handle: h.listRuns},
		{method: "GET", path: "/v1/runs/{run_id}", op: "getRun", summary: "A run's state, coverage and outcome.",
			params: []param{runIDPath}, resp: &havenv1.GetRunResponse{}, handle: h.getRun},
		{method: "POST", path: "/v1/runs/{run_id}/cancel", op: "cancelRun", summary: "Cancel a run in progress (its requester or an operator); a finished run is returned as it is.",
			params: []param{runIDPath}, body: &havenv1.CancelRunRequest{}, resp: &havenv1.CancelRunResponse{}, handle: h.cancelRun},
		{method: "GET", path: "/v1/runs/{run_id}/events", op: "watchRun",
			summary: "Follow a run: its state now, then each change until it finishes, as JSON lines of RunEvent (application/x-ndjson), or as server-sent events (Accept: text/event-stream) named run, with a last event named error if the stream failed.",
			params:  []param{runIDPath}, resp: &havenv1.RunEvent{}, media: []string{mediaNDJSON, mediaSSE}, handle: h.watchRun},
		{method: "GET", path: "/v1/runs/{run_id}/table", op: "getTable",
			summary: "The run's released table (its requester or an operator): JSON (provenance and rows), CSV as haven query fetch writes it, or the Arrow IPC stream as released, signed.",
			params: []param{runIDPath, {name: "format", in: "query", typ: "string", enum: []string{"json", "csv", "arrow"},
				desc: "json (the default), csv or arrow."}},
			media: []string{mediaJSON, mediaCSV, mediaArrow}, handle: h.getTable},
	}
}

// call runs one commissioner API method in process as the caller, through
// the same request limit the gRPC server applies.
func call[Req proto.Message, Resp any](r *http.Request, h *Handler, method string, req Req,
	f func(context.Context, Req) (Resp, error)) (Resp, error) {
	out, err := h.cfg.Limit(r.Context(), req, &grpc.UnaryServerInfo{FullMethod: method}, func(ctx context.Context, in any) (any, error) {
		return f(ctx, in.(Req))
	})
	if err != nil {
		var zero Resp
		return zero, err
	}
	return out.(Resp), nil
}

// jsonOut is how every message is written: proto field names, as the
// OpenAPI document and the query parameters spell them.
var jsonOut = protojson.MarshalOptions{UseProtoNames: true}

func (h *Handler) reply(w http.ResponseWriter, r *http.Request, m proto.Message, err error) {
	if err != nil {
		h.fail(w, r, err)
		return
	}
	b, err := jsonOut.Marshal(m)
	if err != nil {
		h.fail(w, r, fmt.Errorf("encode %T: %w", m, err))
		return
	}
	w.Header().Set("Content-Type", mediaJSON)
	w.Write(append(b, '\n'))
}

// query reads a request's query parameters, refusing any the route does
// not name and any that do not parse, each as a violation naming it.
type query struct {
	vals url.Values
	bad  []Violation
}

func newQuery(r *http.Request, allowed ...string) *query {
	q := &query{vals: r.URL.Query()}
	for name := range q.vals {
		if !slices.Contains(allowed, name) {
			q.bad = append(q.bad, Violation{Field: name, Description: fmt.Sprintf("unknown query parameter %q; this route takes: %s", name, strings.Join(allowed, ", "))})
		}
	}
	slices.SortFunc(q.bad, func(a, b Violation) int { return strings.Compare(a.Field, b.Field) })
	return q
}

// one is the single value of parameter name, or "".
func (q *query) one(name string) string {
	vs := q.vals[name]
	if len(vs) > 1 {
		q.bad = append(q.bad, Violation{Field: name, Description: name + " is given more than once"})
	}
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

func (q *query) int(name string, bits int) int64 {
	s := q.one(name)
	if s == "" {
		return 0
	}
	n, err := strconv.ParseInt(s, 10, bits)
	if err != nil {
		q.bad = append(q.bad, Violation{Field: name, Description: fmt.Sprintf("%s %q is not a %d-bit integer", name, s, bits)})
	}
	return n
}

// ok answers 400 and reports false if anything was wrong.
func (q *query) ok(w http.ResponseWriter) bool {
	if len(q.bad) == 0 {
		return true
	}
	msg := "the query parameters were refused:"
	for _, v := range q.bad {
		msg += "\n" + v.Description
	}
	invalid(w, msg, q.bad...)
	return false
}

// runID is the run_id path parameter, checked as the API checks it.
func runID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("run_id")
	if err := havenv1.CheckID(id); err != nil {
		invalid(w, "run_id: "+err.Error(), Violation{Field: "run_id", Description: err.Error()})
		return "", false
	}
	return id, true
}

// unknownField finds the field protojson names in its error.
var unknownField = regexp.MustCompile(`unknown field "([^"]+)"|invalid value for [a-z0-9]+ field ([a-z0-9_]+)`)

// decode reads a JSON body into m: marked application/json (415
// otherwise), at most MaxBodyBytes (413 past it), every field one of m's
// (400 naming an unknown one). An empty body is an empty message when
// empty is true.
func (h *Handler) decode(w http.ResponseWriter, r *http.Request, m proto.Message, empty bool) bool {
	// Required even of an empty body: see the package doc on browsers.
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != mediaJSON {
		writeError(w, http.StatusUnsupportedMediaType, "INVALID_ARGUMENT",
			fmt.Sprintf("Content-Type %q: send application/json (an empty body too)", r.Header.Get("Content-Type")), nil)
		return false
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
		writeError(w, http.StatusRequestEntityTooLarge, "RESOURCE_EXHAUSTED",
			fmt.Sprintf("the request body is over the limit of %d bytes; nothing was stored", mbe.Limit), nil)
		return false
	}
	if err != nil {
		invalid(w, "read the request body: "+err.Error())
		return false
	}
	if len(bytes.TrimSpace(b)) == 0 {
		if empty {
			return true
		}
		invalid(w, "the request body is empty; send a JSON object")
		return false
	}
	if err := protojson.Unmarshal(b, m); err != nil {
		msg := strings.TrimPrefix(err.Error(), "proto: ")
		v := Violation{Description: msg}
		if f := unknownField.FindStringSubmatch(msg); f != nil {
			v.Field = f[1] + f[2]
		}
		invalid(w, "the request body is not a "+string(m.ProtoReflect().Descriptor().Name())+" in JSON: "+msg, v)
		return false
	}
	return true
}

func (h *Handler) listDefinitions(w http.ResponseWriter, r *http.Request) {
	q := newQuery(r, "page_size", "page_token")
	req := &havenv1.ListDefinitionsRequest{PageSize: int32(q.int("page_size", 32)), PageToken: q.one("page_token")}
	if !q.ok(w) {
		return
	}
	resp, err := call(r, h, havenv1.Coordinator_ListDefinitions_FullMethodName, req, h.cfg.API.ListDefinitions)
	h.reply(w, r, resp, err)
}

func (h *Handler) getDefinition(w http.ResponseWriter, r *http.Request) {
	q := newQuery(r, "version")
	v := q.int("version", 32)
	if v < 0 {
		q.bad = append(q.bad, Violation{Field: "version", Description: "version is negative"})
	}
	if !q.ok(w) {
		return
	}
	req := &havenv1.GetDefinitionRequest{Id: r.PathValue("id"), Version: uint32(v)}
	resp, err := call(r, h, havenv1.Coordinator_GetDefinition_FullMethodName, req, h.cfg.API.GetDefinition)
	h.reply(w, r, resp, err)
}

func (h *Handler) submitRun(w http.ResponseWriter, r *http.Request) {
	if !newQuery(r).ok(w) {
		return
	}
	req := &havenv1.SubmitRunRequest{}
	if !h.decode(w, r, req, false) {
		return
	}
	resp, err := call(r, h, havenv1.Coordinator_SubmitRun_FullMethodName, req, h.cfg.API.SubmitRun)
	if err == nil {
		w.Header().Set("Location", "/v1/runs/"+resp.GetRun().GetId())
	}
	h.reply(w, r, resp, err)
}

func (h *Handler) getRun(w http.ResponseWriter, r *http.Request) {
	id, ok := runID(w, r)
	if !ok || !newQuery(r).ok(w) {
		return
	}
	resp, err := call(r, h, havenv1.Coordinator_GetRun_FullMethodName, &havenv1.GetRunRequest{RunId: id}, h.cfg.API.GetRun)
	h.reply(w, r, resp, err)
}

func (h *Handler) cancelRun(w http.ResponseWriter, r *http.Request) {
	id, ok := runID(w, r)
	if !ok || !newQuery(r).ok(w) {
		return
	}
	req := &havenv1.CancelRunRequest{}
	if !h.decode(w, r, req, true) {
		return
	}
	if req.RunId != "" && req.RunId != id {
		invalid(w, "run_id in the body is not the run of the path", Violation{Field: "run_id", Description: "run_id " + strconv.Quote(req.RunId) + " in the body differs from the path's " + id})
		return
	}
	req.RunId = id
	resp, err := call(r, h, havenv1.Coordinator_CancelRun_FullMethodName, req, h.cfg.API.CancelRun)
	h.reply(w, r, resp, err)
}

// stateNames are the run states as the state parameter takes them: the
// enum's names without the RUN_STATE_ prefix, in lower case.
func stateNames() []string {
	var out []string
	vals := havenv1.RunState(0).Descriptor().Values()
	for i := range vals.Len() {
		if vals.Get(i).Number() == 0 {
			continue
		}
		out = append(out, strings.ToLower(strings.TrimPrefix(string(vals.Get(i).Name()), "RUN_STATE_")))
	}
	return out
}

func (h *Handler) listRuns(w http.ResponseWriter, r *http.Request) {
	q := newQuery(r, "page_size", "page_token", "state", "definition_id")
	req := &havenv1.ListRunsRequest{PageSize: int32(q.int("page_size", 32)), PageToken: q.one("page_token"), DefinitionId: q.one("definition_id")}
	for _, s := range q.vals["state"] {
		name := "RUN_STATE_" + strings.ToUpper(strings.TrimPrefix(strings.ToUpper(s), "RUN_STATE_"))
		v, ok := havenv1.RunState_value[name]
		if !ok || v == 0 {
			q.bad = append(q.bad, Violation{Field: "state", Description: fmt.Sprintf("state %q is not one of: %s", s, strings.Join(stateNames(), ", "))})
			continue
		}
		req.States = append(req.States, havenv1.RunState(v))
	}
	if !q.ok(w) {
		return
	}
	resp, err := call(r, h, havenv1.Coordinator_ListRuns_FullMethodName, req, h.cfg.API.ListRuns)
	h.reply(w, r, resp, err)
}

func (h *Handler) getTable(w http.ResponseWriter, r *http.Request) {
	id, ok := runID(w, r)
	if !ok {
		return
	}
	q := newQuery(r, "format")
	format := q.one("format")
	if !slices.Contains([]string{"", "json", "csv", "arrow"}, format) {
		q.bad = append(q.bad, Violation{Field: "format", Description: fmt.Sprintf("format %q is not json, csv or arrow", format)})
	}
	if !q.ok(w) {
		return
	}
	b, err := h.cfg.Releases.Release(r.Context(), caller(r), id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if format == "arrow" {
		// Exactly as stored: the provenance and signature in the schema
		// metadata are what haven query verify checks.
		w.Header().Set("Content-Type", mediaArrow)
		w.Header().Set("Content-Disposition", `attachment; filename="`+id+`.arrow"`)
		w.Write(b)
		return
	}
	tab, err := release.ReadIPC(bytes.NewReader(b))
	if err != nil {
		h.fail(w, r, fmt.Errorf("read the released table of %s: %w", id, err))
		return
	}
	var buf bytes.Buffer
	ct := mediaJSON
	if format == "csv" {
		ct = mediaCSV + "; charset=utf-8"
		err = client.WriteCSV(&buf, tab)
	} else {
		err = client.WriteJSON(&buf, tab)
	}
	if err != nil {
		h.fail(w, r, fmt.Errorf("write the released table of %s: %w", id, err))
		return
	}
	w.Header().Set("Content-Type", ct)
	w.Write(buf.Bytes())
}
