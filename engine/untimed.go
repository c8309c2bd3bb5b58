package engine

import (
	"context"
	"syscall"
	"time"

	"duet/engine/hub"
)

// A reader that keeps reading, however slowly, is not to be cut off
// (LIMITS.md, back-pressure). With resume on, every connection has
// TCP_USER_TIMEOUT set to resume.replay_recent, so that a dead peer is
// found within it; but Linux counts that timeout, for a receive window
// kept closed, from its first window probe, and starts the count afresh
// only when the window it is told of, with nothing in flight, admits
// the whole of the next block it has queued: up to 64 KiB wherever
// segmentation is offloaded (nearly every link) and on loopback. A
// reader that takes a few KiB at a time keeps its window narrower: what
// it opens is filled and acknowledged, the count goes on, and the
// kernel cuts a reader that never stopped reading.
//
// Nothing but the timeout itself restarts the count, and nothing shows
// where the kernel's count stands (icsk_probes_tstamp): it is kept even
// once the reader has caught up, unless a probe found nothing to send,
// so a timeout given back then could cut at the next closed window. So
// a connection whose socket is seen holding bytes it cannot send yet
// (its reader's window, or its path, holds them back) has its timeout
// set aside for good, and its loop keeps the count itself, from what
// the reader's TCP acknowledged (lookTCP): a connection that owes its
// client something, and has had nothing acknowledged for as long as the
// timeout, is cut as the kernel would have cut it, and ends as such a
// cut does (onClose): slow if its client answered with its window
// closed, lost if it went silent.
//
// Such a connection is seen three ways: as its backlog in gnet is
// checked (checkBacklog, every 10 ms, once the reader is seen taking
// some), as a WebSocket whose frames are overdue is looked at
// (lookReading, each tick), and, for one whose backlog the kernel alone
// holds, at the tick after it was written to, when its socket is asked
// once (lookWritten). A connection not written to since the last tick
// costs a comparison or two.

// tcpWatch is what a connection's loop knows of its socket's TCP.
type tcpWatch uint8

const (
	untimed    tcpWatch = 1 << iota // the user timeout is set aside: the loop counts it (lookTCP)
	wroteSince                      // the loop wrote to the socket since its last tick
)

// tcpLook is what a loop last saw of a connection it watches: one whose
// user timeout is set aside and that owed its client something.
type tcpLook struct {
	acked uint64 // tcpi_bytes_acked then
	since stamp  // when its client's TCP was last seen acknowledging more, or the watch began
}

// tcpAcks is what a socket's TCP reports of what its peer acknowledged
// (ackState).
type tcpAcks struct {
	acked   uint64        // bytes acknowledged since the connection opened
	lastAck time.Duration // since the peer last acknowledged anything, more or not (an answer to a window probe)
	notsent uint32        // bytes the socket holds that it has not sent yet
	// inFlight: segments were sent that the peer has not acknowledged
	// (tcpi_unacked); rto is the retransmission timeout (tcpi_rto).
	inFlight bool
	rto      time.Duration
}

// spareReader sets aside the user timeout of a connection that was just
// seen taking some of what it is sent while behind, if its socket holds
// bytes it could not send yet. A socket that cannot report what its peer
// acknowledged keeps its timeout, as does one given none (resume off).
func (cn *conn) spareReader() {
	if cn.flow.tcp&untimed != 0 || cn.loop.srv.userTimeout() <= 0 {
		return
	}
	if a, ok := ackState(cn.c.Fd()); ok && a.notsent > 0 {
		cn.untime(a)
	}
}

// untime sets the user timeout aside, a being what the socket reports
// now, and watches the connection, counting from where the kernel's
// count began (ackedAt). One that is ending keeps its timeout: lookTCP
// may have just cut it, and its ending reads the timeout
// (stoppedReading).
func (cn *conn) untime(a tcpAcks) {
	if cn.closed || cn.closing != endNone || cn.directErr.Load() != 0 || setUserTimeout(cn.c.Fd(), 0) != nil {
		return
	}
	cn.flow.tcp |= untimed
	cn.loop.watch(cn, tcpLook{acked: a.acked, since: cn.loop.ackedAt(a, tickInterval)})
}

// ackedAt is where the kernel's count would have begun, as a reports
// the socket, or the last look, within ago, whichever is later: the
// socket was written to since that look, or was seen to acknowledge
// more since, so what it owes its client was sent no earlier. With
// segments in flight the kernel counts from the first one left
// unacknowledged, just after the peer's last acknowledgement; with none
// (the window closed) from its first window probe, a retransmission
// timeout after it. Counting from either a look later would cut a peer
// gone silent after a resume can no longer replay what it missed; from
// the acknowledgement itself, a reader that stopped sooner than the
// kernel would have.
func (ls *loopState) ackedAt(a tcpAcks, within time.Duration) stamp {
	ago := a.lastAck
	if !a.inFlight {
		ago = max(ago-a.rto, 0)
	}
	return ls.stamp() - stamp(min(ago, within))
}

