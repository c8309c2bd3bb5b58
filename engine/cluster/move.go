package cluster

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"duet/engine/hub"
	"duet/proto"
)

// Resume on any node (docs/CLUSTER.md, "Resume on any node").
//
// A session can be resumed on a node other than the one that holds it:
// the load balancer may send a phone that changed networks anywhere,
// and a node drained for an upgrade sends all its users elsewhere. The
// directory finds a session by the keyed hash of its resume key
// (Register, Rekey). To move, a session is parked: its node takes it out
// of its hub whole (hub.Export), seals it with the cluster secret and
// writes it to Redis beside its record, which stays, marked as on no
// node; the node that resumes it claims it in one script and takes it up
// (hub.Import). What its partner says meanwhile is queued in Redis,
// sealed too, within resume.buffer, and refused past it
// (peer_away_full), as on one node.
//
// No message is lost, repeated or reordered across the move, by a
// fence rather than sequence numbers: before the session's node takes
// it out, it asks the partner's node to hold what the partner says from
// now on (Z) and waits for the answer (z), which that node sends after
// everything it sent before, on the same ordered channel; so the session
// has had everything sent before the fence when it leaves, and all that
// is sent after is held, then queued in Redis behind the park, then
// handed to the node that took it up, in order (route.go). In the other
// direction, the node publishes all the session said before the park is
// written, and the new node can only claim it after; Redis hands a
// subscriber what was published in the order it was, so the partner's
// node has the session's last words from its old node before its first
// from the new one. A partner's node that does not answer the fence in
// time has a link in trouble: the pairing is cut with link_lost, told to
// both, as any pairing whose link fails. Sequence numbers would cost
// every message between nodes a few bytes and a check for a move that
// happens rarely; the fence costs one round trip per move and nothing
// else.
//
// A parked session's window is kept by its partner's node, which ends
// it when it runs out (route.go's expire) and tells the partner timeout;
// a session with no partner, or whose partner's node is gone, just
// expires with its keys (every key of a parked session has the window
// for its TTL), so a session parked by a node that is gone still ends,
// and nothing of it stays in Redis.

func (n *Node) parkKey(hashedName string) string  { return n.key("park", hashedName) }
func (n *Node) queueKey(hashedName string) string { return n.key("parkq", hashedName) }
func (n *Node) resumeKey(rk string) string        { return n.key("resume", rk) }

// Rekey implements hub.Mover.
func (n *Node) Rekey(key string, old, used, fresh *hub.ResumeHash, client proto.Protocol) {
	if !n.up.Load() {
		return // written back on recovery, with the keys then current
	}
	ctx, cancel := n.op()
	defer cancel()
	hn := n.keys.nameHash(key)
	ru := ""
	if used != nil {
		ru = n.keys.resumeHash(used)
	}
	res, err := rekeyScript.Run(ctx, n.rdb, []string{n.userKey(hn)},
		hn, n.id, n.keys.resumeHash(old), n.keys.resumeHash(fresh), n.opts.Prefix, n.keys.clientField(hn, client), ru).Text()
	if err != nil {
		n.linkLost("resume", err)
		return
	}
	if res != "ok" {
		n.log.Warn("the directory did not hold the resume key a session of this node was resumed with; it holds the new one only if written back", zap.String("answer", res))
	}
}

// RetireUsed implements hub.Mover.
func (n *Node) RetireUsed(key string, used *hub.ResumeHash) {
	if !n.up.Load() {
		return // written back on recovery, without it
	}
	ctx, cancel := n.op()
	defer cancel()
	hn := n.keys.nameHash(key)
	if err := retireScript.Run(ctx, n.rdb, []string{n.userKey(hn)}, hn, n.keys.resumeHash(used), n.opts.Prefix).Err(); err != nil {
		n.linkLost("resume", err)
	}
}

// Fetch implements hub.Mover.
func (n *Node) Fetch(sum *hub.ResumeHash) *proto.Error {
	if !n.up.Load() {
		return proto.ErrUnavailable
	}
	rk := n.keys.resumeHash(sum)
	// A session can be taken by another resume between looking and
	// claiming; looking again finds where it went.
	unknown := false
	for range 3 {
		ctx, cancel := n.op()
		res, err := findScript.Run(ctx, n.rdb, []string{n.resumeKey(rk)}, n.opts.Prefix, rk).StringSlice()
		cancel()
		if err != nil {
			n.linkLost("resume", err)
			return proto.ErrUnavailable
		}
		if len(res) == 1 && res[0] == "!" {
			return proto.ErrSessionEndedWithNode
		}
		if len(res) < 3 {
			return proto.ErrUnknownResumeKey
		}
		hn, node := res[0], res[1]
		if node != "" {
			if node == n.id {
				return nil // here after all: the hub looks again
			}
			li, ok := parseLease(res[2])
			if !ok || li.keyID != n.keys.keyID {
				// Its node is dead (it is reaped within a lease) or
				// has another secret.
				return proto.ErrUnavailable
			}
			switch code := n.askHandOver(address(node, li.inc), sum); code {
			case "ok", proto.ErrUnknownResumeKey.Code:
				// Handed over; or it left that node meanwhile (parked by
				// a drain, or taken by another resume): look again.
				unknown = code != "ok"
				continue
			default:
				return proto.ErrUnavailable
			}
		}
		if len(res) < 6 {
			return proto.ErrUnknownResumeKey
		}
		p, err := n.openParked(hn, res[4], res[5], beside{lastID: arg(res, 6), holder: arg(res, 7), untold: arg(res, 8), used: arg(res, 9), told: arg(res, 10)}, sum)
		if err != nil {
			return proto.ErrUnknownResumeKey
		}
		taken, perr := n.claim(hn, p)
		if perr != nil {
			return perr
		}
		if taken {
			return nil
		}
	}
	if unknown {
		return proto.ErrUnknownResumeKey
	}
	return proto.ErrUnavailable
}

