package hub

import (
	"sync"

	"duet/proto"
)

// Cluster mode. Several nodes share one token space through a Directory
// (package engine/cluster keeps it in Redis). The directory is the truth
// about who is logged in and who is paired with whom; each node's hub
// keeps only its own sessions, and a partner on another node is stood in
// for by a stub Session whose Outbox carries events to that node.
//
// The relay path is the same as on a single node: SayAll hands the
// events to the partner's Outbox under the room lock alone. For a same-node pair
// that is the engine's outbox, so same-node pairs never touch the
// directory while they talk; for a cross-node pair it is the stub's,
// which queues the event for its node without blocking.
//
// Directory calls may block on the network, so they are made with no hub
// lock held. Each node writes only its own users' records, except the
// claim itself, which pairs both sides in one atomic step.

// Directory is the cluster-wide directory a hub in cluster mode consults.
// Its methods are called with no hub lock held; they must not call back
// into the hub.
type Directory interface {
	// NodeID names this node in the cluster.
	NodeID() string
	// Register claims a name (by its folded key) and a token for a
	// session of this node: proto.ErrNameTaken when someone on any node
	// has the name, proto.ErrUnavailable when the cluster cannot be
	// reached.
	Register(name, key string, token proto.Token) *proto.Error
	// Unregister frees a session's name and token.
	Unregister(key string, token proto.Token)
	// Retoken replaces a session's token.
	Retoken(key string, old, new proto.Token) *proto.Error
	// Claim pairs the session key with the holder of token, atomically,
	// if both are free: room_full, unknown_token, already_paired or
	// unavailable otherwise.
	Claim(key string, token proto.Token) (Claim, *proto.Error)
	// Release records that the session key of this node is no longer in
	// pairing pairID.
	Release(key string, pairID uint64)
	// Remote returns the Outbox of a partner on another node: the events
	// handed to it travel to that node, to the session key, from the
	// session from of this node, tagged with the pairing. Its Deliver
	// must not block.
	Remote(node, key, from string, pairID uint64) Outbox
}

// Claim is a pairing the directory made.
type Claim struct {
	PeerKey  string // the token holder's folded name
	PeerName string // ... as the holder spelled it
	PeerNode string // the node that holds the peer's session
	PairID   uint64 // the pairing's number, unique in the cluster
}

// Registration is what the directory should hold for one session of this
// node; a node that lost its directory writes these back.
type Registration struct {
	Name, Key string
	Token     proto.Token
	PeerKey   string // "" when not paired
	PairID    uint64
}

// RemoteCut is a cross-node pairing the hub ended on its own side.
type RemoteCut struct {
	Key     string // the session on this node
	PeerKey string // the partner, on Node
	Node    string
	PairID  uint64
}

type clusterState struct {
	dir Directory

	// closing counts logouts whose directory work is still running.
	closing sync.WaitGroup

	// remote holds the cross-node rooms by pairing. Written under Hub.mu
	// (pairing and unpairing happen there) and mu; read under mu alone on
	// the inbound message path. mu is never held while taking a room lock.
	mu     sync.RWMutex
	remote map[uint64]remoteRoom
}

type remoteRoom struct {
	r     *room
	local *Session // the session on this node
	stub  *Session // stands in for the partner on node
	node  string
}

// Clustered reports whether the hub consults a cluster directory, whose
// calls may wait on the network: callers on an event loop should make
// them from another goroutine.
func (h *Hub) Clustered() bool { return h.cl != nil }

// WaitClosing waits until the directory work of every logout so far is
// done, so that their partners on other nodes have been told.
func (h *Hub) WaitClosing() {
	if h.cl != nil {
		h.cl.closing.Wait()
	}
}

// SetDirectory puts the hub in cluster mode. It must be called before
// the first login.
func (h *Hub) SetDirectory(d Directory) {
	h.cl = &clusterState{dir: d, remote: make(map[uint64]remoteRoom)}
}

