//go:build linux

package engine

import (
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// unacked returns the bytes written to socket fd that its peer has not
// acknowledged yet: its send queue, sent or not (SIOCOUTQ).
func unacked(fd int) (int, bool) {
	n, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
	return n, err == nil && n >= 0
}

// tcpInfo returns what the kernel reports of socket fd's connection
// (TCP_INFO), and how much of the structure it filled in: an older
// kernel knows fewer of its fields. It is asked by hand, not with
// unix.GetsockoptTCPInfo, which would allocate at each call and not say
// how much was filled in.
func tcpInfo(fd int) (info unix.TCPInfo, size uintptr, ok bool) {
	n := uint32(unsafe.Sizeof(info))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_INFO,
		uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&n)), 0)
	return info, uintptr(n), errno == 0
}

// ackState is what socket fd's TCP reports of what its peer
// acknowledged (TCP_INFO): how many bytes written to it since the
// connection opened (tcpi_bytes_acked), how long since it last
// acknowledged anything, and how many bytes the socket holds that it
// has not sent yet (tcpi_notsent_bytes): the peer's receive window, or
// the path, holds them back. Before Linux 4.6 the socket cannot say.
func ackState(fd int) (s tcpAcks, ok bool) {
	info, size, ok := tcpInfo(fd)
	if !ok || size < unsafe.Offsetof(info.Notsent_bytes)+unsafe.Sizeof(info.Notsent_bytes) {
		return tcpAcks{}, false
	}
	return tcpAcks{
		acked:    info.Bytes_acked,
		lastAck:  time.Duration(info.Last_ack_recv) * time.Millisecond,
		notsent:  info.Notsent_bytes,
		inFlight: info.Unacked > 0,
		rto:      time.Duration(info.Rto) * time.Microsecond,
	}, true
}

// unreadInput reports whether socket fd holds input not read yet, which
// a close would answer with a reset (closeSocket).
func unreadInput(fd int) bool {
	n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	return err == nil && n > 0
}
