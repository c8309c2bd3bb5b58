//go:build linux

package engine_test

import (
	"bufio"
	"bytes"
	"io"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"duet/engine"
	"duet/engine/enginetest"
	"duet/engine/hub"
)

// TestTimingMarkNoticeBehindAFullSocket: a telnet client that has
// stopped reading (a terminal stopped with Ctrl-S) has a backlog: the
// kernel holds all it may send the client, and the server queues the
// rest. Its Ctrl-C's answer waits behind the backlog, and so does what
// it costs the user. The notice comes with the answer as it leaves,
// before the answer to anything the client sends once it has read it,
// and counts at least the messages before the answer that the client
// had not read at its Ctrl-C, all of which telnet would throw away,
// when the client pressed Ctrl-C once before, as it is advised to, right
// after connecting. When that Ctrl-C is its first, the server has no log
// of what it wrote before, and the notice says so without a count.
func TestTimingMarkNoticeBehindAFullSocket(t *testing.T) {
	t.Run("after an early Ctrl-C", func(t *testing.T) { markBehindAFullSocket(t, true) })
	t.Run("the first Ctrl-C", func(t *testing.T) { markBehindAFullSocket(t, false) })
}

func markBehindAFullSocket(t *testing.T, early bool) {
	const count = 10_000
	h := hub.New(hub.Options{})
	d := enginetest.Start(t, func(o *engine.Options) {
		keepsForSlowReader(32<<20, 0)(o)
		o.Hub = h
		o.Limits.MessageRate = 1e6
		o.Limits.MessageBurst = 1e6
	})
	// alice speaks as telnet does, lines ending in CR LF. The kernel
	// holds little for her either side (its buffers, small), so what the
	// server has not written yet is most of what she has not read.
	alice := dialReceiveBuffer(t, d.TCP, 64<<10)
	r := bufio.NewReaderSize(alice, 64<<10)
	line := func() string {
		t.Helper()
		alice.SetReadDeadline(time.Now().Add(enginetest.Timeout))
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read (after %q): %v", l, err)
		}
		return strings.TrimSuffix(l, "\r\n")
	}
	send := func(s string) {
		t.Helper()
		alice.SetWriteDeadline(time.Now().Add(enginetest.Timeout))
		if _, err := alice.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	line() // the greeting
	if err := syscall.SetsockoptInt(d.ServerFD(alice.LocalAddr()), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 64<<10); err != nil {
		t.Fatal(err)
	}
	send("/login alice\r\n")
	token := regexp.MustCompile(`token is ([0-9a-f]{32})`).FindStringSubmatch(line())
	if token == nil {
		t.Fatal("no token")
	}
	// The answers to a Ctrl-C: DO BINARY (the first command), then WILL
	// TIMING-MARK.
	const answer = "\xff\xfb\x06"
	if early {
		send("\xff\xf4\xff\xfd\x06") // Ctrl-C, unpaired: nothing to tell
		var got []byte
		for !bytes.HasSuffix(got, []byte(answer)) {
			alice.SetReadDeadline(time.Now().Add(enginetest.Timeout))
			c, err := r.ReadByte()
			if err != nil {
				t.Fatalf("no answer to the early timing mark in %q: %v", got, err)
			}
			got = append(got, c)
		}
		if !bytes.HasSuffix(got, []byte("\xff\xfd\x00"+answer)) || bytes.Contains(got, []byte("telnet may not")) {
			t.Fatalf("the early Ctrl-C was answered %q", got)
		}
	}
	bob := d.DialLine(t).Login("bob")
	bob.Send("/connect " + token[1])
	bob.Expect(`^\* you are connected with alice$`)
	for !strings.HasPrefix(line(), "* bob is connected") {
	}

	// alice reads nothing more while bob sends.
	enginetest.SendNumbered(t, bob.Conn, count)
	for deadline := time.Now().Add(2 * enginetest.Timeout); h.Stats().Messages < count; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the messages did not all cross: %+v", h.Stats())
		}
	}
	// alice reads most of it, and the server hands gnet all it still
	// queued as gnet's buffer empties (flush): her Ctrl-C's answer then
	// waits alone, behind what gnet holds, more than the kernel holds for
	// her. It leaves as she reads the last of that, just before she
	// reads it.
	const unread = 4000 // 800 KiB
	shown := 0
	for shown < count-unread {
		if strings.HasPrefix(line(), "<bob> m ") {
			shown++
		}
	}
	time.Sleep(200 * time.Millisecond) // past a few backlog checks (10 ms)
	send("\xff\xf4\xff\xfd\x06")       // Ctrl-C

	// Everything before the answer telnet would have thrown away. The
	// answers come between lines, with nothing after them but what the
	// server sends of its own.
	var got []byte
	chunk := make([]byte, 64<<10)
	for !bytes.Contains(got, []byte(answer)) {
		alice.SetReadDeadline(time.Now().Add(enginetest.Timeout))
		n, err := r.Read(chunk)
		if err != nil {
			t.Fatalf("no answer to the timing mark in %d bytes: %v", len(got), err)
		}
		got = append(got, chunk[:n]...)
	}
	before, after, _ := bytes.Cut(got, []byte(answer))
	if hidden := bytes.Count(before, []byte("<bob> m ")); hidden != unread {
		t.Fatalf("alice read %d messages, and %d before the answer, of %d; want %d before it", shown, hidden, count, unread)
	}
	send("/who\r\n")
	r = bufio.NewReader(io.MultiReader(bytes.NewReader(after), alice))
	notice := regexp.MustCompile(`^\* telnet may not have shown the last (\d+) messages from bob, which arrived as you pressed Ctrl-C$`)
	const vague = "* telnet may not have shown messages from bob that arrived as you pressed Ctrl-C"
	told, toldVague := 0, false
	for l := line(); !strings.HasPrefix(l, "* you are alice, "); l = line() {
		if m := notice.FindStringSubmatch(l); m != nil {
			told, _ = strconv.Atoi(m[1])
		}
		toldVague = toldVague || l == vague
	}
	if !early {
		// Written before the watch began, unread: no count, but a word.
		if !toldVague || told != 0 {
			t.Fatalf("%d messages alice had not read were before the answer to her first Ctrl-C; told %v, counted %d; want %q alone", unread, toldVague, told, vague)
		}
		return
	}
	t.Logf("%d messages alice had not read were before the answer; the notice counted %d", unread, told)
	if told < unread || told > count {
		t.Fatalf("%d messages alice had not read were before the answer; the notice before the answer to /who counted %d, want from %d to %d", unread, told, unread, count)
	}
}
