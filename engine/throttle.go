package engine

import (
	"bytes"
	"math"
	"net/netip"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"duet/engine/tally"
	"duet/proto"
)

// Guessing a token is hopeless (128 random bits), but a client that
// tries many is still worth slowing and noting: failed connects are
// counted per address (auth.ConnectThrottle, which says how), and past
// limits.connect_failures a connect's input is held before its token is
// checked. A resume key (130 random bits) is guessed the same way and
// counted in the same table: a wrong key is a failed connect, and past
// the limit a resume is held like a connect (resume.go).

// heldArgMax is how much of a held token or resume key is kept: one
// byte past the longer of the two is enough to stay invalid.
const heldArgMax = max(proto.TokenLen, proto.ResumeKeyLen) + 1

// heldConnect is a connect or a resume the throttle holds (holdThrottle):
// what it asks with, and when it is checked.
type heldConnect struct {
	until time.Time
	op    proto.Op // OpConnect or OpResume
	arg   []byte   // the token, or the resume key
	last  uint64   // a JSON resume's last
}

// sourceKey is the key this connection's client address is counted under
// by the throttles, with the limits in force now.
func (cn *conn) sourceKey() netip.Prefix {
	return tally.AddrKey(cn.addr.ip, cn.loop.srv.lim().IPv6Prefix)
}

// connect carries out a connect command under the failed-connect
// throttle. held reports that the connection's input is now held until
// the connect is due; connectHeld then finishes it.
func (cn *conn) connect(token []byte) (err *proto.Error, held bool) {
	wait, err := cn.throttle()
	switch {
	case err != nil:
		return err, false
	case wait == 0:
		return cn.checkConnect(token, false), false
	}
	cn.holdFor(wait, &heldConnect{op: proto.OpConnect, arg: token})
	return nil, true
}

// throttle asks the failed-connect throttle about a connect or a resume
// from this connection: how long it is held before it is checked (0: at
// once), or throttled when it is refused unchecked.
func (cn *conn) throttle() (time.Duration, *proto.Error) {
	srv := cn.loop.srv
	lim := srv.lim()
	// How long a hold may last. Nobody waits at the end of a connection:
	// a guesser who sends a thousand tokens and hangs up must not have
	// them all checked. And a resume held past the login deadline would
	// be cut by it unanswered (login_timeout), its user never told why.
	within := time.Duration(math.MaxInt64)
	switch {
	case cn.flow.draining || cn.closing != endNone:
		within = 0
	case cn.sess == nil:
		within = lim.LoginTimeout - cn.loop.since(cn.opened)
	}
	key, now := cn.sourceKey(), time.Now()
	wait, refuse := srv.connectFails.Admit(key, now, lim.ConnectFailures, false)
	if refuse || wait > within {
		return 0, proto.ErrThrottled
	}
	if wait == 0 {
		return 0, nil
	}
	// Queued behind the holds before it.
	if wait, refuse = srv.connectFails.Admit(key, now, lim.ConnectFailures, true); refuse {
		return 0, proto.ErrThrottled
	}
	return wait, nil
}

// holdFor holds the connection's input for wait, with hc to finish then
// (connectHeld). hc.arg is copied: it aliases the read buffer.
func (cn *conn) holdFor(wait time.Duration, hc *heldConnect) {
	hc.until = time.Now().Add(wait)
	hc.arg = bytes.Clone(hc.arg[:min(len(hc.arg), heldArgMax)])
	cn.hold(holdThrottle, hc)
	time.AfterFunc(wait, cn.Wake)
}

// failed records a failed connect or resume from this connection's
// address, and logs it; fields say what failed.
//
// The lines are sampled, as refusals are (logRefusal). The throttle
// holds an address's failures past the limit, which paces its lines, but
// a guesser that spreads its guesses over more addresses than the
// throttle's table holds (an IPv6 /48 is 65536 of them) is never held,
// and would be logged line for line as fast as it can connect. The
// failures and the addresses reaching the limit each get at most a line
// a second, with the count of those not logged since the last, so that
// a flood of the one does not hide the other.
func (cn *conn) failed(what string, fields ...zap.Field) {
	srv := cn.loop.srv
	now := time.Now()
	fails := srv.connectFails.Failed(cn.sourceKey(), now)
	sampler, level, msg := &srv.failureLog, zapcore.InfoLevel, what
	if fails == srv.lim().ConnectFailures {
		sampler, level, msg = &srv.failureLimitLog, zapcore.WarnLevel, "failed connects from this address reached limits.connect_failures; further connects are slowed"
	}
	ok, suppressed := sampler.Allow(now)
	if !ok {
		return
	}
	fields = append(fields, zap.Int("failures", fails))
	if suppressed > 0 {
		fields = append(fields, zap.Int("failures_not_logged", suppressed))
	}
	cn.logger().Log(level, msg, fields...)
}

// checkConnect tries token and records a failure against the address.
// Only unknown_token is a failure: a bad_token (not 32 hexadecimal
// characters, a mistyped link) can never be anyone's token, so it guesses
// nothing and costs the user nothing, nor does the all-zero token
// (proto.ErrZeroToken), which no one is ever given.
func (cn *conn) checkConnect(token []byte, throttled bool) *proto.Error {
	err := cn.sess.Connect(token)
	if err != proto.ErrUnknownToken {
		return err
	}
	cn.failed("connect failed", zap.String("token_prefix", tokenPrefix(token)), zap.String("error", err.Code))
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

// connectHeld finishes a connect or a resume the throttle held, once it
// is due (release): its token or key is checked now, and a wrong one is
// answered throttled.
func (cn *conn) connectHeld(hc *heldConnect) {
	if cn.closing != endNone {
		return
	}
	switch {
	case hc.op == proto.OpConnect && cn.sess != nil:
		cn.answer(proto.OpConnect, 0, cn.checkConnect(hc.arg, true))
	case hc.op == proto.OpResume && cn.sess == nil:
		cn.answer(proto.OpResume, 0, cn.checkResume(hc.arg, hc.last, true))
	}
}
