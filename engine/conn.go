package engine

import (
	"errors"
	"io"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/panjf2000/gnet/v2"
	"go.uber.org/zap"

	"duet/engine/hub"
	"duet/engine/outbox"
	"duet/proto"
	"duet/proto/line"
	"duet/proto/wsframe"
	"duet/web"
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

// conn is duet's state for one connection. Everything in it is touched
// only on the connection's event loop, except out (its own locking).
type conn struct {
	srv  *Server
	loop *loopState
	c    gnet.Conn
	id   uint64
	ip   string // the client's address: the peer's, or what a trusted proxy vouches for

	peerIP    string // the socket peer's address
	fromProxy bool   // the peer is a trusted proxy
	ipHeld    bool   // counted against ip's connection limit (claimAddr)

	ipKey netip.Prefix // what ipHeld counts under: tally.AddrKey of ip when it was counted

	stage  stage
	framer line.Framer    // stageLine
	wsr    wsframe.Reader // stageWS

	sess  *hub.Session
	out   *outbox.Outbox
	guard *inputGuard // rate limit and throttle state; nil until needed (ratelimit.go)

	opened   time.Time
	lastRecv time.Time // WebSocket idle detection
	lastPing time.Time

	// Back-pressure: while paused the connection's input is left unread
	// (and its socket's read interest disarmed) until waitingOn drains.
	paused    bool
	waitingOn hub.Queue

	login *pendingLogin // accounts mode: a login being checked (see login.go); input waits

	// Slow-reader tracking while gnet holds output for this connection.
	heldBytes    int       // gnet's outbound buffer at the last check
	lastProgress time.Time // when that buffer last shrank
	lastBatch    int       // relayed messages in the last batch handed to gnet

	drainingInput bool         // onClose is using up held-back input; do not pause
	reading       bool         // readInput is acting on the input (see onClose)
	awaiting      bool         // a command is with the cluster directory (directory.go); input waits
	closing       bool         // close once the output is flushed
	closeReason   proto.Reason // what the partner is told; "" means disconnected
	closed        bool
}

func newConn(s *Server, ls *loopState, c gnet.Conn, isLine bool, ip string) *conn {
	cn := &conn{srv: s, loop: ls, c: c, id: s.nextID.Add(1), ip: ip, opened: ls.now}
	cn.out = cn.newOutbox(isLine)
	cn.lastRecv = ls.now
	cn.lastPing = ls.now
	lim := s.lim()
	if isLine {
		cn.stage = stageProxy
		cn.framer.Max = lim.MaxLine
	} else {
		cn.stage = stageHTTP
	}
	return cn
}

func (cn *conn) logger() *zap.Logger {
	return cn.srv.log.With(zap.Uint64("conn", cn.id), zap.String("remote", cn.ip))
}

// newOutbox makes the connection's outbound queue: events encoded for
// the protocol of the port it came in on (the line protocol, or JSON in
// WebSocket frames, which a web connection speaks once upgraded: no
// event is delivered to it before), flushed on its loop.
func (cn *conn) newOutbox(isLine bool) *outbox.Outbox {
	var enc outbox.Encoder = webEncoder{}
	if isLine {
		enc = lineEncoder{}
	}
	return outbox.New(outbox.Config{
		Encoder:  drainFilter{Encoder: enc, draining: &cn.srv.draining},
		Schedule: func() { cn.loop.schedule(cn) },
		Marks:    cn.srv.marks,
		// The hub detaches a connection's outbox only when another login
		// takes its account over (hub.LoginReplacing).
		Detached: func(proto.Reason) { cn.replacedElsewhere() },
	})
}

// marks are limits.outbound_high and limits.outbound_max, as an outbox
// takes them.
func (s *Server) marks() outbox.Marks {
	l := s.lim()
	return outbox.Marks{High: int64(l.OutboundHigh), Max: int64(l.OutboundMax)}
}

// drainFilter keeps one notice per user when this node shuts down: every
// user on it gets a shutdown notice of their own (conn.shutdown), so a
// partner on this node going for the same reason must not add "bob's
// server is shutting down; you are free to be joined again" before it. In
// a cluster, a partner on another node is told by that node, which is not
// shutting down, so the notice still reaches it.
type drainFilter struct {
	outbox.Encoder
	draining *atomic.Bool
}

func (f drainFilter) AppendEvent(dst []byte, ev *proto.Event) []byte {
	if ev.Kind == proto.EvPeerLeft && ev.Reason == proto.ReasonShutdown && f.draining.Load() {
		return dst
	}
	return f.Encoder.AppendEvent(dst, ev)
}

// lineEncoder encodes events in the line protocol (outbox.Encoder).
type lineEncoder struct{}

func (lineEncoder) AppendEvent(dst []byte, ev *proto.Event) []byte {
	return line.AppendEvent(dst, ev)
}

func (lineEncoder) AppendMessages(dst []byte, ev *proto.Event, texts [][]byte) []byte {
	return line.AppendMessages(dst, ev.From, texts)
}

// onTraffic reads what has arrived and acts on each complete command.
func (cn *conn) onTraffic() gnet.Action {
	if cn.holdingConnect() {
		return gnet.None
	}
	if cn.awaiting {
		cn.disarmRead() // gnet re-armed it after a write; keep waiting
		return gnet.None
	}
	rearm := false
	if cn.login != nil && !cn.finishLogin() {
		cn.disarmRead() // gnet re-armed it after a write; the login is still being checked
		return gnet.None
	}
	if cn.paused {
		if w := cn.waitingOn; w != nil && w.Backlog() > cn.srv.marks().Low() && !cn.heldInputOverflows() {
			cn.disarmRead() // gnet re-armed it after a write; keep waiting
			return gnet.None
		}
		cn.paused, cn.waitingOn = false, nil
		rearm = true
	}
	cn.out.SetInline(true)
	cn.readInput()
	cn.out.SetInline(false)
	cn.flush()
	if rearm && !cn.paused {
		// Re-arm only once the input held back is used up: gnet closes a
		// connection as soon as it reads end-of-file, without handing over
		// what is still buffered (onClose then drains it).
		cn.armRead()
	}
	if cn.closing && !cn.closed && !cn.out.Pending() && cn.c.OutboundBuffered() == 0 {
		return gnet.Close
	}
	return gnet.None
}

// readInput acts on the complete commands buffered so far and discards
// the bytes it used.
func (cn *conn) readInput() {
	buf, _ := cn.c.Peek(-1)
	var used int
	cn.reading = true
	switch cn.stage {
	case stageProxy:
		used = cn.readPreamble(buf)
	case stageLine:
		used = cn.readLines(buf)
	case stageHTTP, stageWS:
		used = cn.readWeb(buf)
	}
	cn.reading = false
	if used > 0 {
		_, _ = cn.c.Discard(used)
	}
}

// readLines handles every complete line in buf and returns the bytes used.
func (cn *conn) readLines(buf []byte) int {
	used := 0
	for !cn.paused && !cn.closing {
		ln, n, err := cn.framer.Next(buf[used:])
		cn.answerTelnet()
		if n == 0 && err == nil {
			break
		}
		used += n
		if err != nil {
			cn.rejectInput(err)
			continue
		}
		if ln == nil {
			continue
		}
		if cn.sess == nil && line.IsHTTPRequest(ln) {
			cn.refuseHTTP()
			break
		}
		cmd, perr := cn.framer.Decode(ln)
		if perr != nil {
			cn.sayRun()
			cn.rejectInput(perr)
			continue
		}
		if cmd.Op == proto.OpNone {
			continue
		}
		if cmd.Op == proto.OpSay && cn.sess != nil {
			cn.addToRun(cmd.Text)
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

// addToRun adds a message's text to the loop's run, and relays the run
// once it reaches its bounds; readLines then looks at the sender's state
// (paused, closing) before it reads another line, as it does after each
// command. text must stay valid until the run is relayed: it aliases the
// read buffer, which is discarded only after readLines returns.
func (cn *conn) addToRun(text []byte) {
	ls := cn.loop
	ls.run = append(ls.run, text)
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
	texts := ls.run
	for len(texts) > 0 {
		to, relayed, err := cn.sess.SayAll(texts)
		if relayed > 0 {
			cn.answer(proto.OpSay, nil)
			if !cn.paused {
				cn.backPressure(to)
			}
		}
		texts = texts[relayed:]
		if err != nil {
			cn.answer(proto.OpSay, err)
			texts = texts[1:]
		}
	}
	if len(ls.run) > 0 && !cn.paused {
		// A client that never reads its own replies (errors here) is
		// paused like any other slow reader, as handle does.
		cn.backPressure(cn.out)
	}
	clear(ls.run) // do not pin the read buffer
	ls.run, ls.runBytes, ls.runCopy = ls.run[:0], 0, ls.runCopy[:0]
}

// tell sends an error to this connection.
func (cn *conn) tell(err *proto.Error) {
	cn.srv.metrics.Error(err.Code)
	cn.out.Deliver(&proto.Event{Kind: proto.EvError, Err: err})
}

// handle carries out one command: the one place both protocols meet.
func (cn *conn) handle(cmd *proto.Command) {
	if !cn.admit(cmd) {
		return
	}
	if cn.offLoop(cmd) {
		return
	}
	if cn.sess == nil {
		switch cmd.Op {
		case proto.OpLogin:
			if len(cmd.Password) > 0 && cn.srv.opts.AuthMode == "open" {
				// In open mode a second word can only be a name with a
				// space in it, which no name may have.
				cn.tell(proto.ErrBadName)
				return
			}
			if cn.srv.logins != nil {
				cn.startLogin(cmd)
				return
			}
			s, err := cn.srv.hub.Login(cmd.Name, cn.out)
			if err != nil {
				cn.tell(err)
				return
			}
			cn.sess = s
			cn.logLogin()
		case proto.OpHelp:
			cn.out.Deliver(&proto.Event{Kind: proto.EvHelp, Auth: cn.srv.opts.AuthMode})
		case proto.OpQuit:
			cn.quit()
		default:
			cn.tell(proto.ErrNotLoggedIn)
		}
		return
	}
	var err *proto.Error
	switch cmd.Op {
	case proto.OpSay:
		// Messages are relayed in runs (readLines, readFrame); one that
		// comes this way is a run of one.
		cn.addToRun(cmd.Text)
		cn.sayRun()
		return
	case proto.OpLogin:
		err = proto.ErrAlreadyLoggedIn
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
		cn.out.Deliver(&proto.Event{Kind: proto.EvHelp, Auth: cn.srv.opts.AuthMode})
	case proto.OpNewToken:
		err = cn.sess.NewToken()
	case proto.OpQuit:
		cn.quit()
	default:
		err = proto.ErrUnknownCommand
	}
	cn.answer(cmd.Op, err)
	// A client that never reads its own replies is paused like any other
	// slow reader: its input waits until its output drains.
	cn.backPressure(cn.out)
}

// quit ends the session at the user's request and closes after the bye.
func (cn *conn) quit() {
	if cn.sess != nil {
		cn.sess.Close(proto.ReasonLeft, 0)
	}
	cn.closeReason = proto.ReasonLeft
	cn.out.Deliver(&proto.Event{Kind: proto.EvBye})
	if cn.stage == stageWS {
		cn.out.DeliverRaw(wsframe.AppendClose(nil, 1000, "bye"))
	}
	cn.closing = true
}

// backPressure pauses this connection's input when reader (its partner,
// or itself) has more queued than limits.outbound_high.
func (cn *conn) backPressure(reader hub.Queue) {
	if cn.drainingInput {
		return
	}
	m := cn.srv.marks()
	if reader.Backlog() <= m.High {
		return
	}
	if cn.heldInputOverflows() && reader.Backlog() <= m.Max {
		return // see heldinput.go
	}
	if reader.Wait(cn) {
		cn.paused = true
		cn.waitingOn = reader
		cn.disarmRead()
	}
}

func (cn *conn) disarmRead() {
	if cn.loop.epfd >= 0 {
		_ = setReadInterest(cn.loop.epfd, cn.c.Fd(), false, cn.c.OutboundBuffered() > 0, cn.login != nil)
	}
}

// armRead re-arms reading after a pause.
func (cn *conn) armRead() {
	if cn.loop.epfd >= 0 {
		_ = setReadInterest(cn.loop.epfd, cn.c.Fd(), true, cn.c.OutboundBuffered() > 0, false)
	}
}

// Wake implements hub.Waiter. It is called from any goroutine when the
// reader this connection waits on has drained: the connection's loop
// re-reads its input.
func (cn *conn) Wake() {
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
		cn.lastBatch = msgs
		_, _ = cn.c.Write(*b) // gnet copies what the socket does not take
		outbox.Release(b)
		if cn.closed { // the write failed and gnet closed the connection
			return
		}
		held = cn.c.OutboundBuffered()
	}
	cn.settle(held)
}

// settle records gnet's backlog, tracks progress and wakes senders.
func (cn *conn) settle(held int) {
	if held > 0 {
		if _, ok := cn.loop.backlogged[cn]; !ok {
			cn.loop.backlogged[cn] = struct{}{}
			cn.lastProgress = cn.loop.now
		} else if held < cn.heldBytes {
			cn.lastProgress = cn.loop.now
		}
	} else {
		delete(cn.loop.backlogged, cn)
	}
	cn.heldBytes = held
	cn.out.Settle(held)
}

// checkBacklog runs each tick for a connection whose socket was full: it
// flushes once gnet has drained, and cuts off a reader that has made no
// progress for limits.slow_timeout or holds more than limits.outbound_max.
func (cn *conn) checkBacklog() {
	if cn.closed {
		return
	}
	lim := cn.srv.lim()
	held := cn.c.OutboundBuffered()
	if held == 0 {
		cn.flush()
	} else {
		cn.settle(held)
	}
	if cn.closing && held == 0 && !cn.out.Pending() {
		_ = cn.c.Close()
		return
	}
	if _, still := cn.loop.backlogged[cn]; !still {
		return
	}
	if cn.out.Overflowing() || cn.loop.now.Sub(cn.lastProgress) > lim.SlowTimeout {
		cn.cut(proto.ReasonSlow, "stopped reading")
	}
}

// checkDeadlines runs once a second for every connection.
func (cn *conn) checkDeadlines() {
	if cn.closed || cn.closing {
		return
	}
	lim := cn.srv.lim()
	now := cn.loop.now
	switch cn.stage {
	case stageProxy:
		cn.checkPreamble(now)
	case stageHTTP:
		if now.Sub(cn.opened) > lim.HandshakeTimeout {
			cn.out.DeliverRaw(web.ErrorResponse(408, "request timeout"))
			cn.closeNow(proto.ReasonTimeout)
		}
	case stageLine:
		if cn.sess == nil && now.Sub(cn.opened) > lim.LoginTimeout {
			cn.tell(proto.ErrLoginTimeout)
			cn.closeNow(proto.ReasonTimeout)
		}
	case stageWS:
		if cn.sess == nil && now.Sub(cn.opened) > lim.LoginTimeout {
			// As on the line port, a connection that never logs in is not
			// kept: the client reads the error, then the close.
			cn.tell(proto.ErrLoginTimeout)
			cn.out.DeliverRaw(wsframe.AppendClose(nil, 1008, "login timeout"))
			cn.closeNow(proto.ReasonTimeout)
			return
		}
		if now.Sub(cn.lastRecv) > lim.IdleTimeout {
			cn.out.DeliverRaw(wsframe.AppendClose(nil, 1001, "idle timeout"))
			cn.closeNow(proto.ReasonTimeout)
			return
		}
		if now.Sub(cn.lastPing) >= lim.PingInterval {
			cn.lastPing = now
			cn.out.DeliverRaw(wsframe.AppendFrame(nil, 0x9, nil))
			cn.flush()
		}
	}
}

// cut drops a connection that broke a limit, telling its partner.
func (cn *conn) cut(reason proto.Reason, why string) {
	cn.logger().Info("connection cut", zap.String("reason", string(reason)), zap.String("why", why))
	if reason == proto.ReasonSlow {
		cn.srv.metrics.SlowCut()
	}
	cn.closeNow(reason)
}

// closeNow flushes what it can and closes with the given reason for the
// partner.
func (cn *conn) closeNow(reason proto.Reason) {
	cn.closeReason = reason
	cn.closing = true
	cn.flush()
	_ = cn.c.Close()
}

// shutdown tells this connection's user the server is going away; it is
// closed once its output has drained (see checkBacklog) or at the
// deadline.
func (cn *conn) shutdown() {
	if cn.closed {
		return
	}
	cn.closeReason = proto.ReasonShutdown
	if cn.sess != nil {
		cn.sess.Close(proto.ReasonShutdown, 0)
	}
	switch cn.stage {
	case stageLine, stageProxy:
		cn.out.Deliver(&proto.Event{Kind: proto.EvShutdown})
	case stageWS:
		cn.out.Deliver(&proto.Event{Kind: proto.EvShutdown})
		cn.out.DeliverRaw(wsframe.AppendClose(nil, 1001, "server shutting down"))
	}
	cn.closeWhenFlushed()
}

// closeWhenFlushed closes the connection once what is queued for it has
// been written: now, if the socket takes it all, or else from
// checkBacklog when gnet has drained.
func (cn *conn) closeWhenFlushed() {
	cn.closing = true
	cn.paused = false
	cn.flush()
	if cn.c.OutboundBuffered() == 0 {
		_ = cn.c.Close()
	} else {
		cn.loop.backlogged[cn] = struct{}{}
	}
}

// onClose ends the session: the partner is told why, and how many of its
// messages to this connection were never sent.
func (cn *conn) onClose(err error) {
	// Commands that arrived before the end but were held back by a pause
	// still count: a file piped through netcat ends with end-of-file right
	// after its last line. Their number is bounded by the pause itself.
	//
	// Not when the close comes in the middle of reading that input (a
	// write that failed while a flood was being cut): the read under way
	// has not discarded what it acted on yet, and would see it twice.
	if cn.sess != nil && cn.c.InboundBuffered() > 0 && cn.stage != stageHTTP && !cn.awaiting && !cn.reading {
		cn.paused, cn.closing = false, false
		cn.drainingInput = true
		cn.readInput()
	}
	cn.closed = true
	cn.abandonLogin()
	lost, waiters := cn.out.Close()
	if cn.c.OutboundBuffered() > 0 {
		lost += cn.lastBatch
	}
	reason := cn.closeReason
	if reason == "" {
		reason = proto.ReasonDisconnected
	}
	if cn.sess != nil {
		cn.sess.Close(reason, lost)
	}
	for _, w := range waiters {
		w.Wake()
	}
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		cn.logger().Debug("connection closed", zap.Error(err))
	}
}
