package line

import (
	"bytes"
	"strconv"
	"unicode"
	"unicode/utf8"

	"duet/proto"
)

// The answer to /help: the login its server takes (helpLogin without
// accounts, helpLoginAccounts with), and /resume only on a server that
// keeps sessions to resume. Every line starts with "* " like every other
// server line, so a reader can tell it from a peer's message.
const (
	helpHead          = "* commands (upper or lower case):\r\n"
	helpLogin         = "* /login NAME           log in as NAME: 1 to 32 letters a-z or A-Z, digits, '_', '-' or '.'\r\n"
	helpLoginAccounts = "* /login NAME PASSWORD  log in with your account's name and password\r\n"
	helpCommands      = "" +
		"* /connect TOKEN        talk with the person who gave you TOKEN\r\n" +
		"* /leave                end the conversation and stay logged in\r\n" +
		"* /who                  show your name, your token and who you are talking with\r\n" +
		"* /newtoken             get a new token; the old one stops working\r\n"
	helpResume = "* /resume KEY           instead of logging in: take your session back after your connection dropped, with the resume key you were shown\r\n"
	helpTail   = "" +
		"* /help                 show this list\r\n" +
		"* /quit                 close the connection (/exit works too)\r\n" +
		"* any other line goes to the person you are talking with; start it with // to send a line that begins with /\r\n"
)

// appendHelp appends the answer to /help (ev: EvHelp) to dst.
func appendHelp(dst []byte, ev *proto.Event) []byte {
	dst = append(dst, helpHead...)
	if ev.Auth == "accounts" {
		dst = append(dst, helpLoginAccounts...)
	} else {
		dst = append(dst, helpLogin...)
	}
	dst = append(dst, helpCommands...)
	if ev.Window > 0 {
		dst = append(dst, helpResume...)
	}
	return append(dst, helpTail...)
}

// appendWaiting appends how long the server waits for ev's partner,
// away (EvPeerAway, EvStatus with PeerAway), to come back.
func appendWaiting(dst []byte, ev *proto.Event) []byte {
	dst = append(dst, "; waiting up to "...)
	dst = proto.AppendWindow(dst, ev.Window)
	dst = append(dst, " for "...)
	dst = appendSafe(dst, ev.Peer)
	return append(dst, " to come back"...)
}

