package engine

import (
	"bytes"
	"errors"
	"io"
	"time"

	"go.uber.org/zap"

	"duet/engine/auth"
	"duet/engine/hub"
	"duet/proto"
)

// A connection's input is held (left unread, its socket out of the
// event loop's read set) while it waits for something, for one of four
// reasons. Whatever the reason, the hold is set by hold, ends in
// release, which onTraffic calls first on every wake-up and which
// finishes what was waited for before the input is read again, and is
// given up by abandonHold when the connection closes.
type holdReason uint8

const (
	holdNone holdReason = iota
	// holdBackpressure: a reader the connection writes to (its partner,
	// or itself for its own replies) holds more than
	// limits.outbound_high. on is that reader's hub.Queue, which wakes
	// the connection once it has drained to the low mark.
	holdBackpressure
	// holdLogin: an accounts-mode login is being checked off the loop,
	// and a connect or a message right behind it must see the session it
	// creates. on is the *auth.Login, which wakes the connection with its
	// answer.
	holdLogin
	// holdDirectory: a command waits on the cluster directory, off the
	// loop (directory.go), so the connection's commands still run one at
	// a time and in order. on is the *directoryCall, which wakes the
	// connection with its answer.
	holdDirectory
	// holdThrottle: a connect is held by the failed-connect throttle
	// (throttle.go). on is the *heldConnect; a timer wakes the
	// connection when it is due.
	holdThrottle
)

// inputHold is why a connection's input is held, and what for.
type inputHold struct {
	why holdReason
	on  any
}

// awaitsAnswer reports whether the hold waits on the answer to a
// command the connection sent: the input behind that command is not the
// connection's to act on until the answer is in.
func (r holdReason) awaitsAnswer() bool { return r == holdLogin || r == holdDirectory }

// hold stops reading the connection's input until release.
func (cn *conn) hold(why holdReason, on any) {
	cn.flow.hold = inputHold{why: why, on: on}
	cn.disarmRead()
}

// held reports whether the connection's input is held.
func (cn *conn) held() bool { return cn.flow.hold.why != holdNone }

// release runs on the loop, from onTraffic, while the input is held. It
// reports false while what the hold waits for is not over; once it is,
// it finishes it (tells the login's or the directory's answer, checks
// the held connect), ends the hold and reports true, and the input that
// waited is read.
func (cn *conn) release() bool {
	h := &cn.flow.hold
	switch h.why {
	case holdBackpressure:
		// A wait is woken once (hub.Queue.Wait), when the reader is down
		// to the low mark; whoever ran before this on the wake (the
		// reader itself, reading commands whose replies it has not read)
		// may have filled it again since. So a connection that finds the
		// reader behind waits again: else no wake would ever come, and
		// its input would never be read again. Between the marks it goes
		// on reading, and pauses again past the high mark (backPressure).
		q := h.on.(hub.Queue)
		if q.Backlog() > cn.loop.srv.marks().Low() && !cn.heldInputOverflows() && q.Wait(cn) {
			return false
		}
		*h = inputHold{}
	case holdLogin:
		account, err, ok := h.on.(*auth.Login).Result()
		if !ok {
			return false
		}
		*h = inputHold{}
		cn.loggedIn(account, err)
	case holdDirectory:
		dc := h.on.(*directoryCall)
		if !dc.result() {
			return false
		}
		*h = inputHold{}
		cn.answered(dc)
	case holdThrottle:
		hc := h.on.(*heldConnect)
		early := time.Now().Before(hc.until)
		if early && !cn.heldInputOverflows() {
			return false
		}
		*h = inputHold{}
		if early {
			// The input behind the held connect passed heldInputMax:
			// rather than keep reading it into memory for the rest of
			// the hold, the connect is refused unchecked, and the input
			// read as any other.
			cn.answer(hc.op, 0, proto.ErrThrottled)
			break
		}
		cn.connectHeld(hc)
	}
	return true
}

