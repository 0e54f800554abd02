package audit_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/havenhealth/haven/coordinator/audit"
	"github.com/havenhealth/haven/coordinator/store"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// BenchmarkSubmitPath measures what a submission writes, side by side
// without and with the audit anchor: the run created in the job store, the
// submission and policy-decision audit entries, and the run updated once
// dispatched (dispatch.Submit's writes). Compare the two ns/op.
func BenchmarkSubmitPath(b *testing.B) {
	for _, anchored := range []bool{false, true} {
		b.Run(map[bool]string{false: "unanchored", true: "anchored"}[anchored], func(b *testing.B) {
			ctx := context.Background()
			dir := b.TempDir()
			st, err := store.OpenSQLite(ctx, filepath.Join(dir, "coordinator.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			var l *audit.Log
			if anchored {
				l, _, err = audit.OpenAnchored(ctx, filepath.Join(dir, "audit.jsonl"), st)
			} else {
				l, err = audit.Open(filepath.Join(dir, "audit.jsonl"))
			}
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			now := time.Now()
			b.ResetTimer()
			for i := range b.N {
				run := &havenv1.Run{Id: fmt.Sprintf("run-%d", i), DefinitionId: "t2dm-prevalence", Purpose: "commissioning",
					Requester: &havenv1.Requester{Id: "ana", Org: "QHM"}, State: havenv1.RunState_RUN_STATE_PENDING,
					SubmittedAt: timestamppb.New(now)}
				if err := st.CreateRun(ctx, run); err != nil {
					b.Fatal(err)
				}
				if _, err := l.Append(ctx, audit.Record{Kind: audit.KindSubmission, RunID: run.Id, Actor: "ana",
					Data: map[string]any{"definition": run.DefinitionId, "purpose": run.Purpose}}); err != nil {
					b.Fatal(err)
				}
				if _, err := l.Append(ctx, audit.Record{Kind: audit.KindDecision, RunID: run.Id, Actor: "coordinator",
					Data: map[string]any{"decision": "haven/submit", "allow": true}}); err != nil {
					b.Fatal(err)
				}
				run.State = havenv1.RunState_RUN_STATE_RUNNING
				if err := st.UpdateRun(ctx, run); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAppend is one audit append without and with the anchor.
func BenchmarkAppend(b *testing.B) {
	for _, anchored := range []bool{false, true} {
		b.Run(map[bool]string{false: "unanchored", true: "anchored"}[anchored], func(b *testing.B) {
			ctx := context.Background()
			dir := b.TempDir()
			st, err := store.OpenSQLite(ctx, filepath.Join(dir, "coordinator.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			var l *audit.Log
			if anchored {
				l, _, err = audit.OpenAnchored(ctx, filepath.Join(dir, "audit.jsonl"), st)
			} else {
				l, err = audit.Open(filepath.Join(dir, "audit.jsonl"))
			}
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			b.ResetTimer()
			for i := range b.N {
				if _, err := l.Append(ctx, audit.Record{Kind: audit.KindDispatch, RunID: "run-1", Actor: "coordinator",
					Data: map[string]any{"site": "A81001", "i": i}}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
