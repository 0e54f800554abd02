// Package register is the public transparency register: every run asked of
// the network, for anyone to read without logging in. For each run it shows
// who asked (the organisation and the asker's roles, never the person),
// for what purpose, which
// definition (id, version, hash) and parameters, when, the coverage, the
// outcome (with policy's reasons for a refusal) and the released table;
// and on every page the audit log's head, so that anyone can keep it and
// catch a log rewritten later. It reads only what the coordinator has
// already released: the stored runs and released tables, never a withheld
// value, a requester's user id or a node's upload.
//
// Pages are HTML (html/template), with a JSON Feed and an Atom feed of runs
// and the audit head as JSON for machines.
package register

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/havenhealth/haven/coordinator/store"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/release"
	"github.com/havenhealth/haven/wire"
)

// Store is what the register reads (store.SQLite).
type Store interface {
	ListRuns(ctx context.Context, q store.ListQuery) ([]*havenv1.Run, string, error)
	GetRun(ctx context.Context, id string) (*havenv1.Run, error)
	GetRelease(ctx context.Context, runID string) (store.Release, error)
}

// Config is what a register needs.
type Config struct {
	Store Store
	// Head returns the audit log's head (audit.Log.Head).
	Head func() (seq uint64, hash string)
	Log  *slog.Logger
}

// PageSize is how many runs a page of the register lists.
const PageSize = 50

//go:embed templates/*.html static/register.css static/favicon.svg
var files embed.FS

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"time": func(t time.Time) string { return t.UTC().Format("2 Jan 2006 15:04 UTC") },
	"iso":  func(t time.Time) string { return t.UTC().Format(time.RFC3339) },

	"optOutRounding":  func() int { return optOutRounding },
	"optOutThreshold": func() int { return optOutThreshold },
}).ParseFS(files, "templates/*.html"))

// Register serves the register's pages and feeds.
type Register struct {
	cfg Config
	mux *http.ServeMux
}

// New returns the register's handler, rooted at /register/ (and / redirects
// there).
func New(cfg Config) (*Register, error) {
	if cfg.Store == nil || cfg.Head == nil {
		return nil, errors.New("register: a store and the audit head are required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	r := &Register{cfg: cfg, mux: http.NewServeMux()}
	r.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, req *http.Request) {
		http.Redirect(w, req, "/register/", http.StatusFound)
	})
	r.mux.HandleFunc("GET /register/{$}", r.list)
	r.mux.HandleFunc("GET /register/runs/{id}", r.run)
	r.mux.HandleFunc("GET /register/runs.json", r.jsonFeed)
	r.mux.HandleFunc("GET /register/runs.atom", r.atomFeed)
	r.mux.HandleFunc("GET /register/head.json", r.head)
	static := func(name, contentType string) http.HandlerFunc {
		return func(w http.ResponseWriter, req *http.Request) {
			w.Header().Set("Content-Type", contentType)
			w.Header().Set("Cache-Control", "public, max-age=3600")
			http.ServeFileFS(w, req, files, "static/"+name)
		}
	}
	r.mux.HandleFunc("GET /register/register.css", static("register.css", "text/css; charset=utf-8"))
	r.mux.HandleFunc("GET /register/favicon.svg", static("favicon.svg", "image/svg+xml"))
	r.mux.HandleFunc("GET /favicon.ico", static("favicon.svg", "image/svg+xml"))
	return r, nil
}

// ServeHTTP serves the register with its security headers: nothing on a
// page may load from elsewhere, run script, or be framed.
func (r *Register) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	if req.TLS != nil {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
	r.mux.ServeHTTP(w, req)
}

// auditHead is the audit log's head as the pages show it.
type auditHead struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

func (r *Register) auditHead() auditHead {
	seq, hash := r.cfg.Head()
	return auditHead{Seq: seq, Hash: hash}
}

// runIDPattern is what a run id looks like; anything else is not a run.
var runIDPattern = regexp.MustCompile(`^run-[A-Za-z0-9]{1,64}$`)

func (r *Register) list(w http.ResponseWriter, req *http.Request) {
	token := req.URL.Query().Get("page")
	if len(token) > 256 {
		http.Error(w, "page token too long", http.StatusBadRequest)
		return
	}
	runs, next, err := r.cfg.Store.ListRuns(req.Context(), store.ListQuery{PageSize: PageSize, PageToken: token})
	if err != nil {
		r.fail(w, req, "list runs", err, http.StatusBadRequest)
		return
	}
	views := make([]runView, len(runs))
	for i, run := range runs {
		views[i] = viewOf(run)
	}
	r.render(w, req, "list.html", map[string]any{"Runs": views, "Next": next, "First": token == "", "Head": r.auditHead()})
}

