package outbox_test

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"duet/engine/hub"
	"duet/engine/outbox"
	"duet/proto"
)

// textEncoder writes each event as one line, "message <from> <text>" or
// the event's kind: enough to check order and content.
type textEncoder struct{}

// Protocol: the owners of these tests speak a line protocol of sorts.
func (textEncoder) Protocol() proto.Protocol { return proto.ProtoLine }

// Unacked: these owners' sockets cannot tell (trail_test.go has one that
// can).
func (textEncoder) Unacked() (int, bool) { return 0, false }

func (textEncoder) AppendEvent(dst []byte, ev *proto.Event) []byte {
	if ev.Kind == proto.EvMessage {
		dst = append(dst, "message "...)
		dst = append(dst, ev.From...)
		dst = append(dst, ' ')
		dst = append(dst, ev.Text...)
		return append(dst, '\n')
	}
	return append(strconv.AppendInt(append(dst, "event "...), int64(ev.Kind), 10), '\n')
}

func (e textEncoder) AppendMessages(dst []byte, ends []int32, ev *proto.Event, texts [][]byte) ([]byte, []int32) {
	for _, text := range texts {
		ev.Text = text
		dst = e.AppendEvent(dst, ev)
		ends = append(ends, int32(len(dst)))
	}
	return dst, ends
}

// fakeLoop stands in for the owner's event loop: it counts the flushes
// it is asked for, and flushes the way the engine does (Take, write,
// Release, Settle), writing to out.
type fakeLoop struct {
	textEncoder
	scheduled atomic.Int64
	marks     atomic.Pointer[outbox.Marks]
	evicted   []hub.Eviction
	out       bytes.Buffer
	msgs      int // relayed messages written
}

func newFake(high, max int64) (*fakeLoop, *outbox.Outbox) {
	l := &fakeLoop{}
	l.setMarks(high, max)
	return l, outbox.New(l)
}

func (l *fakeLoop) setMarks(high, max int64) {
	l.marks.Store(&outbox.Marks{High: high, Max: max})
}

func (l *fakeLoop) Schedule()                { l.scheduled.Add(1) }
func (l *fakeLoop) Marks() outbox.Marks      { return *l.marks.Load() }
func (l *fakeLoop) Evicted(why hub.Eviction) { l.evicted = append(l.evicted, why) }
func (l *fakeLoop) RefusedLate(*proto.Error) {}
func (l *fakeLoop) WriteDirect([]byte) (int, bool) {
	panic("a direct write while direct writes were off")
}

// flush writes what is queued, as if the socket took it all.
func (l *fakeLoop) flush(o *outbox.Outbox) {
	if b, msgs := o.Take(0); b != nil {
		l.out.Write(b.B)
		l.msgs += msgs
		outbox.Release(b)
	}
	o.Settle(0)
}

// waiter counts its wake-ups.
type waiter struct{ woken atomic.Int64 }

func (w *waiter) Wake() { w.woken.Add(1) }

func message(from string) *proto.Event {
	return &proto.Event{Kind: proto.EvMessage, From: from}
}

func TestDeliveriesKeepTheirOrder(t *testing.T) {
	l, o := newFake(1<<20, 4<<20)
	o.Deliver(&proto.Event{Kind: proto.EvPaired, Peer: "bob"})
	ev := message("bob")
	ev.Text = []byte("one")
	o.Deliver(ev)
	o.DeliverMessages(message("bob"), [][]byte{[]byte("two"), []byte("three")})
	o.DeliverRaw([]byte("raw\n"))
	o.Deliver(&proto.Event{Kind: proto.EvPeerLeft})
	if !o.Pending() {
		t.Fatal("nothing pending after five deliveries")
	}
	l.flush(o)
	want := fmt.Sprintf("event %d\nmessage bob one\nmessage bob two\nmessage bob three\nraw\nevent %d\n", proto.EvPaired, proto.EvPeerLeft)
	if got := l.out.String(); got != want {
		t.Fatalf("written:\n%s\nwant:\n%s", got, want)
	}
	if l.msgs != 3 {
		t.Fatalf("%d relayed messages counted, want 3 (events and raw bytes are not messages)", l.msgs)
	}
	if o.Pending() {
		t.Fatal("still pending after the flush")
	}
}

