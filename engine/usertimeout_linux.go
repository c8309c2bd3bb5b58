//go:build linux

package engine

import (
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// setUserTimeout sets TCP_USER_TIMEOUT on socket fd: a connection whose
// written data goes unacknowledged for d is aborted (ETIMEDOUT), and so
// is one whose keepalive probes go unanswered that long. Without it a
// dead peer that was being written to is found only when the kernel's
// retransmissions give up, some fifteen minutes later (tcp_retries2).
func setUserTimeout(fd int, d time.Duration) error {
	return unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d/time.Millisecond))
}

// setOOBInline keeps TCP urgent data in socket fd's stream (see
// Server.listenerOOBInline).
func setOOBInline(fd int) error {
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_OOBINLINE, 1)
}

// stoppedReading reports whether the peer of socket fd, which the kernel
// has just aborted for its user timeout (ETIMEDOUT, or the soft error it
// held then: timedOut), was there but not reading: a slow reader, not a
// dead one.
//
// Linux aborts for the user timeout not only a connection whose written
// data goes unacknowledged, but also one whose peer keeps its receive
// window closed that long, however promptly it answers the window
// probes. That is a reader that stopped reading, which duetd would cut
// as slow itself once limits.slow_timeout passed; the kernel, given
// resume.replay_recent, may come first. The socket says which it was
// (TCP_INFO): the peer's window as it last advertised it is closed
// (tcpi_snd_wnd), and it answered while the kernel waited for it to
// open: it acknowledged something within the timeout
// (tcpi_last_ack_recv), or more than twice the retransmission timeout
// (tcpi_rto) after the last data it was sent (tcpi_last_data_sent),
// which only an answer to a probe can be: the data's own
// acknowledgement, delayed or not, comes within about one. The second catches a reader
// whose data the kernel last retransmitted, not probed for: Linux then
// counts the timeout from the data's first sending, and its last
// answer may be older than the timeout. A dead peer answered nothing
// since its last data: whatever it acknowledged then is older than the
// timeout, counted from the first segment or probe it left unanswered.
// One whose window was open went on taking data, and was lost while it
// did.
//
// The socket is asked as gnet closes the connection: gnet calls
// OnClose before it closes the descriptor, and the kernel keeps what
// TCP_INFO reports about a connection it aborted. Looking there, once,
// costs nothing while the connection lives; noting each connection's
// window as its backlog is checked instead would cost on every check,
// and be only as fresh as the last one. A peer that answered probes for
// part of the timeout and then went silent counts as slow: its window
// was closed throughout, so it had stopped reading.
//
// tcpi_snd_wnd came in Linux 5.4; before that the socket cannot say,
// and the ending stays lost.
func stoppedReading(fd int) bool {
	info, size, ok := tcpInfo(fd)
	if !ok || size < unsafe.Offsetof(info.Snd_wnd)+unsafe.Sizeof(info.Snd_wnd) {
		return false
	}
	ms, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
	if err != nil || ms <= 0 || info.Snd_wnd != 0 {
		return false
	}
	// The times are milliseconds ago, tcpi_rto microseconds.
	return info.Last_ack_recv < uint32(ms) || info.Last_data_sent > info.Last_ack_recv+2*info.Rto/1000
}
