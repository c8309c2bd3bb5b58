package hub

import (
	"net/netip"
	"time"

	"duet/proto"
)

// Moving a session from one hub to another.
//
// A session can leave its hub whole and be taken up by another: by
// another node of a cluster, when a resume lands there (a phone that
// changed networks and was sent elsewhere by the load balancer) or when
// its node is drained for an upgrade; or by the next process on the same
// machine (resume.state_file). What leaves is a Parked: everything the
// session is (name, token, resume key's hash, message numbers, history,
// how long it may still wait, its pairing), as values, so it can be
// written down (MarshalBinary) and read back by a hub that shares no
// memory with this one. It is taken up as a session that is away, and a
// resume attaches it to a connection as usual.
//
// In a cluster the directory (a Mover) does the moving: BeginPark marks
// the session so that nothing else moves it, the directory makes sure
// nothing more is on its way to it from its partner's node (a fence), and
// Export takes it out of this hub; the importing node's directory claims
// it and hands it to Import. A partner on this node stays, paired with a
// stub that stands in for the session wherever it is (Holder), as a
// partner on another node would be.

// Parked is a session out of any hub: what Export takes out and Import
// takes up. Durations are relative to the moment of the export, so the
// hub that takes it up, with a clock of its own, can place them.
type Parked struct {
	Name, Key string // the name as spelled, and folded
	Token     proto.Token
	Resume    ResumeHash // the hash of its current resume key
	Gen       uint32     // the session's moves so far (Session.gen)
	Seq       uint64     // the number of the last message delivered to it
	// Attached is set when a connection still carried it as it left (a
	// resume elsewhere took it over): its partner was never told it was
	// away. Otherwise it was away for AwayFor.
	Attached bool
	AwayFor  time.Duration
	// WindowLeft is how long it may still wait for a resume.
	WindowLeft time.Duration
	// AwaySeq is the number of the last message delivered before it
	// went away: those in History numbered after it are what a refusal
	// while it is away (peer_away_full) says is waiting, which the hub
	// that takes it up counts from there, by sender (away.kept).
	// AwayText is the bytes of their texts, still written for nodes of
	// earlier versions, which told it as the size.
	AwaySeq  uint64
	AwayText int64
	// Unsent is how many of the messages up to AwaySeq its connection
	// never wrote (see away.unsent), or, Attached, the connection that
	// carried it as it left: a line client's resume replays them
	// however old they are.
	Unsent  int
	History []ParkedMessage // oldest first
	Loss    []ParkedLoss    // messages dropped from the history for room lately
	Pair    *ParkedPair     // nil when not paired
	// Left is the peer_left the session was told while away, which its
	// resume tells (away.left); nil when none.
	Left *PeerLeft
	// Client is the protocol the session's last connection spoke: its
	// partner's seals are kept for it, or refused, by it until a resume
	// says otherwise. It is not written down with the session (a
	// cluster's directory holds it in the session's record, a state
	// file beside it), for the form every node version reads.
	Client proto.Protocol
	// LastID is the id of the last message of the session's that was
	// relayed (Session.lastID), which its resume reports; 0 when none
	// is known. A Parked written before it was kept reads as 0 too, and
	// a session numbered nothing it relayed is parked in the form such
	// a writer used, so a session taken up with 0 does not know (the
	// resume then says nothing of it, proto.IDUnknown) until it relays
	// a numbered message of its own.
	LastID uint64
	// Untold is how many of the session's messages its partner went
	// away without while the session was away itself, which it was not
	// told (away.untold): its resume tells them, with the news that the
	// partner went away, UntoldWindow being what remained of the
	// partner's window then, and, with UntoldBack, that it came back
	// since; or the end of the pairing counts them (Unpair). 0 when
	// none: then UntoldWindow and UntoldBack are not kept.
	Untold       int
	UntoldWindow time.Duration
	UntoldBack   bool
	// Used is the key the session's last resume used, kept still (its
	// client had not shown it read the answer: usedKey), with the news
	// that answer told; nil when none. Where the session is taken up,
	// a resume with that key takes it back and tells the news again,
	// as on the hub that answered.
	Used *ParkedUsed
	// PeerWasAway says the partner of the session's pairing (Pair) was
	// away as the session went away, which it was told: its resume
	// tells it the partner is back, if it is by then
	// (away.peerWasAway). Joined says that pairing began while the
	// session was away (away.joined): its end is told so, as
	// Left.Joined tells of the pairing Left ended. None of the three is
	// written down with the session (a state file carries them beside
	// it, a cluster's park too), for the form every node version reads.
	PeerWasAway, Joined bool
	// Shutdown says the session went away as its server drained for a
	// restart (away.shutdown): its partner, resuming before it, is told
	// that its server is restarting, not that it lost the connection.
	// A state file carries it beside the session, as the three above;
	// a cluster's park does not, since a session is taken up there by
	// its own resume alone.
	Shutdown bool
}

