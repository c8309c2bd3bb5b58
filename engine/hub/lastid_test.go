package hub

import (
	"testing"

	"duet/proto"
)

// sayIDs relays texts as one run with the ids the client gave them, and
// returns how many were relayed and the error for the next.
func sayIDs(s *Session, ids []uint64, texts ...string) (int, *proto.Error) {
	b := make([][]byte, len(texts))
	for i, t := range texts {
		b[i] = []byte(t)
	}
	_, n, err := s.SayAll(b, ids)
	return n, err
}

// resumedOf resumes key with last 0 as a page would, and returns the
// answer's resumed event.
func resumedOf(t *testing.T, h *Hub, key string) (Resumed, proto.Event) {
	t.Helper()
	box := &recorder{}
	res, err := h.Resume([]byte(key), 0, true, box)
	if err != nil {
		t.Fatal(err)
	}
	ev, _, _ := replay(t, box.take())
	return res, ev
}

// TestResumeSaysTheLastIDRelayed: a page that numbers its messages and
// loses its connection is told, as it resumes, the id of the last of
// them that reached the server, so that it can tell its user which of
// those it sent into the dying connection were lost. A message the hub
// refused, or one without an id, does not move it.
func TestResumeSaysTheLastIDRelayed(t *testing.T) {
	h, _ := newClockedHub(resumeOpts())
	alice, _, key := resumablePair(t, h)

	if n, err := sayIDs(alice.Session, []uint64{1, 2}, "one", "two"); n != 2 || err != nil {
		t.Fatalf("relayed %d, %v", n, err)
	}
	// 4 is refused (empty): the run stops there, and 3 is the last.
	if n, err := sayIDs(alice.Session, []uint64{3, 4, 5}, "three", "", "five"); n != 1 || err != proto.ErrEmptyMessage {
		t.Fatalf("relayed %d, %v", n, err)
	}
	// A message without an id says nothing of those with one.
	if n, err := sayIDs(alice.Session, nil, "plain"); n != 1 || err != nil {
		t.Fatalf("relayed %d, %v", n, err)
	}
	alice.Detach(proto.ReasonDisconnected, 0)
	res, ev := resumedOf(t, h, key)
	if ev.ID != 3 {
		t.Fatalf("resumed says the last id relayed is %d, want 3", ev.ID)
	}

	// It goes on with the session, across resumes.
	if n, err := sayIDs(res.Session, []uint64{6, 0}, "six", "no id"); n != 2 || err != nil {
		t.Fatalf("relayed %d, %v", n, err)
	}
	res.Session.Detach(proto.ReasonDisconnected, 0)
	if _, ev := resumedOf(t, h, ev.ResumeKey); ev.ID != 6 {
		t.Fatalf("the second resume says %d, want 6", ev.ID)
	}
}

// TestResumeSaysTheLastIDOfAZombie: a resume that takes the session
// from a connection still open (the page gave up on it) names the last
// message relayed from that connection; what it sends afterwards acts
// for no one.
func TestResumeSaysTheLastIDOfAZombie(t *testing.T) {
	h, _ := newClockedHub(resumeOpts())
	alice, _, key := resumablePair(t, h)
	if n, err := sayIDs(alice.Session, []uint64{7}, "seven"); n != 1 || err != nil {
		t.Fatalf("relayed %d, %v", n, err)
	}
	_, ev := resumedOf(t, h, key)
	if ev.ID != 7 {
		t.Fatalf("resumed says %d, want 7", ev.ID)
	}
	if n, err := sayIDs(alice.Session, []uint64{8}, "eight"); n != 0 || err != proto.ErrNotPaired {
		t.Fatalf("the old connection relayed %d, %v", n, err)
	}
}

// TestResumeSaysNoIDWhenNoneReachedTheServer: a session none of whose
// numbered messages was relayed is told 0, so that every message the
// page sent is known lost; so is one whose messages were refused.
func TestResumeSaysNoIDWhenNoneReachedTheServer(t *testing.T) {
	h, _ := newClockedHub(resumeOpts())
	alice, key := resumable(t, h, "alice")
	if n, err := sayIDs(alice.Session, []uint64{1}, "alone"); n != 0 || err != proto.ErrNotPaired {
		t.Fatalf("relayed %d, %v", n, err)
	}
	alice.Detach(proto.ReasonDisconnected, 0)
	if _, ev := resumedOf(t, h, key); ev.ID != 0 {
		t.Fatalf("resumed says %d, want 0", ev.ID)
	}
}