// AppendEvent appends the line-protocol rendering of ev to dst: one or
// more lines, each ending in "\r\n". Server lines start with "* ", errors
// with "! ", and a peer's messages with "<name> ", so no message can pass
// for the server. An event of unknown kind appends nothing.
//
// Every string from a user is made safe for a terminal on the way out:
// control characters other than tab, DEL, C1 controls, format characters
// and bytes that are not UTF-8 become U+FFFD, so a peer cannot send
// escape sequences or hide and reorder text; and no part of a peer's
// message can read as a server line wherever a terminal wraps it
// (appendFiltered).
func AppendEvent(dst []byte, ev *proto.Event) []byte {
	switch ev.Kind {
	case proto.EvHello:
		if ev.Auth == "accounts" {
			return append(dst, "* welcome to duet. Log in with /login NAME PASSWORD, then share your token or /connect to someone's. /help lists the commands.\r\n"...)
		}
		return append(dst, "* welcome to duet. Log in with /login NAME, then share your token or /connect to someone's. /help lists the commands.\r\n"...)
	case proto.EvWelcome:
		if ev.NewToken {
			dst = append(dst, "* your new token is "...)
			dst = ev.Token.Append(dst)
			return append(dst, "; the one before no longer works\r\n"...)
		}
		dst = append(dst, "* you are "...)
		dst = appendSafe(dst, ev.Name)
		dst = append(dst, ", your token is "...)
		dst = ev.Token.Append(dst)
		dst = append(dst, "\r\n"...)
		return appendResumeKey(dst, ev)
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
		return appendLines(dst, prefixStart, ev.Text, true)
	case proto.EvPeerLeft, proto.EvEndedAway:
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
		if ev.PeerAway {
			// As peer_away said it, which the user may have scrolled
			// past: who types /who wonders why nothing comes.
			if ev.Reason == proto.ReasonShutdown {
				dst = append(dst, ", whose server is restarting"...)
			} else {
				dst = append(dst, ", who lost the connection"...)
			}
			dst = appendWaiting(dst, ev)
		}
		return append(dst, "\r\n"...)
	case proto.EvHelp:
		return appendHelp(dst, ev)
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
		dst = appendLines(dst, prefixStart, ev.Text, false)
		if ev.Count > 0 {
			// An ending's notice that the user's own messages were lost
			// with the connection says how many on its last line, as a
			// partner's leaving does.
			dst = appendUndelivered(dst[:len(dst)-len("\r\n")], ev.Count)
			dst = append(dst, "\r\n"...)
		}
		return dst
	case proto.EvResumed:
		return appendResumed(dst, ev)
	case proto.EvReplayEnd:
		dst = append(dst, "* end of missed messages\r\n"...)
		return appendResumeTail(dst, ev)
	case proto.EvPeerAway:
		dst = append(dst, "* "...)
		dst = appendSafe(dst, ev.Peer)
		if ev.Reason == proto.ReasonShutdown {
			dst = append(dst, "'s server is restarting"...)
		} else {
			dst = append(dst, " lost the connection"...)
		}
		dst = appendWaiting(dst, ev)
		if ev.Count > 0 {
			dst = appendUndelivered(dst, ev.Count)
		}
		return append(dst, "\r\n"...)
	case proto.EvPeerBack:
		dst = append(dst, "* "...)
		dst = appendSafe(dst, ev.Peer)
		return append(dst, " is back\r\n"...)
	case proto.EvSealed:
		// A terminal cannot open an envelope, and base64 is no use to a
		// person: the line says one came. A session gets one only when
		// it was resumed over the line protocol with sealed frames kept
		// for it; a live line partner is never sent one.
		dst = append(dst, "* "...)
		dst = appendSafe(dst, ev.From)
		return append(dst, " sent an encrypted message that a terminal cannot read\r\n"...)
	}
	return dst
}

// appendResumeKey tells a session its resume key, if it has one, and how
// to use it: the line holds the key and the words "resume key", which is
// what a person (or a script) looks for.
func appendResumeKey(dst []byte, ev *proto.Event) []byte {
	if ev.ResumeKey == "" {
		return dst
	}
	dst = append(dst, "* resume key: "...)
	dst = appendSafe(dst, ev.ResumeKey)
	dst = append(dst, " (if your connection drops, reconnect and type /resume "...)
	dst = appendSafe(dst, ev.ResumeKey)
	dst = append(dst, " within "...)
	dst = proto.AppendWindow(dst, ev.Window)
	return append(dst, ")\r\n"...)
}

// appendResumed answers a resume: who the user is and with whom, then
// either the head of the list of missed messages that follows (closed by
// EvReplayEnd), or, with nothing to replay, the rest of the answer.
func appendResumed(dst []byte, ev *proto.Event) []byte {
	dst = append(dst, "* resumed: you are "...)
	dst = appendSafe(dst, ev.Name)
	dst = append(dst, ", your token is "...)
	dst = ev.Token.Append(dst)
	if ev.Peer == "" {
		dst = append(dst, "; you are not connected to anyone\r\n"...)
	} else {
		dst = append(dst, "; you are connected with "...)
		dst = appendSafe(dst, ev.Peer)
		dst = append(dst, "\r\n"...)
	}
	if ev.Count <= 0 {
		return appendResumeTail(dst, ev)
	}
	dst = append(dst, "* "...)
	dst = strconv.AppendInt(dst, int64(ev.Count), 10)
	if ev.Count == 1 {
		return append(dst, " message you may have missed:\r\n"...)
	}
	return append(dst, " messages you may have missed:\r\n"...)
}

