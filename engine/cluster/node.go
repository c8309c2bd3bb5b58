// Package cluster joins several duetd nodes into one token space through
// Redis. A Node is the hub.Directory of one node's hub: it keeps the
// users, tokens and pairings of the whole cluster in Redis, claims
// names and rooms with Lua scripts so they hold cluster-wide, carries
// events between nodes on per-node pub/sub channels, renews this node's
// lease and watches the others', and recovers by itself when Redis
// comes back. Redis sees only hashes of tokens and names, and batches
// it cannot read or forge (trust.go). docs/CLUSTER.md describes the
// design and its bounds.
package cluster

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"duet/engine/hub"
	"duet/proto"
)

// Options configure a Node. Zero durations and sizes take the defaults.
type Options struct {
	RedisURL string // redis:// or rediss:// URL
	NodeID   string // this node's name in the cluster; default DefaultNodeID()
	Prefix   string // prefix of every Redis key and channel; default "duet:"
	Logger   *zap.Logger
	// Secret is the cluster secret, the same on every node, at least 32
	// bytes: what the node keeps in Redis and sends through it is keyed
	// and sealed with what is derived from it (trust.go).
	Secret []byte

	// LeaseTTL is how long this node's lease outlives its last renewal;
	// Heartbeat is how often it is renewed and the other nodes' leases
	// are checked. A dead node's partners are told within
	// LeaseTTL + Heartbeat (default 3 s + 1 s).
	LeaseTTL  time.Duration
	Heartbeat time.Duration
	// OpTimeout bounds one round trip to Redis (default 1 s).
	OpTimeout time.Duration
	// MaxQueue is the bytes of events queued for one other node before
	// pairings with it are cut rather than buffered further (default 8 MiB).
	MaxQueue int
	// Settings is the fingerprint of the settings every node should
	// share (config.SettingsFingerprint), published beside the lease;
	// "" publishes none, as a node from before it did.
	Settings string

	// deafWait is how long a pairing with a node found alive but deaf
	// (a batch to it reached no listener) waits for that node's word of
	// what reached it (L) before it is cut without (default LeaseTTL).
	deafWait time.Duration

	// epochPeriod is how long one of this node's receive epochs lasts
	// (default 1 minute): a replayed batch is refused for its epoch at
	// most two periods after it was sent, and for its sequence number
	// before that.
	epochPeriod time.Duration
}

// RedisConns is how many connections to Redis a node with the URL
// redisURL opens at most: go-redis's pool (pool_size in the URL, else
// ten per GOMAXPROCS), its pool for pipelines, and the node's pub/sub
// subscription. A URL that does not parse counts as the defaults; Join
// refuses it anyway.
func RedisConns(redisURL string) int {
	poolSize, pipelines := 10*runtime.GOMAXPROCS(0), redis.DefaultPipelinePoolSize
	if o, err := redis.ParseURL(redisURL); err == nil {
		if o.PoolSize > 0 {
			poolSize = o.PoolSize
		}
		if o.PipelinePoolSize < 0 {
			pipelines = 0
		} else if o.PipelinePoolSize > 0 {
			pipelines = o.PipelinePoolSize
		}
	}
	return poolSize + pipelines + 1
}

// DefaultNodeID is the host's name plus a random suffix, so two nodes on
// one host, or one node restarted, never share an id.
func DefaultNodeID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "duetd"
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}

