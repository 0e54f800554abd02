package metrics

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// parse reads a metrics file as node_exporter's textfile collector would.
func parse(t testing.TB, path string) map[string]*dto.MetricFamily {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(f)
	if err != nil {
		t.Fatalf("%s does not parse: %v", path, err)
	}
	return fams
}

// value is the value of family name's metric whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	for _, m := range fams[name].GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			match = match && got[k] == v
		}
		if !match {
			continue
		}
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), true
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

func TestWrite(t *testing.T) {
	start := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	full := Snapshot{Site: "G80001", Kind: "gp", Coordinator: "coordinator.example:8443", Connected: true,
		Tasks: map[string]int64{"done": 7, "refused": 2, "cancelled": 1}, TasksRunning: 1,
		LastTask: start.Add(time.Hour), RowsSent: 12345, BytesSent: 678900, NDOPPatients: 321,
		NetworkOptOuts: &NetworkOptOuts{Version: "epoch-1/42", Hashes: 99}, Started: start, Now: start.Add(2 * time.Hour)}
	for _, c := range []struct {
		name   string
		s      Snapshot
		want   map[string]float64 // "name{label=value}" or "name"
		absent []string
	}{
		{"full", full, map[string]float64{
			`haven_node_tasks_total{outcome=done}`: 7, `haven_node_tasks_total{outcome=refused}`: 2,
			`haven_node_tasks_total{outcome=failed}`: 0, `haven_node_tasks_total{outcome=cancelled}`: 1,
			`haven_node_link_connected{site=G80001}`: 1, `haven_node_tasks_running`: 1,
			`haven_node_last_task_timestamp_seconds`: float64(start.Add(time.Hour).Unix()),
			`haven_node_rows_sent_total`:             12345, `haven_node_bytes_sent_total`: 678900, `haven_node_ndop_patients`: 321,
			`haven_node_network_optout_hashes{version=epoch-1/42}`: 99, `haven_node_uptime_seconds`: 7200,
			`haven_node_info{site=G80001,kind=gp,coordinator=coordinator.example:8443}`: 1,
		}, nil},
		{"just started, not connected", Snapshot{Site: "RXH", Kind: "trust", Started: start, Now: start},
			map[string]float64{`haven_node_tasks_total{outcome=done}`: 0, `haven_node_link_connected{site=RXH}`: 0,
				`haven_node_last_task_timestamp_seconds`: 0, `haven_node_uptime_seconds`: 0},
			[]string{"haven_node_network_optout_hashes"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "haven.prom")
			if err := Write(path, c.s); err != nil {
				t.Fatal(err)
			}
			fams := parse(t, path)
			for key, want := range c.want {
				name, labels := parseKey(key)
				got, ok := value(fams, name, labels)
				if !ok || got != want {
					t.Errorf("%s = %v (present %v), want %v", key, got, ok, want)
				}
			}
			for _, name := range c.absent {
				if _, ok := fams[name]; ok {
					t.Errorf("%s written, want absent", name)
				}
			}
			// Written again, the file is replaced, and no temporary file is left beside it.
			if err := Write(path, c.s); err != nil {
				t.Fatal(err)
			}
			if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
				t.Errorf("%d files beside the metrics file, want none", len(entries)-1)
			}
		})
	}
}

func TestWriteToMissingDirectory(t *testing.T) {
	err := Write(filepath.Join(t.TempDir(), "no-such-dir", "haven.prom"), Snapshot{})
	if err == nil || !strings.Contains(err.Error(), "haven.prom") {
		t.Errorf("error %v, want one naming the file", err)
	}
}

// parseKey splits "name{a=b,c=d}" into the name and its labels.
func parseKey(key string) (string, map[string]string) {
	name, rest, ok := strings.Cut(key, "{")
	labels := map[string]string{}
	if !ok {
		return name, labels
	}
	for _, kv := range strings.Split(strings.TrimSuffix(rest, "}"), ",") {
		k, v, _ := strings.Cut(kv, "=")
		labels[k] = v
	}
	return name, labels
}
