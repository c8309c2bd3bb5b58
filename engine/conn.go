package engine

import (
	"context"
	"errors"
	"io"
	"math"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"duet/engine/hub"
	"duet/engine/outbox"
	"duet/engine/tally"
	"duet/proto"
	"duet/proto/line"
	"duet/proto/wsframe"
)

// stage is where a connection is in its life.
type stage uint8

const (
	stageLine stage = iota // line protocol (netcat, telnet)
	stageHTTP              // HTTP requests on the web port, before any upgrade
	stageWS                // WebSocket, JSON protocol
	// The line protocol before its first line, which may be a PROXY
	// protocol header (realaddr.go).
	stageProxy
)

// conn is duet's state for one connection, grouped by concern: who the
// client is (addr), the protocol it speaks (stage, and the state of that
// protocol's reader), the session it carries and its outbound queue, its
// flow (held input, output gnet holds) and how it ends. Everything in it
// is touched only on the connection's event loop, except out (its own
// locking) and what a partner's loop reads to deliver (loop, c, web).
//
// An idle connection is most of what duetd holds, so conn is kept small:
// state only some connections need (a protocol's reader, the rate
// limiter) lives behind a pointer allocated when needed.
type conn struct {
	loop *loopState // and its srv, the server
	c    gnet.Conn
	id   uint64
	// slot is the connection's index in its loop's conns, -1 once it
	// left them.
	slot int32
	// web: the connection came in on the web port, and is sent JSON in
	// WebSocket frames once upgraded; else the line protocol. Set when
	// it is made, never changed: any goroutine may read it (owner.go).
	// It is in conn's first cache line, with loop and c, which is all a
	// partner's loop reads as it delivers (owner.go), and which this
	// connection's own reads do not write (TestConnLayout).
	web bool
	// refused is the refusal a web connection met as it opened (too many
	// from its address, the server full or shutting down), endNone for
	// one admitted: it is kept to read its request, and ends only so,
	// told why in the answer (refuseRequest). Set when it is made, never
	// changed; it fills what would be padding after web.
	refused ending
	// directsSeen is the low bits of the outbox's count of direct writes
	// as the loop's last tick saw it (tickTCP): written once a tick at
	// most, in what would be padding too.
	directsSeen uint16

	addr connAddr

	stage stage
	// closing is how the connection is ending (ending.go); endNone
	// while it is open. closed is set once gnet has closed it.
	closing ending
	closed  bool
	// keptAlive: the web port answered a request on the connection and
	// kept it open, so that before the upgrade it waits between
	// requests, not on its first (checkDeadlines).
	keptAlive bool
	// directErr is the errno of a direct write that failed (WriteDirect),
	// 0 if none: the write took the socket's pending error, which
	// onClose would otherwise look for to tell a reset from an end of
	// input. Written by any goroutine.
	directErr atomic.Int32

	line *lineIn  // stageProxy, stageLine, while not at rest (lendFramer); nil on the web port
	ws   *wsState // stageWS; nil before the upgrade

	sess *hub.Session
	out  *outbox.Outbox
	// resumeKey is the resume key the session was last told on this
	// connection (its welcome, or the answer to its resume), for the
	// notice of a drain (drain.go). The hub keeps only its hash; the
	// key never leaves the connection it was told on. Set by the
	// encoder, on whatever goroutine delivers.
	resumeKey atomic.Pointer[proto.ResumeKey]
	guard     *inputGuard // dropped and refused input; nil until needed (ratelimit.go)
	// bucketFull is when the connection's token bucket for commands is
	// full again (ratelimit.go).
	bucketFull stamp

	flow flowState

	// opened is when the connection opened, or when its current
	// deadline started: the upgrade for a WebSocket's login, the last
	// answer for the next request's head (checkDeadlines).
	opened stamp
}

// connAddr is who a connection's client is (realaddr.go).
type connAddr struct {
	// ip is the client's address: the peer's, or what a trusted proxy
	// vouches for; invalid when that was not an address. It is kept as
	// an address, not its text, which would cost every connection an
	// allocation: the text is made when a log line or a login needs it.
	ip netip.Addr
	// v6bits is limits.ipv6_prefix when the connection was counted
	// against limits.max_conns_per_ip: it is counted under
	// tally.AddrKey(ip, v6bits) (key). A byte, where the key itself
	// would take 32 beside ip, which keeps conn in its size class.
	v6bits    uint8
	counted   bool
	fromProxy bool // the socket peer is a trusted proxy
}

// key is what the connection is counted under, when counted.
func (a *connAddr) key() netip.Prefix { return tally.AddrKey(a.ip, int(a.v6bits)) }