// Node is one duetd node's membership in the cluster.
type Node struct {
	opts Options
	id   string
	addr string // this incarnation as the hub knows it (address)
	log  *zap.Logger
	rdb  *redis.Client
	hub  *hub.Hub

	keys *keyring
	seal *sealer // what this incarnation writes
	gate *gate   // what it accepts

	up atomic.Bool // Redis reachable and this node registered in it
	// cutLapsed says the node goes down for a lapsed lease (leaseLapsed),
	// not a lost link: goDown counts its cuts so.
	cutLapsed atomic.Bool
	// leaseUntil is when this node's lease may lapse by its own clock:
	// the last renewal's sending plus LeaseTTL, in nanoseconds since
	// started (monotonic); Redis sets the TTL once the renewal arrives,
	// so the lease lapses there no sooner. Past it, the other nodes may
	// have reaped this node and cut its pairings: what it publishes to
	// them then is dropped there, and their answer saying so can come
	// after this node has closed its subscription (a node stopped, then
	// run again, publishes what its users typed meanwhile before its
	// heartbeat finds the lease gone). So the senders publish nothing
	// past it until a heartbeat says (sender.flush): renewed, they go
	// on; lapsed, the pairings are cut and what they held counted.
	leaseUntil atomic.Int64
	started    time.Time
	link       linkLog       // why the node is not linked, as last logged
	downCh     chan struct{} // wakes run: the link failed, or a pairing is to be cut
	// leaving stops run before Close removes the lease, so no heartbeat
	// writes it again (and no recovery writes the users back) after.
	leaving   chan struct{}
	runDone   chan struct{}
	leaveOnce sync.Once

	mu      sync.Mutex
	senders map[string]*sender
	ps      *redis.PubSub
	// readingOut is, while the node reads out its subscription before
	// it cuts (readOut), the payload of the PING it sent on it and a
	// channel the listener closes once it has read the answer.
	readingOut readingOut
	readOuts   uint64          // read-outs begun, for a payload of each its own
	lost       []hub.RemoteCut // pairings cut by a lost link, to tell their nodes once it is back
	// cutArrived keeps, by pairing, how many of the partner's messages
	// had arrived here when this node cut a cross-node pairing because
	// the partner's node was gone (its lease lapsed), for cutArrivedFor.
	// A node that had only stalled runs again with the pairing, and
	// publishes what its user typed meanwhile; the left frame that
	// answers carries the count, so that the user is told how many of
	// those messages were lost, not none.
	cutArrived map[uint64]cutArrival
	// suspects are the addresses of nodes that had no listener for a
	// batch (their senders count what such batches carried: lost, and
	// told with the pairing's cut).
	suspects map[string]bool
	// deaf holds, by address, the nodes found alive but deaf, and the
	// pairings with them that wait for their word (awaitWord); deafDue
	// wakes run once a wait may be over.
	deaf    map[string]*deafWait
	deafDue chan struct{}
	// cuts are the pairings whose sender was full, to cut, under a
	// lock of their own: the first refusal of a pairing asks for its
	// cut with its outbox's lock held (requestCut), and n.mu is taken
	// before an outbox's, walking the routes.
	cutsMu sync.Mutex
	cuts   map[uint64]*remoteOutbox
	peers  map[string]peer // by node id: its incarnation and newest epoch known here

	// Moving sessions (move.go, route.go).
	routes    map[uint64]*remoteOutbox // by pairing: outboxes whose partner is not live anywhere
	parkList  []*remoteOutbox          // outboxes with messages to queue for a parked partner
	fences    map[uint64]chan struct{} // by pairing: parks waiting for the partner's node
	handOvers map[uint64]chan string   // by request: resumes waiting for a session's node
	// claims are taken by pairing: the claims of both sides of one
	// pairing on this node go one after the other (Node.claim).
	claims [16]sync.Mutex
	// claiming holds, by pairing, a channel closed when a claim of one
	// of its sessions here is done (under mu); claimsInFlight counts
	// them, so that a frame looks only while there are any (awaitClaim).
	claiming       map[uint64]chan struct{}
	claimsInFlight atomic.Int32
	parkWake       chan struct{}
	requests       atomic.Uint64
	parked         atomic.Uint64 // sessions parked by this node
	moved          atomic.Uint64 // parked sessions taken up by this node

	pairings atomic.Uint64                 // cross-node pairings made by a connect here
	cut      [len(CutCauses)]atomic.Uint64 // cross-node pairings cut here, by CutCauses

	sent, received  atomic.Uint64
	rejected        [4]atomic.Uint64 // by RejectReasons
	recordsRejected atomic.Uint64
	foreign         atomic.Int64 // nodes whose lease names another secret, at the last check
	rejectLog       sampler      // refused batches and records
	foreignLog      sampler      // nodes with another secret

	// Shared settings (settings.go).
	settings      atomic.Pointer[string]  // fingerprint of this node's, published beside its lease
	otherSettings atomic.Int64            // live nodes whose fingerprint differs, at the last check
	settingsTold  map[string]toldSettings // by node: what was last warned of; only check touches it

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Join puts h in cluster mode with a new Node as its directory and
// starts the node. It fails only on a bad URL or secret: when Redis
// cannot be reached the node starts down (logins answer unavailable) and
// keeps trying. Call it before the engine accepts connections.
func Join(h *hub.Hub, opts Options) (*Node, error) {
	ropts, err := redis.ParseURL(opts.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	keys, err := newKeyring(opts.Secret)
	if err != nil {
		return nil, err
	}
	if opts.NodeID == "" {
		opts.NodeID = DefaultNodeID()
	}
	if opts.Prefix == "" {
		opts.Prefix = "duet:"
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = 3 * time.Second
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = time.Second
	}
	if opts.OpTimeout <= 0 {
		opts.OpTimeout = time.Second
	}
	if opts.MaxQueue <= 0 {
		opts.MaxQueue = 8 << 20
	}
	if opts.deafWait <= 0 {
		// A node that lost its link and is not linked again within its
		// lease is reaped, which ends its pairings (node_gone); one
		// whose subscription Redis dropped, and that has not read to
		// its end within a lease, is waited for no longer than one that
		// cannot be heard at all.
		opts.deafWait = opts.LeaseTTL
	}
	if opts.epochPeriod <= 0 {
		// Far longer than a heartbeat, by which every sender has learned
		// the new epoch from the lease: batches bound to the previous
		// epoch are still taken, but not to the one before.
		opts.epochPeriod = max(time.Minute, 10*opts.Heartbeat)
	}
	inc := newIncarnation()
	seal, err := newSealer(keys, opts.NodeID, inc)
	if err != nil {
		return nil, err
	}
	// Fail fast rather than retry: a caller waiting on Redis is a user
	// waiting for an answer, and a failure is what tells the node its
	// link is down.
	ropts.MaxRetries = -1
	ropts.DialTimeout = opts.OpTimeout
	ropts.ReadTimeout = opts.OpTimeout
	ropts.WriteTimeout = opts.OpTimeout
	ropts.ContextTimeoutEnabled = true

	n := &Node{
		opts:       opts,
		link:       newLinkLog(opts.RedisURL, ropts.Password),
		id:         opts.NodeID,
		addr:       address(opts.NodeID, inc),
		log:        opts.Logger.With(zap.String("node", opts.NodeID)),
		rdb:        redis.NewClient(ropts),
		hub:        h,
		keys:       keys,
		seal:       seal,
		gate:       newGate(keys, inc),
		downCh:     make(chan struct{}, 1),
		started:    time.Now(),
		leaving:    make(chan struct{}),
		runDone:    make(chan struct{}),
		senders:    make(map[string]*sender),
		suspects:   make(map[string]bool),
		deaf:       make(map[string]*deafWait),
		deafDue:    make(chan struct{}, 1),
		cuts:       make(map[uint64]*remoteOutbox),
		peers:      make(map[string]peer),
		routes:     make(map[uint64]*remoteOutbox),
		fences:     make(map[uint64]chan struct{}),
		handOvers:  make(map[uint64]chan string),
		claiming:   make(map[uint64]chan struct{}),
		parkWake:   make(chan struct{}, 1),
		rejectLog:  sampler{period: 10 * time.Second},
		foreignLog: sampler{period: time.Minute},
	}
	n.settings.Store(&opts.Settings)
	n.ctx, n.cancel = context.WithCancel(context.Background())
	h.SetDirectory(n)
	n.recover()
	n.wg.Add(2)
	go n.run()
	go n.runParker()
	return n, nil
}

// ID is this node's name in the cluster.
func (n *Node) ID() string { return n.id }

// Up reports whether the node is linked to the cluster.
func (n *Node) Up() bool { return n.up.Load() }

func (n *Node) key(parts ...string) string {
	k := n.opts.Prefix
	for i, p := range parts {
		if i > 0 {
			k += ":"
		}
		k += p
	}
	return k
}

// Keys of the directory take hashed names and tokens (trust.go), never
// the names and tokens themselves.
func (n *Node) userKey(hashedName string) string   { return n.key("user", hashedName) }
func (n *Node) tokenKey(hashedToken string) string { return n.key("token", hashedToken) }
func (n *Node) usersOf(node string) string         { return n.key("users", node) }
func (n *Node) leaseOf(node string) string         { return n.key("lease", node) }
func (n *Node) channelOf(node string) string       { return n.key("node", node) }
func (n *Node) nodesKey() string                   { return n.key("nodes") }
func (n *Node) op() (context.Context, func())      { return context.WithTimeout(n.ctx, n.opts.OpTimeout) }
func (n *Node) pairArg(pairID uint64) string       { return strconv.FormatUint(pairID, 10) }
func errCode(code string) *proto.Error             { return codes[code] }

var codes = map[string]*proto.Error{
	"name_taken":     proto.ErrNameTaken,
	"unknown_token":  proto.ErrUnknownToken,
	"self_connect":   proto.ErrSelfConnect,
	"already_paired": proto.ErrAlreadyPaired,
	"room_full":      proto.ErrRoomFull,
	"unavailable":    proto.ErrUnavailable,
}

// NodeID implements hub.Directory. It names this incarnation of the
// node, so that pairings with an earlier run under the same id are never
// taken for pairings with this one.
func (n *Node) NodeID() string { return n.addr }

// Register implements hub.Directory.
func (n *Node) Register(name, key string, token proto.Token, resume *hub.ResumeHash, client proto.Protocol) *proto.Error {
	if !n.up.Load() {
		return proto.ErrUnavailable
	}
	ctx, cancel := n.op()
	defer cancel()
	hk, ht := n.keys.nameHash(key), n.keys.tokenHash(token)
	rk := ""
	if resume != nil {
		rk = n.keys.resumeHash(resume)
	}
	res, err := loginScript.Run(ctx, n.rdb,
		[]string{n.userKey(hk), n.tokenKey(ht), n.usersOf(n.id), n.leaseOf(n.id)},
		n.seal.record(name, key, hk), hk, ht, n.id, n.keys.tokenTag(token, hk), rk, n.opts.Prefix,
		n.keys.clientField(hk, client)).Text()
	if err != nil {
		n.linkLost("login", err)
		return proto.ErrUnavailable
	}
	if res == "ok" {
		return nil
	}
	return n.answer(res)
}

// answer maps a script's error code to the user's error.
func (n *Node) answer(code string) *proto.Error {
	if e := errCode(code); e != nil {
		return e
	}
	n.log.Error("directory script answered an unknown code", zap.String("code", code))
	return proto.ErrUnavailable
}

// Unregister implements hub.Directory. When the link is down the record
// is cleaned up on recovery instead.
func (n *Node) Unregister(key string, token proto.Token) {
	if !n.up.Load() {
		return
	}
	ctx, cancel := n.op()
	defer cancel()
	hk, ht := n.keys.nameHash(key), n.keys.tokenHash(token)
	err := logoutScript.Run(ctx, n.rdb,
		[]string{n.userKey(hk), n.tokenKey(ht), n.usersOf(n.id)},
		hk, ht, n.id, n.opts.Prefix).Err()
	if err != nil {
		n.linkLost("logout", err)
	}
}

// Retoken implements hub.Directory.
func (n *Node) Retoken(key string, old, fresh proto.Token) *proto.Error {
	if !n.up.Load() {
		return proto.ErrUnavailable
	}
	ctx, cancel := n.op()
	defer cancel()
	hk, oldHash, freshHash := n.keys.nameHash(key), n.keys.tokenHash(old), n.keys.tokenHash(fresh)
	res, err := retokenScript.Run(ctx, n.rdb,
		[]string{n.userKey(hk), n.tokenKey(oldHash), n.tokenKey(freshHash)},
		hk, oldHash, freshHash, n.id, n.keys.tokenTag(fresh, hk)).Text()
	if err != nil {
		n.linkLost("newtoken", err)
		return proto.ErrUnavailable
	}
	if res == "ok" {
		return nil
	}
	return n.answer(res)
}

// Claim implements hub.Directory.
func (n *Node) Claim(key string, token proto.Token) (hub.Claim, *proto.Error) {
	if !n.up.Load() {
		return hub.Claim{}, proto.ErrUnavailable
	}
	ctx, cancel := n.op()
	defer cancel()
	hk := n.keys.nameHash(key)
	res, err := claimScript.Run(ctx, n.rdb,
		[]string{n.userKey(hk), n.tokenKey(n.keys.tokenHash(token)), n.leaseOf(n.id)},
		hk, n.id, n.opts.Prefix, time.Now().UnixMicro()).StringSlice()
	if err != nil {
		n.linkLost("connect", err)
		return hub.Claim{}, proto.ErrUnavailable
	}
	if len(res) == 8 && res[0] == "ok" {
		return n.verifyClaim(token, hk, res[1:])
	}
	if len(res) == 0 {
		return hub.Claim{}, n.answer("")
	}
	return hub.Claim{}, n.answer(res[0])
}

// verifyClaim checks what the claim script found for token before the
// hub acts on it: the holder's token tag, which proves the token is
// theirs, and the seal on their name. Redis holds both but can make
// neither; a record that fails was written by someone without the
// cluster secret, and the claim is undone. res is the script's answer
// after "ok": holder's hashed name, sealed name, node, pair id, tag,
// the holder node's lease, the holder's client. A client field that
// fails its tag is not the holder's name or token: the claim stands,
// read as one with no client field (clientOf).
func (n *Node) verifyClaim(token proto.Token, hk string, res []string) (hub.Claim, *proto.Error) {
	peerHash, sealed, node, tag, lease := res[0], res[1], res[2], res[4], res[5]
	id, err := strconv.ParseUint(res[3], 10, 64)
	if err != nil {
		n.log.Error("the claim script answered a bad pairing number", zap.String("pair", printable(res[3])))
		return hub.Claim{}, proto.ErrUnavailable
	}
	refuse := func(why string, answer *proto.Error) (hub.Claim, *proto.Error) {
		n.recordsRejected.Add(1)
		if ok, suppressed := n.rejectLog.allow(); ok {
			n.log.Warn("refused a directory record that was not written by a node of this cluster (Redis was written to by someone else, or by a node with another cluster secret)",
				zap.String("failed", why), zap.String("holder_node", printable(node)), zap.Int("suppressed_since_last", suppressed))
		}
		ctx, cancel := n.op()
		defer cancel()
		if err := unclaimScript.Run(ctx, n.rdb, []string{n.userKey(hk)}, peerHash, n.opts.Prefix, n.pairArg(id)).Err(); err != nil {
			n.linkLost("connect", err)
		}
		return hub.Claim{}, answer
	}
	if !hmac.Equal([]byte(tag), []byte(n.keys.tokenTag(token, peerHash))) {
		return refuse("token tag", proto.ErrUnknownToken)
	}
	name, peerKey, err := n.keys.openRecord(node, sealed, peerHash)
	if err != nil {
		return refuse("sealed name", proto.ErrUnknownToken)
	}
	addr := n.addr
	if node != n.id {
		li, ok := parseLease(lease)
		if !ok || li.keyID != n.keys.keyID {
			return refuse("lease", proto.ErrUnavailable)
		}
		n.learn(node, li)
		addr = address(node, li.inc)
		n.pairings.Add(1)
	}
	return hub.Claim{PeerKey: peerKey, PeerName: name, PeerNode: addr, PairID: id, PeerProto: n.clientOf(peerHash, res[6])}, nil
}

// clientOf reads the client field of the record of hashedName. One that
// fails its tag was not written by a node of this cluster: it is
// counted and logged as a refused record, and read as none, as for a
// record from before the field, so that its user's partner is told no
// protocol (its page does not encrypt, and says so) and seals to it are
// refused.
func (n *Node) clientOf(hashedName, field string) proto.Protocol {
	client, ok := n.keys.clientOf(hashedName, field)
	if !ok {
		n.recordsRejected.Add(1)
		if ok, suppressed := n.rejectLog.allow(); ok {
			n.log.Warn("a directory record's client field was not written by a node of this cluster (Redis was written to by someone else); read as none, so that no seal goes to its user",
				zap.Int("suppressed_since_last", suppressed))
		}
	}
	return client
}

// Release implements hub.Directory. When the link is down the record is
// rewritten on recovery instead.
func (n *Node) Release(key string, pairID uint64) {
	if !n.up.Load() {
		return
	}
	ctx, cancel := n.op()
	defer cancel()
	err := releaseScript.Run(ctx, n.rdb, []string{n.userKey(n.keys.nameHash(key))}, n.pairArg(pairID), n.id).Err()
	if err != nil {
		n.linkLost("release", err)
	}
}

// claimHolds reports whether the record of key, a user of this node,
// still names pairing pair, which another node's user claimed: the
// holder may have logged out since, and someone else logged in under
// its name here with a token never given out, whose record names no
// pairing. A Redis error counts as no: the claim is refused, as for a
// holder gone.
func (n *Node) claimHolds(key string, pair uint64) bool {
	ctx, cancel := n.op()
	defer cancel()
	got, err := n.rdb.HGet(ctx, n.userKey(n.keys.nameHash(key)), "pair").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		n.linkLost("pairing", err)
	}
	return err == nil && got == n.pairArg(pair)
}

// PairTag implements hub.Directory.
func (n *Node) PairTag(pairID uint64) uint64 { return n.keys.pairTag(pairID) }

// Remote implements hub.Directory.
func (n *Node) Remote(node, key, name, from string, pairID uint64) hub.Outbox {
	return newRemoteOutbox(n, node, key, name, from, pairID)
}

// sender returns the sender for node, starting it on first use.
func (n *Node) sender(node string) *sender {
	n.mu.Lock()
	defer n.mu.Unlock()
	s, ok := n.senders[node]
	if !ok {
		s = newSender(n, node)
		ctx, stop := context.WithCancel(n.ctx)
		s.stop = stop
		n.senders[node] = s
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			s.run(ctx)
		}()
	}
	return s
}

