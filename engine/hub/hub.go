// Package hub is duet's pairing core: users, the token directory,
// two-slot rooms and the notifications that go with them.
//
// It knows nothing of sockets, protocols or event loops. A connection
// logs in with an Outbox, the hub's only way to reach it, and from then
// on drives its Session with method calls; every outcome is an Event
// handed to the Outbox of the session it concerns. The engine turns those
// events into bytes for whichever protocol that session speaks.
//
// Who holds which name and token, and who is paired with whom, is kept
// by a Directory: on a single node an in-memory one (directory.go), in a
// cluster the one the nodes share (cluster.go). The hub's logic is the
// same for both; it keeps its own sessions, and asks the directory with
// no hub lock held, since a cluster's directory is across the network.
//
// Locking: Hub.mu guards the hub's sessions (names, tokens) and the
// creation and teardown of rooms; room.mu guards one pairing. The order
// is always Hub.mu before room.mu. Hub.remoteMu, which guards the
// pairings with partners on other nodes, may be taken under Hub.mu but
// is never held while taking a room lock. Relaying a message takes only
// its room's lock, so pairs never contend with each other on the hot
// path.
package hub

import (
	"strings"
	"sync"
	"sync/atomic"

	"duet/proto"
)

// Outbox is how the hub reaches one session's connection.
type Outbox interface {
	// Deliver hands ev to the connection. It must not block, and must not
	// keep ev or its byte slices after it returns (encode, then forget).
	// It may be called from any goroutine, with hub locks held: it must
	// not call back into the hub.
	Deliver(ev *proto.Event)
}

// A BatchOutbox is an Outbox that can take a run of messages from one
// sender in one call. A relay reads many lines per socket read; handing
// them over together costs the reader's queue one lock for the run
// instead of one per message.
type BatchOutbox interface {
	Outbox
	// DeliverMessages hands over one message event per text, in order:
	// ev is the message event, and its Text is set to each text in turn.
	// The rules of Deliver apply.
	DeliverMessages(ev *proto.Event, texts [][]byte)
}

// A Queue is an Outbox that holds what it is handed until its reader
// takes it: a connection's outbound queue. Its reader may fall behind,
// so it can hold back the senders that feed it, and its connection can
// outlive the session it carries. The hub uses a Queue only as an
// Outbox, except to Evict it; SayAll hands the partner's Queue to the
// sender, which may Wait on it (back-pressure). An Outbox that is not a
// Queue (a partner on another node, a test's recorder) is given the
// Queue methods by the hub: it never holds a sender back, and Evict
// does nothing.
//
// The methods follow the rules of Deliver.
type Queue interface {
	BatchOutbox
	// Backlog returns the bytes waiting for the reader; 0 once the
	// connection has closed.
	Backlog() int64
	// Wait registers w to be woken once the reader has caught up, if it
	// is too far behind now, and reports whether it did: a sender for
	// which it reports true should pause until woken.
	Wait(w Waiter) bool
	// Evict tells the queue that the hub has taken its session from its
	// connection while the connection is open, for the reason why: the
	// connection should tell its user why and close, and leave the
	// session alone (it belongs to another connection now, or has
	// ended). No hub lock is held.
	Evict(why Eviction)
}

// Eviction says why the hub took a session from a connection that was
// still open (Queue.Evict).
type Eviction uint8

const (
	// EvictReplaced: another login took the account over, and the
	// session ended (LoginReplacing).
	EvictReplaced Eviction = iota + 1
)

// A Waiter is a sender that a Queue holds back until its reader catches
// up. Wake may be called from any goroutine; it must not block.
type Waiter interface {
	Wake()
}

// queueOf returns out as a Queue, giving it the Queue methods if it does
// not have them.
func queueOf(out Outbox) Queue {
	if q, ok := out.(Queue); ok {
		return q
	}
	b, _ := out.(BatchOutbox)
	return &plainQueue{Outbox: out, batch: b}
}

// plainQueue is an Outbox seen as a Queue that never waits.
type plainQueue struct {
	Outbox
	batch BatchOutbox // nil when the Outbox takes one event at a time
}

