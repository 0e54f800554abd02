// Package finish is the last step of a run: the linked table is put to
// haven/disclose, disclosure control applies the thresholds policy set
// (with cell-key perturbation where the bundle asks for it), and the
// released table is encoded with its provenance and signed. It decides
// nothing about the run's lifecycle: the dispatcher stores what it
// produces, audits it and moves the run on.
package finish

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/havenhealth/haven/coordinator/disclosure"
	"github.com/havenhealth/haven/coordinator/linkage"
	"github.com/havenhealth/haven/policy"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/release"
)

// Discloser evaluates haven/disclose (policy.Engine).
type Discloser interface {
	Disclose(ctx context.Context, in policy.DiscloseInput) (policy.DisclosureDecision, error)
}

// Step finishes runs.
type Step struct {
	Policy Discloser
	// SigningKey, if set, signs every released table (release.Sign).
	SigningKey ed25519.PrivateKey
	Now        func() time.Time
	Log        *slog.Logger
}

// Run is what the step needs to know of a run besides its table.
type Run struct {
	// Run is the run as it stands: its id, definition, purpose, bundle
	// revision and submission time go into the provenance.
	Run *havenv1.Run
	// Params are the run's parameters, defaults included, as text.
	Params map[string]string
	// KeyRange is R of the record keys the sites sent, 0 for none.
	KeyRange int
	// Coverage is what answered.
	Coverage *havenv1.Coverage
	// MissingTrusts are the trusts that did not answer, with their
	// activity, for haven/disclose.
	MissingTrusts []policy.MissingSite
	// NodeVersions are the software versions of the sites that answered.
	NodeVersions map[string]string
}

// Outcome is what finishing a run produced: RELEASED with a table,
// REFUSED by haven/disclose, or FAILED with an error.
type Outcome struct {
	State havenv1.RunState
	// Decision is haven/disclose's, when policy was asked; DecisionErr
	// is what went wrong evaluating it (the decision then denies).
	Decision    *policy.DisclosureDecision
	DecisionErr error
	// Err says why the run failed.
	Err string
	// Table is the encoded (and signed) released table; Summary counts
	// its values; Audit is the release's audit entry.
	Table   []byte
	Summary *havenv1.ReleaseSummary
	Audit   map[string]any
}

