package hub

import (
	"container/heap"
	"crypto/sha256"
	"crypto/subtle"
	"net/netip"
	"time"

	"duet/proto"
)

// keyIndex is what Hub.keys files a resumable session under: the first
// half of its resume key's SHA-256. A lookup compares the whole hash
// (Resume), so the half only has to tell sessions apart, which 128
// random-looking bits do as well as a token's; an entry of that map is
// 48 bytes instead of 88 for every resumable session.
type keyIndex [sha256.Size / 2]byte

func keyIndexOf(sum [sha256.Size]byte) keyIndex { return keyIndex(sum[:sha256.Size/2]) }

// Session resume: a session outlives its connection.
//
// With resume on (Options.ResumeWindow > 0), a login draws a resume key,
// a secret sent only to the session's own connection in its welcome; the
// hub keeps only the key's SHA-256. When the connection drops without a
// leave, the engine detaches the session (Detach): it goes away, keeping
// its name, token and pairing, and its partner is told (peer_away).
// Messages sent to it are kept (history.go) and refused past
// resume.buffer, never dropped unsaid. Within the window, Resume
// attaches it to a new connection: the messages it may have missed are
// replayed, a fresh key replaces the one used, and the partner is told
// (peer_back). When the window ends first, the session ends as a logout
// with reason timeout.

// ResumeHash is the SHA-256 of a resume key: all the hub keeps of it,
// and what a directory is given to find the session by.
type ResumeHash = [sha256.Size]byte

// away is what the hub keeps about a session while it is away.
type away struct {
	since    time.Duration // when it went away (Hub.clock)
	seq      uint64        // the last Seq it was given before: later ones were kept while it was away
	deadline time.Duration // when its window ends
	// attached is set for a session that was taken up here (Import)
	// from a hub where a connection still carried it: its partner was
	// never told it was away, and is not told it is back.
	attached bool
	// unsent is how many of the messages delivered to the session
	// before it went away its connection never wrote (they were still
	// queued when it dropped): the newest of them, up to seq. A resume
	// that cannot say what it received replays them however long ago
	// they came.
	unsent int

	// Guarded by Hub.mu.
	due        int      // its place in the hub's awayDue, -1 when not there
	prev, next *Session // the hub's list of away sessions, oldest first
	// from is the away sessions of the address the session's last
	// connection came from (DetachFrom), and fromPrev and fromNext link
	// it into their list; from is nil when that address is not known.
	from               *fromAway
	fromPrev, fromNext *Session

	// kept counts the messages kept for the session's resume since it
	// went away, by sender, in the order the senders came: what a
	// refusal (peer_away_full) tells a sender is waiting for them.
	// Nothing kept since is dropped while the session is away: not for
	// room (what does not fit is refused), not for age (the window
	// counts from when it went), not by an acknowledgement (Ack: no
	// connection was handed it). So counts kept as messages are stay
	// those of the history, and a refusal looks at none of it: a look
	// for each, against a full buffer of short lines piped flat out,
	// held the sender's event loop, and every pair on it, for seconds.
	// Guarded by Session.hmu.
	kept []keptFrom
	// noneKept is the refusal of a sender none of whose messages were
	// kept (refusal). Guarded by Session.hmu.
	noneKept *proto.Error

	// left is the end of the session's pairing while it was away, which
	// its connection could not be told (awayQueue drops it): its resume
	// tells it. A pairing made meanwhile moves it to earlier, since a
	// peer_left after a resume that names a partner would read as that
	// pairing's end: the resume tells those as ended_away, each with
	// how many of the user's messages never reached that partner, which
	// were lost untold before. earlier keeps the last maxEndedAway. A
	// park carries one end: left, or else the last of earlier, which a
	// session taken up paired keeps in earlier (Import). Guarded by
	// Hub.mu.
	left    *PeerLeft
	earlier []PeerLeft
	// joined says the session's pairing began while it was away: its
	// end is told with that (PeerLeft.Joined). Guarded by Hub.mu.
	joined bool

	// untold is how many of the session's messages its partner went
	// away without (never written to the partner, and not kept for its
	// resume) while the session was away itself: the peer_away that
	// counted them went to awayQueue. peerUntil is when the partner's
	// window ends, as the last news of its going away said, and
	// peerBack says news of its return came after. The session's resume
	// tells the count with that news (tellPeerLocked); if the pairing
	// ends first, the peer_left kept for the resume counts it
	// (keepLeft). They are kept with the session told, not with the
	// partner, so that they go with it when it is parked
	// (Parked.Untold), wherever it is taken up: the two may be taken up
	// on different nodes. Guarded by Hub.mu.
	untold    int
	peerUntil time.Duration
	peerBack  bool
	// peerWasAway says the partner was away as the session went away:
	// the session was told so, unless the news died with its
	// connection, and its resume tells it again, with the partner's
	// return if it is back by then (tellPeerLocked).
	// A park carries it, and joined (Parked.PeerWasAway).
	peerWasAway bool
	// shutdown says the session went away as its server drained for a
	// restart, not for a connection lost: its partner is told so
	// (reason), here and after the restart (Parked.Shutdown).
	shutdown bool
	// unannounced says its partner was not told it went away: the
	// drain that sent it away was about to tell the partner of the
	// restart itself (DetachFrom). The partner's return then says
	// nothing of it (peerWasAway). Not carried by a park: a partner
	// on another node was told.
	unannounced bool
}

// reason is why the session went away, as its partner is told:
// proto.ReasonShutdown when its server drained (shutdown), else none,
// the connection lost.
func (a *away) reason() proto.Reason {
	if a.shutdown {
		return proto.ReasonShutdown
	}
	return ""
}

// keptFrom counts the messages from one sender kept for a session
// since it went away.
type keptFrom struct {
	from string
	n    int
	size int64 // the bytes of their texts
	// refusal is the peer_away_full made for this count, once one was:
	// a sender refused once is refused again for every line it sends
	// until something is kept, and each is told the same.
	refusal *proto.Error
}