func (q *plainQueue) DeliverMessages(ev *proto.Event, texts [][]byte) {
	if q.batch != nil {
		q.batch.DeliverMessages(ev, texts)
		return
	}
	for _, text := range texts {
		ev.Text = text
		q.Deliver(ev)
	}
}

func (*plainQueue) Backlog() int64   { return 0 }
func (*plainQueue) Wait(Waiter) bool { return false }
func (*plainQueue) Evict(Eviction)   {}

// Options are the core's limits. Zero values take the defaults.
type Options struct {
	MaxText int // longest message text in bytes; default 16 KiB
}

// Hub is one node's pairing core. The zero value is not usable; call New.
type Hub struct {
	maxText atomic.Int64

	mu     sync.Mutex
	names  map[string]*Session // this node's sessions by folded name: names are unique regardless of case
	tokens map[proto.Token]*Session
	rooms  int // rooms open now

	pairings atomic.Uint64 // pairings ever made
	// Counters of sessions already closed; live sessions keep their own.
	closedMessages atomic.Uint64
	closedBytes    atomic.Uint64

	dir  Directory
	node string // dir.NodeID()
	// remoteDir is set when dir is a cluster's (SetDirectory), whose
	// calls may wait on the network: a logout's directory work then runs
	// on a goroutine of its own.
	remoteDir bool
	// closing counts logouts whose directory work is still running.
	closing sync.WaitGroup

	// remote holds the rooms with a partner on another node, by pairing
	// (cluster.go). Written under mu and remoteMu; read under remoteMu
	// alone on the inbound message path.
	remoteMu sync.RWMutex
	remote   map[uint64]remoteRoom
}

// New returns an empty hub on its own, with an in-memory directory.
func New(opts Options) *Hub {
	h := &Hub{
		names:  make(map[string]*Session),
		tokens: make(map[proto.Token]*Session),
		remote: make(map[uint64]remoteRoom),
	}
	h.dir = newLocalDirectory()
	h.node = h.dir.NodeID()
	h.SetOptions(opts)
	return h
}

// SetOptions changes the limits; safe at any time (config reload).
func (h *Hub) SetOptions(opts Options) {
	if opts.MaxText <= 0 {
		opts.MaxText = 16 << 10
	}
	h.maxText.Store(int64(opts.MaxText))
}

// Session is one logged-in user. It outlives no connection today, but it
// is kept apart from the connection that carries it (the Outbox) so that
// a later resume can attach a new one.
type Session struct {
	hub  *Hub
	name string
	key  string // folded name, the directory key
	out  Outbox // as the connection gave it
	q    Queue  // out as a Queue (queueOf)

	room atomic.Pointer[room] // nil when not paired

	// Guarded by hub.mu.
	token  proto.Token
	closed bool

	// scratch carries each message to the peer's Outbox. SayAll is
	// called only by the session's own connection, one call at a time,
	// so reusing it keeps the relay path free of allocations (an Event
	// passed through an interface would otherwise escape to the heap).
	// Its kind and sender are set once; SayAll sets only the text, and
	// clears it after.
	scratch proto.Event

	// Written only by the session's own connection, read by Stats.
	sentMessages atomic.Uint64
	sentBytes    atomic.Uint64
}

// Name returns the name the user logged in with.
func (s *Session) Name() string { return s.name }

// Token returns the session's current token.
func (s *Session) Token() proto.Token {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return s.token
}

// Peer returns the name of the session's partner, or "" when not paired.
func (s *Session) Peer() string {
	if r := s.room.Load(); r != nil {
		if p := r.peer(s); p != nil {
			return p.name
		}
	}
	return ""
}

// room is a two-slot pairing. Once closed it is never reopened: a new
// pairing gets a new room, so a message racing a leave can never reach a
// partner from a later pairing.
type room struct {
	mu   sync.Mutex
	a, b *Session // a sent connect, b held the token
	open bool

	pairID uint64   // the pairing's number in the directory
	stub   *Session // stands in for a partner on another node; nil when both are here
}

// peer is other under the room's lock.
func (r *room) peer(s *Session) *Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.other(s)
}

func (r *room) other(s *Session) *Session {
	if !r.open {
		return nil
	}
	if r.a == s {
		return r.b
	}
	return r.a
}

func fold(name string) string { return strings.ToLower(name) }