// Finish puts table, linked from the run's uploads with stats, through
// policy and disclosure control and encodes the release.
func (s *Step) Finish(ctx context.Context, table disclosure.Table, stats linkage.Stats, r Run) Outcome {
	failed := func(format string, args ...any) Outcome {
		return Outcome{State: havenv1.RunState_RUN_STATE_FAILED, Err: fmt.Sprintf(format, args...)}
	}
	cov := r.Coverage
	in := policy.DiscloseInput{
		Purpose: r.Run.GetPurpose(),
		Table:   policy.TableShape{Rows: len(table.Cells), Measures: DiscloseMeasures(table.Measures)},
		Coverage: policy.Coverage{
			Sites:         policy.Answered{Expected: int64(cov.GetSitesExpected()), Answered: int64(cov.GetSitesAnswered())},
			Population:    policy.Answered{Expected: cov.GetPopulationExpected(), Answered: cov.GetPopulationAnswered()},
			Trusts:        policy.Answered{Expected: int64(cov.GetTrustsExpected()), Answered: int64(cov.GetTrustsAnswered())},
			Activity:      policy.Answered{Expected: cov.GetActivityExpected(), Answered: cov.GetActivityAnswered()},
			MissingTrusts: r.MissingTrusts,
		},
	}
	dec, err := s.Policy.Disclose(ctx, in)
	if !dec.Allow {
		return Outcome{State: havenv1.RunState_RUN_STATE_REFUSED, Decision: &dec, DecisionErr: err}
	}
	decided := func(o Outcome) Outcome {
		o.Decision, o.DecisionErr = &dec, err
		return o
	}
	th, err := Thresholds(dec, r.KeyRange)
	if err != nil {
		return decided(failed("%v", err))
	}
	unchecked := ApplyDominance(table.Measures, dec.DominanceMeasures)
	if len(unchecked) > 0 {
		s.Log.LogAttrs(ctx, slog.LevelWarn, "policy asks for the dominance rule on measures the plan gives no contributions for",
			slog.String("run", r.Run.GetId()), slog.Any("measures", unchecked))
	}
	rel, err := disclosure.Apply(ctx, table, th)
	if err != nil {
		return decided(failed("disclosure control: %v", err))
	}
	run := r.Run
	b, err := rel.Encode(release.Meta{
		RunID: run.GetId(), DefinitionID: run.GetDefinitionId(), DefinitionVersion: run.GetDefinitionVersion(),
		DefinitionHash: run.GetDefinitionHash(), Purpose: run.GetPurpose(), BundleRevision: run.GetBundleRevision(),
		ReleasedAt: s.Now(), MinCellCount: int64(th.MinCount), RoundingBase: int64(th.RoundingBase),
		SitesExpected: int64(cov.GetSitesExpected()), SitesAnswered: int64(cov.GetSitesAnswered()),
		PopulationExpected: cov.GetPopulationExpected(), PopulationAnswered: cov.GetPopulationAnswered(),
		TrustsExpected: int64(cov.GetTrustsExpected()), TrustsAnswered: int64(cov.GetTrustsAnswered()),
		ActivityExpected: cov.GetActivityExpected(), ActivityAnswered: cov.GetActivityAnswered(),
		Parameters: r.Params, SubmittedAt: submittedAt(run),
		DominanceN: int64(th.Dominance.N), DominanceK: th.Dominance.K, NodeVersions: r.NodeVersions,
		PerturbationTable: perturbationTable(dec, th), PerturbationKeyRange: perturbationKeyRange(th),
	})
	if err != nil {
		return decided(failed("encode the released table: %v", err))
	}
	if s.SigningKey != nil {
		if b, err = release.Sign(b, s.SigningKey); err != nil {
			return decided(failed("sign the released table: %v", err))
		}
	}
	summary := summarise(rel, th)
	summary.PerturbationTable = perturbationTable(dec, th)
	withheld := map[string]int{}
	for c, n := range rel.WithheldCounts() {
		withheld[string(c)] = n
	}
	return decided(Outcome{State: havenv1.RunState_RUN_STATE_RELEASED, Table: b, Summary: summary, Audit: map[string]any{
		"decision_id": dec.ID, "bundle_revision": dec.Revision, "partial": dec.Partial,
		"min_cell_count": th.MinCount, "rounding_base": th.RoundingBase,
		"perturbation_table": perturbationTable(dec, th),
		"dominance":          map[string]any{"n": th.Dominance.N, "k": th.Dominance.K}, "dominance_unchecked": unchecked,
		"rows": summary.Rows, "cells_released": summary.CellsReleased, "cells_withheld": summary.CellsWithheld,
		"withheld_by_reason": withheld, "linkage": statsData(stats),
		"coverage": map[string]any{"sites_expected": cov.GetSitesExpected(), "sites_answered": cov.GetSitesAnswered(),
			"population_expected": cov.GetPopulationExpected(), "population_answered": cov.GetPopulationAnswered(),
			"trusts_expected": cov.GetTrustsExpected(), "trusts_answered": cov.GetTrustsAnswered(),
			"activity_expected": cov.GetActivityExpected(), "activity_answered": cov.GetActivityAnswered()},
	}})
}

// submittedAt is when run was submitted; zero if it does not say.
func submittedAt(run *havenv1.Run) time.Time {
	if run.GetSubmittedAt() == nil {
		return time.Time{}
	}
	return run.GetSubmittedAt().AsTime()
}

// DiscloseMeasures describes a table's measures to haven/disclose, with
// whether each asks for the dominance rule: policy decides which measures
// the rule applies to, and a measure that does not ask carries no largest
// contributions to apply it with.
func DiscloseMeasures(ms []disclosure.Measure) []policy.Measure {
	out := make([]policy.Measure, len(ms))
	for i, m := range ms {
		out[i] = policy.Measure{Name: m.Name, Kind: string(m.Kind), Dominance: m.Dominance}
	}
	return out
}