// tickTCP runs each tick for every connection: one written to since the
// last tick, by its loop or directly by a partner's (outbox), is looked
// at (lookWritten). Only while the connection could be given a user
// timeout, or has its own set aside: with resume off it costs one
// comparison.
func (cn *conn) tickTCP() {
	written := cn.flow.tcp&wroteSince != 0
	cn.flow.tcp &^= wroteSince
	if cn.flow.tcp&untimed == 0 && cn.loop.srv.userTimeout() <= 0 {
		return
	}
	if cn.stage == stageLine || cn.stage == stageWS {
		if n := uint16(cn.out.DirectWrites()); n != cn.directsSeen {
			cn.directsSeen, written = n, true
		}
	}
	if written {
		cn.lookWritten()
	}
}

// lookWritten runs at the tick for a connection written to since the
// last one and not watched, which could be given a user timeout or has
// its own set aside (tickTCP sees to both). One whose socket holds bytes it could not
// send yet has its timeout set aside from now, whether or not its reader
// is taking them: the loop's count (lookTCP) cuts one that takes nothing
// as the kernel would, and spares one that takes some. One whose
// timeout is set aside already is watched again if it owes its client
// something.
func (cn *conn) lookWritten() {
	if cn.closed {
		return
	}
	if _, ok := cn.loop.watched[cn]; ok {
		return
	}
	a, ok := ackState(cn.c.Fd())
	if !ok {
		return
	}
	if cn.flow.tcp&untimed == 0 {
		if a.notsent > 0 {
			cn.untime(a)
		}
		return
	}
	if owed, ok := unacked(cn.c.Fd()); ok && owed == 0 && cn.c.OutboundBuffered() == 0 {
		return // it took everything already
	}
	cn.loop.watch(cn, tcpLook{acked: a.acked, since: cn.loop.ackedAt(a, tickInterval)})
}

// lookTCP runs each tick for a connection its loop watches, one whose
// user timeout is set aside, with what the loop saw of it the tick
// before.
func (cn *conn) lookTCP(look tcpLook) {
	ls := cn.loop
	if cn.closed || cn.flow.tcp&untimed == 0 {
		delete(ls.watched, cn)
		return
	}
	fd := cn.c.Fd()
	d := ls.srv.userTimeout()
	if d <= 0 {
		// Resume turned off by a reload since: connections opened
		// before keep the timeout they opened with, and this one, whose
		// value was not kept, counts the default.
		d = hub.DefaultReplayRecent
	}
	a, ok := ackState(fd)
	owed, ok2 := unacked(fd)
	if !ok || !ok2 {
		// The socket no longer says: the kernel counts again.
		cn.retime(d)
		return
	}
	if a.acked != look.acked {
		look.acked, look.since = a.acked, ls.ackedAt(a, watchInterval)
	}
	if owed == 0 && cn.c.OutboundBuffered() == 0 {
		// It has taken all it was sent: nothing to count until it is
		// written to again (lookWritten).
		delete(ls.watched, cn)
		return
	}
	if ls.since(look.since) < d {
		ls.watched[cn] = look
		return
	}
	// Nothing acknowledged for as long as the timeout, with something
	// owed: cut as the kernel would have, and ended as its cut is
	// (onClose), the timeout given back so that stoppedReading can tell
	// a reader that answered from one that went silent.
	cn.retime(d)
	cn.directErr.CompareAndSwap(0, int32(syscall.ETIMEDOUT))
	_ = cn.c.Close()
}

// retime gives the connection its user timeout d back, and stops
// watching it.
func (cn *conn) retime(d time.Duration) {
	_ = setUserTimeout(cn.c.Fd(), d)
	cn.flow.tcp &^= untimed
	delete(cn.loop.watched, cn)
}

// watchInterval is how often a loop looks at the connections it
// watches: a tenth of a second, so that a count of a few seconds (a
// test's) is kept as closely as the kernel keeps it, at two system calls
// a look for each connection behind.
const watchInterval = 100 * time.Millisecond

// watch has the loop watch cn from now, look being what it saw.
func (ls *loopState) watch(cn *conn, look tcpLook) {
	ls.watched[cn] = look
	ls.watchTimer.arm()
}

// lookWatched runs on the loop every watchInterval while it watches any
// connection.
func (ls *loopState) lookWatched(context.Context) error {
	ls.clockIn()
	ls.watchTimer.ran()
	for cn, look := range ls.watched {
		cn.lookTCP(look)
	}
	if len(ls.watched) > 0 {
		ls.watchTimer.arm()
	}
	return nil
}
