package dispatch

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/havenhealth/haven/coordinator/disclosure"
	"github.com/havenhealth/haven/policy"
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
			c, err := NewLinkage(def.Plan(), def, b, 0)
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
				Table:   policy.TableShape{Rows: 1, Measures: discloseMeasures(table.Measures)},
				Coverage: policy.Coverage{Sites: policy.Answered{Expected: 1, Answered: 1},
					Population: policy.Answered{Expected: 100, Answered: 100}, MissingTrusts: []policy.MissingSite{}},
			})
			if err != nil || !dec.Allow {
				t.Fatalf("Disclose: allow=%v reasons=%v err=%v", dec.Allow, dec.Reasons, err)
			}
			if unchecked := applyDominance(table.Measures, dec.DominanceMeasures); len(unchecked) > 0 {
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
	unchecked := applyDominance(ms, []string{"admissions", "beds", "mean_cost"})
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
	if _, err := disclosureThresholds(dec, 0); err == nil || !strings.Contains(err.Error(), "disclosure/ptable-8-5.csv") {
		t.Fatalf("perturbation without record keys: %v, want a refusal naming the table", err)
	}
	r := dec.Perturbation.KeyRange()
	if _, err := disclosureThresholds(dec, 2*r); err == nil || !strings.Contains(err.Error(), "key range") {
		t.Fatalf("perturbation with keys of another range: %v, want a refusal", err)
	}
	th, err := disclosureThresholds(dec, r)
	if err != nil || th.Perturbation == nil || th.Perturbation.KeyRange() != r || !th.AttributeDisclosure {
		t.Fatalf("perturbation with keys in [0, %d): %+v, %v", r, th, err)
	}

	if err := os.WriteFile(data, off, 0o644); err != nil {
		t.Fatal(err)
	}
	th, err = disclosureThresholds(decide(), 0)
	if err != nil || !th.AttributeDisclosure || th.Perturbation != nil {
		t.Fatalf("perturbation switched off: %+v, %v", th, err)
	}
}
