package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func openTest(t *testing.T, path string) *SQLite {
	t.Helper()
	s, err := OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func testRun(i int, state havenv1.RunState) *havenv1.Run {
	return &havenv1.Run{
		Id:           fmt.Sprintf("run-%03d", i),
		DefinitionId: []string{"t2dm-prevalence", "statins-chd"}[i%2],
		Parameters: map[string]*havenv1.ParameterValue{
			"index_date": {Value: &havenv1.ParameterValue_DateValue{DateValue: "2025-03-31"}},
		},
		Purpose:     "service-planning",
		Requester:   &havenv1.Requester{Id: "ana", Org: []string{"QHM", "QYG"}[i%2]},
		State:       state,
		SubmittedAt: timestamppb.New(t0.Add(time.Duration(i) * time.Minute)),
		Coverage: &havenv1.Coverage{SitesExpected: 10, SitesAnswered: 9, Sites: []*havenv1.SiteStatus{
			{SiteOds: "A81001", State: havenv1.SiteState_SITE_STATE_DONE, Rows: 40},
		}},
	}
}

func TestRunsSurviveReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "haven.db")
	s := openTest(t, path)
	want := map[string]*havenv1.Run{}
	for i := range 5 {
		r := testRun(i, havenv1.RunState_RUN_STATE_RELEASED)
		if err := s.CreateRun(ctx, r); err != nil {
			t.Fatal(err)
		}
		want[r.Id] = r
	}
	r2 := proto.Clone(want["run-002"]).(*havenv1.Run)
	r2.State = havenv1.RunState_RUN_STATE_FAILED
	r2.Error = "every node refused"
	if err := s.UpdateRun(ctx, r2); err != nil {
		t.Fatal(err)
	}
	want["run-002"] = r2
	table := bytes.Repeat([]byte("ARROW1"), 100)
	if err := s.PutRelease(ctx, Release{RunID: "run-001", CreatedAt: t0, Table: table}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = openTest(t, path)
	defer s.Close()
	for id, w := range want {
		got, err := s.GetRun(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, w) {
			t.Errorf("run %s after reopen = %v, want %v", id, got, w)
		}
	}
	rel, err := s.GetRelease(ctx, "run-001")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rel.Table, table) || !rel.CreatedAt.Equal(t0) || len(rel.SHA256) != 64 {
		t.Fatalf("release after reopen: %+v", rel)
	}
	if v, _ := s.SchemaVersion(ctx); v != len(migrations) {
		t.Fatalf("schema version %d, want %d", v, len(migrations))
	}
}

