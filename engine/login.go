package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"duet/engine/auth"
	"duet/engine/hub"
	"duet/proto"
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

// newLogins returns the login checker of accounts mode, or nil in open
// mode.
func newLogins(opts Options, log *zap.Logger) (*auth.Logins, error) {
	if opts.AuthMode != "accounts" {
		return nil, nil
	}
	if opts.Auth.Accounts == nil {
		return nil, errors.New("engine: accounts mode without accounts")
	}
	return auth.NewLogins(opts.Auth.Accounts, opts.Auth.Throttle, opts.Auth.Pool, log), nil
}

// SetTakeover turns takeover on or off for logins from now on (config
// reload). It does nothing in open mode.
func (s *Server) SetTakeover(on bool) {
	s.takeover.Store(on && s.logins != nil)
}

// startLogin begins an accounts-mode login: the throttle gives it its
// turn, the password is compared off the loop (auth.Logins), and the
// connection's input waits for the answer, which comes back through
// onTraffic (release, loggedIn). It runs on the loop.
func (cn *conn) startLogin(cmd *proto.Command) {
	l := cn.loop.srv.logins
	if !proto.ValidName(cmd.Name) {
		cn.tell(proto.ErrBadName)
		return
	}
	if len(cmd.Password) == 0 {
		// Nothing to check, and nothing to learn from the answer but
		// that this server takes passwords, which its greeting says.
		cn.tell(proto.ErrNoPassword)
		return
	}
	key, ip := cn.sourceKey(), cn.addr.text()
	adm := l.Admit(cmd.Name, ip, key, cn.id)
	if adm.Refused {
		// Refused unchecked: the attempts ahead of it from this address
		// or for this name already fill the queue.
		retry := (adm.RetryAfter + time.Second - 1).Truncate(time.Second) // whole seconds, rounded up
		cn.out.Deliver(&proto.Event{Kind: proto.EvNotice, Text: fmt.Appendf(nil,
			"too many failed logins from your address or for that name: try again in %s", retry)})
		cn.loop.srv.metrics.Error(proto.ErrTooManyAttempts.Code)
		cn.out.Deliver(&proto.Event{Kind: proto.EvError, Err: proto.ErrTooManyAttempts, RetryAfter: retry})
		return
	}
	lg := l.Start(cmd.Name, cmd.Password, ip, key, cn.id, adm.Wait, cn.Wake)
	if lg == nil {
		// Answered at once: under a flood this is the common case, and it
		// costs the loop no pause and no wake-up.
		cn.tell(proto.ErrUnavailable)
		return
	}
	// The rest of the input waits for the answer: a connect or a message
	// right behind the login must see the session it creates.
	cn.hold(holdLogin, lg)
	if adm.Wait > 0 {
		cn.out.Deliver(&proto.Event{Kind: proto.EvNotice, Text: fmt.Appendf(nil,
			"too many failed logins from your address or for that name: this one is checked in %s", adm.Wait.Round(time.Second/10))})
	}
}

// loggedIn takes the answer to an accounts-mode login, when its hold is
// released (release): the account, or the error to tell.
func (cn *conn) loggedIn(account string, err *proto.Error) {
	switch {
	case cn.closing != endNone:
	case err != nil:
		cn.tell(err)
	default:
		cn.loginAs(account)
	}
}

// loginAs logs the checked account in: at once if it is offline; if it is
// online, by replacing the other session when takeover is on, or not at
// all (already_online). A session of the account that is away (its
// connection dropped, and it waits for a resume) is replaced either way:
// the password proves as much as the resume key, and a user who lost
// the key must not be locked out for resume.window.
//
// On a node of a cluster the directory, a network round trip away, has
// the last word on the name: the login waits for it off the loop, as an
// open-mode login does (offLoop), and a session of the account on
// another node is that node's to log out (hub.Mover.Evict); one parked
// between nodes by a drain is ended where it is parked.
func (cn *conn) loginAs(account string) {
	if cn.loop.srv.hub.Clustered() {
		cn.callDirectory(&directoryCall{op: proto.OpLogin, account: account}, func(call *directoryCall) (*hub.Session, *proto.Error) {
			s, replaced, err := cn.loginReplacing(account)
			call.replaced = replaced
			return s, err
		})
		return
	}
	s, replaced, err := cn.loginReplacing(account)
	cn.accountLoggedIn(account, s, replaced, err)
}

// loginReplacing logs account in, replacing its session as
// auth.takeover says. It may wait on the directory.
func (cn *conn) loginReplacing(account string) (s *hub.Session, replaced bool, err *proto.Error) {
	h := cn.loop.srv.hub
	if cn.loop.srv.takeover.Load() {
		var old hub.Outbox
		s, old, err = h.LoginReplacing([]byte(account), cn.out)
		replaced = old != nil
	} else {
		s, err = h.LoginReplacingAway([]byte(account), cn.out)
	}
	if err != nil && err.Code == proto.ErrNameTaken.Code {
		// Every name logged in is an account's: the account is in use
		// (with takeover, its session elsewhere did not let go in time:
		// a node of a cluster that stalled). No other name would do.
		err = proto.ErrAlreadyOnline
	}
	return s, replaced, err
}

// accountLoggedIn takes the hub's answer to the login of account, on
// the loop: the session s, or the error to tell.
func (cn *conn) accountLoggedIn(account string, s *hub.Session, replaced bool, err *proto.Error) {
	if err != nil {
		cn.logger().Info("login refused", zap.String("name", account), zap.String("code", err.Code))
		cn.tell(err)
		return
	}
	cn.sess = s
	cn.logger().Info("login", zap.String("name", account), zap.Bool("replaced", replaced))
	cn.logLogin()
}

// evicted closes a connection whose session the hub took away while it
// was open (hub.Queue.Evict): its account logged in on another connection
// (the session is closed already, and its partner told "replaced"), or
// its session was resumed on another connection (which carries it now;
// its partner is told nothing). The user is told why, then bye, so a
// client knows not to log in or resume again by itself. Safe from any
// goroutine.
func (cn *conn) evicted(why hub.Eviction) {
	e := endReplaced
	if why == hub.EvictResumed {
		e = endResumed
	}
	_ = cn.loop.execute(context.Background(), func() {
		if cn.closed {
			return
		}
		if cn.closing != endNone {
			if e == endResumed {
				// An ending that waits to end the session with the
				// count of what it never wrote (endDraining) must not
				// end it now that another connection carries it.
				cn.sess = nil
			}
			return
		}
		// What the connection read after its session was taken, and
		// could not deliver, is told with the eviction: it was not
		// told before (retiredAnswer). A say that joined a run of
		// not_paired refusals going on is counted in the run instead,
		// whose count the goodbye tells before the notice (endAs):
		// none is in both.
		var d endDetail
		if g := cn.guard; g != nil {
			d.undelivered = g.retired
		}
		cn.endAs(e, d)
	})
}
