package hub

import (
	"bytes"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"duet/proto"
)

// holdBox is the Outbox a fakeDirectory hands out for a session parked
// between nodes: it holds the messages it is handed (Holder).
type holdBox struct {
	mu    sync.Mutex
	held  [][]byte
	taken bool
}

func (b *holdBox) Deliver(ev *proto.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ev.Kind == proto.EvMessage && !b.taken {
		b.held = append(b.held, append([]byte(nil), ev.Text...))
	}
}

func (b *holdBox) TakeHeld(yield func([]byte, bool)) int {
	b.mu.Lock()
	held := b.held
	b.held, b.taken = nil, true
	b.mu.Unlock()
	for _, t := range held {
		yield(t, false)
	}
	return 0
}

func TestParkedRoundTrip(t *testing.T) {
	p := &Parked{
		Name: "Alice", Key: "alice", Token: proto.NewToken(), Resume: ResumeHash{1, 2, 3}, Gen: 7,
		Seq: 40, AwayFor: 3 * time.Second, WindowLeft: time.Minute, AwaySeq: 38, AwayText: 12, Unsent: 2,
		History: []ParkedMessage{
			{Seq: 39, Age: 4 * time.Second, From: "bob", Text: []byte("hi\x00\xff")},
			{Seq: 40, Age: time.Second, From: "bob"},
		},
		Loss: []ParkedLoss{{Last: 30, Count: 5, MinAge: 9 * time.Second, MaxAge: 8 * time.Second}},
		Pair: &ParkedPair{ID: 1 << 50, PeerKey: "bob", PeerName: "Bob", PeerNode: "b#0011223344556677"},
	}
	roundTrip(t, p)
	left := *p
	left.Pair, left.Left = nil, &PeerLeft{Peer: "Carol", Reason: proto.ReasonLinkLost, Undelivered: 7}
	roundTrip(t, &left)
	numbered := *p
	numbered.LastID = 1 << 40
	roundTrip(t, &numbered)
	numbered.Pair, numbered.Left = nil, left.Left
	roundTrip(t, &numbered)
	owed := *p
	owed.Untold, owed.UntoldWindow, owed.UntoldBack = 588, 90*time.Second, true
	roundTrip(t, &owed)
	owed.LastID, owed.UntoldBack = 1<<40, false
	roundTrip(t, &owed)
	owed.Pair, owed.Left, owed.UntoldWindow = nil, left.Left, 0
	roundTrip(t, &owed)
	// The key its last resume used, with the news its answer told: of
	// nothing, and of pairings ended and the partner's absence; beside
	// an untold count or none.
	used := *p
	used.Used = &ParkedUsed{Resume: ResumeHash{9, 8, 7}}
	roundTrip(t, &used)
	used.Used = &ParkedUsed{Resume: ResumeHash{6}, Earlier: []PeerLeft{{Peer: "Dave", Reason: proto.ReasonLeft, Joined: true},
		{Peer: "Erin", Reason: proto.ReasonTimeout, Undelivered: 3}}, Left: &PeerLeft{Peer: "Bob", Reason: proto.ReasonReplaced, Undelivered: 1 << 20},
		Untold: 4, UntoldWindow: time.Minute, UntoldBack: true, PeerWasAway: true}
	roundTrip(t, &used)
	used.Untold, used.UntoldWindow, used.LastID = 2, time.Second, 5
	used.Used.Left, used.Used.Untold, used.Used.UntoldWindow, used.Used.UntoldBack = nil, 0, 0, false
	roundTrip(t, &used)
	bad := *p
	bad.Key = "bob"
	if _, err := ParseParked(bad.AppendBinary(nil)); err == nil {
		t.Fatal("a key that is not the folded name parsed")
	}
}

// roundTrip checks that p survives being written down and read back,
// and that no part of what is written parses alone.
func roundTrip(t *testing.T, p *Parked) {
	t.Helper()
	b := p.AppendBinary(nil)
	got, err := ParseParked(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, p) {
		t.Fatalf("got %+v\nwant %+v", got, p)
	}
	for cut := range len(b) {
		if _, err := ParseParked(b[:cut]); err == nil {
			t.Fatalf("cut at %d of %d parsed", cut, len(b))
		}
	}
	if _, err := ParseParked(append(b, 0)); err == nil {
		t.Fatal("a trailing byte parsed")
	}
}

