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
// A session is not its connection (resume.go): when resume is on, a
// session whose connection dropped goes away (Session.Detach) and keeps
// its name, token and pairing for a while; the messages delivered to it
// are numbered and kept (history.go), and Hub.Resume attaches it to a
// new connection with what it may have missed. A session can also leave
// its hub whole and be taken up by another (park.go): on another node of
// a cluster, or by the next process on this machine.
//
// Locking: Hub.mu guards the hub's sessions (names, tokens, resume
// keys, who is away) and the creation and teardown of rooms; room.mu
// guards one pairing; Session.hmu guards one session's message numbers
// and history. The order is always Hub.mu, then room.mu, then
// Session.hmu, then Hub.histMu, which guards only the set of sessions
// that hold a history. Hub.remoteMu, which guards the pairings with
// partners on other nodes, may be taken under Hub.mu but is never held
// while taking a room lock. Relaying a message takes only its room's
// lock and the receiver's hmu, so pairs never contend with each other
// on the hot path.
package hub

import (
	"crypto/sha256"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"duet/proto"
)

// events recycles the events the hub hands to an Outbox (deliver): one
// made per login, pairing or parting and passed through the interface
// would escape to the heap, to be collected soon after, since Deliver
// keeps none.
var events = sync.Pool{New: func() any { return new(proto.Event) }}

// deliver hands ev to out in a pooled Event.
func deliver(out Outbox, ev proto.Event) {
	p := events.Get().(*proto.Event)
	*p = ev
	out.Deliver(p)
	*p = proto.Event{}
	events.Put(p)
}

// Outbox is how the hub reaches one session's connection.
type Outbox interface {
	// Deliver hands ev to the connection. It must not block, and must not
	// keep ev or its byte slices after it returns (encode, then forget).
	// It may be called from any goroutine, with hub locks held: it must
	// not call back into the hub.
	Deliver(ev *proto.Event)
}

// A Speaker is an Outbox that says which protocol its connection
// speaks. The hub tells a session's partner (Event.PeerProto), and
// relays sealed frames only to a session whose connection speaks JSON:
// what a terminal would make of one is base64. An Outbox that is not a
// Speaker (a partner on another node, a test's recorder) speaks
// proto.ProtoUnknown, to which nothing sealed is relayed.
type Speaker interface {
	Outbox
	Protocol() proto.Protocol
}

// protocolOf returns the protocol out's connection speaks.
func protocolOf(out Outbox) proto.Protocol {
	if sp, ok := out.(Speaker); ok {
		return sp.Protocol()
	}
	return proto.ProtoUnknown
}

