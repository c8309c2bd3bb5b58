package engine

import (
	"cmp"
	"errors"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"duet/engine/hub"
	"duet/proto"
	"duet/proto/line"
	"duet/proto/wsframe"
	"duet/web"
)

// Every way a connection ends is one ending, and the endings table says
// all that a close does for it: what the client is told and how, whether
// what is queued for it is written first, what its partner is told, what
// becomes of its session, and the label under which it is counted
// (duet_disconnects_total{reason}) and logged. conn.end is the one way
// the engine ends a connection; a connection that closes without one
// (the client went away) is given closed or lost by onClose. Refusals as
// a connection opens (OnOpen) use the same rows. docs/LIMITS.md holds the
// same table for readers, and a test holds the two together.
//
// Ending a connection is not ending its session. An ending the client
// chose (quit, a clean end of input on the line port straight from the
// client, a WebSocket close other than 1001 and 4001) or that a broken
// or hostile client earned ends the session; one that says the client
// may still be there, behind a network that failed, a proxy that hides
// how it failed, or a page that reloads or was left (lost, going_away,
// slow, idle), sends it away to wait for a resume (docs/RESUME.md).
type ending uint8

const (
	endNone ending = iota // the connection is open

	endQuit        // the user asked: /quit, JSON quit
	endClosed      // the client closed: end of input on the line (not through a trusted proxy) or web port, or a WebSocket close frame but for 1000, 1001 and 4001
	endNormalClose // the client's WebSocket close frame said 1000 normal closure: the page closed it on purpose
	endGoingAway   // the client's WebSocket close frame said 1001 going away (a page left or reloaded), or 4001, a page's own for it
	endLost        // the connection failed: reset, read or write error, a keepalive timeout, a WebSocket gone without a close frame, a line connection's end of input through a trusted proxy
	endSlow        // a reader that stopped reading was cut off (limits.slow_timeout, limits.outbound_max)
	endIdle        // a WebSocket sent nothing, pongs included, and read nothing, for limits.idle_timeout
	endShutdown    // the server is shutting down
	endReplaced    // the account logged in on another connection (auth.takeover)
	endResumed     // the session was resumed on another connection, which carries it now
	endDrain       // the node is draining: the client is told to reconnect and resume, on another node if need be
	endNotParked   // the node is draining and could not park the session: it ends, and the client is told to log in again
	endFlood       // input kept coming far past the rate limit
	endProtocol    // input that breaks the protocol: a bad WebSocket frame or handshake, a malformed or oversized HTTP head
	endBinary      // a binary WebSocket message
	endOrigin      // a WebSocket handshake from a page of another site
	endTooMany     // an HTTP request past the rate limit
	endServed      // an HTTP request answered on a connection not kept open
	endLoginWait   // no login within limits.login_timeout
	endHeadWait    // no whole HTTP request head within limits.handshake_timeout
	endHTTPOnLine  // an HTTP request on the line port, before login
	endUntrusted   // a PROXY header from a peer not in trusted_proxies
	endBadProxy    // a trusted proxy's PROXY header malformed, or missing past limits.handshake_timeout
	endPerAddr     // too many connections from one address (limits.max_conns_per_ip)
	endFull        // too many connections in all (limits.max_conns)
	endDraining    // a connection opened while the server shuts down

	numEndings
)

// sessionFate is what ending a connection does to the session it
// carries.
type sessionFate uint8

const (
	// endSession logs the session out; its partner is told the ending's
	// reason and how many of its messages were never delivered.
	endSession sessionFate = iota
	// detachSession sends the session away (hub.Session.Detach): it
	// keeps its name, token and pairing for resume.window, its partner
	// is told it may come back, and the messages sent to it are kept
	// for its resume. With resume off, and while the server shuts down,
	// it is endSession.
	detachSession
	// sessionMoved leaves the session alone: it belongs to another
	// connection now (a resume took it over), and the hub has told
	// whoever needed telling.
	sessionMoved
)

