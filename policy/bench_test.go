package policy

import (
	"context"
	"io"
	"log/slog"
	"testing"
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