// TestDeliveriesBetweenFlushesScheduleOnce: a busy relay costs its
// reader's loop one flush per batch, not one per message.
func TestDeliveriesBetweenFlushesScheduleOnce(t *testing.T) {
	l, o := newFake(1<<20, 4<<20)
	for i := range 100 {
		o.DeliverMessages(message("a"), [][]byte{[]byte(strconv.Itoa(i))})
		o.Deliver(&proto.Event{Kind: proto.EvStatus})
	}
	if n := l.scheduled.Load(); n != 1 {
		t.Fatalf("200 deliveries scheduled %d flushes, want 1", n)
	}
	l.flush(o)
	o.Deliver(&proto.Event{Kind: proto.EvStatus})
	if n := l.scheduled.Load(); n != 2 {
		t.Fatalf("a delivery after the flush scheduled %d in all, want 2", n)
	}
	// A Take that finds the socket full keeps the bytes but still ends
	// the scheduled flush: the owner retries on its own (held output).
	if b, _ := o.Take(1); b != nil {
		t.Fatal("Take handed over bytes while the socket held output")
	}
	o.Deliver(&proto.Event{Kind: proto.EvStatus})
	if n := l.scheduled.Load(); n != 3 {
		t.Fatalf("scheduled %d, want 3", n)
	}
}

// TestInlineDeliveriesAreNotScheduled: while the owner's loop acts on the
// connection's own input, it flushes before it returns, so its replies
// need no wake-up.
func TestInlineDeliveriesAreNotScheduled(t *testing.T) {
	l, o := newFake(1<<20, 4<<20)
	o.SetInline(true)
	o.Deliver(&proto.Event{Kind: proto.EvWelcome})
	o.DeliverRaw([]byte("x"))
	o.SetInline(false)
	if n := l.scheduled.Load(); n != 0 {
		t.Fatalf("inline deliveries scheduled %d flushes", n)
	}
	l.flush(o)
	if !strings.Contains(l.out.String(), "x") {
		t.Fatalf("the owner's flush missed the inline deliveries: %q", l.out.String())
	}
	o.Deliver(&proto.Event{Kind: proto.EvStatus})
	if n := l.scheduled.Load(); n != 1 {
		t.Fatalf("a delivery after inline scheduled %d, want 1", n)
	}
}

// TestBacklogAndMarks: the backlog counts what is queued and what the
// socket held at the last Settle; Wait holds a sender back past the high
// mark, and Settle wakes it once the backlog is down to the low mark.
func TestBacklogAndMarks(t *testing.T) {
	l, o := newFake(100, 400)
	o.DeliverRaw(make([]byte, 60))
	if got := o.Backlog(); got != 60 {
		t.Fatalf("backlog %d after 60 bytes", got)
	}
	w := &waiter{}
	if o.Wait(w) {
		t.Fatal("Wait held a sender back below the high mark")
	}
	o.DeliverRaw(make([]byte, 60))
	if !o.Wait(w) {
		t.Fatal("Wait let a sender go on past the high mark (120 > 100)")
	}

	// Taken and handed to the socket, which keeps 70 of the 120 bytes:
	// the backlog is what the socket holds, still past the low mark.
	b, _ := o.Take(0)
	if got := o.Backlog(); got != 120 {
		t.Fatalf("backlog %d after Take; it changes at Settle", got)
	}
	outbox.Release(b)
	o.Settle(70)
	if got := o.Backlog(); got != 70 {
		t.Fatalf("backlog %d, want the 70 bytes the socket holds", got)
	}
	if w.woken.Load() != 0 {
		t.Fatal("woken at 70 bytes, above the low mark of 50")
	}
	// More arrives while the socket is full: it stays queued, and
	// counts.
	o.DeliverRaw(make([]byte, 20))
	if b, _ := o.Take(70); b != nil {
		t.Fatal("Take handed over bytes while the socket was full")
	}
	o.Settle(30)
	if got := o.Backlog(); got != 50 {
		t.Fatalf("backlog %d, want 30 held + 20 queued", got)
	}
	if w.woken.Load() != 1 {
		t.Fatalf("woken %d times at the low mark, want 1", w.woken.Load())
	}
	o.Settle(0)
	if w.woken.Load() != 1 {
		t.Fatal("a sender woken once was woken again")
	}
	l.flush(o)

	// Past the max mark the reader has stopped reading.
	o.DeliverRaw(make([]byte, 400))
	if o.Overflowing() {
		t.Fatal("overflowing at the max mark")
	}
	o.DeliverRaw(make([]byte, 1))
	if !o.Overflowing() {
		t.Fatal("not overflowing past the max mark")
	}
	l.flush(o)

	// The marks are read when used: a reload applies at once.
	o.DeliverRaw(make([]byte, 120))
	l.setMarks(200, 400)
	if o.Wait(w) {
		t.Fatal("Wait used the old high mark after a change")
	}
}

