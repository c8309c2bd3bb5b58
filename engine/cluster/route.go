package cluster

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"duet/engine/hub"
	"duet/proto"
)

// A partner on another node, and where it is.
//
// The hub stands in for a partner on another node with a stub whose
// Outbox is a remoteOutbox: what the stub is handed travels to the
// partner's node (it is live there). A partner's session can move to
// another node (move.go), and the remoteOutbox follows it:
//
//	live     --Z-->  frozen    its node is moving it: hold everything,
//	                            and answer z, after all that went before
//	frozen   --K-->  parked    it is parked in Redis: queue messages for
//	                            it there (the parker), and end it when
//	                            its window runs out, if nobody takes it up
//	parked   --claimed elsewhere--> awaiting   hold, until its new node
//	                            says it has it
//	any      --O-->  live      its new node has it: pass on what was
//	                            held, in order, then everything else
//
// Z, K and O are frames from the session's nodes (wire.go); each names
// the session's moves so far (gen), so that news of an earlier home
// that arrives after news of a later one is ignored. Everything the
// remoteOutbox does happens in the order the hub hands it events, under
// its own lock, so no message overtakes another across a move. Held
// messages are bounded like a sender's queue (Options.MaxQueue): past
// it, the pairing is cut, and the speaker told, as when a sender is
// full.

type routeState uint8

const (
	routeLive routeState = iota
	routeFrozen
	routeParked
	routeAwaiting
	routeGone // the pairing ended, or the session was taken up here
)

// heldFrame is a frame held while the partner is not live anywhere.
type heldFrame struct {
	kind byte // frameMessage, frameSealed or frameLeft
	a    string
	b    []byte
	n    uint64
}

// heldCost is what a held message counts against MaxQueue.
func heldCost(text []byte) int { return len(text) + 64 }

// carries reports whether a frame of kind carries a message: a text,
// or a sealed frame's data.
func carries(kind byte) bool { return kind == frameMessage || kind == frameSealed }

// move is news of the partner's session: a frame (Z, K or O) or, for
// a stub made for a session parked by this node or found parked here,
// the same news told locally ('k').
type move struct {
	kind   byte
	gen    uint32
	window time.Duration // K: how long it may still wait for a resume
	to     *sender       // Z: the node moving it; O: its new node
	// arrived is, for O, how many of the partner's messages had
	// reached the hub here as the word came: all from the nodes it was
	// on before, since its new node sends it nothing before its word.
	arrived uint64
}

// localParked is the kind of a move that tells a stub made here
// (Directory.Remote with node "") that its partner is parked, at gen.
const localParked = 'k'