// abandonHold gives up what the hold waits for when the connection
// closes with ending e: a login still waiting its turn or a checker is
// never checked, and a session a directory call makes is ended as e
// says: a login's is logged out (its client never learned its resume
// key), a resume's is ended or sent away, as the session the connection
// carried would be (endSession). A reader's queue or the throttle's
// timer wakes a closed connection, which gnet ignores.
func (cn *conn) abandonHold(e ending) {
	h := cn.flow.hold
	cn.flow.hold = inputHold{}
	switch h.why {
	case holdLogin:
		h.on.(*auth.Login).Abandon()
	case holdDirectory:
		dc := h.on.(*directoryCall)
		reason := endings[e].partnerReason()
		end := func(s *hub.Session) { s.Close(reason, 0) }
		if dc.op == proto.OpResume {
			end = func(s *hub.Session) { cn.endSessionOf(s, e, 0) }
		}
		dc.abandon(end)
	}
}

// heldInputCounts decides, as a connection closes, whether the input it
// has not read yet is still acted on. It is, for a logged-in connection
// (only one can have anything to say) that the client closed, by ending
// its input or as its connection broke: a file piped through netcat ends
// with end-of-file right after its last line, and the lines
// back-pressure held back are still relayed; how many there can be is
// bounded by heldInputMax. So it is when the server chose the ending
// (slow, shutdown, a drain): the client sent that input before it, and
// its TCP was told it arrived. It is not when the input itself brought
// the ending: what came after a quit, a close or binary frame, a flood
// or a protocol error is the client's after its end (RFC 6455 allows no
// data after a close frame). Nor when the input waits on an answer that
// will not come now, or the close came in the middle of reading it: that
// read has not discarded what it acted on yet, and would see it twice.
func (cn *conn) heldInputCounts() bool {
	return cn.sess != nil && !endings[cn.closing].byInput && !cn.flow.reading &&
		!cn.flow.hold.why.awaitsAnswer() && cn.c.InboundBuffered() > 0
}

// heldInputMax bounds the input a held connection may hold in the
// daemon. Holding takes the socket out of the read set, but gnet puts it
// back each time it writes to that connection with output left over, and
// again when that output drains; each time, one read (up to 64 KiB) is
// buffered before the connection is held again. A held sender whose
// own output keeps starting and draining (its partner talking to it
// while not reading) could otherwise pile up its input read after read.
//
// Past this bound the held input is acted on after all, and the sender
// pauses only once its reader holds limits.outbound_max, which is where
// the reader is cut off as a slow reader. A connect the throttle holds
// is answered throttled first, unchecked (release). Nothing is lost that would not
// be: the reader was not reading. Ordinary back-pressure holds at most a
// read or two, far below this.
const heldInputMax = 1 << 20

// heldInputOverflows reports whether this connection's unread input has
// passed heldInputMax.
func (cn *conn) heldInputOverflows() bool {
	return cn.c.InboundBuffered() > heldInputMax
}

// A client may end its input while a command in it waits on its answer,
// with more input behind that command: netcat -N at the end of a piped
// file that logs in with a password, connects and says its lines, or the
// same on a cluster node, where a login or a connect waits on the
// directory. The input behind the command is the client's to act on as
// much as the lines back-pressure held (heldInputCounts), but it cannot
// be acted on before the answer. So the close waits for it: the
// connection is closed and its output counted as for any close, and the
// input left is kept and acted on once the answer is in, as onClose acts
// on held input (nothing is told to the client any more); then the
// session ends as the connection's ending says. A command in that input
// that waits on an answer of its own waits in turn.
//
// Only an end of input waits so, on the line port: a client that ended
// its input meant what it sent. A connection that broke, or that the
// server closed, gives up what its input waited on (abandonHold). A
// login with nothing behind it is given up too: nobody would see its
// answer, and a flood of logins that hang up must not keep the password
// checkers busy (TestAbandonedLoginsAreNotChecked). A close that waits
// keeps its client's place under limits.max_conns_per_ip until it is
// over, so hanging up costs a client no fewer of its connections than
// staying connected would.