// forgetSenders stops the senders for dead nodes, by address.
// Incarnations are new at every start, so without this a long-lived node
// would keep one idle goroutine for every node that ever restarted.
func (n *Node) forgetSenders(dead func(addr string) bool) {
	n.mu.Lock()
	var stop []*sender
	for addr, s := range n.senders {
		if dead(addr) {
			stop = append(stop, s)
			delete(n.senders, addr)
		}
	}
	n.mu.Unlock()
	for _, s := range stop {
		s.stop()
	}
}

// peer is what this node knows of another node: its incarnation and
// newest epoch, and when it last heard them.
type peer struct {
	leaseInfo
	heard time.Time
}

// learn records what this node knows of node's incarnation and epoch,
// from its lease, a claim or its own batches. A new incarnation replaces
// the old; within one, epochs only go forward.
func (n *Node) learn(node string, li leaseInfo) {
	n.mu.Lock()
	defer n.mu.Unlock()
	p, ok := n.peers[node]
	if !ok || p.inc != li.inc || p.epoch < li.epoch {
		p.leaseInfo = li
	}
	p.heard = time.Now()
	n.peers[node] = p
}

// epochOf returns the epoch to bind a batch for node's incarnation inc
// to, and false if this node knows no epoch of that incarnation, or none
// heard recently enough to be sure the receiver still takes it. Leases
// are read every heartbeat, so only a node that was itself cut off from
// Redis for a while finds what it knows stale.
func (n *Node) epochOf(node string, inc incarnation) (uint64, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	p, ok := n.peers[node]
	if !ok || p.inc != inc || time.Since(p.heard) > n.opts.epochPeriod/2 {
		return 0, false
	}
	return p.epoch, true
}

