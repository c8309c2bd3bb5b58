package line

// Telnet (RFC 854) as duet speaks it. netcat users never send a telnet
// command, and must never be sent one: their terminal would show it as
// garbage. So the server stays silent until the client has sent a
// command of its own, and from then on answers every option request, as
// RFC 855 requires, using the "Q method" of RFC 1143 so that no answer
// is ever answered in turn:
//
//   - DO TIMING-MARK (RFC 860) is answered WILL TIMING-MARK, every time.
//     A client sends it after Ctrl-C and the like, and throws away all
//     it reads from the server until it has the answer, what the server
//     wrote before the Ctrl-C that it had not shown yet included; the
//     answer goes out after the answers to everything the client sent
//     before it, as the RFC asks. The server cannot know what was thrown
//     away (the client's TCP acknowledged it), so nothing is sent again;
//     the engine learns of the timing mark (TimingMark) and tells the
//     user how many messages it wrote just before.
//   - BINARY (RFC 856) from the client to the server is asked for (DO
//     BINARY) at the client's first command, and again at a Ctrl-C
//     (IP) while it is off. Outside BINARY,
//     inetutils telnet compares each byte's low seven bits with the
//     terminal's special characters, so UTF-8 letters with a byte of
//     0x83, 0x85, 0x8f, 0x9a, 0x9c or 0x9d are turned into commands,
//     dropped, or open its command prompt. The server's own output stays
//     out of BINARY (DO BINARY is refused): it is UTF-8 that never holds
//     byte 255 or a bare CR, which telnet shows as it is, and inetutils
//     telnet turns off its terminal's output processing in BINARY, which
//     would leave each line the user types without its carriage return.
//   - Every other option is refused: DO is answered WONT and WILL is
//     answered DONT. WONT and DONT need no answer, since every other
//     option is off already. So the client stays in its default mode:
//     line at a time, with local echo and editing.
//   - Of the two-byte commands, only ARE-YOU-THERE is answered, with a
//     server line. INTERRUPT-PROCESS (Ctrl-C), BREAK (Ctrl-\) and
//     SUSPEND (Ctrl-Z) never end a session (/quit does, and so does
//     Ctrl-D on an empty line, which telnet sends as a byte, keys.go):
//     they throw away the line begun, as the terminal does with what it
//     holds of it (lineKey). ERASE-LINE and ERASE-CHARACTER (telnet's
//     `send el`, `send ec`) erase as RFC 854 says. ABORT-OUTPUT and the
//     rest do nothing: AO is about the server's output, which the client
//     has already stopped showing by the time it arrives.

// Telnet command bytes (RFC 854).
const (
	telnetIAC  = 255 // "interpret as command": the next byte is a command
	telnetDONT = 254 // DONT, DO, WONT and WILL take one option byte
	telnetDO   = 253
	telnetWONT = 252
	telnetWILL = 251
	telnetSB   = 250 // subnegotiation begins; it runs to IAC SE
	telnetEL   = 248 // erase line
	telnetEC   = 247 // erase character
	telnetAYT  = 246 // are you there
	telnetAO   = 245 // abort output
	telnetIP   = 244 // interrupt process
	telnetBRK  = 243 // break
	telnetNOP  = 241 // no operation
	telnetSE   = 240 // subnegotiation ends
	telnetSUSP = 237 // suspend process (RFC 1184)
	telnetEOF  = 236 // the lowest command byte (RFC 1184)
)

// Telnet options duet knows by name.
const (
	optBinary     = 0 // RFC 856
	optEcho       = 1 // RFC 857
	optSGA        = 3 // RFC 858, suppress go-ahead
	optTimingMark = 6 // RFC 860
)

// aytAnswer is the visible evidence RFC 854 asks for in answer to
// ARE-YOU-THERE: a server line, like every other.
const aytAnswer = "* yes, the server is here\r\n"

// lineModeAnswer says why a request to type a character at a time is
// refused: telnet asks the server to echo (DO ECHO) and to suppress
// go-ahead (DO SGA) for it (Debian telnet's `mode character`, or
// another client as it connects), and goes on a line at a time, saying
// nothing, when both are refused.
const lineModeAnswer = "* duet reads a line at a time: type a line and press Enter; telnet stays in line mode\r\n"

// maxReply bounds the answers a Framer holds between two calls of Reply:
// the engine takes them after every call of Next, so this is per line
// (or, past Max, per read). A client that negotiates sends a few dozen
// bytes of commands; only a flood of them reaches this, and then the
// answers past it are dropped.
const maxReply = 4 << 10

// optState is the server's view of an option the client may turn on.
type optState uint8

