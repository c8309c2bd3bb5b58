package outbox_test

import (
	"strings"
	"testing"

	"duet/engine/outbox"
	"duet/proto"
)

// ackOwner is a directOwner whose socket says how much of what was
// written its peer has not acknowledged: unacked, which the test sets.
type ackOwner struct {
	directOwner
	unacked int
	asked   int  // calls of Unacked
	fails   bool // the socket cannot tell
}

func (a *ackOwner) Unacked() (int, bool) {
	a.asked++
	return a.unacked, !a.fails
}

// numbered delivers texts as a run numbered from first.
func numbered(o *outbox.Outbox, first uint64, texts ...string) {
	ev := message("a")
	ev.Seq = first
	run := make([][]byte, len(texts))
	for i, t := range texts {
		run[i] = []byte(t)
	}
	o.DeliverMessages(ev, run)
}

func newAckOwner() (*ackOwner, *outbox.Outbox) {
	a := &ackOwner{}
	o := outbox.New(a)
	o.SetDirect(true)
	o.Settle(0) // the socket is empty: deliveries are written directly
	return a, o
}

// TestTransportAckedFollowsTheSocket: the Seq returned is the newest
// message all of whose bytes the socket's peer acknowledged; one that is
// only partly acknowledged is not, and neither is any after it.
func TestTransportAckedFollowsTheSocket(t *testing.T) {
	a, o := newAckOwner()
	numbered(o, 1, "one", "two", "three")
	if a.writes != 1 {
		t.Fatalf("%d direct writes, want 1", a.writes)
	}
	// The socket holds the last message unacknowledged: what it knows
	// is only that everything was written. The newest message that left
	// becomes a mark, found acknowledged at a later look.
	a.unacked = len("message a three\n")
	if got := o.TransportAcked(0); got != 0 {
		t.Fatalf("acked %d with the third message unacknowledged and no mark before, want 0", got)
	}
	numbered(o, 4, "four", "five")
	// The peer has acknowledged up to the middle of "five": the mark (3)
	// is covered, the newest message (5) is not.
	a.unacked = 3
	if got := o.TransportAcked(0); got != 3 {
		t.Fatalf("acked %d, want 3: the mark is covered, five is not", got)
	}
	a.unacked = 0
	if got := o.TransportAcked(0); got != 5 {
		t.Fatalf("acked %d with nothing unacknowledged, want 5", got)
	}
	// Everything was received: the trail is gone, and the next look
	// finds nothing to follow until a numbered message comes.
	asked := a.asked
	if got := o.TransportAcked(0); got != 0 || a.asked != asked {
		t.Fatalf("after everything was received: acked %d, socket asked %d more times; want 0 and none", got, a.asked-asked)
	}
	numbered(o, 6, "six")
	if got := o.TransportAcked(0); got != 6 {
		t.Fatalf("a new trail: acked %d, want 6", got)
	}
}

// TestTransportAckedAsksOncePerStride: the socket is asked only once the
// bytes the caller names have left since it last was, so a busy relay
// pays one system call per many messages.
func TestTransportAckedAsksOncePerStride(t *testing.T) {
	const stride = 4 << 10
	a, o := newAckOwner()
	a.unacked = 1 << 30 // nothing ever acknowledged: the trail stays
	numbered(o, 1, "first")
	o.TransportAcked(0)
	asked := a.asked
	text := string(make([]byte, 100))
	seq := uint64(2)
	sent := 0
	for sent < stride-200 {
		numbered(o, seq, text)
		seq++
		sent += len("message a \n") + len(text)
		o.TransportAcked(stride)
	}
	if a.asked != asked {
		t.Fatalf("the socket was asked %d times within a stride, want 0", a.asked-asked)
	}
	for range 4 {
		numbered(o, seq, text)
		seq++
		o.TransportAcked(stride)
	}
	if a.asked != asked+1 {
		t.Fatalf("the socket was asked %d times once a stride had left, want 1", a.asked-asked)
	}
}

