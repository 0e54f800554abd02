package policy

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"
)

// The reference bundle's ledger numbers (policy/bundle/data.json).
var referenceLedger = map[string]any{
	"near_duplicate": map[string]any{"window_days": json.Number("30"), "date_days": json.Number("27"), "number_distance": json.Number("0")},
	"budget":         map[string]any{"period_days": json.Number("30"), "per_requester": json.Number("20"), "per_organisation": json.Number("60")},
}

func TestLedgerSummary(t *testing.T) {
	me := Requester{ID: "analyst-17", Org: "QWE"}
	asked := map[string]any{"index_date": "2024-04-01", "followup_days": int64(365)}
	entry := func(id, user, org string, params map[string]any, daysAgo float64) LedgerEntry {
		return LedgerEntry{RunID: id, Requester: LedgerRequester{ID: user, Org: org}, Parameters: params,
			SubmittedAt: testNow.Add(-time.Duration(daysAgo * float64(24*time.Hour))), Released: true}
	}
	p := func(date string, followup any) map[string]any {
		return map[string]any{"index_date": date, "followup_days": followup}
	}
	for _, tc := range []struct {
		name    string
		rules   map[string]any
		entries []LedgerEntry
		near    []string
		mine    int
		org     int
	}{
		{name: "empty", rules: referenceLedger},
		{name: "the same parameters", rules: referenceLedger,
			entries: []LedgerEntry{entry("r1", "b", "XYZ", p("2024-04-01", int64(365)), 2)}, near: []string{"r1"}},
		{name: "JSON numbers from the store equal Go ints", rules: referenceLedger,
			entries: []LedgerEntry{entry("r1", "b", "XYZ", p("2024-04-01", float64(365)), 2)}, near: []string{"r1"}},
		{name: "a date 19 days away is near, 30 is not", rules: referenceLedger,
			entries: []LedgerEntry{
				entry("r1", "b", "XYZ", p("2024-04-20", int64(365)), 0),
				entry("r2", "b", "XYZ", p("2024-05-01", int64(365)), 0),
				entry("r3", "b", "XYZ", p("2024-02-28", int64(365)), 0),
			}, near: []string{"r1"}},
		{name: "another follow-up is not near at distance 0", rules: referenceLedger,
			entries: []LedgerEntry{entry("r1", "b", "XYZ", p("2024-04-01", int64(366)), 1)}},
		{name: "the number distance widens it", rules: withDistance(5),
			entries: []LedgerEntry{entry("r1", "b", "XYZ", p("2024-04-01", int64(361)), 0), entry("r2", "b", "XYZ", p("2024-04-01", int64(359)), 0)},
			near:    []string{"r1"}},
		{name: "other parameter names are not near", rules: referenceLedger,
			entries: []LedgerEntry{entry("r1", "b", "XYZ", map[string]any{"index_date": "2024-04-01"}, 1),
				entry("r2", "b", "XYZ", map[string]any{"index_date": "2024-04-01", "followup_days": int64(365), "min_age": int64(0)}, 1)}},
		{name: "outside the window is not near", rules: referenceLedger,
			entries: []LedgerEntry{entry("r1", "b", "XYZ", p("2024-04-01", int64(365)), 31)}},
		{name: "mixed types are not near", rules: referenceLedger,
			entries: []LedgerEntry{entry("r1", "b", "XYZ", p("2024-04-01", "365"), 1), entry("r2", "b", "XYZ", p("2024-04-01", true), 1)}},
		{name: "budget counts (organisation, user) in the period", rules: referenceLedger,
			entries: []LedgerEntry{
				entry("r1", "analyst-17", "QWE", p("2019-01-01", int64(365)), 1),
				entry("r2", "analyst-17", "QWE", p("2020-01-01", int64(365)), 29.9),
				entry("r3", "analyst-17", "OTHER", p("2021-01-01", int64(365)), 1), // another organisation's user with my id
				entry("r4", "analyst-5", "QWE", p("2022-01-01", int64(365)), 3),    // a colleague
				entry("r5", "analyst-17", "QWE", p("2023-01-01", int64(365)), 31),  // before the period
			}, mine: 2, org: 3},
		{name: "no rules: nothing read", rules: map[string]any{},
			entries: []LedgerEntry{entry("r1", "analyst-17", "QWE", p("2024-04-01", int64(365)), 1)}},
		{name: "malformed rules: nothing read (policy refuses them)", rules: map[string]any{
			"near_duplicate": map[string]any{"window_days": "30", "date_days": json.Number("27")},
			"budget":         map[string]any{"period_days": "30"},
		}, entries: []LedgerEntry{entry("r1", "analyst-17", "QWE", p("2024-04-01", int64(365)), 1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := readLedgerRules(map[string]any{"ledger": tc.rules})
			since := testNow.AddDate(0, -2, 0)
			got := r.summarise(testNow, me, asked, &LedgerHistory{Since: since, Entries: tc.entries})
			var near []string
			for _, e := range got.Near {
				near = append(near, e.RunID)
			}
			if !slices.Equal(near, tc.near) || got.Runs.Requester != tc.mine || got.Runs.Organisation != tc.org || !got.Since.Equal(since) {
				t.Errorf("near %v, runs %+v; want near %v, runs {%d %d}", near, got.Runs, tc.near, tc.mine, tc.org)
			}
			if got.Near == nil {
				t.Error("Near is nil: policy would read the ledger as malformed")
			}
		})
	}
}

func withDistance(d int) map[string]any {
	return map[string]any{
		"near_duplicate": map[string]any{"window_days": json.Number("30"), "date_days": json.Number("27"), "number_distance": json.Number(fmt.Sprint(d))},
		"budget":         referenceLedger["budget"],
	}
}

// The ledger is read as far back as the bundle's rules look, a day more;
// not at all without rules.
func TestLedgerLookback(t *testing.T) {
	day := 24 * time.Hour
	for _, tc := range []struct {
		ledger any
		want   time.Duration
	}{
		{map[string]any{"near_duplicate": map[string]any{"window_days": json.Number("30"), "date_days": json.Number("27")},
			"budget": map[string]any{"period_days": json.Number("90")}}, 91 * day},
		{map[string]any{"near_duplicate": map[string]any{"window_days": json.Number("7"), "date_days": json.Number("1")}}, 8 * day},
		{referenceLedger, 31 * day},
		{map[string]any{}, 0},
		{nil, 0},
		{map[string]any{"near_duplicate": map[string]any{"window_days": "30"}}, 0}, // malformed: policy refuses it
	} {
		if got := readLedgerRules(map[string]any{"ledger": tc.ledger}).lookback(); got != tc.want {
			t.Errorf("%v: lookback %s, want %s", tc.ledger, got, tc.want)
		}
	}
	k := newKey(t)
	if got := load(t, signedReference(t, k), k).LedgerLookback(); got != 31*day {
		t.Errorf("the reference bundle's lookback is %s, want 31 days", got)
	}
}
