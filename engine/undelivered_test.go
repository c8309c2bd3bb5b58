package engine_test

// Nothing is lost silently (docs/RESUME.md): every message relayed to a
// reader that does not read it reaches it, is replayed to the
// connection that takes its session over, or is counted in what its
// sender is told. These tests stop a real client's reading so that the
// kernel's buffers fill and the server holds the rest, and check the
// accounting to the message.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"duet/engine"
	"duet/engine/auth/authtest"
	"duet/engine/enginetest"
)

// count numbered messages of about 200 bytes, 10 MiB, are more than the
// kernel's buffers on both ends of a loopback connection hold (tcp_wmem's
// 4 MiB at most, and the few hundred KiB of the readers' own).
const count = 50_000

// bobLine is a numbered message, as its reader sees it.
var bobLine = regexp.MustCompile(`^<(\w+)> m (\d+) x+$`)

// sendNumbered has c send count numbered messages, "m <i> <pad>", from
// its own goroutine, and returns the first error.
func sendNumbered(c io.Writer, count, pad int) <-chan error {
	done := make(chan error, 1)
	go func() { done <- numberedLines(c, "m", count, pad) }()
	return done
}

// keepsForSlowReader edits a daemon's options for a reader that stops
// reading: what is written to it is queued (64 MiB before the sender
// is held back), it is not cut off for a minute, and buffer bytes of it
// are kept for its resume, the last recent of it replayed whatever the
// client says it read (the default when 0).
func keepsForSlowReader(buffer int, recent time.Duration) func(*engine.Options) {
	return func(o *engine.Options) {
		o.Limits.OutboundHigh = 64 << 20
		o.Limits.OutboundMax = 128 << 20
		o.Limits.SlowTimeout = time.Minute
		o.Resume.Buffer = buffer
		if recent > 0 {
			o.Resume.ReplayRecent = recent
		}
	}
}

// pairWithSlowReader logs alice in on a connection with a small
// receive buffer (256 KiB), so that what is written to her fills the
// kernel's buffers soon, and pairs bob with her: her connection, her
// resume key, and bob.
func pairWithSlowReader(t *testing.T, d *enginetest.Daemon) (old *lineConn, key string, bob *enginetest.LineClient) {
	t.Helper()
	old = newLineConn(t, dialReceiveBuffer(t, d.TCP, 256<<10))
	old.expect(`^\* welcome`)
	old.send("/login alice")
	token := tokenInLine.FindStringSubmatch(old.expect(`^\* you are alice`))[1]
	key = regexp.MustCompile(`^\* resume key: (\w+) `).FindStringSubmatch(old.expect(`^\* resume key: `))[1]
	bob = d.DialLine(t).Login("bob")
	bob.Send("/connect " + token)
	bob.Expect(`^\* you are connected with alice$`)
	old.expect(`^\* bob is connected$`)
	return old, key, bob
}

// slowCutPair starts a daemon that cuts a reader stopped for a second
// (limits.slow_timeout, and resume.replay_recent, its user timeout), and
// pairs alice, with a 256 KiB receive buffer, and bob (pairWithSlowReader).
func slowCutPair(t *testing.T) (d *enginetest.Daemon, old *lineConn, key string, bob *enginetest.LineClient) {
	t.Helper()
	d = enginetest.Start(t, func(o *engine.Options) {
		o.Limits.SlowTimeout = time.Second
		o.Resume.ReplayRecent = time.Second
	})
	old, key, bob = pairWithSlowReader(t, d)
	return d, old, key, bob
}

