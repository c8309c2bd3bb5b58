//go:build linux

package engine_test

// With resume on, every connection has TCP_USER_TIMEOUT set to
// resume.replay_recent, and Linux aborts a connection whose peer keeps
// its receive window closed that long even while the peer answers every
// window probe. These tests cut real loopback connections that way,
// well before duetd's own slow-reader cut (limits.slow_timeout) could,
// and check the ending each gets: a reader that was there but did not
// read ends slow, a peer that went silent ends lost.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"duet/config"
	"duet/engine"
	"duet/engine/enginetest"
	"duet/engine/service"
)

// userTimeout is the tests' resume.replay_recent, and so every
// connection's TCP_USER_TIMEOUT: short, so that the kernel's cut comes
// within seconds, and ten times the 200 ms of the first window probe on
// loopback, so that a reader that answers them has answered several.
const userTimeout = 2 * time.Second

// TestUserTimeoutOnAReaderNotReadingIsSlow: bob logs in, pairs and stops
// reading, his receive buffer small, while alice floods him. His TCP
// acknowledges every window probe but his window never opens, and the
// kernel aborts the connection once the user timeout passes (ETIMEDOUT),
// long before limits.slow_timeout. He was there and did not read: the
// ending is slow, not lost, and it is counted so. With resume on, alice
// is told that bob is away, as for any slow reader; with resume turned
// off by a reload since they connected (their connections keep the user
// timeout they opened with), bob's session ends at the cut, and alice is
// told he stopped reading, not that he disconnected.
func TestUserTimeoutOnAReaderNotReadingIsSlow(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		resumeOff bool
		told      string
	}{
		{"resume on", false, `^\* bob lost the connection; waiting up to 2m for bob to come back(?:; \d+ of your messages were not delivered)?$`},
		{"resume turned off since", true, `^\* bob stopped reading and was cut off; `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, admin := startCutByUserTimeout(t)
			alice, _ := pairWithSmallReader(t, d)
			if tc.resumeOff {
				d.SetResume(config.Resume{})
			}
			floodUntilTold(t, alice, tc.told)
			if n := waitDisconnects(t, admin, "slow"); n != 1 {
				t.Fatalf("duet_disconnects_total{reason=\"slow\"} is %d, want 1", n)
			}
			expectNotCounted(t, admin, "lost")
		})
	}
}

// TestUserTimeoutOnADeadPeerIsLost: bob's TCP goes silent, as behind a
// network that failed: a socket filter drops all that reaches his
// socket, so nothing he is sent is acknowledged, not even a window
// probe. The kernel aborts the connection once the user timeout passes,
// and the ending is lost: whether his window was open when he went
// silent, or closed (he had stopped reading too) and then nothing more
// came from him for the whole timeout.
func TestUserTimeoutOnADeadPeerIsLost(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		deafen func(*testing.T, net.Conn)
	}{
		{"window open", deafen},
		{"window closed first", deafenOnceFull},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, admin := startCutByUserTimeout(t)
			alice, bob := pairWithSmallReader(t, d)
			d.SetResume(config.Resume{}) // alice is told the ending's reason
			tc.deafen(t, bob.c)
			floodUntilTold(t, alice, `^\* bob disconnected; `)
			if n := waitDisconnects(t, admin, "lost"); n != 1 {
				t.Fatalf("duet_disconnects_total{reason=\"lost\"} is %d, want 1", n)
			}
			expectNotCounted(t, admin, "slow")
		})
	}
}

// startCutByUserTimeout starts a daemon whose connections the kernel
// aborts after userTimeout without acknowledgement or an open window,
// and whose own slow-reader cut would come long after, with its metrics
// on an admin listener; it returns the daemon and the listener's
// address.
func startCutByUserTimeout(t *testing.T) (*enginetest.Daemon, string) {
	t.Helper()
	var m *service.Metrics
	d := enginetest.Start(t, func(o *engine.Options) {
		m = service.NewMetrics(o.Hub)
		o.Metrics = m
		o.Limits.OutboundHigh = 64 << 10
		o.Limits.OutboundMax = 256 << 20
		o.Limits.SlowTimeout = time.Minute
		o.Resume.ReplayRecent = userTimeout
	})
	admin, err := service.StartAdmin("127.0.0.1:0", m.Registry, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Close(context.Background()) })
	return d, admin.Addr().String()
}

// pairWithSmallReader logs alice in, and bob on a connection with a
// small receive buffer, which a flood soon fills, and pairs them.
func pairWithSmallReader(t *testing.T, d *enginetest.Daemon) (*enginetest.LineClient, *lineConn) {
	t.Helper()
	alice := d.DialLine(t).Login("alice")
	bob := newLineConn(t, dialSmallReceiveBuffer(t, d.TCP))
	bob.expect(`^\* welcome`)
	bob.login("bob")
	bob.send("/connect " + alice.Token)
	bob.expect(`^\* you are connected with alice$`)
	alice.Expect(`^\* bob is connected$`)
	return alice, bob
}

