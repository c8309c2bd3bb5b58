package line

import (
	"bytes"
	"strconv"
	"unicode/utf8"

	"duet/proto"
)

// helpText answers /help. Every line starts with "* " like every other
// server line, so a reader can tell it from a peer's message.
const helpText = "" +
	"* commands (upper or lower case):\r\n" +
	"* /login NAME           log in as NAME: 1 to 32 letters, digits, '_', '-' or '.'\r\n" +
	"* /login NAME PASSWORD  log in when the server uses accounts\r\n" +
	"* /connect TOKEN        talk with the person who gave you TOKEN\r\n" +
	"* /leave                end the conversation and stay logged in\r\n" +
	"* /who                  show your name, your token and who you are talking with\r\n" +
	"* /newtoken             get a new token; the old one stops working\r\n" +
	"* /help                 show this list\r\n" +
	"* /quit                 close the connection (/exit works too)\r\n" +
	"* any other line goes to the person you are talking with; start it with // to send a line that begins with /\r\n"

// AppendEvent appends the line-protocol rendering of ev to dst: one or
// more lines, each ending in "\r\n". Server lines start with "* ", errors
// with "! ", and a peer's messages with "<name> ", so no message can pass
// for the server. An event of unknown kind appends nothing.
//
// Every string from a user is made safe for a terminal on the way out:
// control characters other than tab, DEL, C1 controls and bytes that are
// not UTF-8 become U+FFFD, so a peer cannot send escape sequences.
func AppendEvent(dst []byte, ev *proto.Event) []byte {
	switch ev.Kind {
	case proto.EvHello:
		if ev.Auth == "accounts" {
			return append(dst, "* welcome to duet. Log in with /login NAME PASSWORD, then share your token or /connect to someone's. /help lists the commands.\r\n"...)
		}
		return append(dst, "* welcome to duet. Log in with /login NAME, then share your token or /connect to someone's. /help lists the commands.\r\n"...)
	case proto.EvWelcome:
		dst = append(dst, "* you are "...)
		dst = appendSafe(dst, ev.Name)
		dst = append(dst, ", your token is "...)
		dst = ev.Token.Append(dst)
		return append(dst, "\r\n"...)
	case proto.EvPaired:
		if ev.Initiator {
			dst = append(dst, "* you are connected with "...)
			dst = appendSafe(dst, ev.Peer)
			return append(dst, "\r\n"...)
		}
		dst = append(dst, "* "...)
		dst = appendSafe(dst, ev.Peer)
		return append(dst, " is connected\r\n"...)
	case proto.EvMessage:
		prefixStart := len(dst)
		dst = append(dst, '<')
		dst = appendSafe(dst, ev.From)
		dst = append(dst, "> "...)
		return appendLines(dst, prefixStart, ev.Text)
	case proto.EvPeerLeft:
		return appendPeerLeft(dst, ev)
	case proto.EvLeft:
		dst = append(dst, "* you left "...)
		dst = appendSafe(dst, ev.Peer)
		return append(dst, "\r\n"...)
	case proto.EvStatus:
		dst = append(dst, "* you are "...)
		dst = appendSafe(dst, ev.Name)
		dst = append(dst, ", your token is "...)
		dst = ev.Token.Append(dst)
		if ev.Peer == "" {
			return append(dst, ", not connected\r\n"...)
		}
		dst = append(dst, ", connected with "...)
		dst = appendSafe(dst, ev.Peer)
		return append(dst, "\r\n"...)
	case proto.EvHelp:
		return append(dst, helpText...)
	case proto.EvError:
		err := ev.Err
		if err == nil {
			// An error event without an error is a bug upstream; say
			// something true and stable rather than print nothing.
			err = proto.ErrUnavailable
		}
		dst = append(dst, "! "...)
		dst = append(dst, err.Code...)
		dst = append(dst, ": "...)
		dst = appendSafe(dst, err.Text)
		return append(dst, "\r\n"...)
	case proto.EvShutdown:
		return append(dst, "* the server is shutting down; goodbye\r\n"...)
	case proto.EvBye:
		return append(dst, "* bye\r\n"...)
	case proto.EvNotice:
		prefixStart := len(dst)
		dst = append(dst, "* "...)
		return appendLines(dst, prefixStart, ev.Text)
	}
	return dst
}

// peerLeftWords is how each reason reads around the peer's name.
var peerLeftWords = map[proto.Reason]struct{ before, after string }{
	proto.ReasonLeft:         {"", " left"},
	proto.ReasonDisconnected: {"", " disconnected"},
	proto.ReasonShutdown:     {"", "'s server is shutting down"},
	proto.ReasonSlow:         {"", " stopped reading and was cut off"},
	proto.ReasonTimeout:      {"", " timed out"},
	proto.ReasonReplaced:     {"", " logged in elsewhere"},
	proto.ReasonLinkLost:     {"lost the link to ", "'s server"},
	"":                       {"", " is gone"},
}

