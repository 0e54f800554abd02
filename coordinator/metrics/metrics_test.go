package metrics

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func sources() Sources {
	return Sources{
		ActiveRuns: func() map[string]int { return map[string]int{"running": 3, "pending": 1} },
		Links:      func() map[string]int { return map[string]int{"gp": 6500, "trust": 230} },
		AuditHead:  func() uint64 { return 123456 },
		StoreBytes: func() int64 { return 1 << 30 },
	}
}

func TestExposition(t *testing.T) {
	m := New(sources())
	m.RunFinished("released", 12*time.Second)
	m.Upload(true, 1000, 65536)
	m.Upload(false, 0, 0)
	m.Decision("haven/submit", 700*time.Microsecond)
	m.LinkageSpilled(0) // a run that did not spill
	m.LinkageSpilled(4096)
	var nilMetrics *Metrics
	nilMetrics.RunFinished("released", time.Second) // a nil *Metrics ignores observations
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`haven_runs_finished_total{state="released"} 1`,
		`haven_run_duration_seconds_count{state="released"} 1`,
		`haven_uploads_total{outcome="accepted"} 1`,
		`haven_uploads_total{outcome="rejected"} 1`,
		`haven_upload_rows_total 1000`,
		`haven_upload_bytes_total 65536`,
		`haven_policy_decision_seconds_count{decision="haven/submit"} 1`,
		`haven_linkage_spilled_bytes_total 4096`,
		`haven_linkage_spilled_runs_total 1`,
		`haven_runs_active{state="running"} 3`,
		`haven_runs_active{state="linking"} 0`,
		`haven_node_links{kind="gp"} 6500`,
		`haven_audit_head_seq 123456`,
		`haven_store_bytes 1.073741824e+09`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the exposition lacks %q", want)
		}
	}
}

// BenchmarkScrape is one /metrics scrape, with national-scale gauges and
// every histogram filled (the budget: 5 ms).
func BenchmarkScrape(b *testing.B) {
	m := New(sources())
	for _, st := range []string{"released", "refused", "failed", "cancelled", "interrupted"} {
		for i := range 1000 {
			m.RunFinished(st, time.Duration(i)*time.Second)
		}
	}
	for _, d := range []string{"haven/submit", "haven/disclose"} {
		m.Decision(d, time.Millisecond)
	}
	h := m.Handler()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}