// openParked opens a parked session found for the resume key whose
// hash is sum, and checks it is what it should be: the session of that
// record, parked as gen, with that key (its newest, or the one its last
// resume used, kept still). A sealed state that fails was
// written by someone without the cluster secret, or moved from another
// record by someone who can write to Redis: it is refused and counted.
// What the park holds beside the blob goes into the session; a part of
// it that fails refuses the park as the blob would.
func (n *Node) openParked(hn, blob, genArg string, bs beside, sum *hub.ResumeHash) (*hub.Parked, error) {
	gen, err := strconv.ParseUint(genArg, 10, 32)
	if err == nil {
		op := n.keys.opener()
		var pt []byte
		if pt, err = op.open([]byte(blob), parkAAD(hn, uint32(gen))); err == nil {
			var p *hub.Parked
			if p, err = hub.ParseParked(pt); err == nil {
				if p.Gen == uint32(gen) && n.keys.nameHash(p.Key) == hn && bs.open(op, p, hn, uint32(gen)) && opens(p, sum) {
					return p, nil
				}
				err = errBadRecord
			}
		}
	}
	n.recordsRejected.Add(1)
	if ok, suppressed := n.rejectLog.allow(); ok {
		n.log.Warn("refused a parked session that was not written by a node of this cluster for this resume key (Redis was written to by someone else, or by a node with another cluster secret)",
			zap.Error(err), zap.Int("suppressed_since_last", suppressed))
	}
	return nil, err
}

// opens reports whether the resume key whose hash is sum opens p: its
// newest key, or the one its last resume used, kept still. Both are
// compared in constant time.
func opens(p *hub.Parked, sum *hub.ResumeHash) bool {
	newest := subtle.ConstantTimeCompare(p.Resume[:], sum[:]) == 1
	return newest || p.Used != nil && subtle.ConstantTimeCompare(p.Used.Resume[:], sum[:]) == 1
}

// claim takes p, parked, for this node, with what was queued for it,
// and takes it up in the hub. It reports false when p was not parked
// as it was found any more (another node took it first).
func (n *Node) claim(hn string, p *hub.Parked) (bool, *proto.Error) {
	var pair uint64
	if p.Pair != nil {
		pair = p.Pair.ID
		// Both sides of a parked pair may be resumed here at once (a
		// drain tells them to reconnect together). Each claim reads the
		// partner's record as it stands and takes the session up by it:
		// as a partner still parked, or one taken up here, whose room
		// it joins. Between the partner's claim and its import neither
		// holds, and the session came back unpaired, told nothing. So
		// one pairing's claims here wait for each other; the second
		// finds the first's room.
		mu := &n.claims[pair%uint64(len(n.claims))]
		mu.Lock()
		defer mu.Unlock()
		defer n.claimDone(n.claimBegun(pair))
	}
	ctx, cancel := n.op()
	res, err := claimParkedScript.Run(ctx, n.rdb,
		[]string{n.userKey(hn), n.parkKey(hn), n.queueKey(hn), n.usersOf(n.id), n.leaseOf(n.id)},
		hn, n.id, n.opts.Prefix, strconv.FormatUint(uint64(p.Gen), 10), n.seal.record(p.Name, p.Key, hn), n.pairArg(pair)).StringSlice()
	cancel()
	if err != nil {
		n.linkLost("resume", err)
		return false, proto.ErrUnavailable
	}
	switch arg(res, 0) {
	case "ok":
	case "owned":
		return false, nil
	case "gone":
		return false, proto.ErrUnknownResumeKey
	default:
		return false, proto.ErrUnavailable
	}
	if len(res) < 10 {
		n.log.Error("the claim of a parked session answered too little", zap.Int("fields", len(res)))
		return false, proto.ErrUnavailable
	}
	// A record whose pairing is not the park's was freed by the script,
	// and is not paired (res[2], the record's pairing, is then of no
	// use here).
	paired, peerNode, peerLease, peerGen, peerTTL, left, peerClient := res[1] == "1", res[3], res[4], res[5], res[6], res[7], res[8]
	// ending: the partner left the pairing on its node, which holds how
	// still, with the partner's last messages (claimParkedScript). The
	// session is taken up paired, as with a partner live there, and that
	// node, told where the session is now, sends what it holds: the
	// messages, then the end, with its reason. A node with nothing held
	// for the pairing any more answers with its end (disconnected).
	// A partner on this node is left to its route here (below); the
	// script never answers so for one.
	ending := res[1] == "2"
	// What a partner parked too has left of its window: its park keeps
	// it for that, plus grace (writePark).
	ttl, _ := strconv.ParseInt(peerTTL, 10, 64)
	parkedWindow := max(time.Duration(ttl)*time.Millisecond-n.grace(), 0)
	// The protocol its last connection spoke, by which its partner's
	// seals are kept for it until its resume.
	p.Client = n.clientOf(hn, res[9])

	from := ""
	if p.Pair != nil {
		from = p.Pair.PeerName
	}
	op := n.keys.opener()
	var queued []hub.ParkedMessage
	for i, e := range res[10:] {
		sealed := false
		text, err := op.open([]byte(e), queueAAD(hn, p.Gen, uint64(i), false))
		if err != nil {
			sealed = true
			text, err = op.open([]byte(e), queueAAD(hn, p.Gen, uint64(i), true))
		}
		if err != nil {
			n.recordsRejected.Add(1)
			n.log.Warn("refused a message queued for a parked session: not sealed for its place by a node of this cluster", zap.Int("index", i))
			continue
		}
		queued = append(queued, hub.ParkedMessage{From: from, Sealed: sealed, Text: text})
	}

	// here is the outbox of the partner's stub for the session, when
	// the partner is on this node: it may hold the end of the pairing.
	var here *remoteOutbox
	release, peerName := uint64(0), ""
	if pp := p.Pair; pp != nil {
		peerName = pp.PeerName
		// What the partner's record says its client speaks: the stub
		// made for it below tells and seals by it, as on the node of
		// the pairing's claim (the park does not carry it: a node
		// before it reads the park too).
		if paired || ending {
			pp.PeerProto = n.clientOf(n.keys.nameHash(pp.PeerKey), peerClient)
		}
		// Where the partner was as the session was parked.
		was := pp.PeerNode
		switch {
		case !(paired || ending):
			// The partner left, or its node died, while the session
			// was parked; the record says so already, and the resume
			// tells how. A partner on this node may have left so
			// lately that how is still held here: taken below.
			here = n.route(pp.PeerKey, pp.ID)
			p.Unpair(n.openLeft(op, hn, pp.ID, left))
		case peerNode == "":
			// A partner parked is away (a drain parks sessions that
			// went away), for the window its park has left: the
			// resume tells it. One parked for the instant of a move
			// from a connection still open is not, and is said to be
			// all the same: its park does not say which it is.
			pp.PeerNode, pp.PeerAway, pp.PeerWindow = "", true, parkedWindow
		case peerNode == n.id:
			pp.PeerNode = n.addr
			if here = n.route(pp.PeerKey, pp.ID); here != nil {
				here.quiesce()
			}
		default:
			li, ok := parseLease(peerLease)
			if !ok || li.keyID != n.keys.keyID {
				// The partner's node is dead: it is reaped within a
				// lease, and its user with it, as its partners on live
				// nodes are told.
				release = pp.ID
				p.Unpair(proto.ReasonDisconnected, 0)
				n.countCuts(cutNodeGone, 1)
			} else {
				pp.PeerNode = address(peerNode, li.inc)
				if p.Untold > 0 && pp.PeerNode != was {
					// Only a resume takes a session up on a live
					// node: the partner came back since the session
					// was parked. The news of it, held for the
					// session by the partner's node, comes once that
					// node is told where the session is (PartnerMoved),
					// which may be after the resume: the resume tells
					// it now, and the news is not told again.
					p.UntoldBack = true
				}
				if pp.PeerNode != was {
					// Resumed since, as above: away no more, whatever
					// the session's node last heard (ParkedPair.PeerAway).
					// Still on the node it was on, it is away or not as
					// that node last said, which tells what changed
					// since when told where the session is
					// (PartnerMoved).
					pp.PeerAway, pp.PeerWindow = false, 0
				}
			}
		}
	}
	if err := n.hub.Import(p, queued); err != nil {
		if here != nil {
			here.unquiesce()
		}
		n.log.Error("cannot take up a session claimed for this node; it is logged out", zap.String("error", err.Code))
		n.Unregister(p.Key, p.Token)
		return false, proto.ErrUnavailable
	}
	if here != nil {
		// The partner here left while the session was parked, just
		// before the claim (its record was freed, or the import found
		// its room gone): its last messages and how it ended are held
		// for the park, not written beside it. The resume replays and
		// tells them, as a resume on one node would. A pairing the
		// import rebuilt has taken the outbox over already, and
		// nothing is held.
		if last, reason, undelivered, ok := here.takeLeft(); ok {
			n.hub.TellLeft(p.Key, hub.PeerLeft{Peer: peerName, Reason: reason, Undelivered: undelivered}, last)
		}
	}
	if release != 0 {
		n.Release(p.Key, release)
	}
	n.moved.Add(1)
	if pp := p.Pair; pp != nil {
		switch pp.PeerNode {
		case "":
			gen, _ := strconv.ParseUint(peerGen, 10, 32)
			if o := n.route(p.Key, pp.ID); o != nil {
				o.control(move{kind: localParked, gen: uint32(gen), window: parkedWindow})
			}
		case n.addr:
		default:
			n.sender(pp.PeerNode).add(true, frameMoved, pp.ID, pp.PeerKey, p.Key, nil, uint64(p.Gen+1))
		}
	}
	return true, nil
}

