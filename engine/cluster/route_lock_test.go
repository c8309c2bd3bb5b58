package cluster

import (
	"sync/atomic"
	"testing"
	"time"

	"duet/engine/enginetest"
	"duet/proto"
)

// TestRouteLockOrder: a check walking the routes (n.mu, then each
// outbox's lock) and the first refusal of a message to a partner held
// for (the outbox's lock, then the request for its pairing's cut) run
// side by side without blocking each other: the cut's request took
// n.mu under the outbox's lock, and the node and the delivering loop
// stopped for good.
func TestRouteLockOrder(t *testing.T) {
	n := &Node{routes: make(map[uint64]*remoteOutbox), cuts: make(map[uint64]*remoteOutbox), downCh: make(chan struct{}, 1)}
	n.opts.MaxQueue = 10                                  // every message is past it
	o := newRemoteOutbox(n, "", "bob", "bob", "alice", 7) // frozen: in n.routes
	var checks, refusals atomic.Int64
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			n.cutAwaited(func(string) bool { return false })
			checks.Add(1)
		}
	}()
	go func() {
		ev := &proto.Event{Kind: proto.EvMessage, Text: []byte("a message past MaxQueue")}
		for {
			select {
			case <-stop:
				return
			default:
			}
			o.dropped.Store(0) // each refusal a first: it asks for the cut
			o.Deliver(ev)
			refusals.Add(1)
		}
	}()
	// A deadlock stops both for good; a busy machine only slows them.
	// So each must get well past the other's start, however long that
	// takes, within a bound no live run comes near.
	const enough = 20000
	for deadline := time.Now().Add(enginetest.Timeout); checks.Load() < enough || refusals.Load() < enough; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("stuck: %d checks and %d refusals in %v, want %d of each", checks.Load(), refusals.Load(), enginetest.Timeout, enough)
		}
	}
}
