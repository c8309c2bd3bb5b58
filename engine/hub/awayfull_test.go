package hub

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"duet/proto"
)

// awayFull pairs alice and bob on a hub that keeps buffer bytes for a
// resume, sends alice away, and has bob fill what is kept for her with
// one-byte messages, as a line client piping short lines does. It
// returns bob's session and how many of his messages are waiting.
func awayFull(tb testing.TB, buffer int) (bob *Session, waiting int) {
	tb.Helper()
	h := New(Options{ResumeWindow: time.Minute, ResumeBuffer: buffer})
	alice, _ := h.Login([]byte("alice"), discard{})
	bob, _ = h.Login([]byte("bob"), discard{})
	if err := bob.Connect([]byte(alice.Token().String())); err != nil {
		tb.Fatal(err)
	}
	alice.Detach(proto.ReasonDisconnected, 0)
	run := make([][]byte, 64)
	for i := range run {
		run[i] = []byte("x")
	}
	for {
		_, n, err := bob.SayAll(run, nil)
		waiting += n
		if err != nil {
			if err.Code != proto.ErrPeerAwayFull.Code {
				tb.Fatal(err)
			}
			return bob, waiting
		}
	}
}

// TestAwayFullRefusalIsCheap: a message refused because its partner is
// away with resume.buffer full costs what a not_paired one does, however
// much is kept: a sender piping short lines at such a partner once had
// each line count the whole history, and stalled its event loop, and
// every pair on it, for seconds.
func TestAwayFullRefusalIsCheap(t *testing.T) {
	const kept, refused = 50000, 100000
	bob, waiting := awayFull(t, kept*(1+entryCost))
	if waiting != kept {
		t.Fatalf("%d messages kept, want %d", waiting, kept)
	}
	want := "alice is away, and 50000 of your messages (49 KiB) are waiting for them; this one was not sent"
	// Far more than the refusals take (well under a second, under the
	// race detector too), and far less than counting the history for
	// each took: minutes.
	const limit = 10 * time.Second
	start := time.Now()
	text := [][]byte{[]byte("x")}
	for i := range refused {
		_, n, err := bob.SayAll(text, nil)
		if n != 0 || err == nil || err.Text != want {
			t.Fatalf("refusal %d: relayed %d, %v; want %q", i, n, err, want)
		}
		if i%1000 == 999 && time.Since(start) > limit {
			t.Fatalf("%d refusals took %v: each costs the history's size", i+1, time.Since(start))
		}
	}
}

// TestAckWhileAwayKeepsWhatCameSince: an acknowledgement that reaches a
// session once it is away (from the connection that carried it) covers
// at most what that connection was handed: the messages kept for its
// resume since it went stay, whatever number it names.
func TestAckWhileAwayKeepsWhatCameSince(t *testing.T) {
	h := New(resumeOpts())
	alice, bob, key := resumablePair(t, h)
	sayEach(t, bob.Session, "before")
	alice.Detach(proto.ReasonDisconnected, 0)
	sayEach(t, bob.Session, "away 1", "away 2")
	alice.Ack(^uint64(0))
	box := &recorder{}
	if _, err := h.Resume([]byte(key), 0, false, box); err != nil {
		t.Fatal(err)
	}
	_, replayed, _ := replay(t, box.take())
	if got := strings.Join(texts2(replayed), ","); got != "away 1,away 2" {
		t.Fatalf("replayed %q, want the messages that came while away", got)
	}
}

// TestAwayFullCountsAfterImport: what a refusal says is waiting counts
// the messages kept while the session was away before it was moved, and
// those queued for it while it was parked, as well as those kept since.
func TestAwayFullCountsAfterImport(t *testing.T) {
	opts := resumeOpts()
	opts.ResumeBuffer = 5 * (entryCost + 6)
	h, _, _ := clusterHub(t, opts)
	alice, bob, _ := resumablePair(t, h)
	sayEach(t, bob.Session, "before")
	alice.Detach(proto.ReasonDisconnected, 0)
	sayEach(t, bob.Session, "away 1")
	p := export(t, h, "alice")
	if err := h.Import(p, []ParkedMessage{{From: "bob", Text: []byte("queued")}}); err != nil {
		t.Fatal(err)
	}
	sayEach(t, bob.Session, "more 1", "more 2")
	err := say(bob.Session, []byte("more 3"))
	if want := "alice is away, and 4 of your messages (24 bytes) are waiting for them; this one was not sent"; err == nil || err.Text != want {
		t.Fatalf("bob was told %v, want %q", err, want)
	}
}

// BenchmarkSayToAwayFull times a one-byte message refused with
// peer_away_full, its partner's resume.buffer full of one-byte
// messages from its sender, for buffers from a quarter of the default
// to sixteen times it: what a refusal costs must not grow with them.
func BenchmarkSayToAwayFull(b *testing.B) {
	for _, buffer := range []int{64 << 10, DefaultResumeBuffer, 1 << 20, 4 << 20} {
		b.Run(fmt.Sprintf("buffer=%dKiB", buffer>>10), func(b *testing.B) {
			bob, _ := awayFull(b, buffer)
			text := [][]byte{[]byte("x")}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, _, err := bob.SayAll(text, nil); err == nil {
					b.Fatal("relayed")
				}
			}
		})
	}
}

// TestAwayFullRefusalsHoldNothingPerSender: alice is away, her
// resume.buffer full of bob's messages, and bob gone; one after another,
// thousands of users connect to her token under new names, send a line
// and leave, as anyone who knows an away session's token can. Each is
// refused, told that nothing of theirs is waiting, and leaves nothing
// behind in alice's session: before, each left a count of its own,
// about 220 bytes held (and looked through by every refusal after) for
// as long as alice stayed away, without bound.
func TestAwayFullRefusalsHoldNothingPerSender(t *testing.T) {
	const senders = 5000
	h := New(Options{ResumeWindow: time.Minute, ResumeBuffer: 64 * (1 + entryCost)})
	alice, _ := h.Login([]byte("alice"), discard{})
	bob, _ := h.Login([]byte("bob"), discard{})
	if err := bob.Connect([]byte(alice.Token().String())); err != nil {
		t.Fatal(err)
	}
	alice.Detach(proto.ReasonDisconnected, 0)
	for {
		if _, _, err := bob.SayAll([][]byte{[]byte("x")}, nil); err != nil {
			break
		}
	}
	bob.Close(proto.ReasonLeft, 0)
	want := "alice is away, and the messages kept for them from before they went fill all the room there is; this one was not sent"
	for i := range senders {
		s, err := h.Login(fmt.Appendf(nil, "sender%d", i), discard{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Connect([]byte(alice.Token().String())); err != nil {
			t.Fatalf("sender %d: %v", i, err)
		}
		_, n, err := s.SayAll([][]byte{[]byte("hello")}, nil)
		if n != 0 || err == nil || err.Code != proto.ErrPeerAwayFull.Code || err.Text != want {
			t.Fatalf("sender %d: %d kept, %v", i, n, err)
		}
		s.Close(proto.ReasonLeft, 0)
	}
	alice.hmu.Lock()
	kept := len(alice.away.kept)
	alice.hmu.Unlock()
	if kept != 1 {
		t.Fatalf("alice's session holds counts for %d senders, want bob's alone", kept)
	}
}
