package engine

import (
	"syscall"
	"testing"

	"duet/proto"
)

// TestIdleLineConnectionHoldsNoFramer: a line connection keeps a framer
// only while it holds part of a line or a telnet session; after a read
// of whole lines it gives the framer back to its loop, and the next read
// (its own or another connection's) takes that one again. What a framer
// holds survives from read to read.
func TestIdleLineConnectionHoldsNoFramer(t *testing.T) {
	sender, reader := benchPair(t, stageLine, stageLine)
	ls := sender.loop
	in := []byte("hello\n")
	if used := sender.readLines(in); used != len(in) || sender.line != nil || len(ls.framers) != 1 {
		t.Fatalf("after whole lines: used %d of %d, framer kept %v, %d spare", used, len(in), sender.line != nil, len(ls.framers))
	}
	spare := ls.framers[0]
	in = []byte("hi alice\n")
	if reader.readLines(in); reader.line != nil || len(ls.framers) != 1 || ls.framers[0] != spare {
		t.Fatal("the other connection's read did not take the loop's spare framer and give it back")
	}

	// Part of a line: the framer stays with the connection until the
	// line is whole, and the line is read as one.
	in = []byte("half a ")
	if used := sender.readLines(in); used != 0 || sender.line == nil || len(ls.framers) != 0 {
		t.Fatalf("part of a line: used %d, framer kept %v, %d spare", used, sender.line != nil, len(ls.framers))
	}
	drain(reader.out)
	in = []byte("half a line\n")
	if used := sender.readLines(in); used != len(in) || sender.line != nil {
		t.Fatalf("the rest of the line: used %d of %d, framer kept %v", used, len(in), sender.line != nil)
	}
	if b, _ := reader.out.Take(0); b == nil || string(b.B) != "<alice> half a line\r\n" {
		t.Fatalf("the reader got %v", b)
	}

	// A telnet client: its session is kept in the framer, for good.
	in = []byte("\xff\xfb\x01hello\n") // IAC WILL ECHO
	sender.readLines(in)
	if sender.line == nil {
		t.Fatal("a telnet client's framer was given back")
	}
}

// TestCRLFClientKeepsDirectWrites: a client that ends its lines in CR LF
// (nc -C, most programs, Windows clients, telnet before its first
// command) costs what one ending them in LF alone does: its framer goes
// back to the loop after each read of whole lines, and deliveries to it
// while its loop sleeps are written directly. Only a timing mark, which
// telnet alone sends, begins the watch on what a Ctrl-C hides, which
// keeps both.
func TestCRLFClientKeepsDirectWrites(t *testing.T) {
	cn, _ := socketConn(t)
	cn.c = writingConn{cn.c.(fdConn)}
	ev := &proto.Event{Kind: proto.EvMessage, From: "bob"}
	in := []byte("/login alice\r\n/who\r\n")
	cn.loop.beginTraffic()
	if used := cn.readLines(in); used != len(in) || cn.line != nil {
		t.Fatalf("after CR LF lines: used %d of %d, framer kept %v", used, len(in), cn.line != nil)
	}
	cn.loop.busy.Store(false) // the read is over: the loop sleeps
	cn.flush()
	before := cn.out.DirectWrites()
	cn.out.DeliverMessages(ev, [][]byte{[]byte("hi")})
	if got := cn.out.DirectWrites() - before; got != 1 {
		t.Fatalf("a delivery to an idle CR LF client: %d direct writes, want 1", got)
	}

	// A Ctrl-C: IAC IP, IAC DO TIMING-MARK. Now it is telnet.
	in = []byte("\xff\xf4\xff\xfd\x06")
	cn.loop.beginTraffic()
	cn.readLines(in)
	cn.loop.busy.Store(false)
	if cn.line == nil || cn.line.marks == nil {
		t.Fatal("a timing mark did not begin the watch")
	}
	before = cn.out.DirectWrites()
	cn.out.DeliverMessages(ev, [][]byte{[]byte("hi")})
	if got := cn.out.DirectWrites() - before; got != 0 {
		t.Fatalf("a delivery to a watched client: %d direct writes, want 0", got)
	}
}

// writingConn is a gnet.Conn that writes to its descriptor at once, as
// gnet does when the socket takes all: it holds nothing.
type writingConn struct{ fdConn }

func (c writingConn) Write(b []byte) (int, error) { return syscall.Write(c.fd, b) }
func (writingConn) OutboundBuffered() int         { return 0 }
