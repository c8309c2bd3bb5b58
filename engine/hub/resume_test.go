package hub

import (
	"crypto/sha256"
	"fmt"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"duet/proto"
)

// resumeOpts is resume on, with the defaults but for what a test sets.
func resumeOpts() Options {
	return Options{ResumeWindow: 2 * time.Minute}
}

// resumable logs name in on a hub with resume on and returns the user
// and the resume key its welcome carried.
func resumable(t *testing.T, h *Hub, name string) (user, string) {
	t.Helper()
	box := &recorder{}
	s, err := h.Login([]byte(name), box)
	if err != nil {
		t.Fatalf("login %s: %v", name, err)
	}
	ev := box.last(t)
	if ev.Kind != proto.EvWelcome || ev.Name != name || ev.Token != s.Token() {
		t.Fatalf("login %s: got %+v", name, ev)
	}
	k, perr := proto.ParseResumeKey([]byte(ev.ResumeKey))
	if perr != nil || k.String() != ev.ResumeKey || ev.Window != h.window() {
		t.Fatalf("login %s: resume key %q (%v), window %v", name, ev.ResumeKey, perr, ev.Window)
	}
	return user{s, box}, ev.ResumeKey
}

// pair connects a to b's token and forgets what both were told.
func pair(t *testing.T, a, b user) {
	t.Helper()
	if err := a.Connect(tok(b.Session)); err != nil {
		t.Fatal(err)
	}
	a.box.take()
	b.box.take()
}

// resumablePair logs alice and bob in to h with resume keys, and pairs
// them, bob connecting to alice; it returns both, and alice's key.
func resumablePair(t *testing.T, h *Hub) (alice, bob user, key string) {
	t.Helper()
	alice, bob, key, _ = keyedPair(t, h)
	return alice, bob, key
}

// keyedPair is resumablePair with bob's key too.
func keyedPair(t *testing.T, h *Hub) (alice, bob user, aliceKey, bobKey string) {
	t.Helper()
	alice, aliceKey = resumable(t, h, "alice")
	bob, bobKey = resumable(t, h, "bob")
	pair(t, bob, alice)
	return alice, bob, aliceKey, bobKey
}

// awayFromBob is resumablePair with alice away, and carol logged in to
// connect to her token.
func awayFromBob(t *testing.T, h *Hub) (alice, bob, carol user, key string) {
	t.Helper()
	alice, bob, key = resumablePair(t, h)
	carol, _ = resumable(t, h, "carol")
	alice.Detach(proto.ReasonDisconnected, 0)
	return alice, bob, carol, key
}

// sayEach relays each text alone, failing the test on an error.
func sayEach(t *testing.T, s *Session, texts ...string) {
	t.Helper()
	for _, text := range texts {
		if err := say(s, []byte(text)); err != nil {
			t.Fatalf("say %q: %v", text, err)
		}
	}
}

// numbered returns prefix0, prefix1, ... up to n texts.
func numbered(prefix string, from, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(from+i)
	}
	return out
}

// replay splits what a resume handed a connection: the resumed event,
// the replayed messages, and what followed the replay.
func replay(t *testing.T, evs []proto.Event) (resumed proto.Event, replayed, after []proto.Event) {
	t.Helper()
	if len(evs) == 0 || evs[0].Kind != proto.EvResumed {
		t.Fatalf("a resume answered %+v", evs)
	}
	resumed = evs[0]
	rest := evs[1:]
	if resumed.Count == 0 {
		return resumed, nil, rest
	}
	if len(rest) < resumed.Count+1 {
		t.Fatalf("resumed announced %d messages, then %+v", resumed.Count, rest)
	}
	replayed, end := rest[:resumed.Count], rest[resumed.Count]
	for _, ev := range replayed {
		if ev.Kind != proto.EvMessage && ev.Kind != proto.EvSealed {
			t.Fatalf("replayed %+v", ev)
		}
	}
	if end.Kind != proto.EvReplayEnd || end.Count != resumed.Count || end.Missed != resumed.Missed || end.ResumeKey != resumed.ResumeKey {
		t.Fatalf("the replay of %+v ended with %+v", resumed, end)
	}
	return resumed, replayed, rest[resumed.Count+1:]
}

func texts2(evs []proto.Event) []string {
	var out []string
	for _, ev := range evs {
		if ev.Kind == proto.EvMessage {
			out = append(out, string(ev.Text))
		}
	}
	return out
}

func seqs(evs []proto.Event) []uint64 {
	var out []uint64
	for _, ev := range evs {
		if ev.Kind == proto.EvMessage {
			out = append(out, ev.Seq)
		}
	}
	return out
}

// TestResumeComparesTheWholeHash: sessions are filed under half their
// key's hash; a key whose hash matches that half but not the rest finds
// nothing. The session filed there is made to differ only in the second
// half, as no key to be found could.
func TestResumeComparesTheWholeHash(t *testing.T) {
	h := New(resumeOpts())
	alice, key := resumable(t, h, "alice")
	alice.keyHash[sha256.Size-1] ^= 1
	if _, err := h.Resume([]byte(key), 0, false, &recorder{}); err != proto.ErrUnknownResumeKey {
		t.Fatalf("a key matching half the hash resumed: %v", err)
	}
	alice.keyHash[sha256.Size-1] ^= 1
	if _, err := h.Resume([]byte(key), 0, false, &recorder{}); err != nil {
		t.Fatalf("the right key: %v", err)
	}
}

func TestLoginCarriesAResumeKeyKeptOnlyHashed(t *testing.T) {
	h := New(resumeOpts())
	alice, key := resumable(t, h, "alice")
	k, _ := proto.ParseResumeKey([]byte(key))
	if got := h.keys[keyIndexOf(sha256.Sum256(k[:]))]; got != alice.Session {
		t.Fatalf("the key's hash finds %v", got)
	}
	if alice.keyHash != sha256.Sum256(k[:]) {
		t.Fatal("the session does not hold its key's hash")
	}
	// Another login draws another key.
	_, key2 := resumable(t, h, "bob")
	if key2 == key {
		t.Fatal("two logins drew the same resume key")
	}
	// A new token is a new welcome, without a key: the key is told once.
	if err := alice.NewToken(); err != nil {
		t.Fatal(err)
	}
	if ev := alice.box.last(t); ev.Kind != proto.EvWelcome || ev.ResumeKey != "" {
		t.Fatalf("newtoken told %+v", ev)
	}
	// With resume off, a login has no key.
	off := New(Options{})
	box := &recorder{}
	if _, err := off.Login([]byte("carol"), box); err != nil {
		t.Fatal(err)
	}
	if ev := box.last(t); ev.ResumeKey != "" || ev.Window != 0 {
		t.Fatalf("resume off, welcome %+v", ev)
	}
}