// A BatchOutbox is an Outbox that can take a run of messages from one
// sender in one call. A relay reads many lines per socket read; handing
// them over together costs the reader's queue one lock for the run
// instead of one per message.
type BatchOutbox interface {
	Outbox
	// DeliverMessages hands over one message event per text, in order:
	// ev is the message event, and its Text is set to each text in turn.
	// When ev.Seq is not 0 it is the first text's, and each next text's
	// is one more: an Outbox that walks the texts sets ev.Seq as it goes.
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

// A LateRefuser is a Queue whose connection takes the refusal of a say
// that comes after the say was taken: the partner's node, or the
// partner's taking up here, found the partner away and full
// (peer_away_full), or unable to read a seal. The connection tells it
// as it tells a say refused at once (a run's first, then a count a
// second) and counts it, instead of one error a message. It must not
// block.
type LateRefuser interface {
	RefusedLate(err *proto.Error)
}

// refuseLate tells q of a say refused late (LateRefuser), or delivers
// the error to a queue that does not take them.
func refuseLate(q Queue, err *proto.Error) {
	if lr, ok := q.(LateRefuser); ok {
		lr.RefusedLate(err)
		return
	}
	q.Deliver(&proto.Event{Kind: proto.EvError, Err: err})
}

// A TransportAcker is a Queue whose connection can tell which of the
// numbered messages handed to it its client has received: those its
// transport (TCP) acknowledged, bytes and all. A session whose client
// does not acknowledge messages itself (Session.Ack: the line protocol,
// a JSON client that never does) then keeps for a resume only what it
// may not have received, instead of everything up to resume.buffer:
// when nothing is lost, a few KiB that stay in cache.
type TransportAcker interface {
	// TransportAcked returns the Seq of the newest message the client
	// is known to have received, all before it included; 0 when none is
	// known. It asks the socket (a system call) only once at least after
	// bytes were written since it last did. It is called with hub locks
	// held, and must not call back into the hub.
	TransportAcked(after int) uint64
}

// An UnsentCounter is a Queue that can tell how many of the messages
// handed to it its connection has not written yet: a reader that does
// not keep up leaves the newest of them queued. A resume that takes the
// session over from that connection, while it is still open, replays
// them however long they waited, as it does for a connection that
// dropped with messages queued (Detach's undelivered): that connection
// will never write them.
//
// It also counts the messages handed to it after its connection closed:
// the engine counts what the connection never wrote as it closes, and
// tells the session's end (Close, Detach) that count, but senders go on
// relaying to the session until it leaves their room. The hub adds them
// as the session leaves, under the room's lock, so that its partner is
// told of every one.
//
// Its methods are called with hub locks held, and must not call back
// into the hub.
type UnsentCounter interface {
	// Unsent returns how many messages handed to the queue its
	// connection has not written whole (yet: an open connection may).
	Unsent() int
	// Dropped returns how many messages were handed to the queue after
	// its connection closed.
	Dropped() int
}

// neverWritten is what q's connection has not written, as far as q can
// tell (UnsentCounter): unsent, what it still holds, and dropped, what
// was handed to it after its connection closed.
//
// A session taken from a connection still open (a resume's takeover, an
// export) reads unsent once it is out of the room: nothing more is
// handed to q, which may write more of what it holds meanwhile (replayed
// then twice, as a line client may see a message), never less. A
// session whose connection closed was told what it never wrote (Close's
// and Detach's undelivered), and adds what was dropped since. One ended
// while its connection is open (LoginReplacing) counts both for its
// partner now, since the pairing ends now: that connection writes
// nothing relayed after its goodbye, and a reader that had stopped never
// takes them; should it take them before it is closed, the count was
// too high, never too low.
func neverWritten(q Queue) (unsent, dropped int) {
	if uc, ok := q.(UnsentCounter); ok {
		return uc.Unsent(), uc.Dropped()
	}
	return 0, 0
}

// A ReceiptCounter is a Queue that can tell, from any goroutine, how
// many of the relayed messages handed to it its client is not known to
// have received: for one whose connection is open, those it has not
// written and those its socket's peer has not acknowledged; for one
// whose connection has closed, what its close counted, and what was
// dropped since. A reader that reads slowly holds megabytes, written
// long before, in its socket: a session taken from its connection (a
// resume's takeover, an export) replays or counts them all.
type ReceiptCounter interface {
	NotReceived() int
}

// notReceived is what the client of q, a connection a session is taken
// from, is not known to have received (ReceiptCounter), or else what
// q never wrote.
func notReceived(q Queue) int {
	if rc, ok := q.(ReceiptCounter); ok {
		return rc.NotReceived()
	}
	unsent, dropped := neverWritten(q)
	return unsent + dropped
}

// Strides, in bytes written to a connection, between two looks at what
// its TCP acknowledged. A look costs a system call. The engine looks
// each ReadStride, right after reading from the client: a client that
// sends has just acknowledged, with what it sent, all it had received,
// so the look mostly finds everything received and the history empty.
// The hub looks as it keeps messages, each keepStride, once a history
// holds keepStride of texts: for a client that only reads; and each
// ReadStride before it would drop kept messages for room (keepLocked).
const (
	ReadStride = 4 << 10
	keepStride = 16 << 10
)

// Eviction says why the hub took a session from a connection that was
// still open (Queue.Evict).
type Eviction uint8

const (
	// EvictReplaced: another login took the account over, and the
	// session ended (LoginReplacing).
	EvictReplaced Eviction = iota + 1
	// EvictResumed: the session was resumed on another connection
	// (Resume), which carries it from now on.
	EvictResumed
)

// A Waiter is a sender that a Queue holds back until its reader catches
// up. Wake may be called from any goroutine; it must not block.
type Waiter interface {
	Wake()
}

// outbox returns the Outbox s was made with (or awayQueue's): q, unless
// the hub gave it the Queue methods.
func (s *Session) outbox() Outbox {
	if pq, ok := s.q.(*plainQueue); ok {
		return pq.Outbox
	}
	return s.q
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
	for i, text := range texts {
		ev.Text = text
		if i > 0 && ev.Seq != 0 {
			ev.Seq++
		}
		q.Deliver(ev)
	}
}

func (*plainQueue) Backlog() int64   { return 0 }
func (*plainQueue) Wait(Waiter) bool { return false }
func (*plainQueue) Evict(Eviction)   {}

// Options are the core's limits. Zero values take the defaults, but for
// ResumeWindow, where zero turns resume off.
type Options struct {
	MaxText int // longest message text in bytes; default 16 KiB

	// ResumeWindow is how long a session whose connection dropped waits
	// for a resume (Session.Detach, Hub.Resume). Zero turns resume off:
	// a login gets no resume key, and Detach is Close.
	ResumeWindow time.Duration
	// ResumeBuffer bounds, in bytes, the messages kept for one session
	// to replay on a resume: each counts its text and entryCost. While
	// the session is attached the oldest are dropped to make room;
	// while it is away a message that does not fit is refused
	// (peer_away_full). Default 256 KiB.
	ResumeBuffer int
	// MaxAway bounds the sessions away at once on this node; when a
	// session goes away past it, the one away the longest ends.
	// Default 25000 (a quarter of limits.max_conns' default).
	MaxAway int
	// MaxAwayPerIP bounds the sessions away at once on this node whose
	// connections came from one client address (Session.DetachFrom);
	// when one more from it goes away past it, the address's own away
	// the longest ends. Default 64 (limits.max_conns_per_ip's default).
	MaxAwayPerIP int
	// ReplayRecent is how far before its connection dropped a resume
	// that cannot say what it received (the line protocol's) replays
	// the messages it was sent. Default 30 s, at most ResumeWindow.
	ReplayRecent time.Duration
}

// The defaults of Options.
const (
	DefaultResumeBuffer = 256 << 10
	DefaultMaxAway      = 25000
	DefaultMaxAwayPerIP = 64
	DefaultReplayRecent = 30 * time.Second
)

// Hub is one node's pairing core. The zero value is not usable; call New.
type Hub struct {
	maxText      atomic.Int64
	resumeWindow atomic.Int64 // a time.Duration
	resumeBuffer atomic.Int64
	maxAway      atomic.Int64
	maxAwayPerIP atomic.Int64
	// draining: the node sends every session away at once (a drain, or
	// a stop that hands them to the next process), each told to resume;
	// none is ended to make room for another meanwhile (SetDraining).
	draining     atomic.Bool
	replayRecent atomic.Int64 // a time.Duration

	clock clock
	// newToken draws a random token: proto.NewToken, but for tests of
	// what the hub does with a draw it cannot file.
	newToken func() proto.Token

	mu     sync.Mutex
	names  nameIndex  // this node's sessions by name, regardless of case (names.go)
	tokens tokenIndex // by token (tokens.go)
	rooms  int        // rooms open now
	// keys holds the sessions that can be resumed, by the SHA-256 of
	// their resume key (keyIndexOf): the keys themselves are never kept.
	keys map[keyIndex]*Session
	// used holds, for a session resumed whose client has not yet shown
	// it has the answer, the key the resume used, which keys files it
	// under too (resume.go, "The key a resume used").
	used map[*Session]usedKey
	// The sessions away now, in the order they went away (away.prev
	// and away.next link them).
	awayOldest, awayNewest *Session
	awayCount              int
	// awayFrom holds the same sessions by the address their last
	// connection came from, for those whose address is known
	// (DetachFrom): an entry while it has any.
	awayFrom map[netip.Prefix]*fromAway
	// awayDue is the same sessions by deadline, soonest first, and
	// awayTimer the one timer that ends them, set for awayTimerAt;
	// awayTimerGen tells its calls from those of a timer it replaced.
	awayDue      awayHeap
	awayTimer    stopper
	awayTimerAt  time.Duration
	awayTimerGen uint64

	// histMu guards histories, the sessions that held a history since
	// the sweep last looked, which a timer sweeps for what has aged out
	// (history.go).
	histMu    sync.Mutex
	histories map[*Session]struct{}
	sweeping  bool // the sweep timer is armed

	pairings atomic.Uint64 // pairings ever made
	// ended counts the pairings that ended here, by the reason the
	// partner who stayed was told (proto.Reasons); under mu.
	ended [len(proto.Reasons)]uint64
	// Counters of sessions already closed; live sessions keep their own.
	closedMessages atomic.Uint64
	closedBytes    atomic.Uint64
	closedSealed   atomic.Uint64
	closedSealedB  atomic.Uint64

	// Resume's counters (Stats).
	resumedAway, resumedZombie, resumeBadKey, resumeEnded atomic.Uint64
	awayTimedOut, awayEvicted, awayRefused                atomic.Uint64

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
		names:     newNameIndex(),
		tokens:    make(tokenIndex),
		keys:      make(map[keyIndex]*Session),
		used:      make(map[*Session]usedKey),
		awayFrom:  make(map[netip.Prefix]*fromAway),
		histories: make(map[*Session]struct{}),
		remote:    make(map[uint64]remoteRoom),
		clock:     newRealClock(),
		newToken:  proto.NewToken,
	}
	h.dir = newLocalDirectory(h)
	h.node = h.dir.NodeID()
	h.SetOptions(opts)
	return h
}

