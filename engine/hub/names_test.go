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

// TestKeyIsTheFoldedName: keyIs answers as comparing Key would, for
// names with and without capitals, and allocates nothing doing it.
func TestKeyIsTheFoldedName(t *testing.T) {
	for _, c := range []struct {
		name, key string
		want      bool
	}{
		{"alice", "alice", true},
		{"Alice.Smith", "alice.smith", true},
		{"ALICE_9-x", "alice_9-x", true},
		{"Alice", "Alice", false}, // a key is folded
		{"alice", "alicf", false},
		{"alice", "alic", false},
		{"alice", "alice2", false},
		{"a@", "a`", false}, // '@' is not 'A', nor '`' 'a'
	} {
		s := &Session{name: c.name}
		if got := s.keyIs(c.key); got != c.want || got != (s.Key() == c.key) {
			t.Errorf("%q keyIs %q: %v, want %v", c.name, c.key, got, c.want)
		}
	}
	s := &Session{name: "Alice.Smith"}
	if n := testing.AllocsPerRun(100, func() { s.keyIs("alice.smith") }); n != 0 {
		t.Fatalf("keyIs allocates %v times", n)
	}
}

// TestNameFoldedOncePerLoginAndLogout: a session keeps its name, not its
// folded key, so every fold of a name with capitals makes a string. A
// login folds it once, and a logout once: a name with capitals costs
// two allocations more than one without, whichever way the user logs
// in.
func TestNameFoldedOncePerLoginAndLogout(t *testing.T) {
	allocs := func(name string, login func(*Hub, []byte) (*Session, *proto.Error)) float64 {
		h := New(Options{})
		b := []byte(name)
		return testing.AllocsPerRun(100, func() {
			s, err := login(h, b)
			if err != nil {
				t.Fatal(err)
			}
			s.Close(proto.ReasonLeft, 0)
		})
	}
	for _, c := range []struct {
		how   string
		login func(*Hub, []byte) (*Session, *proto.Error)
	}{
		{"Login", func(h *Hub, b []byte) (*Session, *proto.Error) { return h.Login(b, &recorder{}) }},
		{"LoginReplacingAway", func(h *Hub, b []byte) (*Session, *proto.Error) {
			return h.LoginReplacingAway(b, &recorder{})
		}},
	} {
		lower, capitals := allocs("alice", c.login), allocs("Alice", c.login)
		if capitals-lower != 2 {
			t.Errorf("%s: %v allocations with capitals, %v without: want 2 more", c.how, capitals, lower)
		}
	}
}
