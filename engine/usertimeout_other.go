//go:build !linux

package engine

import "time"

// setUserTimeout does nothing where TCP_USER_TIMEOUT is not known: a dead
// peer is found by keepalive, or when retransmissions give up.
func setUserTimeout(int, time.Duration) error { return nil }

// setOOBInline does nothing where whether a listener's setting reaches
// its connections is not known.
func setOOBInline(int) error { return nil }

// stoppedReading cannot tell where TCP_INFO is not known: a connection
// the kernel timed out ends lost.
func stoppedReading(int) bool { return false }