// SetOptions changes the limits; safe at any time (config reload).
func (h *Hub) SetOptions(opts Options) {
	if opts.MaxText <= 0 {
		opts.MaxText = 16 << 10
	}
	if opts.ResumeWindow < 0 {
		opts.ResumeWindow = 0
	}
	if opts.ResumeBuffer <= 0 {
		opts.ResumeBuffer = DefaultResumeBuffer
	}
	if opts.MaxAway <= 0 {
		opts.MaxAway = DefaultMaxAway
	}
	if opts.MaxAwayPerIP <= 0 {
		opts.MaxAwayPerIP = DefaultMaxAwayPerIP
	}
	if opts.ReplayRecent <= 0 {
		opts.ReplayRecent = DefaultReplayRecent
	}
	if opts.ResumeWindow > 0 {
		opts.ReplayRecent = min(opts.ReplayRecent, opts.ResumeWindow)
	}
	h.maxText.Store(int64(opts.MaxText))
	h.resumeWindow.Store(int64(opts.ResumeWindow))
	h.resumeBuffer.Store(int64(opts.ResumeBuffer))
	h.maxAway.Store(int64(opts.MaxAway))
	h.maxAwayPerIP.Store(int64(opts.MaxAwayPerIP))
	h.replayRecent.Store(int64(opts.ReplayRecent))
}

// window is resume.window now: 0 when resume is off.
func (h *Hub) window() time.Duration { return time.Duration(h.resumeWindow.Load()) }

// Window is how long a session that went away waits for its resume
// (resume.window), 0 with resume off.
func (h *Hub) Window() time.Duration { return h.window() }

// Session is one logged-in user, as one connection holds it. When
// resume is on it outlives that connection: it goes away when the
// connection drops (Detach), and a resume (Hub.Resume) hands a new
// Session for the same user to the next connection and retires this
// one, which from then on acts as if logged out. So a connection never
// acts for a user after another connection has taken them over.
type Session struct {
	// Session is 192 bytes, a size class whose objects start on a cache
	// line, and its three lines are laid out by who writes them, so that
	// a run of messages touches one line of its sender and one of its
	// reader, and neither loop's writes take from the other a line it
	// reads at every run (TestSessionLayout).
	//
	// The first line is what the session's own loop touches as it
	// sends (SayAll): the partner's loop, delivering to this session,
	// reads nothing here.

	// name is the name as the user typed it. What the hub and the
	// directory know the session by is its folded form (Key), made when
	// asked for: a name is ASCII, so folding a lower-case one (most of
	// them) returns it as it is, and a session spares 16 bytes.
	name string

	room atomic.Pointer[room] // nil when not paired

	// Written only under the lock of the session's room (load and
	// store: see SayAll), read by Stats.
	sentMessages atomic.Uint64
	sentBytes    atomic.Uint64
	// sealed counts the sealed frames sent, apart from messages. It is
	// made at the first one, so a session that never seals (every
	// terminal user) does not pay for it.
	sealed atomic.Pointer[sealCount]
	// lastID is the id the client gave the last of its messages relayed
	// (SayAll, Seal) that had one, 0 before any: a resume reports it
	// (EvResumed), so that a page learns which of the messages it sent
	// into a connection that died never reached the server. It is
	// proto.IDUnknown in a session taken up from a Parked that did not
	// say (Import), until it relays one. Written and read under the lock
	// of the session's room, as the counts are, and moved with them by a
	// resume.
	lastID uint64
	// hub is read here by the session's own loop; a delivery to the
	// session is handed its hub by the sender (deliverMessages), whose
	// own it is, rather than read it in this line, which the session's
	// sends write.
	hub *Hub

	// The second line changes only as the session is made, given a new
	// token, paired, moved or closed, and a run of messages reads
	// nothing in it.

	// Guarded by hub.mu.
	token  proto.Token
	closed bool // logged out, or retired by a resume
	// client is the protocol out's connection speaks (protocolOf). It
	// is set when the Session is made, for the connection that makes
	// it (a resume makes a new Session), and never changes, so it is
	// read without a lock. A stub's is its partner's, as the partner's
	// node last said (Claim.PeerProto, its paired frame, its peer_back):
	// it changes when the partner is resumed over the other protocol,
	// and is read and written under its room's lock only.
	client proto.Protocol
	// moving is set while the session is being moved: to another node
	// (BeginPark, until Export or AbandonPark), or to a new resume key
	// the directory is told of before the resume that draws it goes on
	// (resume.go). A second move meanwhile is refused.
	moving bool
	// keyUnsure: the session was made by a resume that kept the key it
	// used (resume.go, "The key a resume used"), and its client has not
	// said anything since. Set before the session is handed to its
	// connection, and cleared by that connection's loop alone
	// (KeyReceived), so it is read there without a lock.
	keyUnsure bool
	// gen counts the times the session was taken up by a hub after it
	// left another (Import): a partner's node tells apart, by it, what
	// it hears of the session's earlier and later homes.
	gen     uint32
	keyHash ResumeHash // the resume key's hash, when resumable
	// claim is the pairing a hub on its own has the session in, in its
	// directory (localDirectory), 0 when none. Guarded by hub.mu. It
	// changes as the session is paired, and is read only then: it is
	// here, rather than in the first line, where a send writes lastID.
	claim uint64

	// The third line is what a delivery to the session reads and
	// writes, from the partner's loop, and what the session's own loop
	// writes as its client acknowledges (Received).

	// hmu guards what is kept for a resume: the number of the last
	// message delivered and the messages that may need replaying.
	hmu  sync.Mutex
	seq  uint64
	hist *history // nil when nothing is kept, which costs nothing
	// q is the connection's Outbox, as a Queue (queueOf; outbox returns
	// the Outbox itself); while the session is away, it drops what it is
	// handed (awayQueue). Written under hub.mu and, while the session is
	// paired, its room's lock too; read under either.
	q Queue
	// away is set while the session is away. Written under hub.mu and
	// hmu (and its room's lock, while paired); read under any of them.
	away *away
	// resumable is set, for good, when the session is made with a
	// resume key (resume was on); its messages are then numbered and
	// kept. It never changes, so it is read without a lock.
	resumable bool
	// clientAcks is set, for good, once the session's client has
	// acknowledged messages itself (Ack, or last in its resume): it
	// numbers what it processes, and what its transport acknowledged
	// may still be lost to it (a page reloaded), so what it has not
	// acknowledged is kept. Guarded by hmu.
	clientAcks bool
	// answerUnread is keyUnsure, under hmu: while its client has not
	// shown it read the answer to the resume that made the session,
	// what its transport acknowledged may be lost to it with that
	// connection, the answer's replay among it, which a resume with the
	// key it used replays again (usedKey.replayFrom); so nothing is
	// dropped for the transport's acknowledgements meanwhile (the sweep,
	// Received, keep), but to make room in resume.buffer, where it is
	// dropped first, rather than be noted lost.
	answerUnread bool
	// swept is set while the session is in the hub's histories, which
	// it joins when it first keeps a message and leaves when the sweep
	// finds it keeping none (history.go). Guarded by hmu.
	swept bool
	// acked is the last message the client acknowledged itself (Ack,
	// or last in its resume), 0 before any: it was received, whatever
	// the connection's queue knows of what its TCP acknowledged, and is
	// never counted among what the connection never delivered
	// (unreceivedAfterAck). Guarded by hmu.
	acked uint64
}

