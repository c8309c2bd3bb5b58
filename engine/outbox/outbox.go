// Package outbox is one connection's outbound queue: the hub.Queue the
// pairing core delivers to, and the buffer the connection's event loop
// writes from.
//
// It knows nothing of sockets, event loops or the connection that owns
// it. An Outbox is built from what it needs: an Owner that encodes
// events in the connection's protocol, flushes, bounds how far its
// reader may fall behind and may take bytes straight to its socket.
// Deliveries between two flushes are encoded into one buffer and cost
// one call of Owner.Schedule, which is what lets a busy relay batch its
// writes; a delivery that finds the reader idle may instead be written
// at once by the delivering goroutine (Owner.WriteDirect), so that the
// reader's event loop is not woken for it.
//
// The queue hands bytes to its owner only while the owner's socket has
// taken everything before (Take), so everything still waiting is here,
// or in the one batch the owner is writing. The queue knows where each
// relayed message ends in its bytes, and follows the batch being
// written until the socket has taken it all (Settle): when a reader is
// cut off, its partner can be told exactly how many of its messages
// never reached the socket (Close), and when a session is taken over
// from a connection still open, the hub can ask how many of them that
// connection never wrote (Unsent), to replay them.
//
// The queue also follows numbered messages (hub Event.Seq) to the
// socket: it knows, of the bytes that left it, where the newest numbered
// message that left whole ends. Asked which of them the client has
// received (TransportAcked), it compares that with what the owner's
// socket still holds unacknowledged (Owner.Unacked), so the hub keeps
// for a resume only what the client's TCP has not acknowledged.
//
// Concurrency: Deliver, DeliverMessages, Backlog, Overflowing, Wait,
// Evict, TransportAcked, Unsent and Dropped may be called from any
// goroutine, with hub locks held; none of them calls back into the hub,
// and none blocks beyond the Outbox's own lock and one non-blocking
// system call on the socket (a direct write; TransportAcked's look).
// The other methods belong to the owner and are called on its event
// loop, one at a time. Waiters are woken with no lock of the Outbox held.
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
	// AppendMessages appends one message event per text, in order, and
	// to ends where each ends in dst (len(dst) just after it): ev is the
	// message event, and its Text may be set to each text in turn.
	AppendMessages(dst []byte, ends []int32, ev *proto.Event, texts [][]byte) ([]byte, []int32)
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

// An Owner is the connection an Outbox belongs to, as the Outbox sees
// it: it encodes events in its protocol, and flushes. Its methods are
// called from any goroutine and must not block.
type Owner interface {
	Encoder
	// Protocol is the protocol the connection speaks, which the hub
	// tells the session's partner (hub.Speaker).
	Protocol() proto.Protocol
	// Schedule asks the owner's loop to flush (Take, write, Settle). It
	// is called at most once between two Takes, with no lock of the
	// Outbox held.
	Schedule()
	// Marks returns the current marks; they may change at any time (a
	// configuration reload).
	Marks() Marks
	// Evicted is called when the hub takes the session from this
	// connection while the connection is open (see hub.Queue.Evict),
	// with why: the owner tells its user and closes.
	Evicted(why hub.Eviction)
	// WriteDirect writes b to the owner's socket at once, from the
	// delivering goroutine, and returns how many bytes the socket took
	// (0 when it took none or failed: the owner's own flush then meets
	// the failure). ok is false when the owner would rather flush itself
	// (its loop is about to anyway): nothing was written. It is called
	// under the Outbox's lock, only while direct writes are on
	// (SetDirect) and nothing is queued, being written or held for the
	// socket (see the package comment), so the bytes cannot overtake any.
	WriteDirect(b []byte) (n int, ok bool)
	// Unacked returns how many of the bytes written to the owner's
	// socket its peer has not acknowledged yet (the socket's send queue,
	// sent or not), and ok false when the socket cannot tell. It is
	// called under the Outbox's lock, from any goroutine, only while the
	// Outbox is open and the socket idle (the last Settle found it empty
	// and nothing was taken since), as WriteDirect is.
	Unacked() (n int, ok bool)
	// RefusedLate is called, from any goroutine, with the refusal of a
	// say the hub took before (hub.LateRefuser): the owner tells its
	// user as it tells a say refused at once.
	RefusedLate(err *proto.Error)
}