func TestDetachKeepsNameTokenAndPairing(t *testing.T) {
	h := New(resumeOpts())
	alice, _ := resumable(t, h, "alice")
	bob, _ := resumable(t, h, "bob")
	carol, _ := resumable(t, h, "carol")
	pair(t, bob, alice)

	alice.Detach(proto.ReasonDisconnected, 3)
	evs := bob.box.take()
	if len(evs) != 1 || evs[0].Kind != proto.EvPeerAway || evs[0].Peer != "alice" || evs[0].Window != 2*time.Minute {
		t.Fatalf("bob was told %+v", evs)
	}
	mustErr(t, carol.Connect(tok(alice.Session)), proto.ErrRoomFull)
	if _, err := h.Login([]byte("ALICE"), &recorder{}); err == nil || err.Code != proto.ErrNameTaken.Code {
		t.Fatalf("login as away alice: %v", err)
	}
	if bob.Peer() != "alice" {
		t.Fatalf("bob's peer is %q", bob.Peer())
	}
	// Detaching again, or closing, the way a connection's end might
	// twice, changes nothing more than the first did; Close ends it.
	alice.Detach(proto.ReasonDisconnected, 0)
	if evs := bob.box.take(); len(evs) != 0 {
		t.Fatalf("a second detach told bob %+v", evs)
	}
	if st := h.Stats(); st.Away != 1 || st.Users != 3 || st.Pairs != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestLoginAsAwayNameSaysResume: a user whose connection dropped and
// who logs in again under the same name is not told merely to pick
// another: the name is its own away session's, which it may resume, or
// have again once the session's time is up, and the answer says so and
// how long that is. A name held by a connected user is name_taken as
// ever.
func TestLoginAsAwayNameSaysResume(t *testing.T) {
	h, clock := newClockedHub(resumeOpts())
	alice, _ := resumable(t, h, "alice")
	resumable(t, h, "bob")
	alice.Detach(proto.ReasonDisconnected, 0)
	clock.advance(20 * time.Second)

	_, err := h.Login([]byte("Alice"), &recorder{})
	if err == nil || err.Code != proto.ErrNameTaken.Code {
		t.Fatalf("login as away alice: %v, want name_taken", err)
	}
	for _, want := range []string{"/resume KEY", "1m40s"} {
		if !strings.Contains(err.Text, want) {
			t.Errorf("login as away alice: %q does not say %q", err.Text, want)
		}
	}
	if _, err := h.Login([]byte("BOB"), &recorder{}); err != proto.ErrNameTaken {
		t.Fatalf("login as connected bob: %v, want %v", err, proto.ErrNameTaken)
	}
	// Once the window ends, the name is free.
	clock.advance(100 * time.Second)
	if _, err := h.Login([]byte("alice"), &recorder{}); err != nil {
		t.Fatalf("login as alice after her window: %v", err)
	}
}

func TestResumeOffDetachIsClose(t *testing.T) {
	h := New(Options{})
	alice, bob := login(t, h, "alice"), login(t, h, "bob")
	pair(t, bob, alice)
	alice.Detach(proto.ReasonSlow, 4)
	evs := bob.box.take()
	if len(evs) != 1 || evs[0].Kind != proto.EvPeerLeft || evs[0].Reason != proto.ReasonSlow || evs[0].Count != 4 {
		t.Fatalf("bob was told %+v", evs)
	}
	login(t, h, "alice") // free at once
	// Told that resume is off, not that the key is wrong: the
	// server keeps no sessions to resume.
	if _, err := h.Resume([]byte(proto.NewResumeKey().String()), 0, false, &recorder{}); err != proto.ErrResumeOff {
		t.Fatalf("resume with resume off: %v", err)
	}
	// A session that logged in while resume was off has no key, and
	// leaves as before even once resume is on.
	carol := login(t, h, "carol")
	h.SetOptions(resumeOpts())
	pair(t, bob, carol)
	carol.Detach(proto.ReasonTimeout, 0)
	if ev := bob.box.last(t); ev.Kind != proto.EvPeerLeft || ev.Reason != proto.ReasonTimeout {
		t.Fatalf("bob was told %+v", ev)
	}
}

// TestResumeUsedKeyUntilAnswered: a resume whose answer never reached
// its client (the connection failed again as it was answered) leaves
// the client with the key it used. That key takes the session back,
// with every message kept, until the client says something after an
// answer: from the connection that resumed while it still looks open,
// as a zombie's is taken over, or once it is gone; and the fresh key of
// the lost answer stops working.
func TestResumeUsedKeyUntilAnswered(t *testing.T) {
	h := New(resumeOpts())
	alice, bob, key := resumablePair(t, h)
	alice.Detach(proto.ReasonDisconnected, 0)
	sayEach(t, bob.Session, "away1")

	lost := &recorder{} // an answer its client never reads
	res, err := h.Resume([]byte(key), 0, false, lost)
	if err != nil {
		t.Fatal(err)
	}
	lostKey, _, _ := replay(t, lost.take())
	// Its connection looks open still (a network that failed sends no
	// reset): the key used takes the session over from it.
	zombie := &recorder{}
	res, err = h.Resume([]byte(key), 0, false, zombie)
	if err != nil || res.Zombie == nil {
		t.Fatalf("the key used, its resume's connection open: %+v, %v", res, err)
	}
	zombieKey, _, _ := replay(t, zombie.take())
	// And once that connection is gone too.
	res.Session.Detach(proto.ReasonDisconnected, 0)
	sayEach(t, bob.Session, "away2")

	box := &recorder{}
	res, err = h.Resume([]byte(key), 0, false, box)
	if err != nil {
		t.Fatalf("the key used, its answers lost: %v", err)
	}
	resumed, replayed, _ := replay(t, box.take())
	if got := strings.Join(texts2(replayed), ","); got != "away1,away2" || resumed.Peer != "bob" {
		t.Fatalf("resumed with %q, replayed %q", resumed.Peer, got)
	}
	for _, k := range []string{lostKey.ResumeKey, zombieKey.ResumeKey} {
		if _, err := h.Resume([]byte(k), 0, false, &recorder{}); err != proto.ErrUnknownResumeKey {
			t.Fatalf("the key of a lost answer: %v", err)
		}
	}
	// The client speaks: it has the answer, and the key it used is dead
	// for good.
	if !res.Session.KeyUnsure() {
		t.Fatal("a resumed session is not waiting to hear from its client")
	}
	res.Session.KeyReceived()
	if _, err := h.Resume([]byte(key), 0, false, &recorder{}); err != proto.ErrUnknownResumeKey {
		t.Fatalf("the key used, its answer received, the connection open: %v", err)
	}
	res.Session.Detach(proto.ReasonDisconnected, 0)
	if _, err := h.Resume([]byte(key), 0, false, &recorder{}); err != proto.ErrUnknownResumeKey {
		t.Fatalf("the key used, its answer received: %v", err)
	}
	res, err = h.Resume([]byte(resumed.ResumeKey), 0, false, &recorder{})
	if err != nil {
		t.Fatalf("the new key: %v", err)
	}
	// A session that ends takes both its keys with it.
	res.Session.Close(proto.ReasonLeft, 0)
	h.mu.Lock()
	keys, used := len(h.keys), len(h.used)
	h.mu.Unlock()
	if keys != 1 || used != 0 {
		t.Fatalf("after alice's quit the hub files %d keys (want bob's alone) and %d used", keys, used)
	}
}

// TestResumeReplaysWhatWasQueuedWhileAway is the line protocol's resume:
// it cannot say what it received, so it is replayed what was queued
// while it was away, and what was delivered in the moments before.
func TestResumeReplaysWhatWasQueuedWhileAway(t *testing.T) {
	h, clk := newClockedHub(resumeOpts())
	alice, bob, key := resumablePair(t, h)

	sayEach(t, bob.Session, "old1", "old2") // read long before the drop
	clk.advance(time.Minute)
	sayEach(t, bob.Session, "recent1", "recent2") // may not have been read
	clk.advance(5 * time.Second)
	alice.Detach(proto.ReasonDisconnected, 0)
	bob.box.take()
	away := numbered("away", 0, 100)
	sayEach(t, bob.Session, away...)
	clk.advance(time.Minute)

	box := &recorder{}
	res, err := h.Resume([]byte(strings.ToUpper(key)), 0, false, box)
	if err != nil {
		t.Fatal(err)
	}
	if res.Zombie != nil || res.Replayed != 102 || res.Missed != 0 || res.Session == alice.Session {
		t.Fatalf("resume %+v", res)
	}
	resumed, replayed, after := replay(t, box.take())
	if resumed.Name != "alice" || resumed.Token != alice.Token() || resumed.Peer != "bob" || resumed.Window != 2*time.Minute {
		t.Fatalf("resumed %+v", resumed)
	}
	want := append([]string{"recent1", "recent2"}, away...)
	if got := texts2(replayed); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("replayed %q", got)
	}
	for i, seq := range seqs(replayed) {
		if seq != uint64(3+i) {
			t.Fatalf("replayed message %d has seq %d", i, seq)
		}
	}
	if len(after) != 0 {
		t.Fatalf("after the replay: %+v", after)
	}
	if ev := bob.box.last(t); ev.Kind != proto.EvPeerBack || ev.Peer != "alice" {
		t.Fatalf("bob was told %+v", ev)
	}
	// The session carries on: bob's next message comes next, numbered on.
	alice2 := user{res.Session, box}
	sayEach(t, bob.Session, "back")
	if ev := box.last(t); string(ev.Text) != "back" || ev.Seq != 105 {
		t.Fatalf("after the resume alice got %+v", ev)
	}
	sayEach(t, alice2.Session, "hi bob")
	if ev := bob.box.last(t); string(ev.Text) != "hi bob" || ev.From != "alice" {
		t.Fatalf("bob got %+v", ev)
	}
	// The key was used, and alice spoke after the answer (as the engine
	// tells the hub when its client sends anything): it is dead, and
	// the new one works.
	alice2.Session.KeyReceived()
	if _, err := h.Resume([]byte(key), 0, false, &recorder{}); err != proto.ErrUnknownResumeKey {
		t.Fatalf("a used key: %v", err)
	}
	alice2.Detach(proto.ReasonDisconnected, 0)
	if _, err := h.Resume([]byte(resumed.ResumeKey), 0, false, &recorder{}); err != nil {
		t.Fatalf("the new key: %v", err)
	}
	if st := h.Stats(); st.ResumedAway != 2 || st.ResumeBadKey != 1 || st.Away != 0 || st.Messages != 106 {
		t.Fatalf("stats %+v", st)
	}
}

// TestResumeWithLastReplaysExactlyTheRest is the JSON protocol's resume:
// the client names the last message it received.
func TestResumeWithLastReplaysExactlyTheRest(t *testing.T) {
	for _, c := range []struct {
		name         string
		last         uint64
		wantFrom     int // first replayed message's number
		wantReplayed int
	}{
		{"saw none", 0, 1, 30},
		{"saw some", 12, 13, 18},
		{"saw all", 30, 0, 0},
		{"claims more than it was sent", 1000, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, clk := newClockedHub(resumeOpts())
			alice, bob, key := resumablePair(t, h)
			sayEach(t, bob.Session, numbered("m", 1, 20)...)
			clk.advance(time.Minute) // age is no matter: nothing was acknowledged
			alice.Detach(proto.ReasonDisconnected, 0)
			sayEach(t, bob.Session, numbered("m", 21, 10)...)

			box := &recorder{}
			res, err := h.Resume([]byte(key), c.last, true, box)
			if err != nil || res.Replayed != c.wantReplayed || res.Missed != 0 {
				t.Fatalf("resume %+v, %v", res, err)
			}
			_, replayed, _ := replay(t, box.take())
			if c.wantReplayed > 0 {
				want := numbered("m", c.wantFrom, c.wantReplayed)
				if got := texts2(replayed); strings.Join(got, ",") != strings.Join(want, ",") {
					t.Fatalf("replayed %q", got)
				}
				if s := seqs(replayed); s[0] != uint64(c.wantFrom) || s[len(s)-1] != 30 {
					t.Fatalf("replayed seqs %v", s)
				}
			}
			// What the client named is no longer kept; the rest is, until
			// acknowledged.
			res.Session.hmu.Lock()
			kept := 0
			if res.Session.hist != nil {
				kept = res.Session.hist.n
			}
			res.Session.hmu.Unlock()
			if kept != c.wantReplayed {
				t.Fatalf("kept %d after the resume", kept)
			}
		})
	}
}

// TestResumeSaysWhatCouldNotBeKept: past resume.buffer, an attached
// session's oldest messages are dropped, and a resume says how many of
// those it should have replayed.
func TestResumeSaysWhatCouldNotBeKept(t *testing.T) {
	const text = "0123456789abcdef" // 16 bytes: each kept message counts 80
	opts := resumeOpts()
	opts.ResumeBuffer = 10 * (len(text) + entryCost)
	for _, c := range []struct {
		name       string
		hasLast    bool
		last       uint64
		wantMissed int
		wantFirst  string
	}{
		{"json saw none", true, 0, 15, "m15"},
		{"json saw some", true, 9, 6, "m15"},
		{"json saw more than was dropped", true, 20, 0, "m20"},
		// Line: all 25 were sent in the last moments before the drop.
		{"line", false, 0, 15, "m15"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, _ := newClockedHub(opts)
			alice, bob, key := resumablePair(t, h)
			for i := range 25 {
				sayEach(t, bob.Session, fmt.Sprintf("m%02d%s", i, text[3:]))
			}
			alice.Detach(proto.ReasonDisconnected, 0)
			box := &recorder{}
			res, err := h.Resume([]byte(key), c.last, c.hasLast, box)
			if err != nil || res.Missed != c.wantMissed {
				t.Fatalf("resume %+v, %v; want %d missed", res, err, c.wantMissed)
			}
			resumed, replayed, _ := replay(t, box.take())
			if resumed.Missed != c.wantMissed || !strings.HasPrefix(string(replayed[0].Text), c.wantFirst) {
				t.Fatalf("resumed %+v, first replayed %q", resumed, replayed[0].Text)
			}
		})
	}
}

// TestLineResumeLeavesOutWhatWasRead: a line client is replayed only
// what was delivered from resume.replay_recent before its drop, and is
// not told of messages dropped for room long before.
func TestLineResumeLeavesOutWhatWasRead(t *testing.T) {
	opts := resumeOpts()
	opts.ResumeBuffer = 5 * (2 + entryCost)
	h, clk := newClockedHub(opts)
	alice, bob, key := resumablePair(t, h)
	sayEach(t, bob.Session, numbered("a", 0, 8)...) // three dropped for room
	clk.advance(40 * time.Second)
	sayEach(t, bob.Session, "b0", "b1") // two more dropped: a3, a4
	clk.advance(5 * time.Second)
	alice.Detach(proto.ReasonDisconnected, 0)
	box := &recorder{}
	res, err := h.Resume([]byte(key), 0, false, box)
	if err != nil || res.Replayed != 2 || res.Missed != 0 {
		t.Fatalf("resume %+v, %v", res, err)
	}
	if got := strings.Join(texts2(box.take()), ","); got != "b0,b1" {
		t.Fatalf("replayed %q", got)
	}
}

