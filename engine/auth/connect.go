package auth

import (
	"net/netip"
	"time"

	"duet/engine/tally"
)

// Guessing a token is hopeless (128 random bits), but a client that tries
// many is still worth slowing and noting. After limits.connect_failures
// failed connects (unknown_token) from one address, every further
// connect from it is held: the engine does not read the connection's
// input for a delay that doubles with each failure, from
// throttleFirstDelay up to throttleMaxDelay, and then the token is
// checked. A right token still works, so a user behind the same address
// as a guesser is only slowed; a wrong one is answered throttled. The
// holds of one address queue behind each other whichever connection they
// come on, so opening more connections does not buy more guesses; a
// connect that would wait longer than throttleMaxWait is answered
// throttled at once, without its token being checked.
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
)

// ConnectThrottle counts failed connects per address (an IPv6 prefix of
// limits.ipv6_prefix bits counting as one address, tally.AddrKey) and
// says how long the next connect from an address is held. It is safe for
// concurrent use.
type ConnectThrottle struct {
	t *tally.Table[netip.Prefix, failureRecord]
}

type failureRecord struct {
	fails    int
	lastFail time.Time
	nextSlot time.Time // when the last hold queued for this address ends
}

// NewConnectThrottle returns a throttle with nothing recorded, which
// keeps at most throttleMaxAddrs addresses. The least recently failing
// address makes way for a new one, except that an address with a hold
// queued makes way only when every address has one: evicting it would
// let its next connects overtake the holds already queued.
func NewConnectThrottle() *ConnectThrottle {
	return &ConnectThrottle{tally.NewTable[netip.Prefix, failureRecord](tally.Options[failureRecord]{
		Max: throttleMaxAddrs,
		Expired: func(r *failureRecord, now time.Time) bool {
			return now.Sub(r.lastFail) > throttleForget && !r.nextSlot.After(now)
		},
		Pinned:      func(r *failureRecord, now time.Time) bool { return r.nextSlot.After(now) },
		EvictPinned: true,
	})}
}

// Admit says how long a connect from the address key must be held before
// its token is checked (zero: at once), or refuse when the address has
// queued so much that it is answered throttled without a check. limit is
// limits.connect_failures. With reserve false it only asks, and queues
// nothing.
func (t *ConnectThrottle) Admit(key netip.Prefix, now time.Time, limit int, reserve bool) (wait time.Duration, refuse bool) {
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

// Failed records a failed connect from the address key and returns the
// address's count.
func (t *ConnectThrottle) Failed(key netip.Prefix, now time.Time) (fails int) {
	t.t.Update(key, now, true, func(rec *failureRecord, _ bool) tally.Action {
		rec.fails++
		rec.lastFail = now
		fails = rec.fails
		return tally.Touch
	})
	return fails
}

// Len is the number of addresses on record.
func (t *ConnectThrottle) Len() int { return t.t.Len() }
