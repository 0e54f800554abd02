package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"google.golang.org/protobuf/proto"
)

// admit admits run with AdmitRun, deciding to store it as it is.
func admit(t *testing.T, s *SQLite, run *havenv1.Run, since time.Time) LedgerView {
	t.Helper()
	var seen LedgerView
	if _, err := s.AdmitRun(context.Background(), LedgerQuery{DefinitionID: run.GetDefinitionId(), Since: since},
		func(v LedgerView) (*havenv1.Run, error) { seen = v; return run, nil }); err != nil {
		t.Fatal(err)
	}
	return seen
}

func ledgerRun(i int, org string, state havenv1.RunState) *havenv1.Run {
	r := testRun(0, state)
	r.Id = fmt.Sprintf("run-%03d", i)
	r.DefinitionHash = "abc"
	r.Requester.Org = org
	r.Parameters["min_age"] = &havenv1.ParameterValue{Value: &havenv1.ParameterValue_IntValue{IntValue: 17}}
	r.SubmittedAt.Seconds += int64(i) * 60
	return r
}

func TestLedgerSeesAdmittedAndReleasedRuns(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "haven.db"))
	defer s.Close()
	since := t0.Add(-time.Hour)

	if v := admit(t, s, ledgerRun(1, "QHM", havenv1.RunState_RUN_STATE_PENDING), since); len(v.Entries) != 0 || !v.Since.Equal(since) {
		t.Fatalf("first view %+v, want empty since %s", v, since)
	}
	// Refused runs are stored but not in the ledger.
	admit(t, s, ledgerRun(2, "QHM", havenv1.RunState_RUN_STATE_REFUSED), since)
	// A run that failed after admission does not count; one that released does.
	failed := ledgerRun(3, "QYG", havenv1.RunState_RUN_STATE_PENDING)
	admit(t, s, failed, since)
	failed.State = havenv1.RunState_RUN_STATE_FAILED
	if err := s.UpdateRun(ctx, failed); err != nil {
		t.Fatal(err)
	}
	released := ledgerRun(4, "QYG", havenv1.RunState_RUN_STATE_PENDING)
	admit(t, s, released, since)
	if err := s.PutRelease(ctx, Release{RunID: released.Id, CreatedAt: t0.Add(time.Hour), Table: []byte("released values")}); err != nil {
		t.Fatal(err)
	}
	released.State = havenv1.RunState_RUN_STATE_RELEASED
	if err := s.UpdateRun(ctx, released); err != nil {
		t.Fatal(err)
	}

	v := admit(t, s, ledgerRun(5, "QHM", havenv1.RunState_RUN_STATE_PENDING), since)
	var got []string
	for _, e := range v.Entries {
		got = append(got, fmt.Sprintf("%s %s/%s released=%v %v %v", e.RunID, e.RequesterOrg, e.RequesterID, e.Released(), e.Parameters["index_date"], e.Parameters["min_age"]))
	}
	want := []string{
		"run-004 QYG/ana released=true 2025-03-31 17",
		"run-001 QHM/ana released=false 2025-03-31 17",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("ledger view:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if e := v.Entries[0]; e.DefinitionHash != "abc" || e.Purpose != "service-planning" || e.ReleaseSHA256 == "" || !e.ReleasedAt.Equal(t0.Add(time.Hour)) {
		t.Errorf("released entry %+v lacks its provenance", e)
	}
	if _, ok := v.Entries[0].Parameters["min_age"].(int64); !ok {
		t.Errorf("int parameter read back as %T, want int64", v.Entries[0].Parameters["min_age"])
	}
	// Another definition's ledger is its own.
	other := ledgerRun(6, "QHM", havenv1.RunState_RUN_STATE_PENDING)
	other.DefinitionId = "statins-chd"
	if v := admit(t, s, other, since); len(v.Entries) != 0 {
		t.Errorf("statins-chd saw %d entries of t2dm-prevalence", len(v.Entries))
	}
	all, err := s.LedgerEntries(ctx, "t2dm-prevalence", since)
	if err != nil || len(all) != 4 {
		t.Errorf("LedgerEntries = %d entries (%v), want the 4 admitted runs", len(all), err)
	}
}