// claimBegun notes that a claim of a session of pair is under way
// here, for frames of that pairing to wait for (awaitClaim). Once the
// claim's script has run, the directory says the session is here, and
// the partner's node, taking its own session up elsewhere at the same
// moment, sends word of it here (O), and then its messages: what the
// claim has not yet taken up would find no pairing here and end it.
func (n *Node) claimBegun(pair uint64) (uint64, chan struct{}) {
	ch := make(chan struct{})
	n.mu.Lock()
	n.claiming[pair] = ch
	n.mu.Unlock()
	n.claimsInFlight.Add(1)
	return pair, ch
}

// claimDone ends what claimBegun began.
func (n *Node) claimDone(pair uint64, ch chan struct{}) {
	n.mu.Lock()
	delete(n.claiming, pair)
	n.mu.Unlock()
	n.claimsInFlight.Add(-1)
	close(ch)
}

// awaitClaim holds the frames of this node's channel, in order, until
// a claim here of a session of pair is done (at most a move's timeout).
func (n *Node) awaitClaim(pair uint64) {
	n.mu.Lock()
	ch := n.claiming[pair]
	n.mu.Unlock()
	if ch == nil {
		return
	}
	t := time.NewTimer(n.moveTimeout())
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-n.ctx.Done():
	}
}

// askHandOver asks the node at addr to park the session whose resume key
// hashes to sum, and returns its answer: "ok", or an error code.
func (n *Node) askHandOver(addr string, sum *hub.ResumeHash) string {
	return n.ask(addr, frameHandOver, "", sum[:])
}

// ask sends the node at addr a request of kind (a hand-over, an
// eviction), numbered, and waits for its answer (frameHandedOver): "ok"
// or an error code, unavailable if none comes in time.
func (n *Node) ask(addr string, kind byte, to string, b []byte) string {
	req := n.requests.Add(1)
	ch := make(chan string, 1)
	n.mu.Lock()
	n.handOvers[req] = ch
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		delete(n.handOvers, req)
		n.mu.Unlock()
	}()
	n.sender(addr).add(true, kind, 0, to, "", b, req)
	t := time.NewTimer(n.moveTimeout())
	defer t.Stop()
	select {
	case code := <-ch:
		return code
	case <-t.C:
	case <-n.ctx.Done():
	}
	return proto.ErrUnavailable.Code
}