// ParkedUsed is the key a parked session's last resume used, and the
// news of the session's absence its answer told (usedKey), which a
// resume with it tells again. Durations are relative to the export, as
// Parked's.
type ParkedUsed struct {
	Resume ResumeHash // the key's hash
	// Earlier and Left are the ends of pairings told (away.earlier,
	// away.left): those another pairing followed, oldest first, and the
	// last if none followed it.
	Earlier []PeerLeft
	Left    *PeerLeft
	// Untold, UntoldWindow and UntoldBack are what the partner went
	// away without, told (as Parked's); PeerWasAway says the partner
	// was away as the session went away (away.peerWasAway).
	Untold       int
	UntoldWindow time.Duration
	UntoldBack   bool
	PeerWasAway  bool
	// ReplayFrom is the first message the answer replayed to a client
	// that does not say what it received, 0 for none (usedKey).
	ReplayFrom uint64
}

// parkedUsed is u written down for a Parked exported at now.
func parkedUsed(u usedKey, now time.Duration) *ParkedUsed {
	pu := &ParkedUsed{Resume: u.sum, ReplayFrom: u.replayFrom}
	if n := u.news; n != nil {
		pu.Earlier = append([]PeerLeft(nil), n.earlier...)
		if n.left != nil {
			left := *n.left
			pu.Left = &left
		}
		pu.PeerWasAway = n.peerWasAway
		if n.untold > 0 {
			pu.Untold, pu.UntoldWindow, pu.UntoldBack = n.untold, max(n.peerUntil-now, 0), n.peerBack
		}
	}
	return pu
}

// key is pu as a hub keeps it, taken up at now.
func (pu *ParkedUsed) key(now time.Duration) usedKey {
	news := &away{due: -1, earlier: pu.Earlier, left: pu.Left, untold: pu.Untold, peerUntil: now + pu.UntoldWindow,
		peerBack: pu.UntoldBack, peerWasAway: pu.PeerWasAway}
	return usedKey{sum: pu.Resume, news: news, replayFrom: pu.ReplayFrom}
}

// ParkedMessage is one message kept for a session's resume.
type ParkedMessage struct {
	Seq  uint64 // its number; 0 for one queued while parked, numbered as it is taken up
	Age  time.Duration
	From string
	// Sealed: Text is a sealed frame's data (end-to-end encryption
	// between two pages of one node), replayed as sealed.
	Sealed bool
	Text   []byte
}

// ParkedLoss is a run of messages dropped from a history for room (see
// lossRun), its times as ages.
type ParkedLoss struct {
	Last           uint64
	Count          int
	MinAge, MaxAge time.Duration
}

// ParkedPair is a parked session's pairing.
type ParkedPair struct {
	ID                uint64
	PeerKey, PeerName string
	// PeerNode is where the partner is: its node (Directory.NodeID),
	// or "" when it is parked too. Export says where it was; the
	// directory that takes the session up says where it is now.
	PeerNode string
	// PeerProto is the protocol the partner's client speaks, when it is
	// on another node or parked: the directory says it where the
	// session is taken up (it is not written down with the session).
	PeerProto proto.Protocol
	// Tag is the id the pairing's sides were told (Event.PairID), for
	// Restore to tell them again. It is not written down with the
	// session (a state file carries it beside, WriteState): a
	// cluster's nodes tag a pairing alike without it.
	Tag uint64
	// PeerAway is set when the partner is away, PeerWindow being how
	// long it may still take to come back: Export says so of a partner
	// on another node as this hub last heard, and the directory that
	// takes the session up says so of a partner parked between nodes,
	// which is away, and of one that has moved since, which is not (it
	// is not written down with the session: a cluster's park carries
	// it beside). A partner live on another node is away or not as its
	// node says, which tells the node that takes the session up.
	PeerAway   bool
	PeerWindow time.Duration
	// Holder is set when the session is the one whose token its partner
	// claimed, not the one that connected: its resumes are told so
	// (initiator false), wherever it is taken up, which end-to-end
	// encryption needs to start anew in the right roles. It is not
	// written down with the session either (a cluster's park carries it
	// beside, a state file too, WriteState); a session parked by a node
	// from before it was carried is taken up as the one that connected.
	Holder bool
}