// TestParkedVersions: a Parked that carries no peer_left is written as
// version 1, which a node not yet upgraded reads, so a rolling restart
// moves sessions both ways; only one that carries one needs version 2,
// and one that carries the id of its last message relayed version 3.
// Version 1 as it was written before version 2 existed still reads.
func TestParkedVersions(t *testing.T) {
	p := &Parked{Name: "Bo", Key: "bo", Seq: 3, AwaySeq: 2, History: []ParkedMessage{{Seq: 3, From: "x", Text: []byte("t")}}}
	if b := p.AppendBinary(nil); b[2] != 1 {
		t.Fatalf("without a peer_left, version %d", b[2])
	}
	p.Left = &PeerLeft{Peer: "x", Reason: proto.ReasonLeft}
	if b := p.AppendBinary(nil); b[2] != 2 {
		t.Fatalf("with a peer_left, version %d", b[2])
	}
	// Written by the version 1 codec.
	v1 := []byte("DP\x01\x02Bo\x02bo" + strings.Repeat("\x00", 16+32) + "\x00\x03\x00\x00\x00\x02\x00\x00\x01\x03\x00\x01x\x00\x01t\x00\x00")
	got, err := ParseParked(v1)
	if err != nil {
		t.Fatal(err)
	}
	p.Left = nil
	if !reflect.DeepEqual(got, p) {
		t.Fatalf("got %+v\nwant %+v", got, p)
	}
	// The id of the last message relayed needs version 3, with a
	// peer_left or without.
	p.LastID = 9
	if b := p.AppendBinary(nil); b[2] != 3 {
		t.Fatalf("with a last id, version %d", b[2])
	}
	p.Left = &PeerLeft{Peer: "x", Reason: proto.ReasonLeft}
	if b := p.AppendBinary(nil); b[2] != 3 {
		t.Fatalf("with a last id and a peer_left, version %d", b[2])
	}
	// What its partner went away without, untold, needs version 4,
	// with a last id or without, and a peer_left or without.
	p.Untold, p.UntoldWindow = 6, time.Minute
	if b := p.AppendBinary(nil); b[2] != 4 {
		t.Fatalf("with an untold count, version %d", b[2])
	}
	p.LastID, p.Left = 0, nil
	b4 := p.AppendBinary(nil)
	if b4[2] != 4 {
		t.Fatalf("with an untold count alone, version %d", b4[2])
	}
	if got, err := ParseParked(b4); err != nil || !reflect.DeepEqual(got, p) {
		t.Fatalf("got %+v, %v\nwant %+v", got, err, p)
	}
	// Version 2 always carries a peer_left, version 3 a last id that
	// is not 0 (one that is is written as an older version), version 4
	// an untold count that is not 0, and nothing newer reads.
	for _, b := range [][]byte{
		append([]byte("DP\x02"), v1[3:]...),
		append(append([]byte("DP\x03"), v1[3:]...), 0, 0),
		append(append([]byte("DP\x03"), v1[3:]...), 9, 2),
		append([]byte("DP\x04"), v1[3:]...),
		append(append([]byte("DP\x04"), v1[3:]...), 0, 0, 0, 0, 0),
		append(append([]byte("DP\x04"), v1[3:]...), 0, 0, 6, 0, 2),
		append([]byte("DP\x06"), b4[3:]...),
	} {
		if _, err := ParseParked(b); err == nil {
			t.Fatalf("%q parsed", b[:3])
		}
	}
	// The key the session's last resume used needs version 5, with
	// an untold count or without; version 4 (above) reads without it.
	p.Used = &ParkedUsed{Resume: ResumeHash{1}, Left: &PeerLeft{Peer: "x", Reason: proto.ReasonLeft}, ReplayFrom: 300}
	b5 := p.AppendBinary(nil)
	if b5[2] != 5 {
		t.Fatalf("with a used key, version %d", b5[2])
	}
	if got, err := ParseParked(b5); err != nil || !reflect.DeepEqual(got, p) {
		t.Fatalf("got %+v, %v\nwant %+v", got, err, p)
	}
	p.Untold, p.UntoldWindow = 0, 0
	if b := p.AppendBinary(nil); b[2] != 5 {
		t.Fatalf("with a used key alone, version %d", b[2])
	}
	// Version 5's untold count may be 0, but then nothing else of it
	// is kept, nor in its news; nor more ends than a hub keeps.
	u := (&ParkedUsed{Resume: ResumeHash{1}}).AppendBinary(nil)
	tooMany := (&ParkedUsed{Earlier: make([]PeerLeft, maxEndedAway+1)}).AppendBinary(nil)
	for _, b := range [][]byte{
		append(append(append([]byte("DP\x05"), v1[3:]...), 0, 0, 0, 2, 0), u...),
		append(append(append([]byte("DP\x05"), v1[3:]...), 0, 0, 0, 0, 1), u...),
		append(append([]byte("DP\x05"), v1[3:]...), 0, 0, 0, 0, 0),
		append(append(append([]byte("DP\x05"), v1[3:]...), 0, 0, 0, 0, 0), append(slices.Clone(u[:len(u)-4]), 0, 2, 0, 0)...),
		append(append(append([]byte("DP\x05"), v1[3:]...), 0, 0, 0, 0, 0), append(slices.Clone(u[:len(u)-2]), 4, 0)...),
		append(append(append([]byte("DP\x05"), v1[3:]...), 0, 0, 0, 0, 0), tooMany...),
	} {
		if _, err := ParseParked(b); err == nil {
			t.Fatalf("%q parsed", b)
		}
	}
	if _, err := ParseParked(append(append(append([]byte("DP\x05"), v1[3:]...), 0, 0, 0, 0, 0), u...)); err != nil {
		t.Fatalf("version 5 with nothing but the used key: %v", err)
	}
}

// throughCodec writes each of parked down and reads it back, as a
// session moved to another process or node is.
func throughCodec(t *testing.T, parked []*Parked) []*Parked {
	t.Helper()
	back := make([]*Parked, 0, len(parked))
	for _, p := range parked {
		q, err := ParseParked(p.AppendBinary(nil))
		if err != nil {
			t.Fatal(err)
		}
		back = append(back, q)
	}
	return back
}

// TestParkedKeepsWhoLeftWhileAway: a session that moves (to the next
// process, or another node) takes with it the peer_left it was told
// while away, and its resume there tells it.
func TestParkedKeepsWhoLeftWhileAway(t *testing.T) {
	h1, _ := newClockedHub(resumeOpts())
	alice, bob, key := resumablePair(t, h1)
	alice.Detach(proto.ReasonDisconnected, 0)
	bob.Close(proto.ReasonDisconnected, 4)
	back := throughCodec(t, h1.Snapshot())
	h2, _ := newClockedHub(resumeOpts())
	if n := h2.Restore(back); n != 1 {
		t.Fatalf("restored %d", n)
	}
	box := &recorder{}
	if _, err := h2.Resume([]byte(key), 0, true, box); err != nil {
		t.Fatal(err)
	}
	resumed, _, after := replay(t, box.take())
	want := proto.Event{Kind: proto.EvPeerLeft, Peer: "bob", Reason: proto.ReasonDisconnected, Count: 4}
	if resumed.Peer != "" || len(after) != 1 || !reflect.DeepEqual(after[0], want) {
		t.Fatalf("resumed %+v, then %+v; want %+v", resumed, after, want)
	}
}