// remoteOutbox is the hub.Outbox of a partner on another node: it turns
// the hub's events for that partner into frames for its node, or holds
// them while the partner moves.
type remoteOutbox struct {
	n    *Node
	to   string // the partner's key
	name string // the partner's name
	from string // the key of the session here it is paired with
	pair uint64

	// dropped counts messages refused because the sender (or what is
	// held) was full; the first one asks the node to cut the pairing.
	dropped atomic.Int64
	// arrived counts the partner's messages in the pairing that reached
	// the hub here (hub.ArrivalCounter); the end of the pairing tells
	// the partner's node how many, of those since the partner went live
	// there (arrivedThere).
	arrived atomic.Uint64

	mu       sync.Mutex
	idle     sync.Cond // signalled when busy goes false, and when the end is held
	state    routeState
	s        *sender // live: the partner's node; frozen: the node moving it
	gen      uint32  // the partner's moves, as last heard
	held     []heldFrame
	heldSize int
	// sent counts the messages handed to s since the partner went live
	// there: a partner's node counts its arrivals from the session
	// here since it took the partner up, which it did before this node
	// sent it anything (O), so a left frame from s sets its arrivals
	// against this (Lost). told says that one did, with arrivals.
	sent     uint64
	told     bool
	arrivals uint64
	// awayFrom is sent as the partner's node last said it went away
	// (hub.PartnerAwayNoter), while away says it has not come back:
	// what was sent since is kept on that node for its resume. Should
	// that node die (nodeDead), all of it is lost, which no word from
	// it will say (Lost).
	awayFrom uint64
	away     bool
	nodeDead bool
	// before is how many of the partner's messages had arrived from
	// the nodes it was on before it went live where it is: its node
	// counts only what it sent since (its sent), and is told the
	// arrivals beyond these.
	before uint64
	// index is, while parked, the place in the partner's queue of the
	// next message queued for it.
	index  uint64
	busy   bool // the parker is working on it
	quiet  bool // the partner is being taken up here: the parker starts nothing
	queued bool // in the parker's list
	moves  []move
	timer  *time.Timer // parked: ends the partner's window
	// at is, while awaited, the address of the node that took the
	// partner up, when known: the pairing ends if it dies.
	at string
	// nowhere counts the checks in a row that found the partner, parked
	// or awaited here, neither parked nor on any node (followClaims).
	nowhere int
	// untold and back are the news of the session here that the
	// partner was not told while it was not live anywhere: how many of
	// its messages the session went away without (the counts of the
	// away events held), and whether the session came back since. The
	// node that takes the partner up is told them with the session's
	// state then (hub.PartnerMoved), or, taken up here, the hub takes
	// the count (TakeHeld).
	untold int
	back   bool
}

func newRemoteOutbox(n *Node, node, key, name, from string, pair uint64) *remoteOutbox {
	o := &remoteOutbox{n: n, to: key, name: name, from: from, pair: pair}
	o.idle.L = &o.mu
	if node == "" {
		o.state = routeFrozen
		n.addRoute(o)
	} else {
		o.s = n.sender(node)
	}
	return o
}

// Deliver implements hub.Outbox. It runs under hub locks and only
// queues.
func (o *remoteOutbox) Deliver(ev *proto.Event) {
	o.mu.Lock()
	if o.state == routeLive {
		o.passLocked(o.s, ev)
		o.mu.Unlock()
		return
	}
	kick := o.holdLocked(ev)
	o.mu.Unlock()
	if kick {
		o.n.kickParker(o)
	}
}

// passLocked hands ev to s, the partner's node's sender.
func (o *remoteOutbox) passLocked(s *sender, ev *proto.Event) {
	switch ev.Kind {
	case proto.EvMessage:
		o.passMessage(s, frameMessage, ev.Text)
	case proto.EvSealed:
		o.passMessage(s, frameSealed, ev.Text)
	case proto.EvPaired:
		s.add(true, framePaired, o.pair, o.to, o.from, []byte(ev.Peer), uint64(ev.PeerProto))
	case proto.EvPeerLeft:
		s.add(true, frameLeft, o.pair, o.to, string(ev.Reason), o.arrivalsLocked(), uint64(ev.Count))
	case proto.EvPeerAway:
		var undelivered []byte
		if ev.Count > 0 {
			undelivered = appendCount(uint64(ev.Count))
		}
		s.add(true, frameAway, o.pair, o.to, string(ev.Reason), undelivered, uint64(max(ev.Window, 0)/time.Millisecond))
	case proto.EvPeerBack:
		s.add(true, frameBack, o.pair, o.to, "", nil, uint64(ev.PeerProto))
	case proto.EvError:
		// A message the partner's session refused (peer_away_full, or
		// peer_cannot_decrypt for a sealed frame): the speaker is on the
		// other node, and told there.
		if ev.Err != nil {
			s.add(true, frameError, o.pair, o.to, ev.Err.Code, []byte(ev.Err.Text), 0)
		}
	default:
		o.n.log.Debug("event with no meaning for a remote partner", zap.Stringer("kind", ev.Kind))
	}
}