// appendResumeTail ends the answer to a resume: how many messages could
// not be kept, if any, the new resume key, and, when paired, that a
// line the user typed as the connection dropped may be lost. Such a
// line never reached the server, and the line protocol numbers no line
// (a JSON client learns which of its messages arrived from last_id): the
// partner is the one who can say what arrived.
func appendResumeTail(dst []byte, ev *proto.Event) []byte {
	if ev.Missed > 0 {
		dst = append(dst, "* "...)
		dst = strconv.AppendInt(dst, int64(ev.Missed), 10)
		if ev.Missed == 1 {
			dst = append(dst, " older message could not be kept\r\n"...)
		} else {
			dst = append(dst, " older messages could not be kept\r\n"...)
		}
	}
	dst = appendResumeKey(dst, ev)
	if ev.Peer == "" {
		return dst
	}
	dst = append(dst, "* anything you typed as your connection dropped may not have reached "...)
	dst = appendSafe(dst, ev.Peer)
	dst = append(dst, "; ask "...)
	dst = appendSafe(dst, ev.Peer)
	return append(dst, ", or send it again\r\n"...)
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
// the way to them, and that the user may be joined again; or, for a
// pairing that ended while the user was away and was followed by
// another, that it ended then.
func appendPeerLeft(dst []byte, ev *proto.Event) []byte {
	dst = append(dst, "* "...)
	if ev.JoinedAway || ev.Kind == proto.EvEndedAway {
		dst = append(dst, "while you were away, "...)
		if ev.JoinedAway {
			// Its user never heard of the pairing: its start first.
			dst = appendSafe(dst, ev.Peer)
			dst = append(dst, " connected to you; then "...)
		}
		if w := peerLeftWords[ev.Reason]; w.before != "" {
			// A reason worded with no subject ("lost the link to bob's
			// server") needs one here.
			dst = append(dst, "you "...)
		}
	}
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
		dst = appendUndelivered(dst, ev.Count)
	}
	if ev.Kind == proto.EvEndedAway {
		return append(dst, "\r\n"...)
	}
	return append(dst, "; you are free to be joined again\r\n"...)
}

// appendUndelivered says that n of the user's messages were not
// delivered: to a partner who left (peer_left) or went away (peer_away),
// or from a connection that ended (an ending's notice).
func appendUndelivered(dst []byte, n int) []byte {
	dst = append(dst, "; "...)
	dst = strconv.AppendInt(dst, int64(n), 10)
	if n == 1 {
		return append(dst, " of your messages was not delivered"...)
	}
	return append(dst, " of your messages were not delivered"...)
}

// appendLines appends text as one or more lines. The bytes of dst from
// prefixStart on are the first line's prefix (already appended); every
// later line repeats them. Text splits at each '\n', a '\r' before a '\n'
// is dropped, and a final '\n' does not start another, empty line. With
// peer set, text is a peer's, and is kept from looking like a server line
// wherever a terminal wraps it (appendFiltered).
func appendLines(dst []byte, prefixStart int, text []byte, peer bool) []byte {
	if plainText(text, peer) {
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
			dst = appendFiltered(dst, text, peer)
			return append(dst, "\r\n"...)
		}
		segment := text[:nl]
		if len(segment) > 0 && segment[len(segment)-1] == '\r' {
			segment = segment[:len(segment)-1]
		}
		dst = appendFiltered(dst, segment, peer)
		dst = append(dst, "\r\n"...)
		text = text[nl+1:]
		if len(text) == 0 {
			return dst
		}
	}
}

// AppendMessages appends a message event from one sender for each text,
// the same bytes as AppendEvent appends for each in turn, with the
// sender's "<name> " made once for the whole run, and appends to ends
// where each message ends in dst: the outbox counts by them what a
// connection cut off mid-write never got.
func AppendMessages(dst []byte, ends []int32, from string, texts [][]byte) ([]byte, []int32) {
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
		dst = appendLines(dst, start, text, true)
		ends = append(ends, int32(len(dst)))
	}
	if len(texts) == 0 {
		dst = dst[:prefixStart]
	}
	return dst, ends
}