// TestTransportAckedWaitsForTheSocket: bytes taken by the owner's loop
// and not yet settled, or a direct write the socket took only part of,
// are not known to be in the socket: no look is taken then, and a
// message only partly written is never counted.
func TestTransportAckedWaitsForTheSocket(t *testing.T) {
	a, o := newAckOwner()
	a.take = func(n int) int { return n - 2 } // the socket is full two bytes short
	numbered(o, 1, "one")
	a.take = nil
	a.unacked = 0
	if got := o.TransportAcked(0); got != 0 || a.asked != 0 {
		t.Fatalf("with the rest still queued: acked %d, asked %d times; want 0, 0", got, a.asked)
	}
	b, _ := o.Take(0)
	if got := o.TransportAcked(0); got != 0 || a.asked != 0 {
		t.Fatalf("with the rest taken, not settled: acked %d, asked %d times; want 0, 0", got, a.asked)
	}
	outbox.Release(b)
	o.Settle(0)
	if got := o.TransportAcked(0); got != 1 {
		t.Fatalf("settled and acknowledged: acked %d, want 1", got)
	}
}

// TestUnnumberedIsNotFollowed: with resume off messages carry no Seq,
// and nothing is followed or asked of the socket.
func TestUnnumberedIsNotFollowed(t *testing.T) {
	a, o := newAckOwner()
	o.DeliverMessages(message("a"), [][]byte{[]byte("hi")})
	o.Deliver(&proto.Event{Kind: proto.EvPaired, Peer: "a"})
	if got := o.TransportAcked(0); got != 0 || a.asked != 0 {
		t.Fatalf("acked %d, socket asked %d times; want 0, 0", got, a.asked)
	}
}

// TestLookAckedSaysWhenItAsked: LookAcked reports a look exactly when
// it asked the socket, with what that found; otherwise what was found
// before, as TransportAcked returns it.
func TestLookAckedSaysWhenItAsked(t *testing.T) {
	const stride = 1 << 10
	a, o := newAckOwner()
	a.unacked = 1 << 30
	numbered(o, 1, "first")
	text := string(make([]byte, 300))
	seq := uint64(2)
	for k := range 40 {
		numbered(o, seq, text)
		seq++
		if k == 20 {
			a.unacked = 0 // all of it acknowledged from now on
		}
		asked := a.asked
		got, looked := o.LookAcked(stride)
		if looked != (a.asked > asked) {
			t.Fatalf("delivery %d: looked %v, the socket asked %d times", k, looked, a.asked-asked)
		}
		if !looked && got != o.TransportAcked(1<<30) {
			t.Fatalf("delivery %d: without a look, %d where TransportAcked says %d", k, got, o.TransportAcked(1<<30))
		}
		if looked && a.unacked == 0 && got != seq-1 {
			t.Fatalf("delivery %d: a look with everything acknowledged found %d, want %d", k, got, seq-1)
		}
	}
}

// TestFailedLookCountsAsOne: a socket that cannot tell what was
// acknowledged is asked once, and again only once another stride has
// left, not at every look: each look is a system call, and the hub looks
// as it keeps every run while the history is full.
func TestFailedLookCountsAsOne(t *testing.T) {
	a, o := newAckOwner()
	a.fails = true
	const stride = 64
	seq := uint64(0)
	sendStride := func() { // 8 messages of 16 bytes ("message a text-N\n")
		for i := range 8 {
			seq++
			numbered(o, seq, "text-"+string(rune('0'+i)))
		}
	}
	sendStride()
	for range 10 {
		if got, looked := o.LookAcked(stride); got != 0 || looked {
			t.Fatalf("a socket that cannot tell: acked %d, looked %v", got, looked)
		}
	}
	if a.asked != 1 {
		t.Fatalf("socket asked %d times in ten looks with a stride sent, want 1", a.asked)
	}
	sendStride()
	o.LookAcked(stride)
	o.LookAcked(stride)
	if a.asked != 2 {
		t.Fatalf("socket asked %d times after a stride more was sent, want 2", a.asked)
	}
	// Once it can tell again, what it tells is used.
	a.fails = false
	sendStride()
	if got, looked := o.LookAcked(stride); got != seq || !looked {
		t.Fatalf("acked %d, looked %v; want %d and true", got, looked, seq)
	}
}