// keep counts n messages from `from`, of size bytes of text, kept for
// the session since it went away.
func (a *away) keep(from string, n int, size int64) {
	k := a.keptFor(from)
	k.n += n
	k.size += size
	k.refusal = nil
}

// keptFor returns the count of what was kept from `from`, starting one
// if there is none: nearly always the one partner's, the newest.
func (a *away) keptFor(from string) *keptFrom {
	if k := a.keptOf(from); k != nil {
		return k
	}
	a.kept = append(a.kept, keptFrom{from: from})
	return &a.kept[len(a.kept)-1]
}

// refusal is peer_away_full for a message from `from` to the session,
// called name: it is told of its own messages only, as a pairing made
// while the session was away follows one whose messages are kept still.
// A sender none of whose messages were kept is given the one refusal
// that says so (noneKept), and no count of its own: anyone may connect
// to an away session's token under a new name, send a line and leave,
// and a count for each would hold memory, and time to look through,
// without bound for as long as the session stays away.
func (a *away) refusal(name, from string) *proto.Error {
	k := a.keptOf(from)
	if k == nil {
		if a.noneKept == nil {
			a.noneKept = proto.PeerAwayFull(name, 0, 0)
		}
		return a.noneKept
	}
	if k.refusal == nil {
		k.refusal = proto.PeerAwayFull(name, k.n, k.size)
	}
	return k.refusal
}

// keptOf returns the count of what was kept from `from`, or nil if
// nothing was.
func (a *away) keptOf(from string) *keptFrom {
	for i := len(a.kept) - 1; i >= 0; i-- {
		if a.kept[i].from == from {
			return &a.kept[i]
		}
	}
	return nil
}

// keptText is the bytes of the texts kept since the session went away.
func (a *away) keptText() int64 {
	var n int64
	for _, k := range a.kept {
		n += k.size
	}
	return n
}

// partnerWent notes that the partner of the session, away, went away
// too, without lost of the session's messages, its window ending at
// until: news the session was not told.
func (a *away) partnerWent(lost int, until time.Duration) {
	a.untold += lost
	a.peerUntil, a.peerBack = until, false
}

// partnerBack notes that the partner of the session, away, came back:
// news the session was not told.
func (a *away) partnerBack() { a.peerBack = true }

// keepLeft keeps left, the end of the session's pairing while it is
// away, for its resume, counting with it what the partner went away
// without that the session was not told (untold).
func (a *away) keepLeft(left PeerLeft) {
	left.Undelivered += a.untold
	left.Joined = a.joined
	a.untold, a.peerBack, a.joined = 0, false, false
	a.left = &left
}

// keepEarlier keeps the end of a pairing another followed, the last
// maxEndedAway of them.
func (a *away) keepEarlier(left PeerLeft) {
	if len(a.earlier) == maxEndedAway {
		a.earlier = append(a.earlier[:0], a.earlier[1:]...)
	}
	a.earlier = append(a.earlier, left)
}

// PeerLeft is a peer_left a session was told while it was away: what
// the event carries, kept until the session's resume tells it.
type PeerLeft struct {
	Peer        string
	Reason      proto.Reason
	Undelivered int // the session's messages that never reached Peer
	// Joined says Peer connected to the session while it was away,
	// which it was never told (proto.Event.JoinedAway).
	Joined bool
}

// event is the peer_left p keeps, as it was told.
func (p *PeerLeft) event() proto.Event {
	return proto.Event{Kind: proto.EvPeerLeft, Peer: p.Peer, Reason: p.Reason, Count: p.Undelivered, JoinedAway: p.Joined}
}

// endedAway is p told of a pairing that another followed.
func (p *PeerLeft) endedAway() proto.Event {
	ev := p.event()
	ev.Kind = proto.EvEndedAway
	return ev
}

// tellPeerLeftLocked tells s that its partner is gone; while s is away,
// it keeps left for s's resume instead. Hub.mu is held, and the lock of
// the room that ends.
func (h *Hub) tellPeerLeftLocked(s *Session, left PeerLeft) {
	if a := s.away; a != nil {
		a.keepLeft(left)
		return
	}
	if n := h.unsureNewsLocked(s); n != nil {
		// Its connection may be one whose client never read the answer
		// to its resume: a resume with the key that one used tells
		// this again (retold).
		n.keepLeft(left)
	}
	deliver(s.q, left.event())
}

// unsureNewsLocked returns, for a session whose client has not shown it
// read the answer to its resume (Session.keyUnsure), the news that a
// resume with the key that one used tells again, to which what the
// session is told since is added: its connection may be as dead as the
// answer's. It returns nil for any other session. Hub.mu is held.
func (h *Hub) unsureNewsLocked(s *Session) *away {
	u, ok := h.used[s]
	if !ok {
		return nil
	}
	if u.news == nil {
		u.news = &away{due: -1}
		h.used[s] = u
	}
	return u.news
}

// toldPeerAwayLocked notes, for a session whose client may not have
// read the answer to its resume (unsureNewsLocked), that its connection
// was told its partner is away: a resume with the key that resume used
// tells where the partner is by then (tellPeerLocked), back if it came
// back, which that connection may have been told, and lost, too.
// Hub.mu is held.
func (h *Hub) toldPeerAwayLocked(s *Session) {
	if n := h.unsureNewsLocked(s); n != nil {
		n.peerWasAway = true
	}
}

