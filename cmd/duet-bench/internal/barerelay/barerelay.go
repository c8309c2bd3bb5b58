// Package barerelay is the reference ceiling for duet's relay path: a
// gnet v2 server with no protocol at all. It pairs connections in the
// order its event loops open them (first with second, third with fourth,
// ...) and forwards whole lines from each connection to its partner.
//
// Whatever duetd does on top of moving bytes (parsing, pairing by token,
// framing, limits) shows up as the gap between duetd and this relay under
// the same load.
//
// Forwarding respects gnet's split between loop-only and concurrency-safe
// Conn methods. A partner on the same event loop is written directly. A
// partner on another loop gets the bytes appended to its pending buffer
// under a mutex, and one task is queued on its loop to write everything
// pending at once; more bytes arriving before that task runs ride along,
// so a busy pair costs one cross-loop hand-off and one write per burst
// rather than per read.
package barerelay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/panjf2000/gnet/v2/pkg/logging"
	"golang.org/x/sys/unix"
)

// Options tune the relay.
type Options struct {
	// EventLoops is the number of event loops; 0 means one per CPU.
	EventLoops int
	// Logger receives gnet's own log lines; nil leaves them to gnet's
	// default logger, which writes to stderr.
	Logger logging.Logger
}

// Relay is a running bare relay.
type Relay struct {
	handler *handler
	done    chan error
	addr    net.Addr
}

// Start listens on addr (host:port) and serves until Close.
func Start(addr string, opts Options) (*Relay, error) {
	h := &handler{booted: make(chan struct{})}
	gopts := []gnet.Option{
		gnet.WithMulticore(true),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		// The relay closes a partner when its pair ends, leaving TIME_WAIT
		// sockets on the listening port; like net.Listen, set SO_REUSEADDR
		// so a restarted relay can bind again at once.
		gnet.WithReuseAddr(true),
	}
	if opts.EventLoops > 0 {
		gopts = append(gopts, gnet.WithNumEventLoop(opts.EventLoops))
	}
	if opts.Logger != nil {
		gopts = append(gopts, gnet.WithLogger(opts.Logger))
	}
	r := &Relay{handler: h, done: make(chan error, 1)}
	go func() { r.done <- gnet.Run(h, "tcp://"+addr, gopts...) }()
	select {
	case err := <-r.done:
		if err == nil {
			err = errors.New("gnet stopped before booting")
		}
		return nil, err
	case <-h.booted:
	}
	if h.bootErr != nil {
		_ = r.Close()
		return nil, h.bootErr
	}
	r.addr = h.addr
	return r, nil
}

// Addr is the address the relay listens on, with the port it was given.
func (r *Relay) Addr() net.Addr { return r.addr }

// Close stops the relay and closes every connection.
func (r *Relay) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := r.handler.engine.Stop(ctx)
	if runErr := <-r.done; err == nil {
		err = runErr
	}
	return err
}

// Stats are the relay's counters.
type Stats struct {
	Open      int64 // connections open now
	Forwarded int64 // bytes handed to partners
	Dropped   int64 // bytes whose partner had already gone
}

// Stats reads the counters.
func (r *Relay) Stats() Stats {
	h := r.handler
	return Stats{Open: h.open.Load(), Forwarded: h.forwarded.Load(), Dropped: h.dropped.Load()}
}

type handler struct {
	gnet.BuiltinEventEngine
	engine  gnet.Engine
	booted  chan struct{}
	bootErr error
	addr    net.Addr

	mu      sync.Mutex
	waiting *relayConn // the connection opened last, still without a partner

	open      atomic.Int64
	forwarded atomic.Int64
	dropped   atomic.Int64
}

// relayConn is the relay's state for one connection.
type relayConn struct {
	conn    gnet.Conn
	partner atomic.Pointer[relayConn]

	// closed is touched only on this connection's own loop: in OnClose and
	// in the flush task, which gnet runs on the same loop.
	closed bool

	// Bytes from a partner on another loop wait in pending until the
	// flush task writes them. flushing is the buffer being written, kept
	// for reuse so a steady pair allocates nothing.
	mu          sync.Mutex
	pending     []byte
	flushQueued bool
	flushing    []byte // loop-only
	h           *handler
}

// maxKeptBuffer bounds the buffers kept between bursts, so one burst to a
// slow reader does not pin its memory for the connection's lifetime.
const maxKeptBuffer = 1 << 20

