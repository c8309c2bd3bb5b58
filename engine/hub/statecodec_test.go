package hub

import (
	"bytes"
	"encoding/binary"
	"io"
	"reflect"
	"testing"
	"testing/iotest"
	"time"

	"duet/proto"
)

// TestStateRestoresEncryptedPairs: a node's sessions written down for
// its next process (WriteState) and read back (ReadState) are taken
// up there as they were: the time it took counts against their
// windows, a pairing is told by the id its pages know, and a page that
// resumes first can seal to its partner before the partner is back,
// whose client is still known to speak JSON.
func TestStateRestoresEncryptedPairs(t *testing.T) {
	h1 := New(resumeOpts())
	alice, _, akey := speakerLogin(t, h1, "alice", proto.ProtoJSON)
	bob, bbox, _ := speakerLogin(t, h1, "bob", proto.ProtoJSON)
	if err := bob.Connect(tok(alice.Session)); err != nil {
		t.Fatal(err)
	}
	id := bbox.last(t).PairID
	if _, err := bob.Seal([]byte("YmVmb3Jl"), 0); err != nil {
		t.Fatal(err)
	}
	alice.Detach(proto.ReasonDisconnected, 0)
	bob.Detach(proto.ReasonDisconnected, 0)
	at := time.Now()
	state := writeState(t, at, h1.Snapshot())

	when, parked, err := ReadState(bytes.NewReader(state))
	if err != nil || !when.Equal(at) || len(parked) != 2 {
		t.Fatalf("read back %d sessions parked at %v, %v", len(parked), when, err)
	}
	for _, p := range parked {
		if p.Client != proto.ProtoJSON || p.Pair == nil || p.Pair.Tag != id {
			t.Fatalf("%s read back as %+v, pair %+v", p.Name, p, p.Pair)
		}
		p.Age(30 * time.Second)
		if p.WindowLeft > 90*time.Second {
			t.Fatalf("%s has %v of its window left after 30s of its 2m", p.Name, p.WindowLeft)
		}
	}
	if !bytes.Equal(writeState(t, at, parked[:0]), writeState(t, at, nil)) {
		t.Fatal("an empty state is not written alike")
	}

	h2 := New(resumeOpts())
	if n := h2.Restore(parked); n != 2 {
		t.Fatalf("restored %d", n)
	}
	box := &speaker{speaks: proto.ProtoJSON}
	res, rerr := h2.Resume([]byte(akey), 1, true, box)
	if rerr != nil {
		t.Fatal(rerr)
	}
	if ev := box.take()[0]; ev.Kind != proto.EvResumed || ev.PairID != id || ev.PeerProto != proto.ProtoJSON || ev.Peer != "bob" {
		t.Fatalf("resumed: %+v", ev)
	}
	if _, err := res.Session.Seal([]byte("YWZ0ZXI"), 0); err != nil {
		t.Fatalf("a seal to a page restored but not yet back: %v", err)
	}
}

// TestStateRefusesWhatItDidNotWrite: a state cut short, with a byte
// changed, or with extra bytes, is refused whole.
func TestStateRefusesWhatItDidNotWrite(t *testing.T) {
	h := New(resumeOpts())
	alice, _, _ := speakerLogin(t, h, "alice", proto.ProtoJSON)
	alice.Detach(proto.ReasonDisconnected, 0)
	state := writeState(t, time.Now(), h.Snapshot())
	for _, bad := range [][]byte{state[:len(state)-1], append(append([]byte(nil), state...), 0), {'D', 'S', 2}, {'D', 'S', 3, 0, 0}, {'D', 'S', 0, 0, 0}, nil,
		// One session claimed, of an exabyte: refused as the bytes run
		// out, with no more held than there are.
		{'D', 'S', 1, 0, 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10, 'D', 'P'}} {
		if _, _, err := ReadState(bytes.NewReader(bad)); err != ErrBadState {
			t.Errorf("%q read with %v", bad, err)
		}
	}
	wrong := append([]byte(nil), state...)
	wrong[len(wrong)-2] = 9 // a client that is no protocol
	if _, _, err := ReadState(bytes.NewReader(wrong)); err != ErrBadState {
		t.Errorf("an unknown client read with %v", err)
	}
	wrong = append(wrong[:0], state...)
	wrong[len(wrong)-1] = 2 // a flag no version has
	if _, _, err := ReadState(bytes.NewReader(wrong)); err != ErrBadState {
		t.Errorf("an unknown flag read with %v", err)
	}
	wrong[len(wrong)-1] = flagHolder // the holder of no pairing
	if _, _, err := ReadState(bytes.NewReader(wrong)); err != ErrBadState {
		t.Errorf("the holder of no pairing read with %v", err)
	}
	if _, _, err := ReadState(iotest.ErrReader(io.ErrClosedPipe)); err != io.ErrClosedPipe {
		t.Errorf("a reader's error read as %v", err)
	}
}

