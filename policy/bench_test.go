package policy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"
)

// Decisions per second on one core: go test -run '^$' -bench . -cpu 1 ./policy
// Each iteration is a whole decision: encode and digest the input,
// evaluate, check the result and write the decision log (to io.Discard).
func BenchmarkSubmit(b *testing.B) {
	k := newKey(b)
	e := load(b, signedReference(b, k), k, func(c *Config) { c.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil)) })
	in := validSubmit()
	ctx := context.Background()
	for b.Loop() {
		if d, err := e.Submit(ctx, in); err != nil || !d.Allow {
			b.Fatalf("allow=%v err=%v", d.Allow, err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}

func BenchmarkParticipate(b *testing.B) {
	k := newKey(b)
	e := load(b, signedReference(b, k), k, func(c *Config) { c.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil)) })
	in := validParticipate()
	ctx := context.Background()
	for b.Loop() {
		if d, err := e.Participate(ctx, in); err != nil || !d.Allow {
			b.Fatalf("allow=%v err=%v", d.Allow, err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}

func BenchmarkDisclose(b *testing.B) {
	k := newKey(b)
	e := load(b, signedReference(b, k), k, func(c *Config) { c.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil)) })
	in := validDisclose()
	ctx := context.Background()
	for b.Loop() {
		if d, err := e.Disclose(ctx, in); err != nil || !d.Allow {
			b.Fatalf("allow=%v err=%v", d.Allow, err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}

// BenchmarkSubmitWithLedger is BenchmarkSubmit with a release ledger of
// earlier runs of the definition (none near, none over a budget): what the
// ledger rules add to each submission. 200 is a busy definition in one
// ICB; 2,520 is the national worst case the reference budget allows (42
// ICBs, 60 runs each in 30 days).
func BenchmarkSubmitWithLedger(b *testing.B) {
	k := newKey(b)
	e := load(b, signedReference(b, k), k, func(c *Config) { c.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil)) })
	for _, entries := range []int{200, 2520} {
		b.Run(fmt.Sprintf("entries=%d", entries), func(b *testing.B) {
			in := validSubmit()
			for i := range entries {
				in.History.Entries = append(in.History.Entries, LedgerEntry{
					RunID:       fmt.Sprintf("run-%04d", i),
					Requester:   LedgerRequester{ID: fmt.Sprintf("user-%d", i), Org: fmt.Sprintf("ORG%d", i%42)},
					Parameters:  map[string]any{"index_date": fmt.Sprintf("%d-%02d-01", 2018+i/12%8, 1+i%12), "followup_days": int64(180)},
					SubmittedAt: testNow.Add(-time.Duration(i) * time.Minute),
					Released:    true,
				})
			}
			ctx := context.Background()
			for b.Loop() {
				if d, err := e.Submit(ctx, in); err != nil || !d.Allow {
					b.Fatalf("allow=%v reasons=%v err=%v", d.Allow, d.Reasons, err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
		})
	}
}