// moveTimeout bounds a hand-over as the asking node waits for it: the
// fence, the partner's node's last messages and the park itself.
func (n *Node) moveTimeout() time.Duration { return 5 * n.opts.OpTimeout }

// Evict implements hub.Mover: it finds the node that holds the session
// key, and asks it to log the session out (frameEvict).
func (n *Node) Evict(key string, onlyAway bool) *proto.Error {
	if !n.up.Load() {
		return proto.ErrUnavailable
	}
	ctx, cancel := n.op()
	res, err := holderScript.Run(ctx, n.rdb, []string{n.userKey(n.keys.nameHash(key))}, n.opts.Prefix).StringSlice()
	cancel()
	if err != nil {
		n.linkLost("login", err)
		return proto.ErrUnavailable
	}
	if len(res) < 2 {
		return nil // gone meanwhile: the name is free
	}
	node, lease := res[0], res[1]
	switch node {
	case n.id:
		return proto.ErrNameTaken // here, where the hub replaced what it could
	case "":
		return n.evictParked(key)
	}
	li, ok := parseLease(lease)
	if !ok || li.keyID != n.keys.keyID {
		// Its node is dead (it is reaped within a lease) or has another
		// secret.
		return proto.ErrUnavailable
	}
	var flag byte
	if onlyAway {
		flag = 1
	}
	switch code := n.ask(address(node, li.inc), frameEvict, key, []byte{flag}); code {
	case "ok":
		return nil
	case proto.ErrNameTaken.Code:
		return proto.ErrNameTaken
	default:
		return proto.ErrUnavailable
	}
}

// evictParked ends the session key, parked between nodes, for a login
// of its account here: a parked session is away, and so replaced
// whether takeover is on or not. Its partner is told it was replaced,
// on the partner's node (or, parked too, in its park). The session's
// client, whenever it comes back, finds its resume key unknown.
func (n *Node) evictParked(key string) *proto.Error {
	hn := n.keys.nameHash(key)
	ctx, cancel := n.op()
	res, err := evictParkedScript.Run(ctx, n.rdb, []string{n.userKey(hn), n.parkKey(hn), n.queueKey(hn)}, hn, n.opts.Prefix).StringSlice()
	cancel()
	if err != nil {
		n.linkLost("login", err)
		return proto.ErrUnavailable
	}
	switch arg(res, 0) {
	case "gone":
		return nil
	case "ok":
	default:
		return proto.ErrUnavailable // taken up meanwhile: a later login asks its node
	}
	blob, genArg, pairArg, peerNode, lease := arg(res, 1), arg(res, 2), arg(res, 3), arg(res, 4), arg(res, 5)
	queued, _ := strconv.Atoi(arg(res, 6))
	pair, _ := strconv.ParseUint(pairArg, 10, 64)
	gen, err := strconv.ParseUint(genArg, 10, 32)
	if pair == 0 || err != nil {
		return nil
	}
	// The partner's name is in the park, sealed; a park that does not
	// open leaves the partner to learn of it when it next speaks.
	pt, err := n.keys.opener().open([]byte(blob), parkAAD(hn, uint32(gen)))
	if err != nil {
		return nil
	}
	p, err := hub.ParseParked(pt)
	if err != nil || p.Pair == nil || p.Pair.ID != pair {
		return nil
	}
	// The partner's messages the session never had, kept with it or
	// queued for it while parked, go with it: the partner is told, as
	// on one node.
	undelivered := p.UndeliveredFrom(p.Pair.PeerName) + max(queued, 0)
	if peerNode == "" {
		n.releaseParked(p.Pair.PeerKey, pair, proto.ReasonReplaced, undelivered)
		return nil
	}
	li, ok := parseLease(lease)
	if !ok || li.keyID != n.keys.keyID {
		return nil // the partner's node is dead: its user is reaped
	}
	if addr := address(peerNode, li.inc); addr != n.addr {
		n.sender(addr).add(true, frameLeft, pair, p.Pair.PeerKey, string(proto.ReasonReplaced), nil, uint64(undelivered))
		return nil
	}
	n.partnerLeft(p.Pair.PeerKey, pair, proto.ReasonReplaced, undelivered, "", 0, false)
	return nil
}

// evict logs out the session key of this node, as node src asks for a
// login of the same account there (with onlyAway, only if it is away),
// and answers it.
func (n *Node) evict(src string, req uint64, key string, onlyAway bool) {
	code := "ok"
	if err := n.hub.Evict(key, onlyAway); err != nil {
		code = err.Code
	}
	n.sender(src).add(true, frameHandedOver, 0, "", code, nil, req)
}

// handedOver takes a node's answer to a hand-over or an eviction.
func (n *Node) handedOver(req uint64, code string) {
	n.mu.Lock()
	ch := n.handOvers[req]
	n.mu.Unlock()
	if ch != nil {
		select {
		case ch <- code:
		default:
		}
	}
}

// handOver parks the session whose resume key hashes to b, as the node
// src asks, and answers it.
func (n *Node) handOver(src string, req uint64, b []byte) {
	code := "ok"
	if len(b) != sha256.Size {
		code = proto.ErrUnknownResumeKey.Code
	} else {
		var sum hub.ResumeHash
		copy(sum[:], b)
		ctx, cancel := context.WithTimeout(n.ctx, n.moveTimeout())
		if err := n.park(ctx, "", &sum); err != nil {
			code = err.Code
		}
		cancel()
	}
	n.sender(src).add(true, frameHandedOver, 0, "", code, nil, req)
}