// retold is the news a resume tells with the key the session's last
// resume used, whose answer its client may never have read, when the
// session went away again since: what that answer told (before), then
// what came while it was away again (since), as one absence. The ends
// of pairings come in order, the last as left (told as peer_left if no
// pairing follows it); of the partner's absence, a count of messages
// it went away without that before told, for a pairing that ended
// since, goes with that pairing's end, and the rest of before's news
// of the partner counts only if the pairing is the same.
func retold(before, since *away) *away {
	if before == nil {
		return since
	}
	m := &away{untold: since.untold, peerUntil: since.peerUntil, peerBack: since.peerBack, peerWasAway: since.peerWasAway, joined: since.joined}
	var ended []PeerLeft
	ended = append(ended, before.earlier...)
	if before.left != nil {
		ended = append(ended, *before.left)
	}
	first := len(ended) // the first end of a pairing since
	ended = append(ended, since.earlier...)
	if since.left != nil {
		ended = append(ended, *since.left)
	}
	switch {
	case first < len(ended):
		ended[first].Undelivered += before.untold
	case before.left == nil:
		// The same pairing as before's.
		m.untold += before.untold
		m.peerWasAway = m.peerWasAway || before.peerWasAway
	}
	if n := len(ended); n > 0 {
		m.left = &ended[n-1]
		m.earlier = ended[max(n-1-maxEndedAway, 0) : n-1]
	}
	return m
}

// maxEndedAway bounds the pairings ended while a session was away, each
// followed by another, that its resume tells (away.earlier): each needs
// someone to connect to the session's token while it is away.
const maxEndedAway = 8

// pairedAwayLocked notes that s was just paired: a pairing that ended
// while it was away is no longer what the state its resume finds comes
// from, but is told as an earlier one; nor is news of the partner before
// (away or back) news of this one. So for the news a resume with the
// key its last resume used tells again (Hub.used). Hub.mu is held.
func (s *Session) pairedAwayLocked() {
	a := s.away
	if a == nil {
		// Attached, maybe to a connection whose client never read the
		// answer to its resume: the news a resume with the key that one
		// used tells again is brought up to date as well.
		if u, ok := s.hub.used[s]; ok {
			a = u.news
		}
	}
	if a != nil {
		if a.left != nil {
			a.keepEarlier(*a.left)
		}
		a.left, a.untold, a.peerBack, a.peerWasAway, a.peerUntil = nil, 0, false, false, 0
		// Told of nothing of it: the pairing's end says it began.
		a.joined = s.away != nil
	}
}

// awayBox is the Outbox of a session while it is away: its connection
// is gone, so what is not kept for its resume (the notices that are not
// messages) is dropped. The state a resume reports (who the user is
// paired with) says what those notices said.
type awayBox struct{}

func (awayBox) Deliver(*proto.Event) {}

// awayQueue is awayBox as a Queue: it never holds a sender back.
var awayQueue = &plainQueue{Outbox: awayBox{}}

// fromAway is the sessions away whose last connection came from one
// client address, in the order they went away: resume.max_away_per_ip
// bounds them. The hub files it under the address's key while it holds
// any (Hub.awayFrom).
type fromAway struct {
	key            netip.Prefix
	oldest, newest *Session
	n              int
}

// makeRoomLocked ends the sessions away the longest so that one more,
// whose connection came from the address keyed from, may go away: first
// that address's own while it has resume.max_away_per_ip away, then
// anyone's while resume.max_away are away. It returns them for
// finishLogouts. Hub.mu is held.
//
// The address's own go first so that one address, which can log in and
// drop its connection as fast as the server answers, reaches only its
// own cap and never the node's: it ends its own sessions, not the ones
// other people's dropped connections left waiting.
func (h *Hub) makeRoomLocked(from netip.Prefix) (evicted []logout) {
	if f := h.awayFrom[from]; f != nil {
		for limit := int(h.maxAwayPerIP.Load()); f.n >= limit && f.oldest != nil; {
			lo, _ := h.logoutLocked(f.oldest)
			evicted = append(evicted, lo)
		}
	}
	for limit := int(h.maxAway.Load()); h.awayCount >= limit && h.awayOldest != nil; {
		lo, _ := h.logoutLocked(h.awayOldest)
		evicted = append(evicted, lo)
	}
	return evicted
}

// SetDraining tells the hub that its node is draining: every session is
// sent away at once, each told to reconnect and resume, and none may be
// ended to make room for another (resume.max_away), or its client would
// be told to resume a session that is gone. It lasts for the rest of the
// hub's life, which a drain ends.
func (h *Hub) SetDraining() { h.draining.Store(true) }

// Detach is DetachFrom with the address of s's connection not known:
// s is not counted against any address's resume.max_away_per_ip.
func (s *Session) Detach(reason proto.Reason, undelivered int) {
	s.DetachFrom(netip.Prefix{}, reason, undelivered)
}

