package portal

import (
	"bytes"
	"context"
	"html/template"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/havenhealth/haven/coordinator/authn"
	"github.com/havenhealth/haven/coordinator/register"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/release"
	"github.com/havenhealth/haven/wire"
)

// call runs one commissioner API method in process as the signed-in
// principal, through the same request limit the gRPC server applies.
func call[Req proto.Message, Resp any](ctx context.Context, p *Portal, s session, method string, req Req,
	f func(context.Context, Req) (Resp, error)) (Resp, error) {
	ctx = authn.NewContext(ctx, p.principal(s))
	out, err := p.cfg.Limit(ctx, req, &grpc.UnaryServerInfo{FullMethod: method}, func(ctx context.Context, r any) (any, error) {
		return f(ctx, r.(Req))
	})
	if err != nil {
		var zero Resp
		return zero, err
	}
	return out.(Resp), nil
}

func parsePages() (*template.Template, error) {
	return template.New("").Funcs(template.FuncMap{
		"time": func(t time.Time) string { return t.UTC().Format("2 Jan 2006 15:04 UTC") },
		"iso":  func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"navItems": func() []navItem {
			return []navItem{{"catalogue", "/catalogue", "Catalogue"}, {"mine", "/runs", "My runs"},
				{"organisation", "/runs?scope=organisation", "My organisation's runs"}}
		},
	}).ParseFS(templateFiles, "templates/*.html")
}

// navItem is an entry of the header's menu.
type navItem struct{ Key, Href, Text string }

