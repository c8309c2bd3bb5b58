package engine

import "duet/proto/line"

// The line port's answers to what is not a line of the protocol: telnet
// commands, which the codec answers (proto/line/telnet.go), and HTTP
// requests, which a web page can make to any port and which the codec
// recognizes.

// A line connection needs a framer only while it holds part of a line or
// a telnet session; between reads most hold neither (a client sends
// whole lines), and an idle connection would otherwise keep 80 bytes for
// nothing. A connection takes its loop's spare framer, or a new one, for
// each read (lendFramer), and gives it back when the read leaves it at
// rest (restFramer); one that holds something keeps it. So a loop has a
// spare or two, and each idle connection none.

// lineIn is a line connection's reader: its framer, and for a telnet
// client the watch on what a Ctrl-C may hide from it (timingmark.go),
// which keeps the reader with the connection for good, as the telnet
// session in its framer does.
type lineIn struct {
	line.Framer
	marks *markWatch // nil until the client's first timing mark
}

// lendFramer gives the connection a framer for a read, if it has none.
// Its Max is limits.max_line as it is now, for a framer the connection
// kept too (a telnet client's keeps its session for good): a reload
// applies to every connection.
func (cn *conn) lendFramer() {
	if cn.line == nil {
		ls := cn.loop
		if n := len(ls.framers); n > 0 {
			cn.line = ls.framers[n-1]
			ls.framers[n-1] = nil
			ls.framers = ls.framers[:n-1]
		} else {
			cn.line = new(lineIn)
		}
	}
	cn.line.Max = cn.loop.srv.lim().MaxLine
}

// restFramer gives the connection's framer back to its loop once a read
// leaves it at rest.
func (cn *conn) restFramer() {
	if cn.line == nil || cn.line.marks != nil || !cn.line.AtRest() {
		return
	}
	*cn.line = lineIn{}
	cn.loop.framers = append(cn.loop.framers, cn.line)
	cn.line = nil
}

// answerTelnet sends the telnet answers the framer owes the client, as
// they are: after the answers to everything the client sent before the
// commands (RFC 860's timing mark asks for that), so a run of messages
// in progress is relayed first. After a timing mark's answer comes the
// notice of what the client may have thrown away (timingmark.go).
func (cn *conn) answerTelnet() {
	mark, byKey := cn.line.TimingMark(), cn.line.TimingMarkByKey()
	r := cn.line.Reply()
	if len(r) == 0 {
		return
	}
	cn.sayRun()
	cn.out.DeliverRaw(r)
	if mark {
		cn.timingMark(byKey)
	}
	// A client that sends commands and never reads the answers is paused
	// like any other client that does not read its replies.
	cn.backPressure(cn.out)
}

// refuseHTTP closes a connection that sent an HTTP request to the line
// port before logging in. A web page can make a browser send one to any
// port (fetch, a form); were its lines read as commands, the request's
// body would log in and connect from the visitor's address. Nothing of it
// is acted on: the connection is told why, and where the web port is,
// and closed.
func (cn *conn) refuseHTTP() {
	cn.refuseAs(endHTTPOnLine, endDetail{notice: cn.loop.srv.linePortWord(cn.addr.fromProxy)})
}