// TestTrailCycleAllocatesNothing: a trail that ends, everything
// numbered having been received, and starts again with the next
// numbered message allocates nothing: the side it is kept in goes back
// to its pool and comes out again, as a reader's does each time the look
// after its reads finds it caught up.
func TestTrailCycleAllocatesNothing(t *testing.T) {
	if raceBuild {
		t.Skip("the race detector's sync.Pool drops what is put back at random")
	}
	a, o := newAckOwner()
	ev := message("a")
	run := [][]byte{[]byte("one")}
	seq := uint64(0)
	allocs := testing.AllocsPerRun(100, func() {
		seq++
		ev.Seq = seq
		o.DeliverMessages(ev, run)
		a.sock.Reset()
		if got := o.TransportAcked(0); got != seq {
			t.Fatalf("acked %d, want %d", got, seq)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations a trail, want none", allocs)
	}
}

// TestUnreceivedCountsWhatTheClientMayNotHave: what a connection that is
// to close still owes its client, in relayed messages: those queued,
// those its socket holds unwritten, and those its socket wrote that the
// peer's TCP has not acknowledged. Exact when all that is not
// acknowledged is of the batch taken last or after it; otherwise
// counted from the newest message known received, never fewer than
// were not.
func TestUnreceivedCountsWhatTheClientMayNotHave(t *testing.T) {
	// Lines of 14, 14, 16 and 15 bytes: a batch of 59.
	four := []string{"one", "two", "three", "four"}
	t.Run("in the batch taken last", func(t *testing.T) {
		for _, c := range []struct {
			unacked, want int
		}{
			{0, 2 + 2},  // what the socket took was all acknowledged
			{12, 2 + 2}, // one and two acknowledged whole
			{13, 3 + 2}, // two not quite
			{40, 4 + 2}, // none
		} {
			a, o := newAckOwner()
			a.decline = true // the loop flushes: what is delivered is queued
			numbered(o, 1, four...)
			b, msgs := o.Take(0)
			if msgs != 4 || len(b.B) != 59 {
				t.Fatalf("took %d messages in %d bytes, want 4 in 59", msgs, len(b.B))
			}
			outbox.Release(b)
			const held = 19 // the socket took 40: three and four are not whole
			o.Settle(held)
			numbered(o, 5, "five", "six")
			a.unacked = c.unacked
			if got := o.Unreceived(held); got != c.want {
				t.Errorf("%d bytes written unacknowledged: %d unreceived, want %d", c.unacked, got, c.want)
			}
		}
	})
	t.Run("taken whole, not acknowledged", func(t *testing.T) {
		// The socket took every message of the batch, and holds only
		// the bytes after them: still, where each ends is known.
		a, o := newAckOwner()
		a.decline = true
		numbered(o, 1, four...)
		o.DeliverRaw([]byte("goodbye\n"))
		b, _ := o.Take(0)
		outbox.Release(b)
		const held = len("goodbye\n")
		o.Settle(held)
		a.unacked = len("message a three\n") + len("message a four\n")
		if got := o.Unreceived(held); got != 2 {
			t.Fatalf("%d unreceived, want 2: three and four", got)
		}
	})
	t.Run("written before", func(t *testing.T) {
		// Written directly, where each ends is not kept: with nothing
		// known received, all of it counts, though only the last is
		// unacknowledged.
		a, o := newAckOwner()
		numbered(o, 1, "one", "two", "three")
		a.unacked = len("message a three\n")
		if got := o.Unreceived(0); got != 3 {
			t.Fatalf("%d unreceived with nothing known received, want 3", got)
		}
		// A look marks three, found acknowledged at the next; four and
		// five are counted from it.
		o.TransportAcked(0)
		numbered(o, 4, "four", "five")
		a.unacked = len("message a five\n")
		if got := o.TransportAcked(0); got != 3 {
			t.Fatalf("acked %d, want 3", got)
		}
		if got := o.Unreceived(0); got != 2 {
			t.Fatalf("%d unreceived after the look found three received, want 2", got)
		}
		a.unacked = 0
		if got := o.Unreceived(0); got != 0 {
			t.Fatalf("%d unreceived with everything acknowledged, want 0", got)
		}
	})
	t.Run("a new trail", func(t *testing.T) {
		// What came before the trail began was received (or was another
		// connection's): it is not counted.
		a, o := newAckOwner()
		numbered(o, 1, "one", "two")
		if got := o.TransportAcked(0); got != 2 {
			t.Fatalf("acked %d, want 2", got)
		}
		numbered(o, 3, "three")
		a.unacked = len("message a three\n")
		if got := o.Unreceived(0); got != 1 {
			t.Fatalf("%d unreceived, want 1", got)
		}
	})
	t.Run("the socket cannot tell", func(t *testing.T) {
		a, o := newAckOwner()
		a.fails = true
		numbered(o, 1, four...)
		if got := o.Unreceived(0); got != 4 {
			t.Fatalf("%d unreceived, want 4", got)
		}
	})
	t.Run("not numbered", func(t *testing.T) {
		// Resume off: only what was never written counts, as Close's.
		a, o := newAckOwner()
		a.decline = true
		o.DeliverMessages(message("a"), [][]byte{[]byte("hi"), []byte("there")})
		a.unacked = 1 << 20
		if got := o.Unreceived(0); got != 2 {
			t.Fatalf("%d unreceived, want 2", got)
		}
	})
}

// TestAbortCountsWhatTheSocketHeldUnacknowledged: a connection whose
// peer the kernel found gone (Abort) loses what its socket wrote that
// the peer's TCP never acknowledged, and counts it with what was never
// written; a connection that closes otherwise (Close) may still deliver
// what its socket took, and counts only what it never took whole.
func TestAbortCountsWhatTheSocketHeldUnacknowledged(t *testing.T) {
	// Lines of 14, 14, 16 and 15 bytes: a batch of 59.
	four := []string{"one", "two", "three", "four"}
	for _, c := range []struct {
		name     string
		abort    bool
		unacked  int
		wantLost int
	}{
		{"closed", false, 40, 2 + 2},   // three and four not taken whole, five and six queued
		{"aborted", true, 40, 4 + 2},   // one and two taken, never acknowledged
		{"aborted, acked", true, 0, 4}, // what the socket took was all acknowledged
	} {
		t.Run(c.name, func(t *testing.T) {
			a, o := newAckOwner()
			a.decline = true
			numbered(o, 1, four...)
			b, _ := o.Take(0)
			outbox.Release(b)
			const held = 19
			o.Settle(held)
			numbered(o, 5, "five", "six")
			a.unacked = c.unacked
			var lost int
			if c.abort {
				lost, _ = o.Abort(held)
			} else {
				lost, _ = o.Close(held)
			}
			if lost != c.wantLost {
				t.Fatalf("lost %d, want %d", lost, c.wantLost)
			}
			if again, _ := o.Abort(held); again != 0 {
				t.Fatalf("closing again lost %d", again)
			}
		})
	}
}

// TestNotReceivedCountsWhatTheSocketHolds: a session taken from an
// open connection (a takeover) carries every message its client's TCP
// has not received, asked from another goroutine than the connection's:
// those queued, those of batches the socket took long ago and holds
// unacknowledged (a reader that reads slowly), placed against the marks
// the trail keeps a stride apart; and once the connection has closed,
// what its close counted and what was dropped since.
func TestNotReceivedCountsWhatTheSocketHolds(t *testing.T) {
	const size = 1000 // each message's line: "message a " and the text
	text := strings.Repeat("x", size-len("message a \n"))
	a, o := newAckOwner()
	a.decline = true
	// 600 messages in batches of 10, each taken whole by the socket:
	// 600,000 bytes, more than nine strides.
	for seq := uint64(1); seq <= 600; seq += 10 {
		texts := make([]string, 10)
		for i := range texts {
			texts[i] = text
		}
		numbered(o, seq, texts...)
		b, msgs := o.Take(0)
		if msgs != 10 || len(b.B) != 10*size {
			t.Fatalf("took %d messages in %d bytes", msgs, len(b.B))
		}
		outbox.Release(b)
		o.Settle(0)
	}
	numbered(o, 601, "queued", "too")
	// The client's TCP acknowledged the first 200,500 bytes: message
	// 200 whole. The count is out by a stride at most, never short.
	a.unacked = 600*size - 200*size - 500
	got := o.NotReceived()
	if got < 402 || got > 402+pastStrideMessages(size) {
		t.Errorf("%d messages not received, want 402 and at most a stride more", got)
	}
	lost, _ := o.Abort(0)
	if lost < 402 {
		t.Fatalf("the close counted %d", lost)
	}
	numbered(o, 603, "dropped")
	if got := o.NotReceived(); got != lost+1 {
		t.Errorf("closed: %d not received, want what the close counted (%d) and the one dropped since", got, lost)
	}
}

// pastStrideMessages is how many messages of size bytes a stride of the
// trail's marks holds.
func pastStrideMessages(size int) int { return (64<<10)/size + 1 }

// TestNoticeAfterMessagesDoesNotHideThem: what is written after the
// newest message (a notice, the answer to a command) does not move where
// that message ends, so a peer whose TCP acknowledged the message but
// not yet the notice is known to have the message.
func TestNoticeAfterMessagesDoesNotHideThem(t *testing.T) {
	notice := "* you are a, not connected\n"
	// say delivers texts numbered from first, then a notice, as a
	// connection's loop does: queued, then taken whole by the socket.
	say := func(o *outbox.Outbox, first uint64, texts ...string) {
		numbered(o, first, texts...)
		o.DeliverRaw([]byte(notice))
		b, _ := o.Take(0)
		outbox.Release(b)
		o.Settle(0)
	}
	a, o := newAckOwner()
	say(o, 1, "one", "two")
	a.unacked = len(notice)
	if got := o.TransportAcked(0); got != 2 {
		t.Fatalf("acked %d with only the notice unacknowledged, want 2", got)
	}
	say(o, 3, "three")
	a.unacked = len(notice)
	if lost, _ := o.Abort(0); lost != 0 {
		t.Fatalf("aborted with only the notice unacknowledged: %d lost, want 0", lost)
	}
}

// TestLookWheneverDoesNotPutOffTheStrideLook: a look whenever (after 0,
// the hub's look at a conversation gone quiet), made while the client
// had not acknowledged what it was sent, does not put off the look its
// next read earns: that look finds everything acknowledged. Before, it
// waited for a stride more to be written, which a quiet conversation
// never wrote, and its partner was told, when it dropped, that messages
// it had read never reached it.
func TestLookWheneverDoesNotPutOffTheStrideLook(t *testing.T) {
	const stride = 4 << 10
	a, o := newAckOwner()
	text := string(make([]byte, 100))
	seq := uint64(1)
	for sent := 0; sent < stride; sent += len("message a \n") + len(text) {
		numbered(o, seq, text)
		seq++
	}
	// Half of what was written is not acknowledged yet as the quiet
	// look comes.
	a.unacked = stride / 2
	if got := o.TransportAcked(0); got != 0 {
		t.Fatalf("acked %d with half unacknowledged and no mark before, want 0", got)
	}
	// The client reads everything and answers, which acknowledges it.
	a.unacked = 0
	got, looked := o.LookAcked(stride)
	if !looked || got != seq-1 {
		t.Fatalf("after the client answered: acked %d (looked %v), want %d: everything", got, looked, seq-1)
	}
}
