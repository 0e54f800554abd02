package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/havenhealth/haven/internal/testutil"
)

func validSubmit() SubmitInput {
	return SubmitInput{
		Now:        testNow,
		Requester:  Requester{ID: "analyst-17", Org: "QWE", Roles: []string{"analyst"}},
		Definition: DefinitionRef{ID: fixtureID, Hash: fixtureHash, Codelists: []string{"t2dm"}},
		Parameters: map[string]any{"index_date": "2024-04-01", "followup_days": 365},
		Purpose:    "commissioning",
		Counts:     &SubmitCounts{RunsLast24h: 2},
		History:    &LedgerHistory{Since: testNow.AddDate(-1, 0, 0), Entries: []LedgerEntry{}},
	}
}

func validParticipate() ParticipateInput {
	return ParticipateInput{
		Now: testNow,
		Task: Task{
			Definition:   DefinitionRef{ID: fixtureID, Hash: fixtureHash},
			Purpose:      "commissioning",
			Mode:         ModeAggregate,
			RequesterOrg: "QWE",
			Codelists:    []string{"t2dm"},
			Parameters:   map[string]any{"index_date": "2024-04-01", "followup_days": 365},
		},
		Site: Site{ODS: "A81001", Kind: "gp", BundleRevision: "2026.1"},
	}
}

func validDisclose() DiscloseInput {
	return DiscloseInput{
		Purpose: "commissioning",
		Table: TableShape{Rows: 16, Measures: []Measure{
			{Name: "patients", Kind: "count"}, {Name: "admissions", Kind: "sum", Dominance: true},
			{Name: "mean_age", Kind: "mean"},
		}},
		Coverage: Coverage{
			Sites:         Answered{Expected: 10, Answered: 10},
			Population:    Answered{Expected: 120000, Answered: 120000},
			Trusts:        Answered{Expected: 2, Answered: 2},
			Activity:      Answered{Expected: 40000, Answered: 40000},
			MissingTrusts: []MissingSite{},
		},
	}
}

func codes(d Decision) []string {
	var c []string
	for _, r := range d.Reasons {
		c = append(c, r.Code)
	}
	return c
}

