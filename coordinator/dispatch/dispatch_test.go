package dispatch

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/havenhealth/haven/coordinator/store"
	"github.com/havenhealth/haven/internal/testutil"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

func TestConcat(t *testing.T) {
	schema := arrow.NewSchema([]arrow.Field{{Name: "n", Type: arrow.PrimitiveTypes.Int64}, {Name: "s", Type: arrow.BinaryTypes.String}}, nil)
	rec := func(vals ...int64) arrow.Record {
		b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
		defer b.Release()
		for _, v := range vals {
			b.Field(0).(*array.Int64Builder).Append(v)
			b.Field(1).(*array.StringBuilder).Append(strings.Repeat("x", int(v)))
		}
		return b.NewRecord()
	}
	parts := []arrow.Record{rec(1, 2), rec(), rec(3), rec(4, 5, 6)}
	defer func() {
		for _, p := range parts {
			p.Release()
		}
	}()
	got, err := concat(schema, parts)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Release()
	if got.NumRows() != 6 {
		t.Fatalf("%d rows, want 6", got.NumRows())
	}
	for i := range 6 {
		if n := got.Column(0).(*array.Int64).Value(i); n != int64(i+1) || got.Column(1).(*array.String).Value(i) != strings.Repeat("x", i+1) {
			t.Errorf("row %d: %d", i, n)
		}
	}
	if none, err := concat(schema, []arrow.Record{parts[1]}); none != nil || err != nil {
		t.Errorf("an upload of no rows gave %v, %v", none, err)
	}
}

func TestRedact(t *testing.T) {
	msg := `batch from gp site A81001: field sex: row 0: unknown value "9434765919"; want one of ["F" "I" "M" "U"]`
	got := Redact(msg)
	if strings.Contains(got, "9434765919") || !strings.Contains(got, "field sex: row 0") {
		t.Errorf("Redact = %s", got)
	}
}

// TestRunStateMoves pins the run lifecycle down: the moves a run makes on
// its way to a release, a refusal, a failure, a cancellation or an
// interruption are legal; leaving a final state, skipping LINKING on the
// way to a release, and going back are not.
func TestRunStateMoves(t *testing.T) {
	const (
		pending     = havenv1.RunState_RUN_STATE_PENDING
		running     = havenv1.RunState_RUN_STATE_RUNNING
		linking     = havenv1.RunState_RUN_STATE_LINKING
		released    = havenv1.RunState_RUN_STATE_RELEASED
		refused     = havenv1.RunState_RUN_STATE_REFUSED
		failed      = havenv1.RunState_RUN_STATE_FAILED
		cancelled   = havenv1.RunState_RUN_STATE_CANCELLED
		interrupted = havenv1.RunState_RUN_STATE_INTERRUPTED
	)
	for _, tc := range []struct {
		from, to havenv1.RunState
		legal    bool
	}{
		{pending, running, true}, {running, linking, true}, {linking, released, true},
		{linking, refused, true}, {linking, failed, true}, {running, cancelled, true},
		{linking, cancelled, true}, {pending, interrupted, true}, {running, interrupted, true},
		{running, released, false}, {pending, linking, false}, {cancelled, released, false},
		{released, running, false}, {interrupted, linking, false}, {linking, running, false},
		{refused, released, false}, {failed, cancelled, false},
	} {
		if got := canMoveRun(tc.from, tc.to); got != tc.legal {
			t.Errorf("%s → %s: legal %v, want %v", tc.from, tc.to, got, tc.legal)
		}
	}
	for s := range runMoves {
		if FinalRun(s) {
			t.Errorf("final state %s has moves", s)
		}
	}
}

// TestSetStateRefusesIllegalMoves asks the dispatcher for every move
// between run states: a legal one is made, stored and announced to
// watchers; an illegal one is logged and leaves the run, the store and
// the event sequence as they were.
func TestSetStateRefusesIllegalMoves(t *testing.T) {
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "coordinator.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	at := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	d := &Dispatcher{cfg: Config{Store: st}}
	var states []havenv1.RunState
	for v := range havenv1.RunState_name {
		if s := havenv1.RunState(v); s != havenv1.RunState_RUN_STATE_UNSPECIFIED {
			states = append(states, s)
		}
	}
	i := 0
	for _, from := range states {
		for _, to := range states {
			if from == to {
				continue
			}
			i++
			run := &havenv1.Run{Id: fmt.Sprintf("run-%d", i), DefinitionId: "statins-chd", State: from,
				Requester: &havenv1.Requester{Id: "ana", Org: "QHM"}, SubmittedAt: timestamppb.New(at), UpdatedAt: timestamppb.New(at),
				Coverage: &havenv1.Coverage{}}
			if err := st.CreateRun(ctx, run); err != nil {
				t.Fatal(err)
			}
			r := newActiveRun(run, nil, nil, nil, nil, "")
			w := &watcher{ch: make(chan *havenv1.RunEvent, 1)}
			r.watchers[w] = struct{}{}
			logs := &testutil.SyncBuffer{}
			d.log = slog.New(slog.NewTextHandler(logs, nil))
			r.mu.Lock()
			d.setState(ctx, r, to, at.Add(time.Minute))
			r.mu.Unlock()
			stored, err := st.GetRun(ctx, run.Id)
			if err != nil {
				t.Fatal(err)
			}
			legal := canMoveRun(from, to)
			want := from
			if legal {
				want = to
			}
			if run.State != want || stored.GetState() != want {
				t.Errorf("%s → %s: the run is %s, stored %s; want %s", from, to, run.State, stored.GetState(), want)
			}
			if moved := len(w.ch) == 1; moved != legal {
				t.Errorf("%s → %s: an event was sent: %v", from, to, moved)
			}
			if refused := strings.Contains(logs.String(), "illegal run state change refused"); refused == legal {
				t.Errorf("%s → %s: logged %q", from, to, logs.String())
			}
		}
	}
}