// fetchLease reads node's lease now, for a sender that knows no epoch
// of its destination yet.
func (n *Node) fetchLease(ctx context.Context, node string) {
	v, err := n.rdb.Get(ctx, n.leaseOf(node)).Result()
	if err != nil {
		if !errors.Is(err, redis.Nil) {
			n.linkLost("lease", err)
		}
		return
	}
	if li, ok := parseLease(v); ok && li.keyID == n.keys.keyID {
		n.learn(node, li)
	}
}

// linkLost is called by whoever finds Redis unreachable. The node's own
// goroutine does the rest (see goDown).
func (n *Node) linkLost(what string, err error) {
	if n.ctx.Err() != nil {
		return
	}
	if n.up.CompareAndSwap(true, false) {
		n.link.lost(n.log, what, err)
		select {
		case n.downCh <- struct{}{}:
		default:
		}
	}
}

// errNoLease is the error a heartbeat that found the node's lease gone
// stands for.
var errNoLease = errors.New("this node's lease had lapsed")

// leaseLapsed notes that the node goes down for a heartbeat that found
// its lease gone, not for a lost link: Redis answers, but the node went
// unheard past its lease (it stalled, or Redis lost the lease), and the
// other nodes may have reaped its users. Its cuts count as lease_lapsed
// (goDown), and it says so.
func (n *Node) leaseLapsed() {
	if n.ctx.Err() != nil {
		return
	}
	n.up.Store(false)
	n.cutLapsed.Store(true)
	n.log.Warn("this node's lease had lapsed: it went unheard past it (it stalled, or Redis lost the lease), and the other nodes may have taken it for dead; it cuts its cross-node pairings and writes its users back",
		zap.Duration("lease_ttl", n.opts.LeaseTTL))
}

// suspect records that node had nobody listening for a batch; the
// next check decides.
func (n *Node) suspect(node string) {
	n.mu.Lock()
	n.suspects[node] = true
	n.mu.Unlock()
}

// requestCut asks the node's goroutine to cut a pairing whose sender is
// full; Deliver, which notices, runs under hub locks and cannot.
func (n *Node) requestCut(pair uint64, o *remoteOutbox) {
	n.cutsMu.Lock()
	n.cuts[pair] = o
	n.cutsMu.Unlock()
	select {
	case n.downCh <- struct{}{}:
	default:
	}
}

// run is the node's own goroutine: heartbeat, checks, recovery.
func (n *Node) run() {
	defer n.wg.Done()
	defer close(n.runDone)
	tick := time.NewTicker(n.opts.Heartbeat)
	defer tick.Stop()
	epochStarted := time.Now()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.leaving:
			return
		case <-tick.C:
		case <-n.downCh:
		case <-n.deafDue:
			n.cutDeaf()
			continue
		}
		if time.Since(epochStarted) >= n.opts.epochPeriod {
			// Before the heartbeat, which tells the other nodes.
			n.gate.advance()
			epochStarted = time.Now()
		}
		n.cutOverflowed()
		if !n.up.Load() {
			n.relink(false)
			continue
		}
		lapsed, err := n.heartbeat()
		if err == nil && lapsed {
			n.leaseLapsed()
			err = errNoLease
		}
		if err != nil {
			if !lapsed {
				n.linkLost("heartbeat", err)
			}
			n.relink(lapsed) // at once: a lapsed lease needs no wait
			continue
		}
		n.check()
	}
}

// relink cuts the node's cross-node pairings and links it to Redis again
// (goDown, recover). When its lease may have lapsed (lapsed: a heartbeat
// found it gone; or by the node's own clock, after a call that timed out
// across a stall), it first reads out its subscription: the other nodes
// may have reaped it, telling its users' partners that nothing was
// lost, and Redis holds what they said since for this node.
func (n *Node) relink(lapsed bool) {
	if lapsed || n.leasePast() {
		n.readOut()
	}
	n.goDown()
	n.recover()
}

// cutOverflowed cuts the pairings whose sender was full, telling the
// user here how many messages did not go, and the partner why.
func (n *Node) cutOverflowed() {
	n.cutsMu.Lock()
	cuts := n.cuts
	n.cuts = make(map[uint64]*remoteOutbox)
	n.cutsMu.Unlock()
	for pair, o := range cuts {
		cut := n.hub.CutPair(pair, proto.ReasonLinkLost, int(o.dropped.Load()))
		n.countCuts(cutQueueFull, len(cut))
		for _, c := range cut {
			n.log.Warn("pairing cut: too much queued for its node", zap.String("peer_node", c.Node))
			n.tellLeft(c, proto.ReasonLinkLost)
		}
	}
}

// goDown stops listening and cuts every cross-node pairing with
// link_lost; same-node pairs go on. The cut pairings are remembered so
// their nodes can be told once the link is back.
func (n *Node) goDown() {
	n.mu.Lock()
	ps := n.ps
	n.ps = nil
	senders := make([]*sender, 0, len(n.senders))
	for _, s := range n.senders {
		senders = append(senders, s)
	}
	n.mu.Unlock()
	if ps != nil {
		_ = ps.Close()
	}
	// What the senders hold, or are publishing, reaches no one now:
	// each pairing's cut counts its part (sender.takeLost) for its
	// user, and then it is dropped.
	for _, s := range senders {
		s.reachesNobody(true)
	}
	// A batch being published as the link went may yet get through, on
	// a connection made again as Redis comes back; its answer, due
	// within a round trip's timeout, says whether it reached anyone,
	// before its pairings are cut and their users told how many did not.
	deadline := time.Now().Add(n.opts.OpTimeout + 100*time.Millisecond)
	for _, s := range senders {
		s.landed(deadline)
	}
	n.forgetRoutes()
	cuts := n.hub.CutRemote(func(string) bool { return true }, proto.ReasonLinkLost)
	// Pairings waiting for a deaf node's word are among those cut.
	n.mu.Lock()
	clear(n.deaf)
	n.mu.Unlock()
	for _, s := range senders {
		s.discard()
	}
	cause, why := cutRedisLost, "cross-node pairings cut: link to Redis lost"
	if n.cutLapsed.Swap(false) {
		cause, why = cutLeaseLapsed, "cross-node pairings cut: this node's lease had lapsed"
	}
	n.countCuts(cause, len(cuts))
	if len(cuts) > 0 {
		n.log.Warn(why, zap.Int("pairings", len(cuts)))
		n.mu.Lock()
		n.lost = append(n.lost, cuts...)
		n.mu.Unlock()
	}
}

// heartbeat renews this node's lease. It reports whether the lease was
// still there: if not, the node went unheard for longer than the lease
// (a stall, or a Redis that restarted), the other nodes may have reaped
// its users, and it must write them back.
func (n *Node) heartbeat() (lapsed bool, err error) {
	ctx, cancel := n.op()
	defer cancel()
	var had *redis.IntCmd
	lease := n.keys.lease(n.seal.inc, n.gate.epoch.Load())
	sent := n.clock()
	_, err = n.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		had = p.Exists(ctx, n.leaseOf(n.id))
		p.Set(ctx, n.leaseOf(n.id), lease, n.opts.LeaseTTL)
		n.publishSettings(ctx, p)
		p.SAdd(ctx, n.nodesKey(), n.id)
		return nil
	})
	lapsed = err == nil && had.Val() == 0
	if err == nil && !lapsed {
		// A lapsed lease, though written again, is the caller's to act
		// on first; recover renews it as it links again.
		n.renewed(sent)
	}
	return lapsed, err
}

// clock is the time on the node's monotonic clock (leaseUntil).
func (n *Node) clock() int64 { return int64(time.Since(n.started)) }

