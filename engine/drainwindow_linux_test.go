//go:build linux

package engine_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"

	"duet/engine"
	"duet/engine/enginetest"
)

// TestDrainCountsWhatWasSentBetweenItsHalves: a drain sends alice's
// session away as it begins, and tells her client to resume only once
// the session is parked, a round trip to Redis later. What her client
// says meanwhile reaches a connection that carries no session: it cannot
// be delivered, and the drain's notice says how many were not. Each
// message is delivered or counted, none both and none neither. The park
// waits while she sends, and the loop reads her messages before the
// drain's second half is queued to it: the window, every time. (Before,
// each was answered not_logged_in into an outbox the drain had retired:
// never written, never counted.)
func TestDrainCountsWhatWasSentBetweenItsHalves(t *testing.T) {
	t.Parallel()
	const late = 7
	t.Run("line", func(t *testing.T) {
		t.Parallel()
		d, alice, bob, sent := latePair(t, late)
		drained := drainWhile(t, d, 2, true, func() { sendRead(t, d, alice.Conn, sent) })
		notice := regexp.MustCompile(`^\* the server is restarting; reconnect and type /resume ` + alice.Key +
			` within 2m(?:; (\d+) of your messages (?:was|were) not delivered)?$`)
		counted := -1
		for {
			l, err := alice.TryLine(enginetest.Timeout)
			if err != nil {
				break
			}
			if m := notice.FindStringSubmatch(l); m != nil {
				counted, _ = strconv.Atoi(m[1])
				continue
			}
			t.Errorf("alice was told %q", l)
		}
		got := linesUntilClosed(bob, "<alice> ")
		<-drained
		checkDrainCount(t, late, counted, got)
	})
	t.Run("json", func(t *testing.T) {
		t.Parallel()
		d := enginetest.Start(t, func(o *engine.Options) { o.Loops = 1 })
		alice, bob := enginetest.PairWS(t, d)
		var sent bytes.Buffer
		// Every other message is a seal, counted as a say is. The last
		// say would be refused as it is read (a lone surrogate), and so
		// would the seal before it (its data is not base64url) and the
		// frame after it, which is not a message. (Before, that say was
		// answered into an outbox the drain had retired, and not
		// counted.)
		var frames []string
		for i := range late {
			frame := fmt.Sprintf(`{"type":"say","text":"late %d","id":%d}`, i, i+1)
			switch {
			case i == late-1:
				frame = fmt.Sprintf(`{"type":"say","text":"\ud800","id":%d}`, i+1)
			case i == late-2:
				frame = fmt.Sprintf(`{"type":"seal","data":"bGF0ZQ==","id":%d}`, i+1)
			case i%2 == 1:
				frame = fmt.Sprintf(`{"type":"seal","data":"bGF0ZSA%d","id":%d}`, i, i+1)
			}
			frames = append(frames, frame)
		}
		for _, frame := range append(frames, `{"type":"frob"}`) {
			if err := wsutil.WriteClientText(&sent, []byte(frame)); err != nil {
				t.Fatal(err)
			}
		}
		drained := drainWhile(t, d, 2, true, func() { sendRead(t, d, alice.Conn, sent.Bytes()) })
		counted := -1
		code, _ := alice.ReadUntilClose(func(ev map[string]any) {
			if ev["type"] == "notice" && ev["text"] == "the server is restarting; reconnect and resume your session within 2m" {
				n, _ := ev["undelivered"].(float64)
				counted = int(n)
				return
			}
			t.Errorf("alice was told %v", ev)
		})
		if code != 1012 {
			t.Errorf("closed with %d", code)
		}
		var got []string
		bob.ReadUntilClose(func(ev map[string]any) {
			if ev["type"] == "message" || ev["type"] == "sealed" {
				got = append(got, fmt.Sprint(ev["text"], ev["data"]))
			}
		})
		<-drained
		checkDrainCount(t, late, counted, got)
	})
}

// TestDrainNotParkedCountsWhatWasSentBetweenItsHalves: as above, with a
// park that fails. alice's session ends, and she is told so, not to
// resume; the messages she sent meanwhile are counted all the same,
// between the error and the goodbye.
func TestDrainNotParkedCountsWhatWasSentBetweenItsHalves(t *testing.T) {
	t.Parallel()
	const late = 5
	d, alice, bob, sent := latePair(t, late)
	drained := drainWhile(t, d, 2, false, func() { sendRead(t, d, alice.Conn, sent) })
	alice.ExpectLines(
		"! not_parked: the server is restarting and could not keep your session; log in again",
		fmt.Sprintf("* the server is restarting; %d of your messages were not delivered", late),
		"* the server is shutting down; goodbye")
	alice.ExpectClosed()
	if got := linesUntilClosed(bob, "<alice> "); len(got) > 0 {
		t.Errorf("bob got %q, sent after alice's session went away", got)
	}
	<-drained
}

