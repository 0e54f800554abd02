package dispatch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/havenhealth/haven/coordinator/audit"
	"github.com/havenhealth/haven/coordinator/disclosure"
	"github.com/havenhealth/haven/coordinator/linkage"
	"github.com/havenhealth/haven/coordinator/store"
	"github.com/havenhealth/haven/policy"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/release"
	"github.com/havenhealth/haven/wire"
)

// link moves the run to LINKING and finishes it in the background, so
// that reading the run is not held up while its table is computed. r.mu is
// held.
func (d *Dispatcher) link(ctx context.Context, r *activeRun) {
	if r.timer != nil {
		r.timer.Stop()
	}
	d.setState(ctx, r, havenv1.RunState_RUN_STATE_LINKING, d.cfg.Now())
	cov := proto.Clone(r.run.Coverage).(*havenv1.Coverage)
	d.finishes.Add(1)
	go func() {
		defer d.finishes.Done()
		d.finish(context.WithoutCancel(ctx), r, cov)
	}()
}

// outcome is what finishing a run produced.
type outcome struct {
	state   havenv1.RunState
	reasons []*havenv1.PolicyReason
	err     string
	table   []byte
	summary *havenv1.ReleaseSummary
	audit   map[string]any
}

// finish computes, controls and stores the run's table. Nothing else adds
// to the combiner once the run is LINKING, so it is read without r.mu.
func (d *Dispatcher) finish(ctx context.Context, r *activeRun, cov *havenv1.Coverage) {
	out := d.compute(ctx, r, cov)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended || r.run.State != havenv1.RunState_RUN_STATE_LINKING {
		return // cancelled or interrupted meanwhile
	}
	now := d.cfg.Now()
	if out.state == havenv1.RunState_RUN_STATE_RELEASED {
		sum := sha256.Sum256(out.table)
		digest := hex.EncodeToString(sum[:])
		err := d.cfg.Store.PutRelease(ctx, store.Release{RunID: r.id, CreatedAt: now, Table: out.table, SHA256: digest})
		if err != nil {
			out = outcome{state: havenv1.RunState_RUN_STATE_FAILED, err: "the released table could not be stored: " + err.Error()}
		} else {
			out.audit["sha256"] = digest
			out.audit["bytes"] = len(out.table)
			d.audit(ctx, audit.KindRelease, r.id, "coordinator", out.audit)
			r.run.Release = out.summary
		}
	}
	switch out.state {
	case havenv1.RunState_RUN_STATE_REFUSED:
		r.run.PolicyReasons = out.reasons
		d.audit(ctx, audit.KindRunState, r.id, "coordinator", map[string]any{"state": "refused", "by": "haven/disclose",
			"reasons": wireCodes(out.reasons)})
	case havenv1.RunState_RUN_STATE_FAILED:
		r.run.Error = out.err
		d.audit(ctx, audit.KindRunState, r.id, "coordinator", map[string]any{"state": "failed", "error": out.err})
		d.log.LogAttrs(ctx, slog.LevelWarn, "run failed", slog.String("run", r.id), slog.String("error", out.err))
	}
	d.setState(ctx, r, out.state, now)
	r.end()
	d.forget(r)
}

func wireCodes(rs []*havenv1.PolicyReason) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.GetCode()
	}
	return out
}

