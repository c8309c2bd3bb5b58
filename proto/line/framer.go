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
	"unsafe"

	"duet/proto"
)

// DefaultMaxLine is the line limit a Framer uses when its Max is not set.
// It matches the default of the limits.max_line setting.
const DefaultMaxLine = 16 << 10

// telnetState is where the telnet parser is in the byte stream.
type telnetState uint8

const (
	telnetData       telnetState = iota // ordinary line data
	telnetCommand                       // after IAC
	telnetWill                          // after IAC WILL: the option byte comes next
	telnetWont                          // after IAC WONT
	telnetDo                            // after IAC DO
	telnetDont                          // after IAC DONT
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
		case c < telnetEOF:
			// No command: a client that is not telnet (netcat) sent a
			// 255 of its own text (Latin-1 "ÿ", cp1251 "я"), which
			// telnet would have doubled. It and c are both data (clean
			// puts the 255 back), so that the line is refused as not
			// UTF-8 rather than relayed without them, and a line feed
			// after it still ends the line.
			return telnetData, true
		case c >= telnetWILL && c <= telnetDONT:
			return telnetWill + telnetState(c-telnetWILL), false
		case c == telnetSB:
			return telnetSub, false
		}
		// NOP, AYT, IP, GA and the rest are two bytes long.
		return telnetData, false
	case telnetWill, telnetWont, telnetDo, telnetDont:
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

// scan looks for the '\n' that ends a line in buf[from:limit], starting
// in state st. It returns the index of that '\n', or -1 and the state at
// limit. A '\n' inside a telnet command (an option byte, or subnegotiation
// data such as a window size of 10) does not end a line. Nor does it
// wait for one after an EOT that comes before any data of the line
// (f.begun): it returns the EOT's index, for a line of its own (keys.go).
//
// Every telnet command is seen here exactly once, as it arrives, and
// answered (telnet.go): a client that asked for a timing mark waits for
// the answer before it shows any more output, whether or not the line
// the command came in has ended yet.
func (f *Framer) scan(buf []byte, from, limit int, st telnetState) (int, telnetState) {
	i := from
	for i < limit {
		if st != telnetData {
			c := buf[i]
			if st == telnetCommand && !f.tn.offered && subCommand(c) {
				// No telnet client sends this command before it has
				// offered an option: a netcat user typed 255 and this
				// byte (Latin-1 "ÿú", cp1251 "яъ"). Made IAC IAC, it is
				// a 255 of text, so that the line is refused as not
				// UTF-8; taken for a subnegotiation, it swallowed the
				// lines after it unanswered, up to Max bytes.
				c = telnetIAC
				buf[i] = c
				f.keys = append(f.keys, i)
			}
			prev := st
			var keep bool
			st, keep = st.step(c)
			// IAC IAC is a data byte: the line has begun.
			f.begun = f.begun || keep
			f.cmdLast = !keep
			if keep && c == '\n' {
				return i, telnetData // after a 255 that began no command
			}
			if prev != telnetSub && prev != telnetSubCommand {
				if _, replaced := restoredByte(prev, c); replaced {
					if f.tn.binaryIn == optYes || keyAlone(buf, from, i, limit) {
						// In BINARY the client replaces no byte, so this
						// is a key press: make it a command clean never
						// takes for a byte, whatever comes around it
						// (keyPress).
						buf[i] = keyPress(c)
						f.keys = append(f.keys, i)
						f.tn.letter = false
					} else {
						// As clean will see it: a byte put back where
						// the data before ends inside a letter. Only
						// the wording of a notice depends on it, so the
						// last few bytes are read, not the line so far,
						// which a flood of such commands would have
						// read again and again. (A line being dropped,
						// too long, has no data here.)
						f.tn.letter = i > 0 && !f.skipping && dataEndsInsideALetter(buf[max(0, i-1-letterLookBack):i-1])
					}
				}
				f.tn.heard(prev, c)
				if prev == telnetDo && c == optTimingMark && f.tn.mark {
					f.tn.markByKey = f.tn.markByKey || !f.tn.letter
				}
				if f.skipping && prev == telnetCommand && skipEndsAt(c, f.tn.binaryIn == optYes, (i == 1 && f.skipLastData) || (i == 0 && f.skipIACFirst)) {
					return i, telnetData
				}
			}
			i++
			continue
		}
		if !f.begun {
			switch buf[i] {
			case keyEOT:
				return i, telnetData
			case telnetIAC:
			default:
				f.begun = true
			}
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
			f.cmdLast = false
			return -1, telnetData
		}
		i += iac + 1
		st = telnetCommand
	}
	return -1, st
}

