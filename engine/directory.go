package engine

import (
	"context"

	"github.com/panjf2000/gnet/v2"

	"duet/engine/hub"
	"duet/proto"
)

// In cluster mode the commands that change who is logged in or paired
// (login, connect, leave, newtoken) wait on the cluster directory, a
// network round trip. They are carried out on a goroutine of their own,
// not on the event loop: the connection's input is paused meanwhile, so
// its commands still run one at a time and in order, and it resumes on
// its loop once the answer is in. Everything else, the relay included,
// stays on the loop.

// offLoop starts cmd off the loop when it needs the directory, and
// reports whether it did.
func (cn *conn) offLoop(cmd *proto.Command) bool {
	h := cn.srv.hub
	if !h.Clustered() {
		return false
	}
	sess := cn.sess
	switch cmd.Op {
	case proto.OpLogin:
		if sess != nil || (len(cmd.Password) > 0 && cn.srv.opts.AuthMode == "open") {
			return false // answered on the loop without the directory
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
	cn.awaiting = true
	cn.paused = true
	cn.disarmRead()
	go func() {
		var (
			s   *hub.Session
			err *proto.Error
		)
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
		if err != nil {
			cn.tell(err) // Deliver is safe from any goroutine
		}
		resume := gnet.RunnableFunc(func(context.Context) error {
			cn.resume(s)
			return nil
		})
		if cn.loop.el.Execute(context.Background(), resume) != nil && s != nil {
			// The loop is gone (the engine stopped); so is the connection.
			s.Close(proto.ReasonShutdown, 0)
		}
	}()
	return true
}

// resume runs on the loop when the directory has answered: it takes up
// the connection's input again, or, if the connection closed meanwhile,
// logs out a session that only now exists.
func (cn *conn) resume(s *hub.Session) {
	cn.awaiting = false
	if cn.closed {
		if s != nil {
			s.Close(endings[cn.closing].partnerReason(), 0)
		}
		return
	}
	if s != nil {
		cn.sess = s
	}
	cn.paused = false
	cn.readInput()
	cn.flush()
	if !cn.paused {
		cn.armRead()
	}
	if cn.closing != endNone && !cn.out.Pending() && cn.c.OutboundBuffered() == 0 {
		_ = cn.c.Close()
	}
}
