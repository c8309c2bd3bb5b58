package hub

import (
	"strings"
	"testing"

	"duet/proto"
)

// batchRecorder is a recorder that also takes runs of messages, and
// counts the runs it was handed.
type batchRecorder struct {
	recorder
	runs int
}

func (r *batchRecorder) DeliverMessages(ev *proto.Event, texts [][]byte) {
	r.runs++
	for _, text := range texts {
		ev.Text = text
		r.Deliver(ev)
	}
}

func texts(ss ...string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}

// messages returns the texts of the message events in evs, checking
// each names from as its sender.
func messages(t *testing.T, evs []proto.Event, from string) []string {
	t.Helper()
	var got []string
	for _, ev := range evs {
		if ev.Kind != proto.EvMessage {
			continue
		}
		if ev.From != from {
			t.Fatalf("message %q from %q, want from %q", ev.Text, ev.From, from)
		}
		got = append(got, string(ev.Text))
	}
	return got
}

func TestSayAllRelaysInOrderAsOneRun(t *testing.T) {
	for _, batching := range []bool{true, false} {
		h := New(Options{})
		alice := login(t, h, "alice")
		box := &batchRecorder{}
		var bob user
		if batching {
			s, err := h.Login([]byte("bob"), box)
			if err != nil {
				t.Fatal(err)
			}
			bob = user{s, &box.recorder}
		} else {
			bob = login(t, h, "bob")
		}
		if err := alice.Connect(tok(bob.Session)); err != nil {
			t.Fatal(err)
		}
		bob.box.take()

		to, relayed, err := alice.SayAll(texts("one", "two", "three"), nil)
		if err != nil || relayed != 3 || to == nil {
			t.Fatalf("SayAll = %v, %d, %v", to, relayed, err)
		}
		if got := strings.Join(messages(t, bob.box.take(), "alice"), ","); got != "one,two,three" {
			t.Fatalf("bob read %q", got)
		}
		if batching && box.runs != 1 {
			t.Fatalf("a batching outbox got %d runs, want 1", box.runs)
		}
		if st := h.Stats(); st.Messages != 3 || st.Bytes != 11 {
			t.Fatalf("hub stats after SayAll: %+v", st)
		}
	}
}

func TestSayAllStopsAtARefusedText(t *testing.T) {
	h := New(Options{MaxText: 4})
	alice, bob := login(t, h, "alice"), login(t, h, "bob")
	if err := alice.Connect(tok(bob.Session)); err != nil {
		t.Fatal(err)
	}
	bob.box.take()

	run := texts("ab", "cd", "too long", "ef")
	_, relayed, err := alice.SayAll(run, nil)
	if relayed != 2 || err != proto.ErrTooLong {
		t.Fatalf("SayAll = %d, %v; want 2, too_long", relayed, err)
	}
	_, relayed, err = alice.SayAll(run[3:], nil)
	if relayed != 1 || err != nil {
		t.Fatalf("SayAll of the rest = %d, %v", relayed, err)
	}
	if got := strings.Join(messages(t, bob.box.take(), "alice"), ","); got != "ab,cd,ef" {
		t.Fatalf("bob read %q", got)
	}

	_, relayed, err = alice.SayAll(texts("", "x"), nil)
	if relayed != 0 || err != proto.ErrEmptyMessage {
		t.Fatalf("SayAll with an empty first text = %d, %v", relayed, err)
	}
}

func TestSayAllUnpaired(t *testing.T) {
	h := New(Options{})
	alice, bob := login(t, h, "alice"), login(t, h, "bob")
	if _, relayed, err := alice.SayAll(texts("hi"), nil); relayed != 0 || err != proto.ErrNotPaired {
		t.Fatalf("SayAll before pairing = %d, %v", relayed, err)
	}
	if err := alice.Connect(tok(bob.Session)); err != nil {
		t.Fatal(err)
	}
	if err := bob.Leave(); err != nil {
		t.Fatal(err)
	}
	bob.box.take()
	if _, relayed, err := alice.SayAll(texts("hi"), nil); relayed != 0 || err != proto.ErrNotPaired {
		t.Fatalf("SayAll after the partner left = %d, %v", relayed, err)
	}
	if got := messages(t, bob.box.take(), "alice"); len(got) != 0 {
		t.Fatalf("bob read %q after leaving", got)
	}
}