// Outbox is one connection's outbound queue. Make one with New.
//
// An idle connection holds one, so it is kept to 64 bytes: the encoder
// is the owner's, counts are 32 bits (a queue is bounded by
// limits.outbound_max), and what only a busy connection needs (the
// senders waiting on it, the trail of its numbered messages, the batch
// its socket is taking) sits behind a pointer.
type Outbox struct {
	owner Owner

	// backlog is the bytes waiting for this reader: queued here plus
	// what the owner's socket held at the last Settle. Senders read it,
	// without the lock, to decide whether to wait.
	backlog atomic.Int64

	mu      sync.Mutex
	buf     *Batch // encoded, not yet taken; nil when empty
	directs uint32 // direct writes made (DirectWrites)
	// dropped counts the relayed messages handed over after Close,
	// which went nowhere (Dropped).
	dropped int32
	// scheduled: Schedule was called and no Take has run since.
	// direct: the owner lets deliveries write to its socket (SetDirect).
	// idle: the socket holds nothing of ours and no taken buffer is
	// being written: the last Settle found the socket empty, and no Take
	// has handed out bytes since.
	scheduled, closed, direct, idle bool

	// inline is set while the owner's loop is acting on the connection's
	// own input and will flush before it returns: replies to the
	// connection's own commands (welcome, errors, status) then need no
	// call of Schedule, which halves the system calls of a login. It is
	// here, beside the flags, so that it takes no word of its own.
	inline atomic.Bool

	side *side // nil when no sender waits, no message is in flight and no numbered message is followed
}

// A Batch is bytes queued for the owner's socket, and where each relayed
// message among them ends. Take hands one to the owner, which writes B
// and gives it back with Release.
type Batch struct {
	B []byte
	// ends are the offsets in B just past each relayed message, in
	// order. 32 bits, as a queue is bounded by limits.outbound_max.
	ends []int32
}

// side is the state an Outbox needs only while it is busy.
type side struct {
	waiters []hub.Waiter // senders held back until this reader catches up
	// trail is kept in the side itself: a delivery finds it without
	// another pointer to follow, and a trail and its side are one
	// allocation, not two.
	trail     trail
	following bool // trail is in use: a numbered message is followed
	// retired: no session delivers here any more (Retire). Kept here,
	// not beside the Outbox's flags, which fill their word: only a
	// connection that is ending has it, until it closes.
	retired bool
	flight  flight
	// lost is, once the Outbox is closed, what its close counted never
	// written or received (NotReceived): kept only when there was any.
	lost int32
	// past are whole marks of the trail (its whole and wholeEnd as they
	// were), one each pastStride of bytes sent at most, the latest
	// len(past) of them; pastN is how many were written since the trail
	// began, and pastEnd where the newest ends. NotReceived places the
	// socket's unacknowledged bytes against them when the socket is not
	// idle and holds batches older than the one in flight (a reader that
	// reads slowly, written megabytes ahead): without them it could only
	// count from the newest message seen acknowledged while the socket
	// was idle, long before. Allocated with the first mark and kept with
	// the side in its pool, as flight.ends is.
	past    *[pastLen]wholeMark
	pastN   uint32
	pastEnd int64
}

// pastLen marks pastStride apart cover 4 MiB, what the kernel holds of a
// socket's output at most (tcp_wmem's default maximum): NotReceived is
// out by at most pastStride, a message received counted not (replayed
// twice to a line client), never the other way.
const (
	pastLen    = 64
	pastStride = 64 << 10
)

// wholeMark is a numbered message that left the queue whole, and where
// it ends in the trail's positions.
type wholeMark struct {
	seq uint64
	end int64
}

// flight follows the relayed messages of the batch the owner took last
// until its socket has taken them whole. The owner writes a batch at
// once; what the socket does not take, the owner holds (gnet's buffer),
// and its Settles say how much is left: always the batch's tail, since
// a batch is taken only once the socket holds nothing.
type flight struct {
	ends []int32 // where each relayed message ends in the batch, in order
	next int     // ends[next:] are the messages not known taken whole
	size int32   // the batch's length
	// start is where the batch begins in the trail's positions (its
	// sent when the batch was taken), or -1 when no trail was followed
	// then: Unreceived places what the client acknowledged in it.
	start int64
	// settled: a Settle since the Take said what the socket holds. Until
	// then nothing of the batch is known written: a Close meanwhile is a
	// write that failed, and counts all of it.
	settled bool
}

