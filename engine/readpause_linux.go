//go:build linux

package engine

import (
	"reflect"
	"slices"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// gnet reads every readable socket into the connection's inbound buffer
// whether or not the handler consumes it, and has no call to stop reading
// one connection. Without one, a sender whose partner reads slowly would
// grow its inbound buffer without bound, and the only defence left would
// be to cut the slow partner off even while it reads.
//
// So duet pauses reading itself: it changes the socket's interest in the
// event loop's epoll set, on the loop's own goroutine, between gnet's
// calls. The kernel's receive buffer then fills, TCP's window closes, and
// the sender's own writes block: real back-pressure, as a goroutine
// reading a net.Conn gets for free. gnet re-arms read interest itself
// after it drains a connection's outbound buffer; the handler re-pauses
// on the next read event, so at most one read's worth arrives meanwhile.
//
// The epoll descriptor is not exported by gnet. epollFD finds it by
// reflection (reading unexported fields is allowed; nothing is written).
// If a gnet upgrade moves it, epollFD returns -1, a test fails, and the
// daemon falls back to bounded buffering (see Server.loopFor).

// epollFD returns the epoll descriptor of the event loop that owns c, or -1.
func epollFD(c gnet.Conn) (fd int) {
	defer func() {
		if recover() != nil {
			fd = -1
		}
	}()
	v := reflect.ValueOf(c)
	if v.Kind() != reflect.Pointer {
		return -1
	}
	loop := v.Elem().FieldByName("loop")
	if !loop.IsValid() || loop.IsNil() {
		return -1
	}
	poller := loop.Elem().FieldByName("poller")
	if !poller.IsValid() || poller.IsNil() {
		return -1
	}
	f := poller.Elem().FieldByName("fd")
	if !f.IsValid() || !f.CanInt() {
		return -1
	}
	return int(f.Int())
}

// setReadInterest arms or disarms read readiness for fd in epfd, keeping
// write readiness when the connection still has output queued in gnet.
//
// hangup asks, while reading is disarmed, to hear of the peer's end of
// the stream (EPOLLRDHUP), on which gnet closes the connection. A
// connection held for back-pressure must not: its unread input still
// counts (a file piped through netcat ends with end-of-file right after
// its last line). A connection held while its login is checked should:
// a client that hangs up before its answer must not leave its password
// check to run for no one (see abandonHold).
func setReadInterest(epfd, fd int, read, write, hangup bool) error {
	var ev uint32
	if read {
		ev |= unix.EPOLLIN | unix.EPOLLPRI
	}
	if write {
		ev |= unix.EPOLLOUT
	}
	if hangup && !read {
		ev |= unix.EPOLLRDHUP
	}
	return unix.EpollCtl(epfd, unix.EPOLL_CTL_MOD, fd, &unix.EpollEvent{Fd: int32(fd), Events: ev})
}

// readRest appends to b what the kernel still holds of fd's input, up
// to max bytes in all, and reports whether that reached the end of the
// input. A held login hears the client hang up (setReadInterest), and
// gnet then closes the connection without reading what came before the
// end; lateInput reads it here, while the descriptor is still open. A
// reset after what was read ends the input as a FIN does: most often a
// client that closed right after sending, the server's welcome unread
// (a plain script's send and close), which makes the kernel reset the
// connection (AUTH.md).
func readRest(fd int, b []byte, max int) ([]byte, bool) {
	for len(b) < max {
		if cap(b)-len(b) < 16<<10 {
			b = slices.Grow(b, 64<<10)
		}
		n, err := unix.Read(fd, b[len(b):min(cap(b), max)])
		switch {
		case n > 0:
			b = b[:len(b)+n]
		case err == unix.EINTR:
		case err != nil && err != unix.EAGAIN:
			return b, true
		default:
			return b, n == 0 && err == nil
		}
	}
	return b, false
}
