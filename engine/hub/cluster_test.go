package hub

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"duet/proto"
)

// fakeDirectory is an in-memory Directory for node "here": tokens it
// was told of, plus holders on other nodes a test adds, and a record of
// what the hub released.
type fakeDirectory struct {
	mu       sync.Mutex
	down     bool
	names    map[string]bool
	holders  map[proto.Token]Claim // token -> its holder
	paired   map[string]bool
	released []string
	remote   map[string]*recorder // outboxes handed out, by partner key
	nextPair uint64
}

func newFakeDirectory() *fakeDirectory {
	return &fakeDirectory{
		names:   make(map[string]bool),
		holders: make(map[proto.Token]Claim),
		paired:  make(map[string]bool),
		remote:  make(map[string]*recorder),
	}
}

func (d *fakeDirectory) NodeID() string { return "here" }

func (d *fakeDirectory) Register(name, key string, token proto.Token, _ *ResumeHash, client proto.Protocol) *proto.Error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.down {
		return proto.ErrUnavailable
	}
	if d.names[key] {
		return proto.ErrNameTaken
	}
	d.names[key] = true
	d.holders[token] = Claim{PeerKey: key, PeerName: name, PeerNode: "here", PeerProto: client}
	return nil
}

func (d *fakeDirectory) Unregister(key string, token proto.Token) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.names, key)
	delete(d.holders, token)
}

func (d *fakeDirectory) Retoken(key string, old, fresh proto.Token) *proto.Error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.holders[fresh] = d.holders[old]
	delete(d.holders, old)
	return nil
}

func (d *fakeDirectory) Claim(key string, token proto.Token) (Claim, *proto.Error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.down {
		return Claim{}, proto.ErrUnavailable
	}
	c, ok := d.holders[token]
	if !ok {
		return Claim{}, proto.ErrUnknownToken
	}
	if d.paired[c.PeerKey] {
		return Claim{}, proto.ErrRoomFull
	}
	d.nextPair++
	c.PairID = d.nextPair
	d.paired[key], d.paired[c.PeerKey] = true, true
	return c, nil
}

func (d *fakeDirectory) Release(key string, pairID uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.paired, key)
	d.released = append(d.released, key)
}

func (d *fakeDirectory) Remote(node, key, name, from string, pairID uint64) Outbox {
	d.mu.Lock()
	defer d.mu.Unlock()
	if node == "" {
		return &holdBox{}
	}
	r := &recorder{}
	d.remote[key] = r
	return r
}

// PairTag tags a pairing as the cluster's directory does, the same on
// every hub that shares the directory, and recognisably.
func (d *fakeDirectory) PairTag(pairID uint64) uint64 { return fakeTag(pairID) }

func fakeTag(pairID uint64) uint64 { return pairID<<16 | 0xd7e7 }

func (d *fakeDirectory) addRemoteHolder(name string) proto.Token {
	return d.addRemoteHolderSpeaking(name, proto.ProtoUnknown)
}

// addRemoteHolderSpeaking adds a holder on another node whose client
// speaks client.
func (d *fakeDirectory) addRemoteHolderSpeaking(name string, client proto.Protocol) proto.Token {
	d.mu.Lock()
	defer d.mu.Unlock()
	t := proto.NewToken()
	d.holders[t] = Claim{PeerKey: name, PeerName: name, PeerNode: "there", PeerProto: client}
	return t
}

func TestClusterLoginConsultsDirectory(t *testing.T) {
	h := New(Options{})
	d := newFakeDirectory()
	h.SetDirectory(d)
	login(t, h, "alice")

	d.mu.Lock()
	d.names["bob"] = true // bob is online on another node
	d.mu.Unlock()
	_, err := h.Login([]byte("Bob"), &recorder{})
	// Whether bob is away there, his node knows: the text says what to
	// do if he is.
	mustErr(t, err, proto.ErrNameTakenElsewhere)

	d.mu.Lock()
	d.down = true
	d.mu.Unlock()
	_, err = h.Login([]byte("carol"), &recorder{})
	mustErr(t, err, proto.ErrUnavailable)
	if st := h.Stats(); st.Users != 1 {
		t.Fatalf("a refused login is still held here: %+v", st)
	}
}

