package admission_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/havenhealth/haven/coordinator/admission"
	"github.com/havenhealth/haven/coordinator/store"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// Sixty submissions by one requester at once, each counted and stored
// under the controller against a real job store, each see a different
// count: no two are counted before the other is stored. Another
// requester's runs, and the same user id in another organisation, are not
// counted.
func TestBeginSerialisesCountAndStore(t *testing.T) {
	ctx := context.Background()
	s, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "haven.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	create := func(id, org, user string, state havenv1.RunState, at time.Time) {
		t.Helper()
		if err := s.CreateRun(ctx, &havenv1.Run{Id: id, Requester: &havenv1.Requester{Id: user, Org: org}, State: state,
			SubmittedAt: timestamppb.New(at)}); err != nil {
			t.Fatal(err)
		}
	}
	create("run-other-org", "OTHERORG", "ana", havenv1.RunState_RUN_STATE_RUNNING, now)
	create("run-other-user", "QHM", "bob", havenv1.RunState_RUN_STATE_RUNNING, now)
	create("run-old", "QHM", "ana", havenv1.RunState_RUN_STATE_RELEASED, now.Add(-admission.Window-time.Second))

	c := admission.New(s)
	const n = 60
	seen := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			counts, release, err := c.Begin(ctx, admission.Requester{Org: "QHM", ID: "ana"}, now)
			if err != nil {
				t.Error(err)
				return
			}
			defer release()
			seen[i] = counts.Started + counts.Refused
			state := havenv1.RunState_RUN_STATE_RUNNING
			if i%3 == 0 {
				state = havenv1.RunState_RUN_STATE_REFUSED
			}
			create(fmt.Sprintf("run-%02d", i), "QHM", "ana", state, now)
		}()
	}
	wg.Wait()
	slices.Sort(seen)
	for i, v := range seen {
		if v != i {
			t.Fatalf("submission %d saw %d earlier submissions; the counts were %v", i, v, seen)
		}
	}
	got, err := s.CountSubmissions(ctx, "QHM", "ana", now.Add(-admission.Window))
	if err != nil {
		t.Fatal(err)
	}
	// Active counts runs in progress whenever submitted: run-old is
	// released, the 40 RUNNING ones are ana's, and bob's is her
	// organisation's too.
	if want := (store.SubmissionCounts{Started: 40, Refused: 20, Active: 40, OrgActive: 41}); got != want {
		t.Errorf("counts %+v, want %+v", got, want)
	}
}

func TestBeginNeedsAWholeRequester(t *testing.T) {
	c := admission.New(nil)
	for _, r := range []admission.Requester{{Org: "QHM"}, {ID: "ana"}} {
		if _, _, err := c.Begin(context.Background(), r, time.Now()); err == nil {
			t.Errorf("Begin(%+v) accepted a requester without organisation or id", r)
		}
	}
}