// TestWaitRegistersOnce: a paused sender asks again each time it finds
// its reader still behind, woken or not yet; it is held on to once, and
// woken once.
func TestWaitRegistersOnce(t *testing.T) {
	l, o := newFake(100, 400)
	o.DeliverRaw(make([]byte, 120))
	w := &waiter{}
	for range 3 {
		if !o.Wait(w) {
			t.Fatal("Wait let a sender go on past the high mark")
		}
	}
	l.flush(o)
	if got := w.woken.Load(); got != 1 {
		t.Fatalf("a sender that asked three times was woken %d times, want 1", got)
	}
}

// TestCloseWhileDelivering: senders keep delivering while the owner
// flushes and then closes. Every message delivered before the close is
// either written or counted as lost, none twice; deliveries after the
// close are dropped; the senders that waited are returned, not woken.
func TestCloseWhileDelivering(t *testing.T) {
	for round := range 20 {
		l, o := newFake(1<<10, 1<<20)
		w := &waiter{}
		o.DeliverRaw(make([]byte, 2<<10))
		if !o.Wait(w) {
			t.Fatal("Wait let a sender go on past the high mark")
		}
		var delivered atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				text := [][]byte{[]byte(strconv.Itoa(g))}
				for {
					select {
					case <-stop:
						return
					default:
					}
					o.DeliverMessages(message("s"), text)
					delivered.Add(1)
				}
			}()
		}
		// The batch taken last, if the last Take took one, is in flight
		// at the close: no Settle said the socket took it, and the close
		// counts it lost, as a write that failed. Every batch before it
		// went whole (the next Take found the socket empty).
		inFlight := 0
		for range 50 + round*10 {
			b, msgs := o.Take(0)
			inFlight = msgs
			if b != nil {
				l.msgs += msgs
				outbox.Release(b)
			}
		}
		before := delivered.Load() // these all returned before the close began
		lost, waiters := o.Close(0)
		close(stop)
		wg.Wait()
		l.msgs -= inFlight

		// Each sender counts a delivery once it has returned, so the
		// deliveries that reached the outbox are at least those counted
		// before the close, and at most all.
		if got := int64(l.msgs + lost); got < before || got > delivered.Load() {
			t.Fatalf("written %d + lost %d = %d; %d delivered before the close, %d in all",
				l.msgs, lost, got, before, delivered.Load())
		}
		if len(waiters) != 1 || waiters[0] != hub.Waiter(w) || w.woken.Load() != 0 {
			t.Fatalf("close returned %v waiters (woken %d); want the one, unwoken", waiters, w.woken.Load())
		}
		if o.Backlog() != 0 || o.Pending() {
			t.Fatalf("closed outbox holds %d bytes (pending %v)", o.Backlog(), o.Pending())
		}
		if b, _ := o.Take(0); b != nil {
			t.Fatal("a closed outbox handed over bytes")
		}
		o.Settle(100)
		if o.Backlog() != 0 || o.Wait(w) {
			t.Fatal("a closed outbox took a backlog or held a sender back")
		}
		if lost, waiters := o.Close(0); lost != 0 || waiters != nil {
			t.Fatalf("second close returned %d, %v", lost, waiters)
		}
	}
}

func TestCloseCountsWhatWasNotTaken(t *testing.T) {
	l, o := newFake(1<<20, 4<<20)
	o.DeliverMessages(message("a"), [][]byte{[]byte("1"), []byte("2")})
	l.flush(o)
	o.DeliverMessages(message("a"), [][]byte{[]byte("3"), []byte("4")})
	o.Deliver(message("a"))
	o.Deliver(&proto.Event{Kind: proto.EvStatus})
	o.DeliverRaw([]byte("raw"))
	if lost, _ := o.Close(0); lost != 3 {
		t.Fatalf("lost %d; want 3, the messages queued and not taken", lost)
	}
}

// kickOwner is an owner whose loop is a goroutine woken through kick.
type kickOwner struct {
	textEncoder
	kick      chan struct{}
	schedules atomic.Int64
}

func (k *kickOwner) Schedule() {
	k.schedules.Add(1)
	select {
	case k.kick <- struct{}{}:
	default:
	}
}
func (k *kickOwner) Marks() outbox.Marks      { return outbox.Marks{High: 1 << 30, Max: 1 << 31} }
func (k *kickOwner) Evicted(hub.Eviction)     {}
func (k *kickOwner) RefusedLate(*proto.Error) {}
func (k *kickOwner) WriteDirect([]byte) (int, bool) {
	panic("a direct write while direct writes were off")
}