// Login creates a session named name that reaches its connection through
// out, and tells it its token. Names are unique among users online,
// compared without regard to case.
func (h *Hub) Login(name []byte, out Outbox) (*Session, *proto.Error) {
	if !proto.ValidName(name) {
		return nil, proto.ErrBadName
	}
	s := h.newSession(name, out)
	if err := h.hold(s); err != nil {
		return nil, err
	}
	if err := h.register(s); err != nil {
		return nil, err
	}
	return s, nil
}

// newSession makes a session for name, not yet in the directory.
func (h *Hub) newSession(name []byte, out Outbox) *Session {
	s := &Session{hub: h, name: string(name), out: out, q: queueOf(out)}
	s.key = fold(s.name)
	s.scratch = proto.Event{Kind: proto.EvMessage, From: s.name}
	return s
}

// hold enters s under its name and a fresh token on this node, so that a
// second login here does not race it to the directory.
func (h *Hub) hold(s *Session) *proto.Error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, taken := h.names[s.key]; taken {
		return proto.ErrNameTaken
	}
	h.enterLocked(s)
	return nil
}

// enterLocked gives s a fresh token and enters it under its name and
// token. The caller has checked that the name is free here.
func (h *Hub) enterLocked(s *Session) {
	s.token = h.freshTokenLocked()
	h.names[s.key] = s
	h.tokens[s.token] = s
}

// register claims s's name and token in the directory and welcomes s, or
// gives up what hold entered.
func (h *Hub) register(s *Session) *proto.Error {
	err := h.dir.Register(s.name, s.key, s.token)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		delete(h.names, s.key)
		delete(h.tokens, s.token)
		return err
	}
	s.out.Deliver(&proto.Event{Kind: proto.EvWelcome, Name: s.name, Token: s.token})
	return nil
}

// freshTokenLocked draws a token no one here holds. A collision of 128
// random bits will not happen, but the check costs one map lookup.
func (h *Hub) freshTokenLocked() proto.Token {
	for {
		t := proto.NewToken()
		if _, used := h.tokens[t]; !used && !t.IsZero() {
			return t
		}
	}
}

// Connect pairs s with the holder of token. Both are told, each naming
// the other. A holder who is already paired answers room_full, and the
// asker learns nothing of that pair.
func (s *Session) Connect(token []byte) *proto.Error {
	t, perr := proto.ParseToken(token)
	if perr != nil {
		return proto.ErrBadToken
	}
	h := s.hub
	if err := h.canConnect(s, t); err != nil {
		return err
	}
	c, err := h.dir.Claim(s.key, t)
	if err != nil {
		return err
	}
	undo, err := h.pair(s, c)
	if undo {
		h.dir.Release(s.key, c.PairID)
		h.dir.Release(c.PeerKey, c.PairID)
	}
	return err
}

// canConnect answers what it can without the directory.
func (h *Hub) canConnect(s *Session, t proto.Token) *proto.Error {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case s.closed:
		return proto.ErrNotLoggedIn
	case s.room.Load() != nil:
		return proto.ErrAlreadyPaired
	case t == s.token:
		return proto.ErrSelfConnect
	}
	if target, ok := h.tokens[t]; ok && target.room.Load() != nil {
		return proto.ErrRoomFull
	}
	return nil
}

// pair opens the room the directory claimed. undo reports that the
// claim is void, and both sides are to be released in the directory:
// either side logged out since the claim, or the holder is still being
// told its last pairing ended.
func (h *Hub) pair(s *Session, c Claim) (undo bool, err *proto.Error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c.PeerNode != h.node {
		return false, h.pairRemoteLocked(s, c)
	}
	target := h.names[c.PeerKey]
	if s.closed || target == nil || target.closed || target.room.Load() != nil {
		if target != nil && !target.closed {
			return true, proto.ErrRoomFull
		}
		return true, proto.ErrUnknownToken
	}
	r := &room{a: s, b: target, open: true, pairID: c.PairID}
	s.room.Store(r)
	target.room.Store(r)
	h.rooms++
	h.pairings.Add(1)
	// Tell the token's holder first: by the time the asker hears it is
	// paired and starts talking, the holder already knows who it is.
	target.out.Deliver(&proto.Event{Kind: proto.EvPaired, Peer: s.name})
	s.out.Deliver(&proto.Event{Kind: proto.EvPaired, Peer: target.name, Initiator: true})
	return false, nil
}

