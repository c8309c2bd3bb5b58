package engine

import (
	"go.uber.org/zap"

	"duet/proto"
)

// Session resume, the engine's part (docs/RESUME.md). A connection whose
// first command is a resume takes back a session that is away, or that
// another connection still carries (a zombie the server has not yet
// found dead): the hub moves the session to this connection, hands it
// the answer and the messages to replay (Hub.Resume), and evicts the
// zombie's queue, which closes that connection (evicted, ending
// resumed). Which endings send a session away instead of ending it is
// the endings table's session column (ending.go).

// startResume carries out a resume command of a connection that carries
// no session yet, under the failed-connect throttle: a resume key is
// guessed like a token. It returns the error to tell, or nil when the
// resume was done or is held until the throttle's turn (connectHeld).
func (cn *conn) startResume(cmd *proto.Command) *proto.Error {
	wait, err := cn.throttle()
	switch {
	case err != nil:
		return err
	case wait == 0:
		return cn.checkResume(cmd.Key, cmd.Last, false)
	}
	cn.holdFor(wait, &heldConnect{op: proto.OpResume, arg: cmd.Key, last: cmd.Last})
	return nil
}

// checkResume resumes the session whose key is key on this connection.
// A JSON client names the last message it received (last, 0 for none),
// and is replayed exactly those after it; a line-protocol client cannot,
// and is replayed what it may have missed (Hub.Resume says which).
//
// A well-formed key that no session waits for counts as a failed
// connect; a malformed one, like a malformed token, can be nobody's key
// and guesses nothing. Past the throttle's limit (throttled), a wrong key
// is answered throttled.
func (cn *conn) checkResume(key []byte, last uint64, throttled bool) *proto.Error {
	res, err := cn.loop.srv.hub.Resume(key, last, cn.stage == stageWS, cn.out)
	if err != nil {
		if err != proto.ErrUnknownResumeKey {
			return err
		}
		// Not a character of the key is logged: a near miss is most of
		// the real key.
		cn.failed("resume failed", zap.String("error", err.Code))
		if throttled {
			return proto.ErrThrottled
		}
		return err
	}
	cn.sess = res.Session
	if cn.debugEnabled() {
		cn.logger().Debug("session resumed", zap.String("user", res.Session.Name()),
			zap.Int("replayed", res.Replayed), zap.Int("missed", res.Missed), zap.Bool("taken_over", res.Zombie != nil))
	}
	return nil
}
