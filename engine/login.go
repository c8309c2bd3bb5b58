package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"go.uber.org/zap"

	"duet/engine/auth"
	"duet/engine/hub"
	"duet/proto"
	"duet/proto/wsframe"
)

// AuthOptions configure accounts mode (Options.AuthMode "accounts").
type AuthOptions struct {
	Accounts *auth.Accounts // required in accounts mode
	// Takeover lets a second login of an online account replace the
	// first; otherwise it is refused with already_online.
	Takeover bool
	Throttle auth.ThrottleOptions // zero values take auth's defaults
	// Pool sizes the checkers that compare passwords off the event
	// loops; zero values take auth's defaults.
	Pool auth.PoolOptions
}

// logins checks accounts-mode logins. A login first gets its turn from
// the throttle, which may mean waiting; then its password is compared on
// the pool. A comparison is bcrypt, milliseconds of CPU, so it never runs
// on an event loop: while the login waits and is checked the connection
// reads no further input, and the result comes back to the connection's
// own loop (conn.finishLogin), which then goes on with the input that
// waited. A login the throttle or the full pool refuses is answered at
// once, without pausing. A login whose connection closes meanwhile is
// abandoned, and its password never compared (abandonLogin).
type logins struct {
	accounts *auth.Accounts
	takeover atomic.Bool
	throttle *auth.Throttle
	pool     *auth.Pool
	log      *zap.Logger

	// Logins refused because the check queue was full. A flood would
	// flood the log too, so they are logged at most once a second, with
	// their count.
	refused       atomic.Int64
	refusedLogged atomic.Int64 // unix nanoseconds of the last log line

	// Logins refused for too many attempts come as fast as a client can
	// send them, so they are logged at most once a second too.
	tooManyLog logSampler
}

func newLogins(opts Options, log *zap.Logger) (*logins, error) {
	if opts.AuthMode != "accounts" {
		return nil, nil
	}
	if opts.Auth.Accounts == nil {
		return nil, errors.New("engine: accounts mode without accounts")
	}
	l := &logins{
		accounts: opts.Auth.Accounts,
		throttle: auth.NewThrottle(opts.Auth.Throttle, nil),
		pool:     auth.NewPool(opts.Auth.Pool),
		log:      log,
	}
	l.takeover.Store(opts.Auth.Takeover)
	return l, nil
}

// SetTakeover turns takeover on or off for logins from now on (config
// reload). It does nothing in open mode.
func (s *Server) SetTakeover(on bool) {
	if s.logins != nil {
		s.logins.takeover.Store(on)
	}
}

// pendingLogin is one login being checked. The checker fills in the
// result and then sets done; the connection's loop reads the result only
// after it sees done.
type pendingLogin struct {
	name     []byte // copies: the command's slices alias the read buffer
	password []byte
	ip       string
	key      netip.Prefix // the address as the throttle counts it

	// While the login waits its turn or a checker, its connection may
	// close; then it is abandoned and no check runs (abandonLogin).
	mu    sync.Mutex
	gone  bool
	timer *time.Timer // the throttle's wait, until it ends
	check *auth.Check // the check, once submitted

	account string       // the account's name as the file spells it
	err     *proto.Error // nil: the password matched
	done    atomic.Bool
}