// ApplyDominance sets the dominance rule on exactly the measures that
// policy names (wanted) and that carry their cells' largest
// contributions, which the plan gives only where the definition asks. It
// returns the measures policy names that cannot be checked, for the
// release's audit entry.
func ApplyDominance(ms []disclosure.Measure, wanted []string) (unchecked []string) {
	for i := range ms {
		m := &ms[i]
		want := slices.Contains(wanted, m.Name)
		if want && !m.Dominance {
			unchecked = append(unchecked, m.Name)
		}
		m.Dominance = m.Dominance && want
	}
	return unchecked
}

// Thresholds are the disclosure rules of an allowing decision for a run
// whose sites sent record keys in [0, keyRange) (0: none). A decision that
// enables cell-key perturbation is refused unless the sites sent keys of
// the table's own range: a count perturbed with key 0 would be perturbed
// the same way in every cell, so the release fails closed.
func Thresholds(dec policy.DisclosureDecision, keyRange int) (disclosure.Thresholds, error) {
	var pert disclosure.Perturbation
	if dec.Perturbation != nil {
		if keyRange == 0 {
			return disclosure.Thresholds{}, fmt.Errorf("the bundle asks for cell-key perturbation (%s), but the sites' plans carry no record keys", dec.PerturbationTable)
		}
		if r := dec.Perturbation.KeyRange(); r != keyRange {
			return disclosure.Thresholds{}, fmt.Errorf("the bundle asks for cell-key perturbation (%s) with key range %d, but the sites sent keys in [0, %d)", dec.PerturbationTable, r, keyRange)
		}
		pert = dec.Perturbation
	}
	return disclosure.Thresholds{
		Perturbation: pert,
		MinCount:     dec.Thresholds.MinCellCount,
		RoundingBase: dec.Thresholds.RoundingBase,
		Dominance:    disclosure.Dominance{N: dec.Thresholds.Dominance.N, K: dec.Thresholds.Dominance.K},
		// Groups with fewer than MinCount patients are withheld whole.
		AttributeDisclosure: dec.Thresholds.AttributeDisclosure,
	}, nil
}

// summarise counts the released table's rows and values.
func summarise(rel *disclosure.Released, th disclosure.Thresholds) *havenv1.ReleaseSummary {
	s := &havenv1.ReleaseSummary{MinCellCount: int64(th.MinCount), RoundingBase: int64(th.RoundingBase)}
	count := func(vs []disclosure.Value) {
		s.Rows++
		for _, v := range vs {
			switch v.Status {
			case disclosure.StatusReleased:
				s.CellsReleased++
			case disclosure.StatusWithheld:
				s.CellsWithheld++
			}
		}
	}
	for _, c := range rel.Cells {
		count(c.Values)
	}
	for _, m := range rel.Margins {
		count(m.Values)
	}
	if rel.Total != nil {
		count(rel.Total)
	}
	return s
}

func statsData(st linkage.Stats) map[string]any {
	return map[string]any{"mode": st.Mode, "sites": st.Sites, "batches": st.Batches, "gp_rows": st.GPRows,
		"trust_rows": st.TrustRows, "patients": st.Patients, "population": st.Population,
		"unlinked_patients": st.UnlinkedPatients, "unlinked_rows": st.UnlinkedRows,
		"duplicate_registrations": st.DuplicateRegistrations, "cells": st.Cells, "memory_bytes": st.MemoryBytes,
		"spilled_bytes": st.SpilledBytes, "spilled_partitions": st.SpilledPartitions}
}

// perturbationTable is the bundle path of the p-table a release's counts
// went through, or "" when they were not perturbed.
func perturbationTable(dec policy.DisclosureDecision, th disclosure.Thresholds) string {
	if th.Perturbation == nil {
		return ""
	}
	return dec.PerturbationTable
}

// perturbationKeyRange is R of the p-table a release's counts went
// through, or 0.
func perturbationKeyRange(th disclosure.Thresholds) int64 {
	if th.Perturbation == nil {
		return 0
	}
	return int64(th.Perturbation.KeyRange())
}