const (
	optNo      optState = iota // off
	optWantYes                 // the server asked for it and waits for the answer
	optYes                     // on
)

// telnetSession is the server's side of the client's telnet session.
type telnetSession struct {
	spoke    bool     // the client has sent a telnet command
	binaryIn optState // whether the client sends in BINARY
	// mark: reply holds an answer to a timing mark (TimingMark);
	// markByKey: one of them followed a key press, not a letter's byte
	// (TimingMarkByKey). letter: the last command telnet makes of a
	// byte stood inside a letter, as telnet sends one in place of a
	// letter's byte.
	mark, markByKey, letter bool
	// toldLineMode: lineModeAnswer was sent, once for the connection.
	// offered: the client has offered an option (WILL), so that a
	// subnegotiation may follow (subCommand).
	toldLineMode, offered bool
	reply                 []byte // answers not yet taken by Reply
}

// heard acts on the byte c that follows a command byte: prev is the
// parser's state before c (telnetCommand after IAC, or one of
// telnetWill..telnetDont before an option byte).
func (s *telnetSession) heard(prev telnetState, c byte) {
	switch prev {
	case telnetCommand:
		if c < telnetEOF || c == telnetIAC {
			return // not a command: IAC IAC is a data byte
		}
		if !s.spoke {
			// The first command shows the client speaks telnet: ask it
			// for BINARY now, so that from here on its UTF-8 arrives
			// whole. A WILL BINARY that comes with this command is then
			// the answer (RFC 1143: WANTYES, then WILL, is YES).
			s.spoke = true
			s.binaryIn = optWantYes
			s.send(telnetDO, optBinary)
		} else if c == telnetIP && s.binaryIn == optNo {
			// Ctrl-C with BINARY off: the client refused it, or was
			// told to turn it off since (Debian telnet's toggle
			// outbinary). A line telnet mangled tells its user to press
			// Ctrl-C, so that asks again (RFC 1143 allows a request
			// anew; one a key press, so no answer is answered).
			s.binaryIn = optWantYes
			s.send(telnetDO, optBinary)
		}
		if c == telnetAYT {
			s.answer(aytAnswer)
		}
	case telnetWill:
		s.offered = true
		if c != optBinary {
			s.send(telnetDONT, c)
			return
		}
		if s.binaryIn == optNo {
			s.send(telnetDO, optBinary)
		}
		s.binaryIn = optYes
	case telnetWont:
		if c != optBinary {
			return
		}
		if s.binaryIn == optYes {
			s.send(telnetDONT, optBinary)
		}
		s.binaryIn = optNo
	case telnetDo:
		if c == optTimingMark {
			s.mark = s.send(telnetWILL, optTimingMark) || s.mark
			return
		}
		s.send(telnetWONT, c)
		if (c == optEcho || c == optSGA) && !s.toldLineMode {
			s.toldLineMode = true
			s.answer(lineModeAnswer)
		}
	}
	// DONT needs no answer: the server offers nothing but timing marks,
	// which are never left on.
}

// send queues IAC verb opt, unless the queue is full, and reports
// whether it did.
func (s *telnetSession) send(verb, opt byte) bool {
	if len(s.reply)+3 > maxReply {
		return false
	}
	s.reply = append(s.reply, telnetIAC, verb, opt)
	return true
}

// answer queues b, unless the queue is full.
func (s *telnetSession) answer(b string) {
	if len(s.reply)+len(b) <= maxReply {
		s.reply = append(s.reply, b...)
	}
}

// Reply returns the telnet answers owed to the client for the commands
// Next has read since the last call, in the order they were read, and
// forgets them. It returns nothing to a client that has not sent a
// telnet command, such as netcat. The bytes are valid until the next
// call of Next.
func (f *Framer) Reply() []byte {
	r := f.tn.reply
	f.tn.reply, f.tn.mark, f.tn.markByKey = f.tn.reply[:0], false, false
	return r
}

// TimingMark reports whether the answers Reply is about to return hold
// one to a timing mark (DO TIMING-MARK, RFC 860). The client asked for
// it at a Ctrl-C or the like, and throws away all it reads from the
// server until the answer: what the server wrote before the answer, and
// the client had not shown by then, never reaches its user. Call it
// before Reply, which forgets it.
func (f *Framer) TimingMark() bool { return f.tn.mark }

// TimingMarkByKey reports whether a timing mark TimingMark tells of
// followed a key press (Ctrl-C, Ctrl-\, Ctrl-Z), rather than a byte of
// a letter, which telnet sends as the same command and timing mark
// until BINARY: its user pressed no key, and a notice that says so
// would puzzle them. Call it before Reply, which forgets it.
func (f *Framer) TimingMarkByKey() bool { return f.tn.markByKey }

