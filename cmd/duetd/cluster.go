package main

import (
	"context"
	"time"

	"go.uber.org/zap"

	"duet/config"
	"duet/engine/cluster"
	"duet/engine/hub"
)

// joinCluster puts core in cluster mode when cluster.redis is set, and
// returns what leaves the cluster again; with no cluster.redis it does
// nothing and the node stays a single node, all in memory.
func joinCluster(c config.Cluster, core *hub.Hub, log *zap.Logger) (leave func(), err error) {
	if c.Redis == "" {
		return func() {}, nil
	}
	node, err := cluster.Join(core, cluster.Options{RedisURL: c.Redis, NodeID: c.NodeID, Logger: log})
	if err != nil {
		return nil, err
	}
	log.Info("cluster mode", zap.String("node_id", node.ID()), zap.Bool("linked", node.Up()))
	return func() {
		// The engine has logged everyone out by now; what is left is
		// to send what is queued for other nodes and drop the lease.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := node.Close(ctx); err != nil {
			log.Warn("leaving the cluster", zap.Error(err))
		}
	}, nil
}