// UndeliveredFrom is how many messages from its partner peer the
// session parked as p never had, and its partner was not told of as it
// went away: those delivered since it went, and those its connection
// never wrote before that are kept still, less those from anyone else
// (awayTally). It is what its partner is told were not delivered if the
// session ends parked (a login with its password elsewhere), as
// Session.awayUndeliveredLocked tells for one away on a hub; the
// messages queued for it while parked come on top.
func (p *Parked) UndeliveredFrom(peer string) int {
	t := newAwayTally(p.Seq, p.AwaySeq, p.Unsent, peer)
	for _, m := range p.History {
		// One queued while parked is numbered 0, and counts on top.
		if m.Seq >= t.first {
			t.kept(m.Seq, m.From)
		}
	}
	return t.n
}

// Cost is what p's history counts against resume.buffer.
func (p *Parked) Cost() int64 {
	var c int64
	for _, m := range p.History {
		c += int64(len(m.Text)) + entryCost
	}
	return c
}

// Unpair drops p's pairing, which cannot be rebuilt where p is taken
// up (its partner left, or the partner's node died, while p was
// parked), and keeps for p's resume the peer_left that says so, as a
// session away on one node keeps the end of its pairing: a resume that
// finds no partner is always told why. It does nothing to a p not
// paired.
func (p *Parked) Unpair(reason proto.Reason, undelivered int) {
	if p.Pair == nil {
		return
	}
	p.Left = &PeerLeft{Peer: p.Pair.PeerName, Reason: reason, Undelivered: undelivered + p.Untold, Joined: p.Joined}
	p.Pair = nil
	p.Untold, p.UntoldWindow, p.UntoldBack = 0, 0, false
	p.PeerWasAway, p.Joined = false, false
}

// WaitingFrom is how many of p's messages delivered while it was away
// from sent, and the bytes of their texts: what a refusal tells from (a
// partner whose pairing was made while p was away follows one whose
// messages are kept still).
func (p *Parked) WaitingFrom(from string) (n int, size int64) {
	if p.Attached {
		return 0, 0
	}
	for _, m := range p.History {
		if m.Seq > p.AwaySeq && m.From == from {
			n++
			size += int64(len(m.Text))
		}
	}
	return n, size
}

// A Holder is the Outbox of a stub that stands in for a session parked
// between nodes: what it is handed cannot go anywhere yet, and it holds
// it (a cluster's directory makes these, through Directory.Remote with
// node ""). When the session is taken up on this node, Import takes what
// it holds, in order, under the pairing's lock, and the stub is
// forgotten.
type Holder interface {
	Outbox
	// TakeHeld hands each message held to yield, oldest first (a
	// sealed frame's data with sealed set), and forgets them and
	// anything handed to the Outbox later. It returns how many of the
	// session's messages the partner went away without while it held
	// (the counts of the EvPeerAway it was handed), which the session
	// was not told.
	TakeHeld(yield func(text []byte, sealed bool)) (untold int)
}

// A Mover is a Directory that moves sessions between nodes: a cluster's.
// The hub uses one when its directory is one.
type Mover interface {
	Directory
	// Rekey tells the directory that the session key of this node is to
	// be found by the resume key whose hash is fresh from now on, and
	// by used, the key the resume used (nil for none kept), until
	// RetireUsed or the next Rekey; no longer by old, its newest key
	// until now, unless old is used, nor by the key an earlier resume
	// used. It is called with no hub lock held, before the fresh key is
	// handed out. A directory that cannot be reached catches up later
	// (Registrations).
	Rekey(key string, old, used, fresh *ResumeHash, client proto.Protocol)
	// RetireUsed tells the directory that the session key of this node
	// is no longer to be found by used, the key its last resume used,
	// whose answer its client has shown it read (Session.KeyReceived).
	// It may wait on the network, and the hub calls it from a goroutine
	// of its own; a directory that cannot be reached catches up later
	// (Registrations).
	RetireUsed(key string, used *ResumeHash)
	// Fetch brings to this hub the session whose resume key hashes to
	// sum, from the node that holds it or from where it was parked:
	// it has that session exported, claims it, and takes it up here
	// with Import. It fails with bad_resume_key (ErrUnknownResumeKey)
	// when no session anywhere has that key, and unavailable when the
	// move cannot be made now. It is called with no hub lock held.
	Fetch(sum *ResumeHash) *proto.Error
	// Evict has the node that holds the session key log it out, for a
	// login of the same account that proved its password (accounts
	// mode): with onlyAway, only if it is away. The session's partner
	// is told it was replaced, and its connection, if any, is evicted
	// (EvictReplaced); a session parked between nodes, away by then, is
	// ended where it is parked. It returns nil once the name is free,
	// proto.ErrNameTaken when the session keeps it (attached, with
	// onlyAway; or on this node), and proto.ErrUnavailable when its node
	// cannot be asked. It is called with no hub lock held.
	Evict(key string, onlyAway bool) *proto.Error
}

