// Package jsonproto is duet's JSON protocol, spoken by browsers over
// WebSocket: one JSON object per text frame in each direction, with a
// "type" field that names the command or event.
//
// The package is pure: it turns bytes into proto.Commands and
// proto.Events into bytes, and owns no sockets, goroutines or global
// state. The relay path (decoding a say, encoding a message event into a
// caller's buffer) does not allocate once a Decoder is warm.
package jsonproto

import (
	"bytes"
	"math/bits"
	"unicode/utf16"
	"unicode/utf8"

	"duet/proto"
)

// Subprotocol names this version of the JSON protocol in a WebSocket
// handshake (Sec-WebSocket-Protocol). A client that offers it is told the
// server speaks it; a later, incompatible version would be offered as
// "duet.v2", so a client that pins a version never talks to a server
// that speaks another.
const Subprotocol = "duet.v1"

// maxDepth bounds how deeply a message's values may nest. The top-level
// value is at depth 1 and a value inside an array or object is one
// deeper than it, so an empty array may sit at depth 300 but nothing can
// sit inside it. Deeper JSON is proto.ErrBadJSON. No message of duet's
// nests at all; the limit is the one duet has always had.
const maxDepth = 300

// Decoder decodes client messages. It is not safe for concurrent use: the
// engine keeps one per event loop, and its buffers are reused by every
// Decode.
type Decoder struct {
	// unescaped holds the strings that had escapes to undo: the
	// Command's fields, and during the pass the member names.
	unescaped []byte
	// nesting has one bit per array or object open around the value
	// being read, set for an object, so that the pass knows which
	// bracket closes it without recursion. It grows with the deepest
	// message seen.
	nesting []uint64
}

// member is where a member that duet reads stands in the message.
type member struct {
	seen     bool // the member is there, whatever its value
	isString bool // its value is a string
	escaped  bool // the string holds escapes to undo
	// start and end bound the string's body, quotes excluded.
	start, end int
}

// fields holds the members of a client message that duet reads. Any
// other member is checked as JSON and otherwise ignored.
type fields struct {
	typ, name, password, token, text, key, last, data member
	duplicate                                         bool
	// id is a say's or seal's number, which came after the members
	// above: a client that sent "id" before it was read had it
	// ignored, whatever it held, so an id that is not a count, or that
	// is repeated, is still ignored rather than refused.
	id      member
	idTwice bool
	// typeTwice, typeCut and idCut matter only to a message refused
	// before its members are read (named): "type" was given more than
	// once; the message stopped being JSON in the value of "type", or
	// of "id", or before what ends it. (Flags rather than a pointer to
	// the member: a pointer into f stored in f would move every Decode's
	// fields to the heap.)
	typeTwice, typeCut, idCut bool
}

// cutShort notes that the message stopped being JSON in m's value, or
// before what ends it.
func (f *fields) cutShort(m *member) {
	f.typeCut, f.idCut = m == &f.typ, m == &f.id
}

// slot returns where the member named name goes, or nil for a member
// duet does not read.
func (f *fields) slot(name []byte) *member {
	switch string(name) {
	case "type":
		return &f.typ
	case "name":
		return &f.name
	case "password":
		return &f.password
	case "token":
		return &f.token
	case "text":
		return &f.text
	case "key":
		return &f.key
	case "last":
		return &f.last
	case "data":
		return &f.data
	case "id":
		return &f.id
	}
	return nil
}