// fateNames are the words docs/LIMITS.md uses for each fate.
var fateNames = [...]string{endSession: "ends", detachSession: "goes away", sessionMoved: "moves"}

// endingInfo is one row of the table.
type endingInfo struct {
	// label names the ending in duet_disconnects_total{reason} and in the
	// reason field of its log lines.
	label string
	// partner is what the partner of the session is told (peer_left's
	// reason) when the ending ends the session: always for endSession,
	// and for detachSession when resume is off; "" for an ending that
	// never befalls a logged-in connection, or leaves its session alone.
	partner proto.Reason
	session sessionFate

	// What the client is told, line or JSON, in this order: err, notice,
	// then the last event (EvBye, EvShutdown); on a WebSocket then a close
	// frame with wsCode and wsText (none when wsCode is 0).
	err    *proto.Error
	notice string
	last   proto.EventKind
	wsCode ws.StatusCode
	wsText string
	// status is the HTTP answer of a connection that has not upgraded
	// (none when 0); its text is statusText, or else err's.
	status     int
	statusText string

	// drain closes once everything queued for the client is written
	// (bounded by limits.slow_timeout like any reader); otherwise the
	// connection is closed at once, with whatever its socket takes at
	// once. A session ended by a draining ending ends as soon as the
	// count of its partner's messages that never reached the client is
	// known (endDraining): at once when the socket takes everything
	// queued before the goodbye, else as the connection closes.
	drain bool
	// refusal counts the ending in duet_connections_rejected_total too,
	// under its label, which is then its error's code: the connection is
	// refused before it could be used. Its error is not counted in
	// duet_errors_total.
	refusal bool
	// byInput marks an ending the client's input brought (a quit, a
	// close or binary frame, a flood, a protocol error): what the client
	// sent after it is not acted on (heldInputCounts).
	byInput bool
	// logged is the warning a refusal is logged with (Server.logRefusal),
	// sampled, whether the connection is refused as it opens or for what
	// it sent first: a client can cause one at will. "" for an ending
	// not logged so.
	logged string
}