// DetachFrom is what happens to s when its connection ends without a
// leave (a reset, a timeout, a network gone). With resume on, s goes
// away: its name, token and pairing stay (a third party still gets
// room_full), its partner is told (EvPeerAway, with the window), the
// messages sent to it are kept for its resume, and if no resume comes
// within resume.window, it ends as Close would with reason timeout.
// undelivered is how many of the messages delivered to s its connection
// never wrote (or, for one still open that a drain is about to close,
// how many its client is not known to have received): the newest of
// them, which a resume over the line protocol replays whenever they came
// (Resume).
//
// from is the key the connection's client address is counted under
// (the engine's, as for limits.max_conns_per_ip); the hub only compares
// keys. If resume.max_away_per_ip sessions whose connections came from
// it are away already, the one of them away the longest ends first; then
// if resume.max_away sessions are away, the one away the longest of all
// (either's partner is told timeout). The zero Prefix is no address
// known: s is then bounded by resume.max_away alone. The key is given
// here, with the connection's end, rather than kept in the Session from
// its login: it is needed only while the session is away, and a Session
// has no room for it in its size class (TestSessionLayout).
//
// With resume off, or for a session that has no resume key (it logged in
// while resume was off), DetachFrom is Close(reason, undelivered). It
// does nothing to a session that is closed, retired by a resume, or
// away already. The rules of Close apply.
func (s *Session) DetachFrom(from netip.Prefix, reason proto.Reason, undelivered int) {
	h := s.hub
	window := h.window()
	if !s.resumable || window <= 0 {
		s.Close(reason, undelivered)
		return
	}
	now := h.clock.now()
	h.mu.Lock()
	if s.closed || s.away != nil {
		h.mu.Unlock()
		return
	}
	var evicted []logout
	if !h.draining.Load() {
		evicted = h.makeRoomLocked(from)
	}
	a := &away{since: now, deadline: now + window, unsent: max(undelivered, 0), due: -1, shutdown: h.draining.Load()}
	r := s.room.Load()
	if r != nil {
		r.mu.Lock()
		// Relayed after the connection closed, up to now: never written
		// either.
		_, dropped := neverWritten(s.q)
		a.unsent += dropped
	}
	s.hmu.Lock()
	a.seq = s.seq
	// None the client acknowledged itself: they were received.
	a.unsent = s.unreceivedAfterAck(a.unsent, a.seq)
	s.away = a
	// Of what the connection never wrote, those not kept will never
	// reach s: the partner is told now, with the away news, as many as
	// s's resume counts missed for them, and the end of the window
	// counts them no more (awayUndeliveredLocked). Not kept, they are
	// counted whoever sent them, as at that end.
	_, lost := s.hist.unsentKept(a.seq, a.unsent)
	s.hmu.Unlock()
	s.q = awayQueue
	if r != nil {
		if p := r.other(s); p != nil {
			_, a.peerWasAway = h.peerAwayLocked(r, p)
			if pa := p.away; pa != nil && pa.unannounced {
				// s was never told that p went away (a drain, below):
				// p's return is no news to it either.
				a.peerWasAway = false
			}
			switch pa := p.away; {
			case pa != nil:
				// Dropped (awayQueue): p's resume tells it.
				pa.partnerWent(lost, a.deadline)
				deliver(p.q, proto.Event{Kind: proto.EvPeerAway, Peer: s.name, Window: window, Count: lost})
			case h.draining.Load() && p != r.stub && lost == 0:
				// The server drains for a restart, and p, on it too, is
				// about to be told so and go away in its turn: told
				// first that s lost the connection, which s did not, its
				// user would read of a failure of s's. Its resume says
				// where s is by then (away, or back).
				a.unannounced = true
			default:
				h.toldPeerAwayLocked(p)
				// Draining, a partner on another node of a cluster: s
				// did not lose the connection, its server is
				// restarting, and s comes back on another (reason).
				deliver(p.q, proto.Event{Kind: proto.EvPeerAway, Peer: s.name, Window: window, Count: lost, Reason: a.reason()})
			}
		}
		r.mu.Unlock()
	}
	h.linkAwayLocked(s, from)
	h.mu.Unlock()
	h.awayEvicted.Add(uint64(len(evicted)))
	h.finishLogouts(evicted, proto.ReasonTimeout, 0)
}

// expireDue ends the away sessions whose window has run out, and sets
// the hub's away timer for the next one. gen is the timer's: a timer
// that was replaced as it fired leaves the hub's own alone.
func (h *Hub) expireDue(gen uint64) {
	h.mu.Lock()
	if gen == h.awayTimerGen {
		h.awayTimer = nil
	}
	now := h.clock.now()
	var los []logout
	for len(h.awayDue) > 0 && h.awayDue[0].away.deadline <= now {
		// logoutLocked takes it out of awayDue.
		lo, _ := h.logoutLocked(h.awayDue[0])
		los = append(los, lo)
	}
	h.armAwayLocked()
	h.mu.Unlock()
	h.awayTimedOut.Add(uint64(len(los)))
	h.finishLogouts(los, proto.ReasonTimeout, 0)
}

// armAwayLocked sets the hub's away timer for the soonest deadline in
// awayDue, unless it is set for that or sooner. A session that leaves
// awayDue does not move the timer: when it fires early it sets itself
// again.
func (h *Hub) armAwayLocked() {
	if len(h.awayDue) == 0 {
		return
	}
	at := h.awayDue[0].away.deadline
	if h.awayTimer != nil {
		if h.awayTimerAt <= at {
			return
		}
		h.awayTimer.Stop()
	}
	h.awayTimerGen++
	gen := h.awayTimerGen
	h.awayTimerAt = at
	h.awayTimer = h.clock.afterFunc(max(at-h.clock.now(), 0), func() { h.expireDue(gen) })
}

// linkAwayLocked puts s, which just went away, at the end of the hub's
// list of away sessions, and of the list of those from the address keyed
// from (none for the zero Prefix), and in awayDue by its deadline.
func (h *Hub) linkAwayLocked(s *Session, from netip.Prefix) {
	a := s.away
	if from.IsValid() {
		f := h.awayFrom[from]
		if f == nil {
			f = &fromAway{key: from}
			h.awayFrom[from] = f
		}
		a.from, a.fromPrev = f, f.newest
		if f.newest != nil {
			f.newest.away.fromNext = s
		} else {
			f.oldest = s
		}
		f.newest = s
		f.n++
	}
	a.prev = h.awayNewest
	if h.awayNewest != nil {
		h.awayNewest.away.next = s
	} else {
		h.awayOldest = s
	}
	h.awayNewest = s
	h.awayCount++
	heap.Push(&h.awayDue, s)
	h.armAwayLocked()
}

// unlinkAwayLocked takes s out of the list of away sessions, out of its
// address's, and out of awayDue: it was resumed, or it ends.
func (h *Hub) unlinkAwayLocked(s *Session) {
	a := s.away
	if a.due >= 0 {
		heap.Remove(&h.awayDue, a.due)
	}
	if a.prev != nil {
		a.prev.away.next = a.next
	} else {
		h.awayOldest = a.next
	}
	if a.next != nil {
		a.next.away.prev = a.prev
	} else {
		h.awayNewest = a.prev
	}
	a.prev, a.next = nil, nil
	h.awayCount--
	if f := a.from; f != nil {
		if a.fromPrev != nil {
			a.fromPrev.away.fromNext = a.fromNext
		} else {
			f.oldest = a.fromNext
		}
		if a.fromNext != nil {
			a.fromNext.away.fromPrev = a.fromPrev
		} else {
			f.newest = a.fromPrev
		}
		a.from, a.fromPrev, a.fromNext = nil, nil, nil
		if f.n--; f.n == 0 {
			delete(h.awayFrom, f.key)
		}
	}
}