// text is the client's address as logs and logins show it.
func (a *connAddr) text() string {
	if !a.ip.IsValid() {
		return ""
	}
	return a.ip.String()
}

// v6bitsOf is limits.ipv6_prefix as connAddr keeps it: what
// tally.AddrKey would take it for, in a byte.
func v6bitsOf(bits int) uint8 {
	if bits < 1 || bits > 128 {
		return 128
	}
	return uint8(bits)
}

// wsState is a WebSocket's own state, made at the upgrade.
type wsState struct {
	r        wsframe.Reader
	lastRecv time.Time // the last whole frame outside a fragmented message: idle detection
	lastPing time.Time
	// acked is what the client's TCP had acknowledged at the last look,
	// and behind says the socket then held bytes it could not send yet
	// (lookReading). behind is false when there was no look the tick
	// before: a look compares with the one just before it only.
	acked  uint64
	behind bool
	// pongsOwed counts the server's pings not yet answered, whose
	// pongs cost nothing; any other pong spends a token (spendPong). A
	// client that reads late answers several at once.
	pongsOwed uint8
}

// flowState is a connection's flow control: the hold on its input
// (hold.go), and how the output gnet holds for it is going (a slow
// reader is cut off).
type flowState struct {
	hold     inputHold
	reading  bool // readInput is acting on the input (heldInputCounts)
	draining bool // onClose is acting on the input left unread: nothing is held, waited for or told any more
	// ended: while draining, the client ended its input (end of file),
	// so a last line without its '\n' is a line (line.Framer.End).
	ended bool
	// tcp says whether the socket's TCP_USER_TIMEOUT is set aside, its
	// loop counting it instead, and whether the loop wrote to the socket
	// since its last tick (untimed.go).
	tcp tcpWatch
	// late: the connection closed while its input waited on an answer,
	// and finishes once the answer is in (lateClose). Read by Wake on
	// any goroutine.
	late atomic.Bool

	// heldBytes is gnet's outbound buffer at the last look. It and owed
	// are 32 bits, so that conn keeps its size class
	// (TestConnFitsItsSizeClass): a batch is too (outbox).
	heldBytes int32
	// owed is what gnet and the kernel held for the client that its
	// TCP had not acknowledged, at the last check (checkOwed); -1 when
	// not known. gnet's buffer alone may stay as it is while the reader
	// takes a megabyte: Linux lets gnet write again only once about a
	// third of the kernel's send buffer is free.
	owed         int32
	lastProgress stamp // when the reader was last seen to take some
}

func newConn(ls *loopState, c gnet.Conn, id uint64, isLine bool, addr connAddr) *conn {
	cn := &conn{loop: ls, c: c, id: id, addr: addr, opened: ls.stamp()}
	cn.out = cn.newOutbox(isLine)
	if isLine {
		cn.stage = stageProxy
		cn.out.SetDirect(true) // see WriteDirect; a web connection's at the upgrade
	} else {
		cn.stage = stageHTTP
	}
	return cn
}

func (cn *conn) logger() *zap.Logger {
	return cn.loop.srv.log.With(zap.Uint64("conn", cn.id), zap.String("remote", cn.addr.text()))
}

// newOutbox makes the connection's outbound queue: events encoded for
// the protocol of the port it came in on (the line protocol, or JSON in
// WebSocket frames, which a web connection speaks once upgraded: no
// event is delivered to it before), flushed on its loop (owner.go).
func (cn *conn) newOutbox(isLine bool) *outbox.Outbox {
	cn.web = !isLine
	return outbox.New(cn)
}

// marks are limits.outbound_high and limits.outbound_max, as an outbox
// takes them.
func (s *Server) marks() outbox.Marks {
	l := s.lim()
	return outbox.Marks{High: int64(l.OutboundHigh), Max: int64(l.OutboundMax)}
}

// help answers /help: with the login this server takes, and /resume
// only if it keeps sessions to resume.
func (cn *conn) help() {
	cn.out.Deliver(&proto.Event{Kind: proto.EvHelp, Auth: cn.loop.srv.opts.AuthMode, Window: cn.loop.srv.resume.Load().Window})
}