// keyAlone reports whether the command at buf[i], one telnet makes of a
// byte (restoredByte), is a key press all the same, though the line so
// far ends inside a character: its IAC begins what arrived after that
// line (buf[from:limit]), and nothing but telnet commands follows it
// there. telnet writes a byte it replaces in the write that holds the
// bytes before it and, the line being sent at Enter, the rest of the
// line. The first bytes of a character arrive alone when telnet's
// escape character opens its prompt (Ctrl-], which is the second byte
// of "Н" in its low seven bits, before BINARY): telnet sends what was
// typed before it. A user who leaves the prompt and presses Ctrl-C, as
// the server's answer to a line so mangled says, means to throw that
// away. Taken for the byte 0x83, the Ctrl-C made "Ѓ" of them, sent
// with the line typed next.
//
// It is the one rule of framing that depends on how the input arrived.
// A byte telnet replaced would be taken for a Ctrl-C only if the
// network cut its line right after the character's first bytes and the
// next read held the command and nothing of the line after it: a typed
// line's write is far shorter than a segment.
//
// What came before must end in a data byte: telnet without its
// autoflush (`toggle autoflush`) sends each byte it replaced as a
// command on its own, with no timing mark after it, so a letter with
// two of them ("ッ", e3 83 83) arrives as e3 IAC IP, then IAC IP alone:
// there the line so far ends in a command.
func keyAlone(buf []byte, from, i, limit int) bool {
	if i-1 != from || !dataEndsInsideALetter(buf[:from]) {
		return false
	}
	st := telnetData
	for _, c := range buf[i+1 : limit] {
		var keep bool
		if st, keep = st.step(c); keep {
			return false
		}
	}
	return true
}

// letterLookBack is how many bytes before a command telnet makes of a
// byte are read to tell whether it stood inside a letter, for the
// wording of a notice (TimingMarkByKey): room for a letter's first
// bytes among a few commands.
const letterLookBack = 16

// dataEndsInsideALetter reports whether raw, the line so far as it
// came (starting in plain data), ends in a data byte, and its data
// bytes (telnet commands left out) end inside a UTF-8 character
// (continuationDue).
func dataEndsInsideALetter(raw []byte) bool {
	var tail [3]byte // the last data bytes, newest last
	n := 0
	st := telnetData
	last := false // the last byte was data
	for _, c := range raw {
		st, last = st.step(c)
		if last {
			copy(tail[:], tail[1:])
			tail[2] = c
			n++
		}
	}
	return last && continuationDue(tail[3-min(n, 3):])
}

