package engine

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"duet/proto"
)

// A drain is how a node of a cluster goes for a restart without ending
// a conversation (docs/RESUME.md, docs/OPERATIONS.md): each client is
// told to reconnect, and its session goes away to wait for a resume
// instead of ending, so that a resume on any other node takes it up.
// The closes are spread over a period, so that the other nodes see the
// reconnections arrive at that rate, not all at once. New connections
// are refused meanwhile (shutting_down), as in a shutdown.
//
// What keeps the sessions for the other nodes is the directory's
// business: Drain's Parker parks each before its client is told, and
// the caller parks what is left away once Drain returns
// (cluster.Node.Drain). A single node has no one to hand its sessions
// to, so its daemon shuts down instead (Shutdown ends the sessions).

// drainTick is how often a drain ends the connections whose turn has
// come: fine enough that a period of a second spreads them, coarse
// enough that a loop is not woken for each of thousands.
const drainTick = 10 * time.Millisecond

// drainParallel bounds the sessions a drain parks at once: each park
// waits a round trip or two on Redis and on the partner's node.
const drainParallel = 16

// Parker parks the session key, away, for a resume on any node, and
// reports whether it did (cluster.Node.Park).
type Parker func(ctx context.Context, key string) bool

// Drained is what a drain did to this server's connections, by the
// ending each was given: an operator who reads that every connection
// was told to reconnect must be able to trust that each can resume.
type Drained struct {
	// Told is how many were told to reconnect and resume (the ending
	// drain), those that carried no session among them.
	Told int
	// NotParked is how many were told instead that their session could
	// not be kept (the ending not_parked).
	NotParked int
}

// Drain tells every client of this server to reconnect and resume, and
// closes its connection, sending its session away (the ending drain);
// the closes are spread evenly over period (0: all at once). With park
// (a node of a cluster), each session is parked before its client is
// told, so that the resume, wherever it comes, finds it parked; one
// that cannot be parked ends, and its client is told so (not_parked)
// instead of to resume. Drain returns how many connections it ended,
// by ending, once every connection has closed or ctx has ended. New
// connections are refused from the start. Drain runs once: a second
// call returns nothing at once.
func (s *Server) Drain(ctx context.Context, period time.Duration, park Parker) Drained {
	if !s.restarting.CompareAndSwap(false, true) {
		return Drained{}
	}
	// Every session goes away now, each told to resume: none is to be
	// ended to make room for the others (resume.max_away).
	s.hub.SetDraining()
	type target struct {
		ls *loopState
		cn *conn
	}
	var all []target
	for _, ls := range s.loopList() {
		got := make(chan []*conn, 1)
		err := ls.execute(ctx, func() { got <- slices.Clone(ls.conns) })
		if err != nil {
			continue // the loop is stopping: its connections are closing
		}
		select {
		case list := <-got:
			for _, cn := range list {
				all = append(all, target{ls, cn})
			}
		case <-ctx.Done():
			return Drained{}
		}
	}
	// What the drain did: counted as each connection is given its
	// ending, and not for one that closed before its turn came, or
	// between its two halves (its client hung up).
	var told, notParked atomic.Int64
	drained := func() Drained {
		return Drained{Told: int(told.Load()), NotParked: int(notParked.Load())}
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, drainParallel)
	// finish tells cn's client, once its session is parked, to resume
	// it. A session that could not be parked (the link to Redis failed
	// partway through the drain, or the drain ran out of time) would be
	// resumed nowhere: it ends here, its partner told, and the client is
	// told so (not_parked) rather than to resume.
	finish := func(ls *loopState, cn *conn, key, notice string) {
		defer wg.Done()
		e := endDrain
		if key != "" && park != nil {
			parked := false
			select {
			case sem <- struct{}{}:
				parked = park(ctx, key)
				<-sem
			case <-ctx.Done():
			}
			if !parked {
				e = endNotParked
				s.hub.EndAway(key, endings[e].partnerReason())
			}
		}
		done := make(chan struct{})
		err := ls.execute(context.Background(), func() {
			defer close(done)
			switch {
			case !cn.drainFinish(e, notice):
			case e == endDrain:
				told.Add(1)
			default:
				notParked.Add(1)
			}
		})
		if err == nil {
			select {
			case <-done:
			case <-ctx.Done():
			}
		}
	}
	start := time.Now()
	tick := time.NewTicker(drainTick)
	defer tick.Stop()
	for next := 0; next < len(all); {
		// The i-th of n closes at start + period*i/n.
		due := next
		elapsed := time.Since(start)
		for due < len(all) && time.Duration(int64(period)*int64(due)/int64(len(all))) <= elapsed {
			due++
		}
		byLoop := make(map[*loopState][]*conn)
		for _, t := range all[next:due] {
			byLoop[t.ls] = append(byLoop[t.ls], t.cn)
		}
		for ls, list := range byLoop {
			wg.Add(len(list))
			err := ls.execute(ctx, func() {
				for _, cn := range list {
					key, notice, ok := cn.drainBegin()
					if !ok {
						wg.Done()
						continue
					}
					go finish(ls, cn, key, notice)
				}
			})
			if err != nil {
				wg.Add(-len(list))
			}
		}
		next = due
		if next < len(all) {
			select {
			case <-ctx.Done():
				wg.Wait()
				return drained()
			case <-tick.C:
			}
		}
	}
	wg.Wait()
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for s.conns.Load() > 0 {
		select {
		case <-ctx.Done():
			return drained()
		case <-poll.C:
		}
	}
	return drained()
}