// tellAwayLocked tells to, just paired with s, that s is away, if it is,
// and how long it may still take to come back.
func (h *Hub) tellAwayLocked(s *Session, to Outbox) {
	if s.away == nil {
		return
	}
	deliver(to, proto.Event{Kind: proto.EvPeerAway, Peer: s.name, Window: max(s.away.deadline-h.clock.now(), 0), Reason: s.away.reason()})
}

// tellPeerLocked tells to, the connection of a session just resumed
// and paired with peer in r, what it may not know of peer: that peer is
// away, if it is (peerAwayLocked), and how long it may still take; and
// with that, how many of the session's messages peer went away without
// while the session was away too (a, the session's away state: untold),
// which it was not told. When peer is not away, that count comes with
// the news the session missed: that peer went away, with what remained
// of the window it then had, and that it is back; so it is, count or
// none, of a peer that was away as the session went away and is back
// by now (a.peerWasAway). A peer that went away and came back while the
// session was away, and lost none of its messages, is no news: it is
// there. The count is told once: the resume retires a.
func (h *Hub) tellPeerLocked(a *away, r *room, peer *Session, to Outbox) {
	untold := 0
	if a != nil {
		untold = a.untold
	}
	now := h.clock.now()
	if until, why, away := h.peerAwayWhyLocked(r, peer); away {
		deliver(to, proto.Event{Kind: proto.EvPeerAway, Peer: peer.name, Window: max(until-now, 0), Count: untold, Reason: why})
		return
	}
	if untold == 0 && (a == nil || !a.peerWasAway) {
		return
	}
	// Some of the session's messages never reached the partner, who
	// went away and came back meanwhile: both news, with the count and
	// what remained of the partner's window then. Or the partner was
	// away as the session went away (peerWasAway), and came back since:
	// the session was told of that away, but the news may have died
	// with its connection, unread, and a return alone would be of an
	// absence it never heard of. Both news, the away as it was told
	// then, with the whole window.
	window := max(a.peerUntil-now, 0)
	if untold == 0 {
		window = h.window()
	}
	deliver(to, proto.Event{Kind: proto.EvPeerAway, Peer: peer.name, Window: window, Count: untold})
	deliver(to, proto.Event{Kind: proto.EvPeerBack, Peer: peer.name, PeerProto: r.protoOf(peer)})
}

// peerAwayWhyLocked is peerAwayLocked with why peer went away, as its
// partner was told as it went: gone with its server's restart
// (away.reason) when it is away on this hub, else the connection lost,
// as far as this hub knows. Hub.mu is held, and r.mu.
func (h *Hub) peerAwayWhyLocked(r *room, peer *Session) (until time.Duration, why proto.Reason, away bool) {
	until, away = h.peerAwayLocked(r, peer)
	if away && peer != r.stub {
		why = peer.away.reason()
	}
	return until, why, away
}

// peerAwayLocked reports whether peer, a side of r, is away, and when
// its window ends: a session of this hub by its away state (one taken
// up here attached never went away, as far as its partner was told),
// and a partner on another node, or parked between nodes, by the last
// news of it here (remoteRoom.peerAway). Hub.mu is held, and r.mu.
func (h *Hub) peerAwayLocked(r *room, peer *Session) (until time.Duration, away bool) {
	if peer != r.stub {
		if pa := peer.away; pa != nil && !pa.attached {
			return pa.deadline, true
		}
		return 0, false
	}
	h.remoteMu.RLock()
	defer h.remoteMu.RUnlock()
	if rr, ok := h.remote[r.pairID]; ok && rr.r == r && rr.peerAway {
		return rr.peerUntil, true
	}
	return 0, false
}

// CloseAway ends every session that is away, telling their partners
// reason: a node that shuts down without handing its sessions over.
func (h *Hub) CloseAway(reason proto.Reason) {
	h.mu.Lock()
	var los []logout
	for h.awayOldest != nil {
		lo, _ := h.logoutLocked(h.awayOldest)
		los = append(los, lo)
	}
	h.mu.Unlock()
	h.finishLogouts(los, reason, 0)
}

// EndAway ends the session key if it is away on this node, telling its
// partner reason, and reports whether it did: a node draining for a
// restart that could not park the session, and would otherwise tell
// its client to resume a session no node will have. A session being
// moved is left to its move.
func (h *Hub) EndAway(key string, reason proto.Reason) bool {
	h.mu.Lock()
	s := h.names.lookup(key)
	if s == nil || s.away == nil || s.moving {
		h.mu.Unlock()
		return false
	}
	lo, ok := h.logoutLocked(s)
	h.mu.Unlock()
	if ok {
		h.finishLogouts([]logout{lo}, reason, 0)
	}
	return ok
}

// Resumed is what a resume did.
type Resumed struct {
	// Session is the session, for the new connection to drive from now
	// on. It is a new Session for the same user: the one the old
	// connection held is retired, and acts as if logged out.
	Session *Session
	// Zombie is the Outbox of the connection that still carried the
	// session (the server had not noticed it was dead), or nil if the
	// session was away. Its Queue has been evicted (EvictResumed): the
	// caller ends that connection, telling its user why (replaced).
	Zombie Outbox
	// Replayed is how many messages were replayed; Missed how many the
	// resume should have replayed but could not, since they were not
	// kept.
	Replayed, Missed int
}

