//go:build linux

package engine_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"golang.org/x/sys/unix"

	"duet/engine"
	"duet/engine/enginetest"
)

// TestTakeoverReplaysWhatTheOldSocketHeld: alice reads slowly on her
// open connection, written megabytes ahead in her socket, and resumes
// from a new one once everything is older than resume.replay_recent.
// The takeover replays, or counts as not kept, every message her old
// connection's TCP had not received, the socket's included: nothing is
// between what she read there and what the replay begins with. (The
// takeover counted only what the old connection never wrote into its
// socket: 13,000 messages were neither received, replayed nor
// counted.)
func TestTakeoverReplaysWhatTheOldSocketHeld(t *testing.T) {
	// Not in parallel with the other tests that write megabytes to a
	// slow reader: on a busy machine her reads come late enough for her
	// kernel to find her dead (TCP_USER_TIMEOUT), and no takeover is
	// left to test.
	const recent = 2 * time.Second
	d := enginetest.Start(t, keepsForSlowReader(32<<20, recent))
	old, key, bob := pairWithSlowReader(t, d)

	var got bytes.Buffer
	stop := enginetest.ReadSlowlyInto(old.c, &got)
	if err := <-sendNumbered(bob.Conn, count, 200); err != nil {
		t.Fatal(err)
	}
	taken(t, d, count)
	time.Sleep(recent + recent/2)
	stop()
	// What her old connection's TCP has received and she has not read:
	// her receive window is shut, and nothing more comes before the
	// takeover.
	inq := socketInQueue(t, old.c)

	_, peer, replayed, missed := enginetest.ResumeLine(t, d, key)
	if peer != "bob" || d.Hub.Stats().ResumedZombie != 1 {
		t.Fatalf("resumed with %q, hub stats %+v", peer, d.Hub.Stats())
	}
	rest := make([]byte, inq)
	old.c.SetReadDeadline(time.Now().Add(enginetest.Timeout))
	if _, err := io.ReadFull(old.c, rest); err != nil {
		t.Fatal(err)
	}
	got.Write(rest)
	last := -1
	for _, l := range bytes.Split(got.Bytes(), []byte("\r\n")) {
		if m := bobLine.FindSubmatch(l); m != nil {
			n, _ := strconv.Atoi(string(m[2]))
			if n != last+1 {
				t.Fatalf("the old connection read message %d after %d", n, last)
			}
			last = n
		}
	}
	first := count
	if len(replayed) > 0 {
		first, _ = strconv.Atoi(bobLine.FindStringSubmatch(replayed[0])[2])
	}
	t.Logf("the old connection received up to %d; %d replayed from %d, %d counted as not kept", last, len(replayed), first, missed)
	if unsaid := first - (last + 1) - missed; unsaid > 0 {
		t.Fatalf("messages %d to %d were neither received, replayed nor counted", last+1, first-1)
	}
	// Counting from what her TCP acknowledged, the replay repeats only
	// what reached her kernel after it acknowledged: no more than her
	// receive buffer holds.
	if again := last + 1 - first; again*200 > 512<<10 {
		t.Fatalf("%d messages she had received were replayed", again)
	}
	enginetest.ExpectReplayedRun(t, replayed, missed, "bob", count-1)
}

// socketInQueue is how many bytes c's socket has received that were
// not read yet (SIOCINQ).
func socketInQueue(t *testing.T, c net.Conn) int {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ierr error
	if err := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil || ierr != nil {
		t.Fatal(err, ierr)
	}
	return n
}

