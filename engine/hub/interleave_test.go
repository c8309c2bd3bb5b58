package hub

import (
	"strings"
	"sync"
	"testing"
	"time"

	"duet/proto"
)

// Interleavings of two connections' calls that the hub's own steps
// leave room for: each test pauses one call inside a directory call,
// where a cluster's directory waits a Redis round trip, and makes the
// other call then.

// claimPause pauses the first Claim after the directory answered.
type claimPause struct {
	Directory
	once            sync.Once
	claimed, resume chan struct{}
}

func (d *claimPause) Claim(key string, t proto.Token) (Claim, *proto.Error) {
	c, err := d.Directory.Claim(key, t)
	d.once.Do(func() {
		d.claimed <- struct{}{}
		<-d.resume
	})
	return c, err
}

// TestConnectToATokenLetGoMeanwhile: charlie connects to alice's token;
// between the directory's claim and the pairing alice logs out and
// someone else logs in as alice. The new alice never gave charlie a
// token: charlie is told unknown_token, and neither is paired.
func TestConnectToATokenLetGoMeanwhile(t *testing.T) {
	h := New(Options{})
	cp := &claimPause{Directory: h.dir, claimed: make(chan struct{}), resume: make(chan struct{})}
	h.dir = cp
	alice := login(t, h, "alice")
	charlie := login(t, h, "charlie")
	token := tok(alice.Session)
	done := make(chan *proto.Error)
	go func() { done <- charlie.Connect(token) }()
	<-cp.claimed
	alice.Close(proto.ReasonLeft, 0)
	newAlice := login(t, h, "alice")
	close(cp.resume)
	if err := <-done; err == nil || err.Code != proto.ErrUnknownToken.Code {
		t.Fatalf("charlie's connect: %v, want unknown_token", err)
	}
	if p := newAlice.Peer(); p != "" {
		t.Fatalf("the new alice is paired with %q", p)
	}
	for _, ev := range newAlice.box.take() {
		if ev.Kind == proto.EvPaired {
			t.Fatalf("the new alice was told %+v", ev)
		}
	}
	// Both are free: the new alice's own token pairs them.
	if err := charlie.Connect(tok(newAlice.Session)); err != nil {
		t.Fatalf("charlie's connect to the new alice's token: %v", err)
	}
}

// TestConnectToATokenRetiredMeanwhile: between the claim and the
// pairing, alice draws a new token. The old one pairs nobody.
func TestConnectToATokenRetiredMeanwhile(t *testing.T) {
	h := New(Options{})
	cp := &claimPause{Directory: h.dir, claimed: make(chan struct{}), resume: make(chan struct{})}
	h.dir = cp
	alice := login(t, h, "alice")
	charlie := login(t, h, "charlie")
	token := tok(alice.Session)
	done := make(chan *proto.Error)
	go func() { done <- charlie.Connect(token) }()
	<-cp.claimed
	newToken := make(chan *proto.Error)
	go func() { newToken <- alice.NewToken() }()
	for deadline := time.Now().Add(10 * time.Second); string(tok(alice.Session)) == string(token); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("alice's new token never came")
		}
	}
	close(cp.resume)
	if err := <-done; err == nil || err.Code != proto.ErrUnknownToken.Code {
		t.Fatalf("charlie's connect: %v, want unknown_token", err)
	}
	if err := <-newToken; err != nil {
		t.Fatal(err)
	}
	if p := alice.Peer(); p != "" {
		t.Fatalf("alice is paired with %q", p)
	}
	if err := charlie.Connect(tok(alice.Session)); err != nil {
		t.Fatalf("charlie's connect to alice's new token: %v", err)
	}
}

// releasePause pauses the first Release.
type releasePause struct {
	Directory
	once           sync.Once
	paused, resume chan struct{}
}

func (d *releasePause) Release(key string, pairID uint64) {
	d.once.Do(func() {
		d.paused <- struct{}{}
		<-d.resume
	})
	d.Directory.Release(key, pairID)
}

