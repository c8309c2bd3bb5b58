//go:build !linux

package engine

import "github.com/panjf2000/gnet/v2"

// On other systems duet does not pause reads; see readpause_linux.go.
func epollFD(gnet.Conn) int { return -1 }

func setReadInterest(epfd, fd int, read, write, hangup bool) error { return nil }

func readRest(fd int, b []byte, max int) ([]byte, bool) { return b, true }