func (h *handler) OnBoot(eng gnet.Engine) gnet.Action {
	h.engine = eng
	defer close(h.booted)
	fd, err := eng.Dup()
	if err != nil {
		h.bootErr = fmt.Errorf("listener address: %w", err)
		return gnet.None
	}
	defer unix.Close(fd)
	sa, err := unix.Getsockname(fd)
	if err != nil {
		h.bootErr = fmt.Errorf("listener address: %w", err)
		return gnet.None
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		h.addr = &net.TCPAddr{IP: net.IP(a.Addr[:]).To16(), Port: a.Port}
	case *unix.SockaddrInet6:
		h.addr = &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port, Zone: zone(a.ZoneId)}
	default:
		h.bootErr = fmt.Errorf("listener address: unexpected %T", sa)
	}
	return gnet.None
}

func zone(id uint32) string {
	if id == 0 {
		return ""
	}
	if ifi, err := net.InterfaceByIndex(int(id)); err == nil {
		return ifi.Name
	}
	return strconv.Itoa(int(id))
}

func (h *handler) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	rc := &relayConn{conn: c, h: h}
	c.SetContext(rc)
	h.open.Add(1)
	h.mu.Lock()
	first := h.waiting
	if first == nil {
		h.waiting = rc
		h.mu.Unlock()
		return nil, gnet.None
	}
	h.waiting = nil
	h.mu.Unlock()
	first.partner.Store(rc)
	rc.partner.Store(first)
	// first may have sent lines while it waited; they sit in its inbound
	// buffer until something calls its OnTraffic on its own loop.
	_ = first.conn.Wake(nil)
	return nil, gnet.None
}

func (h *handler) OnClose(c gnet.Conn, _ error) gnet.Action {
	rc, _ := c.Context().(*relayConn)
	if rc == nil {
		return gnet.None
	}
	h.open.Add(-1)
	rc.closed = true
	h.mu.Lock()
	if h.waiting == rc {
		h.waiting = nil
	}
	h.mu.Unlock()
	// A relay pair lives and dies together.
	if p := rc.partner.Load(); p != nil {
		_ = p.conn.Close()
	}
	return gnet.None
}

func (h *handler) OnTraffic(c gnet.Conn) gnet.Action {
	rc := c.Context().(*relayConn)
	p := rc.partner.Load()
	if p == nil {
		return gnet.None // keep the bytes until a partner arrives
	}
	buf, _ := c.Peek(-1)
	end := bytes.LastIndexByte(buf, '\n') + 1
	if end == 0 {
		return gnet.None // no whole line yet
	}
	lines := buf[:end]
	if p.conn.EventLoop() == c.EventLoop() {
		// Same loop: p's state is ours to touch, and Write copies or
		// sends the bytes before returning.
		if p.closed {
			h.dropped.Add(int64(end))
		} else {
			h.forwarded.Add(int64(end))
			_, _ = p.conn.Write(lines)
		}
	} else {
		p.enqueue(lines)
	}
	_, _ = c.Discard(end)
	return gnet.None
}

// enqueue hands bytes to a partner on another loop. It runs on the
// sender's loop; flush runs on the partner's.
func (p *relayConn) enqueue(b []byte) {
	p.mu.Lock()
	p.pending = append(p.pending, b...)
	queue := !p.flushQueued
	p.flushQueued = true
	p.mu.Unlock()
	if queue {
		if err := p.conn.EventLoop().Execute(context.Background(), p); err != nil {
			// The engine is shutting down; the bytes go nowhere.
			p.mu.Lock()
			p.h.dropped.Add(int64(len(p.pending)))
			p.pending = p.pending[:0]
			p.flushQueued = false
			p.mu.Unlock()
		}
	}
}

// Run is the flush task: it writes everything pending, on p's own loop.
func (p *relayConn) Run(context.Context) error {
	p.mu.Lock()
	out := p.pending
	p.pending = p.flushing[:0]
	p.flushQueued = false
	p.mu.Unlock()

	if p.closed {
		p.h.dropped.Add(int64(len(out)))
	} else if len(out) > 0 {
		// Write sends what the socket takes now and copies the rest into
		// gnet's outbound buffer, so out is free again when it returns.
		p.h.forwarded.Add(int64(len(out)))
		_, _ = p.conn.Write(out)
	}
	if cap(out) > maxKeptBuffer {
		out = nil
	}
	p.flushing = out
	return nil
}
