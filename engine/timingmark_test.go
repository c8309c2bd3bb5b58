package engine

import (
	"testing"
	"time"

	"duet/proto"
)

// at is a moment of a loop's clock, s seconds in.
func at(s float64) stamp { return stamp(time.Duration(s * float64(time.Second))) }

// TestMarkWatchCounts: a timing mark counts the messages written within
// markWindow before it was read, and those written earlier that the
// client's TCP had not acknowledged, up to its answer; nothing in a quiet
// conversation; and each message once.
func TestMarkWatchCounts(t *testing.T) {
	// acked == all: everything written was acknowledged.
	const all = int64(-1 << 62)
	mark := func(w *markWatch, now stamp, acked int64) {
		if acked == all {
			acked = w.written
		}
		w.marked(now, acked, true)
		w.wrote(now, 0, 3) // the answer leaves
	}
	for _, tt := range []struct {
		name  string
		run   func(w *markWatch) stamp // returns when to take the notice
		want  int
		vague bool
	}{
		{"quiet", func(w *markWatch) stamp {
			mark(w, at(10), all)
			return at(10)
		}, 0, false},
		{"messages long ago, acknowledged", func(w *markWatch) stamp {
			w.wrote(at(1), 5, 100)
			w.wrote(at(4), 2, 40)
			mark(w, at(10), all)
			return at(10)
		}, 0, false},
		{"messages just before", func(w *markWatch) stamp {
			w.wrote(at(1), 5, 100)
			w.wrote(at(9.5), 2, 40)
			w.wrote(at(9.9), 3, 60)
			mark(w, at(10), all)
			return at(10)
		}, 5, false},
		{"messages long ago, unacknowledged", func(w *markWatch) stamp {
			w.wrote(at(1), 5, 100)
			w.wrote(at(4), 2, 40)
			mark(w, at(10), 90) // the last of the first five is not acknowledged
			return at(10)
		}, 7, false},
		{"queued before the answer, the socket full", func(w *markWatch) stamp {
			w.wrote(at(1), 5, 100)
			w.marked(at(10), 100, true)
			if _, _, ok := w.take(at(10)); ok {
				t.Fatal("a notice before the answer left")
			}
			w.wrote(at(11), 4, 83) // the queued messages and the answer
			w.wrote(at(11.1), 2, 40)
			return at(11.1)
		}, 4, false},
		{"a second mark with nothing new", func(w *markWatch) stamp {
			w.wrote(at(1), 5, 100)
			mark(w, at(10), 50) // unacknowledged for long: counted here
			if n, _, ok := w.take(at(10)); !ok || n != 5 {
				t.Fatalf("first notice %d, %v; want 5", n, ok)
			}
			mark(w, at(13), 50)
			return at(13)
		}, 0, false},
		// The first timing mark begins the watch: what was written
		// before is not in the log.
		{"the first mark, all acknowledged", func(w *markWatch) stamp {
			mark(w, at(10), 0)
			return at(10)
		}, 0, false},
		{"the first mark, some unacknowledged", func(w *markWatch) stamp {
			mark(w, at(10), -700)
			return at(10)
		}, 0, true},
		{"the first mark, some unacknowledged, some queued", func(w *markWatch) stamp {
			w.marked(at(10), -700, true)
			w.wrote(at(10), 4, 83) // the queued messages and the answer
			return at(10)
		}, 4, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var w markWatch
			now := tt.run(&w)
			n, vague, ok := w.take(now)
			if ok != (tt.want > 0 || tt.vague) || n != tt.want || vague != tt.vague {
				t.Fatalf("notice %d (vague %v, %v), want %d (vague %v)", n, vague, ok, tt.want, tt.vague)
			}
			if _, _, again := w.take(now + at(5)); again {
				t.Fatal("a second notice for the same messages")
			}
		})
	}
}

// TestMarkWatchRate: notices come at most one a markEvery, and what the
// timing marks between hid is counted in the next; a timing mark soon
// after a notice, which it may have thrown away, counts the notice's
// messages again.
func TestMarkWatchRate(t *testing.T) {
	var w markWatch
	w.wrote(at(10), 3, 60)
	w.marked(at(10.1), w.written, true)
	w.wrote(at(10.1), 0, 3)
	if n, _, ok := w.take(at(10.1)); !ok || n != 3 {
		t.Fatalf("first notice %d (%v), want 3", n, ok)
	}
	w.wrote(at(10.1), 0, 80) // the notice

	// Ctrl-C again at once, with two more messages before it: the
	// notice may be gone too. Too soon for another.
	w.wrote(at(10.3), 2, 40)
	w.marked(at(10.4), w.written, true)
	w.wrote(at(10.4), 0, 3)
	if _, _, ok := w.take(at(10.4)); ok {
		t.Fatal("a second notice within markEvery")
	}
	if _, _, ok := w.take(at(10.9)); ok {
		t.Fatal("a second notice within markEvery")
	}
	if n, _, ok := w.take(at(11.2)); !ok || n != 5 {
		t.Fatalf("the notice a tick sends: %d (%v), want 5", n, ok)
	}

	// Much later, a Ctrl-C with nothing new: nothing.
	w.marked(at(20), w.written, true)
	w.wrote(at(20), 0, 3)
	if n, _, ok := w.take(at(20)); ok {
		t.Fatalf("a notice of %d in a quiet conversation", n)
	}
}

