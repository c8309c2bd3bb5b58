package engine

import (
	"errors"
	"net"
	"net/http"
	"strings"

	"github.com/gobwas/ws"
	"go.uber.org/zap"

	"duet/engine/logsample"
	"duet/proto"
	"duet/proto/httphead"
	"duet/proto/jsonproto"
	"duet/proto/wsframe"
	"duet/web"
)

// wsPath is where the WebSocket endpoint lives; everything else on the
// web port is the browser client.
const wsPath = "/ws"

// readWeb handles HTTP requests and, after an upgrade, WebSocket frames.
// It returns the bytes of buf it used.
func (cn *conn) readWeb(buf []byte) int {
	if cn.stage == stageWS {
		// limits.max_frame as it is now: a reload applies to WebSockets
		// already open, as limits.max_line does to lines (lendFramer).
		cn.ws.r.MaxMessage = cn.loop.srv.lim().MaxFrame
	}
	used := 0
	for cn.reads() && used < len(buf) {
		var n int
		if cn.stage == stageHTTP {
			n = cn.readRequest(buf[used:])
		} else {
			n = cn.readFrame(buf[used:])
		}
		if n == 0 {
			break
		}
		used += n
	}
	cn.sayRun()
	return used
}

// webPortWord is the answer to a line-protocol command sent to the web
// port: what the port is for, and where the line port is. A server
// with none says so, rather than send the client to look for a port
// that is not there, as linePortWord names no web port on a server
// without one. A client that came through a trusted proxy (viaProxy)
// knows the proxy's ports, not duetd's own, which it may not reach: the
// port is not named.
func (s *Server) webPortWord(viaProxy bool) string {
	const word = "this is duet's web port, for browsers and WebSocket clients"
	port := listenPort(s.opts.TCPListen)
	switch {
	case port == "":
		return word + "; this server has no line port for netcat and telnet: use a browser or a WebSocket client"
	case viaProxy:
		return word + "; netcat and telnet speak to the line port"
	}
	return word + "; netcat and telnet speak to the line port, port " + port
}

// linePortWord is the notice after the refusal of an HTTP request on the
// line port (http_request): where the web port is, or "" with none. Its
// port is not named to a client that came through a trusted proxy
// (viaProxy), as webPortWord's is not.
func (s *Server) linePortWord(viaProxy bool) string {
	port := listenPort(s.opts.WSListen)
	switch {
	case port == "":
		return ""
	case viaProxy:
		return "browsers and HTTP clients use the web port"
	}
	return "browsers and HTTP clients use the web port, port " + port
}

// listenPort is the port of a listen address (the bound one, once the
// server has started), or "" for a listener that is off.
func listenPort(listen string) string {
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		return ""
	}
	return port
}

// readRequest answers one HTTP request: the upgrade to WebSocket at /ws,
// or a page of the browser client.
func (cn *conn) readRequest(buf []byte) int {
	h := httphead.Parse(buf)
	switch h.Status {
	case 0:
		if h.End == 0 {
			return 0
		}
	case http.StatusRequestHeaderFieldsTooLarge:
		cn.endAs(endProtocol, endDetail{status: h.Status, text: "request header too large"})
		return h.Used
	case http.StatusBadRequest:
		if h.Command {
			cn.endAs(endProtocol, endDetail{status: h.Status, text: cn.loop.srv.webPortWord(cn.addr.fromProxy)})
			return h.Used
		}
		cn.end(endProtocol)
		return h.Used
	default:
		cn.end(endProtocol) // 400
		return h.Used
	}
	req, end := h.Request, h.End
	head := buf[:end]
	refusal := cn.refused
	if refusal == endNone {
		refusal = cn.forwardedFor(req)
	}
	// A request body is never expected here: a page request's is not
	// skipped (the answer closes the connection instead), and an
	// upgrade's would be read as WebSocket frames, so one that declares
	// a body is refused before it upgrades.
	hasBody := req.ContentLength != 0 || len(req.TransferEncoding) > 0
	if refusal != endNone {
		cn.refuseRequest(refusal, req, head, hasBody)
		return len(buf)
	}
	if req.URL.Path == wsPath {
		if hasBody {
			cn.endAs(endProtocol, endDetail{status: http.StatusBadRequest, text: "handshake error: a WebSocket upgrade request must not have a body", method: req.Method})
			return end
		}
		resp, err := cn.loop.srv.upgrade(head)
		if err != nil {
			var refused *wsframe.HandshakeError
			errors.As(err, &refused)
			e := endProtocol
			if errors.Is(err, wsframe.ErrOriginRefused) {
				e = endOrigin
				cn.loop.srv.logRefusal(e, cn.id, cn.addr.ip, zap.String("origin", logsample.Printable(req.Header.Get("Origin"), 64)))
			}
			cn.endAs(e, endDetail{status: refused.Status, text: refused.Reason, header: refused.Header, method: req.Method})
			return end
		}
		cn.upgraded(resp)
		cn.out.Deliver(&proto.Event{Kind: proto.EvHello, Auth: cn.loop.srv.opts.AuthMode, MaxText: cn.loop.srv.lim().MaxText})
		return end
	}
	if !cn.spend() {
		// Pipelined requests past the rate limit: a browser loading the
		// client sends a handful.
		cn.endAs(endTooMany, endDetail{method: req.Method})
		return len(buf)
	}
	var resp []byte
	keep := false
	if cn.loop.srv.opts.Site != nil {
		resp, keep = cn.loop.srv.opts.Site.Respond(req)
	} else {
		resp = web.ErrorResponse(req.Method, 404, "not found")
	}
	cn.out.DeliverRaw(resp)
	if !keep || hasBody {
		cn.end(endServed)
		return len(buf)
	}
	cn.opened = cn.loop.stamp() // the next request gets its own deadline
	cn.keptAlive = true
	// A client that pipelines requests without reading the responses is
	// held like any slow reader, so each request read cannot grow the
	// queue by a whole page.
	cn.backPressure(cn.out)
	return end
}

