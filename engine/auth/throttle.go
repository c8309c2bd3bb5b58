package auth

import (
	"net/netip"
	"slices"
	"sync"
	"time"

	"duet/engine/tally"
)

// ThrottleOptions shape how failed logins limit the next ones. Zero
// values take the defaults.
type ThrottleOptions struct {
	// Free is how many failures an address or an account may have before
	// its attempts are spaced out. Default 5: enough for typos.
	Free int
	// Base is the spacing after the first failure past Free; each further
	// failure doubles it. Default 1s.
	Base time.Duration
	// Max caps the spacing. Default 30s: past the free failures an
	// address, or an account, is checked at most twice a minute.
	Max time.Duration
	// MaxWait bounds the queue: an attempt that would wait longer than
	// this before its check is refused at once, told when to try again.
	// Default 30s, under the line protocol's default login timeout, so
	// an attempt that is queued is answered. Never less than Max.
	MaxWait time.Duration
	// Forget is how long a record lasts after its last failure. Default
	// 15m.
	Forget time.Duration
	// KnownFor is how long an address stays known for an account after a
	// successful login from it. Default 30 days.
	KnownFor time.Duration
	// MaxEntries bounds each of the three tables: addresses, account
	// names, and accounts with known addresses (knownPerAccount each).
	// Default 65536.
	MaxEntries int
}

func (o ThrottleOptions) withDefaults() ThrottleOptions {
	if o.Free <= 0 {
		o.Free = 5
	}
	if o.Base <= 0 {
		o.Base = time.Second
	}
	if o.Max <= 0 {
		o.Max = 30 * time.Second
	}
	o.Max = max(o.Max, o.Base)
	if o.MaxWait <= 0 {
		o.MaxWait = 30 * time.Second
	}
	o.MaxWait = max(o.MaxWait, o.Max) // or an attempt past Free could never be admitted
	if o.Forget <= 0 {
		o.Forget = 15 * time.Minute
	}
	if o.KnownFor <= 0 {
		o.KnownFor = 30 * 24 * time.Hour
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = 65536
	}
	return o
}

// Throttle is a rate limit on password guessing, per client address and
// per account name.
//
// Each address and each name has a count of failures and a schedule.
// The first Free failures cost nothing. Past them, each attempt is
// given a turn: the later of now and the end of the last turn, plus a
// spacing of Base, doubling with each further failure up to Max. The
// attempt is checked when its turns for both its address and its name
// have come, so attempts from one address, or for one name, are checked
// one after the other, in order, however many connections they arrive
// on. An attempt whose turn is more than MaxWait away is refused without
// a check, and told when a turn would be free.
//
// An attempt counts as a failure as soon as it is given its turn, and
// is refunded if it turns out right. Attempts made at once all count,
// so opening many connections buys no extra free guesses.
//
// Names are counted whether or not an account exists, so the limit does
// not tell which names do. A successful login is refunded, but clears
// nothing: one good account must not buy an address fresh guesses at
// others, nor its owner's login wipe out the guesses made at it.
//
// An address from which an account has logged in within KnownFor is
// known for it: its attempts for that account skip the account's
// schedule (their address's still applies). Someone guessing at an
// account from elsewhere can fill that account's schedule and keep
// logins from new addresses waiting or refused, but cannot delay its
// owner at an address the owner has used.
//
// Each table is bounded. Under pressure a forgotten record makes way
// first, then the least recently failed record that is not being
// throttled; a record being throttled (past Free failures, or with turns
// still ahead) makes way only when every record is.
type Throttle struct {
	opts ThrottleOptions
	now  func() time.Time

	// mu makes an admission (reading both schedules, then taking both
	// turns) one step. The tables lock themselves too, below it.
	mu    sync.Mutex
	addrs *tally.Table[netip.Prefix, schedule]
	names *tally.Table[string, schedule]
	known *tally.Table[string, knownAddrs] // by folded account name
}

// knownPerAccount is how many addresses an account keeps known: the
// latest from which it logged in. Kept with the account, so that one
// account's logins from many addresses make way only for its own older
// ones: were they all in one table shared by every account, a user of
// their own account logging in from as many addresses as the table
// holds (one IPv6 /48 has 65536 /64s) would push out every other
// owner's home, and fail at it meanwhile to keep its owner out.
const knownPerAccount = 8

// knownAddrs are an account's known addresses, each kept as the 16
// bytes of its key (tally.AddrKey: an IPv4 address, or an IPv6 /64,
// which never share 16 bytes), with its last successful login, unix
// nanoseconds (0: an empty slot).
type knownAddrs struct {
	addr [knownPerAccount][16]byte
	last [knownPerAccount]int64
}

// find returns the slot of addr, or -1.
func (k *knownAddrs) find(addr [16]byte) int {
	for i := range k.addr {
		if k.last[i] != 0 && k.addr[i] == addr {
			return i
		}
	}
	return -1
}

// schedule is one address's or one name's record.
type schedule struct {
	fails int   // failures (and attempts still to be checked) since the record was last forgotten
	last  int64 // unix nanoseconds of the last attempt or failure
	turn  int64 // unix nanoseconds when the last turn given ends
}

