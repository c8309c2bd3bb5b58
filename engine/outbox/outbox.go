// Package outbox is one connection's outbound queue: the hub.Queue the
// pairing core delivers to, and the buffer the connection's event loop
// writes from.
//
// It knows nothing of sockets, event loops or the connection that owns
// it. An Outbox is built from what it needs: an Encoder that turns events
// into the connection's protocol, a schedule function that asks the
// owning loop to flush, and the Marks that bound how far its reader may
// fall behind. Deliveries between two flushes are encoded into one
// buffer and cost one call of schedule, which is what lets a busy relay
// batch its writes.
//
// The queue hands bytes to its owner only while the owner's socket has
// taken everything before (Take), so everything still waiting is here,
// counted by message: when a reader is cut off, its partner can be told
// exactly how many of its messages were never sent.
//
// Concurrency: Deliver, DeliverMessages, Backlog, Overflowing, Wait and
// Evict may be called from any goroutine, with hub locks held; none of
// them calls back into the hub, and none blocks beyond the Outbox's own
// lock. The other methods belong to the owner and are called on its
// event loop, one at a time. Waiters are woken with no lock of the
// Outbox held.
package outbox

import (
	"sync"
	"sync/atomic"

	"duet/engine/hub"
	"duet/proto"
)

// An Encoder appends events in one connection's protocol. It is called
// under the Outbox's lock, from any goroutine, so it must not block and
// must keep no state between calls.
type Encoder interface {
	AppendEvent(dst []byte, ev *proto.Event) []byte
	// AppendMessages appends one message event per text, in order: ev
	// is the message event, and its Text may be set to each text in turn.
	AppendMessages(dst []byte, ev *proto.Event, texts [][]byte) []byte
}

// Marks bound a reader's backlog, in bytes. Past High, a sender that
// asks (Wait) is held back until the backlog is down to Low, half of
// High; past Max the reader has stopped reading (Overflowing), and its
// owner cuts it off.
type Marks struct {
	High, Max int64
}

// Low is the backlog at which held-back senders are woken.
func (m Marks) Low() int64 { return m.High / 2 }

// Config is what an Outbox is built from.
type Config struct {
	Encoder Encoder
	// Protocol is the protocol the connection speaks, which the hub
	// tells the session's partner (hub.Speaker).
	Protocol proto.Protocol
	// Schedule asks the owner's loop to flush (Take, write, Settle). It
	// is called from any goroutine, at most once between two Takes, with
	// no lock of the Outbox held, and must not block.
	Schedule func()
	// Marks returns the current marks; they may change at any time
	// (a configuration reload).
	Marks func() Marks
	// Evicted is called when the hub takes the session from this
	// connection while the connection is open (see hub.Queue.Evict),
	// with why: the owner tells its user and closes. Any goroutine; it
	// must not block. nil ignores it.
	Evicted func(why hub.Eviction)
}

// Outbox is one connection's outbound queue. Make one with New.
type Outbox struct {
	cfg Config

	// backlog is the bytes waiting for this reader: queued here plus
	// what the owner's socket held at the last Settle. Senders read it,
	// without the lock, to decide whether to wait.
	backlog atomic.Int64

	// inline is set while the owner's loop is acting on the connection's
	// own input and will flush before it returns: replies to the
	// connection's own commands (welcome, errors, status) then need no
	// call of Schedule, which halves the system calls of a login.
	inline atomic.Bool

	mu        sync.Mutex
	buf       *[]byte // encoded, not yet taken; nil when empty
	msgs      int     // relayed messages in buf
	scheduled bool    // Schedule was called and no Take has run since
	closed    bool
	waiters   []hub.Waiter // senders held back until this reader catches up
}

var (
	_ hub.Queue   = (*Outbox)(nil)
	_ hub.Speaker = (*Outbox)(nil)
)

// Protocol implements hub.Speaker.
func (o *Outbox) Protocol() proto.Protocol { return o.cfg.Protocol }

// New returns an empty, open Outbox. Encoder, Schedule and Marks are
// required.
func New(cfg Config) *Outbox {
	if cfg.Encoder == nil || cfg.Schedule == nil || cfg.Marks == nil {
		panic("outbox: New without an Encoder, a Schedule or Marks")
	}
	return &Outbox{cfg: cfg}
}

// bufPool recycles queue buffers, so an idle connection holds none and a
// busy one allocates none in steady state.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledBuf keeps the pool from pinning the rare huge buffer.
const maxPooledBuf = 64 << 10

