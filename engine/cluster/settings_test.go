package cluster

import (
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"duet/config"
	"duet/engine/enginetest"
)

// waitUntil polls cond until it holds, failing the test after
// enginetest.Timeout.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(enginetest.Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitChecks waits until n has read other's lease k more times, at k
// more checks.
func waitChecks(t *testing.T, n *Node, other string, k int) {
	t.Helper()
	heard := func() time.Time {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.peers[other].heard
	}
	for range k {
		last := heard()
		waitUntil(t, fmt.Sprintf("%s checked %s again", n.ID(), other), func() bool { return heard().After(last) })
	}
}

// TestNodesWithOtherSettings runs four nodes on a real Redis: a and b
// with the same shared settings, c with another limits.max_line, and
// one that publishes no fingerprint, as a node from before it did. Only
// c differs, each node that sees it says so once and counts it, and
// nothing is refused: its users pair with everyone's.
func TestNodesWithOtherSettings(t *testing.T) {
	r := startRedis(t)
	same := config.Defaults()
	other := config.Defaults()
	other.Limits.MaxLine = 32768
	fp, otherFP := same.SettingsFingerprint(), other.SettingsFingerprint()

	logs := make(map[string]*observer.ObservedLogs)
	start := func(id, fingerprint string) *testNode {
		core, obs := observer.New(zap.InfoLevel)
		logs[id] = obs
		return startNodeWith(t, r, id, func(o *Options) {
			o.Settings = fingerprint
			o.Heartbeat = 250 * time.Millisecond // many checks, quickly
			o.Logger = zap.New(zapcore.NewTee(o.Logger.Core(), core))
		})
	}
	a, b, old := start("a", fp), start("b", fp), start("old", "")
	c := start("c", otherFP)

	warnings := func(n *testNode, about string) []observer.LoggedEntry {
		return logs[n.ID()].Filter(func(e observer.LoggedEntry) bool {
			return e.Level == zap.WarnLevel && e.ContextMap()["other_node"] == about
		}).All()
	}
	// A node with no fingerprint compares nothing.
	waitChecks(t, old.Node, "c", 2)
	if k := old.Stats().NodesWithOtherSettings; k != 0 {
		t.Errorf("the node with no fingerprint counted %d nodes with other settings", k)
	}
	for _, n := range []*testNode{a, b} {
		// c differs, and the nodes seen at the same check (each other,
		// and the one with no fingerprint) do not.
		waitUntil(t, n.ID()+" counted c", func() bool { return n.Stats().NodesWithOtherSettings == 1 })
		waitUntil(t, n.ID()+" warned of c", func() bool { return len(warnings(n, "c")) > 0 })
		e := warnings(n, "c")[0]
		f := e.ContextMap()
		if f["settings"] != fp || f["other_settings"] != otherFP {
			t.Errorf("%s: warned %q with %v; want settings %s, other_settings %s", n.ID(), e.Message, f, fp, otherFP)
		}
	}
	waitUntil(t, "c counted a and b", func() bool { return c.Stats().NodesWithOtherSettings == 2 })

	// Once per node and fingerprint, however many checks see it.
	waitChecks(t, a.Node, "c", 3)
	waitChecks(t, c.Node, "a", 3)
	if w := warnings(a, "c"); len(w) != 1 {
		t.Errorf("a warned of c %d times, want once", len(w))
	}
	for _, about := range []string{"a", "b"} {
		if w := warnings(c, about); len(w) != 1 {
			t.Errorf("c warned of %s %d times, want once", about, len(w))
		}
	}
	for _, n := range []*testNode{a, b, c, old} {
		for _, about := range []string{"a", "b", "old"} {
			if w := warnings(n, about); n != c && len(w) > 0 {
				t.Errorf("%s warned of %s, whose settings are the same or unknown: %s", n.ID(), about, w[0].Message)
			}
		}
	}
	if w := warnings(c, "old"); len(w) > 0 {
		t.Errorf("c warned of the node with no fingerprint: %s", w[0].Message)
	}

	// Nothing is refused: users on c, and on the node with no
	// fingerprint, pair across.
	alice := a.DialLine(t).Login("alice")
	carol := c.DialLine(t).Login("carol")
	carol.Send("/connect " + alice.Token)
	carol.Expect(`^\* you are connected with alice$`)
	erin := b.DialLine(t).Login("erin")
	dave := old.DialLine(t).Login("dave")
	dave.Send("/connect " + erin.Token)
	dave.Expect(`^\* you are connected with erin$`)

	// c takes a's settings (a reload, or a restart of the rolling kind):
	// the count goes back to 0, and a says so.
	c.SetSettings(fp)
	waitUntil(t, "a no longer counted c", func() bool { return a.Stats().NodesWithOtherSettings == 0 })
	waitUntil(t, "a said c agrees", func() bool {
		return logs["a"].FilterMessageSnippet("same shared settings").FilterField(zap.String("other_node", "c")).Len() > 0
	})
}