// passMessage hands one message to s: a text, or a sealed frame's data
// (kind). Once one message is refused, so is every later one until the
// cut: the partner gets a gapless prefix, never a hole.
func (o *remoteOutbox) passMessage(s *sender, kind byte, text []byte) {
	if o.dropped.Load() > 0 || !s.add(false, kind, o.pair, o.to, o.from, text, 0) {
		o.refuse()
		return
	}
	o.sent++
}

// Arrived implements hub.ArrivalCounter.
func (o *remoteOutbox) Arrived() { o.arrived.Add(1) }

// arrivalsLocked is a left frame's arrivals: how many of the partner's
// messages reached the hub here from the node it is live on, since it
// went live there, as that node counts what it sent (sent).
func (o *remoteOutbox) arrivalsLocked() []byte {
	return appendCount(o.arrived.Load() - o.before)
}

// arrivalsTo is a left frame's arrivals for node, or none when the
// partner is not live there: it would set them against what it sent
// since it went live where it is, which may be none of them.
func (o *remoteOutbox) arrivalsTo(node string) []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.state != routeLive || o.s == nil || o.s.dest != node {
		return nil
	}
	return o.arrivalsLocked()
}

// arrivedThere records that the partner's node src, ending the
// pairing, says arrived of the session's messages reached it. From
// another node than the one o sends to, it says nothing of them.
func (o *remoteOutbox) arrivedThere(src string, arrived uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.s != nil && o.s.dest == src {
		o.told, o.arrivals = true, arrived
	}
}

// Lost implements hub.LossCounter: the messages sent beyond what the
// partner's node said reached it, or else those its sender knows
// reached no one.
func (o *remoteOutbox) Lost() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.s == nil {
		return 0
	}
	lost := o.s.takeLost(o.pair)
	if o.told {
		// Those are among the sent, and did not arrive.
		return int(o.sent - min(o.arrivals, o.sent))
	}
	if o.nodeDead && o.away {
		// Kept there for the partner, and gone with the node; those
		// that reached no one are among them, or were sent before it
		// went away: the larger count is the nearer.
		lost = max(lost, int(o.sent-min(o.awayFrom, o.sent)))
	}
	return lost
}

// PartnerAway implements hub.PartnerAwayNoter.
func (o *remoteOutbox) PartnerAway(away bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if away && !o.away {
		o.awayFrom = o.sent
	}
	o.away = away
}

// partnerNodeDead notes that the partner's node died: what it kept for
// the partner away is lost (Lost).
func (o *remoteOutbox) partnerNodeDead() {
	o.mu.Lock()
	o.nodeDead = true
	o.mu.Unlock()
}

// refuse counts a message that does not go to the partner; the first
// asks the node to cut the pairing.
func (o *remoteOutbox) refuse() {
	if o.dropped.Add(1) == 1 {
		o.n.requestCut(o.pair, o)
	}
}

// holdLocked keeps ev while the partner is not live anywhere, and
// reports whether the parker has work.
func (o *remoteOutbox) holdLocked(ev *proto.Event) bool {
	switch ev.Kind {
	case proto.EvMessage, proto.EvSealed:
		if o.state == routeGone {
			return false
		}
		if o.dropped.Load() > 0 || o.heldSize+heldCost(ev.Text) > o.n.opts.MaxQueue {
			o.refuse()
			return false
		}
		kind := byte(frameMessage)
		if ev.Kind == proto.EvSealed {
			kind = frameSealed
		}
		o.held = append(o.held, heldFrame{kind: kind, a: o.from, b: append([]byte(nil), ev.Text...)})
		o.heldSize += heldCost(ev.Text)
	case proto.EvPeerLeft:
		if o.state == routeGone {
			return false
		}
		// Its arrivals are told as it is sent (movesLocked), to the
		// node the partner is live on then. It counts what the session
		// went away without, which the partner was not told (as a
		// session away keeps it, away.keepLeft).
		o.held = append(o.held, heldFrame{kind: frameLeft, a: string(ev.Reason), n: uint64(ev.Count + o.untold)})
		o.untold = 0
		o.idle.Broadcast() // a claim here may wait for it (takeLeft)
	case proto.EvPeerAway:
		// A session away keeps this news for its resume, and so does
		// the partner, wherever it is taken up.
		o.untold += ev.Count
		return false
	case proto.EvPeerBack:
		o.back = true
		return false
	default:
		// A refusal of the partner's message, which it sent before it
		// moved: a session away has no connection to tell it to
		// either.
		return false
	}
	return o.state == routeParked
}

