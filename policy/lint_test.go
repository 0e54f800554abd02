package policy

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/havenhealth/haven/policy/catalog"
)

// Editing a definition (or a codelist it uses) without the board
// re-approving it fails `make test`: each approval must name the current
// hash. To re-approve, run `haven policy hash` on the definition and put the
// hash in data.json.
func TestReferenceApprovalsMatchDefinitions(t *testing.T) {
	if err := Lint(context.Background(), referenceBundle); err != nil {
		t.Fatalf("the reference bundle does not lint clean; if a definition changed, re-approve it with `haven policy hash`:\n%v", err)
	}
	k := newKey(t)
	dir := copyDir(t, referenceBundle)
	sign(t, dir, k)
	e := load(t, dir, k)
	if n := len(e.Catalog().Definitions()); n == 0 {
		t.Fatal("the reference bundle has no definitions")
	}
	for _, d := range e.Catalog().Definitions() {
		t.Run(d.ID, func(t *testing.T) {
			approval := approvalOf(t, dir, d.ID)
			if approval["hash"] != d.Hash() {
				t.Errorf("approval names %v, definition hashes to %s", approval["hash"], d.Hash())
			}
		})
	}
}

func approvalOf(t *testing.T, dir, id string) map[string]any {
	t.Helper()
	var approval map[string]any
	editJSON(t, filepath.Join(dir, "data.json"), func(data map[string]any) {
		approval, _ = data["approvals"].(map[string]any)[id].(map[string]any)
	})
	if approval == nil {
		t.Fatalf("no approval for %s", id)
	}
	return approval
}

// The coordinator's path end to end: bind a commissioner's parameters,
// give them to policy in its form, and submit with the catalogue's hash.
func TestSubmitWithBoundDefinition(t *testing.T) {
	k := newKey(t)
	dir := copyDir(t, referenceBundle)
	sign(t, dir, k)
	e := load(t, dir, k)
	d, ok := e.Catalog().Get("t2dm-emergency-admissions")
	if !ok {
		t.Fatal("t2dm-emergency-admissions is not in the catalogue")
	}
	b, err := d.Bind(map[string]string{"followup_days": "180"})
	if err != nil {
		t.Fatal(err)
	}
	params := ParametersOf(b)
	if params["followup_days"] != int64(180) || params["index_date"] != "2023-04-01" {
		t.Fatalf("ParametersOf = %v", params)
	}
	in := SubmitInput{
		Now:        testNow,
		Requester:  Requester{ID: "a1", Org: "QWE", Roles: []string{"commissioner"}},
		Definition: DefinitionRef{ID: d.ID, Hash: d.Hash(), Codelists: d.CodelistNames()},
		Parameters: params,
		Purpose:    "commissioning",
		Counts:     &SubmitCounts{},
		History:    &LedgerHistory{Since: testNow.AddDate(-1, 0, 0), Entries: []LedgerEntry{}},
	}
	dec, err := e.Submit(context.Background(), in)
	if err != nil || !dec.Allow {
		t.Fatalf("allow=%v reasons=%v err=%v", dec.Allow, dec.Reasons, err)
	}

	// The wire form (all strings) is refused: an int range needs a number.
	in.Parameters = map[string]any{}
	for k, v := range b.Params() {
		in.Parameters[k] = v
	}
	if dec, _ := e.Submit(context.Background(), in); dec.Allow {
		t.Error("string parameters passed a numeric range")
	}

	// The reference bundle's release-ledger rules, through Haven's engine
	// (strict built-ins): an off-grid value, a repeat of a run, a budget
	// used up, and a missing ledger are each refused with their reason.
	in.Parameters = params
	earlier := func(id, user, org string, p map[string]any, ago time.Duration) LedgerEntry {
		return LedgerEntry{RunID: id, Requester: LedgerRequester{ID: user, Org: org}, Parameters: p, SubmittedAt: testNow.Add(-ago), Released: true}
	}
	other := func(date string) map[string]any {
		return map[string]any{"index_date": date, "followup_days": int64(180)}
	}
	offGrid := maps.Clone(params)
	offGrid["index_date"] = "2023-04-02"
	budget := []LedgerEntry{}
	for i := range 20 {
		budget = append(budget, earlier(fmt.Sprintf("run-%d", i), "a1", "QWE", other(fmt.Sprintf("%d-01-01", 2000+i)), time.Duration(i)*time.Hour))
	}
	for _, tc := range []struct {
		name    string
		params  map[string]any
		ledger  *LedgerHistory
		code    string
		message string
	}{
		{"off grid", offGrid, in.History, "parameter_off_grid", "index_date 2023-04-02 is not a month start; nearest allowed: 2023-04-01, 2023-05-01"},
		{"near duplicate", params, &LedgerHistory{Since: in.History.Since, Entries: []LedgerEntry{earlier("run-FIRST", "b2", "XYZ", params, 24*time.Hour)}},
			"near_duplicate", "run run-FIRST (released, submitted 2026-02-28)"},
		{"budget", params, &LedgerHistory{Since: in.History.Since, Entries: budget}, "budget_exceeded", "the requester has had 20 runs"},
		{"no ledger", params, nil, "ledger_unknown", "release ledger"},
	} {
		in := in
		in.Parameters, in.History = tc.params, tc.ledger
		dec, err := e.Submit(context.Background(), in)
		if err != nil || dec.Allow || len(dec.Reasons) != 1 || dec.Reasons[0].Code != tc.code || !strings.Contains(dec.Reasons[0].Message, tc.message) {
			t.Errorf("%s: allow=%v reasons=%v err=%v, want only %s naming %q", tc.name, dec.Allow, dec.Reasons, err, tc.code, tc.message)
		}
	}
}