// A Ticket is a session marked to leave (BeginPark): what the caller
// needs to know of its pairing before it takes it out (Export).
type Ticket struct {
	s *Session
	// Key is the session's folded name.
	Key string
	// Gen is the session's moves so far.
	Gen uint32
	// PairID, PeerKey and PeerNode name the session's pairing when its
	// partner is on another node; PeerNode is "" otherwise.
	PairID   uint64
	PeerKey  string
	PeerNode string
}

// BeginPark marks the session key of this node to leave, and returns
// what its directory needs to know to take it out: with sum, only if
// its resume key hashes to sum (a resume elsewhere asks for it; the
// comparison is in constant time). Nothing else moves the session until
// Export or AbandonPark; it may still go away, come back or end
// meanwhile. It fails with bad_resume_key when there is no such session
// here, and unavailable when it is being moved already.
func (h *Hub) BeginPark(key string, sum *ResumeHash) (*Ticket, *proto.Error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var s *Session
	if sum != nil {
		// Found by half the hash, the whole compared in constant time:
		// its newest key, or the one its last resume used, kept still
		// (a resume with it elsewhere retries one whose answer was
		// lost).
		s = h.keys[keyIndexOf(*sum)]
		if s != nil && !h.opensLocked(s, sum) {
			s = nil
		}
	} else {
		s = h.names.lookup(key)
	}
	if s == nil || s.closed || !s.resumable {
		return nil, proto.ErrUnknownResumeKey
	}
	if s.moving {
		return nil, proto.ErrUnavailable
	}
	s.moving = true
	t := &Ticket{s: s, Key: s.Key(), Gen: s.gen}
	if r := s.room.Load(); r != nil && r.stub != nil {
		h.remoteMu.RLock()
		rr, ok := h.remote[r.pairID]
		h.remoteMu.RUnlock()
		if ok && rr.r == r && rr.stub != s {
			t.PairID, t.PeerKey, t.PeerNode = r.pairID, rr.stub.Key(), rr.node
		}
	}
	return t, nil
}

// AbandonPark gives up the move BeginPark began: the session stays.
func (h *Hub) AbandonPark(t *Ticket) {
	h.mu.Lock()
	t.s.moving = false
	h.mu.Unlock()
}

// AwayKeys lists the sessions of this hub that are away, oldest first:
// those a node being drained has left to move.
func (h *Hub) AwayKeys() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	keys := make([]string, 0, h.awayCount)
	for s := h.awayOldest; s != nil; s = s.away.next {
		keys = append(keys, s.Key())
	}
	return keys
}

// Export takes the session of t out of this hub, whole, and returns it.
// It is retired as a resume retires a session: its name, token and key
// are this hub's no longer, and a connection that still carried it is
// evicted (EvictResumed: it was resumed elsewhere). A partner on another
// node is forgotten here without a word: the pairing lives on wherever
// the session goes. A partner on this node stays, paired with a stub for
// the session, reached through Directory.Remote with node "", which
// holds what the partner says until the directory knows where the
// session is. It fails with not_logged_in if the session ended since
// BeginPark.
func (h *Hub) Export(t *Ticket) (*Parked, *proto.Error) {
	h.mu.Lock()
	p, zombie, err := h.exportLocked(t.s, true)
	h.mu.Unlock()
	if zombie != nil {
		zombie.Evict(EvictResumed)
	}
	return p, err
}