// pending is how many of the batch's messages the socket may not have
// taken whole.
func (f *flight) pending() int { return len(f.ends) - f.next }

// hold notes that the socket still holds the batch's last held bytes:
// the messages that end before them were taken whole.
func (f *flight) hold(held int) {
	sent := int(f.size) - held
	for f.next < len(f.ends) && int(f.ends[f.next]) <= sent {
		f.next++
	}
	f.settled = true
}

// trail follows numbered messages from the queue to the socket.
// Positions count the bytes that left the queue (taken, or written
// directly) since the trail began: the start of the socket's stream, or
// a moment when everything numbered before had been acknowledged.
type trail struct {
	// first is the Seq of the first numbered message queued since the
	// trail began: every one before it was received, or was another
	// connection's to write.
	first    uint64
	queued   uint64 // Seq of the newest numbered message queued
	whole    uint64 // Seq of the newest numbered message that left whole
	wholeEnd int64  // where it ends: sent, just after it left
	sent     int64  // bytes that left the queue
	checked  int64  // sent, when the socket was last asked
	// mark is a message waiting to be found acknowledged: every byte up
	// to markEnd. The socket is asked only now and then, and by then
	// more has usually been written; a mark set at one look is found
	// acknowledged at a later one.
	mark    uint64
	markEnd int64  // 0: no mark
	acked   uint64 // Seq of the newest message known acknowledged
}

var (
	_ hub.Queue          = (*Outbox)(nil)
	_ hub.Speaker        = (*Outbox)(nil)
	_ hub.UnsentCounter  = (*Outbox)(nil)
	_ hub.ReceiptCounter = (*Outbox)(nil)
)

// Protocol implements hub.Speaker.
func (o *Outbox) Protocol() proto.Protocol { return o.owner.Protocol() }

// New returns an empty, open Outbox for owner, with direct writes off.
func New(owner Owner) *Outbox {
	if owner == nil {
		panic("outbox: New without an Owner")
	}
	return &Outbox{owner: owner}
}

// bufPool recycles queue buffers, so an idle connection holds none and a
// busy one allocates none in steady state.
var bufPool = sync.Pool{New: func() any { return &Batch{B: make([]byte, 0, 4096)} }}

// maxPooledBuf and maxPooledEnds keep the pools from pinning the rare
// huge buffer.
const (
	maxPooledBuf  = 64 << 10
	maxPooledEnds = 4 << 10
)

// Release returns a batch from Take to the pool once its bytes are
// written. The caller must not use it afterwards.
func Release(b *Batch) {
	if cap(b.B) > maxPooledBuf || cap(b.ends) > maxPooledEnds {
		return
	}
	b.B, b.ends = b.B[:0], b.ends[:0]
	bufPool.Put(b)
}

// lockOpen takes o.mu for appending msgs relayed messages (or other
// bytes, for 0) to the queue, with a buffer ready; own says the owner's
// own last bytes (DeliverRaw) are appended. It reports false, with o.mu
// released, if the outbox is closed, or retired and the bytes are not
// the owner's: the messages are dropped, and counted so.
func (o *Outbox) lockOpen(msgs int, own bool) bool {
	o.mu.Lock()
	if o.closed || !own && o.side != nil && o.side.retired {
		// Retired, only the owner's own last bytes (DeliverRaw) are
		// written: a session that still delivers here, until its end is
		// told with the count of what never reached the reader, must not
		// have anything written after the goodbye, and what it relays
		// is counted with what the connection never wrote.
		o.dropped += int32(msgs)
		o.mu.Unlock()
		return false
	}
	if o.buf == nil {
		o.buf = bufPool.Get().(*Batch)
	}
	return true
}

// Deliver implements hub.Outbox: it encodes ev into the queue and sends
// it on (send). After Close it does nothing.
func (o *Outbox) Deliver(ev *proto.Event) {
	// A sealed frame is relayed as a message is, and counts as one
	// among those never sent when the reader is cut off.
	relayed := ev.Kind == proto.EvMessage || ev.Kind == proto.EvSealed
	msgs := 0
	if relayed {
		msgs = 1
	}
	if !o.lockOpen(msgs, false) {
		return
	}
	b := o.buf
	before := len(b.B)
	b.B = o.owner.AppendEvent(b.B, ev)
	if relayed {
		b.ends = append(b.ends, int32(len(b.B)))
		o.queuedLocked(ev.Seq, ev.Seq)
	}
	o.backlog.Add(int64(len(b.B) - before))
	o.sendLocked()
}

