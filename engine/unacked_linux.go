//go:build linux

package engine

import "golang.org/x/sys/unix"

// unacked returns the bytes written to socket fd that its peer has not
// acknowledged yet: its send queue, sent or not (SIOCOUTQ).
func unacked(fd int) (int, bool) {
	n, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
	return n, err == nil && n >= 0
}