// exportLocked takes s out of the hub, and returns it with the Queue of
// the connection that still carried it, if one did, for the caller to
// evict once no hub lock is held. With keepPeer, a partner on this node
// is paired with a stub for s; without, the room goes (every session is
// leaving at once).
func (h *Hub) exportLocked(s *Session, keepPeer bool) (*Parked, Queue, *proto.Error) {
	s.moving = false
	if s.closed {
		return nil, nil, proto.ErrNotLoggedIn
	}
	now := h.clock.now()
	p := &Parked{Name: s.name, Key: s.Key(), Token: s.token, Resume: s.keyHash, Gen: s.gen, Client: s.client}
	window := h.window()
	r := s.room.Load()
	if r != nil {
		r.mu.Lock()
	}
	s.hmu.Lock()
	p.Seq = s.seq
	// Under the room's lock, as SayAll writes it.
	if s.lastID != proto.IDUnknown {
		p.LastID = s.lastID
	}
	if a := s.away; a != nil {
		p.Attached = a.attached
		if !a.attached {
			p.AwayFor = now - a.since
		}
		p.WindowLeft = max(a.deadline-now, 0)
		p.AwaySeq, p.AwayText, p.Unsent = a.seq, a.keptText(), a.unsent
		p.Left = a.left
		if p.Left == nil && len(a.earlier) > 0 {
			// One end is carried: the last, of a pairing another
			// followed. A binary from before ended_away tells none of
			// it to a session paired since, as it did not keep it.
			last := a.earlier[len(a.earlier)-1]
			p.Left = &last
		}
		if a.untold > 0 {
			p.Untold, p.UntoldWindow, p.UntoldBack = a.untold, max(a.peerUntil-now, 0), a.peerBack
		}
		// Of the pairing, if there is one (below).
		p.PeerWasAway, p.Joined = a.peerWasAway, a.joined
		p.Shutdown = a.shutdown && !a.attached
	} else {
		p.Attached, p.WindowLeft = true, window
		p.AwaySeq = s.seq
	}
	if hs := s.hist; hs != nil {
		p.History = make([]ParkedMessage, 0, hs.n)
		hs.each(0, func(seq uint64, at time.Duration, from string, kind proto.EventKind, text []byte) {
			p.History = append(p.History, ParkedMessage{Seq: seq, Age: now - at, From: from, Sealed: kind == proto.EvSealed, Text: append([]byte(nil), text...)})
		})
		for _, l := range hs.loss {
			p.Loss = append(p.Loss, ParkedLoss{Last: l.last, Count: l.count, MinAge: now - l.minAt, MaxAge: now - l.maxAt})
		}
		s.releaseHistoryLocked()
	}
	s.unsweepLocked()
	s.hmu.Unlock()

	var zombie Queue
	if s.away == nil {
		zombie = s.q
	} else {
		h.unlinkAwayLocked(s)
	}
	if u, ok := h.used[s]; ok {
		// The key its last resume used goes with it: its client may
		// retry with it wherever the session is.
		p.Used = parkedUsed(u, now)
	}
	s.closed = true
	h.names.unfile(s.Key(), s)
	h.tokens.unfile(s.token, s)
	h.unfileKeysLocked(s)
	h.keepCounts(s)

	if r != nil {
		peer := r.other(s)
		holder := r.b == s
		// Whether the partner is away, as this hub last heard, which
		// the node that takes the session up knows nothing of until the
		// partner's node next says (ParkedPair.PeerAway).
		var peerUntil time.Duration
		peerAway := false
		if peer != nil {
			peerUntil, peerAway = h.peerAwayLocked(r, peer)
		}
		switch {
		case peer == nil:
		case peer == r.stub:
			p.Pair = &ParkedPair{ID: r.pairID, PeerKey: peer.Key(), PeerName: peer.name, PeerNode: h.remoteNode(r), Tag: r.id, Holder: holder}
			r.close()
			peer.room.Store(nil)
			h.rooms--
			h.forgetRemoteLocked(r)
		case keepPeer:
			p.Pair = &ParkedPair{ID: r.pairID, PeerKey: peer.Key(), PeerName: peer.name, PeerNode: h.node, Tag: r.id, Holder: holder}
			stub := h.newStub(s.name, h.dir.Remote("", s.Key(), s.name, peer.Key(), r.pairID))
			// The partner's seals wait for the session wherever it is
			// taken up, which speaks what it spoke here until its
			// resume says otherwise (peer_back).
			stub.client = s.client
			if r.a == s {
				r.a = stub
			} else {
				r.b = stub
			}
			r.stub = stub
			stub.room.Store(r)
			// The partner's resume tells that the session is away, as
			// it did while the session was here; unless the partner
			// was not told it went (a drain's, unannounced): then its
			// return, from wherever it is taken up, is no news either.
			rr := remoteRoom{r: r, local: peer, stub: stub, node: ""}
			if a := s.away; a != nil && !a.attached && !a.unannounced {
				rr.peerAway, rr.peerUntil = true, a.deadline
			}
			h.remoteMu.Lock()
			h.remote[r.pairID] = rr
			h.remoteMu.Unlock()
		default:
			// Every session is leaving (Snapshot): the room closes as
			// the second of the pair goes, so that the partner's export
			// finds the pairing too.
			p.Pair = &ParkedPair{ID: r.pairID, PeerKey: peer.Key(), PeerName: peer.name, PeerNode: h.node, Tag: r.id, Holder: holder}
			if peer.closed {
				r.close()
				h.rooms--
			}
		}
		if p.Pair != nil && peerAway {
			p.Pair.PeerAway, p.Pair.PeerWindow = true, max(peerUntil-now, 0)
		}
		s.room.Store(nil)
		r.mu.Unlock()
	}
	if p.Pair == nil {
		p.PeerWasAway, p.Joined = false, false
	}
	if zombie != nil {
		// What the connection still carrying the session never wrote
		// goes with it, as a resume on this node replays it (Resume):
		// the connection is evicted, and will never write it.
		p.Unsent = notReceived(zombie)
	}
	return p, zombie, nil
}

