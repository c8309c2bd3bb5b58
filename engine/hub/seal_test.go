package hub

import (
	"strings"
	"testing"

	"duet/proto"
)

// speaker is a recorder that says which protocol its connection speaks,
// as the engine's outbox does (Speaker).
type speaker struct {
	recorder
	speaks proto.Protocol
}

func (s *speaker) Protocol() proto.Protocol { return s.speaks }

// speakerLogin logs name in through a speaker of protocol p and returns
// the user, its recorder and its resume key (when resume is on).
func speakerLogin(t *testing.T, h *Hub, name string, p proto.Protocol) (user, *speaker, string) {
	t.Helper()
	box := &speaker{speaks: p}
	s, err := h.Login([]byte(name), box)
	if err != nil {
		t.Fatalf("login %s: %v", name, err)
	}
	ev := box.last(t)
	if ev.Kind != proto.EvWelcome {
		t.Fatalf("login %s: got %+v", name, ev)
	}
	return user{s, &box.recorder}, box, ev.ResumeKey
}

// describe renders events for a failure message and a comparison.
func describe(evs []proto.Event) string {
	var b strings.Builder
	for _, ev := range evs {
		b.WriteString(ev.Kind.String())
		b.WriteByte(' ')
		b.WriteString(ev.From)
		b.WriteByte(' ')
		b.Write(ev.Text)
		b.WriteByte(' ')
		b.WriteString(strings.Repeat("#", int(ev.Seq)))
		b.WriteByte(';')
	}
	return b.String()
}

// TestSealRelaysOpaqueInOrder: a sealed frame reaches a browser partner
// as it was sent, numbered in the same sequence as messages, in order
// with them, and counted apart from them; both sides were told the
// other's protocol and the same pairing id.
func TestSealRelaysOpaqueInOrder(t *testing.T) {
	h := New(resumeOpts())
	alice, abox, _ := speakerLogin(t, h, "alice", proto.ProtoJSON)
	bob, bbox, _ := speakerLogin(t, h, "bob", proto.ProtoJSON)
	if err := bob.Connect(tok(alice.Session)); err != nil {
		t.Fatal(err)
	}
	ap, bp := abox.last(t), bbox.last(t)
	if ap.Kind != proto.EvPaired || ap.Initiator || ap.PeerProto != proto.ProtoJSON || ap.PairID == 0 ||
		bp.Kind != proto.EvPaired || !bp.Initiator || bp.PeerProto != proto.ProtoJSON || bp.PairID != ap.PairID {
		t.Fatalf("paired: alice %+v, bob %+v", ap, bp)
	}

	sayEach(t, bob.Session, "one")
	// Any bytes at all: the hub neither reads nor checks them.
	if _, err := bob.Seal([]byte("AQQAAAAAAAAAAfo_eEKPDsp2p1I9GsiZCiqINQ"), 0); err != nil {
		t.Fatal(err)
	}
	sayEach(t, bob.Session, "two")
	got := describe(abox.take())
	want := "message bob one #;sealed bob AQQAAAAAAAAAAfo_eEKPDsp2p1I9GsiZCiqINQ ##;message bob two ###;"
	if got != want {
		t.Fatalf("alice got %s, want %s", got, want)
	}
	if st := h.Stats(); st.Messages != 2 || st.Bytes != 6 || st.Sealed != 1 || st.SealedBytes != 38 {
		t.Fatalf("stats %+v", st)
	}
	// A second pairing gets another id.
	if err := bob.Leave(); err != nil {
		t.Fatal(err)
	}
	if err := bob.Connect(tok(alice.Session)); err != nil {
		t.Fatal(err)
	}
	if again := bbox.last(t); again.PairID == 0 || again.PairID == bp.PairID {
		t.Fatalf("a new pairing has id %x, the last had %x", again.PairID, bp.PairID)
	}
	// The counts outlive the session.
	bob.Close(proto.ReasonLeft, 0)
	if st := h.Stats(); st.Sealed != 1 || st.SealedBytes != 38 {
		t.Fatalf("stats after logout %+v", st)
	}
}

