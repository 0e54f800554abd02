package runner_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/internal/pki"
	"github.com/havenhealth/haven/internal/testutil"
	"github.com/havenhealth/haven/node/audit"
	"github.com/havenhealth/haven/node/connector"
	"github.com/havenhealth/haven/node/nodetest"
	"github.com/havenhealth/haven/node/optout"
	"github.com/havenhealth/haven/node/pseudonym"
	"github.com/havenhealth/haven/node/runner"
	"github.com/havenhealth/haven/node/sqlgen"
	"github.com/havenhealth/haven/node/state"
	"github.com/havenhealth/haven/policy"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/synth"
)

func TestMain(m *testing.M) {
	code := m.Run()
	nodetest.Cleanup()
	os.Exit(code)
}

// testSecret is the linkage secret of every test node. Tests scan their
// logs and audit files for it.
var testSecret = []byte("test-linkage-secret-0123456789-abcdefghij")

// linkDouble stands in for the session: it records what the runner sends.
type linkDouble struct {
	mu       sync.Mutex
	sent     []*havenv1.NodeMessage
	outcomes []*havenv1.TaskOutcome
	journal  *state.Journal
}

func (l *linkDouble) Send(m *havenv1.NodeMessage) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent = append(l.sent, m)
	return nil
}

func (l *linkDouble) Report(o *havenv1.TaskOutcome) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.outcomes = append(l.outcomes, o)
	return l.journal.Finished(o)
}

func (l *linkDouble) reported(taskID string) *havenv1.TaskOutcome {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, o := range l.outcomes {
		if state.OutcomeTaskID(o) == taskID {
			return o
		}
	}
	return nil
}

// env is one node's runner over one synthetic site, uploading to a
// coordinator double.
type env struct {
	n        *synth.Network
	site     synth.Site
	src      *nodetest.DuckSource
	engine   *policy.Engine
	cat      *catalog.Catalog
	link     *linkDouble
	coord    *nodetest.CoordinatorDouble
	runner   *runner.Runner
	stateDir string
	auditDir string
	logs     *testutil.SyncBuffer
	// network is the node's network type 1 list, synced empty at start.
	network *optout.Receiver
}