func TestEditedDefinitionLosesItsApproval(t *testing.T) {
	k := newKey(t)
	dir := copyDir(t, referenceBundle)
	name := filepath.Join(dir, "definitions", "t2dm-emergency-admissions", "definition.yaml")
	replaceOnce("version: 3", "version: 4")(t, name)

	err := Lint(context.Background(), dir)
	if err == nil || !strings.Contains(err.Error(), "approvals.t2dm-emergency-admissions.hash") {
		t.Fatalf("Lint: got %v, want a problem with the approval's hash", err)
	}

	// Signed anyway, the bundle loads, but policy refuses the new version.
	sign(t, dir, k)
	e := load(t, dir, k)
	d, _ := e.Catalog().Get("t2dm-emergency-admissions")
	b, err := d.Bind(nil)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := e.Submit(context.Background(), SubmitInput{
		Now:        testNow,
		Requester:  Requester{ID: "a1", Org: "QWE", Roles: []string{"commissioner"}},
		Definition: DefinitionRef{ID: d.ID, Hash: d.Hash()},
		Parameters: ParametersOf(b),
		Purpose:    "commissioning",
		Counts:     &SubmitCounts{},
		History:    &LedgerHistory{Since: testNow.AddDate(-1, 0, 0), Entries: []LedgerEntry{}},
	})
	if err != nil || dec.Allow || codes(dec)[0] != "definition_hash_mismatch" {
		t.Errorf("edited definition: allow=%v reasons=%v err=%v", dec.Allow, codes(dec), err)
	}
}

func TestLintReportsEveryProblemWithItsPosition(t *testing.T) {
	dir := copyDir(t, referenceBundle)
	write(t, filepath.Join(dir, "haven/extra.rego"), "package haven.extra\n\nx := if\n")
	appendTo(t, filepath.Join(dir, "definitions", "t2dm-prevalence", "definition.yaml"), "colour: blue\n")
	editJSON(t, filepath.Join(dir, "data.json"), func(data map[string]any) {
		approvals := data["approvals"].(map[string]any)
		approvals["no-such-definition"] = map[string]any{}
		a := approvals["statins-chd"].(map[string]any)
		a["expires"] = "next year"
		a["roles"] = []any{"analyst", "overlord"}
		delete(a["parameters"].(map[string]any), "lookback_days")
	})

	err := Lint(context.Background(), dir)
	var list catalog.ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("Lint: got %v, want an ErrorList", err)
	}
	got := err.Error()
	for _, want := range []string{
		"haven/extra.rego:3:6: unexpected if keyword",
		"definitions/t2dm-prevalence/definition.yaml:",
		`unknown field "colour"`,
		// With a definition broken, the catalogue does not load; the
		// approvals are still checked as far as they can be.
		"data.json: approvals.statins-chd.expires:",
		"data.json: approvals.statins-chd.roles: overlord is not one of",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("lint output lacks %q:\n%s", want, got)
		}
	}

	// With the definition mended, the checks against it run too.
	copyFile(t, filepath.Join(referenceBundle, "definitions", "t2dm-prevalence", "definition.yaml"), filepath.Join(dir, "definitions", "t2dm-prevalence", "definition.yaml"))
	err = Lint(context.Background(), dir)
	got = ""
	if err != nil {
		got = err.Error()
	}
	for _, want := range []string{
		"data.json: approvals.no-such-definition: no definition",
		"data.json: approvals.statins-chd.parameters.lookback_days: missing",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("lint output lacks %q:\n%s", want, got)
		}
	}
}

