package outbox_test

import (
	"bytes"
	"math/rand/v2"
	"strconv"
	"testing"

	"duet/engine/outbox"
	"duet/proto"
)

// wholeMessages counts the messages the socket took whole: the lines of
// got that textEncoder wrote for a message, ended.
func wholeMessages(got []byte) int {
	n := 0
	for {
		i := bytes.IndexByte(got, '\n')
		if i < 0 {
			return n
		}
		if bytes.HasPrefix(got, []byte("message ")) {
			n++
		}
		got = got[i+1:]
	}
}

// TestUnsentIsExactToTheMessage: messages, runs of them and other
// bytes are delivered, written directly or flushed by the owner's loop,
// to a socket that takes a random part of each write (socketSim), so
// that writes stop anywhere in a message. Whenever the loop has settled,
// Unsent is exactly the messages the socket did not take whole; Close
// returns exactly that, at any moment; and what is delivered after it
// is Dropped.
func TestUnsentIsExactToTheMessage(t *testing.T) {
	for seed := range uint64(200) {
		s := &socketSim{rng: rand.New(rand.NewPCG(seed, 3)), kick: make(chan struct{}, 1)}
		o := outbox.New(s)
		o.SetDirect(seed%2 == 0)
		rng := rand.New(rand.NewPCG(seed, 4))
		delivered, next := 0, 0
		text := func() []byte {
			next++
			return []byte(strconv.Itoa(next) + " " + string(bytes.Repeat([]byte("x"), rng.IntN(40))))
		}
		steps := rng.IntN(300)
		for range steps {
			switch rng.IntN(5) {
			case 0:
				ev := message("a")
				ev.Text = text()
				o.Deliver(ev)
				delivered++
			case 1:
				run := make([][]byte, 1+rng.IntN(6))
				for i := range run {
					run[i] = text()
				}
				o.DeliverMessages(message("a"), run)
				delivered += len(run)
			case 2:
				o.Deliver(&proto.Event{Kind: proto.EvStatus}) // not a message
			case 3:
				o.DeliverRaw([]byte("raw bytes\n"))
			case 4:
				s.turn(o)
				if got, want := o.Unsent(), delivered-wholeMessages(s.got.Bytes()); got != want {
					t.Fatalf("seed %d: Unsent %d after a settle, want %d", seed, got, want)
				}
			}
		}
		if len(s.held) == 0 && rng.IntN(2) == 0 {
			// A write that fails: gnet closes the connection in the
			// write, before any Settle says what the socket took. The
			// batch taken counts whole.
			if b, _ := o.Take(0); b != nil {
				outbox.Release(b)
			}
		}
		lost, _ := o.Close(len(s.held))
		if want := delivered - wholeMessages(s.got.Bytes()); lost != want {
			t.Fatalf("seed %d: Close says %d lost, want %d: %d delivered, %d taken whole", seed, lost, want, delivered, wholeMessages(s.got.Bytes()))
		}
		o.DeliverMessages(message("a"), [][]byte{text(), text()})
		ev := message("a")
		ev.Text = text()
		o.Deliver(ev)
		o.Deliver(&proto.Event{Kind: proto.EvStatus})
		if got := o.Dropped(); got != 3 {
			t.Fatalf("seed %d: %d dropped after Close, want 3", seed, got)
		}
		if got := o.Unsent(); got != 0 {
			t.Fatalf("seed %d: Unsent %d after Close", seed, got)
		}
	}
}

// TestCloseWhileWriting: a Close between a Take and its Settle is a
// write that failed, and loses the whole batch; after a Settle, the
// messages that end in what the socket holds.
func TestCloseWhileWriting(t *testing.T) {
	run := [][]byte{[]byte("one"), []byte("two"), []byte("three")} // 14, 14, 16 bytes
	for _, tc := range []struct {
		name    string
		settle  int // what the socket holds at the Settle after the write; -1: none came
		held    int // at Close
		unsent  int // after the Settle
		wantNow int
	}{
		{"write failed", -1, 0, 3, 3},
		{"all taken", 0, 0, 0, 0},
		{"last byte held", 1, 1, 1, 1},
		{"cut in the second", 20, 20, 2, 2},
		{"second ends where the socket stopped", 16, 16, 1, 1},
		{"drained more before the close", 44, 15, 3, 1},
		{"none taken", 44, 44, 3, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, o := newFake(1<<20, 4<<20)
			o.DeliverMessages(message("a"), run)
			o.DeliverRaw(nil)
			b, msgs := o.Take(0)
			if msgs != 3 || len(b.B) != 44 {
				t.Fatalf("took %d messages in %d bytes", msgs, len(b.B))
			}
			outbox.Release(b)
			if tc.settle >= 0 {
				o.Settle(tc.settle)
			}
			if got := o.Unsent(); got != tc.unsent {
				t.Fatalf("Unsent %d, want %d", got, tc.unsent)
			}
			if lost, _ := o.Close(tc.held); lost != tc.wantNow {
				t.Fatalf("lost %d, want %d", lost, tc.wantNow)
			}
		})
	}
}

// TestPartialDirectWriteCountsWhatWent: a direct write the socket takes
// part of leaves queued only the messages it did not take whole.
func TestPartialDirectWriteCountsWhatWent(t *testing.T) {
	d := &directOwner{}
	o := outbox.New(d)
	o.SetDirect(true)
	d.flush(o) // the socket is idle
	d.take = func(n int) int { return len("message a one\nmessage a t") }
	say(o, "one", "two", "three")
	if got := o.Unsent(); got != 2 {
		t.Fatalf("Unsent %d after the socket took one message and part of the next, want 2", got)
	}
	if lost, _ := o.Close(0); lost != 2 {
		t.Fatalf("lost %d, want 2", lost)
	}
}

// TestFlightAllocatesNothing: following a batch that the socket takes
// in parts allocates nothing in steady state: its ends trade places with
// those of the side that follows it, and both go back to their pools.
func TestFlightAllocatesNothing(t *testing.T) {
	if raceBuild {
		t.Skip("the race detector's sync.Pool drops what is put back at random")
	}
	_, o := newFake(1<<20, 4<<20)
	run := [][]byte{[]byte("one"), []byte("two"), []byte("three")}
	ev := message("a")
	allocs := testing.AllocsPerRun(100, func() {
		o.DeliverMessages(ev, run)
		b, _ := o.Take(0)
		outbox.Release(b)
		o.Settle(20)
		if o.Unsent() != 2 {
			t.Fatal("the flight was not followed")
		}
		o.Settle(0)
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations a batch, want none", allocs)
	}
}
