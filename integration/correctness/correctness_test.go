package correctness

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/havenhealth/haven/coordinator/disclosure"
	"github.com/havenhealth/haven/integration/demo"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// question is one definition with one parameter set, and its central
// answer; params are every parameter, defaults written out, since the
// central SQL needs them all.
type question struct {
	set     string // "default" or "other"
	def     string
	purpose string
	params  map[string]string
	// answer computes the central truth; nil where the central SQL does
	// not cover the definition.
	answer func(c *central, p map[string]string) trueTable
}

func atoi(t testing.TB, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("parameter %q: %v", s, err)
	}
	return n
}

func questions(t testing.TB) []question {
	prev := func(c *central, p map[string]string) trueTable {
		return c.t2dmPrevalence(p["index_date"], atoi(t, p["min_age"]))
	}
	adm := func(c *central, p map[string]string) trueTable {
		return c.t2dmEmergencyAdmissions(p["index_date"], atoi(t, p["followup_days"]))
	}
	statins := func(c *central, p map[string]string) trueTable {
		return c.statinsCHD(p["index_date"], atoi(t, p["lookback_days"]))
	}
	bp := func(c *central, p map[string]string) trueTable {
		return c.bpControl(p["index_date"], atoi(t, p["lookback_days"]), atoi(t, p["target_sbp"]))
	}
	copd := func(c *central, p map[string]string) trueTable {
		return c.copdAE(p["index_date"], atoi(t, p["followup_days"]))
	}
	readmit := func(c *central, p map[string]string) trueTable {
		return c.readmissions(p["start"], p["end"], atoi(t, p["window_days"]))
	}
	type pm = map[string]string
	// The defaults are those of each definition.yaml; the other sets lie
	// within the approved ranges of policy/bundle/data.json.
	return []question{
		{"default", "t2dm-prevalence", "commissioning", pm{"index_date": "2024-04-01", "min_age": "17"}, prev},
		{"other", "t2dm-prevalence", "commissioning", pm{"index_date": "2022-04-01", "min_age": "40"}, prev},
		{"default", "t2dm-emergency-admissions", "commissioning", pm{"index_date": "2023-04-01", "followup_days": "365"}, adm},
		{"other", "t2dm-emergency-admissions", "commissioning", pm{"index_date": "2022-10-01", "followup_days": "180"}, adm},
		{"default", "statins-chd", "clinical_audit", pm{"index_date": "2024-04-01", "lookback_days": "365"}, statins},
		{"other", "statins-chd", "clinical_audit", pm{"index_date": "2023-04-01", "lookback_days": "180"}, statins},
		{"default", "bp-control-hypertension", "commissioning", pm{"index_date": "2024-04-01", "lookback_days": "365", "target_sbp": "140"}, bp},
		{"other", "bp-control-hypertension", "commissioning", pm{"index_date": "2023-04-01", "lookback_days": "180", "target_sbp": "150"}, bp},
		{"default", "copd-ae-attendances", "commissioning", pm{"index_date": "2023-04-01", "followup_days": "365"}, copd},
		{"other", "copd-ae-attendances", "commissioning", pm{"index_date": "2022-04-01", "followup_days": "180"}, copd},
		{"default", "emergency-readmissions-30d", "commissioning", pm{"start": "2023-04-01", "end": "2024-03-31", "window_days": "30"}, readmit},
		{"other", "emergency-readmissions-30d", "commissioning", pm{"start": "2022-04-01", "end": "2023-03-31", "window_days": "14"}, readmit},
	}
}

// TestFederatedMatchesCentral runs every question through one demo
// network and compares each released table with the central answer.
func TestFederatedMatchesCentral(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole network as processes; skipped with -short")
	}
	qs := questions(t)
	var queries []demo.Query
	for _, q := range qs {
		queries = append(queries, demo.Query{Definition: q.def, Parameters: q.params, Purpose: q.purpose})
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	began := time.Now()
	res, err := demo.Run(ctx, demo.Options{
		Dir:     filepath.Join(t.TempDir(), "demo"),
		Keep:    true, // the central answers read its files; TempDir removes it
		Queries: queries,
	})
	if err != nil {
		t.Fatalf("demo: %v", err)
	}
	t.Logf("the demo ran %d queries in %s", len(res.Runs), time.Since(began).Round(time.Second))
	if len(res.Runs) != len(qs) {
		t.Fatalf("%d runs, want %d", len(res.Runs), len(qs))
	}
	c := newCentral(t, res.Network, filepath.Join(res.Dir, "bundle"))

	var matrix strings.Builder
	fmt.Fprintf(&matrix, "\n%-28s %-8s %6s %8s %8s %s\n", "definition", "params", "cells", "released", "withheld", "all equal")
	for i, q := range qs {
		rr := res.Runs[i]
		if rr.Run.GetState() != havenv1.RunState_RUN_STATE_RELEASED || rr.Table == nil {
			t.Errorf("%s %s: run %s is %s (%s), want a released table", q.def, q.set, rr.Run.GetId(), rr.Run.GetState(), rr.Run.GetError())
			continue
		}
		if rr.Table.Meta.DefinitionID != q.def {
			t.Fatalf("run %d released %s, want %s", i, rr.Table.Meta.DefinitionID, q.def)
		}
		if q.answer == nil {
			fmt.Fprintf(&matrix, "%-28s %-8s %6d %8s %8s %s\n", q.def, q.set, len(rr.Table.Rows), "-", "-", "not compared (no central SQL)")
			continue
		}
		st := checkTable(t, rr.Table, q.answer(c, q.params), meanValues, q.def+" "+q.set)
		fmt.Fprintf(&matrix, "%-28s %-8s %6d %8d %8d %v\n", q.def, q.set, st.Cells, st.Released, st.Withheld, st.Problems == 0)
	}
	t.Log(matrix.String())
}

// meanValues says what each mean measure of the definitions averages,
// which decides how disclosure control releases it.
var meanValues = map[string]disclosure.ValueKind{
	"prevalence": disclosure.ValueBinary,     // of has_t2dm, 0 or 1
	"mean_sbp":   disclosure.ValueContinuous, // of a numeric_value
}