// DeliverMessages implements hub.BatchOutbox: a run of messages from one
// sender, encoded under one lock and sent on at once (send).
func (o *Outbox) DeliverMessages(ev *proto.Event, texts [][]byte) {
	if !o.lockOpen(len(texts), false) {
		return
	}
	b := o.buf
	before := len(b.B)
	// The encoder may number the texts as it walks them (ev.Seq).
	first, last := ev.Seq, uint64(0)
	if first != 0 && len(texts) > 0 {
		last = first + uint64(len(texts)) - 1
	}
	b.B, b.ends = o.owner.AppendMessages(b.B, b.ends, ev, texts)
	o.queuedLocked(first, last)
	o.backlog.Add(int64(len(b.B) - before))
	o.sendLocked()
}

// DeliverRaw queues bytes already in wire form (HTTP responses,
// WebSocket control frames). They count in the backlog but not as
// messages. The owner calls it, on its loop, and flushes: they are never
// written directly.
func (o *Outbox) DeliverRaw(b []byte) {
	if !o.lockOpen(0, true) {
		return
	}
	o.buf.B = append(o.buf.B, b...)
	o.backlog.Add(int64(len(b)))
	o.scheduleLocked()
}

// sendLocked sends on what a delivery queued, and unlocks o.mu.
//
// A flush already coming (scheduled, or the owner acting inline) takes
// it. Otherwise, when the owner allows it and its socket is idle, the
// bytes are written to the socket from here: the owner's loop, which may
// be another and asleep, is neither woken nor scheduled. That saves an
// eventfd write, the other loop's wake-up and a turn of it per delivery
// that finds its reader idle, which is what a paced client's messages
// mostly do. Whatever the socket does not take stays queued, in order,
// and the owner is asked to flush as before; the socket is then not idle
// until the owner's next Settle finds it empty.
//
// Order: every byte for this connection passes through buf, and leaves
// it either here or by Take, both under o.mu. A direct write is made
// only when buf held nothing before this delivery (nothing was
// scheduled), no taken buffer is still being written (Take clears idle;
// Settle, after the write, sets it), and the owner's socket held nothing
// at that Settle, so there is nothing it could overtake; and it holds
// o.mu throughout, so no Take or other delivery can come between.
func (o *Outbox) sendLocked() {
	b := o.buf
	if len(b.B) == 0 { // the encoder left the event out
		Release(b)
		o.buf = nil
		o.mu.Unlock()
		return
	}
	if o.scheduled || o.inline.Load() || !o.direct || !o.idle {
		o.scheduleLocked()
		return
	}
	n, ok := o.owner.WriteDirect(b.B)
	if !ok {
		o.scheduleLocked()
		return
	}
	o.directs++
	o.backlog.Add(-int64(n))
	o.leftLocked(n, n == len(b.B))
	if n == len(b.B) {
		Release(b)
		o.buf = nil
		wake := o.wakeLocked()
		o.mu.Unlock()
		wakeAll(wake)
		return
	}
	// The socket is full (or failed): keep the rest, in order, for the
	// owner, whose flush hands it to the socket's own buffering. The
	// messages that ended in what the socket took were sent.
	b.B = b.B[:copy(b.B, b.B[n:])]
	sent := 0
	for sent < len(b.ends) && int(b.ends[sent]) <= n {
		sent++
	}
	b.ends = b.ends[:copy(b.ends, b.ends[sent:])]
	for i := range b.ends {
		b.ends[i] -= int32(n)
	}
	o.idle = false
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
		o.owner.Schedule()
	}
}

// SetInline tells the Outbox whether the owner's loop is acting on the
// connection's input and will flush (Take) before it returns; while it
// is on, deliveries do not call Schedule.
func (o *Outbox) SetInline(on bool) { o.inline.Store(on) }

// SetDirect turns direct writes (Owner.WriteDirect) on or off. Once it
// returns off, no direct write is in progress or will start: the owner
// turns them off before it writes its last bytes (a goodbye) itself.
func (o *Outbox) SetDirect(on bool) {
	o.mu.Lock()
	o.direct = on
	o.mu.Unlock()
}