// TestStateOfVersion1: a state file written before the holder mark
// (version 1: no flags, each pair's side that connected written first)
// is read, and each pair's sides are given the roles they had.
func TestStateOfVersion1(t *testing.T) {
	h1 := New(resumeOpts())
	holder, hkey := resumable(t, h1, "holder")
	asker, akey := resumable(t, h1, "asker")
	pair(t, asker, holder)
	id := holder.room.Load().id
	holder.Detach(proto.ReasonDisconnected, 0)
	asker.Detach(proto.ReasonDisconnected, 0)
	snap := h1.Snapshot()
	if snap[0].Pair.Holder {
		snap[0], snap[1] = snap[1], snap[0]
	}
	// Version 1, as WriteState wrote it then.
	v1 := []byte{'D', 'S', 1, 5, byte(len(snap))}
	for _, p := range snap {
		one := p.AppendBinary(nil)
		v1 = binary.AppendUvarint(v1, uint64(len(one)))
		v1 = append(v1, one...)
		v1 = binary.AppendUvarint(v1, p.Pair.Tag)
		v1 = binary.AppendUvarint(v1, uint64(p.Client))
	}
	at, parked, err := ReadState(bytes.NewReader(v1))
	if err != nil || at.UnixNano() != 5 || len(parked) != 2 {
		t.Fatalf("read %d sessions parked at %v: %v", len(parked), at, err)
	}
	for _, p := range parked {
		if p.Pair.Holder || p.Pair.Tag != id {
			t.Fatalf("%s read as holder %v, tag %d (want %d)", p.Name, p.Pair.Holder, p.Pair.Tag, id)
		}
	}
	h2 := New(resumeOpts())
	if n := h2.Restore(parked); n != 2 {
		t.Fatalf("restored %d", n)
	}
	for key, initiator := range map[string]bool{akey: true, hkey: false} {
		if _, ev := resumedOf(t, h2, key); ev.Initiator != initiator || ev.PairID != id {
			t.Errorf("resumed %+v, want initiator %v in pairing %d", ev, initiator, id)
		}
	}
}

// writeState is WriteState to memory.
func writeState(t testing.TB, at time.Time, parked []*Parked) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := WriteState(&b, at, parked); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func FuzzReadState(f *testing.F) {
	f.Add(writeState(f, time.Unix(1, 2), []*Parked{
		{Name: "Alice", Key: "alice", WindowLeft: time.Minute, Client: proto.ProtoJSON,
			Pair: &ParkedPair{ID: 1, PeerKey: "bob", PeerName: "bob", PeerNode: localNode, Tag: 7}},
		{Name: "bob", Key: "bob", Client: proto.ProtoLine},
	}))
	f.Add(writeState(f, time.Unix(3, 4), []*Parked{
		{Name: "carol", Key: "carol", WindowLeft: time.Minute, Untold: 6, UntoldWindow: time.Minute, Client: proto.ProtoJSON,
			Pair: &ParkedPair{ID: 2, PeerKey: "dave", PeerName: "dave", PeerNode: localNode, Tag: 9, Holder: true}},
	}))
	f.Add(writeState(f, time.Unix(5, 6), []*Parked{
		{Name: "erin", Key: "erin", WindowLeft: time.Minute, PeerWasAway: true, Joined: true, Left: &PeerLeft{Peer: "gus", Reason: proto.ReasonLeft, Joined: true},
			Pair: &ParkedPair{ID: 3, PeerKey: "fay", PeerName: "fay", PeerNode: localNode, Tag: 11}},
	}))
	f.Add([]byte("DS\x01\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		at, parked, err := ReadState(bytes.NewReader(b))
		if err != nil {
			return
		}
		// What it reads survives a round trip.
		at2, again, err := ReadState(bytes.NewReader(writeState(t, at, parked)))
		if err != nil || !at2.Equal(at) || !reflect.DeepEqual(again, parked) {
			t.Fatalf("%v %+v does not survive a round trip: %v %+v, %v", at, parked, at2, again, err)
		}
	})
}

