package engine

// The line port's answers to telnet commands, which the codec makes
// (proto/line/telnet.go) and the engine only sends.

// answerTelnet sends the telnet answers the framer owes the client, as
// they are: after the answers to everything the client sent before the
// commands (RFC 860's timing mark asks for that), so a run of messages
// in progress is relayed first.
func (cn *conn) answerTelnet() {
	r := cn.framer.Reply()
	if len(r) == 0 {
		return
	}
	cn.sayRun()
	cn.out.deliverRaw(r)
	// A client that sends commands and never reads the answers is paused
	// like any other client that does not read its replies.
	cn.backPressure(&cn.out)
}
