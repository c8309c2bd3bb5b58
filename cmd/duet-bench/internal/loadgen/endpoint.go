package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// endpoint is one client connection: one side of a pair.
//
// Each endpoint has one goroutine reading its socket. Writes to a socket
// happen under that endpoint's flow mutex, mostly from the peer's reader:
// when the peer has received a batch of this endpoint's messages, the
// window has room again and the peer's reader refills it at once. That
// keeps the client to one goroutine per connection and no hand-offs on
// the relay path.
type endpoint struct {
	index int
	name  string
	conn  net.Conn
	br    *bufio.Reader
	src   io.Reader // what br reads from: conn, after any bytes of the handshake
	codec codec
	peer  *endpoint

	out flow     // messages this endpoint sends to its peer
	in  receiver // owned by the reading goroutine until it exits

	// lastReceive is when the reader last took in a message, in clock
	// nanoseconds; the relay ends at the latest of these.
	lastReceive atomic.Int64
}

// flow is one direction of a pair: the messages one endpoint sends, and
// how many of them are accounted for at the other end.
type flow struct {
	mu     sync.Mutex
	buf    []byte // the batch being written; reused
	next   uint64 // sequence number of the next message
	closed bool   // no more messages will be sent

	sent      atomic.Int64 // messages written to the socket
	delivered atomic.Int64 // messages the peer received (stored by the peer's reader)
	skipped   atomic.Int64 // sequence numbers the peer saw jumped over
	rejected  atomic.Int64 // error replies the sender got for its messages
	failed    atomic.Bool  // a connection died: nothing more will be accounted for
}

// resolved counts the messages that no longer occupy the window: received,
// or known dropped. A message the server rejects shows up both as an
// error to the sender and, once a later message arrives, as a gap at the
// receiver; taking the larger of the two counts each such message once.
func (f *flow) resolved() int64 {
	return f.delivered.Load() + max(f.skipped.Load(), f.rejected.Load())
}

// receiver is the reading goroutine's own state. Nothing else touches it
// until the goroutine has exited.
type receiver struct {
	nextSeq    uint64
	delivered  int64
	skipped    int64
	outOfOrder int64
	corrupt    int64
	rejected   int64
	peerLeft   int64
	errors     map[string]int64
	readErr    error
	latencies  []int64 // microseconds, waiting to go into a histogram shard
}

func (in *receiver) countError(code []byte) {
	if in.errors == nil {
		in.errors = make(map[string]int64)
	}
	in.errors[string(code)]++
}

// serverError is an error reply during setup.
type serverError struct{ code string }

func (e *serverError) Error() string { return "server error " + e.code }

var errPeerGone = errors.New("peer left or connection closed during setup")

// maxSetupEvents bounds how many unrelated lines a setup step skips while
// waiting for the one it needs.
const maxSetupEvents = 64

// expect reads events until one of kind arrives and returns it; its
// slices alias the read buffer. An error reply ends the wait.
func (e *endpoint) expect(kind eventKind) (event, error) {
	for range maxSetupEvents {
		ev, err := e.codec.read(e.br)
		if err != nil {
			return event{}, err
		}
		switch ev.kind {
		case kind:
			return ev, nil
		case evError:
			return event{}, &serverError{code: string(ev.code)}
		case evPeerLeft, evClosed:
			return event{}, errPeerGone
		case evPing:
			if err := e.pong(ev.text); err != nil {
				return event{}, err
			}
		}
	}
	return event{}, fmt.Errorf("no %v after %d lines", kind, maxSetupEvents)
}

func (e *endpoint) pong(payload []byte) error {
	e.out.mu.Lock()
	defer e.out.mu.Unlock()
	b := e.codec.appendPong(nil, payload)
	if len(b) == 0 {
		return nil
	}
	_, err := e.conn.Write(b)
	return err
}

// write sends setup bytes; the relay path writes through relay.sendMore.
func (e *endpoint) write(b []byte) error {
	e.out.mu.Lock()
	defer e.out.mu.Unlock()
	_, err := e.conn.Write(b)
	return err
}

// dialer opens client connections, spreading them over the source
// addresses.
type dialer struct {
	cfg *Config
}

func (d *dialer) netDialer(index int) *net.Dialer {
	nd := &net.Dialer{Timeout: d.cfg.Timeout}
	if n := len(d.cfg.Sources); n > 0 {
		nd.LocalAddr = &net.TCPAddr{IP: d.cfg.Sources[index%n]}
		nd.Control = bindNoPort
	}
	return nd
}

// readBufferSize fits a whole window of messages, so that one read
// usually takes in everything the peer has in flight, without giving
// every idle connection a large buffer.
func readBufferSize(cfg *Config) int {
	perMessage := cfg.Size + 128 // protocol framing and the sender's name
	size := 2 * cfg.Window * perMessage
	return min(max(size, 4<<10, 2*perMessage), 256<<10+2*perMessage)
}

// dialTCP connects a line-protocol or bare endpoint.
func (d *dialer) dialTCP(ctx context.Context, e *endpoint) error {
	conn, err := d.netDialer(e.index).DialContext(ctx, "tcp", d.cfg.TCPAddr)
	if err != nil {
		return err
	}
	e.conn, e.src = conn, conn
	e.br = bufio.NewReaderSize(conn, readBufferSize(d.cfg))
	return nil
}

// dialWS connects a WebSocket endpoint and completes the upgrade.
func (d *dialer) dialWS(ctx context.Context, e *endpoint) error {
	nd := d.netDialer(e.index)
	wd := ws.Dialer{
		Timeout: d.cfg.Timeout,
		NetDial: nd.DialContext,
	}
	conn, br, _, err := wd.Dial(ctx, "ws://"+d.cfg.WSAddr+d.cfg.WSPath)
	if err != nil {
		return err
	}
	var src io.Reader = conn
	if br != nil {
		// The server's first frame may have arrived with the upgrade
		// response and sit in the handshake's reader.
		pending, _ := br.Peek(br.Buffered())
		src = io.MultiReader(bytes.NewReader(bytes.Clone(pending)), conn)
		ws.PutReader(br)
	}
	e.conn, e.src = conn, src
	e.br = bufio.NewReaderSize(src, readBufferSize(d.cfg))
	return nil
}

// setDeadline bounds a setup step; a zero time clears the bound.
func (e *endpoint) setDeadline(t time.Time) {
	_ = e.conn.SetDeadline(t)
}
