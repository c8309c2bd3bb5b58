package engine

import (
	"net/netip"
	"time"

	"go.uber.org/zap"

	"duet/engine/tally"
	"duet/proto"
)

// Guessing a token is hopeless (128 random bits), but a client that tries
// many is still worth slowing and noting. After limits.connect_failures
// failed connects (unknown_token) from one address, every
// further connect from it is held: the connection's input is not read for
// a delay that doubles with each failure, from throttleFirstDelay up to
// throttleMaxDelay, and then the token is checked. A right token still
// works, so a user behind the same address as a guesser is only slowed; a
// wrong one is answered throttled. The holds of one address queue behind
// each other whichever connection they come on, so opening more
// connections does not buy more guesses; a connect that would wait longer
// than throttleMaxWait is answered throttled at once, without its token
// being checked.
//
// A right token from any other address is not affected at all.
const (
	throttleFirstDelay = 250 * time.Millisecond
	throttleMaxDelay   = 8 * time.Second
	throttleMaxWait    = 16 * time.Second
	// throttleForget is how long an address must go without a failed
	// connect before its record is forgotten.
	throttleForget = 10 * time.Minute
	// throttleMaxAddrs bounds the table. An attacker with more addresses
	// than this evicts the least recently failing records; each costs
	// about 200 bytes, so the table never holds more than 4 MiB.
	throttleMaxAddrs = 16384
	// heldTokenMax is how much of a held token is kept: one byte past a
	// token's length is enough to stay invalid.
	heldTokenMax = proto.TokenLen + 1
)

// failureTable counts failed connects per address (an IPv6 prefix of
// limits.ipv6_prefix bits counting as one address). It is safe for
// concurrent use.
type failureTable struct {
	t *tally.Table[netip.Prefix, failureRecord]
}

type failureRecord struct {
	fails    int
	lastFail time.Time
	nextSlot time.Time // when the last hold queued for this address ends
}

// newFailureTable returns an empty table of at most throttleMaxAddrs
// addresses. The least recently failing address makes way for a new one,
// except that an address with a hold queued makes way only when every
// address has one: evicting it would let its next connects overtake the
// holds already queued.
func newFailureTable() failureTable {
	return failureTable{tally.NewTable[netip.Prefix, failureRecord](tally.Options[failureRecord]{
		Max: throttleMaxAddrs,
		Expired: func(r *failureRecord, now time.Time) bool {
			return now.Sub(r.lastFail) > throttleForget && !r.nextSlot.After(now)
		},
		Pinned:      func(r *failureRecord, now time.Time) bool { return r.nextSlot.After(now) },
		EvictPinned: true,
	})}
}

// admit says how long a connect from the address key must be held before
// its token is checked (zero: at once), or refuse when the address has
// queued so much that it is answered throttled without a check. With
// reserve false it only asks, and queues nothing.
func (t failureTable) admit(key netip.Prefix, now time.Time, limit int, reserve bool) (wait time.Duration, refuse bool) {
	t.t.Update(key, now, false, func(rec *failureRecord, _ bool) tally.Action {
		if rec.fails < limit {
			return tally.Keep
		}
		start := now
		if rec.nextSlot.After(now) {
			start = rec.nextSlot
		}
		end := start.Add(throttleDelay(rec.fails - limit))
		if end.Sub(now) > throttleMaxWait {
			refuse = true
			return tally.Keep
		}
		if reserve {
			rec.nextSlot = end
		}
		wait = end.Sub(now)
		return tally.Keep
	})
	return wait, refuse
}

// throttleDelay is the hold for a connect after excess failures past the
// limit.
func throttleDelay(excess int) time.Duration {
	if excess >= 16 {
		return throttleMaxDelay
	}
	return min(throttleFirstDelay<<excess, throttleMaxDelay)
}

// failed records a failed connect from the address key and returns the
// address's count.
func (t failureTable) failed(key netip.Prefix, now time.Time) (fails int) {
	t.t.Update(key, now, true, func(rec *failureRecord, _ bool) tally.Action {
		rec.fails++
		rec.lastFail = now
		fails = rec.fails
		return tally.Touch
	})
	return fails
}

// size is the number of addresses on record.
func (t failureTable) size() int { return t.t.Len() }

// sourceKey is the key this connection's client address is counted under
// by the throttles, with the limits in force now.
func (cn *conn) sourceKey() netip.Prefix {
	return tally.KeyOf(cn.ip, cn.srv.lim().IPv6Prefix)
}

// connect carries out a connect command under the failed-connect
// throttle. held reports that the connection's input is now paused until
// the hold ends; holdingConnect then finishes the command.
func (cn *conn) connect(token []byte) (err *proto.Error, held bool) {
	now := time.Now()
	ending := cn.drainingInput || cn.closing
	wait, refuse := cn.srv.connectFails.admit(cn.sourceKey(), now, cn.srv.lim().ConnectFailures, !ending)
	if refuse || (wait > 0 && ending) {
		// Nobody waits at the end of a connection: a guesser who sends a
		// thousand tokens and hangs up must not have them all checked.
		return proto.ErrThrottled, false
	}
	if wait == 0 {
		return cn.checkConnect(token, false), false
	}
	g := cn.guardFor()
	g.holding = true
	g.holdUntil = now.Add(wait)
	g.heldToken = append(g.heldToken[:0], token[:min(len(token), heldTokenMax)]...)
	cn.paused, cn.waitingOn = true, nil
	cn.disarmRead()
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
	fails := cn.srv.connectFails.failed(cn.sourceKey(), time.Now())
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

// holdingConnect runs first on every read event. While a connect is held
// it keeps reading disarmed and reports true; once the hold is over it
// finishes the connect and lets reading resume.
func (cn *conn) holdingConnect() bool {
	g := cn.guard
	if g == nil || !g.holding {
		return false
	}
	if time.Now().Before(g.holdUntil) {
		cn.disarmRead()
		return true
	}
	g.holding = false
	if cn.sess != nil && !cn.closing {
		cn.answer(proto.OpConnect, cn.checkConnect(g.heldToken, true))
	}
	g.heldToken = g.heldToken[:0]
	return false
}
