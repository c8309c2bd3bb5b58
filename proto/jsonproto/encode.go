package jsonproto

import (
	"math/bits"
	"strconv"
	"time"
	"unicode/utf8"

	"duet/proto"
)

// helpText answers help: the message types, for whoever reads the frame.
const helpText = "" +
	"login {name, password?}: log in; password only when the server uses accounts\n" +
	"connect {token}: talk with the person who gave you the token\n" +
	"say {text, id?}: send text to the person you are talking with; id, a count you give it, is named by the error that refuses it\n" +
	"leave: end the conversation and stay logged in\n" +
	"who: get your name, your token and who you are talking with\n" +
	"newtoken: get a new token; the old one stops working\n" +
	"resume {key, last?}: instead of login: take your session back after your connection dropped; last is the seq of the last message you received\n" +
	"ack {last}: confirm you received the messages up to seq last, so the server need not keep them\n" +
	"seal {data, id?}: send an end-to-end encrypted envelope (base64url) to the person you are talking with, id as for say; see docs/E2E.md\n" +
	"help: show this list\n" +
	"quit: close the connection"

// shutdownText goes with the shutdown event.
const shutdownText = "the server is shutting down; goodbye"

// AppendEvent appends ev as one compact JSON object, without a trailing
// newline. Strings are escaped by appendString. An event of unknown kind
// appends nothing.
func AppendEvent(dst []byte, ev *proto.Event) []byte {
	switch ev.Kind {
	case proto.EvHello:
		auth := ev.Auth
		if auth == "" {
			auth = "open"
		}
		dst = append(dst, `{"type":"hello","auth":`...)
		dst = appendString(dst, auth)
		dst = append(dst, `,"server":"duet"`...)
		if ev.MaxText > 0 {
			dst = append(dst, `,"max_text":`...)
			dst = strconv.AppendInt(dst, int64(ev.MaxText), 10)
		}
		return append(dst, '}')
	case proto.EvWelcome:
		dst = append(dst, `{"type":"welcome","name":`...)
		dst = appendString(dst, ev.Name)
		if ev.NewToken {
			dst = appendToken(dst, ev.Token, ',')
			return append(dst, `"newtoken":true}`...)
		}
		if ev.ResumeKey == "" {
			return appendToken(dst, ev.Token, '}')
		}
		dst = appendToken(dst, ev.Token, ',')
		return appendResumeKey(dst, ev)
	case proto.EvPaired:
		dst = append(dst, `{"type":"paired","peer":`...)
		dst = appendString(dst, ev.Peer)
		dst = appendInitiator(dst, ev.Initiator)
		dst = appendPairing(dst, ev)
		return append(dst, '}')
	case proto.EvSealed:
		dst = append(dst, `{"type":"sealed","from":`...)
		dst = appendString(dst, ev.From)
		dst = append(dst, `,"data":`...)
		// The data was checked to be base64url (IsBase64URL) when it
		// came in, but it is escaped like any string all the same: the
		// encoder does not trust what the core hands it.
		dst = appendString(dst, ev.Text)
		if ev.Seq > 0 {
			dst = append(dst, `,"seq":`...)
			dst = strconv.AppendUint(dst, ev.Seq, 10)
		}
		return append(dst, '}')
	case proto.EvMessage:
		dst = AppendMessageHead(dst, ev.From)
		return AppendMessageText(dst, ev.Text, ev.Seq)
	case proto.EvPeerLeft, proto.EvEndedAway:
		dst = append(dst, `{"type":"`...)
		dst = append(dst, ev.Kind.String()...)
		dst = append(dst, `","peer":`...)
		dst = appendString(dst, ev.Peer)
		dst = append(dst, `,"reason":`...)
		dst = appendString(dst, string(ev.Reason))
		dst = appendUndelivered(dst, ev.Count)
		if ev.JoinedAway {
			dst = append(dst, `,"joined_away":true`...)
		}
		return append(dst, '}')
	case proto.EvLeft:
		dst = append(dst, `{"type":"left","peer":`...)
		dst = appendString(dst, ev.Peer)
		return append(dst, '}')
	case proto.EvStatus:
		dst = append(dst, `{"type":"status","name":`...)
		dst = appendString(dst, ev.Name)
		if ev.Peer == "" {
			return appendToken(dst, ev.Token, '}')
		}
		dst = appendToken(dst, ev.Token, ',')
		dst = append(dst, `"peer":`...)
		dst = appendString(dst, ev.Peer)
		if ev.PeerAway {
			dst = append(dst, `,"peer_away":true,"window_s":`...)
			dst = appendSeconds(dst, ev.Window)
			if ev.Reason != "" {
				dst = append(dst, `,"reason":`...)
				dst = appendString(dst, string(ev.Reason))
			}
		}
		return append(dst, '}')
	case proto.EvHelp:
		dst = append(dst, `{"type":"help","text":`...)
		dst = appendString(dst, helpText)
		return append(dst, '}')
	case proto.EvError:
		err := ev.Err
		if err == nil {
			// An error event without an error is a bug upstream; say
			// something true and stable rather than send a null code.
			err = proto.ErrUnavailable
		}
		dst = append(dst, `{"type":"error","code":`...)
		dst = appendString(dst, err.Code)
		dst = append(dst, `,"text":`...)
		dst = appendString(dst, err.Text)
		if ev.RetryAfter > 0 {
			dst = append(dst, `,"retry_after":`...)
			dst = appendSeconds(dst, ev.RetryAfter)
		}
		if ev.ID > 0 {
			dst = append(dst, `,"id":`...)
			dst = strconv.AppendUint(dst, ev.ID, 10)
		}
		return append(dst, '}')
	case proto.EvShutdown:
		dst = append(dst, `{"type":"shutdown","text":`...)
		dst = appendString(dst, shutdownText)
		return append(dst, '}')
	case proto.EvBye:
		return append(dst, `{"type":"bye"}`...)
	case proto.EvNotice:
		dst = append(dst, `{"type":"notice","text":`...)
		dst = appendString(dst, ev.Text)
		if ev.Err != nil {
			// A count of says refused: why, by code, and which, when
			// the client numbered them.
			dst = append(dst, `,"code":`...)
			dst = appendString(dst, ev.Err.Code)
			if ev.FirstID > 0 && ev.ID > 0 {
				dst = append(dst, `,"first_id":`...)
				dst = strconv.AppendUint(dst, ev.FirstID, 10)
				dst = append(dst, `,"last_id":`...)
				dst = strconv.AppendUint(dst, ev.ID, 10)
			}
		}
		// An ending's notice: the user's own messages lost with the
		// connection, counted as a partner's leaving counts them.
		dst = appendUndelivered(dst, ev.Count)
		return append(dst, '}')
	case proto.EvResumed:
		dst = append(dst, `{"type":"resumed","name":`...)
		dst = appendString(dst, ev.Name)
		dst = appendToken(dst, ev.Token, ',')
		if ev.Peer != "" {
			dst = append(dst, `"peer":`...)
			dst = appendString(dst, ev.Peer)
			dst = appendInitiator(dst, ev.Initiator)
			dst = appendPairing(dst, ev)
			dst = append(dst, ',')
		}
		dst = append(dst, `"replayed":`...)
		dst = strconv.AppendInt(dst, int64(ev.Count), 10)
		dst = append(dst, `,"missed":`...)
		dst = strconv.AppendInt(dst, int64(ev.Missed), 10)
		// There whenever it is known, 0 included: a page that numbered
		// messages the server never had tells by it that none of them
		// reached it. When it is not known, the page is told nothing,
		// and leaves its messages as they are.
		if ev.ID != proto.IDUnknown {
			dst = append(dst, `,"last_id":`...)
			dst = strconv.AppendUint(dst, ev.ID, 10)
		}
		if ev.ResumeKey == "" {
			// Resume was turned off meanwhile: no key for the next drop.
			return append(dst, '}')
		}
		dst = append(dst, ',')
		return appendResumeKey(dst, ev)
	case proto.EvReplayEnd:
		// The resumed event said how many messages follow; a JSON client
		// counts them, and needs no frame to close the list.
		return dst
	case proto.EvPeerAway:
		dst = append(dst, `{"type":"peer_away","name":`...)
		dst = appendString(dst, ev.Peer)
		dst = append(dst, `,"window_s":`...)
		dst = appendSeconds(dst, ev.Window)
		dst = appendUndelivered(dst, ev.Count)
		if ev.Reason != "" {
			dst = append(dst, `,"reason":`...)
			dst = appendString(dst, string(ev.Reason))
		}
		return append(dst, '}')
	case proto.EvPeerBack:
		dst = append(dst, `{"type":"peer_back","name":`...)
		dst = appendString(dst, ev.Peer)
		dst = appendPairing(dst, ev)
		return append(dst, '}')
	}
	return dst
}

