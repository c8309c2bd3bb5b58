//go:build linux

package engine

import (
	"time"

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
