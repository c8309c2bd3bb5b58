package loadgen

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// bindNoPort lets the kernel choose a source-bound socket's port at
// connect time rather than at bind time. A bind with port 0 must find a
// port no socket on that address holds, TIME_WAIT ones included, and
// after a few runs of thousands of connections the search dominated the
// load generator's CPU (8.6 s of 9.3 s in bind(2) in one profile). At
// connect time the kernel needs only a unique address-and-port pair and
// may reuse a TIME_WAIT port on loopback. The option only makes dialling
// cheaper, so a kernel that refuses it leaves the dial to go on as before.
func bindNoPort(_, _ string, c syscall.RawConn) error {
	return c.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	})
}
