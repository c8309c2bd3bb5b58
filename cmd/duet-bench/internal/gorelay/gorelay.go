// Package gorelay is the relay most people write first, kept as a
// reference point for duetd: the net package, one goroutine per
// connection reading through bufio, and one mutex-protected map from
// token to session. It speaks the subset of duet's protocols that the
// load generator uses. On the line protocol:
//
//	server, on connect   * welcome ...
//	/login NAME          * you are NAME, your token is TOKEN
//	/connect TOKEN       * you are connected with OWNER   (to the connector)
//	                     * CONNECTOR is connected         (to the owner)
//	text                 <NAME> text                      (to the peer)
//	/quit                * bye, and the connection closes
//	errors               ! code: text
//	peer gone            * NAME left; ...
//
// and, when given a WebSocket address, the same as JSON objects in text
// frames (hello, login/welcome, connect/paired, say/message, error,
// peer_left), built with encoding/json and gobwas/ws's wsutil helpers as
// a first version would be.
//
// It is deliberately plain: each relayed message is written to the peer's
// socket at once, one write per message, as a first version does. With
// Config.Batch it makes one concession a tuned version would: a reader
// flushes its peer's writer only when it has no further whole line or
// frame buffered, so a burst read together leaves in one write. The
// benchmarks report both.
package gorelay

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"sync"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"duet/proto"
	"duet/proto/wsframe"
)

// Config says where to listen. An empty address leaves that protocol off.
type Config struct {
	LineAddr string // line protocol, host:port
	Batch    bool   // coalesce a burst of relayed messages into one write
	WSAddr   string // WebSocket, host:port
	WSPath   string // WebSocket path; "/ws" if empty
}

// Server is a running goroutine relay.
type Server struct {
	lineLn net.Listener
	wsLn   net.Listener
	wsPath string

	mu       sync.Mutex
	byToken  map[proto.Token]*session
	names    map[string]*session
	conns    map[net.Conn]struct{}
	closing  bool
	handlers sync.WaitGroup
	batch    bool
}

// session is one connection and, once logged in, its user.
type session struct {
	conn net.Conn
	r    *bufio.Reader
	json bool // speaks JSON over WebSocket rather than lines

	wmu sync.Mutex // guards w: the session's own goroutine and its peer's both write
	w   *bufio.Writer

	// unflushed is a peer whose writer holds messages this session relayed
	// without flushing; the session's own goroutine flushes it once no
	// whole message is left in its reader. Only that goroutine touches it.
	unflushed *session

	// Guarded by Server.mu.
	name  string
	token proto.Token
	peer  *session
}

// Listen starts a relay.
func Listen(cfg Config) (*Server, error) {
	s := &Server{
		batch:   cfg.Batch,
		wsPath:  cfg.WSPath,
		byToken: make(map[proto.Token]*session),
		names:   make(map[string]*session),
		conns:   make(map[net.Conn]struct{}),
	}
	if s.wsPath == "" {
		s.wsPath = "/ws"
	}
	if cfg.LineAddr == "" && cfg.WSAddr == "" {
		return nil, errors.New("no address to listen on")
	}
	var err error
	if cfg.LineAddr != "" {
		if s.lineLn, err = net.Listen("tcp", cfg.LineAddr); err != nil {
			return nil, err
		}
	}
	if cfg.WSAddr != "" {
		if s.wsLn, err = net.Listen("tcp", cfg.WSAddr); err != nil {
			if s.lineLn != nil {
				_ = s.lineLn.Close()
			}
			return nil, err
		}
	}
	for _, ln := range []net.Listener{s.lineLn, s.wsLn} {
		if ln != nil {
			s.handlers.Add(1)
			go s.acceptLoop(ln, ln == s.wsLn)
		}
	}
	return s, nil
}

// LineAddr is the line protocol's listening address, or nil.
func (s *Server) LineAddr() net.Addr {
	if s.lineLn == nil {
		return nil
	}
	return s.lineLn.Addr()
}

// WSAddr is the WebSocket listening address, or nil.
func (s *Server) WSAddr() net.Addr {
	if s.wsLn == nil {
		return nil
	}
	return s.wsLn.Addr()
}

// Paired counts the sessions that have a peer now.
func (s *Server) Paired() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, ss := range s.names {
		if ss.peer != nil {
			n++
		}
	}
	return n
}

// Close stops accepting, closes every connection and waits for their
// goroutines to end.
func (s *Server) Close() error {
	var errs []error
	for _, ln := range []net.Listener{s.lineLn, s.wsLn} {
		if ln != nil {
			errs = append(errs, ln.Close())
		}
	}
	s.mu.Lock()
	s.closing = true
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.handlers.Wait()
	return errors.Join(errs...)
}