// TellLeft tells the session key, just taken up here unpaired (Import),
// that its pairing ended, after last, the partner's last messages: a
// partner on this node that left while the session was parked, before
// this node had written its messages and how it left beside the park
// (they were still held for it here, Holder), so the import could
// neither rebuild the pairing nor read its end from the park. The
// messages are delivered as to any session (kept for its resume, up to
// resume.buffer; those refused past it, with no partner left to tell,
// are counted missed by its resume), and the
// peer_left, away, is kept for its resume, which tells it as a session
// away on one node is told; attached, it is told at once. It reports
// false, and does nothing, when there is no such session here, or it is
// paired again (a pairing made since is what its resume tells).
func (h *Hub) TellLeft(key string, left PeerLeft, last []ParkedMessage) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.names.lookup(key)
	if s == nil || s.closed || s.room.Load() != nil {
		return false
	}
	for i, m := range last {
		ev := proto.Event{Kind: proto.EvMessage, From: left.Peer}
		if m.Sealed {
			ev.Kind = proto.EvSealed
		}
		if n, _ := s.deliverMessages(h, &ev, [][]byte{m.Text}); n == 0 {
			// Refused for room, and the partner who would be told is
			// gone: the session's resume counts it and those after it
			// as missed instead.
			s.loseAway(h, len(last)-i)
			break
		}
	}
	h.tellPeerLeftLocked(s, left)
	return true
}

// remoteNode is the node of r's partner on another node.
func (h *Hub) remoteNode(r *room) string {
	h.remoteMu.RLock()
	defer h.remoteMu.RUnlock()
	if rr, ok := h.remote[r.pairID]; ok && rr.r == r {
		return rr.node
	}
	return ""
}

// Import takes up p on this hub as a session that is away, with queued,
// the messages kept for it while it was parked, in order: they are
// numbered after p's own. It waits for a resume for p.WindowLeft, and
// its partner, if any, is where p.Pair.PeerNode says: on another node
// (or parked, ""), reached through a stub; or on this node, in a room
// whose stub for the session it takes over, delivering what that stub
// held (Holder). A pairing that is not here as p says is dropped, and
// the session's record released in the directory. The session's name,
// token and key must be free here (bad name otherwise: name_taken).
func (h *Hub) Import(p *Parked, queued []ParkedMessage) *proto.Error {
	h.mu.Lock()
	var evicted []logout
	if !h.draining.Load() {
		evicted = h.makeRoomLocked(netip.Prefix{}) // no address known (importLocked)
	}
	s, release, err := h.importLocked(p, queued, true)
	h.mu.Unlock()
	h.awayEvicted.Add(uint64(len(evicted)))
	h.finishLogouts(evicted, proto.ReasonTimeout, 0)
	if release != 0 {
		h.dir.Release(s.Key(), release)
	}
	return err
}

