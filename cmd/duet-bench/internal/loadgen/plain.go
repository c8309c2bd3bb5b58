package loadgen

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/gobwas/ws/wsutil"
)

// The plain client is the relay phase written the way a user writes a
// chat client in ten minutes, with the standard library and gobwas/ws's
// wsutil helpers. It is plain on purpose, and must stay so: a server's
// cost per message can depend on how its clients time their reads and
// writes, and this is how most clients time them. Per connection:
//
//   - A writer goroutine formats each message with fmt into one
//     bufio.Writer (for WebSocket: encoding/json, then
//     wsutil.WriteClientText into the same bufio.Writer) and flushes when
//     the sender's window is spent, and at the end. While the window is
//     full it waits on a sync.Cond.
//   - A reader goroutine reads each line with bufio.Reader.ReadString
//     (for WebSocket: wsutil.ReadServerText over the same kind of
//     bufio.Reader, then encoding/json), picks the sequence number and
//     send time out of the text with a regexp, and signals the sender's
//     writer after every message.
//
// It checks order, loss and corruption as the tuned client does, through
// the same counters, and so reports the same figures. Connecting, pairing
// and the idle mode are the tuned client's: only the relay phase differs.

// plainTextPattern is a message text: a sequence number of 10 hex
// digits, a send time of 14, then the padding.
var plainTextPattern = regexp.MustCompile(`^([0-9a-f]{10})([0-9a-f]{14})(x*)$`)

// plainSay is a message sent over WebSocket, and plainEvent what the
// reader takes from each of the server's JSON objects.
type plainSay struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type plainEvent struct {
	Type string `json:"type"`
	Text string `json:"text"`
	Code string `json:"code"`
}

// plainRelay runs the relay phase with the plain client over a relay's
// flows, counters and histograms.
type plainRelay struct {
	*relay
	padding string
	conns   []*plainConn
}

// plainConn is one connection of the plain client.
type plainConn struct {
	e    *endpoint
	peer *plainConn
	ws   bool // JSON over WebSocket
	bare bool // the bare relay: every line is a message text
	br   *bufio.Reader
	rw   io.ReadWriter // br, and pongs written through bw

	wmu sync.Mutex // guards bw: the writer's messages and the reader's pongs
	bw  *bufio.Writer

	// room waits, on the flow's mutex, for the window to have room or
	// sending to be over.
	room *sync.Cond
}

func newPlainRelay(rl *relay, paired []*endpoint) *plainRelay {
	p := &plainRelay{relay: rl, padding: string(rl.padding)}
	byEndpoint := make(map[*endpoint]*plainConn, len(paired))
	for _, e := range paired {
		c := &plainConn{e: e, br: plainReader(e), bw: bufio.NewWriter(e.conn)}
		c.room = sync.NewCond(&e.out.mu)
		switch e.codec.(type) {
		case *wsCodec:
			c.ws = true
		case bareCodec:
			c.bare = true
		}
		c.rw = struct {
			io.Reader
			io.Writer
		}{c.br, pongWriter{c}}
		byEndpoint[e] = c
		p.conns = append(p.conns, c)
	}
	for _, c := range p.conns {
		c.peer = byEndpoint[c.e.peer]
	}
	rl.wake = func(e *endpoint) { byEndpoint[e].wake() }
	return p
}

// plainReader is the connection's reader for the relay, with whatever
// setup left buffered in the tuned reader: a user would have read setup
// through this reader too.
func plainReader(e *endpoint) *bufio.Reader {
	src := e.src
	if n := e.br.Buffered(); n > 0 {
		pending, _ := e.br.Peek(n)
		src = io.MultiReader(bytes.NewReader(bytes.Clone(pending)), src)
	}
	return bufio.NewReader(src)
}

// pongWriter is where wsutil.ReadServerText answers a ping: the
// connection's bufio.Writer, flushed at once.
type pongWriter struct{ c *plainConn }

func (w pongWriter) Write(b []byte) (int, error) {
	w.c.wmu.Lock()
	defer w.c.wmu.Unlock()
	n, err := w.c.bw.Write(b)
	if err == nil {
		err = w.c.bw.Flush()
	}
	return n, err
}

// wake tells c's writer that its window or its flow changed. The flow's
// mutex is taken so that a writer between its check and its wait does
// not miss the news.
func (c *plainConn) wake() {
	c.e.out.mu.Lock()
	// Empty on purpose: taking the lock is what orders the change before
	// the broadcast.
	c.e.out.mu.Unlock()
	c.room.Broadcast()
}

func (p *plainRelay) startReaders() {
	for _, c := range p.conns {
		p.wg.Add(1)
		go p.readLoop(c)
	}
}

func (p *plainRelay) startWriters() {
	for _, c := range p.conns {
		p.wg.Add(1)
		go p.writeLoop(c)
	}
}