// Decode parses one message. The Command's slices alias msg, or the
// Decoder's buffer for strings that held escapes: they are valid until
// msg changes or the next Decode, whichever comes first. Decode does not
// change msg.
//
// Decode reads msg in one pass that checks it as strict JSON (RFC 8259:
// no other whitespace than space, tab, line feed and carriage return;
// numbers and escapes exactly as the grammar has them; no raw control
// characters in strings), checks that every string is UTF-8 (outside
// strings, JSON allows only ASCII), and notes where the members duet
// reads stand. What the pass finds is answered in this order, whatever
// order it was found in:
//
//  1. msg is not UTF-8 anywhere: proto.ErrInvalidUTF8.
//  2. msg is not JSON: proto.ErrBadJSON.
//  3. a \u escape names half of a UTF-16 surrogate pair without the
//     other half, which has no UTF-8 form: proto.ErrInvalidUTF8.
//     encoding/json would turn it into U+FFFD; duet refuses it, as it
//     refuses any other text that is not UTF-8, so that what the peer
//     reads is what was sent.
//  4. values nest deeper than maxDepth: proto.ErrBadJSON.
//  5. the top-level value is not an object: proto.ErrBadJSON.
//  6. a member duet reads appears twice: proto.ErrBadMessage.
//  7. "type" is missing or not a string (proto.ErrBadMessage), or not
//     a type duet knows (proto.ErrUnknownType, compared exactly: "say",
//     not "Say"); then the fields of that type must be present
//     (proto.ErrBadName for a login without "name", proto.ErrBadToken for
//     a connect without "token", proto.ErrBadResumeKey for a resume
//     without "key", proto.ErrBadMessage otherwise) and strings, but
//     for "last", a whole number (proto.ErrBadMessage); a seal's "data"
//     must be one or more base64url characters (IsBase64URL), else
//     proto.ErrBadMessage.
//
// An error comes with the zero Command, but for a say or seal, whose
// Command has the Op and the ID (without Text) so that the refusal
// names the message, as any other refusal of one does: always when it
// is refused at 7 for its "text" or "data", and when it is refused at 1
// to 6 if the Op and ID can be told (see named).
//
// So the pass reads a message to its end before it answers anything
// but 1 and 2: a repeated member followed by a syntax error is
// proto.ErrBadJSON. It stops at the first syntax error or string that is
// not UTF-8, and since UTF-8 ranks first, only then looks at the whole
// message with utf8.Valid; a message that is JSON has had every byte
// checked on the way. Nested arrays and objects are walked in a loop,
// not by recursion. Member names are compared after their escapes are
// undone, so "t\u0079pe" is "type"; values are unescaped after the pass,
// and only those the Command carries.
//
// A say written as browsers write it, sayHead then the text and `"}`,
// takes a shorter way to the same answer (decodeSay).
func (d *Decoder) Decode(msg []byte) (proto.Command, *proto.Error) {
	if text, id, err, ok := d.decodeSay(msg); ok {
		if err != nil {
			if id == 0 {
				return proto.Command{}, err
			}
			return proto.Command{Op: proto.OpSay, ID: id}, err
		}
		return proto.Command{Op: proto.OpSay, Text: text, ID: id}, nil
	}
	return d.decode(msg)
}

// Say returns the text and id of msg when it is a say written as
// browsers write it, as Decode would return them in an OpSay command,
// and ok false for anything else, which Decode then reads. The text may
// be in the Decoder's buffer, which the next call reuses. Say builds no
// Command: a Command is 144 bytes, and its copies as Decode returns it
// cost a busy server more than the rest of a say's decoding.
func (d *Decoder) Say(msg []byte) (text []byte, id uint64, ok bool) {
	text, id, err, ok := d.decodeSay(msg)
	return text, id, ok && err == nil
}

// sayHead is how a say starts as JSON.stringify({type: "say", text})
// writes it, which is what duet's load generator sends; duet's page
// sends JSON.stringify({type: "say", text, id}), which adds idHead and
// the id's digits before the '}'.
const (
	sayHead = `{"type":"say","text":"`
	idHead  = `,"id":`
)