// TestSealRefusals: a sealed frame goes only to a partner whose client
// can open it, within the size limit, and never without a partner.
func TestSealRefusals(t *testing.T) {
	h := New(Options{MaxText: 100})
	alice, abox, _ := speakerLogin(t, h, "alice", proto.ProtoJSON)
	bob, bbox, _ := speakerLogin(t, h, "bob", proto.ProtoLine)
	carol := login(t, h, "carol") // an Outbox that does not say: unknown

	if _, err := alice.Seal([]byte("AQUB"), 0); err != proto.ErrNotPaired {
		t.Fatalf("seal unpaired: %v", err)
	}
	if err := alice.Connect(tok(bob.Session)); err != nil {
		t.Fatal(err)
	}
	if ev := abox.last(t); ev.PeerProto != proto.ProtoLine {
		t.Fatalf("alice was told %+v", ev)
	}
	if ev := bbox.last(t); ev.PeerProto != proto.ProtoJSON {
		t.Fatalf("bob was told %+v", ev)
	}
	if _, err := alice.Seal([]byte("AQUB"), 0); err != proto.ErrPeerCannotDecrypt {
		t.Fatalf("seal to a terminal: %v", err)
	}
	if evs := bbox.take(); len(evs) != 0 {
		t.Fatalf("the terminal got %s", describe(evs))
	}
	if err := alice.Leave(); err != nil {
		t.Fatal(err)
	}
	if err := alice.Connect(tok(carol.Session)); err != nil {
		t.Fatal(err)
	}
	if ev := abox.last(t); ev.Kind != proto.EvPaired || ev.PeerProto != proto.ProtoUnknown {
		t.Fatalf("alice was told %+v", ev)
	}
	if _, err := alice.Seal([]byte("AQUB"), 0); err != proto.ErrPeerCannotDecrypt {
		t.Fatalf("seal to a client that does not say: %v", err)
	}
	if st := h.Stats(); st.Sealed != 0 {
		t.Fatalf("stats %+v", st)
	}

	// The limit: 4 * ceil((max_text + 64) / 3).
	if got := proto.SealedLimit(16 << 10); got != 21932 {
		t.Fatalf("SealedLimit(16 KiB) = %d", got)
	}
	dave, _, _ := speakerLogin(t, h, "dave", proto.ProtoJSON)
	carol.Close(proto.ReasonLeft, 0)
	if err := alice.Connect(tok(dave.Session)); err != nil {
		t.Fatal(err)
	}
	limit := proto.SealedLimit(100) // 220
	if _, err := alice.Seal([]byte(strings.Repeat("A", int(limit)+1)), 0); err != proto.ErrTooLong {
		t.Fatalf("seal over the limit: %v", err)
	}
	if _, err := alice.Seal([]byte(strings.Repeat("A", int(limit))), 0); err != nil {
		t.Fatalf("seal at the limit: %v", err)
	}
	if _, err := alice.Seal(nil, 0); err != proto.ErrEmptyMessage {
		t.Fatalf("empty seal: %v", err)
	}
}

