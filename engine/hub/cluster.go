package hub

import (
	"time"

	"duet/proto"
)

// Cluster mode. Several nodes share one token space through a Directory
// (package engine/cluster keeps it in Redis). Each node's hub keeps only
// its own sessions, and a partner on another node is stood in for by a
// stub Session whose Outbox carries events to that node. The rest of the
// hub is the same as on a single node: this file is what a partner on
// another node adds.
//
// The relay path is the same as on a single node: SayAll hands the
// events to the partner's Outbox under the room lock alone. For a
// same-node pair that is the engine's outbox, so same-node pairs never
// touch the directory while they talk; for a cross-node pair it is the
// stub's, which queues the event for its node without blocking.

// Registration is what the directory should hold for one session of this
// node; a node that lost its directory writes these back.
type Registration struct {
	Name, Key string
	Token     proto.Token
	Resume    *ResumeHash // nil when the session cannot be resumed
	// Used is the key the session's last resume used, kept until its
	// client shows it read the answer (usedKey); nil when none is.
	Used    *ResumeHash
	Client  proto.Protocol
	PeerKey string // "" when not paired
	PairID  uint64
}

// RemoteCut is a cross-node pairing the hub ended on its own side.
type RemoteCut struct {
	Key     string // the session on this node
	PeerKey string // the partner, on Node
	Node    string
	PairID  uint64
	// Outbox is the partner's stub's, which keeps what it counted of
	// the pairing (an ArrivalCounter's arrivals) for the partner's node
	// to be told with the cut.
	Outbox Outbox
}

// An ArrivalCounter is the Outbox of a partner on another node
// (Directory.Remote) that counts the partner's messages that reached
// this node while the pairing was open here. A message the partner's
// node sent that arrives once the pairing has ended here is dropped;
// the end of the pairing, told to that node with this count, lets it
// tell its user how many of theirs never arrived.
type ArrivalCounter interface {
	Arrived()
}

// A PartnerAwayNoter is the Outbox of a partner on another node that
// notes whether that partner is away, as its node says: what is handed
// to it meanwhile is kept there for the partner's resume, and lost with
// that node if it dies (LossCounter).
type PartnerAwayNoter interface {
	PartnerAway(away bool)
}

// A LossCounter is the Outbox of a partner on another node that can
// tell, as the pairing ends here, how many of the messages handed to
// it will never reach that node: sent to no one, or on their way to a
// node found dead, or past what that node says reached it. The hub asks
// under the room's lock, so that nothing more is handed to it after,
// and tells the session here that many more as undelivered. It must
// not call back into the hub.
type LossCounter interface {
	Lost() int
}

// remoteRoom is a room whose partner is on another node.
type remoteRoom struct {
	r     *room
	local *Session // the session on this node (a resume replaces it)
	stub  *Session // stands in for the partner on node
	node  string
	// peerAway is set while the partner is away, as the last news of it
	// here said, and peerUntil is when its window ends then: a resume
	// of the session here tells it (tellPeerLocked), as it tells of a
	// partner away on this hub, which keeps its own away state. The
	// news is the away and back events the partner's node sends
	// (RemoteEvent), and where the session or the partner was taken up
	// from (Import, Export). A stub has no away state: one would make
	// it a session away here, keeping messages for a resume.
	peerAway  bool
	peerUntil time.Duration
}

// notePeerLocked records news of the partner in r, a room with a
// partner on another node: that it is away until until, or back; and
// reports whether it was away as the news before said. Hub.mu is held,
// and r.mu.
func (h *Hub) notePeerLocked(r *room, away bool, until time.Duration) (wasAway bool) {
	h.remoteMu.Lock()
	defer h.remoteMu.Unlock()
	rr, ok := h.remote[r.pairID]
	if !ok || rr.r != r {
		return false
	}
	wasAway = rr.peerAway
	rr.peerAway, rr.peerUntil = away, until
	h.remote[r.pairID] = rr
	return wasAway
}

// Clustered reports whether the hub consults a cluster directory, whose
// calls may wait on the network: callers on an event loop should make
// them from another goroutine.
func (h *Hub) Clustered() bool { return h.remoteDir }