// onTraffic reads what has arrived and acts on each complete command.
// gnet calls it when input arrives and when the connection is woken
// (Wake): a held connection first sees whether its hold is over.
func (cn *conn) onTraffic() gnet.Action {
	if cn.closing != endNone {
		if _, lingering := cn.loop.lingering[cn]; lingering {
			// Read and thrown away (closeSocket), or, within a drain's
			// grace, answered.
			if _, graced := cn.loop.graced[cn]; graced {
				cn.readLate()
				cn.graceOver()
			} else {
				_, _ = cn.c.Discard(-1)
			}
			return gnet.None
		}
	}
	released := false
	if cn.held() {
		if !cn.release() {
			cn.disarmRead() // gnet re-armed it after a write; the hold goes on
			return gnet.None
		}
		released = true
	}
	if cn.sess != nil {
		// The client just sent, and with it acknowledged all it had
		// received: the moment to see what of the messages kept for its
		// resume it has (hub.ReadStride). What was found before, the
		// session was told then. The look comes before the input is
		// acted on: an answer it carries reaches the partner, whose
		// reply may be queued to this client from another loop at once,
		// and a look after it would find that reply unacknowledged and
		// take nothing newer than the look before as received.
		if seq, looked := cn.out.LookAcked(hub.ReadStride); looked {
			cn.sess.Received(seq)
		}
	}
	cn.out.SetInline(true)
	cn.readInput()
	cn.out.SetInline(false)
	cn.flush()
	if released && !cn.held() {
		// Re-arm only once the input held back is used up: gnet closes a
		// connection as soon as it reads end-of-file, without handing over
		// what is still buffered (onClose then drains it).
		cn.armRead()
	}
	if cn.closing != endNone && !cn.closed && !cn.out.Pending() && cn.c.OutboundBuffered() == 0 {
		if _, lingering := cn.loop.lingering[cn]; !lingering {
			cn.closeSocket()
		}
	}
	return gnet.None
}

// readInput acts on the complete commands buffered so far and discards
// the bytes it used.
func (cn *conn) readInput() {
	buf, _ := cn.c.Peek(-1)
	if used := cn.actOn(buf); used > 0 {
		_, _ = cn.c.Discard(used)
	}
}

// actOn acts on the complete commands in buf, the connection's input,
// and returns the bytes it used.
func (cn *conn) actOn(buf []byte) (used int) {
	cn.flow.reading = true
	switch cn.stage {
	case stageProxy:
		used = cn.readPreamble(buf)
	case stageLine:
		used = cn.readLines(buf)
	case stageHTTP, stageWS:
		used = cn.readWeb(buf)
	}
	cn.flow.reading = false
	return used
}

// reads reports whether the connection goes on reading the input it has:
// not while it is held or ending.
func (cn *conn) reads() bool { return !cn.held() && cn.closing == endNone }

// readLines handles every complete line in buf and returns the bytes used.
func (cn *conn) readLines(buf []byte) int {
	cn.lendFramer()
	defer cn.restFramer()
	if cn.flow.ended {
		cn.line.End()
	}
	used := 0
	for cn.reads() {
		ln, n, err := cn.line.Next(buf[used:])
		cn.answerTelnet()
		if n == 0 && err == nil {
			break
		}
		used += n
		if err != nil {
			// Answered after the messages before it, as a line that does
			// not decode is.
			cn.sayRun()
			if !cn.drainedRefusal(!line.IsCommand(buf[used-n : used])) {
				cn.rejectInput(err)
			}
			continue
		}
		if ln == nil {
			continue
		}
		if cn.sess != nil {
			// A message, nearly every line once logged in, takes the
			// short way; anything else is decoded in full.
			if text, ok := cn.line.Say(ln); ok {
				cn.addToRun(text, 0)
				continue
			}
		} else if line.IsHTTPRequest(ln) && !cn.sentAway() {
			// Before login only: a drained client's line is a say.
			cn.refuseHTTP()
			break
		}
		cmd, perr := cn.line.Decode(ln)
		if perr != nil {
			if perr == proto.ErrInvalidUTF8 {
				perr = line.NotUTF8(ln, cn.line.Binary())
			}
			cn.sayRun()
			if !cn.drainedRefusal(!line.IsCommand(ln)) {
				cn.rejectInput(perr)
			}
			continue
		}
		if cmd.Op == proto.OpNone {
			continue
		}
		cn.sayRun()
		cn.handle(&cmd)
	}
	cn.sayRun()
	return used
}

// Consecutive messages in one read are relayed as a run: one lock of
// the room and of the reader's queue for the run, not one per message.
// A run ends at anything that is not a message, at the end of the read,
// or at these bounds, which keep how far a run can take the reader's
// queue past limits.outbound_high (where the sender is paused) small:
// at most maxRunBytes plus one message.
const (
	maxRunMessages = 64
	maxRunBytes    = 4 << 10
)

// addToRun adds a message's text, and the id its client gave it (0:
// none), to the loop's run, and relays the run once it reaches its
// bounds; readLines then looks at the sender's state (held, ending)
// before it reads another line, as it does after each command. text
// must stay valid until the run is relayed: it aliases the read buffer,
// which is discarded only after readLines returns.
func (cn *conn) addToRun(text []byte, id uint64) {
	ls := cn.loop
	ls.run = append(ls.run, text)
	ls.runIDs = append(ls.runIDs, id)
	ls.runBytes += len(text)
	if len(ls.run) >= maxRunMessages || ls.runBytes >= maxRunBytes {
		cn.sayRun()
	}
}

