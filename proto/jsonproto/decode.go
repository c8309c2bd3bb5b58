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
	"unicode/utf8"

	"github.com/valyala/fastjson"

	"duet/proto"
)

// Decoder decodes client messages. It is not safe for concurrent use: the
// engine keeps one per event loop, and its buffers are reused by every
// Decode.
type Decoder struct {
	parser fastjson.Parser
}

// fields holds the members of a client message that duet reads. Any
// other member is ignored.
type fields struct {
	typ, name, password, token, text *fastjson.Value
	duplicate                        bool
}

func (f *fields) set(key []byte, v *fastjson.Value) {
	var slot **fastjson.Value
	switch string(key) {
	case "type":
		slot = &f.typ
	case "name":
		slot = &f.name
	case "password":
		slot = &f.password
	case "token":
		slot = &f.token
	case "text":
		slot = &f.text
	default:
		return
	}
	if *slot != nil {
		f.duplicate = true
	}
	*slot = v
}

// Decode parses one message. The Command's slices alias the Decoder's
// buffers: they are valid until the next Decode.
//
// The checks run in this order: the frame must be UTF-8
// (proto.ErrInvalidUTF8), then valid JSON (proto.ErrBadJSON), then free of
// \u escapes that name half a surrogate pair, which have no UTF-8 form
// (proto.ErrInvalidUTF8), then an object (proto.ErrBadJSON) whose "type"
// is a string (proto.ErrBadMessage) that duet knows (proto.ErrUnknownType,
// compared exactly: "say", not "Say"), and whose fields for that type are
// present and strings.
func (d *Decoder) Decode(msg []byte) (proto.Command, *proto.Error) {
	if !utf8.Valid(msg) {
		return proto.Command{}, proto.ErrInvalidUTF8
	}
	// fastjson's parser is lenient (it takes NaN, 1.2.3 and raw control
	// characters in strings, and keeps bad escapes as text); its
	// validator is strict but for one gap, which checkStrings closes.
	// Validate first, so that anything the parser then accepts is JSON.
	if fastjson.ValidateBytes(msg) != nil {
		return proto.Command{}, proto.ErrBadJSON
	}
	if err := checkStrings(msg); err != nil {
		return proto.Command{}, err
	}
	v, err := d.parser.ParseBytes(msg)
	if err != nil {
		// Valid JSON nested deeper than fastjson.MaxDepth.
		return proto.Command{}, proto.ErrBadJSON
	}
	if v.Type() != fastjson.TypeObject {
		return proto.Command{}, proto.ErrBadJSON
	}
	var f fields
	v.GetObject().Visit(f.set)
	if f.duplicate {
		// JSON leaves the meaning of a repeated member open, and parsers
		// differ on which one wins; refuse rather than guess.
		return proto.Command{}, proto.ErrBadMessage
	}
	typ, ok := stringOf(f.typ)
	if !ok {
		return proto.Command{}, proto.ErrBadMessage
	}
	switch string(typ) {
	case "login":
		if f.name == nil {
			return proto.Command{}, proto.ErrBadName
		}
		name, ok := stringOf(f.name)
		if !ok {
			return proto.Command{}, proto.ErrBadMessage
		}
		var password []byte
		if f.password != nil {
			if password, ok = stringOf(f.password); !ok {
				return proto.Command{}, proto.ErrBadMessage
			}
		}
		return proto.Command{Op: proto.OpLogin, Name: name, Password: password}, nil
	case "connect":
		if f.token == nil {
			return proto.Command{}, proto.ErrBadToken
		}
		token, ok := stringOf(f.token)
		if !ok {
			return proto.Command{}, proto.ErrBadMessage
		}
		return proto.Command{Op: proto.OpConnect, Token: token}, nil
	case "say":
		text, ok := stringOf(f.text)
		if !ok {
			return proto.Command{}, proto.ErrBadMessage
		}
		return proto.Command{Op: proto.OpSay, Text: text}, nil
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
	}
	return proto.Command{}, proto.ErrUnknownType
}

// stringOf returns v's unescaped bytes if v is a JSON string. The bytes
// live in the parser's buffer; their capacity is their length, so a
// careless append copies instead of overwriting what follows.
func stringOf(v *fastjson.Value) ([]byte, bool) {
	if v == nil || v.Type() != fastjson.TypeString {
		return nil, false
	}
	s := v.GetStringBytes()
	return s[:len(s):len(s)], true
}

// checkStrings walks the strings of msg, which fastjson.ValidateBytes
// has accepted, for what that validator lets through. It misses a raw
// control character in a string that also holds an escape (it checks only
// the part after the last escape), which is not JSON: proto.ErrBadJSON.
// And JSON allows a \u escape for half of a UTF-16 surrogate pair with
// the other half missing, which has no UTF-8 form: proto.ErrInvalidUTF8.
// encoding/json would turn such a half into U+FFFD; duet refuses it, as it
// refuses any other text that is not UTF-8, so that what the peer reads
// is what was sent. Malformed JSON wins over a lone surrogate, whichever
// comes first.
func checkStrings(msg []byte) *proto.Error {
	// Validation promises that every string closes and every escape is
	// complete; the bounds are checked all the same, so that a hole in it
	// is a bad_json answer rather than a panic.
	var lone bool
	i := 0
	for {
		// Outside strings, a '"' can only open one.
		j := bytes.IndexByte(msg[i:], '"')
		if j < 0 {
			break
		}
		i += j + 1
		// A string without escapes needs only a check for raw control
		// characters (the validator lets some through, e.g. a NUL right
		// before a raw backspace): two vectorized searches and one scan.
		// Only strings with escapes are walked escape by escape.
		if k := bytes.IndexByte(msg[i:], '"'); k >= 0 && bytes.IndexByte(msg[i:i+k], '\\') < 0 {
			if hasControl(msg[i : i+k]) {
				return proto.ErrBadJSON
			}
			i += k + 1
			continue
		}
		for {
			for i < len(msg) && msg[i] >= 0x20 && msg[i] != '"' && msg[i] != '\\' {
				i++
			}
			if i >= len(msg) || msg[i] < 0x20 {
				return proto.ErrBadJSON
			}
			if msg[i] == '"' {
				i++
				break
			}
			if i+1 >= len(msg) {
				return proto.ErrBadJSON
			}
			if msg[i+1] != 'u' {
				i += 2
				continue
			}
			r, ok := hex4(msg, i+2)
			if !ok {
				return proto.ErrBadJSON
			}
			i += 6
			switch {
			case 0xD800 <= r && r < 0xDC00:
				// A high half must be followed at once by a low half. If
				// another escape follows instead, leave it to the next
				// round: it may be the high half of a pair of its own.
				if i+1 < len(msg) && msg[i] == '\\' && msg[i+1] == 'u' {
					if low, ok := hex4(msg, i+2); ok && 0xDC00 <= low && low < 0xE000 {
						i += 6
						continue
					}
				}
				lone = true
			case 0xDC00 <= r && r < 0xE000:
				lone = true
			}
		}
	}
	if lone {
		return proto.ErrInvalidUTF8
	}
	return nil
}

// hasControl reports whether b holds a byte below 0x20, which JSON never
// allows raw inside a string.
func hasControl(b []byte) bool {
	for _, c := range b {
		if c < 0x20 {
			return true
		}
	}
	return false
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
