package outbox_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"duet/engine/hub"
	"duet/engine/outbox"
	"duet/proto"
)

// directOwner is an owner whose socket is a buffer: WriteDirect appends
// what take allows of each write to sock.
type directOwner struct {
	textEncoder
	scheduled atomic.Int64
	decline   bool            // WriteDirect declines: the loop is busy
	take      func(n int) int // how many of n bytes the socket takes; nil takes all
	sock      bytes.Buffer
	writes    int
}

func (d *directOwner) Schedule()                { d.scheduled.Add(1) }
func (d *directOwner) Marks() outbox.Marks      { return outbox.Marks{High: 1 << 20, Max: 4 << 20} }
func (d *directOwner) Evicted(hub.Eviction)     {}
func (d *directOwner) RefusedLate(*proto.Error) {}
func (d *directOwner) WriteDirect(b []byte) (int, bool) {
	if d.decline {
		return 0, false
	}
	d.writes++
	n := len(b)
	if d.take != nil {
		n = d.take(n)
	}
	d.sock.Write(b[:n])
	return n, true
}

// flush is the owner's flush with a socket that takes everything.
func (d *directOwner) flush(o *outbox.Outbox) {
	if b, _ := o.Take(0); b != nil {
		d.sock.Write(b.B)
		outbox.Release(b)
	}
	o.Settle(0)
}

func say(o *outbox.Outbox, texts ...string) {
	run := make([][]byte, len(texts))
	for i, t := range texts {
		run[i] = []byte(t)
	}
	o.DeliverMessages(message("a"), run)
}

// TestDirectWriteWhenIdle: once the owner has found its socket empty, a
// delivery is written at once by the delivering goroutine, and the
// owner's loop is neither scheduled nor left anything to flush.
func TestDirectWriteWhenIdle(t *testing.T) {
	d := &directOwner{}
	o := outbox.New(d)
	o.SetDirect(true)
	// Before the owner's first Settle, what gnet holds (a greeting) is
	// not known: the delivery is queued and scheduled.
	say(o, "1")
	if d.writes != 0 || d.scheduled.Load() != 1 {
		t.Fatalf("before any Settle: %d direct writes, %d schedules; want 0 and 1", d.writes, d.scheduled.Load())
	}
	d.flush(o)
	say(o, "2", "3")
	o.Deliver(&proto.Event{Kind: proto.EvStatus})
	if d.writes != 2 || d.scheduled.Load() != 1 {
		t.Fatalf("idle: %d direct writes, %d schedules; want 2 and still 1", d.writes, d.scheduled.Load())
	}
	if o.Pending() || o.Backlog() != 0 {
		t.Fatalf("after direct writes: pending %v, backlog %d", o.Pending(), o.Backlog())
	}
	if got := o.DirectWrites(); got != 2 {
		t.Fatalf("DirectWrites %d, want 2", got)
	}
	want := fmt.Sprintf("message a 1\nmessage a 2\nmessage a 3\nevent %d\n", proto.EvStatus)
	if got := d.sock.String(); got != want {
		t.Fatalf("socket got:\n%s\nwant:\n%s", got, want)
	}
	if lost, _ := o.Close(0); lost != 0 {
		t.Fatalf("close counted %d lost after everything was written", lost)
	}
}

// TestNoDirectWriteOverWhatCameBefore: a delivery is not written
// directly while anything could go before it: bytes queued, a taken
// buffer not yet settled, output the socket held at the last Settle; nor
// while the owner acts inline, declines, or has direct writes off.
func TestNoDirectWriteOverWhatCameBefore(t *testing.T) {
	for _, c := range []struct {
		name  string
		setup func(d *directOwner, o *outbox.Outbox)
	}{
		{"queued", func(d *directOwner, o *outbox.Outbox) { o.DeliverRaw([]byte("raw\n")) }},
		{"taken, not settled", func(d *directOwner, o *outbox.Outbox) {
			o.DeliverRaw([]byte("raw\n"))
			b, _ := o.Take(0)
			d.sock.Write(b.B)
			outbox.Release(b)
		}},
		{"socket held output", func(d *directOwner, o *outbox.Outbox) {
			o.DeliverRaw([]byte("raw\n"))
			b, _ := o.Take(0)
			d.sock.Write(b.B)
			outbox.Release(b)
			o.Settle(10)
		}},
		{"socket full at Take", func(d *directOwner, o *outbox.Outbox) { o.Take(10) }},
		{"inline", func(d *directOwner, o *outbox.Outbox) { o.SetInline(true) }},
		{"declined", func(d *directOwner, o *outbox.Outbox) { d.decline = true }},
		{"off", func(d *directOwner, o *outbox.Outbox) { o.SetDirect(false) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := &directOwner{}
			o := outbox.New(d)
			o.SetDirect(true)
			d.flush(o)
			c.setup(d, o)
			say(o, "late")
			if d.writes != 0 {
				t.Fatalf("%d direct writes", d.writes)
			}
			if !o.Pending() {
				t.Fatal("the delivery is not queued")
			}
		})
	}
}