// decodeSay is Decode for a message that is sayHead, a string's body,
// optionally idHead and a count written in the fewest digits, and '}',
// with only whitespace after it. It reads the body as the pass does, and
// for such a message gives the answer the pass would give: the text and
// id, or proto.ErrInvalidUTF8 and the id for a lone surrogate. It
// reports ok false for any other message, which the pass then reads
// from the start, and so too for a say that is not JSON or not UTF-8,
// whose answer depends on the whole message.
func (d *Decoder) decodeSay(msg []byte) (text []byte, id uint64, err *proto.Error, ok bool) {
	// Three words, the last overlapping the second, compare the head.
	if len(msg) < len(sayHead) || load8(msg, 0) != load8(sayHead, 0) ||
		load8(msg, 8) != load8(sayHead, 8) || load8(msg, len(sayHead)-8) != load8(sayHead, len(sayHead)-8) {
		return nil, 0, nil, false
	}
	// The body's plain run is nearly all of it; stringBody reads on from
	// there if it is not all, the same as from the start, since a plain
	// byte changes nothing it notes.
	body := member{seen: true, isString: true, start: len(sayHead)}
	body.end = body.start + plainRun(msg[body.start:])
	lone := false
	if body.end >= len(msg) || msg[body.end] != '"' {
		s := pass{msg: msg, d: d}
		if body.end, body.escaped = s.stringBody(body.end); body.end < 0 {
			return nil, 0, nil, false
		}
		lone = s.lone
	}
	// Then the id, if any, then '}', and whitespace at most.
	after := body.end + 1
	if after < len(msg) && msg[after] == ',' {
		if id, after = sayID(msg, after); after < 0 {
			return nil, 0, nil, false
		}
	}
	after++
	if after > len(msg) || msg[after-1] != '}' || after < len(msg) && skipSpace(msg, after) != len(msg) {
		return nil, 0, nil, false
	}
	if lone {
		return nil, id, proto.ErrInvalidUTF8, true
	}
	if !body.escaped {
		return msg[body.start:body.end:body.end], id, nil, true
	}
	d.unescaped = d.unescaped[:0]
	text, _ = d.stringOf(msg, &body)
	return text, id, nil, true
}

// sayID reads idHead and a count at msg[i] for decodeSay, and returns
// the count and the index just past it, or -1 for anything else: a
// number the pass would refuse (a leading zero) or read another way (a
// fraction, an exponent, past 64 bits) is left to the pass.
func sayID(msg []byte, i int) (uint64, int) {
	if len(msg)-i < len(idHead) || string(msg[i:i+len(idHead)]) != idHead {
		return 0, -1
	}
	i += len(idHead)
	start := i
	for i < len(msg) && '0' <= msg[i] && msg[i] <= '9' {
		i++
	}
	m := member{seen: true, start: start, end: i}
	id, ok := countOf(msg, &m)
	if !ok || i-start > 1 && msg[start] == '0' {
		return 0, -1
	}
	return id, i
}

