package jsonproto

import (
	"bytes"
	"encoding/base64"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/valyala/fastjson"

	"duet/proto"
)

// referenceDecoder is the decoder duet had before Decoder's single pass:
// four passes built on fastjson (UTF-8, fastjson's validator, a walk of
// the strings for what that validator misses, then fastjson's parser).
// It is slow but simple, and its answers are the contract: the
// differential fuzz target holds Decoder to them, error for error. It
// shares no code with Decoder, so that a bug in one is not hidden by the
// same bug in the other.
type referenceDecoder struct {
	parser fastjson.Parser
}

// referenceFields holds the members the reference decoder reads.
type referenceFields struct {
	typ, name, password, token, text, key, last, data *fastjson.Value
	duplicate                                         bool
	// id, read after the others, is ignored when repeated or not a
	// count, as it was before it was read.
	id      *fastjson.Value
	idTwice bool
	// typeTwice: "type" was given more than once.
	typeTwice bool
}

// named is the Command that names a say or seal refused for a lone
// surrogate or a repeated member: its Op and ID when its type is given
// once and is "say" or "seal", and its id is a count given once (not
// 0); else the zero Command.
func (f *referenceFields) named() proto.Command {
	typ, ok := referenceStringOf(f.typ)
	id := f.messageID()
	if !ok || f.typeTwice || id == 0 {
		return proto.Command{}
	}
	switch string(typ) {
	case "say":
		return proto.Command{Op: proto.OpSay, ID: id}
	case "seal":
		return proto.Command{Op: proto.OpSeal, ID: id}
	}
	return proto.Command{}
}

// messageID is the id of a say or seal: a count given once, else 0.
func (f *referenceFields) messageID() uint64 {
	if f.idTwice {
		return 0
	}
	id, _ := referenceCountOf(f.id)
	return id
}

func (f *referenceFields) set(key []byte, v *fastjson.Value) {
	var slot **fastjson.Value
	switch string(key) {
	case "type":
		f.typeTwice = f.typeTwice || f.typ != nil
		slot = &f.typ
	case "name":
		slot = &f.name
	case "password":
		slot = &f.password
	case "token":
		slot = &f.token
	case "text":
		slot = &f.text
	case "key":
		slot = &f.key
	case "last":
		slot = &f.last
	case "data":
		slot = &f.data
	case "id":
		f.idTwice = f.idTwice || f.id != nil
		f.id = v
		return
	default:
		return
	}
	if *slot != nil {
		f.duplicate = true
	}
	*slot = v
}

// Decode checks, in order: UTF-8 (proto.ErrInvalidUTF8), JSON
// (proto.ErrBadJSON), lone surrogate escapes (proto.ErrInvalidUTF8),
// nesting within fastjson.MaxDepth (proto.ErrBadJSON), an object
// (proto.ErrBadJSON), then the members. A say or seal refused for a
// lone surrogate or a repeated member is named (referenceFields.named);
// one refused before fastjson can parse it is not, and the fuzz targets
// check Decoder's answer for those by other means (checkNamed).
func (d *referenceDecoder) Decode(msg []byte) (proto.Command, *proto.Error) {
	if !utf8.Valid(msg) {
		return proto.Command{}, proto.ErrInvalidUTF8
	}
	// fastjson's parser is lenient (it takes NaN, 1.2.3 and raw control
	// characters in strings, and keeps bad escapes as text); its
	// validator is strict but for one gap, which referenceCheckStrings
	// closes. Validate first, so that anything the parser then accepts
	// is JSON.
	if fastjson.ValidateBytes(msg) != nil {
		return proto.Command{}, proto.ErrBadJSON
	}
	lone := referenceCheckStrings(msg)
	if lone == proto.ErrBadJSON {
		return proto.Command{}, lone
	}
	v, err := d.parser.ParseBytes(msg)
	if err != nil {
		// Valid JSON nested deeper than fastjson.MaxDepth.
		if lone != nil {
			return proto.Command{}, lone
		}
		return proto.Command{}, proto.ErrBadJSON
	}
	var f referenceFields
	if v.Type() == fastjson.TypeObject {
		v.GetObject().Visit(f.set)
	}
	if lone != nil {
		return f.named(), lone
	}
	if v.Type() != fastjson.TypeObject {
		return proto.Command{}, proto.ErrBadJSON
	}
	if f.duplicate {
		return f.named(), proto.ErrBadMessage
	}
	typ, ok := referenceStringOf(f.typ)
	if !ok {
		return proto.Command{}, proto.ErrBadMessage
	}
	switch string(typ) {
	case "login":
		if f.name == nil {
			return proto.Command{}, proto.ErrBadName
		}
		name, ok := referenceStringOf(f.name)
		if !ok {
			return proto.Command{}, proto.ErrBadMessage
		}
		var password []byte
		if f.password != nil {
			if password, ok = referenceStringOf(f.password); !ok {
				return proto.Command{}, proto.ErrBadMessage
			}
		}
		return proto.Command{Op: proto.OpLogin, Name: name, Password: password}, nil
	case "connect":
		if f.token == nil {
			return proto.Command{}, proto.ErrBadToken
		}
		token, ok := referenceStringOf(f.token)
		if !ok {
			return proto.Command{}, proto.ErrBadMessage
		}
		return proto.Command{Op: proto.OpConnect, Token: token}, nil
	case "say":
		text, ok := referenceStringOf(f.text)
		if !ok {
			return proto.Command{Op: proto.OpSay, ID: f.messageID()}, proto.ErrBadMessage
		}
		return proto.Command{Op: proto.OpSay, Text: text, ID: f.messageID()}, nil
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
		if f.key == nil {
			return proto.Command{}, proto.ErrBadResumeKey
		}
		key, ok := referenceStringOf(f.key)
		if !ok {
			return proto.Command{}, proto.ErrBadMessage
		}
		var last uint64
		if f.last != nil {
			if last, ok = referenceCountOf(f.last); !ok {
				return proto.Command{}, proto.ErrBadMessage
			}
		}
		return proto.Command{Op: proto.OpResume, Key: key, Last: last}, nil
	case "ack":
		last, ok := referenceCountOf(f.last)
		if !ok {
			return proto.Command{}, proto.ErrBadMessage
		}
		return proto.Command{Op: proto.OpAck, Last: last}, nil
	case "seal":
		data, ok := referenceStringOf(f.data)
		if !ok || len(data) == 0 || strings.Trim(string(data), referenceBase64URL) != "" || !referenceWholeBytes(data) {
			return proto.Command{Op: proto.OpSeal, ID: f.messageID()}, proto.ErrBadMessage
		}
		return proto.Command{Op: proto.OpSeal, Text: data, ID: f.messageID()}, nil
	}
	return proto.Command{}, proto.ErrUnknownType
}