func FuzzParseParked(f *testing.F) {
	f.Add((&Parked{Name: "a", Key: "a"}).AppendBinary(nil))
	f.Add((&Parked{Name: "Bo", Key: "bo", Seq: 3, History: []ParkedMessage{{Seq: 3, From: "x", Text: []byte("t")}},
		Pair: &ParkedPair{ID: 9, PeerKey: "x", PeerName: "X"}}).AppendBinary(nil))
	f.Add((&Parked{Name: "c", Key: "c", Left: &PeerLeft{Peer: "Dd", Reason: proto.ReasonTimeout, Undelivered: 2}}).AppendBinary(nil))
	f.Add((&Parked{Name: "e", Key: "e", LastID: 300}).AppendBinary(nil))
	f.Add((&Parked{Name: "f", Key: "f", LastID: 1, Left: &PeerLeft{Peer: "g", Reason: proto.ReasonLeft}}).AppendBinary(nil))
	f.Add((&Parked{Name: "h", Key: "h", Untold: 3, UntoldWindow: time.Second}).AppendBinary(nil))
	f.Add((&Parked{Name: "i", Key: "i", LastID: 2, Untold: 1, UntoldBack: true, Pair: &ParkedPair{ID: 4, PeerKey: "j", PeerName: "J"},
		Left: &PeerLeft{Peer: "k", Reason: proto.ReasonTimeout, Undelivered: 5}}).AppendBinary(nil))
	f.Add((&Parked{Name: "l", Key: "l", Used: &ParkedUsed{Resume: ResumeHash{3}, Earlier: []PeerLeft{{Peer: "m", Joined: true}},
		Left: &PeerLeft{Peer: "n", Reason: proto.ReasonLeft}, Untold: 2, UntoldBack: true, PeerWasAway: true}}).AppendBinary(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseParked(b)
		if err != nil {
			return
		}
		again, err := ParseParked(p.AppendBinary(nil))
		if err != nil || !reflect.DeepEqual(again, p) {
			t.Fatalf("%+v does not survive a round trip: %+v, %v", p, again, err)
		}
		if p.Cost() < 0 {
			t.Fatalf("cost %d", p.Cost())
		}
	})
}

// clusterHub is a hub with resume on, on a fakeDirectory, and a fake
// clock.
func clusterHub(t *testing.T, opts Options) (*Hub, *fakeDirectory, *fakeClock) {
	t.Helper()
	h, c := newClockedHub(opts)
	d := newFakeDirectory()
	h.SetDirectory(d)
	return h, d, c
}

// TestExportImport moves an away session with a partner on another
// node from one hub to another: its history, what was queued for it
// while parked, its pairing and how long it may still wait go with it,
// and a resume there replays everything, in order, once.
func TestExportImport(t *testing.T) {
	h1, d1, c1 := clusterHub(t, resumeOpts())
	alice, key := resumable(t, h1, "alice")
	if err := alice.Connect([]byte(d1.addRemoteHolder("bob").String())); err != nil {
		t.Fatal(err)
	}
	for i, text := range []string{"one", "two"} {
		if !h1.RemoteMessage("alice", 1, []byte(text), false) {
			t.Fatalf("message %d refused", i)
		}
	}
	alice.Ack(1)
	alice.Detach(proto.ReasonDisconnected, 0)
	h1.RemoteMessage("alice", 1, []byte("three"), false)
	c1.advance(30 * time.Second)

	tk, err := h1.BeginPark("alice", nil)
	if err != nil || tk.PeerNode != "there" || tk.PeerKey != "bob" || tk.PairID != 1 {
		t.Fatalf("ticket %+v, %v", tk, err)
	}
	if _, err := h1.BeginPark("alice", nil); err != proto.ErrUnavailable {
		t.Fatalf("a second move: %v", err)
	}
	p, err := h1.Export(tk)
	if err != nil {
		t.Fatal(err)
	}
	if p.Attached || p.AwayFor != 30*time.Second || p.WindowLeft != 90*time.Second || p.Seq != 3 || p.AwaySeq != 2 ||
		len(p.History) != 2 || p.Pair == nil || p.Pair.PeerNode != "there" || p.Pair.PeerName != "bob" {
		t.Fatalf("exported %+v (pair %+v)", p, p.Pair)
	}
	if st := h1.Stats(); st.Users != 0 || st.Away != 0 || st.Pairs != 0 || st.HistoryBytes != 0 {
		t.Fatalf("left behind: %+v", st)
	}
	if h1.RemoteMessage("alice", 1, []byte("late"), false) {
		t.Fatal("the old hub still takes messages for the session")
	}

	// Written down and read back, as between nodes.
	p, perr := ParseParked(p.AppendBinary(nil))
	if perr != nil {
		t.Fatal(perr)
	}
	h2, d2, c2 := clusterHub(t, resumeOpts())
	// A record whose key is not its name folded is refused, unfiled.
	for _, bad := range []struct{ name, key string }{{"alice", "bob"}, {"Alice", "Alice"}, {"al ice", "al ice"}} {
		q := *p
		q.Name, q.Key = bad.name, bad.key
		if err := h2.Import(&q, nil); err != proto.ErrBadName {
			t.Fatalf("name %q, key %q: %v, want bad_name", bad.name, bad.key, err)
		}
	}
	if st := h2.Stats(); st.Users != 0 || st.Away != 0 {
		t.Fatalf("a refused record left %+v", st)
	}
	if err := h2.Import(p, []ParkedMessage{{From: "bob", Text: []byte("four")}}); err != nil {
		t.Fatal(err)
	}
	if err := h2.Import(p, nil); err == nil {
		t.Fatal("the same session taken up twice")
	}
	toBob := d2.remote["bob"]
	if !h2.RemoteMessage("alice", 1, []byte("five"), false) {
		t.Fatal("the new hub refuses messages of the pairing")
	}
	c2.advance(10 * time.Second)
	box := &recorder{}
	res, rerr := h2.Resume([]byte(key), 0, false, box)
	if rerr != nil {
		t.Fatal(rerr)
	}
	resumed, replayed, _ := replay(t, box.take())
	if got := strings.Join(texts2(replayed), ","); resumed.Peer != "bob" || got != "two,three,four,five" {
		t.Fatalf("resumed %+v, replayed %q", resumed, got)
	}
	if got := seqs(replayed); !reflect.DeepEqual(got, []uint64{2, 3, 4, 5}) {
		t.Fatalf("replayed numbers %v", got)
	}
	if ev := toBob.last(t); ev.Kind != proto.EvPeerBack {
		t.Fatalf("bob's node was told %+v", ev)
	}
	if err := say(res.Session, []byte("hello again")); err != nil {
		t.Fatal(err)
	}
	if ev := toBob.last(t); string(ev.Text) != "hello again" {
		t.Fatalf("bob's node got %+v", ev)
	}
	if st := h2.Stats(); st.Users != 1 || st.Pairs != 1 || st.ResumedAway != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestExportImportUnsent: the messages a connection never wrote travel
// with the session, whether it dropped before the export or is still
// open as a resume on another node takes the session from it
// (UnsentCounter), and a line client's resume on the hub that takes it
// up replays them however old they are, or counts those not kept.
func TestExportImportUnsent(t *testing.T) {
	for _, c := range []struct {
		name             string
		open             bool
		buffer           int
		replayed, missed int
	}{
		{"dropped", false, 100 * (2 + entryCost), 7, 0},
		{"open", true, 100 * (2 + entryCost), 7, 0},
		{"open, not all kept", true, 5 * (2 + entryCost), 5, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			opts := resumeOpts()
			opts.ResumeBuffer = c.buffer
			h1, d1, c1 := clusterHub(t, opts)
			alice, q, key := loginCounting(t, h1, "alice")
			if err := alice.Connect([]byte(d1.addRemoteHolder("bob").String())); err != nil {
				t.Fatal(err)
			}
			for i := range 8 {
				if !h1.RemoteMessage("alice", 1, []byte(fmt.Sprint("a", i)), false) {
					t.Fatalf("message %d refused", i)
				}
			}
			c1.advance(40 * time.Second)
			if c.open {
				q.unsent = 7
			} else {
				alice.Detach(proto.ReasonSlow, 7)
			}
			p, perr := ParseParked(export(t, h1, "alice").AppendBinary(nil))
			if perr != nil || p.Unsent != 7 || p.Attached != c.open {
				t.Fatalf("read back %+v, %v", p, perr)
			}
			h2, _, _ := clusterHub(t, opts)
			if err := h2.Import(p, nil); err != nil {
				t.Fatal(err)
			}
			box := &recorder{}
			res, rerr := h2.Resume([]byte(key), 0, false, box)
			if rerr != nil || res.Replayed != c.replayed || res.Missed != c.missed {
				t.Fatalf("resume %+v, %v; want %d replayed, %d missed", res, rerr, c.replayed, c.missed)
			}
			want := []string{"a1", "a2", "a3", "a4", "a5", "a6", "a7"}[7-c.replayed:]
			if got := texts2(box.take()); !reflect.DeepEqual(got, want) {
				t.Fatalf("replayed %q, want %q", got, want)
			}
		})
	}
}