// TestTakeoverCountsWhatTheOldConnectionSentMeanwhile: alice's old
// connection sends messages after a resume elsewhere took her session,
// before the eviction that closes it has run. They cannot be delivered
// (the session they came on is retired), and the eviction's notice says
// how many were not: each message the old connection sent reached bob
// or is in that count, none both and none neither. The one event loop
// is held while the resume and the messages arrive, so that it reads the
// resume first (its bytes came first) and the messages in the same turn,
// before the eviction the resume queued to it: the window, every time.
func TestTakeoverCountsWhatTheOldConnectionSentMeanwhile(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, func(o *engine.Options) { o.Loops = 1 })
	const late = 7
	t.Run("line", func(t *testing.T) {
		alice, bob := pairLines(t, d, "alice", "bob")
		var sent []byte
		var want []string
		for i := range late {
			sent = fmt.Appendf(sent, "late %d\n", i)
			want = append(want, fmt.Sprint("<alice> late ", i))
		}
		back, peer := resumeWhileHeld(t, d, alice.Conn, sent, alice.Key)
		if peer == "" {
			t.Fatal("resumed with no partner")
		}
		counted := readEviction(t, alice, func(l string) { t.Errorf("the old connection was told %q", l) })
		back.Send("back")
		var got []string
		for l := bob.Line(); l != "<alice> back"; l = bob.Line() {
			got = append(got, l)
		}
		checkLateCount(t, want, counted, got)
	})
	t.Run("json", func(t *testing.T) {
		// Both partners are pages, so that seals are relayed too: every
		// other message is one.
		alice, bob := d.DialWS(t).Login("carol"), d.DialWS(t).Login("dave")
		bob.Connect(alice.Token)
		alice.Expect("paired")
		bob.Expect("paired")
		var sent bytes.Buffer
		var want []string
		for i := range late {
			frame := fmt.Sprintf(`{"type":"say","text":"late %d","id":%d}`, i, i+1)
			want = append(want, fmt.Sprint("message late ", i))
			if i%2 == 1 {
				data := fmt.Sprintf("AQQAAAAAAAAAAfo_eEKPDsp2p1I9Gsi%04dA", i) // base64url of 27 bytes
				frame = fmt.Sprintf(`{"type":"seal","data":"%s","id":%d}`, data, i+1)
				want[i] = "sealed " + data
			}
			if err := wsutil.WriteClientText(&sent, []byte(frame)); err != nil {
				t.Fatal(err)
			}
		}
		back, peer := resumeWhileHeld(t, d, alice.Conn, sent.Bytes(), alice.Key)
		if peer == "" {
			t.Fatal("resumed with no partner")
		}
		counted := -1
		code, _ := alice.ReadUntilClose(func(ev map[string]any) {
			switch {
			case ev["type"] == "notice" && ev["text"] == "your session was resumed on another connection; this one is closed":
				n, _ := ev["undelivered"].(float64)
				counted = int(n)
			case ev["type"] != "bye":
				t.Errorf("the old connection was told %v", ev)
			}
		})
		if code != ws.StatusNormalClosure {
			t.Errorf("closed with %d", code)
		}
		back.Send("back")
		var got []string
		for {
			ev := bob.Next()
			if ev["type"] == "message" && ev["text"] == "back" {
				break
			}
			got = append(got, fmt.Sprint(ev["type"], " ", ev["text"], ev["data"]))
		}
		checkLateCount(t, want, counted, got)
	})
}

// evictionNotice is what a line connection whose session was resumed
// elsewhere is told, with the count of its messages not delivered.
var evictionNotice = regexp.MustCompile(`^\* your session was resumed on another connection; this one is closed(?:; (\d+) of your messages (?:was|were) not delivered)?$`)

// readEviction reads lc until it is closed, and returns the count its
// eviction's notice told (-1: no notice). The lines before the notice go
// to before; after it, only bye may come.
func readEviction(t *testing.T, lc *enginetest.LineClient, before func(l string)) (undelivered int) {
	t.Helper()
	undelivered = -1
	for {
		l, err := lc.TryLine(enginetest.Timeout)
		if err != nil {
			return undelivered
		}
		switch m := evictionNotice.FindStringSubmatch(l); {
		case m != nil:
			undelivered, _ = strconv.Atoi(m[1])
		case undelivered < 0:
			before(l)
		case l != "* bye":
			t.Errorf("after the notice: %q", l)
		}
	}
}