// TakeHeld implements hub.Holder: the partner was taken up on this node,
// in the place of the stub.
func (o *remoteOutbox) TakeHeld(yield func(text []byte, sealed bool)) (untold int) {
	o.mu.Lock()
	held, untold := o.held, o.untold
	o.held, o.heldSize = nil, 0
	o.goneLocked()
	o.mu.Unlock()
	o.n.dropRoute(o)
	for _, h := range held {
		if carries(h.kind) {
			yield(h.b, h.kind == frameSealed)
		}
	}
	return untold
}

// takeLeft ends the outbox of a partner just taken up on this node
// without its pairing (Import could not rebuild it), and returns the
// end of that pairing if it is held here, with the messages held
// before it: the session here left while the partner was parked, and
// the parker had not written them beside the park before the claim, so
// neither the park nor the hub has them. It waits for the parker
// first, whose write then found the session claimed and kept what it
// held.
func (o *remoteOutbox) takeLeft() (last []hub.ParkedMessage, reason proto.Reason, undelivered int, ok bool) {
	o.mu.Lock()
	// A leave frees the records before the hub ends the pairing
	// (Session.Leave), so a claim that found the partner's record freed
	// can come here before the end does. It is at most a Redis answer
	// away; waiting for it (holdLocked announces it) keeps the resume
	// from telling a guess and dropping what is held. The wait is
	// bounded all the same, by what one Redis round trip may take.
	expired := false
	var timer *time.Timer
	for o.busy || (!expired && o.holding() && o.leftLocked() < 0) {
		if timer == nil {
			timer = time.AfterFunc(o.n.opts.OpTimeout, func() {
				o.mu.Lock()
				expired = true
				o.idle.Broadcast()
				o.mu.Unlock()
			})
		}
		o.idle.Wait()
	}
	if timer != nil {
		timer.Stop()
	}
	if i := o.leftLocked(); i >= 0 {
		f := o.held[i]
		reason, undelivered, ok = proto.Reason(f.a), int(f.n), true
		for _, f := range o.held[:i] {
			last = append(last, hub.ParkedMessage{Sealed: f.kind == frameSealed, Text: f.b})
		}
	}
	o.goneLocked()
	o.mu.Unlock()
	o.n.dropRoute(o)
	return last, reason, undelivered, ok
}

// holding reports whether o holds what the hub hands it, for a partner
// not live anywhere.
func (o *remoteOutbox) holding() bool { return o.state != routeGone && o.state != routeLive }

// leftLocked returns where in what o holds the end of its pairing is,
// or -1.
func (o *remoteOutbox) leftLocked() int {
	return slices.IndexFunc(o.held, func(f heldFrame) bool { return f.kind == frameLeft })
}

// endLocked ends the outbox, its pairing cut here, and returns how
// many of the messages it held never reached the partner.
func (o *remoteOutbox) endLocked() (undelivered int) {
	for _, f := range o.held {
		if carries(f.kind) {
			undelivered++
		}
	}
	o.goneLocked()
	return undelivered
}

func (o *remoteOutbox) goneLocked() {
	o.state = routeGone
	o.held, o.heldSize = nil, 0
	if o.timer != nil {
		o.timer.Stop()
		o.timer = nil
	}
}

// cut holds the end of the pairing, cut here for reason, after what
// is held for the partner while it is not live anywhere, as the hub's
// news of a leave is held (holdLocked). It reports false when the
// outbox holds nothing any more: gone, or live after all.
func (o *remoteOutbox) cut(reason proto.Reason) bool {
	o.mu.Lock()
	held := o.holding()
	kick := held && o.holdLocked(&proto.Event{Kind: proto.EvPeerLeft, Reason: reason})
	o.mu.Unlock()
	if kick {
		o.n.kickParker(o)
	}
	return held
}