// TestLineResumeReplaysWhatWasNeverWritten: the messages a connection
// never wrote (still queued when it dropped: a reader cut off for not
// reading; or when a resume takes the session from it while it is still
// open, slow to read) are replayed to a line client however long before
// the drop they came, and those of them not kept are counted as missed.
func TestLineResumeReplaysWhatWasNeverWritten(t *testing.T) {
	for _, c := range []struct {
		name             string
		buffer, unsent   int
		wantFirst        string
		replayed, missed int
	}{
		// a0..a7 came 45 s before the drop, long before replay_recent;
		// b0, b1 just before.
		{"none unsent", 100 * (2 + entryCost), 0, "b0", 2, 0},
		{"unsent before the cutoff", 100 * (2 + entryCost), 7, "a3", 7, 0},
		{"unsent not all kept", 5 * (2 + entryCost), 7, "a5", 5, 2},
		{"unsent only recent", 100 * (2 + entryCost), 1, "b0", 2, 0},
		// Every message was still queued; a0..a7 made room for b0, b1
		// more than replay_recent after they came, so no loss run
		// recalls them, and none of them is before the cutoff.
		{"unsent dropped, none kept", 2 * (2 + entryCost), 10, "b0", 2, 8},
	} {
		// The connection dropped with those messages queued (Detach's
		// undelivered), or is still open with them queued when the
		// resume takes the session from it (UnsentCounter): it never
		// writes them either way.
		for _, open := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, open %v", c.name, open), func(t *testing.T) {
				opts := resumeOpts()
				opts.ResumeBuffer = c.buffer
				h, clk := newClockedHub(opts)
				alice, q, key := loginCounting(t, h, "alice")
				bob, _ := resumable(t, h, "bob")
				pair(t, bob, alice)
				sayEach(t, bob.Session, numbered("a", 0, 8)...)
				clk.advance(40 * time.Second)
				sayEach(t, bob.Session, "b0", "b1")
				clk.advance(5 * time.Second)
				if open {
					q.unsent = c.unsent
				} else {
					alice.Detach(proto.ReasonSlow, c.unsent)
				}
				box := &recorder{}
				res, err := h.Resume([]byte(key), 0, false, box)
				if err != nil || res.Replayed != c.replayed || res.Missed != c.missed || (res.Zombie != nil) != open {
					t.Fatalf("resume %+v, %v; want %d replayed, %d missed", res, err, c.replayed, c.missed)
				}
				if got := texts2(box.take()); got[0] != c.wantFirst {
					t.Fatalf("replayed %q", got)
				}
			})
		}
	}
}

// TestAwayFullRefusesNeverDrops: while a session is away, what does not
// fit in resume.buffer is refused, and its sender told, with how much is
// waiting; nothing is dropped unsaid.
func TestAwayFullRefusesNeverDrops(t *testing.T) {
	opts := resumeOpts()
	opts.ResumeBuffer = 6 * (4 + entryCost)
	h, _ := newClockedHub(opts)
	alice, bob, key := resumablePair(t, h)
	sayEach(t, bob.Session, "pre1") // kept, not yet read
	alice.Detach(proto.ReasonDisconnected, 0)

	to, relayed, err := bob.SayAll(texts("msg1", "msg2", "msg3", "msg4", "msg5", "msg6", "msg7"), nil)
	if relayed != 5 || err == nil || err.Code != "peer_away_full" || to == nil {
		t.Fatalf("SayAll = %d, %v", relayed, err)
	}
	if want := "alice is away, and 5 of your messages (20 bytes) are waiting for them; this one was not sent"; err.Text != want {
		t.Fatalf("error text %q, want %q", err.Text, want)
	}
	_, relayed, err = bob.SayAll(texts("msg6"), nil)
	if relayed != 0 || err == nil || err.Code != "peer_away_full" {
		t.Fatalf("SayAll again = %d, %v", relayed, err)
	}
	if st := h.Stats(); st.AwayRefused != 2 || st.Messages != 6 || st.HistoryBytes != int64(opts.ResumeBuffer) {
		t.Fatalf("stats %+v", st)
	}
	box := &recorder{}
	if _, err := h.Resume([]byte(key), 0, false, box); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(texts2(box.take()), ","); got != "pre1,msg1,msg2,msg3,msg4,msg5" {
		t.Fatalf("replayed %q", got)
	}
	// Back and attached, there is room again: the oldest make way.
	if _, relayed, err := bob.SayAll(texts("msg6", "msg7"), nil); relayed != 2 || err != nil {
		t.Fatalf("SayAll after the resume = %d, %v", relayed, err)
	}
	if got := strings.Join(texts2(box.take()), ","); got != "msg6,msg7" {
		t.Fatalf("alice read %q", got)
	}
	// The error's text for one message is singular.
	if got := proto.PeerAwayFull("bob", 1, 2048).Text; got != "bob is away, and 1 of your messages (2 KiB) is waiting for them; this one was not sent" {
		t.Fatalf("text %q", got)
	}
}

func TestWindowEndsTheSession(t *testing.T) {
	h, clk := newClockedHub(resumeOpts())
	alice, key := resumable(t, h, "alice")
	bob, _ := resumable(t, h, "bob")
	carol, _ := resumable(t, h, "carol")
	pair(t, bob, alice)
	token := tok(alice.Session)
	alice.Detach(proto.ReasonDisconnected, 0)
	sayEach(t, bob.Session, "are you there?")
	bob.box.take()

	clk.advance(2*time.Minute - time.Second)
	if evs := bob.box.take(); len(evs) != 0 {
		t.Fatalf("before the window ended bob was told %+v", evs)
	}
	clk.advance(time.Second)
	evs := bob.box.take()
	if len(evs) != 1 || evs[0].Kind != proto.EvPeerLeft || evs[0].Peer != "alice" || evs[0].Reason != proto.ReasonTimeout {
		t.Fatalf("bob was told %+v", evs)
	}
	// bob is free to be joined; alice's name, token and key are gone.
	if err := carol.Connect(tok(bob.Session)); err != nil {
		t.Fatalf("bob cannot be joined: %v", err)
	}
	mustErr(t, carol.Leave(), nil)
	mustErr(t, carol.Connect(token), proto.ErrUnknownToken)
	if _, err := h.Resume([]byte(key), 0, false, &recorder{}); err != proto.ErrUnknownResumeKey {
		t.Fatalf("an expired key: %v", err)
	}
	resumable(t, h, "alice")
	clk.advance(time.Hour) // the sweep gives back what was kept
	if st := h.Stats(); st.Away != 0 || st.AwayTimedOut != 1 || st.HistoryBytes != 0 || len(h.historySessions()) != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestMaxAwayEndsTheOldestFirst(t *testing.T) {
	opts := resumeOpts()
	opts.MaxAway = 2
	h, clk := newClockedHub(opts)
	var away []user
	var partners []user
	for i := range 3 {
		u, _ := resumable(t, h, fmt.Sprint("away", i))
		p, _ := resumable(t, h, fmt.Sprint("partner", i))
		pair(t, p, u)
		away, partners = append(away, u), append(partners, p)
	}
	away[0].Detach(proto.ReasonDisconnected, 0)
	clk.advance(time.Second)
	away[1].Detach(proto.ReasonDisconnected, 0)
	away[2].Detach(proto.ReasonDisconnected, 0)
	if ev := partners[0].box.last(t); ev.Kind != proto.EvPeerLeft || ev.Reason != proto.ReasonTimeout {
		t.Fatalf("the oldest's partner was told %+v", ev)
	}
	for _, p := range partners[1:] {
		if ev := p.box.last(t); ev.Kind != proto.EvPeerAway {
			t.Fatalf("%s was told %+v", p.Name(), ev)
		}
	}
	if st := h.Stats(); st.Away != 2 || st.AwayEvicted != 1 || st.Users != 5 {
		t.Fatalf("stats %+v", st)
	}
	// Its window's timer does nothing when it runs out.
	clk.advance(2 * time.Minute)
	if st := h.Stats(); st.Away != 0 || st.AwayTimedOut != 2 || st.AwayEvicted != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestMaxAwayPerIPEndsTheAddressOwnFirst: past resume.max_away_per_ip
// sessions away from one address, the one of that address away the
// longest ends, though others have been away longer and resume.max_away
// is far off; sessions from another address, or from none known, are
// left alone, and a resume gives the address its room back.
func TestMaxAwayPerIPEndsTheAddressOwnFirst(t *testing.T) {
	opts := resumeOpts()
	opts.MaxAway, opts.MaxAwayPerIP = 10, 2
	h, clk := newClockedHub(opts)
	alice, bob, _ := resumablePair(t, h)
	other, flooder := netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("2001:db8:1:2::/64")
	alice.DetachFrom(other, proto.ReasonDisconnected, 0)
	bob.box.take()
	carol, _ := resumable(t, h, "carol")
	carol.Detach(proto.ReasonDisconnected, 0) // no address known
	var away, partners []user
	keys := map[string]string{}
	for i := range 4 {
		clk.advance(time.Second)
		u, key := resumable(t, h, fmt.Sprint("m", i))
		p, _ := resumable(t, h, fmt.Sprint("p", i))
		pair(t, p, u)
		keys[u.Name()] = key
		away, partners = append(away, u), append(partners, p)
	}
	away[0].DetachFrom(flooder, proto.ReasonDisconnected, 0)
	away[1].DetachFrom(flooder, proto.ReasonDisconnected, 0)
	away[2].DetachFrom(flooder, proto.ReasonDisconnected, 0)
	if ev := partners[0].box.last(t); ev.Kind != proto.EvPeerLeft || ev.Reason != proto.ReasonTimeout {
		t.Fatalf("the address's oldest's partner was told %+v", ev)
	}
	if evs := bob.box.take(); len(evs) != 0 {
		t.Fatalf("bob, whose partner went away from another address, was told %+v", evs)
	}
	if st := h.Stats(); st.Away != 4 || st.AwayEvicted != 1 {
		t.Fatalf("stats %+v", st)
	}
	// A resume gives the address back its room.
	if _, err := h.Resume([]byte(keys["m1"]), 0, false, &recorder{}); err != nil {
		t.Fatal(err)
	}
	away[3].DetachFrom(flooder, proto.ReasonDisconnected, 0)
	if st := h.Stats(); st.Away != 4 || st.AwayEvicted != 1 {
		t.Fatalf("after a resume and one more away: stats %+v", st)
	}
	if _, err := h.Resume([]byte(keys["m0"]), 0, false, &recorder{}); err != proto.ErrUnknownResumeKey {
		t.Fatalf("the ended session's key: %v", err)
	}
	clk.advance(2 * time.Minute)
	if st := h.Stats(); st.Away != 0 || len(h.awayFrom) != 0 {
		t.Fatalf("all gone: stats %+v, %d addresses still kept", st, len(h.awayFrom))
	}
}

// TestZombieIsTakenOver: a resume while the old connection still carries
// the session moves it, evicts the old connection's queue, and leaves
// the old Session unable to act for the user.
func TestZombieIsTakenOver(t *testing.T) {
	h, _ := newClockedHub(resumeOpts())
	first := &queueRecorder{}
	s, err := h.Login([]byte("alice"), first)
	if err != nil {
		t.Fatal(err)
	}
	key := first.last(t).ResumeKey
	alice := user{s, &first.recorder}
	bob, _ := resumable(t, h, "bob")
	pair(t, bob, alice)
	sayEach(t, bob.Session, "one", "two")

	box := &recorder{}
	res, err := h.Resume([]byte(key), 1, true, box)
	if err != nil {
		t.Fatal(err)
	}
	if res.Zombie != Outbox(first) || res.Replayed != 1 {
		t.Fatalf("resume %+v", res)
	}
	if got := first.evictions(); len(got) != 1 || got[0] != EvictResumed {
		t.Fatalf("the old queue was told %v", got)
	}
	if evs := bob.box.take(); len(evs) != 0 {
		t.Fatalf("bob, whose partner never went away, was told %+v", evs)
	}
	first.take()
	// The old Session is retired: it cannot talk, leave or end the user.
	mustErr(t, say(alice.Session, []byte("ghost")), proto.ErrNotPaired)
	mustErr(t, alice.Leave(), proto.ErrNotPaired)
	mustErr(t, alice.NewToken(), proto.ErrNotLoggedIn)
	alice.Detach(proto.ReasonDisconnected, 0)
	alice.Close(proto.ReasonReplaced, 0)
	if evs := bob.box.take(); len(evs) != 0 {
		t.Fatalf("the retired session told bob %+v", evs)
	}
	sayEach(t, bob.Session, "three")
	if ev := box.last(t); string(ev.Text) != "three" || ev.Seq != 3 {
		t.Fatalf("the resumed session got %+v", ev)
	}
	if evs := first.take(); len(evs) != 0 {
		t.Fatalf("the old connection was handed %+v", evs)
	}
	if res.Session.Peer() != "bob" || bob.Peer() != "alice" {
		t.Fatal("the pairing did not move")
	}
	if st := h.Stats(); st.ResumedZombie != 1 || st.ResumedAway != 0 || st.Users != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// TestPartnerMessageDuringResumeComesAfterTheReplay: the partner talks
// while the resume replays; what it says is delivered once, after.
func TestPartnerMessageDuringResumeComesAfterTheReplay(t *testing.T) {
	h, _ := newClockedHub(resumeOpts())
	alice, bob, key := resumablePair(t, h)
	alice.Detach(proto.ReasonDisconnected, 0)
	sayEach(t, bob.Session, numbered("m", 0, 50)...)

	var wg sync.WaitGroup
	box := &hookRecorder{}
	box.hook = func(ev *proto.Event) {
		if ev.Kind != proto.EvResumed {
			return
		}
		// Mid-resume: bob talks from another goroutine.
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := say(bob.Session, []byte("during")); err != nil {
				t.Errorf("say during the resume: %v", err)
			}
		}()
	}
	if _, err := h.Resume([]byte(key), 0, true, box); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	_, replayed, after := replay(t, box.take())
	if len(replayed) != 50 || texts2(replayed)[49] != "m49" {
		t.Fatalf("replayed %q", texts2(replayed))
	}
	if len(after) != 1 || string(after[0].Text) != "during" || after[0].Seq != 51 {
		t.Fatalf("after the replay: %+v", after)
	}
}

// hookRecorder is a recorder that calls hook on each event first.
type hookRecorder struct {
	recorder
	hook func(*proto.Event)
}

func (r *hookRecorder) Deliver(ev *proto.Event) {
	r.hook(ev)
	r.recorder.Deliver(ev)
}

func TestBadResumeKeys(t *testing.T) {
	h, clk := newClockedHub(resumeOpts())
	alice, key := resumable(t, h, "alice")
	alice.Detach(proto.ReasonDisconnected, 0)
	cases := []struct {
		name string
		key  string
		want *proto.Error
	}{
		{"empty", "", proto.ErrBadResumeKey},
		{"short", key[:25], proto.ErrBadResumeKey},
		{"long", key + "0", proto.ErrBadResumeKey},
		{"a token", proto.NewToken().String(), proto.ErrBadResumeKey},
		{"a letter not in the alphabet", "u" + key[1:], proto.ErrBadResumeKey},
		{"a space in it", key[:10] + " " + key[11:], proto.ErrBadResumeKey},
		{"well formed, unknown", proto.NewResumeKey().String(), proto.ErrUnknownResumeKey},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, err := h.Resume([]byte(c.key), 0, false, &recorder{})
			if err != c.want || res.Session != nil {
				t.Fatalf("Resume(%q) = %+v, %v; want %v", c.key, res, err, c.want)
			}
		})
	}
	if st := h.Stats(); st.ResumeBadKey != uint64(len(cases)) || st.Away != 1 {
		t.Fatalf("stats %+v", st)
	}
	// Crockford's look-alikes read as the digits they stand for.
	alike := strings.NewReplacer("1", "l", "0", "O").Replace(key)
	if _, err := h.Resume([]byte(alike), 0, false, &recorder{}); err != nil {
		t.Fatalf("Resume(%q) for %q: %v", alike, key, err)
	}
	clk.advance(time.Hour)
}

