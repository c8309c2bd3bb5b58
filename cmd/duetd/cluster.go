package main

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"duet/config"
	"duet/engine/cluster"
	"duet/engine/hub"
	"duet/engine/service"
)

// joinCluster puts core in cluster mode when cluster.redis is set,
// registers the cluster's metrics with reg, and returns the node and
// what leaves the cluster again; with no cluster.redis it does nothing
// and the node stays a single node, all in memory (node nil). settings
// is the fingerprint of the settings every node should share, which the
// node publishes for the others to compare with theirs.
func joinCluster(c config.Cluster, settings string, core *hub.Hub, log *zap.Logger, reg prometheus.Registerer) (node *cluster.Node, leave func(), err error) {
	if c.Redis == "" {
		return nil, func() {}, nil
	}
	secret, err := c.SecretBytes()
	if err != nil {
		return nil, nil, err
	}
	cluster.LogRedisTo(log)
	node, err = cluster.Join(core, cluster.Options{RedisURL: c.Redis, NodeID: c.NodeID, Logger: log, Secret: secret, Settings: settings})
	if err != nil {
		return nil, nil, err
	}
	if err := reg.Register(clusterCollector{node}); err != nil {
		return nil, nil, err
	}
	log.Info("cluster mode", zap.String("node_id", node.ID()), zap.Bool("linked", node.Up()), zap.String("settings", settings))
	return node, func() {
		// The engine has logged everyone out by now, or parked them; what is left is
		// to send what is queued for other nodes and drop the lease.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := node.Close(ctx); err != nil {
			log.Warn("leaving the cluster", zap.Error(err))
		}
	}, nil
}

// linkedToRedis is the readiness of a node of a cluster: while it is
// not linked to Redis it answers every login unavailable, so /readyz
// answers 503, and a load balancer, or an operator's rolling restart,
// does not take it for a node that serves.
func linkedToRedis(node *cluster.Node) service.ReadyCheck {
	return func() string {
		if node.Up() {
			return ""
		}
		return "not linked to Redis"
	}
}

// clusterCollector reads the cluster node's counts when scraped.
type clusterCollector struct{ node *cluster.Node }

var (
	batchesSentDesc = prometheus.NewDesc("duet_cluster_batches_sent_total",
		"Batches of events published to other nodes.", nil, nil)
	batchesReceivedDesc = prometheus.NewDesc("duet_cluster_batches_received_total",
		"Batches of events accepted from other nodes.", nil, nil)
	batchesRejectedDesc = prometheus.NewDesc("duet_cluster_batches_rejected_total",
		"Batches published on this node's channel and refused: malformed, stale (bound to another run or an old epoch of this node), replayed, or forged (not sealed with the cluster secret).",
		[]string{"reason"}, nil)
	recordsRejectedDesc = prometheus.NewDesc("duet_cluster_records_rejected_total",
		"Directory records a connect found not written by a node of this cluster.", nil, nil)
	foreignNodesDesc = prometheus.NewDesc("duet_cluster_foreign_nodes",
		"Nodes in Redis whose lease names another cluster secret: they and this node cannot pair.", nil, nil)
	otherSettingsDesc = prometheus.NewDesc("duet_cluster_nodes_with_other_settings",
		"Live nodes whose shared settings (resume.*, limits.*, auth; their fingerprint) differ from this node's: a session is held to the values of whichever node has it.", nil, nil)
	pairingsDesc = prometheus.NewDesc("duet_cluster_pairings_total",
		"Pairings made by a connect on this node with a user on another node.", nil, nil)
	pairingsCutDesc = prometheus.NewDesc("duet_cluster_pairings_cut_total",
		"Pairings of this node's users with users on other nodes that this node cut, by cause: redis_lost, node_gone, node_deaf, queue_full, move_timeout, lease_lapsed.",
		[]string{"cause"}, nil)
	sessionsParkedDesc = prometheus.NewDesc("duet_cluster_sessions_parked_total",
		"Sessions this node parked in Redis for another node to take up (a drain, or a resume on another node).", nil, nil)
	sessionsTakenUpDesc = prometheus.NewDesc("duet_cluster_sessions_taken_up_total",
		"Parked sessions this node took up for a resume.", nil, nil)
	linkedDesc = prometheus.NewDesc("duet_cluster_linked",
		"1 while this node is linked to Redis, 0 while it is not (it then answers logins unavailable, and /readyz 503).", nil, nil)
)

func (clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- batchesSentDesc
	ch <- batchesReceivedDesc
	ch <- batchesRejectedDesc
	ch <- recordsRejectedDesc
	ch <- foreignNodesDesc
	ch <- otherSettingsDesc
	ch <- pairingsDesc
	ch <- pairingsCutDesc
	ch <- sessionsParkedDesc
	ch <- sessionsTakenUpDesc
	ch <- linkedDesc
}

func (c clusterCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.node.Stats()
	ch <- prometheus.MustNewConstMetric(batchesSentDesc, prometheus.CounterValue, float64(st.BatchesSent))
	ch <- prometheus.MustNewConstMetric(batchesReceivedDesc, prometheus.CounterValue, float64(st.BatchesReceived))
	for _, r := range cluster.RejectReasons {
		ch <- prometheus.MustNewConstMetric(batchesRejectedDesc, prometheus.CounterValue, float64(st.BatchesRejected[r]), r)
	}
	ch <- prometheus.MustNewConstMetric(recordsRejectedDesc, prometheus.CounterValue, float64(st.RecordsRejected))
	ch <- prometheus.MustNewConstMetric(foreignNodesDesc, prometheus.GaugeValue, float64(st.ForeignNodes))
	ch <- prometheus.MustNewConstMetric(otherSettingsDesc, prometheus.GaugeValue, float64(st.NodesWithOtherSettings))
	ch <- prometheus.MustNewConstMetric(pairingsDesc, prometheus.CounterValue, float64(st.Pairings))
	for _, c := range cluster.CutCauses {
		ch <- prometheus.MustNewConstMetric(pairingsCutDesc, prometheus.CounterValue, float64(st.PairingsCut[c]), c)
	}
	ch <- prometheus.MustNewConstMetric(sessionsParkedDesc, prometheus.CounterValue, float64(st.SessionsParked))
	ch <- prometheus.MustNewConstMetric(sessionsTakenUpDesc, prometheus.CounterValue, float64(st.SessionsMoved))
	linked := 0.0
	if c.node.Up() {
		linked = 1
	}
	ch <- prometheus.MustNewConstMetric(linkedDesc, prometheus.GaugeValue, linked)
}