// forget ends the outbox: its pairing was cut here.
func (o *remoteOutbox) forget() {
	o.mu.Lock()
	o.goneLocked()
	o.mu.Unlock()
	o.n.dropRoute(o)
}

// quiesce waits until the parker is done with the outbox, and keeps it
// from starting again: the partner is about to be taken up here, and
// takes what is held, in order, only once nothing is on its way to
// Redis.
func (o *remoteOutbox) quiesce() {
	o.mu.Lock()
	o.quiet = true
	for o.busy {
		o.idle.Wait()
	}
	o.mu.Unlock()
}

// flushed waits until the parker has written what o holds for its
// parked partner, whether it is quiet or not, and reports false if ctx
// ends first.
func (o *remoteOutbox) flushed(ctx context.Context) bool {
	for {
		o.mu.Lock()
		pending := o.busy || o.state == routeParked && len(o.held) > 0
		o.mu.Unlock()
		if !pending {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-o.n.ctx.Done():
			return false
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// unquiesce undoes quiesce, when the partner was not taken up here.
func (o *remoteOutbox) unquiesce() {
	o.mu.Lock()
	o.quiet = false
	kick := o.state == routeParked && len(o.held) > 0
	o.mu.Unlock()
	if kick {
		o.n.kickParker(o)
	}
}

// control applies news of the partner's session, in the order it came;
// while the parker is busy with the outbox, once it is done. It is
// called in the order frames arrive, messages among them: the arrivals
// an O finds came before it, wherever it is applied.
func (o *remoteOutbox) control(m move) {
	if m.kind == frameMoved {
		m.arrived = o.arrived.Load()
	}
	o.mu.Lock()
	o.moves = append(o.moves, m)
	var after []func()
	if !o.busy {
		after = o.movesLocked()
	}
	kick := o.state == routeParked && len(o.held) > 0
	o.mu.Unlock()
	for _, f := range after {
		f()
	}
	if kick {
		o.n.kickParker(o)
	}
}

// movesLocked applies the news queued, and returns what is to be done
// once the lock is released.
func (o *remoteOutbox) movesLocked() (after []func()) {
	for _, m := range o.moves {
		switch m.kind {
		case frameFreeze:
			if o.state == routeGone {
				m.to.add(true, frameFrozen, o.pair, o.to, "", nil, uint64(m.gen))
				continue
			}
			if o.state == routeLive && o.s != m.to {
				// The Z came from where the partner is, so this does not
				// happen; if it did, what went before went to o.s.
				o.n.log.Warn("a node moved a session this node thought elsewhere", zap.String("from_node", m.to.dest))
			}
			if o.state == routeLive {
				after = append(after, func() { o.n.addRoute(o) })
			}
			if o.s != m.to {
				o.sent = 0
			}
			o.state, o.gen, o.s = routeFrozen, m.gen, m.to
			dest := m.to.dest
			after = append(after, func() { o.n.hub.Reroute(o.from, o.pair, dest) })
			if o.timer != nil {
				o.timer.Stop()
				o.timer = nil
			}
			// After everything this node sent before: the mover's
			// fence.
			m.to.add(true, frameFrozen, o.pair, o.to, "", nil, uint64(m.gen))
		case frameParked, localParked:
			if o.state != routeFrozen || (m.kind == frameParked && m.gen != o.gen) {
				continue
			}
			o.state, o.gen, o.index, o.s = routeParked, m.gen, 0, nil
			o.timer = time.AfterFunc(max(m.window, 0), o.expire)
			after = append(after, func() { o.n.hub.Reroute(o.from, o.pair, "") })
		case frameMoved:
			if o.state == routeGone || m.gen <= o.gen {
				continue
			}
			refused := false
			o.sent, o.before = 0, m.arrived
			for _, h := range o.held {
				if carries(h.kind) {
					// Held before any was refused (holdLocked holds
					// none after), so they go even if some were
					// refused since, as the parker would queue them:
					// the partner gets a gapless prefix, unless its
					// node's sender refuses one of them now.
					if refused || !m.to.add(false, h.kind, o.pair, o.to, o.from, h.b, 0) {
						refused = true
						o.refuse()
					} else {
						o.sent++
					}
				} else {
					// A left frame held: the pairing ended here before
					// the new node's word, and none of its messages
					// arrived while it was open.
					m.to.add(true, h.kind, o.pair, o.to, h.a, o.arrivalsLocked(), h.n)
				}
			}
			o.held, o.heldSize = nil, 0
			o.state, o.gen, o.s = routeLive, m.gen, m.to
			if o.timer != nil {
				o.timer.Stop()
				o.timer = nil
			}
			dest := m.to.dest
			untold, back := o.untold, o.back
			o.untold, o.back = 0, false
			after = append(after, func() {
				o.n.dropRoute(o)
				o.n.hub.Reroute(o.from, o.pair, dest)
				// Live there now: through this outbox, in order with
				// what the session says next.
				o.n.hub.PartnerMoved(o.from, o.pair, untold, back)
			})
		}
	}
	o.moves = o.moves[:0]
	return after
}

// expire ends the partner's window: it was parked, and nobody took it
// up in time. If it is still parked as it was, its keys go, and the
// session here is told timeout, as a partner on one node is.
func (o *remoteOutbox) expire() {
	o.mu.Lock()
	if o.state != routeParked {
		o.mu.Unlock()
		return
	}
	gen := o.gen
	o.mu.Unlock()
	n := o.n
	hn := n.keys.nameHash(o.to)
	ctx, cancel := n.op()
	res, err := expireParkedScript.Run(ctx, n.rdb, []string{n.userKey(hn), n.parkKey(hn), n.queueKey(hn)},
		hn, strconv.FormatUint(uint64(gen), 10), n.opts.Prefix).Text()
	cancel()
	if err != nil {
		n.linkLost("expire", err)
		return
	}
	if res != "expired" && res != "gone" {
		return
	}
	o.forget()
	n.hub.RemoteLeft(o.from, o.pair, proto.ReasonTimeout, 0)
}

// The parker queues messages for parked partners in Redis: one
// goroutine per node, serving the outboxes that hold something, one
// pipelined round trip for each outbox's run.

// kickParker puts o in the parker's list.
func (n *Node) kickParker(o *remoteOutbox) {
	o.mu.Lock()
	if o.queued {
		o.mu.Unlock()
		return
	}
	o.queued = true
	o.mu.Unlock()
	n.mu.Lock()
	n.parkList = append(n.parkList, o)
	n.mu.Unlock()
	select {
	case n.parkWake <- struct{}{}:
	default:
	}
}

func (n *Node) runParker() {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.parkWake:
		}
		for {
			n.mu.Lock()
			list := n.parkList
			n.parkList = nil
			n.mu.Unlock()
			if len(list) == 0 {
				break
			}
			for _, o := range list {
				n.serve(o)
			}
		}
	}
}

// parkerIdle reports whether the parker has nothing left to do: a node
// that leaves waits for it, so what its users said to parked partners
// is queued before it goes.
func (n *Node) parkerIdle() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.parkList) > 0 {
		return false
	}
	for _, o := range n.routes {
		o.mu.Lock()
		busy := o.busy || o.state == routeParked && len(o.held) > 0 && !o.quiet
		o.mu.Unlock()
		if busy {
			return false
		}
	}
	return true
}

