package faults

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/havenhealth/haven/coordinator/audit"
	"github.com/havenhealth/haven/demo"
	"github.com/havenhealth/haven/internal/testutil"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// linksCut cuts every node's connections to the coordinator (NodeLink
// streams and uploads alike) at random moments while runs are under way:
// HAVEN_LINKCUT_ROUNDS runs (default 6; make soak-links runs 300), each
// with two cuts in its first two seconds, when tasks are being sent,
// answered, uploaded and reported. Every site's outcome must reach the
// coordinator, once: no site is left TIMED_OUT or DISCONNECTED (which a
// lost outcome ends as, at the deadline), and the coordinator's audit log
// holds exactly one outcome per site and run. HAVEN_LINKCUT_SEED repeats a
// sequence of cuts.
func (f *faultNet) linksCut(t *testing.T, ctx context.Context) {
	rounds := testutil.EnvInt(t, "HAVEN_LINKCUT_ROUNDS", 6, 1)
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("HAVEN_LINKCUT_SEED"); v != "" {
		seed = uint64(testutil.EnvInt(t, "HAVEN_LINKCUT_SEED", 0, 0))
	}
	t.Logf("cut sequence seed %d (HAVEN_LINKCUT_SEED)", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	queries := []demo.Query{prevalence, admissions}
	runs := map[string]*havenv1.Run{}
	states := map[havenv1.SiteState]int{}
	ended := map[havenv1.RunState]int{}
	cut, longest := 0, time.Duration(0)
	for i := range rounds {
		if err := f.WaitLinked(ctx, runTimeout); err != nil {
			t.Fatalf("round %d: the sites did not all link again: %v", i, err)
		}
		q := queries[i%len(queries)]
		var timers []*time.Timer
		cuts := make(chan int, 2)
		for range 2 {
			at := time.Duration(rng.Int64N(int64(2 * time.Second)))
			timers = append(timers, time.AfterFunc(at, func() { cuts <- f.links.Cut() }))
		}
		rr, err := f.Submit(ctx, q)
		for _, tm := range timers {
			if tm.Stop() {
				cuts <- 0 // the run ended before this cut
			}
		}
		cut += <-cuts + <-cuts
		if err != nil {
			t.Fatalf("round %d, %s: %v", i, q.Definition, err)
		}
		r := rr.Run
		runs[r.GetId()] = r
		ended[r.GetState()]++
		took := r.GetFinishedAt().AsTime().Sub(r.GetSubmittedAt().AsTime())
		longest = max(longest, took)
		for _, s := range r.GetCoverage().GetSites() {
			states[s.GetState()]++
			switch s.GetState() {
			case havenv1.SiteState_SITE_STATE_TIMED_OUT, havenv1.SiteState_SITE_STATE_DISCONNECTED:
				t.Errorf("round %d, run %s (%s): site %s ended %s (%s): its outcome never arrived",
					i, r.GetId(), q.Definition, s.GetSiteOds(), s.GetState(), s.GetError())
			}
		}
	}
	t.Logf("%d runs (%v), %d connections cut; site outcomes %v; longest run %v (deadline %v)", rounds, ended, cut, states, longest.Round(time.Millisecond), runDeadline)
	if ended[havenv1.RunState_RUN_STATE_RELEASED]+ended[havenv1.RunState_RUN_STATE_REFUSED] != rounds {
		t.Errorf("runs ended %v; want each released or refused", ended)
	}

	// Exactly once: one final response per site and run in the audit log.
	file, err := os.Open(f.CoordinatorData() + "/audit.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	type key struct{ run, site string }
	outcomes := map[key][]string{}
	if _, err := audit.Scan(file, func(e audit.Entry) {
		if e.Kind != audit.KindNodeResponse || runs[e.RunID] == nil {
			return
		}
		var d struct {
			Response string `json:"response"`
		}
		if json.Unmarshal(e.Data, &d) == nil && d.Response != "accepted" && d.Response != "upload_received" && d.Response != "upload_rejected" {
			outcomes[key{e.RunID, e.Actor}] = append(outcomes[key{e.RunID, e.Actor}], d.Response)
		}
	}); err != nil {
		t.Fatalf("read the coordinator's audit log: %v", err)
	}
	for id, r := range runs {
		for _, s := range r.GetCoverage().GetSites() {
			if got := outcomes[key{id, s.GetSiteOds()}]; len(got) != 1 {
				t.Errorf("run %s, site %s: the audit log records outcomes %v, want exactly one", id, s.GetSiteOds(), got)
			}
		}
	}
	if err := f.WaitLinked(ctx, runTimeout); err != nil {
		t.Fatalf("the sites did not all link again: %v", err)
	}
}