// Framer splits a TCP byte stream into lines. Max is the longest line in
// bytes, counted as received: its terminator and any telnet commands
// included. Zero means DefaultMaxLine. A Framer belongs to one connection.
type Framer struct {
	Max int

	// skipping is set while the rest of an over-long line is dropped.
	// While it is (skipEndsAt): skipLastData says what the client sent
	// last ended in a data byte, not a telnet command; skipIACFirst, that
	// it was an IAC alone, after what ended in a data byte; and cmdLast,
	// that the last byte scan read where it found no line end was a
	// command's.
	skipping, skipLastData, skipIACFirst, cmdLast bool
	// scanned is how many leading bytes of the caller's buffer have been
	// searched for a line end without finding one, and state is the
	// telnet parser's state there. Remembering it keeps a line that
	// arrives a byte at a time (telnet in character mode) linear in cost.
	// While skipping, state is the parser's state at the end of the bytes
	// dropped so far.
	scanned int
	state   telnetState
	// scannedPlain says the bytes scanned so far are all plain printable
	// ASCII; it is not looked at while scanned is zero.
	scannedPlain bool
	// begun says the bytes scanned so far hold data of the line, not
	// telnet commands alone: an EOT then no longer starts the line. It
	// is set while skipping, where no line starts.
	begun bool
	// ended says the client's input has ended (End): the bytes after its
	// last '\n' are its last line.
	ended bool

	// plainAt and plainLen say where the last line Next returned lies,
	// if Next found it plain, and are zero otherwise: Decode trusts that
	// verdict for that line only. An address, not a slice, so that the
	// Framer does not keep the caller's buffer alive.
	plainAt  uintptr
	plainLen int

	// tn is the client's side of telnet option negotiation, and the
	// answers owed to it (telnet.go).
	tn telnetSession

	// keys are where scan rewrote a key press sent in BINARY
	// (keyPress), or a subnegotiation's command from a client that
	// offered no option (subCommand), in the line not returned yet
	// (rewritten). The caller's next buffer may be a copy of the bytes
	// it was given (gnet copies what it has buffered together with what
	// arrives), made before that write: Next rewrites them again, or
	// clean would take the command for a byte telnet replaced (or a
	// subnegotiation), and the same bytes would give another line split
	// otherwise.
	keys []int
}

// AtRest reports whether f holds nothing of its input beyond the lines
// it has returned: no line begun or being skipped, and no telnet command,
// option or answer of the client's. A Framer at rest acts as a new one
// with the same Max would, so a caller that keeps many idle inputs need
// not keep a Framer for each (the engine lends one per read).
func (f *Framer) AtRest() bool {
	return f.scanned == 0 && !f.skipping && f.state == telnetData &&
		!f.tn.spoke && f.tn.binaryIn == optNo && len(f.tn.reply) == 0
}

// End tells f that the client's input has ended (it shut its side of the
// connection, as netcat -N does at the end of a file) and that the bytes
// the caller holds are all there will be. From then on Next returns what
// follows the last '\n' as a last line, as if a '\n' ended it, rather
// than wait for more: a file whose last line has no line feed loses
// nothing. A telnet command cut short at the end is dropped, and so is
// the rest of an over-long line, as ever.
func (f *Framer) End() { f.ended = true }

func (f *Framer) maxLine() int {
	if f.Max <= 0 {
		return DefaultMaxLine
	}
	return f.Max
}

// Next returns the next complete line in buf, with its terminator ("\n"
// or "\r\n") removed, stray '\r' (and telnet's "\r\x00") removed,
// telnet IAC sequences removed, and the keys of keys.go acted on (an EOT
// dropped, a backspace erasing the character before it) — done IN PLACE
// in buf (it may modify buf, including bytes it does not consume yet).
// An EOT (Ctrl-D) before any data of a line is a line of its own,
// returned at once without waiting for a '\n': "\x04", which Decode
// makes a quit.
// n is how many bytes of buf were consumed; the caller discards them.
//
// Telnet commands are answered as they are read, whether or not their
// line is complete: after every call the caller sends Reply's bytes, if
// any, to the client.
//
// n == 0 && err == nil: no complete line yet; the caller waits for more
// bytes, then calls Next again with the same unconsumed bytes followed by
// the new ones. A buf that ends inside a telnet command also waits.
// Once the input has ended (End), nothing waits: the rest of buf is the
// last line.
//
// If no newline is found within Max bytes, Next returns proto.ErrTooLong
// (proto.ErrCommandTooLong for a command) once, with n the bytes dropped; later calls then silently drop the rest
// of that over-long line (n > 0, line == nil, err == nil) up to and
// including its '\n'. A caller's buffer of Max bytes is therefore always
// enough to make progress.
//
// The returned line aliases buf and is valid until buf is reused.
func (f *Framer) Next(buf []byte) (line []byte, n int, err *proto.Error) {
	if f.scanned > len(buf) {
		f.keys = f.keys[:0] // started over below
	}
	for _, at := range f.keys {
		buf[at] = rewritten(buf[at])
	}
	line, n, err = f.next(buf)
	if n > 0 {
		f.keys = f.keys[:0]
	}
	return line, n, err
}