// TestLeaveRacingResume: alice's old connection asks to leave as her new
// one resumes. The leave, asked first, ends the pairing: the new
// connection is told it left, bob that alice left, and the directory
// and the hub agree that both are free.
func TestLeaveRacingResume(t *testing.T) {
	h := New(Options{ResumeWindow: time.Minute})
	alice, bob, key := resumablePair(t, h)
	rp := &releasePause{Directory: h.dir, paused: make(chan struct{}), resume: make(chan struct{})}
	h.dir = rp
	done := make(chan *proto.Error)
	go func() { done <- alice.Leave() }()
	<-rp.paused
	box := &recorder{}
	res, err := h.Resume([]byte(key), 0, false, box)
	if err != nil {
		t.Fatal(err)
	}
	close(rp.resume)
	if err := <-done; err != nil {
		t.Fatalf("leave: %v", err)
	}
	now := res.Session
	h.mu.Lock()
	nowClaim, bobClaim := now.claim, bob.claim
	h.mu.Unlock()
	if now.Peer() != "" || bob.Peer() != "" || nowClaim != 0 || bobClaim != 0 {
		t.Fatalf("alice paired with %q, bob with %q; directory claims alice %d, bob %d", now.Peer(), bob.Peer(), nowClaim, bobClaim)
	}
	left := false
	for _, ev := range box.take() {
		left = left || ev.Kind == proto.EvLeft && ev.Peer == "bob"
	}
	if !left {
		t.Fatal("alice's new connection was not told she left bob")
	}
	told := false
	for _, ev := range bob.box.take() {
		told = told || ev.Kind == proto.EvPeerLeft && ev.Reason == proto.ReasonLeft
	}
	if !told {
		t.Fatal("bob was not told alice left")
	}
}

// TestAwayFullCountsTheSendersOwn: alice is away; bob fills what is kept
// for her and leaves; charlie pairs with her. When his message does not
// fit, he is told of his own messages waiting, not of bob's.
func TestAwayFullCountsTheSendersOwn(t *testing.T) {
	h := New(Options{ResumeWindow: time.Minute, ResumeBuffer: 10 * (entryCost + 100)})
	alice, bob, _ := resumablePair(t, h)
	alice.Detach(proto.ReasonDisconnected, 0)
	text := []byte(strings.Repeat("b", 100))
	for i := range 9 {
		if err := say(bob.Session, text); err != nil {
			t.Fatalf("bob's message %d: %v", i, err)
		}
	}
	if err := bob.Leave(); err != nil {
		t.Fatal(err)
	}
	charlie, _ := resumable(t, h, "charlie")
	pair(t, charlie, alice)
	if err := say(charlie.Session, text); err != nil {
		t.Fatalf("charlie's first message: %v", err)
	}
	err := say(charlie.Session, []byte("hi"))
	if err == nil || err.Code != proto.ErrPeerAwayFull.Code {
		t.Fatalf("charlie's second message: %v, want peer_away_full", err)
	}
	if want := "alice is away, and 1 of your messages (100 bytes) is waiting for them; this one was not sent"; err.Text != want {
		t.Fatalf("charlie was told %q, want %q", err.Text, want)
	}
}

// claimFirst makes another connect, run, before the Claim of the
// session named key reaches the directory.
type claimFirst struct {
	Directory
	key   string
	first func()
	once  sync.Once
}

func (d *claimFirst) Claim(key string, t proto.Token) (Claim, *proto.Error) {
	if key == d.key {
		d.once.Do(d.first)
	}
	return d.Directory.Claim(key, t)
}

// TestCrossedConnectNamesThePartner: alice and bob connect to each
// other at once, and alice's connect claims and pairs them while bob's
// is on its way to the directory. Bob is answered already_paired with
// alice's name, as the partner's name is told to anyone already paired.
func TestCrossedConnectNamesThePartner(t *testing.T) {
	h := New(Options{})
	alice := login(t, h, "alice")
	bob := login(t, h, "bob")
	cf := &claimFirst{Directory: h.dir, key: bob.Key(), first: func() {
		if err := alice.Connect(tok(bob.Session)); err != nil {
			t.Errorf("alice's connect: %v", err)
		}
	}}
	h.dir = cf
	err := bob.Connect(tok(alice.Session))
	if want := proto.AlreadyPaired("alice"); err == nil || err.Code != want.Code || err.Text != want.Text {
		t.Fatalf("bob's connect: %v, want %q", err, want.Text)
	}
	if p := bob.Peer(); p != "alice" {
		t.Fatalf("bob is paired with %q, want alice", p)
	}
}