// TestResumeSaysTheLastIDOfASeal: a sealed frame is numbered by the
// page in the same count as its messages, and noted as one.
func TestResumeSaysTheLastIDOfASeal(t *testing.T) {
	h := New(resumeOpts())
	alice, _, key := speakerLogin(t, h, "alice", proto.ProtoJSON)
	bob, _, _ := speakerLogin(t, h, "bob", proto.ProtoJSON)
	if err := bob.Connect(tok(alice.Session)); err != nil {
		t.Fatal(err)
	}
	if n, err := sayIDs(alice.Session, []uint64{1}, "one"); n != 1 || err != nil {
		t.Fatalf("relayed %d, %v", n, err)
	}
	if _, err := alice.Seal([]byte("AQID"), 2); err != nil {
		t.Fatal(err)
	}
	// Refused: too long for any limit; the last stays 2.
	if _, err := alice.Seal(make([]byte, 1<<20), 3); err != proto.ErrTooLong {
		t.Fatalf("a seal far too long: %v", err)
	}
	alice.Detach(proto.ReasonDisconnected, 0)
	if _, ev := resumedOf(t, h, key); ev.ID != 2 {
		t.Fatalf("resumed says %d, want 2", ev.ID)
	}
}

// TestParkedKeepsTheLastID: a session that moves (to the next process,
// or another node) takes the id of its last message relayed with it,
// and its resume there says it.
func TestParkedKeepsTheLastID(t *testing.T) {
	h1, _ := newClockedHub(resumeOpts())
	alice, _, key := resumablePair(t, h1)
	if n, err := sayIDs(alice.Session, []uint64{41, 42}, "a", "b"); n != 2 || err != nil {
		t.Fatalf("relayed %d, %v", n, err)
	}
	alice.Detach(proto.ReasonDisconnected, 0)
	back := throughCodec(t, h1.Snapshot())
	h2, _ := newClockedHub(resumeOpts())
	if n := h2.Restore(back); n != 2 {
		t.Fatalf("restored %d", n)
	}
	if _, ev := resumedOf(t, h2, key); ev.ID != 42 {
		t.Fatalf("resumed after the move says %d, want 42", ev.ID)
	}
}

// TestImportWithoutALastIDSaysNothing: a session parked by a server
// that did not keep the id of its last message relayed (its Parked says
// 0) does not know it, and its resume says so (proto.IDUnknown) rather
// than 0, which a page would take for "none of yours arrived"; once it
// relays a numbered message it knows again, and a move then carries it.
func TestImportWithoutALastIDSaysNothing(t *testing.T) {
	h1, _ := newClockedHub(resumeOpts())
	alice, _, key := resumablePair(t, h1)
	alice.Detach(proto.ReasonDisconnected, 0)
	parked := h1.Snapshot()
	for _, p := range parked {
		if b := p.AppendBinary(nil); p.LastID != 0 || b[2] > 2 {
			t.Fatalf("a session that numbered nothing is parked as version %d, last id %d", b[2], p.LastID)
		}
	}
	h2, _ := newClockedHub(resumeOpts())
	if n := h2.Restore(parked); n != 2 {
		t.Fatalf("restored %d", n)
	}
	res, ev := resumedOf(t, h2, key)
	if ev.ID != proto.IDUnknown {
		t.Fatalf("resumed after a move from a server that did not say: last id %d", ev.ID)
	}
	if n, err := sayIDs(res.Session, []uint64{3}, "three"); n != 1 || err != nil {
		t.Fatalf("relayed %d, %v", n, err)
	}
	res.Session.Detach(proto.ReasonDisconnected, 0)
	h3, _ := newClockedHub(resumeOpts())
	if n := h3.Restore(h2.Snapshot()); n != 2 {
		t.Fatalf("restored %d", n)
	}
	if _, ev := resumedOf(t, h3, ev.ResumeKey); ev.ID != 3 {
		t.Fatalf("resumed after a second move: last id %d, want 3", ev.ID)
	}
}