// Policy applies the dominance rule to every sum, so a sum that asks the
// sites for no largest contributions could never be checked.
func TestLintReportsSumWithoutDominance(t *testing.T) {
	dir := copyDir(t, referenceBundle)
	name := filepath.Join(dir, "definitions", "statins-chd", "definition.yaml")
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(b), "sum: statin_issues}", "sum: statin_issues, dominance: false}", 1)
	if edited == string(b) {
		t.Fatal("statins-chd has no statin_issues sum to edit")
	}
	write(t, name, edited)
	err = Lint(context.Background(), dir)
	got := ""
	if err != nil {
		got = err.Error()
	}
	want := "measures.statin_issues: policy applies the dominance rule to every sum measure"
	if !strings.Contains(got, want) {
		t.Errorf("lint output lacks %q:\n%s", want, got)
	}
	if strings.Contains(got, "measures.prevalence") || strings.Contains(got, "measures.mean_sbp") {
		t.Errorf("lint asks for the dominance rule on a mean that does not ask for it:\n%s", got)
	}
}

// For every reference definition, the measures policy puts under the
// dominance rule are its sums, and each has the largest contributions the
// rule needs: the coordinator never has to release a measure policy wanted
// checked without checking it.
func TestReferenceDominanceMeasuresAreChecked(t *testing.T) {
	k := newKey(t)
	dir := copyDir(t, referenceBundle)
	sign(t, dir, k)
	e := load(t, dir, k)
	for _, d := range e.Catalog().Definitions() {
		t.Run(d.ID, func(t *testing.T) {
			in := validDisclose()
			in.Table.Measures = nil
			var sums []string
			for _, m := range d.Measures {
				in.Table.Measures = append(in.Table.Measures, Measure{Name: m.Name, Kind: string(m.Agg), Dominance: m.Dominance})
				if m.Agg == catalog.AggSum {
					sums = append(sums, m.Name)
				}
			}
			dec, err := e.Disclose(context.Background(), in)
			if err != nil || !dec.Allow {
				t.Fatalf("Disclose: allow=%v reasons=%v err=%v", dec.Allow, codes(dec.Decision), err)
			}
			slices.Sort(sums)
			if !slices.Equal(dec.DominanceMeasures, sums) {
				t.Errorf("dominance measures %v; want the sums %v", dec.DominanceMeasures, sums)
			}
			for _, name := range dec.DominanceMeasures {
				i := slices.IndexFunc(d.Measures, func(m *catalog.Measure) bool { return m.Name == name })
				if i < 0 || !d.Measures[i].Dominance {
					t.Errorf("policy wants the dominance rule on %s, whose plan carries no largest contributions", name)
				}
			}
		})
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestApprovalRangesMatchParameterTypes(t *testing.T) {
	dir := copyDir(t, referenceBundle)
	editJSON(t, filepath.Join(dir, "data.json"), func(data map[string]any) {
		p := data["approvals"].(map[string]any)["t2dm-emergency-admissions"].(map[string]any)["parameters"].(map[string]any)
		p["followup_days"] = map[string]any{"min": "30", "max": 730.5}
		p["index_date"] = map[string]any{"min": 20180101, "values": []any{"2020-01-01"}}
		p["colour"] = map[string]any{}
	})
	err := Lint(context.Background(), dir)
	got := ""
	if err != nil {
		got = err.Error()
	}
	for _, want := range []string{
		"parameters.followup_days.min: 30 is not a whole number",
		"parameters.followup_days.max: 730.5 is not a whole number",
		"parameters.index_date.min: 20180101 is not a date",
		"parameters.index_date.values: a date parameter takes min, max and a grid (step)",
		"parameters.colour: definition t2dm-emergency-admissions has no parameter colour",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("lint output lacks %q:\n%s", want, got)
		}
	}
}

func TestApprovalGridsAreChecked(t *testing.T) {
	dir := copyDir(t, referenceBundle)
	editJSON(t, filepath.Join(dir, "data.json"), func(data map[string]any) {
		approvals := data["approvals"].(map[string]any)
		p := approvals["t2dm-emergency-admissions"].(map[string]any)["parameters"].(map[string]any)
		p["followup_days"] = map[string]any{"min": 30, "max": 730, "step": -7}
		p["index_date"] = map[string]any{"min": "2018-01-01", "step": "fortnight"}
		prev := approvals["t2dm-prevalence"].(map[string]any)["parameters"].(map[string]any)
		prev["min_age"] = map[string]any{"min": 0, "max": 120, "values": []any{0, 18, "forty"}}
		bp := approvals["bp-control-hypertension"].(map[string]any)["parameters"].(map[string]any)
		bp["target_sbp"] = map[string]any{"min": 120, "max": 160, "step": 15}
		statins := approvals["statins-chd"].(map[string]any)["parameters"].(map[string]any)
		statins["lookback_days"] = map[string]any{"min": 28, "max": 730, "values": []any{}}
	})
	err := Lint(context.Background(), dir)
	got := ""
	if err != nil {
		got = err.Error()
	}
	for _, want := range []string{
		"t2dm-emergency-admissions.parameters.followup_days.step: -7 is not a positive whole number",
		"t2dm-emergency-admissions.parameters.index_date.step: fortnight is not a date grid; use one of month_end, month_start, quarter_start",
		"t2dm-prevalence.parameters.min_age.values: forty is not a whole number",
		// The definition's default min_age, 17, is off this grid, and the
		// default target_sbp, 140, is not 120 + a multiple of 15.
		"t2dm-prevalence.parameters.min_age.step: the definition's default 17 is not on the approved grid (one of 0, 18)",
		"bp-control-hypertension.parameters.target_sbp.step: the definition's default 140 is not on the approved grid (every 15 from 120)",
		"statins-chd.parameters.lookback_days.values: must list at least one whole number",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("lint output lacks %q:\n%s", want, got)
		}
	}
}

