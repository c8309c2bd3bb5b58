// Package service is what duetd needs to run as a system service beside
// the engine: Prometheus metrics, the admin HTTP listener (/metrics,
// /healthz, /readyz) and systemd's notification protocol (readiness,
// status, watchdog, stopping).
package service

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"duet/engine/hub"
	"duet/proto"
)

// Metrics is duetd's Prometheus registry. It implements engine.Metrics
// for the counts only the engine can make, and reads the pairing core's
// own counters at scrape time, so relaying a message updates no metric.
// It uses a registry of its own rather than the global one, so two
// daemons in one test process do not collide.
type Metrics struct {
	Registry *prometheus.Registry

	conns       *prometheus.GaugeVec
	opened      *prometheus.CounterVec
	rejected    *prometheus.CounterVec
	disconnects *prometheus.CounterVec
	errors      *prometheus.CounterVec
	slowCuts    prometheus.Counter
	upgrades    prometheus.Counter
	byProtocol  map[string]prometheus.Gauge
	openedByPro map[string]prometheus.Counter
}

// Protocols as the engine names them. A connection opens as one of
// openedAs, by its port, and a web one may then become a WebSocket: an
// upgrade is counted apart (duet_ws_upgrades_total), so that the opened
// counts add up to the connections accepted.
var (
	protocols = []string{"line", "http", "ws"}
	openedAs  = []string{"line", "http"}
)

