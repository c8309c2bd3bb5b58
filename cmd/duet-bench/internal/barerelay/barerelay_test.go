package barerelay

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

func start(t *testing.T) *Relay {
	t.Helper()
	r, err := Start("127.0.0.1:0", Options{EventLoops: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func dial(t *testing.T, r *Relay) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", r.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// waitOpen waits until the relay has opened n connections, so that the
// next one is paired after them.
func waitOpen(t *testing.T, r *Relay, n int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for r.Stats().Open < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections open, want %d", r.Stats().Open, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatal(err)
	}
}

func readExactly(t *testing.T, c net.Conn, want string) {
	t.Helper()
	buf := make([]byte, len(want))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("reading %q: %v", want, err)
	}
	if string(buf) != want {
		t.Fatalf("got %q, want %q", buf, want)
	}
}

func TestForwardsWholeLinesBothWays(t *testing.T) {
	r := start(t)
	a := dial(t, r)
	waitOpen(t, r, 1)
	b := dial(t, r)
	waitOpen(t, r, 2)

	write(t, a, "hel")
	// Half a line is held back until its end arrives.
	_ = b.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, err := b.Read(make([]byte, 16)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("partial line forwarded: %d bytes, %v", n, err)
	}
	_ = b.SetReadDeadline(time.Now().Add(10 * time.Second))
	write(t, a, "lo\nwor")
	write(t, a, "ld\n")
	readExactly(t, b, "hello\nworld\n")

	write(t, b, "back\r\n")
	readExactly(t, a, "back\r\n")
	want := int64(len("hello\nworld\nback\r\n"))
	deadline := time.Now().Add(5 * time.Second)
	for r.Stats().Forwarded != want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if st := r.Stats(); st.Forwarded != want || st.Dropped != 0 {
		t.Fatalf("stats %+v, want %d bytes forwarded", st, want)
	}
}

func TestPairsInOpenOrder(t *testing.T) {
	r := start(t)
	var conns []net.Conn
	for i := range 6 {
		conns = append(conns, dial(t, r))
		waitOpen(t, r, int64(i+1))
	}
	for i, c := range conns {
		write(t, c, string(rune('a'+i))+"\n")
	}
	for i, c := range conns {
		partner := i ^ 1 // 0 with 1, 2 with 3, ...
		readExactly(t, c, string(rune('a'+partner))+"\n")
	}
}

func TestLinesWaitForAPartner(t *testing.T) {
	r := start(t)
	a := dial(t, r)
	write(t, a, "early\nbird\n")
	waitOpen(t, r, 1)
	time.Sleep(20 * time.Millisecond) // let the relay read them with no one to send to
	b := dial(t, r)
	readExactly(t, b, "early\nbird\n")
}

func TestPairClosesTogether(t *testing.T) {
	r := start(t)
	a := dial(t, r)
	waitOpen(t, r, 1)
	b := dial(t, r)
	waitOpen(t, r, 2)
	_ = a.Close()
	if _, err := bufio.NewReader(b).ReadByte(); err != io.EOF {
		t.Fatalf("partner's read: %v, want EOF", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.Stats().Open != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := r.Stats().Open; n != 0 {
		t.Fatalf("%d connections still open", n)
	}
}
