package engine

// The line port's answers to what is not a line of the protocol: telnet
// commands, which the codec answers (proto/line/telnet.go), and HTTP
// requests, which a web page can make to any port and which the codec
// recognizes.

// answerTelnet sends the telnet answers the framer owes the client, as
// they are: after the answers to everything the client sent before the
// commands (RFC 860's timing mark asks for that), so a run of messages
// in progress is relayed first.
func (cn *conn) answerTelnet() {
	r := cn.line.Reply()
	if len(r) == 0 {
		return
	}
	cn.sayRun()
	cn.out.DeliverRaw(r)
	// A client that sends commands and never reads the answers is paused
	// like any other client that does not read its replies.
	cn.backPressure(cn.out)
}

// refuseHTTP closes a connection that sent an HTTP request to the line
// port before logging in. A web page can make a browser send one to any
// port (fetch, a form); were its lines read as commands, the request's
// body would log in and connect from the visitor's address. Nothing of it
// is acted on: the connection is told why, and closed.
func (cn *conn) refuseHTTP() {
	cn.srv.logRefusal(endHTTPOnLine, "connection refused: an HTTP request on the line port", cn.addr.ip)
	cn.end(endHTTPOnLine)
}