// TestMarkWatchVagueAgain: a timing mark soon after a notice without a
// count, which it may have thrown away, owes that notice again.
func TestMarkWatchVagueAgain(t *testing.T) {
	var w markWatch
	w.marked(at(10), -300, true)
	w.wrote(at(10), 0, 3)
	if n, vague, ok := w.take(at(10)); !ok || !vague || n != 0 {
		t.Fatalf("first notice %d (vague %v, %v), want vague", n, vague, ok)
	}
	w.wrote(at(10), 0, 80) // the notice
	w.marked(at(10.5), w.written, true)
	w.wrote(at(10.5), 0, 3)
	if n, vague, ok := w.take(at(11.5)); !ok || !vague || n != 0 {
		t.Fatalf("second notice %d (vague %v, %v), want vague", n, vague, ok)
	}
	w.wrote(at(11.5), 0, 80)
	w.marked(at(20), w.written, true)
	w.wrote(at(20), 0, 3)
	if n, vague, ok := w.take(at(20)); ok {
		t.Fatalf("a notice of %d (vague %v) in a quiet conversation", n, vague)
	}
}

// TestMarkWatchFlood: a flood of timing marks between messages splits
// the entries early; the watch keeps markEntries of them and counts
// within those.
func TestMarkWatchFlood(t *testing.T) {
	var w markWatch
	now := at(100)
	for range 3 * markEntries {
		w.wrote(now, 1, 20)
		w.marked(now, w.written, true)
		w.wrote(now, 0, 3)
		now += stamp(10 * time.Millisecond)
	}
	if w.n != markEntries {
		t.Fatalf("%d entries, want %d", w.n, markEntries)
	}
	n, _, ok := w.take(now)
	if !ok || n != 3*markEntries {
		t.Fatalf("notice %d (%v), want %d: each mark counted its message", n, ok, 3*markEntries)
	}
}

// TestMarkNotice: the notice's text, for one message and more, and
// without a count, with the partner named when there is one, and for
// timing marks telnet sent for letters alone, with no key pressed.
func TestMarkNotice(t *testing.T) {
	for _, tt := range []struct {
		n            int
		vague, byKey bool
		peer, want   string
	}{
		{3, false, true, "bob", "telnet may not have shown the last 3 messages from bob, which arrived as you pressed Ctrl-C"},
		{1, false, true, "bob", "telnet may not have shown the last message from bob, which arrived as you pressed Ctrl-C"},
		{12, false, true, "", "telnet may not have shown the last 12 messages, which arrived as you pressed Ctrl-C; you are not connected to anyone now"},
		{4, true, true, "bob", "telnet may not have shown messages from bob that arrived as you pressed Ctrl-C"},
		{0, true, true, "", "telnet may not have shown messages that arrived as you pressed Ctrl-C; you are not connected to anyone now"},
		{3, false, false, "bob", "telnet may not have shown the last 3 messages from bob, which arrived as telnet turned a letter you typed into a Ctrl-C"},
		{4, true, false, "bob", "telnet may not have shown messages from bob that arrived as telnet turned a letter you typed into a Ctrl-C"},
	} {
		if got := string(markNotice(tt.n, tt.vague, tt.peer, tt.byKey)); got != tt.want {
			t.Errorf("markNotice(%d, %v, %q, %v) = %q, want %q", tt.n, tt.vague, tt.peer, tt.byKey, got, tt.want)
		}
	}
}