// WaitClosing waits until the directory work of every logout so far is
// done, so that their partners on other nodes have been told.
func (h *Hub) WaitClosing() { h.closing.Wait() }

// SetDirectory puts the hub in cluster mode, with d in place of its
// in-memory directory. It must be called before the first login.
func (h *Hub) SetDirectory(d Directory) {
	h.dir = d
	h.node = d.NodeID()
	h.remoteDir = true
}

// pairRemoteLocked opens the room of a claim whose holder is on another
// node, with a stub for the holder.
func (h *Hub) pairRemoteLocked(s *Session, c Claim) *proto.Error {
	out := h.dir.Remote(c.PeerNode, c.PeerKey, c.PeerName, s.Key(), c.PairID)
	if s.closed {
		// s logged out while the claim was on its way. Only the holder's
		// node may free the holder, so it is told of the pairing and of
		// its end at once.
		out.Deliver(&proto.Event{Kind: proto.EvPaired, Peer: s.name, PeerProto: s.client})
		out.Deliver(&proto.Event{Kind: proto.EvPeerLeft, Peer: s.name, Reason: proto.ReasonDisconnected})
		return proto.ErrNotLoggedIn
	}
	stub := h.newStub(c.PeerName, out)
	r := h.newRoom(s, stub, c.PairID, stub, c.PeerProto)
	h.addRemoteLocked(remoteRoom{r: r, local: s, stub: stub, node: c.PeerNode}, true)
	// The stub's outbox turns this into the holder's paired event on its
	// node, with s's protocol; it is queued before anything s says next.
	// Both sides are told the same id: each node tags the pairing alike.
	stub.q.Deliver(&proto.Event{Kind: proto.EvPaired, Peer: s.name, PeerProto: s.client, PairID: r.id})
	s.q.Deliver(&proto.Event{Kind: proto.EvPaired, Peer: stub.name, Initiator: true, PeerProto: r.protoOf(stub), PairID: r.id})
	return nil
}

// newStub makes the Session that stands in for a partner on another
// node, reached through out.
func (h *Hub) newStub(name string, out Outbox) *Session {
	return &Session{hub: h, name: name, q: queueOf(out)}
}

// addRemoteLocked opens rr's room; made counts it as a pairing made
// here (not one a session brought with it from another node).
func (h *Hub) addRemoteLocked(rr remoteRoom, made bool) {
	rr.local.room.Store(rr.r)
	rr.stub.room.Store(rr.r)
	h.rooms++
	if made {
		h.pairings.Add(1)
	}
	h.remoteMu.Lock()
	h.remote[rr.r.pairID] = rr
	h.remoteMu.Unlock()
}

// forgetRemoteLocked drops a cross-node room that has closed.
func (h *Hub) forgetRemoteLocked(r *room) {
	h.remoteMu.Lock()
	defer h.remoteMu.Unlock()
	if rr, ok := h.remote[r.pairID]; ok && rr.r == r {
		delete(h.remote, r.pairID)
	}
}

// RemotePaired pairs the session key of this node, whose token a user
// on node claimed, with a stub for that user, whose client speaks
// peerProto. It reports false when the session is gone or already
// paired; the claimant must then be told.
func (h *Hub) RemotePaired(key string, pairID uint64, peerKey, peerName, node string, peerProto proto.Protocol) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.names.lookup(key)
	if s == nil || s.closed || s.room.Load() != nil {
		return false
	}
	stub := h.newStub(peerName, h.dir.Remote(node, peerKey, peerName, s.Key(), pairID))
	r := h.newRoom(stub, s, pairID, stub, peerProto)
	h.addRemoteLocked(remoteRoom{r: r, local: s, stub: stub, node: node}, true)
	s.pairedAwayLocked()
	s.q.Deliver(&proto.Event{Kind: proto.EvPaired, Peer: peerName, PeerProto: r.protoOf(stub), PairID: r.id})
	h.tellAwayLocked(s, stub.q)
	return true
}