// NewMetrics registers duetd's metrics, reading users, pairs and relay
// counters from core when scraped.
func NewMetrics(core *hub.Hub) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		conns: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "duet_connections",
			Help: "Open connections by protocol: line (TCP), http (web port before an upgrade), ws (WebSocket).",
		}, []string{"protocol"}),
		opened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "duet_connections_opened_total",
			Help: "Connections accepted, by the port's protocol: line (TCP) or http (the web port, WebSockets included: duet_ws_upgrades_total counts those).",
		}, []string{"protocol"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "duet_connections_rejected_total",
			Help: "Connections refused, by reason.",
		}, []string{"reason"}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "duet_disconnects_total",
			Help: "Connections ended, by how they ended (docs/LIMITS.md lists every reason).",
		}, []string{"reason"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "duet_errors_total",
			Help: "Errors told to users, by code.",
		}, []string{"code"}),
		slowCuts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "duet_slow_consumer_cuts_total",
			Help: "Readers cut off for not reading their messages.",
		}),
		upgrades: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "duet_ws_upgrades_total",
			Help: "Web connections upgraded to WebSocket; each was counted opened as http.",
		}),
		byProtocol:  make(map[string]prometheus.Gauge),
		openedByPro: make(map[string]prometheus.Counter),
	}
	// The process collector's process_start_time_seconds needs the boot
	// time from /proc/stat, which the systemd unit hides (ProcSubset=pid):
	// under it the series is silently left out. The metrics are made at
	// start, so their making tells the same from the clock alone.
	started := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "duet_start_time_seconds",
		Help: "When duetd started, in seconds since the Unix epoch (process_start_time_seconds needs /proc/stat, which the systemd unit hides).",
	})
	started.Set(float64(time.Now().UnixMicro()) / 1e6)
	// Resolve the per-protocol series once: the map is read-only after
	// this, so the engine's loops can use it without a lock, and every
	// series shows from the first scrape on, at zero.
	for _, p := range protocols {
		m.byProtocol[p] = m.conns.WithLabelValues(p)
	}
	for _, p := range openedAs {
		m.openedByPro[p] = m.opened.WithLabelValues(p)
	}
	// Every error code shows at zero from the start too: the first of
	// one is then an increase a rate or an alert sees (Declare).
	for _, e := range proto.Errors {
		m.errors.WithLabelValues(e.Code)
	}
	m.Registry.MustRegister(
		m.conns, m.opened, m.rejected, m.disconnects, m.errors, m.slowCuts, m.upgrades, started,
		hubCollector{core},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// ConnOpened implements engine.Metrics.
func (m *Metrics) ConnOpened(protocol string) {
	if c, ok := m.openedByPro[protocol]; ok {
		c.Inc()
		m.byProtocol[protocol].Inc()
	}
}

// Upgraded implements engine.Metrics.
func (m *Metrics) Upgraded() {
	m.byProtocol["http"].Dec()
	m.byProtocol["ws"].Inc()
	m.upgrades.Inc()
}

// ConnClosed implements engine.Metrics.
func (m *Metrics) ConnClosed(protocol string) {
	if g, ok := m.byProtocol[protocol]; ok {
		g.Dec()
	}
}

// Declare implements engine.MetricsDeclarer: the refusals and endings
// the engine may count show at zero from the start.
func (m *Metrics) Declare(refusals, endings []string) {
	for _, r := range refusals {
		m.rejected.WithLabelValues(r)
	}
	for _, e := range endings {
		m.disconnects.WithLabelValues(e)
	}
}

// Rejected implements engine.Metrics.
func (m *Metrics) Rejected(reason string) { m.rejected.WithLabelValues(reason).Inc() }

// Disconnected implements engine.Metrics.
func (m *Metrics) Disconnected(reason string) { m.disconnects.WithLabelValues(reason).Inc() }

// Error implements engine.Metrics.
func (m *Metrics) Error(code string) { m.errors.WithLabelValues(code).Inc() }

// SlowCut implements engine.Metrics.
func (m *Metrics) SlowCut() { m.slowCuts.Inc() }

// hubCollector reads the pairing core's gauges and counters when scraped.
type hubCollector struct{ core *hub.Hub }

var (
	usersDesc    = prometheus.NewDesc("duet_users", "Users logged in now, away ones included.", nil, nil)
	pairsDesc    = prometheus.NewDesc("duet_pairs", "Pairs talking now.", nil, nil)
	pairingsDesc = prometheus.NewDesc("duet_pairings_total", "Pairings made since start.", nil, nil)
	endedDesc    = prometheus.NewDesc("duet_pairings_ended_total",
		"Pairings ended since start, by the reason the partner who stayed was told: left, disconnected, shutdown, slow, timeout, replaced, link_lost.",
		[]string{"reason"}, nil)
	messagesDesc = prometheus.NewDesc("duet_messages_relayed_total", "Messages relayed since start.", nil, nil)
	bytesDesc    = prometheus.NewDesc("duet_relayed_bytes_total", "Bytes of message text relayed since start.", nil, nil)
	sealedDesc   = prometheus.NewDesc("duet_sealed_relayed_total", "Sealed (end-to-end encrypted) frames relayed since start, apart from messages.", nil, nil)
	sealedBDesc  = prometheus.NewDesc("duet_sealed_relayed_bytes_total", "Bytes of sealed frames' data (base64url) relayed since start.", nil, nil)

	// Session resume (docs/RESUME.md).
	awayDesc = prometheus.NewDesc("duet_away_sessions",
		"Sessions away now: their connection dropped, and they wait for a resume.", nil, nil)
	keptDesc = prometheus.NewDesc("duet_resume_kept_bytes",
		"What the messages kept for resumes count against resume.buffer, all sessions together: each its text and 64 bytes.", nil, nil)
	resumesDesc = prometheus.NewDesc("duet_resumes_total",
		"Resumes since start, by outcome: away (a session that was away), zombie (one whose old connection was still open, which was closed), bad_key (refused for a key that is wrong, malformed, expired or used), ended_with_node (refused: on a cluster, the session ended as its node died or stopped).",
		[]string{"outcome"}, nil)
	awayEndedDesc = prometheus.NewDesc("duet_away_sessions_ended_total",
		"Away sessions ended since start without a resume, by reason: timeout (resume.window ran out), evicted (resume.max_away, or resume.max_away_per_ip for their address, was reached and they had been away the longest).",
		[]string{"reason"}, nil)
	awayFullDesc = prometheus.NewDesc("duet_away_full_refusals_total",
		"Messages refused since start with peer_away_full: their receiver was away with as much kept as resume.buffer allows.", nil, nil)
)

func (hubCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- usersDesc
	ch <- pairsDesc
	ch <- pairingsDesc
	ch <- endedDesc
	ch <- messagesDesc
	ch <- bytesDesc
	ch <- sealedDesc
	ch <- sealedBDesc
	ch <- awayDesc
	ch <- keptDesc
	ch <- resumesDesc
	ch <- awayEndedDesc
	ch <- awayFullDesc
}

func (c hubCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.core.Stats()
	ch <- prometheus.MustNewConstMetric(usersDesc, prometheus.GaugeValue, float64(st.Users))
	ch <- prometheus.MustNewConstMetric(pairsDesc, prometheus.GaugeValue, float64(st.Pairs))
	ch <- prometheus.MustNewConstMetric(pairingsDesc, prometheus.CounterValue, float64(st.Pairings))
	for i, r := range proto.Reasons {
		ch <- prometheus.MustNewConstMetric(endedDesc, prometheus.CounterValue, float64(st.PairingsEnded[i]), string(r))
	}
	ch <- prometheus.MustNewConstMetric(messagesDesc, prometheus.CounterValue, float64(st.Messages))
	ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(st.Bytes))
	ch <- prometheus.MustNewConstMetric(sealedDesc, prometheus.CounterValue, float64(st.Sealed))
	ch <- prometheus.MustNewConstMetric(sealedBDesc, prometheus.CounterValue, float64(st.SealedBytes))
	ch <- prometheus.MustNewConstMetric(awayDesc, prometheus.GaugeValue, float64(st.Away))
	ch <- prometheus.MustNewConstMetric(keptDesc, prometheus.GaugeValue, float64(st.HistoryBytes))
	ch <- prometheus.MustNewConstMetric(resumesDesc, prometheus.CounterValue, float64(st.ResumedAway), "away")
	ch <- prometheus.MustNewConstMetric(resumesDesc, prometheus.CounterValue, float64(st.ResumedZombie), "zombie")
	ch <- prometheus.MustNewConstMetric(resumesDesc, prometheus.CounterValue, float64(st.ResumeBadKey), "bad_key")
	ch <- prometheus.MustNewConstMetric(resumesDesc, prometheus.CounterValue, float64(st.ResumeEnded), "ended_with_node")
	ch <- prometheus.MustNewConstMetric(awayEndedDesc, prometheus.CounterValue, float64(st.AwayTimedOut), "timeout")
	ch <- prometheus.MustNewConstMetric(awayEndedDesc, prometheus.CounterValue, float64(st.AwayEvicted), "evicted")
	ch <- prometheus.MustNewConstMetric(awayFullDesc, prometheus.CounterValue, float64(st.AwayRefused))
}