// park takes the session key of this node (or, with sum, the one whose
// resume key hashes to sum) out of the hub and parks it in Redis, for
// any node to take up.
func (n *Node) park(ctx context.Context, key string, sum *hub.ResumeHash) *proto.Error {
	if !n.up.Load() {
		return proto.ErrUnavailable
	}
	t, err := n.hub.BeginPark(key, sum)
	if err != nil {
		return err
	}
	if t.PeerNode != "" && !n.fence(ctx, t) {
		n.log.Warn("the node of a moving session's partner did not answer in time; the pairing is cut", zap.String("peer_node", t.PeerNode))
		cuts := n.hub.CutPair(t.PairID, proto.ReasonLinkLost, 0)
		n.countCuts(cutMoveTimeout, len(cuts))
		for _, c := range cuts {
			n.tellLeft(c, proto.ReasonLinkLost)
		}
	}
	p, err := n.hub.Export(t)
	if err != nil {
		return err
	}
	if pp := p.Pair; pp != nil && pp.PeerNode != "" && pp.PeerNode != n.addr {
		// Everything the session said goes before its park is written:
		// the node that takes it up cannot overtake it.
		n.sender(pp.PeerNode).drain(ctx)
	} else if pp != nil && pp.PeerNode == "" {
		// The partner is parked too: what the session said to it is
		// queued for it before the park is written, or the node that
		// takes the session up could queue what it says next ahead of
		// it.
		if o := n.route(p.Key, pp.ID); o != nil && !o.flushed(ctx) {
			n.log.Warn("what a moving session said to its parked partner was not queued in time; the partner may get it after what the session says next")
		}
	}
	if werr := n.writePark(ctx, p); werr != nil {
		n.log.Warn("cannot park a session; it stays on this node", zap.Error(werr))
		n.restore(p)
		return proto.ErrUnavailable
	}
	n.parked.Add(1)
	if pp := p.Pair; pp != nil {
		switch pp.PeerNode {
		case "":
		case n.addr:
			if o := n.route(pp.PeerKey, pp.ID); o != nil {
				o.control(move{kind: localParked, gen: p.Gen, window: p.WindowLeft})
			}
		default:
			n.sender(pp.PeerNode).add(true, frameParked, pp.ID, pp.PeerKey,
				strconv.FormatUint(uint64(p.Gen), 10), nil, uint64(p.WindowLeft/time.Millisecond))
		}
	}
	return nil
}

// fence asks the node of t's partner to hold what the partner says from
// now on, and waits until it says so, after all it sent before.
func (n *Node) fence(ctx context.Context, t *hub.Ticket) bool {
	ch := make(chan struct{})
	n.mu.Lock()
	n.fences[t.PairID] = ch
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		delete(n.fences, t.PairID)
		n.mu.Unlock()
	}()
	n.sender(t.PeerNode).add(true, frameFreeze, t.PairID, t.PeerKey, t.Key, nil, uint64(t.Gen))
	timer := time.NewTimer(2 * n.opts.OpTimeout)
	defer timer.Stop()
	select {
	case <-ch:
		return true
	case <-timer.C:
	case <-ctx.Done():
	case <-n.ctx.Done():
	}
	return false
}

// fenced takes a partner's node's answer to a fence.
func (n *Node) fenced(pair uint64) {
	n.mu.Lock()
	ch := n.fences[pair]
	delete(n.fences, pair)
	n.mu.Unlock()
	if ch != nil {
		close(ch)
	}
}

// beside is what a park holds sealed beside its blob (writePark), each
// empty when it has none.
type beside struct {
	lastID, holder, untold, used, told string
}

// open reads what a park holds beside its blob (writePark) into p, the
// session the blob holds, parked as gen by the session hn: its holder
// mark (the session is the one whose token its partner claimed), its
// last id, what its partner went away without (sealUntold), the key
// its last resume used, with that answer's news (hub.ParkedUsed), and
// what it was told of its pairing while away (sealTold). It reports
// false for a part that does not open as this park's, or does not read
// as what it is.
func (bs beside) open(op *opener, p *hub.Parked, hn string, gen uint32) bool {
	return openPart(op, bs.holder, holderAAD(hn, gen), func(b []byte) bool {
		if len(b) != 1 || b[0] != 1 {
			return false
		}
		if p.Pair != nil {
			p.Pair.Holder = true
		}
		return true
	}) && openPart(op, bs.lastID, lastIDAAD(hn, gen), func(b []byte) bool {
		id, k := binary.Uvarint(b)
		p.LastID = id
		return k == len(b) && id != 0
	}) && openPart(op, bs.untold, untoldAAD(hn, gen), func(b []byte) bool {
		count, k := binary.Uvarint(b)
		if k <= 0 || count == 0 || count > math.MaxInt32 {
			return false
		}
		window, j := binary.Varint(b[k:])
		if j <= 0 || window < 0 || len(b) != k+j+1 || b[k+j] > 1 {
			return false
		}
		p.Untold, p.UntoldWindow, p.UntoldBack = int(count), time.Duration(window), b[k+j] == 1
		return true
	}) && openPart(op, bs.used, usedAAD(hn, gen), func(b []byte) bool {
		u, err := hub.ParseParkedUsed(b)
		p.Used = u
		return err == nil
	}) && openPart(op, bs.told, toldAAD(hn, gen), func(b []byte) bool {
		if len(b) == 0 || b[0] == 0 || b[0]&^toldAll != 0 ||
			p.Pair == nil && b[0]&toldPaired != 0 || p.Left == nil && b[0]&toldLeftJoined != 0 {
			return false
		}
		flags, rest := b[0], b[1:]
		if flags&toldPeerAway != 0 {
			window, k := binary.Varint(rest)
			if k <= 0 || window < 0 {
				return false
			}
			p.Pair.PeerAway, p.Pair.PeerWindow = true, time.Duration(window)
			rest = rest[k:]
		}
		if len(rest) != 0 {
			return false
		}
		if p.Pair != nil {
			p.PeerWasAway, p.Joined = flags&toldPeerWasAway != 0, flags&toldJoined != 0
		}
		if p.Left != nil {
			p.Left.Joined = flags&toldLeftJoined != 0
		}
		return true
	})
}