// Resume takes back the session whose resume key is key for the
// connection that reaches out, whether the session is away or still
// attached to another connection (a zombie). Before it returns, out is
// handed, in order: EvResumed (who the user is, with whom, how many
// messages follow and how many were missed, the id of the last message
// of the user's that was relayed, and a fresh resume key; the one used
// stops working, once the client shows it has this answer: "The key a
// resume used" below), the replayed messages with their Seq, and
// after them EvReplayEnd, if any were replayed, then EvPeerAway if the
// partner is away too. The partner is told EvPeerBack if the session
// was away.
//
// What is replayed: with hasLast (a JSON client, which numbers what it
// receives), exactly the messages numbered after last, and Missed is
// how many of those were not kept; the kept ones up to last are dropped,
// as Ack drops them. Without (the line protocol), the messages delivered
// from resume.replay_recent before the connection dropped (or before
// now, for a zombie) on, since whether the client read them is unknown,
// and before them any that the connection never wrote (Detach's
// undelivered, or what a zombie's queue still holds: UnsentCounter);
// Missed is how many of those were not kept.
//
// No message from the partner reaches out before the replay, nor twice:
// messages are delivered under the lock of their room, and a session's
// room changes only under Hub.mu. Resume holds Hub.mu throughout, and
// the room's lock from the moment the session is moved to out to the end
// of the replay; a message the partner sends meanwhile either was kept
// before, and is in the replay, or is delivered to out after it.
//
// A key that is malformed, unknown, expired or used already fails with
// bad_resume_key (proto.ErrBadResumeKey, proto.ErrUnknownResumeKey),
// which the caller counts as a failed attempt for its throttle.
//
// With a directory that moves sessions between nodes (a Mover: a
// cluster's), a session that is not on this node is fetched from where
// it is first (park.go), and the directory is told of the fresh key
// before it is handed out, so the next resume finds the session from
// any node; Resume then waits on the network, and is called off the
// event loop. A resume of a session being moved already fails with
// unavailable.
func (h *Hub) Resume(key []byte, last uint64, hasLast bool, out Outbox) (Resumed, *proto.Error) {
	k, perr := proto.ParseResumeKey(key)
	if perr != nil {
		h.resumeBadKey.Add(1)
		return Resumed{}, proto.ErrBadResumeKey
	}
	sum := sha256.Sum256(k[:])
	fresh := proto.NewResumeKey()
	// With resume turned off since the session went away (a reload), the
	// resume still takes it back, but gives no key for the next drop,
	// which would end it: as a login gives none.
	s := &Session{hub: h, q: queueOf(out), client: protocolOf(out), resumable: h.window() > 0, keyHash: sha256.Sum256(fresh[:])}
	var moving *Session
	if mv, ok := h.dir.(Mover); ok {
		// The key used is kept, for a retry whose answer was lost, by a
		// session that gets a fresh one.
		var used *ResumeHash
		if s.resumable {
			used = &sum
		}
		var err *proto.Error
		if moving, err = h.prepareMove(mv, &sum, used, &s.keyHash, s.client); err != nil {
			switch {
			case err == proto.ErrSessionEndedWithNode:
				h.resumeEnded.Add(1)
			case err.Code == proto.ErrUnknownResumeKey.Code:
				h.resumeBadKey.Add(1)
			}
			return Resumed{}, err
		}
	}
	now := h.clock.now()

	h.mu.Lock()
	old := h.keys[keyIndexOf(sum)]
	// The map found it by half the hash; the whole is compared, in
	// constant time so that no code path ever compares key material
	// otherwise.
	if old == nil || old.closed || !h.opensLocked(old, &sum) || old.moving && old != moving {
		if moving != nil {
			moving.moving = false
		}
		h.mu.Unlock()
		h.resumeBadKey.Add(1)
		if h.window() <= 0 {
			// None will ever be found: resume is off here.
			return Resumed{}, proto.ErrResumeOff
		}
		return Resumed{}, proto.ErrUnknownResumeKey
	}
	s.name, s.token, s.gen, s.claim = old.name, old.token, old.gen, old.claim
	old.moving = false
	a := old.away
	// What the answer tells of the session's absence (its partner, a
	// pairing that ended meanwhile): that of the away state it comes
	// back from, or, taken over with the key its last resume used, what
	// that resume's answer, which its client may never have read, told.
	news := a
	// again: the first message the lost answer replayed to a client
	// that does not say what it received, replayed again.
	var again uint64
	if h.usedOpensLocked(old, &sum) {
		again = h.used[old].replayFrom
		if a == nil {
			news = h.used[old].news
		} else {
			// Away again since: what came since follows.
			news = retold(h.used[old].news, a)
		}
	}
	var zombie Queue
	var res Resumed
	if a != nil {
		h.unlinkAwayLocked(old)
	} else {
		zombie, res.Zombie = old.q, old.outbox()
	}
	old.closed = true
	h.unfileKeysLocked(old)
	if s.resumable {
		h.keys[keyIndexOf(s.keyHash)] = s
		h.keys[keyIndexOf(sum)] = s
		h.used[s] = usedKey{sum: sum, news: news}
		s.keyUnsure = true
	}
	h.names.file(s.Key(), s)
	h.tokens.file(s.token, s)

	r := old.room.Load()
	var peer *Session
	if r != nil {
		r.mu.Lock()
		if r.a == old {
			r.a = s
		} else if r.b == old {
			r.b = s
		}
		peer = r.other(s)
		s.room.Store(r)
		old.room.Store(nil)
	}
	s.sentMessages.Store(old.sentMessages.Load())
	s.sentBytes.Store(old.sentBytes.Load())
	s.sealed.Store(old.sealed.Load())
	s.lastID = old.lastID
	old.hmu.Lock()
	hs, seq, swept, acked := old.hist, old.seq, old.swept, old.acked
	old.hist, old.away, old.swept = nil, nil, false
	old.hmu.Unlock()
	s.hmu.Lock()
	s.seq, s.hist, s.acked = seq, hs, acked
	s.answerUnread = s.keyUnsure
	// A client that says what it received acknowledges for itself.
	s.clientAcks = hasLast
	if hasLast {
		s.acked = max(acked, min(last, seq))
	}
	if swept {
		// The sweep is armed while old is in its set; s takes its place
		// there if it has something to keep.
		h.histMu.Lock()
		delete(h.histories, old)
		if hs != nil {
			h.histories[s] = struct{}{}
			s.swept = true
		}
		h.histMu.Unlock()
	}
	res.Session = s
	g := gone{at: now, seq: seq}
	if a != nil {
		g = gone{at: a.since, seq: a.seq, unsent: a.unsent}
	} else {
		// Less what the old connection's client acknowledged itself.
		g.unsent = s.unreceivedAfterAck(notReceived(zombie), seq)
	}
	var first uint64
	res.Replayed, res.Missed, first = s.replayLocked(last, hasLast, g, fresh, r, peer, again)
	if u, ok := h.used[s]; ok && !hasLast && first != 0 {
		u.replayFrom = first
		h.used[s] = u
	}
	if news != nil {
		// Pairings that ended while the session was away, each followed
		// by another: the answer names the partner now, and the replay
		// may hold their messages, but not how they ended.
		for i := range news.earlier {
			deliver(s.q, news.earlier[i].endedAway())
		}
		if news.left != nil && peer != nil {
			// Paired since, with no end of the pairing kept after it
			// (retold: a pairing made in the second absence).
			deliver(s.q, news.left.endedAway())
		}
	}
	if peer != nil {
		// The partner may be away too: the peer_away that said so went
		// to a connection that is gone (or to the zombie), and the
		// answer above says only with whom the user is paired. Told
		// here, the user knows why nothing comes back, and peer_back
		// follows; and how many of its messages the partner went away
		// without, which it was not told then, even if the partner is
		// back by now.
		h.tellPeerLocked(news, r, peer, s.q)
		if _, away := h.peerAwayLocked(r, peer); away {
			h.toldPeerAwayLocked(s)
		}
	}
	if news != nil && news.left != nil && peer == nil {
		// The pairing ended while the session was away: the answer says
		// only that the user is paired with no one. Told here, as it
		// would have been told live, the user learns who went, why, and
		// how many of their messages never reached them.
		deliver(s.q, news.left.event())
	}
	s.settleLocked()
	s.hmu.Unlock()
	if r != nil {
		if a != nil && !a.attached && peer != nil {
			if pa := peer.away; pa != nil {
				// Dropped (awayQueue): the partner's resume tells it.
				pa.partnerBack()
			}
			deliver(peer.q, proto.Event{Kind: proto.EvPeerBack, Peer: s.name, PeerProto: r.protoOf(s)})
		}
		r.mu.Unlock()
		if r.stub != nil {
			h.remoteMu.Lock()
			if rr, ok := h.remote[r.pairID]; ok && rr.r == r {
				rr.local = s
				h.remote[r.pairID] = rr
			}
			h.remoteMu.Unlock()
		}
	}
	h.mu.Unlock()
	switch {
	case zombie != nil:
		zombie.Evict(EvictResumed)
		h.resumedZombie.Add(1)
	case a.attached:
		// Taken over from a connection on another node, which that
		// node evicted as it let the session go.
		h.resumedZombie.Add(1)
	default:
		h.resumedAway.Add(1)
	}
	return res, nil
}

