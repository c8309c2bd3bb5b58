package engine_test

// Nothing is lost silently (docs/RESUME.md): every message relayed to a
// reader that does not read it reaches it, is replayed to the
// connection that takes its session over, or is counted in what its
// sender is told. These tests stop a real client's reading so that the
// kernel's buffers fill and the server holds the rest, and check the
// accounting to the message.

import (
	"bufio"
	"io"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"duet/engine"
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

// TestTakeoverReplaysWhatTheOldConnectionNeverWrote: alice's connection
// is open but she stopped reading, so the server holds what her socket
// would not take, when she resumes from a new connection. What the old
// connection never wrote, however long ago it was sent, is replayed to
// the new one (or counted as not kept): it is not left behind with the
// old connection, which will never write it.
func TestTakeoverReplaysWhatTheOldConnectionNeverWrote(t *testing.T) {
	t.Parallel()
	const recent = 2 * time.Second
	d := enginetest.Start(t, func(o *engine.Options) {
		o.Limits.OutboundHigh = 64 << 20
		o.Limits.OutboundMax = 128 << 20
		o.Limits.SlowTimeout = time.Minute
		o.Resume.Buffer = 32 << 20
		o.Resume.ReplayRecent = recent
	})
	old := newLineConn(t, dialReceiveBuffer(t, d.TCP, 256<<10))
	old.expect(`^\* welcome`)
	old.send("/login alice")
	token := tokenInLine.FindStringSubmatch(old.expect(`^\* you are alice`))[1]
	key := regexp.MustCompile(`^\* resume key: (\w+) `).FindStringSubmatch(old.expect(`^\* resume key: `))[1]
	bob := d.DialLine(t).Login("bob")
	bob.Send("/connect " + token)
	bob.Expect(`^\* you are connected with alice$`)
	old.expect(`^\* bob is connected$`)

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
	r := bufio.NewReader(bob.c)
	got := 0
	for {
		bob.c.SetReadDeadline(time.Now().Add(enginetest.Timeout))
		l, err := r.ReadString('\n')
		if err != nil {
			if err != io.EOF {
				t.Fatalf("after %d messages: %v", got, err)
			}
			break
		}
		m := bobLine.FindStringSubmatch(strings.TrimSuffix(l, "\r\n"))
		if m == nil {
			t.Fatalf("bob got %q", l)
		}
		if n, _ := strconv.Atoi(m[2]); n != got {
			t.Fatalf("bob got message %d, want %d", n, got)
		}
		got++
	}
	if got+lost != relayed {
		t.Fatalf("bob got %d of the %d messages relayed to him and alice was told %d were not delivered: off by %d",
			got, relayed, lost, got+lost-relayed)
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