// startLogin begins an accounts-mode login. It runs on the loop.
func (cn *conn) startLogin(cmd *proto.Command) {
	l := cn.srv.logins
	if !proto.ValidName(cmd.Name) {
		cn.tell(proto.ErrBadName)
		return
	}
	if len(cmd.Password) == 0 {
		// Nothing to check, and nothing to learn from the answer.
		cn.tell(proto.ErrAuthFailed)
		return
	}
	key := cn.sourceKey()
	adm := l.throttle.Admit(key, string(cmd.Name))
	if adm.Refused {
		// Refused unchecked: the attempts ahead of it from this address
		// or for this name already fill the queue.
		retry := (adm.RetryAfter + time.Second - 1).Truncate(time.Second) // whole seconds, rounded up
		cn.out.Deliver(&proto.Event{Kind: proto.EvNotice, Text: fmt.Appendf(nil,
			"too many failed logins from your address or for that name: try again in %s", retry)})
		cn.srv.metrics.Error(proto.ErrTooManyAttempts.Code)
		cn.out.Deliver(&proto.Event{Kind: proto.EvError, Err: proto.ErrTooManyAttempts, RetryAfter: retry})
		if ok, suppressed := l.tooManyLog.allow(time.Now()); ok {
			l.log.Info("login refused: too many attempts", zap.ByteString("name", cmd.Name),
				zap.String("remote", cn.ip), zap.Duration("retry_after", retry),
				zap.Int("refusals_not_logged", suppressed))
		}
		return
	}
	pl := &pendingLogin{name: bytes.Clone(cmd.Name), password: bytes.Clone(cmd.Password), ip: cn.ip, key: key}
	if adm.Wait <= 0 {
		if !l.submit(cn, pl) {
			// Answered at once: under a flood this is the common case,
			// and it costs the loop no pause and no wake-up.
			cn.tell(proto.ErrUnavailable)
			return
		}
		cn.holdInput(pl)
		return
	}
	cn.holdInput(pl)
	cn.out.Deliver(&proto.Event{Kind: proto.EvNotice, Text: fmt.Appendf(nil,
		"too many failed logins from your address or for that name: this one is checked in %s", adm.Wait.Round(time.Second/10))})
	pl.mu.Lock()
	pl.timer = time.AfterFunc(adm.Wait, func() {
		pl.mu.Lock()
		defer pl.mu.Unlock()
		if pl.gone {
			return
		}
		if !l.submitLocked(cn, pl) {
			pl.err = proto.ErrUnavailable
			cn.loginChecked(pl)
		}
	})
	pl.mu.Unlock()
}

// holdInput keeps the rest of the connection's input unread until the
// login is answered: a connect or a message right behind the login must
// see the session it creates. The answer arrives through onTraffic.
func (cn *conn) holdInput(pl *pendingLogin) {
	cn.login = pl
	cn.paused = true
	cn.disarmRead()
}

// submit hands the comparison to the pool; it reports false, having
// dropped the password, when the pool is full. It may run on any
// goroutine. A job that completes calls loginChecked, which reaches the
// connection's loop only after the call that submitted it (on that same
// loop) has returned, so holding the input after a successful submit is
// in time.
func (l *logins) submit(cn *conn, pl *pendingLogin) bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return l.submitLocked(cn, pl)
}

// submitLocked is submit with pl.mu held.
func (l *logins) submitLocked(cn *conn, pl *pendingLogin) bool {
	pl.check = l.pool.Submit(l.accounts.Cost(pl.name), func() {
		pl.mu.Lock()
		gone := pl.gone
		pl.mu.Unlock()
		if gone {
			// Its connection closed just as it was taken: too late to
			// cancel, not too late to skip.
			clear(pl.password)
			return
		}
		l.verify(pl)
		cn.loginChecked(pl)
	})
	if pl.check == nil {
		clear(pl.password)
		// Not the client's failure: the attempt is not counted.
		l.throttle.Unchecked(pl.key, string(pl.name))
		l.refused.Add(1)
		now, last := time.Now().UnixNano(), l.refusedLogged.Load()
		if now-last >= int64(time.Second) && l.refusedLogged.CompareAndSwap(last, now) {
			l.log.Warn("logins refused: the password check queue is full",
				zap.Int64("refused", l.refused.Swap(0)), zap.String("last_remote", pl.ip))
		}
		return false
	}
	return true
}