// TestMarkWatchAnswers: the server's answers to the client's lines are
// owed again when a timing mark may have thrown them away (written
// within markWindow before it, unacknowledged, or queued before its
// answer), not when they are old and acknowledged; each is owed once,
// and one told again is counted again by a mark soon after; the watch
// counts them all, and keeps the last markAnswers to tell again.
func TestMarkWatchAnswers(t *testing.T) {
	refusal := &proto.Event{Kind: proto.EvError, Err: proto.ErrInvalidUTF8Telnet}
	notSent := &proto.Event{Kind: proto.EvNotice, Text: []byte("3 more lines were not sent")}
	retold := func(w *markWatch, now stamp) (int, []proto.Event) {
		t.Helper()
		if n, _, ok := w.take(now); !ok || n != 0 {
			t.Fatalf("take %d, %v: want answers alone", n, ok)
		}
		return w.retell()
	}

	t.Run("queued before the answer", func(t *testing.T) {
		var w markWatch
		w.answered(refusal)
		w.marked(at(10), 0, true)
		w.wrote(at(10), 0, 160) // the refusal and the answer
		n, kept := retold(&w, at(10))
		if n != 1 || len(kept) != 1 || kept[0].Err != proto.ErrInvalidUTF8Telnet {
			t.Fatalf("retold %d, %v", n, kept)
		}
		if _, _, again := w.take(at(20)); again {
			t.Fatal("told twice")
		}
	})
	t.Run("written just before, and long before", func(t *testing.T) {
		var w markWatch
		w.answered(notSent)
		w.wrote(at(1), 0, 30)
		w.answered(refusal)
		w.wrote(at(9.5), 0, 120)
		w.marked(at(10), w.written, true)
		w.wrote(at(10), 0, 3)
		n, kept := retold(&w, at(10))
		if n != 1 || len(kept) != 1 || kept[0].Kind != proto.EvError {
			t.Fatalf("retold %d, %v: want the recent refusal only", n, kept)
		}
	})
	t.Run("long before, unacknowledged", func(t *testing.T) {
		var w markWatch
		w.answered(notSent)
		w.wrote(at(1), 0, 30)
		w.marked(at(10), 10, true)
		w.wrote(at(10), 0, 3)
		n, kept := retold(&w, at(10))
		if n != 1 || len(kept) != 1 || string(kept[0].Text) != "3 more lines were not sent" {
			t.Fatalf("retold %d, %v", n, kept)
		}
	})
	t.Run("quiet", func(t *testing.T) {
		var w markWatch
		w.answered(refusal)
		w.wrote(at(1), 0, 120)
		w.marked(at(10), w.written, true)
		w.wrote(at(10), 0, 3)
		if n, _, ok := w.take(at(10)); ok {
			t.Fatalf("a notice of %d for an answer shown long ago", n)
		}
	})
	t.Run("told again, then a mark", func(t *testing.T) {
		var w markWatch
		w.answered(refusal)
		w.marked(at(10), 0, true)
		w.wrote(at(10), 0, 160)
		_, kept := retold(&w, at(10))
		w.answered(&kept[0]) // as tellMarks sends it
		w.wrote(at(10), 0, 200)
		w.marked(at(10.5), w.written, true)
		w.wrote(at(10.5), 0, 3)
		n, kept := retold(&w, at(11.5))
		if n != 1 || len(kept) != 1 {
			t.Fatalf("retold %d, %v: want the one told again, once", n, kept)
		}
	})
	t.Run("more than the watch keeps", func(t *testing.T) {
		var w markWatch
		for range markAnswers + 2 {
			w.answered(refusal)
		}
		w.marked(at(10), 0, true)
		w.wrote(at(10), 0, 800)
		// All are counted; the last markAnswers are told again.
		if n, kept := retold(&w, at(10)); n != markAnswers+2 || len(kept) != markAnswers {
			t.Fatalf("retold %d, kept %d: want %d, the last %d kept", n, len(kept), markAnswers+2, markAnswers)
		}
	})
}

// TestAnswersNotice: the text before answers told again.
func TestAnswersNotice(t *testing.T) {
	for _, tt := range []struct {
		owed, kept int
		byKey      bool
		want       string
	}{
		{1, 1, true, "telnet may not have shown the server's last answer to you, which arrived as you pressed Ctrl-C; here it is again:"},
		{3, 3, true, "telnet may not have shown the server's last 3 answers to you, which arrived as you pressed Ctrl-C; here they are again:"},
		{6, 4, true, "telnet may not have shown the server's last 6 answers to you, which arrived as you pressed Ctrl-C; here are the last 4 again:"},
		{2, 0, true, "telnet may not have shown the server's last 2 answers to you, which arrived as you pressed Ctrl-C"},
		{1, 1, false, "telnet may not have shown the server's last answer to you, which arrived as telnet turned a letter you typed into a Ctrl-C; here it is again:"},
	} {
		if got := string(answersNotice(tt.owed, tt.kept, tt.byKey)); got != tt.want {
			t.Errorf("answersNotice(%d, %d, %v) = %q, want %q", tt.owed, tt.kept, tt.byKey, got, tt.want)
		}
	}
}

// TestMarkWatchByKey: the notice speaks of a key press if any timing
// mark since the last came at one, else of a letter telnet changed.
func TestMarkWatchByKey(t *testing.T) {
	var w markWatch
	w.wrote(at(10), 2, 40)
	w.marked(at(10), w.written, false)
	w.wrote(at(10), 0, 3)
	if w.byKey {
		t.Fatal("a letter's timing mark taken for a key's")
	}
	w.marked(at(10.2), w.written, true)
	w.wrote(at(10.2), 0, 3)
	if !w.byKey {
		t.Fatal("a key's timing mark after a letter's not noted")
	}
	if _, _, ok := w.take(at(10.2)); !ok || w.byKey {
		t.Fatalf("after the notice (%v), byKey %v: want it cleared", ok, w.byKey)
	}
}