func (s *Server) acceptLoop(ln net.Listener, websocket bool) {
	defer s.handlers.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: this connection is
			// lost, the listener is not.
			continue
		}
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.handlers.Add(1)
		s.mu.Unlock()
		if websocket {
			go s.serveWS(c)
		} else {
			go s.serveLine(c)
		}
	}
}

const maxLineLen = 4096

func newSession(c net.Conn, json bool) *session {
	return &session{conn: c, json: json, r: bufio.NewReaderSize(c, maxLineLen), w: bufio.NewWriter(c)}
}

func (s *Server) serveLine(c net.Conn) {
	defer s.handlers.Done()
	ss := newSession(c, false)
	defer s.drop(ss)
	ss.send("* welcome to duet (goroutine reference relay); log in with /login NAME", nil)
	for {
		line, err := ss.r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			for err == bufio.ErrBufferFull {
				_, err = ss.r.ReadSlice('\n')
			}
			if err != nil {
				return
			}
			ss.sendError(proto.ErrTooLong)
			continue
		}
		if err != nil {
			return
		}
		line = bytes.TrimRight(line, "\r\n")
		more := bytes.IndexByte(peekBuffered(ss.r), '\n') >= 0
		keep := s.handleLine(ss, line, more)
		ss.flushPeerUnless(more)
		if !keep {
			return
		}
	}
}

func peekBuffered(r *bufio.Reader) []byte {
	b, _ := r.Peek(r.Buffered())
	return b
}

// flushPeerUnless flushes what this session relayed to its peer, unless
// more input is already waiting and will be relayed first.
func (ss *session) flushPeerUnless(more bool) {
	if !more && ss.unflushed != nil {
		ss.unflushed.flush()
		ss.unflushed = nil
	}
}

// handleLine acts on one line; false ends the connection.
func (s *Server) handleLine(ss *session, line []byte, more bool) bool {
	if len(line) == 0 {
		return true
	}
	if line[0] != '/' || bytes.HasPrefix(line, []byte("//")) {
		if line[0] == '/' {
			line = line[1:]
		}
		s.say(ss, line, more)
		return true
	}
	cmd, arg, _ := bytes.Cut(line, []byte(" "))
	arg = bytes.TrimSpace(arg)
	switch string(cmd) {
	case "/login":
		s.login(ss, arg)
	case "/connect":
		s.connect(ss, arg)
	case "/quit":
		ss.send("* bye", nil)
		return false
	default:
		ss.sendError(proto.ErrUnknownCommand)
	}
	return true
}

// clientMessage is any JSON object a client sends.
type clientMessage struct {
	Type  string `json:"type"`
	Name  string `json:"name"`
	Token string `json:"token"`
	Text  string `json:"text"`
}

func (s *Server) serveWS(c net.Conn) {
	defer s.handlers.Done()
	ss := newSession(c, true)
	defer s.drop(ss)
	up := ws.Upgrader{OnRequest: func(uri []byte) error {
		if path, _, _ := bytes.Cut(uri, []byte("?")); string(path) != s.wsPath {
			return ws.RejectConnectionError(ws.RejectionStatus(404))
		}
		return nil
	}}
	if _, err := up.Upgrade(c); err != nil {
		return
	}
	ss.send("", map[string]string{"type": "hello", "auth": "open"})
	// Control frames are answered through the session's locked writer.
	rw := struct {
		io.Reader
		io.Writer
	}{ss.r, lockedWriter{ss}}
	for {
		data, _, err := wsutil.ReadClientData(rw)
		if err != nil {
			return
		}
		more := frameBuffered(peekBuffered(ss.r))
		var m clientMessage
		if err := json.Unmarshal(data, &m); err != nil {
			ss.sendError(proto.ErrBadJSON)
			continue
		}
		switch m.Type {
		case "login":
			s.login(ss, []byte(m.Name))
		case "connect":
			s.connect(ss, []byte(m.Token))
		case "say":
			s.say(ss, []byte(m.Text), more)
		default:
			ss.sendError(proto.ErrUnknownType)
		}
		ss.flushPeerUnless(more)
	}
}

// frameBuffered reports whether b starts with a whole WebSocket frame.
func frameBuffered(b []byte) bool {
	h, size, err := wsframe.ParseHeader(b)
	return err == nil && size > 0 && int64(len(b)-size) >= h.Length
}

// lockedWriter writes and flushes under the session's write lock.
type lockedWriter struct{ ss *session }

func (lw lockedWriter) Write(p []byte) (int, error) {
	lw.ss.wmu.Lock()
	defer lw.ss.wmu.Unlock()
	n, err := lw.ss.w.Write(p)
	if err == nil {
		err = lw.ss.w.Flush()
	}
	return n, err
}

