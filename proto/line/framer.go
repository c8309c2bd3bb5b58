// Package line is duet's line protocol, spoken by netcat and telnet over
// raw TCP: one command or message per line from the client, and one or
// more human-readable lines per event from the server.
//
// The package is pure: it turns bytes into proto.Commands and
// proto.Events into bytes, and owns no sockets, goroutines or global
// state. The relay path (framing and decoding a message line, encoding a
// message event into a caller's buffer) does not allocate.
package line

import (
	"bytes"

	"duet/proto"
)

// DefaultMaxLine is the line limit a Framer uses when its Max is not set.
// It matches the default of the limits.max_line setting.
const DefaultMaxLine = 16 << 10

// Telnet command bytes (RFC 854). A telnet client may send these in the
// middle of the data stream; netcat never does.
const (
	telnetIAC  = 255 // "interpret as command": the next byte is a command
	telnetDONT = 254 // DONT, DO, WONT and WILL take one option byte
	telnetWILL = 251
	telnetSB   = 250 // subnegotiation begins; it runs to IAC SE
	telnetSE   = 240 // subnegotiation ends
)

// telnetState is where the telnet parser is in the byte stream.
type telnetState uint8

const (
	telnetData       telnetState = iota // ordinary line data
	telnetCommand                       // after IAC
	telnetOption                        // after IAC WILL, WONT, DO or DONT: the option byte comes next
	telnetSub                           // inside IAC SB ... IAC SE
	telnetSubCommand                    // after an IAC inside a subnegotiation
)

// step moves the telnet parser over c and reports whether c is line data
// to keep. In telnetData, a '\n' is the end of the line; callers check for
// it before calling step.
func (s telnetState) step(c byte) (telnetState, bool) {
	switch s {
	case telnetData:
		if c == telnetIAC {
			return telnetCommand, false
		}
		return telnetData, true
	case telnetCommand:
		switch {
		case c == telnetIAC:
			// IAC IAC is a literal 255 byte. It is never valid UTF-8, so
			// Decode rejects the line, but framing must not lose track.
			return telnetData, true
		case c >= telnetWILL && c <= telnetDONT:
			return telnetOption, false
		case c == telnetSB:
			return telnetSub, false
		}
		// NOP, AYT, IP, GA and the rest are two bytes long.
		return telnetData, false
	case telnetOption:
		return telnetData, false
	case telnetSub:
		if c == telnetIAC {
			return telnetSubCommand, false
		}
		return telnetSub, false
	case telnetSubCommand:
		if c == telnetSE {
			return telnetData, false
		}
		// IAC IAC is an escaped 255 inside the subnegotiation's data; any
		// other byte after IAC is malformed, and the subnegotiation goes
		// on until a proper IAC SE.
		return telnetSub, false
	}
	return telnetData, false
}

// scanLineEnd looks for the '\n' that ends a line in buf[from:limit],
// starting in state st. It returns the index of that '\n', or -1 and the
// state at limit. A '\n' inside a telnet command (an option byte, or
// subnegotiation data such as a window size of 10) does not end a line.
func scanLineEnd(buf []byte, from, limit int, st telnetState) (int, telnetState) {
	i := from
	for i < limit {
		if st != telnetData {
			st, _ = st.step(buf[i])
			i++
			continue
		}
		// Fast path for plain data: find the next '\n', and the first IAC
		// before it, with two vectorized searches instead of a byte loop.
		rest := buf[i:limit]
		nl := bytes.IndexByte(rest, '\n')
		data := rest
		if nl >= 0 {
			data = rest[:nl]
		}
		iac := bytes.IndexByte(data, telnetIAC)
		if iac < 0 {
			if nl >= 0 {
				return i + nl, telnetData
			}
			return -1, telnetData
		}
		i += iac + 1
		st = telnetCommand
	}
	return -1, st
}

