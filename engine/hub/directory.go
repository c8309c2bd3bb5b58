package hub

import (
	"sync"

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
	// cannot be resumed), by which a resume on any node finds it:
	// proto.ErrNameTaken when someone on any node has the name,
	// proto.ErrUnavailable when the cluster cannot be reached.
	Register(name, key string, token proto.Token, resume *ResumeHash) *proto.Error
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
}

// Claim is a pairing the directory made.
type Claim struct {
	PeerKey  string // the token holder's folded name
	PeerName string // ... as the holder spelled it
	PeerNode string // the node that holds the peer's session
	PairID   uint64 // the pairing's number, unique in the cluster
}

// localDirectory is the Directory of a hub on its own: the records a
// cluster keeps in Redis (engine/cluster/scripts.go), in memory, with
// the same answers. Its calls never wait.
type localDirectory struct {
	mu     sync.Mutex
	users  map[string]localRecord // by folded name
	tokens map[proto.Token]string // token -> folded name
	pairs  uint64                 // the last pairing's number
}

type localRecord struct {
	name  string
	token proto.Token
	// pair is the pairing the user is in, 0 when not paired (pairings
	// are numbered from 1). The partner is not kept, since nothing asks
	// for it: every user has a record, so each field costs as much per
	// connection.
	pair uint64
}

// localNode is the NodeID of a hub on its own.
const localNode = "local"

func newLocalDirectory() *localDirectory {
	return &localDirectory{
		users:  make(map[string]localRecord),
		tokens: make(map[proto.Token]string),
	}
}

func (d *localDirectory) NodeID() string { return localNode }

func (d *localDirectory) Register(name, key string, token proto.Token, _ *ResumeHash) *proto.Error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, taken := d.users[key]; taken {
		return proto.ErrNameTaken
	}
	if _, used := d.tokens[token]; used {
		return proto.ErrUnavailable
	}
	d.users[key] = localRecord{name: name, token: token}
	d.tokens[token] = key
	return nil
}

func (d *localDirectory) Unregister(key string, token proto.Token) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if u, ok := d.users[key]; ok && u.token == token {
		delete(d.users, key)
	}
	if d.tokens[token] == key {
		delete(d.tokens, token)
	}
}

func (d *localDirectory) Retoken(key string, old, fresh proto.Token) *proto.Error {
	d.mu.Lock()
	defer d.mu.Unlock()
	u, ok := d.users[key]
	if !ok || u.token != old {
		return proto.ErrUnavailable
	}
	if _, used := d.tokens[fresh]; used {
		return proto.ErrUnavailable
	}
	delete(d.tokens, old)
	d.tokens[fresh] = key
	u.token = fresh
	d.users[key] = u
	return nil
}

func (d *localDirectory) Claim(key string, token proto.Token) (Claim, *proto.Error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	asker, ok := d.users[key]
	if !ok {
		return Claim{}, proto.ErrUnavailable
	}
	if asker.pair != 0 {
		return Claim{}, proto.ErrAlreadyPaired
	}
	hk, ok := d.tokens[token]
	if !ok {
		return Claim{}, proto.ErrUnknownToken
	}
	if hk == key {
		return Claim{}, proto.ErrSelfConnect
	}
	holder, ok := d.users[hk]
	if !ok {
		return Claim{}, proto.ErrUnknownToken
	}
	if holder.pair != 0 {
		return Claim{}, proto.ErrRoomFull
	}
	d.pairs++
	asker.pair = d.pairs
	holder.pair = d.pairs
	d.users[key], d.users[hk] = asker, holder
	return Claim{PeerKey: hk, PeerName: holder.name, PeerNode: localNode, PairID: d.pairs}, nil
}

func (d *localDirectory) Release(key string, pairID uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if u, ok := d.users[key]; ok && u.pair == pairID {
		u.pair = 0
		d.users[key] = u
	}
}

// restorePair records a pairing a restored hub made again (Restore).
func (d *localDirectory) restorePair(a, b string, pairID uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ua, ub := d.users[a], d.users[b]
	ua.pair = pairID
	ub.pair = pairID
	d.users[a], d.users[b] = ua, ub
	d.pairs = max(d.pairs, pairID)
}

func (d *localDirectory) Remote(node, key, name, from string, pairID uint64) Outbox {
	// Every claim names this node, so the hub never asks.
	panic("hub: a hub on its own has no partners on other nodes")
}