// The decisions through the Go API, on the reference bundle's Rego; the
// Rego tests cover every rule, these cover the wiring of input and output.
func TestDecisions(t *testing.T) {
	k := newKey(t)
	e := load(t, signedReference(t, k), k)
	ctx := context.Background()

	t.Run("submit", func(t *testing.T) {
		tests := []struct {
			name  string
			edit  func(*SubmitInput)
			codes []string
		}{
			{"allowed", func(*SubmitInput) {}, nil},
			{"unknown definition", func(in *SubmitInput) { in.Definition.ID = "nope" }, []string{"definition_not_approved"}},
			{"edited definition", func(in *SubmitInput) { in.Definition.Hash = strings.Repeat("2", 64) }, []string{"definition_hash_mismatch"}},
			{"expired", func(in *SubmitInput) { in.Now = time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC) }, []string{"approval_expired"}},
			{"role", func(in *SubmitInput) { in.Requester.Roles = []string{"researcher"} }, []string{"role_not_permitted"}},
			{"purpose", func(in *SubmitInput) { in.Purpose = "public_health" }, []string{"purpose_not_permitted"}},
			{"parameter", func(in *SubmitInput) { in.Parameters["followup_days"] = 5000 }, []string{"parameter_above_max"}},
			{"restricted codelist", func(in *SubmitInput) { in.Definition.Codelists = []string{"ivf"} }, []string{"restricted_codelist"}},
			{"rate", func(in *SubmitInput) { in.Counts = nil }, []string{"rate_limit_unknown"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				in := validSubmit()
				tt.edit(&in)
				d, err := e.Submit(ctx, in)
				if err != nil {
					t.Fatal(err)
				}
				if d.Allow != (tt.codes == nil) || strings.Join(codes(d), ",") != strings.Join(tt.codes, ",") {
					t.Errorf("allow=%v reasons=%v, want reasons %v", d.Allow, codes(d), tt.codes)
				}
				if d.ID == "" || d.Revision != e.Revision() {
					t.Errorf("decision id %q revision %q; want an id and revision %q", d.ID, d.Revision, e.Revision())
				}
			})
		}
	})

	t.Run("participate", func(t *testing.T) {
		tests := []struct {
			name  string
			edit  func(*ParticipateInput)
			codes []string
		}{
			{"allowed", func(*ParticipateInput) {}, nil},
			{"paused", func(in *ParticipateInput) { in.Site.Paused = true }, []string{"site_paused"}},
			{"trust in aggregate mode", func(in *ParticipateInput) { in.Site.Kind = "trust" }, []string{"mode_not_allowed"}},
			{"restricted codelist", func(in *ParticipateInput) { in.Task.Codelists = []string{"sexual-health"} }, []string{"restricted_codelist"}},
			{"not in bundle", func(in *ParticipateInput) { in.Task.Definition.ID = "nope" }, []string{"definition_not_in_bundle"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				in := validParticipate()
				tt.edit(&in)
				d, err := e.Participate(ctx, in)
				if err != nil {
					t.Fatal(err)
				}
				if d.Allow != (tt.codes == nil) || strings.Join(codes(d), ",") != strings.Join(tt.codes, ",") {
					t.Errorf("allow=%v reasons=%v, want reasons %v", d.Allow, codes(d), tt.codes)
				}
			})
		}
	})

	t.Run("disclose", func(t *testing.T) {
		d, err := e.Disclose(ctx, validDisclose())
		if err != nil {
			t.Fatal(err)
		}
		want := Thresholds{MinCellCount: 8, RoundingBase: 5, Dominance: Dominance{N: 1, K: 0.8}, AttributeDisclosure: true}
		// The reference bundle perturbs counts through its p-table.
		if !d.Allow || d.Thresholds != want || d.Partial || d.Perturbation == nil || d.PerturbationTable != "disclosure/ptable-8-5.csv" {
			t.Errorf("got allow=%v thresholds=%+v partial=%v p-table %q, want allow with %+v, complete, disclosure/ptable-8-5.csv",
				d.Allow, d.Thresholds, d.Partial, d.PerturbationTable, want)
		}
		if strings.Join(d.DominanceMeasures, ",") != "admissions" {
			t.Errorf("dominance measures %v, want [admissions]", d.DominanceMeasures)
		}

		// A mean gets the dominance rule when its definition asks for it.
		asks := validDisclose()
		asks.Table.Measures[2].Dominance = true
		if d, _ := e.Disclose(ctx, asks); strings.Join(d.DominanceMeasures, ",") != "admissions,mean_age" {
			t.Errorf("with a mean that asks: dominance measures %v, want [admissions mean_age]", d.DominanceMeasures)
		}

		research := validDisclose()
		research.Purpose = "research"
		if d, _ := e.Disclose(ctx, research); d.Thresholds.MinCellCount != 10 {
			t.Errorf("research min cell count %d, want 10", d.Thresholds.MinCellCount)
		}

		partial := validDisclose()
		partial.Coverage.Sites.Answered = 7
		partial.Coverage.Population.Answered = 90000
		d, err = e.Disclose(ctx, partial)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allow || strings.Join(codes(d.Decision), ",") != "coverage_insufficient" || d.Thresholds != (Thresholds{}) {
			t.Errorf("75%% coverage: allow=%v reasons=%v thresholds=%+v; want denied for coverage with no thresholds", d.Allow, codes(d.Decision), d.Thresholds)
		}
	})

	t.Run("eval by name", func(t *testing.T) {
		in := validSubmit()
		in.Ledger, in.History = &SubmitLedger{Since: in.History.Since, Near: []LedgerEntry{}}, nil
		body, _ := json.Marshal(in)
		d, raw, err := e.Eval(ctx, "submit", body)
		if err != nil || !d.Allow || raw["allow"] != true {
			t.Errorf("Eval submit: allow=%v raw=%v err=%v", d.Allow, raw, err)
		}
		if _, _, err := e.Eval(ctx, "haven/everything", body); err == nil {
			t.Error("Eval accepted an unknown decision name")
		}
	})
}