// TestPasswordLoginReplacesAnAwaySession: in accounts mode the user who
// lost the key logs in again and is not locked out; a session that is
// attached keeps the name unless takeover is on.
func TestPasswordLoginReplacesAnAwaySession(t *testing.T) {
	h, _ := newClockedHub(resumeOpts())
	alice, bob, key := resumablePair(t, h)

	if _, err := h.LoginReplacingAway([]byte("alice"), &recorder{}); err != proto.ErrNameTaken {
		t.Fatalf("while alice is attached: %v", err)
	}
	alice.Detach(proto.ReasonDisconnected, 0)
	bob.box.take()
	box := &recorder{}
	s, err := h.LoginReplacingAway([]byte("Alice"), box)
	if err != nil {
		t.Fatal(err)
	}
	if ev := box.last(t); ev.Kind != proto.EvWelcome || ev.ResumeKey == "" || ev.ResumeKey == key {
		t.Fatalf("welcome %+v", ev)
	}
	if ev := bob.box.last(t); ev.Kind != proto.EvPeerLeft || ev.Reason != proto.ReasonReplaced {
		t.Fatalf("bob was told %+v", ev)
	}
	if _, err := h.Resume([]byte(key), 0, false, &recorder{}); err != proto.ErrUnknownResumeKey {
		t.Fatalf("the replaced session's key: %v", err)
	}
	if st := h.Stats(); st.Away != 0 || st.Users != 2 {
		t.Fatalf("stats %+v", st)
	}
	// With takeover on, an away session is replaced too, and no
	// connection is returned: none carried it.
	s.Detach(proto.ReasonDisconnected, 0)
	_, replaced, err := h.LoginReplacing([]byte("alice"), &recorder{})
	if err != nil || replaced != nil {
		t.Fatalf("LoginReplacing an away session: %v, replaced %v", err, replaced)
	}
}

// TestConnectToAnAwaySession: the token of an away session that is not
// paired still works; the one who connects is told it is away, and what
// they say is kept for it.
func TestConnectToAnAwaySession(t *testing.T) {
	h, clk := newClockedHub(resumeOpts())
	alice, key := resumable(t, h, "alice")
	carol, _ := resumable(t, h, "carol")
	alice.Detach(proto.ReasonDisconnected, 0)
	clk.advance(30 * time.Second)
	if err := carol.Connect(tok(alice.Session)); err != nil {
		t.Fatal(err)
	}
	evs := carol.box.take()
	if len(evs) != 2 || evs[0].Kind != proto.EvPaired || evs[1].Kind != proto.EvPeerAway || evs[1].Window != 90*time.Second {
		t.Fatalf("carol was told %+v", evs)
	}
	sayEach(t, carol.Session, "hello?")
	box := &recorder{}
	if _, err := h.Resume([]byte(key), 0, false, box); err != nil {
		t.Fatal(err)
	}
	resumed, replayed, _ := replay(t, box.take())
	if resumed.Peer != "carol" || len(replayed) != 1 || string(replayed[0].Text) != "hello?" {
		t.Fatalf("resumed %+v, replayed %+v", resumed, replayed)
	}
	if ev := carol.box.last(t); ev.Kind != proto.EvPeerBack {
		t.Fatalf("carol was told %+v", ev)
	}
}

func TestAckDropsWhatWasReceived(t *testing.T) {
	h, clk := newClockedHub(resumeOpts())
	alice, _ := resumable(t, h, "alice")
	bob, _ := resumable(t, h, "bob")
	pair(t, bob, alice)
	sayEach(t, bob.Session, numbered("m", 1, 10)...)
	if got := seqs(alice.box.take()); len(got) != 10 || got[0] != 1 || got[9] != 10 {
		t.Fatalf("seqs %v", got)
	}
	if got := h.Stats().HistoryBytes; got != 21+10*entryCost {
		t.Fatalf("history %d bytes for 10 messages of 21 bytes in all", got)
	}
	alice.Ack(6)
	if got := h.Stats().HistoryBytes; got != 9+4*entryCost {
		t.Fatalf("history %d bytes after acknowledging 6 of 10", got)
	}
	alice.Ack(99)
	if got := h.Stats().HistoryBytes; got != 0 || alice.hist != nil {
		t.Fatalf("history %d bytes after acknowledging all", got)
	}
	// alice stays in the sweep's set, where the next message would find
	// her, until the sweep sees she keeps nothing.
	if got := len(h.historySessions()); got != 1 {
		t.Fatalf("%d sessions in the sweep's set after the acknowledgement", got)
	}
	clk.advance(h.sweepPeriod())
	if got := len(h.historySessions()); got != 0 {
		t.Fatalf("%d sessions in the sweep's set after the sweep", got)
	}
	// A session that cannot be resumed acknowledges nothing.
	off := New(Options{})
	login(t, off, "carol").Ack(1)
}

// TestSweepSetFollowsSessions: a session stays in the sweep's set while
// its history empties and fills again with each acknowledgement, moves
// to the session that resumes it, and leaves it when it logs out, not
// only at the next sweep.
func TestSweepSetFollowsSessions(t *testing.T) {
	h, clk := newClockedHub(resumeOpts())
	alice, bob, key := resumablePair(t, h)
	inSet := func(s *Session) bool {
		for _, x := range h.historySessions() {
			if x == s {
				return true
			}
		}
		return false
	}
	sayEach(t, bob.Session, "one")
	alice.Ack(1)
	sayEach(t, bob.Session, "two")
	if !inSet(alice.Session) || len(h.historySessions()) != 1 || h.Stats().HistoryBytes != 3+entryCost {
		t.Fatalf("after an acknowledgement and a message: %d in the set, %d bytes kept", len(h.historySessions()), h.Stats().HistoryBytes)
	}

	alice.Detach(proto.ReasonDisconnected, 0)
	res, err := h.Resume([]byte(key), 1, true, &recorder{})
	if err != nil {
		t.Fatal(err)
	}
	if inSet(alice.Session) || !inSet(res.Session) || len(h.historySessions()) != 1 {
		t.Fatalf("after the resume: old in the set %v, new %v", inSet(alice.Session), inSet(res.Session))
	}
	// What was kept still ages out through the set.
	clk.advance(3 * time.Minute)
	if h.Stats().HistoryBytes != 0 || len(h.historySessions()) != 0 {
		t.Fatalf("after the window: %d bytes kept, %d in the set", h.Stats().HistoryBytes, len(h.historySessions()))
	}

	sayEach(t, bob.Session, "three")
	res.Session.Close(proto.ReasonLeft, 0)
	if inSet(res.Session) || len(h.historySessions()) != 0 {
		t.Fatal("a session that logged out is still in the sweep's set")
	}
}

