package engine

// heldInputMax bounds the input a paused connection may hold in the
// daemon. Pausing takes the socket out of the read set, but gnet puts it
// back each time it writes to that connection with output left over, and
// again when that output drains; each time, one read (up to 64 KiB) is
// buffered before the connection is paused again. A paused sender whose
// own output keeps starting and draining (its partner talking to it
// while not reading) could otherwise pile up its input read after read.
//
// Past this bound the held input is acted on after all, and the sender
// pauses only once its reader holds limits.outbound_max, which is where
// the reader is cut off as a slow reader. Nothing is lost that would not
// be: the reader was not reading. Ordinary back-pressure holds at most a
// read or two, far below this.
const heldInputMax = 1 << 20

// heldInputOverflows reports whether this connection's unread input has
// passed heldInputMax.
func (cn *conn) heldInputOverflows() bool {
	return cn.c.InboundBuffered() > heldInputMax
}