func (r *Register) run(w http.ResponseWriter, req *http.Request) {
	id := req.PathValue("id")
	if !runIDPattern.MatchString(id) {
		http.NotFound(w, req)
		return
	}
	run, err := r.cfg.Store.GetRun(req.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		http.NotFound(w, req)
		return
	}
	if err != nil {
		r.fail(w, req, "get run", err, http.StatusInternalServerError)
		return
	}
	data := map[string]any{"Run": viewOf(run), "Head": r.auditHead()}
	if run.GetState() == havenv1.RunState_RUN_STATE_RELEASED {
		rel, err := r.cfg.Store.GetRelease(req.Context(), id)
		if err != nil {
			r.fail(w, req, "get release", err, http.StatusInternalServerError)
			return
		}
		tab, err := release.ReadIPC(bytes.NewReader(rel.Table))
		if err != nil {
			r.fail(w, req, "read release", err, http.StatusInternalServerError)
			return
		}
		data["Table"] = TableOf(tab)
		data["SHA256"] = rel.SHA256
	}
	r.render(w, req, "run.html", data)
}

// render writes page name with data, or a plain error if it cannot.
func (r *Register) render(w http.ResponseWriter, req *http.Request, name string, data any) {
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, data); err != nil {
		r.fail(w, req, "render "+name, err, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(buf.Bytes())
}

// fail logs err and answers with status and a message that names what
// failed but not the error, which may name files or queries.
func (r *Register) fail(w http.ResponseWriter, req *http.Request, what string, err error, status int) {
	r.cfg.Log.LogAttrs(req.Context(), slog.LevelWarn, "register: "+what, slog.String("path", req.URL.Path), slog.String("error", err.Error()))
	if status == http.StatusBadRequest {
		http.Error(w, "bad request: "+what, status)
		return
	}
	http.Error(w, "the register could not "+what+"; try again later", status)
}

// runView is a run as the register shows it: nothing of the requester
// but the organisation and the roles they submitted with.
type runView struct {
	ID, Organisation, Purpose  string
	Roles                      []string
	Definition, DefinitionHash string
	DefinitionVersion          uint32
	Parameters                 []param
	State                      string
	Submitted, Finished        time.Time
	Reasons                    []Reason
	Error                      string
	Coverage                   string
	Released                   bool
	// Sites are the sites asked, each with its part and the opt-outs it
	// honoured; OptOuts is the run's total. Both are counted in words
	// that disclose no small number (OptOutText).
	Sites   []siteView
	OptOuts string
}

// siteView is one site's part in a run, as the register shows it.
type siteView struct{ ODS, Kind, State, OptOuts string }

// Opt-out counts are published only coarsely: a count under
// optOutThreshold (zero included: "no patient here objected" says
// something of every patient at a small site) is shown as "fewer than",
// and a larger one rounded to optOutRounding, so that publishing them run
// after run tells nobody whether one more person objected.
const (
	optOutThreshold = 10
	optOutRounding  = 5
)

// OptOutText says how many records' opt-outs a site or run honoured,
// disclosure-controlled.
func OptOutText(n int64) string {
	if n < optOutThreshold {
		return fmt.Sprintf("fewer than %d", optOutThreshold)
	}
	return fmt.Sprintf("about %d", (n+optOutRounding/2)/optOutRounding*optOutRounding)
}

// AskedBy is who asked, as the register says it: the organisation and,
// where the run records them, the requester's roles, e.g. "QHM (analyst)".
func (v runView) AskedBy() string {
	if len(v.Roles) == 0 {
		return v.Organisation
	}
	return v.Organisation + " (" + strings.Join(v.Roles, ", ") + ")"
}

type param struct{ Name, Value string }

// Reason is a code and its explanation.
type Reason struct{ Code, Message string }

func viewOf(run *havenv1.Run) runView {
	v := runView{
		ID: run.GetId(), Organisation: run.GetRequester().GetOrg(), Roles: run.GetRequester().GetRoles(), Purpose: run.GetPurpose(),
		Definition: run.GetDefinitionId(), DefinitionVersion: run.GetDefinitionVersion(), DefinitionHash: run.GetDefinitionHash(),
		State:    wire.RunStateName(run.GetState()),
		Released: run.GetState() == havenv1.RunState_RUN_STATE_RELEASED,
		Error:    run.GetError(),
		Coverage: CoverageText(run.GetCoverage()),
	}
	if c := run.GetCoverage(); len(c.GetSites()) > 0 {
		v.OptOuts = OptOutText(c.GetOptOutsHonoured())
		for _, st := range c.GetSites() {
			sv := siteView{ODS: st.GetSiteOds(), Kind: wire.SiteKindName(st.GetKind()), State: strings.ReplaceAll(wire.SiteStateName(st.GetState()), "_", " ")}
			if st.GetState() == havenv1.SiteState_SITE_STATE_DONE {
				sv.OptOuts = OptOutText(st.GetOptOutsHonoured())
			}
			v.Sites = append(v.Sites, sv)
		}
	}
	if t := run.GetSubmittedAt(); t != nil {
		v.Submitted = t.AsTime()
	}
	if t := run.GetFinishedAt(); t != nil {
		v.Finished = t.AsTime()
	}
	for _, name := range slices.Sorted(maps.Keys(run.GetParameters())) {
		v.Parameters = append(v.Parameters, param{Name: name, Value: paramText(run.GetParameters()[name])})
	}
	for _, r := range run.GetPolicyReasons() {
		v.Reasons = append(v.Reasons, Reason{Code: r.GetCode(), Message: r.GetMessage()})
	}
	return v
}

// CoverageText says what answered a run, in words, as the register and
// the portal both say it.
func CoverageText(c *havenv1.Coverage) string {
	if c == nil || c.GetSitesExpected() == 0 {
		return "not yet known"
	}
	s := fmt.Sprintf("%d of %d sites answered", c.GetSitesAnswered(), c.GetSitesExpected())
	if c.GetPopulationExpected() > 0 {
		s += fmt.Sprintf("; %d of %d registered patients (%s)", c.GetPopulationAnswered(), c.GetPopulationExpected(),
			percent(c.GetPopulationAnswered(), c.GetPopulationExpected()))
	}
	if c.GetTrustsExpected() > 0 {
		s += fmt.Sprintf("; %d of %d hospital trusts", c.GetTrustsAnswered(), c.GetTrustsExpected())
		if c.GetActivityExpected() > 0 {
			s += fmt.Sprintf(", holding %s of their usual activity", percent(c.GetActivityAnswered(), c.GetActivityExpected()))
		}
	}
	return s
}

func percent(a, b int64) string {
	return strconv.FormatFloat(100*float64(a)/float64(b), 'f', 1, 64) + "%"
}

// TableView is a released table as a page shows it: each value released,
// withheld or missing, with the legend of reasons a value is missing in
// the words of release.Code.Text. The portal shows tables through it too,
// so that both faces say the same of the same table.
type TableView struct {
	// Perturbed says the counts went through cell-key perturbation.
	Perturbed bool
	Dims      []string
	Measures  []string
	Rows      []RowView
	Reasons   []Reason // the legend: each reason a value of this table is missing
}

// RowView is a row of a TableView: Key holds "all" for a dimension a
// margin or total adds up.
type RowView struct {
	Kind  string
	Key   []string
	Cells []CellView
}

// CellView is one value of a RowView.
type CellView struct {
	Text     string
	Withheld bool
	Reason   string
}

// TableOf is t as pages show it.
func TableOf(t *release.Table) TableView {
	v := TableView{Dims: t.Dims, Perturbed: t.Meta.Perturbed()}
	for _, m := range t.Measures {
		v.Measures = append(v.Measures, m.Name)
	}
	seen := map[release.Code]bool{}
	for _, r := range t.Rows {
		row := RowView{Kind: string(r.Kind)}
		for d, k := range r.Key {
			switch {
			case r.Kind == release.RowCell || (r.Kind == release.RowMargin && d == r.MarginDim):
				row.Key = append(row.Key, k)
			default:
				row.Key = append(row.Key, "all")
			}
		}
		for _, val := range r.Values {
			c := CellView{}
			switch {
			case val.Released:
				c.Text = strconv.FormatFloat(val.Value, 'f', -1, 64)
			case val.Withheld():
				c.Text, c.Withheld, c.Reason = "withheld", true, string(val.Reason)
			default:
				c.Text, c.Reason = "—", string(val.Reason)
			}
			if !val.Released && !seen[val.Reason] {
				seen[val.Reason] = true
				v.Reasons = append(v.Reasons, Reason{Code: string(val.Reason), Message: val.Reason.Text()})
			}
			row.Cells = append(row.Cells, c)
		}
		v.Rows = append(v.Rows, row)
	}
	slices.SortFunc(v.Reasons, func(a, b Reason) int { return strings.Compare(a.Code, b.Code) })
	return v
}

// paramText is a parameter's value as text.
func paramText(v *havenv1.ParameterValue) string {
	if s, _, ok := wire.ValueText(v); ok {
		return s
	}
	return "(unreadable)"
}
