package hub

import (
	"fmt"
	"strconv"
	"sync"
	"testing"
	"unsafe"

	"duet/proto"
)

// recorder is an Outbox that keeps copies of what it was handed.
type recorder struct {
	mu     sync.Mutex
	events []proto.Event
}

func (r *recorder) Deliver(ev *proto.Event) {
	cp := *ev
	cp.Text = append([]byte(nil), ev.Text...)
	r.mu.Lock()
	r.events = append(r.events, cp)
	r.mu.Unlock()
}

func (r *recorder) take() []proto.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	evs := r.events
	r.events = nil
	return evs
}

func (r *recorder) last(t *testing.T) proto.Event {
	t.Helper()
	evs := r.take()
	if len(evs) == 0 {
		t.Fatalf("no event delivered")
	}
	return evs[len(evs)-1]
}

type user struct {
	*Session
	box *recorder
}

func login(t *testing.T, h *Hub, name string) user {
	t.Helper()
	box := &recorder{}
	s, err := h.Login([]byte(name), box)
	if err != nil {
		t.Fatalf("login %s: %v", name, err)
	}
	ev := box.last(t)
	if ev.Kind != proto.EvWelcome || ev.Name != name || ev.Token.IsZero() || ev.Token != s.Token() {
		t.Fatalf("login %s: got %+v", name, ev)
	}
	return user{s, box}
}

func tok(s *Session) []byte { return []byte(s.Token().String()) }

// say relays one text, as the engine relays a run of one message.
func say(s *Session, text []byte) *proto.Error {
	_, _, err := s.SayAll([][]byte{text}, nil)
	return err
}

func mustErr(t *testing.T, got, want *proto.Error) {
	t.Helper()
	if got != want && (got == nil || want == nil || *got != *want) {
		t.Fatalf("got error %v, want %v", got, want)
	}
}