type envOptions struct {
	kind        string
	editBundle  func(data map[string]any)
	siteModules []string
	limits      runner.Limits
	// noNetwork leaves the node without a network type 1 list.
	noNetwork bool
	// perturbationSecret, when set, lets the node derive record keys.
	perturbationSecret []byte
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	if o.kind == "" {
		o.kind = string(cdm.KindGP)
	}
	e := &env{n: nodetest.Network(t), logs: &testutil.SyncBuffer{}}
	e.site = nodetest.Site(t, e.n, o.kind)
	e.src = nodetest.NewDuckSource(t, e.n, e.site)
	logger := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	key := nodetest.NewKey(t)
	bundle := nodetest.Bundle(t, key, o.editBundle)
	var err error
	e.engine, err = policy.Load(t.Context(), policy.Config{BundlePath: bundle, PublicKeyPEM: key.Public, SiteModules: o.siteModules, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	e.cat = e.engine.Catalog()

	p := nodetest.NewPKI(t, e.site.ODS)
	e.coord = nodetest.StartCoordinator(t, p.ServerTLS, time.Second)
	tc, err := pki.ClientTLS(p.NodeCert, p.NodeKey, p.CAFile, "")
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(e.coord.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })

	dir := t.TempDir()
	e.stateDir, e.auditDir = filepath.Join(dir, "state"), filepath.Join(dir, "audit")
	journal, _, err := state.OpenJournal(e.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	ledger, err := pseudonym.OpenLedger(e.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ledger.Close() })
	log, err := audit.Open(e.auditDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	ndop, _, err := optout.ReadNDOPFile(e.n.Path(e.n.NationalOptOut.Path))
	if err != nil {
		t.Fatal(err)
	}
	secret, err := pseudonym.NewSecret(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	if e.network, err = optout.OpenReceiver(e.stateDir, nil); err != nil {
		t.Fatal(err)
	}
	if !o.noNetwork {
		if err := e.network.Apply(&havenv1.NetworkOptOuts{Version: &havenv1.NetworkOptOutVersion{Epoch: "test", Seq: 0}}); err != nil {
			t.Fatal(err)
		}
	}
	var ps pseudonym.PerturbationSecret
	if o.perturbationSecret != nil {
		if ps, err = pseudonym.NewPerturbationSecret(o.perturbationSecret); err != nil {
			t.Fatal(err)
		}
	}
	e.link = &linkDouble{journal: journal}
	e.runner, err = runner.New(runner.Config{
		PerturbationSecret: ps,
		ODS:                e.site.ODS, Kind: e.site.Kind,
		Policy: e.engine, Source: e.src, Link: e.link, Journal: journal, Ledger: ledger,
		Uploader: runner.NewFlightUploader(cc), Audit: log, Secret: secret,
		NDOP:         func() *optout.Set { return ndop },
		Network:      e.network.Current,
		Pause:        func() (state.Pause, error) { return state.ReadPause(e.stateDir) },
		Limits:       o.limits,
		RetryBackoff: time.Millisecond,
		Logger:       logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// task builds the task a coordinator would send this site for definition
// id, with the definition's default parameters unless params say
// otherwise.
func (e *env) task(t *testing.T, id, runID string, params map[string]*havenv1.ParameterValue) *havenv1.Task {
	t.Helper()
	return nodetest.Task(t, e.cat, id, runID, e.site.ODS, e.site.Kind, params)
}

// compiled compiles a task the way the node does, binding the whole
// national opt-out list, for the direct answer.
func (e *env) compiled(t *testing.T, task *havenv1.Task) *sqlgen.Program {
	t.Helper()
	return e.compile(t, task, nodetest.NDOP(t, e.n))
}

// compile compiles a task binding ndop as the national opt-out list.
func (e *env) compile(t *testing.T, task *havenv1.Task, ndop []string) *sqlgen.Program {
	t.Helper()
	def, _ := e.cat.Get(task.GetDefinitionId())
	params := map[string]string{}
	for k, v := range task.GetParameters() {
		switch x := v.GetValue().(type) {
		case *havenv1.ParameterValue_DateValue:
			params[k] = x.DateValue
		case *havenv1.ParameterValue_IntValue:
			params[k] = fmt.Sprint(x.IntValue)
		}
	}
	b, err := def.Bind(params)
	if err != nil {
		t.Fatal(err)
	}
	p, err := sqlgen.Compile(b, def.Plan(), e.site.Kind, sqlgen.DuckDB(), sqlgen.Options{SiteODS: e.site.ODS, NDOP: ndop})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func done(t *testing.T, o *havenv1.TaskOutcome) *havenv1.TaskDone {
	t.Helper()
	d := o.GetDone()
	if d == nil {
		t.Fatalf("outcome %v, want done", o)
	}
	return d
}

// cells renders every row of an upload as text, sorted, for comparison.
func uploadRows(t *testing.T, u *nodetest.Upload) []string {
	t.Helper()
	var out []string
	for _, rec := range u.Records {
		for i := range int(rec.NumRows()) {
			var parts []string
			for c := range int(rec.NumCols()) {
				parts = append(parts, cellText(rec.Column(c), i))
			}
			out = append(out, strings.Join(parts, "|"))
		}
	}
	slices.Sort(out)
	return out
}

func cellText(a arrow.Array, i int) string {
	if a.IsNull(i) {
		return "null"
	}
	switch a := a.(type) {
	case *array.FixedSizeBinary:
		return fmt.Sprintf("%x", a.Value(i))
	case *array.Float64:
		return fmt.Sprintf("%.9g", a.Value(i))
	}
	return a.ValueStr(i)
}

func sqlRows(rows [][]any) []string {
	var out []string
	for _, r := range rows {
		var parts []string
		for _, v := range r {
			switch x := v.(type) {
			case nil:
				parts = append(parts, "null")
			case float64:
				parts = append(parts, fmt.Sprintf("%.9g", x))
			default:
				parts = append(parts, fmt.Sprint(x))
			}
		}
		out = append(out, strings.Join(parts, "|"))
	}
	slices.Sort(out)
	return out
}

func (e *env) run(t *testing.T, task *havenv1.Task) *havenv1.TaskOutcome {
	t.Helper()
	e.runner.Submit(task)
	var o *havenv1.TaskOutcome
	nodetest.Eventually(t, "task "+task.GetTaskId()+" reported", func() bool {
		o = e.link.reported(task.GetTaskId())
		return o != nil
	})
	return o
}

func TestAggregateUploadEqualsDirectAnswer(t *testing.T) {
	e := newEnv(t, envOptions{})
	task := e.task(t, "t2dm-prevalence", "run-agg-1", nil)
	d := done(t, e.run(t, task))
	u, ok := e.coord.Upload(task.GetTaskId())
	if !ok {
		t.Fatal("nothing uploaded")
	}
	want := sqlRows(nodetest.Rows(t, e.src.DB, e.compiled(t, task).Result.SQL, e.compiled(t, task).Result.Args...))
	got := uploadRows(t, u)
	if len(want) == 0 {
		t.Fatal("the direct answer is empty; the test proves nothing")
	}
	if !slices.Equal(got, want) {
		t.Fatalf("upload differs from the direct DuckDB answer:\n got %d rows, first %v\nwant %d rows, first %v", len(got), first(got), len(want), first(want))
	}
	if d.GetRows() != u.Rows || d.GetBytes() != u.Bytes || d.GetBatches() != u.Batches {
		t.Errorf("TaskDone says %d rows %d bytes %d batches; the coordinator got %d, %d, %d", d.GetRows(), d.GetBytes(), d.GetBatches(), u.Rows, u.Bytes, u.Batches)
	}
	if !slices.Equal(d.GetFields(), task.GetOutputFields()) {
		t.Errorf("fields %v, want %v", d.GetFields(), task.GetOutputFields())
	}
	if s, _ := u.Schema.Metadata().GetValue("haven.definition.hash"); s != task.GetDefinitionHash() {
		t.Errorf("schema metadata names hash %q", s)
	}
	if d.GetRowsExcludedOptOut() == 0 || d.GetRowsExcludedInvalidNhsNumber() == 0 {
		t.Errorf("exclusions not counted: opt-out %d, invalid %d (the synthetic site has both)", d.GetRowsExcludedOptOut(), d.GetRowsExcludedInvalidNhsNumber())
	}
	// The audit log says what left, and the stages were reported.
	recs, err := audit.Read(e.auditDir, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var events []audit.Event
	statements := len(e.compiled(t, task).Statements()) // result, members, checked_result, invalid_nhs_numbers
	for _, r := range recs {
		events = append(events, r.Event)
		if r.Event == audit.EventDone && (r.Rows != d.GetRows() || r.Bytes != d.GetBytes() || r.Receipt == nil || r.Receipt.Bytes != u.Bytes || len(r.SQL) != statements) {
			t.Errorf("audit done record %+v does not match what was sent", r)
		}
	}
	if !slices.Equal(events, []audit.Event{audit.EventReceived, audit.EventAccepted, audit.EventDone}) {
		t.Errorf("audit events %v", events)
	}
	var stages []havenv1.TaskStage
	for _, m := range e.link.sent {
		if p := m.GetTaskProgress(); p != nil {
			stages = append(stages, p.GetStage())
		}
	}
	if !slices.IsSorted(stages) || len(stages) != 4 {
		t.Errorf("progress stages %v", stages)
	}
	assertNoIdentifiers(t, e)
}

func first(s []string) string {
	if len(s) == 0 {
		return "(none)"
	}
	return s[0]
}

// optOutPseudonyms returns the run pseudonyms of every patient on the
// network's national list and of every type 1 opt-out in the site's own
// opt_out file, read directly from the synthetic files.
func optOutPseudonyms(t *testing.T, e *env, runID string) map[string]bool {
	t.Helper()
	nums := nodetest.NDOP(t, e.n)
	if f, ok := e.site.Files[cdm.TableOptOut]; ok {
		nums = append(nums, nodetest.Strings(t, e.src.DB, "SELECT nhs_number FROM read_parquet(?) WHERE kind = 'type1'", e.n.Path(f.Path))...)
	}
	s, _ := pseudonym.NewSecret(testSecret)
	d, _ := pseudonym.NewDeriver(s, runID)
	out := map[string]bool{}
	for _, n := range nums {
		p := d.Of(n)
		out[fmt.Sprintf("%x", p[:])] = true
	}
	return out
}

func TestLinkageUploadEqualsDirectAnswer(t *testing.T) {
	for _, kind := range []string{"gp", "trust"} {
		t.Run(kind, func(t *testing.T) {
			e := newEnv(t, envOptions{kind: kind})
			runID := "run-link-" + kind
			task := e.task(t, "t2dm-emergency-admissions", runID, nil)
			done(t, e.run(t, task))
			u, ok := e.coord.Upload(task.GetTaskId())
			if !ok {
				t.Fatal("nothing uploaded")
			}
			// The direct answer, with the NHS number replaced by the
			// pseudonym as the node must.
			prog := e.compiled(t, task)
			rows := nodetest.Rows(t, e.src.DB, prog.Result.SQL, prog.Result.Args...)
			s, _ := pseudonym.NewSecret(testSecret)
			d, _ := pseudonym.NewDeriver(s, runID)
			for _, r := range rows {
				p := d.Of(r[0].(string))
				r[0] = fmt.Sprintf("%x", p[:])
			}
			want := sqlRows(rows)
			got := uploadRows(t, u)
			if len(want) == 0 {
				t.Fatal("the direct answer is empty; the test proves nothing")
			}
			if !slices.Equal(got, want) {
				t.Fatalf("upload differs from the direct answer: got %d rows (%s), want %d (%s)", len(got), first(got), len(want), first(want))
			}
			if u.Schema.Field(0).Name != catalog.FieldNamePseudonym || u.Schema.Field(0).Type.ID() != arrow.FIXED_SIZE_BINARY {
				t.Errorf("first field %v, want a pseudonym", u.Schema.Field(0))
			}
			// No opted-out patient is in the output.
			banned := optOutPseudonyms(t, e, runID)
			if len(banned) == 0 {
				t.Fatal("no opt-outs in the synthetic data; the test proves nothing")
			}
			for _, rec := range u.Records {
				col := rec.Column(0).(*array.FixedSizeBinary)
				for i := range col.Len() {
					if banned[fmt.Sprintf("%x", col.Value(i))] {
						t.Fatal("an opted-out patient's pseudonym left the site")
					}
				}
			}
			assertNoIdentifiers(t, e)
		})
	}
}

func TestRefusals(t *testing.T) {
	e := newEnv(t, envOptions{})
	restricted := newEnv(t, envOptions{editBundle: func(data map[string]any) {
		data["restricted_codelists"].(map[string]any)["t2dm"] = map[string]any{"basis": "a test of restricted codelists"}
	}})
	siteRule := filepath.Join(t.TempDir(), "site.rego")
	os.WriteFile(siteRule, []byte(`package haven.site

deny contains {"code": "site_purpose_refused", "message": "this site takes no part in commissioning"} if {
	input.task.purpose == "commissioning"
}
`), 0o644)
	narrowed := newEnv(t, envOptions{siteModules: []string{siteRule}})

	tests := []struct {
		name  string
		env   *env
		edit  func(*havenv1.Task)
		setup func(*testing.T, *env)
		codes []string
	}{
		{"definition not in bundle", e, func(t *havenv1.Task) { t.DefinitionId = "secret-extract" }, nil, []string{runner.CodeDefinitionNotInBundle}},
		{"definition hash differs", e, func(t *havenv1.Task) { t.DefinitionHash = strings.Repeat("0", 64) }, nil, []string{runner.CodeDefinitionMismatch}},
		{"wrong site kind", e, func(t *havenv1.Task) { t.SiteKind = havenv1.SiteKind_SITE_KIND_TRUST }, nil, []string{runner.CodeSiteKindMismatch}},
		{"unknown parameter", e, func(t *havenv1.Task) {
			t.Parameters = map[string]*havenv1.ParameterValue{"colour": {Value: &havenv1.ParameterValue_EnumValue{EnumValue: "blue"}}}
		}, nil, []string{runner.CodeInvalidTask}},
		{"parameter outside the approval", e, func(t *havenv1.Task) {
			t.Parameters = map[string]*havenv1.ParameterValue{"index_date": {Value: &havenv1.ParameterValue_DateValue{DateValue: "2016-01-01"}}}
		}, nil, []string{"parameter_below_min"}},
		{"purpose not approved", e, func(t *havenv1.Task) { t.Purpose = "marketing" }, nil, []string{"purpose_not_permitted"}},
		{"paused", e, nil, func(t *testing.T, e *env) {
			state.WritePause(e.stateDir, state.Pause{Paused: true, Reason: "maintenance", Since: time.Now()})
			t.Cleanup(func() { state.WritePause(e.stateDir, state.Pause{}) })
		}, []string{runner.CodeSitePaused}},
		{"restricted codelist", restricted, nil, nil, []string{"restricted_codelist"}},
		{"site policy narrows", narrowed, nil, nil, []string{"site_purpose_refused"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task := tt.env.task(t, "t2dm-prevalence", fmt.Sprintf("run-refuse-%d", i), nil)
			if tt.edit != nil {
				tt.edit(task)
			}
			if tt.setup != nil {
				tt.setup(t, tt.env)
			}
			queries := tt.env.src.Queries()
			o := tt.env.run(t, task)
			r := o.GetRefused()
			if r == nil {
				t.Fatalf("outcome %v, want refused", o)
			}
			var codes []string
			for _, rs := range r.GetReasons() {
				codes = append(codes, rs.GetCode())
				if rs.GetMessage() == "" {
					t.Errorf("reason %s has no message", rs.GetCode())
				}
			}
			for _, c := range tt.codes {
				if !slices.Contains(codes, c) {
					t.Errorf("reasons %v lack %s", codes, c)
				}
			}
			if tt.env.src.Queries() != queries {
				t.Error("a refused task queried the site")
			}
			if _, ok := tt.env.coord.Upload(task.GetTaskId()); ok {
				t.Error("a refused task uploaded")
			}
		})
	}

	// A run id is good once: the same run again is refused, as is a
	// second task of it.
	t.Run("replayed run", func(t *testing.T) {
		first := e.task(t, "t2dm-prevalence", "run-replay", nil)
		done(t, e.run(t, first))
		again := e.task(t, "t2dm-prevalence", "run-replay", nil)
		again.TaskId = "another-task"
		r := e.run(t, again).GetRefused()
		if r == nil || r.GetReasons()[0].GetCode() != runner.CodeRunReplayed {
			t.Fatalf("replayed run: %v", r)
		}
	})
	assertNoIdentifiers(t, e)
}

// The SQL leaves opted-out patients out; if it did not (a compiler or
// connector bug), the node's own check must stop the task before upload.
func TestOptOutCheckStopsLeak(t *testing.T) {
	for _, tc := range []struct{ name, def, statement string }{
		{"linkage rows", "t2dm-emergency-admissions", "result"},
		{"aggregate members", "t2dm-prevalence", "members"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			// A national objector with no data at this site: the SQL never
			// sees their number (the node binds only the site's part of the
			// list), so only a check against the whole list stops them.
			held := siteNumbers(t, e, e.src.Tables)
			ndop := slices.DeleteFunc(nodetest.NDOP(t, e.n), func(n string) bool { return held[n] })
			task := e.task(t, tc.def, "run-leak-"+tc.def, nil)
			prog := e.compiled(t, task)
			target := prog.Result.SQL
			if tc.statement == "members" {
				// The aggregate's patients come in the last column of the
				// statement that counts them.
				target = prog.CheckedResult.SQL
			}
			leaked := false
			e.src.Rewrite = func(sql string, rows [][]any) [][]any {
				if sql != target || len(rows) == 0 {
					return rows
				}
				leaked = true
				if tc.statement == "members" {
					last := len(rows[0]) - 1
					rows[0][last] = append(slices.Clone(rows[0][last].([]any)), ndop[0])
					return rows
				}
				row := slices.Clone(rows[0])
				row[0] = ndop[0]
				return append(rows, row)
			}
			o := e.run(t, task)
			f := o.GetFailed()
			if !leaked {
				t.Fatal("the rewrite never ran; the test proves nothing")
			}
			if f == nil || !strings.Contains(f.GetMessage(), "1 opted-out patients") {
				t.Fatalf("outcome %v, want failed by the opt-out check", o)
			}
			if _, ok := e.coord.Upload(task.GetTaskId()); ok {
				t.Fatal("the result was uploaded despite the leak")
			}
			assertNoIdentifiers(t, e)
		})
	}
}

// While the connector names the same version of the data and the lists
// stay the same, a task reuses the site's numbers the last one read; a
// new version makes it read them again. Either way it leaves out and
// counts the same patients.
func TestSiteNumbersReusedWhileDataUnchanged(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.src.Version = "v1"
	run := func(id string) (*havenv1.TaskDone, int64) {
		t.Helper()
		before := e.src.Queries()
		d := done(t, e.run(t, e.task(t, "t2dm-prevalence", id, nil)))
		return d, e.src.Queries() - before
	}
	first, _ := run("run-cut-1") // also counts invalid numbers, kept for later tasks
	reused, reusedQueries := run("run-cut-2")
	e.src.Version = "v2"
	fresh, freshQueries := run("run-cut-3")
	if freshQueries != reusedQueries+1 {
		t.Errorf("a task on unchanged data ran %d queries, on changed data %d; want one fewer", reusedQueries, freshQueries)
	}
	for _, d := range []*havenv1.TaskDone{reused, fresh} {
		if d.GetRowsExcludedOptOut() != first.GetRowsExcludedOptOut() || d.GetRows() != first.GetRows() || d.GetRowsExcludedOptOut() == 0 {
			t.Errorf("task %s: %d rows, %d left out for opt-outs; the first task %d and %d", d.GetTaskId(), d.GetRows(), d.GetRowsExcludedOptOut(), first.GetRows(), first.GetRowsExcludedOptOut())
		}
	}
	if logs := e.logs.String(); !strings.Contains(logs, "site numbers reused") {
		t.Error("no task logged that it reused the site's numbers")
	}
}

// siteNumbers returns every NHS number in the given tables of the site,
// read directly from its files.
func siteNumbers(t *testing.T, e *env, tables []string) map[string]bool {
	t.Helper()
	var selects []string
	for _, tbl := range tables {
		selects = append(selects, "SELECT nhs_number FROM "+tbl)
	}
	out := map[string]bool{}
	for _, n := range nodetest.Strings(t, e.src.DB, strings.Join(selects, " UNION ")) {
		out[n] = true
	}
	return out
}

// The node binds into its SQL only the national objectors whose numbers
// are in the tables the task reads, and they are still left out.
func TestNationalOptOutsBoundPerSite(t *testing.T) {
	for _, kind := range []string{"gp", "trust"} {
		t.Run(kind, func(t *testing.T) {
			e := newEnv(t, envOptions{kind: kind})
			runID := "run-ndop-" + kind
			task := e.task(t, "t2dm-emergency-admissions", runID, nil)
			prog := e.compiled(t, task)
			// The argument that carries the list, found by compiling with
			// a list of one known value.
			const marker = "list-marker"
			slot := slices.IndexFunc(e.compile(t, task, []string{marker}).Result.Args, func(a any) bool {
				l, ok := a.([]string)
				return ok && slices.Equal(l, []string{marker})
			})
			if slot < 0 {
				t.Fatal("the result statement binds no opt-out list")
			}
			var bound []string
			e.src.Before = func(_ context.Context, q connector.Query) error {
				if q.SQL == prog.Result.SQL {
					bound, _ = q.Args[slot].Any().([]string)
				}
				return nil
			}
			d := done(t, e.run(t, task))

			national := nodetest.NDOP(t, e.n)
			held := siteNumbers(t, e, append([]string{cdm.TablePatient}, prog.Tables...))
			var want []string
			for _, n := range national {
				if held[n] {
					want = append(want, n)
				}
			}
			slices.Sort(want)
			if len(want) == 0 || len(want) == len(national) {
				t.Fatalf("%d of %d national objectors are at the site; the test proves nothing", len(want), len(national))
			}
			if !slices.Equal(bound, want) {
				t.Fatalf("the node bound %d numbers; want the %d of the %d on the national list that the site holds", len(bound), len(want), len(national))
			}

			// Without the list the site would send some of them; with it
			// none leaves.
			sec, _ := pseudonym.NewSecret(testSecret)
			der, _ := pseudonym.NewDeriver(sec, runID)
			objector := map[string]bool{}
			for _, n := range national {
				p := der.Of(n)
				objector[string(p[:])] = true
			}
			unfiltered := e.compile(t, task, nil)
			would := 0
			for _, r := range nodetest.Rows(t, e.src.DB, unfiltered.Result.SQL, unfiltered.Result.Args...) {
				if p := der.Of(r[0].(string)); objector[string(p[:])] {
					would++
				}
			}
			if would == 0 {
				t.Fatal("no national objector would be sent without the list; the test proves nothing")
			}
			u, _ := e.coord.Upload(task.GetTaskId())
			for _, rec := range u.Records {
				col := rec.Column(0).(*array.FixedSizeBinary)
				for i := range col.Len() {
					if objector[string(col.Value(i))] {
						t.Fatal("a national objector's pseudonym left the site")
					}
				}
			}

			// TaskDone counts the site's patient rows on an opt-out list.
			optedOut := map[string]bool{}
			for _, n := range national {
				optedOut[n] = true
			}
			if slices.Contains(e.src.Tables, cdm.TableOptOut) {
				for _, n := range nodetest.Strings(t, e.src.DB, "SELECT nhs_number FROM opt_out WHERE kind = 'type1'") {
					optedOut[n] = true
				}
			}
			var excluded int64
			for _, n := range nodetest.Strings(t, e.src.DB, "SELECT nhs_number FROM patient") {
				if optedOut[n] {
					excluded++
				}
			}
			if d.GetRowsExcludedOptOut() != excluded {
				t.Errorf("TaskDone says %d patient rows excluded as opted out; the site has %d", d.GetRowsExcludedOptOut(), excluded)
			}
			assertNoIdentifiers(t, e)
		})
	}
}

func TestLimits(t *testing.T) {
	e := newEnv(t, envOptions{})
	t.Run("rows over the task's limit", func(t *testing.T) {
		task := e.task(t, "t2dm-prevalence", "run-limit-rows", nil)
		task.Limits.MaxRows = 3
		f := e.run(t, task).GetFailed()
		if f.GetCode() != havenv1.TaskErrorCode_TASK_ERROR_CODE_LIMIT_EXCEEDED {
			t.Fatalf("failed %v, want LIMIT_EXCEEDED", f)
		}
		if _, ok := e.coord.Upload(task.GetTaskId()); ok {
			t.Fatal("uploaded over the limit")
		}
	})
	t.Run("bytes over the task's limit", func(t *testing.T) {
		task := e.task(t, "t2dm-prevalence", "run-limit-bytes", nil)
		task.Limits.MaxBytes = 512
		if f := e.run(t, task).GetFailed(); f.GetCode() != havenv1.TaskErrorCode_TASK_ERROR_CODE_LIMIT_EXCEEDED {
			t.Fatalf("failed %v, want LIMIT_EXCEEDED", f)
		}
	})
	t.Run("batches cut to size", func(t *testing.T) {
		task := e.task(t, "t2dm-emergency-admissions", "run-limit-batch", nil)
		task.Limits.MaxBatchBytes = 1024
		d := done(t, e.run(t, task))
		u, _ := e.coord.Upload(task.GetTaskId())
		if d.GetBatches() < 3 {
			t.Fatalf("%d batches; the test wants the result cut", d.GetBatches())
		}
		for i, b := range u.BatchBytes {
			if b > 1024 {
				t.Errorf("batch %d has %d bytes, over the limit of 1024", i, b)
			}
		}
	})
}

func TestUploadRetriedWhileCoordinatorUnreachable(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.coord.RefuseUploads(3)
	task := e.task(t, "t2dm-prevalence", "run-retry", nil)
	d := done(t, e.run(t, task))
	u, ok := e.coord.Upload(task.GetTaskId())
	if !ok || u.Rows != d.GetRows() {
		t.Fatalf("upload %v after retries, done %v", u, d)
	}
	if !strings.Contains(e.logs.String(), "will retry") {
		t.Error("retries not logged")
	}
}

func TestResentTaskNotRunTwice(t *testing.T) {
	e := newEnv(t, envOptions{})
	task := e.task(t, "t2dm-prevalence", "run-resent", nil)
	done(t, e.run(t, task))
	queries := e.src.Queries()
	e.runner.Submit(task)
	nodetest.Eventually(t, "outcome reported again", func() bool {
		e.link.mu.Lock()
		defer e.link.mu.Unlock()
		n := 0
		for _, o := range e.link.outcomes {
			if state.OutcomeTaskID(o) == task.GetTaskId() {
				n++
			}
		}
		return n == 2
	})
	if e.src.Queries() != queries {
		t.Error("a task sent again was run again")
	}
}

// assertNoIdentifiers checks that no NHS number or birth date of the
// site's patients, and not the linkage secret, is in the audit log or the
// logs the test produced.
func assertNoIdentifiers(t *testing.T, e *env) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.auditDir, audit.FileName))
	if err != nil {
		t.Fatal(err)
	}
	texts := map[string]string{"audit log": string(b), "log": e.logs.String()}
	nums := nodetest.Strings(t, e.src.DB, "SELECT nhs_number FROM patient")
	births := nodetest.Strings(t, e.src.DB, "SELECT DISTINCT CAST(birth_date AS VARCHAR) FROM patient")
	// Dates the board wrote (approval bounds, defaults) and the tests chose
	// as parameters may coincide with someone's birthday; they are not
	// patient data.
	legit := map[string]bool{"2016-01-01": true}
	for _, f := range []string{"data.json"} {
		b, _ := os.ReadFile(filepath.Join(nodetest.ReferenceBundle(), f))
		for _, d := range dateRE.FindAllString(string(b), -1) {
			legit[d] = true
		}
	}
	for _, d := range e.cat.Definitions() {
		for _, d := range dateRE.FindAllString(string(d.Canonical()), -1) {
			legit[d] = true
		}
	}
	for name, text := range texts {
		if text == "" {
			t.Fatalf("%s is empty; nothing to scan", name)
		}
		if strings.Contains(text, string(testSecret)) || strings.Contains(text, fmt.Sprintf("%x", testSecret)) {
			t.Errorf("the linkage secret is in the %s", name)
		}
		for _, n := range nums {
			if strings.Contains(text, n) {
				t.Fatalf("an NHS number is in the %s", name)
			}
		}
		for _, d := range births {
			if !legit[d] && strings.Contains(text, d) {
				t.Fatalf("a birth date is in the %s", name)
			}
		}
	}
}

var dateRE = regexp.MustCompile(`\d{4}-\d{2}-\d{2}`)

func TestCancelAndDeadline(t *testing.T) {
	e := newEnv(t, envOptions{})
	task := e.task(t, "t2dm-prevalence", "run-cancel", nil)
	// An aggregate's result runs as CheckedResult, its cells with their
	// patients.
	result := e.compiled(t, task).CheckedResult.SQL
	started := make(chan struct{})
	e.src.Before = func(ctx context.Context, q connector.Query) error {
		if q.SQL != result {
			return nil
		}
		close(started)
		<-ctx.Done() // a long query, stopped only by cancellation
		return ctx.Err()
	}
	e.runner.Submit(task)
	<-started
	if n := e.runner.Running(); n != 1 {
		t.Errorf("Running = %d while the query runs", n)
	}
	e.runner.Cancel(task.GetTaskId(), "run cancelled by requester")
	var o *havenv1.TaskOutcome
	nodetest.Eventually(t, "cancelled task reported", func() bool { o = e.link.reported(task.GetTaskId()); return o != nil })
	if o.GetFailed().GetCode() != havenv1.TaskErrorCode_TASK_ERROR_CODE_CANCELLED {
		t.Fatalf("outcome %v, want CANCELLED", o)
	}
	if _, ok := e.coord.Upload(task.GetTaskId()); ok {
		t.Error("a cancelled task uploaded")
	}
	e.src.Before = nil

	late := e.task(t, "t2dm-prevalence", "run-late", nil)
	late.Deadline = timestamppb.New(time.Now().Add(-time.Second))
	queries := e.src.Queries()
	if o := e.run(t, late); o.GetFailed().GetCode() != havenv1.TaskErrorCode_TASK_ERROR_CODE_DEADLINE_EXCEEDED {
		t.Fatalf("late task: %v, want DEADLINE_EXCEEDED", o)
	}
	if e.src.Queries() != queries {
		t.Error("a task past its deadline queried the site")
	}

	// Stopping the runner abandons what runs and refuses what comes.
	stuck := e.task(t, "t2dm-prevalence", "run-stuck", nil)
	held := make(chan struct{})
	e.src.Before = func(ctx context.Context, q connector.Query) error {
		if q.SQL != result {
			return nil
		}
		close(held)
		<-ctx.Done()
		return ctx.Err()
	}
	e.runner.Submit(stuck)
	<-held
	if err := e.runner.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if o := e.link.reported(stuck.GetTaskId()); o.GetFailed().GetCode() != havenv1.TaskErrorCode_TASK_ERROR_CODE_ABANDONED {
		t.Errorf("task running at shutdown: %v, want ABANDONED", o)
	}
	after := e.task(t, "t2dm-prevalence", "run-after-stop", nil)
	e.runner.Submit(after)
	if o := e.link.reported(after.GetTaskId()); o.GetFailed().GetCode() != havenv1.TaskErrorCode_TASK_ERROR_CODE_ABANDONED {
		t.Errorf("task after shutdown: %v, want ABANDONED", o)
	}
}

// WarmUp counts the rows with invalid NHS numbers ahead of any task: a
// task after it runs one query fewer and reports the same count as a task
// that counted for itself.
func TestWarmUpCountsInvalidNumbersAhead(t *testing.T) {
	cold := newEnv(t, envOptions{})
	before := cold.src.Queries()
	coldDone := done(t, cold.run(t, cold.task(t, "t2dm-prevalence", "run-warm-1", nil)))
	coldQueries := cold.src.Queries() - before

	warm := newEnv(t, envOptions{})
	if err := warm.runner.WarmUp(t.Context()); err != nil {
		t.Fatal(err)
	}
	before = warm.src.Queries()
	warmDone := done(t, warm.run(t, warm.task(t, "t2dm-prevalence", "run-warm-2", nil)))
	warmQueries := warm.src.Queries() - before

	if warmQueries != coldQueries-1 {
		t.Errorf("after WarmUp the task ran %d queries, without it %d; want one fewer", warmQueries, coldQueries)
	}
	if got, want := warmDone.GetRowsExcludedInvalidNhsNumber(), coldDone.GetRowsExcludedInvalidNhsNumber(); got != want || want == 0 {
		t.Errorf("invalid NHS numbers excluded: %d after WarmUp, %d without; want equal and non-zero", got, want)
	}
}

// A practice whose data hold systolic readings of +Inf and 4000 mmHg, on
// the index date for every patient with events, answers
// bp-control-hypertension exactly as it would without them: the rows are
// left out, the task is done and what is uploaded is the direct answer
// over the clean data.
func TestBadValuesLeftOut(t *testing.T) {
	e := newEnv(t, envOptions{})
	task := e.task(t, "bp-control-hypertension", "run-bad-values", nil)
	prog := e.compiled(t, task)
	want := sqlRows(nodetest.Rows(t, e.src.DB, prog.Result.SQL, prog.Result.Args...))
	if len(want) == 0 {
		t.Fatal("the direct answer is empty; the test proves nothing")
	}
	// Test-only DDL: the path is the test's own.
	path := strings.ReplaceAll(e.n.Path(e.site.Files[cdm.TableClinicalEvent].Path), "'", "''")
	src := "read_parquet('" + path + "')"
	if _, err := e.src.DB.Exec("CREATE OR REPLACE VIEW clinical_event AS SELECT * FROM " + src +
		" UNION ALL SELECT nhs_number, DATE '2024-04-01', '163030003', v FROM (SELECT DISTINCT nhs_number FROM " + src +
		") AS p, (VALUES (CAST('Infinity' AS DOUBLE)), (4000.0)) AS b(v)"); err != nil {
		t.Fatal(err)
	}
	if bad := nodetest.Strings(t, e.src.DB, "SELECT CAST(count(*) AS VARCHAR) FROM clinical_event WHERE isinf(numeric_value) OR numeric_value = 4000"); len(bad) != 1 || bad[0] == "0" {
		t.Fatalf("bad rows added: %v", bad)
	}
	d := done(t, e.run(t, task))
	u, ok := e.coord.Upload(task.GetTaskId())
	if !ok {
		t.Fatal("nothing uploaded")
	}
	if got := uploadRows(t, u); !slices.Equal(got, want) {
		t.Fatalf("upload differs from the answer over the clean data:\n got %v\nwant %v", got, want)
	}
	if d.GetRows() != u.Rows {
		t.Errorf("TaskDone says %d rows; the coordinator got %d", d.GetRows(), u.Rows)
	}
}