// decode is Decode without decodeSay: the pass over any message.
func (d *Decoder) decode(msg []byte) (proto.Command, *proto.Error) {
	s := pass{msg: msg, d: d}
	var f fields
	i := skipSpace(msg, 0)
	object := i < len(msg) && msg[i] == '{'
	if object {
		i = s.members(i+1, &f)
	} else {
		i = s.value(i, 0)
	}
	if i >= 0 && skipSpace(msg, i) != len(msg) {
		i = -1
	}
	switch {
	case i < 0:
		// The pass stops at the first thing that is not JSON, and it
		// checks UTF-8 only in the strings it has read, so a byte that
		// is not UTF-8 may lie further on.
		err := proto.ErrBadJSON
		if !utf8.Valid(msg) {
			err = proto.ErrInvalidUTF8
		}
		if !object {
			return proto.Command{}, err
		}
		// The pass stopped at the first byte a string may not hold,
		// too: a pass that reads on past those, to the first break in
		// the structure, finds the members that name the message.
		s = pass{msg: msg, d: d, salvage: true}
		f = fields{}
		s.members(skipSpace(msg, 0)+1, &f)
		return d.named(msg, &f, err)
	case s.lone:
		return d.named(msg, &f, proto.ErrInvalidUTF8)
	case s.deep, !object:
		return d.named(msg, &f, proto.ErrBadJSON)
	case f.duplicate:
		// JSON leaves the meaning of a repeated member open, and parsers
		// differ on which one wins; refuse rather than guess.
		return d.named(msg, &f, proto.ErrBadMessage)
	}
	// The message is JSON: build the Command. This is not a function of
	// its own because handing a Command back through one more call
	// copies its fourteen words once more, which cost a fifth of the
	// time of decoding a say.
	d.unescaped = d.unescaped[:0]
	typ, ok := d.stringOf(msg, &f.typ)
	if !ok {
		return proto.Command{}, proto.ErrBadMessage
	}
	switch string(typ) {
	case "login":
		if !f.name.seen {
			return proto.Command{}, proto.ErrBadName
		}
		name, ok := d.stringOf(msg, &f.name)
		if !ok {
			return proto.Command{}, proto.ErrBadMessage
		}
		var password []byte
		if f.password.seen {
			if password, ok = d.stringOf(msg, &f.password); !ok {
				return proto.Command{}, proto.ErrBadMessage
			}
		}
		return proto.Command{Op: proto.OpLogin, Name: name, Password: password}, nil
	case "connect":
		if !f.token.seen {
			return proto.Command{}, proto.ErrBadToken
		}
		token, ok := d.stringOf(msg, &f.token)
		if !ok {
			return proto.Command{}, proto.ErrBadMessage
		}
		return proto.Command{Op: proto.OpConnect, Token: token}, nil
	case "say":
		text, ok := d.stringOf(msg, &f.text)
		if !ok {
			return proto.Command{Op: proto.OpSay, ID: f.messageID(msg)}, proto.ErrBadMessage
		}
		return proto.Command{Op: proto.OpSay, Text: text, ID: f.messageID(msg)}, nil
	case "leave":
		return proto.Command{Op: proto.OpLeave}, nil
	case "who":
		return proto.Command{Op: proto.OpWho}, nil
	case "help":
		return proto.Command{Op: proto.OpHelp}, nil
	case "quit":
		return proto.Command{Op: proto.OpQuit}, nil
	case "newtoken":
		return proto.Command{Op: proto.OpNewToken}, nil
	case "resume":
		if !f.key.seen {
			return proto.Command{}, proto.ErrBadResumeKey
		}
		key, ok := d.stringOf(msg, &f.key)
		if !ok {
			return proto.Command{}, proto.ErrBadMessage
		}
		var last uint64
		if f.last.seen {
			if last, ok = countOf(msg, &f.last); !ok {
				return proto.Command{}, proto.ErrBadMessage
			}
		}
		return proto.Command{Op: proto.OpResume, Key: key, Last: last}, nil
	case "ack":
		last, ok := countOf(msg, &f.last)
		if !f.last.seen || !ok {
			return proto.Command{}, proto.ErrBadMessage
		}
		return proto.Command{Op: proto.OpAck, Last: last}, nil
	case "seal":
		data, ok := d.stringOf(msg, &f.data)
		if !ok || !IsBase64URL(data) {
			return proto.Command{Op: proto.OpSeal, ID: f.messageID(msg)}, proto.ErrBadMessage
		}
		return proto.Command{Op: proto.OpSeal, Text: data, ID: f.messageID(msg)}, nil
	}
	return proto.Command{}, proto.ErrUnknownType
}