func (h *Hub) clusterLogin(name []byte, out Outbox) (*Session, *proto.Error) {
	s := h.newSession(name, out)
	h.mu.Lock()
	if _, taken := h.names[s.key]; taken {
		h.mu.Unlock()
		return nil, proto.ErrNameTaken
	}
	// Hold the name here while the directory is asked, so a second login
	// on this node does not race the first to it.
	h.enterLocked(s)
	h.mu.Unlock()
	if err := h.cl.dir.Register(s.name, s.key, s.token); err != nil {
		h.mu.Lock()
		delete(h.names, s.key)
		delete(h.tokens, s.token)
		h.mu.Unlock()
		return nil, err
	}
	h.mu.Lock()
	out.Deliver(&proto.Event{Kind: proto.EvWelcome, Name: s.name, Token: s.token})
	h.mu.Unlock()
	return s, nil
}

func (s *Session) clusterConnect(t proto.Token) *proto.Error {
	h := s.hub
	h.mu.Lock()
	switch {
	case s.closed:
		h.mu.Unlock()
		return proto.ErrNotLoggedIn
	case s.room.Load() != nil:
		h.mu.Unlock()
		return proto.ErrAlreadyPaired
	case t == s.token:
		h.mu.Unlock()
		return proto.ErrSelfConnect
	}
	// A holder on this node who is paired is answered without a round trip.
	if target, ok := h.tokens[t]; ok && target.room.Load() != nil {
		h.mu.Unlock()
		return proto.ErrRoomFull
	}
	h.mu.Unlock()

	c, err := h.cl.dir.Claim(s.key, t)
	if err != nil {
		return err
	}

	h.mu.Lock()
	if s.closed && c.PeerNode != h.cl.dir.NodeID() {
		// s logged out while the claim was on its way. Only the holder's
		// node may free the holder, so it is told of the pairing and of
		// its end at once.
		out := h.cl.dir.Remote(c.PeerNode, c.PeerKey, s.key, c.PairID)
		out.Deliver(&proto.Event{Kind: proto.EvPaired, Peer: s.name})
		out.Deliver(&proto.Event{Kind: proto.EvPeerLeft, Peer: s.name, Reason: proto.ReasonDisconnected})
		h.mu.Unlock()
		return proto.ErrNotLoggedIn
	}
	if c.PeerNode == h.cl.dir.NodeID() {
		target := h.names[c.PeerKey]
		if s.closed || target == nil || target.closed || target.room.Load() != nil {
			// The holder logged out, or is still being told its last
			// pairing ended, between the claim and now.
			h.mu.Unlock()
			h.cl.dir.Release(s.key, c.PairID)
			h.cl.dir.Release(c.PeerKey, c.PairID)
			if target != nil && !target.closed {
				return proto.ErrRoomFull
			}
			return proto.ErrUnknownToken
		}
		r := &room{a: s, b: target, open: true, pairID: c.PairID}
		s.room.Store(r)
		target.room.Store(r)
		h.rooms++
		h.pairings.Add(1)
		target.out.Deliver(&proto.Event{Kind: proto.EvPaired, Peer: s.name})
		s.out.Deliver(&proto.Event{Kind: proto.EvPaired, Peer: target.name, Initiator: true})
		h.mu.Unlock()
		return nil
	}
	stub := h.newStub(c.PeerName, c.PeerKey, h.cl.dir.Remote(c.PeerNode, c.PeerKey, s.key, c.PairID))
	r := &room{a: s, b: stub, open: true, pairID: c.PairID}
	h.addRemoteLocked(remoteRoom{r: r, local: s, stub: stub, node: c.PeerNode})
	// The stub's outbox turns this into the holder's paired event on its
	// node; it is queued before anything s says next.
	stub.out.Deliver(&proto.Event{Kind: proto.EvPaired, Peer: s.name})
	s.out.Deliver(&proto.Event{Kind: proto.EvPaired, Peer: stub.name, Initiator: true})
	h.mu.Unlock()
	return nil
}

// newStub makes the Session that stands in for a partner on another
// node, reached through out.
func (h *Hub) newStub(name, key string, out Outbox) *Session {
	return &Session{hub: h, name: name, key: key, out: out, q: queueOf(out)}
}

func (h *Hub) addRemoteLocked(rr remoteRoom) {
	rr.local.room.Store(rr.r)
	rr.stub.room.Store(rr.r)
	h.rooms++
	h.pairings.Add(1)
	h.cl.mu.Lock()
	h.cl.remote[rr.r.pairID] = rr
	h.cl.mu.Unlock()
}

