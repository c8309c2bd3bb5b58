// Package cluster joins several duetd nodes into one token space through
// Redis. A Node is the hub.Directory of one node's hub: it keeps the
// users, tokens and pairings of the whole cluster in Redis, claims
// names and rooms with Lua scripts so they hold cluster-wide, carries
// events between nodes on per-node pub/sub channels, renews this node's
// lease and watches the others', and recovers by itself when Redis
// comes back. docs/CLUSTER.md describes the design and its bounds.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
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
	log  *zap.Logger
	rdb  *redis.Client
	hub  *hub.Hub

	up     atomic.Bool   // Redis reachable and this node registered in it
	downCh chan struct{} // wakes run: the link failed, or a pairing is to be cut

	mu       sync.Mutex
	senders  map[string]*sender
	ps       *redis.PubSub
	lost     []hub.RemoteCut          // pairings cut by a lost link, to tell their nodes once it is back
	suspects map[string]bool          // nodes that had no listener for a batch
	cuts     map[uint64]*remoteOutbox // pairings whose sender was full, to cut

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Join puts h in cluster mode with a new Node as its directory and
// starts the node. It fails only on a bad URL: when Redis cannot be
// reached the node starts down (logins answer unavailable) and keeps
// trying. Call it before the engine accepts connections.
func Join(h *hub.Hub, opts Options) (*Node, error) {
	ropts, err := redis.ParseURL(opts.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
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
	// Fail fast rather than retry: a caller waiting on Redis is a user
	// waiting for an answer, and a failure is what tells the node its
	// link is down.
	ropts.MaxRetries = -1
	ropts.DialTimeout = opts.OpTimeout
	ropts.ReadTimeout = opts.OpTimeout
	ropts.WriteTimeout = opts.OpTimeout
	ropts.ContextTimeoutEnabled = true

	n := &Node{
		opts:     opts,
		id:       opts.NodeID,
		log:      opts.Logger.With(zap.String("node", opts.NodeID)),
		rdb:      redis.NewClient(ropts),
		hub:      h,
		downCh:   make(chan struct{}, 1),
		senders:  make(map[string]*sender),
		suspects: make(map[string]bool),
		cuts:     make(map[uint64]*remoteOutbox),
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	h.SetDirectory(n)
	if !n.recover() {
		n.log.Warn("cannot reach Redis; this node answers unavailable until it can")
	}
	n.wg.Add(1)
	go n.run()
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

func (n *Node) userKey(key string) string     { return n.key("user", key) }
func (n *Node) tokenKey(t proto.Token) string { return n.key("token", t.String()) }
func (n *Node) usersOf(node string) string    { return n.key("users", node) }
func (n *Node) leaseOf(node string) string    { return n.key("lease", node) }
func (n *Node) channelOf(node string) string  { return n.key("node", node) }
func (n *Node) nodesKey() string              { return n.key("nodes") }
func (n *Node) op() (context.Context, func()) { return context.WithTimeout(n.ctx, n.opts.OpTimeout) }
func (n *Node) pairArg(pairID uint64) string  { return strconv.FormatUint(pairID, 10) }
func errCode(code string) *proto.Error        { return codes[code] }

var codes = map[string]*proto.Error{
	"name_taken":     proto.ErrNameTaken,
	"unknown_token":  proto.ErrUnknownToken,
	"self_connect":   proto.ErrSelfConnect,
	"already_paired": proto.ErrAlreadyPaired,
	"room_full":      proto.ErrRoomFull,
	"unavailable":    proto.ErrUnavailable,
}

// NodeID implements hub.Directory.
func (n *Node) NodeID() string { return n.id }

// Register implements hub.Directory.
func (n *Node) Register(name, key string, token proto.Token) *proto.Error {
	if !n.up.Load() {
		return proto.ErrUnavailable
	}
	ctx, cancel := n.op()
	defer cancel()
	res, err := loginScript.Run(ctx, n.rdb,
		[]string{n.userKey(key), n.tokenKey(token), n.usersOf(n.id), n.leaseOf(n.id)},
		name, key, token.String(), n.id).Text()
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
	err := logoutScript.Run(ctx, n.rdb,
		[]string{n.userKey(key), n.tokenKey(token), n.usersOf(n.id)},
		key, token.String(), n.id).Err()
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
	res, err := retokenScript.Run(ctx, n.rdb,
		[]string{n.userKey(key), n.tokenKey(old), n.tokenKey(fresh)},
		key, old.String(), fresh.String(), n.id).Text()
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
	res, err := claimScript.Run(ctx, n.rdb,
		[]string{n.userKey(key), n.tokenKey(token), n.leaseOf(n.id)},
		key, n.id, n.opts.Prefix, time.Now().UnixMicro()).StringSlice()
	if err != nil {
		n.linkLost("connect", err)
		return hub.Claim{}, proto.ErrUnavailable
	}
	if len(res) == 5 && res[0] == "ok" {
		id, perr := strconv.ParseUint(res[4], 10, 64)
		if perr == nil {
			return hub.Claim{PeerKey: res[1], PeerName: res[2], PeerNode: res[3], PairID: id}, nil
		}
	}
	if len(res) == 0 {
		return hub.Claim{}, n.answer("")
	}
	return hub.Claim{}, n.answer(res[0])
}

// Release implements hub.Directory. When the link is down the record is
// rewritten on recovery instead.
func (n *Node) Release(key string, pairID uint64) {
	if !n.up.Load() {
		return
	}
	ctx, cancel := n.op()
	defer cancel()
	err := releaseScript.Run(ctx, n.rdb, []string{n.userKey(key)}, n.pairArg(pairID), n.id).Err()
	if err != nil {
		n.linkLost("release", err)
	}
}

// Remote implements hub.Directory.
func (n *Node) Remote(node, key, from string, pairID uint64) hub.Outbox {
	return &remoteOutbox{s: n.sender(node), to: key, from: from, pair: pairID}
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

// forgetSender stops the sender for a dead node. Node ids are new at
// every start, so without this a long-lived node would keep one idle
// goroutine for every node that ever restarted.
func (n *Node) forgetSender(node string) {
	n.mu.Lock()
	s, ok := n.senders[node]
	delete(n.senders, node)
	n.mu.Unlock()
	if ok {
		s.stop()
	}
}

// linkLost is called by whoever finds Redis unreachable. The node's own
// goroutine does the rest (see goDown).
func (n *Node) linkLost(what string, err error) {
	if n.ctx.Err() != nil {
		return
	}
	if n.up.CompareAndSwap(true, false) {
		n.log.Warn("lost the link to Redis", zap.String("during", what), zap.Error(err))
		select {
		case n.downCh <- struct{}{}:
		default:
		}
	}
}

// suspect records that node had nobody listening; the next check decides.
func (n *Node) suspect(node string) {
	n.mu.Lock()
	n.suspects[node] = true
	n.mu.Unlock()
}

// requestCut asks the node's goroutine to cut a pairing whose sender is
// full; Deliver, which notices, runs under hub locks and cannot.
func (n *Node) requestCut(pair uint64, o *remoteOutbox) {
	n.mu.Lock()
	n.cuts[pair] = o
	n.mu.Unlock()
	select {
	case n.downCh <- struct{}{}:
	default:
	}
}

// run is the node's own goroutine: heartbeat, checks, recovery.
func (n *Node) run() {
	defer n.wg.Done()
	tick := time.NewTicker(n.opts.Heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		case <-n.downCh:
		}
		n.cutOverflowed()
		if !n.up.Load() {
			n.goDown()
			n.recover()
			continue
		}
		lapsed, err := n.heartbeat()
		if err == nil && lapsed {
			err = errors.New("this node's lease had lapsed")
		}
		if err != nil {
			n.linkLost("heartbeat", err)
			n.goDown()
			n.recover() // at once: a lapsed lease needs no wait
			continue
		}
		n.check()
	}
}

// cutOverflowed cuts the pairings whose sender was full, telling the
// user here how many messages did not go, and the partner why.
func (n *Node) cutOverflowed() {
	n.mu.Lock()
	cuts := n.cuts
	n.cuts = make(map[uint64]*remoteOutbox)
	n.mu.Unlock()
	for pair, o := range cuts {
		for _, c := range n.hub.CutPair(pair, proto.ReasonLinkLost, int(o.dropped.Load())) {
			n.log.Warn("pairing cut: too much queued for its node", zap.String("peer_node", c.Node))
			n.sender(c.Node).add(true, frameLeft, c.PairID, c.PeerKey, string(proto.ReasonLinkLost), nil, 0)
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
	for _, s := range senders {
		s.discard()
	}
	cuts := n.hub.CutRemote(func(string) bool { return true }, proto.ReasonLinkLost)
	if len(cuts) > 0 {
		n.log.Warn("cross-node pairings cut: link to Redis lost", zap.Int("pairings", len(cuts)))
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
	_, err = n.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		had = p.Exists(ctx, n.leaseOf(n.id))
		p.Set(ctx, n.leaseOf(n.id), "1", n.opts.LeaseTTL)
		p.SAdd(ctx, n.nodesKey(), n.id)
		return nil
	})
	return err == nil && had.Val() == 0, err
}

// recover links the node to Redis again: it listens on its channel,
// renews its lease, writes back every user of this node (a restarted
// Redis has forgotten them, and other nodes may have reaped them), and
// tells the nodes of pairings cut meanwhile. It reports success.
func (n *Node) recover() bool {
	ctx, cancel := context.WithTimeout(n.ctx, 4*n.opts.OpTimeout)
	defer cancel()
	if err := n.rdb.Ping(ctx).Err(); err != nil {
		return false
	}
	ps := n.rdb.Subscribe(ctx, n.channelOf(n.id))
	if _, err := ps.Receive(ctx); err != nil {
		_ = ps.Close()
		return false
	}
	if _, err := n.heartbeat(); err != nil {
		_ = ps.Close()
		return false
	}
	if err := n.reregister(ctx); err != nil {
		n.log.Warn("cannot write this node's users back to Redis", zap.Error(err))
		_ = ps.Close()
		return false
	}
	n.mu.Lock()
	n.ps = ps
	lost := n.lost
	n.lost = nil
	n.mu.Unlock()
	n.up.Store(true)
	n.wg.Add(1)
	go n.listen(ps)
	for _, c := range lost {
		n.sender(c.Node).add(true, frameLeft, c.PairID, c.PeerKey, string(proto.ReasonLinkLost), nil, 0)
	}
	n.log.Info("linked to the cluster", zap.Int("told_of_lost_pairings", len(lost)))
	return true
}

// reregister makes the directory's records of this node's users match
// the hub: users gone meanwhile are dropped, the rest written back.
func (n *Node) reregister(ctx context.Context) error {
	regs := n.hub.Registrations()
	here := make(map[string]bool, len(regs))
	for _, r := range regs {
		here[r.Key] = true
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
		results[i] = registerScript.Run(ctx, pipe,
			[]string{n.userKey(r.Key), n.tokenKey(r.Token), n.usersOf(n.id)},
			r.Name, r.Key, r.Token.String(), n.id, r.PeerKey, n.pairArg(r.PairID), n.opts.Prefix)
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
	for _, s := range []*redis.Script{registerScript, dropScript} {
		if err := s.Load(ctx, rdb).Err(); err != nil {
			return err
		}
	}
	return nil
}

// check finds dead nodes (no lease), reaps their users from the
// directory, and tells this node's users paired with them that their
// peer is gone; a node that had no listener for a batch but still holds
// its lease lost its own link, and its pairings are cut with link_lost.
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
	nodes := make(map[string]bool)
	for _, m := range members {
		nodes[m] = true
	}
	for _, r := range n.hub.RemoteNodes() {
		nodes[r] = true
	}
	delete(nodes, n.id)
	if len(nodes) == 0 {
		return
	}
	pipe := n.rdb.Pipeline()
	leases := make(map[string]*redis.IntCmd, len(nodes))
	for node := range nodes {
		leases[node] = pipe.Exists(ctx, n.leaseOf(node))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		n.linkLost("check", err)
		return
	}
	dead := make(map[string]bool)
	deaf := make(map[string]bool)
	for node, c := range leases {
		if c.Val() == 0 {
			dead[node] = true
		} else if suspects[node] {
			// Alive, but a batch reached nobody: it is lost, even if the
			// node listens again by now, so its pairings end.
			deaf[node] = true
		}
	}
	if len(dead) > 0 {
		for _, c := range n.hub.CutRemote(func(node string) bool { return dead[node] }, proto.ReasonDisconnected) {
			n.log.Debug("peer's node is gone", zap.String("peer_node", c.Node))
		}
		for node := range dead {
			n.reap(node)
			n.forgetSender(node)
		}
	}
	if len(deaf) > 0 {
		cuts := n.hub.CutRemote(func(node string) bool { return deaf[node] }, proto.ReasonLinkLost)
		n.log.Warn("cross-node pairings cut: their node is not listening", zap.Int("pairings", len(cuts)))
		// The other node, once linked again, learns of them from these.
		for _, c := range cuts {
			n.sender(c.Node).add(true, frameLeft, c.PairID, c.PeerKey, string(proto.ReasonLinkLost), nil, 0)
		}
	}
}

// reap removes a dead node's users from the directory, in batches so no
// one script holds Redis long.
func (n *Node) reap(node string) {
	for {
		ctx, cancel := n.op()
		left, err := reapScript.Run(ctx, n.rdb,
			[]string{n.usersOf(node), n.leaseOf(node), n.nodesKey()},
			node, n.opts.Prefix, 500).Int()
		cancel()
		if err != nil {
			n.linkLost("reap", err)
			return
		}
		if left <= 0 {
			if left == 0 {
				n.log.Info("reaped a dead node's users", zap.String("dead_node", node))
			}
			return
		}
	}
}

// listen delivers what other nodes send to this node's users.
func (n *Node) listen(ps *redis.PubSub) {
	defer n.wg.Done()
	for {
		msg, err := ps.ReceiveMessage(n.ctx)
		if err != nil {
			n.mu.Lock()
			current := n.ps == ps
			n.mu.Unlock()
			if current {
				n.linkLost("subscribe", err)
			}
			return
		}
		n.dispatch([]byte(msg.Payload))
	}
}

// dispatch hands one batch's frames to the hub.
func (n *Node) dispatch(batch []byte) {
	r := batchReader{b: batch}
	src, err := r.header()
	if err != nil {
		n.log.Error("malformed batch", zap.Error(err))
		return
	}
	var told map[uint64]bool // pairings already told they are unknown here
	for {
		f, ok, err := r.next()
		if err != nil {
			n.log.Error("malformed batch", zap.String("from_node", src), zap.Error(err))
			return
		}
		if !ok {
			return
		}
		switch f.kind {
		case framePaired:
			if !n.hub.RemotePaired(f.to, f.pair, f.a, string(f.b), src) {
				// The holder logged out as it was claimed: the
				// claimant's node frees its user and tells it, and the
				// claim's mark on the holder's record goes.
				n.Release(f.to, f.pair)
				n.sender(src).add(true, frameLeft, f.pair, f.a, string(proto.ReasonDisconnected), nil, 0)
			}
		case frameMessage:
			if !n.hub.RemoteMessage(f.to, f.pair, f.b) && !told[f.pair] {
				// No such pairing here: it ended on this side and the
				// other side was not told (a lost link), so tell it now,
				// once. A pairing that ended normally was told already,
				// earlier on this same channel, and ignores this.
				if told == nil {
					told = make(map[uint64]bool)
				}
				told[f.pair] = true
				n.sender(src).add(true, frameLeft, f.pair, f.a, string(proto.ReasonLinkLost), nil, 0)
			}
		case frameLeft:
			if !n.hub.RemoteLeft(f.to, f.pair, proto.Reason(f.a), int(f.n)) {
				// A pairing this node never saw (its paired frame was
				// lost with a link): only the claim marked the record.
				n.Release(f.to, f.pair)
			}
		default:
			n.log.Error("unknown frame kind", zap.String("from_node", src), zap.Int("kind", int(f.kind)))
		}
	}
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
	for _, s := range senders {
		s.drain(ctx)
	}
	var err error
	if n.up.Load() {
		cctx, cancel := context.WithTimeout(ctx, n.opts.OpTimeout)
		_, err = n.rdb.TxPipelined(cctx, func(p redis.Pipeliner) error {
			p.Del(cctx, n.leaseOf(n.id))
			return nil
		})
		cancel()
		if err == nil {
			n.reap(n.id)
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
