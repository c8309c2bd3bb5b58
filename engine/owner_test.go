package engine

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"duet/config"
	"duet/engine/hub"
	"duet/engine/outbox"
	"duet/proto"
)

// fdConn is a gnet.Conn that has only a descriptor: all WriteDirect uses.
type fdConn struct {
	gnet.Conn
	fd int
}

func (c fdConn) Fd() int { return c.fd }

// socketConn returns a connection whose socket is the server end of a
// real loopback TCP connection, with a small send buffer so that it
// fills quickly, and the client end.
func socketConn(t *testing.T) (*conn, net.Conn) {
	t.Helper()
	srv, err := New(Options{TCPListen: "127.0.0.1:0", Hub: hub.New(hub.Options{}), Limits: config.Defaults().Limits})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	// File duplicates the descriptor; the duplicate shares the socket
	// and its non-blocking mode, which gnet's sockets have too.
	f, err := server.(*net.TCPConn).File()
	server.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fd := int(f.Fd())
	if err := syscall.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096); err != nil {
		t.Fatal(err)
	}
	ls := newLoopState(srv, idleLoop{}, -1)
	cn := &conn{loop: ls, c: fdConn{fd: fd}, stage: stageLine}
	cn.out = cn.newOutbox(true)
	cn.out.SetDirect(true)
	cn.out.Settle(0) // as the loop's first flush does: gnet holds nothing
	return cn, client
}

func numbered(i int) []byte {
	return []byte("message " + strconv.Itoa(i) + " " + strings.Repeat("x", 200))
}

// TestWriteDirectFillsTheSocket: deliveries to an idle connection go to
// its socket from the delivering goroutine, until the socket is full:
// then the part it did not take, and everything after, waits in the
// outbox for the loop, which is scheduled. Read back, the bytes are all
// there, in order.
func TestWriteDirectFillsTheSocket(t *testing.T) {
	cn, client := socketConn(t)
	ev := &proto.Event{Kind: proto.EvMessage, From: "alice"}

	// A loop in a read callback flushes when it ends: no direct write.
	cn.loop.beginTraffic()
	cn.out.DeliverMessages(ev, [][]byte{numbered(0)})
	if cn.out.DirectWrites() != 0 || len(cn.loop.pending) != 1 {
		t.Fatalf("busy loop: %d direct writes, %d scheduled; want 0 and 1", cn.out.DirectWrites(), len(cn.loop.pending))
	}
	cn.loop.busy.Store(false) // leave the flush to the test
	cn.loop.pending = cn.loop.pending[:0]
	b, _ := cn.out.Take(0)
	if _, err := syscall.Write(cn.c.Fd(), b.B); err != nil {
		t.Fatal(err)
	}
	outbox.Release(b)
	cn.out.Settle(0)

	sent := 1
	for ; !cn.out.Pending(); sent++ {
		if sent > 100_000 {
			t.Fatal("the socket never filled up")
		}
		cn.out.DeliverMessages(ev, [][]byte{numbered(sent)})
	}
	if got := int(cn.out.DirectWrites()); got != sent-1 {
		t.Fatalf("%d direct writes for %d deliveries to an idle connection", got, sent-1)
	}
	if len(cn.loop.pending) != 1 {
		t.Fatalf("the loop was scheduled %d times once the socket filled, want 1", len(cn.loop.pending))
	}
	// Full now: more waits, without another direct write (EAGAIN would
	// be all it got) until the loop's flush finds gnet empty.
	for range 3 {
		cn.out.DeliverMessages(ev, [][]byte{numbered(sent)})
		sent++
	}
	if got := int(cn.out.DirectWrites()); got != sent-4 {
		t.Fatalf("%d direct writes; a full socket was written to again", got)
	}

	// The reader catches up; the loop flushes the rest as gnet would
	// (here: writing until it is all out).
	got := make(chan []byte, 1)
	go func() {
		client.SetReadDeadline(time.Now().Add(10 * time.Second))
		var all bytes.Buffer
		_, _ = io.CopyN(&all, client, int64(expectedLen(sent)))
		got <- all.Bytes()
	}()
	b, _ = cn.out.Take(0)
	for rest := b.B; len(rest) > 0; {
		n, err := syscall.Write(cn.c.Fd(), rest)
		if errors.Is(err, syscall.EAGAIN) {
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	outbox.Release(b)
	lines := strings.Split(strings.TrimSuffix(string(<-got), "\r\n"), "\r\n")
	if len(lines) != sent {
		t.Fatalf("read %d lines, want %d", len(lines), sent)
	}
	for i, ln := range lines {
		if want := "<alice> " + string(numbered(i)); ln != want {
			t.Fatalf("line %d: %.40q, want %.40q", i, ln, want)
		}
	}
}

func expectedLen(n int) int {
	total := 0
	for i := range n {
		total += len("<alice> ") + len(numbered(i)) + len("\r\n")
	}
	return total
}

// TestWriteDirectToAClosedReader: the reader's client has gone (reset);
// the direct write fails with EPIPE or ECONNRESET, which costs nothing
// (no SIGPIPE kills the daemon): the bytes wait for the loop, whose own
// write meets the failure and closes the connection.
func TestWriteDirectToAClosedReader(t *testing.T) {
	cn, client := socketConn(t)
	client.(*net.TCPConn).SetLinger(0)
	client.Close()
	time.Sleep(50 * time.Millisecond) // the reset arrives
	ev := &proto.Event{Kind: proto.EvMessage, From: "alice"}
	for i := range 3 {
		cn.out.DeliverMessages(ev, [][]byte{numbered(i)})
	}
	if cn.out.DirectWrites() == 0 {
		t.Fatal("no direct write was tried")
	}
	if !cn.out.Pending() || len(cn.loop.pending) != 1 {
		t.Fatalf("pending %v, scheduled %d: the failed write's bytes must wait for the loop", cn.out.Pending(), len(cn.loop.pending))
	}
	if lost, _ := cn.out.Close(0); lost != 3 {
		t.Fatalf("lost %d, want 3", lost)
	}
}