// writeLoop sends c's messages until the run's count is sent, the run
// stops or the connection fails.
func (p *plainRelay) writeLoop(c *plainConn) {
	defer p.wg.Done()
	f := &c.e.out
	for {
		f.mu.Lock()
		for !f.closed && !f.failed.Load() && !p.stop.Load() && int64(f.next)-f.resolved() >= p.window {
			c.room.Wait()
		}
		if f.closed || f.failed.Load() || p.stop.Load() || (p.target >= 0 && int64(f.next) >= p.target) {
			f.closed = true
			f.mu.Unlock()
			break
		}
		seq := f.next
		f.next++
		f.sent.Store(int64(f.next))
		f.mu.Unlock()

		c.wmu.Lock()
		err := c.writeMessage(seq, p.clock.now(), p.padding)
		if err == nil && int64(seq+1)-f.resolved() >= p.window {
			err = c.bw.Flush() // the window is spent
		}
		c.wmu.Unlock()
		if err != nil {
			f.failed.Store(true)
			break
		}
	}
	c.wmu.Lock()
	if err := c.bw.Flush(); err != nil {
		f.failed.Store(true)
	}
	c.wmu.Unlock()
}

func (c *plainConn) writeMessage(seq uint64, stamp int64, padding string) error {
	if !c.ws {
		_, err := fmt.Fprintf(c.bw, "%010x%014x%s\n", seq, stamp, padding)
		return err
	}
	payload, err := json.Marshal(plainSay{Type: "say", Text: fmt.Sprintf("%010x%014x%s", seq, stamp, padding)})
	if err != nil {
		return err
	}
	return wsutil.WriteClientText(c.bw, payload)
}

// readLoop is c's reader: it checks every message and tells the sender's
// writer about each one.
func (p *plainRelay) readLoop(c *plainConn) {
	defer p.wg.Done()
	e := c.e
	in := &e.in
	peerFlow := &e.peer.out
	shard := &p.shards[e.index%latencyShards]
	defer p.flushLatencies(in, shard)

	fail := func(err error) {
		if p.closing.Load() {
			return
		}
		in.readErr = err
		// Nothing more can cross this connection either way.
		e.out.failed.Store(true)
		peerFlow.failed.Store(true)
		c.wake()
		c.peer.wake()
	}
	for {
		kind, text, code, err := c.next()
		if err != nil {
			fail(err)
			return
		}
		switch kind {
		case evMessage:
			now := p.clock.now()
			p.receivePlain(in, text, now)
			e.lastReceive.Store(now)
			peerFlow.delivered.Store(in.delivered)
			peerFlow.skipped.Store(in.skipped)
			c.peer.wake()
			if len(in.latencies) >= latencyBatch {
				p.flushLatencies(in, shard)
			}
		case evError:
			in.countError([]byte(code))
			in.rejected++
			e.out.rejected.Store(in.rejected)
			c.wake()
		case evPeerLeft:
			if !p.closing.Load() {
				in.peerLeft++
				peerFlow.failed.Store(true)
				c.peer.wake()
			}
		case evClosed:
			fail(errors.New("server sent a close frame"))
			return
		}
	}
}

// next reads the server's next line or WebSocket message.
func (c *plainConn) next() (kind eventKind, text, code string, err error) {
	if c.ws {
		payload, err := wsutil.ReadServerText(c.rw)
		if err != nil {
			if _, ok := errors.AsType[wsutil.ClosedError](err); ok {
				return evClosed, "", "", nil
			}
			return 0, "", "", err
		}
		var ev plainEvent
		if json.Unmarshal(payload, &ev) != nil {
			return evNotice, "", "", nil
		}
		switch ev.Type {
		case "message":
			return evMessage, ev.Text, "", nil
		case "error":
			return evError, "", ev.Code, nil
		case "peer_left":
			return evPeerLeft, "", "", nil
		}
		return evNotice, "", "", nil
	}
	line, err := c.br.ReadString('\n')
	if err != nil {
		return 0, "", "", err
	}
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if c.bare {
		return evMessage, line, "", nil
	}
	if strings.HasPrefix(line, "<") {
		if _, text, ok := strings.Cut(line, "> "); ok {
			return evMessage, text, "", nil
		}
	}
	ev := classifyLine([]byte(line))
	return ev.kind, "", string(ev.code), nil
}

// receivePlain checks one message text the way the tuned client's
// receive does, with a regexp and strconv.
func (p *plainRelay) receivePlain(in *receiver, text string, now int64) {
	m := plainTextPattern.FindStringSubmatch(text)
	if m == nil || len(text) != p.size {
		in.corrupt++
		return
	}
	seq, err1 := strconv.ParseUint(m[1], 16, 64)
	stamp, err2 := strconv.ParseInt(m[2], 16, 64)
	if err1 != nil || err2 != nil {
		in.corrupt++
		return
	}
	in.record(seq, stamp, now)
}