// What a parked session was told of its pairing while away, and what
// its node last heard of its partner, sealed beside its park (sealTold):
// a byte of these, then, with toldPeerAway, varint(the partner's window
// left, in nanoseconds).
const (
	toldPeerWasAway = 1 << iota // hub.Parked.PeerWasAway
	toldJoined                  // hub.Parked.Joined
	toldLeftJoined              // hub.Parked.Left.Joined
	toldPeerAway                // hub.ParkedPair.PeerAway, and PeerWindow
	toldPaired      = toldPeerWasAway | toldJoined | toldPeerAway
	toldAll         = toldPaired | toldLeftJoined
)

// sealTold seals what p was told of its pairing while away, and what
// its node last heard of its partner, for its park (writePark); nil
// when it holds nothing, for a park written without it.
func (n *Node) sealTold(p *hub.Parked, hn string) []byte {
	var b byte
	if pp := p.Pair; pp != nil {
		if p.PeerWasAway {
			b |= toldPeerWasAway
		}
		if p.Joined {
			b |= toldJoined
		}
		if pp.PeerAway {
			b |= toldPeerAway
		}
	}
	if p.Left != nil && p.Left.Joined {
		b |= toldLeftJoined
	}
	if b == 0 {
		return nil
	}
	told := []byte{b}
	if b&toldPeerAway != 0 {
		told = binary.AppendVarint(told, int64(p.Pair.PeerWindow))
	}
	return n.seal.sealNamed(nil, told, toldAAD(hn, p.Gen))
}

// openPart opens a part of a park sealed beside its blob for aad, and
// reports whether read reads it; a part that is empty is none, and
// reads.
func openPart(op *opener, sealed string, aad []byte, read func(b []byte) bool) bool {
	if sealed == "" {
		return true
	}
	b, err := op.open([]byte(sealed), aad)
	return err == nil && read(b)
}

// sealUntold seals what p's partner went away without (Parked.Untold),
// for its park (writePark).
func (n *Node) sealUntold(p *hub.Parked, hn string) []byte {
	b := binary.AppendUvarint(nil, uint64(p.Untold))
	b = binary.AppendVarint(b, int64(p.UntoldWindow))
	var back byte
	if p.UntoldBack {
		back = 1
	}
	return n.seal.sealNamed(nil, append(b, back), untoldAAD(hn, p.Gen))
}

// writePark writes p, sealed, to Redis, and marks its record as on no
// node.
//
// Its last id is sealed on its own, beside the blob, and the blob is
// written without it. In the blob it would need the parked form's
// version 3, which a node from before it cannot read: during a rolling
// upgrade, the resume of any page's session that reached such a node
// would be refused, the conversation lost. Beside it, such a node takes
// the session up without it (a resume there leaves last_id out), as
// it takes up a session that numbered nothing.
func (n *Node) writePark(ctx context.Context, p *hub.Parked) error {
	hn := n.keys.nameHash(p.Key)
	var lastID []byte
	if p.LastID != 0 {
		lastID = n.seal.sealNamed(nil, binary.AppendUvarint(nil, p.LastID), lastIDAAD(hn, p.Gen))
		bare := *p
		bare.LastID = 0
		p = &bare
	}
	// Which side of its pairing it is goes beside the blob too, for the
	// same reason: a node from before it takes the session up as the
	// side that connected, as it always did.
	var holder []byte
	if p.Pair != nil && p.Pair.Holder {
		holder = n.seal.sealNamed(nil, []byte{1}, holderAAD(hn, p.Gen))
	}
	// And what its partner went away without (the form's version 4):
	// a node from before it takes the session up without it, and its
	// resume there tells the news of the partner as it did, with no
	// count.
	var untold []byte
	if p.Untold > 0 {
		untold = n.sealUntold(p, hn)
		bare := *p
		bare.Untold, bare.UntoldWindow, bare.UntoldBack = 0, 0, false
		p = &bare
	}
	// And the key its last resume used, with the news its answer told
	// (the form's version 5): a node from before it takes the session
	// up without it, found by its newest key alone, as it was.
	var used []byte
	if p.Used != nil {
		used = n.seal.sealNamed(nil, p.Used.AppendBinary(nil), usedAAD(hn, p.Gen))
		bare := *p
		bare.Used = nil
		p = &bare
	}
	// And what it was told of its pairing while away, which the form
	// never held: a node from before it takes the session up without
	// it, as it did.
	told := n.sealTold(p, hn)
	blob := n.seal.sealNamed(nil, p.AppendBinary(nil), parkAAD(hn, p.Gen))
	ttl := p.WindowLeft
	if p.Pair != nil {
		ttl += n.grace()
	}
	// What a refusal says is waiting counts the partner's own messages
	// only: all that is queued while parked is its partner's.
	var waiting int
	var size int64
	if p.Pair != nil {
		waiting, size = p.WaitingFrom(p.Pair.PeerName)
	}
	ctx, cancel := context.WithTimeout(ctx, n.opts.OpTimeout)
	defer cancel()
	res, err := parkScript.Run(ctx, n.rdb,
		[]string{n.userKey(hn), n.parkKey(hn), n.queueKey(hn), n.usersOf(n.id)},
		hn, n.id, blob, p.Gen, n.hub.ResumeBuffer(), p.Cost(), waiting, size,
		max(ttl.Milliseconds(), 1), n.opts.Prefix, lastID, holder, untold, used, told).Text()
	if err != nil {
		n.linkLost("park", err)
		return err
	}
	if res != "ok" {
		return fmt.Errorf("the session's record is not this node's (%s)", res)
	}
	return nil
}

// restore takes back a session that could not be parked.
func (n *Node) restore(p *hub.Parked) {
	release, peerKey := uint64(0), ""
	if pp := p.Pair; pp != nil && pp.PeerNode == "" {
		// Paired with a parked partner, whose queue this node would
		// have to learn of again: the pairing goes, and both sides'
		// resumes say so. What failed is this node's link to Redis.
		release, peerKey = pp.ID, pp.PeerKey
		p.Unpair(proto.ReasonLinkLost, 0)
		n.countCuts(cutRedisLost, 1)
	}
	if err := n.hub.Import(p, nil); err != nil {
		n.log.Error("cannot take back a session that could not be parked; it is logged out", zap.String("error", err.Code))
		n.Unregister(p.Key, p.Token)
		return
	}
	if release != 0 {
		n.Release(p.Key, release)
		go n.releaseParked(peerKey, release, proto.ReasonLinkLost, 0)
	}
	if pp := p.Pair; pp != nil && pp.PeerNode != n.addr {
		n.sender(pp.PeerNode).add(true, frameMoved, pp.ID, pp.PeerKey, p.Key, nil, uint64(p.Gen+1))
	}
}