// Framer splits a TCP byte stream into lines. Max is the longest line in
// bytes, counted as received: its terminator and any telnet commands
// included. Zero means DefaultMaxLine. A Framer belongs to one connection.
type Framer struct {
	Max int

	// skipping is set while the rest of an over-long line is dropped.
	skipping bool
	// scanned is how many leading bytes of the caller's buffer have been
	// searched for a line end without finding one, and state is the
	// telnet parser's state there. Remembering it keeps a line that
	// arrives a byte at a time (telnet in character mode) linear in cost.
	// While skipping, state is the parser's state at the end of the bytes
	// dropped so far.
	scanned int
	state   telnetState
}

func (f *Framer) maxLine() int {
	if f.Max <= 0 {
		return DefaultMaxLine
	}
	return f.Max
}

// Next returns the next complete line in buf, with its terminator ("\n"
// or "\r\n") removed, stray '\r' (and telnet's "\r\x00") removed, and
// telnet IAC sequences removed — done IN PLACE in buf (it may modify buf).
// n is how many bytes of buf were consumed; the caller discards them.
//
// n == 0 && err == nil: no complete line yet; the caller waits for more
// bytes, then calls Next again with the same unconsumed bytes followed by
// the new ones. A buf that ends inside a telnet command also waits.
//
// If no newline is found within Max bytes, Next returns proto.ErrTooLong
// once, with n the bytes dropped; later calls then silently drop the rest
// of that over-long line (n > 0, line == nil, err == nil) up to and
// including its '\n'. A caller's buffer of Max bytes is therefore always
// enough to make progress.
//
// The returned line aliases buf and is valid until buf is reused.
func (f *Framer) Next(buf []byte) (line []byte, n int, err *proto.Error) {
	if f.skipping {
		return nil, f.skip(buf, 0), nil
	}
	maxLine := f.maxLine()
	if f.scanned > len(buf) {
		// The caller did not hand back the bytes it was given; start over
		// rather than trust a stale position.
		f.scanned, f.state = 0, telnetData
	}
	limit := min(len(buf), maxLine)
	end, st := scanLineEnd(buf, f.scanned, limit, f.state)
	if end >= 0 {
		f.scanned, f.state = 0, telnetData
		return clean(buf[:end]), end + 1, nil
	}
	if len(buf) < maxLine {
		f.scanned, f.state = limit, st
		return nil, 0, nil
	}
	// Max bytes and no line end: report the line once, then drop the rest
	// of it. The parser restarts in plain data at the cut, so a telnet
	// subnegotiation that never ends costs at most one line's worth of
	// input instead of swallowing the connection.
	f.scanned, f.state = 0, telnetData
	f.skipping = true
	return nil, f.skip(buf, maxLine), proto.ErrTooLong
}

// skip drops buf[from:] up to and including the '\n' that ends the
// over-long line being skipped, and returns the bytes consumed from the
// start of buf.
func (f *Framer) skip(buf []byte, from int) int {
	end, st := scanLineEnd(buf, from, len(buf), f.state)
	if end >= 0 {
		f.skipping, f.state = false, telnetData
		return end + 1
	}
	f.state = st
	return len(buf)
}

// clean removes telnet commands, every '\r', and the NUL telnet sends
// after a bare '\r', in place. raw is one line without its '\n', starting
// in plain data.
func clean(raw []byte) []byte {
	// Most lines need nothing done, or only the '\r' of a CRLF dropped:
	// check for that with vectorized searches before walking bytes.
	end := len(raw)
	if end > 0 && raw[end-1] == '\r' {
		end--
	}
	if plainPrefix(raw[:end]) == end {
		return raw[:end:end]
	}
	if bytes.IndexByte(raw[:end], '\r') < 0 && bytes.IndexByte(raw[:end], telnetIAC) < 0 {
		return raw[:end:end]
	}
	st := telnetData
	afterCR := false
	w := 0
	for _, c := range raw {
		var keep bool
		st, keep = st.step(c)
		if !keep {
			continue
		}
		switch {
		case c == '\r':
			afterCR = true
			continue
		case c == 0 && afterCR:
			afterCR = false
			continue
		}
		afterCR = false
		raw[w] = c
		w++
	}
	return raw[:w:w]
}