// TestSeedStory walks the original app's whole story through the core.
func TestSeedStory(t *testing.T) {
	h := New(Options{})
	alice, bob, carol := login(t, h, "alice"), login(t, h, "bob"), login(t, h, "carol")

	// bob connects with alice's token: both told, each naming the other.
	if err := bob.Connect(tok(alice.Session)); err != nil {
		t.Fatal(err)
	}
	if ev := alice.box.last(t); ev.Kind != proto.EvPaired || ev.Peer != "bob" || ev.Initiator {
		t.Fatalf("alice got %+v", ev)
	}
	if ev := bob.box.last(t); ev.Kind != proto.EvPaired || ev.Peer != "alice" || !ev.Initiator {
		t.Fatalf("bob got %+v", ev)
	}

	// carol tries both tokens: Room is Full, and nobody else hears of it.
	mustErr(t, carol.Connect(tok(alice.Session)), proto.ErrRoomFull)
	mustErr(t, carol.Connect(tok(bob.Session)), proto.ErrRoomFull)

	// Messages go to the peer only, both ways, in order.
	for i := 0; i < 3; i++ {
		if err := say(alice.Session, []byte("a"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		if err := say(bob.Session, []byte("b"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		u    user
		from string
	}{{alice, "bob"}, {bob, "alice"}} {
		evs := c.u.box.take()
		if len(evs) != 3 {
			t.Fatalf("%s got %d events", c.u.Name(), len(evs))
		}
		for i, ev := range evs {
			want := c.from[:1] + strconv.Itoa(i)
			if ev.Kind != proto.EvMessage || ev.From != c.from || string(ev.Text) != want {
				t.Fatalf("%s event %d: %+v", c.u.Name(), i, ev)
			}
		}
	}
	if evs := carol.box.take(); len(evs) != 0 {
		t.Fatalf("carol overheard %+v", evs)
	}

	// alice leaves: she is told, bob is told why, both are free again.
	if err := alice.Leave(); err != nil {
		t.Fatal(err)
	}
	if ev := alice.box.last(t); ev.Kind != proto.EvLeft || ev.Peer != "bob" {
		t.Fatalf("alice got %+v", ev)
	}
	if ev := bob.box.last(t); ev.Kind != proto.EvPeerLeft || ev.Peer != "alice" || ev.Reason != proto.ReasonLeft {
		t.Fatalf("bob got %+v", ev)
	}
	if err := carol.Connect(tok(bob.Session)); err != nil {
		t.Fatalf("freed bob cannot be joined: %v", err)
	}
	if err := alice.Connect(tok(carol.Session)); err != proto.ErrRoomFull {
		t.Fatalf("got %v", err)
	}
	dave := login(t, h, "dave")
	if err := dave.Connect(tok(alice.Session)); err != nil {
		t.Fatalf("freed alice cannot be joined: %v", err)
	}
}

// TestPairingsEndedByReason: every pairing that ends is counted once,
// by the reason its partner who stayed was told.
func TestPairingsEndedByReason(t *testing.T) {
	h := New(Options{})
	pair := func(a, b string) (user, user) {
		x, y := login(t, h, a), login(t, h, b)
		if err := y.Connect(tok(x.Session)); err != nil {
			t.Fatal(err)
		}
		return x, y
	}
	alice, _ := pair("alice", "bob")
	if err := alice.Leave(); err != nil {
		t.Fatal(err)
	}
	carol, dave := pair("carol", "dave")
	carol.Close(proto.ReasonDisconnected, 0)
	dave.Close(proto.ReasonDisconnected, 0) // no longer paired: counts nothing
	erin, _ := pair("erin", "frank")
	erin.Close(proto.ReasonSlow, 0)

	want := map[proto.Reason]uint64{proto.ReasonLeft: 1, proto.ReasonDisconnected: 1, proto.ReasonSlow: 1}
	st := h.Stats()
	for i, r := range proto.Reasons {
		if st.PairingsEnded[i] != want[r] {
			t.Errorf("ended %s: %d, want %d", r, st.PairingsEnded[i], want[r])
		}
	}
	if st.Pairs != 0 || st.Pairings != 3 {
		t.Errorf("%d pairs, %d pairings", st.Pairs, st.Pairings)
	}
}

func TestErrors(t *testing.T) {
	h := New(Options{MaxText: 8})
	alice, bob := login(t, h, "alice"), login(t, h, "bob")

	cases := []struct {
		name string
		do   func() *proto.Error
		want *proto.Error
	}{
		{"name taken", func() *proto.Error { _, e := h.Login([]byte("alice"), &recorder{}); return e }, proto.ErrNameTaken},
		{"name taken any case", func() *proto.Error { _, e := h.Login([]byte("ALICE"), &recorder{}); return e }, proto.ErrNameTaken},
		{"bad name space", func() *proto.Error { _, e := h.Login([]byte("a b"), &recorder{}); return e }, proto.ErrBadName},
		{"bad name empty", func() *proto.Error { _, e := h.Login(nil, &recorder{}); return e }, proto.ErrBadName},
		{"bad name long", func() *proto.Error { _, e := h.Login(make([]byte, 33), &recorder{}); return e }, proto.ErrBadName},
		{"bad token short", func() *proto.Error { return alice.Connect([]byte("abc")) }, proto.ErrBadToken},
		{"bad token not hex", func() *proto.Error { return alice.Connect([]byte("zz345678901234567890123456789012")) }, proto.ErrBadToken},
		{"unknown token", func() *proto.Error { return alice.Connect([]byte(proto.NewToken().String())) }, proto.ErrUnknownToken},
		{"self connect", func() *proto.Error { return alice.Connect(tok(alice.Session)) }, proto.ErrSelfConnect},
		{"say unpaired", func() *proto.Error { return say(alice.Session, []byte("hi")) }, proto.ErrNotPaired},
		{"say empty", func() *proto.Error { return say(alice.Session, nil) }, proto.ErrEmptyMessage},
		{"say too long", func() *proto.Error { return say(alice.Session, []byte("123456789")) }, proto.ErrTooLong},
		{"leave unpaired", func() *proto.Error { return alice.Leave() }, proto.ErrNotPaired},
		{"pair", func() *proto.Error { return alice.Connect(tok(bob.Session)) }, nil},
		{"already paired", func() *proto.Error { return alice.Connect(tok(bob.Session)) }, proto.AlreadyPaired("bob")},
		{"already paired other", func() *proto.Error { return bob.Connect(tok(alice.Session)) }, proto.AlreadyPaired("alice")},
		{"say max length", func() *proto.Error { return say(alice.Session, []byte("12345678")) }, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { mustErr(t, c.do(), c.want) })
	}
}

func TestCloseFreesNameTokenAndTellsPeer(t *testing.T) {
	h := New(Options{})
	alice, bob := login(t, h, "alice"), login(t, h, "bob")
	oldToken := tok(alice.Session)
	if err := bob.Connect(oldToken); err != nil {
		t.Fatal(err)
	}
	bob.box.take()
	alice.Close(proto.ReasonSlow, 7)
	alice.Close(proto.ReasonDisconnected, 0) // idempotent: nothing more
	evs := bob.box.take()
	if len(evs) != 1 || evs[0].Kind != proto.EvPeerLeft || evs[0].Reason != proto.ReasonSlow || evs[0].Count != 7 || evs[0].Peer != "alice" {
		t.Fatalf("bob got %+v", evs)
	}
	if err := say(bob.Session, []byte("x")); err != proto.ErrNotPaired {
		t.Fatalf("say to a gone peer: %v", err)
	}
	mustErr(t, bob.Connect(oldToken), proto.ErrUnknownToken)
	again := login(t, h, "alice") // the name is free at once: no ghost
	if again.Token() == alice.Token() {
		t.Fatal("a new login reused the old token")
	}
	if st := h.Stats(); st.Users != 2 || st.Pairs != 0 || st.Pairings != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestNewTokenRetiresOld(t *testing.T) {
	h := New(Options{})
	alice, bob := login(t, h, "alice"), login(t, h, "bob")
	old := tok(alice.Session)
	if err := alice.NewToken(); err != nil {
		t.Fatal(err)
	}
	ev := alice.box.last(t)
	if ev.Kind != proto.EvWelcome || !ev.NewToken || ev.Token.String() == string(old) || ev.Token != alice.Token() {
		t.Fatalf("got %+v", ev)
	}
	mustErr(t, bob.Connect(old), proto.ErrUnknownToken)
	mustErr(t, bob.Connect(tok(alice.Session)), nil)
}

func TestWho(t *testing.T) {
	h := New(Options{})
	alice, bob := login(t, h, "alice"), login(t, h, "bob")
	alice.Who()
	if ev := alice.box.last(t); ev.Kind != proto.EvStatus || ev.Name != "alice" || ev.Peer != "" || ev.Token != alice.Token() {
		t.Fatalf("got %+v", ev)
	}
	mustErr(t, alice.Connect(tok(bob.Session)), nil)
	alice.box.take()
	alice.Who()
	if ev := alice.box.last(t); ev.Peer != "bob" {
		t.Fatalf("got %+v", ev)
	}
}

// TestConcurrentRace has many users race for few tokens while pairs talk,
// leave and reconnect, under -race. Invariants: a room never holds more
// than two; every message a session receives comes from its partner of
// the moment, in the order sent.
func TestConcurrentRace(t *testing.T) {
	h := New(Options{})
	const owners, racers, rounds = 4, 24, 200
	var own []user
	for i := 0; i < owners; i++ {
		own = append(own, login(t, h, fmt.Sprintf("owner%d", i)))
	}
	var wg sync.WaitGroup
	wins := make([]int, owners)
	var winsMu sync.Mutex
	for r := 0; r < racers; r++ {
		u := login(t, h, fmt.Sprintf("racer%d", r))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				target := own[(r+i)%owners]
				err := u.Connect(tok(target.Session))
				switch err {
				case nil:
					winsMu.Lock()
					wins[(r+i)%owners]++
					winsMu.Unlock()
					for j := 0; j < 5; j++ {
						if err := say(u.Session, []byte(u.Name()+":"+strconv.Itoa(j))); err != nil && err != proto.ErrNotPaired {
							t.Errorf("say: %v", err)
						}
					}
					if err := u.Leave(); err != nil && err != proto.ErrNotPaired {
						t.Errorf("leave: %v", err)
					}
				case proto.ErrRoomFull:
				default:
					if err.Code == proto.ErrAlreadyPaired.Code {
						break
					}
					t.Errorf("connect: %v", err)
				}
			}
		}()
	}
	wg.Wait()

	// Replay each owner's events: pairings and departures alternate, and
	// every message comes from the partner of the moment, in order.
	for i, o := range own {
		partner := ""
		next := 0
		pairs := 0
		for _, ev := range o.box.take() {
			switch ev.Kind {
			case proto.EvPaired:
				if partner != "" {
					t.Fatalf("owner%d paired with %s while with %s", i, ev.Peer, partner)
				}
				partner, next = ev.Peer, 0
				pairs++
			case proto.EvPeerLeft:
				if ev.Peer != partner {
					t.Fatalf("owner%d: %s left but partner was %s", i, ev.Peer, partner)
				}
				partner = ""
			case proto.EvMessage:
				want := partner + ":" + strconv.Itoa(next)
				if ev.From != partner || string(ev.Text) != want {
					t.Fatalf("owner%d got %q from %s, want %q", i, ev.Text, ev.From, want)
				}
				next++
			}
		}
		if pairs != wins[i] {
			t.Fatalf("owner%d told of %d pairings, racers won %d", i, pairs, wins[i])
		}
	}
	if st := h.Stats(); st.Pairs != 0 {
		t.Fatalf("rooms left open: %+v", st)
	}
}

// BenchmarkSay relays one message at a time between a pair.
func BenchmarkSay(b *testing.B) { benchmarkSay(b, New(Options{})) }

func benchmarkSay(b *testing.B, h *Hub) {
	a, _ := h.Login([]byte("alice"), discard{})
	bb, _ := h.Login([]byte("bob"), discard{})
	if err := a.Connect([]byte(bb.Token().String())); err != nil {
		b.Fatal(err)
	}
	run := [][]byte{[]byte("hello, this is a 64-byte message used for the relay benchmark.")}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := a.SayAll(run, nil); err != nil {
			b.Fatal(err)
		}
	}
}

type discard struct{}

func (discard) Deliver(*proto.Event) {}

// TestRoomFitsItsSizeClass: every pairing holds a room, and the
// allocator rounds 49 bytes up to 64: a closed room is told by its empty
// slots (close), not by a flag that would cost 16 bytes a pairing.
func TestRoomFitsItsSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(room{}); n > 48 {
		t.Fatalf("room is %d bytes, want at most 48", n)
	}
}

// TestClosedRoomHasNoPartners: once a pairing ends, its room finds no
// partner for either side, nor for a stranger.
func TestClosedRoomHasNoPartners(t *testing.T) {
	h := New(Options{})
	a, _ := h.Login([]byte("alice"), discard{})
	b, _ := h.Login([]byte("bob"), discard{})
	if err := a.Connect([]byte(b.Token().String())); err != nil {
		t.Fatal(err)
	}
	r := a.room.Load()
	if r.peer(a) != b || r.peer(b) != a || r.peer(nil) != nil {
		t.Fatal("an open room does not pair alice and bob alone")
	}
	a.Leave()
	if p, q := r.peer(a), r.peer(b); p != nil || q != nil {
		t.Fatalf("a closed room still finds partners: %v, %v", p, q)
	}
	if a.room.Load() != nil || b.room.Load() != nil {
		t.Fatal("a side still points at its closed room")
	}
}