// SayAll relays a run of texts read together to s's partner: in order,
// under one lock of the room, and in one call to the partner's Queue. It
// stops at the first text it refuses (empty, or longer than the limit)
// and returns how many it relayed, with the error for the text after
// them (nil when it relayed all), and the partner's Queue, so the caller
// can see how far behind that reader is. Messages from one session
// arrive in the order they were relayed. The texts must not be changed
// until SayAll returns, and are not kept after. It must not be called
// concurrently for the same session.
func (s *Session) SayAll(texts [][]byte) (to Queue, relayed int, err *proto.Error) {
	n, size := 0, 0
	for _, text := range texts {
		if err = s.hub.checkText(text); err != nil {
			break
		}
		n++
		size += len(text)
	}
	if n == 0 {
		return nil, 0, err
	}
	r := s.room.Load()
	if r == nil {
		return nil, 0, proto.ErrNotPaired
	}
	r.mu.Lock()
	peer := r.other(s)
	if peer == nil {
		r.mu.Unlock()
		return nil, 0, proto.ErrNotPaired
	}
	peer.q.DeliverMessages(&s.scratch, texts[:n])
	s.scratch.Text = nil // do not pin the caller's buffer
	r.mu.Unlock()
	s.sentMessages.Add(uint64(n))
	s.sentBytes.Add(uint64(size))
	return peer.q, n, err
}

// checkText is the check SayAll makes of a text before relaying it.
func (h *Hub) checkText(text []byte) *proto.Error {
	if len(text) == 0 {
		return proto.ErrEmptyMessage
	}
	if int64(len(text)) > h.maxText.Load() {
		return proto.ErrTooLong
	}
	return nil
}

// Leave ends s's pairing: s is told it left, its partner is told why,
// and both are free to be joined again. Both are freed in the directory
// before anyone is told, so whoever hears it can be joined at once.
func (s *Session) Leave() *proto.Error {
	h := s.hub
	r, peer := h.partner(s)
	if peer == nil {
		return proto.ErrNotPaired
	}
	h.dir.Release(s.key, r.pairID)
	if peer != r.stub {
		h.dir.Release(peer.key, r.pairID)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.room.Load() == r {
		h.unpairLocked(s, proto.ReasonLeft, 0)
	}
	// Left even if the partner went first meanwhile: the user asked.
	s.out.Deliver(&proto.Event{Kind: proto.EvLeft, Peer: peer.name})
	return nil
}

// partner returns s's room and partner, if any.
func (h *Hub) partner(s *Session) (*room, *Session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := s.room.Load()
	if r == nil {
		return nil, nil
	}
	return r, r.peer(s)
}

// unpairLocked closes s's room, if any, tells the partner, and returns it.
func (h *Hub) unpairLocked(s *Session, reason proto.Reason, undelivered int) *Session {
	r := s.room.Load()
	if r == nil {
		return nil
	}
	r.mu.Lock()
	peer := r.other(s)
	r.open = false
	if peer != nil {
		// Told before its room is cleared: a SayAll racing this sees the
		// room (and waits for its lock) until peer_left is queued, so
		// the partner never reads not_paired before it.
		peer.out.Deliver(&proto.Event{Kind: proto.EvPeerLeft, Peer: s.name, Reason: reason, Count: undelivered})
		peer.room.Store(nil)
	}
	s.room.Store(nil)
	r.mu.Unlock()
	h.rooms--
	if r.stub != nil {
		h.forgetRemoteLocked(r)
	}
	return peer
}

// Who tells s its name, token and partner.
func (s *Session) Who() {
	h := s.hub
	h.mu.Lock()
	ev := proto.Event{Kind: proto.EvStatus, Name: s.name, Token: s.token, Peer: s.Peer()}
	s.out.Deliver(&ev)
	h.mu.Unlock()
}

// NewToken replaces s's token with a fresh one, so a token that was
// shared too widely stops working. A current pairing is not affected.
func (s *Session) NewToken() *proto.Error {
	h := s.hub
	old, fresh, err := h.drawToken(s)
	if err != nil {
		return err
	}
	if err := h.dir.Retoken(s.key, old, fresh); err != nil {
		h.mu.Lock()
		delete(h.tokens, fresh)
		h.mu.Unlock()
		return err
	}
	if !h.adoptToken(s, old, fresh) {
		// Logged out meanwhile, under the old token: the record now
		// holds the new one, which the logout did not remove.
		h.dir.Unregister(s.key, fresh)
		return proto.ErrNotLoggedIn
	}
	return nil
}

// drawToken draws a fresh token for s and holds it here while the
// directory is asked.
func (h *Hub) drawToken(s *Session) (old, fresh proto.Token, err *proto.Error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.closed {
		return old, fresh, proto.ErrNotLoggedIn
	}
	old, fresh = s.token, h.freshTokenLocked()
	h.tokens[fresh] = s
	return old, fresh, nil
}

// adoptToken makes fresh s's token, now that the directory holds it, and
// tells s. It reports false if s logged out meanwhile.
func (h *Hub) adoptToken(s *Session, old, fresh proto.Token) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.closed {
		delete(h.tokens, fresh)
		return false
	}
	delete(h.tokens, old)
	s.token = fresh
	s.out.Deliver(&proto.Event{Kind: proto.EvWelcome, Name: s.name, Token: s.token})
	return true
}