// floodUntilTold has alice send bob far more than any buffer holds, and
// reads alice's lines until she is told of bob, which must match told.
// Then she stops sending: what she sends once bob is gone is refused,
// and would only keep the server busy.
func floodUntilTold(t *testing.T, alice *enginetest.LineClient, told string) {
	t.Helper()
	alice.Conn.SetWriteDeadline(time.Now().Add(2 * enginetest.Timeout))
	sent := sendNumbered(alice.Conn, 200_000, 200)
	defer func() {
		alice.Conn.SetWriteDeadline(time.Now())
		<-sent
	}()
	for {
		l := alice.Line()
		if !strings.HasPrefix(l, "* bob ") {
			continue
		}
		if !regexp.MustCompile(told).MatchString(l) {
			t.Fatalf("alice was told %q, want a match for %q", l, told)
		}
		return
	}
}

// expectNotCounted checks that no connection is counted as ended for
// reason.
func expectNotCounted(t *testing.T, admin, reason string) {
	t.Helper()
	series := regexp.MustCompile(`(?m)^duet_disconnects_total\{reason="` + regexp.QuoteMeta(reason) + `"\} [1-9]`)
	if body := scrape(t, &http.Client{Timeout: enginetest.Timeout}, admin); series.Match(body) {
		t.Fatalf("a connection counted as %s; /metrics has:\n%s", reason, grepLines(body, "duet_disconnects_total"))
	}
}

// deafen attaches a socket filter to c that drops every packet that
// reaches it: its TCP acknowledges nothing from then on, as if the
// network between it and the server had failed.
func deafen(t *testing.T, c net.Conn) {
	t.Helper()
	attachFilter(t, c, []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}})
}

// deafenOnceFull attaches a socket filter to c that drops every segment
// that carries no data: c's TCP takes what it is sent until its receive
// buffer is full and its window closed, and then hears nothing more,
// since a window probe carries no data. The server's last word from it
// is its window closing, as from a reader that stopped reading just as
// its network failed.
func deafenOnceFull(t *testing.T, c net.Conn) {
	t.Helper()
	// A socket filter on a TCP socket sees the segment from its TCP
	// header on.
	attachFilter(t, c, []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: 12},    // data offset, in the high nibble
		{Code: unix.BPF_ALU | unix.BPF_AND | unix.BPF_K, K: 0xf0}, //
		{Code: unix.BPF_ALU | unix.BPF_RSH | unix.BPF_K, K: 2},    // the header's length in bytes
		{Code: unix.BPF_MISC | unix.BPF_TAX},                      // X = the header's length
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_LEN},           // A = the segment's length
		{Code: unix.BPF_JMP | unix.BPF_JGT | unix.BPF_X, Jt: 0, Jf: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff}, // data: keep it whole
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},          // none: drop it
	})
}

// attachFilter attaches the classic BPF program prog to c
// (SO_ATTACH_FILTER, which needs no privilege).
func attachFilter(t *testing.T, c net.Conn, prog []unix.SockFilter) {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
			&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
	}); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatalf("SO_ATTACH_FILTER: %v", serr)
	}
}

// TestDeadPeerCountsWhatItsTCPNeverAcknowledged: bob reads alice's
// first messages and answers, then his TCP goes silent (deafen), and
// alice sends more, which the server writes to his socket but his TCP
// never acknowledges. The kernel aborts the connection once the user
// timeout passes (lost), bob's session goes away, and when its window
// runs out alice is told how many of her messages never reached him:
// the ones his TCP never acknowledged, which the socket had taken, as
// well as any never written. Before, only those never written counted,
// and she was told none.
func TestDeadPeerCountsWhatItsTCPNeverAcknowledged(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, func(o *engine.Options) {
		o.Limits.SlowTimeout = time.Minute
		o.Resume.ReplayRecent = userTimeout
		o.Resume.Window = 3 * time.Second
	})
	alice, bob := pairWithSmallReader(t, d)
	const read, unread = 50, 50
	pad := strings.Repeat("x", 100) // past the stride at which the server looks
	for i := 1; i <= read; i++ {
		alice.Send(fmt.Sprint("m", i, " ", pad))
	}
	for i := 1; i <= read; i++ {
		bob.expect(fmt.Sprintf(`^<alice> m%d x+$`, i))
	}
	// What bob sends acknowledges all he received, and the server looks
	// at what his TCP acknowledged as it reads it.
	bob.send("read them")
	alice.Expect(`^<bob> read them$`)
	deafen(t, bob.c)
	for i := read + 1; i <= read+unread; i++ {
		alice.Send(fmt.Sprint("m", i, " ", pad))
	}
	alice.Expect(`^\* bob lost the connection; waiting up to 3s for bob to come back$`)
	alice.Expect(fmt.Sprintf(`^\* bob timed out; %d of your messages were not delivered; you are free to be joined again$`, unread))
}