// appendPeerLeft says who is gone and why, how many messages were lost on
// the way to them, and that the user may be joined again.
func appendPeerLeft(dst []byte, ev *proto.Event) []byte {
	dst = append(dst, "* "...)
	if w, known := peerLeftWords[ev.Reason]; known {
		dst = append(dst, w.before...)
		dst = appendSafe(dst, ev.Peer)
		dst = append(dst, w.after...)
	} else {
		// A reason added to proto before this codec learns its wording
		// still reaches the user, by its code.
		dst = appendSafe(dst, ev.Peer)
		dst = append(dst, " is gone ("...)
		dst = appendSafe(dst, string(ev.Reason))
		dst = append(dst, ')')
	}
	if ev.Count > 0 {
		dst = append(dst, "; "...)
		dst = strconv.AppendInt(dst, int64(ev.Count), 10)
		if ev.Count == 1 {
			dst = append(dst, " of your messages was not delivered"...)
		} else {
			dst = append(dst, " of your messages were not delivered"...)
		}
	}
	return append(dst, "; you are free to be joined again\r\n"...)
}

// appendLines appends text as one or more lines. The bytes of dst from
// prefixStart on are the first line's prefix (already appended); every
// later line repeats them. Text splits at each '\n', a '\r' before a '\n'
// is dropped, and a final '\n' does not start another, empty line.
func appendLines(dst []byte, prefixStart int, text []byte) []byte {
	if plainPrefix(text) == len(text) {
		// One line with nothing to replace: the common case.
		dst = append(dst, text...)
		return append(dst, "\r\n"...)
	}
	prefixEnd := len(dst)
	for first := true; ; first = false {
		if !first {
			// Appending a slice of dst to itself is safe: if append has
			// to grow dst, it copies from the old array, which still holds
			// the prefix.
			dst = append(dst, dst[prefixStart:prefixEnd]...)
		}
		nl := bytes.IndexByte(text, '\n')
		if nl < 0 {
			dst = appendSafe(dst, text)
			return append(dst, "\r\n"...)
		}
		segment := text[:nl]
		if len(segment) > 0 && segment[len(segment)-1] == '\r' {
			segment = segment[:len(segment)-1]
		}
		dst = appendSafe(dst, segment)
		dst = append(dst, "\r\n"...)
		text = text[nl+1:]
		if len(text) == 0 {
			return dst
		}
	}
}

// AppendMessages appends a message event from one sender for each text,
// the same bytes as AppendEvent appends for each in turn, with the
// sender's "<name> " made once for the whole run.
func AppendMessages(dst []byte, from string, texts [][]byte) []byte {
	prefixStart := len(dst)
	dst = append(dst, '<')
	dst = appendSafe(dst, from)
	dst = append(dst, "> "...)
	prefixEnd := len(dst)
	for i, text := range texts {
		start := prefixStart
		if i > 0 {
			start = len(dst)
			dst = append(dst, dst[prefixStart:prefixEnd]...)
		}
		dst = appendLines(dst, start, text)
	}
	if len(texts) == 0 {
		dst = dst[:prefixStart]
	}
	return dst
}

// replacementChar stands in for anything a terminal must not see.
const replacementChar = "\uFFFD"

// appendSafe appends s with every character a terminal could act on
// replaced by U+FFFD: C0 controls except tab (ESC among them), DEL, C1
// controls (U+0080 to U+009F; some terminals take U+009B as CSI), and
// bytes that are not UTF-8. Line breaks are the caller's to handle: here
// they are controls like any other.
func appendSafe[Bytes []byte | string](dst []byte, s Bytes) []byte {
	start := 0
	for i := 0; i < len(s); {
		// Fast path: eight plain printable ASCII bytes at a time, which is
		// nearly all chat text.
		if i+8 <= len(s) && plainWord(uint64(s[i])|uint64(s[i+1])<<8|uint64(s[i+2])<<16|uint64(s[i+3])<<24|
			uint64(s[i+4])<<32|uint64(s[i+5])<<40|uint64(s[i+6])<<48|uint64(s[i+7])<<56) {
			i += 8
			continue
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != 0x7f || c == '\t' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			dst = append(dst, replacementChar...)
			i++
			start = i
			continue
		}
		// Converting at most utf8.UTFMax bytes to a string lets the
		// compiler keep the copy on the stack, so []byte input does not
		// allocate.
		n := min(len(s)-i, utf8.UTFMax)
		r, size := utf8.DecodeRuneInString(string(s[i : i+n]))
		if r == utf8.RuneError && size == 1 || r >= 0x80 && r <= 0x9f {
			dst = append(dst, s[start:i]...)
			dst = append(dst, replacementChar...)
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(dst, s[start:]...)
}