// keepForRun returns text in a form that lasts until the run is relayed.
// A text that lies in buf, the read buffer (an unfragmented frame's
// payload, unescaped in place), is kept as it is; one that lies elsewhere
// (the JSON decoder's or the frame reader's buffer, which the next frame
// reuses) is copied into the loop's run buffer.
func (cn *conn) keepForRun(text, buf []byte) []byte {
	if len(text) == 0 || within(text, buf) {
		return text
	}
	ls := cn.loop
	if len(ls.runCopy)+len(text) > cap(ls.runCopy) {
		cn.sayRun() // empties runCopy
		if len(text) > cap(ls.runCopy) {
			ls.runCopy = make([]byte, 0, max(len(text), maxRunBytes))
		}
	}
	at := len(ls.runCopy)
	ls.runCopy = append(ls.runCopy, text...)
	return ls.runCopy[at:len(ls.runCopy):len(ls.runCopy)]
}

// within reports whether part lies inside whole's array.
func within(part, whole []byte) bool {
	p := uintptr(unsafe.Pointer(unsafe.SliceData(part)))
	w := uintptr(unsafe.Pointer(unsafe.SliceData(whole)))
	return p >= w && p+uintptr(len(part)) <= w+uintptr(len(whole))
}

// sayRun relays the loop's run of messages, as handle would one at a
// time: a text the hub refuses gets its error, and the rest go on.
func (cn *conn) sayRun() {
	ls := cn.loop
	texts, ids := ls.run, ls.runIDs
	if len(texts) > 0 {
		cn.heardAfterResume()
	}
	for len(texts) > 0 {
		to, relayed, err := cn.sess.SayAll(texts, ids)
		if g := cn.guard; g != nil && relayed > 0 {
			g.forgive(relayed)
		}
		if relayed > 0 {
			cn.answer(proto.OpSay, 0, nil)
			cn.backPressure(to)
		}
		texts, ids = texts[relayed:], ids[relayed:]
		if err != nil {
			cn.answer(proto.OpSay, ids[0], err)
			texts, ids = texts[1:], ids[1:]
		}
	}
	if len(ls.run) > 0 {
		// A client that never reads its own replies (errors here) is
		// held like any other slow reader, as handle does.
		cn.backPressure(cn.out)
	}
	clear(ls.run) // do not pin the read buffer
	ls.run, ls.runIDs, ls.runBytes, ls.runCopy = ls.run[:0], ls.runIDs[:0], 0, ls.runCopy[:0]
}

// tell sends an error to this connection.
func (cn *conn) tell(err *proto.Error) {
	cn.tellSay(err, 0)
}

// tellSay sends an error that refuses the say or seal its client gave
// id (0: none, or not a say), so that the client knows which.
func (cn *conn) tellSay(err *proto.Error, id uint64) {
	if cn.retiredAnswer(err) {
		return
	}
	if err == proto.ErrNotLoggedIn {
		// The hub knows no auth mode: the text says how to log in here.
		err = proto.NotLoggedIn(cn.loop.srv.opts.AuthMode)
	}
	cn.loop.srv.metrics.Error(err.Code)
	if err == proto.ErrInvalidUTF8Telnet && cn.line != nil {
		// Only telnet mangles a line so: its timing marks may throw
		// this answer away (timingmark.go).
		cn.watchMarks()
	}
	cn.answerLine(&proto.Event{Kind: proto.EvError, Err: err, ID: id})
}

// retiredAnswer reports whether err is what a session the hub has taken
// from this connection answers (a resume elsewhere took it over, or a
// login with its password replaced it), before the eviction that tells
// the client so has run on this loop: not connected, not logged in,
// which is not true of the user, whose session goes on elsewhere. It is
// not told: the eviction, queued to this loop, tells what is, with how
// many of the user's messages were refused so (inputGuard.retired), and
// closes. The hub (its lock) is asked only for those two answers, and
// not for each say of a run of not_paired refusals going on: the first
// was asked of.
func (cn *conn) retiredAnswer(err *proto.Error) bool {
	if err != proto.ErrNotPaired && err != proto.ErrNotLoggedIn || cn.sess == nil {
		return false
	}
	if g := cn.guard; g != nil && g.refused != refusedNone && g.refused == refusalOf(err) {
		return false
	}
	return cn.sess.Retired()
}