// upgrade answers the WebSocket handshake in head, or says why it is
// refused.
func (s *Server) upgrade(head []byte) ([]byte, error) {
	return wsframe.Upgrade(head, wsframe.UpgradeConfig{Path: wsPath, CheckOrigin: s.checkOrigin, Subprotocols: []string{jsonproto.Subprotocol}})
}

// upgraded makes the connection a WebSocket, its handshake answered
// with resp.
func (cn *conn) upgraded(resp []byte) {
	cn.out.DeliverRaw(resp)
	cn.stage = stageWS
	cn.out.SetDirect(true) // see WriteDirect
	cn.loop.srv.metrics.Upgraded()
	cn.ws = &wsState{r: wsframe.Reader{MaxMessage: cn.loop.srv.lim().MaxFrame}, lastRecv: cn.loop.now, lastPing: cn.loop.now}
	cn.opened = cn.loop.stamp()
}

// A connection refused on the web port as it opens is kept to read its
// request (refuseRequest), rather than answered at once, unread, with a
// 503 its client may not be able to read; one refused on the line port
// is kept to linger after its refusal (closeSocket), so that input its
// client sent at once does not meet a reset. These bound how many are
// kept, of both: from one address, and the addresses with any, so at
// most 1024 in all, each for at most limits.handshake_timeout (a line
// one, lingerTime). Past them a refusal is answered as the connection
// opens, unread: 503, or the line. A page retrying with back-off opens
// one at a time.
const (
	refusalsKeptPerAddr = 4
	refusalsKeptAddrs   = 256
)

// refuseRequest answers the request of a connection refused for e: as
// it opened, or for the client a trusted proxy names. A browser page
// cannot read the status of a WebSocket upgrade refused, and would know
// only that it could not connect: an upgrade that would be accepted is
// accepted, and the refusal told in it, its error and then close 1013,
// try again later. Anything else (a page's request, an upgrade refused
// for its origin) is answered with the refusal's status, 503.
func (cn *conn) refuseRequest(e ending, req *http.Request, head []byte, hasBody bool) {
	if req.URL.Path == wsPath && !hasBody {
		if resp, err := cn.loop.srv.upgrade(head); err == nil {
			cn.upgraded(resp)
		}
	}
	cn.endAs(e, endDetail{method: req.Method})
}

