package auth

import (
	"bytes"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"duet/engine/logsample"
	"duet/proto"
)

// Logins checks accounts-mode logins. A login first gets its turn from
// the Throttle, which may mean waiting; then its password is compared on
// the Pool. A comparison is bcrypt, milliseconds of CPU, so it never runs
// on an event loop: the engine starts a Login, holds the connection's
// input meanwhile, and is called back when the result is in. A login the
// throttle or the full pool refuses is answered at once. A login whose
// connection closes meanwhile is abandoned, and its password never
// compared (Login.Abandon).
//
// Logins is safe for concurrent use.
type Logins struct {
	accounts *Accounts
	throttle *Throttle
	pool     *Pool
	log      *zap.Logger

	// Both kinds of refusal come as fast as clients can send logins, so
	// each is logged at most once a second, with the count of those not
	// logged.
	queueFullLog logsample.Sampler
	tooManyLog   logsample.Sampler
}

// NewLogins checks logins against accounts, spacing them with a Throttle
// of throttle's options and comparing passwords on a Pool of pool's.
func NewLogins(accounts *Accounts, throttle ThrottleOptions, pool PoolOptions, log *zap.Logger) *Logins {
	return &Logins{
		accounts: accounts,
		throttle: NewThrottle(throttle, nil),
		pool:     NewPool(pool),
		log:      log,
	}
}

// Admit asks the throttle when an attempt to log in as name from addr
// (the client ip, as addr counts it) on connection conn may be checked,
// and logs a refusal. conn is the engine's id of the connection, which
// every log line about a connection carries.
func (l *Logins) Admit(name []byte, ip string, addr netip.Prefix, conn uint64) Admission {
	adm := l.throttle.Admit(addr, string(name))
	if adm.Refused {
		if ok, suppressed := l.tooManyLog.Allow(time.Now()); ok {
			l.log.Info("login refused: too many attempts", zap.Uint64("conn", conn), l.loggedName(name),
				zap.String("remote", ip), zap.Duration("retry_after", adm.RetryAfter),
				zap.Int("refusals_not_logged", suppressed))
		}
	}
	return adm
}

// Login is one login being checked. The checker fills in the result and
// then sets finished; the owner reads the result only after it sees
// finished (Result).
type Login struct {
	l        *Logins
	name     []byte // copies: the caller's slices alias its read buffer
	password []byte
	ip       string
	addr     netip.Prefix // the address as the throttle counts it
	conn     uint64       // the connection's id, for the log
	done     func()

	// While the login waits its turn or a checker, its connection may
	// close; then it is abandoned and no check runs.
	mu    sync.Mutex
	gone  bool
	timer *time.Timer // the throttle's wait, until it ends
	check *Check      // the check, once submitted

	account  string       // the account's name as the file spells it
	err      *proto.Error // nil: the password matched
	finished atomic.Bool
}

// Start begins checking a login the throttle admitted (Admit), after
// the wait it was given. done is called from any goroutine once the
// result is in, unless the login was abandoned first; Start itself never
// calls it. Start returns nil, having checked nothing, when the check
// was to start at once and the pool is full: the caller answers
// unavailable.
func (l *Logins) Start(name, password []byte, ip string, addr netip.Prefix, conn uint64, wait time.Duration, done func()) *Login {
	lg := &Login{l: l, name: bytes.Clone(name), password: bytes.Clone(password), ip: ip, addr: addr, conn: conn, done: done}
	lg.mu.Lock()
	defer lg.mu.Unlock()
	if wait <= 0 {
		if !lg.submitLocked() {
			return nil
		}
		return lg
	}
	lg.timer = time.AfterFunc(wait, func() {
		lg.mu.Lock()
		defer lg.mu.Unlock()
		if lg.gone {
			return
		}
		if !lg.submitLocked() {
			lg.err = proto.ErrUnavailable
			lg.finish()
		}
	})
	return lg
}

// submitLocked hands the comparison to the pool; it reports false,
// having dropped the password, when the pool is full. lg.mu is held. A
// check that completes calls done, which cannot be before Start has
// returned to its caller: the check takes lg.mu first.
func (lg *Login) submitLocked() bool {
	l := lg.l
	lg.check = l.pool.Submit(l.accounts.Cost(lg.name), func() {
		lg.mu.Lock()
		gone := lg.gone
		lg.mu.Unlock()
		if gone {
			// Its connection closed just as it was taken: too late to
			// cancel, not too late to skip.
			clear(lg.password)
			return
		}
		lg.verify()
		lg.finish()
	})
	if lg.check == nil {
		clear(lg.password)
		// Not the client's failure: the attempt is not counted.
		l.throttle.Unchecked(lg.addr, string(lg.name))
		if ok, suppressed := l.queueFullLog.Allow(time.Now()); ok {
			l.log.Warn("logins refused: the password check queue is full",
				zap.Int("refused", suppressed+1), zap.String("last_remote", lg.ip))
		}
		return false
	}
	return true
}

// verify compares the password and records the outcome. It runs on the
// pool. Wrong name and wrong password are one answer, auth_failed, so
// the client cannot tell which names exist.
func (lg *Login) verify() {
	l := lg.l
	account, ok := l.accounts.Verify(lg.name, lg.password)
	clear(lg.password)
	if ok {
		lg.account = account
		l.throttle.Succeeded(lg.addr, account)
		return
	}
	next := l.throttle.Failed(lg.addr, string(lg.name))
	lg.err = proto.ErrAuthFailed
	// Never the password: not even a wrong one, which is often a right
	// one for another account or a near miss.
	l.log.Info("login failed", zap.Uint64("conn", lg.conn), l.loggedName(lg.name), zap.String("remote", lg.ip),
		zap.Duration("next_delay", next))
}

// loggedName is how a log line about a login names the name tried: as
// it is when it is an account's, else only as unknown. A name that is
// no account's is as often a password typed into the wrong field (a
// terminal user who typed "/login" and then the password; a person who
// typed them in the wrong order) as a name guessed: a log must not keep
// it. An operator still sees every attempt and its address, and which
// accounts are being guessed at.
func (l *Logins) loggedName(name []byte) zap.Field {
	if l.accounts.Has(string(name)) {
		return zap.ByteString("name", name)
	}
	return zap.Bool("unknown_name", true)
}

// finish publishes the result and tells the owner.
func (lg *Login) finish() {
	lg.finished.Store(true)
	lg.done()
}

// Result is the outcome once ok: the account's name as the file spells
// it, or the error to tell (auth_failed; unavailable when the pool was
// full at the end of the wait). ok is false while the check is under way.
func (lg *Login) Result() (account string, err *proto.Error, ok bool) {
	if !lg.finished.Load() {
		return "", nil, false
	}
	return lg.account, lg.err, true
}

// Abandon gives the login up: one still waiting its turn or a checker is
// never checked, so a flood of logins that hang up costs the checkers
// nothing. The attempt stays counted against its address and name.
func (lg *Login) Abandon() {
	lg.mu.Lock()
	lg.gone = true
	timer, check := lg.timer, lg.check
	lg.mu.Unlock()
	if timer != nil {
		timer.Stop()
	}
	if check == nil || lg.l.pool.Cancel(check) {
		clear(lg.password) // no check will read it
	}
}