// appendUndelivered appends the "undelivered" member when n, a count of
// the user's messages that were not delivered, is not 0.
func appendUndelivered(dst []byte, n int) []byte {
	if n <= 0 {
		return dst
	}
	dst = append(dst, `,"undelivered":`...)
	return strconv.AppendInt(dst, int64(n), 10)
}

// appendInitiator appends the "initiator" member.
func appendInitiator(dst []byte, initiator bool) []byte {
	if initiator {
		return append(dst, `,"initiator":true`...)
	}
	return append(dst, `,"initiator":false`...)
}

// appendPairing appends what a page needs to know about a pairing to
// encrypt it (docs/E2E.md): "peer_proto", when the partner's protocol is
// known, and "pair_id", when the event names a pairing.
func appendPairing(dst []byte, ev *proto.Event) []byte {
	if p := ev.PeerProto.String(); p != "" {
		dst = append(dst, `,"peer_proto":"`...)
		dst = append(dst, p...)
		dst = append(dst, '"')
	}
	if ev.PairID != 0 {
		dst = append(dst, `,"pair_id":"`...)
		for shift := 60; shift >= 0; shift -= 4 {
			dst = append(dst, hexDigits[ev.PairID>>uint(shift)&0xF])
		}
		dst = append(dst, '"')
	}
	return dst
}