func TestZeroNowDenies(t *testing.T) {
	k := newKey(t)
	e := load(t, signedReference(t, k), k)
	in := validSubmit()
	in.Now = time.Time{}
	d, err := e.Submit(context.Background(), in)
	if err == nil || d.Allow || codes(d)[0] != CodePolicyError {
		t.Errorf("zero now: allow=%v reasons=%v err=%v; want a denial and an error", d.Allow, codes(d), err)
	}
	p := validParticipate()
	p.Now = time.Time{}
	if d, err := e.Participate(context.Background(), p); err == nil || d.Allow {
		t.Errorf("participate with zero now: allow=%v err=%v", d.Allow, err)
	}
}

// Policy that cannot decide denies: each case is a small bundle in
// testdata named for what is wrong with it.
func TestFailClosed(t *testing.T) {
	k := newKey(t)
	tests := []struct {
		bundle  string
		code    string
		wantErr error
		timeout time.Duration
	}{
		{"bundle_bad_undefined_decision", CodePolicyUndefined, ErrUndefined, 0},
		{"bundle_bad_runtime_error", CodePolicyError, nil, 0},
		{"bundle_bad_conflict", CodePolicyError, nil, 0},
		{"bundle_bad_slow_decision", CodePolicyTimeout, ErrTimeout, 20 * time.Millisecond},
		{"bundle_bad_shape", CodePolicyError, nil, 0},
		{"bundle_bad_allow_with_reasons", CodePolicyError, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.bundle, func(t *testing.T) {
			dir := copyDir(t, filepath.Join("testdata", tt.bundle))
			sign(t, dir, k)
			var logs testutil.SyncBuffer
			e := load(t, dir, k, func(c *Config) {
				c.Timeout = tt.timeout
				c.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
			})
			in := validSubmit()
			in.Purpose = "not-a-number"
			d, err := e.Submit(context.Background(), in)
			if err == nil {
				t.Fatal("no error from a decision that cannot be made")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v, want %v", err, tt.wantErr)
			}
			if d.Allow || len(d.Reasons) != 1 || d.Reasons[0].Code != tt.code {
				t.Errorf("allow=%v reasons=%v, want denied with %s", d.Allow, codes(d), tt.code)
			}
			if !strings.Contains(logs.String(), `"allow":false`) || !strings.Contains(logs.String(), `"failure"`) {
				t.Errorf("decision log does not record the failed denial:\n%s", logs.String())
			}
		})
	}
}

func TestBundleWithoutDecisionIsRefused(t *testing.T) {
	k := newKey(t)
	for _, name := range []string{"bundle_bad_no_decision", "bundle_bad_compile"} {
		dir := copyDir(t, filepath.Join("testdata", name))
		sign(t, dir, k)
		_, err := Load(context.Background(), Config{BundlePath: dir, PublicKeyPEM: k.pub, Logger: discardLogger()})
		if err == nil {
			t.Errorf("%s: Load succeeded", name)
		}
	}
}

func TestReloadKeepsActiveBundleOnFailure(t *testing.T) {
	k := newKey(t)
	ctx := context.Background()
	dir := signedReference(t, k)
	e := load(t, dir, k)
	first := e.Revision()

	unsigned := copyDir(t, referenceBundle)
	tampered := signedReference(t, k)
	flipLastLetter(t, filepath.Join(tampered, "haven/participate/participate.rego"))
	broken := copyDir(t, filepath.Join("testdata", "bundle_bad_compile"))
	sign(t, broken, k)
	for _, bad := range []string{unsigned, tampered, broken, filepath.Join(t.TempDir(), "missing")} {
		if err := e.Reload(ctx, bad); err == nil {
			t.Fatalf("Reload(%s) succeeded", bad)
		}
		if e.Revision() != first {
			t.Fatalf("revision %q after a refused reload, want %q", e.Revision(), first)
		}
		if d, err := e.Submit(ctx, validSubmit()); err != nil || !d.Allow {
			t.Fatalf("after a refused reload: allow=%v err=%v", d.Allow, err)
		}
	}

	next := signedReference(t, k)
	setRevision(t, next, "next")
	sign(t, next, k)
	if err := e.Reload(ctx, next); err != nil {
		t.Fatal(err)
	}
	if e.Revision() != "next" {
		t.Errorf("revision %q after reload, want next", e.Revision())
	}
}