var endings = [numEndings]endingInfo{
	endQuit: {byInput: true, label: "quit", partner: proto.ReasonLeft, session: endSession,
		last: proto.EvBye, wsCode: ws.StatusNormalClosure, wsText: "bye", drain: true},
	endClosed: {byInput: true, label: "closed", partner: proto.ReasonDisconnected, session: endSession,
		wsCode: ws.StatusNormalClosure},
	endNormalClose: {byInput: true, label: "normal_closure", partner: proto.ReasonLeft, session: endSession,
		wsCode: ws.StatusNormalClosure},
	endGoingAway: {byInput: true, label: "going_away", partner: proto.ReasonDisconnected, session: detachSession,
		wsCode: ws.StatusNormalClosure},
	endLost: {label: "lost", partner: proto.ReasonDisconnected, session: detachSession},
	endSlow: {label: "slow", partner: proto.ReasonSlow, session: detachSession},
	endIdle: {label: "idle", partner: proto.ReasonTimeout, session: detachSession,
		wsCode: ws.StatusGoingAway, wsText: "idle timeout"},
	endShutdown: {label: "shutdown", partner: proto.ReasonShutdown, session: endSession,
		last: proto.EvShutdown, wsCode: ws.StatusGoingAway, wsText: "server shutting down", drain: true},
	endReplaced: {label: "replaced", partner: proto.ReasonReplaced, session: endSession,
		notice: "your account logged in on another connection; this one is closed",
		last:   proto.EvBye, wsCode: ws.StatusNormalClosure, wsText: "logged in elsewhere", drain: true},
	endResumed: {label: "resumed", session: sessionMoved,
		notice: "your session was resumed on another connection; this one is closed",
		last:   proto.EvBye, wsCode: ws.StatusNormalClosure, wsText: "resumed elsewhere", drain: true},
	endDrain: {label: "drain", partner: proto.ReasonShutdown, session: detachSession,
		notice: "the server is restarting; reconnect", wsCode: statusServiceRestart, wsText: "service restart",
		status: 503, statusText: "the server is restarting", drain: true},
	endNotParked: {label: "not_parked", partner: proto.ReasonShutdown, session: endSession,
		err: proto.ErrNotParked, last: proto.EvShutdown, wsCode: statusServiceRestart, wsText: "service restart", drain: true},
	endFlood: {byInput: true, label: "flood", partner: proto.ReasonDisconnected, session: endSession,
		err: proto.ErrFlooded, wsCode: ws.StatusPolicyViolation, wsText: "rate limit exceeded",
		status: 429, statusText: "too many requests"},
	endProtocol: {byInput: true, label: "protocol", partner: proto.ReasonDisconnected, session: endSession,
		wsCode: ws.StatusProtocolError, wsText: "protocol error", status: 400, statusText: "malformed request"},
	endBinary: {byInput: true, label: "binary", partner: proto.ReasonDisconnected, session: endSession,
		wsCode: ws.StatusUnsupportedData, wsText: "send JSON in text frames"},
	// The browser is told only 403: the operator whose page is served
	// from another host learns why from the log.
	endOrigin: {label: "origin", status: 403, statusText: "handshake error: origin not allowed",
		logged: "WebSocket refused: its origin is not allowed; if it is your page's, add it to ws.allowed_origins"},
	// An HTTP answer, and those pipelined before it, are written whole
	// before the close, however slowly the client reads them.
	endTooMany: {label: "too_many_requests", status: 429, statusText: "too many requests", drain: true},
	endServed:  {label: "served", drain: true},
	endLoginWait: {label: "login_timeout", err: proto.ErrLoginTimeout,
		wsCode: ws.StatusPolicyViolation, wsText: "login timeout"},
	endHeadWait: {label: "handshake_timeout", status: 408, statusText: "request timeout"},
	endHTTPOnLine: {label: "http_request", err: proto.ErrHTTPRequest, refusal: true,
		logged: "connection refused: an HTTP request on the line port"},
	endUntrusted: {label: "untrusted_proxy", err: proto.ErrUntrustedProxy, refusal: true,
		logged: "connection refused: a PROXY header from a peer not in trusted_proxies"},
	endBadProxy: {label: "bad_proxy_header", err: proto.ErrBadProxyHeader, refusal: true,
		logged: "connection refused: a trusted proxy's PROXY header malformed or missing"},
	endPerAddr: {label: "too_many_connections", err: proto.ErrTooManyConns, status: 503, refusal: true,
		wsCode: statusTryAgainLater, wsText: "try again later",
		logged: "connection refused: too many from one address"},
	endFull: {label: "server_full", err: proto.ErrServerFull, status: 503, refusal: true,
		wsCode: statusTryAgainLater, wsText: "try again later",
		logged: "connection refused: server full"},
	endDraining: {label: "shutting_down", err: proto.ErrShuttingDown, status: 503, refusal: true,
		wsCode: statusTryAgainLater, wsText: "try again later"},
}

// statusServiceRestart is the WebSocket close code 1012 (IANA registry):
// the server is restarting, and a client may reconnect at once.
const statusServiceRestart ws.StatusCode = 1012

// statusTryAgainLater is the WebSocket close code 1013 (IANA registry):
// the server is overloaded, and a client should try again later.
const statusTryAgainLater ws.StatusCode = 1013

// statusPageAway is duet's own WebSocket close code 4001, in the range
// RFC 6455 leaves to applications: going away, as 1001 says, but sent by
// a page's script, which may close only with 1000 or 3000-4999. A page
// left for another may be kept frozen by the browser, socket open, to
// be shown again on Back (the back-forward cache): it closes its socket
// with this as it is hidden, and its session goes away to wait for its
// resume, as after the browser's own 1001 for a reload.
const statusPageAway ws.StatusCode = 4001