// DirectWrites reports how many deliveries were written directly
// (WriteDirect took at least part of them, or failed), modulo 2^32.
func (o *Outbox) DirectWrites() uint32 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.directs
}

// Take removes the queued bytes for writing, with the number of relayed
// messages among them, unless the owner's socket still holds output
// (held > 0): then the socket is full and they stay here. The batch
// belongs to the caller until it hands it to Release; the Outbox starts
// a new one for what comes next. The owner writes it at once, and calls
// Settle once it has: until the socket has taken them whole, the
// batch's messages are in flight, and count as never sent.
func (o *Outbox) Take(held int) (b *Batch, msgs int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.scheduled = false
	if held > 0 {
		o.idle = false
		return nil, 0
	}
	// The socket holds nothing: the batch taken before went whole.
	o.landLocked()
	if o.buf == nil {
		return nil, 0
	}
	b, msgs = o.buf, len(o.buf.ends)
	o.leftLocked(len(b.B), true)
	if msgs > 0 {
		// The Outbox keeps the ends, the owner the bytes; the slices
		// trade places, so that neither allocates.
		sd := o.sideLocked()
		f := &sd.flight
		f.ends, b.ends = b.ends, f.ends[:0]
		f.next, f.size, f.settled, f.start = 0, int32(len(b.B)), false, -1
		if sd.following {
			f.start = sd.trail.sent - int64(len(b.B))
		}
	}
	o.buf = nil
	o.idle = false // until Settle: the owner is writing b
	return b, msgs
}

// landLocked forgets the batch in flight: the socket took it all.
func (o *Outbox) landLocked() {
	if sd := o.side; sd != nil && len(sd.flight.ends) > 0 {
		sd.flight.ends, sd.flight.next = sd.flight.ends[:0], 0
		o.tidyLocked()
	}
}

// Unsent returns how many relayed messages handed to the Outbox its
// owner's socket has not taken whole: those queued, and those of the
// batch being written that the socket had not taken at the last Settle.
// They are the newest. It implements hub.UnsentCounter.
func (o *Outbox) Unsent() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.unsentLocked()
}

// Dropped returns how many relayed messages were handed to the Outbox
// after Retire or Close, which dropped them: senders relay to a reader
// until its session leaves their room, which may be as its connection
// closes, after its goodbye was queued. With
// what Close returned, they are every message the connection never
// wrote. It implements hub.UnsentCounter.
func (o *Outbox) Dropped() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return int(o.dropped)
}

// Unreceived returns how many of the relayed messages handed to the
// Outbox its client is not known to have received: those its owner's
// socket has not taken whole (Unsent), and of those it took, the
// numbered messages after the newest one its peer's TCP acknowledged.
// held is what the owner's socket still holds, unwritten, of the batch
// taken last, as for Close; the socket is asked once (Owner.Unacked).
//
// The count is exact when every byte the peer has not acknowledged is of
// the batch taken last or queued after it, as for a reader that fell
// behind: the socket holds the head of that batch, and the owner the
// rest. When some are older (written directly, or in batches before),
// where each of those messages ends is no longer known, and it counts
// from the newest message known received (the trail's marks), which
// may count a few that were: never fewer than were not. A socket that
// cannot tell counts from the newest found received before.
//
// A session that goes away from a connection still open (a drain) is
// told it, so that its resume replays every message its client may not
// have, however long ago it came. The owner calls it on its loop, once
// the Outbox is retired (Retire): nothing is queued from then on, so
// the count stays what it says.
func (o *Outbox) Unreceived(held int) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.unreceivedLocked(held, false)
}

// NotReceived implements hub.ReceiptCounter: Unreceived, from any
// goroutine, for a session taken from this connection. What the owner's
// socket holds is not known here: the backlog's part that is not queued
// is what it held at the last Settle and all taken since, never less than
// it holds now, so a message may be counted that was received (replayed
// twice to a line client), never one that was not. Once closed, it is
// what the close counted.
func (o *Outbox) NotReceived() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := int(o.dropped)
	if o.closed {
		if o.side != nil {
			n += int(o.side.lost)
		}
		return n
	}
	held := o.backlog.Load()
	if o.buf != nil {
		held -= int64(len(o.buf.B))
	}
	return n + o.unreceivedLocked(int(max(held, 0)), true)
}

