package engine

import (
	"bytes"
	"net/netip"
	"time"

	"go.uber.org/zap"

	"duet/engine/tally"
	"duet/proto"
)

// Guessing a token is hopeless (128 random bits), but a client that
// tries many is still worth slowing and noting: failed connects are
// counted per address (auth.ConnectThrottle, which says how), and past
// limits.connect_failures a connect's input is held before its token is
// checked.

// heldTokenMax is how much of a held token is kept: one byte past a
// token's length is enough to stay invalid.
const heldTokenMax = proto.TokenLen + 1

// heldConnect is a connect the throttle holds (holdThrottle): the token,
// and when it is checked.
type heldConnect struct {
	until time.Time
	token []byte
}

// sourceKey is the key this connection's client address is counted under
// by the throttles, with the limits in force now.
func (cn *conn) sourceKey() netip.Prefix {
	return tally.KeyOf(cn.addr.ip, cn.srv.lim().IPv6Prefix)
}

// connect carries out a connect command under the failed-connect
// throttle. held reports that the connection's input is now held until
// the connect is due; connectHeld then finishes it.
func (cn *conn) connect(token []byte) (err *proto.Error, held bool) {
	now := time.Now()
	last := cn.flow.draining || cn.closing != endNone
	wait, refuse := cn.srv.connectFails.Admit(cn.sourceKey(), now, cn.srv.lim().ConnectFailures, !last)
	if refuse || (wait > 0 && last) {
		// Nobody waits at the end of a connection: a guesser who sends a
		// thousand tokens and hangs up must not have them all checked.
		return proto.ErrThrottled, false
	}
	if wait == 0 {
		return cn.checkConnect(token, false), false
	}
	cn.hold(holdThrottle, &heldConnect{until: now.Add(wait), token: bytes.Clone(token[:min(len(token), heldTokenMax)])})
	time.AfterFunc(wait, cn.Wake)
	return nil, true
}

// checkConnect tries token and records a failure against the address.
// Only unknown_token is a failure: a bad_token (not 32 hexadecimal
// characters, a mistyped link) can never be anyone's token, so it guesses
// nothing and costs the user nothing.
func (cn *conn) checkConnect(token []byte, throttled bool) *proto.Error {
	err := cn.sess.Connect(token)
	if err != proto.ErrUnknownToken {
		return err
	}
	limit := cn.srv.lim().ConnectFailures
	fails := cn.srv.connectFails.Failed(cn.sourceKey(), time.Now())
	fields := []zap.Field{
		zap.String("token_prefix", tokenPrefix(token)),
		zap.String("error", err.Code),
		zap.Int("failures", fails),
	}
	if fails == limit {
		cn.logger().Warn("failed connects from this address reached limits.connect_failures; further connects are slowed", fields...)
	} else {
		cn.logger().Info("connect failed", fields...)
	}
	if throttled {
		return proto.ErrThrottled
	}
	return err
}

// tokenPrefix is what the log may show of a token someone tried: its
// first six characters, enough to match a report, far too few to use.
// Anything but a hexadecimal digit is shown as '?'.
func tokenPrefix(token []byte) string {
	var b [6]byte
	n := min(len(token), len(b))
	for i := 0; i < n; i++ {
		c := token[i]
		if c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' {
			b[i] = c
		} else {
			b[i] = '?'
		}
	}
	return string(b[:n])
}

// connectHeld finishes a connect the throttle held, once it is due
// (release): its token is checked now, and a wrong one is answered
// throttled.
func (cn *conn) connectHeld(hc *heldConnect) {
	if cn.sess != nil && cn.closing == endNone {
		cn.answer(proto.OpConnect, cn.checkConnect(hc.token, true))
	}
}