// IsBase64URL reports whether data is bytes written in base64url
// (RFC 4648 section 5: A-Z, a-z, 0-9, '-', '_'), one or more, without
// padding, as an encoder writes them: what a seal's data may hold. A
// length that leaves one character over (4n+1) holds no whole byte, and
// the last character's bits past the last byte are 0 (RFC 4648 section
// 3.5); base64.RawURLEncoding.Strict decodes exactly these. The server
// checks the form only, and never decodes a sealed envelope.
func IsBase64URL(data []byte) bool {
	if len(data) == 0 || len(data)%4 == 1 {
		return false
	}
	var last byte
	for _, c := range data {
		switch {
		case 'A' <= c && c <= 'Z':
			last = c - 'A'
		case 'a' <= c && c <= 'z':
			last = c - 'a' + 26
		case '0' <= c && c <= '9':
			last = c - '0' + 52
		case c == '-':
			last = 62
		case c == '_':
			last = 63
		default:
			return false
		}
	}
	// Two characters over hold one byte and 4 bits more; three, two
	// bytes and 2 bits more.
	switch len(data) % 4 {
	case 2:
		return last&0x0f == 0
	case 3:
		return last&0x03 == 0
	}
	return true
}

// named returns err with the Command that names the message Decode
// refuses with it before reading its members (at 1 to 6): a say's or
// seal's Op and ID, read from the members of the top-level object that
// f noted before the message stopped being JSON, if it did. "type"
// must be there once, whole (followed by ',' or '}') and a string that
// is "say" or "seal" with no bytes a string may not hold; "id" must be
// there once and whole, and a count other than 0. Anything else is the
// zero Command: a message whose type cannot be told names no say, and an
// id given twice (with the same value or not) or cut short names none,
// rather than the wrong one. What comes after a break in the structure
// (a missing quote, a stray word) cannot be told to be a member of the
// top-level object, and is not read.
func (d *Decoder) named(msg []byte, f *fields, err *proto.Error) (proto.Command, *proto.Error) {
	if f.typeTwice || f.typeCut || !f.typ.isString {
		return proto.Command{}, err
	}
	// A salvaging pass reads a string to its closing quote whatever it
	// holds: the type must be one a strict pass reads as far.
	if end, _ := (&pass{msg: msg, d: d}).stringBody(f.typ.start); end != f.typ.end {
		return proto.Command{}, err
	}
	d.unescaped = d.unescaped[:0]
	typ, _ := d.stringOf(msg, &f.typ)
	var op proto.Op
	switch string(typ) {
	case "say":
		op = proto.OpSay
	case "seal":
		op = proto.OpSeal
	default:
		return proto.Command{}, err
	}
	id := f.messageID(msg)
	if id == 0 || f.idCut {
		return proto.Command{}, err
	}
	return proto.Command{Op: op, ID: id}, err
}

// messageID is the say's or seal's "id" when it is a count given once,
// else 0: none.
func (f *fields) messageID(msg []byte) uint64 {
	if f.idTwice {
		return 0
	}
	id, _ := countOf(msg, &f.id)
	return id
}