// marks says whether to place the unacknowledged bytes against the
// trail's past marks too: for a takeover (NotReceived), whose old
// connection is closed in good order, its client's kernel handing its
// program what it acknowledged. A connection cut off (Abort, a drain's
// Unreceived) counts from the newest message seen acknowledged instead
// (at a look, or now at the trail's newest marks), so that what its TCP
// acknowledged after that message counts too: a client cut for not
// reading read none of it. What its TCP was seen to acknowledge is
// taken as received, though a program that
// stopped reading while its kernel still took data never read it:
// nothing here can tell how much of it the program read, and the hub
// no longer keeps it (docs/RESUME.md, the line resume).
func (o *Outbox) unreceivedLocked(held int, marks bool) int {
	sd := o.side
	if o.closed || sd == nil {
		return o.unsentLocked()
	}
	f := &sd.flight
	if f.pending() > 0 && f.settled {
		f.hold(held)
	}
	unsent := o.unsentLocked()
	if !sd.following {
		// Every numbered message queued was received, or none is
		// numbered (resume is off).
		return unsent
	}
	t := &sd.trail
	known := max(t.acked, t.first-1)
	unacked, ok := o.owner.Unacked()
	if ok {
		acked := t.sent - int64(held) - int64(unacked) // bytes before this were acknowledged
		if len(f.ends) > 0 && f.start >= 0 && acked >= f.start {
			n := 0
			for _, end := range f.ends {
				if f.start+int64(end) > acked {
					n++
				}
			}
			if o.buf != nil {
				n += len(o.buf.ends)
			}
			return max(n, unsent)
		}
		switch {
		case acked >= t.wholeEnd:
			known = max(known, t.whole)
		case t.markEnd > 0 && acked >= t.markEnd:
			known = max(known, t.mark)
		}
		if marks && sd.past != nil {
			for _, m := range sd.past[:min(int(sd.pastN), pastLen)] {
				if m.end <= acked {
					known = max(known, m.seq)
				}
			}
		}
	}
	return max(int(t.queued-min(known, t.queued)), unsent)
}

func (o *Outbox) unsentLocked() int {
	n := 0
	if o.buf != nil {
		n = len(o.buf.ends)
	}
	if o.side != nil {
		n += o.side.flight.pending()
	}
	return n
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
	if held == 0 {
		o.landLocked()
	} else if sd := o.side; sd != nil && sd.flight.pending() > 0 {
		sd.flight.hold(held)
	}
	n := int64(held)
	if o.buf != nil {
		n += int64(len(o.buf.B))
	}
	o.backlog.Store(n)
	o.idle = held == 0
	wake := o.wakeLocked()
	o.mu.Unlock()
	wakeAll(wake)
}

// wakeLocked returns the waiters to wake once the backlog is down to the
// low mark, and forgets them.
func (o *Outbox) wakeLocked() (wake []hub.Waiter) {
	if o.side != nil && len(o.side.waiters) > 0 && o.backlog.Load() <= o.owner.Marks().Low() {
		wake, o.side.waiters = o.side.waiters, nil
		o.tidyLocked()
	}
	return wake
}

func wakeAll(ws []hub.Waiter) {
	for _, w := range ws {
		w.Wake()
	}
}

// Backlog implements hub.Queue: the bytes waiting for the reader, queued
// here and held by its socket at the last Settle; 0 once closed.
func (o *Outbox) Backlog() int64 { return o.backlog.Load() }

// Overflowing reports whether the backlog is past the max mark.
func (o *Outbox) Overflowing() bool { return o.backlog.Load() > o.owner.Marks().Max }