// handle carries out one command: the one place both protocols meet.
func (cn *conn) handle(cmd *proto.Command) {
	if cn.drainedInput(cmd) {
		return
	}
	if !cn.admit(cmd) {
		return
	}
	if cmd.Op != proto.OpSay && cmd.Op != proto.OpSeal && cmd.Op != proto.OpAck {
		// A command carried out ends a run of refused says: their count
		// is told before its answer, which may be the connection's last
		// (quit).
		cn.endRefusedRun()
	}
	cn.heardAfterResume()
	if cn.offLoop(cmd) {
		return
	}
	if cn.sess == nil {
		switch cmd.Op {
		case proto.OpLogin:
			if len(cmd.Password) > 0 && cn.loop.srv.opts.AuthMode == "open" {
				// In open mode a second word can only be a name with a
				// space in it, which no name may have, or a password
				// the server does not use.
				cn.tell(proto.ErrNoAccounts)
				return
			}
			if cn.loop.srv.logins != nil {
				cn.startLogin(cmd)
				return
			}
			s, err := cn.loop.srv.hub.Login(cmd.Name, cn.out)
			if err != nil {
				cn.tell(err)
				return
			}
			cn.sess = s
			cn.logLogin()
		case proto.OpResume:
			cn.answer(cmd.Op, 0, cn.startResume(cmd))
		case proto.OpHelp:
			cn.help()
		case proto.OpQuit:
			cn.end(endQuit)
		default:
			// A say or seal refused names its id, as it would once
			// logged in (cmd.ID is 0 for anything else).
			cn.tellSay(proto.ErrNotLoggedIn, cmd.ID)
		}
		return
	}
	var err *proto.Error
	switch cmd.Op {
	case proto.OpSay:
		// Messages are relayed in runs (readLines, readFrame); one that
		// comes this way is a run of one.
		cn.addToRun(cmd.Text, cmd.ID)
		cn.sayRun()
		return
	case proto.OpLogin, proto.OpResume:
		// A connection carries one session: a resume is a way in, like a
		// login, and comes instead of one.
		err = proto.ErrAlreadyLoggedIn
	case proto.OpAck:
		cn.sess.Ack(cmd.Last)
		return
	case proto.OpSeal:
		// Relayed as a say is, unread, and answered as a say is
		// (answer).
		var to hub.Queue
		if to, err = cn.sess.Seal(cmd.Text, cmd.ID); err == nil {
			cn.backPressure(to)
		}
	case proto.OpConnect:
		var held bool
		if err, held = cn.connect(cmd.Token); held {
			return
		}
	case proto.OpLeave:
		err = cn.sess.Leave()
	case proto.OpWho:
		cn.sess.Who()
	case proto.OpHelp:
		cn.help()
	case proto.OpNewToken:
		err = cn.sess.NewToken()
	case proto.OpQuit:
		cn.end(endQuit)
	default:
		err = proto.ErrUnknownCommand
	}
	cn.answer(cmd.Op, cmd.ID, err)
	if cmd.Op == proto.OpResume && cn.stage != stageWS {
		cn.repeatKey() // after already_logged_in
	}
	// A client that never reads its own replies is held like any other
	// slow reader: its input waits until its output drains.
	cn.backPressure(cn.out)
}

// backPressure holds this connection's input when reader (its partner,
// or itself) has more queued than limits.outbound_high. A connection
// already held, or closing, is left as it is.
func (cn *conn) backPressure(reader hub.Queue) {
	if cn.flow.draining || cn.held() {
		return
	}
	m := cn.loop.srv.marks()
	if reader.Backlog() <= m.High {
		return
	}
	if cn.heldInputOverflows() && reader.Backlog() <= m.Max {
		return // see heldInputMax
	}
	if reader.Wait(cn) {
		cn.hold(holdBackpressure, reader)
	}
}

// disarmRead takes the connection out of its loop's read set. A login's
// hold still hears the client hang up (see setReadInterest). A closed
// connection's descriptor may be another's by now, and is left alone.
func (cn *conn) disarmRead() {
	if cn.loop.epfd >= 0 && !cn.closed {
		_ = setReadInterest(cn.loop.epfd, cn.c.Fd(), false, cn.c.OutboundBuffered() > 0, cn.flow.hold.why == holdLogin)
	}
}

// armRead puts the connection back in its loop's read set once a hold is
// over.
func (cn *conn) armRead() {
	if cn.loop.epfd >= 0 {
		_ = setReadInterest(cn.loop.epfd, cn.c.Fd(), true, cn.c.OutboundBuffered() > 0, false)
	}
}

