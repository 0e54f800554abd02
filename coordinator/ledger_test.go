package coordinator_test

import (
	"context"
	"database/sql"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/havenhealth/haven/coordinator/coordinatortest"
	"github.com/havenhealth/haven/coordinator/store"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// storedState is what the job store holds: every run's snapshot, every
// released table and every ledger entry of statins-chd.
type storedState struct {
	runs     map[string]*havenv1.Run
	releases map[string][]byte
	ledger   map[string]store.LedgerEntry
}

func readStored(t *testing.T, n *coordinatortest.Network) storedState {
	t.Helper()
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, n.Config.StorePath())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	out := storedState{runs: map[string]*havenv1.Run{}, releases: map[string][]byte{}, ledger: map[string]store.LedgerEntry{}}
	runs, _, err := st.ListRuns(ctx, store.ListQuery{PageSize: 500})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range runs {
		out.runs[r.GetId()] = r
		if rel, err := st.GetRelease(ctx, r.GetId()); err == nil {
			out.releases[r.GetId()] = rel.Table
		}
	}
	entries, err := st.LedgerEntries(ctx, "statins-chd", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		out.ledger[e.RunID] = e
	}
	return out
}

// unchangedBut checks that after holds everything before held, unchanged,
// and besides it only the runs named in extra.
func unchangedBut(t *testing.T, before, after storedState, extra ...string) {
	t.Helper()
	for id, r := range before.runs {
		if !proto.Equal(r, after.runs[id]) {
			t.Errorf("run %s changed:\nbefore %v\nafter  %v", id, r, after.runs[id])
		}
	}
	for id, tbl := range before.releases {
		if string(after.releases[id]) != string(tbl) {
			t.Errorf("the released table of %s changed", id)
		}
	}
	if len(after.releases) != len(before.releases) {
		t.Errorf("%d released tables, want %d", len(after.releases), len(before.releases))
	}
	for id, e := range before.ledger {
		if a, ok := after.ledger[id]; !ok || a.ReleaseSHA256 != e.ReleaseSHA256 || !a.ReleasedAt.Equal(e.ReleasedAt) {
			t.Errorf("ledger entry of %s changed: %+v → %+v", id, e, a)
		}
	}
	if len(after.ledger) != len(before.ledger) {
		t.Errorf("%d ledger entries, want %d: a refusal entered the ledger", len(after.ledger), len(before.ledger))
	}
	if len(after.runs) != len(before.runs)+len(extra) {
		t.Errorf("%d runs stored, want %d + %v", len(after.runs), len(before.runs), extra)
	}
	for _, id := range extra {
		if after.runs[id].GetState() != havenv1.RunState_RUN_STATE_REFUSED {
			t.Errorf("run %s is stored as %s, want REFUSED", id, after.runs[id].GetState())
		}
	}
}

func reason(run *havenv1.Run, code string) string {
	for _, r := range run.GetPolicyReasons() {
		if r.GetCode() == code {
			return r.GetMessage()
		}
	}
	return ""
}

// TestLedgerRefusals submits, over gRPC to a running coordinator with
// node doubles answering, a repeated question, an off-grid one and more
// than the budget allows, and checks that each is refused with a reason
// naming what matters, and that a refusal stores nothing but its own run.
func TestLedgerRefusals(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{EditData: func(data map[string]any) {
		// A small budget, so that three runs exhaust it.
		data["ledger"].(map[string]any)["budget"] = map[string]any{"period_days": 30, "per_requester": 2, "per_organisation": 3}
	}})
	odsCodes := practices(3)
	ps := coordinatortest.Patients(1, odsCodes, 150, nil)
	nodes := gpNodes(n, ps, odsCodes...)
	for _, nd := range nodes {
		statinsAnswer(n, ps, nd)
	}
	connect(t, ctx, nodes...)
	ana, bo, cy := analyst(n, "ana"), analyst(n, "bo"), analyst(n, "cy")

	ask := func(conn *grpc.ClientConn, date string) *havenv1.Run {
		t.Helper()
		return submit(t, ctx, conn, "statins-chd", purpose, map[string]*havenv1.ParameterValue{
			"index_date": dateParam(date), "lookback_days": intParam(365)})
	}
	released := func(conn *grpc.ClientConn, date string) *havenv1.Run {
		t.Helper()
		run := ask(conn, date)
		evs := watch(t, ctx, conn, run.GetId())
		done := evs[len(evs)-1].GetRun()
		if done.GetState() != havenv1.RunState_RUN_STATE_RELEASED {
			t.Fatalf("run of %s ended %s: %v %s", date, done.GetState(), done.GetPolicyReasons(), done.GetError())
		}
		return done
	}
	refused := func(conn *grpc.ClientConn, date, code string, want ...string) {
		t.Helper()
		before := readStored(t, n)
		run := ask(conn, date)
		msg := reason(run, code)
		if run.GetState() != havenv1.RunState_RUN_STATE_REFUSED || len(run.GetPolicyReasons()) != 1 || msg == "" {
			t.Fatalf("index_date %s: run is %s with %v, want REFUSED for %s only", date, run.GetState(), run.GetPolicyReasons(), code)
		}
		for _, w := range want {
			if !strings.Contains(msg, w) {
				t.Errorf("index_date %s: reason %q does not name %q", date, msg, w)
			}
		}
		unchangedBut(t, before, readStored(t, n), run.GetId())
	}

	first := released(ana, coordinatortest.IndexDate)
	// The same question again, by a colleague: refused, naming the run.
	refused(bo, coordinatortest.IndexDate, "near_duplicate", "run "+first.GetId()+" (released")
	// Off the grid: refused, naming the month starts either side.
	refused(ana, "2023-11-15", "parameter_off_grid", "index_date 2023-11-15 is not a month start; nearest allowed: 2023-11-01, 2023-12-01")

	// ana's budget is two runs; the organisation's is three.
	released(ana, "2024-05-01")
	refused(ana, "2024-06-01", "budget_exceeded", "the requester has had 2 runs", `"statins-chd"`)
	released(bo, "2024-06-01")
	refused(cy, "2024-07-01", "budget_exceeded", "organisation has had 3 runs")

	st := readStored(t, n)
	if len(st.ledger) != 3 || len(st.releases) != 3 {
		t.Errorf("ledger holds %d entries and %d tables, want the 3 released runs", len(st.ledger), len(st.releases))
	}
	for id, e := range st.ledger {
		run := st.runs[id]
		if !e.Released() || e.ReleaseSHA256 == "" || e.DefinitionHash != run.GetDefinitionHash() || e.Purpose != purpose ||
			e.RequesterOrg != "QHM" || e.RequesterID != run.GetRequester().GetId() || e.Parameters["lookback_days"] != int64(365) {
			t.Errorf("ledger entry of %s: %+v", id, e)
		}
	}
}