func TestClusterRemotePairing(t *testing.T) {
	h := New(Options{})
	d := newFakeDirectory()
	h.SetDirectory(d)
	alice := login(t, h, "alice")
	bobToken := d.addRemoteHolder("bob")

	if err := alice.Connect([]byte(bobToken.String())); err != nil {
		t.Fatal(err)
	}
	if ev := alice.box.last(t); ev.Kind != proto.EvPaired || ev.Peer != "bob" || !ev.Initiator {
		t.Fatalf("alice: %+v", ev)
	}
	toBob := d.remote["bob"]
	if ev := toBob.last(t); ev.Kind != proto.EvPaired || ev.Peer != "alice" {
		t.Fatalf("to bob's node: %+v", ev)
	}

	// Say goes to the stub's outbox, as to any partner.
	if err := say(alice.Session, []byte("hi bob")); err != nil {
		t.Fatal(err)
	}
	if ev := toBob.last(t); ev.Kind != proto.EvMessage || ev.From != "alice" || string(ev.Text) != "hi bob" {
		t.Fatalf("to bob's node: %+v", ev)
	}
	// What bob's node sends arrives as bob's.
	if !h.RemoteMessage("alice", 1, []byte("hi alice"), false) {
		t.Fatal("message for a live pairing refused")
	}
	if ev := alice.box.last(t); ev.Kind != proto.EvMessage || ev.From != "bob" || string(ev.Text) != "hi alice" {
		t.Fatalf("alice: %+v", ev)
	}
	if h.RemoteMessage("alice", 2, []byte("stray"), false) {
		t.Fatal("message for another pairing delivered")
	}
	if got := h.RemoteNodes(); len(got) != 1 || got[0] != "there" {
		t.Fatalf("remote nodes: %v", got)
	}

	// bob leaves on his node: alice is freed in the directory, then told.
	if !h.RemoteLeft("alice", 1, proto.ReasonLeft, 0) {
		t.Fatal("leave for a live pairing refused")
	}
	if ev := alice.box.last(t); ev.Kind != proto.EvPeerLeft || ev.Peer != "bob" || ev.Reason != proto.ReasonLeft {
		t.Fatalf("alice: %+v", ev)
	}
	if d.paired["alice"] {
		t.Fatal("alice still paired in the directory")
	}
	if err := say(alice.Session, []byte("anyone?")); err != proto.ErrNotPaired {
		t.Fatalf("say after leave: %v", err)
	}
}