// RemoteMessage delivers text from the remote partner in pairing pairID
// to the session key of this node: a sealed frame's data when sealed is
// set (end-to-end encryption, docs/E2E.md). It reports false when there
// is no such pairing here any more. A session here that is away keeps
// it for its resume, as it keeps a message from a partner on this node;
// one that cannot be kept is refused, and the partner's node is told
// with an error event for its user (peer_away_full). So is a sealed
// frame for a session whose client cannot open it (peer_cannot_decrypt):
// the partner's node sealed it when the session spoke JSON, and it has
// since been resumed over the line protocol.
func (h *Hub) RemoteMessage(key string, pairID uint64, text []byte, sealed bool) bool {
	rr, ok := h.remoteRoomOf(key, pairID)
	if !ok {
		return false
	}
	r := rr.r
	r.mu.Lock()
	defer r.mu.Unlock()
	// The session in the room now, not rr.local: a resume may have put
	// another Session for the same user in its place.
	local := r.other(rr.stub)
	if local == nil {
		return false
	}
	// Arrived while the pairing is open, under the lock its end takes:
	// the count its end tells is exact. A message refused below is
	// counted too: its speaker is told of it (an error), not in the
	// count of what never arrived.
	if ac, ok := rr.stub.outbox().(ArrivalCounter); ok {
		ac.Arrived()
	}
	if sealed && local.client != proto.ProtoJSON {
		rr.stub.q.Deliver(&proto.Event{Kind: proto.EvError, Err: proto.ErrPeerCannotDecrypt})
		return true
	}
	rl := getRelay(rr.stub.name)
	defer putRelay(rl)
	if sealed {
		rl.ev.Kind = proto.EvSealed
	}
	rl.one[0] = text
	n, full := local.deliverMessages(h, &rl.ev, rl.one[:])
	if n == 0 {
		rr.stub.q.Deliver(&proto.Event{Kind: proto.EvError, Err: full})
	}
	// Nothing is counted here: a message is counted on the node of its
	// sender, as it is sent (SayAll, Seal), and a stub is in no count.
	return true
}

// RemoteEvent delivers ev, which the remote partner's node sends about
// that partner (it went away, it is back, or it refused a message: the
// events a pairing carries besides messages and its end), to the
// session key of this node, if pairing pairID is still here. An
// EvPeerAway or EvPeerBack names the partner as this node knows it: ev's
// Peer is set to the partner's name. An EvPeerBack says the protocol the
// partner came back over, which the room then tells and seals by. The
// hub keeps the news of the partner (remoteRoom.peerAway), which a
// resume of the session tells. A session here that is away keeps the
// count of an EvPeerAway, and whether an EvPeerBack followed, for its
// resume to tell (away.untold). News that says what the last news
// said, with no count, is not told to a connected session: it is the
// partner's node telling again what it cannot know the session was
// told, as the session arrives on this node (PartnerMoved).
func (h *Hub) RemoteEvent(key string, pairID uint64, ev *proto.Event) bool {
	rr, ok := h.remoteRoomOf(key, pairID)
	if !ok {
		return false
	}
	news := ev.Kind == proto.EvPeerAway || ev.Kind == proto.EvPeerBack
	if news {
		// Whether the session is away, and what it keeps then.
		h.mu.Lock()
		defer h.mu.Unlock()
	}
	rr.r.mu.Lock()
	defer rr.r.mu.Unlock()
	local := rr.r.other(rr.stub)
	if local == nil {
		return false
	}
	told := false // the session was told this already
	if news {
		ev.Peer = rr.stub.name
		away, until := ev.Kind == proto.EvPeerAway, h.clock.now()+ev.Window
		told = h.notePeerLocked(rr.r, away, until) == away && ev.Count == 0
		if an, ok := rr.stub.outbox().(PartnerAwayNoter); ok {
			an.PartnerAway(away)
		}
		if a := local.away; a != nil {
			// Dropped (awayQueue): the session's resume tells it.
			if away {
				a.partnerWent(ev.Count, until)
			} else {
				a.partnerBack()
			}
		} else if away {
			h.toldPeerAwayLocked(local)
		}
	}
	if ev.Kind == proto.EvPeerBack {
		rr.stub.client = ev.PeerProto
		ev.PeerProto = rr.r.protoOf(rr.stub)
	}
	if told {
		return true
	}
	if ev.Kind == proto.EvError && ev.Err != nil {
		// The only errors a partner's node sends: a say of the session
		// here that it refused.
		refuseLate(local.q, ev.Err)
		return true
	}
	local.q.Deliver(ev)
	return true
}