func TestLedgerViewMovesSinceWhenCut(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "haven.db"))
	defer s.Close()
	for i := range 5 {
		admit(t, s, ledgerRun(i, "QHM", havenv1.RunState_RUN_STATE_PENDING), t0.Add(-time.Hour))
	}
	var v LedgerView
	if _, err := s.AdmitRun(context.Background(), LedgerQuery{DefinitionID: "t2dm-prevalence", Since: t0.Add(-time.Hour), Limit: 3},
		func(got LedgerView) (*havenv1.Run, error) {
			v = got
			return ledgerRun(9, "QHM", havenv1.RunState_RUN_STATE_PENDING), nil
		}); err != nil {
		t.Fatal(err)
	}
	// Runs 4, 3, 2 fit; run 1 was cut, so the view starts just after it.
	if len(v.Entries) != 3 || v.Entries[2].RunID != "run-002" || !v.Since.Equal(t0.Add(time.Minute+time.Nanosecond)) {
		t.Fatalf("view since %s with %d entries, want run-004..run-002 since just after run-001", v.Since, len(v.Entries))
	}
}

// Skip reads nothing and still records the run in the ledger, for the
// next submission whose bundle has rules.
func TestLedgerSkip(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "haven.db"))
	defer s.Close()
	admit(t, s, ledgerRun(0, "QHM", havenv1.RunState_RUN_STATE_PENDING), t0.Add(-time.Hour))
	var v LedgerView
	if _, err := s.AdmitRun(context.Background(), LedgerQuery{DefinitionID: "t2dm-prevalence", Since: t0.Add(-time.Hour), Skip: true},
		func(got LedgerView) (*havenv1.Run, error) {
			v = got
			return ledgerRun(1, "QHM", havenv1.RunState_RUN_STATE_PENDING), nil
		}); err != nil {
		t.Fatal(err)
	}
	if len(v.Entries) != 0 {
		t.Errorf("Skip read %d entries", len(v.Entries))
	}
	if got := admit(t, s, ledgerRun(2, "QHM", havenv1.RunState_RUN_STATE_PENDING), t0.Add(-time.Hour)); len(got.Entries) != 2 {
		t.Errorf("the next submission sees %d entries, want the 2 admitted before it", len(got.Entries))
	}
}

func TestAdmitRunStoresNothingWhenDecideFails(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "haven.db"))
	defer s.Close()
	boom := errors.New("policy failed")
	_, err := s.AdmitRun(ctx, LedgerQuery{DefinitionID: "t2dm-prevalence"}, func(LedgerView) (*havenv1.Run, error) { return nil, boom })
	if !errors.Is(err, boom) {
		t.Fatalf("AdmitRun = %v, want the decide error", err)
	}
	// A run that cannot be stored leaves no ledger entry behind.
	_, err = s.AdmitRun(ctx, LedgerQuery{DefinitionID: "t2dm-prevalence"}, func(LedgerView) (*havenv1.Run, error) {
		r := ledgerRun(1, "QHM", havenv1.RunState_RUN_STATE_PENDING)
		r.Requester.Id = ""
		return r, nil
	})
	if err == nil {
		t.Fatal("AdmitRun stored a run without a requester")
	}
	if all, err := s.LedgerEntries(ctx, "t2dm-prevalence", time.Time{}); err != nil || len(all) != 0 {
		t.Fatalf("ledger holds %d entries (%v) after failed admissions", len(all), err)
	}
}

