//go:build !linux

package engine

// unacked cannot tell where SIOCOUTQ is not known: what is kept for a
// resume is then trimmed only by age, room and a client's own acks.
func unacked(int) (int, bool) { return 0, false }