func TestClusterCutRemote(t *testing.T) {
	h := New(Options{})
	d := newFakeDirectory()
	h.SetDirectory(d)
	alice, carol, dave := login(t, h, "alice"), login(t, h, "carol"), login(t, h, "dave")
	if err := alice.Connect([]byte(d.addRemoteHolder("bob").String())); err != nil {
		t.Fatal(err)
	}
	if err := dave.Connect(tok(carol.Session)); err != nil {
		t.Fatal(err)
	}
	alice.box.take()

	cuts := h.CutRemote(func(string) bool { return true }, proto.ReasonLinkLost)
	if len(cuts) != 1 || cuts[0].Key != "alice" || cuts[0].PeerKey != "bob" || cuts[0].Node != "there" {
		t.Fatalf("cuts: %+v", cuts)
	}
	if ev := alice.box.last(t); ev.Kind != proto.EvPeerLeft || ev.Reason != proto.ReasonLinkLost {
		t.Fatalf("alice: %+v", ev)
	}
	// The same-node pair is untouched.
	if err := say(dave.Session, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if ev := carol.box.last(t); ev.Kind != proto.EvMessage || string(ev.Text) != "still here" {
		t.Fatalf("carol: %+v", ev)
	}
	regs := h.Registrations()
	paired := 0
	for _, r := range regs {
		if r.PeerKey != "" {
			paired++
		}
	}
	if len(regs) != 3 || paired != 2 {
		t.Fatalf("registrations: %+v", regs)
	}
}

// BenchmarkSayCluster is BenchmarkSay for a same-node pair on a cluster
// node: the relay path is the single-node one.
func BenchmarkSayCluster(b *testing.B) {
	h := New(Options{})
	h.SetDirectory(newFakeDirectory())
	benchmarkSay(b, h)
}

// TestClusterAwayAndBack: a session whose partner is on another node
// goes away and comes back on this node; what the partner's node sends
// meanwhile is kept, and refused past the buffer, with the partner's
// node told.
func TestClusterAwayAndBack(t *testing.T) {
	opts := resumeOpts()
	opts.ResumeBuffer = 3 * (5 + entryCost)
	h, _ := newClockedHub(opts)
	d := newFakeDirectory()
	h.SetDirectory(d)
	alice, key := resumable(t, h, "alice")
	if err := alice.Connect([]byte(d.addRemoteHolder("bob").String())); err != nil {
		t.Fatal(err)
	}
	toBob := d.remote["bob"]
	toBob.take()

	alice.Detach(proto.ReasonDisconnected, 0)
	if ev := toBob.last(t); ev.Kind != proto.EvPeerAway || ev.Peer != "alice" {
		t.Fatalf("to bob's node: %+v", ev)
	}
	for i := range 4 {
		if !h.RemoteMessage("alice", 1, []byte(fmt.Sprint("away", i)), false) {
			t.Fatalf("message %d for a live pairing refused", i)
		}
	}
	// The fourth did not fit: bob's node is told, for bob.
	if ev := toBob.last(t); ev.Kind != proto.EvError || ev.Err.Code != "peer_away_full" {
		t.Fatalf("to bob's node: %+v", ev)
	}
	box := &recorder{}
	res, err := h.Resume([]byte(key), 0, false, box)
	if err != nil {
		t.Fatal(err)
	}
	_, replayed, _ := replay(t, box.take())
	if got := strings.Join(texts2(replayed), ","); got != "away0,away1,away2" {
		t.Fatalf("replayed %q", got)
	}
	if ev := toBob.last(t); ev.Kind != proto.EvPeerBack {
		t.Fatalf("to bob's node: %+v", ev)
	}
	// The pairing carries on with the new Session, both ways.
	if !h.RemoteMessage("alice", 1, []byte("welcome back"), false) {
		t.Fatal("message after the resume refused")
	}
	if ev := box.last(t); string(ev.Text) != "welcome back" || ev.From != "bob" || ev.Seq != 4 {
		t.Fatalf("alice got %+v", ev)
	}
	if err := say(res.Session, []byte("thanks")); err != nil {
		t.Fatal(err)
	}
	if ev := toBob.last(t); string(ev.Text) != "thanks" {
		t.Fatalf("to bob's node: %+v", ev)
	}
	if !h.RemoteEvent("alice", 1, &proto.Event{Kind: proto.EvPeerAway, Peer: "bob", Window: time.Minute}) {
		t.Fatal("an event for a live pairing refused")
	}
	if ev := box.last(t); ev.Kind != proto.EvPeerAway || ev.Peer != "bob" {
		t.Fatalf("alice got %+v", ev)
	}
	if h.RemoteEvent("alice", 2, &proto.Event{Kind: proto.EvPeerBack}) {
		t.Fatal("an event for another pairing delivered")
	}
	if !h.RemoteLeft("alice", 1, proto.ReasonLeft, 0) {
		t.Fatal("leave refused")
	}
	if ev := box.last(t); ev.Kind != proto.EvPeerLeft || res.Session.Peer() != "" {
		t.Fatalf("alice got %+v", ev)
	}
	if regs := h.Registrations(); len(regs) != 1 || regs[0].Key != "alice" {
		t.Fatalf("registrations %+v", regs)
	}
}

// TestClusterRemoteClaimOfAnAwaySession: a user on another node pairs
// with a session of this node that is away; its node is told.
func TestClusterRemoteClaimOfAnAwaySession(t *testing.T) {
	h, _ := newClockedHub(resumeOpts())
	d := newFakeDirectory()
	h.SetDirectory(d)
	alice, _ := resumable(t, h, "alice")
	alice.Detach(proto.ReasonDisconnected, 0)
	if !h.RemotePaired("alice", 7, "bob", "bob", "there", proto.ProtoUnknown) {
		t.Fatal("claim refused")
	}
	if ev := d.remote["bob"].last(t); ev.Kind != proto.EvPeerAway || ev.Peer != "alice" || ev.Window != 2*time.Minute {
		t.Fatalf("to bob's node: %+v", ev)
	}
}

// TestClusterSealAcrossNodes: a pairing across nodes between two pages
// is told, on both sides, the partner's protocol and one pairing id
// (the directory's tag, the same on every node), and sealed frames
// cross it both ways. When the partner comes back over the line
// protocol, the page is told so and a seal is refused; a sealed frame
// that arrives for a session whose client cannot open it is refused
// back to the partner's node, never shown.
func TestClusterSealAcrossNodes(t *testing.T) {
	h := New(resumeOpts())
	d := newFakeDirectory()
	h.SetDirectory(d)
	alice, _, _ := speakerLogin(t, h, "alice", proto.ProtoJSON)
	if err := alice.Connect([]byte(d.addRemoteHolderSpeaking("bob", proto.ProtoJSON).String())); err != nil {
		t.Fatal(err)
	}
	want := fakeTag(1)
	if ev := alice.box.last(t); ev.Kind != proto.EvPaired || ev.PeerProto != proto.ProtoJSON || ev.PairID != want {
		t.Fatalf("alice: %+v", ev)
	}
	toBob := d.remote["bob"]
	if ev := toBob.last(t); ev.Kind != proto.EvPaired || ev.PeerProto != proto.ProtoJSON || ev.PairID != want {
		t.Fatalf("to bob's node: %+v", ev)
	}

	if _, err := alice.Seal([]byte("c2VhbGVk"), 0); err != nil {
		t.Fatalf("seal to a page on another node: %v", err)
	}
	if ev := toBob.last(t); ev.Kind != proto.EvSealed || string(ev.Text) != "c2VhbGVk" {
		t.Fatalf("to bob's node: %+v", ev)
	}
	if !h.RemoteMessage("alice", 1, []byte("YmFjaw"), true) {
		t.Fatal("sealed frame for a live pairing refused")
	}
	if ev := alice.box.last(t); ev.Kind != proto.EvSealed || ev.From != "bob" || string(ev.Text) != "YmFjaw" || ev.Seq != 1 {
		t.Fatalf("alice: %+v", ev)
	}
	// Counted where the sender is, as messages are: on this node, alice's.
	if st := h.Stats(); st.Sealed != 1 {
		t.Fatalf("sealed frames counted: %d, want 1", st.Sealed)
	}

	// bob goes away, and is resumed over the line protocol on his node.
	if !h.RemoteEvent("alice", 1, &proto.Event{Kind: proto.EvPeerAway, Window: time.Minute}) {
		t.Fatal("peer_away for a live pairing refused")
	}
	if !h.RemoteEvent("alice", 1, &proto.Event{Kind: proto.EvPeerBack, PeerProto: proto.ProtoLine}) {
		t.Fatal("peer_back for a live pairing refused")
	}
	if ev := alice.box.last(t); ev.Kind != proto.EvPeerBack || ev.Peer != "bob" || ev.PeerProto != proto.ProtoLine {
		t.Fatalf("alice: %+v", ev)
	}
	if _, err := alice.Seal([]byte("c2VhbGVk"), 0); err != proto.ErrPeerCannotDecrypt {
		t.Fatalf("seal to a terminal on another node: %v", err)
	}

	// A terminal here, paired with a page there whose node sealed for
	// it before it was told: refused back, not shown.
	carol := loginSpeaking(t, h, "carol", proto.ProtoLine)
	if err := carol.Connect([]byte(d.addRemoteHolderSpeaking("dave", proto.ProtoJSON).String())); err != nil {
		t.Fatal(err)
	}
	carol.box.take()
	if !h.RemoteMessage("carol", 2, []byte("c2VhbGVk"), true) {
		t.Fatal("sealed frame for a live pairing refused")
	}
	if evs := carol.box.take(); len(evs) != 0 {
		t.Fatalf("carol was shown a sealed frame: %+v", evs)
	}
	if ev := d.remote["dave"].last(t); ev.Kind != proto.EvError || ev.Err != proto.ErrPeerCannotDecrypt {
		t.Fatalf("to dave's node: %+v", ev)
	}
}

// loginSpeaking logs name in through a speaker of protocol p.
func loginSpeaking(t *testing.T, h *Hub, name string, p proto.Protocol) user {
	t.Helper()
	u, _, _ := speakerLogin(t, h, name, p)
	return u
}

// TestSealedCountsSurviveExport: the sealed frames a session sent stay
// counted on its node when the session is parked for another node to
// take up, as its messages do; the count never goes down.
func TestSealedCountsSurviveExport(t *testing.T) {
	h, _, _ := clusterHub(t, resumeOpts())
	alice, _, _ := speakerLogin(t, h, "alice", proto.ProtoJSON)
	bob, _, _ := speakerLogin(t, h, "bob", proto.ProtoJSON)
	if err := bob.Connect(tok(alice.Session)); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Seal([]byte("c2VhbGVk"), 0); err != nil {
		t.Fatal(err)
	}
	if err := say(alice.Session, []byte("plain")); err != nil {
		t.Fatal(err)
	}
	alice.Detach(proto.ReasonDisconnected, 0)
	tk, err := h.BeginPark("alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Export(tk); err != nil {
		t.Fatal(err)
	}
	if st := h.Stats(); st.Sealed != 1 || st.SealedBytes != 8 || st.Messages != 1 {
		t.Fatalf("after the export: %d sealed frames (%d bytes), %d messages; want 1 (8), 1", st.Sealed, st.SealedBytes, st.Messages)
	}
}

// TestSealsWaitForAMovingPage: a page whose session leaves for another
// node (a resume there, or a drain) still gets its partner's seals:
// the stub that stands in for it here speaks what it spoke, and so does
// the session where it is taken up, before its resume says otherwise.
// (Before, both spoke no protocol, and every seal was refused with
// peer_cannot_decrypt until the page was back.)
func TestSealsWaitForAMovingPage(t *testing.T) {
	h1, _, _ := clusterHub(t, resumeOpts())
	alice, _, _ := speakerLogin(t, h1, "alice", proto.ProtoJSON)
	bob, _, _ := speakerLogin(t, h1, "bob", proto.ProtoJSON)
	if err := bob.Connect(tok(alice.Session)); err != nil {
		t.Fatal(err)
	}
	alice.Detach(proto.ReasonDisconnected, 0)
	tk, err := h1.BeginPark("alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	p, perr := h1.Export(tk)
	if perr != nil {
		t.Fatal(perr)
	}
	if _, err := bob.Seal([]byte("d2hpbGUgbW92aW5n"), 0); err != nil {
		t.Fatalf("a seal to a page on its way to another node: %v", err)
	}
	if p.Client != proto.ProtoJSON {
		t.Fatalf("parked as speaking %v", p.Client)
	}

	// Taken up on another node, whose partner there is bob's stub.
	h2, d2, _ := clusterHub(t, resumeOpts())
	p.Pair.PeerNode, p.Pair.PeerProto = "there", proto.ProtoJSON
	if err := h2.Import(p, nil); err != nil {
		t.Fatal(err)
	}
	if !h2.RemoteMessage("alice", p.Pair.ID, []byte("dGFrZW4gdXA"), true) {
		t.Fatal("a sealed frame for a pairing taken up refused")
	}
	if evs := d2.remote["bob"].take(); len(evs) != 0 {
		t.Fatalf("bob's node is told %+v", evs)
	}
}
