package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
	// Workers and Queue size the pool that checks passwords off the
	// event loops; zero takes auth.NewPool's defaults.
	Workers, Queue int
}

// logins checks accounts-mode logins. A password check is a bcrypt
// comparison, milliseconds of CPU, so it never runs on an event loop:
// the check runs on the pool while the connection reads no further
// input, and the result comes back to the connection's own loop
// (conn.finishLogin), which then goes on with the input that waited.
// A login the full pool refuses is answered at once, without pausing.
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
		pool:     auth.NewPool(opts.Auth.Workers, opts.Auth.Queue),
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
	pl := &pendingLogin{name: bytes.Clone(cmd.Name), password: bytes.Clone(cmd.Password), ip: cn.ip}
	delay := l.throttle.Delay(cn.ip, string(pl.name))
	if delay <= 0 {
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
		"too many failed logins from your address or for that name: this one is checked in %s", delay.Round(time.Second/10))})
	time.AfterFunc(delay, func() {
		if !l.submit(cn, pl) {
			pl.err = proto.ErrUnavailable
			cn.loginChecked(pl)
		}
	})
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
	ok := l.pool.Submit(func() {
		l.verify(pl)
		cn.loginChecked(pl)
	})
	if !ok {
		clear(pl.password)
		l.refused.Add(1)
		now, last := time.Now().UnixNano(), l.refusedLogged.Load()
		if now-last >= int64(time.Second) && l.refusedLogged.CompareAndSwap(last, now) {
			l.log.Warn("logins refused: the password check queue is full",
				zap.Int64("refused", l.refused.Swap(0)), zap.String("last_remote", pl.ip))
		}
	}
	return ok
}

// verify compares the password and records the outcome. It runs on the
// pool. Wrong name and wrong password are one answer, auth_failed, so
// the client cannot tell which names exist.
func (l *logins) verify(pl *pendingLogin) {
	account, ok := l.accounts.Verify(pl.name, pl.password)
	clear(pl.password)
	if ok {
		pl.account = account
		l.throttle.Succeeded(account)
		return
	}
	next := l.throttle.Failed(pl.ip, string(pl.name))
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