// floodSmallReader starts a daemon as startCutByUserTimeout does, pairs
// alice with bob, a small reader (pairWithSmallReader), and has alice
// flood him until the test ends.
func floodSmallReader(t *testing.T) (admin string, bob *lineConn) {
	t.Helper()
	d, admin := startCutByUserTimeout(t)
	alice, bob := pairWithSmallReader(t, d)
	alice.Conn.SetWriteDeadline(time.Now().Add(4 * enginetest.Timeout))
	sent := sendNumbered(alice.Conn, 200_000, 200)
	t.Cleanup(func() {
		alice.Conn.SetWriteDeadline(time.Now())
		<-sent
	})
	return admin, bob
}

// expectCutAsSoon waits until one connection is counted as ended for
// reason, about one user timeout after from (when bob stopped), and
// checks that none is counted as not.
func expectCutAsSoon(t *testing.T, admin, reason, not string, from time.Time) {
	t.Helper()
	if n := waitDisconnects(t, admin, reason); n != 1 {
		t.Fatalf("duet_disconnects_total{reason=%q} is %d, want 1", reason, n)
	}
	if took := time.Since(from); took > 3*userTimeout {
		t.Errorf("bob was cut %v after he stopped, want about %v", took, userTimeout)
	} else {
		t.Logf("cut %v after bob stopped", took.Round(10*time.Millisecond))
	}
	expectNotCounted(t, admin, not)
}

// readSteadily has bob take up to 16 KiB every half second, until for
// has passed or what he took ends with stop (when stop is not empty). It
// fails the test if his connection ends meanwhile, and returns whether
// he took stop.
func readSteadily(t *testing.T, bob *lineConn, d time.Duration, stop string) bool {
	t.Helper()
	return takeSteadily(t, bob.c, bob.r, d, stop)
}

// takeSteadily is readSteadily for a reader r of connection c.
func takeSteadily(t *testing.T, c net.Conn, r io.Reader, d time.Duration, stop string) bool {
	t.Helper()
	buf := make([]byte, 16384)
	var took []byte
	for until := time.Now().Add(d); time.Now().Before(until); time.Sleep(500 * time.Millisecond) {
		c.SetReadDeadline(time.Now().Add(enginetest.Timeout))
		n, err := r.Read(buf)
		if err != nil {
			t.Fatalf("bob's connection ended while he read, after he took %d bytes more: %v", len(took)+n, err)
		}
		took = append(took, buf[:n]...)
		if stop != "" && strings.HasSuffix(string(took), stop) {
			return true
		}
	}
	return false
}

// TestUserTimeoutSparesASteadyReader: bob reads, slowly and steadily,
// 16 KiB every half second through a 4 KiB receive buffer, while alice
// floods him. His window closes and opens again twice a second, and his
// TCP acknowledges what he takes, so he is not to be cut: not by the
// kernel (TCP_USER_TIMEOUT, resume.replay_recent) nor by duetd
// (limits.slow_timeout), and after three user timeouts he is still
// connected and no connection ended. Linux restarts its count of a
// closed window only once the window admits the whole of the next block
// it has queued, up to 64 KiB, which bob's never does: before, the
// kernel cut him as the first user timeout ran out (reset by peer about
// 2.3 s in, 5 of 5).
func TestUserTimeoutSparesASteadyReader(t *testing.T) {
	t.Parallel()
	admin, bob := floodSmallReader(t)
	readSteadily(t, bob, 3*userTimeout, "")
	expectNotCounted(t, admin, "slow")
	expectNotCounted(t, admin, "lost")
}