// compute links the uploads, asks haven/disclose, applies disclosure
// control and encodes the table.
func (d *Dispatcher) compute(ctx context.Context, r *activeRun, cov *havenv1.Coverage) outcome {
	failed := func(format string, args ...any) outcome {
		return outcome{state: havenv1.RunState_RUN_STATE_FAILED, err: fmt.Sprintf(format, args...)}
	}
	table, stats, err := r.combiner.Table(ctx)
	if err != nil {
		return failed("linkage: %v", err)
	}
	in := policy.DiscloseInput{
		Purpose: r.run.Purpose,
		Table:   policy.TableShape{Rows: len(table.Cells), Measures: discloseMeasures(table.Measures)},
		Coverage: policy.Coverage{
			Sites:         policy.Answered{Expected: int64(cov.SitesExpected), Answered: int64(cov.SitesAnswered)},
			Population:    policy.Answered{Expected: cov.PopulationExpected, Answered: cov.PopulationAnswered},
			Trusts:        policy.Answered{Expected: int64(cov.TrustsExpected), Answered: int64(cov.TrustsAnswered)},
			Activity:      policy.Answered{Expected: cov.ActivityExpected, Answered: cov.ActivityAnswered},
			MissingTrusts: missingTrusts(r, cov),
		},
	}
	dec, err := d.cfg.Policy.Disclose(ctx, in)
	data := decisionData("haven/disclose", dec.Decision)
	data["partial"] = dec.Partial
	if err != nil {
		data["error"] = err.Error()
	}
	d.audit(ctx, audit.KindDecision, r.id, "coordinator", data)
	if !dec.Allow {
		return outcome{state: havenv1.RunState_RUN_STATE_REFUSED, reasons: wireReasons(dec.Reasons)}
	}
	th, err := disclosureThresholds(dec, r.keyRange)
	if err != nil {
		return failed("%v", err)
	}
	unchecked := applyDominance(table.Measures, dec.DominanceMeasures)
	if len(unchecked) > 0 {
		d.log.LogAttrs(ctx, slog.LevelWarn, "policy asks for the dominance rule on measures the plan gives no contributions for",
			slog.String("run", r.id), slog.Any("measures", unchecked))
	}
	rel, err := disclosure.Apply(ctx, table, th)
	if err != nil {
		return failed("disclosure control: %v", err)
	}
	b, err := rel.Encode(release.Meta{
		RunID: r.id, DefinitionID: r.run.DefinitionId, DefinitionVersion: r.run.DefinitionVersion,
		DefinitionHash: r.run.DefinitionHash, Purpose: r.run.Purpose, BundleRevision: r.run.BundleRevision,
		ReleasedAt: d.cfg.Now(), MinCellCount: int64(th.MinCount), RoundingBase: int64(th.RoundingBase),
		SitesExpected: int64(cov.SitesExpected), SitesAnswered: int64(cov.SitesAnswered),
		PopulationExpected: cov.PopulationExpected, PopulationAnswered: cov.PopulationAnswered,
		TrustsExpected: int64(cov.TrustsExpected), TrustsAnswered: int64(cov.TrustsAnswered),
		ActivityExpected: cov.ActivityExpected, ActivityAnswered: cov.ActivityAnswered,
		Parameters: r.bound.Params(), SubmittedAt: submittedAt(r.run),
		DominanceN: int64(th.Dominance.N), DominanceK: th.Dominance.K, NodeVersions: answeredVersions(d.cfg.Links, cov),
		PerturbationTable: perturbationTable(dec, th), PerturbationKeyRange: perturbationKeyRange(th),
	})
	if err != nil {
		return failed("encode the released table: %v", err)
	}
	if d.cfg.SigningKey != nil {
		if b, err = release.Sign(b, d.cfg.SigningKey); err != nil {
			return failed("sign the released table: %v", err)
		}
	}
	summary := summarise(rel, th)
	summary.PerturbationTable = perturbationTable(dec, th)
	withheld := map[string]int{}
	for c, n := range rel.WithheldCounts() {
		withheld[string(c)] = n
	}
	return outcome{state: havenv1.RunState_RUN_STATE_RELEASED, table: b, summary: summary, audit: map[string]any{
		"decision_id": dec.ID, "bundle_revision": dec.Revision, "partial": dec.Partial,
		"min_cell_count": th.MinCount, "rounding_base": th.RoundingBase,
		"perturbation_table": perturbationTable(dec, th),
		"dominance":          map[string]any{"n": th.Dominance.N, "k": th.Dominance.K}, "dominance_unchecked": unchecked,
		"rows": summary.Rows, "cells_released": summary.CellsReleased, "cells_withheld": summary.CellsWithheld,
		"withheld_by_reason": withheld, "linkage": statsData(stats),
		"coverage": map[string]any{"sites_expected": cov.SitesExpected, "sites_answered": cov.SitesAnswered,
			"population_expected": cov.PopulationExpected, "population_answered": cov.PopulationAnswered,
			"trusts_expected": cov.TrustsExpected, "trusts_answered": cov.TrustsAnswered,
			"activity_expected": cov.ActivityExpected, "activity_answered": cov.ActivityAnswered},
	}}
}

// submittedAt is when run was submitted; zero if it does not say.
func submittedAt(run *havenv1.Run) time.Time {
	if run.GetSubmittedAt() == nil {
		return time.Time{}
	}
	return run.GetSubmittedAt().AsTime()
}