// TestIdleSessionsKeepNothing: what a session keeps ages out, and then
// it costs nothing: no history, no chunks, out of the sweep's set.
func TestIdleSessionsKeepNothing(t *testing.T) {
	h, clk := newClockedHub(resumeOpts())
	alice, _ := resumable(t, h, "alice")
	bob, _ := resumable(t, h, "bob")
	pair(t, bob, alice)
	sayEach(t, bob.Session, "hi", "there")
	if alice.hist == nil || h.Stats().HistoryBytes == 0 {
		t.Fatal("nothing kept")
	}
	clk.advance(2*time.Minute + 30*time.Second)
	alice.hmu.Lock()
	kept := alice.hist
	alice.hmu.Unlock()
	if kept != nil || h.Stats().HistoryBytes != 0 || len(h.historySessions()) != 0 {
		t.Fatalf("an idle session still keeps %+v", kept)
	}
	// The sweep stops when there is nothing to sweep, and starts again.
	h.histMu.Lock()
	sweeping := h.sweeping
	h.histMu.Unlock()
	if sweeping {
		t.Fatal("the sweep goes on with nothing to sweep")
	}
	sayEach(t, bob.Session, "again")
	clk.advance(3 * time.Minute)
	if h.Stats().HistoryBytes != 0 {
		t.Fatal("the sweep did not start again")
	}
}

// TestSessionLayout guards an idle connection's memory, which the
// project aims to hold under 1 KiB, and the cache lines a run of
// messages touches. A Session was 280 bytes before resume, 192 with it,
// 176 once its key was folded from its name when asked for, and is 192
// again, by choice: objects of that size class start on a cache line,
// so each of its three lines can hold what one party writes. Before,
// a sender's counts shared a line with the lock a delivery to it takes,
// so the two loops of a pair took that line from each other at every
// run, and a run read three lines of its reader and two of its sender;
// now it reads one of each. The id of the sender's last message
// (lastID) took the place of its directory claim in the first line,
// which moved to the second, where it belongs, into what was padding.
func TestSessionLayout(t *testing.T) {
	var s Session
	if size := unsafe.Sizeof(s); size > 192 {
		t.Fatalf("Session is %d bytes, over the 192-byte size class", size)
	}
	type field struct {
		name      string
		off, size uintptr
	}
	lines := [][]field{
		{ // the session's own loop, as it sends
			{"name", unsafe.Offsetof(s.name), unsafe.Sizeof(s.name)},
			{"room", unsafe.Offsetof(s.room), unsafe.Sizeof(s.room)},
			{"sentMessages", unsafe.Offsetof(s.sentMessages), unsafe.Sizeof(s.sentMessages)},
			{"sentBytes", unsafe.Offsetof(s.sentBytes), unsafe.Sizeof(s.sentBytes)},
			{"lastID", unsafe.Offsetof(s.lastID), unsafe.Sizeof(s.lastID)},
			{"hub", unsafe.Offsetof(s.hub), unsafe.Sizeof(s.hub)},
		},
		{ // written as the session is made, paired, moved or closed
			{"token", unsafe.Offsetof(s.token), unsafe.Sizeof(s.token)},
			{"keyHash", unsafe.Offsetof(s.keyHash), unsafe.Sizeof(s.keyHash)},
			{"claim", unsafe.Offsetof(s.claim), unsafe.Sizeof(s.claim)},
		},
		{ // a delivery to the session, from its partner's loop
			{"resumable", unsafe.Offsetof(s.resumable), unsafe.Sizeof(s.resumable)},
			{"hmu", unsafe.Offsetof(s.hmu), unsafe.Sizeof(s.hmu)},
			{"seq", unsafe.Offsetof(s.seq), unsafe.Sizeof(s.seq)},
			{"hist", unsafe.Offsetof(s.hist), unsafe.Sizeof(s.hist)},
			{"q", unsafe.Offsetof(s.q), unsafe.Sizeof(s.q)},
			{"away", unsafe.Offsetof(s.away), unsafe.Sizeof(s.away)},
			{"clientAcks", unsafe.Offsetof(s.clientAcks), unsafe.Sizeof(s.clientAcks)},
			{"acked", unsafe.Offsetof(s.acked), unsafe.Sizeof(s.acked)},
		},
	}
	for want, fields := range lines {
		for _, f := range fields {
			if first, last := f.off/64, (f.off+f.size-1)/64; first != uintptr(want) || last != uintptr(want) {
				t.Errorf("Session.%s is at bytes %d-%d, want it all in cache line %d", f.name, f.off, f.off+f.size-1, want)
			}
		}
	}
}

// TestSessionKeyIsItsNameFolded: the hub files a session under its
// name folded, and finds it by any casing of it.
func TestSessionKeyIsItsNameFolded(t *testing.T) {
	h := New(Options{})
	for _, name := range []string{"alice", "Bob.Smith", "CAROL_9"} {
		s, err := h.Login([]byte(name), &recorder{})
		if err != nil {
			t.Fatal(err)
		}
		if s.Name() != name || s.Key() != strings.ToLower(name) {
			t.Fatalf("%q: name %q, key %q", name, s.Name(), s.Key())
		}
		if _, err := h.Login([]byte(strings.ToUpper(name)), &recorder{}); err != proto.ErrNameTaken {
			t.Fatalf("%q in capitals: %v, want name_taken", name, err)
		}
	}
}

func TestCloseAway(t *testing.T) {
	h, _ := newClockedHub(resumeOpts())
	alice, _ := resumable(t, h, "alice")
	bob, _ := resumable(t, h, "bob")
	pair(t, bob, alice)
	alice.Detach(proto.ReasonDisconnected, 0)
	h.CloseAway(proto.ReasonShutdown)
	if ev := bob.box.last(t); ev.Kind != proto.EvPeerLeft || ev.Reason != proto.ReasonShutdown {
		t.Fatalf("bob was told %+v", ev)
	}
	if st := h.Stats(); st.Away != 0 || st.Users != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestEndAway: a drain that could not park a session ends it, the
// partner told; a session that is not away is left alone.
func TestEndAway(t *testing.T) {
	h, _ := newClockedHub(resumeOpts())
	alice, bob, key := resumablePair(t, h)
	if h.EndAway("bob", proto.ReasonShutdown) {
		t.Fatal("ended bob, who is not away")
	}
	alice.Detach(proto.ReasonShutdown, 0)
	bob.box.take()
	if !h.EndAway("alice", proto.ReasonShutdown) {
		t.Fatal("did not end alice, away")
	}
	if ev := bob.box.last(t); ev.Kind != proto.EvPeerLeft || ev.Peer != "alice" || ev.Reason != proto.ReasonShutdown {
		t.Fatalf("bob was told %+v", ev)
	}
	if st := h.Stats(); st.Away != 0 || st.Users != 1 || st.Pairs != 0 {
		t.Fatalf("stats %+v", st)
	}
	if _, err := h.Resume([]byte(key), 0, false, &recorder{}); err == nil || err.Code != proto.ErrUnknownResumeKey.Code {
		t.Fatalf("resumed an ended session: %v", err)
	}
}

// TestRunsAreNumberedPerMessage: a batching Outbox is handed the first
// number of a run, and one that is not is handed each.
func TestRunsAreNumberedPerMessage(t *testing.T) {
	h, _ := newClockedHub(resumeOpts())
	alice, _ := resumable(t, h, "alice")
	box := &batchRecorder{}
	s, err := h.Login([]byte("bob"), box)
	if err != nil {
		t.Fatal(err)
	}
	bob := user{s, &box.recorder}
	pair(t, alice, bob)
	if _, n, err := alice.SayAll(texts("a", "b", "c"), nil); n != 3 || err != nil {
		t.Fatal(n, err)
	}
	if _, n, err := bob.SayAll(texts("x", "y"), nil); n != 2 || err != nil {
		t.Fatal(n, err)
	}
	if got := seqs(alice.box.take()); len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Fatalf("alice's seqs %v", got)
	}
	// batchRecorder hands on the run as it was given: the first number.
	if got := seqs(bob.box.take()); len(got) != 3 || got[0] != 1 {
		t.Fatalf("bob's seqs %v", got)
	}
	if _, n, err := alice.SayAll(texts("d"), nil); n != 1 || err != nil {
		t.Fatal(n, err)
	}
	if got := seqs(bob.box.take()); len(got) != 1 || got[0] != 4 {
		t.Fatalf("bob's next seq %v", got)
	}
}

// TestKeepingAllocatesNothingInSteadyState: once a history has its
// chunks, relaying to a session that can be resumed allocates nothing,
// whether its history is trimmed for room (a line client never
// acknowledges) or empties with each acknowledgement (a JSON client).
func TestKeepingAllocatesNothingInSteadyState(t *testing.T) {
	for _, acked := range []bool{false, true} {
		h := New(resumeOpts())
		a, _ := h.Login([]byte("alice"), discard{})
		b, _ := h.Login([]byte("bob"), discard{})
		if err := a.Connect([]byte(b.Token().String())); err != nil {
			t.Fatal(err)
		}
		run := [][]byte{[]byte("hello, this is a 64-byte message used for the relay benchmark.")}
		n := 0
		step := func() {
			if _, _, err := a.SayAll(run, nil); err != nil {
				t.Fatal(err)
			}
			if n++; acked && n%32 == 0 {
				b.Ack(uint64(n))
			}
		}
		for range 10000 { // fill the buffer once, so it is trimmed for room
			step()
		}
		if allocs := testing.AllocsPerRun(5000, step); allocs != 0 {
			t.Errorf("acked %v: %v allocations per message", acked, allocs)
		}
	}
}

// BenchmarkSayResume is BenchmarkSay to a session that can be resumed
// and never acknowledges (a line client): every message is copied into
// its history, which is trimmed for room once full.
func BenchmarkSayResume(b *testing.B) { benchmarkSayResume(b, 0) }

// BenchmarkSayResumeAcked is BenchmarkSayResume for a JSON client that
// acknowledges every 32 messages: its history empties and fills again.
func BenchmarkSayResumeAcked(b *testing.B) { benchmarkSayResume(b, 32) }

func benchmarkSayResume(b *testing.B, ackEvery int) {
	h := New(resumeOpts())
	a, _ := h.Login([]byte("alice"), discard{})
	bb, _ := h.Login([]byte("bob"), discard{})
	if err := a.Connect([]byte(bb.Token().String())); err != nil {
		b.Fatal(err)
	}
	run := [][]byte{[]byte("hello, this is a 64-byte message used for the relay benchmark.")}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 1; i <= b.N; i++ {
		if _, _, err := a.SayAll(run, nil); err != nil {
			b.Fatal(err)
		}
		if ackEvery > 0 && i%ackEvery == 0 {
			bb.Ack(uint64(i))
		}
	}
}

// BenchmarkDetachResume times a session going away and coming back with
// 100 messages to replay.
func BenchmarkDetachResume(b *testing.B) {
	h := New(resumeOpts())
	box := &recorder{}
	a, _ := h.Login([]byte("alice"), box)
	key := box.take()[0].ResumeKey
	bb, _ := h.Login([]byte("bob"), discard{})
	if err := bb.Connect([]byte(a.Token().String())); err != nil {
		b.Fatal(err)
	}
	run := make([][]byte, 100)
	for i := range run {
		run[i] = []byte("hello, this is a 64-byte message used for the relay benchmark.")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		a.Detach(proto.ReasonDisconnected, 0)
		if _, n, err := bb.SayAll(run, nil); n != len(run) || err != nil {
			b.Fatal(n, err)
		}
		kb := &keyBox{}
		res, err := h.Resume([]byte(key), 0, true, kb)
		if err != nil || res.Replayed != len(run) {
			b.Fatal(res, err)
		}
		a, key = res.Session, kb.key
		a.Ack(^uint64(0))
	}
}