// sealCount is what a session sent sealed: frames, and their data's
// bytes. Written under the lock of the session's room.
type sealCount struct {
	frames, bytes atomic.Uint64
}

// countSealed counts one sealed frame of n bytes sent by s, under the
// lock of s's room.
func (s *Session) countSealed(n int) {
	c := s.sealed.Load()
	if c == nil {
		c = new(sealCount)
		s.sealed.Store(c)
	}
	c.frames.Add(1)
	c.bytes.Add(uint64(n))
}

// sealedCounts returns what s sent sealed.
func (s *Session) sealedCounts() (frames, bytes uint64) {
	if c := s.sealed.Load(); c != nil {
		return c.frames.Load(), c.bytes.Load()
	}
	return 0, 0
}

// Name returns the name the user logged in with.
func (s *Session) Name() string { return s.name }

// Key returns the session's name folded: what the hub and the directory
// know it by.
func (s *Session) Key() string { return fold(s.name) }

// keyIs reports whether key is s's Key, without making it: a message
// from a partner on another node is checked against its receiver's key,
// and a name with capitals would otherwise cost an allocation each.
func (s *Session) keyIs(key string) bool {
	if len(key) != len(s.name) {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := s.name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != key[i] {
			return false
		}
	}
	return true
}

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
	mu sync.Mutex
	// a sent connect, b held the token. Both are nil once the room is
	// closed (close), so that other finds no partner in it; a flag for
	// that would take the room from 48 bytes to 64.
	a, b *Session

	pairID uint64   // the pairing's number in the directory
	stub   *Session // stands in for a partner on another node; nil when both are here
	// id names the pairing to its two sides (Event.PairID): the
	// directory's tag for it (Directory.PairTag), the same in the rooms
	// of both sides' nodes and in those a resume makes for it, or, on a
	// hub on its own, random, so it says nothing of how many pairings
	// there were. It is 0 only for a pairing across nodes made by a node
	// from before the tag, whose sides were told no id.
	id uint64
}

// newRoom opens a room for a pairing: the directory's pairing pairID,
// with stub standing in for a partner on another node, if not nil,
// whose client speaks stubProto.
func (h *Hub) newRoom(a, b *Session, pairID uint64, stub *Session, stubProto proto.Protocol) *room {
	r := &room{a: a, b: b, pairID: pairID, stub: stub, id: h.dir.PairTag(pairID)}
	if stub != nil {
		stub.client = stubProto
	}
	for r.id == 0 && stub == nil {
		r.id = rand.Uint64()
	}
	return r
}

// protoOf is the protocol of peer, a side of r, as r's pairing tells it
// (Event.PeerProto), and as sealing goes by. A pairing with no id began
// across nodes on a node from before pairing tags, and its two sides
// were told no protocol: so it stays when a resume brings both to one
// node. Else a page told at its resume that its partner can encrypt
// would begin an exchange the partner's page, still told nothing, never
// answers, and refuse the partner's plaintext meanwhile. r.mu is held.
func (r *room) protoOf(peer *Session) proto.Protocol {
	if r.id == 0 {
		return proto.ProtoUnknown
	}
	return peer.client
}

// A relay carries a run of messages to the reader's Outbox: the message
// event, and room for the text of a message from another node. Reusing
// them keeps the relay path free of allocations (an Event passed through
// an interface would otherwise escape to the heap). They come from a
// pool rather than from the room, which an idle pair then holds without
// them: 48 bytes a room instead of 288.
type relay struct {
	ev  proto.Event
	one [1][]byte
}

var relays = sync.Pool{New: func() any { return &relay{ev: proto.Event{Kind: proto.EvMessage}} }}

// getRelay returns a relay whose event is a message from from.
func getRelay(from string) *relay {
	rl := relays.Get().(*relay)
	rl.ev.From = from
	return rl
}

