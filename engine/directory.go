package engine

import (
	"sync"

	"duet/engine/hub"
	"duet/proto"
)

// In cluster mode the commands that change who is logged in or paired
// (login, connect, leave, newtoken, resume) wait on the cluster
// directory, a network round trip. They are carried out by a directory
// worker (callDirectory), not on the event loop: the connection's input is held meanwhile
// (holdDirectory), so its commands still run one at a time and in order,
// and it is read again on its loop once the answer is in. Everything
// else, the relay included, stays on the loop.

// offLoop starts cmd off the loop when it needs the directory, and
// reports whether it did.
func (cn *conn) offLoop(cmd *proto.Command) bool {
	h := cn.loop.srv.hub
	if !h.Clustered() {
		return false
	}
	sess := cn.sess
	switch cmd.Op {
	case proto.OpLogin:
		if sess != nil || (len(cmd.Password) > 0 && cn.loop.srv.opts.AuthMode == "open") {
			return false // answered on the loop without the directory
		}
		if cn.loop.srv.logins != nil {
			// Accounts mode: the password is checked first
			// (startLogin), and the login goes to the directory once
			// it has proved the account (loginAs).
			return false
		}
	case proto.OpConnect, proto.OpLeave, proto.OpNewToken:
		if sess == nil {
			return false
		}
	default:
		return false
	}
	// The command's bytes alias the read buffer, which moves on.
	op := cmd.Op
	name := append([]byte(nil), cmd.Name...)
	token := append([]byte(nil), cmd.Token...)
	cn.callDirectory(&directoryCall{op: op}, func(*directoryCall) (s *hub.Session, err *proto.Error) {
		switch op {
		case proto.OpLogin:
			s, err = h.Login(name, cn.out)
		case proto.OpConnect:
			err = sess.Connect(token)
		case proto.OpLeave:
			err = sess.Leave()
		case proto.OpNewToken:
			err = sess.NewToken()
		}
		return s, err
	})
	return true
}

// callDirectory holds the connection's input on call and has work, which
// waits on the directory, done by one of the server's directory workers;
// its answer goes to call, which wakes the connection (finish).
func (cn *conn) callDirectory(call *directoryCall, work func(*directoryCall) (*hub.Session, *proto.Error)) {
	cn.hold(holdDirectory, call)
	cn.loop.srv.directory.do(func() {
		s, err := work(call)
		call.finish(cn, s, err)
	})
}

// directoryWorkers bounds the goroutines that wait on the directory for
// commands: a login storm queues its calls instead of starting a
// goroutine (a stack of some KiB) for each. Each connection has one call
// out at most, so its commands keep their order. The bound is well
// above the connections go-redis opens (ten per core), so that a slow
// call (a resume fetched from a node that answers late, up to a few
// seconds) does not hold up the quick ones behind it, and well below a
// storm's thousands.
const directoryWorkers = 1024

// workQueue runs the functions it is given in order of arrival, on at
// most max goroutines at once, each started when there is work and
// ending when there is none.
type workQueue struct {
	mu      sync.Mutex
	queue   []func()
	running int
	max     int
}

// do queues f, and starts a worker if fewer than max run.
func (q *workQueue) do(f func()) {
	q.mu.Lock()
	q.queue = append(q.queue, f)
	start := q.running < q.max
	if start {
		q.running++
	}
	q.mu.Unlock()
	if start {
		go q.work()
	}
}

func (q *workQueue) work() {
	for {
		q.mu.Lock()
		if len(q.queue) == 0 {
			q.running--
			q.queue = nil // the backing array a storm grew goes too
			q.mu.Unlock()
			return
		}
		f := q.queue[0]
		q.queue[0] = nil
		q.queue = q.queue[1:]
		q.mu.Unlock()
		f()
	}
}

// directoryCall is a command out with the cluster directory. Its
// goroutine fills in the answer and wakes the connection, whose release
// takes it up on the loop; if the connection closed meanwhile, a session
// the command made is ended instead, as the connection's ending says
// (abandonHold), whichever of the two comes second doing it.
type directoryCall struct {
	mu   sync.Mutex
	done bool
	s    *hub.Session // a login's new session, or a resume's
	err  *proto.Error
	gone bool               // the connection closed
	end  func(*hub.Session) // ends s, once the connection is gone

	// op is the command; a resume's call also has how it went, and
	// whether it was held by the failed-connect throttle (checkResume);
	// an accounts-mode login's, the account its password proved.
	op        proto.Op
	resumed   hub.Resumed
	throttled bool
	account   string
	replaced  bool // the account's login replaced a connected session
}

// finish records the answer. It runs on the call's goroutine.
func (dc *directoryCall) finish(cn *conn, s *hub.Session, err *proto.Error) {
	dc.mu.Lock()
	dc.done, dc.s, dc.err = true, s, err
	gone, end := dc.gone, dc.end
	dc.mu.Unlock()
	if !gone {
		cn.Wake()
		return
	}
	if s != nil {
		end(s)
	}
}

// result reports whether the answer is in; once it is, the call's
// fields hold it, and are the loop's to read.
func (dc *directoryCall) result() bool {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	return dc.done
}

// abandon runs on the loop as the connection closes: a session the
// command has made already is ended now by end, one it makes later when
// it does.
func (dc *directoryCall) abandon(end func(*hub.Session)) {
	dc.mu.Lock()
	dc.gone, dc.end = true, end
	s := dc.s
	dc.s = nil
	dc.mu.Unlock()
	if s != nil {
		end(s)
	}
}

// answered takes the directory's answer, when the hold is released
// (release): a login's session, or the error to tell; a resume's session,
// or its error.
func (cn *conn) answered(dc *directoryCall) {
	switch {
	case dc.op == proto.OpResume:
		cn.answer(proto.OpResume, 0, cn.resumed(dc.resumed, dc.err, dc.throttled))
		return
	case dc.account != "":
		cn.accountLoggedIn(dc.account, dc.s, dc.replaced, dc.err)
		return
	}
	if dc.s != nil {
		cn.sess = dc.s
		cn.logLogin()
	}
	if dc.err != nil {
		cn.tell(dc.err)
	}
}