// Binary reports whether the client sends in telnet's BINARY, in which
// telnet changes no byte it sends (see restoredByte): the server asks for
// it at the client's first telnet command.
func (f *Framer) Binary() bool { return f.tn.binaryIn == optYes }

// restoredByte is the byte inetutils telnet replaced with the command c
// (the byte after IAC; prev is telnetCommand), if it is one that telnet
// makes from a byte.
//
// Outside BINARY, telnet compares each byte's low seven bits with the
// terminal's special characters and sends a command instead of a byte
// that matches: 0x83 (Ctrl-C, the default interrupt character) becomes
// IAC IP, 0x9c (Ctrl-\, quit) IAC BRK, 0x9a (Ctrl-Z, suspend) IAC SUSP
// and 0x8f (Ctrl-O, discard) IAC AO, each followed by IAC DO
// TIMING-MARK. So Russian "у" (D1 83) arrives as D1 IAC IP IAC DO TM.
// A key press cannot come between the bytes of one character, so where
// a continuation byte is due, such a command is the byte it replaced.
// This is so for the terminal's default characters, which are all but
// universal; a terminal with others gets those lines refused as
// invalid_utf8 until the client is in BINARY.
func restoredByte(prev telnetState, c byte) (byte, bool) {
	if prev != telnetCommand {
		return 0, false
	}
	switch c {
	case telnetIP:
		return 0x80 | 0x03, true
	case telnetBRK:
		return 0x80 | 0x1c, true
	case telnetSUSP:
		return 0x80 | 0x1a, true
	case telnetAO:
		return 0x80 | 0x0f, true
	}
	return 0, false
}

// lineKey is what the command c (the byte after IAC) does to the line
// begun, when it stands for a key press, not for a byte telnet replaced
// (restoredByte): a client's Ctrl-C, Ctrl-\ and Ctrl-Z (IP, BRK, SUSP)
// and its `send el` (EL) erase the whole line, as the terminal throws
// away what it holds of the line for those keys; `send ec` (EC) erases
// one character, as a backspace does. The part of the line the client
// sent before the key (telnet sends it at a Ctrl-D, or as its user
// leaves its escape prompt) is thrown away too, or a Ctrl-C the user
// saw cancel the line would send it joined to the next.
func lineKey(c byte) (eraseLine, eraseChar bool) {
	switch c {
	case telnetIP, telnetBRK, telnetSUSP, telnetEL:
		return true, false
	case telnetEC:
		return false, true
	}
	return false, false
}

// keyPress is the command scan writes in place of c, a command that
// restoredByte could take for a byte, when the client sends in BINARY,
// where it is a key press: EL for the keys that erase the line
// (lineKey), which restoredByte never takes for a byte, and NOP for
// the rest (AO). It maps what it returns to itself, so that Next can
// write it again over a copy of the bytes or over the same bytes alike.
func keyPress(c byte) byte {
	if eraseLine, _ := lineKey(c); eraseLine {
		return telnetEL
	}
	return telnetNOP
}

// subCommand reports whether c, after an IAC, begins or ends a
// subnegotiation (SB, SE). A client sends one only of an option it
// offered (WILL: a window size, a terminal type; RFC 855), and duet
// agrees to none that has one. From a client that has offered no
// option (telnetSession.offered), the IAC is a 255 of its own text,
// and c the text after it: netcat sends them for Latin-1 "ÿú" or
// cp1251 "яъ", whatever else it sent before (cp1251 "ясно" is IAC NOP).
func subCommand(c byte) bool { return c == telnetSB || c == telnetSE }

// rewritten is the byte scan writes over c at a place it records in
// keys: a 255 of text for a subnegotiation's command from a client that
// offered no option (subCommand), or the command keyPress makes of a
// key. It maps what it returns to itself, so that Next can write it
// again over a copy of the bytes or over the same bytes alike.
func rewritten(c byte) byte {
	if c == telnetIAC || subCommand(c) {
		return telnetIAC
	}
	return keyPress(c)
}

// continuationDue reports whether b ends inside a UTF-8 sequence: its
// last lead byte, among its last three bytes, announces more bytes than
// follow it.
func continuationDue(b []byte) bool {
	for back := 1; back <= 3 && back <= len(b); back++ {
		c := b[len(b)-back]
		if c&0xc0 == 0x80 {
			continue // a continuation byte: look further back
		}
		var size int
		switch {
		case c&0xe0 == 0xc0:
			size = 2
		case c&0xf0 == 0xe0:
			size = 3
		case c&0xf8 == 0xf0:
			size = 4
		default:
			return false
		}
		return back < size
	}
	return false
}