func (s *Server) login(ss *session, name []byte) {
	if !proto.ValidName(name) {
		ss.sendError(proto.ErrBadName)
		return
	}
	s.mu.Lock()
	if ss.name != "" {
		s.mu.Unlock()
		ss.sendError(proto.ErrAlreadyLoggedIn)
		return
	}
	if _, taken := s.names[string(name)]; taken {
		s.mu.Unlock()
		ss.sendError(proto.ErrNameTaken)
		return
	}
	ss.name = string(name)
	ss.token = proto.NewToken()
	s.names[ss.name] = ss
	s.byToken[ss.token] = ss
	s.mu.Unlock()
	ss.send("* you are "+ss.name+", your token is "+ss.token.String(),
		map[string]string{"type": "welcome", "name": ss.name, "token": ss.token.String()})
}

func (s *Server) connect(ss *session, arg []byte) {
	token, err := proto.ParseToken(arg)
	if err != nil {
		ss.sendError(err)
		return
	}
	s.mu.Lock()
	owner, found := s.byToken[token]
	var failure *proto.Error
	switch {
	case ss.name == "":
		failure = proto.ErrNotLoggedIn
	case ss.peer != nil:
		failure = proto.ErrAlreadyPaired
	case !found:
		failure = proto.ErrUnknownToken
	case owner == ss:
		failure = proto.ErrSelfConnect
	case owner.peer != nil:
		failure = proto.ErrRoomFull
	}
	if failure != nil {
		s.mu.Unlock()
		ss.sendError(failure)
		return
	}
	owner.peer, ss.peer = ss, owner
	ownerName, name := owner.name, ss.name
	s.mu.Unlock()
	ss.send("* you are connected with "+ownerName,
		map[string]any{"type": "paired", "peer": ownerName, "initiator": true})
	owner.send("* "+name+" is connected",
		map[string]any{"type": "paired", "peer": name, "initiator": false})
}

// say relays one message to the peer: "<NAME> text" or a message object.
func (s *Server) say(ss *session, text []byte, more bool) {
	if !s.batch {
		more = false
	}
	s.mu.Lock()
	peer, name := ss.peer, ss.name
	s.mu.Unlock()
	switch {
	case name == "":
		ss.sendError(proto.ErrNotLoggedIn)
		return
	case peer == nil:
		ss.sendError(proto.ErrNotPaired)
		return
	}
	var obj []byte
	if peer.json {
		obj, _ = json.Marshal(struct {
			Type string `json:"type"`
			From string `json:"from"`
			Text string `json:"text"`
		}{"message", name, string(text)})
	}
	peer.wmu.Lock()
	w := peer.w
	if peer.json {
		_ = ws.WriteHeader(w, ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(len(obj))})
		_, _ = w.Write(obj)
	} else {
		_ = w.WriteByte('<')
		_, _ = w.WriteString(name)
		_, _ = w.WriteString("> ")
		_, _ = w.Write(text)
		_, _ = w.WriteString("\r\n")
	}
	if !more {
		_ = w.Flush()
	}
	peer.wmu.Unlock()
	if more {
		ss.unflushed = peer
	}
}

func (ss *session) flush() {
	ss.wmu.Lock()
	_ = ss.w.Flush()
	ss.wmu.Unlock()
}

// send writes one event to the session itself, as a line or as a JSON
// object, and flushes: replies are rare next to relayed messages.
func (ss *session) send(line string, obj any) {
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	if ss.json {
		if obj == nil {
			return
		}
		b, _ := json.Marshal(obj)
		_ = wsutil.WriteServerText(ss.w, b)
	} else {
		_, _ = ss.w.WriteString(line)
		_, _ = ss.w.WriteString("\r\n")
	}
	_ = ss.w.Flush()
}

func (ss *session) sendError(e *proto.Error) {
	ss.send("! "+e.Code+": "+e.Text, map[string]string{"type": "error", "code": e.Code, "text": e.Text})
}

// drop forgets a closed session and tells its peer.
func (s *Server) drop(ss *session) {
	_ = ss.conn.Close()
	s.mu.Lock()
	delete(s.conns, ss.conn)
	if ss.name != "" {
		delete(s.names, ss.name)
		delete(s.byToken, ss.token)
	}
	peer := ss.peer
	ss.peer = nil
	if peer != nil {
		peer.peer = nil
	}
	s.mu.Unlock()
	if peer != nil {
		peer.send("* "+ss.name+" left; /connect with a token to talk to someone else",
			map[string]any{"type": "peer_left", "peer": ss.name, "reason": "disconnected", "count": 0})
	}
}