// keyBox is an Outbox that keeps only the resume key it is told.
type keyBox struct{ key string }

func (k *keyBox) Deliver(ev *proto.Event) {
	if ev.ResumeKey != "" {
		k.key = ev.ResumeKey
	}
}

// BenchmarkSayRun and BenchmarkSayResumeRun relay runs of 64 messages,
// as the engine does with the lines of one socket read: the per-message
// cost of keeping a copy, without the per-call costs.
func BenchmarkSayRun(b *testing.B)       { benchmarkSayRun(b, Options{}) }
func BenchmarkSayResumeRun(b *testing.B) { benchmarkSayRun(b, resumeOpts()) }

func benchmarkSayRun(b *testing.B, opts Options) {
	h := New(opts)
	a, _ := h.Login([]byte("alice"), discard{})
	bb, _ := h.Login([]byte("bob"), discard{})
	if err := a.Connect([]byte(bb.Token().String())); err != nil {
		b.Fatal(err)
	}
	run := make([][]byte, 64)
	for i := range run {
		run[i] = []byte("hello, this is a 64-byte message used for the relay benchmark.")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += len(run) {
		if _, _, err := a.SayAll(run, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSayManyPairs and its Resume variants relay runs of 16 messages
// round the senders of 200 pairs, as a busy server does: what each
// message costs once the state of a pair is no longer in cache. With
// Received, each receiver's transport acknowledges all it was sent
// every 64 messages, as a line client's TCP does (the engine asks right
// after reading from the client).
func BenchmarkSayManyPairs(b *testing.B)         { benchmarkSayManyPairs(b, Options{}, false) }
func BenchmarkSayManyPairsResume(b *testing.B)   { benchmarkSayManyPairs(b, resumeOpts(), false) }
func BenchmarkSayManyPairsReceived(b *testing.B) { benchmarkSayManyPairs(b, resumeOpts(), true) }

func benchmarkSayManyPairs(b *testing.B, opts Options, received bool) {
	const pairs, runLen = 200, 16
	h := New(opts)
	senders := make([]*Session, pairs)
	receivers := make([]*Session, pairs)
	for i := range pairs {
		a, _ := h.Login([]byte(fmt.Sprint("a", i)), discard{})
		r, _ := h.Login([]byte(fmt.Sprint("b", i)), discard{})
		if err := a.Connect([]byte(r.Token().String())); err != nil {
			b.Fatal(err)
		}
		senders[i], receivers[i] = a, r
	}
	run := make([][]byte, runLen)
	for i := range run {
		run[i] = []byte("hello, this is a 64-byte message used for the relay benchmark.")
	}
	sent := make([]uint64, pairs)
	b.ReportAllocs()
	b.ResetTimer()
	for i, p := 0, 0; i < b.N; i, p = i+runLen, (p+1)%pairs {
		if _, _, err := senders[p].SayAll(run, nil); err != nil {
			b.Fatal(err)
		}
		sent[p] += runLen
		if received && sent[p]%64 == 0 {
			receivers[p].Received(sent[p])
		}
	}
}

// TestAwaySessionsEndEachAtItsDeadline: the hub's one away timer ends
// each session when its own window runs out, whatever order they went
// away in (a reload that shortens the window makes a later one due
// sooner), and a session resumed meanwhile is not ended.
func TestAwaySessionsEndEachAtItsDeadline(t *testing.T) {
	h, clk := newClockedHub(resumeOpts()) // a window of two minutes
	long, _ := resumable(t, h, "long")
	short, _ := resumable(t, h, "short")
	back, backKey := resumable(t, h, "back")
	later, _ := resumable(t, h, "later")
	long.Detach(proto.ReasonDisconnected, 0)  // due at 2m
	back.Detach(proto.ReasonDisconnected, 0)  // due at 2m, resumed at 10s
	later.Detach(proto.ReasonDisconnected, 0) // due at 2m
	opts := resumeOpts()
	opts.ResumeWindow = 30 * time.Second
	h.SetOptions(opts)
	clk.advance(10 * time.Second)
	short.Detach(proto.ReasonDisconnected, 0) // due at 40s
	if _, err := h.Resume([]byte(backKey), 0, false, &recorder{}); err != nil {
		t.Fatal(err)
	}
	if len(h.awayDue) != 3 {
		t.Fatalf("%d sessions due, want 3", len(h.awayDue))
	}
	names := func() []string {
		var out []string
		for s := h.awayOldest; s != nil; s = s.away.next {
			out = append(out, s.name)
		}
		return out
	}
	clk.advance(30*time.Second - time.Millisecond)
	if got := names(); len(got) != 3 {
		t.Fatalf("away before any deadline: %v", got)
	}
	clk.advance(time.Millisecond) // 40s
	if got := names(); len(got) != 2 || got[0] != "long" || got[1] != "later" {
		t.Fatalf("away at 40s: %v", got)
	}
	clk.advance(80*time.Second - time.Millisecond)
	if got := names(); len(got) != 2 {
		t.Fatalf("away just before 2m: %v", got)
	}
	clk.advance(time.Millisecond) // 2m
	if got := names(); len(got) != 0 {
		t.Fatalf("away at 2m: %v", got)
	}
	if st := h.Stats(); st.Away != 0 || st.AwayTimedOut != 3 || st.Users != 1 {
		t.Fatalf("stats %+v", st)
	}
	if h.awayTimer != nil || len(h.awayDue) != 0 {
		t.Fatalf("a timer is left for nobody: %v, %d due", h.awayTimer, len(h.awayDue))
	}
}

// TestResumeToldPartnerIsAway: both of a pair drop; the one who comes
// back first is told, after the replay, that the other is away too and
// for how long it may still wait, as a user paired with an away session
// is (TestConnectToAnAwaySession): the peer_away sent when the partner
// dropped reached no connection. When the partner comes back, the
// first is told peer_back.
func TestResumeToldPartnerIsAway(t *testing.T) {
	h, clk := newClockedHub(resumeOpts())
	alice, aliceKey := resumable(t, h, "alice")
	bob, bobKey := resumable(t, h, "bob")
	pair(t, bob, alice)
	sayEach(t, bob.Session, "one")
	alice.Detach(proto.ReasonDisconnected, 0)
	clk.advance(10 * time.Second)
	bob.Detach(proto.ReasonDisconnected, 0)
	clk.advance(30 * time.Second)

	box := &recorder{}
	if _, err := h.Resume([]byte(aliceKey), 0, true, box); err != nil {
		t.Fatal(err)
	}
	resumed, replayed, after := replay(t, box.take())
	if resumed.Peer != "bob" || len(replayed) != 1 {
		t.Fatalf("resumed %+v, replayed %+v", resumed, replayed)
	}
	if len(after) != 1 || after[0].Kind != proto.EvPeerAway || after[0].Peer != "bob" || after[0].Window != 90*time.Second {
		t.Fatalf("after the replay alice was told %+v, want bob's peer_away with 90s left", after)
	}
	if _, err := h.Resume([]byte(bobKey), 0, true, &recorder{}); err != nil {
		t.Fatal(err)
	}
	if ev := box.last(t); ev.Kind != proto.EvPeerBack || ev.Peer != "bob" {
		t.Fatalf("alice was told %+v", ev)
	}
}

// TestAwayEndTellsWhatWasNotDelivered: a session that ends while away
// (its window ran out, the node shut down, a password login replaced
// it) never got what its partner sent it while it was away, nor what its
// connection had not written when it dropped. The partner is told how
// many, as a partner is told when a connection closes with resume off,
// rather than learn nothing of the messages it was let send.
func TestAwayEndTellsWhatWasNotDelivered(t *testing.T) {
	for _, c := range []struct {
		name   string
		end    func(h *Hub, clk *fakeClock, alice user)
		reason proto.Reason
	}{
		{"window", func(_ *Hub, clk *fakeClock, _ user) { clk.advance(2 * time.Minute) }, proto.ReasonTimeout},
		{"shutdown", func(h *Hub, _ *fakeClock, _ user) { h.CloseAway(proto.ReasonShutdown) }, proto.ReasonShutdown},
		{"replaced", func(h *Hub, _ *fakeClock, _ user) {
			if _, err := h.LoginReplacingAway([]byte("alice"), &recorder{}); err != nil {
				t.Fatal(err)
			}
		}, proto.ReasonReplaced},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, clk := newClockedHub(resumeOpts())
			alice, _ := resumable(t, h, "alice")
			bob, _ := resumable(t, h, "bob")
			pair(t, bob, alice)
			sayEach(t, bob.Session, "read", "queued1", "queued2")
			alice.Detach(proto.ReasonDisconnected, 2) // the queued two were never written
			sayEach(t, bob.Session, "are you there?", "hello?", "anyone?")
			bob.box.take()
			c.end(h, clk, alice)
			evs := bob.box.take()
			if len(evs) != 1 || evs[0].Kind != proto.EvPeerLeft || evs[0].Reason != c.reason || evs[0].Count != 5 {
				t.Fatalf("bob was told %+v, want peer_left %s with 5 undelivered", evs, c.reason)
			}
		})
	}
}

// TestAwayEndCountsOnlyThePartnersMessages: the count a partner is told
// is of its own messages, not of those a partner before it left.
func TestAwayEndCountsOnlyThePartnersMessages(t *testing.T) {
	h, clk := newClockedHub(resumeOpts())
	alice, bob, carol, _ := awayFromBob(t, h)
	sayEach(t, bob.Session, "one", "two")
	mustErr(t, bob.Leave(), nil)
	pair(t, carol, alice)
	sayEach(t, carol.Session, "three")
	clk.advance(2 * time.Minute)
	if ev := carol.box.last(t); ev.Kind != proto.EvPeerLeft || ev.Reason != proto.ReasonTimeout || ev.Count != 1 {
		t.Fatalf("carol was told %+v, want peer_left timeout with 1 undelivered", ev)
	}
}

// TestReloadKeepsWhatAnAwaySessionWasGiven: a reload that turns resume
// off, or shortens resume.window, leaves a session that is away already
// the window it was given, and so what was kept for its resume: the
// messages of the moments before its drop, which a line client's resume
// replays, and all a JSON client did not acknowledge.
func TestReloadKeepsWhatAnAwaySessionWasGiven(t *testing.T) {
	for _, c := range []struct {
		window  time.Duration
		hasLast bool
	}{
		{0, false},
		{5 * time.Second, true},
	} {
		t.Run(fmt.Sprint(c.window), func(t *testing.T) {
			h, clk := newClockedHub(resumeOpts())
			alice, bob, key := resumablePair(t, h)
			sayEach(t, bob.Session, "before the drop")
			clk.advance(10 * time.Second)
			alice.Detach(proto.ReasonDisconnected, 0)
			opts := resumeOpts()
			opts.ResumeWindow = c.window
			h.SetOptions(opts)
			clk.advance(time.Minute) // sweeps
			sayEach(t, bob.Session, "while away")
			box := &recorder{}
			res, err := h.Resume([]byte(key), 0, c.hasLast, box)
			if err != nil {
				t.Fatal(err)
			}
			_, replayed, _ := replay(t, box.take())
			if got := strings.Join(texts2(replayed), ","); got != "before the drop,while away" || res.Missed != 0 {
				t.Fatalf("replayed %q, %d missed", got, res.Missed)
			}
		})
	}
}

// TestResumeTellsWhoLeftWhileAway: a partner that goes while the
// session is away is told to no connection. The resume then says, after
// the answer and the replay, the peer_left the session would have been
// told, with who, why and how many of the user's messages never reached
// them, rather than only that the user is paired with no one.
func TestResumeTellsWhoLeftWhileAway(t *testing.T) {
	for _, c := range []struct {
		name        string
		end         func(t *testing.T, clk *fakeClock, bob user)
		reason      proto.Reason
		undelivered int
	}{
		{"leave", func(t *testing.T, _ *fakeClock, bob user) {
			if err := bob.Leave(); err != nil {
				t.Fatal(err)
			}
		}, proto.ReasonLeft, 0},
		{"quit", func(_ *testing.T, _ *fakeClock, bob user) { bob.Close(proto.ReasonLeft, 0) }, proto.ReasonLeft, 0},
		{"disconnected", func(_ *testing.T, _ *fakeClock, bob user) { bob.Close(proto.ReasonDisconnected, 3) }, proto.ReasonDisconnected, 3},
		{"slow", func(_ *testing.T, _ *fakeClock, bob user) { bob.Close(proto.ReasonSlow, 1) }, proto.ReasonSlow, 1},
		// bob goes away after alice, given a shorter window by a
		// reload, and his runs out first.
		{"timeout", func(_ *testing.T, clk *fakeClock, bob user) {
			bob.hub.SetOptions(Options{ResumeWindow: 30 * time.Second})
			bob.Detach(proto.ReasonDisconnected, 0)
			clk.advance(30 * time.Second)
		}, proto.ReasonTimeout, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, clk := newClockedHub(Options{ResumeWindow: 2 * time.Minute})
			alice, key := resumable(t, h, "alice")
			bob, _ := resumable(t, h, "bob")
			pair(t, alice, bob)
			alice.Detach(proto.ReasonDisconnected, 0)
			sayEach(t, bob.Session, "where are you?")
			clk.advance(time.Second)
			c.end(t, clk, bob)

			box := &recorder{}
			res, err := h.Resume([]byte(key), 0, true, box)
			if err != nil {
				t.Fatal(err)
			}
			resumed, replayed, after := replay(t, box.take())
			if resumed.Peer != "" || len(replayed) != 1 {
				t.Fatalf("resumed %+v, replayed %+v", resumed, replayed)
			}
			want := proto.Event{Kind: proto.EvPeerLeft, Peer: "bob", Reason: c.reason, Count: c.undelivered}
			if len(after) != 1 || !reflect.DeepEqual(after[0], want) {
				t.Fatalf("after the replay alice was told %+v, want %+v", after, want)
			}
			// Told once: the next resume has nothing more to say.
			res.Session.Detach(proto.ReasonDisconnected, 0)
			box = &recorder{}
			if _, err := h.Resume([]byte(resumed.ResumeKey), 1, true, box); err != nil {
				t.Fatal(err)
			}
			if _, _, after := replay(t, box.take()); len(after) != 0 {
				t.Fatalf("a second resume told %+v", after)
			}
		})
	}
}

// TestResumeRetellsAcrossAnotherAbsence: alice's resume, whose answer
// told her bob left, is lost with its connection, which drops; carol
// connects to her token meanwhile. Her resume with the key she used
// names carol, and tells bob's leaving again, as an earlier pairing's
// end (ended_away), with the count of her messages he never got.
func TestResumeRetellsAcrossAnotherAbsence(t *testing.T) {
	h, _ := newClockedHub(resumeOpts())
	alice, bob, carol, key := awayFromBob(t, h)
	bob.Close(proto.ReasonLeft, 2)
	lost := &recorder{}
	res, err := h.Resume([]byte(key), 0, true, lost)
	if err != nil {
		t.Fatal(err)
	}
	bobLeft := proto.Event{Kind: proto.EvPeerLeft, Peer: "bob", Reason: proto.ReasonLeft, Count: 2}
	if _, _, after := replay(t, lost.take()); !reflect.DeepEqual(after, []proto.Event{bobLeft}) {
		t.Fatalf("the first resume told %+v", after)
	}
	res.Session.Detach(proto.ReasonDisconnected, 0)
	if err := carol.Connect(tok(alice.Session)); err != nil {
		t.Fatal(err)
	}
	box := &recorder{}
	if _, err := h.Resume([]byte(key), 0, true, box); err != nil {
		t.Fatalf("the key used, its answer lost: %v", err)
	}
	resumed, _, after := replay(t, box.take())
	bobLeft.Kind = proto.EvEndedAway
	if resumed.Peer != "carol" || !reflect.DeepEqual(after, []proto.Event{bobLeft}) {
		t.Fatalf("resumed %+v, then %+v; want carol, and bob's ended_away", resumed, after)
	}
}

// TestResumeRetellsWhatTheLostAnswersConnectionWasTold: the connection
// that carried a resume whose answer was lost is told more while it
// lives (its partner leaves; someone else connects), which its client
// never reads either. A resume with the key used tells that too, as
// news of the absence: bob's leaving, and no "carol is back" of a carol
// who never went away (bob's absence taken for hers).
func TestResumeRetellsWhatTheLostAnswersConnectionWasTold(t *testing.T) {
	h, _ := newClockedHub(resumeOpts())
	// bob leaves while the lost answer's connection lives.
	alice, bob, key := resumablePair(t, h)
	alice.Detach(proto.ReasonDisconnected, 0)
	lost := &recorder{}
	res, err := h.Resume([]byte(key), 0, true, lost)
	if err != nil {
		t.Fatal(err)
	}
	bob.Close(proto.ReasonLeft, 0)
	res.Session.Detach(proto.ReasonDisconnected, 0)
	box := &recorder{}
	if _, err := h.Resume([]byte(key), 0, true, box); err != nil {
		t.Fatal(err)
	}
	want := []proto.Event{{Kind: proto.EvPeerLeft, Peer: "bob", Reason: proto.ReasonLeft}}
	if resumed, _, after := replay(t, box.take()); resumed.Peer != "" || !reflect.DeepEqual(after, want) {
		t.Fatalf("resumed %+v, then %+v; want bob's peer_left", resumed, after)
	}

	// dave, away as erin went away, comes back and leaves, and frank
	// connects, while the lost answer's connection lives.
	erin, ekey := resumable(t, h, "erin")
	dave, dkey := resumable(t, h, "dave")
	frank, _ := resumable(t, h, "frank")
	pair(t, dave, erin)
	dave.Detach(proto.ReasonDisconnected, 0)
	erin.Detach(proto.ReasonDisconnected, 0)
	lost = &recorder{}
	if res, err = h.Resume([]byte(ekey), 0, true, lost); err != nil {
		t.Fatal(err)
	}
	daveBack, err := h.Resume([]byte(dkey), 0, true, &recorder{})
	if err != nil {
		t.Fatal(err)
	}
	daveBack.Session.Close(proto.ReasonLeft, 0)
	if err := frank.Connect(tok(erin.Session)); err != nil {
		t.Fatal(err)
	}
	res.Session.Detach(proto.ReasonDisconnected, 0)
	box = &recorder{}
	if _, err := h.Resume([]byte(ekey), 0, true, box); err != nil {
		t.Fatal(err)
	}
	want = []proto.Event{{Kind: proto.EvEndedAway, Peer: "dave", Reason: proto.ReasonLeft}}
	if resumed, _, after := replay(t, box.take()); resumed.Peer != "frank" || !reflect.DeepEqual(after, want) {
		t.Fatalf("resumed %+v, then %+v; want frank, and dave's ended_away alone", resumed, after)
	}
}

// TestResumeTellsEachPairingsEnd: a pairing made after one that ended
// while the session was away (someone connected to the token) is what
// the answer names, and the earlier one's end is told as ended_away,
// not peer_left, which would read as the end of the new one; when that
// one ends too, its end is told last, as peer_left.
func TestResumeTellsEachPairingsEnd(t *testing.T) {
	h, _ := newClockedHub(resumeOpts())
	alice, bob, carol, key := awayFromBob(t, h)
	dave, _ := resumable(t, h, "dave")
	bob.Close(proto.ReasonLeft, 0)
	if err := carol.Connect(tok(alice.Session)); err != nil {
		t.Fatal(err)
	}
	box := &recorder{}
	res, err := h.Resume([]byte(key), 0, true, box)
	if err != nil {
		t.Fatal(err)
	}
	resumed, _, after := replay(t, box.take())
	bobLeft := proto.Event{Kind: proto.EvEndedAway, Peer: "bob", Reason: proto.ReasonLeft}
	if resumed.Peer != "carol" || len(after) != 1 || !reflect.DeepEqual(after[0], bobLeft) {
		t.Fatalf("resumed %+v, then %+v; want carol, and bob's ended_away", resumed, after)
	}

	// Away again: carol goes, dave connects and goes too.
	res.Session.Detach(proto.ReasonDisconnected, 0)
	carol.Close(proto.ReasonDisconnected, 2)
	if err := dave.Connect(tok(alice.Session)); err != nil {
		t.Fatal(err)
	}
	if err := dave.Leave(); err != nil {
		t.Fatal(err)
	}
	box = &recorder{}
	if _, err := h.Resume([]byte(resumed.ResumeKey), 0, true, box); err != nil {
		t.Fatal(err)
	}
	resumed, _, after = replay(t, box.take())
	want := []proto.Event{
		{Kind: proto.EvEndedAway, Peer: "carol", Reason: proto.ReasonDisconnected, Count: 2},
		// dave connected while alice was away, which she never heard.
		{Kind: proto.EvPeerLeft, Peer: "dave", Reason: proto.ReasonLeft, JoinedAway: true},
	}
	if resumed.Peer != "" || !reflect.DeepEqual(after, want) {
		t.Fatalf("resumed %+v, then %+v; want carol's ended_away, then dave's peer_left", resumed, after)
	}
}

// TestResumeAfterALiveLeaveTellsNothingMore: a peer_left the session's
// connection was told is not told again by a later resume.
func TestResumeAfterALiveLeaveTellsNothingMore(t *testing.T) {
	h, _ := newClockedHub(resumeOpts())
	alice, bob, key := resumablePair(t, h)
	bob.Close(proto.ReasonLeft, 0)
	if ev := alice.box.last(t); ev.Kind != proto.EvPeerLeft {
		t.Fatalf("alice was told %+v", ev)
	}
	alice.Detach(proto.ReasonDisconnected, 0)
	box := &recorder{}
	if _, err := h.Resume([]byte(key), 0, true, box); err != nil {
		t.Fatal(err)
	}
	if _, _, after := replay(t, box.take()); len(after) != 0 {
		t.Fatalf("after the resume alice was told %+v", after)
	}
}

// TestResumeAfterResumeTurnedOffGivesNoKey: a session away when a reload
// turns resume off can still be resumed, but the resume gives no key
// for the next drop, which ends the session: none that would not work.
func TestResumeAfterResumeTurnedOffGivesNoKey(t *testing.T) {
	h, _ := newClockedHub(resumeOpts())
	alice, bob, key := resumablePair(t, h)
	alice.Detach(proto.ReasonDisconnected, 0)
	h.SetOptions(Options{})
	box := &recorder{}
	res, err := h.Resume([]byte(key), 0, false, box)
	if err != nil {
		t.Fatal(err)
	}
	ev, _, _ := replay(t, box.take())
	if ev.ResumeKey != "" || ev.Peer != "bob" {
		t.Fatalf("resumed %+v, want no key", ev)
	}
	bob.box.take()
	res.Session.Detach(proto.ReasonDisconnected, 0)
	if evs := bob.box.take(); len(evs) != 1 || evs[0].Kind != proto.EvPeerLeft || evs[0].Reason != proto.ReasonDisconnected {
		t.Fatalf("bob was told %+v", evs)
	}
}

// TestAwayTellsWhatCouldNotBeKept: a reader that stopped reading goes
// away with more of its partner's messages unwritten than resume.buffer
// keeps. The partner is told, with the away news, how many of its
// messages will never reach the reader: exactly as many as the reader's
// resume reports missed. Told once: the end of the window, or of a
// parked session, counts only what was kept (and what came after).
func TestAwayTellsWhatCouldNotBeKept(t *testing.T) {
	const sent, kept = 10, 4
	opts := resumeOpts()
	opts.ResumeBuffer = kept * (2 + entryCost) // a0..a9: two bytes each
	for _, end := range []string{"line resume", "json resume", "window", "parked"} {
		t.Run(end, func(t *testing.T) {
			h, clk := newClockedHub(opts)
			alice, bob, key := resumablePair(t, h)
			sayEach(t, bob.Session, numbered("a", 0, sent)...)
			// Her connection wrote none of them: the oldest six were
			// dropped for room while she was attached.
			alice.Detach(proto.ReasonSlow, sent)
			evs := bob.box.take()
			if len(evs) != 1 || evs[0].Kind != proto.EvPeerAway || evs[0].Count != sent-kept {
				t.Fatalf("bob was told %+v, want peer_away with %d undelivered", evs, sent-kept)
			}
			switch end {
			case "line resume", "json resume":
				res, err := h.Resume([]byte(key), 0, end == "json resume", &recorder{})
				if err != nil || res.Missed != evs[0].Count || res.Replayed != kept {
					t.Fatalf("resume %+v, %v; want %d missed, as bob was told, and %d replayed", res, err, evs[0].Count, kept)
				}
			// The kept ones fill resume.buffer: bob may send no more.
			case "window":
				clk.advance(2 * time.Minute)
				if ev := bob.box.last(t); ev.Kind != proto.EvPeerLeft || ev.Count != kept {
					t.Fatalf("bob was told %+v, want peer_left with %d undelivered", ev, kept)
				}
			case "parked":
				for _, p := range h.Snapshot() {
					if p.Name != "alice" {
						continue
					}
					if n := p.UndeliveredFrom("bob"); n != kept {
						t.Fatalf("undelivered from bob: %d, want %d", n, kept)
					}
					return
				}
				t.Fatal("alice was not parked")
			}
		})
	}
}

// TestAwayToldToAPartnerAwayItself: bob goes away, then alice, who had
// stopped reading, goes away with more of bob's messages unwritten than
// resume.buffer keeps. The peer_away that counts them goes nowhere: bob
// is away. His resume tells him alice is away, with that count, once;
// and her window's end, after, counts only what was kept. Before, the
// count was lost with bob's connection: his resume said she was away,
// and nothing of the six.
func TestAwayToldToAPartnerAwayItself(t *testing.T) {
	const sent, kept = 10, 4
	opts := resumeOpts()
	opts.ResumeBuffer = kept * (2 + entryCost) // a0..a9: two bytes each
	h, clk := newClockedHub(opts)
	alice, _ := resumable(t, h, "alice")
	bob, bobKey := resumable(t, h, "bob")
	pair(t, bob, alice)
	sayEach(t, bob.Session, numbered("a", 0, sent)...)
	bob.Detach(proto.ReasonDisconnected, 0)
	alice.Detach(proto.ReasonSlow, sent)

	box := &recorder{}
	if _, err := h.Resume([]byte(bobKey), 0, true, box); err != nil {
		t.Fatal(err)
	}
	var away []proto.Event
	for _, ev := range box.take() {
		if ev.Kind == proto.EvPeerAway {
			away = append(away, ev)
		}
	}
	if len(away) != 1 || away[0].Peer != "alice" || away[0].Count != sent-kept {
		t.Fatalf("bob's resume told him %+v, want one peer_away with %d undelivered", away, sent-kept)
	}
	clk.advance(2 * time.Minute)
	if ev := box.last(t); ev.Kind != proto.EvPeerLeft || ev.Count != kept {
		t.Fatalf("bob was told %+v, want peer_left with %d undelivered", ev, kept)
	}
}

// TestDrainedPartnerToldOnResume: the hub drains for a restart, and
// alice goes away first: bob, about to be told of the restart himself,
// is not told she lost the connection. Each resume says where the other
// is by then: alice, back first, that bob's server is restarting; bob
// nothing of alice, whose going he never heard of (before, that she is
// back: news of a return whose start he was never told); and alice then
// that bob is back.
func TestDrainedPartnerToldOnResume(t *testing.T) {
	h := New(resumeOpts())
	alice, key := resumable(t, h, "alice")
	bob, bobKey := resumable(t, h, "bob")
	pair(t, bob, alice)
	h.SetDraining()
	alice.Detach(proto.ReasonDisconnected, 0)
	if evs := bob.box.take(); len(evs) != 0 {
		t.Fatalf("bob, to be drained too, is told %+v", evs)
	}
	bob.Detach(proto.ReasonDisconnected, 0)

	aliceBack := &recorder{}
	if _, err := h.Resume([]byte(key), 0, false, aliceBack); err != nil {
		t.Fatal(err)
	}
	if ev := aliceBack.last(t); ev.Kind != proto.EvPeerAway || ev.Peer != "bob" || ev.Reason != proto.ReasonShutdown {
		t.Fatalf("alice's resume ends with %+v, want bob away for the restart", ev)
	}
	bobBack := &recorder{}
	if _, err := h.Resume([]byte(bobKey), 0, false, bobBack); err != nil {
		t.Fatal(err)
	}
	if ev := bobBack.last(t); ev.Kind != proto.EvResumed || ev.Peer != "alice" {
		t.Fatalf("bob's resume ends with %+v, want the resumed event alone", ev)
	}
	if ev := aliceBack.last(t); ev.Kind != proto.EvPeerBack || ev.Peer != "bob" {
		t.Fatalf("alice is told %+v, want bob back", ev)
	}
}

// TestResumeToldWhoConnectedWhileAway: alice is away, unpaired; carol
// connects to her token, says something and times out; dave connects,
// says something and leaves. alice's resume replays both, and tells
// that each connected while she was away, and how each pairing ended.
// Before, she read carol's and dave's messages and that they left,
// never that they had connected.
func TestResumeToldWhoConnectedWhileAway(t *testing.T) {
	h, _ := newClockedHub(resumeOpts())
	alice, key := resumable(t, h, "alice")
	carol, _ := resumable(t, h, "carol")
	dave, _ := resumable(t, h, "dave")
	alice.Detach(proto.ReasonDisconnected, 0)
	if err := carol.Connect(tok(alice.Session)); err != nil {
		t.Fatal(err)
	}
	if err := say(carol.Session, []byte("hello from carol")); err != nil {
		t.Fatal(err)
	}
	carol.Close(proto.ReasonTimeout, 0)
	if err := dave.Connect(tok(alice.Session)); err != nil {
		t.Fatal(err)
	}
	if err := say(dave.Session, []byte("hello from dave")); err != nil {
		t.Fatal(err)
	}
	if err := dave.Leave(); err != nil {
		t.Fatal(err)
	}
	box := &recorder{}
	if _, err := h.Resume([]byte(key), 0, true, box); err != nil {
		t.Fatal(err)
	}
	resumed, evs, after := replay(t, box.take())
	if got := texts2(evs); resumed.Peer != "" || !reflect.DeepEqual(got, []string{"hello from carol", "hello from dave"}) {
		t.Fatalf("resumed %+v, replayed %q", resumed, got)
	}
	want := []proto.Event{
		{Kind: proto.EvEndedAway, Peer: "carol", Reason: proto.ReasonTimeout, JoinedAway: true},
		{Kind: proto.EvPeerLeft, Peer: "dave", Reason: proto.ReasonLeft, JoinedAway: true},
	}
	if !reflect.DeepEqual(after, want) {
		t.Fatalf("then %+v; want %+v", after, want)
	}
}

// ackingRecorder is a recorder whose transport acknowledged every
// message handed to it, as a line client's TCP does for one that reads
// all, or for one that never will, once its kernel has them.
type ackingRecorder struct {
	recorder
	acked uint64
}

func (q *ackingRecorder) Deliver(ev *proto.Event) {
	if ev.Seq > 0 {
		q.acked = ev.Seq
	}
	q.recorder.Deliver(ev)
}

func (q *ackingRecorder) TransportAcked(int) uint64 { return q.acked }

// TestResumeAnswerLostReplaysItAgain: alice, on the line protocol, is
// away while bob says something; her resume's answer replays it, and
// her connection's TCP acknowledges it, but the connection dies before
// her client reads any of it (a phone that lost its network again). Her
// retry with the key she used, long past resume.replay_recent, replays
// it again. Before, the sweep, or her connection's next read, dropped it
// as received, and the retry replayed nothing: lost, untold.
func TestResumeAnswerLostReplaysItAgain(t *testing.T) {
	h, clk := newClockedHub(resumeOpts())
	alice, bob, key := resumablePair(t, h)
	alice.Detach(proto.ReasonDisconnected, 0)
	if err := say(bob.Session, []byte("while you were away")); err != nil {
		t.Fatal(err)
	}
	clk.advance(time.Minute)
	replayed := func(res Resumed, box *ackingRecorder) string {
		t.Helper()
		var got []string
		for _, ev := range box.take() {
			if ev.Kind == proto.EvMessage {
				got = append(got, string(ev.Text))
			}
		}
		return fmt.Sprint(res.Replayed, got)
	}
	lost := &ackingRecorder{}
	res, err := h.Resume([]byte(key), 0, false, lost)
	if err != nil {
		t.Fatal(err)
	}
	if got := replayed(res, lost); got != "1 [while you were away]" {
		t.Fatalf("the answer replayed %s", got)
	}
	// What its TCP acknowledged is dropped as received: by the sweep,
	// and as the connection reads.
	clk.advance(h.sweepPeriod())
	res.Session.Received(lost.acked)
	res.Session.Detach(proto.ReasonDisconnected, 0)
	clk.advance(time.Minute)

	back := &ackingRecorder{}
	res, err = h.Resume([]byte(key), 0, false, back)
	if err != nil {
		t.Fatal(err)
	}
	if got := replayed(res, back); got != "1 [while you were away]" {
		t.Fatalf("the retry with the key the lost answer's resume used replayed %s", got)
	}
	// She reads it, and says so: what was replayed is hers, and goes.
	res.Session.KeyReceived()
	res.Session.Received(back.acked)
	res.Session.hmu.Lock()
	kept := res.Session.hist != nil && res.Session.hist.n > 0
	res.Session.hmu.Unlock()
	if kept {
		t.Fatal("what she received is still kept once she showed she read the answer")
	}
}