// TestStateKeepsTheUsedKey: alice's resume, whose answer told her bob
// left, is lost with its connection, and the node restarts before she
// retries. The state the next process reads keeps the key she used
// beside her newest: a resume with it takes her session back there and
// tells bob's leaving again, with the message he sent, once; and the
// fresh key of the lost answer stops working. A resume with that fresh
// key instead works too, and retires the one used.
func TestStateKeepsTheUsedKey(t *testing.T) {
	restarted := func(t *testing.T) (h2 *Hub, used, fresh string) {
		h1, _ := newClockedHub(resumeOpts())
		alice, bob, key := resumablePair(t, h1)
		alice.Detach(proto.ReasonDisconnected, 0)
		sayEach(t, bob.Session, "bye")
		bob.Close(proto.ReasonLeft, 2)
		lost := &recorder{}
		res, err := h1.Resume([]byte(key), 0, true, lost)
		if err != nil {
			t.Fatal(err)
		}
		resumed, _, _ := replay(t, lost.take())
		res.Session.Detach(proto.ReasonDisconnected, 0)
		_, parked, rerr := ReadState(bytes.NewReader(writeState(t, time.Now(), h1.Snapshot())))
		if rerr != nil {
			t.Fatal(rerr)
		}
		h2, _ = newClockedHub(resumeOpts())
		if n := h2.Restore(parked); n != 1 {
			t.Fatalf("restored %d", n)
		}
		return h2, key, resumed.ResumeKey
	}
	bobLeft := proto.Event{Kind: proto.EvPeerLeft, Peer: "bob", Reason: proto.ReasonLeft, Count: 2}

	t.Run("used", func(t *testing.T) {
		h2, used, fresh := restarted(t)
		box := &recorder{}
		if _, err := h2.Resume([]byte(used), 0, true, box); err != nil {
			t.Fatalf("the key used, its answer lost, after the restart: %v", err)
		}
		resumed, replayed, after := replay(t, box.take())
		if resumed.Peer != "" || !reflect.DeepEqual(texts2(replayed), []string{"bye"}) || !reflect.DeepEqual(after, []proto.Event{bobLeft}) {
			t.Fatalf("resumed %+v, replayed %q, then %+v; want bye, and bob's peer_left", resumed, texts2(replayed), after)
		}
		if _, err := h2.Resume([]byte(fresh), 0, true, &recorder{}); err == nil || err.Code != proto.ErrBadResumeKey.Code {
			t.Fatalf("the lost answer's key after a resume with the one used: %v", err)
		}
	})
	t.Run("newest", func(t *testing.T) {
		h2, used, fresh := restarted(t)
		box := &recorder{}
		res, err := h2.Resume([]byte(fresh), 1, true, box)
		if err != nil {
			t.Fatalf("the newest key after the restart: %v", err)
		}
		if resumed, replayed, after := replay(t, box.take()); resumed.Peer != "" || len(replayed) != 0 || len(after) != 0 {
			t.Fatalf("resumed %+v, replayed %+v, then %+v", resumed, replayed, after)
		}
		res.Session.KeyReceived()
		if _, err := h2.Resume([]byte(used), 0, true, &recorder{}); err == nil || err.Code != proto.ErrBadResumeKey.Code {
			t.Fatalf("the key used, once the answer to the newest was read: %v", err)
		}
	})
}

// TestAgeCountsAgainstTheUsedKeysNews: the time a restart took counts
// against what remained of the partner's window in the news the lost
// answer told, as against the session's own.
func TestAgeCountsAgainstTheUsedKeysNews(t *testing.T) {
	p := &Parked{WindowLeft: time.Minute, Used: &ParkedUsed{Untold: 2, UntoldWindow: 30 * time.Second}}
	p.Age(20 * time.Second)
	if p.WindowLeft != 40*time.Second || p.Used.UntoldWindow != 10*time.Second {
		t.Fatalf("aged 20s: window %v, the news's %v", p.WindowLeft, p.Used.UntoldWindow)
	}
	p.Age(time.Minute)
	if p.Used.UntoldWindow != 0 {
		t.Fatalf("aged past it: %v", p.Used.UntoldWindow)
	}
}

// TestStateFlags: what a session was told of its pairing while away
// (Parked.PeerWasAway, Joined, Left.Joined), and that it went away for
// the restart (Shutdown), are read back as written, and
// a flag where it cannot hold (of a pairing on a session without one,
// of an end on one that keeps none) is refused, as the state's other
// errors are.
func TestStateFlags(t *testing.T) {
	pp := &ParkedPair{ID: 3, PeerKey: "fay", PeerName: "fay", PeerNode: localNode, Tag: 11}
	left := &PeerLeft{Peer: "gus", Reason: proto.ReasonLeft, Joined: true}
	for _, p := range []*Parked{
		{Name: "erin", Key: "erin", PeerWasAway: true, Pair: pp},
		{Name: "erin", Key: "erin", Joined: true, Pair: pp},
		{Name: "erin", Key: "erin", Left: left},
		{Name: "erin", Key: "erin", PeerWasAway: true, Joined: true, Left: left, Pair: pp},
		{Name: "erin", Key: "erin", Shutdown: true},
	} {
		_, got, err := ReadState(bytes.NewReader(writeState(t, time.Unix(1, 0), []*Parked{p})))
		if err != nil || len(got) != 1 || got[0].PeerWasAway != p.PeerWasAway || got[0].Joined != p.Joined || got[0].Shutdown != p.Shutdown ||
			(got[0].Left != nil && got[0].Left.Joined) != (p.Left != nil && p.Left.Joined) {
			t.Fatalf("%+v read back as %+v, %v", p, got, err)
		}
	}
	// A session unpaired with flagJoined, one without an end with
	// flagLeftJoined, and a flag no build knows: the entry's flags are
	// its last byte.
	for _, flags := range []byte{flagJoined, flagPeerWasAway, flagLeftJoined, 32} {
		b := writeState(t, time.Unix(1, 0), []*Parked{{Name: "erin", Key: "erin"}})
		b[len(b)-1] = flags
		if _, _, err := ReadState(bytes.NewReader(b)); err != ErrBadState {
			t.Errorf("flags %d on a session with no pairing and no end: %v", flags, err)
		}
	}
}