// latePair starts a daemon with one loop and pairs alice and bob on
// it, line clients, and returns with them the lines alice is to send
// late: n messages, the last two of which would be refused as they are
// read (one not UTF-8, one too long), and a command that would be
// refused so too, which is not a message. (Before, the two refused
// messages were answered into an outbox the drain had retired, and not
// counted: 2 fewer than sent.)
func latePair(t *testing.T, n int) (d *enginetest.Daemon, alice, bob *enginetest.LineClient, sent []byte) {
	t.Helper()
	d = enginetest.Start(t, func(o *engine.Options) { o.Loops = 1 })
	alice, bob = pairLines(t, d, "alice", "bob")
	for i := range n - 2 {
		sent = fmt.Appendf(sent, "late %d\n", i)
	}
	sent = append(sent, "late caf\xe9\n"...)
	sent = append(sent, "/frob\xff\n"...)
	sent = append(sent, strings.Repeat("late ", 4000)+"\n"...)
	return d, alice, bob, sent
}

// linesUntilClosed reads lc until it is closed, and returns the lines
// that begin with prefix.
func linesUntilClosed(lc *enginetest.LineClient, prefix string) (got []string) {
	for {
		l, err := lc.TryLine(enginetest.Timeout)
		if err != nil {
			return got
		}
		if strings.HasPrefix(l, prefix) {
			got = append(got, l)
		}
	}
}

// TestDrainTellsARunOfRefusalsGoingOn: alice, paired with no one, has
// said things that were refused, the first told and the rest counted
// for the count told once a second, when a drain sends her session
// away. The park takes over two of the loop's seconds: the count is not
// told into an outbox the drain retired, where it would never be
// written, but by the drain's goodbye. (Before, the second's count was
// taken, and lost.)
func TestDrainTellsARunOfRefusalsGoingOn(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, func(o *engine.Options) { o.Loops = 1 })
	alice := d.DialLine(t).Login("alice")
	counted := refuseLines(t, alice)
	// The loop counts its seconds by its own tick, which a test cannot
	// see: two and a half of them pass during the park, and a second's
	// count, if taken then, is taken.
	drained := drainWhile(t, d, 1, true, func() { time.Sleep(2500 * time.Millisecond) })
	notice := "* the server is restarting; reconnect and type /resume " + alice.Key + " within 2m"
	for l := alice.Line(); l != notice; l = alice.Line() {
		counted += lineCount(t, l)
	}
	alice.ExpectClosed()
	<-drained
	if counted != runSays-1 {
		t.Fatalf("of %d says refused, the first told, %d were counted, want %d", runSays, counted, runSays-1)
	}
}

// drainWhile drains d, whose clients have parks sessions, with a park
// that waits until during has returned, then reports parked, and
// returns a channel closed once the drain is over.
func drainWhile(t *testing.T, d *enginetest.Daemon, parks int, parked bool, during func()) <-chan struct{} {
	t.Helper()
	parking := make(chan string, parks)
	proceed := make(chan struct{})
	park := func(ctx context.Context, key string) bool {
		parking <- key
		select {
		case <-proceed:
			return parked
		case <-ctx.Done():
			return false
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 2*enginetest.Timeout)
		defer cancel()
		if got := d.Drain(ctx, 0, park); got.Told+got.NotParked != parks || parked != (got.NotParked == 0) {
			t.Errorf("drained %+v, %d sessions parked %v", got, parks, parked)
		}
	}()
	// Every session has gone away, and waits to be parked.
	for range parks {
		select {
		case <-parking:
		case <-time.After(enginetest.Timeout):
			t.Fatal("the drain parked nothing")
		}
	}
	during()
	close(proceed)
	return done
}

// sendRead writes b on c and returns once the server's loop has read
// it all: written while the loop is held, so that it reads it in one
// turn once let go, and acts on it before anything queued to the loop
// after this returns.
func sendRead(t *testing.T, d *enginetest.Daemon, c net.Conn, b []byte) {
	t.Helper()
	fd := d.ServerFD(c.LocalAddr())
	if fd < 0 {
		t.Fatal("the connection is not on the server")
	}
	release := d.HoldLoops()
	defer release()
	if _, err := c.Write(b); err != nil {
		t.Error(err)
		return
	}
	waitUnread(t, fd, len(b))
	release()
	waitUnread0(t, fd)
}

// waitUnread0 waits until the kernel holds nothing unread on the
// server's descriptor fd: the loop has read it, and acted on it in the
// same turn.
func waitUnread0(t *testing.T, fd int) {
	t.Helper()
	for deadline := time.Now().Add(enginetest.Timeout); ; time.Sleep(time.Millisecond) {
		got, err := engine.Unread(fd)
		if err != nil {
			t.Fatal(err)
		}
		if got == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server's socket still holds %d bytes", got)
		}
	}
}

// checkDrainCount checks the count the drain's notice told of the late
// messages against what the partner got of them: every one delivered
// or counted, none both.
func checkDrainCount(t *testing.T, late, counted int, got []string) {
	t.Helper()
	if counted < 0 {
		t.Fatal("alice was not told to reconnect")
	}
	if len(got) > 0 {
		t.Errorf("bob got %q, sent after alice's session went away", got)
	}
	if len(got)+counted != late {
		t.Fatalf("of %d messages sent during the drain the partner got %d and %d were counted not delivered", late, len(got), counted)
	}
}