// PartnerMoved tells the partner in pairing pairID of the session key
// of this node, just taken up on another node (the stub's Outbox
// reaches it there now), where the session stands: away, with what
// remains of its window, if it is. The partner's resume tells it
// (tellPeerLocked): the node the partner was on knew it from this
// node's news, and the node it is on now has had none. With it goes
// the news the partner could not be told while it moved (the stub's
// Outbox held it): untold of its messages the session went away
// without, and back, that the session came back since. A partner
// connected there already is not told again what it was told
// (RemoteEvent).
func (h *Hub) PartnerMoved(key string, pairID uint64, untold int, back bool) {
	rr, ok := h.remoteRoomOf(key, pairID)
	if !ok {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	r := rr.r
	r.mu.Lock()
	defer r.mu.Unlock()
	local := r.other(rr.stub)
	if local == nil {
		return
	}
	if a := local.away; a != nil && !a.attached {
		deliver(rr.stub.q, proto.Event{Kind: proto.EvPeerAway, Peer: local.name, Window: max(a.deadline-h.clock.now(), 0), Count: untold, Reason: a.reason()})
		return
	}
	if untold > 0 {
		// It is back: no time is left to wait for it.
		deliver(rr.stub.q, proto.Event{Kind: proto.EvPeerAway, Peer: local.name, Count: untold})
	}
	if untold > 0 || back {
		deliver(rr.stub.q, proto.Event{Kind: proto.EvPeerBack, Peer: local.name, PeerProto: r.protoOf(local)})
	}
}

// remoteRoomOf returns the cross-node room of pairing pairID, if the
// session key of this node is in it.
func (h *Hub) remoteRoomOf(key string, pairID uint64) (remoteRoom, bool) {
	h.remoteMu.RLock()
	defer h.remoteMu.RUnlock()
	rr, ok := h.remote[pairID]
	return rr, ok && rr.local.keyIs(key)
}

// StubOutbox returns the Outbox of the stub that stands in for the
// partner on another node in pairing pairID of the session key of this
// node, or nil when there is no such pairing here.
func (h *Hub) StubOutbox(key string, pairID uint64) Outbox {
	if rr, ok := h.remoteRoomOf(key, pairID); ok {
		return rr.stub.outbox()
	}
	return nil
}

// Reroute records that the partner in pairing pairID of the session key
// of this node is now on node ("" while it is parked between nodes), so
// that a pairing is cut when the node its partner is on dies
// (CutRemote), and not when a node it left does.
func (h *Hub) Reroute(key string, pairID uint64, node string) {
	h.remoteMu.Lock()
	defer h.remoteMu.Unlock()
	if rr, ok := h.remote[pairID]; ok && rr.local.keyIs(key) {
		rr.node = node
		h.remote[pairID] = rr
	}
}

// ResumeBuffer is resume.buffer now: what may be kept for one session.
func (h *Hub) ResumeBuffer() int64 { return h.resumeBuffer.Load() }

// RemoteLeft ends pairing pairID because the remote partner left it:
// the session key of this node is told reason and count.
func (h *Hub) RemoteLeft(key string, pairID uint64, reason proto.Reason, count int) bool {
	rr, ok := h.remoteRoomOf(key, pairID)
	if !ok {
		return false
	}
	// Free the session in the directory first: once told, it may be
	// joined at once.
	h.dir.Release(key, pairID)
	return len(h.unpairRemote([]remoteRoom{rr}, reason, count)) == 1
}

// CutRemote ends every cross-node pairing whose partner is on a node
// that match accepts, telling the sessions here reason. The directory
// records are released; telling the other side is the caller's business.
func (h *Hub) CutRemote(match func(node string) bool, reason proto.Reason) []RemoteCut {
	return h.cutRemote(func(rr remoteRoom) bool { return match(rr.node) }, reason, 0)
}

// CutPair ends the one cross-node pairing pairID, telling the session
// here reason and how many of its messages were not delivered.
func (h *Hub) CutPair(pairID uint64, reason proto.Reason, undelivered int) []RemoteCut {
	return h.cutRemote(func(rr remoteRoom) bool { return rr.r.pairID == pairID }, reason, undelivered)
}

// CutPairs ends the cross-node pairings whose number match accepts, as
// CutRemote does.
func (h *Hub) CutPairs(match func(pairID uint64) bool, reason proto.Reason) []RemoteCut {
	return h.cutRemote(func(rr remoteRoom) bool { return match(rr.r.pairID) }, reason, 0)
}

// RemoteOutboxes lists the Outboxes of the partners in the cross-node
// pairings here whose partner is on a node that match accepts.
func (h *Hub) RemoteOutboxes(match func(node string) bool) []Outbox {
	rooms := h.remoteRooms(func(rr remoteRoom) bool { return match(rr.node) })
	out := make([]Outbox, len(rooms))
	for i, rr := range rooms {
		out[i] = rr.stub.outbox()
	}
	return out
}

// RemotePairs lists the numbers of the cross-node pairings whose
// partner is on a node that match accepts.
func (h *Hub) RemotePairs(match func(node string) bool) []uint64 {
	rooms := h.remoteRooms(func(rr remoteRoom) bool { return match(rr.node) })
	pairs := make([]uint64, len(rooms))
	for i, rr := range rooms {
		pairs[i] = rr.r.pairID
	}
	return pairs
}

func (h *Hub) cutRemote(match func(remoteRoom) bool, reason proto.Reason, undelivered int) []RemoteCut {
	rooms := h.remoteRooms(match)
	// Free the sessions in the directory first: once told, they may be
	// joined at once.
	for _, rr := range rooms {
		h.dir.Release(rr.local.Key(), rr.r.pairID)
	}
	return h.unpairRemote(rooms, reason, undelivered)
}

// remoteRooms lists the cross-node rooms that match accepts.
func (h *Hub) remoteRooms(match func(remoteRoom) bool) []remoteRoom {
	h.remoteMu.RLock()
	defer h.remoteMu.RUnlock()
	var rooms []remoteRoom
	for _, rr := range h.remote {
		if match(rr) {
			rooms = append(rooms, rr)
		}
	}
	return rooms
}

// unpairRemote ends the cross-node rooms that are still open, telling
// the sessions here reason and undelivered, and returns those it ended.
func (h *Hub) unpairRemote(rooms []remoteRoom, reason proto.Reason, undelivered int) []RemoteCut {
	h.mu.Lock()
	defer h.mu.Unlock()
	var cuts []RemoteCut
	for _, rr := range rooms {
		if rr.stub.room.Load() != rr.r {
			continue
		}
		h.unpairLocked(rr.stub, reason, undelivered, false)
		cuts = append(cuts, RemoteCut{Key: rr.local.Key(), PeerKey: rr.stub.Key(), Node: rr.node, PairID: rr.r.pairID, Outbox: rr.stub.outbox()})
	}
	return cuts
}

// RemoteNodes lists the nodes that hold partners of this node's sessions.
func (h *Hub) RemoteNodes() []string {
	h.remoteMu.RLock()
	defer h.remoteMu.RUnlock()
	seen := make(map[string]bool)
	var nodes []string
	for _, rr := range h.remote {
		if !seen[rr.node] {
			seen[rr.node] = true
			nodes = append(nodes, rr.node)
		}
	}
	return nodes
}

// Registrations lists what the directory should hold for this node's
// sessions.
func (h *Hub) Registrations() []Registration {
	h.mu.Lock()
	defer h.mu.Unlock()
	regs := make([]Registration, 0, len(h.names.m))
	for _, s := range h.names.m {
		reg := Registration{Name: s.name, Key: s.Key(), Token: s.token, Client: s.client}
		if s.resumable {
			rk := s.keyHash
			reg.Resume = &rk
		}
		if u, ok := h.used[s]; ok {
			reg.Used = &u.sum
		}
		if r := s.room.Load(); r != nil {
			if p := r.peer(s); p != nil {
				reg.PeerKey, reg.PairID = p.Key(), r.pairID
			}
		}
		regs = append(regs, reg)
	}
	return regs
}
