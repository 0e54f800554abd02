// Package metrics is the coordinator's Prometheus metrics: what operators
// watch and alert on. Counters and histograms are fed as things happen
// (runs finishing, uploads received, policy decisions); gauges are read
// from their sources at each scrape, so they cannot drift from the truth.
//
// Nothing here carries a patient's data, a run's parameters or a
// requester's identity: labels are states, site kinds and decision names.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Sources are read at each scrape.
type Sources struct {
	// ActiveRuns counts the runs in progress by state ("pending",
	// "running", "linking").
	ActiveRuns func() map[string]int
	// Links counts the connected node links by site kind ("gp", "trust").
	Links func() map[string]int
	// AuditHead is the audit log's last sequence number.
	AuditHead func() uint64
	// StoreBytes is the job store's size on disk.
	StoreBytes func() int64
}

// Metrics is the coordinator's metrics. Its methods are safe for
// concurrent use, and a nil *Metrics ignores every observation, so code
// that observes needs no check.
type Metrics struct {
	reg          *prometheus.Registry
	runsFinished *prometheus.CounterVec
	runDuration  *prometheus.HistogramVec
	uploadRows   prometheus.Counter
	uploadBytes  prometheus.Counter
	uploads      *prometheus.CounterVec
	decisions    *prometheus.HistogramVec
	spilledBytes prometheus.Counter
	spilledRuns  prometheus.Counter
}

// New makes the metrics, reading gauges from src.
func New(src Sources) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		runsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "haven_runs_finished_total",
			Help: "Runs that reached a final state since the coordinator started, by that state (released, refused, failed, cancelled, interrupted).",
		}, []string{"state"}),
		runDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "haven_run_duration_seconds",
			Help:    "Time from a run's submission to its final state, by that state.",
			Buckets: []float64{0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800},
		}, []string{"state"}),
		uploadRows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "haven_upload_rows_total",
			Help: "Rows of partial results received from nodes and accepted.",
		}),
		uploadBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "haven_upload_bytes_total",
			Help: "Bytes of partial results received from nodes and accepted.",
		}),
		uploads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "haven_uploads_total",
			Help: "Uploads of partial results from nodes, by outcome (accepted, rejected).",
		}, []string{"outcome"}),
		decisions: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "haven_policy_decision_seconds",
			Help:    "Time to evaluate a policy decision, by decision (haven/submit, haven/disclose).",
			Buckets: []float64{0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1},
		}, []string{"decision"}),
		spilledBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "haven_linkage_spilled_bytes_total",
			Help: "Bytes linkage runs wrote to spill files to keep within linkage.memory_budget.",
		}),
		spilledRuns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "haven_linkage_spilled_runs_total",
			Help: "Linkage runs that spilled to disk to keep within linkage.memory_budget.",
		}),
	}
	m.reg.MustRegister(m.runsFinished, m.runDuration, m.uploadRows, m.uploadBytes, m.uploads, m.decisions, m.spilledBytes, m.spilledRuns,
		&gauges{src: src},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// RunFinished records a run that reached final state after d.
func (m *Metrics) RunFinished(state string, d time.Duration) {
	if m == nil {
		return
	}
	m.runsFinished.WithLabelValues(state).Inc()
	m.runDuration.WithLabelValues(state).Observe(d.Seconds())
}

// Upload records an upload: accepted with its rows and bytes, or not.
func (m *Metrics) Upload(accepted bool, rows, bytes int64) {
	if m == nil {
		return
	}
	if !accepted {
		m.uploads.WithLabelValues("rejected").Inc()
		return
	}
	m.uploads.WithLabelValues("accepted").Inc()
	m.uploadRows.Add(float64(rows))
	m.uploadBytes.Add(float64(bytes))
}

// LinkageSpilled records a linkage run's spill: the bytes it wrote to
// spill files, if any.
func (m *Metrics) LinkageSpilled(bytes int64) {
	if m == nil || bytes <= 0 {
		return
	}
	m.spilledRuns.Inc()
	m.spilledBytes.Add(float64(bytes))
}

// Decision records how long a policy decision took.
func (m *Metrics) Decision(name string, d time.Duration) {
	if m == nil {
		return
	}
	m.decisions.WithLabelValues(name).Observe(d.Seconds())
}

// gauges reads the gauges from their sources at each scrape.
type gauges struct{ src Sources }

var (
	activeRunsDesc = prometheus.NewDesc("haven_runs_active", "Runs in progress, by state (pending, running, linking).", []string{"state"}, nil)
	linksDesc      = prometheus.NewDesc("haven_node_links", "Connected node links, by site kind.", []string{"kind"}, nil)
	auditDesc      = prometheus.NewDesc("haven_audit_head_seq", "Sequence number of the audit log's last entry.", nil, nil)
	storeDesc      = prometheus.NewDesc("haven_store_bytes", "Size of the job store on disk, with its write-ahead log.", nil, nil)
)

func (g *gauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- activeRunsDesc
	ch <- linksDesc
	ch <- auditDesc
	ch <- storeDesc
}

func (g *gauges) Collect(ch chan<- prometheus.Metric) {
	if g.src.ActiveRuns != nil {
		runs := g.src.ActiveRuns()
		for _, st := range []string{"pending", "running", "linking"} {
			ch <- prometheus.MustNewConstMetric(activeRunsDesc, prometheus.GaugeValue, float64(runs[st]), st)
		}
	}
	if g.src.Links != nil {
		links := g.src.Links()
		for _, kind := range []string{"gp", "trust"} {
			ch <- prometheus.MustNewConstMetric(linksDesc, prometheus.GaugeValue, float64(links[kind]), kind)
		}
	}
	if g.src.AuditHead != nil {
		ch <- prometheus.MustNewConstMetric(auditDesc, prometheus.GaugeValue, float64(g.src.AuditHead()))
	}
	if g.src.StoreBytes != nil {
		ch <- prometheus.MustNewConstMetric(storeDesc, prometheus.GaugeValue, float64(g.src.StoreBytes()))
	}
}
