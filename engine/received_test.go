package engine_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"duet/engine"
	"duet/engine/enginetest"
)

// What a session keeps for a resume, by who acknowledges
// (docs/RESUME.md): a client that does not acknowledge messages itself
// has them kept only until its TCP acknowledges them; one that does has
// them kept until it says so.

// keptBurst has bob send alice n messages of size bytes in one write,
// and returns the count they make against resume.buffer (hub.entryCost
// is 64 a message).
func keptBurst(t *testing.T, bob *enginetest.LineClient, n, size int) int64 {
	t.Helper()
	var lines strings.Builder
	for i := range n {
		text := fmt.Sprintf("m%d ", i)
		lines.WriteString(text + strings.Repeat("x", size-len(text)) + "\n")
	}
	if _, err := bob.Conn.Write([]byte(lines.String())); err != nil {
		t.Fatal(err)
	}
	return int64(n) * int64(size+64)
}

// readBurst has alice read the n messages of one of bob's bursts
// (keptBurst), in order.
func readBurst(alice *enginetest.LineClient, n int) {
	for i := range n {
		alice.Expect(fmt.Sprintf(`^<bob> m%d x+$`, i))
	}
}

// quickSweep gives resume a 4-second window, so that the hub looks at
// what it keeps every second.
func quickSweep(o *engine.Options) { o.Resume.Window = 4 * time.Second }

// TestLineKeepsOnlyWhatTCPHasNotAcknowledged: alice reads everything bob
// sends, and answers each burst, as people in a conversation do (her
// TCP's acknowledgement goes with her answer); what the hub keeps for
// her stays a few KiB while 60 KB go by, and once the conversation is
// quiet, nothing. A drop then replays nothing she had.
func TestLineKeepsOnlyWhatTCPHasNotAcknowledged(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, quickSweep)
	alice, bob := pairLines(t, d, "alice", "bob")

	const rounds, n, size = 10, 30, 200
	var total int64
	for range rounds {
		total += keptBurst(t, bob, n, size)
		readBurst(alice, n)
		alice.Send("ok")
		bob.Expect(`^<alice> ok$`)
	}
	if kept := d.Hub.Stats().HistoryBytes; kept > 16<<10 {
		t.Fatalf("%d bytes kept after alice read %d messages (%d if all were kept), want at most 16 KiB", kept, rounds*n, total)
	}
	waitFor(t, "the quiet conversation's history to empty", func() bool { return d.Hub.Stats().HistoryBytes == 0 })

	enginetest.Reset(t, alice.Conn)
	bob.Expect(`^\* alice lost the connection; `)
	_, peer, replayed, missed := enginetest.ResumeLine(t, d, alice.Key)
	if peer != "bob" || len(replayed) != 0 || missed != 0 {
		t.Fatalf("resumed with %q, replayed %q, %d missed; want bob and nothing, since alice's TCP acknowledged all", peer, replayed, missed)
	}
}

// TestLineReaderThatNeverSendsKeepsLittle: alice reads all bob sends and
// never answers, so no read of hers tells the server what her TCP
// acknowledged. The hub then looks as it keeps messages, once her
// history holds 16 KiB of texts, and trims it: bob's 100 bursts go by
// and what is kept stays within a few strides, where it would keep them
// all (about 105 KB against resume.buffer) if it never looked. The
// sweep, every 30 s with the default window, plays no part.
func TestLineReaderThatNeverSendsKeepsLittle(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, nil)
	alice, bob := pairLines(t, d, "alice", "bob")

	const bursts, n, size = 100, 4, 200
	var total int64
	for range bursts {
		total += keptBurst(t, bob, n, size)
		readBurst(alice, n)
	}
	if kept := d.Hub.Stats().HistoryBytes; kept > 48<<10 {
		t.Fatalf("%d bytes kept after alice read %d messages and sent nothing (%d if all were kept), want at most 48 KiB", kept, bursts*n, total)
	}
}

// TestLineReplaysWhatTCPHasNotAcknowledged: alice stops reading; bob goes
// on until her socket is full and messages wait unacknowledged in the
// server's. Her connection then drops. None of what her TCP never
// acknowledged is forgotten: the resume replays every message she did
// not read, but for those her kernel took and lost with the socket,
// which are all older than the first one replayed.
func TestLineReplaysWhatTCPHasNotAcknowledged(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, nil)
	alice, bob := pairLines(t, d, "alice", "bob")

	// 800 messages of 200 bytes: 211 KB against resume.buffer if all are
	// kept, within its 256 KiB, so none is dropped for room.
	const n, size = 800, 200
	keptBurst(t, bob, n, size)
	waitFor(t, "messages to wait in the server's socket", func() bool { return d.Hub.Stats().HistoryBytes > 0 })
	time.Sleep(200 * time.Millisecond) // the burst is read and relayed by now
	enginetest.Reset(t, alice.Conn)
	bob.Expect(`^\* alice lost the connection; `)
	_, _, replayed, missed := enginetest.ResumeLine(t, d, alice.Key)
	if missed != 0 || len(replayed) == 0 {
		t.Fatalf("replayed %d, missed %d; want some replayed and none missed", len(replayed), missed)
	}
	// The replay is the newest messages, in order, up to the last.
	first := n - len(replayed)
	for i, l := range replayed {
		if want := fmt.Sprintf("<bob> m%d ", first+i); !strings.HasPrefix(l, want) {
			t.Fatalf("replayed[%d] = %.30q, want %q...", i, l, want)
		}
	}
	t.Logf("%d of %d messages replayed", len(replayed), n)
}

// TestJSONClientThatAcknowledgesKeepsAll: a JSON client that has said it
// acknowledges (the page does at login) has everything kept until it
// acknowledges it, whatever its TCP received; one that never does is
// kept for as a line client is.
func TestJSONClientThatAcknowledgesKeepsAll(t *testing.T) {
	t.Parallel()
	for _, acks := range []bool{true, false} {
		t.Run(fmt.Sprintf("acks=%v", acks), func(t *testing.T) {
			t.Parallel()
			d := enginetest.Start(t, quickSweep)
			alice := d.DialWS(t).Login("alice")
			if acks {
				alice.Send(map[string]any{"type": "ack", "last": 0})
			}
			bob := d.DialLine(t).Login("bob")
			bob.Send("/connect " + alice.Token)
			bob.Expect(`^\* you are connected with alice$`)
			alice.Expect("paired")
			const n, size = 300, 200
			total := keptBurst(t, bob, n, size)
			for i := range n {
				if text, seq := enginetest.WSMessage(t, alice); seq != uint64(i+1) || !strings.HasPrefix(text, fmt.Sprintf("m%d ", i)) {
					t.Fatalf("message %d: seq %d %.20q", i, seq, text)
				}
			}
			if !acks {
				waitFor(t, "what TCP acknowledged to be dropped", func() bool { return d.Hub.Stats().HistoryBytes == 0 })
				return
			}
			// Two sweeps go by: what alice has not acknowledged stays.
			time.Sleep(2500 * time.Millisecond)
			if kept := d.Hub.Stats().HistoryBytes; kept != total {
				t.Fatalf("%d bytes kept for a client that acknowledges, want all %d", kept, total)
			}
			alice.Send(map[string]any{"type": "ack", "last": n})
			waitFor(t, "the ack to empty the history", func() bool { return d.Hub.Stats().HistoryBytes == 0 })
		})
	}
}