// resumeWhileHeld resumes key on a new line connection to d while d's
// loops are held, with the bytes of the resume in the kernel before
// sent, which old sends then, and returns the new connection once its
// resume is answered, and the partner it was resumed with ("": none).
func resumeWhileHeld(t *testing.T, d *enginetest.Daemon, old net.Conn, sent []byte, key string) (*enginetest.LineClient, string) {
	t.Helper()
	back := d.DialLine(t)
	backFD, oldFD := d.ServerFD(back.Conn.LocalAddr()), d.ServerFD(old.LocalAddr())
	if backFD < 0 || oldFD < 0 {
		t.Fatal("a connection is not on the server")
	}
	release := d.HoldLoops()
	defer release()
	resume := []byte("/resume " + key + "\n")
	for _, w := range []struct {
		c  net.Conn
		fd int
		b  []byte
	}{{back.Conn, backFD, resume}, {old, oldFD, sent}} {
		if _, err := w.c.Write(w.b); err != nil {
			t.Fatal(err)
		}
		waitUnread(t, w.fd, len(w.b))
	}
	release()
	var peer string
	peer, _, _, back.Key = enginetest.ReadResumed(t, back.Line)
	return back, peer
}

// waitUnread waits until the kernel holds n bytes unread on the
// server's descriptor fd.
func waitUnread(t *testing.T, fd, n int) {
	t.Helper()
	for deadline := time.Now().Add(enginetest.Timeout); ; time.Sleep(time.Millisecond) {
		got, err := engine.Unread(fd)
		if err != nil {
			t.Fatal(err)
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server's socket holds %d bytes of the %d sent", got, n)
		}
	}
}

// checkLateCount checks the count the old connection was told of the
// messages it sent late, want as the partner would see each, against
// what the partner got of them: every one delivered or counted, none
// both.
func checkLateCount(t *testing.T, want []string, counted int, got []string) {
	t.Helper()
	if counted < 0 {
		t.Fatal("the old connection was not told its session was resumed elsewhere")
	}
	if len(got) > len(want) || !slices.Equal(got, want[:len(got)]) {
		t.Fatalf("the partner got %q of %q", got, want)
	}
	if len(got)+counted != len(want) {
		t.Fatalf("of %d messages sent late the partner got %d and %d were counted not delivered", len(want), len(got), counted)
	}
	if counted != len(want) {
		// The loop read the resume before the messages, which all came
		// after it: were none counted, the window was not made.
		t.Fatalf("%d of the %d messages sent after the resume were counted not delivered", counted, len(want))
	}
}

// TestTakeoverCountsARunOfRefusalsGoingOn: alice, paired with no one,
// goes on saying things, refused in a run whose count is told once a
// second, when a resume elsewhere takes her session; her old connection
// sends more before the eviction that closes it has run. Each say after
// the first refused is counted once before the connection closes:
// those of the run, the late ones among them, by the run's count, which
// the goodbye tells first, and any late one that did not join the run
// (it had ended: a quiet second) by the eviction's notice.
func TestTakeoverCountsARunOfRefusalsGoingOn(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, func(o *engine.Options) { o.Loops = 1 })
	alice := d.DialLine(t).Login("alice")
	counted := refuseLines(t, alice)
	const late = 7
	var sent []byte
	for i := range late {
		sent = fmt.Appendf(sent, "late %d\n", i)
	}
	if _, peer := resumeWhileHeld(t, d, alice.Conn, sent, alice.Key); peer != "" {
		t.Fatalf("resumed with %s", peer)
	}
	undelivered := readEviction(t, alice, func(l string) { counted += lineCount(t, l) })
	if undelivered < 0 {
		t.Fatal("the old connection was not told its session was resumed elsewhere")
	}
	t.Logf("%d counted in the run, %d as not delivered", counted, undelivered)
	if want := runSays - 1 + late; counted+undelivered != want {
		t.Fatalf("of %d says refused after the first, %d were counted in the run and %d as not delivered", want, counted, undelivered)
	}
}