// The key a resume used.
//
// A resume's answer carries a fresh key, and the one used stops working
// for the next resume; but a resume is made over the networks that fail:
// a phone that reconnects, then loses its connection again before the
// answer reaches it, holds only the key it used. So the used key is kept
// beside the fresh one (Hub.used) until the client shows it has the
// answer, by saying anything after it (KeyReceived). Meanwhile it takes
// the session back as the fresh one does, and the key not used of the
// two stops working: once the connection that resumed is gone (the
// session is away), or from that connection while it still looks open,
// as a zombie's is taken over. A phone whose network failed again sends
// no reset, and its connection may look open for minutes; the client
// that asked the resume is the only one that holds the key it used.
//
// A load balancer may send the retry to any node, and the node that
// answered may move the session meanwhile: so in a cluster the directory
// finds the session by the key used too (Mover.Rekey) until it is
// retired (Mover.RetireUsed, or the next Rekey), and the session takes
// the key, with the news, wherever it goes (Parked.Used): a hand-over
// asked with it (BeginPark), a park, the state a restart hands on. The
// node that takes it up files both keys, and a resume with either is
// answered as it would be here.

// usedKey is the key a resume used, kept until its client shows it has
// the answer (Hub.used): its hash, and the news of the session's absence
// that answer told (the away state it was resumed from, nil when it was
// taken over from an open connection), which a resume with the same key
// tells again: the client that lost the answer lost the news with it.
type usedKey struct {
	sum  ResumeHash
	news *away
	// replayFrom is the number of the first message the answer
	// replayed to a client that does not say what it received (a line
	// client), 0 for none: that client may have lost them with the
	// answer, though its TCP acknowledged them, and a resume with the
	// same key replays them again (Session.answerUnread keeps them).
	replayFrom uint64
}

// opensLocked reports whether the key that hashes to sum opens s: its
// newest key, or the key its last resume used while its client has not
// shown it had the answer. Both are compared in constant time. h.mu is
// held.
func (h *Hub) opensLocked(s *Session, sum *ResumeHash) bool {
	newest := subtle.ConstantTimeCompare(s.keyHash[:], sum[:]) == 1
	return newest || h.usedOpensLocked(s, sum)
}

// usedOpensLocked reports whether sum is the hash of the key s's resume
// used, still kept. h.mu is held.
func (h *Hub) usedOpensLocked(s *Session, sum *ResumeHash) bool {
	u, held := h.used[s]
	return held && subtle.ConstantTimeCompare(u.sum[:], sum[:]) == 1
}

// unfileKeysLocked takes s's keys out of h.keys: its newest, and the
// one its last resume used if still kept. h.mu is held.
func (h *Hub) unfileKeysLocked(s *Session) {
	delete(h.keys, keyIndexOf(s.keyHash))
	h.forgetUsedLocked(s)
}

// forgetUsedLocked retires the key s's last resume used, if still kept.
// h.mu is held.
func (h *Hub) forgetUsedLocked(s *Session) {
	if u, ok := h.used[s]; ok {
		if i := keyIndexOf(u.sum); h.keys[i] == s {
			delete(h.keys, i)
		}
		delete(h.used, s)
	}
}

// KeyUnsure reports whether s was made by a resume whose client has not
// shown it has the answer (KeyReceived). Only s's connection asks, on
// its loop.
func (s *Session) KeyUnsure() bool { return s.keyUnsure }