// TestExportImportWindow: a session taken up keeps what is left of its
// window, and ends when it runs out, its partner told timeout.
func TestExportImportWindow(t *testing.T) {
	h1, d1, c1 := clusterHub(t, resumeOpts())
	alice, key := resumable(t, h1, "alice")
	if err := alice.Connect([]byte(d1.addRemoteHolder("bob").String())); err != nil {
		t.Fatal(err)
	}
	alice.Detach(proto.ReasonDisconnected, 0)
	c1.advance(100 * time.Second)
	tk, _ := h1.BeginPark("alice", nil)
	p, err := h1.Export(tk)
	if err != nil {
		t.Fatal(err)
	}
	h2, d2, c2 := clusterHub(t, resumeOpts())
	if err := h2.Import(p, nil); err != nil {
		t.Fatal(err)
	}
	c2.advance(19 * time.Second)
	if st := h2.Stats(); st.Away != 1 {
		t.Fatalf("ended early: %+v", st)
	}
	c2.advance(2 * time.Second)
	h2.WaitClosing()
	if ev := d2.remote["bob"].last(t); ev.Kind != proto.EvPeerLeft || ev.Reason != proto.ReasonTimeout {
		t.Fatalf("bob's node was told %+v", ev)
	}
	if _, err := h2.Resume([]byte(key), 0, false, &recorder{}); err == nil {
		t.Fatal("resumed after its window")
	}
}

