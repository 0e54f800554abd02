package finish

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/havenhealth/haven/coordinator/disclosure"
	"github.com/havenhealth/haven/coordinator/linkage"
	"github.com/havenhealth/haven/policy"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/release"
)

// For every reference definition, the measures haven/disclose puts under
// the dominance rule carry the largest contributions the rule needs, so a
// release records no unchecked measure: the rule applies to every sum, and
// means (bp-control-hypertension's mean_sbp, t2dm-prevalence's prevalence)
// are left to the few-contributors rule.
func TestReferenceReleasesCheckEveryDominanceMeasure(t *testing.T) {
	ctx := context.Background()
	e, err := policy.Load(ctx, policy.Config{BundlePath: "../../policy/bundle", InsecureSkipVerify: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defs := e.Catalog().Definitions()
	if len(defs) == 0 {
		t.Fatal("the reference bundle has no definitions")
	}
	for _, def := range defs {
		t.Run(def.ID, func(t *testing.T) {
			b, err := def.Bind(nil)
			if err != nil {
				t.Fatal(err)
			}
			// The run's table as the coordinator gets it, here without cells.
			c, err := linkage.New(def.Plan(), def, b, linkage.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			table, _, err := c.Table(ctx)
			if err != nil {
				t.Fatal(err)
			}
			dec, err := e.Disclose(ctx, policy.DiscloseInput{
				Purpose: "commissioning",
				Table:   policy.TableShape{Rows: 1, Measures: DiscloseMeasures(table.Measures)},
				Coverage: policy.Coverage{Sites: policy.Answered{Expected: 1, Answered: 1},
					Population: policy.Answered{Expected: 100, Answered: 100}, MissingTrusts: []policy.MissingSite{}},
			})
			if err != nil || !dec.Allow {
				t.Fatalf("Disclose: allow=%v reasons=%v err=%v", dec.Allow, dec.Reasons, err)
			}
			if unchecked := ApplyDominance(table.Measures, dec.DominanceMeasures); len(unchecked) > 0 {
				t.Errorf("policy asks for the dominance rule on %v, which the plan gives no contributions for", unchecked)
			}
			for _, m := range table.Measures {
				if want := m.Kind == disclosure.KindSum; m.Dominance != want {
					t.Errorf("measure %s (%s): dominance rule %v, want %v", m.Name, m.Kind, m.Dominance, want)
				}
			}
		})
	}
}

func TestApplyDominance(t *testing.T) {
	ms := []disclosure.Measure{
		{Name: "patients", Kind: disclosure.KindCount},
		{Name: "admissions", Kind: disclosure.KindSum, Dominance: true},
		{Name: "beds", Kind: disclosure.KindSum},
		{Name: "mean_cost", Kind: disclosure.KindMean, Dominance: true},
		{Name: "mean_age", Kind: disclosure.KindMean, Dominance: true},
	}
	unchecked := ApplyDominance(ms, []string{"admissions", "beds", "mean_cost"})
	if !slices.Equal(unchecked, []string{"beds"}) {
		t.Errorf("unchecked %v, want [beds]", unchecked)
	}
	var checked []string
	for _, m := range ms {
		if m.Dominance {
			checked = append(checked, m.Name)
		}
	}
	if !slices.Equal(checked, []string{"admissions", "mean_cost"}) {
		t.Errorf("dominance rule on %v, want [admissions mean_cost]", checked)
	}
}

// TestPerturbationWithoutKeysFailsClosed: a real haven/disclose decision
// from the reference bundle, which perturbs counts, is refused, naming the
// table, when the sites sent no record keys or keys of another range, and
// applies the table when they sent keys of its range; with perturbation
// switched off the decision passes the attribute-disclosure setting
// through and needs no keys.
func TestPerturbationWithoutKeysFailsClosed(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("../../policy/bundle")); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data.json")
	b, err := os.ReadFile(data)
	if err != nil {
		t.Fatal(err)
	}
	off := bytes.Replace(b, []byte(`"perturbation": {"enabled": true,`), []byte(`"perturbation": {"enabled": false,`), 1)
	if bytes.Equal(off, b) {
		t.Fatal("the reference data.json no longer has perturbation switched on as expected")
	}
	in := policy.DiscloseInput{
		Purpose: "commissioning",
		Table:   policy.TableShape{Rows: 1, Measures: []policy.Measure{{Name: "patients", Kind: "count"}}},
		Coverage: policy.Coverage{Sites: policy.Answered{Expected: 1, Answered: 1},
			Population: policy.Answered{Expected: 100, Answered: 100}, MissingTrusts: []policy.MissingSite{}},
	}
	decide := func() policy.DisclosureDecision {
		e, err := policy.Load(ctx, policy.Config{BundlePath: dir, InsecureSkipVerify: true,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		dec, err := e.Disclose(ctx, in)
		if err != nil || !dec.Allow {
			t.Fatalf("Disclose: allow=%v reasons=%v err=%v", dec.Allow, dec.Reasons, err)
		}
		return dec
	}
	dec := decide()
	if _, err := Thresholds(dec, 0); err == nil || !strings.Contains(err.Error(), "disclosure/ptable-8-5.csv") {
		t.Fatalf("perturbation without record keys: %v, want a refusal naming the table", err)
	}
	r := dec.Perturbation.KeyRange()
	if _, err := Thresholds(dec, 2*r); err == nil || !strings.Contains(err.Error(), "key range") {
		t.Fatalf("perturbation with keys of another range: %v, want a refusal", err)
	}
	th, err := Thresholds(dec, r)
	if err != nil || th.Perturbation == nil || th.Perturbation.KeyRange() != r || !th.AttributeDisclosure {
		t.Fatalf("perturbation with keys in [0, %d): %+v, %v", r, th, err)
	}

	if err := os.WriteFile(data, off, 0o644); err != nil {
		t.Fatal(err)
	}
	th, err = Thresholds(decide(), 0)
	if err != nil || !th.AttributeDisclosure || th.Perturbation != nil {
		t.Fatalf("perturbation switched off: %+v, %v", th, err)
	}
}

// Finish, with the reference bundle's policy (perturbation on, record keys
// of its range): a run with full coverage is released as a signed table
// that says what it answers; one that lost most of its population is
// refused by haven/disclose, with the decision for the audit.
func TestFinish(t *testing.T) {
	ctx := context.Background()
	e, err := policy.Load(ctx, policy.Config{BundlePath: "../../policy/bundle", InsecureSkipVerify: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	pub, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	s := &Step{Policy: e, SigningKey: key, Now: func() time.Time { return at }, Log: slog.New(slog.DiscardHandler)}
	table := func() disclosure.Table {
		return disclosure.Table{Dims: []string{"sex"}, Measures: []disclosure.Measure{{Name: "patients", Kind: disclosure.KindCount, GroupTotal: true}},
			Cells: []disclosure.Cell{
				{Key: []string{"F"}, Values: []disclosure.Input{{Count: 120, Key: 17}}},
				{Key: []string{"M"}, Values: []disclosure.Input{{Count: 3, Key: 200}}},
			}}
	}
	dec, err := e.Disclose(ctx, policy.DiscloseInput{Purpose: "commissioning",
		Table: policy.TableShape{Rows: 2, Measures: []policy.Measure{{Name: "patients", Kind: "count"}}},
		Coverage: policy.Coverage{Sites: policy.Answered{Expected: 1, Answered: 1},
			Population: policy.Answered{Expected: 100, Answered: 100}, MissingTrusts: []policy.MissingSite{}}})
	if err != nil || dec.Perturbation == nil {
		t.Fatalf("the reference bundle no longer perturbs counts: %v", err)
	}
	run := &havenv1.Run{Id: "run-1", DefinitionId: "t2dm-prevalence", DefinitionVersion: 2, Purpose: "commissioning",
		BundleRevision: "rev-1", SubmittedAt: timestamppb.New(at.Add(-time.Minute))}
	full := &havenv1.Coverage{SitesExpected: 2, SitesAnswered: 2, PopulationExpected: 20000, PopulationAnswered: 20000}
	r := Run{Run: run, Params: map[string]string{"index_date": "2025-06-01"}, KeyRange: dec.Perturbation.KeyRange(),
		Coverage: full, MissingTrusts: []policy.MissingSite{}, NodeVersions: map[string]string{"G80001": "v1"}}

	out := s.Finish(ctx, table(), linkage.Stats{}, r)
	if out.State != havenv1.RunState_RUN_STATE_RELEASED || out.Decision == nil || !out.Decision.Allow {
		t.Fatalf("full coverage: %s %q, decision %+v", out.State, out.Err, out.Decision)
	}
	tab, err := release.Verify(out.Table, pub)
	if err != nil {
		t.Fatal(err)
	}
	m := tab.Meta
	if m.RunID != "run-1" || m.Parameters["index_date"] != "2025-06-01" || m.NodeVersions["G80001"] != "v1" ||
		!m.ReleasedAt.Equal(at) || !m.Perturbed() || m.PopulationAnswered != 20000 {
		t.Errorf("provenance %+v", m)
	}
	if out.Summary.Rows != 3 || out.Summary.PerturbationTable == "" || out.Audit["decision_id"] != out.Decision.ID {
		t.Errorf("summary %+v, audit %v", out.Summary, out.Audit)
	}

	r.Coverage = &havenv1.Coverage{SitesExpected: 2, SitesAnswered: 1, PopulationExpected: 20000, PopulationAnswered: 5000}
	out = s.Finish(ctx, table(), linkage.Stats{}, r)
	if out.State != havenv1.RunState_RUN_STATE_REFUSED || out.Decision == nil || out.Decision.Allow || out.Table != nil {
		t.Fatalf("a quarter of the population: %s, decision %+v", out.State, out.Decision)
	}

	// Keys of another range: the release fails closed, after policy.
	r.Coverage, r.KeyRange = full, 0
	out = s.Finish(ctx, table(), linkage.Stats{}, r)
	if out.State != havenv1.RunState_RUN_STATE_FAILED || !strings.Contains(out.Err, "no record keys") || out.Decision == nil {
		t.Fatalf("no record keys: %s %q", out.State, out.Err)
	}
}
