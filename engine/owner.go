package engine

import (
	"context"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"duet/engine/hub"
	"duet/engine/outbox"
	"duet/proto"
	"duet/proto/line"
)

// A conn is its outbox's owner (outbox.Owner). These methods are called
// from any goroutine.
var _ outbox.Owner = (*conn)(nil)

// AppendEvent encodes ev in the connection's protocol.
//
// It notes the resume key each event tells the session, which a
// drain's notice repeats. It keeps one notice per user when this node shuts down: every user on
// it gets a shutdown notice of their own (conn.shutdown), so a partner
// on this node going for the same reason must not add "bob's server is
// shutting down; you are free to be joined again" before it. In a
// cluster, a partner on another node is told by that node, which is not
// shutting down, so the notice still reaches it.
func (cn *conn) AppendEvent(dst []byte, ev *proto.Event) []byte {
	if len(ev.ResumeKey) == proto.ResumeKeyLen {
		// The key a drain's notice repeats (drain.go). It points into the
		// event's string, which is never written: a copy would cost every
		// connection 32 bytes more, for a notice most never get.
		cn.resumeKey.Store((*proto.ResumeKey)(unsafe.Pointer(unsafe.StringData(ev.ResumeKey))))
	}
	if ev.Kind == proto.EvPeerLeft && ev.Reason == proto.ReasonShutdown && cn.loop.srv.draining.Load() {
		return dst
	}
	if cn.web {
		return webEncoder{}.AppendEvent(dst, ev)
	}
	return line.AppendEvent(dst, ev)
}

// AppendMessages encodes a run of messages in the connection's protocol,
// and notes where each ends.
func (cn *conn) AppendMessages(dst []byte, ends []int32, ev *proto.Event, texts [][]byte) ([]byte, []int32) {
	if cn.web {
		return webEncoder{}.AppendMessages(dst, ends, ev, texts)
	}
	return line.AppendMessages(dst, ends, ev.From, texts)
}

// Protocol is what the connection speaks to its session, which the hub
// tells the session's partner (hub.Speaker): JSON once a web connection
// is upgraded (no event reaches it before), the line protocol otherwise.
func (cn *conn) Protocol() proto.Protocol {
	if cn.web {
		return proto.ProtoJSON
	}
	return proto.ProtoLine
}

// Schedule asks the connection's loop to flush it.
func (cn *conn) Schedule() { cn.loop.schedule(cn) }

// Marks are the server's current limits.outbound_high and outbound_max.
func (cn *conn) Marks() outbox.Marks { return cn.loop.srv.marks() }

// Evicted: the hub evicts a connection's outbox when another login
// takes its account over (hub.LoginReplacing), or a resume its session
// (hub.Resume); the connection tells its user why and closes (evicted).
func (cn *conn) Evicted(why hub.Eviction) { cn.evicted(why) }

// RefusedLate: a say taken before was refused by the partner's node (or
// the partner's taking up); the connection's loop tells it as a say
// refused at once is told: the first of a run with its error, the rest
// in the count a second (refusedSay), each counted.
func (cn *conn) RefusedLate(err *proto.Error) {
	_ = cn.loop.execute(context.Background(), func() {
		if cn.closed || cn.sess == nil {
			return
		}
		if refusalOf(err) == refusedNone {
			cn.tellSay(err, 0)
			return
		}
		cn.answer(proto.OpSay, 0, err)
		if g := cn.guard; g != nil && g.refused == refusalOf(err) {
			g.refusedLate = true
		}
	})
}

// WriteDirect writes b to the connection's socket from the delivering
// goroutine, usually the partner's event loop, when the outbox finds the
// connection idle (see outbox.Outbox's sendLocked for the ordering). A
// paced client's messages mostly find their reader idle, and its loop
// asleep in epoll_wait: writing here saves the eventfd write that would
// wake that loop, its wake-up, and a turn of it to flush.
//
// It declines (ok false) while the connection's loop is in a read
// callback: that loop flushes what was queued to it as the callback ends
// (loopState.endTraffic) without being woken, and batches it with
// whatever else comes meanwhile.
//
// It is a raw write(2) on the descriptor, not gnet.Conn.Write, whose
// buffering belongs to the loop: the outbox calls it only while gnet
// holds nothing for the connection (its last Settle found gnet's buffer
// empty, and nothing has been handed to gnet since), so gnet's state
// stays true. What the socket does not take stays in the outbox, and the
// loop's flush hands it to gnet as usual. A failed write takes nothing;
// the loop's own write meets the failure and gnet closes the connection.
//
// A write that fails takes the socket's pending error with it (a reset
// is reported once), so it is kept in directErr for onClose to tell a
// reset from an end of input as if it were still pending.
//
// The descriptor cannot be another connection's: the outbox holds its
// lock through the write and is open, and onClose closes the outbox
// before gnet closes the descriptor (OnClose runs first).
func (cn *conn) WriteDirect(b []byte) (n int, ok bool) {
	if cn.loop.busy.Load() {
		return 0, false
	}
	n, err := unix.Write(cn.c.Fd(), b)
	if err != nil || n < 0 {
		if errno, ok := err.(syscall.Errno); ok && errno != unix.EAGAIN && errno != unix.EINTR {
			cn.directErr.CompareAndSwap(0, int32(errno))
		}
		return 0, true
	}
	return n, true
}

// Unacked is what the socket holds that the client's TCP has not
// acknowledged (outbox.Owner): the outbox asks, under its lock while it
// is open, as WriteDirect writes, so the descriptor is this
// connection's.
func (cn *conn) Unacked() (int, bool) { return unacked(cn.c.Fd()) }

// DirectWrites is how many deliveries to the connections open now were
// written directly (WriteDirect). It is for tests and diagnostics; it
// waits for each loop.
func (s *Server) DirectWrites() uint64 {
	var total uint64
	for _, ls := range s.loopList() {
		ch := make(chan uint64, 1)
		err := ls.execute(context.Background(), func() {
			var n uint64
			for _, cn := range ls.conns {
				n += uint64(cn.out.DirectWrites())
			}
			ch <- n
		})
		if err != nil {
			continue
		}
		select {
		case n := <-ch:
			total += n
		case <-time.After(5 * time.Second):
		}
	}
	return total
}