// clusterUnpairLocked is unpairLocked that also forgets a cross-node
// room. It reports the pairing and whether the partner is on this node.
func (h *Hub) clusterUnpairLocked(s *Session, reason proto.Reason, undelivered int) (peer *Session, pairID uint64, peerLocal bool) {
	r := s.room.Load()
	if r == nil {
		return nil, 0, false
	}
	peer = h.unpairLocked(s, reason, undelivered)
	h.cl.mu.Lock()
	rr, remote := h.cl.remote[r.pairID]
	if remote && rr.r == r {
		delete(h.cl.remote, r.pairID)
	}
	h.cl.mu.Unlock()
	return peer, r.pairID, !(remote && rr.r == r)
}

// clusterLeave frees both sides in the directory before anyone is told,
// so whoever hears "free to be joined again" can be joined at once.
func (s *Session) clusterLeave() *proto.Error {
	h := s.hub
	h.mu.Lock()
	r := s.room.Load()
	var peer *Session
	if r != nil {
		r.mu.Lock()
		peer = r.other(s)
		r.mu.Unlock()
	}
	if peer == nil {
		h.mu.Unlock()
		return proto.ErrNotPaired
	}
	peerLocal := !h.isStubLocked(r, peer)
	h.mu.Unlock()

	h.cl.dir.Release(s.key, r.pairID)
	if peerLocal {
		h.cl.dir.Release(peer.key, r.pairID)
	}

	h.mu.Lock()
	if s.room.Load() == r {
		h.clusterUnpairLocked(s, proto.ReasonLeft, 0)
	}
	// Left even if the partner went first meanwhile: the user asked.
	s.out.Deliver(&proto.Event{Kind: proto.EvLeft, Peer: peer.name})
	h.mu.Unlock()
	return nil
}

// isStubLocked reports whether p is the stub of a cross-node room r.
func (h *Hub) isStubLocked(r *room, p *Session) bool {
	h.cl.mu.RLock()
	rr, ok := h.cl.remote[r.pairID]
	h.cl.mu.RUnlock()
	return ok && rr.r == r && rr.stub == p
}

func (s *Session) clusterNewToken() *proto.Error {
	h := s.hub
	h.mu.Lock()
	if s.closed {
		h.mu.Unlock()
		return proto.ErrNotLoggedIn
	}
	old, fresh := s.token, h.freshTokenLocked()
	h.tokens[fresh] = s // held while the directory is asked
	h.mu.Unlock()
	if err := h.cl.dir.Retoken(s.key, old, fresh); err != nil {
		h.mu.Lock()
		delete(h.tokens, fresh)
		h.mu.Unlock()
		return err
	}
	h.mu.Lock()
	if s.closed {
		// Logged out meanwhile, under the old token: the record now
		// holds the new one, which the logout did not remove.
		delete(h.tokens, fresh)
		h.mu.Unlock()
		h.cl.dir.Unregister(s.key, fresh)
		return proto.ErrNotLoggedIn
	}
	delete(h.tokens, old)
	s.token = fresh
	s.out.Deliver(&proto.Event{Kind: proto.EvWelcome, Name: s.name, Token: s.token})
	h.mu.Unlock()
	return nil
}

// clusterClose logs s out at once on this node; the directory work runs
// on its own goroutine (Close is called on event loops), freeing the
// session's name and token, and a same-node partner's record, before the
// partner is told.
func (s *Session) clusterClose(reason proto.Reason, undelivered int) {
	h := s.hub
	h.mu.Lock()
	if s.closed {
		h.mu.Unlock()
		return
	}
	s.closed = true
	delete(h.names, s.key)
	delete(h.tokens, s.token)
	token := s.token
	var localPeer *Session
	r := s.room.Load()
	if r != nil {
		r.mu.Lock()
		p := r.other(s)
		r.mu.Unlock()
		if p != nil && !h.isStubLocked(r, p) {
			localPeer = p
		}
	}
	h.cl.closing.Add(1)
	h.mu.Unlock()

	go func() {
		defer h.cl.closing.Done()
		h.cl.dir.Unregister(s.key, token)
		if localPeer != nil {
			h.cl.dir.Release(localPeer.key, r.pairID)
		}
		h.mu.Lock()
		h.clusterUnpairLocked(s, reason, undelivered)
		h.closedMessages.Add(s.sentMessages.Load())
		h.closedBytes.Add(s.sentBytes.Load())
		h.mu.Unlock()
	}()
}