func (f *Framer) next(buf []byte) (line []byte, n int, err *proto.Error) {
	f.plainAt, f.plainLen = 0, 0
	if f.skipping {
		return nil, f.skip(buf, 0), nil
	}
	maxLine := f.maxLine()
	if f.scanned > len(buf) {
		// The caller did not hand back the bytes it was given; start over
		// rather than trust a stale position.
		f.scanned, f.state, f.begun = 0, telnetData, false
	}
	if f.scanned >= maxLine {
		// Max was lowered (a reload of limits.max_line) while this line
		// was coming in, and the line is already as long as the new Max
		// allows: it is too long, and the rest of it is dropped from
		// where the search for its end has got to.
		from := f.scanned
		f.scanned, f.skipping, f.skipLastData, f.skipIACFirst = 0, true, false, false
		return nil, f.skip(buf, from), tooLong(buf)
	}
	limit := min(len(buf), maxLine)
	from := f.scanned
	if f.state == telnetData && (from == 0 || f.scannedPlain) {
		// Nearly every line is plain printable ASCII up to its "\n" or
		// "\r\n". Such bytes hold no line end and no telnet command, so
		// one pass that stops at the first byte that is not plain finds
		// the end of such a line, leaves nothing for clean to do but drop
		// the '\r', and gives the verdict that spares Decode its own pass.
		// A line that holds anything else is scanned on from that byte.
		k := from + plainRun(buf[from:limit])
		end := k
		if end+1 < limit && buf[end] == '\r' {
			end++
		}
		switch {
		case end < limit && buf[end] == '\n':
			f.scanned, f.begun = 0, false
			line = buf[:k:k]
			f.plainAt, f.plainLen = uintptr(unsafe.Pointer(unsafe.SliceData(line))), k
			return line, end + 1, nil
		case k == limit && len(buf) < maxLine && !f.ended:
			f.scanned, f.scannedPlain, f.begun = limit, true, k > 0
			return nil, 0, nil
		}
		from = k
		f.begun = f.begun || k > 0
	}
	end, st := f.scan(buf, from, limit, f.state)
	if end >= 0 {
		f.scanned, f.state, f.begun = 0, telnetData, false
		if buf[end] == keyEOT {
			return buf[end : end+1 : end+1], end + 1, nil
		}
		return clean(buf[:end]), end + 1, nil
	}
	if len(buf) < maxLine {
		if f.ended && len(buf) > 0 {
			// No more input comes to end this line: it ends here, as a
			// file's last line without a line feed does.
			f.scanned, f.state, f.begun = 0, telnetData, false
			return clean(buf), len(buf), nil
		}
		f.scanned, f.state, f.scannedPlain = limit, st, false
		return nil, 0, nil
	}
	// Max bytes and no line end: report the line once, then drop the rest
	// of it. The parser restarts in plain data at the cut, so a telnet
	// subnegotiation that never ends costs at most one line's worth of
	// input instead of swallowing the connection.
	f.scanned, f.state, f.begun = 0, telnetData, false
	f.skipping, f.skipLastData, f.skipIACFirst = true, false, false
	return nil, f.skip(buf, maxLine), tooLong(buf)
}

// tooLong is the error for the over-long line that buf starts: one that
// starts as a command (a "/", not "//", which begins a message) was to
// send nothing, and is told so.
func tooLong(buf []byte) *proto.Error {
	if len(buf) > 0 && buf[0] == '/' && (len(buf) < 2 || buf[1] != '/') {
		return proto.ErrCommandTooLong
	}
	return proto.ErrTooLong
}