// TestTakeoverReplaysWhatTheOldConnectionNeverWrote: alice's connection
// is open but she stopped reading, so the server holds what her socket
// would not take, when she resumes from a new connection. What the old
// connection never wrote, however long ago it was sent, is replayed to
// the new one (or counted as not kept): it is not left behind with the
// old connection, which will never write it.
func TestTakeoverReplaysWhatTheOldConnectionNeverWrote(t *testing.T) {
	t.Parallel()
	const recent = 2 * time.Second
	d := enginetest.Start(t, keepsForSlowReader(32<<20, recent))
	old, key, bob := pairWithSlowReader(t, d)

	// alice reads slowly, 64 KiB at a time.
	stop := enginetest.ReadSlowly(old.c)
	// Far more than the kernel's buffers hold.
	if err := <-sendNumbered(bob.Conn, count, 200); err != nil {
		t.Fatal(err)
	}
	taken(t, d, count)
	// Every message is older than resume.replay_recent by the resume.
	time.Sleep(recent + recent/2)
	stop()

	_, peer, replayed, missed := enginetest.ResumeLine(t, d, key)
	if peer != "bob" {
		t.Fatalf("resumed with %q", peer)
	}
	if st := d.Hub.Stats(); st.ResumedZombie != 1 {
		t.Fatalf("not a takeover of an open connection: hub stats %+v", st)
	}
	enginetest.ExpectReplayedRun(t, replayed, missed, "bob", count-1)
}

// TestSlowCutCountsWhatItsSocketHeld: alice reads slowly, then stops,
// and is cut off as a slow reader with megabytes written into her
// socket that her TCP never acknowledged: far more than resume.buffer
// keeps. Her resume replays what was kept of what she did not read, and
// counts the rest as not kept: every message is read (what her socket
// held at the cut included), replayed or counted. (The cut counted only what was never written into the
// socket, and the record of the messages dropped from what was kept for
// room went back resume.replay_recent only: thousands of messages were
// neither replayed nor counted.)
func TestSlowCutCountsWhatItsSocketHeld(t *testing.T) {
	t.Parallel()
	d, old, key, bob := slowCutPair(t)

	var got bytes.Buffer
	stop := enginetest.ReadSlowlyInto(old.c, &got)
	sent := sendNumbered(bob.Conn, count, 200)
	time.Sleep(3 * time.Second) // the server's kernel takes megabytes meanwhile
	stop()
	bob.Expect(`^\* alice lost the connection; `)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	relayed := settledMessages(t, d)
	// Her client reads what its socket still holds, as netcat would
	// before it exits: what her TCP acknowledged is hers, and the server
	// may have let go of it as received.
	// What alice's client read before the cut: messages 0 to read-1.
	read := readAllNumbered(t, old.c, &got)
	_, peer, replayed, missed := enginetest.ResumeLine(t, d, key)
	if peer != "bob" {
		t.Fatalf("resumed with %q", peer)
	}
	first := relayed
	for i, l := range replayed {
		m := bobLine.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("replayed %q", l)
		}
		n, _ := strconv.Atoi(m[2])
		if i == 0 {
			first = n
		} else if n != first+i {
			t.Fatalf("replayed message %d after %d", n, first+i-1)
		}
	}
	if len(replayed) > 0 && first+len(replayed) != relayed {
		t.Fatalf("the replay ends at %d; %d were relayed", first+len(replayed)-1, relayed)
	}
	t.Logf("alice read %d messages before the cut and after it; %d were replayed from %d, %d counted as not kept", read, len(replayed), first, missed)
	if unsaid := first - read - missed; unsaid > 0 {
		t.Fatalf("%d messages were neither read, replayed nor counted", unsaid)
	}
}