// loginTimedOut ends a connection that did not log in within
// limits.login_timeout, telling it the limit.
func (cn *conn) loginTimedOut() {
	cn.endAs(endLoginWait, endDetail{err: proto.LoginTimeout(cn.loop.srv.lim().LoginTimeout)})
}

// endDetail overrides an ending's defaults for one close: the close code
// and reason the WebSocket frame reader chose, or the status, text and
// header lines of a refused handshake or an oversized request head, or
// the notice of a drain, which names the session's resume key.
type endDetail struct {
	// err is told in place of the ending's own error: a refusal while
	// the server drains for a restart says so (refusalDetail).
	err    *proto.Error
	wsCode ws.StatusCode
	wsText string
	status int
	text   string
	header string
	notice string
	// undelivered is how many messages the client sent on the
	// connection that it took and did not deliver, which the notice
	// counts: those an eviction's session refused before the eviction
	// ran (conn.evicted).
	undelivered int
	// notSent is the count of the user's says refused since the last
	// one was told (inputGuard), told first (EvNone: none). endAs takes
	// it from the guard: an ending is the last chance to tell it.
	notSent proto.Event
	// method is the method of the HTTP request the ending answers, ""
	// when none was read: the answer to a HEAD request has no body.
	method string
	// idle marks an HTTP connection between requests (a browser's idle
	// keep-alive connection, ended by a drain or by
	// limits.handshake_timeout): it has no request to answer, and is
	// closed without a word, as HTTP/1.1 servers close an idle
	// connection, so that the client sends its next request on a new
	// one. An answer sent to it unasked would be read as the answer to
	// the next request the client sends on it before it sees the close:
	// a page reloaded just then showed a drain's 503.
	idle bool
}

// goodbye appends what a connection at stage st is told as it ends for
// e, in the protocol it speaks there.
func goodbye(dst []byte, e ending, st stage, d endDetail) []byte {
	info := &endings[e]
	if st == stageHTTP {
		if d.idle {
			return dst
		}
		status, text := info.status, info.statusText
		if d.status != 0 {
			status, text = d.status, d.text
		}
		if status == 0 {
			return dst
		}
		if text == "" {
			text = cmp.Or(d.err, info.err).Text
		}
		return append(dst, web.ErrorResponse(d.method, status, text, d.header)...)
	}
	enc := line.AppendEvent
	if st == stageWS {
		enc = webEncoder{}.AppendEvent
	}
	start := len(dst)
	if d.notSent.Kind != proto.EvNone {
		dst = enc(dst, &d.notSent)
	}
	said := len(dst)
	if err := cmp.Or(d.err, info.err); err != nil {
		dst = enc(dst, &proto.Event{Kind: proto.EvError, Err: err})
	}
	if notice := cmp.Or(d.notice, info.notice); notice != "" {
		dst = enc(dst, &proto.Event{Kind: proto.EvNotice, Text: []byte(notice), Count: d.undelivered})
	}
	if info.last != 0 {
		dst = enc(dst, &proto.Event{Kind: info.last})
	}
	if st == stageWS {
		code, text := info.wsCode, info.wsText
		if d.wsCode != 0 {
			code, text = d.wsCode, d.wsText
		}
		if code != 0 {
			dst = wsframe.AppendClose(dst, code, text)
		}
	}
	if len(dst) == said {
		// An ending that says nothing (its client is gone, or is not
		// reading) tells no count either.
		return dst[:start]
	}
	return dst
}

// lineRefusal is what a connection refused as it opens on the line port
// is told; webRefusal on the web port. d is the refusal's detail
// (Server.refusalDetail).
func lineRefusal(e ending, d endDetail) []byte { return goodbye(nil, e, stageLine, d) }
func webRefusal(e ending, d endDetail) []byte  { return goodbye(nil, e, stageHTTP, d) }

