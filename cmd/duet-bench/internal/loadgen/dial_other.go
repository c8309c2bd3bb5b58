//go:build !linux

package loadgen

import "syscall"

// bindNoPort does nothing where IP_BIND_ADDRESS_NO_PORT does not exist;
// see dial_linux.go.
func bindNoPort(_, _ string, _ syscall.RawConn) error { return nil }