// TestConcurrentSendersUnderRace: many senders on many goroutines, one
// owner flushing on a goroutine of its own whenever it is asked. Each
// sender's messages arrive once each, in order, and the flushes batch.
func TestConcurrentSendersUnderRace(t *testing.T) {
	const senders, each = 8, 500
	kick := make(chan struct{}, 1)
	owner := &kickOwner{kick: kick}
	o := outbox.New(owner)
	var out bytes.Buffer
	done := make(chan struct{})
	loopDone := make(chan struct{})
	go func() { // the owner's loop
		defer close(loopDone)
		for {
			select {
			case <-kick:
			case <-done:
				if b, _ := o.Take(0); b != nil {
					out.Write(b.B)
					outbox.Release(b)
				}
				return
			}
			if b, _ := o.Take(0); b != nil {
				out.Write(b.B)
				outbox.Release(b)
			}
			o.Settle(0)
		}
	}()
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			from := "s" + strconv.Itoa(s)
			ev := message(from)
			for i := 0; i < each; i += 2 {
				if i%4 == 0 {
					o.DeliverMessages(ev, [][]byte{[]byte(strconv.Itoa(i)), []byte(strconv.Itoa(i + 1))})
					continue
				}
				ev.Text = []byte(strconv.Itoa(i))
				o.Deliver(ev)
				ev.Text = []byte(strconv.Itoa(i + 1))
				o.Deliver(ev)
			}
		}()
	}
	wg.Wait()
	close(done)
	<-loopDone

	next := make(map[string]int)
	for ln := range strings.Lines(out.String()) {
		f := strings.Fields(ln)
		if len(f) != 3 || f[0] != "message" {
			t.Fatalf("garbled line %q", ln)
		}
		if want := strconv.Itoa(next[f[1]]); f[2] != want {
			t.Fatalf("%s: got %s, want %s", f[1], f[2], want)
		}
		next[f[1]]++
	}
	for s := range senders {
		if n := next["s"+strconv.Itoa(s)]; n != each {
			t.Fatalf("s%d: %d messages arrived, want %d", s, n, each)
		}
	}
	if n := owner.schedules.Load(); n >= senders*each {
		t.Fatalf("%d deliveries scheduled %d flushes: no batching", senders*each, n)
	}
}

// TestTakenBuffersAreNotReused: the buffer Take hands over is the
// caller's until it is released; deliveries after the Take go to another
// buffer, and a closed outbox writes to none.
func TestTakenBuffersAreNotReused(t *testing.T) {
	l, o := newFake(1<<20, 4<<20)
	o.DeliverRaw([]byte("first"))
	b, _ := o.Take(0)
	kept := string(b.B)
	for range 100 {
		o.DeliverRaw([]byte("later deliveries must not land in the taken buffer"))
	}
	if string(b.B) != kept {
		t.Fatalf("the taken buffer changed to %.40q", b.B)
	}
	b2, _ := o.Take(0)
	if &b.B[:1][0] == &b2.B[:1][0] {
		t.Fatal("two Takes without a Release share one array")
	}
	outbox.Release(b)
	outbox.Release(b2)
	l.flush(o)

	o.DeliverRaw([]byte("queued when closed"))
	o.Close(0)
	// The closed outbox's buffer went back to the pool; what the pool
	// hands out next must not be written by the closed outbox.
	for range 10 {
		o.DeliverRaw([]byte("after close"))
		o.Deliver(&proto.Event{Kind: proto.EvStatus})
	}
	if o.Pending() || o.Backlog() != 0 {
		t.Fatal("a closed outbox took deliveries")
	}
}

func TestEvictIsPassedToTheOwner(t *testing.T) {
	l, o := newFake(1, 2)
	var q hub.Queue = o
	q.Evict(hub.EvictReplaced)
	q.Evict(hub.EvictResumed)
	if got := l.evicted; len(got) != 2 || got[0] != hub.EvictReplaced || got[1] != hub.EvictResumed {
		t.Fatalf("owner told %v", got)
	}
}

func BenchmarkDeliverMessages(b *testing.B) {
	l, o := newFake(1<<30, 1<<31)
	run := make([][]byte, 64)
	for i := range run {
		run[i] = []byte("a 64-byte chat message, the size the relay benchmarks all use..")
	}
	ev := message("alice")
	b.ReportAllocs()
	b.SetBytes(64 * 64)
	for b.Loop() {
		o.DeliverMessages(ev, run)
		if buf, _ := o.Take(0); buf != nil {
			outbox.Release(buf)
		}
		o.Settle(0)
	}
	_ = l
}