// refusalDetail is the detail of refusal e as the server stands: a
// connection refused while the server drains for a restart
// (Server.Drain: a node of a cluster, or a single node handing its
// sessions on through resume.state_file) is told the server is
// restarting, not shutting down, having just told its users to
// reconnect.
func (s *Server) refusalDetail(e ending) endDetail {
	if e == endDraining && s.restarting.Load() {
		return endDetail{err: proto.ErrRestarting}
	}
	return endDetail{}
}

// wentAway is the ending of a connection that closed without one: the
// client went away. err is what gnet handed OnClose, and sockErr the
// error pending on the socket then (socketError); proxied says the
// socket's peer is a trusted proxy (connAddr.fromProxy). A line or web
// client that ends its input has closed; a WebSocket client closes with
// a close frame, so one that simply stops was lost, like any connection
// that failed (peerGone). A connection the kernel gave up on may have
// been a reader that stopped reading instead (timedOut): onClose asks
// its socket.
//
// A line connection through a trusted proxy that ends its input was
// lost too: the end of input is the proxy's, not the user's. nginx's
// stream proxy ends its connection to duetd with a clean end of input
// whatever ended its client's, a reset included, and so it does when it
// restarts or its proxy_timeout passes; a user that quit on purpose is
// told apart only by /quit. Taken for a leave, such an end freed the
// partner and ended a session its user could have resumed. A web
// connection through a proxy has no session until it upgrades, and a
// WebSocket says its leave in a close frame, which the proxy passes on.
//
// gnet says io.EOF (wrapped in a read *os.SyscallError) when a read
// returns end of input, and the read's or the write's error otherwise.
// But when epoll reports an error or a hang-up on a socket whose reading
// is paused (a held connection: hold.go), gnet closes it with a bare
// io.EOF without reading, whatever happened: the socket's own pending
// error is what tells a failure from an end of input then.
func wentAway(st stage, proxied bool, err, sockErr error) ending {
	if st == stageWS || st == stageLine && proxied || peerGone(err, sockErr) {
		return endLost
	}
	return endClosed
}

// peerGone reports whether the connection failed, as gnet or the socket
// tells it: any error but an end of input. Then what the socket wrote
// that the peer's TCP had not acknowledged never reaches it, and is
// counted lost with what was never written (outbox.Abort). A connection
// the server closes itself, or whose client ended its input, may still
// deliver what its socket holds, and counts only what was never written.
//
// The errors are not a short list. The peer's TCP resets the
// connection (ECONNRESET; EPIPE for a write after that), or the kernel
// gives up on the peer (timedOut): keepalive probes or what was written
// went unanswered, and it reports ETIMEDOUT, or in its place the last
// error the network gave it meanwhile (Linux's tcp_write_err reports
// the socket's soft error): no route to host when a link or the
// neighbour that leads to the peer failed, and whatever an ICMP error
// about the peer said (EHOSTUNREACH, ENETUNREACH, EHOSTDOWN, ENONET,
// ECONNREFUSED, EPROTO, EACCES and more). Counting only the first three
// as gone once closed such a connection as if it might still deliver,
// and a resume replayed only the newest of what never reached it,
// saying nothing of the rest.
func peerGone(err, sockErr error) bool {
	return sockErr != nil || err != nil && !errors.Is(err, io.EOF)
}

// timedOut reports whether the kernel gave up on the connection's peer,
// rather than the peer's TCP ending it: any failure (peerGone) but a
// reset and a write after one. The kernel gives up when keepalive probes
// go unanswered, or TCP_USER_TIMEOUT passes with what was written to
// the peer unacknowledged or its receive window closed, and reports
// ETIMEDOUT or the soft error it holds then (peerGone). The last is a
// reader that stopped reading, which stoppedReading tells apart, and
// which ends slow, not lost, whatever error the kernel reported: its
// answers to the window probes would have cleared a soft error, and one
// that came after them says only that the network failed a reader that
// had stopped reading.
func timedOut(err, sockErr error) bool {
	for _, e := range []error{err, sockErr} {
		var errno syscall.Errno
		if errors.As(e, &errno) && errno != syscall.ECONNRESET && errno != syscall.EPIPE {
			return true
		}
	}
	return false
}