func TestWatchSwapsInNewBundle(t *testing.T) {
	k := newKey(t)
	dir := signedReference(t, k)
	var logs testutil.SyncBuffer
	e := load(t, dir, k, func(c *Config) { c.Logger = slog.New(slog.NewJSONHandler(&logs, nil)) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.Watch(ctx, time.Millisecond) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Watch returned %v", err)
		}
	}()

	// A change that is not signed is refused; the old bundle decides.
	setRevision(t, dir, "unsigned-edit")
	testutil.Eventually(t, "the unsigned edit is refused", func() bool { return strings.Contains(logs.String(), "policy bundle refused") })
	if d, _ := e.Submit(ctx, validSubmit()); !d.Allow || d.Revision == "unsigned-edit" {
		t.Fatalf("after a refused change: allow=%v revision=%q", d.Allow, d.Revision)
	}

	// The board signs it: the watcher activates it.
	sign(t, dir, k)
	testutil.Eventually(t, "the signed bundle is active", func() bool { return e.Revision() == "unsigned-edit" })
}

func setRevision(t testing.TB, dir, rev string) {
	t.Helper()
	editJSON(t, filepath.Join(dir, ".manifest"), func(m map[string]any) { m["revision"] = rev })
}

func TestSiteNarrowing(t *testing.T) {
	k := newKey(t)
	dir := signedReference(t, k)
	e := load(t, dir, k, func(c *Config) { c.SiteModules = []string{"examples/site"} })
	ctx := context.Background()

	if d, err := e.Participate(ctx, validParticipate()); err != nil || !d.Allow {
		t.Fatalf("commissioning at the example site: allow=%v reasons=%v err=%v", d.Allow, codes(d), err)
	}

	// The bundle approves research for the fixture; the site refuses it.
	research := validParticipate()
	research.Task.Purpose = "research"
	d, err := e.Participate(ctx, research)
	if err != nil {
		t.Fatal(err)
	}
	if d.Allow || len(d.Reasons) != 1 || d.Reasons[0].Code != "site_purpose_refused" || d.Reasons[0].Source != "site" {
		t.Errorf("research at the example site: allow=%v reasons=%+v, want refused by the site", d.Allow, d.Reasons)
	}

	maintenance := validParticipate()
	maintenance.Now = time.Date(2026, 1, 11, 2, 0, 0, 0, time.UTC)
	if d, _ := e.Participate(ctx, maintenance); d.Allow || codes(d)[0] != "site_maintenance" {
		t.Errorf("in the maintenance window: allow=%v reasons=%v", d.Allow, codes(d))
	}

	// Without the site module the bundle alone allows research.
	plain := load(t, dir, k)
	if d, _ := plain.Participate(ctx, research); !d.Allow {
		t.Errorf("research without site policy: reasons %v", codes(d))
	}
}

func TestSiteModulesMayOnlyNarrow(t *testing.T) {
	k := newKey(t)
	dir := signedReference(t, k)
	tests := []struct{ module, want string }{
		{"testdata/site_bad_package", "outside data.haven.site"},
		{"testdata/site_bad_http", "http.send"},
		{"testdata/no_such_site_module.rego", "no such file"},
	}
	for _, tt := range tests {
		_, err := Load(context.Background(), Config{BundlePath: dir, PublicKeyPEM: k.pub, SiteModules: []string{tt.module}, Logger: discardLogger()})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("site module %s: got %v, want an error mentioning %q", tt.module, err, tt.want)
		}
	}
}