// Wake implements hub.Waiter. It is called from any goroutine when what
// the connection's input is held for may be over (the reader it waits on
// has drained, a login or directory answer is in, a throttled connect is
// due): the connection's loop runs onTraffic, which sees.
func (cn *conn) Wake() {
	if cn.flow.late.Load() {
		// gnet wakes no closed connection: the loop is asked directly.
		// It refuses only as the engine shuts down, when nothing the
		// input would do can happen any more.
		_ = cn.loop.execute(context.Background(), cn.finishLate)
		return
	}
	_ = cn.c.Wake(nil)
}

// flush hands queued output to gnet. It runs on the connection's loop.
func (cn *conn) flush() {
	if cn.closed {
		return
	}
	held := cn.c.OutboundBuffered()
	b, msgs := cn.out.Take(held)
	if b != nil {
		if cn.line != nil && cn.line.marks != nil {
			cn.line.marks.wrote(cn.loop.stamp(), msgs, len(b.B))
		}
		// gnet holds nothing now (Take hands out bytes only then). If it
		// held some at the last look, the socket took it, which it does
		// only as the reader makes room: progress, seen here before the
		// batch may leave gnet more than it held then. The batch adds to
		// what is owed, which the next check measures afresh.
		if cn.flow.heldBytes > 0 {
			cn.flow.lastProgress = cn.loop.stamp()
		}
		cn.flow.owed = -1
		_, _ = cn.c.Write(b.B) // gnet copies what the socket does not take
		outbox.Release(b)
		if cn.closed { // the write failed and gnet closed the connection
			return
		}
		cn.flow.tcp |= wroteSince
		held = cn.c.OutboundBuffered()
		if cn.line != nil && cn.line.marks != nil {
			// A timing mark's answer may have left just now: the
			// notice of what it cost goes right behind it.
			cn.tellMarks()
		}
	}
	cn.settle(held)
}

// settle records gnet's backlog, tracks progress and wakes senders.
func (cn *conn) settle(held int) {
	f := &cn.flow
	if held > 0 {
		if _, ok := cn.loop.backlogged[cn]; !ok {
			cn.loop.addBacklog(cn)
			f.lastProgress = cn.loop.stamp()
			f.owed = -1
		} else if held < int(f.heldBytes) {
			f.lastProgress = cn.loop.stamp()
		}
	} else {
		delete(cn.loop.backlogged, cn)
	}
	f.heldBytes = int32(min(held, math.MaxInt32))
	cn.out.Settle(held)
}

// checkBacklog runs each tick for a connection whose socket was full: it
// flushes once gnet has drained, and cuts off a reader that has made no
// progress for limits.slow_timeout or holds more than limits.outbound_max.
func (cn *conn) checkBacklog() {
	if cn.closed {
		return
	}
	lim := cn.loop.srv.lim()
	before := cn.flow.lastProgress
	held := cn.c.OutboundBuffered()
	if held == 0 {
		cn.flush()
	} else {
		cn.settle(held)
		cn.checkOwed(held)
	}
	if cn.flow.lastProgress != before {
		cn.spareReader()
	}
	if cn.closing != endNone && held == 0 && !cn.out.Pending() {
		if _, lingering := cn.loop.lingering[cn]; lingering {
			delete(cn.loop.backlogged, cn)
			cn.shutWhenFlushed()
			return
		}
		cn.closeSocket()
		return
	}
	if _, still := cn.loop.backlogged[cn]; !still {
		return
	}
	if cn.out.Overflowing() || cn.loop.since(cn.flow.lastProgress) > lim.SlowTimeout {
		if cn.closing == endNone {
			cn.loop.srv.metrics.SlowCut()
			cn.logger().Info("connection cut: stopped reading", zap.String("reason", endings[endSlow].label))
		}
		cn.end(endSlow)
	}
}

// checkOwed sees whether the reader took some of what the socket holds
// for it since the last check: what gnet holds (held) and what the
// kernel has not had acknowledged (SIOCOUTQ) fell. gnet writes into the
// kernel only what it takes from its own buffer, and nothing is queued
// to either while gnet holds some (flush), so the two together fall by
// what the client's TCP acknowledged, which it does as its program
// reads. It asks the socket, once a check, only for a connection that
// is behind.
func (cn *conn) checkOwed(held int) {
	n, ok := unacked(cn.c.Fd())
	if !ok {
		return // gnet's buffer alone tells (settle)
	}
	f := &cn.flow
	owed := int32(min(held+n, math.MaxInt32))
	if f.owed >= 0 && owed < f.owed {
		f.lastProgress = cn.loop.stamp()
	}
	f.owed = owed
}