// appendResumeKey appends the "resume_key" and "window_s" members and
// closes the object.
func appendResumeKey(dst []byte, ev *proto.Event) []byte {
	dst = append(dst, `"resume_key":`...)
	dst = appendString(dst, ev.ResumeKey)
	dst = append(dst, `,"window_s":`...)
	dst = appendSeconds(dst, ev.Window)
	return append(dst, '}')
}

// appendSeconds appends d in whole seconds, rounded up.
func appendSeconds(dst []byte, d time.Duration) []byte {
	return strconv.AppendInt(dst, int64((d+time.Second-1)/time.Second), 10)
}

// AppendMessageHead appends what comes before the text in a message
// event from from, and AppendMessageText the text and what follows it:
// the two append the same bytes as AppendEvent does for the event. A run
// of messages from one sender needs the head made only once, and copied
// in front of each text.
func AppendMessageHead(dst []byte, from string) []byte {
	dst = append(dst, `{"type":"message","from":`...)
	dst = appendString(dst, from)
	return append(dst, `,"text":`...)
}

// AppendMessageText appends text, and its seq when not 0, the rest of
// the message event that AppendMessageHead began. seq is per message, so
// it follows the text rather than sharing the run's head.
func AppendMessageText(dst []byte, text []byte, seq uint64) []byte {
	dst = append(dst, '"')
	dst = appendEscaped(dst, text)
	dst = append(dst, '"')
	if seq > 0 {
		dst = append(dst, `,"seq":`...)
		dst = strconv.AppendUint(dst, seq, 10)
	}
	return append(dst, '}')
}

// appendToken appends the "token" member and then next (',' or '}').
// A token is hexadecimal: it needs no escaping.
func appendToken(dst []byte, t proto.Token, next byte) []byte {
	dst = append(dst, `,"token":"`...)
	dst = t.Append(dst)
	return append(dst, '"', next)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string, quotes included. It escapes
// exactly as encoding/json does with HTML escaping off: '"' and '\\',
// control characters (\b \f \n \r \t by name, the rest as \u00XX), and
// U+2028 and U+2029, which JavaScript once took for line ends; each byte
// that is not UTF-8 becomes \ufffd. Everything else is copied as is.
func appendString[Bytes []byte | string](dst []byte, s Bytes) []byte {
	dst = append(dst, '"')
	dst = appendEscaped(dst, s)
	return append(dst, '"')
}

// appendEscaped appends s escaped as appendString does, without the
// quotes.
func appendEscaped[Bytes []byte | string](dst []byte, s Bytes) []byte {
	// Nearly every string needs no escaping at all, and plainRun finds
	// whether that is so in one tight loop: such a string is copied
	// whole.
	i := plainRun(s)
	if i == len(s) {
		return append(dst, s...)
	}
	start := 0
	for i < len(s) {
		// Fast path: eight bytes at a time while they need no escaping,
		// which is nearly all chat text, up to the first byte that needs
		// a look of its own (see stringBody in decode.go on the constant
		// step).
		for i <= len(s)-8 {
			if m := notPlain(load8(s, i)); m != 0 {
				i += bits.TrailingZeros64(m) / 8
				break
			}
			i += 8
		}
		if i >= len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		// Converting at most utf8.UTFMax bytes to a string lets the
		// compiler keep the copy on the stack, so []byte input does not
		// allocate.
		n := min(len(s)-i, utf8.UTFMax)
		r, size := utf8.DecodeRuneInString(string(s[i : i+n]))
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(dst, s[start:]...)
}
