package cluster

import (
	"sync/atomic"
	"testing"
	"time"

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
	var lc, lr int64
	for range 10 {
		time.Sleep(100 * time.Millisecond)
		c, r := checks.Load(), refusals.Load()
		if c == lc || r == lr {
			t.Fatalf("stuck: %d checks, %d refusals, and no more for 100 ms", c, r)
		}
		lc, lr = c, r
	}
}