// Close logs s out: its partner, if any, is told reason, along with how
// many of the partner's messages to s were lost (undelivered), and its
// name and token are freed at once here, so no ghost holds them. Close
// is idempotent. With a cluster's directory, the directory's part runs
// on a goroutine of its own (Close is called on event loops), and the
// partner is told once the directory has freed it.
func (s *Session) Close(reason proto.Reason, undelivered int) {
	h := s.hub
	h.mu.Lock()
	lo, ok := h.logoutLocked(s)
	h.mu.Unlock()
	if !ok {
		return
	}
	if !h.remoteDir {
		lo.finish(reason, undelivered)
		return
	}
	h.closing.Add(1)
	go func() {
		defer h.closing.Done()
		lo.finish(reason, undelivered)
	}()
}

// logout is the rest of a session's logout once it has left this node's
// sessions, which runs with no hub lock held: the directory frees its
// name and token, and a partner on this node, then the partner is told.
type logout struct {
	s         *Session
	token     proto.Token
	r         *room    // nil when not paired
	localPeer *Session // the partner, when on this node
}

// logoutLocked takes s out of this node's sessions and returns the rest
// of its logout. It reports false if s was closed already.
func (h *Hub) logoutLocked(s *Session) (logout, bool) {
	if s.closed {
		return logout{}, false
	}
	s.closed = true
	delete(h.names, s.key)
	delete(h.tokens, s.token)
	// Its counts move to the hub's as it leaves names, so Stats never
	// sees them go down.
	h.closedMessages.Add(s.sentMessages.Load())
	h.closedBytes.Add(s.sentBytes.Load())
	lo := logout{s: s, token: s.token, r: s.room.Load()}
	if lo.r != nil {
		if p := lo.r.peer(s); p != nil && p != lo.r.stub {
			lo.localPeer = p
		}
	}
	return lo, true
}

func (lo logout) finish(reason proto.Reason, undelivered int) {
	h := lo.s.hub
	h.dir.Unregister(lo.s.key, lo.token)
	if lo.localPeer != nil {
		h.dir.Release(lo.localPeer.key, lo.r.pairID)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.unpairLocked(lo.s, reason, undelivered)
}

// Stats is a snapshot of the hub's gauges and counters.
type Stats struct {
	Users    int    // sessions logged in now
	Pairs    int    // rooms open now
	Pairings uint64 // pairings made since start
	Messages uint64 // messages relayed since start
	Bytes    uint64 // message text bytes relayed since start
}

// Stats returns the current gauges and counters.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := Stats{
		Users:    len(h.names),
		Pairs:    h.rooms,
		Pairings: h.pairings.Load(),
		Messages: h.closedMessages.Load(),
		Bytes:    h.closedBytes.Load(),
	}
	for _, s := range h.names {
		st.Messages += s.sentMessages.Load()
		st.Bytes += s.sentBytes.Load()
	}
	return st
}
