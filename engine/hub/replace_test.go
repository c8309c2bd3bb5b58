package hub

import (
	"testing"

	"duet/proto"
)

func TestLoginReplacing(t *testing.T) {
	h := New(Options{})

	// Nobody online under the name: the same as Login.
	box := &recorder{}
	s, old, err := h.LoginReplacing([]byte("alice"), box)
	if err != nil || old != nil {
		t.Fatalf("first login: %v, replaced %v", err, old)
	}
	if ev := box.last(t); ev.Kind != proto.EvWelcome || ev.Name != "alice" || ev.Token != s.Token() {
		t.Fatalf("welcome: %+v", ev)
	}
	alice := user{s, box}
	bob := login(t, h, "bob")
	if err := bob.Connect([]byte(alice.Token().String())); err != nil {
		t.Fatal(err)
	}
	alice.box.take()
	bob.box.take()
	oldToken := alice.Token()

	// A second login, in another case, replaces the first.
	box2 := &recorder{}
	s2, old, err := h.LoginReplacing([]byte("ALICE"), box2)
	if err != nil {
		t.Fatal(err)
	}
	if old != Outbox(alice.box) {
		t.Fatalf("replaced outbox %v, want alice's", old)
	}
	if ev := box2.last(t); ev.Kind != proto.EvWelcome || ev.Name != "ALICE" || ev.Token == oldToken {
		t.Fatalf("welcome: %+v", ev)
	}
	// bob is told why his partner went, and is free.
	if ev := bob.box.last(t); ev.Kind != proto.EvPeerLeft || ev.Peer != "alice" || ev.Reason != proto.ReasonReplaced {
		t.Fatalf("bob: %+v", ev)
	}
	if bob.Peer() != "" {
		t.Fatal("bob still paired")
	}
	// The old session is closed: its token is gone, it cannot act, and
	// closing it again (its connection going away) changes nothing.
	if len(alice.box.take()) != 0 {
		t.Fatal("the hub told the replaced session something; that is the caller's to say")
	}
	carol := login(t, h, "carol")
	if err := carol.Connect([]byte(oldToken.String())); err != proto.ErrUnknownToken {
		t.Fatalf("old token: %v", err)
	}
	if err := alice.Connect([]byte(bob.Token().String())); err != proto.ErrNotLoggedIn {
		t.Fatalf("old session connect: %v", err)
	}
	alice.Close(proto.ReasonDisconnected, 0)
	if st := h.Stats(); st.Users != 3 {
		t.Fatalf("users %d, want 3 (ALICE, bob, carol)", st.Users)
	}
	// The new session works.
	if err := carol.Connect([]byte(s2.Token().String())); err != nil {
		t.Fatal(err)
	}
	// Login still refuses the name.
	if _, err := h.Login([]byte("alice"), &recorder{}); err != proto.ErrNameTaken {
		t.Fatalf("Login: %v", err)
	}
	if _, _, err := h.LoginReplacing([]byte("no way"), &recorder{}); err != proto.ErrBadName {
		t.Fatalf("bad name: %v", err)
	}
}

// queueRecorder is a recorder that is also a Queue, as a connection's
// outbox is: it records what it is told by Evict.
type queueRecorder struct {
	recorder
	evicted []Eviction
}

func (q *queueRecorder) DeliverMessages(ev *proto.Event, texts [][]byte) {
	for _, text := range texts {
		ev.Text = text
		q.Deliver(ev)
	}
}
func (q *queueRecorder) Backlog() int64   { return 0 }
func (q *queueRecorder) Wait(Waiter) bool { return false }
func (q *queueRecorder) Evict(why Eviction) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.evicted = append(q.evicted, why)
}

func (q *queueRecorder) evictions() []Eviction {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]Eviction(nil), q.evicted...)
}

// TestLoginReplacingEvictsTheOldQueue: the connection that carried the
// replaced session learns it through its Queue, told nothing else by the
// hub; what it says to its user is its own business.
func TestLoginReplacingEvictsTheOldQueue(t *testing.T) {
	h := New(Options{})
	first := &queueRecorder{}
	if _, _, err := h.LoginReplacing([]byte("alice"), first); err != nil {
		t.Fatal(err)
	}
	first.take()
	second := &queueRecorder{}
	if _, old, err := h.LoginReplacing([]byte("alice"), second); err != nil || old != Outbox(first) {
		t.Fatalf("second login: %v, replaced %v", err, old)
	}
	if got := first.evictions(); len(got) != 1 || got[0] != EvictReplaced {
		t.Fatalf("the replaced queue was told %v, want one EvictReplaced", got)
	}
	if evs := first.take(); len(evs) != 0 {
		t.Fatalf("the replaced queue was handed %+v", evs)
	}
	if got := second.evictions(); len(got) != 0 {
		t.Fatalf("the new queue was evicted: %v", got)
	}
}