// The decision log records what was decided and a digest of the input,
// never the input itself.
func TestDecisionLogHoldsNoInput(t *testing.T) {
	k := newKey(t)
	var logs testutil.SyncBuffer
	e := load(t, signedReference(t, k), k, func(c *Config) { c.Logger = slog.New(slog.NewJSONHandler(&logs, nil)) })
	in := validSubmit()
	in.Requester.ID = "requester-zq81"
	in.Parameters["index_date"] = "2019-07-23"
	in.Parameters["followup_days"] = 4567 // out of range, so a reason is logged
	d, err := e.Submit(context.Background(), in)
	if err != nil || d.Allow {
		t.Fatalf("allow=%v err=%v, want a denial", d.Allow, err)
	}
	// The digest is of what policy saw: the ledger as the engine read it.
	in.Ledger, in.History = &SubmitLedger{Since: in.History.Since, Near: []LedgerEntry{}}, nil
	body, _ := json.Marshal(in)
	sum := sha256.Sum256(body)

	var rec map[string]any
	for line := range strings.Lines(logs.String()) {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if r["msg"] == "policy decision" {
			rec = r
		}
		for _, secret := range []string{"requester-zq81", "2019-07-23", "4567", "QWE"} {
			if strings.Contains(line, secret) {
				t.Errorf("log line contains input value %q: %s", secret, line)
			}
		}
	}
	if rec == nil {
		t.Fatalf("no decision record in\n%s", logs.String())
	}
	want := map[string]any{
		"decision":        "haven/submit",
		"decision_id":     d.ID,
		"allow":           false,
		"bundle_revision": e.Revision(),
		"input_sha256":    hex.EncodeToString(sum[:]),
	}
	for key, v := range want {
		if rec[key] != v {
			t.Errorf("log %s = %v, want %v", key, rec[key], v)
		}
	}
	if rs, _ := rec["reasons"].([]any); len(rs) != 1 || rs[0] != "parameter_above_max" {
		t.Errorf("log reasons = %v, want [parameter_above_max]", rec["reasons"])
	}
}

func TestFilesAreTheVerifiedBytes(t *testing.T) {
	k := newKey(t)
	dir := signedReference(t, k)
	e := load(t, dir, k)
	want, err := os.ReadFile(filepath.Join(dir, "data.json"))
	if err != nil {
		t.Fatal(err)
	}
	// Change the file on disk after loading: the engine still holds what
	// it verified.
	write(t, filepath.Join(dir, "data.json"), "{}")
	got, err := fs.ReadFile(e.Files(), "data.json")
	if err != nil || string(got) != string(want) {
		t.Errorf("Files() data.json = %q (err %v), want the verified bytes", got, err)
	}
}

func TestMemFS(t *testing.T) {
	f := files{
		".manifest":                        []byte("{}"),
		"data.json":                        []byte(`{"a": 1}`),
		"haven/submit/submit.rego":         []byte("package haven.submit"),
		"haven/submit/x_test.rego":         []byte("package haven.submit"),
		"definitions/t2dm/definition.yaml": []byte("id: t2dm"),
		"codelists/nested/t2dm.csv":        []byte("code,term\n"),
	}
	if err := fstest.TestFS(f.asFS(), f.names()...); err != nil {
		t.Fatal(err)
	}
}

// The typed inputs build their Rego value directly; it must be what their
// JSON decodes to, or policy would see something other than what the
// decision log's digest covers.
func TestInputValueMatchesJSON(t *testing.T) {
	submit := validSubmit()
	bare := SubmitInput{Now: testNow}
	floats := validSubmit()
	floats.Parameters = map[string]any{"x": 365.0, "y": 0.25, "z": int64(-3), "when": testNow, "list": []string{"a"}, "none": nil, "flag": true}
	participate := validParticipate()
	zeroParticipate := ParticipateInput{}
	disclose := validDisclose()
	zeroDisclose := DiscloseInput{}
	missing := validDisclose()
	missing.Coverage.Trusts.Answered = 1
	missing.Coverage.MissingTrusts = []MissingSite{{ODS: "RA1", State: "paused", Activity: 15000}}
	ledger := validSubmit()
	ledger.Ledger = &SubmitLedger{Since: testNow.AddDate(-1, 0, 0), Runs: LedgerRuns{Requester: 1, Organisation: 2},
		Near: []LedgerEntry{{RunID: "run-1", Requester: LedgerRequester{ID: "a", Org: "QWE"},
			Parameters: map[string]any{"index_date": "2024-04-01", "followup_days": int64(365)}, SubmittedAt: testNow.Add(-time.Hour), Released: true}}}
	nilLedger := validSubmit()
	nilLedger.Ledger = &SubmitLedger{Since: testNow.AddDate(-1, 0, 0)}
	for i, in := range []interface{ astValue() (ast.Value, error) }{submit, bare, floats, participate, zeroParticipate, disclose, zeroDisclose, ledger, nilLedger, missing} {
		got, err := in.astValue()
		if err != nil {
			t.Fatal(err)
		}
		body, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		want, err := ast.ValueFromReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if got.Compare(want) != 0 {
			t.Errorf("input %d (%T):\n got %v\nwant %v", i, in, got, want)
		}
	}
}
