//go:build linux

package engine_test

import (
	"bytes"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

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
	d := enginetest.Start(t, func(o *engine.Options) {
		o.Limits.OutboundHigh = 64 << 20
		o.Limits.OutboundMax = 128 << 20
		o.Limits.SlowTimeout = time.Minute
		o.Resume.Buffer = 32 << 20
		o.Resume.ReplayRecent = recent
	})
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