// countOf returns m's value if it is a count: a JSON number written as
// a whole number of digits (no sign, fraction or exponent) that fits in
// 64 bits. A client counts messages with integers; 5.0 or 5e0 is a
// client bug, refused rather than guessed at.
func countOf(msg []byte, m *member) (uint64, bool) {
	if !m.seen || m.isString || m.end <= m.start {
		return 0, false
	}
	var n uint64
	for _, c := range msg[m.start:m.end] {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (1<<64-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// stringOf returns m's text if its value is a string: a slice of msg, or
// of the Decoder's buffer if it had escapes to undo. Its capacity is its
// length, so a careless append copies instead of overwriting what
// follows.
func (d *Decoder) stringOf(msg []byte, m *member) ([]byte, bool) {
	if !m.isString {
		return nil, false
	}
	if !m.escaped {
		return msg[m.start:m.end:m.end], true
	}
	start := len(d.unescaped)
	d.unescaped = appendUnescaped(d.unescaped, msg[m.start:m.end])
	end := len(d.unescaped)
	return d.unescaped[start:end:end], true
}

// pass is one Decode's walk over a message. Its methods return the index
// just past what they read, or -1 at the first thing that is not JSON or
// not UTF-8; what must wait for the end of the pass to be answered (see
// Decode) is noted in lone and deep.
type pass struct {
	msg  []byte
	d    *Decoder
	lone bool // a \u escape names half a surrogate pair
	deep bool // a value nests deeper than maxDepth
	// salvage reads on past what a string may not hold (a byte that is
	// not UTF-8, a raw control character, an escape JSON does not have:
	// a backslash and the byte after it), counting each in faults, as
	// the lexer of a lenient parser would: for named, after the strict
	// pass has refused the message.
	salvage bool
	faults  int
}

// members reads the members of the top-level object, whose '{' is just
// before msg[i], noting in f where those duet reads stand.
func (s *pass) members(i int, f *fields) int {
	msg := s.msg
	i = skipSpace(msg, i)
	if i < len(msg) && msg[i] == '}' {
		return i + 1
	}
	for {
		faults := s.faults
		start, end, escaped, next := s.memberName(i)
		if next < 0 {
			return -1
		}
		i = skipSpace(msg, next)
		var m *member
		if s.faults == faults { // a name a salvaging pass read past a fault in is no name duet reads
			name := msg[start:end]
			if escaped {
				// The buffer is free until the pass ends: the Command's
				// strings are unescaped after it.
				s.d.unescaped = appendUnescaped(s.d.unescaped[:0], name)
				name = s.d.unescaped
			}
			m = f.slot(name)
		}
		if m == &f.id && m.seen {
			f.idTwice = true
			m = nil
		}
		if m == &f.typ && m.seen {
			f.typeTwice = true
		}
		switch {
		case m == nil:
			i = s.value(i, 1)
		case i < len(msg) && msg[i] == '"':
			f.duplicate = f.duplicate || m.seen
			m.seen, m.isString, m.start = true, true, i+1
			m.end, m.escaped = s.stringBody(i + 1)
			if m.end < 0 {
				f.cutShort(m)
				return -1
			}
			i = m.end + 1
		default:
			// Not a string: its bounds are kept too, for a member that
			// must be a number (last).
			f.duplicate = f.duplicate || m.seen
			*m = member{seen: true, start: i}
			i = s.value(i, 1)
			m.end = i
		}
		if i < 0 {
			f.cutShort(m)
			return -1
		}
		// The member is whole only with what ends it.
		i = skipSpace(msg, i)
		if i >= len(msg) {
			f.cutShort(m)
			return -1
		}
		switch msg[i] {
		case ',':
			i = skipSpace(msg, i+1)
		case '}':
			return i + 1
		default:
			f.cutShort(m)
			return -1
		}
	}
}

// memberName reads a member's name at msg[i] and the ':' after it,
// whitespace allowed before the ':'. It returns the bounds of the name's
// body, whether it holds escapes, and the index just past the ':' (-1 if
// either is not there).
func (s *pass) memberName(i int) (start, end int, escaped bool, next int) {
	msg := s.msg
	if i >= len(msg) || msg[i] != '"' {
		return 0, 0, false, -1
	}
	start = i + 1
	end, escaped = s.stringBody(start)
	if end < 0 {
		return 0, 0, false, -1
	}
	i = skipSpace(msg, end+1)
	if i >= len(msg) || msg[i] != ':' {
		return 0, 0, false, -1
	}
	return start, end, escaped, i + 1
}

// value checks the JSON value at msg[i], after any whitespace, which sits
// inside outer arrays and objects. It reads nested values in a loop, with
// the kind of each open array or object in the Decoder's nesting bits,
// so that a message nested a million deep costs no stack.
func (s *pass) value(i, outer int) int {
	msg := s.msg
	depth := outer // the arrays and objects open around msg[i]
	for {
		i = skipSpace(msg, i)
		if i >= len(msg) {
			return -1
		}
		if depth >= maxDepth {
			s.deep = true
		}
		switch c := msg[i]; c {
		case '{', '[':
			i = skipSpace(msg, i+1)
			if i < len(msg) && msg[i] == c+2 { // '}' and ']' follow their openers by two
				i++
				break
			}
			s.open(depth, c == '{')
			depth++
			if c == '{' {
				_, _, _, i = s.memberName(i)
				if i < 0 {
					return -1
				}
			}
			continue
		case '"':
			end, _ := s.stringBody(i + 1)
			if end < 0 {
				return -1
			}
			i = end + 1
		case 't':
			i = skipWord(msg, i, "true")
		case 'f':
			i = skipWord(msg, i, "false")
		case 'n':
			i = skipWord(msg, i, "null")
		default:
			i = skipNumber(msg, i)
		}
		if i < 0 {
			return -1
		}
		// A value has ended: close the arrays and objects it ends, up
		// to the next value or back out to where the walk began.
	closing:
		for {
			if depth == outer {
				return i
			}
			i = skipSpace(msg, i)
			if i >= len(msg) {
				return -1
			}
			inObject := s.isObject(depth - 1)
			switch msg[i] {
			case ',':
				i++
				if inObject {
					if _, _, _, i = s.memberName(skipSpace(msg, i)); i < 0 {
						return -1
					}
				}
				break closing
			case '}':
				if !inObject {
					return -1
				}
			case ']':
				if inObject {
					return -1
				}
			default:
				return -1
			}
			i++
			depth--
		}
	}
}

// open notes that the array or object opened at depth (the number of
// arrays and objects already open around it) is an object or not.
func (s *pass) open(depth int, object bool) {
	word, bit := depth/64, uint64(1)<<(depth%64)
	for word >= len(s.d.nesting) {
		s.d.nesting = append(s.d.nesting, 0)
	}
	if object {
		s.d.nesting[word] |= bit
	} else {
		s.d.nesting[word] &^= bit
	}
}

// isObject reports whether the array or object opened at depth is an
// object.
func (s *pass) isObject(depth int) bool {
	return s.d.nesting[depth/64]&(1<<(depth%64)) != 0
}

// stringBody reads the body of a string whose opening quote is just
// before msg[i]: printable text that is UTF-8 and escapes as JSON has
// them. It returns the index of the closing quote and whether the body
// holds escapes.
func (s *pass) stringBody(i int) (int, bool) {
	msg := s.msg
	escaped := false
	for {
		// Most of a chat message is plain ASCII: take it eight bytes at
		// a time, up to the first byte that needs a look of its own.
		// Stepping by a constant 8 while all are plain, rather than by
		// the count, lets the CPU run ahead to the next word before it
		// has finished checking this one.
		for i <= len(msg)-8 {
			if m := notPlain(load8(msg, i)); m != 0 {
				i += bits.TrailingZeros64(m) / 8
				break
			}
			i += 8
		}
		if i >= len(msg) {
			return -1, false
		}
		switch c := msg[i]; {
		case c == '"':
			return i, escaped
		case c == '\\':
			escaped = true
			j := s.escape(i)
			if j < 0 {
				if !s.salvage || i+1 >= len(msg) {
					return -1, false
				}
				s.faults++
				j = i + 2
			}
			i = j
		case c < 0x20:
			if !s.salvage {
				return -1, false
			}
			s.faults++
			i++
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(msg[i:])
			if r == utf8.RuneError && size == 1 {
				if !s.salvage {
					return -1, false
				}
				s.faults++
			}
			i += size
		}
	}
}

// escape checks the escape whose backslash is at msg[i]. A \u escape for
// half of a surrogate pair must be the high half followed at once by an
// escape for the low half; anything else is noted as lone.
func (s *pass) escape(i int) int {
	msg := s.msg
	if i+1 >= len(msg) {
		return -1
	}
	switch msg[i+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return i + 2
	case 'u':
	default:
		return -1
	}
	r, ok := hex4(msg, i+2)
	if !ok {
		return -1
	}
	i += 6
	switch {
	case isHighSurrogate(r):
		// If another escape follows that is not a low half, leave it to
		// the caller's next round: it may be a high half with a pair of
		// its own, or not JSON, which wins over the lone half.
		if _, ok := lowSurrogateAt(msg, i); ok {
			return i + 6
		}
		s.lone = true
	case isLowSurrogate(r):
		s.lone = true
	}
	return i
}

// lowSurrogateAt reads a \u escape for the low half of a surrogate pair
// at msg[i], if there is one.
func lowSurrogateAt(msg []byte, i int) (rune, bool) {
	if i+1 >= len(msg) || msg[i] != '\\' || msg[i+1] != 'u' {
		return 0, false
	}
	r, ok := hex4(msg, i+2)
	return r, ok && isLowSurrogate(r)
}

func isHighSurrogate(r rune) bool { return 0xD800 <= r && r < 0xDC00 }
func isLowSurrogate(r rune) bool  { return 0xDC00 <= r && r < 0xE000 }

// appendUnescaped appends the text of body, the body of a string that
// the pass has read, with its escapes undone; a surrogate pair becomes
// the UTF-8 of the character it names. (A lone half, which only a
// message Decode refuses can hold, becomes U+FFFD.)
func appendUnescaped(dst, body []byte) []byte {
	for {
		j := bytes.IndexByte(body, '\\')
		if j < 0 {
			return append(dst, body...)
		}
		dst = append(dst, body[:j]...)
		body = body[j:]
		var c byte
		switch body[1] {
		case 'b':
			c = '\b'
		case 'f':
			c = '\f'
		case 'n':
			c = '\n'
		case 'r':
			c = '\r'
		case 't':
			c = '\t'
		case 'u':
			r, _ := hex4(body, 2)
			body = body[6:]
			if isHighSurrogate(r) {
				if low, ok := lowSurrogateAt(body, 0); ok {
					r = utf16.DecodeRune(r, low)
					body = body[6:]
				}
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default: // '"', '\\' and '/' stand for themselves
			c = body[1]
		}
		dst = append(dst, c)
		body = body[2:]
	}
}

// skipSpace returns the index of the first byte at or after msg[i] that
// is not JSON whitespace.
func skipSpace(msg []byte, i int) int {
	for i < len(msg) {
		switch msg[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipWord reads the literal word (true, false or null) at msg[i].
func skipWord(msg []byte, i int, word string) int {
	if len(msg)-i < len(word) || string(msg[i:i+len(word)]) != word {
		return -1
	}
	return i + len(word)
}

// skipNumber reads the number at msg[i] by JSON's grammar: an optional
// minus, then 0 or digits that do not start with 0, an optional fraction
// with at least one digit, an optional exponent with at least one digit.
// What follows it is the caller's to check, so "01" is 0 and then a
// stray 1.
func skipNumber(msg []byte, i int) int {
	if i < len(msg) && msg[i] == '-' {
		i++
	}
	switch {
	case i < len(msg) && msg[i] == '0':
		i++
	case i < len(msg) && '1' <= msg[i] && msg[i] <= '9':
		i = skipDigits(msg, i+1)
	default:
		return -1
	}
	if i < len(msg) && msg[i] == '.' {
		j := skipDigits(msg, i+1)
		if j == i+1 {
			return -1
		}
		i = j
	}
	if i < len(msg) && (msg[i] == 'e' || msg[i] == 'E') {
		i++
		if i < len(msg) && (msg[i] == '+' || msg[i] == '-') {
			i++
		}
		if j := skipDigits(msg, i); j > i {
			return j
		}
		return -1
	}
	return i
}

// skipDigits returns the index of the first byte at or after msg[i] that
// is not a decimal digit.
func skipDigits(msg []byte, i int) int {
	for i < len(msg) && '0' <= msg[i] && msg[i] <= '9' {
		i++
	}
	return i
}

// hex4 reads the four hexadecimal digits at msg[at:].
func hex4(msg []byte, at int) (rune, bool) {
	if at+4 > len(msg) {
		return 0, false
	}
	var r rune
	for _, c := range msg[at : at+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