// TestDirectWritePartial: the socket takes part of a delivery, then
// nothing (EAGAIN). The rest stays queued, in order, and the owner is
// scheduled; no direct write is tried again until the owner's Settle
// finds the socket empty.
func TestDirectWritePartial(t *testing.T) {
	d := &directOwner{}
	o := outbox.New(d)
	o.SetDirect(true)
	d.flush(o)
	d.take = func(n int) int { return min(n, 5) }
	say(o, "one", "two")
	if d.writes != 1 || d.scheduled.Load() != 1 {
		t.Fatalf("%d direct writes, %d schedules; want 1 and 1", d.writes, d.scheduled.Load())
	}
	if got, want := o.Backlog(), int64(len("message a one\nmessage a two\n")-5); got != want {
		t.Fatalf("backlog %d, want %d (what the socket did not take)", got, want)
	}
	say(o, "three")
	if d.writes != 1 {
		t.Fatal("a direct write after the socket filled up")
	}
	d.take = nil
	d.flush(o)
	if got, want := d.sock.String(), "message a one\nmessage a two\nmessage a three\n"; got != want {
		t.Fatalf("socket got %q, want %q", got, want)
	}

	// EAGAIN: the socket takes nothing.
	d.take = func(int) int { return 0 }
	say(o, "four")
	if d.writes != 2 || !o.Pending() || d.scheduled.Load() != 2 {
		t.Fatalf("EAGAIN: %d direct writes (want 2), pending %v, %d schedules (want 2)", d.writes, o.Pending(), d.scheduled.Load())
	}
	// A reader cut off now loses the message the socket refused.
	if lost, _ := o.Close(0); lost != 1 {
		t.Fatalf("lost %d, want 1", lost)
	}
}

// TestCloseWaitsForADirectWrite: the engine closes a connection's
// descriptor only after its outbox is closed, and relies on no direct
// write being under way once Close (or SetDirect(false)) returns: the
// descriptor could otherwise be another connection's by then.
func TestCloseWaitsForADirectWrite(t *testing.T) {
	for _, stop := range []string{"Close", "SetDirect"} {
		t.Run(stop, func(t *testing.T) {
			g := &gateOwner{entered: make(chan struct{}), release: make(chan struct{})}
			o := outbox.New(g)
			o.SetDirect(true)
			o.Settle(0)
			go say(o, "in the middle")
			<-g.entered
			stopped := make(chan struct{})
			go func() {
				if stop == "Close" {
					o.Close(0)
				} else {
					o.SetDirect(false)
				}
				close(stopped)
			}()
			select {
			case <-stopped:
				t.Fatalf("%s returned while a direct write was under way", stop)
			case <-time.After(50 * time.Millisecond):
			}
			close(g.release)
			<-stopped
			g.done.Store(true) // a WriteDirect from now on fails the test
			say(o, "after")
			o.Deliver(&proto.Event{Kind: proto.EvStatus})
		})
	}
}

// gateOwner's WriteDirect waits to be released, the first time.
type gateOwner struct {
	textEncoder
	entered, release chan struct{}
	done             atomic.Bool
	once             sync.Once
}

func (g *gateOwner) Schedule()                {}
func (g *gateOwner) Marks() outbox.Marks      { return outbox.Marks{High: 1 << 20, Max: 4 << 20} }
func (g *gateOwner) Evicted(hub.Eviction)     {}
func (g *gateOwner) RefusedLate(*proto.Error) {}
func (g *gateOwner) WriteDirect(b []byte) (int, bool) {
	if g.done.Load() {
		panic("a direct write after the outbox closed or turned direct writes off")
	}
	g.once.Do(func() {
		close(g.entered)
		<-g.release
	})
	return len(b), true
}

