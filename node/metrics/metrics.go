// Package metrics writes a node's metrics in the Prometheus text format,
// for node_exporter's textfile collector. A node listens on no port, so it
// cannot be scraped: it writes a file instead, replaced whole (a temporary
// file in the same directory, renamed over it) so that node_exporter never
// reads half of one.
package metrics

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Snapshot is what the file says: the node's state at one moment.
type Snapshot struct {
	// Site is the site's ODS code and Kind its kind (gp or trust).
	Site, Kind string
	// Coordinator is the address the node dials.
	Coordinator string
	// Connected says the link to the coordinator is up.
	Connected bool
	// Tasks counts finished tasks by outcome since the node started
	// (runner.Outcome*); every outcome in Outcomes is written, zero or not.
	Tasks map[string]int64
	// TasksRunning is how many tasks run now.
	TasksRunning int
	// LastTask is when the last task finished; zero if none has.
	LastTask time.Time
	// RowsSent and BytesSent are what finished tasks uploaded.
	RowsSent, BytesSent int64
	// NDOPPatients is the size of the national data opt-out list in force.
	NDOPPatients int
	// NetworkOptOuts is the network type 1 list in force, nil until the
	// node has one.
	NetworkOptOuts *NetworkOptOuts
	// Started is when the node process started; Now is when the snapshot
	// was taken.
	Started, Now time.Time
}

// NetworkOptOuts is the network type 1 opt-out list a node holds.
type NetworkOptOuts struct {
	Version string
	Hashes  int
}

// Outcomes are the task outcomes always written, so that a rate over one
// that has not happened yet is zero rather than absent.
var Outcomes = []string{"done", "refused", "failed", "cancelled"}

// Write replaces the file at path with s in the text exposition format.
func Write(path string, s Snapshot) error {
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(snapshotCollector{s}); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	if err := prometheus.WriteToTextfile(path, reg); err != nil {
		return fmt.Errorf("metrics file %s: %w", path, err)
	}
	return nil
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("haven_node_"+name, help, labels, nil)
}

var (
	infoDesc      = desc("info", "The node: its site, the site's kind and the coordinator it dials (always 1).", "site", "kind", "coordinator")
	connectedDesc = desc("link_connected", "1 while the node's link to the coordinator is up, else 0.", "site")
	tasksDesc     = desc("tasks_total", "Tasks finished since the node started, by outcome.", "outcome")
	runningDesc   = desc("tasks_running", "Tasks running now.")
	lastTaskDesc  = desc("last_task_timestamp_seconds", "When the last task finished (Unix time); 0 if none has since the node started.")
	rowsDesc      = desc("rows_sent_total", "Rows uploaded by finished tasks since the node started.")
	bytesDesc     = desc("bytes_sent_total", "Bytes uploaded by finished tasks since the node started.")
	ndopDesc      = desc("ndop_patients", "Patients on the national data opt-out list in force.")
	networkDesc   = desc("network_optout_hashes", "Entries of the network type 1 opt-out list in force, labelled with its version.", "version")
	startDesc     = desc("start_time_seconds", "When the node process started (Unix time).")
	uptimeDesc    = desc("uptime_seconds", "How long the node process has run.")
	updatedDesc   = desc("metrics_updated_timestamp_seconds", "When this file was written (Unix time): a stale file means a stuck or stopped node.")
)

// snapshotCollector collects a Snapshot's values as constant metrics.
type snapshotCollector struct{ s Snapshot }

func (snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{infoDesc, connectedDesc, tasksDesc, runningDesc, lastTaskDesc, rowsDesc,
		bytesDesc, ndopDesc, networkDesc, startDesc, uptimeDesc, updatedDesc} {
		ch <- d
	}
}

func (c snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(infoDesc, 1, s.Site, s.Kind, s.Coordinator)
	gauge(connectedDesc, boolValue(s.Connected), s.Site)
	for _, o := range Outcomes {
		counter(tasksDesc, float64(s.Tasks[o]), o)
	}
	gauge(runningDesc, float64(s.TasksRunning))
	gauge(lastTaskDesc, unix(s.LastTask))
	counter(rowsDesc, float64(s.RowsSent))
	counter(bytesDesc, float64(s.BytesSent))
	gauge(ndopDesc, float64(s.NDOPPatients))
	if n := s.NetworkOptOuts; n != nil {
		gauge(networkDesc, float64(n.Hashes), n.Version)
	}
	gauge(startDesc, unix(s.Started))
	if !s.Started.IsZero() && !s.Now.IsZero() {
		gauge(uptimeDesc, s.Now.Sub(s.Started).Seconds())
	}
	gauge(updatedDesc, unix(s.Now))
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// unix is t in Unix seconds, 0 for the zero time.
func unix(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}
