package policy

import (
	"encoding/json"
	"math"
	"time"
)

// The release ledger meets haven/submit in two steps. The coordinator reads
// every run of a definition over the bundle's look-back (LedgerHistory); the
// engine reduces it, with the numbers data.ledger sets, to what the rules
// need (SubmitLedger): the earlier runs near the request, and how many runs
// of the definition the requester and their organisation have had in the
// budget period. The Rego decides on that summary. Reading hundreds of
// entries in Rego cost about 150µs each, which at national scale (dozens
// of organisations, each with a budget of 60 runs a month) would have made
// every submission slow; in Go it costs well under a microsecond each.

// LedgerHistory is the release ledger's record of one definition, as the
// coordinator reads it in the store transaction that records a new run:
// every run of the definition, by any requester, submitted at or after
// Since, that released a table or is still running.
type LedgerHistory struct {
	Since   time.Time
	Entries []LedgerEntry
}

// SubmitLedger is what haven/submit sees of the release ledger: the engine
// fills it in from SubmitInput.History with the active bundle's
// data.ledger.
type SubmitLedger struct {
	// Since is where the history starts; policy refuses a ledger that
	// starts later than its rules look back.
	Since time.Time `json:"since"`
	// Near are the earlier runs submitted within the near-duplicate
	// window whose parameters all lie within its distance of the
	// request's (data.ledger.near_duplicate); empty without that rule.
	Near []LedgerEntry `json:"near"`
	// Runs counts the runs of the definition submitted within the budget
	// period (data.ledger.budget); zero without that rule.
	Runs LedgerRuns `json:"runs"`
}

// LedgerRuns counts a definition's runs in the budget period.
type LedgerRuns struct {
	// Requester: by the requester, (organisation, user).
	Requester int `json:"requester"`
	// Organisation: by anyone of the requester's organisation.
	Organisation int `json:"organisation"`
}

// LedgerEntry is one earlier run in the release ledger.
type LedgerEntry struct {
	RunID       string          `json:"run_id"`
	Requester   LedgerRequester `json:"requester"`
	Parameters  map[string]any  `json:"parameters"`
	SubmittedAt time.Time       `json:"submitted_at"`
	// Released is false for a run still in progress.
	Released bool `json:"released"`
}

// LedgerRequester is who asked an earlier run: identity is (org, user).
type LedgerRequester struct {
	ID  string `json:"id"`
	Org string `json:"org"`
}

// ledgerRules are the numbers of data.ledger the engine applies. A rule
// that is absent or malformed is nil: policy refuses a malformed one
// itself (ledger_rules_invalid), so the summary need not be right for it.
type ledgerRules struct {
	near   *nearRule
	budget *budgetRule
}

type nearRule struct {
	windowDays, dateDays, numberDistance float64
}

type budgetRule struct {
	periodDays float64
}

// lookback is how far back the rules look, and a day more for clock
// steps; zero without rules.
func (r ledgerRules) lookback() time.Duration {
	var days float64
	if r.near != nil {
		days = r.near.windowDays
	}
	if r.budget != nil {
		days = max(days, r.budget.periodDays)
	}
	if days <= 0 {
		return 0
	}
	return time.Duration((days + 1) * float64(24*time.Hour))
}

// LedgerLookback is how far back the active bundle's release-ledger rules
// look (data.ledger), and a day more for clock steps: how much of the
// ledger SubmitInput.History must hold. Zero when the bundle sets no
// well-formed rule: policy then needs no ledger, or refuses the malformed
// rule whatever the ledger holds.
func (e *Engine) LedgerLookback() time.Duration { return e.active.Load().ledger.lookback() }

// readLedgerRules reads data.ledger of a bundle's data.
func readLedgerRules(data map[string]any) ledgerRules {
	var r ledgerRules
	l, _ := data["ledger"].(map[string]any)
	if n, ok := l["near_duplicate"].(map[string]any); ok {
		w, okW := number(n["window_days"])
		d, okD := number(n["date_days"])
		dist, okN := 0.0, true
		if v, set := n["number_distance"]; set {
			dist, okN = number(v)
		}
		if okW && okD && okN {
			r.near = &nearRule{windowDays: w, dateDays: d, numberDistance: dist}
		}
	}
	if b, ok := l["budget"].(map[string]any); ok {
		if p, ok := number(b["period_days"]); ok {
			r.budget = &budgetRule{periodDays: p}
		}
	}
	return r
}

// summarise reduces h to what haven/submit's rules read, for a request by
// req with params at now.
func (r ledgerRules) summarise(now time.Time, req Requester, params map[string]any, h *LedgerHistory) *SubmitLedger {
	out := &SubmitLedger{Since: h.Since, Near: []LedgerEntry{}}
	for _, e := range h.Entries {
		if r.near != nil && !e.SubmittedAt.Before(daysBefore(now, r.near.windowDays)) && r.near.params(e.Parameters, params) {
			out.Near = append(out.Near, e)
		}
		if r.budget != nil && !e.SubmittedAt.Before(daysBefore(now, r.budget.periodDays)) && e.Requester.Org == req.Org {
			out.Runs.Organisation++
			if e.Requester.ID == req.ID {
				out.Runs.Requester++
			}
		}
	}
	return out
}

// daysBefore is now less days (which may be fractional).
func daysBefore(now time.Time, days float64) time.Time {
	return now.Add(-time.Duration(days * float64(24*time.Hour)))
}

// params reports whether two parameter sets are near: the same names, and
// each pair of values equal, or dates within dateDays days, or numbers
// within numberDistance.
func (n *nearRule) params(a, b map[string]any) bool {
	if len(a) != len(b) {
		return false
	}
	for k, x := range a {
		y, ok := b[k]
		if !ok || !n.value(x, y) {
			return false
		}
	}
	return true
}

func (n *nearRule) value(x, y any) bool {
	if fx, ok := number(x); ok {
		fy, ok := number(y)
		return ok && math.Abs(fx-fy) <= n.numberDistance
	}
	sx, ok := x.(string)
	if !ok {
		bx, ok := x.(bool)
		by, okY := y.(bool)
		return ok && okY && bx == by
	}
	sy, ok := y.(string)
	if !ok {
		return false
	}
	if sx == sy {
		return true
	}
	dx, errX := time.Parse(time.DateOnly, sx)
	dy, errY := time.Parse(time.DateOnly, sy)
	if errX != nil || errY != nil {
		return false
	}
	return math.Abs(dx.Sub(dy).Hours()/24) <= n.dateDays
}

// number is v as a float64 when v is a JSON or Go number.
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	case float64:
		return n, true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case int32:
		return float64(n), true
	}
	return 0, false
}
