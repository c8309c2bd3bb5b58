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
// were being written directly meet the dead socket. The sender is told,
// with nothing else lost, and pairs again with someone else.
func TestReaderGoneWhileWrittenTo(t *testing.T) {
	d := enginetest.Start(t, nil)
	alice, bob := pairLines(t, d, "alice", "bob")
	stop := make(chan struct{})
	sent := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				sent <- nil
				return
			default:
			}
			alice.Conn.SetWriteDeadline(time.Now().Add(enginetest.Timeout))
			if _, err := fmt.Fprintf(alice.Conn, "alice %d\n", i); err != nil {
				sent <- err
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	if err := readNumbered(bob.Conn, "alice", 200, false); err != nil {
		t.Fatal(err)
	}
	bob.Conn.(*net.TCPConn).SetLinger(0) // a reset, not a goodbye
	bob.Conn.Close()

	// alice reads her partner's departure among nothing else.
	r := bufio.NewReader(alice.Conn)
	alice.Conn.SetReadDeadline(time.Now().Add(enginetest.Timeout))
	ln, err := r.ReadString('\n')
	close(stop)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ln, "* bob ") || !strings.Contains(ln, "free to be joined again") {
		t.Fatalf("alice got %q, want bob's departure", ln)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	// Her messages sent meanwhile are refused as unpaired; then she pairs
	// again, and the new pair works both ways.
	carol := d.DialLine(t).Login("carol")
	carol.Send("/connect " + alice.Token)
	carol.Expect(`connected with alice`)
	for {
		alice.Conn.SetReadDeadline(time.Now().Add(enginetest.Timeout))
		ln, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(ln, "is connected") {
			break
		}
		if !strings.HasPrefix(ln, "! ") {
			t.Fatalf("alice got %q while unpaired", ln)
		}
	}
	carol.Send("hi alice")
	alice.Conn.SetReadDeadline(time.Now().Add(enginetest.Timeout))
	if ln, err := r.ReadString('\n'); err != nil || ln != "<carol> hi alice\r\n" {
		t.Fatalf("alice got %q, %v", ln, err)
	}
	alice.Send("hi carol")
	carol.Expect(`^<alice> hi carol$`)
}