// TestSlowCutDropsWhatItCounted: alice stops reading, as a suspended
// netcat does, and is cut as slow while the server's socket holds
// megabytes her TCP never acknowledged, which the cut counts as not
// received: her resume replays them or counts them not kept, and bob is
// told they were not delivered. They must not reach her old connection
// too when her client wakes: the cut resets the connection, and the
// kernel drops them. (A plain close went on sending them: the woken
// client read every message, then the resume gave them again.)
func TestSlowCutDropsWhatItCounted(t *testing.T) {
	t.Parallel()
	d, old, key, bob := slowCutPair(t)
	sent := sendNumbered(bob.Conn, count, 200)
	bob.Expect(`^\* alice lost the connection; `)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	relayed := settledMessages(t, d)

	// Her client wakes and reads all it can, as netcat would.
	var got bytes.Buffer
	read := readAllNumbered(t, old.c, &got)
	_, _, replayed, missed := enginetest.ResumeLine(t, d, key)
	t.Logf("%d relayed; alice read %d (%d bytes) on the old connection; the resume replayed %d and counted %d not kept",
		relayed, read, got.Len(), len(replayed), missed)
	// What she reads after the cut is what her own socket had taken,
	// acknowledged, before it: at most her receive buffer. (The count
	// of what was not received may take in some of that too, as
	// RESUME.md says: never fewer than were not.)
	rcvbuf := rcvbufOf(t, old.c)
	if got.Len() > rcvbuf+64<<10 {
		t.Fatalf("alice read %d bytes on the old connection after her client woke, her receive buffer being %d: the server's kernel sent on what the cut counted not received",
			got.Len(), rcvbuf)
	}
}

// readAllNumbered reads from c into got until the connection ends, and
// returns how many of bob's numbered messages got holds, which must be
// 0 to that count less one, in order.
func readAllNumbered(t *testing.T, c net.Conn, got *bytes.Buffer) int {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(enginetest.Timeout))
	_, _ = io.Copy(got, c)
	read := 0
	for _, l := range strings.Split(got.String(), "\r\n") {
		if m := bobLine.FindStringSubmatch(l); m != nil {
			if n, _ := strconv.Atoi(m[2]); n != read {
				t.Fatalf("alice read message %d after %d", n, read-1)
			}
			read++
		}
	}
	return read
}

// rcvbufOf is the size of c's socket receive buffer (SO_RCVBUF, as the
// kernel has it: twice what was asked).
func rcvbufOf(t *testing.T, c net.Conn) int {
	t.Helper()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		n, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
	}); err != nil || gerr != nil {
		t.Fatalf("SO_RCVBUF: %v %v", err, gerr)
	}
	return n
}

// TestCutReaderCountIsExact: bob stops reading and is cut off with part
// of a write in his socket. alice is told exactly how many of her
// messages never reached his socket: bob, reading everything his socket
// holds afterwards, finds all the others, whole.
func TestCutReaderCountIsExact(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, func(o *engine.Options) {
		o.Limits.OutboundHigh = 64 << 20
		o.Limits.OutboundMax = 128 << 20
		o.Limits.SlowTimeout = time.Second
		o.Resume.Window = 0 // the sender is told the count at the cut
	})
	alice := d.DialLine(t).Login("alice")
	bob := newLineConn(t, dialSmallReceiveBuffer(t, d.TCP))
	bob.resume = false
	bob.expect(`^\* welcome`)
	bob.login("bob")
	bob.send("/connect " + alice.Token)
	bob.expect(`^\* you are connected with alice$`)
	alice.Expect(`^\* bob is connected$`)

	sent := sendNumbered(alice.Conn, count, 200)
	told := alice.Expect(`^\* bob stopped reading and was cut off; \d+ of your messages were not delivered`)
	lost, _ := strconv.Atoi(regexp.MustCompile(`(\d+) of your`).FindStringSubmatch(told)[1])
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	// The cut may come before alice has sent them all (a slow machine):
	// those after it are refused, not relayed, and not counted here.
	relayed := settledMessages(t, d)

	// What bob's socket took reaches him after the cut, then the end.
	got := readNumberedToEnd(t, bob, nil)
	if got+lost != relayed {
		t.Fatalf("bob got %d of the %d messages relayed to him and alice was told %d were not delivered: off by %d",
			got, relayed, lost, got+lost-relayed)
	}
}