// Wait implements hub.Queue: if the backlog is past the high mark, it
// registers w to be woken once the backlog is down to the low mark, or
// the Outbox closes, and reports true: w should pause until then. Each
// registration is woken once. A waiter already registered is not
// registered again: a paused sender asks again whenever it finds the
// reader still behind (woken or not yet), and is woken once all the same.
func (o *Outbox) Wait(w hub.Waiter) bool {
	high := o.owner.Marks().High
	if o.backlog.Load() <= high {
		return false // the common case, without the lock
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed || o.side != nil && o.side.retired || o.backlog.Load() <= high {
		return false
	}
	sd := o.sideLocked()
	for _, x := range sd.waiters {
		if x == w {
			return true
		}
	}
	sd.waiters = append(sd.waiters, w)
	return true
}

// Retire tells the Outbox that its owner has only its own last bytes (a
// goodbye, DeliverRaw) still to write: whatever is delivered from then
// on is dropped, and the relayed messages among it counted (Dropped),
// since a session may still deliver here until its connection closes
// and its end tells its partner the count. It returns the senders
// waiting on it, for the caller to wake, and holds none back from then
// on: what they send goes nowhere, counted, and need not wait for this
// one's reader, which may take until it is cut as a slow reader.
func (o *Outbox) Retire() (waiters []hub.Waiter) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil
	}
	sd := o.sideLocked()
	waiters, sd.waiters = sd.waiters, nil
	sd.retired = true
	return waiters
}

// Evict implements hub.Queue by passing the news to the owner.
func (o *Outbox) Evict(why hub.Eviction) { o.owner.Evicted(why) }

// RefusedLate implements hub.LateRefuser: the owner tells it.
func (o *Outbox) RefusedLate(err *proto.Error) { o.owner.RefusedLate(err) }

// Close stops all delivery and frees the queue. held is what the owner's
// socket still holds, unwritten, of the batch taken last. It returns what
// was lost, the relayed messages the socket never took whole (those
// queued, and those of that batch that end in what it holds), and the
// senders that were waiting, for the caller to wake once it has told the
// partner that the reader is gone: a sender woken first could relay into
// the closed queue, and those messages would be lost without being
// counted. Closing again returns nothing.
func (o *Outbox) Close(held int) (lost int, waiters []hub.Waiter) {
	return o.close(held, false)
}

// Abort is Close for a connection whose peer the kernel found gone (a
// reset, or TCP's timeout): what the socket wrote that the peer's TCP
// had not acknowledged will never reach it either, and is lost with
// what was never written. So lost counts as Unreceived does, from the
// socket's own count of what was not acknowledged, which it keeps after
// the connection is gone; with resume off, where no message is
// followed to the socket, as Close does.
func (o *Outbox) Abort(held int) (lost int, waiters []hub.Waiter) {
	return o.close(held, true)
}

func (o *Outbox) close(held int, gone bool) (lost int, waiters []hub.Waiter) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return 0, nil
	}
	if gone {
		// Before closed is set, which Unreceived reads as nothing
		// followed any more; it holds the batch as below.
		lost = o.unreceivedLocked(held, false)
	} else {
		if sd := o.side; sd != nil && sd.flight.pending() > 0 && sd.flight.settled {
			sd.flight.hold(held)
		}
		lost = o.unsentLocked()
	}
	o.closed = true
	if o.buf != nil {
		Release(o.buf)
		o.buf = nil
	}
	o.backlog.Store(0)
	if sd := o.side; sd != nil {
		waiters, o.side = sd.waiters, nil
		putSide(sd)
	}
	if lost > 0 {
		// For a resume that takes the session from this connection
		// between its close and its handing the count to the hub, which
		// then never comes (NotReceived). A side that is retired and
		// follows nothing is left alone by everything else.
		o.side = &side{retired: true, lost: int32(lost)}
	}
	return lost, waiters
}

// Following reports whether some message the socket took may not have
// been received: Abort would count what the socket holds unacknowledged
// as lost, so the owner's close must drop it rather than send it on.
func (o *Outbox) Following() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return !o.closed && o.side != nil && o.side.following
}

// Pending reports whether anything is queued.
func (o *Outbox) Pending() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf != nil && len(o.buf.B) > 0
}

// sidePool recycles sides. A busy connection's side goes each time
// every message it followed is known received, at a look every few KiB
// (LookAcked), and comes back with the next message: made afresh each
// time, it was the one allocation a steady relay still made.
var sidePool = sync.Pool{New: func() any { return new(side) }}

// sideLocked returns o's side, taking one if need be.
func (o *Outbox) sideLocked() *side {
	if o.side == nil {
		o.side = sidePool.Get().(*side)
	}
	return o.side
}

// tidyLocked lets the side go once nothing is in it.
func (o *Outbox) tidyLocked() {
	if sd := o.side; sd != nil && len(sd.waiters) == 0 && !sd.following && !sd.retired && len(sd.flight.ends) == 0 {
		o.side = nil
		putSide(sd)
	}
}