// TestSealedSurvivesResume: sealed frames kept for a session that is
// away are replayed on its resume, numbered and in order with messages,
// and the resume tells the page the pairing it finds (id, role, the
// partner's protocol); the partner is told which protocol it came back
// over, and from then on a seal follows that.
func TestSealedSurvivesResume(t *testing.T) {
	h, _ := newClockedHub(resumeOpts())
	alice, abox, key := speakerLogin(t, h, "alice", proto.ProtoJSON)
	bob, bbox, _ := speakerLogin(t, h, "bob", proto.ProtoJSON)
	if err := bob.Connect(tok(alice.Session)); err != nil {
		t.Fatal(err)
	}
	paired := abox.last(t)
	bbox.take()

	if _, err := bob.Seal([]byte("c2VhbGVkMQ"), 0); err != nil {
		t.Fatal(err)
	}
	alice.Detach(proto.ReasonDisconnected, 0)
	bbox.take()
	sayEach(t, bob.Session, "plain")
	if _, err := bob.Seal([]byte("c2VhbGVkMg"), 0); err != nil {
		t.Fatal(err)
	}

	box := &speaker{speaks: proto.ProtoJSON}
	res, err := h.Resume([]byte(key), 0, true, box)
	if err != nil {
		t.Fatal(err)
	}
	resumed, replayed, _ := replay(t, box.take())
	if resumed.Peer != "bob" || resumed.Initiator || resumed.PeerProto != proto.ProtoJSON || resumed.PairID != paired.PairID {
		t.Fatalf("resumed %+v, paired %+v", resumed, paired)
	}
	want := "sealed bob c2VhbGVkMQ #;message bob plain ##;sealed bob c2VhbGVkMg ###;"
	if got := describe(replayed); got != want {
		t.Fatalf("replayed %s, want %s", got, want)
	}
	if ev := bbox.last(t); ev.Kind != proto.EvPeerBack || ev.PeerProto != proto.ProtoJSON {
		t.Fatalf("bob was told %+v", ev)
	}
	// A replayed frame acknowledged is not replayed again.
	res.Session.Ack(3)

	// alice comes back over the line protocol: bob is told, his next
	// seal is refused, and a sealed frame kept for her is still handed
	// over as sealed, for her terminal to say that one came.
	if _, err := bob.Seal([]byte("c2VhbGVkMw"), 0); err != nil {
		t.Fatal(err)
	}
	res.Session.Detach(proto.ReasonDisconnected, 0)
	bbox.take()
	line := &speaker{speaks: proto.ProtoLine}
	res2, err := h.Resume([]byte(resumed.ResumeKey), 0, false, line)
	if err != nil {
		t.Fatal(err)
	}
	_, replayed, _ = replay(t, line.take())
	if got := describe(replayed); got != "sealed bob c2VhbGVkMw ####;" {
		t.Fatalf("replayed over the line protocol: %s", got)
	}
	if ev := bbox.last(t); ev.Kind != proto.EvPeerBack || ev.PeerProto != proto.ProtoLine {
		t.Fatalf("bob was told %+v", ev)
	}
	if _, err := bob.Seal([]byte("c2VhbGVkNA"), 0); err != proto.ErrPeerCannotDecrypt {
		t.Fatalf("seal after the partner came back on a terminal: %v", err)
	}
	if st := h.Stats(); st.Sealed != 3 || res2.Session.Peer() != "bob" {
		t.Fatalf("stats %+v", st)
	}
}

// TestSealedCountsAgainstAwayBuffer: what is kept for an away session
// is bounded the same way whether sealed or not, and a sealed frame that
// does not fit is refused, never dropped.
func TestSealedCountsAgainstAwayBuffer(t *testing.T) {
	opts := resumeOpts()
	opts.ResumeBuffer = 2 * (4 + entryCost)
	h, _ := newClockedHub(opts)
	alice, _, key := speakerLogin(t, h, "alice", proto.ProtoJSON)
	bob, _, _ := speakerLogin(t, h, "bob", proto.ProtoJSON)
	if err := bob.Connect(tok(alice.Session)); err != nil {
		t.Fatal(err)
	}
	alice.Detach(proto.ReasonDisconnected, 0)
	for _, data := range []string{"AQUB", "AQUC"} {
		if _, err := bob.Seal([]byte(data), 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bob.Seal([]byte("AQUD"), 0); err == nil || err.Code != proto.ErrPeerAwayFull.Code {
		t.Fatalf("third seal: %v", err)
	}
	if st := h.Stats(); st.Sealed != 2 || st.AwayRefused != 1 {
		t.Fatalf("stats %+v", st)
	}
	box := &speaker{speaks: proto.ProtoJSON}
	if _, err := h.Resume([]byte(key), 0, true, box); err != nil {
		t.Fatal(err)
	}
	if _, replayed, _ := replay(t, box.take()); describe(replayed) != "sealed bob AQUB #;sealed bob AQUC ##;" {
		t.Fatalf("replayed %s", describe(replayed))
	}
}
