//go:build linux

package engine

import (
	"context"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// HoldLoops runs a task on every event loop of s that waits until
// release is called, and returns once each has begun. Meanwhile what
// clients send waits in the kernel, and what other goroutines queue to
// the loops waits behind the task: a test orders by it what would
// otherwise race.
func (s *Server) HoldLoops() (release func()) {
	gate := make(chan struct{})
	var begun sync.WaitGroup
	for _, ls := range s.loopList() {
		begun.Add(1)
		if ls.execute(context.Background(), func() { begun.Done(); <-gate }) != nil {
			begun.Done()
		}
	}
	begun.Wait()
	return sync.OnceFunc(func() { close(gate) })
}

// ServerFD returns the descriptor of the server's end of the connection
// whose client end is at client, or -1 if no loop has it within 10 s.
func (s *Server) ServerFD(client net.Addr) int {
	found := make(chan int, 1)
	for _, ls := range s.loopList() {
		_ = ls.eachConn(func(cn *conn) {
			if cn.c.RemoteAddr().String() == client.String() {
				found <- cn.c.Fd()
			}
		})
	}
	select {
	case fd := <-found:
		return fd
	case <-time.After(10 * time.Second):
		return -1
	}
}

// Unread returns how many bytes the kernel holds unread on the server's
// descriptor fd (ServerFD).
func Unread(fd int) (int, error) { return unix.IoctlGetInt(fd, unix.SIOCINQ) }