// needsSocketError reports whether the ending of a connection that gnet
// closed with err depends on the socket's pending error: only when gnet
// closed it with a bare io.EOF, without reading (or with no error),
// where the pending error tells a reset (lost) or a timeout (lost, or
// slow) from an end of input. An error other than end of input is the
// socket's error already, and a read that returned end of input is the
// client closing: the look, a system call on every connection's close,
// is spared then.
func needsSocketError(err error) bool {
	if err != nil && !errors.Is(err, io.EOF) {
		return false
	}
	var se *os.SyscallError
	return !errors.As(err, &se) || se.Syscall != "read"
}

// socketError returns the error pending on socket fd (SO_ERROR), if any:
// a reset or a timeout that no read has reported yet.
func socketError(fd int) error {
	n, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil || n == 0 {
		return nil
	}
	return syscall.Errno(n)
}

// end ends the connection for e, as the endings table says. It runs on
// the loop. Only the first ending counts: a connection already ending is
// closed at once by a later one (a reader that quit but never reads its
// bye is cut like any slow reader), and keeps its ending.
func (cn *conn) end(e ending) { cn.endAs(e, endDetail{}) }

// endAs is end with the defaults d overrides.
func (cn *conn) endAs(e ending, d endDetail) {
	if cn.flow.draining {
		// onClose is acting on the input that came before the end (or
		// finishLate, after it): the first ending in it counts, but
		// nothing can be sent any more. The session ends next, with the
		// count of what was never written.
		if cn.closing == endNone {
			cn.closing = e
		}
		return
	}
	if cn.closed {
		return
	}
	if r := cn.refused; r != endNone {
		// A connection refused as it opened ends as refused, whatever
		// ends it first (its request not sent in time, one that is not
		// HTTP, a drain), as it would have been as it opened.
		rd := cn.loop.srv.refusalDetail(r)
		rd.method, rd.idle = d.method, d.idle
		e, d = r, rd
	}
	info := &endings[e]
	if cn.closing != endNone {
		cn.closeNow()
		return
	}
	cn.closing = e
	// From here the loop writes the connection's last bytes itself: no
	// delivery may be written after its goodbye.
	cn.out.SetDirect(false)
	if g := cn.guard; g != nil {
		// The says refused since the last count was told are counted in
		// the goodbye, before it: no count comes after an ending, and an
		// outbox a drain retired (drainBegin), or endDraining retires,
		// takes no event but the connection's own last bytes.
		d.notSent, _ = cn.notSent(g)
	}
	if info.refusal {
		cn.loop.srv.metrics.Rejected(info.label)
	} else if info.err != nil && cn.stage != stageHTTP {
		cn.loop.srv.metrics.Error(info.err.Code)
	}
	if info.drain && !cn.endDraining(e) {
		return // the socket failed as it was written to, and is closed
	}
	if bye := goodbye(nil, e, cn.stage, d); len(bye) > 0 {
		cn.out.DeliverRaw(bye)
	}
	if info.drain {
		cn.closeWhenFlushed()
	} else {
		cn.closeNow()
	}
}