// maxRun is the most messages the parker sends for one outbox in one
// round trip.
const maxRun = 64

// serve queues what o holds for its parked partner.
func (n *Node) serve(o *remoteOutbox) {
	o.mu.Lock()
	o.queued = false
	if o.state != routeParked || o.busy || o.quiet || len(o.held) == 0 {
		o.mu.Unlock()
		return
	}
	// A run of messages, or a departure on its own: whatever follows
	// a message refused must not be written before it.
	end := 1
	if carries(o.held[0].kind) {
		for end < min(len(o.held), maxRun) && carries(o.held[end].kind) {
			end++
		}
	}
	run := append([]heldFrame(nil), o.held[:end]...)
	gen, index := o.gen, o.index
	o.busy = true
	o.mu.Unlock()

	results, err := n.queueParked(o, gen, index, run)

	o.mu.Lock()
	o.busy = false
	o.idle.Broadcast()
	var after []func()
	if err != nil {
		n.linkLost("queue for a parked session", err)
	} else {
		after = o.settleLocked(run, results)
	}
	after = append(after, o.movesLocked()...)
	again := o.state == routeParked && len(o.held) > 0 && !o.quiet
	o.mu.Unlock()
	for _, f := range after {
		f()
	}
	if again {
		n.kickParker(o)
	}
}