// KeyReceived says that s's client has the answer to the resume that
// made s, with its fresh key: it said something after it. The key the
// resume used stops working. Only s's connection calls it, on its loop.
func (s *Session) KeyReceived() {
	s.keyUnsure = false
	s.hmu.Lock()
	s.answerUnread = false
	s.hmu.Unlock()
	h := s.hub
	h.mu.Lock()
	u, held := h.used[s]
	h.forgetUsedLocked(s)
	h.mu.Unlock()
	if mv, ok := h.dir.(Mover); ok && held {
		// Off the connection's loop: the directory is on the network.
		// The next resume's Rekey retires the key too, whichever comes
		// first.
		go mv.RetireUsed(s.Key(), &u.sum)
	}
}

// prepareMove readies a resume of the session whose key hashes to sum,
// with a directory that moves sessions between nodes: it fetches the
// session to this node if it is elsewhere, marks it moving so that
// nothing else moves it meanwhile, and tells the directory of the fresh
// key before that key is handed out, and of used, the key the resume
// keeps beside it (sum, or nil), so that a resume of either on any node
// finds the session, and of the protocol the resume speaks (client),
// which a claim of the session's token is told. It returns the session,
// marked.
func (h *Hub) prepareMove(mv Mover, sum, used, fresh *ResumeHash, client proto.Protocol) (*Session, *proto.Error) {
	for fetched := false; ; fetched = true {
		h.mu.Lock()
		s := h.keys[keyIndexOf(*sum)]
		if s != nil && !s.closed && h.opensLocked(s, sum) {
			if s.moving {
				h.mu.Unlock()
				return nil, proto.ErrUnavailable
			}
			s.moving = true
			// The directory holds the session's newest key, whichever
			// key opened it, and the key its last resume used, kept
			// still, which this resume's replaces.
			held := s.keyHash
			h.mu.Unlock()
			mv.Rekey(s.Key(), &held, used, fresh, client)
			return s, nil
		}
		h.mu.Unlock()
		if fetched {
			return nil, proto.ErrUnknownResumeKey
		}
		if err := mv.Fetch(sum); err != nil {
			return nil, err
		}
	}
}

// gone is how a session's last connection left it, as a resume over the
// line protocol needs to know: when (the drop; now, for a zombie), the
// last Seq given to the session by then, and how many of the newest
// messages up to it that connection never wrote.
type gone struct {
	at     time.Duration
	seq    uint64
	unsent int
}

// replayLocked hands s's new connection the answer to its resume and
// the messages to replay (see Resume), and returns how many it replayed
// and how many it could not, and the number of the first replayed (0:
// none). g is how its last connection left it; r is s's room and peer
// s's partner, if any; again, when not 0, is the first message a lost
// answer replayed, which the replay holds again when kept. s.hmu is
// held, and the lock of s's room.
func (s *Session) replayLocked(last uint64, hasLast bool, g gone, key proto.ResumeKey, r *room, peer *Session, again uint64) (replayed, missed int, first uint64) {
	h := s.hub
	hs := s.hist
	from := 0 // the first entry to replay
	if hasLast {
		last = min(last, s.seq)
		kept := 0
		if hs != nil {
			hs.dropThrough(last)
			kept = hs.n
		}
		missed = int(s.seq-last) - kept
	} else if hs != nil {
		cutoff := g.at - h.recent()
		from = hs.since(cutoff)
		missed = hs.lostSince(cutoff)
		if g.unsent > 0 {
			// The messages never written are the newest before the drop
			// (or the takeover): the last g.unsent up to g.seq. When some
			// came before the cutoff, every message after them is among
			// them too, so those of them not kept are all that is
			// missing. Those not kept are missing even when none kept
			// came before the cutoff: dropped for room long after they
			// came, no loss run recalls them (noteLoss). Those not kept
			// are what the partner was told as the session went away.
			i, lost := hs.unsentKept(g.seq, g.unsent)
			from = min(from, i)
			missed = max(missed, lost)
		}
		if again != 0 {
			from = min(from, hs.seqIndex(again))
		}
	} else {
		missed = g.unsent // never written, and none kept
	}
	if hs != nil {
		replayed = hs.n - from
	}
	ev := proto.Event{
		Kind: proto.EvResumed, Name: s.name, Token: s.token, Count: replayed, Missed: missed,
		Window: h.window(), ID: s.lastID,
	}
	if s.resumable {
		ev.ResumeKey = key.String()
	}
	if peer != nil {
		// The pairing may have changed while the session was away, and
		// the partner may have come back over the other protocol: a page
		// that encrypts needs all three to know where it stands.
		ev.Peer, ev.Initiator, ev.PeerProto, ev.PairID = peer.name, r.a == s, r.protoOf(peer), r.id
	}
	s.q.Deliver(&ev)
	if replayed == 0 {
		return replayed, missed, 0
	}
	var msg proto.Event
	hs.each(from, func(seq uint64, _ time.Duration, sender string, kind proto.EventKind, text []byte) {
		if first == 0 {
			first = seq
		}
		msg.Kind, msg.From, msg.Text, msg.Seq = kind, sender, text, seq
		s.q.Deliver(&msg)
	})
	ev.Kind = proto.EvReplayEnd
	s.q.Deliver(&ev)
	return replayed, missed, first
}

// awayHeap is the hub's away sessions by deadline, soonest first, as a
// container/heap: the one timer the hub keeps for them (armAwayLocked)
// is set for the first. One timer per away session, with its closure,
// cost about 170 bytes a session.
type awayHeap []*Session

func (q awayHeap) Len() int           { return len(q) }
func (q awayHeap) Less(i, j int) bool { return q[i].away.deadline < q[j].away.deadline }
func (q awayHeap) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].away.due, q[j].away.due = i, j
}

func (q *awayHeap) Push(x any) {
	s := x.(*Session)
	s.away.due = len(*q)
	*q = append(*q, s)
}

func (q *awayHeap) Pop() any {
	old := *q
	s := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	s.away.due = -1
	return s
}
