package node

import (
	"os"
	"path/filepath"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/havenhealth/haven/node/nodetest"
)

// readMetrics parses the node's metrics file as node_exporter's textfile
// collector would; nil if it is not there yet.
func readMetrics(t *testing.T, path string) map[string]*dto.MetricFamily {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	must(t, err)
	defer f.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(f)
	if err != nil {
		t.Fatalf("the metrics file does not parse: %v", err)
	}
	return fams
}

// metricValue is the value of family name's metric with label name=value
// (any, if name is empty), and whether there is one.
func metricValue(fams map[string]*dto.MetricFamily, family, name, value string) (float64, bool) {
	for _, m := range fams[family].GetMetric() {
		match := name == ""
		for _, l := range m.GetLabel() {
			match = match || (l.GetName() == name && l.GetValue() == value)
		}
		if !match {
			continue
		}
		if c := m.GetCounter(); c != nil {
			return c.GetValue(), true
		}
		return m.GetGauge().GetValue(), true
	}
	return 0, false
}

// A node writes the metrics file named in its config: connected, and a
// task done counted with what it sent.
func TestMetricsTextfile(t *testing.T) {
	s := newSite(t, "gp")
	path := filepath.Join(s.dir, "node_exporter", "haven.prom")
	must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	f, err := os.OpenFile(s.config, os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	_, err = f.WriteString("metrics: {textfile: node_exporter/haven.prom}\n")
	must(t, err)
	must(t, f.Close())
	s.start(t)

	var fams map[string]*dto.MetricFamily
	// eventually waits until the file, read afresh each time, satisfies ok.
	eventually := func(what string, ok func() bool) {
		t.Helper()
		nodetest.Eventually(t, what, func() bool {
			fams = readMetrics(t, path)
			return fams != nil && ok()
		})
	}
	eventually("the metrics file says connected, no task done", func() bool {
		c, _ := metricValue(fams, "haven_node_link_connected", "site", s.site.ODS)
		d, ok := metricValue(fams, "haven_node_tasks_total", "outcome", "done")
		return c == 1 && ok && d == 0
	})

	task := s.task(t, "t2dm-prevalence", "run-metrics")
	d := s.send(t, task).GetDone()
	if d == nil {
		t.Fatal("the task was not done")
	}
	eventually("the metrics file counts the task done", func() bool {
		done, _ := metricValue(fams, "haven_node_tasks_total", "outcome", "done")
		rows, _ := metricValue(fams, "haven_node_rows_sent_total", "", "")
		bytes, _ := metricValue(fams, "haven_node_bytes_sent_total", "", "")
		last, _ := metricValue(fams, "haven_node_last_task_timestamp_seconds", "", "")
		return done == 1 && rows == float64(d.GetRows()) && bytes == float64(d.GetBytes()) && last > 0
	})
	for _, name := range []string{"haven_node_ndop_patients", "haven_node_uptime_seconds", "haven_node_info"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("the metrics file lacks %s", name)
		}
	}
	if refused, ok := metricValue(fams, "haven_node_tasks_total", "outcome", "refused"); !ok || refused != 0 {
		t.Errorf("refused tasks: %v %v, want 0", refused, ok)
	}
}