// importLocked makes p a session of this hub, paired as p.Pair says
// when pair is set, and returns it, with the pairing to release in the
// directory when it could not be rebuilt.
func (h *Hub) importLocked(p *Parked, queued []ParkedMessage, pair bool) (s *Session, release uint64, err *proto.Error) {
	// A session's key is its name folded (Session.Key): a record that
	// says otherwise is not one this hub could file.
	if !proto.ValidName([]byte(p.Name)) || p.Key != fold(p.Name) {
		return nil, 0, proto.ErrBadName
	}
	if h.names.filed(p.Key) != nil {
		return nil, 0, proto.ErrNameTaken
	}
	if h.tokens.filed(p.Token) != nil {
		return nil, 0, proto.ErrNameTaken
	}
	if _, used := h.keys[keyIndexOf(p.Resume)]; used {
		return nil, 0, proto.ErrNameTaken
	}
	now := h.clock.now()
	s = &Session{hub: h, name: p.Name, token: p.Token, resumable: true, keyHash: p.Resume,
		gen: p.Gen + 1, q: awayQueue, lastID: p.LastID, client: p.Client}
	if s.lastID == 0 {
		s.lastID = proto.IDUnknown
	}
	a := &away{due: -1, since: now - p.AwayFor, deadline: now + p.WindowLeft, seq: p.AwaySeq, attached: p.Attached, unsent: p.Unsent, left: p.Left,
		untold: p.Untold, peerUntil: now + p.UntoldWindow, peerBack: p.UntoldBack, peerWasAway: p.PeerWasAway, joined: p.Joined, shutdown: p.Shutdown}
	if p.Left != nil && p.Pair != nil {
		// Paired since that end: an earlier pairing's (Export).
		a.left, a.earlier = nil, []PeerLeft{*p.Left}
	}
	s.hmu.Lock()
	s.seq = p.Seq
	if len(p.History) > 0 || len(p.Loss) > 0 || len(queued) > 0 {
		hs := s.historyLocked()
		for _, m := range p.History {
			hs.push(m.Seq, now-m.Age, m.From, m.Sealed, m.Text)
			if m.Seq > p.AwaySeq {
				a.keep(m.From, 1, int64(len(m.Text)))
			}
		}
		for _, l := range p.Loss {
			hs.loss = append(hs.loss, lossRun{last: l.Last, count: l.Count, minAt: now - l.MinAge, maxAt: now - l.MaxAge})
		}
		for _, m := range queued {
			s.seq++
			hs.push(s.seq, now-m.Age, m.From, m.Sealed, m.Text)
			a.keep(m.From, 1, int64(len(m.Text)))
		}
		s.settleLocked()
	}
	s.away = a
	s.hmu.Unlock()

	h.names.file(s.Key(), s)
	h.tokens.file(s.token, s)
	h.keys[keyIndexOf(s.keyHash)] = s
	if u := p.Used; u != nil {
		// Filed as the resume that used it filed it; one whose place
		// is taken here is dropped, the session still found by its
		// newest key.
		if _, taken := h.keys[keyIndexOf(u.Resume)]; !taken {
			h.keys[keyIndexOf(u.Resume)] = s
			h.used[s] = u.key(now)
		}
	}
	// A Parked does not say where the connection the session left came
	// from: the session counts against no address's
	// resume.max_away_per_ip, only resume.max_away, until a connection
	// here carries it and drops (DetachFrom). Sessions are parked as
	// their node drains or stops, and taken up by a resume, which
	// attaches them at once: a client cannot park them at will.
	h.linkAwayLocked(s, netip.Prefix{})

	if pp := p.Pair; pair && pp != nil {
		if pp.PeerNode == h.node {
			if !h.takeStubLocked(s, pp) {
				release = pp.ID
			}
		} else {
			stub := h.newStub(pp.PeerName, h.dir.Remote(pp.PeerNode, pp.PeerKey, pp.PeerName, s.Key(), pp.ID))
			// The room's first is the side that connected.
			a, b := s, stub
			if pp.Holder {
				a, b = stub, s
			}
			r := h.newRoom(a, b, pp.ID, stub, pp.PeerProto)
			rr := remoteRoom{r: r, local: s, stub: stub, node: pp.PeerNode}
			switch {
			case pp.PeerAway:
				rr.peerAway, rr.peerUntil = true, now+pp.PeerWindow
			case p.Untold > 0 && !p.UntoldBack:
				// The news of the partner's going away that the count
				// came with is the last the session had.
				rr.peerAway, rr.peerUntil = true, now+p.UntoldWindow
			}
			h.addRemoteLocked(rr, false)
		}
	}
	return s, release, nil
}