// Draining reports whether Drain has begun.
func (s *Server) Draining() bool { return s.restarting.Load() }

// drainBegin is the first half of a drain's end of the connection, on
// its loop: its session goes away (to be parked), and the connection
// carries no session from then on, since once the client is told its
// resume may come on another connection before this one has closed. It
// returns the session's key ("" for none) and what the client is to be
// told, and false if the connection is ending already. Until
// drainFinish, the connection carries out nothing it reads, and counts
// the messages among it for the notice (drainedInput).
func (cn *conn) drainBegin() (key, notice string, ok bool) {
	if cn.closed || cn.closing != endNone {
		return "", "", false
	}
	notice = cn.drainNotice()
	if cn.sess != nil {
		// Only a session that can be resumed (it has a key, and resume
		// is on: the notice names them) is parked; any other ends here,
		// as a drain's ending says, and is not one a park failed.
		if notice != "" {
			key = cn.sess.Key()
		}
		// What is queued for the client stays queued, to be written
		// before the notice if it reads on; but the connection is
		// closed soon, and a reader that stopped never takes it, nor
		// perhaps what its socket holds unacknowledged. So the session
		// goes away with the count of every message its client is not
		// known to have received, as a connection that drops with
		// messages queued does (onClose), and its resume replays them
		// however long ago they came, or counts those not kept. The
		// outbox is retired first, so that nothing is queued after the
		// count: what the partner relays until the session is away is
		// dropped, and counted with it (hub.Session.Detach).
		for _, w := range cn.out.Retire() {
			w.Wake()
		}
		cn.endSession(endDrain, cn.out.Unreceived(cn.c.OutboundBuffered()))
		cn.sess = nil
		cn.guardFor().sentAway = true
	}
	return key, notice, true
}

// sentAway reports whether a drain sent the connection's session away
// and has yet to close it (inputGuard.sentAway).
func (cn *conn) sentAway() bool { return cn.guard != nil && cn.guard.sentAway }

// drainedInput takes a command read between a drain's two halves, and
// reports whether it did. Its answer could not be written (the outbox
// is retired), and carrying it out would be worse: a login or a resume
// would take a session onto a connection about to close. So it is not
// carried out, and a message is counted instead, for the drain's notice
// to tell (drainFinish): the client is told to resume, and that these
// never went, rather than nothing. No token is spent on it, so that none
// is dropped and told an error that cannot be written; a quit goes too,
// the connection closing at the notice anyway.
func (cn *conn) drainedInput(cmd *proto.Command) bool {
	if !cn.sentAway() {
		return false
	}
	if cmd.Op == proto.OpSay || cmd.Op == proto.OpSeal {
		cn.guard.retired++
	}
	return true
}