// Release returns a buffer from Take to the pool once its bytes are
// written. The caller must not use it afterwards.
func Release(b *[]byte) {
	if cap(*b) > maxPooledBuf {
		return
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}

// lockOpen takes o.mu for appending to the queue, with a buffer ready.
// It reports false, with o.mu released, if the outbox is closed.
func (o *Outbox) lockOpen() bool {
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

// Deliver implements hub.Outbox: it encodes ev into the queue and asks
// the owner to flush. After Close it does nothing.
func (o *Outbox) Deliver(ev *proto.Event) {
	if !o.lockOpen() {
		return
	}
	before := len(*o.buf)
	*o.buf = o.cfg.Encoder.AppendEvent(*o.buf, ev)
	if ev.Kind == proto.EvMessage || ev.Kind == proto.EvSealed {
		// A sealed frame is relayed as a message is, and counts as one
		// among those never sent when the reader is cut off.
		o.msgs++
	}
	o.backlog.Add(int64(len(*o.buf) - before))
	o.scheduleLocked()
}

// DeliverMessages implements hub.BatchOutbox: a run of messages from one
// sender, encoded under one lock and flushed with at most one Schedule.
func (o *Outbox) DeliverMessages(ev *proto.Event, texts [][]byte) {
	if !o.lockOpen() {
		return
	}
	before := len(*o.buf)
	*o.buf = o.cfg.Encoder.AppendMessages(*o.buf, ev, texts)
	o.msgs += len(texts)
	o.backlog.Add(int64(len(*o.buf) - before))
	o.scheduleLocked()
}

// DeliverRaw queues bytes already in wire form (HTTP responses,
// WebSocket control frames). They count in the backlog but not as
// messages. The owner calls it, on its loop.
func (o *Outbox) DeliverRaw(b []byte) {
	if !o.lockOpen() {
		return
	}
	*o.buf = append(*o.buf, b...)
	o.backlog.Add(int64(len(b)))
	o.scheduleLocked()
}

// scheduleLocked asks the owner to flush and unlocks o.mu.
func (o *Outbox) scheduleLocked() {
	// Read inline under the lock: the owner clears it before its flush
	// takes the queue under this same lock, so a delivery that saw it
	// set is always in that flush, and one that did not is scheduled.
	need := !o.scheduled && !o.inline.Load()
	if need {
		o.scheduled = true
	}
	o.mu.Unlock()
	if need {
		o.cfg.Schedule()
	}
}

// SetInline tells the Outbox whether the owner's loop is acting on the
// connection's input and will flush (Take) before it returns; while it
// is on, deliveries do not call Schedule.
func (o *Outbox) SetInline(on bool) { o.inline.Store(on) }

// Take removes the queued bytes for writing, with the number of relayed
// messages among them, unless the owner's socket still holds output
// (held > 0): then the socket is full and they stay here. The buffer
// belongs to the caller until it hands it to Release; the Outbox starts
// a new one for what comes next.
func (o *Outbox) Take(held int) (b *[]byte, msgs int) {
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

// Settle records how much the owner's socket still holds after a flush
// or a check, and once the backlog is down to the low mark, wakes the
// senders waiting on it.
func (o *Outbox) Settle(held int) {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return
	}
	n := int64(held)
	if o.buf != nil {
		n += int64(len(*o.buf))
	}
	o.backlog.Store(n)
	var wake []hub.Waiter
	if n <= o.cfg.Marks().Low() {
		wake, o.waiters = o.waiters, nil
	}
	o.mu.Unlock()
	for _, w := range wake {
		w.Wake()
	}
}

// Backlog implements hub.Queue: the bytes waiting for the reader, queued
// here and held by its socket at the last Settle; 0 once closed.
func (o *Outbox) Backlog() int64 { return o.backlog.Load() }

// Overflowing reports whether the backlog is past the max mark.
func (o *Outbox) Overflowing() bool { return o.backlog.Load() > o.cfg.Marks().Max }

// Wait implements hub.Queue: if the backlog is past the high mark, it
// registers w to be woken once the backlog is down to the low mark, or
// the Outbox closes, and reports true: w should pause until then. Each
// registration is woken once, so a sender that is paused should not ask
// again.
func (o *Outbox) Wait(w hub.Waiter) bool {
	high := o.cfg.Marks().High
	if o.backlog.Load() <= high {
		return false // the common case, without the lock
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed || o.backlog.Load() <= high {
		return false
	}
	o.waiters = append(o.waiters, w)
	return true
}

// Evict implements hub.Queue by passing the news to the owner.
func (o *Outbox) Evict(why hub.Eviction) {
	if o.cfg.Evicted != nil {
		o.cfg.Evicted(why)
	}
}

// Close stops all delivery and frees the queue. It returns what was lost
// (relayed messages still queued) and the senders that were waiting, for
// the caller to wake once it has told the partner that the reader is
// gone: a sender woken first could relay into the closed queue, and those
// messages would be lost without being counted. Closing again returns
// nothing.
func (o *Outbox) Close() (lost int, waiters []hub.Waiter) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return 0, nil
	}
	o.closed = true
	lost = o.msgs
	if o.buf != nil {
		Release(o.buf)
		o.buf = nil
	}
	o.msgs = 0
	o.backlog.Store(0)
	waiters, o.waiters = o.waiters, nil
	return lost, waiters
}

// Pending reports whether anything is queued.
func (o *Outbox) Pending() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf != nil && len(*o.buf) > 0
}