// putSide gives back a side that nothing is in or refers to. It keeps
// the array of its flight's ends, which the next batch taken with it
// trades for its own.
func putSide(sd *side) {
	ends := sd.flight.ends[:0]
	if cap(ends) > maxPooledEnds {
		ends = nil
	}
	past := sd.past
	*sd = side{}
	sd.flight.ends, sd.past = ends, past
	sidePool.Put(sd)
}

// queuedLocked notes that the numbered messages first to last were
// queued; last 0 (a session not numbered: resume is off) is not
// followed.
func (o *Outbox) queuedLocked(first, last uint64) {
	if last == 0 {
		return
	}
	sd := o.sideLocked()
	if !sd.following {
		sd.trail, sd.following, sd.pastN, sd.pastEnd = trail{first: first}, true, 0, 0
	}
	sd.trail.queued = last
}

// leftLocked notes that n queued bytes left for the socket: all that was
// queued (whole), or the first n of it.
func (o *Outbox) leftLocked(n int, whole bool) {
	if o.side == nil || !o.side.following {
		return
	}
	sd := o.side
	t := &sd.trail
	t.sent += int64(n)
	if whole && t.whole != t.queued {
		// Only when numbered messages left: what leaves after the
		// newest of them (a notice, an answer) does not move where it
		// ends, or a client seen to acknowledge it would not be seen to
		// have it until that too was acknowledged.
		t.whole, t.wholeEnd = t.queued, t.sent
		if sd.pastN == 0 || t.wholeEnd-sd.pastEnd >= pastStride {
			if sd.past == nil {
				sd.past = new([pastLen]wholeMark)
			}
			sd.past[sd.pastN%pastLen] = wholeMark{t.whole, t.wholeEnd}
			sd.pastN++
			sd.pastEnd = t.wholeEnd
		}
	}
}

// TransportAcked returns the Seq of the newest numbered message the
// client is known to have received: its socket's peer acknowledged
// every byte of it and of those before (0 when none is known). It asks
// the socket (Owner.Unacked, a system call) once at least after bytes
// have left the queue since it last did (after 0: whenever) and
// something that left is not known to be received, and only while the socket is idle, when
// everything that left the queue is in the socket's hands; otherwise it
// returns what it found before. It implements hub.TransportAcker.
func (o *Outbox) TransportAcked(after int) uint64 {
	seq, _ := o.LookAcked(after)
	return seq
}

// LookAcked is TransportAcked, and reports besides whether it asked the
// socket this time. What it returns without asking, the hub was told
// when it was found (the engine's caller) or found it itself (its look
// as it keeps messages), so a caller told nothing new has nothing to
// pass on: the engine, after each read from the client, then spares
// the session's lock and its history a visit.
func (o *Outbox) LookAcked(after int) (seq uint64, looked bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.side == nil || !o.side.following {
		return 0, false
	}
	t := &o.side.trail
	if o.closed || !o.idle || t.acked == t.whole || t.sent-t.checked < int64(after) {
		return t.acked, false
	}
	unacked, ok := o.owner.Unacked()
	if after > 0 {
		// A look that failed counts as one: a socket that cannot tell
		// is asked again only once a stride more has left, not at
		// every call. A look whenever (after 0: the hub's, of a
		// conversation gone quiet) does not count: made while the
		// client had not yet acknowledged what it was sent, it would
		// put off the look that the client's next read earns, which
		// finds what the client acknowledged by sending, until a
		// stride more was written, which a quiet conversation may
		// never write.
		t.checked = t.sent
	}
	if !ok {
		return t.acked, false
	}
	acked := t.sent - int64(unacked) // bytes before this were acknowledged
	switch {
	case acked >= t.wholeEnd:
		t.acked, t.mark, t.markEnd = t.whole, 0, 0
	case t.markEnd > 0 && acked >= t.markEnd:
		t.acked, t.mark, t.markEnd = t.mark, t.whole, t.wholeEnd
	case t.markEnd == 0:
		t.mark, t.markEnd = t.whole, t.wholeEnd
	}
	got := t.acked
	if got == t.queued {
		// Everything numbered was received: the trail starts afresh
		// with the next numbered message, and an idle connection keeps
		// none. Bytes still unacknowledged then only make the next
		// trail's first looks find less acknowledged than was.
		o.side.following = false
		o.tidyLocked()
	}
	return got, true
}