// drainedRefusal takes input read between a drain's two halves that is
// refused as it is read (a line too long or that does not decode, a
// JSON say whose text does not), and reports whether it did. Its error
// could not be written, as no answer can then (drainedInput): it is not
// told, and a message is counted for the drain's notice. say says
// whether the input was a message: on the line port, any line but a
// command; in JSON, a say or seal.
func (cn *conn) drainedRefusal(say bool) bool {
	if !cn.sentAway() {
		return false
	}
	if say {
		cn.guard.retired++
	}
	return true
}

// drainFinish ends the connection for e: endDrain tells the client to
// reconnect (a line client with its resume key, which it would
// otherwise have to find further up its screen), endNotParked that its
// session could not be kept; either closes the connection once what is
// queued for it is written. Either tells how many messages the client
// sent meanwhile, which went nowhere (drainedInput). It reports false
// for a connection that closed, or began to end another way,
// meanwhile: it is told nothing.
func (cn *conn) drainFinish(e ending, notice string) bool {
	if cn.closed {
		return false
	}
	var undelivered int
	if cn.sentAway() {
		undelivered = cn.guard.retired
	}
	if e != endDrain {
		notice = ""
		if undelivered > 0 {
			// not_parked tells no notice of its own: the count needs one.
			notice = notParkedNotice
		}
	}
	// Bytes buffered on a connection that has not upgraded are a
	// request not yet whole: that one is answered (503). With none, the
	// connection is between requests.
	idle := cn.stage == stageHTTP && cn.c.InboundBuffered() == 0
	told := cn.closing == endNone // else it is ending another way: closed now
	cn.endAs(e, endDetail{notice: notice, idle: idle, undelivered: undelivered})
	return told
}

// notParkedNotice carries the count of a not_parked ending's messages
// that went nowhere, between its error and its goodbye.
const notParkedNotice = "the server is restarting"

// drainNotice is what a client is told as a drain ends its connection.
func (cn *conn) drainNotice() string {
	window := cn.loop.srv.resume.Load().Window
	if cn.sess == nil || window <= 0 {
		return ""
	}
	key := cn.resumeKey.Load()
	if key == nil {
		return ""
	}
	return drainNoticeText(cn.stage != stageWS, key.String(), window)
}

// drainNoticeText is the notice of a drain to a session with resume key
// key: a line client is given the command to type, since the key is
// otherwise further up its screen; a browser knows its key.
func drainNoticeText(isLine bool, key string, window time.Duration) string {
	var b []byte
	if isLine {
		b = append(b, "the server is restarting; reconnect and type /resume "...)
		b = append(b, key...)
		b = append(b, " within "...)
	} else {
		b = append(b, "the server is restarting; reconnect and resume your session within "...)
	}
	return string(proto.AppendWindow(b, window))
}

// drainGrace is how long a line client a drain told to resume is read
// after the notice (closeSocket), before the messages it sent meanwhile
// are told and its connection closes: what it sent before the notice
// reached it arrives within a round trip.
const drainGrace = 500 * time.Millisecond

// readLate counts the messages a line client a drain told to resume
// sent after the notice, in its grace (closeSocket): they were not
// delivered, and graceOver tells the notice again with their count, as
// its user would otherwise take them for sent. The input is thrown away
// up to its last whole line; a part line waits for its end, up to the
// bound of a line.
func (cn *conn) readLate() {
	buf, _ := cn.c.Peek(-1)
	end := bytes.LastIndexByte(buf, '\n') + 1
	if g := cn.loop.graced[cn]; g != nil {
		g.late += lateMessages(buf[:end])
	}
	if len(buf)-end > cn.loop.srv.lim().MaxLine {
		end = len(buf)
	}
	_, _ = cn.c.Discard(end)
}

// lateMessages counts the messages among lines, whole lines of the line
// protocol: any line but a command (one starting with a single '/') or
// an empty one.
func lateMessages(lines []byte) int {
	n := 0
	for len(lines) > 0 {
		l, rest, _ := bytes.Cut(lines, []byte{'\n'})
		lines = rest
		l = bytes.TrimRight(l, "\r")
		switch {
		case len(l) == 0:
		case l[0] == '/' && !bytes.HasPrefix(l, []byte("//")):
		default:
			n++
		}
	}
	return n
}