// putRelay returns rl to the pool, pinning none of what it carried.
func putRelay(rl *relay) {
	rl.ev.Kind, rl.ev.From, rl.ev.Text, rl.ev.Seq, rl.one[0] = proto.EvMessage, "", nil, 0, nil
	relays.Put(rl)
}

// peer is other under the room's lock.
func (r *room) peer(s *Session) *Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.other(s)
}

// other is s's partner in r, under r's lock: nil when r is closed, or
// when s is not in it (a Session retired by a resume).
func (r *room) other(s *Session) *Session {
	switch {
	case r.a == s:
		return r.b
	case r.b == s:
		return r.a
	}
	return nil
}

// close closes r, under its lock: no one is in it any more.
func (r *room) close() { r.a, r.b = nil, nil }

func fold(name string) string { return strings.ToLower(name) }

// Login creates a session named name that reaches its connection through
// out, and tells it its token. Names are unique among users online,
// compared without regard to case.
func (h *Hub) Login(name []byte, out Outbox) (*Session, *proto.Error) {
	if !proto.ValidName(name) {
		return nil, proto.ErrBadName
	}
	s, rk := h.newSession(name, out)
	key := s.Key() // folded once: for a name with capitals, each fold allocates
	if err := h.hold(s, key); err != nil {
		return nil, err
	}
	if err := h.register(s, key, rk, nil); err != nil {
		return nil, err
	}
	return s, nil
}

// newSession makes a session for name, not yet in the directory. When
// resume is on it draws the session's resume key, which it returns for
// the welcome, and keeps only its hash.
func (h *Hub) newSession(name []byte, out Outbox) (*Session, proto.ResumeKey) {
	s := &Session{hub: h, name: string(name), q: queueOf(out), client: protocolOf(out)}
	var rk proto.ResumeKey
	if h.window() > 0 {
		rk = proto.NewResumeKey()
		s.resumable, s.keyHash = true, sha256.Sum256(rk[:])
	}
	return s, rk
}

// hold enters s under its name (key, its Key) and a fresh token on this
// node, so that a second login here does not race it to the directory.
func (h *Hub) hold(s *Session, key string) *proto.Error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if old := h.names.filed(key); old != nil {
		if old.away != nil && old.keyIs(key) {
			// Most often its own user, back on a new connection
			// without the resume key in mind.
			return proto.NameAway(max(old.away.deadline-h.clock.now(), 0))
		}
		return proto.ErrNameTaken
	}
	h.enterLocked(s, key)
	return nil
}

// enterLocked gives s a fresh token and enters it under its name (key,
// its Key) and token. The caller has checked that the name is free here.
func (h *Hub) enterLocked(s *Session, key string) {
	s.token = h.freshTokenLocked()
	h.names.file(key, s)
	h.tokens.file(s.token, s)
	if s.resumable {
		h.keys[keyIndexOf(s.keyHash)] = s
	}
}

// register claims s's name (key, its Key) and token in the directory
// and welcomes s, with its resume key rk if it has one, or gives up what
// hold entered. A name the directory finds taken is claimed once more if
// evict, not nil, reports that its holder elsewhere let it go.
func (h *Hub) register(s *Session, key string, rk proto.ResumeKey, evict func() bool) *proto.Error {
	var sum *ResumeHash
	if s.resumable {
		sum = &s.keyHash
	}
	err := h.dir.Register(s.name, key, s.token, sum, s.client)
	if err == proto.ErrNameTaken && evict != nil && evict() {
		err = h.dir.Register(s.name, key, s.token, sum, s.client)
	}
	if err == proto.ErrNameTaken && h.remoteDir {
		// Free here (hold), taken on another node.
		err = proto.ErrNameTakenElsewhere
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.names.unfile(key, s)
		h.tokens.unfile(s.token, s)
		if s.resumable {
			delete(h.keys, keyIndexOf(s.keyHash))
		}
		return err
	}
	ev := proto.Event{Kind: proto.EvWelcome, Name: s.name, Token: s.token}
	if s.resumable {
		ev.ResumeKey, ev.Window = rk.String(), h.window()
	}
	deliver(s.q, ev)
	return nil
}

