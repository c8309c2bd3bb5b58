package engine

import (
	"sync"
	"sync/atomic"

	"duet/proto"
)

// outbox is one connection's outbound queue: the hub.Outbox the pairing
// core delivers to. Deliver may run on any goroutine (a peer on another
// event loop); it encodes the event straight into the queue for this
// connection's protocol and asks the connection's loop to flush. Many
// deliveries between two flushes cost one wake-up of that loop, which is
// what lets a busy relay batch its writes.
//
// The queue hands bytes to gnet only while gnet's own outbound buffer is
// empty, so everything still waiting is here, counted by message: when a
// reader is cut off, its partner can be told exactly how many of its
// messages were never sent.
type outbox struct {
	cn *conn

	// backlog is the bytes waiting for this reader: queued here plus what
	// gnet held at the last flush. Senders read it to decide to pause.
	backlog atomic.Int64

	// inline is set while the connection's own loop is acting on its
	// input and will flush before it returns: replies to the connection's
	// own commands (welcome, errors, status) then need no wake-up of the
	// loop, which halves the system calls of a login.
	inline atomic.Bool

	mu        sync.Mutex
	buf       *[]byte // encoded, not yet handed to gnet; nil when empty
	msgs      int     // relayed messages in buf
	scheduled bool    // a flush is queued on the loop
	closed    bool
	waiters   []*conn // senders paused until this reader catches up
}

// bufPool recycles queue buffers, so an idle connection holds none and a
// busy one allocates none in steady state.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledBuf keeps the pool from pinning the rare huge buffer.
const maxPooledBuf = 64 << 10

func putBuf(b *[]byte) {
	if cap(*b) > maxPooledBuf {
		return
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}

// lockOpen takes o.mu for appending to the queue, with a buffer ready.
// It reports false, with o.mu released, if the outbox is closed.
func (o *outbox) lockOpen() bool {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return false
	}
	if o.buf == nil {
		o.buf = bufPool.Get().(*[]byte)
	}
	return true
}

// Deliver implements hub.Outbox.
func (o *outbox) Deliver(ev *proto.Event) {
	if !o.lockOpen() {
		return
	}
	before := len(*o.buf)
	*o.buf = o.cn.appendEvent(*o.buf, ev)
	if ev.Kind == proto.EvMessage {
		o.msgs++
	}
	o.backlog.Add(int64(len(*o.buf) - before))
	o.scheduleLocked()
}

// DeliverMessages implements hub.BatchOutbox: a run of messages from one
// sender, encoded under one lock and scheduled with one flush.
func (o *outbox) DeliverMessages(ev *proto.Event, texts [][]byte) {
	if !o.lockOpen() {
		return
	}
	before := len(*o.buf)
	*o.buf = o.cn.appendMessages(*o.buf, ev, texts)
	o.msgs += len(texts)
	o.backlog.Add(int64(len(*o.buf) - before))
	o.scheduleLocked()
}

// deliverRaw queues bytes already in wire form (HTTP responses,
// WebSocket control frames). It must be called on the connection's loop.
func (o *outbox) deliverRaw(b []byte) {
	if !o.lockOpen() {
		return
	}
	*o.buf = append(*o.buf, b...)
	o.backlog.Add(int64(len(b)))
	o.scheduleLocked()
}

// scheduleLocked asks the loop to flush and unlocks o.mu.
func (o *outbox) scheduleLocked() {
	// Read inline under the lock: onTraffic clears it before the flush
	// takes the queue under this same lock, so a delivery that saw it set
	// is always in that flush, and one that did not is scheduled.
	need := !o.scheduled && !o.inline.Load()
	if need {
		o.scheduled = true
	}
	o.mu.Unlock()
	if need {
		o.cn.loop.schedule(o.cn)
	}
}

// take removes the queued bytes for writing, unless gnet still holds
// output (held > 0): then the socket is full and they stay here.
func (o *outbox) take(held int) (b *[]byte, msgs int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.scheduled = false
	if o.buf == nil || held > 0 {
		return nil, 0
	}
	b, msgs = o.buf, o.msgs
	o.buf, o.msgs = nil, 0
	return b, msgs
}

// settle records how much is left after a flush or a check and, once the
// reader is below low, returns the senders to wake.
func (o *outbox) settle(held int, low int64) []*conn {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := int64(held)
	if o.buf != nil {
		n += int64(len(*o.buf))
	}
	o.backlog.Store(n)
	if n > low || len(o.waiters) == 0 {
		return nil
	}
	w := o.waiters
	o.waiters = nil
	return w
}

// wait registers sender to be woken when this reader drains, unless it
// already has. It reports whether the sender must pause.
func (o *outbox) wait(sender *conn, high int64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed || o.backlog.Load() <= high {
		return false
	}
	o.waiters = append(o.waiters, sender)
	return true
}

// close stops all delivery and returns what was lost (relayed messages
// still queued) and the senders to wake.
func (o *outbox) close() (lost int, waiters []*conn) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return 0, nil
	}
	o.closed = true
	lost = o.msgs
	if o.buf != nil {
		putBuf(o.buf)
		o.buf = nil
	}
	o.msgs = 0
	o.backlog.Store(0)
	waiters, o.waiters = o.waiters, nil
	return lost, waiters
}

// pending reports whether anything is queued.
func (o *outbox) pending() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf != nil && len(*o.buf) > 0
}