// abandonLogin gives up the login a closing connection is waiting for:
// a login still waiting its turn or a checker is never checked, so a
// flood of logins that hang up costs the checkers nothing. The attempt
// stays counted against its address and name. It runs on the loop, from
// onClose.
func (cn *conn) abandonLogin() {
	pl := cn.login
	if pl == nil {
		return
	}
	cn.login = nil
	pl.mu.Lock()
	pl.gone = true
	timer, check := pl.timer, pl.check
	pl.mu.Unlock()
	if timer != nil {
		timer.Stop()
	}
	if check == nil || cn.srv.logins.pool.Cancel(check) {
		clear(pl.password) // no check will read it
	}
}

// verify compares the password and records the outcome. It runs on the
// pool. Wrong name and wrong password are one answer, auth_failed, so
// the client cannot tell which names exist.
func (l *logins) verify(pl *pendingLogin) {
	account, ok := l.accounts.Verify(pl.name, pl.password)
	clear(pl.password)
	if ok {
		pl.account = account
		l.throttle.Succeeded(pl.key, account)
		return
	}
	next := l.throttle.Failed(pl.key, string(pl.name))
	pl.err = proto.ErrAuthFailed
	// Never the password: not even a wrong one, which is often a right
	// one for another account or a near miss.
	l.log.Info("login failed", zap.ByteString("name", pl.name), zap.String("remote", pl.ip),
		zap.Duration("next_delay", next))
}

// loginChecked hands the result to the connection's loop, which picks it
// up in onTraffic. Wake is safe from any goroutine, and does nothing if
// the connection has closed meanwhile.
func (cn *conn) loginChecked(pl *pendingLogin) {
	pl.done.Store(true)
	_ = cn.c.Wake(nil)
}

// finishLogin runs on the loop from onTraffic while a login is pending.
// It reports false while the check is still running; then the input
// keeps waiting. Once it reports true, onTraffic lifts the pause and
// reads the input that waited.
func (cn *conn) finishLogin() bool {
	pl := cn.login
	if !pl.done.Load() {
		return false
	}
	cn.login = nil
	if cn.closing {
		return true
	}
	if pl.err != nil {
		cn.tell(pl.err)
		return true
	}
	cn.loginAs(pl.account)
	return true
}

// loginAs logs the checked account in: at once if it is offline; if it is
// online, by replacing the other session when takeover is on, or not at
// all (already_online).
func (cn *conn) loginAs(account string) {
	l := cn.srv.logins
	var (
		s        *hub.Session
		replaced hub.Outbox
		err      *proto.Error
	)
	if l.takeover.Load() {
		s, replaced, err = cn.srv.hub.LoginReplacing([]byte(account), cn.out)
	} else {
		s, err = cn.srv.hub.Login([]byte(account), cn.out)
		if err == proto.ErrNameTaken {
			// Every name online is an account's here: the account is in use.
			err = proto.ErrAlreadyOnline
		}
	}
	if err != nil {
		l.log.Info("login refused", zap.String("name", account), zap.String("remote", cn.ip), zap.String("code", err.Code))
		cn.tell(err)
		return
	}
	cn.sess = s
	l.log.Info("login", zap.String("name", account), zap.String("remote", cn.ip), zap.Bool("replaced", replaced != nil))
}

// replacedElsewhere closes a connection whose account has logged in on
// another one (the hub detached its outbox). Its session is already
// closed (and its partner told "replaced"); the user is told why, then
// bye, so a client knows not to log in again by itself. Safe from any
// goroutine.
func (cn *conn) replacedElsewhere() {
	_ = cn.loop.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		if cn.closed || cn.closing {
			return nil
		}
		cn.closeReason = proto.ReasonReplaced
		cn.out.Deliver(&proto.Event{Kind: proto.EvNotice, Text: []byte("your account logged in on another connection; this one is closed")})
		cn.out.Deliver(&proto.Event{Kind: proto.EvBye})
		if cn.stage == stageWS {
			cn.out.DeliverRaw(wsframe.AppendClose(nil, 1000, "logged in elsewhere"))
		}
		cn.closeWhenFlushed()
		return nil
	}))
}