// renewed notes that the lease was renewed by a write sent at sent, and
// wakes the senders that held what they had for it (sender.flush).
func (n *Node) renewed(sent int64) {
	n.leaseUntil.Store(sent + int64(n.opts.LeaseTTL))
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, s := range n.senders {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// leasePast reports whether the node's lease may have lapsed by its own
// clock: the last renewal's sending plus the lease's TTL has passed.
func (n *Node) leasePast() bool { return n.clock() >= n.leaseUntil.Load() }

// leaseMayHaveLapsed reports whether the node's lease may have lapsed
// by its own clock (leaseUntil), and if so wakes the node's goroutine
// to find out.
func (n *Node) leaseMayHaveLapsed() bool {
	if !n.leasePast() {
		return false
	}
	select {
	case n.downCh <- struct{}{}:
	default:
	}
	return true
}

// recover links the node to Redis again: it listens on its channel,
// renews its lease, writes back every user of this node (a restarted
// Redis has forgotten them, and other nodes may have reaped them), and
// tells the nodes of pairings cut meanwhile. When it cannot, it says
// why (linkLog.cannotLink), and the node tries again at its next
// heartbeat.
func (n *Node) recover() {
	ctx, cancel := context.WithTimeout(n.ctx, 4*n.opts.OpTimeout)
	defer cancel()
	failed := func(during string, err error) {
		if n.ctx.Err() == nil {
			n.link.cannotLink(n.log, during, err)
		}
	}
	if err := n.rdb.Ping(ctx).Err(); err != nil {
		failed("ping", err)
		return
	}
	ps := n.rdb.Subscribe(ctx, n.channelOf(n.id))
	if _, err := ps.Receive(ctx); err != nil {
		_ = ps.Close()
		failed("subscribe", err)
		return
	}
	sent := n.clock()
	if _, err := n.heartbeat(); err != nil {
		_ = ps.Close()
		failed("heartbeat", err)
		return
	}
	n.renewed(sent)
	if err := n.reregister(ctx); err != nil {
		_ = ps.Close()
		failed("write_back", err)
		return
	}
	n.mu.Lock()
	n.ps = ps
	lost := n.lost
	n.lost = nil
	for _, s := range n.senders {
		// A batch on its way out as the link went was counted as
		// reaching no one when its pairing was cut, and may have
		// added to what the sender counts since: of no more use.
		s.reachesNobody(false)
	}
	n.mu.Unlock()
	n.link.linked()
	n.up.Store(true)
	// Told before this node listens: a message of a cut pairing that
	// comes is answered with an end that says nothing of arrivals, and
	// must not overtake the one that does.
	for _, c := range lost {
		n.tellLeft(c, proto.ReasonLinkLost)
	}
	n.wg.Add(1)
	go n.listen(ps)
	n.log.Info("linked to the cluster", zap.Int("told_of_lost_pairings", len(lost)))
}

// reregister makes the directory's records of this node's users match
// the hub: users gone meanwhile are dropped, the rest written back.
func (n *Node) reregister(ctx context.Context) error {
	regs := n.hub.Registrations()
	here := make(map[string]bool, len(regs))
	for _, r := range regs {
		here[n.keys.nameHash(r.Key)] = true
	}
	listed, err := n.rdb.SMembers(ctx, n.usersOf(n.id)).Result()
	if err != nil {
		return err
	}
	// EVALSHA in a pipeline cannot fall back to EVAL, and a restarted
	// Redis has no scripts cached.
	if err := loadScripts(ctx, n.rdb); err != nil {
		return err
	}
	pipe := n.rdb.Pipeline()
	for _, k := range listed {
		if !here[k] {
			dropScript.Run(ctx, pipe, []string{n.userKey(k), n.usersOf(n.id)}, k, n.id, n.opts.Prefix)
		}
	}
	results := make([]*redis.Cmd, len(regs))
	for i, r := range regs {
		hk, ht := n.keys.nameHash(r.Key), n.keys.tokenHash(r.Token)
		peer, rk, ru := "", "", ""
		if r.PeerKey != "" {
			peer = n.keys.nameHash(r.PeerKey)
		}
		if r.Resume != nil {
			rk = n.keys.resumeHash(r.Resume)
		}
		if r.Used != nil {
			ru = n.keys.resumeHash(r.Used)
		}
		results[i] = registerScript.Run(ctx, pipe,
			[]string{n.userKey(hk), n.tokenKey(ht), n.usersOf(n.id)},
			n.seal.record(r.Name, r.Key, hk), hk, ht, n.id, peer, n.pairArg(r.PairID), n.opts.Prefix,
			n.keys.tokenTag(r.Token, hk), rk, n.keys.clientField(hk, r.Client), ru)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	for i, c := range results {
		if s, _ := c.Text(); s == "name_taken" {
			n.log.Warn("a user's name was given to someone else while this node was cut off; the user keeps the session here but cannot be found by token",
				zap.String("user", regs[i].Name))
		}
	}
	return nil
}

func loadScripts(ctx context.Context, rdb *redis.Client) error {
	for _, s := range []*redis.Script{registerScript, dropScript, appendParkedScript, releaseParkedScript} {
		if err := s.Load(ctx, rdb).Err(); err != nil {
			return err
		}
	}
	return nil
}

// check finds dead nodes (no lease), reaps their users from the
// directory, and tells this node's users paired with them that their
// peer is gone; a node whose lease shows another incarnation restarted,
// and pairings with its earlier run end the same way. A node that had
// no listener for a batch but still holds its lease lost its own link,
// or its subscription, and its pairings are cut with link_lost, once
// it says what reached it or a while after (awaitWord). Leases also
// tell this node the other nodes' current epochs, and which of them
// were given another cluster secret; the fingerprints beside them, whose
// shared settings differ from this node's (settings.go).
func (n *Node) check() {
	ctx, cancel := n.op()
	defer cancel()
	members, err := n.rdb.SMembers(ctx, n.nodesKey()).Result()
	if err != nil {
		n.linkLost("check", err)
		return
	}
	n.mu.Lock()
	suspects := n.suspects
	n.suspects = make(map[string]bool)
	n.mu.Unlock()
	remote := n.hub.RemoteNodes()
	nodes := make(map[string]bool)
	for _, m := range members {
		nodes[m] = true
	}
	for _, addr := range remote {
		if id, _, ok := splitAddress(addr); ok {
			nodes[id] = true
		}
	}
	delete(nodes, n.id)
	if len(nodes) == 0 {
		n.foreign.Store(0)
		n.compareSettings(nil, nil)
		return
	}
	pipe := n.rdb.Pipeline()
	leases := make(map[string]*redis.StringCmd, len(nodes))
	settings := make(map[string]*redis.StringCmd, len(nodes))
	for node := range nodes {
		leases[node] = pipe.Get(ctx, n.leaseOf(node))
		settings[node] = pipe.Get(ctx, n.settingsOf(node))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		n.linkLost("check", err)
		return
	}
	dead := make(map[string]bool)
	live := make(map[string]leaseInfo)
	var foreign []string
	for node, c := range leases {
		v, err := c.Result()
		if err != nil {
			dead[node] = true
			continue
		}
		li, ok := parseLease(v)
		switch {
		case !ok || li.keyID != n.keys.keyID:
			// Alive, but no batch of this node's will be accepted
			// there, nor one of its here.
			foreign = append(foreign, node)
		default:
			live[node] = li
			n.learn(node, li)
		}
	}
	n.noteForeign(foreign)
	n.compareSettings(live, settings)

	// Gone: the node, or the incarnation a pairing was made with. A
	// partner parked between nodes is on none.
	gone := func(addr string) bool {
		if addr == "" {
			return false
		}
		id, inc, ok := splitAddress(addr)
		if !ok || dead[id] {
			return true
		}
		li, isLive := live[id]
		return isLive && li.inc != inc
	}
	var deaf map[string]bool
	for addr := range suspects {
		if !gone(addr) {
			// Alive, but a batch reached nobody: it is lost, even if the
			// node listens again by now, so its pairings end.
			if deaf == nil {
				deaf = make(map[string]bool)
			}
			deaf[addr] = true
		}
	}
	// A partner a dead node had parked keeps its pairing: look before
	// cutting.
	n.rescueParked(ctx, gone)
	// A parked partner that a node claimed, and whose word of the claim
	// (O) this node never had, is followed to that node, dead or alive.
	n.followClaims(ctx, dead, live)
	n.cutAwaited(gone)
	// Each user is told how many of their messages reached nobody: in
	// batches that reached no one, and, from the moment the cut
	// begins, those still on their way out, which nobody will get
	// either (sender.takeLost, asked as the pairing ends).
	if slices.ContainsFunc(remote, gone) {
		n.reachNobody(gone, true)
		n.routesToDead(gone)
		cuts := n.hub.CutRemote(gone, proto.ReasonDisconnected)
		n.countCuts(cutNodeGone, len(cuts))
		for _, c := range cuts {
			n.log.Debug("peer's node is gone", zap.String("peer_node", c.Node))
			if co, ok := c.Outbox.(*remoteOutbox); ok {
				n.keepCutArrived(c.PairID, c.Node, co.arrivalsTo(c.Node))
			}
			if o := n.route(c.Key, c.PairID); o != nil {
				o.forget()
			}
		}
	}
	for node := range dead {
		if users, ok := n.reap(node); ok {
			n.log.Info("reaped a dead node's users", zap.String("dead_node", node), zap.Int("users", users))
		}
	}
	n.forgetSenders(gone)
	n.mu.Lock()
	for node := range dead {
		delete(n.peers, node)
	}
	n.mu.Unlock()
	for addr := range deaf {
		n.awaitWord(addr)
	}
}

// deafWait is the wait for the word of a node found alive but deaf.
type deafWait struct {
	until time.Time
	pairs map[uint64]bool // the pairings with it that wait
}

// awaitWord ends the pairings with the node at addr, alive but deaf:
// a batch to it reached no listener, and is lost, even if the node
// listens again by now. Its users' partners here are told once the
// node says how many of their messages reached it (L), or once
// Options.deafWait is over without that word. The node was not
// listening because it lost its link or Redis dropped its
// subscription, and either way it cuts its own cross-node pairings,
// reads what it had, and, linked again, says what reached it. A batch
// Redis took for it before (PUBLISH answered 1), and dropped with the
// subscription, is counted as delivered here until then: told at once,
// a user would not learn of it. The pairings go on meanwhile, and what
// their users say is counted with the rest; other nodes' pairings do
// not wait.
func (n *Node) awaitWord(addr string) {
	pairs := n.hub.RemotePairs(func(a string) bool { return a == addr })
	if len(pairs) == 0 {
		return
	}
	n.mu.Lock()
	w := n.deaf[addr]
	if w == nil {
		w = &deafWait{until: time.Now().Add(n.opts.deafWait), pairs: make(map[uint64]bool)}
		n.deaf[addr] = w
		time.AfterFunc(n.opts.deafWait, func() {
			select {
			case n.deafDue <- struct{}{}:
			default:
			}
		})
		n.log.Warn("cross-node pairings to cut: their node is not listening; waiting for its word of what reached it",
			zap.String("peer_node", addr), zap.Int("pairings", len(pairs)), zap.Duration("for", n.opts.deafWait))
	}
	for _, p := range pairs {
		w.pairs[p] = true
	}
	n.mu.Unlock()
}

// awaitingWord reports whether pairing pair waits for the word of the
// node at addr.
func (n *Node) awaitingWord(addr string, pair uint64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	w := n.deaf[addr]
	return w != nil && w.pairs[pair]
}

// cutDeaf cuts the pairings whose deaf node's word did not come in
// time, telling their users as many of their messages undelivered as
// this node knows of: those that reached no one, and those still on
// their way to that node. The other node, once linked again, learns of
// them from the left frames it is sent. It runs on the node's
// goroutine, as awaitWord does; a wait is forgotten only once its
// pairings are cut, so that one its node's word ends meanwhile is
// counted where it is told (partnerLeft).
func (n *Node) cutDeaf() {
	now := time.Now()
	n.mu.Lock()
	due := make(map[string]*deafWait)
	for addr, w := range n.deaf {
		if !now.Before(w.until) {
			due[addr] = w
		}
	}
	n.mu.Unlock()
	for addr, w := range due {
		isDeaf := func(a string) bool { return a == addr }
		n.reachNobody(isDeaf, true)
		cuts := n.hub.CutPairs(func(pair uint64) bool { return w.pairs[pair] }, proto.ReasonLinkLost)
		n.reachNobody(isDeaf, false)
		n.mu.Lock()
		delete(n.deaf, addr)
		n.mu.Unlock()
		n.countCuts(cutNodeDeaf, len(cuts))
		for _, c := range cuts {
			n.tellLeft(c, proto.ReasonLinkLost)
		}
		if len(cuts) > 0 {
			n.log.Warn("cross-node pairings cut: their node is not listening, and did not say what reached it",
				zap.String("peer_node", addr), zap.Int("pairings", len(cuts)))
		}
	}
}

// reachNobody sets or clears nobody on the senders for the addresses
// that match accepts (sender.reachesNobody).
func (n *Node) reachNobody(match func(addr string) bool, nobody bool) {
	n.mu.Lock()
	var list []*sender
	for addr, s := range n.senders {
		if match(addr) {
			list = append(list, s)
		}
	}
	n.mu.Unlock()
	for _, s := range list {
		s.reachesNobody(nobody)
	}
}

// noteForeign records the nodes whose lease names another cluster
// secret (or cannot be read), and says so loudly: users on them and
// users here cannot pair, and nothing else would tell an operator why.
func (n *Node) noteForeign(nodes []string) {
	n.foreign.Store(int64(len(nodes)))
	if len(nodes) == 0 {
		return
	}
	if ok, _ := n.foreignLog.allow(); ok {
		slices.Sort(nodes)
		n.log.Error("nodes in this cluster have another cluster secret (or their lease in Redis was changed): "+
			"their users and this node's cannot pair, and they refuse each other's batches; give every node the same cluster.secret",
			zap.Strings("nodes", nodes))
	}
}

// reap removes a node's users from the directory, in batches so no one
// script holds Redis long: a dead node's, or this node's own as it
// leaves. It returns how many it removed, and whether it removed them
// all.
func (n *Node) reap(node string) (users int, all bool) {
	for {
		ctx, cancel := n.op()
		took, err := reapScript.Run(ctx, n.rdb,
			[]string{n.usersOf(node), n.leaseOf(node), n.nodesKey()},
			node, n.opts.Prefix, 500, n.hub.Window().Milliseconds()).Int()
		cancel()
		if err != nil {
			n.linkLost("reap", err)
			return users, false
		}
		if took <= 0 {
			return users, took == 0
		}
		users += took
	}
}

// listen delivers what other nodes send to this node's users.
func (n *Node) listen(ps *redis.PubSub) {
	defer n.wg.Done()
	var buf []byte // decrypted frames, reused from batch to batch
	for {
		msg, err := ps.Receive(n.ctx)
		if err != nil {
			n.mu.Lock()
			current := n.ps == ps
			n.mu.Unlock()
			if current {
				n.linkLost("subscribe", err)
			}
			// Nothing more will be read: a read-out waits no longer.
			n.readTo("")
			return
		}
		switch m := msg.(type) {
		case *redis.Message:
			buf = n.dispatch([]byte(m.Payload), buf)
		case *redis.Pong:
			n.readTo(m.Payload)
		}
	}
}

// readingOut is a read-out of the node's subscription under way.
type readingOut struct {
	payload string
	done    chan struct{}
}

// readOut delivers what this node's subscription holds before the node
// cuts its cross-node pairings for a lapsed lease. The node was unheard
// for longer than its lease (a stall): the other nodes may have reaped
// it and told its users' partners they were disconnected, counting as
// delivered every message Redis took for this node's subscription, which
// it has not read yet. Those are read and delivered first, for the
// pairings this node still has, so that nothing Redis took for it is
// dropped untold. Redis answers a PING on the subscription after all it
// queued there before; the listener says when it reads that answer.
// Bounded by a round trip's timeout: what a subscription Redis dropped
// held is gone, and what a reader too slow leaves is counted, where the
// partner's node still has the pairing, by the left frame this node
// sends once linked again.
func (n *Node) readOut() {
	n.mu.Lock()
	ps := n.ps
	if ps == nil {
		n.mu.Unlock()
		return
	}
	n.readOuts++
	r := readingOut{payload: "read-out " + strconv.FormatUint(n.readOuts, 10), done: make(chan struct{})}
	n.readingOut = r
	n.mu.Unlock()
	ctx, cancel := n.op()
	defer cancel()
	began := time.Now()
	if err := ps.Ping(ctx, r.payload); err == nil {
		select {
		case <-r.done:
			// Said, so that an operator reading of a stall can tell the
			// users' partners' last words were delivered.
			n.log.Info("read out what Redis held for this node before cutting its cross-node pairings", zap.Duration("took", time.Since(began)))
		case <-ctx.Done():
			if n.ctx.Err() == nil {
				n.log.Warn("cut cross-node pairings before this node had read all Redis handed it", zap.Duration("waited", n.opts.OpTimeout))
			}
		}
	}
	n.readTo(r.payload)
}

// readTo ends the read-out waiting for payload, which the listener
// has read the answer of; "" ends any, as the listener stops.
func (n *Node) readTo(payload string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if r := n.readingOut; r.done != nil && (payload == "" || payload == r.payload) {
		close(r.done)
		n.readingOut = readingOut{}
	}
}

// dispatch opens one batch and hands its frames to the hub. A batch the
// gate refuses is dropped whole, counted and logged (sampled). It
// returns buf, grown as needed, for the next batch.
func (n *Node) dispatch(batch, buf []byte) []byte {
	h, src, frames, reason := n.gate.open(buf, batch)
	if reason != "" {
		n.rejected[rejectIndex(reason)].Add(1)
		if ok, suppressed := n.rejectLog.allow(); ok {
			n.log.Warn("refused a batch published on this node's channel",
				zap.String("reason", reason), zap.String("claimed_sender", printable(h.src)),
				zap.Int("suppressed_since_last", suppressed))
		}
		return buf
	}
	n.received.Add(1)
	n.learn(h.src, leaseInfo{keyID: n.keys.keyID, inc: h.srcInc, epoch: h.srcEpoch})
	r := batchReader{b: frames}
	var told map[uint64]bool // pairings already told they are unknown here
	for {
		f, ok, err := r.next()
		if err != nil {
			// Sealed by a node of this cluster, yet not frames: a bug,
			// not an attack.
			n.log.Error("malformed frames in an authenticated batch", zap.String("from_node", h.src), zap.Error(err))
			return frames[:0]
		}
		if !ok {
			return frames[:0]
		}
		if f.pair != 0 && n.claimsInFlight.Load() > 0 {
			n.awaitClaim(f.pair)
		}
		switch f.kind {
		case framePaired:
			if !n.claimHolds(f.to, f.pair) || !n.hub.RemotePaired(f.to, f.pair, f.a, string(f.b), src, protocolOf(f.n)) {
				// The holder logged out as it was claimed: the
				// claimant's node frees its user and tells it, and the
				// claim's mark on the holder's record goes.
				n.Release(f.to, f.pair)
				n.sender(src).add(true, frameLeft, f.pair, f.a, string(proto.ReasonDisconnected), nil, 0)
			}
		case frameMessage, frameSealed:
			if !n.hub.RemoteMessage(f.to, f.pair, f.b, f.kind == frameSealed) && !told[f.pair] {
				// No such pairing here: it ended on this side and the
				// other side was not told (a lost link), so tell it now,
				// once. A pairing that ended normally was told already,
				// earlier on this same channel, and ignores this.
				if told == nil {
					told = make(map[uint64]bool)
				}
				told[f.pair] = true
				n.sender(src).add(true, frameLeft, f.pair, f.a, string(proto.ReasonLinkLost), n.cutArrivedFor(f.pair, src), 0)
			}
		case frameAway, frameBack, frameError:
			n.remoteEvent(src, f)
		case frameLeft:
			arrived, ok := parseCount(f.b)
			n.partnerLeft(f.to, f.pair, proto.Reason(f.a), int(f.n), src, arrived, ok)
		case frameFreeze:
			gen := uint32(min(f.n, 1<<32-1))
			if o := n.route(f.to, f.pair); o != nil {
				o.control(move{kind: frameFreeze, gen: gen, to: n.sender(src)})
			} else {
				// No such pairing here (it ended, and its end is on its
				// way): nothing will be sent for it.
				n.sender(src).add(true, frameFrozen, f.pair, f.a, "", nil, f.n)
			}
		case frameFrozen:
			n.fenced(f.pair)
		case frameParked:
			if o := n.route(f.to, f.pair); o != nil {
				gen, _ := strconv.ParseUint(f.a, 10, 32)
				o.control(move{kind: frameParked, gen: uint32(gen), window: time.Duration(min(f.n, uint64(maxWindow/time.Millisecond))) * time.Millisecond})
			}
		case frameMoved:
			if o := n.route(f.to, f.pair); o != nil {
				o.control(move{kind: frameMoved, gen: uint32(min(f.n, 1<<32-1)), to: n.sender(src)})
			} else if !told[f.pair] {
				// The pairing ended here: the node that took the
				// session up is told, as for a message.
				if told == nil {
					told = make(map[uint64]bool)
				}
				told[f.pair] = true
				n.sender(src).add(true, frameLeft, f.pair, f.a, string(proto.ReasonDisconnected), nil, 0)
			}
		case frameHandOver:
			// f.b is in buf, which the next batch reuses.
			go n.handOver(src, f.n, append([]byte(nil), f.b...))
		case frameEvict:
			go n.evict(src, f.n, f.to, len(f.b) == 1 && f.b[0] == 1)
		case frameHandedOver:
			n.handedOver(f.n, f.a)
		default:
			n.log.Error("unknown frame kind", zap.String("from_node", h.src), zap.Int("kind", int(f.kind)))
		}
	}
}

// partnerLeft ends pairing pair of the session key of this node, whose
// partner on another node (or parked) left it for reason, with count of
// the session's messages undelivered: what a left frame says, or a
// login here that ended the partner where it was parked. A left frame
// from the partner's node src that says how many of the session's
// messages arrived there (withArrived) adds those sent there that did
// not: they were on their way as the pairing ended, and src dropped
// them.
func (n *Node) partnerLeft(key string, pair uint64, reason proto.Reason, count int, src string, arrived uint64, withArrived bool) {
	if o := n.route(key, pair); o != nil {
		if withArrived {
			o.arrivedThere(src, arrived)
		}
		o.forget()
	}
	// Asked first: the wait may be over, and the pairing cut, as this
	// ends it; each ending counts where it is told.
	deaf := n.awaitingWord(src, pair)
	if !n.hub.RemoteLeft(key, pair, reason, count) {
		// A pairing this node never saw (its paired frame was lost with
		// a link): only the claim marked the record.
		n.Release(key, pair)
		return
	}
	if deaf {
		n.countCuts(cutNodeDeaf, 1)
	}
}

// routesToDead notes, on the outbox of each pairing with a partner on a
// node gone, that the node died: what it kept for a partner away is
// lost with it, and counted so as the pairing is cut.
func (n *Node) routesToDead(gone func(addr string) bool) {
	for _, out := range n.hub.RemoteOutboxes(gone) {
		if o, ok := out.(*remoteOutbox); ok {
			o.partnerNodeDead()
		}
	}
}

// cutArrival is what cutArrived keeps of one pairing.
type cutArrival struct {
	node    string // the partner's node
	arrived []byte // the arrivals a left frame carries
	at      time.Time
}

// A pairing's arrivals are kept for cutArrivedKeep after its cut, at
// most maxCutArrived of them: a node stalled longer finds its lease
// lapsed and cuts its pairings itself as it runs again, counting from
// what it knows.
const (
	cutArrivedKeep = 10 * time.Minute
	maxCutArrived  = 1 << 16
)

// keepCutArrived keeps arrived, the arrivals of pairing pair with a
// partner on node, which this node cut as it found that node gone.
func (n *Node) keepCutArrived(pair uint64, node string, arrived []byte) {
	if arrived == nil {
		return
	}
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.cutArrived) >= maxCutArrived {
		for p, c := range n.cutArrived {
			if now.Sub(c.at) > cutArrivedKeep {
				delete(n.cutArrived, p)
			}
		}
		if len(n.cutArrived) >= maxCutArrived {
			return
		}
	}
	if n.cutArrived == nil {
		n.cutArrived = make(map[uint64]cutArrival)
	}
	n.cutArrived[pair] = cutArrival{node: node, arrived: arrived, at: now}
}

// cutArrivedFor returns the arrivals kept for pairing pair if node is
// its partner's, or nil.
func (n *Node) cutArrivedFor(pair uint64, node string) []byte {
	n.mu.Lock()
	defer n.mu.Unlock()
	c, ok := n.cutArrived[pair]
	if !ok || c.node != node || time.Since(c.at) > cutArrivedKeep {
		return nil
	}
	return c.arrived
}

// remoteEvent hands the hub what a partner's node says about the
// partner besides messages: it went away, came back, or refused a
// message. An event for a pairing that is not here any more is dropped:
// the pairing ended, and its end was told.
func (n *Node) remoteEvent(src string, f frame) {
	ev := proto.Event{Kind: proto.EvPeerBack, PeerProto: protocolOf(f.n)}
	switch f.kind {
	case frameAway:
		ev.Kind = proto.EvPeerAway
		ev.Window = time.Duration(min(f.n, uint64(maxWindow/time.Millisecond))) * time.Millisecond
		if proto.Reason(f.a) == proto.ReasonShutdown {
			// Its node drains for a restart. (A node before this
			// sends none, and is taken to have lost the connection.)
			ev.Reason = proto.ReasonShutdown
		}
		if undelivered, ok := parseCount(f.b); ok {
			ev.Count = int(min(undelivered, math.MaxInt32))
		}
	case frameError:
		// Only the errors a partner's session sends back; anything
		// else is a bug on the sending node, sealed as it is.
		if f.a != proto.ErrPeerAwayFull.Code && f.a != proto.ErrPeerCannotDecrypt.Code {
			n.log.Error("an error from another node that no session sends", zap.String("from_node", src), zap.String("code", printable(f.a)))
			return
		}
		ev.Kind, ev.Err = proto.EvError, &proto.Error{Code: f.a, Text: string(f.b)}
	}
	n.hub.RemoteEvent(f.to, f.pair, &ev)
}

// protocolOf reads the protocol a paired or back frame says its user's
// client speaks (its n); ProtoUnknown from a node from before it said,
// which sends 0.
func protocolOf(n uint64) proto.Protocol {
	switch p := proto.Protocol(min(n, 255)); p {
	case proto.ProtoLine, proto.ProtoJSON:
		return p
	}
	return proto.ProtoUnknown
}

// maxWindow bounds the time a partner's node says its session may take
// to come back: resume.window's own bound, which config enforces.
const maxWindow = 24 * time.Hour

// Stats are the node's counts since it started, for metrics.
type Stats struct {
	BatchesSent     uint64            // published to other nodes
	BatchesReceived uint64            // accepted from other nodes
	BatchesRejected map[string]uint64 // refused, by reason (RejectReasons)
	RecordsRejected uint64            // directory records a claim (or a resume) found not written by this cluster
	ForeignNodes    int               // nodes whose lease names another cluster secret, at the last check
	SessionsParked  uint64            // sessions this node parked for another to take up
	SessionsMoved   uint64            // parked sessions this node took up
	// Pairings counts the pairings made by a connect on this node with
	// a user on another node: each cross-node pairing once, on the node
	// of the user who connected.
	Pairings uint64
	// PairingsCut counts, by cause (CutCauses), the pairings of this
	// node's users with users elsewhere that this node cut, each user
	// told link_lost or disconnected. A pairing that both of its nodes
	// cut (both lost Redis) counts on each.
	PairingsCut map[string]uint64
	// NodesWithOtherSettings counts the live nodes whose shared settings
	// (Options.Settings) differ from this node's, at the last check.
	NodesWithOtherSettings int
}

// Why a node cuts a pairing across nodes (Stats.PairingsCut), listed so
// that metrics show each from the start:
//   - redis_lost: this node lost its link to Redis, through which every
//     cross-node message goes (or could not park a session paired with
//     a parked partner, whose queue is in Redis);
//   - node_gone: the partner's node died, or restarted, without a drain;
//   - node_deaf: the partner's node is alive but a batch to it reached
//     no listener, so messages were lost;
//   - queue_full: more was queued for the partner's node than it took
//     (Options.MaxQueue);
//   - move_timeout: the partner's node did not answer while this node
//     parked a session of the pairing;
//   - lease_lapsed: this node went unheard past its lease (it stalled,
//     or Redis lost the lease), and the other nodes may have reaped it.
var CutCauses = [...]string{"redis_lost", "node_gone", "node_deaf", "queue_full", "move_timeout", "lease_lapsed"}

const (
	cutRedisLost = iota
	cutNodeGone
	cutNodeDeaf
	cutQueueFull
	cutMoveTimeout
	cutLeaseLapsed
)

// countCuts counts k pairings cut for cause.
func (n *Node) countCuts(cause, k int) { n.cut[cause].Add(uint64(k)) }

// Stats returns the node's counts.
func (n *Node) Stats() Stats {
	st := Stats{
		BatchesSent:     n.sent.Load(),
		BatchesReceived: n.received.Load(),
		BatchesRejected: make(map[string]uint64, len(RejectReasons)),
		RecordsRejected: n.recordsRejected.Load(),
		ForeignNodes:    int(n.foreign.Load()),
		SessionsParked:  n.parked.Load(),
		SessionsMoved:   n.moved.Load(),
		Pairings:        n.pairings.Load(),
		PairingsCut:     make(map[string]uint64, len(CutCauses)),

		NodesWithOtherSettings: int(n.otherSettings.Load()),
	}
	for i, r := range RejectReasons {
		st.BatchesRejected[r] = n.rejected[i].Load()
	}
	for i, c := range CutCauses {
		st.PairingsCut[c] = n.cut[i].Load()
	}
	return st
}

// Close leaves the cluster gracefully: what is queued for other nodes is
// sent, this node's lease and users are removed, and the link closed.
// Call it after the engine has shut down and logged everyone out.
func (n *Node) Close(ctx context.Context) error {
	if n.ctx.Err() != nil {
		return nil // halted already
	}
	n.hub.WaitClosing()
	n.mu.Lock()
	senders := make([]*sender, 0, len(n.senders))
	for _, s := range n.senders {
		senders = append(senders, s)
	}
	n.mu.Unlock()
	n.waitParker(ctx)
	for _, s := range senders {
		s.drain(ctx)
	}
	n.leaveOnce.Do(func() { close(n.leaving) })
	<-n.runDone
	var err error
	if n.up.Load() {
		cctx, cancel := context.WithTimeout(ctx, n.opts.OpTimeout)
		_, err = n.rdb.TxPipelined(cctx, func(p redis.Pipeliner) error {
			p.Del(cctx, n.leaseOf(n.id), n.settingsOf(n.id))
			return nil
		})
		cancel()
		if err == nil {
			if users, ok := n.reap(n.id); ok {
				n.log.Info("left the cluster: removed this node's users from the directory", zap.Int("users", users))
			}
		}
	}
	n.halt()
	return err
}

// halt stops the node at once, leaving Redis as it is: what a crash
// would do. Its lease expires and the other nodes clean up after it.
func (n *Node) halt() {
	n.up.Store(false)
	n.cancel()
	n.mu.Lock()
	ps := n.ps
	n.ps = nil
	n.mu.Unlock()
	if ps != nil {
		_ = ps.Close()
	}
	n.wg.Wait()
	_ = n.rdb.Close()
}