// replacementChar stands in for anything a terminal must not see.
const replacementChar = "\uFFFD"

// brokenBlank stands in for the blank after a star or bang in a peer's
// text (see appendFiltered): a visible dot, so that the pair no longer
// reads as the start of a server line.
const brokenBlank = "\u00B7"

// appendSafe appends s with every character a terminal could act on
// replaced by U+FFFD (see appendFiltered).
func appendSafe[Bytes []byte | string](dst []byte, s Bytes) []byte {
	return appendFiltered(dst, s, false)
}

// appendFiltered appends s with every character a terminal could act on,
// or that would hide or reorder what is shown, replaced by U+FFFD: C0
// controls except tab (ESC among them), DEL, C1 controls (U+0080 to
// U+009F; some terminals take U+009B as CSI), format characters (Unicode
// category Cf: bidirectional overrides and isolates, zero-width spaces
// and joiners, the byte order mark, ...), the line and paragraph
// separators U+2028 and U+2029, and bytes that are not UTF-8. Line breaks
// are the caller's to handle: here they are controls like any other.
//
// With peer set, s is a peer's text, shown after "<name> ". A terminal
// wraps a long line wherever its width falls, so any character of it may
// start a row of the screen; a row that starts like a server line ("* "
// or "! code:") would pass for one. So a star (or a character made to
// look like one, isStar) followed by a blank (isBlankRune), after any
// combining marks, has the blank replaced by U+00B7 '·'; and so does a
// bang (isBang) followed by blanks, an error code and a colon.
func appendFiltered[Bytes []byte | string](dst []byte, s Bytes, peer bool) []byte {
	start := 0
	for i := 0; i < len(s); {
		// Fast path: eight plain printable ASCII bytes at a time, which is
		// nearly all chat text.
		if i+8 <= len(s) {
			w := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
				uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
			if plainWord(w) && (!peer || !hasStarOrBang(w)) {
				i += 8
				continue
			}
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != 0x7f || c == '\t' {
				if peer && (c == '*' || c == '!') {
					if at, size := spoofBlank(s, i+1, c == '!'); size > 0 {
						// Star, marks and blank all pass as they are but
						// for the blank.
						dst = append(dst, s[start:at]...)
						dst = append(dst, brokenBlank...)
						i = at + size
						start = i
						continue
					}
				}
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
		if r == utf8.RuneError && size == 1 || r <= 0x9f || mayBeFormat(r) && isFormat(r) {
			dst = append(dst, s[start:i]...)
			dst = append(dst, replacementChar...)
			i += size
			start = i
			continue
		}
		if peer && (isStar(r) || isBang(r)) {
			if at, bsize := spoofBlank(s, i+size, isBang(r)); bsize > 0 {
				dst = append(dst, s[start:at]...)
				dst = append(dst, brokenBlank...)
				i = at + bsize
				start = i
				continue
			}
		}
		i += size
	}
	return append(dst, s[start:]...)
}

// runeAt decodes the character at s[i], as appendFiltered does.
func runeAt[Bytes []byte | string](s Bytes, i int) (rune, int) {
	n := min(len(s)-i, utf8.UTFMax)
	return utf8.DecodeRuneInString(string(s[i : i+n]))
}

// spoofBlank looks at s from i, just after a star or, with bang set, a
// bang: past any combining marks, for a blank, and after a bang also for
// more blanks and an error's code and colon (codeAt): as the server
// writes it ([a-z0-9_]+:), or made to look like it, with letters of
// another script, marks a terminal draws as nothing, or a colon that is
// not one. It returns where that first blank is and its size, or a size
// of 0.
func spoofBlank[Bytes []byte | string](s Bytes, i int, bang bool) (at, size int) {
	for i < len(s) {
		r, n := runeAt(s, i)
		if !unicode.In(r, unicode.Mn, unicode.Me) {
			break
		}
		i += n
	}
	if i >= len(s) {
		return 0, 0
	}
	r, n := runeAt(s, i)
	if !isBlankRune(r) {
		return 0, 0
	}
	if !bang {
		return i, n
	}
	j := i + n
	for j < len(s) {
		r, m := runeAt(s, j)
		if !isBlankRune(r) {
			break
		}
		j += m
	}
	if codeAt(s, j) {
		return i, n
	}
	return 0, 0
}

// codeAt reports whether s at j starts with what reads as an error's
// code and its colon: letters of any script, digits or '_', then a colon
// or a character made to look like one, with any marks between them
// (which a terminal may draw as nothing).
func codeAt[Bytes []byte | string](s Bytes, j int) bool {
	letters := 0
	for j < len(s) {
		r, m := runeAt(s, j)
		j += m
		switch {
		case unicode.In(r, unicode.Mn, unicode.Me):
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_':
			letters++
		default:
			return letters > 0 && isColon(r)
		}
	}
	return false
}

// isColon reports whether r is ':' or a character made to look like it.
func isColon(r rune) bool {
	switch r {
	case ':', 0x02D0, 0x02F8, 0x0589, 0x05C3, 0x0703, 0x0704, 0x16EC, 0x1804,
		0x2236, 0xA789, 0xFE13, 0xFE55, 0xFF1A:
		return true
	}
	return false
}

// mayBeFormat is false for most characters that are not format
// characters, and cheap enough to be inlined in appendFiltered's loop:
// there are none below U+00AD, from U+00AE to U+05FF, or from U+2100 to
// U+FEFE (Latin, Greek, Cyrillic, the CJK scripts, ...).
func mayBeFormat(r rune) bool {
	return r == 0xAD || r >= 0x600 && (r < 0x2100 || r >= 0xFEFF)
}

// isFormat reports whether r is a format character or a line or
// paragraph separator: invisible, but able to reorder, join or hide
// what a terminal shows around it.
func isFormat(r rune) bool {
	switch {
	case r < 0x600:
		// Latin, Greek, Cyrillic, ...: only the soft hyphen.
		return r == 0xAD
	case r >= 0x2100 && r < 0xFEFF:
		// From letterlike symbols to the CJK scripts: none, which keeps
		// the table lookup below off the path of most text.
		return false
	}
	return r == 0x2028 || r == 0x2029 || unicode.Is(unicode.Cf, r)
}

// isStar reports whether r is '*' or a character made to look like it:
// those Unicode's confusables list gives for it, and its small and
// fullwidth forms.
func isStar(r rune) bool {
	switch r {
	case '*', 0x066D, 0x204E, 0x2217, 0xFE61, 0xFF0A, 0x1031F:
		return true
	}
	return false
}

// isBang reports whether r is '!' or a character made to look like it.
func isBang(r rune) bool {
	switch r {
	case '!', 0x01C3, 0x2D51, 0xFE57, 0xFF01:
		return true
	}
	return false
}

// isBlankRune reports whether r shows as blank space: tab, a space of any
// width (Unicode category Zs), and the fillers fonts draw as nothing.
func isBlankRune(r rune) bool {
	switch r {
	case '\t', 0x115F, 0x1160, 0x2800, 0x3164, 0xFFA0:
		return true
	}
	return unicode.Is(unicode.Zs, r)
}

// hasStarOrBang reports whether any of the eight bytes of w is '*' or
// '!'. A byte of w is c when w^c·ones has a zero byte, and
// (v-ones)&^v&highs is not zero exactly when some byte of v is zero.
func hasStarOrBang(w uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	star, bang := w^'*'*ones, w^'!'*ones
	return ((star-ones)&^star|(bang-ones)&^bang)&highs != 0
}