// tellLeft tells the partner of a pairing cut here that it ended: its
// node, or, when it is parked, its record. For a parked partner whose
// outbox here holds messages for it, the end goes after them, through
// the parker, as a partner's leave does: beside the park in order, or
// to the node that takes the session up meanwhile.
//
// A partner live on another node is told how many of its messages
// reached this one, as a leave tells it: what was on its way as the
// pairing was cut (a batch Redis handed this node as it lost its link,
// and that it never read) was published to a listener, and only this
// node can say it did not arrive.
func (n *Node) tellLeft(c hub.RemoteCut, reason proto.Reason) {
	var arrivals []byte
	if co, ok := c.Outbox.(*remoteOutbox); ok {
		arrivals = co.arrivalsTo(c.Node)
	}
	o := n.route(c.Key, c.PairID)
	if c.Node == "" && o != nil && o.cut(reason) {
		return
	}
	if o != nil {
		o.forget()
	}
	if c.Node != "" {
		n.sender(c.Node).add(true, frameLeft, c.PairID, c.PeerKey, string(reason), arrivals, 0)
		return
	}
	go n.releaseParked(c.PeerKey, c.PairID, reason, 0)
}

// releaseParked records that a parked session's partner left pairing
// pair for reason, undelivered of the session's messages never reaching
// it.
func (n *Node) releaseParked(key string, pair uint64, reason proto.Reason, undelivered int) {
	ctx, cancel := n.op()
	defer cancel()
	err := n.runReleaseParked(ctx, n.rdb, key, pair, reason, undelivered).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		n.linkLost("release", err)
	}
}

// runReleaseParked runs the script that records the end of pairing pair
// in the park of the session key (releaseParkedScript), on c: Redis, or
// a pipeline.
func (n *Node) runReleaseParked(ctx context.Context, c redis.Scripter, key string, pair uint64, reason proto.Reason, undelivered int) *redis.Cmd {
	hn := n.keys.nameHash(key)
	return releaseParkedScript.Run(ctx, c, []string{n.userKey(hn), n.parkKey(hn), n.queueKey(hn)},
		hn, n.pairArg(pair), n.opts.Prefix, n.grace().Milliseconds(), n.sealLeft(hn, pair, reason, undelivered))
}

// sealLeft seals how a parked session's pairing pair ended: the
// peer_left its resume is to tell, without the partner's name, which
// the session has.
func (n *Node) sealLeft(hn string, pair uint64, reason proto.Reason, undelivered int) []byte {
	b := binary.AppendUvarint(nil, uint64(max(undelivered, 0)))
	b = append(b, reason...)
	return n.seal.sealNamed(nil, b, leftAAD(hn, pair))
}

// openLeft reads how pairing pair of the parked session hn ended, as
// the claim found it in the park (sealLeft). When no node recorded it,
// the partner's record was freed by the reaping of its node, which
// died: its partners are told disconnected, as those of a node that
// dies are. A left that fails to open is refused and counted as a
// record no node wrote, and told as disconnected too: the pairing is
// gone either way, and the user is told so.
func (n *Node) openLeft(op *opener, hn string, pair uint64, sealed string) (proto.Reason, int) {
	if sealed == "" {
		return proto.ReasonDisconnected, 0
	}
	b, err := op.open([]byte(sealed), leftAAD(hn, pair))
	if err == nil {
		if count, k := binary.Uvarint(b); k > 0 && count <= math.MaxInt32 && len(b) > k {
			return proto.Reason(b[k:]), int(count)
		}
	}
	n.recordsRejected.Add(1)
	n.log.Warn("refused how a parked session's pairing ended: not sealed for it by a node of this cluster")
	return proto.ReasonDisconnected, 0
}

// Drain parks every session of this node that is away, so that users
// told to reconnect (a node being drained) find theirs on any node; a
// session is parked for a resume that asks for it anyway, and this
// parks the rest. It returns once all are parked, or ctx ends, with how
// many it parked; what could not be parked stays.
func (n *Node) Drain(ctx context.Context) int {
	keys := n.hub.AwayKeys()
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		parked int
	)
	// A few at a time: each waits a round trip or two on other nodes.
	sem := make(chan struct{}, 16)
	for _, key := range keys {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := n.park(ctx, key, nil); err == nil {
				mu.Lock()
				parked++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	n.waitParker(ctx)
	// The partners' nodes learn of the parks (K) before this node goes.
	n.drainSenders(ctx)
	return parked
}

// rescueParked looks, before the pairings with dead nodes are cut, at
// those whose partner a dead node was moving (frozen): if it parked the
// partner before it died, and only its word of that (K) was lost with
// it, the partner is parked, and its pairing stands.
func (n *Node) rescueParked(ctx context.Context, gone func(addr string) bool) {
	n.mu.Lock()
	var frozen []*remoteOutbox
	for _, o := range n.routes {
		o.mu.Lock()
		if o.state == routeFrozen && o.s != nil && gone(o.s.dest) {
			frozen = append(frozen, o)
		}
		o.mu.Unlock()
	}
	n.mu.Unlock()
	for _, o := range frozen {
		hn := n.keys.nameHash(o.to)
		pipe := n.rdb.Pipeline()
		node := pipe.HGet(ctx, n.userKey(hn), "node")
		gen := pipe.HGet(ctx, n.parkKey(hn), "gen")
		ttl := pipe.PTTL(ctx, n.parkKey(hn))
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			n.linkLost("check", err)
			return
		}
		o.mu.Lock()
		g := o.gen
		o.mu.Unlock()
		if node.Val() != "" || gen.Val() != strconv.FormatUint(uint64(g), 10) || ttl.Val() <= 0 {
			continue // not parked: the pairing is cut with the node
		}
		o.control(move{kind: frameParked, gen: g, window: ttl.Val() - n.grace()})
	}
}