// finalWrite writes what gnet holds for the closing connection, as much
// as its socket takes now, and returns what is left, which is never
// written. gnet tries to write what it holds once more after OnClose
// returns; what the socket took then would reach the client while
// counted as lost. So the write is made here, before the count, and the
// socket's sending side is shut on the rest: gnet's try then takes
// nothing, and the count is exact.
func (cn *conn) finalWrite() int {
	held := cn.c.OutboundBuffered()
	for held > 0 {
		_ = cn.c.Flush()
		left := cn.c.OutboundBuffered()
		if left == held {
			break
		}
		held = left
	}
	if held > 0 {
		_ = unix.Shutdown(cn.c.Fd(), unix.SHUT_WR)
	}
	return held
}

// checkDeadlines runs once a second for every connection.
func (cn *conn) checkDeadlines() {
	if cn.closed || cn.closing != endNone {
		return
	}
	lim := cn.loop.srv.lim()
	now := cn.loop.now
	switch cn.stage {
	case stageProxy:
		cn.checkPreamble()
	case stageHTTP:
		if cn.held() || cn.out.Backlog() > 0 {
			// An answer is still being written, and requests pipelined
			// behind it wait unread until it is (readRequest holds the
			// connection): the next request is not late yet. A client
			// that does not read at all is cut as a slow reader
			// (checkBacklog).
			cn.opened = cn.loop.stamp()
		} else if cn.loop.since(cn.opened) > lim.HandshakeTimeout {
			// Kept open after an answer, with nothing of a next request
			// in, the connection is idle between requests: it is closed
			// without a word (endDetail.idle), since a 408 sent unasked
			// would race the client's next request and be read as its
			// answer. Part of a head in, or a first request never
			// finished, is answered 408.
			d := endDetail{idle: cn.keptAlive && cn.c.InboundBuffered() == 0}
			if !cn.keptAlive && cn.c.InboundBuffered() == 0 {
				// Nothing came at all: netcat or telnet at the wrong
				// port, most likely, waiting for a greeting. Told where
				// to go, as one that types a command is (webPortWord).
				d.status, d.text = 408, "request timeout: "+cn.loop.srv.webPortWord(cn.addr.fromProxy)
			}
			cn.endAs(endHeadWait, d)
		}
	case stageLine:
		if cn.sess == nil && cn.loop.since(cn.opened) > lim.LoginTimeout {
			cn.loginTimedOut()
			return
		}
		if cn.line != nil && cn.line.marks != nil {
			cn.tellMarks()
		}
	case stageWS:
		if cn.sess == nil && cn.loop.since(cn.opened) > lim.LoginTimeout {
			// As on the line port, a connection that never logs in is not
			// kept: the client reads the error, then the close.
			cn.loginTimedOut()
			return
		}
		if cn.held() {
			// While its input is held (its partner reads slower than it
			// sends, say) the server reads none of its frames, pongs
			// included: that silence is the server's doing, not the
			// client's. The hold ends once the reader catches up or is
			// cut off as slow, and silence counts from then.
			cn.ws.lastRecv = now
		}
		// A ping waits its turn behind what was queued for the client
		// before it, and a reader on a slow link may take a minute to
		// reach it: a client that is seen taking what the server writes
		// (flow.lastProgress) is not idle, however long since its last
		// frame. Its frames overdue, it is looked at each tick.
		quiet := now.Sub(cn.ws.lastRecv)
		if quiet > lim.PingInterval {
			cn.lookReading()
		} else {
			cn.ws.behind = false
		}
		if min(quiet, cn.loop.since(cn.flow.lastProgress)) > lim.IdleTimeout {
			cn.end(endIdle)
			return
		}
		if now.Sub(cn.ws.lastPing) >= lim.PingInterval {
			cn.ws.lastPing = now
			if cn.ws.pongsOwed < math.MaxUint8 {
				cn.ws.pongsOwed++
			}
			cn.out.DeliverRaw(wsframe.AppendFrame(nil, ws.OpPing, nil))
			cn.flush()
		}
	}
}

// lookReading sees whether a WebSocket's client took some of what the
// server wrote since the last look, a tick before: its TCP acknowledged
// more, while its socket held bytes it could not send yet. The client's
// receive window was full, or its path slow, and it made room: it is
// reading, only slower than it is written to, and a ping waits behind
// what was written before it. That is progress (flow.lastProgress), as
// the slow-reader check sees it while gnet holds output; this look sees
// it too once gnet's buffer has drained and only the kernel's is left,
// megabytes a slow reader takes a minute to empty.
//
// An acknowledgement alone says less: a client's kernel acknowledges
// what fits its receive buffer whether or not its program reads, the
// pings included, so a program that hung would never be idle. Over a
// slow path it still does, until that buffer is full; from then on it
// acknowledges nothing more. The count of what was acknowledged is
// asked, not the socket's queue (SIOCOUTQ, checkOwed), into which what
// the socket is written between two looks would blur it: the count only
// grows.
func (cn *conn) lookReading() {
	a, ok := ackState(cn.c.Fd())
	if ok && cn.ws.behind && a.acked > cn.ws.acked {
		cn.flow.lastProgress = cn.loop.stamp()
		cn.spareReader()
	}
	cn.ws.acked, cn.ws.behind = a.acked, a.notsent > 0
}