// socketSim is a socket that takes a random part of each write, and the
// owner's loop around it: gnet's outbound buffer (held), which the loop
// drains before anything else, and the loop's flush as the engine does
// it. Senders write directly from their own goroutines.
type socketSim struct {
	textEncoder
	mu   sync.Mutex // the kernel's: WriteDirect and the loop both write
	got  bytes.Buffer
	rng  *rand.Rand
	full bool // take everything: the run is over

	kick      chan struct{}
	scheduled atomic.Int64
	held      []byte // loop-only: gnet's outbound buffer
}

func (s *socketSim) write(b []byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(b)
	if !s.full {
		switch s.rng.IntN(8) {
		case 0:
			n = 0 // EAGAIN
		case 1:
			n = s.rng.IntN(len(b) + 1)
		}
	}
	s.got.Write(b[:n])
	return n
}

func (s *socketSim) Schedule() {
	s.scheduled.Add(1)
	select {
	case s.kick <- struct{}{}:
	default:
	}
}
func (s *socketSim) Marks() outbox.Marks      { return outbox.Marks{High: 1 << 30, Max: 1 << 31} }
func (s *socketSim) Evicted(hub.Eviction)     {}
func (s *socketSim) RefusedLate(*proto.Error) {}
func (s *socketSim) WriteDirect(b []byte) (int, bool) {
	s.mu.Lock()
	decline := s.rng.IntN(5) == 0 // the loop is busy now and then
	s.mu.Unlock()
	if decline {
		return 0, false
	}
	return s.write(b), true
}

// turn is one turn of the owner's loop: gnet writes what it holds, then
// the engine's flush (conn.flush, or checkBacklog's settle).
func (s *socketSim) turn(o *outbox.Outbox) {
	if len(s.held) > 0 {
		s.held = s.held[s.write(s.held):]
	}
	b, _ := o.Take(len(s.held))
	if b != nil {
		// A loop can be preempted between taking a buffer and writing
		// it: give the senders that moment.
		s.mu.Lock()
		pause := time.Duration(s.rng.IntN(20)) * time.Microsecond
		s.mu.Unlock()
		time.Sleep(pause)
		n := s.write(b.B)
		s.held = append(s.held, b.B[n:]...)
		outbox.Release(b)
	}
	o.Settle(len(s.held))
}

// TestDirectWritesKeepOrder: senders deliver concurrently, written
// directly when the reader is idle and queued when not, while the
// owner's loop flushes and its socket takes random parts of each write.
// Every sender's messages arrive once each and in order.
func TestDirectWritesKeepOrder(t *testing.T) {
	const senders, each = 4, 2000
	s := &socketSim{rng: rand.New(rand.NewPCG(1, 2)), kick: make(chan struct{}, 1)}
	o := outbox.New(s)
	o.SetDirect(true)
	done := make(chan struct{})
	loopDone := make(chan struct{})
	go func() { // the owner's loop: woken by Schedule, or by its tick
		defer close(loopDone)
		tick := time.NewTicker(100 * time.Microsecond)
		defer tick.Stop()
		for {
			select {
			case <-s.kick:
			case <-tick.C:
			case <-done:
				s.mu.Lock()
				s.full = true
				s.mu.Unlock()
				for len(s.held) > 0 || o.Pending() {
					s.turn(o)
				}
				return
			}
			s.turn(o)
		}
	}()
	var wg sync.WaitGroup
	for g := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ev := message("s" + strconv.Itoa(g))
			for i := 0; i < each; i += 2 {
				o.DeliverMessages(ev, [][]byte{[]byte(strconv.Itoa(i)), []byte(strconv.Itoa(i + 1))})
				if i%8 == 0 {
					// Paced, as a person types: the reader is often
					// idle, and the deliveries go straight out.
					time.Sleep(50 * time.Microsecond)
				}
			}
		}()
	}
	wg.Wait()
	close(done)
	<-loopDone

	next := make(map[string]int)
	for ln := range strings.Lines(s.got.String()) {
		f := strings.Fields(ln)
		if len(f) != 3 || f[0] != "message" {
			t.Fatalf("garbled line %q", ln)
		}
		if want := strconv.Itoa(next[f[1]]); f[2] != want {
			t.Fatalf("%s: got %s, want %s", f[1], f[2], want)
		}
		next[f[1]]++
	}
	for g := range senders {
		if n := next["s"+strconv.Itoa(g)]; n != each {
			t.Fatalf("s%d: %d messages arrived, want %d", g, n, each)
		}
	}
	if o.DirectWrites() == 0 {
		t.Fatal("no delivery was written directly: the test did not test the direct path")
	}
	t.Logf("%d direct writes, %d flushes scheduled, for %d deliveries", o.DirectWrites(), s.scheduled.Load(), senders*each/2)
}