// Two submissions at once cannot both see a ledger without the other: the
// read and the write are one transaction.
func TestAdmitRunIsAtomic(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "haven.db"))
	defer s.Close()
	const n = 8
	var wg sync.WaitGroup
	seen := make([]int, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.AdmitRun(context.Background(), LedgerQuery{DefinitionID: "t2dm-prevalence", Since: t0.Add(-time.Hour)},
				func(v LedgerView) (*havenv1.Run, error) {
					seen[i] = len(v.Entries)
					return ledgerRun(i, "QHM", havenv1.RunState_RUN_STATE_PENDING), nil
				})
		}()
	}
	wg.Wait()
	counts := map[int]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		counts[seen[i]] = true
	}
	// Serialised, the n admissions saw 0, 1, …, n-1 earlier runs.
	for k := range n {
		if !counts[k] {
			t.Fatalf("no admission saw %d earlier runs (saw %v): two read the ledger at once", k, seen)
		}
	}
}

// A ledger that cannot be read or written refuses: the submission stores
// nothing, the release stores nothing, and what was stored is unchanged.
// The failure is real: the job store's ledger table is dropped behind the
// coordinator's back, as a damaged or half-restored file would have it.
func TestLedgerFailureFailsClosed(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "haven.db")
	s := openTest(t, path)
	defer s.Close()
	first := ledgerRun(1, "QHM", havenv1.RunState_RUN_STATE_PENDING)
	admit(t, s, first, t0.Add(-time.Hour))
	if err := s.PutRelease(ctx, Release{RunID: first.Id, CreatedAt: t0, Table: []byte("first table")}); err != nil {
		t.Fatal(err)
	}
	second := ledgerRun(2, "QHM", havenv1.RunState_RUN_STATE_PENDING)
	admit(t, s, second, t0.Add(-time.Hour))

	other, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Exec(`DROP TABLE ledger`); err != nil {
		t.Fatal(err)
	}

	called := false
	_, err = s.AdmitRun(ctx, LedgerQuery{DefinitionID: "t2dm-prevalence"}, func(LedgerView) (*havenv1.Run, error) {
		called = true
		return ledgerRun(3, "QHM", havenv1.RunState_RUN_STATE_PENDING), nil
	})
	if !errors.Is(err, ErrLedger) || called {
		t.Fatalf("AdmitRun on a missing ledger = %v (decide called: %v), want ErrLedger before deciding", err, called)
	}
	if _, err := s.GetRun(ctx, "run-003"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("run-003 was stored: %v", err)
	}

	err = s.PutRelease(ctx, Release{RunID: second.Id, CreatedAt: t0, Table: []byte("second table")})
	if !errors.Is(err, ErrLedger) {
		t.Fatalf("PutRelease without a ledger = %v, want ErrLedger", err)
	}
	if _, err := s.GetRelease(ctx, second.Id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the second table was stored without its ledger entry: %v", err)
	}
	rel, err := s.GetRelease(ctx, first.Id)
	if err != nil || string(rel.Table) != "first table" {
		t.Fatalf("the first release changed: %q %v", rel.Table, err)
	}
	got, err := s.GetRun(ctx, second.Id)
	if err != nil || !proto.Equal(got, second) {
		t.Fatalf("the second run changed: %v", err)
	}
}

// A run stored before the ledger existed enters it when it releases.
func TestReleaseOfARunWithoutEntryAddsOne(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "haven.db"))
	defer s.Close()
	r := ledgerRun(1, "QYG", havenv1.RunState_RUN_STATE_RUNNING)
	if err := s.CreateRun(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRelease(ctx, Release{RunID: r.Id, CreatedAt: t0, Table: []byte("t")}); err != nil {
		t.Fatal(err)
	}
	all, err := s.LedgerEntries(ctx, r.DefinitionId, time.Time{})
	if err != nil || len(all) != 1 || !all[0].Released() || all[0].RequesterOrg != "QYG" || all[0].Parameters["min_age"] != int64(17) {
		t.Fatalf("ledger after release = %+v (%v)", all, err)
	}
}