// answeredVersions are the node software versions of the sites of cov
// that answered, as their nodes last reported them.
func answeredVersions(links Links, cov *havenv1.Coverage) map[string]string {
	known := map[string]string{}
	for _, s := range links.Sites() {
		known[s.ODS] = s.NodeVersion
	}
	out := map[string]string{}
	for _, st := range cov.GetSites() {
		if st.GetState() == havenv1.SiteState_SITE_STATE_DONE {
			v := known[st.GetSiteOds()]
			if v == "" {
				v = "unknown"
			}
			out[st.GetSiteOds()] = v
		}
	}
	return out
}

// missingTrusts lists the trusts of cov that did not answer, with their
// activity. The run is LINKING, so its sites no longer change; r.sites is
// read without r.mu as the combiner is.
func missingTrusts(r *activeRun, cov *havenv1.Coverage) []policy.MissingSite {
	out := []policy.MissingSite{}
	for _, st := range cov.GetSites() {
		if st.GetKind() != havenv1.SiteKind_SITE_KIND_TRUST || st.GetState() == havenv1.SiteState_SITE_STATE_DONE {
			continue
		}
		var activity int64
		if s := r.sites[st.GetSiteOds()]; s != nil {
			activity = s.activity
		}
		out = append(out, policy.MissingSite{ODS: st.GetSiteOds(), State: wire.SiteStateName(st.GetState()), Activity: activity})
	}
	return out
}

// discloseMeasures describes a table's measures to haven/disclose, with
// whether each asks for the dominance rule: policy decides which measures
// the rule applies to, and a measure that does not ask carries no largest
// contributions to apply it with.
func discloseMeasures(ms []disclosure.Measure) []policy.Measure {
	out := make([]policy.Measure, len(ms))
	for i, m := range ms {
		out[i] = policy.Measure{Name: m.Name, Kind: string(m.Kind), Dominance: m.Dominance}
	}
	return out
}

// applyDominance sets the dominance rule on exactly the measures that
// policy names (wanted) and that carry their cells' largest
// contributions, which the plan gives only where the definition asks. It
// returns the measures policy names that cannot be checked, for the
// release's audit entry.
func applyDominance(ms []disclosure.Measure, wanted []string) (unchecked []string) {
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

// disclosureThresholds are the disclosure rules of an allowing decision
// for a run whose sites sent record keys in [0, keyRange) (0: none). A
// decision that enables cell-key perturbation is refused unless the sites
// sent keys of the table's own range: a count perturbed with key 0 would
// be perturbed the same way in every cell, so the release fails closed.
func disclosureThresholds(dec policy.DisclosureDecision, keyRange int) (disclosure.Thresholds, error) {
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
		"duplicate_registrations": st.DuplicateRegistrations, "cells": st.Cells, "memory_bytes": st.MemoryBytes}
}

// Shutdown stops the dispatcher: every run in progress is marked
// INTERRUPTED (its linked rows were only in memory), its sites are sent
// CancelTask, its watchers are told, and its audit entry written. It waits
// for runs being linked to stop.
func (d *Dispatcher) Shutdown(ctx context.Context, reason string) {
	d.mu.Lock()
	d.closed = true
	runs := make([]*activeRun, 0, len(d.runs))
	for _, r := range d.runs {
		runs = append(runs, r)
	}
	d.mu.Unlock()
	for _, r := range runs {
		r.mu.Lock()
		d.interruptLocked(ctx, r, reason)
		r.mu.Unlock()
		d.forget(r)
	}
	d.stopOnce.Do(func() { close(d.stop) })
	d.loops.Wait()
	d.finishes.Wait()
}

// interruptLocked marks a run interrupted. r.mu is held.
func (d *Dispatcher) interruptLocked(ctx context.Context, r *activeRun, reason string) {
	if r.ended || FinalRun(r.run.State) {
		return
	}
	d.cancelTasks(ctx, r, "the run was interrupted: "+reason)
	r.run.Error = reason
	d.audit(ctx, audit.KindRunState, r.id, "coordinator", map[string]any{"state": "interrupted", "reason": reason,
		"previous": r.run.State.String()})
	d.setState(ctx, r, havenv1.RunState_RUN_STATE_INTERRUPTED, d.cfg.Now())
	for w := range r.watchers {
		w.close(ErrShuttingDown)
	}
	r.end()
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