// readNumberedToEnd reads c until the server has closed it, and returns
// how many numbered messages it got: all of them in order from the
// first, with nothing between them, and after them only lines that
// match after (the goodbye the server may have written).
func readNumberedToEnd(t *testing.T, c *lineConn, after *regexp.Regexp) int {
	t.Helper()
	r := bufio.NewReader(c.c)
	got, ended := 0, false
	for {
		c.c.SetReadDeadline(time.Now().Add(enginetest.Timeout))
		l, err := r.ReadString('\n')
		if err != nil {
			if err != io.EOF {
				t.Fatalf("after %d messages: %v", got, err)
			}
			return got
		}
		l = strings.TrimSuffix(l, "\r\n")
		m := bobLine.FindStringSubmatch(l)
		switch {
		case m != nil && !ended:
			if n, _ := strconv.Atoi(m[2]); n != got {
				t.Fatalf("got message %d, want %d", n, got)
			}
			got++
		case after != nil && after.MatchString(l):
			ended = true
		default:
			t.Fatalf("after %d messages got %q", got, l)
		}
	}
}

// TestEndedReaderCountIsExact: bob stops reading, then ends his session
// while the server holds messages for him: he quits, or his account
// logs in on another connection (auth.takeover). alice is told how many
// of her messages never reached his socket, not 0: bob, reading all his
// socket holds once it is closed, finds all the others. (The session
// used to end before its goodbye was written, and the count made as
// its connection was cut was thrown away; a takeover told 0.)
//
// A quit's count is exact: the session ends as the connection closes.
// A takeover's is told as the pairing ends, at the new login, and is
// what the old connection had not written then; the kernel may still
// take some of it from the old connection before it is closed (its
// send buffer grows), so the count may be too high, never too low.
func TestEndedReaderCountIsExact(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		end   func(t *testing.T, d *enginetest.Daemon, bob *lineConn)
		told  string // what alice is told, before the count
		bye   string // what bob may be told after the messages
		exact bool
	}{
		{"quit", func(t *testing.T, d *enginetest.Daemon, bob *lineConn) { bob.send("/quit") },
			`bob left`, `^\* bye$`, true},
		{"takeover", func(t *testing.T, d *enginetest.Daemon, bob *lineConn) {
			d.DialLine(t).LoginPassword("bob", "hunter2")
		}, `bob logged in elsewhere`, `^\* (bye|your account logged in on another connection; this one is closed)$`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			users := authtest.Users(t, "alice", "s3cret", "bob", "hunter2")
			d, _ := enginetest.StartAccounts(t, users, func(o *engine.Options) {
				o.Auth.Takeover = true
				o.Limits.OutboundHigh = 64 << 20
				o.Limits.OutboundMax = 128 << 20
				// Long enough for alice to send them all before bob
				// is cut for not reading.
				o.Limits.SlowTimeout = 6 * time.Second
				o.Resume.Window = 0
			})
			alice := d.DialLine(t).LoginPassword("alice", "s3cret")
			bob := newLineConn(t, dialSmallReceiveBuffer(t, d.TCP))
			bob.resume = false
			bob.expect(`^\* welcome`)
			bob.send("/login bob hunter2")
			bob.expect(`^\* you are bob`)
			bob.send("/connect " + alice.Token)
			bob.expect(`^\* you are connected with alice$`)
			alice.Expect(`^\* bob is connected$`)

			// Far more than bob's socket takes.
			if err := <-sendNumbered(alice.Conn, count, 200); err != nil {
				t.Fatal(err)
			}
			tc.end(t, d, bob)
			told := alice.Expect(`^\* ` + tc.told + `(; \d+ of your messages were not delivered)?; you are free`)
			m := regexp.MustCompile(`(\d+) of your`).FindStringSubmatch(told)
			if m == nil {
				t.Fatalf("alice was told %q: none of her messages lost, while the server held them for bob", told)
			}
			lost, _ := strconv.Atoi(m[1])
			// What came after the end was refused, not relayed.
			relayed := settledMessages(t, d)
			got := readNumberedToEnd(t, bob, regexp.MustCompile(tc.bye))
			if got+lost < relayed || tc.exact && got+lost != relayed {
				t.Fatalf("bob got %d of the %d messages relayed to him and alice was told %d were not delivered: off by %d",
					got, relayed, lost, got+lost-relayed)
			}
		})
	}
}

