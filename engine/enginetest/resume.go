package enginetest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Helpers for tests of session resume (docs/RESUME.md), on one daemon or
// across the nodes of a cluster.

// Reset drops c as a dead network or a killed phone radio looks to the
// server: SO_LINGER 0, then close, sends a TCP reset, not an end of
// input.
func Reset(t testing.TB, c net.Conn) {
	t.Helper()
	tc, ok := c.(*net.TCPConn)
	if !ok {
		t.Fatalf("%T is not a TCP connection", c)
	}
	if err := tc.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	if err := tc.Close(); err != nil {
		t.Fatal(err)
	}
}

// ResumeLine resumes key on a new line connection to d and reads the
// answer up to the new key: whom it says the user is connected with, the
// messages it replays, and how many it could not keep. The client's Key
// is the new key.
func ResumeLine(t testing.TB, d *Daemon, key string) (lc *LineClient, peer string, replayed []string, missed int) {
	t.Helper()
	lc = d.DialLine(t)
	lc.Send("/resume " + key)
	peer, replayed, missed, lc.Key = ReadResumed(t, lc.Line)
	if lc.Key == key {
		t.Fatalf("the resume gave the key it used again")
	}
	return lc, peer, replayed, missed
}

var (
	resumedRE = regexp.MustCompile(`^\* resumed: you are (\w+), your token is ([0-9a-f]{32}); (?:you are connected with (\w+)|you are not connected to anyone)$`)
	missingRE = regexp.MustCompile(`^\* (\d+) messages? you may have missed:$`)
	keptRE    = regexp.MustCompile(`^\* (\d+) older messages? could not be kept$`)
	keyLineRE = regexp.MustCompile(`^\* resume key: ([0-9a-z]{26}) \(if your connection drops, reconnect and type /resume ([0-9a-z]{26}) within \w+\)$`)
)

// ReadResumed reads the line protocol's answer to a resume from next.
func ReadResumed(t testing.TB, next func() string) (peer string, replayed []string, missed int, key string) {
	t.Helper()
	l := next()
	m := resumedRE.FindStringSubmatch(l)
	if m == nil {
		t.Fatalf("want the answer to a resume, got %q", l)
	}
	peer = m[3]
	l = next()
	if m := missingRE.FindStringSubmatch(l); m != nil {
		n, _ := strconv.Atoi(m[1])
		for range n {
			replayed = append(replayed, next())
		}
		if l = next(); l != "* end of missed messages" {
			t.Fatalf("after %d replayed messages, %q", n, l)
		}
		l = next()
	}
	if m := keptRE.FindStringSubmatch(l); m != nil {
		missed, _ = strconv.Atoi(m[1])
		l = next()
	}
	m = keyLineRE.FindStringSubmatch(l)
	if m == nil || m[1] != m[2] {
		t.Fatalf("want the new resume key, got %q", l)
	}
	if peer != "" {
		if l, want := next(), "* anything you typed as your connection dropped may not have reached "+peer+"; ask "+peer+", or send it again"; l != want {
			t.Fatalf("want %q, got %q", want, l)
		}
	}
	return peer, replayed, missed, m[1]
}

// WSMessage reads the next event, which must be a message, and returns
// its text and seq.
func WSMessage(t testing.TB, wc *WSClient) (string, uint64) {
	t.Helper()
	ev := wc.Expect("message")
	text, _ := ev["text"].(string)
	seq, ok := ev["seq"].(float64)
	if !ok {
		t.Fatalf("message without a seq: %v", ev)
	}
	return text, uint64(seq)
}

// ResumeWS resumes key on a new WebSocket to d, naming last, and returns
// the client and the resumed event.
func ResumeWS(t testing.TB, d *Daemon, key string, last uint64) (*WSClient, map[string]any) {
	t.Helper()
	wc := d.DialWS(t)
	wc.Send(map[string]any{"type": "resume", "key": key, "last": last})
	ev := wc.Expect("resumed")
	wc.Name, _ = ev["name"].(string)
	wc.Token, _ = ev["token"].(string)
	wc.Key, _ = ev["resume_key"].(string)
	if len(wc.Key) != 26 || wc.Key == key {
		t.Fatalf("resumed without a fresh key: %v", ev)
	}
	return wc, ev
}

// ReadSlowly reads c 64 KiB every 200 ms, on a goroutine of its own,
// until stop is called (which returns once it has stopped): a reader
// that keeps up with nothing, so the server holds what its socket will
// not take, yet is never found dead. A reader that stops for good, or
// whose window stays smaller than what the server's kernel has to send
// next, is found dead once resume.replay_recent passes
// (TCP_USER_TIMEOUT bounds its window probes too), and goes away rather
// than being taken over.
func ReadSlowly(c net.Conn) (stop func()) { return ReadSlowlyInto(c, io.Discard) }

// ReadSlowlyInto is ReadSlowly, and writes what it reads to keep, which
// may be read once stop has returned.
func ReadSlowlyInto(c net.Conn, keep io.Writer) (stop func()) {
	quit, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		buf := make([]byte, 64<<10)
		for {
			select {
			case <-quit:
				return
			case <-time.After(200 * time.Millisecond):
			}
			c.SetReadDeadline(time.Now().Add(time.Millisecond))
			n, _ := io.ReadFull(c, buf)
			_, _ = keep.Write(buf[:n])
		}
	}()
	return func() {
		close(quit)
		<-stopped
	}
}

// SmallWindow fixes c's receive buffer at 256 KiB: the server's kernel
// soon holds all it may send c, and the server queues the rest.
func SmallWindow(t testing.TB, c net.Conn) {
	t.Helper()
	if err := c.(*net.TCPConn).SetReadBuffer(256 << 10); err != nil {
		t.Fatal(err)
	}
}

// SendNumbered sends count numbered messages, "m <i> <pad>" from 0 (as
// numberedLine reads them), on c, a line client's connection, in one
// go.
func SendNumbered(t testing.TB, c net.Conn, count int) {
	t.Helper()
	w := bufio.NewWriter(c)
	pad := strings.Repeat("x", 200)
	for i := range count {
		fmt.Fprintf(w, "m %d %s\n", i, pad)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
}

// numberedLine is a numbered message ("m <i> <pad>") as a line reader
// sees it.
var numberedLine = regexp.MustCompile(`^<(\w+)> m (\d+) x+$`)

// ExpectReplayedRun checks what a line resume replayed, and said it
// could not keep, after from sent numbered messages 0 to last, some of
// which the old connection never wrote: the newest messages, in order,
// up to the last one sent (what the old connection wrote before is a
// run from the first), none missing.
func ExpectReplayedRun(t testing.TB, replayed []string, missed int, from string, last int) {
	t.Helper()
	if len(replayed) == 0 {
		t.Fatalf("nothing replayed, %d not kept: the messages the old connection never wrote are lost unsaid", missed)
	}
	first := -1
	for i, l := range replayed {
		m := numberedLine.FindStringSubmatch(l)
		if m == nil || m[1] != from {
			t.Fatalf("replayed %q", l)
		}
		n, _ := strconv.Atoi(m[2])
		if first < 0 {
			first = n
		}
		if n != first+i {
			t.Fatalf("replayed message %d after %d", n, first+i-1)
		}
	}
	if end := first + len(replayed) - 1; end != last || missed != 0 {
		t.Fatalf("replayed %d to %d of %d, %d not kept", first, end, last, missed)
	}
}