// freshTokenLocked draws a token that can be filed here: none filed
// shares its first half (tokenIndex).
func (h *Hub) freshTokenLocked() proto.Token {
	for {
		t := h.newToken()
		if h.tokens.filed(t) == nil && !t.IsZero() {
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
		return perr
	}
	h := s.hub
	if err := h.canConnect(s, t); err != nil {
		return err
	}
	c, err := h.dir.Claim(s.Key(), t)
	if err != nil {
		if err.Code == proto.ErrAlreadyPaired.Code {
			// Two users who connect to each other at once: the other's
			// connect claimed this session first, and has most often
			// paired them by now, which names the partner. In the
			// instant before, the answer cannot, and the pairing's
			// notice, which does, follows it.
			if named := h.canConnect(s, t); named != nil && named.Code == err.Code {
				return named
			}
		}
		return err
	}
	undo, err := h.pair(s, c, t)
	if undo {
		h.dir.Release(s.Key(), c.PairID)
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
		if peer := s.room.Load().peer(s); peer != nil {
			return proto.AlreadyPaired(peer.name)
		}
		return proto.ErrAlreadyPaired
	case t == s.token:
		return proto.ErrSelfConnect
	}
	if target := h.tokens.lookup(t); target != nil && target.room.Load() != nil {
		return proto.ErrRoomFull
	}
	return nil
}

// pair opens the room the directory claimed. undo reports that the
// claim is void, and both sides are to be released in the directory:
// either side logged out since the claim, the holder let t go, or the
// holder is still being told its last pairing ended.
func (h *Hub) pair(s *Session, c Claim, t proto.Token) (undo bool, err *proto.Error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c.PeerNode != h.node {
		return false, h.pairRemoteLocked(s, c)
	}
	target := h.names.lookup(c.PeerKey)
	if target != nil && target.token != t {
		// The claim was made on the session that held t, which has let
		// it go since: logged out, with someone else in its name now,
		// or drawn a new token. Whoever holds the name now never gave
		// t out.
		target = nil
	}
	if s.closed || target == nil || target.closed || target.room.Load() != nil {
		if target != nil && !target.closed {
			return true, proto.ErrRoomFull
		}
		return true, proto.ErrUnknownToken
	}
	r := h.newRoom(s, target, c.PairID, nil, proto.ProtoUnknown)
	s.room.Store(r)
	target.room.Store(r)
	target.pairedAwayLocked()
	h.rooms++
	h.pairings.Add(1)
	// Tell the token's holder first: by the time the asker hears it is
	// paired and starts talking, the holder already knows who it is.
	deliver(target.q, proto.Event{Kind: proto.EvPaired, Peer: s.name, PeerProto: s.client, PairID: r.id})
	deliver(s.q, proto.Event{Kind: proto.EvPaired, Peer: target.name, Initiator: true, PeerProto: target.client, PairID: r.id})
	h.tellAwayLocked(target, s.q)
	return false, nil
}

// SayAll relays a run of texts read together to s's partner: in order,
// under one lock of the room, and in one call to the partner's Queue. It
// stops at the first text it refuses (empty, or longer than the limit,
// or, while the partner is away, more than can be kept for it:
// peer_away_full) and returns how many it relayed, with the error for
// the text after them (nil when it relayed all), and the partner's
// Queue, so the caller can see how far behind that reader is. Messages
// from one session arrive in the order they were relayed. The texts
// must not be changed until SayAll returns, and are not kept after
// (what is kept for a resume is a copy).
//
// ids, when not nil, holds the id the client gave each text (0: none):
// the last relayed with one is what a resume reports (EvResumed).
func (s *Session) SayAll(texts [][]byte, ids []uint64) (to Queue, relayed int, err *proto.Error) {
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
	rl := getRelay(s.name)
	defer putRelay(rl)
	r.mu.Lock()
	peer := r.other(s)
	if peer == nil {
		r.mu.Unlock()
		return nil, 0, proto.ErrNotPaired
	}
	delivered, full := peer.deliverMessages(s.hub, &rl.ev, texts[:n])
	if delivered < n {
		size = 0
		for _, text := range texts[:delivered] {
			size += len(text)
		}
		n, err = delivered, full
	}
	// Counted under the room's lock, so that a resume, which moves the
	// counts to the session that takes over, misses none. Every write of
	// them is made under it, so a load and a store do: an atomic add
	// would lock the bus for nothing, twice a run.
	s.sentMessages.Store(s.sentMessages.Load() + uint64(n))
	s.sentBytes.Store(s.sentBytes.Load() + uint64(size))
	if n > 0 && ids != nil {
		s.noteIDs(ids[:n])
	}
	to = peer.q
	r.mu.Unlock()
	return to, n, err
}

// deliverMessages hands texts, from ev.From, to s, under the lock of
// their room, and returns how many it delivered: all of them, or while
// s is away, as many as can be kept, with peer_away_full for the next.
// A session that can be resumed numbers its messages and keeps them
// (keepLocked); while it is away its Queue drops them, and only the
// kept copy remains, for its resume. ev.Kind is EvMessage, or EvSealed
// for one sealed frame, which is numbered and kept exactly as a message
// is, in the same sequence. h is s's hub, as the caller has it: read in
// s, it would be a cache line the partner's loop writes as it sends
// (see Session).
func (s *Session) deliverMessages(h *Hub, ev *proto.Event, texts [][]byte) (int, *proto.Error) {
	if !s.resumable {
		s.hand(ev, texts)
		return len(texts), nil
	}
	now := h.clock.now()
	s.hmu.Lock()
	first := s.seq + 1
	n, err := s.keepLocked(h, ev.From, ev.Kind == proto.EvSealed, texts, first, now)
	s.seq += uint64(n)
	s.hmu.Unlock()
	if n > 0 {
		ev.Seq = first
		s.hand(ev, texts[:n])
	}
	return n, err
}

// hand gives s's Queue the texts of deliverMessages: a run of messages
// in one call, a sealed frame (always alone) as the event it is.
func (s *Session) hand(ev *proto.Event, texts [][]byte) {
	if ev.Kind == proto.EvSealed {
		ev.Text = texts[0]
		s.q.Deliver(ev)
		return
	}
	s.q.DeliverMessages(ev, texts)
}

// Seal relays one sealed frame, data (an end-to-end encrypted envelope
// in base64url, docs/E2E.md), to s's partner, as SayAll relays a
// message: in order with s's messages, numbered and kept for a resume
// in the same sequence, refused with peer_away_full as a message would
// be. The hub never reads data. It is refused, besides, with too_long
// past proto.SealedLimit, and with peer_cannot_decrypt when the partner's
// connection does not speak JSON: a terminal cannot open it. It returns
// the partner's Queue, for back-pressure, as SayAll does. id is the one
// the client gave it (0: none), noted as SayAll notes a message's.
func (s *Session) Seal(data []byte, id uint64) (to Queue, err *proto.Error) {
	if len(data) == 0 {
		return nil, proto.ErrEmptyMessage
	}
	if int64(len(data)) > proto.SealedLimit(int(s.hub.maxText.Load())) {
		return nil, proto.ErrTooLong
	}
	r := s.room.Load()
	if r == nil {
		return nil, proto.ErrNotPaired
	}
	rl := getRelay(s.name)
	defer putRelay(rl)
	r.mu.Lock()
	defer r.mu.Unlock()
	peer := r.other(s)
	if peer == nil {
		return nil, proto.ErrNotPaired
	}
	if r.protoOf(peer) != proto.ProtoJSON {
		return nil, proto.ErrPeerCannotDecrypt
	}
	rl.ev.Kind = proto.EvSealed
	rl.one[0] = data
	n, full := peer.deliverMessages(s.hub, &rl.ev, rl.one[:])
	if n == 0 {
		return nil, full
	}
	s.countSealed(len(data))
	if id != 0 {
		s.lastID = id
	}
	return peer.q, nil
}

// noteIDs notes the ids of messages s just relayed, oldest first: the
// newest that is not 0 becomes s's lastID. The lock of s's room is
// held.
func (s *Session) noteIDs(ids []uint64) {
	for i := len(ids) - 1; i >= 0; i-- {
		if ids[i] != 0 {
			s.lastID = ids[i]
			return
		}
	}
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
	h.dir.Release(s.Key(), r.pairID)
	if peer != r.stub {
		h.dir.Release(peer.Key(), r.pairID)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.room.Load() != r {
		// A resume may have put a new connection's session in s's
		// place meanwhile (the old connection left as the new one came
		// back). The leave, asked for first, ends the pairing it has
		// freed in the directory, and the new connection is told.
		if now := r.peer(peer); now != nil && now != s && now.keyIs(s.Key()) && now.room.Load() == r {
			s = now
		}
	}
	if s.room.Load() == r {
		h.unpairLocked(s, proto.ReasonLeft, 0, true)
	}
	// Left even if the partner went first meanwhile: the user asked.
	deliver(s.q, proto.Event{Kind: proto.EvLeft, Peer: peer.name})
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
// stays says s's connection goes on writing what it holds (a /leave):
// none of that is undelivered.
func (h *Hub) unpairLocked(s *Session, reason proto.Reason, undelivered int, stays bool) *Session {
	r := s.room.Load()
	if r == nil {
		return nil
	}
	r.mu.Lock()
	peer := r.other(s)
	r.close()
	if peer != nil {
		// Relayed after the connection closed, up to now, or not yet
		// written by one still open that writes no more of it.
		unsent, dropped := neverWritten(s.q)
		if stays {
			unsent = 0
		}
		undelivered += unsent + dropped
		if lc, ok := s.outbox().(LossCounter); ok {
			// s stands in for a partner on another node.
			undelivered += lc.Lost()
		}
		if s.away != nil {
			// s ends away: what the partner sent it since it went, and
			// what its connection never wrote, will never reach it. The
			// partner was let send them, so it is told, as it is of a
			// connection that closes with messages queued.
			undelivered += s.awayUndeliveredLocked(peer.name)
		}
		// Told before its room is cleared: a SayAll racing this sees the
		// room (and waits for its lock) until peer_left is queued, so
		// the partner never reads not_paired before it.
		h.tellPeerLeftLocked(peer, PeerLeft{Peer: s.name, Reason: reason, Undelivered: undelivered})
		peer.room.Store(nil)
	}
	s.room.Store(nil)
	r.mu.Unlock()
	h.rooms--
	if i := reason.Index(); i >= 0 {
		h.ended[i]++
	}
	if r.stub != nil {
		h.forgetRemoteLocked(r)
	}
	return peer
}

// awayUndeliveredLocked counts the messages from `from` that s, which is
// away, never received and its partner was not told of as it went: those
// delivered since, and those its connection had not written when it
// dropped that are kept still (awayTally). Hub.mu is held, and the lock
// of s's room.
func (s *Session) awayUndeliveredLocked(from string) int {
	a := s.away
	s.hmu.Lock()
	defer s.hmu.Unlock()
	t := newAwayTally(s.seq, a.seq, a.unsent, from)
	if hs := s.hist; hs != nil {
		hs.each(hs.seqIndex(t.first), func(seq uint64, _ time.Duration, sender string, _ proto.EventKind, _ []byte) {
			t.kept(seq, sender)
		})
	}
	return t.n
}

// awayTally counts what the partner peer of a session that ends away is
// told were not delivered to it. The messages delivered since it went
// count, whoever sent them when they were not kept: it could not be
// told who. Of those its connection had never written as it went (the
// newest unsent up to the last it was given then), those not kept were
// told with the away news (DetachFrom), and only the kept ones from peer
// count here, so that none is counted twice.
type awayTally struct {
	awaySeq uint64 // the last message delivered before the session went
	first   uint64 // the first its connection never wrote
	peer    string
	n       int
}

// newAwayTally starts a tally for a session given messages up to seq,
// up to awaySeq before it went away, the newest unsent of them never
// written: those since, as if none were kept. kept then counts each
// kept message numbered first or more.
func newAwayTally(seq, awaySeq uint64, unsent int, peer string) awayTally {
	return awayTally{awaySeq: awaySeq, first: awaySeq - min(uint64(unsent), awaySeq) + 1, peer: peer, n: int(seq - awaySeq)}
}

// kept counts message seq from `from`, which is kept.
func (t *awayTally) kept(seq uint64, from string) {
	switch {
	case seq > t.awaySeq:
		if from != t.peer {
			t.n--
		}
	case from == t.peer:
		t.n++
	}
}

// Who tells s its name, token and partner.
func (s *Session) Who() {
	h := s.hub
	h.mu.Lock()
	if !s.closed {
		// A session retired by a resume elsewhere, or logged out, is
		// not the user's any more: its connection is told so, not this.
		ev := proto.Event{Kind: proto.EvStatus, Name: s.name, Token: s.token, Peer: s.Peer()}
		if r := s.room.Load(); r != nil {
			r.mu.Lock()
			if peer := r.other(s); peer != nil {
				if until, why, away := h.peerAwayWhyLocked(r, peer); away {
					// As peer_away said, which its user may have
					// scrolled past, wondering why nothing comes.
					ev.PeerAway, ev.Window, ev.Reason = true, max(until-h.clock.now(), 0), why
				}
			}
			r.mu.Unlock()
		}
		deliver(s.q, ev)
	}
	h.mu.Unlock()
}

// Retired reports whether s is logged out, or was taken over by a
// resume on another connection: what it answers from then on is not
// the user's. It takes the hub's lock; the engine asks it only of an
// answer that would say the user is not connected or not logged in.
func (s *Session) Retired() bool {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	return s.closed
}

// NewToken replaces s's token with a fresh one, so a token that was
// shared too widely stops working. A current pairing is not affected.
func (s *Session) NewToken() *proto.Error {
	h := s.hub
	old, fresh, err := h.drawToken(s)
	if err != nil {
		return err
	}
	if err := h.dir.Retoken(s.Key(), old, fresh); err != nil {
		h.mu.Lock()
		h.tokens.unfile(fresh, s)
		h.mu.Unlock()
		return err
	}
	if !h.adoptToken(s, old, fresh) {
		// Logged out meanwhile, under the old token: the record now
		// holds the new one, which the logout did not remove.
		h.dir.Unregister(s.Key(), fresh)
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
	h.tokens.file(fresh, s)
	return old, fresh, nil
}

// adoptToken makes fresh s's token, now that the directory holds it, and
// tells s. It reports false if s logged out meanwhile.
func (h *Hub) adoptToken(s *Session, old, fresh proto.Token) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.closed {
		h.tokens.unfile(fresh, s)
		return false
	}
	h.tokens.unfile(old, s)
	s.token = fresh
	deliver(s.q, proto.Event{Kind: proto.EvWelcome, Name: s.name, Token: s.token, NewToken: true})
	return true
}

// Close logs s out: its partner, if any, is told reason, along with how
// many of the partner's messages to s were lost (undelivered), and its
// name and token are freed at once here, so no ghost holds them. Close
// is idempotent, and does nothing to a Session retired by a resume.
// With a cluster's directory, the directory's part runs on a goroutine
// of its own (Close is called on event loops), and the partner is told
// once the directory has freed it.
func (s *Session) Close(reason proto.Reason, undelivered int) {
	h := s.hub
	h.mu.Lock()
	lo, ok := h.logoutLocked(s)
	h.mu.Unlock()
	if ok {
		h.finishLogouts([]logout{lo}, reason, undelivered)
	}
}

// finishLogouts runs the rest of the logouts, as Close does: on this
// goroutine, or with a cluster's directory, on one of their own.
func (h *Hub) finishLogouts(los []logout, reason proto.Reason, undelivered int) {
	if len(los) == 0 {
		return
	}
	if !h.remoteDir {
		for _, lo := range los {
			lo.finish(reason, undelivered)
		}
		return
	}
	h.closing.Add(1)
	go func() {
		defer h.closing.Done()
		for _, lo := range los {
			lo.finish(reason, undelivered)
		}
	}()
}

// logout is the rest of a session's logout once it has left this node's
// sessions, which runs with no hub lock held: the directory frees its
// name and token, and a partner on this node, then the partner is told.
type logout struct {
	s         *Session
	key       string // s.Key(), folded once for the logout
	token     proto.Token
	r         *room    // nil when not paired
	localPeer *Session // the partner, when on this node
	wasAway   bool     // the session was away: no connection carried it
}

// logoutLocked takes s out of this node's sessions and returns the rest
// of its logout. It reports false if s was closed already.
func (h *Hub) logoutLocked(s *Session) (logout, bool) {
	if s.closed {
		return logout{}, false
	}
	s.closed = true
	key := s.Key()
	h.names.unfile(key, s)
	h.tokens.unfile(s.token, s)
	if s.resumable {
		h.unfileKeysLocked(s)
	}
	h.keepCounts(s)
	lo := logout{s: s, key: key, token: s.token, r: s.room.Load(), wasAway: s.away != nil}
	if lo.wasAway {
		h.unlinkAwayLocked(s)
	}
	if lo.r != nil {
		if p := lo.r.peer(s); p != nil && p != lo.r.stub {
			lo.localPeer = p
		}
	}
	return lo, true
}

func (lo logout) finish(reason proto.Reason, undelivered int) {
	h := lo.s.hub
	h.dir.Unregister(lo.key, lo.token)
	if lo.localPeer != nil {
		h.dir.Release(lo.localPeer.Key(), lo.r.pairID)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.unpairLocked(lo.s, reason, undelivered, false)
	// Nothing can be delivered to the session any more: what it kept
	// for a resume goes.
	lo.s.dropHistory()
}

// Stats is a snapshot of the hub's gauges and counters.
type Stats struct {
	Users    int    // sessions logged in now, away ones included
	Pairs    int    // rooms open now
	Pairings uint64 // pairings made since start
	// PairingsEnded counts the pairings that ended since start, by the
	// reason the partner who stayed was told, indexed as proto.Reasons.
	// A pairing across nodes ends on each node with a user in it; one
	// that ended while its user here was parked elsewhere is counted by
	// the node that ended it.
	PairingsEnded [len(proto.Reasons)]uint64
	Messages      uint64 // messages relayed since start
	Bytes         uint64 // message text bytes relayed since start
	// Sealed frames relayed since start, and the bytes of their data
	// (base64url), counted apart from messages.
	Sealed, SealedBytes uint64

	// Session resume.
	Away         int   // sessions away now
	HistoryBytes int64 // what the messages kept for resumes count against resume.buffer, all sessions
	// Resumes since start, by outcome: of a session that was away, of
	// one whose old connection was still open (taken over), and
	// refused for a bad resume key.
	ResumedAway, ResumedZombie, ResumeBadKey uint64
	// ResumeEnded counts resumes of sessions that ended with the
	// cluster node they were on (proto.ErrSessionEndedWithNode).
	ResumeEnded uint64
	// Away sessions that ended since start because their window ran
	// out, or because resume.max_away, or resume.max_away_per_ip for
	// their address, was reached and they had been away the longest.
	AwayTimedOut, AwayEvicted uint64
	// Messages refused since start because their receiver was away
	// and had as much kept as resume.buffer allows.
	AwayRefused uint64
}

// keepCounts moves the counts of s, leaving names (a logout, or an
// export to another node), to the hub's, so that Stats never sees them
// go down.
func (h *Hub) keepCounts(s *Session) {
	h.closedMessages.Add(s.sentMessages.Load())
	h.closedBytes.Add(s.sentBytes.Load())
	frames, bytes := s.sealedCounts()
	h.closedSealed.Add(frames)
	h.closedSealedB.Add(bytes)
}

// Stats returns the current gauges and counters.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	st := Stats{
		Users:         len(h.names.m),
		Pairs:         h.rooms,
		Pairings:      h.pairings.Load(),
		PairingsEnded: h.ended,
		Messages:      h.closedMessages.Load(),
		Bytes:         h.closedBytes.Load(),
		Sealed:        h.closedSealed.Load(),
		SealedBytes:   h.closedSealedB.Load(),
		Away:          h.awayCount,
		ResumedAway:   h.resumedAway.Load(),
		ResumedZombie: h.resumedZombie.Load(),
		ResumeBadKey:  h.resumeBadKey.Load(),
		ResumeEnded:   h.resumeEnded.Load(),
		AwayTimedOut:  h.awayTimedOut.Load(),
		AwayEvicted:   h.awayEvicted.Load(),
		AwayRefused:   h.awayRefused.Load(),
	}
	for _, s := range h.names.m {
		st.Messages += s.sentMessages.Load()
		st.Bytes += s.sentBytes.Load()
		frames, bytes := s.sealedCounts()
		st.Sealed += frames
		st.SealedBytes += bytes
	}
	h.mu.Unlock()
	st.HistoryBytes = h.historyBytes()
	return st
}