// A grid Allows exactly what haven/submit lets through.
func TestGridAllows(t *testing.T) {
	date := func(s string) catalog.Value {
		d, err := catalog.ParseDate(s)
		if err != nil {
			t.Fatal(err)
		}
		return catalog.Value{Type: catalog.ParamDate, Date: d}
	}
	num := func(n int64) catalog.Value { return catalog.Value{Type: catalog.ParamInt, Int: n} }
	for _, tc := range []struct {
		grid Grid
		v    catalog.Value
		want bool
		text string
	}{
		{Grid{DateStep: "month_start"}, date("2025-06-01"), true, "month starts"},
		{Grid{DateStep: "month_start"}, date("2025-06-02"), false, "month starts"},
		{Grid{DateStep: "quarter_start"}, date("2025-07-01"), true, "quarter starts (1 January, April, July, October)"},
		{Grid{DateStep: "quarter_start"}, date("2025-08-01"), false, "quarter starts (1 January, April, July, October)"},
		{Grid{DateStep: "month_end"}, date("2024-02-29"), true, "month ends"},
		{Grid{DateStep: "month_end"}, date("2023-02-28"), true, "month ends"},
		{Grid{DateStep: "month_end"}, date("2024-02-28"), false, "month ends"},
		{Grid{DateStep: "week"}, date("2024-02-28"), false, `"week" (a grid Haven does not know)`},
		{Grid{DateStep: "month_start"}, num(1), false, "month starts"},
		{Grid{Every: 10, From: 120}, num(140), true, "every 10 from 120"},
		{Grid{Every: 10, From: 120}, num(145), false, "every 10 from 120"},
		{Grid{Every: 10}, date("2024-02-01"), false, "every 10 from 0"},
		{Grid{Values: []int64{0, 16, 17, 18}}, num(17), true, "one of 0, 16, 17, 18"},
		{Grid{Values: []int64{0, 16, 17, 18}}, num(19), false, "one of 0, 16, 17, 18"},
		{Grid{}, num(19), true, "any value in range"},
	} {
		if got := tc.grid.Allows(tc.v); got != tc.want {
			t.Errorf("%v.Allows(%s) = %v, want %v", tc.grid, tc.v, got, tc.want)
		}
		if got := tc.grid.String(); got != tc.text {
			t.Errorf("%#v.String() = %q, want %q", tc.grid, got, tc.text)
		}
	}
}

// The grids the Go side knows are the ones the bundle's haven.lib knows.
func TestDateGridsMatchRego(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(referenceBundle, "haven", "lib", "lib.rego"))
	if err != nil {
		t.Fatal(err)
	}
	for name := range DateGrids {
		if !strings.Contains(string(src), `on_grid(v, "`+name+`", _)`) {
			t.Errorf("haven.lib has no on_grid rule for %q", name)
		}
	}
	if n := strings.Count(string(src), `on_grid(v, "`); n != len(DateGrids) {
		t.Errorf("haven.lib has %d date grids, DateGrids %d", n, len(DateGrids))
	}
}

func TestDefinitionFileHashIsTheCatalogues(t *testing.T) {
	k := newKey(t)
	dir := copyDir(t, referenceBundle)
	sign(t, dir, k)
	e := load(t, dir, k)
	for _, want := range e.Catalog().Definitions() {
		got, err := DefinitionFile(filepath.Join(referenceBundle, filepath.FromSlash(catalog.DefinitionPath(want.ID))))
		if err != nil {
			t.Fatal(err)
		}
		if got.Hash() != want.Hash() {
			t.Errorf("%s: DefinitionFile hash %s, catalogue %s", want.ID, got.Hash(), want.Hash())
		}
	}
}

func appendTo(t *testing.T, name, text string) {
	t.Helper()
	f, err := os.OpenFile(name, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}