// endDraining begins a draining ending e: nothing is delivered to the
// connection from now on but its goodbye, and its session ends as soon
// as what it never wrote is known, so that its partner is told the
// count of its messages that never reached the client, not 0. What is
// queued is written first: if the socket takes it all, nothing was
// lost and the session ends now, its partner told at once. If not, the
// client is not reading, and the session ends as the connection
// closes (onClose), once its reader takes the rest, or is cut off as a
// slow one: until then what its partner relays to it is dropped and
// counted (Outbox.Retire), and then told with what was never written.
// It reports false if the connection closed as it was written to.
func (cn *conn) endDraining(e ending) bool {
	// A sender held behind this reader goes on now, not once the
	// goodbye is written, which for a reader long gone takes until it
	// is cut as slow.
	for _, w := range cn.out.Retire() {
		w.Wake()
	}
	cn.flush()
	if cn.closed {
		return false
	}
	if cn.out.Unsent() == 0 {
		cn.endSession(e, 0)
	}
	return true
}

// closeNow flushes what the socket takes at once and closes.
func (cn *conn) closeNow() {
	cn.flush()
	cn.closeSocket()
}

// closeWhenFlushed closes the connection once what is queued for it has
// been written: now, if the socket takes it all, or else from
// checkBacklog when gnet has drained.
func (cn *conn) closeWhenFlushed() {
	cn.flush()
	if cn.c.OutboundBuffered() == 0 {
		cn.closeSocket()
	} else {
		cn.loop.addBacklog(cn)
	}
}

// lingerTime bounds a lingering close (closeSocket): how long a client
// that went on sending as its connection ended is given to read its
// goodbye and close its end.
const lingerTime = 2 * time.Second

// closeSocket closes the connection as it ends. A client may still be
// sending as it does: a flood, a frame past the limit, a quit with more
// behind it. The kernel answers the close of a socket with input unread
// with a reset, which throws away what the socket has not sent yet, the
// goodbye among it; and a proxy (nginx) that reads the reset drops what
// it had not passed on. So a connection with input unread lingers, as
// nginx's own lingering close does: nothing more is delivered to it, its
// output is written, then it is shut for writing, its goodbye followed
// by the end of the stream, and what it sends is read and thrown away
// until it closes its end, or lingerTime has passed. A reader cut for
// not reading is not: the reset is what drops what it was counted as
// not receiving (onClose). A connection lingering already, or whose
// input is held, is closed.
//
// A line connection refused as it opened lingers whatever it holds: its
// client may have sent before it read the refusal, which reaches the
// server after it.
//
// A line connection a drain told to resume lingers whatever it holds
// for drainGrace first: what its client sent before it read the
// notice, which reaches the server after it, is counted (readLate) and
// told at the grace's end (graceOver), rather than thrown away untold.
func (cn *conn) closeSocket() {
	ls := cn.loop
	_, lingering := ls.lingering[cn]
	graced := !lingering && cn.closing == endDrain && cn.stage == stageLine && cn.resumeKey.Load() != nil && !cn.held()
	refusedLine := !lingering && cn.refused != endNone && !cn.web
	if !graced && !refusedLine && (lingering || cn.closing == endSlow || cn.held() || !cn.inputUnread()) {
		_ = cn.c.Close()
		return
	}
	ls.lingering[cn] = ls.stamp() + stamp(lingerTime)
	if graced {
		if ls.graced == nil {
			ls.graced = make(map[*conn]*grace)
		}
		ls.graced[cn] = &grace{until: ls.stamp() + stamp(drainGrace)}
		// Woken then (graceOver), not left to the loop's tick, which an
		// engine failing over to its next process no longer runs.
		time.AfterFunc(drainGrace, cn.Wake)
	}
	for _, w := range cn.out.Retire() {
		w.Wake()
	}
	if cn.out.Unsent() == 0 {
		// Nothing is lost that the socket was not given: the session
		// ends now, its partner told at once, not once the linger is
		// over (as a draining ending's, endDraining). Otherwise it ends
		// as the connection closes, with the count of what it never
		// wrote.
		cn.endSession(cn.closing, 0)
	}
	if graced {
		cn.readLate()
	} else {
		_, _ = cn.c.Discard(-1)
	}
	cn.shutWhenFlushed()
}