// maxFollow bounds the parked partners one check looks up in Redis, so
// that a rolling restart's thousands of parks cost Redis little each
// second; with more, each check looks at a sample, and each partner is
// looked at within a few checks.
const maxFollow = 256

// followClaims looks up in Redis where the partners this node holds
// messages for, parked or awaited (taken up elsewhere, and its node's
// word of it not here yet), are now. A node that claims a parked
// session tells the partner's node so (O); if it dies first, nothing
// else would end the pairing before the session's window. So a partner
// whose record names a live node is awaited there: the hub watches that
// node, and cuts the pairing if it dies. One whose record names a node
// that is dead (dead, from this check's leases) is cut now, with
// disconnected, as its partners on that node are; and one that is
// neither parked nor on any node, two checks in a row (its node died
// and was reaped, and a word on its way has had a check's time to
// come), too. The user here is told how many of its messages held for
// the partner did not reach it.
func (n *Node) followClaims(ctx context.Context, dead map[string]bool, live map[string]leaseInfo) {
	n.mu.Lock()
	var follow []*remoteOutbox
	for _, o := range n.routes {
		if len(follow) == maxFollow {
			break
		}
		o.mu.Lock()
		if (o.state == routeParked || o.state == routeAwaiting) && !o.busy && !o.quiet {
			follow = append(follow, o)
		}
		o.mu.Unlock()
	}
	n.mu.Unlock()
	if len(follow) == 0 {
		return
	}
	type lookup struct {
		o    *remoteOutbox
		gen  uint32
		node *redis.StringCmd
		park *redis.IntCmd
	}
	pipe := n.rdb.Pipeline()
	looks := make([]lookup, len(follow))
	for i, o := range follow {
		hn := n.keys.nameHash(o.to)
		o.mu.Lock()
		gen := o.gen
		o.mu.Unlock()
		looks[i] = lookup{o: o, gen: gen, node: pipe.HGet(ctx, n.userKey(hn), "node"), park: pipe.Exists(ctx, n.parkKey(hn))}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		n.linkLost("check", err)
		return
	}
	var reroute []func()
	defer func() {
		for _, f := range reroute {
			f()
		}
	}()
	for _, l := range looks {
		node, err := l.node.Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			continue
		}
		o := l.o
		o.mu.Lock()
		if o.gen != l.gen || o.busy || o.quiet || (o.state != routeParked && o.state != routeAwaiting) {
			// News came meanwhile, or the parker or a claim here is
			// at work on it: the next check looks again.
			o.mu.Unlock()
			continue
		}
		cut := false
		switch li, isLive := live[node]; {
		case node == n.id:
			// Taken up here: the claim sees to the outbox.
			o.nowhere = 0
		case node != "" && isLive:
			o.nowhere = 0
			if o.state == routeParked && o.timer != nil {
				o.timer.Stop()
				o.timer = nil
			}
			addr := address(node, li.inc)
			o.state, o.at = routeAwaiting, addr
			reroute = append(reroute, func() { n.hub.Reroute(o.from, o.pair, addr) })
		case node != "" && dead[node]:
			cut = true
		case node == "" && l.park.Val() > 0:
			o.nowhere = 0 // parked
		case node == "":
			o.nowhere++
			cut = o.nowhere >= 2
		}
		var undelivered int
		if cut {
			undelivered = o.endLocked()
		}
		o.mu.Unlock()
		if cut {
			n.dropRoute(o)
			if n.hub.RemoteLeft(o.from, o.pair, proto.ReasonDisconnected, undelivered) {
				n.countCuts(cutNodeGone, 1)
			}
		}
	}
}

// cutAwaited ends the pairings whose partner a node that is gone was
// moving (frozen), or had taken up (awaited), telling the user here how
// many of its messages held for the partner never reached it: the hub's
// cut of that node's pairings (CutRemote), which would find them too,
// tells no count.
func (n *Node) cutAwaited(gone func(addr string) bool) {
	type end struct {
		o           *remoteOutbox
		undelivered int
	}
	var ends []end
	n.mu.Lock()
	for _, o := range n.routes {
		o.mu.Lock()
		if !o.busy && !o.quiet && (o.state == routeFrozen && o.s != nil && gone(o.s.dest) ||
			o.state == routeAwaiting && o.at != "" && gone(o.at)) {
			ends = append(ends, end{o, o.endLocked()})
		}
		o.mu.Unlock()
	}
	n.mu.Unlock()
	for _, e := range ends {
		n.dropRoute(e.o)
		if n.hub.RemoteLeft(e.o.from, e.o.pair, proto.ReasonDisconnected, e.undelivered) {
			n.countCuts(cutNodeGone, 1)
		}
	}
}

// Park parks the session key of this node, which is away, for a resume
// on any node (a drain parks each session before its client is told to
// reconnect, so the resume finds it parked). It returns once the
// partner's node has been sent word of it, or ctx ends, and reports
// whether the session was parked.
func (n *Node) Park(ctx context.Context, key string) bool {
	if err := n.park(ctx, key, nil); err != nil {
		return false
	}
	n.drainSenders(ctx)
	return true
}

// drainSenders waits until every sender has published what was queued
// to it so far (the word of each park among it), or ctx ends.
func (n *Node) drainSenders(ctx context.Context) {
	n.mu.Lock()
	senders := make([]*sender, 0, len(n.senders))
	for _, s := range n.senders {
		senders = append(senders, s)
	}
	n.mu.Unlock()
	for _, s := range senders {
		s.drain(ctx)
	}
}

// waitParker waits until what this node's users said to parked
// partners is queued in Redis, or ctx ends.
func (n *Node) waitParker(ctx context.Context) {
	for !n.parkerIdle() && ctx.Err() == nil && n.ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
}
