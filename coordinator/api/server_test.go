package api

import (
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/havenhealth/haven/coordinator/authn"
	"github.com/havenhealth/haven/policy"

	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

func TestRawParameters(t *testing.T) {
	cat, err := catalog.Load(os.DirFS(filepath.Join("..", "..", "policy", "bundle")))
	if err != nil {
		t.Fatal(err)
	}
	def, _ := cat.Get("statins-chd")
	date := func(s string) *havenv1.ParameterValue {
		return &havenv1.ParameterValue{Value: &havenv1.ParameterValue_DateValue{DateValue: s}}
	}
	num := func(n int64) *havenv1.ParameterValue {
		return &havenv1.ParameterValue{Value: &havenv1.ParameterValue_IntValue{IntValue: n}}
	}
	got, err := rawParameters(def, map[string]*havenv1.ParameterValue{"index_date": date("2024-04-01"), "lookback_days": num(90)})
	if err != nil || got["index_date"] != "2024-04-01" || got["lookback_days"] != "90" {
		t.Errorf("good values: %v %v", got, err)
	}
	// Undeclared names pass through for Bind to report with a suggestion.
	if got, err := rawParameters(def, map[string]*havenv1.ParameterValue{"lookback": num(90)}); err != nil || got["lookback"] != "90" {
		t.Errorf("undeclared name: %v %v", got, err)
	}
	_, err = rawParameters(def, map[string]*havenv1.ParameterValue{"index_date": num(2024), "lookback_days": date("2024-01-01"), "x": {}})
	for _, want := range []string{"index_date is a date, not a int", "lookback_days is a int, not a date", "parameters.x: no value given"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("mistyped values: %v, want %q", err, want)
		}
	}
}

func TestSummary(t *testing.T) {
	cat, err := catalog.Load(os.DirFS(filepath.Join("..", "..", "policy", "bundle")))
	if err != nil {
		t.Fatal(err)
	}
	def, _ := cat.Get("t2dm-emergency-admissions")
	approved := summary(def, map[string]approval{def.ID: {Hash: def.Hash(), Approver: "board", ApprovedOn: "2026-01-14",
		Expires: "2028-03-31T23:59:59Z", Purposes: []string{"research"}}})
	if approved.GetApproval().GetExpiresAt().AsTime().Year() != 2028 || approved.GetMode() != havenv1.PlanMode_PLAN_MODE_LINKAGE ||
		len(approved.GetParameters()) != 2 || approved.GetParameters()[0].GetDefaultValue().GetIntValue() != 365 {
		t.Errorf("summary %v", approved)
	}
	stale := summary(def, map[string]approval{def.ID: {Hash: strings.Repeat("0", 64),
		Parameters: map[string]map[string]any{"index_date": {"step": "month_start"}}}})
	if stale.GetApproval() != nil || stale.GetParameters()[1].GetApprovedGrid() != "" {
		t.Errorf("an approval of another hash was shown: %v", stale)
	}
	gridded := summary(def, map[string]approval{def.ID: {Hash: def.Hash(), Parameters: map[string]map[string]any{
		"index_date": {"min": "2018-01-01", "step": "month_start"}, "followup_days": {"values": []any{30.0, 365.0}}}}})
	grids := map[string]string{}
	for _, p := range gridded.GetParameters() {
		grids[p.GetName()] = p.GetApprovedGrid()
	}
	if grids["index_date"] != "month starts" || grids["followup_days"] != "one of 30, 365" {
		t.Errorf("approved grids %v", grids)
	}
}

// overlay is an fs.FS with one file replaced.
type overlay struct {
	fs.FS
	name string
	data []byte
}

func (o overlay) Open(name string) (fs.File, error) {
	if name == o.name {
		return fstest.MapFS{name: {Data: o.data}}.Open(name)
	}
	return o.FS.Open(name)
}

// bundleGov is the reference bundle as Governance, for what the API reads
// of it without deciding.
type bundleGov struct {
	cat   *catalog.Catalog
	files fs.FS
}

func (g bundleGov) Catalog() *catalog.Catalog { return g.cat }
func (g bundleGov) Files() fs.FS              { return g.files }
func (g bundleGov) Revision() string          { return "test" }
func (g bundleGov) Submit(context.Context, policy.SubmitInput) (policy.Decision, error) {
	return policy.Decision{}, nil
}
func (g bundleGov) LedgerLookback() time.Duration { return 0 }

// The catalogue tells each caller the purposes their roles may state in a
// run of a definition, as haven/submit's rules read the bundle: a role the
// approval allows, and purposes both the approval and the role allow.
func TestCallerPurposes(t *testing.T) {
	files := os.DirFS(filepath.Join("..", "..", "policy", "bundle"))
	cat, err := catalog.Load(files)
	if err != nil {
		t.Fatal(err)
	}
	// The approval names the definition's current hash, whatever the
	// reference data.json holds.
	b, err := fs.ReadFile(files, "data.json")
	if err != nil {
		t.Fatal(err)
	}
	var data map[string]any
	if err := json.Unmarshal(b, &data); err != nil {
		t.Fatal(err)
	}
	def, _ := cat.Get("statins-chd")
	data["approvals"].(map[string]any)["statins-chd"].(map[string]any)["hash"] = def.Hash()
	if b, err = json.Marshal(data); err != nil {
		t.Fatal(err)
	}
	s := New(bundleGov{cat: cat, files: overlay{FS: files, name: "data.json", data: b}}, nil, nil, nil)
	for _, tc := range []struct {
		roles []string
		want  []string
	}{
		{roles: []string{"analyst"}, want: []string{"clinical_audit", "service_evaluation", "population_health_management"}},
		{roles: []string{"public_health"}, want: []string{"service_evaluation", "population_health_management"}},
		{roles: []string{"researcher"}, want: nil}, // not a role the approval allows
		{roles: []string{"public_health", "commissioner"}, want: []string{"clinical_audit", "service_evaluation", "population_health_management"}},
	} {
		ctx := authn.NewContext(context.Background(), authn.Principal{Kind: authn.KindUser, ID: "ana", Org: "QHM", Roles: tc.roles})
		resp, err := s.GetDefinition(ctx, &havenv1.GetDefinitionRequest{Id: "statins-chd"})
		if err != nil {
			t.Fatal(err)
		}
		d := resp.GetDefinition()
		if !slices.Equal(d.GetCallerPurposes(), tc.want) {
			t.Errorf("roles %v: caller purposes %v, want %v", tc.roles, d.GetCallerPurposes(), tc.want)
		}
		if !slices.Equal(d.GetApproval().GetAllowedRoles(), []string{"analyst", "commissioner", "public_health"}) {
			t.Errorf("allowed roles %v", d.GetApproval().GetAllowedRoles())
		}
	}
}
