package hub

import (
	"testing"

	"duet/proto"
)

// TestNamesToldApartByTheName: the index is keyed by a hash of the
// name. A session filed where another name's hash points is not found by
// that name, and that name cannot log in, nor take the session over (an
// account's login replacing its holder): it is refused as taken, and
// the session filed there keeps its place.
func TestNamesToldApartByTheName(t *testing.T) {
	h := New(Options{})
	alice, err := h.Login([]byte("Alice"), &recorder{})
	if err != nil {
		t.Fatal(err)
	}
	if h.names.lookup("alice") != alice || h.names.lookup("Alice") != nil || h.names.lookup("alicf") != nil {
		t.Fatal("alice is not found by her folded name alone")
	}
	// As if "bob" hashed where "alice" does.
	h.names.m[h.names.hash("bob")] = alice
	if h.names.lookup("bob") != nil || h.names.filed("bob") != alice {
		t.Fatal("a name filed under another's hash was taken for it")
	}
	if _, err := h.Login([]byte("Bob"), &recorder{}); err != proto.ErrNameTaken {
		t.Fatalf("login as bob: %v, want name_taken", err)
	}
	if _, _, err := h.LoginReplacing([]byte("bob"), &recorder{}); err != proto.ErrNameTaken {
		t.Fatalf("login replacing bob: %v, want name_taken", err)
	}
	h.names.unfile("bob", alice)
	if h.names.lookup("alice") != alice || alice.closed {
		t.Fatal("alice lost her place")
	}
	h.names.unfile("alice", &Session{name: "alice"})
	if h.names.lookup("alice") != alice {
		t.Fatal("unfiling another session took alice out")
	}
	bob, err := h.Login([]byte("Bob"), &recorder{})
	if err != nil {
		t.Fatal(err)
	}
	if h.names.lookup("bob") != bob || h.Stats().Users != 2 {
		t.Fatalf("bob once free: %+v", h.Stats())
	}
}
