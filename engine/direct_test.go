package engine_test

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"duet/engine/enginetest"
)

// pairLines logs in two line clients, dialled one after the other (gnet
// hands consecutive connections to its loops in turn, so with the test
// daemon's two loops they are served by different loops), and pairs them.
func pairLines(t *testing.T, d *enginetest.Daemon, a, b string) (*enginetest.LineClient, *enginetest.LineClient) {
	t.Helper()
	ca := d.DialLine(t).Login(a)
	cb := d.DialLine(t).Login(b)
	cb.Send("/connect " + ca.Token)
	ca.Expect(`is connected`)
	cb.Expect(`connected with ` + a)
	return ca, cb
}

// sendPaced writes count numbered lines from its own goroutine in bursts
// of 1 to 16 lines, each burst one write, with pauses between them: the
// way people and plain clients send, which leaves the reader's event
// loop asleep between deliveries.
func sendPaced(c net.Conn, from string, count int, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, 7))
	var burst []byte
	for i := 0; i < count; {
		burst = burst[:0]
		for n := 1 + rng.IntN(16); n > 0 && i < count; n-- {
			burst = fmt.Appendf(burst, "%s %d %s\n", from, i, strings.Repeat("y", rng.IntN(100)))
			i++
		}
		c.SetWriteDeadline(time.Now().Add(enginetest.Timeout))
		if _, err := c.Write(burst); err != nil {
			return fmt.Errorf("%s: send: %w", from, err)
		}
		time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
	}
	return nil
}

// readNumbered reads count lines "<from> from N ..." in order; with
// stall set it stops reading for a while part-way, so that its socket
// fills and deliveries wait in the daemon.
func readNumbered(c net.Conn, from string, count int, stall bool) error {
	r := bufio.NewReader(c)
	for i := 0; i < count; i++ {
		if stall && i == count/3 {
			time.Sleep(300 * time.Millisecond)
		}
		c.SetReadDeadline(time.Now().Add(enginetest.Timeout))
		ln, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("reading %s's line %d: %w", from, i, err)
		}
		prefix := "<" + from + "> " + from + " " + strconv.Itoa(i) + " "
		if !strings.HasPrefix(ln, prefix) && ln != strings.TrimSuffix(prefix, " ")+"\r\n" {
			return fmt.Errorf("%s's line %d: got %.60q", from, i, ln)
		}
	}
	return nil
}

// TestCrossLoopRelayKeepsOrder: pairs whose two sides are served by
// different event loops talk both ways at once, paced, so that most
// deliveries find their reader idle and are written to its socket from
// the sender's loop; some readers stop reading for a while, so their
// sockets fill and deliveries wait for their own loop, and then go
// direct again. Every line arrives once, in order.
func TestCrossLoopRelayKeepsOrder(t *testing.T) {
	d := enginetest.Start(t, nil)
	const pairs, each = 6, 2000
	errs := make(chan error, 4*pairs)
	var wg sync.WaitGroup
	for p := range pairs {
		a, b := pairLines(t, d, "a"+strconv.Itoa(p), "b"+strconv.Itoa(p))
		for _, dir := range []struct {
			from, to *enginetest.LineClient
			stall    bool
		}{{a, b, p%3 == 0}, {b, a, false}} {
			wg.Add(2)
			go func() {
				defer wg.Done()
				errs <- sendPaced(dir.from.Conn, dir.from.Name, each, uint64(p))
			}()
			go func() {
				defer wg.Done()
				errs <- readNumbered(dir.to.Conn, dir.from.Name, each, dir.stall)
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := d.DirectWrites(); n == 0 {
		t.Fatal("no delivery was written directly: the test did not test the direct path")
	} else {
		t.Logf("%d deliveries written directly", n)
	}
}

// TestReaderGoneWhileWrittenTo: a reader's client resets its connection
// while its partner, on the other loop, keeps sending: deliveries that
// were being written directly meet the dead socket, and a failed direct
// write takes the socket's pending error with it. The drop is still told
// from an end of input: the partner hears that the reader lost the
// connection (its session is away, not ended), and the reader's resume
// gets every message from the last it read on, in order, none missing.
func TestReaderGoneWhileWrittenTo(t *testing.T) {
	d := enginetest.Start(t, nil)
	alice, bob := pairLines(t, d, "alice", "bob")
	stop := make(chan struct{})
	sent := make(chan int, 1)
	sendErr := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				sent <- i
				return
			default:
			}
			alice.Conn.SetWriteDeadline(time.Now().Add(enginetest.Timeout))
			if _, err := fmt.Fprintf(alice.Conn, "alice %d\n", i); err != nil {
				sendErr <- err
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	const read = 200
	if err := readNumbered(bob.Conn, "alice", read, false); err != nil {
		t.Fatal(err)
	}
	bob.Conn.(*net.TCPConn).SetLinger(0) // a reset, not a goodbye
	bob.Conn.Close()

	// alice reads her partner's drop among nothing else.
	ln := alice.Line()
	close(stop)
	var total int
	select {
	case total = <-sent:
	case err := <-sendErr:
		t.Fatal(err)
	}
	if ln != "* bob lost the connection; waiting up to 2m for bob to come back" {
		t.Fatalf("alice got %q, want bob's drop", ln)
	}

	back, peer, replayed, missed := enginetest.ResumeLine(t, d, bob.Key)
	if peer != "alice" || missed != 0 {
		t.Fatalf("resumed with %q, %d missed", peer, missed)
	}
	if len(replayed) == 0 {
		t.Fatal("nothing replayed")
	}
	first, err := strconv.Atoi(strings.Fields(replayed[0])[2])
	if err != nil || first > read {
		t.Fatalf("the replay starts with %q, after alice %d, which bob had not read", replayed[0], read-1)
	}
	for i, l := range replayed {
		if want := "<alice> alice " + strconv.Itoa(first+i); l != want {
			t.Fatalf("replayed line %d is %q, want %q", i, l, want)
		}
	}
	if last := first + len(replayed) - 1; last != total-1 {
		t.Fatalf("the replay ends with alice %d; she sent up to %d", last, total-1)
	}
	alice.Expect(`^\* bob is back$`)
	back.Send("hi alice")
	alice.Expect(`^<bob> hi alice$`)
	alice.Send("hi bob")
	back.Expect(`^<alice> hi bob$`)
}