// shutWhenFlushed shuts a lingering connection for writing once gnet
// holds nothing more for it: now, or from checkBacklog.
func (cn *conn) shutWhenFlushed() {
	if _, graced := cn.loop.graced[cn]; graced {
		return // counting what its client sent late (graceOver)
	}
	if cn.c.OutboundBuffered() > 0 {
		cn.loop.addBacklog(cn)
		return
	}
	if unix.Shutdown(cn.c.Fd(), unix.SHUT_WR) != nil {
		_ = cn.c.Close()
	}
}

// grace is what a drain's grace keeps of a line connection (closeSocket):
// when it ends, and how many messages came late meanwhile.
type grace struct {
	until stamp
	late  int
}

// graceOver ends a graced connection's grace once it is over: the
// notice is told again with the count of messages that came late, if
// any, once; then the connection closes as any that ends does
// (closeSocket): at once if nothing is unread, the kernel answering
// whatever comes next with a reset, which a netcat that ignores the end
// of the stream (its input a terminal) reads and exits on; else it
// lingers, shut for writing. It does nothing before the grace is over,
// or to a connection never graced.
func (cn *conn) graceOver() {
	g, graced := cn.loop.graced[cn]
	if !graced || cn.loop.stamp() < g.until {
		return
	}
	delete(cn.loop.graced, cn)
	if key := cn.resumeKey.Load(); g.late > 0 && key != nil {
		notice := drainNoticeText(true, key.String(), cn.loop.srv.resume.Load().Window)
		_, _ = cn.c.Write(line.AppendEvent(nil, &proto.Event{Kind: proto.EvNotice, Text: []byte(notice), Count: g.late}))
	}
	if !cn.inputUnread() {
		// gnet writes what it holds before it closes.
		_ = cn.c.Close()
		return
	}
	_, _ = cn.c.Discard(-1)
	cn.shutWhenFlushed()
}

// inputUnread reports whether input is left unread, by gnet or in the
// kernel: closed so, the connection would be reset (closeSocket).
func (cn *conn) inputUnread() bool {
	return cn.c.InboundBuffered() > 0 || unreadInput(cn.c.Fd())
}

// lingered shuts the graced connections whose grace is over (a
// backstop: each is woken for it), and closes the lingering
// connections whose time is up.
func (ls *loopState) lingered() {
	for cn := range ls.graced {
		cn.graceOver()
	}
	now := ls.stamp()
	for cn, until := range ls.lingering {
		if now >= until {
			_ = cn.c.Close()
		}
	}
}

// endSession does to the connection's session, if it has one, what
// ending e says: it ends it, its partner told why and that lost of its
// messages were never delivered; or it sends it away to wait for a
// resume, which with resume off ends it all the same (hub's Detach). A
// server shutting down keeps no session waiting: it could not resume
// it.
func (cn *conn) endSession(e ending, lost int) {
	if cn.sess != nil {
		cn.endSessionOf(cn.sess, e, lost)
	}
}

// endSessionOf does to s what ending e says, as endSession does to the
// connection's session. Safe from any goroutine.
func (cn *conn) endSessionOf(s *hub.Session, e ending, lost int) {
	info := &endings[e]
	switch info.session {
	case endSession:
		s.Close(info.partnerReason(), lost)
	case detachSession:
		if cn.loop.srv.draining.Load() {
			s.Close(info.partnerReason(), lost)
			return
		}
		// Counted by its client's address, so that one address
		// dropping connections by the thousand ends its own away
		// sessions, not everyone's (resume.max_away_per_ip).
		s.DetachFrom(cn.sourceKey(), info.partnerReason(), lost)
	}
}

// partnerReason is what a partner is told of this ending. One that never
// befalls a logged-in connection says disconnected, should it ever.
func (info *endingInfo) partnerReason() proto.Reason {
	if info.partner == "" {
		return proto.ReasonDisconnected
	}
	return info.partner
}
