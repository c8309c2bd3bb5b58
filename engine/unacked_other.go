//go:build !linux

package engine

// unacked cannot tell where SIOCOUTQ is not known: what is kept for a
// resume is then trimmed only by age, room and a client's own acks.
func unacked(int) (int, bool) { return 0, false }

// ackState cannot tell where TCP_INFO is not known: a WebSocket reader
// is then seen reading only as the server's own buffer for it drains,
// and no connection's user timeout is set aside (untimed.go).
func ackState(int) (tcpAcks, bool) { return tcpAcks{}, false }

// unreadInput: other kernels are not asked; what gnet holds unread
// still makes a close linger (closeSocket).
func unreadInput(int) bool { return false }
