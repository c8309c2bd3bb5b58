package engine

import (
	"bytes"

	"go.uber.org/zap"

	"duet/engine/hub"
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
//
// On a cluster node the resume asks the directory where the session is,
// and may fetch it from another node: round trips to Redis, and to that
// node, which the event loop must not wait on (every connection of the
// loop would wait with it). So it is made off the loop, as the other
// commands that need the directory are (directory.go), and answered
// once it is done (resumed); it returns nil meanwhile.
func (cn *conn) checkResume(key []byte, last uint64, throttled bool) *proto.Error {
	h, hasLast := cn.loop.srv.hub, cn.stage == stageWS
	if h.Clustered() {
		key = bytes.Clone(key) // it aliases the read buffer, which moves on
		cn.callDirectory(&directoryCall{op: proto.OpResume, throttled: throttled}, func(call *directoryCall) (*hub.Session, *proto.Error) {
			res, err := h.Resume(key, last, hasLast, cn.out)
			call.resumed = res
			return res.Session, err
		})
		return nil
	}
	res, err := h.Resume(key, last, hasLast, cn.out)
	return cn.resumed(res, err, throttled)
}

// resumed takes the outcome of a resume: the session this connection
// carries from now on, or the error to tell.
func (cn *conn) resumed(res hub.Resumed, err *proto.Error, throttled bool) *proto.Error {
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

// heardAfterResume is called as the client says anything: once it has
// since its session was resumed here, it is taken to have the resume's
// answer, and the key the resume used stops working (hub, "The key a
// resume used"). Its commands are read in order, so one sent after it
// read the answer comes after the resume; one it sent before, in the
// same breath, retires the key a little early, as before this rule.
func (cn *conn) heardAfterResume() {
	if cn.sess != nil && cn.sess.KeyUnsure() {
		cn.sess.KeyReceived()
	}
}

// repeatKey tells a line client that types /resume on a connection
// logged in already who it is and its resume key, after the error that
// refuses it: a telnet user whose Ctrl-C during a resume's replay threw
// away the answer's last lines, the new key among them, types the
// resume again, and has no other way to see the key. The connection's
// own key is shown to the connection it was told on.
func (cn *conn) repeatKey() {
	window := cn.loop.srv.resume.Load().Window
	key := cn.resumeKey.Load()
	if key == nil || window <= 0 {
		return
	}
	cn.out.Deliver(&proto.Event{Kind: proto.EvWelcome, Name: cn.sess.Name(), Token: cn.sess.Token(), ResumeKey: key.String(), Window: window})
}