// TestExportZombie: a session a connection still carries is exported
// as a resume elsewhere would take it: the connection is evicted, and
// its partner is told neither that it went away nor that it is back.
func TestExportZombie(t *testing.T) {
	h1, d1, _ := clusterHub(t, resumeOpts())
	box := &evictBox{}
	s, err := h1.Login([]byte("alice"), box)
	if err != nil {
		t.Fatal(err)
	}
	key := box.events[0].ResumeKey
	if err := s.Connect([]byte(d1.addRemoteHolder("bob").String())); err != nil {
		t.Fatal(err)
	}
	tk, _ := h1.BeginPark("alice", nil)
	p, perr := h1.Export(tk)
	if perr != nil || !p.Attached || p.WindowLeft != 2*time.Minute {
		t.Fatalf("exported %+v, %v", p, perr)
	}
	if box.evicted != EvictResumed {
		t.Fatalf("the connection was evicted with %v", box.evicted)
	}
	if evs := d1.remote["bob"].take(); len(evs) != 1 || evs[0].Kind != proto.EvPaired {
		t.Fatalf("bob's node was told %+v", evs)
	}
	h2, d2, _ := clusterHub(t, resumeOpts())
	if err := h2.Import(p, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := h2.Resume([]byte(key), 0, true, &recorder{}); err != nil {
		t.Fatal(err)
	}
	if evs := d2.remote["bob"].take(); len(evs) != 0 {
		t.Fatalf("bob's node was told %+v", evs)
	}
	if st := h2.Stats(); st.ResumedZombie != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// evictBox records events and an eviction, as a connection's Queue.
type evictBox struct {
	recorder
	evicted Eviction
}

func (b *evictBox) DeliverMessages(ev *proto.Event, texts [][]byte) {
	for _, t := range texts {
		ev.Text = t
		b.Deliver(ev)
	}
}
func (*evictBox) Backlog() int64     { return 0 }
func (*evictBox) Wait(Waiter) bool   { return false }
func (b *evictBox) Evict(w Eviction) { b.evicted = w }

// TestExportKeepsALocalPartner: a session whose partner is on the same
// hub leaves it; the partner stays paired with a stub that holds what it
// says, and when the session is taken up on this hub again, it takes
// the stub's place and gets what was held, after what was queued.
func TestExportKeepsALocalPartner(t *testing.T) {
	h, d, _ := clusterHub(t, resumeOpts())
	alice, bob, key := resumablePair(t, h)
	sayEach(t, bob.Session, "before")
	alice.Detach(proto.ReasonDisconnected, 0)
	bob.box.take()
	tk, _ := h.BeginPark("alice", nil)
	if tk.PeerNode != "" {
		t.Fatalf("a local partner in the ticket: %+v", tk)
	}
	p, err := h.Export(tk)
	if err != nil || p.Pair == nil || p.Pair.PeerNode != "here" {
		t.Fatalf("exported %+v, %v", p.Pair, err)
	}
	sayEach(t, bob.Session, "held 1", "held 2")
	if bob.Peer() != "alice" {
		t.Fatalf("bob's partner is %q", bob.Peer())
	}
	if st := h.Stats(); st.Users != 1 || st.Pairs != 1 {
		t.Fatalf("stats %+v", st)
	}
	hb := d.remote["alice"]
	if hb != nil {
		t.Fatalf("the stub's outbox is a recorder: %v", hb)
	}
	if err := h.Import(p, []ParkedMessage{{From: "bob", Text: []byte("queued")}}); err != nil {
		t.Fatal(err)
	}
	box := &recorder{}
	res, rerr := h.Resume([]byte(key), 0, false, box)
	if rerr != nil {
		t.Fatal(rerr)
	}
	_, replayed, _ := replay(t, box.take())
	if got := strings.Join(texts2(replayed), ","); got != "before,queued,held 1,held 2" {
		t.Fatalf("replayed %q", got)
	}
	if ev := bob.box.last(t); ev.Kind != proto.EvPeerBack {
		t.Fatalf("bob: %+v", ev)
	}
	if err := say(res.Session, []byte("same room")); err != nil {
		t.Fatal(err)
	}
	if ev := bob.box.last(t); string(ev.Text) != "same room" {
		t.Fatalf("bob: %+v", ev)
	}
	if st := h.Stats(); st.Users != 2 || st.Pairs != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// parkedAsPartnerLeaves pairs alice and bob on h, parks alice (away),
// has bob leave, and takes alice up on h again, unpaired, as a node
// does that claims her before bob's node wrote how he left. It returns
// alice's resume key, and bob.
func parkedAsPartnerLeaves(t *testing.T, h *Hub) (key string, bob user) {
	t.Helper()
	alice, key := resumable(t, h, "alice")
	bob, _ = resumable(t, h, "bob")
	pair(t, bob, alice)
	alice.Detach(proto.ReasonDisconnected, 0)
	p := export(t, h, "alice")
	if err := bob.Leave(); err != nil {
		t.Fatal(err)
	}
	if err := h.Import(p, nil); err != nil {
		t.Fatal(err)
	}
	return key, bob
}

// TestTellLeftAfterImport: a session parked while its partner on this
// hub leaves, taken up here before this node wrote the partner's last
// messages and the end of the pairing beside the park, comes back
// unpaired; what was held for it here is replayed and told on its
// resume, as to a session away on one node, and not to a session
// paired again meanwhile.
func TestTellLeftAfterImport(t *testing.T) {
	h, _, _ := clusterHub(t, resumeOpts())
	key, bob := parkedAsPartnerLeaves(t, h)
	left := PeerLeft{Peer: "bob", Reason: proto.ReasonLeft, Undelivered: 2}
	if !h.TellLeft("alice", left, []ParkedMessage{{Text: []byte("last 1")}, {Text: []byte("last 2")}}) {
		t.Fatal("the session taken up unpaired was not told")
	}
	box := &recorder{}
	if _, err := h.Resume([]byte(key), 0, false, box); err != nil {
		t.Fatal(err)
	}
	evs := box.take()
	if ev := evs[len(evs)-1]; evs[0].Peer != "" || ev.Kind != proto.EvPeerLeft || ev.Peer != "bob" || ev.Reason != proto.ReasonLeft || ev.Count != 2 {
		t.Fatalf("the resume told %+v", evs)
	}
	_, replayed, _ := replay(t, evs)
	if got := strings.Join(texts2(replayed), ","); got != "last 1,last 2" || replayed[0].From != "bob" {
		t.Fatalf("replayed %q (%+v)", got, replayed)
	}
	// Paired again: the pairing it is in is what it knows.
	carol, _ := resumable(t, h, "carol")
	if err := carol.Connect([]byte(bob.Token().String())); err != nil {
		t.Fatal(err)
	}
	if h.TellLeft("carol", left, nil) || h.TellLeft("nobody", left, nil) {
		t.Fatal("told a paired session, or one that is not here")
	}
}

// TestSnapshotRestore: every session of a hub, pairs and histories
// included, is taken up by a new hub, and resumed there.
func TestSnapshotRestore(t *testing.T) {
	h1, c1 := newClockedHub(resumeOpts())
	alice, aliceKey := resumable(t, h1, "alice")
	bob, bobKey := resumable(t, h1, "bob")
	carol, _ := resumable(t, h1, "carol")
	pair(t, bob, alice)
	sayEach(t, bob.Session, numbered("m", 0, 3)...)
	alice.Detach(proto.ReasonDisconnected, 0)
	sayEach(t, bob.Session, "while away")
	c1.advance(time.Minute)
	aliceTok, carolTok := alice.Token(), carol.Token()

	var file []byte
	parked := h1.Snapshot()
	for _, p := range parked {
		file = p.AppendBinary(file)
		file = append(file, '\n') // any framing will do for the test
	}
	if len(parked) != 3 {
		t.Fatalf("snapshot of %d sessions", len(parked))
	}
	if st := h1.Stats(); st.Users != 0 || st.Pairs != 0 {
		t.Fatalf("left behind: %+v", st)
	}

	back := throughCodec(t, parked)
	_ = bytes.Count(file, []byte{'\n'})
	h2, _ := newClockedHub(resumeOpts())
	if n := h2.Restore(back); n != 3 {
		t.Fatalf("restored %d", n)
	}
	if st := h2.Stats(); st.Users != 3 || st.Pairs != 1 || st.Away != 3 {
		t.Fatalf("stats %+v", st)
	}
	// Names and tokens are taken, the pair's room full.
	if _, err := h2.Login([]byte("Carol"), &recorder{}); err == nil || err.Code != proto.ErrNameTaken.Code {
		t.Fatalf("carol's name: %v", err)
	}
	dave := login(t, h2, "dave")
	mustErr(t, dave.Connect([]byte(aliceTok.String())), proto.ErrRoomFull)
	if err := dave.Connect([]byte(carolTok.String())); err != nil {
		t.Fatalf("carol's token: %v", err)
	}

	aliceBox, bobBox := &recorder{}, &recorder{}
	ra, err := h2.Resume([]byte(aliceKey), 0, false, aliceBox)
	if err != nil {
		t.Fatal(err)
	}
	resumed, replayed, _ := replay(t, aliceBox.take())
	if resumed.Peer != "bob" || strings.Join(texts2(replayed), ",") != "m0,m1,m2,while away" {
		t.Fatalf("alice: %+v, %q", resumed, texts2(replayed))
	}
	rb, err := h2.Resume([]byte(bobKey), 0, false, bobBox)
	if err != nil {
		t.Fatal(err)
	}
	if ev := bobBox.take()[0]; ev.Kind != proto.EvResumed || ev.Peer != "alice" {
		t.Fatalf("bob: %+v", ev)
	}
	if err := say(ra.Session, []byte("we made it")); err != nil {
		t.Fatal(err)
	}
	if ev := bobBox.last(t); string(ev.Text) != "we made it" || ev.From != "alice" {
		t.Fatalf("bob: %+v", ev)
	}
	if err := rb.Session.Leave(); err != nil {
		t.Fatal(err)
	}
	// The restored pairing is the directory's too: both are free again.
	if err := dave.Leave(); err != nil {
		t.Fatal(err)
	}
	if err := dave.Connect([]byte(aliceTok.String())); err != nil {
		t.Fatalf("alice's token after the leave: %v", err)
	}
}

// export parks the session key of h and takes it out whole, as a node
// does to hand it to another.
func export(t *testing.T, h *Hub, key string) *Parked {
	t.Helper()
	tk, err := h.BeginPark(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.Export(tk)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTellLeftBeyondBufferIsMissed: the partner's last messages that
// TellLeft cannot keep for the session (past resume.buffer) are not
// dropped untold: the partner has gone, so the session's resume counts
// them as missed, whether it says what it received or not.
func TestTellLeftBeyondBufferIsMissed(t *testing.T) {
	for _, hasLast := range []bool{false, true} {
		t.Run(fmt.Sprintf("hasLast=%v", hasLast), func(t *testing.T) {
			opts := resumeOpts()
			opts.ResumeBuffer = 2*entryCost + 20
			h, _, _ := clusterHub(t, opts)
			key, _ := parkedAsPartnerLeaves(t, h)
			var last []ParkedMessage
			for i := range 4 {
				last = append(last, ParkedMessage{Text: fmt.Appendf(nil, "last %d", i+1)})
			}
			left := PeerLeft{Peer: "bob", Reason: proto.ReasonLeft, Undelivered: len(last)}
			if !h.TellLeft("alice", left, last) {
				t.Fatal("the session taken up unpaired was not told")
			}
			box := &recorder{}
			if _, err := h.Resume([]byte(key), 0, hasLast, box); err != nil {
				t.Fatal(err)
			}
			evs := box.take()
			resumed, replayed, after := replay(t, evs)
			if got := strings.Join(texts2(replayed), ","); got != "last 1,last 2" {
				t.Fatalf("replayed %q", got)
			}
			if resumed.Missed != 2 {
				t.Fatalf("the resume missed %d of the partner's last messages, not 2: %+v", resumed.Missed, resumed)
			}
			if len(after) != 1 || after[0].Kind != proto.EvPeerLeft || after[0].Count != len(last) {
				t.Fatalf("then %+v", after)
			}
		})
	}
}

// TestRestoreKeepsAnEarlierPairingsEnd: bob left alice while she was
// away, and carol connected to her token; then the server restarted,
// handing the sessions on through its state file. Her resume names
// carol and tells bob's leaving as an earlier pairing's end: a park
// carries the last such end (it carried none before, since an end
// followed by a pairing was not kept as left).
func TestRestoreKeepsAnEarlierPairingsEnd(t *testing.T) {
	h1, _ := newClockedHub(resumeOpts())
	alice, bob, carol, key := awayFromBob(t, h1)
	bob.Close(proto.ReasonLeft, 0)
	if err := carol.Connect(tok(alice.Session)); err != nil {
		t.Fatal(err)
	}
	_, parked, err := ReadState(bytes.NewReader(writeState(t, time.Now(), h1.Snapshot())))
	if err != nil {
		t.Fatal(err)
	}
	h2, _ := newClockedHub(resumeOpts())
	if n := h2.Restore(parked); n != 2 {
		t.Fatalf("restored %d", n)
	}
	box := &recorder{}
	if _, err := h2.Resume([]byte(key), 0, true, box); err != nil {
		t.Fatal(err)
	}
	resumed, _, after := replay(t, box.take())
	want := []proto.Event{{Kind: proto.EvEndedAway, Peer: "bob", Reason: proto.ReasonLeft}}
	if resumed.Peer != "carol" || !reflect.DeepEqual(after, want) {
		t.Fatalf("resumed %+v, then %+v; want carol, and bob's ended_away", resumed, after)
	}
}

// TestRestoreKeepsWhoConnected: after a restart with a state file, a
// pair's resumes are told the roles they were paired in: the side that
// connected is the initiator still (end-to-end encryption starts anew
// in those roles), whatever order the file holds them in. Eight pairs,
// so that roles drawn at random would come out right only once in 256
// runs.
func TestRestoreKeepsWhoConnected(t *testing.T) {
	h1, _ := newClockedHub(resumeOpts())
	keys := map[string]string{}
	for i := range 8 {
		holder, hk := resumable(t, h1, fmt.Sprintf("holder%d", i))
		asker, ak := resumable(t, h1, fmt.Sprintf("asker%d", i))
		pair(t, asker, holder)
		keys[holder.Key()], keys[asker.Key()] = hk, ak
		holder.Detach(proto.ReasonDisconnected, 0)
		asker.Detach(proto.ReasonDisconnected, 0)
	}
	h2, _ := newClockedHub(resumeOpts())
	// Each pair's holder first: the file's order is the wrong one.
	snap := h1.Snapshot()
	sort.SliceStable(snap, func(i, j int) bool { return snap[i].Pair.Holder && !snap[j].Pair.Holder })
	_, parked, err := ReadState(bytes.NewReader(writeState(t, time.Now(), snap)))
	if err != nil {
		t.Fatal(err)
	}
	if n := h2.Restore(parked); n != 16 {
		t.Fatalf("restored %d", n)
	}
	for name, key := range keys {
		_, ev := resumedOf(t, h2, key)
		if want := strings.HasPrefix(name, "asker"); ev.Initiator != want {
			t.Errorf("%s resumed as initiator %v, want %v", name, ev.Initiator, want)
		}
	}
}

// TestRestoreTakesUpEverySession: a restart whose resume.max_away is
// lower than the sessions kept takes them all up, each paired as before:
// each was told to resume. (It used to end the oldest to make room, and
// pair their partners with sessions that were gone, to wait for them
// for good.)
func TestRestoreTakesUpEverySession(t *testing.T) {
	h1, _ := newClockedHub(resumeOpts())
	alice, bob, aliceKey, bobKey := keyedPair(t, h1)
	alice.Detach(proto.ReasonDisconnected, 0)
	bob.Detach(proto.ReasonDisconnected, 0)
	opts := resumeOpts()
	opts.MaxAway = 1
	h2, _ := newClockedHub(opts)
	if n := h2.Restore(throughCodec(t, h1.Snapshot())); n != 2 {
		t.Fatalf("restored %d", n)
	}
	if st := h2.Stats(); st.Users != 2 || st.Pairs != 1 || st.AwayEvicted != 0 {
		t.Fatalf("stats %+v", st)
	}
	for key, peer := range map[string]string{aliceKey: "bob", bobKey: "alice"} {
		if _, ev := resumedOf(t, h2, key); ev.Peer != peer {
			t.Fatalf("resumed with %q, want %q", ev.Peer, peer)
		}
	}
}

// TestRestoreTellsAPartnerLost: alice's partner had no resume key (he
// logged in while resume was off), so the restart does not keep him.
// Her resume says the pairing ended with the restart, rather than
// nothing.
func TestRestoreTellsAPartnerLost(t *testing.T) {
	h1, _ := newClockedHub(Options{})
	bob, err := h1.Login([]byte("bob"), &recorder{})
	if err != nil {
		t.Fatal(err)
	}
	h1.SetOptions(resumeOpts())
	alice, aliceKey := resumable(t, h1, "alice")
	if err := bob.Connect(tok(alice.Session)); err != nil {
		t.Fatal(err)
	}
	alice.Detach(proto.ReasonDisconnected, 0)
	h2, _ := newClockedHub(resumeOpts())
	if n := h2.Restore(throughCodec(t, h1.Snapshot())); n != 1 {
		t.Fatalf("restored %d", n)
	}
	box := &recorder{}
	if _, err := h2.Resume([]byte(aliceKey), 0, false, box); err != nil {
		t.Fatal(err)
	}
	evs := box.take()
	if last := evs[len(evs)-1]; last.Kind != proto.EvPeerLeft || last.Peer != "bob" || last.Reason != proto.ReasonShutdown {
		t.Fatalf("alice's resume: %+v", evs)
	}
}

// TestDrainEndsNoSessionForRoom: a drain sends every session away at
// once, each told to resume; past resume.max_away none is ended to make
// room, as it is otherwise.
func TestDrainEndsNoSessionForRoom(t *testing.T) {
	opts := resumeOpts()
	opts.MaxAway = 1
	h, _ := newClockedHub(opts)
	var users []user
	for _, name := range []string{"alice", "bob", "carol"} {
		u, _ := resumable(t, h, name)
		users = append(users, u)
	}
	h.SetDraining()
	for _, u := range users {
		u.Detach(proto.ReasonShutdown, 0)
	}
	if st := h.Stats(); st.Away != 3 || st.AwayEvicted != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestParkedUndeliveredFrom: a session parked away counts, of its
// partner's messages, those it never had as the hub counts them for a
// session away here: those its connection never wrote, and those that
// came since it went.
func TestParkedUndeliveredFrom(t *testing.T) {
	h, _ := newClockedHub(resumeOpts())
	alice, bob, _ := resumablePair(t, h)
	sayEach(t, bob.Session, numbered("before", 0, 4)...)
	alice.Detach(proto.ReasonDisconnected, 2) // her connection never wrote the last 2
	sayEach(t, bob.Session, numbered("away", 0, 3)...)
	var parked *Parked
	for _, p := range h.Snapshot() {
		if p.Name == "alice" {
			parked = p
		}
	}
	if parked == nil {
		t.Fatal("alice was not parked")
	}
	if n := parked.UndeliveredFrom("bob"); n != 2+3 {
		t.Fatalf("undelivered from bob: %d, want 5", n)
	}
	if n := parked.UndeliveredFrom("carol"); n != 0 {
		t.Fatalf("undelivered from carol: %d, want 0", n)
	}
}

// TestRestartToldPartnerBack: bob was away as alice's connection
// dropped (she was told so), and came back while she was away; then the
// server restarted, handing the sessions on through its state file.
// Her resume says bob went away and is back, as it does without the
// restart (TestResumeToldPartnerBack); before, the park did not carry
// what she had been told, and her last word of him was that he lost the
// connection.
func TestRestartToldPartnerBack(t *testing.T) {
	h1, _ := newClockedHub(resumeOpts())
	alice, bob, aliceKey, bobKey := keyedPair(t, h1)
	bob.Detach(proto.ReasonDisconnected, 0)
	alice.Detach(proto.ReasonDisconnected, 0)
	resumeEvents(t, h1, bobKey, &recorder{})
	h2, _ := restart(t, h1, time.Second)
	after := resumeEvents(t, h2, aliceKey, &recorder{})
	if len(after) != 2 || after[0].Kind != proto.EvPeerAway || after[1].Kind != proto.EvPeerBack || after[1].Peer != "bob" {
		t.Fatalf("alice's resume told %+v, want bob's peer_away and peer_back", after)
	}

	// Still away as the server restarted: told that, not back.
	h1, _ = newClockedHub(resumeOpts())
	alice, bob, aliceKey, _ = keyedPair(t, h1)
	bob.Detach(proto.ReasonDisconnected, 0)
	alice.Detach(proto.ReasonDisconnected, 0)
	h2, _ = restart(t, h1, time.Second)
	after = resumeEvents(t, h2, aliceKey, &recorder{})
	if len(after) != 1 || after[0].Kind != proto.EvPeerAway || after[0].Peer != "bob" {
		t.Fatalf("alice's resume told %+v, want bob's peer_away", after)
	}
}

// TestRestartKeepsJoinedAway: carol connected to alice's token while
// alice was away, and left, before or after the server restarted
// through its state file. Alice's resume tells that carol connected
// while she was away, then left, as it does without the restart;
// before, the park dropped that the pairing began while she was away,
// and she was told that carol, of whom she had never heard, left.
func TestRestartKeepsJoinedAway(t *testing.T) {
	for _, leftFirst := range []bool{true, false} {
		h1, _ := newClockedHub(resumeOpts())
		alice, aliceKey := resumable(t, h1, "alice")
		carol, carolKey := resumable(t, h1, "carol")
		alice.Detach(proto.ReasonDisconnected, 0)
		if err := carol.Connect(tok(alice.Session)); err != nil {
			t.Fatal(err)
		}
		if leftFirst {
			carol.Close(proto.ReasonLeft, 0)
		}
		h2, _ := restart(t, h1, time.Second)
		if !leftFirst {
			if _, err := h2.Resume([]byte(carolKey), 0, true, &recorder{}); err != nil {
				t.Fatal(err)
			}
			back := h2.names.lookup("carol")
			back.Close(proto.ReasonLeft, 0)
		}
		after := resumeEvents(t, h2, aliceKey, &recorder{})
		want := []proto.Event{{Kind: proto.EvPeerLeft, Peer: "carol", Reason: proto.ReasonLeft, JoinedAway: true}}
		if !reflect.DeepEqual(after, want) {
			t.Errorf("carol left before the restart %v: alice's resume told %+v, want %+v", leftFirst, after, want)
		}
	}
}

// TestRestartToldPartnerServerRestarted: the server drained for a
// restart, handing its sessions on through its state file; alice
// resumes first. She is told bob's server is restarting, as bob's
// partner is told live as it drains (DetachFrom), not that he lost the
// connection, which he did not; before, the restart's next process
// knew only that he was away. One who was away before the restart
// began did lose the connection, and she is told that.
func TestRestartToldPartnerServerRestarted(t *testing.T) {
	for _, lostBefore := range []bool{false, true} {
		h1, _ := newClockedHub(resumeOpts())
		alice, bob, aliceKey, bobKey := keyedPair(t, h1)
		if lostBefore {
			bob.Detach(proto.ReasonDisconnected, 0)
		}
		h1.SetDraining()
		alice.Detach(proto.ReasonShutdown, 0)
		bob.Detach(proto.ReasonShutdown, 0)
		h2, _ := restart(t, h1, time.Second)
		box := &recorder{}
		res, err := h2.Resume([]byte(aliceKey), 0, true, box)
		if err != nil {
			t.Fatal(err)
		}
		_, _, after := replay(t, box.take())
		want := proto.ReasonShutdown
		if lostBefore {
			want = ""
		}
		if len(after) != 1 || after[0].Kind != proto.EvPeerAway || after[0].Peer != "bob" || after[0].Reason != want {
			t.Errorf("bob away before the restart %v: alice's resume told %+v, want bob's peer_away with reason %q", lostBefore, after, want)
		}
		// And her /who, as she wonders why he says nothing.
		res.Session.Who()
		if ev := box.last(t); ev.Kind != proto.EvStatus || ev.Peer != "bob" || !ev.PeerAway || ev.Reason != want || ev.Window <= 0 {
			t.Errorf("bob away before the restart %v: alice's /who told %+v, want bob away with reason %q", lostBefore, ev, want)
		}
		// His resume: the drain told him nothing of her going, so her
		// return is no news (before, he was told "alice is back").
		if after := resumeEvents(t, h2, bobKey, &recorder{}); len(after) != 0 {
			t.Errorf("bob away before the restart %v: bob's resume told %+v, want nothing", lostBefore, after)
		}
	}
}