// takeStubLocked puts s, just taken up, in the place of the stub that
// stood in for it in its partner's room on this node, and delivers what
// the stub held. It reports false when there is no such room here any
// more (the pairing ended meanwhile).
func (h *Hub) takeStubLocked(s *Session, pp *ParkedPair) bool {
	h.remoteMu.Lock()
	rr, ok := h.remote[pp.ID]
	if !ok || !rr.local.keyIs(pp.PeerKey) || !rr.stub.keyIs(s.Key()) {
		h.remoteMu.Unlock()
		return false
	}
	delete(h.remote, pp.ID)
	h.remoteMu.Unlock()
	r := rr.r
	r.mu.Lock()
	defer r.mu.Unlock()
	peer := r.other(rr.stub)
	if peer == nil {
		return false
	}
	if r.a == rr.stub {
		r.a = s
	} else {
		r.b = s
	}
	r.stub = nil
	rr.stub.room.Store(nil)
	s.room.Store(r)
	if hd, ok := rr.stub.outbox().(Holder); ok {
		rl := getRelay(peer.name)
		untold := hd.TakeHeld(func(text []byte, sealed bool) {
			rl.ev.Kind = proto.EvMessage
			if sealed {
				rl.ev.Kind = proto.EvSealed
			}
			rl.one[0] = text
			if n, full := s.deliverMessages(h, &rl.ev, rl.one[:]); n == 0 {
				refuseLate(peer.q, full)
			}
		})
		putRelay(rl)
		if a := s.away; a != nil && untold > 0 {
			// The resume tells it, as if the session had been away
			// here (DetachFrom), and that the partner is back if it is.
			until, away := h.peerAwayLocked(r, peer)
			a.partnerWent(untold, until)
			if !away {
				a.partnerBack()
			}
		}
	}
	return true
}

// Snapshot parks every session of this hub at once, for the next
// process to take up (resume.state_file): it ends the hub's life as a
// home for sessions. Sessions a connection still carries go as if
// resumed elsewhere (their connections are evicted); pairs on this hub
// go together, each side's Pair naming this node and saying whether it
// is the side whose token was claimed (ParkedPair.Holder).
func (h *Hub) Snapshot() []*Parked {
	h.mu.Lock()
	var out []*Parked
	var zombies []Queue
	for _, s := range h.names.m {
		if !s.resumable {
			continue
		}
		p, zombie, err := h.exportLocked(s, false)
		if err != nil {
			continue
		}
		out = append(out, p)
		if zombie != nil {
			zombies = append(zombies, zombie)
		}
	}
	h.mu.Unlock()
	for _, q := range zombies {
		q.Evict(EvictResumed)
	}
	return out
}

// Restore takes up sessions a Snapshot of an earlier hub on this node
// parked, each away, with pairs between them made again. It is for a hub
// on its own (whose directory is its own sessions, and their claims),
// before its first login. A session whose name or token is
// taken here already is skipped. It returns how many it took up.
//
// Every session is taken up, however many resume.max_away allows: each
// was told to resume it, and its window bounds how long it stays. A
// session whose partner is not taken up with it (the partner had no
// resume key, or was refused here) is told, at its resume, that the
// pairing ended with the restart.
func (h *Hub) Restore(parked []*Parked) int {
	ld, ok := h.dir.(*localDirectory)
	if !ok {
		return 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	taken := make(map[string]*Session, len(parked))
	type side struct {
		s      *Session
		peer   string // the partner's name
		holder bool   // ParkedPair.Holder
	}
	pairs := make(map[uint64][]side)
	tags := make(map[uint64]uint64)
	for _, p := range parked {
		// Taking it up registers it: the directory's records are the
		// hub's sessions.
		s, _, err := h.importLocked(p, nil, false)
		if err != nil {
			continue
		}
		// Restored to the node it was parked on: its moves do not count.
		s.gen = p.Gen
		taken[p.Key] = s
		if p.Pair != nil {
			pairs[p.Pair.ID] = append(pairs[p.Pair.ID], side{s, p.Pair.PeerName, p.Pair.Holder})
			tags[p.Pair.ID] = p.Pair.Tag
		}
	}
	for id, ss := range pairs {
		if len(ss) != 2 || ss[0].s.Key() == ss[1].s.Key() {
			for _, one := range ss {
				one.s.away.keepLeft(PeerLeft{Peer: one.peer, Reason: proto.ReasonShutdown})
			}
			continue
		}
		// The room's first is the side that connected: the one not
		// marked Holder, or, in a state file written before the mark,
		// the one read first (its Snapshot wrote that side first).
		a, b := ss[0].s, ss[1].s
		if ss[0].holder && !ss[1].holder {
			a, b = b, a
		}
		r := h.newRoom(a, b, id, nil, proto.ProtoUnknown)
		if tag := tags[id]; tag != 0 {
			// The id its pages know it by: they go on under their keys.
			r.id = tag
		}
		a.room.Store(r)
		b.room.Store(r)
		h.rooms++
		ld.restorePairLocked(a, b, id)
	}
	return len(taken)
}
