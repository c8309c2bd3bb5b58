package cluster

import (
	"context"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Shared settings. A session that moves between nodes is held to the
// values of whichever node has it at the time, not to one set of them
// (docs/CLUSTER.md), so the nodes should all have the same resume.*,
// limits.* and auth settings. Each node publishes a fingerprint of its
// own (Options.Settings) beside its lease, under a key of its own with
// the lease's TTL rather than in the lease: a node from before it
// reads a lease of any other form as written under another secret, and
// would refuse to pair with every node upgraded past it. At each check
// a node compares the fingerprints of the live nodes with its own, and
// warns of one that differs. It refuses nothing: a rolling restart that
// changes a limit passes through such a cluster on purpose. A node
// that publishes none (one from before it) is unknown, and compared
// with nothing.

func (n *Node) settingsOf(node string) string { return n.key("settings", node) }

// SetSettings changes the fingerprint of the shared settings this node
// publishes (Options.Settings), as a reload that changed one does.
func (n *Node) SetSettings(fingerprint string) {
	n.settings.Store(&fingerprint)
}

// publishSettings writes this node's fingerprint beside its lease, in
// the heartbeat's transaction, for as long as the lease.
func (n *Node) publishSettings(ctx context.Context, p redis.Pipeliner) {
	if fp := *n.settings.Load(); fp != "" {
		p.Set(ctx, n.settingsOf(n.id), fp, n.opts.LeaseTTL)
	}
}

// toldSettings is what a node was last warned of: its fingerprint and
// this node's own at the time, so that a change on either side is told
// again, and nothing else is.
type toldSettings struct{ theirs, own string }

// compareSettings compares the fingerprints the check read (published,
// by node) of the live nodes with this node's own, counts the nodes
// that differ and warns once of each node and fingerprint. It runs on
// the check alone, which owns settingsTold.
func (n *Node) compareSettings(live map[string]leaseInfo, published map[string]*redis.StringCmd) {
	own := *n.settings.Load()
	if n.settingsTold == nil {
		n.settingsTold = make(map[string]toldSettings)
	}
	differ := 0
	for node := range live {
		theirs, err := published[node].Result()
		if err != nil || theirs == "" || own == "" {
			continue // unknown: compared with nothing, and nothing told changes
		}
		told, wasTold := n.settingsTold[node]
		if theirs == own {
			if wasTold {
				delete(n.settingsTold, node)
				n.log.Info("node has the same shared settings as this node again",
					zap.String("other_node", node), zap.String("settings", own))
			}
			continue
		}
		differ++
		if wasTold && told == (toldSettings{theirs, own}) {
			continue
		}
		n.settingsTold[node] = toldSettings{theirs, own}
		n.log.Warn("node has other shared settings (resume.*, limits.*, auth) than this node: "+
			"a session is held to the values of whichever node has it at the time (a resume, to those of the node it lands on), "+
			"and a message to the limits of its sender's node; once a rolling change is done, "+
			"every node should print the same fingerprint in duetd check-config",
			zap.String("other_node", node), zap.String("settings", own), zap.String("other_settings", theirs))
	}
	for node := range n.settingsTold {
		if _, ok := live[node]; !ok {
			delete(n.settingsTold, node)
		}
	}
	n.otherSettings.Store(int64(differ))
}
