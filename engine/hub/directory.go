package hub

import (
	"duet/proto"
)

// Directory is the record of who is logged in and who is paired with
// whom that the hub consults: an in-memory one for a hub on its own
// (localDirectory), or the one a cluster's nodes share (package
// engine/cluster keeps it in Redis; see cluster.go). The hub keeps its
// own sessions and asks the directory about names, tokens and pairings;
// the directory's answer is the truth.
//
// Register, Unregister, Retoken, Claim and Release are called with no
// hub lock held, and may wait on the network; NodeID and Remote are
// called under hub locks and must not wait. None may call back into the
// hub. Each node writes only its own users' records, except Claim, which
// pairs both sides in one atomic step.
type Directory interface {
	// NodeID names this node in the cluster.
	NodeID() string
	// Register claims a name (by its folded key) and a token for a
	// session of this node, with the hash of its resume key (nil when it
	// cannot be resumed), by which a resume on any node finds it, and the
	// protocol its client speaks, which a claim tells the claimant
	// (Claim.PeerProto): proto.ErrNameTaken when someone on any node has
	// the name, proto.ErrUnavailable when the cluster cannot be reached.
	Register(name, key string, token proto.Token, resume *ResumeHash, client proto.Protocol) *proto.Error
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
	// handed to it travel to that node, to the session key (whose name
	// is name), from the session from of this node, tagged with the
	// pairing. Node "" is a partner parked between nodes (park.go): its
	// Outbox holds what it is handed until it is known where the partner
	// is, and is a Holder. Its Deliver must not block.
	Remote(node, key, name, from string, pairID uint64) Outbox
	// PairTag is the id pairing pairID's two sides are told
	// (Event.PairID), by which a page knows its pairing again after a
	// resume: the same for every room of that pairing, on any node and
	// in any process, and saying nothing of how many pairings there
	// were; 0 when the hub may choose one at random, as a hub on its
	// own does (its rooms are the pairing's only ones). It is called
	// under hub locks and must not wait.
	PairTag(pairID uint64) uint64
}

// Claim is a pairing the directory made.
type Claim struct {
	PeerKey  string // the token holder's folded name
	PeerName string // ... as the holder spelled it
	PeerNode string // the node that holds the peer's session
	PairID   uint64 // the pairing's number, unique in the cluster
	// PeerProto is the protocol the holder's client speaks, as its
	// node last wrote it (Register, Mover.Rekey); ProtoUnknown when
	// that node did not say.
	PeerProto proto.Protocol
}

// localDirectory is the Directory of a hub on its own, with the answers
// a cluster's records in Redis give (engine/cluster/scripts.go). Its
// records are the hub's own sessions, under the hub's lock: a name and
// a token are registered while the hub's indexes hold them (hold enters
// them, refusing a taken name; a logout takes them out), and the
// pairing a user is in is its session's claim. A copy of its own would
// cost every connection two more map entries, about 190 bytes, for
// answers the hub already has. Its calls never wait.
type localDirectory struct {
	h     *Hub
	pairs uint64 // the last pairing's number; guarded by h.mu
}

// localNode is the NodeID of a hub on its own.
const localNode = "local"

func newLocalDirectory(h *Hub) *localDirectory { return &localDirectory{h: h} }

func (d *localDirectory) NodeID() string { return localNode }

// Register confirms what hold entered: the name is the session's that
// holds token, or someone else's.
func (d *localDirectory) Register(name, key string, token proto.Token, _ *ResumeHash, _ proto.Protocol) *proto.Error {
	d.h.mu.Lock()
	defer d.h.mu.Unlock()
	s := d.h.names.lookup(key)
	switch {
	case s == nil:
		return proto.ErrUnavailable
	case s.token != token:
		return proto.ErrNameTaken
	}
	return nil
}

// Unregister has nothing to do: the logout took the session out of the
// hub's indexes, which is what frees its name and token.
func (d *localDirectory) Unregister(key string, token proto.Token) {}

// Retoken confirms what drawToken did: the session still holds old, and
// fresh is held for it. adoptToken then lets old go.
func (d *localDirectory) Retoken(key string, old, fresh proto.Token) *proto.Error {
	d.h.mu.Lock()
	defer d.h.mu.Unlock()
	s := d.h.names.lookup(key)
	if s == nil || s.token != old || d.h.tokens.filed(fresh) != s {
		return proto.ErrUnavailable
	}
	return nil
}

func (d *localDirectory) Claim(key string, token proto.Token) (Claim, *proto.Error) {
	d.h.mu.Lock()
	defer d.h.mu.Unlock()
	asker := d.h.names.lookup(key)
	if asker == nil {
		return Claim{}, proto.ErrUnavailable
	}
	if asker.claim != 0 {
		return Claim{}, proto.ErrAlreadyPaired
	}
	holder := d.h.tokens.lookup(token)
	if holder == nil {
		return Claim{}, proto.ErrUnknownToken
	}
	if holder.keyIs(key) {
		return Claim{}, proto.ErrSelfConnect
	}
	if holder.claim != 0 {
		return Claim{}, proto.ErrRoomFull
	}
	d.pairs++
	asker.claim, holder.claim = d.pairs, d.pairs
	return Claim{PeerKey: holder.Key(), PeerName: holder.name, PeerNode: localNode, PairID: d.pairs, PeerProto: holder.client}, nil
}

// PairTag leaves the id to the hub: a room of this hub is its pairing's
// only one.
func (d *localDirectory) PairTag(uint64) uint64 { return 0 }

func (d *localDirectory) Release(key string, pairID uint64) {
	d.h.mu.Lock()
	defer d.h.mu.Unlock()
	if s := d.h.names.lookup(key); s != nil && s.claim == pairID {
		s.claim = 0
	}
}

// restorePairLocked records a pairing a restored hub made again
// (Restore). The caller holds h.mu.
func (d *localDirectory) restorePairLocked(a, b *Session, pairID uint64) {
	a.claim, b.claim = pairID, pairID
	d.pairs = max(d.pairs, pairID)
}

func (d *localDirectory) Remote(node, key, name, from string, pairID uint64) Outbox {
	// Every claim names this node, so the hub never asks.
	panic("hub: a hub on its own has no partners on other nodes")
}