// NewThrottle returns a throttle with nothing recorded. now is the clock;
// nil means time.Now.
func NewThrottle(opts ThrottleOptions, now func() time.Time) *Throttle {
	if now == nil {
		now = time.Now
	}
	opts = opts.withDefaults()
	t := &Throttle{opts: opts, now: now}
	expired := func(s *schedule, now time.Time) bool {
		n := now.UnixNano()
		return n-s.last > int64(opts.Forget) && s.turn <= n
	}
	pinned := func(s *schedule, now time.Time) bool {
		return s.fails >= opts.Free || s.turn > now.UnixNano()
	}
	t.addrs = tally.NewTable[netip.Prefix, schedule](tally.Options[schedule]{
		Max: opts.MaxEntries, Expired: expired, Pinned: pinned, EvictPinned: true,
	})
	t.names = tally.NewTable[string, schedule](tally.Options[schedule]{
		Max: opts.MaxEntries, Expired: expired, Pinned: pinned, EvictPinned: true,
	})
	t.known = tally.NewTable[string, knownAddrs](tally.Options[knownAddrs]{
		Max: opts.MaxEntries,
		Expired: func(k *knownAddrs, now time.Time) bool {
			return now.UnixNano()-slices.Max(k.last[:]) > int64(opts.KnownFor)
		},
	})
	return t
}

// Admission is the throttle's answer to a login attempt.
type Admission struct {
	// Wait is how long the attempt waits for its turn before it is
	// checked; zero: at once.
	Wait time.Duration
	// Refused: the attempt would wait more than MaxWait. It is not
	// checked and not counted; RetryAfter says when a turn would be free.
	Refused    bool
	RetryAfter time.Duration
}

// spacing is the turn length for a record with fails failures so far.
func (t *Throttle) spacing(fails int) time.Duration {
	over := fails - t.opts.Free
	if over < 0 {
		return 0
	}
	if over >= 32 {
		return t.opts.Max
	}
	return min(t.opts.Base<<over, t.opts.Max)
}

// turnEnd is when an attempt's turn on s would end.
func (t *Throttle) turnEnd(s schedule, now int64) int64 {
	start := max(now, s.turn)
	return start + int64(t.spacing(s.fails))
}

// Admit gives a login attempt from addr for name its turn, or refuses it.
func (t *Throttle) Admit(addr netip.Prefix, name string) Admission {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	n := now.UnixNano()
	key := fold(name)
	known := t.isKnown(key, addr, now)

	// Where the turns would end, without taking them yet.
	endA, endN := n, n
	t.addrs.Update(addr, now, false, func(s *schedule, _ bool) tally.Action {
		endA = t.turnEnd(*s, n)
		return tally.Keep
	})
	if !known {
		t.names.Update(key, now, false, func(s *schedule, _ bool) tally.Action {
			endN = t.turnEnd(*s, n)
			return tally.Keep
		})
	}
	end := max(endA, endN)
	if wait := time.Duration(end - n); wait > t.opts.MaxWait {
		return Admission{Refused: true, RetryAfter: wait - t.opts.MaxWait}
	}

	take := func(s *schedule, _ bool) tally.Action {
		s.turn = t.turnEnd(*s, n)
		s.fails++
		s.last = n
		return tally.Touch
	}
	t.addrs.Update(addr, now, true, take)
	if !known {
		t.names.Update(key, now, true, take)
	}
	return Admission{Wait: time.Duration(end - n)}
}

func (t *Throttle) isKnown(name string, addr netip.Prefix, now time.Time) bool {
	known := false
	a := addr.Addr().As16()
	t.known.Update(name, now, false, func(k *knownAddrs, _ bool) tally.Action {
		i := k.find(a)
		known = i >= 0 && now.UnixNano()-k.last[i] <= int64(t.opts.KnownFor)
		return tally.Keep
	})
	return known
}

// Failed records that an admitted attempt from addr for name was
// checked and failed, and returns how long the next attempt from addr
// for name would wait.
func (t *Throttle) Failed(addr netip.Prefix, name string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	n := now.UnixNano()
	key := fold(name)
	end := n
	// The attempt was counted when it was admitted; a record evicted
	// since then starts again from this failure.
	failed := func(s *schedule, fresh bool) tally.Action {
		if fresh {
			s.fails = 1
		}
		s.last = n
		end = max(end, t.turnEnd(*s, n))
		return tally.Touch
	}
	t.addrs.Update(addr, now, true, failed)
	if !t.isKnown(key, addr, now) {
		t.names.Update(key, now, true, failed)
	}
	return time.Duration(end - n)
}

// Succeeded records that an admitted attempt from addr for name was
// right: it is refunded the failure it was counted as, and the address
// becomes known for the account. The failures before it stand: someone
// guessing at an account gains nothing when its owner logs in.
func (t *Throttle) Succeeded(addr netip.Prefix, name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	key := fold(name)
	t.refundLocked(addr, key, now)
	a := addr.Addr().As16()
	t.known.Update(key, now, true, func(k *knownAddrs, _ bool) tally.Action {
		i := k.find(a)
		if i < 0 {
			i = slices.Index(k.last[:], slices.Min(k.last[:])) // the oldest, or an empty slot
		}
		k.addr[i], k.last[i] = a, now.UnixNano()
		return tally.Touch
	})
}

// Unchecked records that an admitted attempt was never checked because
// the server could not (the checkers were all busy): it is refunded, so
// a flood of other people's logins does not count against a user. Its
// turn is not given back; turns already given after it stand.
func (t *Throttle) Unchecked(addr netip.Prefix, name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.refundLocked(addr, fold(name), t.now())
}

// refundLocked takes back the failure an attempt was counted as.
func (t *Throttle) refundLocked(addr netip.Prefix, key string, now time.Time) {
	refund := func(s *schedule, _ bool) tally.Action {
		s.fails = max(s.fails-1, 0)
		return tally.Keep
	}
	t.addrs.Update(addr, now, false, refund)
	if !t.isKnown(key, addr, now) {
		t.names.Update(key, now, false, refund)
	}
}

// Known reports whether addr is known for the account name: an account
// logged in from it within KnownFor.
func (t *Throttle) Known(addr netip.Prefix, name string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.isKnown(fold(name), addr, t.now())
}