// settledMessages is the messages relayed in all (hub.Stats.Messages),
// once that no longer changes.
func settledMessages(t *testing.T, d *enginetest.Daemon) int {
	t.Helper()
	n := d.Hub.Stats().Messages
	for deadline := time.Now().Add(enginetest.Timeout); ; {
		time.Sleep(200 * time.Millisecond)
		m := d.Hub.Stats().Messages
		if m == n {
			return int(n)
		}
		if time.Now().After(deadline) {
			t.Fatal("messages still being relayed")
		}
		n = m
	}
}

// TestTakeoverOldConnectionToldNothingFalse: while a resume elsewhere
// takes alice's session from her connection, that connection goes on
// sending /who and messages. Until it is told its session was resumed
// on another connection, and closed, it is told nothing untrue: not
// that alice is not connected, not that her lines were not sent for
// want of a partner (she is still paired with bob, on the new
// connection).
func TestTakeoverOldConnectionToldNothingFalse(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, nil)
	for round := range 10 {
		alice, bob := pairLines(t, d, fmt.Sprint("alice", round), fmt.Sprint("bob", round))
		go func() {
			for {
				if _, err := bob.TryLine(enginetest.Timeout); err != nil {
					return
				}
			}
		}()
		stop := make(chan struct{})
		sending := make(chan struct{})
		go func() {
			defer close(sending)
			w := bufio.NewWriter(alice.Conn)
			for {
				select {
				case <-stop:
					return
				default:
				}
				w.WriteString("/who\n")
				for range 20 {
					w.WriteString("hello\n")
				}
				if w.Flush() != nil {
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
		time.Sleep(20 * time.Millisecond)
		back, peer, _, _ := enginetest.ResumeLine(t, d, alice.Key)
		if peer != bob.Name {
			t.Fatalf("resumed with %q", peer)
		}
		var untrue []string
		for {
			l, err := alice.TryLine(enginetest.Timeout)
			if err != nil {
				break
			}
			if strings.HasPrefix(l, "* you are") && !strings.HasSuffix(l, "connected with "+bob.Name) ||
				strings.HasPrefix(l, "! ") || strings.Contains(l, "not sent") {
				untrue = append(untrue, l)
			}
		}
		close(stop)
		<-sending
		if len(untrue) > 0 {
			t.Fatalf("round %d: the old connection was told after the takeover:\n  %s", round, strings.Join(untrue[:min(len(untrue), 5)], "\n  "))
		}
		back.Send("/quit")
		bob.Send("/quit")
	}
}

// TestResetReaderTellsSenderWhatWasNotKept: alice reads far more
// slowly than bob sends, far more than her socket and resume.buffer
// hold, then stops reading, and her connection is reset. bob is told,
// with the away news, how many of his messages will never reach her,
// exactly as many as her resume reports it could not keep. (He was told
// only that she lost the connection.)
func TestResetReaderTellsSenderWhatWasNotKept(t *testing.T) {
	t.Parallel()
	const recent = time.Second
	d := enginetest.Start(t, keepsForSlowReader(256<<10, recent))
	old, key, bob := pairWithSlowReader(t, d)
	// Her socket and the server's fill, and the server holds the rest.
	// Until the server has taken all of bob's messages she reads a
	// little every 300 ms, so that her TCP acknowledges something well
	// within her user timeout (resume.replay_recent): a reader that
	// reads nothing would be cut once it passed, and however long bob's
	// sending takes (longer on a loaded machine), his later messages
	// would find her away with resume.buffer full, and be refused.
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		// Twice the loopback's largest segment: her TCP reopens its
		// window, and so acknowledges, only by as much at a time.
		buf := make([]byte, 128<<10)
		tick := time.NewTicker(300 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			_ = old.c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			_, _ = io.ReadFull(old.c, buf)
		}
	}()
	if err := <-sendNumbered(bob.Conn, count, 200); err != nil {
		t.Fatal(err)
	}
	taken(t, d, count)
	close(stop)
	<-stopped
	// Every message older than resume.replay_recent by the drop: her
	// resume counts as missed only what her connection never had.
	time.Sleep(2 * recent)
	enginetest.Reset(t, old.c)

	lost := toldNotDelivered(t, bob)
	_, peer, replayed, missed := enginetest.ResumeLine(t, d, key)
	if peer != "bob" {
		t.Fatalf("resumed with %q", peer)
	}
	t.Logf("bob was told %d were not delivered; alice's resume replayed %d and counted %d as not kept", lost, len(replayed), missed)
	if missed != lost {
		t.Fatalf("alice's resume counted %d messages not kept; bob was told %d were not delivered", missed, lost)
	}
	// What was kept is the newest, to the last.
	for i, l := range replayed {
		if m := bobLine.FindStringSubmatch(l); m == nil || m[2] != strconv.Itoa(count-len(replayed)+i) {
			t.Fatalf("replayed %q as %d of the last %d", l, i, len(replayed))
		}
	}
}

// TestAcknowledgedNotCountedUndelivered: a JSON client acknowledges
// every message bob sends it, then stops reading while bob sends far
// more than its socket and resume.buffer hold, and its connection is
// reset. bob is told as many of his messages were not delivered as
// alice's resume, naming the last she acknowledged, counts missed: the
// ones she acknowledged are not among them, though her connection's
// queue never saw her TCP acknowledge them.
func TestAcknowledgedNotCountedUndelivered(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, keepsForSlowReader(256<<10, time.Second))
	alice := d.DialWS(t)
	enginetest.SmallWindow(t, alice.Conn)
	alice.Login("alice")
	alice.Send(map[string]any{"type": "ack", "last": 0})
	bob := d.DialLine(t).Login("bob")
	bob.Send("/connect " + alice.Token)
	bob.Expect(`^\* you are connected with alice$`)
	alice.Expect("paired")
	// Short messages, fewer bytes than the socket is asked about
	// (ReadStride) after alice's reads: her queue never learns that
	// her TCP acknowledged them.
	const acked = 40
	for i := range acked {
		bob.Send(fmt.Sprintf("p%d", i))
		text, seq := enginetest.WSMessage(t, alice)
		if text != fmt.Sprintf("p%d", i) || seq != uint64(i+1) {
			t.Fatalf("alice got %q, seq %d", text, seq)
		}
		alice.Send(map[string]any{"type": "ack", "last": seq})
	}
	waitFor(t, "alice's acks to empty her history", func() bool { return d.Hub.Stats().HistoryBytes == 0 })

	// More than resume.buffer holds (256 KiB), well under what the
	// kernel's buffers do: her connection writes them all, and is reset
	// with them unacknowledged.
	const flood = 3000
	if err := <-sendNumbered(bob.Conn, flood, 200); err != nil {
		t.Fatal(err)
	}
	taken(t, d, acked+flood)
	enginetest.Reset(t, alice.Conn)

	lost := toldNotDelivered(t, bob)
	_, ev := enginetest.ResumeWS(t, d, alice.Key, acked)
	missed, _ := ev["missed"].(float64)
	replayed, _ := ev["replayed"].(float64)
	t.Logf("bob was told %d were not delivered; alice's resume replays %v and counts %v missed", lost, replayed, missed)
	if lost != int(missed) || int(missed)+int(replayed) != flood {
		t.Fatalf("bob was told %d of his messages were not delivered; alice's resume after the %d she acknowledged replays %v of the %d after them and counts %v missed",
			lost, acked, replayed, flood, missed)
	}
}

// toldNotDelivered reads the news that alice went away from bob, and
// returns how many of his messages it says were not delivered, which
// must be some: resume.buffer kept only a fraction of them.
func toldNotDelivered(t *testing.T, bob *enginetest.LineClient) int {
	t.Helper()
	told := bob.Expect(`^\* alice lost the connection; waiting up to 2m for alice to come back`)
	m := regexp.MustCompile(`; (\d+) of your messages were not delivered$`).FindStringSubmatch(told)
	if m == nil {
		t.Fatalf("bob was told %q: none of his messages lost, while resume.buffer kept a fraction of them", told)
	}
	lost, _ := strconv.Atoi(m[1])
	return lost
}