// skipEndsAt reports whether the command c, after an IAC, ends the skip
// of an over-long line (skip): a key that erases the line (lineKey),
// such as Ctrl-C. Its user saw the line thrown away, and what it types
// next is a new line; skipped on to the next line feed, that line would
// be lost without a word. In BINARY every such command is the key.
// Outside it, one may stand for a byte telnet replaced inside a letter
// (restoredByte) of the line being skipped, and is taken for the key
// only as telnet sends Ctrl-C: its IAC first in what the client sent,
// after what ended in a data byte (first). telnet sends each byte it
// replaces at the end of a write, with a request for a timing mark after
// it, so a letter with two such bytes (ッ is e3 83 83) comes as two
// writes, the second of which begins with the command: after a write
// that ended in a command, it is no key. Like keyAlone, it is a rule
// that depends on how the input arrived.
func skipEndsAt(c byte, binary, first bool) bool {
	eraseLine, _ := lineKey(c)
	return eraseLine && (binary || first)
}

// skip drops buf[from:] up to and including the '\n' that ends the
// over-long line being skipped, or the key that erases it (skipEndsAt),
// and returns the bytes consumed from the start of buf.
func (f *Framer) skip(buf []byte, from int) int {
	f.begun = true // the rest of a line: an EOT in it starts nothing
	end, st := f.scan(buf, from, len(buf), f.state)
	if end >= 0 {
		f.skipping, f.skipLastData, f.skipIACFirst, f.state, f.begun = false, false, false, telnetData, false
		return end + 1
	}
	f.state = st
	if len(buf) > from {
		// An IAC that came alone, after what ended in a data byte: its
		// command, in the next read, follows it as the first bytes the
		// client sent (skipEndsAt).
		f.skipIACFirst = from == 0 && len(buf) == 1 && st == telnetCommand && f.skipLastData
		f.skipLastData = st == telnetData && !f.cmdLast
	}
	return len(buf)
}

// clean removes telnet commands, every '\r', and the NUL telnet sends
// after a bare '\r', in place, and acts on the keys of keys.go: an EOT is
// dropped, and a backspace (^H or DEL) drops itself and the character
// before it. raw is one line without its '\n', starting in plain data. A
// command that stands where a UTF-8 continuation byte is due is put back
// as the byte the client replaced with it (restoredByte; scan has
// rewritten those the client sent in BINARY, keyPress); any other acts
// on the line as the key it stands for (lineKey).
func clean(raw []byte) []byte {
	// Most lines need nothing done, or only the '\r' of a CRLF dropped:
	// Next has found that itself for a plain line, and for others a few
	// vectorized searches say so before any byte is walked.
	end := len(raw)
	if end > 0 && raw[end-1] == '\r' {
		end--
	}
	if bytes.IndexByte(raw[:end], '\r') < 0 && bytes.IndexByte(raw[:end], telnetIAC) < 0 && !hasEditKey(raw[:end]) {
		return raw[:end:end]
	}
	st := telnetData
	afterCR := false
	w := 0
	for _, c := range raw {
		prev := st
		var keep bool
		st, keep = st.step(c)
		if keep && prev == telnetCommand && c != telnetIAC {
			// The 255 before c began no command (step): put it back.
			// Dropped, it left w a byte behind.
			raw[w] = telnetIAC
			w++
			afterCR = false
		}
		if !keep {
			// A command is at least two bytes and puts back at most one,
			// so w stays behind the byte being read.
			if b, ok := restoredByte(prev, c); ok && continuationDue(raw[:w]) {
				raw[w] = b
				w++
				afterCR = false
				continue
			}
			if prev != telnetCommand {
				continue
			}
			switch eraseLine, eraseChar := lineKey(c); {
			case eraseLine:
				w, afterCR = 0, false
			case eraseChar:
				w, afterCR = len(erase(raw[:w])), false
			}
			continue
		}
		switch {
		case c == '\r':
			afterCR = true
			continue
		case c == 0 && afterCR:
			afterCR = false
			continue
		case c == keyEOT:
			afterCR = false
			continue
		case c == keyBS || c == keyDEL:
			w = len(erase(raw[:w]))
			afterCR = false
			continue
		}
		afterCR = false
		raw[w] = c
		w++
	}
	if st == telnetCommand {
		// A 255 at the end, before the line feed (or the end of input):
		// text, as above.
		raw[w] = telnetIAC
		w++
	}
	return raw[:w:w]
}
