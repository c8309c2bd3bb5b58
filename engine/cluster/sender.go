package cluster

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
)

// sender carries this node's events for one incarnation of another
// node. Deliver on a remote partner's outbox appends a frame to the
// pending batch under a short lock and never waits for Redis; the
// sender's goroutine seals and publishes the whole batch at once, so a
// burst costs one round trip, and batches go out one after another,
// which keeps every pairing's events in order.
type sender struct {
	n       *Node
	dest    string      // the destination's address
	node    string      // its node id
	inc     incarnation // and incarnation
	channel string
	wake    chan struct{}
	stop    context.CancelFunc // ends run; the node is dead

	mu     sync.Mutex
	buf    []byte // the pending frames; nil when empty
	spare  []byte
	busy   bool   // a batch is being published
	flight []byte // its frames, until it is known whether they reached anyone
	// lost counts, by pairing, the messages in batches that reached no
	// one, until the pairing's end counts them (takeLost).
	lost map[uint64]int
	// nobody is set while the node cuts the pairings with the
	// destination, found dead or not listening: what is pending or in
	// flight for it then reaches no one either.
	nobody bool

	// Used by the sender's goroutine alone.
	sealed  []byte // the batch as published
	scratch sealScratch
}

func newSender(n *Node, dest string) *sender {
	node, inc, ok := splitAddress(dest)
	if !ok {
		// Addresses come from this package; a bad one is a bug. Its
		// batches go nowhere: the receiver refuses them as stale.
		n.log.Error("sender for a bad node address", zap.String("address", printable(dest)))
		node = dest
	}
	return &sender{n: n, dest: dest, node: node, inc: inc, channel: n.channelOf(node), wake: make(chan struct{}, 1)}
}

// add appends one frame. A message (not control) is refused once the
// pending batch holds maxQueue bytes: the node cannot keep up with what
// its users say to that node, and the pairing is cut rather than
// buffered without bound. Control frames are small and always taken, so
// the other side is always told.
func (s *sender) add(control bool, kind byte, pair uint64, to, a string, b []byte, n uint64) bool {
	s.mu.Lock()
	if !control && len(s.buf) >= s.n.opts.MaxQueue {
		s.mu.Unlock()
		return false
	}
	if s.buf == nil {
		s.buf = s.spare[:0]
		s.spare = nil
	}
	s.buf = appendFrame(s.buf, kind, pair, to, a, b, n)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return true
}

func (s *sender) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		s.flush(ctx)
	}
}

// flush seals and publishes the pending batch.
func (s *sender) flush(ctx context.Context) {
	if s.n.up.Load() && s.n.leaseMayHaveLapsed() {
		// The node runs again after a stall past its lease: the other
		// nodes may have cut these pairings, would drop the batch, and
		// their answer saying so may never be read. It waits for the
		// node's heartbeat: a renewal wakes the sender again, a lapse
		// cuts the pairings, counting what waits (takeLost).
		return
	}
	s.mu.Lock()
	b := s.buf
	s.buf = nil
	s.busy = b != nil
	s.flight = b
	s.mu.Unlock()
	if b == nil {
		return
	}
	defer func() {
		s.mu.Lock()
		if cap(b) <= 1<<20 {
			s.spare = b[:0]
		}
		s.busy = false
		s.flight = nil
		s.mu.Unlock()
	}()
	if !s.n.up.Load() {
		// The link is down: the pairings these frames belong to are
		// being cut and their users told link_lost, with these.
		s.lose()
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.n.opts.OpTimeout)
	defer cancel()
	epoch, ok := s.n.epochOf(s.node, s.inc)
	if !ok {
		// Not yet heard of (it has just started), not heard of for a
		// while (this node was cut off), or restarted: its lease says.
		s.n.fetchLease(ctx, s.node)
		if epoch, ok = s.n.epochOf(s.node, s.inc); !ok {
			// The incarnation is gone. The next check cuts its
			// pairings with disconnected, or link_lost if it lives.
			s.lose()
			s.n.suspect(s.dest)
			return
		}
	}
	s.sealed = s.n.seal.batch(s.sealed[:0], b, &s.scratch, s.n.gate.epoch.Load(), s.inc, epoch)
	receivers, err := s.n.rdb.Publish(ctx, s.channel, s.sealed).Result()
	if cap(s.sealed) > 1<<20 {
		s.sealed = nil
	}
	if err != nil {
		// Counted as reaching no one, though Redis may have carried
		// it out and lost only its answer: the user is told of a
		// message that may have arrived rather than not told of one
		// that did not.
		s.lose()
		s.n.linkLost("publish", err)
		return
	}
	s.n.sent.Add(1)
	if receivers == 0 {
		// Nobody listens on that node's channel: it died, or lost its
		// own link to Redis. The next check finds out which and tells
		// the users paired with it.
		s.lose()
		s.n.suspect(s.dest)
	}
}

// lose counts the messages of the batch in flight as lost, by pairing:
// it reached no one.
func (s *sender) lose() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lost == nil {
		s.lost = make(map[uint64]int)
	}
	r := batchReader{b: s.flight}
	for {
		f, ok, err := r.next()
		if !ok || err != nil {
			break
		}
		if carries(f.kind) {
			s.lost[f.pair]++
		}
	}
	s.flight = nil
}

// takeLost returns how many messages of pairing pair, which is ending,
// never reach the destination: those in batches that reached no one,
// and, while the destination is found to reach no one (nobody), those
// pending or in flight. It forgets them.
func (s *sender) takeLost(pair uint64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.lost[pair]
	delete(s.lost, pair)
	if s.nobody {
		n += messagesOf(s.buf, pair) + messagesOf(s.flight, pair)
	}
	return n
}

// messagesOf counts the messages of pairing pair in frames.
func messagesOf(frames []byte, pair uint64) int {
	n := 0
	r := batchReader{b: frames}
	for {
		f, ok, err := r.next()
		if !ok || err != nil {
			return n
		}
		if carries(f.kind) && f.pair == pair {
			n++
		}
	}
}

// reachesNobody sets nobody, for the node to cut the pairings with the
// destination, or clears it once they are cut. Once they are, what
// was lost for them is of no more use: a batch still on its way out
// when they were cut, counted then, may add to it after.
func (s *sender) reachesNobody(nobody bool) {
	s.mu.Lock()
	s.nobody = nobody
	if !nobody {
		s.lost = nil
	}
	s.mu.Unlock()
}

// drain waits until everything queued so far has been published, or ctx
// ends.
func (s *sender) drain(ctx context.Context) {
	for {
		s.mu.Lock()
		empty := s.buf == nil && !s.busy
		s.mu.Unlock()
		if empty || ctx.Err() != nil || s.n.ctx.Err() != nil {
			return
		}
		select {
		case s.wake <- struct{}{}:
		default:
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// landed waits until the batch being published, if any, has its
// answer, or until deadline.
func (s *sender) landed(deadline time.Time) {
	for {
		s.mu.Lock()
		flying := s.flight != nil
		s.mu.Unlock()
		if !flying || time.Now().After(deadline) || s.n.ctx.Err() != nil {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// discard drops what is pending, once the link is lost and the
// pairings it was for are cut, which counted it as reaching no one.
func (s *sender) discard() {
	s.mu.Lock()
	s.buf = nil
	s.mu.Unlock()
	s.reachesNobody(false)
}