// lateClose is what a close that waits (awaitLate) has left to do.
type lateClose struct {
	rest    []byte       // the input not acted on yet
	ending  ending       // how the connection ended, unless the input says otherwise (a quit)
	lost    int          // what its outbox never wrote (outbox.Outbox.Close)
	waiters []hub.Waiter // senders that waited on its outbox, woken at the end
}

// lateInput returns what the close of a connection whose client ended
// its input (err, as gnet gives it) has left to do once the answer its
// input waits on is in, or nil when the close does not wait. It runs in
// onClose, before anything is closed. The input kept is bounded by
// heldInputMax, as held input is.
func (cn *conn) lateInput(err error) *lateClose {
	if !errors.Is(err, io.EOF) || cn.stage != stageLine || cn.closing != endNone || cn.flow.reading || !cn.flow.hold.why.awaitsAnswer() {
		return nil
	}
	buf, _ := cn.c.Peek(-1)
	rest := bytes.Clone(buf[:min(len(buf), heldInputMax)])
	// A login's hold hears the client hang up with most of what it sent
	// still in the kernel, unread (a file piped through netcat that fits
	// in the socket's receive buffer): gnet closes on the hang-up
	// without reading it. It all came before the end of input.
	whole := len(buf) <= heldInputMax
	if whole && cn.loop.epfd >= 0 {
		rest, whole = readRest(cn.c.Fd(), rest, heldInputMax)
	}
	if !whole {
		// Past the bound: acted on up to its last whole line, so that
		// none is cut short and passed on as if whole.
		rest = rest[:bytes.LastIndexByte(rest, '\n')+1]
		cn.logger().Warn("input after a hang-up exceeds the bound kept; acted on up to there",
			zap.Int("bytes", len(rest)), zap.Int("bound", heldInputMax))
	}
	if len(rest) == 0 {
		return nil
	}
	return &lateClose{rest: rest}
}

// awaitLate keeps late for finishLate, which runs now if the answer is
// in, and else once it comes (Wake).
func (cn *conn) awaitLate(late *lateClose) {
	cn.flow.draining, cn.flow.ended = true, true
	if cn.loop.late == nil {
		cn.loop.late = make(map[*conn]*lateClose)
	}
	cn.loop.late[cn] = late
	// Set before finishLate looks for the answer: an answer that comes
	// after the look wakes through the loop (Wake).
	cn.flow.late.Store(true)
	cn.finishLate()
}

// checkLate gives up a close that waits on its input once
// limits.login_timeout has passed since the connection opened with no
// login: its input may hold login after login (wrong passwords, each
// waiting its turn of the throttle), and its address's place under
// limits.max_conns_per_ip with them, where an open connection would
// have been ended by then (checkDeadlines). It runs with the loop's
// tick.
func (cn *conn) checkLate(late *lateClose) {
	if cn.sess != nil || cn.loop.since(cn.opened) <= cn.loop.srv.lim().LoginTimeout {
		return
	}
	cn.abandonHold(endLoginWait)
	delete(cn.loop.late, cn)
	cn.flow.late.Store(false)
	cn.closing = endLoginWait
	cn.logClosed()
	cn.endClosed(late.lost, late.waiters)
	cn.releaseAddr()
}

// finishLate runs on the loop once an answer a closed connection's input
// waited on may be in: it takes the answer and acts on the input after
// it; once that is used up, it ends the session. A wake that finds the
// answer not in yet, or the close over, does nothing.
func (cn *conn) finishLate() {
	late := cn.loop.late[cn]
	if late == nil || !cn.held() {
		return
	}
	// No ending yet while the input is acted on: the answer is taken as
	// on an open connection (loggedIn ignores one that is ending), and
	// an ending the input brings (a quit) takes the place of late's.
	cn.closing = endNone
	if cn.release() {
		late.rest = late.rest[cn.actOn(late.rest):]
	}
	if cn.held() {
		cn.closing = late.ending // waits on this answer, or the next
		return
	}
	delete(cn.loop.late, cn)
	cn.flow.late.Store(false)
	if cn.closing == endNone {
		cn.closing = late.ending
	}
	cn.logClosed()
	cn.endClosed(late.lost, late.waiters)
	cn.releaseAddr()
}