// readFrame handles one WebSocket frame.
func (cn *conn) readFrame(buf []byte) int {
	msg, ok, n, err := cn.ws.r.Next(buf)
	if err != nil {
		cn.sayRun()
		var d endDetail // 1002 protocol error, unless the reader says more
		if ce, isClose := err.(*wsframe.CloseError); isClose {
			d.wsCode, d.wsText = ce.Code, ce.Reason
		}
		cn.endAs(endProtocol, d)
		return len(buf)
	}
	if n == 0 {
		return 0
	}
	if !cn.ws.r.InMessage() {
		// A frame while a fragmented message is being assembled, a pong
		// between its fragments among them, is no sign of life: it
		// must be finished within limits.idle_timeout of the frame
		// before its first, or a client that answers every ping could
		// hold its unfinished message (up to limits.max_frame) for ever.
		cn.ws.lastRecv = cn.loop.now
	}
	if !ok {
		return n
	}
	switch msg.Op {
	case ws.OpText:
		if cn.sess != nil {
			// A say as browsers write it, nearly every frame once logged
			// in, takes the short way; anything else is decoded in full.
			if text, id, ok := cn.loop.json.Say(msg.Payload); ok {
				cn.addToRun(cn.keepForRun(text, buf), id)
				return n
			}
		}
		cmd, perr := cn.loop.json.Decode(msg.Payload)
		if perr == nil && cmd.Op == proto.OpSay && cn.sess != nil {
			cn.addToRun(cn.keepForRun(cmd.Text, buf), cmd.ID)
			return n
		}
		cn.sayRun()
		if perr != nil {
			// A say or seal refused as it is read names its id (0 for
			// anything else).
			if !cn.drainedRefusal(cmd.Op == proto.OpSay || cmd.Op == proto.OpSeal) {
				cn.rejectSay(perr, cmd.ID)
			}
			return n
		}
		cn.handle(&cmd)
		return n
	}
	cn.sayRun()
	switch msg.Op {
	case ws.OpBinary:
		cn.end(endBinary)
	case ws.OpPing:
		// Each ping costs a pong: pings spend tokens like commands, and a
		// client that does not read its pongs is paused like any reader.
		if cn.spend() {
			cn.out.DeliverRaw(wsframe.AppendFrame(nil, ws.OpPong, msg.Payload))
		}
		cn.backPressure(cn.out)
	case ws.OpPong:
		// The answer to the server's ping is free; a pong unasked (RFC
		// 6455 allows them, as a heartbeat) spends a token, so that a
		// flood of them is cut as any flood is, rather than read for
		// ever at no cost.
		cn.spendPong()
	case ws.OpClose:
		// Answer the close and end. The reader has checked the code.
		// 1001 going away is what a browser sends for a page left or
		// reloaded, and 4001 what a page sends for it itself: its session
		// waits for the page to resume it. 1000 is what a page sends only
		// on purpose, as the user leaves: the partner is told left.
		// Anything else (no code, 1005, another code of the page's own)
		// ends the session as a disconnect.
		switch code, _ := ws.ParseCloseFrameData(msg.Payload); code {
		case ws.StatusGoingAway, statusPageAway:
			cn.end(endGoingAway)
		case ws.StatusNormalClosure:
			cn.end(endNormalClose)
		default:
			cn.end(endClosed)
		}
	}
	return n
}

// checkOrigin guards against cross-site WebSocket hijacking: a browser
// page from another site must not act as the user. origin is nil when
// the request has no Origin header: clients other than browsers send
// none, and are allowed. A header that is present must name an origin
// the allow-list accepts or, with no list, the request's own host. An
// empty header names no origin and is refused even under "*"; so is an
// opaque origin ("null": a sandboxed frame, a file or data: page) unless
// the list says "*", since it can never equal a Host.
func (s *Server) checkOrigin(origin, host []byte) bool {
	if origin == nil {
		return true
	}
	if len(origin) == 0 {
		return false
	}
	allowed := *s.origin.Load()
	o := string(origin)
	for _, a := range allowed {
		if a == "*" || strings.EqualFold(a, o) {
			return true
		}
	}
	if len(allowed) > 0 || len(host) == 0 {
		return false
	}
	// Anything but scheme://host[:port] is not an origin a browser wrote.
	_, oh, ok := httphead.Origin(o)
	return ok && strings.EqualFold(oh, string(host))
}

// webEncoder encodes events as JSON in WebSocket text frames
// (outbox.Encoder).
type webEncoder struct{}

// AppendEvent frames ev as one text frame, or as nothing when JSON has
// nothing to say for it (a replay's end: the resumed event said how many
// messages it replays).
func (webEncoder) AppendEvent(dst []byte, ev *proto.Event) []byte {
	dst, mark := wsframe.StartFrame(dst)
	start := len(dst)
	if dst = jsonproto.AppendEvent(dst, ev); len(dst) == start {
		return dst[:mark]
	}
	return wsframe.FinishFrame(dst, mark, ws.OpText)
}

// AppendMessages makes the part of a message event before its text once
// for the run, and copies it in front of each text; ends gets where each
// frame ends.
func (webEncoder) AppendMessages(dst []byte, ends []int32, ev *proto.Event, texts [][]byte) ([]byte, []int32) {
	var room [128]byte // the head of any name a login allows, on the stack
	head := jsonproto.AppendMessageHead(room[:0], ev.From)
	// ev.Seq, when set, is the first text's; each next text's is one
	// more (hub.BatchOutbox).
	seq := ev.Seq
	for _, text := range texts {
		var mark int
		dst, mark = wsframe.StartFrame(dst)
		dst = append(dst, head...)
		dst = jsonproto.AppendMessageText(dst, text, seq)
		dst = wsframe.FinishFrame(dst, mark, ws.OpText)
		ends = append(ends, int32(len(dst)))
		if seq != 0 {
			seq++
		}
	}
	return dst, ends
}