// TestUserTimeoutSparesAReaderThatCaughtUp: bob reads a burst from alice
// steadily, as in TestUserTimeoutSparesASteadyReader, to its end, and
// both are quiet for longer than the user timeout; then alice floods
// him and he reads steadily again: he is not cut in either. Then he
// stops reading, and is cut as slow once he has taken nothing for the
// user timeout: the count, set aside while he had taken everything, is
// kept again from the flood on.
func TestUserTimeoutSparesAReaderThatCaughtUp(t *testing.T) {
	t.Parallel()
	d, admin := startCutByUserTimeout(t)
	alice, bob := pairWithSmallReader(t, d)
	alice.Conn.SetWriteDeadline(time.Now().Add(4 * enginetest.Timeout))
	const burst = 400 // lines of 200 bytes: about three seconds of reading
	if err := <-sendNumbered(alice.Conn, burst, 200); err != nil {
		t.Fatal(err)
	}
	if !readSteadily(t, bob, 4*enginetest.Timeout, fmt.Sprintf(" m %d %s\r\n", burst-1, strings.Repeat("x", 200))) {
		t.Fatalf("bob never took alice's last line")
	}
	time.Sleep(userTimeout * 3 / 2)
	sent := sendNumbered(alice.Conn, 200_000, 200)
	defer func() {
		alice.Conn.SetWriteDeadline(time.Now())
		<-sent
	}()
	readSteadily(t, bob, 2*userTimeout, "")
	expectNotCounted(t, admin, "slow")
	expectCutAsSoon(t, admin, "slow", "lost", time.Now())
}

// TestUserTimeoutBackOnceTheReaderStops: bob reads steadily while alice
// floods him, as in TestUserTimeoutSparesASteadyReader, and then stops
// reading. He is cut as slow once he has taken nothing for the user
// timeout, as the kernel would have cut him: long before duetd's own
// limits.slow_timeout (a minute here).
func TestUserTimeoutBackOnceTheReaderStops(t *testing.T) {
	t.Parallel()
	admin, bob := floodSmallReader(t)
	readSteadily(t, bob, 2*userTimeout, "")
	expectCutAsSoon(t, admin, "slow", "lost", time.Now())
}

// TestUserTimeoutSteadyReaderGoneSilentIsLost: bob reads a burst from
// alice steadily to its end, as in TestUserTimeoutSparesAReaderThatCaughtUp,
// so that his user timeout is set aside, and then his TCP goes silent
// (deafen), as behind a network that failed, his window open. What alice
// sends next is never acknowledged: he is found gone about one user
// timeout later, as the kernel would have found him, and the ending is
// lost. (One that goes silent with its window closed, having answered
// within the timeout, is slow: LIMITS.md.)
func TestUserTimeoutSteadyReaderGoneSilentIsLost(t *testing.T) {
	t.Parallel()
	d, admin := startCutByUserTimeout(t)
	alice, bob := pairWithSmallReader(t, d)
	alice.Conn.SetWriteDeadline(time.Now().Add(4 * enginetest.Timeout))
	const burst = 400
	if err := <-sendNumbered(alice.Conn, burst, 200); err != nil {
		t.Fatal(err)
	}
	if !readSteadily(t, bob, 4*enginetest.Timeout, fmt.Sprintf(" m %d %s\r\n", burst-1, strings.Repeat("x", 200))) {
		t.Fatalf("bob never took alice's last line")
	}
	deafen(t, bob.c)
	if err := <-sendNumbered(alice.Conn, 20, 200); err != nil {
		t.Fatal(err)
	}
	expectCutAsSoon(t, admin, "lost", "slow", time.Now())
}

// TestUserTimeoutSparesASteadyWebSocketReader is
// TestUserTimeoutSparesASteadyReader with bob on a WebSocket.
func TestUserTimeoutSparesASteadyWebSocketReader(t *testing.T) {
	t.Parallel()
	d, admin := startCutByUserTimeout(t)
	alice := d.DialLine(t).Login("alice")
	c := dialSmallReceiveBuffer(t, d.WS)
	c.SetDeadline(time.Now().Add(enginetest.Timeout))
	if _, err := io.WriteString(c, upgradeRequest(d.WS, "")); err != nil {
		t.Fatal(err)
	}
	bob := &wsConn{t: t, c: c, r: bufio.NewReader(c)}
	if resp, err := http.ReadResponse(bob.r, nil); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	expectEvent := func(typ string) {
		t.Helper()
		for ev := bob.event(); ev["type"] != typ; ev = bob.event() {
		}
	}
	expectEvent("hello")
	bob.sendJSON(map[string]string{"type": "login", "name": "bob"})
	expectEvent("welcome")
	bob.sendJSON(map[string]string{"type": "connect", "token": alice.Token})
	expectEvent("paired")
	alice.Expect(`^\* bob is connected$`)

	alice.Conn.SetWriteDeadline(time.Now().Add(2 * enginetest.Timeout))
	sent := sendNumbered(alice.Conn, 200_000, 200)
	defer func() {
		alice.Conn.SetWriteDeadline(time.Now())
		<-sent
	}()
	takeSteadily(t, bob.c, bob.r, 3*userTimeout, "")
	expectNotCounted(t, admin, "slow")
	expectNotCounted(t, admin, "lost")
	expectNotCounted(t, admin, "idle")
}