// RemotePaired pairs the session key of this node, whose token a user
// on node claimed, with a stub for that user. It reports false when the
// session is gone or already paired; the claimant must then be told.
func (h *Hub) RemotePaired(key string, pairID uint64, peerKey, peerName, node string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.names[key]
	if s == nil || s.closed || s.room.Load() != nil {
		return false
	}
	stub := h.newStub(peerName, peerKey, h.cl.dir.Remote(node, peerKey, s.key, pairID))
	r := &room{a: stub, b: s, open: true, pairID: pairID}
	h.addRemoteLocked(remoteRoom{r: r, local: s, stub: stub, node: node})
	s.out.Deliver(&proto.Event{Kind: proto.EvPaired, Peer: peerName})
	return true
}

// RemoteMessage delivers text from the remote partner in pairing pairID
// to the session key of this node. It reports false when there is no
// such pairing here any more.
func (h *Hub) RemoteMessage(key string, pairID uint64, text []byte) bool {
	h.cl.mu.RLock()
	rr, ok := h.cl.remote[pairID]
	h.cl.mu.RUnlock()
	if !ok || rr.local.key != key {
		return false
	}
	rr.r.mu.Lock()
	if !rr.r.open {
		rr.r.mu.Unlock()
		return false
	}
	ev := proto.Event{Kind: proto.EvMessage, From: rr.stub.name, Text: text}
	rr.local.out.Deliver(&ev)
	rr.r.mu.Unlock()
	rr.stub.sentMessages.Add(1)
	rr.stub.sentBytes.Add(uint64(len(text)))
	return true
}

// RemoteLeft ends pairing pairID because the remote partner left it:
// the session key of this node is told reason and count.
func (h *Hub) RemoteLeft(key string, pairID uint64, reason proto.Reason, count int) bool {
	h.cl.mu.RLock()
	rr, ok := h.cl.remote[pairID]
	h.cl.mu.RUnlock()
	if !ok || rr.local.key != key {
		return false
	}
	// Free the session in the directory first: once told, it may be
	// joined at once.
	h.cl.dir.Release(key, pairID)
	h.mu.Lock()
	defer h.mu.Unlock()
	if rr.stub.room.Load() != rr.r {
		return false
	}
	h.clusterUnpairLocked(rr.stub, reason, count)
	return true
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

func (h *Hub) cutRemote(match func(remoteRoom) bool, reason proto.Reason, undelivered int) []RemoteCut {
	h.cl.mu.RLock()
	var rooms []remoteRoom
	for _, rr := range h.cl.remote {
		if match(rr) {
			rooms = append(rooms, rr)
		}
	}
	h.cl.mu.RUnlock()
	// Free the sessions in the directory first: once told, they may be
	// joined at once.
	for _, rr := range rooms {
		h.cl.dir.Release(rr.local.key, rr.r.pairID)
	}
	var cuts []RemoteCut
	h.mu.Lock()
	for _, rr := range rooms {
		if rr.stub.room.Load() != rr.r {
			continue
		}
		h.clusterUnpairLocked(rr.stub, reason, undelivered)
		cuts = append(cuts, RemoteCut{Key: rr.local.key, PeerKey: rr.stub.key, Node: rr.node, PairID: rr.r.pairID})
	}
	h.mu.Unlock()
	return cuts
}

// RemoteNodes lists the nodes that hold partners of this node's sessions.
func (h *Hub) RemoteNodes() []string {
	h.cl.mu.RLock()
	defer h.cl.mu.RUnlock()
	seen := make(map[string]bool)
	var nodes []string
	for _, rr := range h.cl.remote {
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
	regs := make([]Registration, 0, len(h.names))
	for _, s := range h.names {
		reg := Registration{Name: s.name, Key: s.key, Token: s.token}
		if r := s.room.Load(); r != nil {
			r.mu.Lock()
			if p := r.other(s); p != nil {
				reg.PeerKey, reg.PairID = p.key, r.pairID
			}
			r.mu.Unlock()
		}
		regs = append(regs, reg)
	}
	return regs
}
