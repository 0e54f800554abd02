package coordinator_test

import (
	"net/http"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/havenhealth/haven/coordinator/coordinatortest"
)

// TestMetrics scrapes a real coordinator's /metrics after a released run
// and reads what an operator would watch: the run finished as released,
// with its duration; the uploads of both sites accepted, with their rows;
// the policy decisions timed; the two practices' links connected; the
// audit head and the store's size.
func TestMetrics(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{Metrics: true})
	statinsSites(t, ctx, n, 6, 2, 120)
	releaseStatins(t, ctx, n, "ana")

	resp, err := http.Get(n.MetricsURL())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	value := func(name string, labels map[string]string) (float64, bool) {
		f, ok := families[name]
		if !ok {
			return 0, false
		}
	next:
		for _, m := range f.GetMetric() {
			for k, v := range labels {
				if !hasLabel(m, k, v) {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue(), true
			case m.Gauge != nil:
				return m.GetGauge().GetValue(), true
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount()), true
			}
		}
		return 0, false
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		min    float64
	}{
		{"haven_runs_finished_total", map[string]string{"state": "released"}, 1},
		{"haven_run_duration_seconds", map[string]string{"state": "released"}, 1},
		{"haven_uploads_total", map[string]string{"outcome": "accepted"}, 2},
		{"haven_upload_rows_total", nil, 1},
		{"haven_upload_bytes_total", nil, 1},
		{"haven_policy_decision_seconds", map[string]string{"decision": "haven/submit"}, 1},
		{"haven_policy_decision_seconds", map[string]string{"decision": "haven/disclose"}, 1},
		{"haven_node_links", map[string]string{"kind": "gp"}, 2},
		{"haven_audit_head_seq", nil, 5},
		{"haven_store_bytes", nil, 4096},
	} {
		v, ok := value(c.name, c.labels)
		if !ok || v < c.min {
			t.Errorf("%s%v = %v (present %v), want at least %v", c.name, c.labels, v, ok, c.min)
		}
	}
	if v, ok := value("haven_runs_active", map[string]string{"state": "running"}); !ok || v != 0 {
		t.Errorf("haven_runs_active{running} = %v (present %v), want 0 after the run", v, ok)
	}
	if v, _ := value("haven_uploads_total", map[string]string{"outcome": "rejected"}); v != 0 {
		t.Errorf("%v uploads counted as rejected", v)
	}
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}