// parkResult is one script's answer for a frame of a run.
type parkResult struct {
	code string
	args []string
}

// queueParked writes run to Redis in one round trip: a run of
// messages, each sealed for its place in the queue (index on), or one
// departure, which releases the parked session's pairing. It returns
// an answer for each frame up to the first not taken: "ok" for those
// taken, then why the next was not.
func (n *Node) queueParked(o *remoteOutbox, gen uint32, index uint64, run []heldFrame) ([]parkResult, error) {
	ctx, cancel := n.op()
	defer cancel()
	if !carries(run[0].kind) {
		f := run[0]
		vals, err := n.runReleaseParked(ctx, n.rdb, o.to, o.pair, proto.Reason(f.a), int(f.n)).StringSlice()
		if err != nil || len(vals) == 0 {
			return nil, err
		}
		return []parkResult{{code: vals[0], args: vals[1:]}}, nil
	}
	hn := n.keys.nameHash(o.to)
	args := make([]any, 0, 3+3*len(run))
	args = append(args, strconv.FormatUint(uint64(gen), 10), index, n.opts.Prefix)
	for i, f := range run {
		entry := n.seal.sealNamed(nil, f.b, queueAAD(hn, gen, index+uint64(i), f.kind == frameSealed))
		args = append(args, max(heldCost(f.b), len(entry)), len(f.b), entry)
	}
	vals, err := appendParkedScript.Run(ctx, n.rdb, []string{n.parkKey(hn), n.queueKey(hn), n.userKey(hn)}, args...).StringSlice()
	if err != nil {
		return nil, err
	}
	queued, perr := strconv.Atoi(arg(vals, 0))
	if perr != nil || queued < 0 || queued > len(run) || len(vals) < 2 {
		n.log.Error("a parked session's queue answered a bad count", zap.String("queued", printable(arg(vals, 0))))
		return nil, nil
	}
	results := make([]parkResult, queued, queued+1)
	for i := range results {
		results[i].code = "ok"
	}
	if queued < len(run) {
		results = append(results, parkResult{code: vals[1], args: vals[2:]})
	}
	return results, nil
}