// page renders a page; s is the signed-in person (nil for none).
func (p *Portal) page(w http.ResponseWriter, r *http.Request, code int, name string, s *session, data map[string]any) {
	if s == nil {
		if cur, ok := r.Context().Value(ctxKey{}).(session); ok {
			s = &cur
		}
	}
	data["Session"] = s
	data["Nav"] = ""
	switch {
	case r.URL.Path == "/catalogue":
		data["Nav"] = "catalogue"
	case r.URL.Path == "/runs" && r.URL.Query().Get("scope") == "organisation":
		data["Nav"] = "organisation"
	case r.URL.Path == "/runs":
		data["Nav"] = "mine"
	}
	var buf bytes.Buffer
	if err := p.pages.ExecuteTemplate(&buf, name, data); err != nil {
		p.cfg.Log.LogAttrs(r.Context(), slog.LevelError, "portal: render "+name, slog.String("error", err.Error()))
		http.Error(w, "the portal could not show this page; try again later", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

// fail logs an unexpected error and shows a page that does not repeat it.
func (p *Portal) fail(w http.ResponseWriter, r *http.Request, what string, err error) {
	p.cfg.Log.LogAttrs(r.Context(), slog.LevelError, "portal: "+what, slog.String("path", r.URL.Path), slog.String("error", err.Error()))
	p.page(w, r, http.StatusInternalServerError, "error.html", nil, map[string]any{"Title": "Something went wrong",
		"Message": "The portal could not " + what + ". Try again later."})
}

// apiError shows an API error as the API meant it: NotFound is a 404
// (a run of another organisation is one, as the API says), PermissionDenied
// a 403, and so on.
func (p *Portal) apiError(w http.ResponseWriter, r *http.Request, what string, err error) {
	code := http.StatusInternalServerError
	switch status.Code(err) {
	case codes.NotFound:
		code = http.StatusNotFound
	case codes.PermissionDenied:
		code = http.StatusForbidden
	case codes.InvalidArgument, codes.FailedPrecondition:
		code = http.StatusBadRequest
	case codes.ResourceExhausted:
		code = http.StatusTooManyRequests
	case codes.Unauthenticated:
		code = http.StatusUnauthorized
	default:
		p.cfg.Log.LogAttrs(r.Context(), slog.LevelError, "portal: "+what, slog.String("error", err.Error()))
	}
	p.page(w, r, code, "error.html", nil, map[string]any{"Title": http.StatusText(code), "Message": apiMessage(err)})
}

func (p *Portal) catalogue(w http.ResponseWriter, r *http.Request, s session) {
	var defs []*havenv1.DefinitionSummary
	req := &havenv1.ListDefinitionsRequest{PageSize: 500}
	for {
		resp, err := call(r.Context(), p, s, havenv1.Coordinator_ListDefinitions_FullMethodName, req, p.cfg.API.ListDefinitions)
		if err != nil {
			p.apiError(w, r, "list definitions", err)
			return
		}
		defs = append(defs, resp.GetDefinitions()...)
		if resp.GetNextPageToken() == "" || len(defs) > 10_000 {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	views := make([]*form, len(defs))
	for i, d := range defs {
		views[i] = newForm(d)
	}
	p.page(w, r, http.StatusOK, "catalogue.html", &s, map[string]any{"Title": "Catalogue", "Definitions": views})
}

func (p *Portal) definition(r *http.Request, s session) (*havenv1.DefinitionSummary, error) {
	resp, err := call(r.Context(), p, s, havenv1.Coordinator_GetDefinition_FullMethodName,
		&havenv1.GetDefinitionRequest{Id: r.PathValue("id")}, p.cfg.API.GetDefinition)
	if err != nil {
		return nil, err
	}
	return resp.GetDefinition(), nil
}

func (p *Portal) submitForm(w http.ResponseWriter, r *http.Request, s session) {
	def, err := p.definition(r, s)
	if err != nil {
		p.apiError(w, r, "get definition", err)
		return
	}
	p.page(w, r, http.StatusOK, "submit.html", &s, map[string]any{"Title": def.GetTitle(), "Form": newForm(def)})
}

// maxFormBytes caps a posted form, well under the API's request limit.
const maxFormBytes = 32 << 10

func (p *Portal) submit(w http.ResponseWriter, r *http.Request, s session) {
	def, err := p.definition(r, s)
	if err != nil {
		p.apiError(w, r, "get definition", err)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		p.page(w, r, http.StatusBadRequest, "error.html", &s, map[string]any{"Title": "Bad request", "Message": "The form could not be read."})
		return
	}
	f := newForm(def)
	params := f.read(r.PostForm)
	if !f.hasErrors() {
		resp, err := call(r.Context(), p, s, havenv1.Coordinator_SubmitRun_FullMethodName, &havenv1.SubmitRunRequest{
			DefinitionId: def.GetId(), Parameters: params, Purpose: f.Purpose, ClientRequestId: f.Request}, p.cfg.API.SubmitRun)
		if err == nil {
			http.Redirect(w, r, "/runs/"+resp.GetRun().GetId(), http.StatusSeeOther)
			return
		}
		f.apply(err)
	}
	// 200, as the design system's services answer a form shown again
	// with its errors: the page itself is what was asked for.
	p.page(w, r, http.StatusOK, "submit.html", &s, map[string]any{"Title": "Error: " + def.GetTitle(), "Form": f})
}

// runView is a run as the portal shows it.
type runView struct {
	ID, Definition, Hash, Purpose, State string
	Version                              uint32
	Requester, Org                       string
	Roles                                []string // the requester's roles at submission
	Mine, Final, Released, Refused       bool
	Parameters                           []param
	Submitted, Finished, Deadline        time.Time
	Queue                                uint32
	Coverage                             string
	Sites                                []siteView
	Reasons                              []register.Reason
	Error                                string
	Release                              *havenv1.ReleaseSummary
}

type param struct{ Name, Value string }

type siteView struct {
	ODS, Kind, State, Detail string
	Rows                     int64
}

func viewOf(run *havenv1.Run, s session) runView {
	v := runView{ID: run.GetId(), Definition: run.GetDefinitionId(), Hash: run.GetDefinitionHash(), Version: run.GetDefinitionVersion(),
		Purpose: run.GetPurpose(), State: wire.RunStateName(run.GetState()), Requester: run.GetRequester().GetId(),
		Org: run.GetRequester().GetOrg(), Roles: run.GetRequester().GetRoles(), Final: wire.FinalRun(run.GetState()), Queue: run.GetQueuePosition(),
		Released: run.GetState() == havenv1.RunState_RUN_STATE_RELEASED, Refused: run.GetState() == havenv1.RunState_RUN_STATE_REFUSED,
		Coverage: register.CoverageText(run.GetCoverage()), Error: run.GetError(), Release: run.GetRelease()}
	v.Mine = v.Requester == s.User && v.Org == s.Org
	if t := run.GetSubmittedAt(); t != nil {
		v.Submitted = t.AsTime()
	}
	if t := run.GetFinishedAt(); t != nil {
		v.Finished = t.AsTime()
	}
	if t := run.GetDeadline(); t != nil {
		v.Deadline = t.AsTime()
	}
	for _, name := range slices.Sorted(maps.Keys(run.GetParameters())) {
		v.Parameters = append(v.Parameters, param{Name: name, Value: valueText(run.GetParameters()[name])})
	}
	for _, r := range run.GetPolicyReasons() {
		v.Reasons = append(v.Reasons, register.Reason{Code: r.GetCode(), Message: r.GetMessage()})
	}
	for _, st := range run.GetCoverage().GetSites() {
		sv := siteView{ODS: st.GetSiteOds(), Kind: wire.SiteKindName(st.GetKind()), State: wire.SiteStateName(st.GetState()),
			Rows: st.GetRows(), Detail: st.GetError()}
		for _, r := range st.GetReasons() {
			sv.Detail = join(sv.Detail, r.GetCode()+": "+r.GetMessage())
		}
		v.Sites = append(v.Sites, sv)
	}
	return v
}

func (p *Portal) run(w http.ResponseWriter, r *http.Request, s session) {
	resp, err := call(r.Context(), p, s, havenv1.Coordinator_GetRun_FullMethodName, &havenv1.GetRunRequest{RunId: r.PathValue("id")},
		p.cfg.API.GetRun)
	if err != nil {
		p.apiError(w, r, "get run", err)
		return
	}
	run := resp.GetRun()
	data := map[string]any{"Title": "Run " + run.GetId(), "Run": viewOf(run, s)}
	if !wire.FinalRun(run.GetState()) {
		data["Refresh"] = 2 // seconds: the page follows the run without script
	}
	if run.GetState() == havenv1.RunState_RUN_STATE_RELEASED {
		// The same rule as Flight DoGet: the requester or an operator.
		b, err := p.cfg.Releases.Release(r.Context(), p.principal(s), run.GetId())
		switch {
		case status.Code(err) == codes.PermissionDenied:
			data["TableNote"] = apiMessage(err)
		case err != nil:
			p.apiError(w, r, "fetch released table", err)
			return
		default:
			tab, err := release.ReadIPC(bytes.NewReader(b))
			if err != nil {
				p.fail(w, r, "read the released table", err)
				return
			}
			data["Table"] = tableOf(tab)
			data["Charts"] = charts(tab)
			if sn, err := snippetsFor(run.GetId(), p.cfg.FlightAddress); err == nil {
				data["Snippets"] = sn
			}
		}
	}
	p.page(w, r, http.StatusOK, "run.html", &s, data)
}

// runsPageSize is how many runs a page of a list reads.
const runsPageSize = 50

func (p *Portal) runs(w http.ResponseWriter, r *http.Request, s session) {
	q := r.URL.Query()
	org := q.Get("scope") == "organisation"
	token := q.Get("page")
	if len(token) > 256 {
		p.page(w, r, http.StatusBadRequest, "error.html", &s, map[string]any{"Title": "Bad request", "Message": "The page token is too long."})
		return
	}
	resp, err := call(r.Context(), p, s, havenv1.Coordinator_ListRuns_FullMethodName,
		&havenv1.ListRunsRequest{PageSize: runsPageSize, PageToken: token}, p.cfg.API.ListRuns)
	if err != nil {
		p.apiError(w, r, "list runs", err)
		return
	}
	var views []runView
	for _, run := range resp.GetRuns() {
		v := viewOf(run, s)
		// The API lists the organisation's runs (every run, to an
		// operator); "my runs" are those among them I asked.
		if org || v.Mine {
			views = append(views, v)
		}
	}
	title := "My runs"
	if org {
		title = "Runs of " + s.Org
	}
	p.page(w, r, http.StatusOK, "runs.html", &s, map[string]any{"Title": title, "Runs": views, "Organisation": org,
		"Next": resp.GetNextPageToken()})
}