// parses reports whether the reference decoder gets as far as parsing
// msg, and so can name a say or seal that msg is.
func (d *referenceDecoder) parses(msg []byte) bool {
	if !utf8.Valid(msg) || fastjson.ValidateBytes(msg) != nil || referenceCheckStrings(msg) == proto.ErrBadJSON {
		return false
	}
	var p fastjson.Parser // not d's, whose last values the caller may hold
	_, err := p.ParseBytes(msg)
	return err == nil
}

// referenceBase64URL is the base64url alphabet, spelled out.
const referenceBase64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// referenceWholeBytes reports whether data, of the base64url alphabet,
// is bytes as an encoder writes them without padding: what Go's strict
// decoder takes.
func referenceWholeBytes(data []byte) bool {
	_, err := base64.RawURLEncoding.Strict().DecodeString(string(data))
	return err == nil
}

// referenceCountOf returns v's value if v is a JSON number written with
// digits alone that strconv reads as a uint64.
func referenceCountOf(v *fastjson.Value) (uint64, bool) {
	if v == nil || v.Type() != fastjson.TypeNumber {
		return 0, false
	}
	raw := string(v.MarshalTo(nil))
	if strings.ContainsAny(raw, "-+.eE") {
		return 0, false
	}
	n, err := strconv.ParseUint(raw, 10, 64)
	return n, err == nil
}

// referenceStringOf returns v's unescaped bytes if v is a JSON string.
func referenceStringOf(v *fastjson.Value) ([]byte, bool) {
	if v == nil || v.Type() != fastjson.TypeString {
		return nil, false
	}
	s := v.GetStringBytes()
	return s[:len(s):len(s)], true
}

// referenceCheckStrings walks the strings of msg, which
// fastjson.ValidateBytes has accepted, for what that validator lets
// through: a raw control character in a string that also holds an
// escape (it checks only the part after the last escape), which is
// proto.ErrBadJSON, and a \u escape for half of a UTF-16 surrogate pair
// with the other half missing, which is proto.ErrInvalidUTF8. Malformed
// JSON wins over a lone surrogate, whichever comes first.
func referenceCheckStrings(msg []byte) *proto.Error {
	var lone bool
	i := 0
	for {
		// Outside strings, a '"' can only open one.
		j := bytes.IndexByte(msg[i:], '"')
		if j < 0 {
			break
		}
		i += j + 1
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
			r, ok := referenceHex4(msg, i+2)
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
					if low, ok := referenceHex4(msg, i+2); ok && 0xDC00 <= low && low < 0xE000 {
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

// referenceHex4 reads the four hexadecimal digits at msg[at:].
func referenceHex4(msg []byte, at int) (uint64, bool) {
	if at+4 > len(msg) {
		return 0, false
	}
	r, err := strconv.ParseUint(string(msg[at:at+4]), 16, 16)
	return r, err == nil
}