// shutdown tells this connection's user the server is going away; it is
// closed once its output has drained (see checkBacklog) or at the
// deadline. A connection already ending is left to finish as it was.
func (cn *conn) shutdown() {
	if cn.closed || cn.closing != endNone {
		return
	}
	cn.end(endShutdown)
}

// onClose ends the session: the partner is told why, and how many of its
// messages to this connection were never sent. A connection that closed
// without an ending gets one here (wentAway), and every connection's
// ending is counted once, here.
func (cn *conn) onClose(err error) {
	if cn.heldInputCounts() {
		// The input that came before the end is acted on, with nothing
		// held any more. An ending the server chose before is set aside
		// meanwhile, so an ending the input brings (a quit) takes its
		// place.
		prior := cn.closing
		cn.flow.hold, cn.closing = inputHold{}, endNone
		cn.flow.draining = true
		// A read that found the end of the input is the client ending
		// it (netcat -N at the end of a file): no more bytes come, and
		// what follows its last line feed is a line too. Not so when the
		// connection broke or the server closed it.
		cn.flow.ended = errors.Is(err, io.EOF)
		cn.readInput()
		if cn.closing == endNone {
			cn.closing = prior
		}
	}
	late := cn.lateInput(err)
	cn.closed = true
	// What gnet holds is the end of the last batch taken: the outbox
	// knows which of its messages end there.
	held := cn.finalWrite()
	gone := false
	if cn.closing == endNone && cn.refused != endNone {
		// Refused as it opened, and gone before its request was
		// answered: it was refused all the same.
		cn.loop.srv.metrics.Rejected(endings[cn.refused].label)
		cn.closing = cn.refused
	}
	if cn.closing == endNone {
		var sockErr error
		if needsSocketError(err) {
			sockErr = socketError(cn.c.Fd())
		}
		if e := cn.directErr.Load(); sockErr == nil && e != 0 {
			sockErr = syscall.Errno(e)
		}
		gone = peerGone(err, sockErr)
		cn.closing = wentAway(cn.stage, cn.addr.fromProxy, err, sockErr)
		if timedOut(err, sockErr) && stoppedReading(cn.c.Fd()) {
			// The kernel cut a reader that had stopped reading, before
			// limits.slow_timeout did (usertimeout_linux.go): it ends as
			// checkBacklog would have ended it.
			cn.closing = endSlow
			cn.loop.srv.metrics.SlowCut()
			cn.logger().Info("connection cut: stopped reading", zap.String("reason", endings[endSlow].label),
				zap.String("by", "tcp_user_timeout"))
		}
	}
	closeOut := cn.out.Close
	if gone || cn.closing == endSlow {
		// A reader cut for not reading will not take what its socket
		// holds unacknowledged either: with resume on, those messages
		// are counted with what was never written, so that its resume
		// replays them, or counts those not kept, however long ago they
		// came.
		closeOut = cn.out.Abort
		if cn.out.Following() {
			// Those messages must then not arrive: a plain close would
			// have the kernel go on sending them (FIN-WAIT-1) to a
			// reader that wakes later, who would read them twice, once
			// in the resume's replay, its partner told they never came.
			// A close with linger 0 resets the connection, and drops
			// them. What the reader's TCP acknowledged stays its own.
			discardUnacked(cn.c.Fd())
		}
	}
	lost, waiters := closeOut(held)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		cn.logger().Debug("connection closed", zap.Error(err))
	}
	if late != nil {
		late.ending, late.lost, late.waiters = cn.closing, lost, waiters
		cn.awaitLate(late)
		return
	}
	cn.endClosed(lost, waiters)
}

// endClosed ends the session of a closed connection as its ending says,
// with lost of its partner's messages never delivered, wakes the senders
// that waited on it, and counts the ending.
func (cn *conn) endClosed(lost int, waiters []hub.Waiter) {
	info := &endings[cn.closing]
	cn.abandonHold(cn.closing)
	cn.endSession(cn.closing, lost)
	for _, w := range waiters {
		w.Wake()
	}
	cn.loop.srv.metrics.Disconnected(info.label)
}

// discardUnacked makes the close of the socket fd reset the connection:
// the kernel drops what the socket holds unsent or unacknowledged,
// rather than go on sending it after the close.
func discardUnacked(fd int) {
	_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
}