// settleLocked takes the answers for run, the first frames held, and
// returns what is to be done once the lock is released.
func (o *remoteOutbox) settleLocked(run []heldFrame, results []parkResult) (after []func()) {
	n := o.n
	for i, res := range results {
		f := run[i]
		switch res.code {
		case "ok":
			o.popLocked()
			if carries(f.kind) {
				o.index++
				continue
			}
			// The session here left the pairing; the parked partner's
			// record says so now, and nothing more goes to it.
			o.goneLocked()
			after = append(after, func() { n.dropRoute(o) })
			return after
		case "full":
			o.popLocked()
			waiting, _ := strconv.Atoi(arg(res.args, 0))
			size, _ := strconv.ParseInt(arg(res.args, 1), 10, 64)
			refusal := proto.PeerAwayFull(o.name, waiting, size)
			after = append(after, func() {
				n.hub.RemoteEvent(o.from, o.pair, &proto.Event{Kind: proto.EvError, Err: refusal})
			})
			// The run stops here: the next goes in a run of its own,
			// sealed for the place this one would have taken.
		case "at":
			at, err := strconv.ParseUint(arg(res.args, 0), 10, 64)
			if err != nil {
				n.log.Error("a parked session's queue answered a bad place", zap.String("at", printable(arg(res.args, 0))))
				return after
			}
			o.index = at
			return after
		case "moved":
			// Taken up elsewhere: its new node tells this one (O) once
			// it has it; until then, hold. If that node dies first,
			// the pairing is cut as with any partner on it.
			o.state, o.at = routeAwaiting, ""
			if o.timer != nil {
				o.timer.Stop()
				o.timer = nil
			}
			node, lease := arg(res.args, 0), arg(res.args, 1)
			if li, ok := parseLease(lease); ok && li.keyID == n.keys.keyID {
				addr := address(node, li.inc)
				o.at = addr
				after = append(after, func() { n.hub.Reroute(o.from, o.pair, addr) })
			}
			// A node dead already is found by the next check
			// (followClaims).
			return after
		case "stale":
			// Parked again since, and this node not told yet: it will be.
			o.state, o.at = routeAwaiting, ""
			return after
		case "gone":
			// Its window ran out (its keys expired with it).
			o.goneLocked()
			after = append(after, func() {
				n.dropRoute(o)
				n.hub.RemoteLeft(o.from, o.pair, proto.ReasonTimeout, 0)
			})
			return after
		default:
			n.log.Error("a parked session's queue answered an unknown code", zap.String("code", printable(res.code)))
			return after
		}
	}
	return after
}

func (o *remoteOutbox) popLocked() {
	f := o.held[0]
	o.held[0] = heldFrame{}
	o.held = o.held[1:]
	if carries(f.kind) {
		o.heldSize -= heldCost(f.b)
	}
}

func arg(args []string, i int) string {
	if i < len(args) {
		return args[i]
	}
	return ""
}

// addRoute and dropRoute keep the outboxes whose partner is not live
// anywhere, by pairing, for the news of its moves (K, O) to find.
func (n *Node) addRoute(o *remoteOutbox) {
	n.mu.Lock()
	n.routes[o.pair] = o
	n.mu.Unlock()
}

func (n *Node) dropRoute(o *remoteOutbox) {
	n.mu.Lock()
	if n.routes[o.pair] == o {
		delete(n.routes, o.pair)
	}
	n.mu.Unlock()
}

// route returns the outbox of pairing pair whose session here is key,
// among those whose partner is not live anywhere, or else the stub's of
// a live partner; nil when there is neither.
func (n *Node) route(key string, pair uint64) *remoteOutbox {
	n.mu.Lock()
	o := n.routes[pair]
	n.mu.Unlock()
	if o != nil && o.from == key {
		return o
	}
	o, _ = n.hub.StubOutbox(key, pair).(*remoteOutbox)
	return o
}

// forgetRoutes ends every outbox whose partner is not live: the link
// to Redis is lost, and their pairings are being cut.
func (n *Node) forgetRoutes() {
	n.mu.Lock()
	list := make([]*remoteOutbox, 0, len(n.routes))
	for _, o := range n.routes {
		list = append(list, o)
	}
	n.mu.Unlock()
	for _, o := range list {
		o.forget()
	}
}

// grace is how much longer than its window a parked session that is
// paired keeps its keys: time for its partner's node, which ends it
// (expire), to do so before Redis does, leaving nobody to tell the
// partner.
func (n *Node) grace() time.Duration { return max(10*time.Second, 3*n.opts.Heartbeat+n.opts.OpTimeout) }

var (
	_ hub.Holder = (*remoteOutbox)(nil)
	_ hub.Mover  = (*Node)(nil)
)
