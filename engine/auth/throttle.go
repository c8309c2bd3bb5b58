package auth

import (
	"sync"
	"time"
)

// ThrottleOptions shape how failed logins slow down the next ones. Zero
// values take the defaults.
type ThrottleOptions struct {
	// Free is how many failures an address or an account may have before
	// attempts are delayed. Default 5: enough for typos.
	Free int
	// Base is the first delay; each further failure doubles it. Default 1s.
	Base time.Duration
	// Max caps the delay. Default 30s, under the line protocol's default
	// login timeout, so a delayed attempt is still answered.
	Max time.Duration
	// Forget is how long a record lasts after its last failure. Default 15m.
	Forget time.Duration
	// MaxEntries bounds the records kept for addresses and for account
	// names, each. Default 100000.
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
	if o.Max < o.Base {
		o.Max = o.Base
	}
	if o.Forget <= 0 {
		o.Forget = 15 * time.Minute
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = 100_000
	}
	return o
}

// Throttle counts failed logins per remote address and per account name
// and says how long the next attempt must wait before it is checked:
// nothing for the first Free failures, then Base, doubling with each
// further failure up to Max. Guessing passwords from one address, or for
// one account from many addresses, becomes slow, while a person who
// mistypes a few times is not held up.
//
// A delayed attempt is still checked once its wait is over, so a right
// password gets in even while someone else is guessing at the account;
// nobody can lock a user out by failing on purpose, only slow them down.
//
// Names are counted whether or not an account exists, so the delays do
// not tell which names do. A successful login clears its account's
// record, not its address's: one good account must not buy an address
// fresh guesses at others.
type Throttle struct {
	opts ThrottleOptions
	now  func() time.Time

	mu    sync.Mutex
	ips   map[string]*failures
	names map[string]*failures
}

type failures struct {
	count int
	last  time.Time
}

// NewThrottle returns a throttle with no failures recorded. now is the
// clock; nil means time.Now.
func NewThrottle(opts ThrottleOptions, now func() time.Time) *Throttle {
	if now == nil {
		now = time.Now
	}
	return &Throttle{
		opts:  opts.withDefaults(),
		now:   now,
		ips:   make(map[string]*failures),
		names: make(map[string]*failures),
	}
}

// Delay is how long an attempt to log in as name from ip must wait
// before it is checked: the longer of the address's and the account's.
func (t *Throttle) Delay(ip, name string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	return max(t.delayLocked(t.ips, ip, now), t.delayLocked(t.names, fold(name), now))
}

func (t *Throttle) delayLocked(m map[string]*failures, key string, now time.Time) time.Duration {
	f := m[key]
	if f == nil {
		return 0
	}
	if now.Sub(f.last) > t.opts.Forget {
		delete(m, key)
		return 0
	}
	over := f.count - t.opts.Free
	if over < 0 {
		return 0
	}
	d := t.opts.Base
	for ; over > 0 && d < t.opts.Max; over-- {
		d *= 2
	}
	return min(d, t.opts.Max)
}

// Failed records a failed attempt and returns the delay the next
// attempt from ip or for name will wait.
func (t *Throttle) Failed(ip, name string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	t.failLocked(t.ips, ip, now)
	t.failLocked(t.names, fold(name), now)
	return max(t.delayLocked(t.ips, ip, now), t.delayLocked(t.names, fold(name), now))
}

func (t *Throttle) failLocked(m map[string]*failures, key string, now time.Time) {
	f := m[key]
	if f != nil && now.Sub(f.last) > t.opts.Forget {
		f.count = 0
	}
	if f == nil {
		if len(m) >= t.opts.MaxEntries {
			t.sweepLocked(m, now)
			if len(m) >= t.opts.MaxEntries {
				// Full of live records: this key goes uncounted. For a
				// flood of made-up names the address's own record still
				// slows the flood; memory stays bounded either way.
				return
			}
		}
		f = &failures{}
		m[key] = f
	}
	f.count++
	f.last = now
}

// sweepLocked drops the records whose failures are forgotten.
func (t *Throttle) sweepLocked(m map[string]*failures, now time.Time) {
	for k, f := range m {
		if now.Sub(f.last) > t.opts.Forget {
			delete(m, k)
		}
	}
}

// Succeeded clears name's record after a successful login.
func (t *Throttle) Succeeded(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.names, fold(name))
}