// TestLedgerFailureFailsClosed breaks the release ledger of a running
// coordinator for real (its table dropped from the job store, as a damaged
// file would have it): a run admitted before fails at release, storing no
// table, and a new submission is refused with ledger_unavailable; what
// was stored before is unchanged.
func TestLedgerFailureFailsClosed(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{})
	odsCodes := practices(2)
	ps := coordinatortest.Patients(1, odsCodes, 150, nil)
	nodes := gpNodes(n, ps, odsCodes...)
	gate := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(open)
	def, _ := n.Catalog.Get("statins-chd")
	for _, nd := range nodes {
		nd.Answer = func(task *havenv1.Task, schema *arrow.Schema) ([]arrow.Record, error) {
			if task.GetParameters()["index_date"].GetDateValue() != coordinatortest.IndexDate {
				<-gate // the second run waits until the ledger is broken
			}
			return coordinatortest.StatinsCells(def, schema, ps, nd.ODS, int(task.GetRecordKeyRange())), nil
		}
	}
	connect(t, ctx, nodes...)
	ana := analyst(n, "ana")
	params := func(date string) map[string]*havenv1.ParameterValue {
		return map[string]*havenv1.ParameterValue{"index_date": dateParam(date), "lookback_days": intParam(365)}
	}
	first := submit(t, ctx, ana, "statins-chd", purpose, params(coordinatortest.IndexDate))
	evs := watch(t, ctx, ana, first.GetId())
	if s := evs[len(evs)-1].GetRun().GetState(); s != havenv1.RunState_RUN_STATE_RELEASED {
		t.Fatalf("first run %s", s)
	}
	second := submit(t, ctx, ana, "statins-chd", purpose, params("2024-05-01"))
	if second.GetState() != havenv1.RunState_RUN_STATE_RUNNING {
		t.Fatalf("second run is %s %v", second.GetState(), second.GetPolicyReasons())
	}
	before := readStored(t, n)

	db, err := sql.Open("sqlite", "file:"+n.Config.StorePath()+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `DROP TABLE ledger`); err != nil {
		t.Fatal(err)
	}
	open()

	evs = watch(t, ctx, ana, second.GetId())
	done := evs[len(evs)-1].GetRun()
	if done.GetState() != havenv1.RunState_RUN_STATE_FAILED || !strings.Contains(done.GetError(), "release ledger unavailable") {
		t.Fatalf("second run ended %s (%s), want FAILED naming the release ledger", done.GetState(), done.GetError())
	}
	third := submit(t, ctx, ana, "statins-chd", purpose, params("2024-06-01"))
	if third.GetState() != havenv1.RunState_RUN_STATE_REFUSED || reason(third, "ledger_unavailable") == "" {
		t.Fatalf("submission without a ledger is %s %v, want REFUSED ledger_unavailable", third.GetState(), third.GetPolicyReasons())
	}
	for _, nd := range nodes {
		if len(nd.Tasks()) != 2 {
			t.Errorf("%s got %d tasks, want 2: a refused run was dispatched", nd.ODS, len(nd.Tasks()))
		}
	}

	ctx2 := context.Background()
	st, err := store.OpenSQLite(ctx2, n.Config.StorePath())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if rel, err := st.GetRelease(ctx2, first.GetId()); err != nil || string(rel.Table) != string(before.releases[first.GetId()]) {
		t.Errorf("the first release changed: %v", err)
	}
	if _, err := st.GetRelease(ctx2, second.GetId()); err == nil {
		t.Error("the second run's table was stored without a ledger entry")
	}
	if r, err := st.GetRun(ctx2, first.GetId()); err != nil || !proto.Equal(r, before.runs[first.GetId()]) {
		t.Errorf("the first run changed: %v", err)
	}
}