func TestErrors(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "haven.db"))
	defer s.Close()
	r := testRun(1, havenv1.RunState_RUN_STATE_PENDING)
	r.ClientRequestId = "req-1"
	if err := s.CreateRun(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRun(ctx, r); !errors.Is(err, ErrAlreadyExists) {
		t.Errorf("duplicate id: %v", err)
	}
	dup := testRun(2, havenv1.RunState_RUN_STATE_PENDING)
	dup.Requester = r.Requester
	dup.ClientRequestId = "req-1"
	if err := s.CreateRun(ctx, dup); !errors.Is(err, ErrAlreadyExists) {
		t.Errorf("duplicate client request id: %v", err)
	}
	if got, err := s.FindRunByClientRequestID(ctx, "QYG", "ana", "req-1"); err != nil || got.Id != r.Id {
		t.Errorf("FindRunByClientRequestID = %v, %v", got, err)
	}
	// The same user id in another organisation is another requester: it
	// neither finds the run nor collides with its client request id.
	if _, err := s.FindRunByClientRequestID(ctx, "QHM", "ana", "req-1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("another organisation's ana found the run: %v", err)
	}
	other := testRun(4, havenv1.RunState_RUN_STATE_PENDING)
	other.ClientRequestId = "req-1"
	if other.Requester.Org == r.Requester.Org {
		t.Fatal("test runs 1 and 4 should be of different organisations")
	}
	if err := s.CreateRun(ctx, other); err != nil {
		t.Errorf("another organisation's ana with the same client request id: %v", err)
	}
	if _, err := s.GetRun(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetRun unknown: %v", err)
	}
	if err := s.UpdateRun(ctx, testRun(9, 0)); !errors.Is(err, ErrNotFound) {
		t.Errorf("UpdateRun unknown: %v", err)
	}
	for _, bad := range []*havenv1.Run{nil, {}, {Id: "x"}, {Id: "x", Requester: &havenv1.Requester{Id: "a"}}} {
		if err := s.CreateRun(ctx, bad); err == nil {
			t.Errorf("CreateRun(%v) accepted", bad)
		}
	}
	if err := s.PutRelease(ctx, Release{RunID: "nope", Table: []byte("x")}); !errors.Is(err, ErrNotFound) {
		t.Errorf("release of unknown run: %v", err)
	}
	if err := s.PutRelease(ctx, Release{RunID: r.Id, Table: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRelease(ctx, Release{RunID: r.Id, Table: []byte("y")}); !errors.Is(err, ErrAlreadyExists) {
		t.Errorf("second release: %v", err)
	}
	if err := s.PutRelease(ctx, Release{RunID: "run-001", Table: []byte("x"), SHA256: "00"}); err == nil {
		t.Error("wrong digest accepted")
	}
	if _, _, err := s.ListRuns(ctx, ListQuery{PageToken: "!!"}); err == nil {
		t.Error("bad page token accepted")
	}
}

func TestListRunsPagesAndFilters(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "haven.db"))
	defer s.Close()
	const n = 23
	for i := range n {
		st := havenv1.RunState_RUN_STATE_RELEASED
		if i%3 == 0 {
			st = havenv1.RunState_RUN_STATE_REFUSED
		}
		if err := s.CreateRun(ctx, testRun(i, st)); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	tok := ""
	for pages := 0; ; pages++ {
		runs, next, err := s.ListRuns(ctx, ListQuery{PageSize: 5, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range runs {
			ids = append(ids, r.Id)
		}
		if next == "" {
			break
		}
		if pages > n {
			t.Fatal("pagination does not end")
		}
		tok = next
	}
	if len(ids) != n || ids[0] != "run-022" || ids[n-1] != "run-000" {
		t.Fatalf("paged ids = %v", ids)
	}
	runs, _, err := s.ListRuns(ctx, ListQuery{States: []havenv1.RunState{havenv1.RunState_RUN_STATE_REFUSED}, RequesterOrg: "QHM"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range runs {
		if r.State != havenv1.RunState_RUN_STATE_REFUSED || r.Requester.Org != "QHM" {
			t.Errorf("filter let through %s %v %s", r.Id, r.State, r.Requester.Org)
		}
	}
	if len(runs) != 4 { // i in 0,6,12,18 (refused and even)
		t.Errorf("filtered %d runs, want 4", len(runs))
	}
}

func TestInterruptActive(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "haven.db"))
	defer s.Close()
	states := []havenv1.RunState{
		havenv1.RunState_RUN_STATE_PENDING, havenv1.RunState_RUN_STATE_RUNNING,
		havenv1.RunState_RUN_STATE_LINKING, havenv1.RunState_RUN_STATE_RELEASED,
		havenv1.RunState_RUN_STATE_REFUSED,
	}
	for i, st := range states {
		s.CreateRun(ctx, testRun(i, st))
	}
	n, err := s.InterruptActive(ctx, "coordinator shut down", t0)
	if err != nil || n != 3 {
		t.Fatalf("InterruptActive = %d, %v; want 3", n, err)
	}
	for i, st := range states {
		r, _ := s.GetRun(ctx, fmt.Sprintf("run-%03d", i))
		want := st
		if i < 3 {
			want = havenv1.RunState_RUN_STATE_INTERRUPTED
		}
		if r.State != want {
			t.Errorf("run %d: %v, want %v", i, r.State, want)
		}
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "haven.db")
	s := openTest(t, path)
	s.db.Exec(`INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)`)
	s.Close()
	if _, err := OpenSQLite(context.Background(), path); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("open with newer schema: %v", err)
	}
}

func TestDamagedReleaseReported(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "haven.db")
	s := openTest(t, path)
	s.CreateRun(ctx, testRun(1, havenv1.RunState_RUN_STATE_RELEASED))
	s.PutRelease(ctx, Release{RunID: "run-001", Table: []byte("table")})
	s.db.Exec(`UPDATE releases SET arrow_ipc = ? WHERE run_id = 'run-001'`, []byte("tampered"))
	if _, err := s.GetRelease(ctx, "run-001"); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Fatalf("damaged release: %v", err)
	}
	s.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
}
