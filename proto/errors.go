package proto

import (
	"strconv"
	"time"
)

// Error is a failure told to the client it concerns. Code is the stable
// API (clients switch on it); Text is for people and may change.
type Error struct {
	Code string
	Text string
}

func (e *Error) Error() string { return e.Code + ": " + e.Text }

// The errors duet reports. Each is a value with a stable code; the
// connection that receives one stays usable unless the text says so.
var (
	ErrNotLoggedIn = &Error{"not_logged_in", "log in first: /login NAME"}
	// ErrNotLoggedInAccounts is ErrNotLoggedIn on a server with
	// accounts, whose login takes a password, as its greeting says
	// (NotLoggedIn picks). Its Code is ErrNotLoggedIn's.
	ErrNotLoggedInAccounts = &Error{"not_logged_in", "log in first: /login NAME PASSWORD"}
	ErrAlreadyLoggedIn     = &Error{"already_logged_in", "you are already logged in"}
	ErrBadName             = &Error{"bad_name", "a name is 1 to 32 letters a-z or A-Z, digits, '_', '-' or '.'"}
	ErrNameTaken           = &Error{"name_taken", "that name is in use; pick another"}
	// ErrNameTakenElsewhere is ErrNameTaken told by a node of a cluster
	// for a name another node holds: whether its session is away (its
	// own user, back on another node) that node knows, not this one, so
	// the text says both. Its Code is ErrNameTaken's.
	ErrNameTakenElsewhere = &Error{"name_taken", "that name is in use on another server of this service; if it is yours and your connection dropped, resume it (on a terminal, /resume KEY with the key you were shown; a page resumes by itself when reloaded in its tab), or pick another"}
	ErrBadToken           = &Error{"bad_token", "a token is 32 hexadecimal characters"}
	ErrUnknownToken       = &Error{"unknown_token", "no one online holds that token; check it, or ask for a new one"}
	ErrSelfConnect        = &Error{"self_connect", "that is your own token; give it to the person you want to talk to"}
	ErrAlreadyPaired      = &Error{"already_paired", "you are already connected; /leave first"}
	ErrRoomFull           = &Error{"room_full", "Room is Full: that user is already talking with someone. Try the same token again when they are free"}
	ErrNotPaired          = &Error{"not_paired", "you are not connected to anyone; /connect TOKEN first"}
	ErrUnknownCommand     = &Error{"unknown_command", "unknown command; /help lists them (start a message with // to send a leading /)"}
	ErrUnknownType        = &Error{"unknown_type", "unknown message type"}
	ErrBadJSON            = &Error{"bad_json", "malformed JSON: send one JSON object per message"}
	ErrBadMessage         = &Error{"bad_message", "a field is missing, repeated, or not of the type it must be"}
	ErrTooLong            = &Error{"too_long", "message too long; it was not sent"}
	// ErrCommandTooLong is ErrTooLong for a line that starts as a command
	// (one "/"): nothing was to be sent. Its Code is ErrTooLong's.
	ErrCommandTooLong = &Error{"too_long", "line too long for a command; it was ignored"}
	ErrInvalidUTF8    = &Error{"invalid_utf8", "text must be valid UTF-8; it was not sent"}
	// ErrInvalidUTF8Telnet is ErrInvalidUTF8 told on the line port to a
	// client not sending in telnet's BINARY, for a line that telnet broke
	// (line.TelnetMangled): Debian's telnet changes some letters until it
	// first sends a telnet command, and a Ctrl-C is one (docs/PROTOCOL.md,
	// "Letters"). Its Code is ErrInvalidUTF8's.
	ErrInvalidUTF8Telnet = &Error{"invalid_utf8", "text must be valid UTF-8; it was not sent (if you use telnet, press Ctrl-C once, then type it again: telnet changes some letters until then)"}
	// ErrInvalidUTF8Terminal is ErrInvalidUTF8 told on the line port for
	// any other line: the terminal sends another encoding (Latin-1 é is
	// the byte e9), which only its user can change. Its Code is
	// ErrInvalidUTF8's.
	ErrInvalidUTF8Terminal = &Error{"invalid_utf8", "text must be valid UTF-8; it was not sent (set your terminal's character encoding to UTF-8)"}
	ErrEmptyMessage        = &Error{"empty_message", "nothing to send"}
	ErrRateLimited         = &Error{"rate_limited", "too many requests; slow down: those past the limit are dropped unanswered"}
	ErrThrottled           = &Error{"throttled", "too many failed connects or resumes from your address; wait and try again"}
	ErrAuthFailed          = &Error{"auth_failed", "wrong name or password"}
	// ErrNoPassword is ErrAuthFailed for a login that gave no password
	// on a server with accounts: nothing was checked, so it says what
	// was missing, alike for every name, which tells no one which names
	// exist. Its Code is ErrAuthFailed's.
	ErrNoPassword = &Error{"auth_failed", "this server has accounts: give your password too, /login NAME PASSWORD"}
	// ErrTooManyAttempts refuses a login without checking it: too many
	// have failed from the client's address or for the name, and the
	// attempts already waiting their turn fill the queue. The event that
	// carries it says when to try again (Event.RetryAfter).
	ErrTooManyAttempts = &Error{"too_many_attempts", "too many failed logins from your address or for that name; try again later"}
	ErrAlreadyOnline   = &Error{"already_online", "that account is already logged in elsewhere"}
	ErrUnavailable     = &Error{"unavailable", "the server cannot do that right now; try again shortly"}
	ErrShuttingDown    = &Error{"shutting_down", "the server is shutting down"}
	// ErrRestarting is ErrShuttingDown told to a connection that opens
	// while the server drains for a restart, whose users were just told
	// to reconnect: it is not going away for good. Its Code is
	// ErrShuttingDown's.
	ErrRestarting = &Error{"shutting_down", "the server is restarting; connect again in a moment"}
	// ErrBadResumeKey and ErrUnknownResumeKey share bad_resume_key: the
	// first for what cannot be a key, the second for a key no session
	// waits for. Which of wrong, expired or used it is, is not said: a
	// guesser must not learn that a key once existed.
	ErrBadResumeKey     = &Error{"bad_resume_key", "a resume key is 26 letters and digits, as the server showed it"}
	ErrUnknownResumeKey = &Error{"bad_resume_key", "no session is waiting for that resume key: it is wrong or was used already, or its session ended (a quit, closing nc or telnet, or the time to resume ran out); log in again"}
	// ErrSessionEndedWithNode is bad_resume_key for a key whose session
	// ended as the cluster node it was on stopped (it died, or stalled
	// past its lease and was reaped, or shut down): a client handles it
	// as any, and its user is told what happened. It is no guess: it
	// counts towards no throttle.
	ErrSessionEndedWithNode = &Error{"bad_resume_key", "your session ended when the server it was on stopped; log in again"}
	// ErrResumeOff is bad_resume_key for a key no session waits for on
	// a server with resume off (resume.window 0), which keeps no
	// session to resume: that, not a mistyped key, is what its user
	// needs to know. It counts towards no throttle either.
	ErrResumeOff = &Error{"bad_resume_key", "this server keeps no sessions to resume (its resume is off); log in again"}
	// ErrNoAccounts shares bad_name's code: in open mode a login of more
	// than one word is either a name with a space in it or a name and a
	// password the server does not use, and its text answers both.
	ErrNoAccounts = &Error{"bad_name", "a name is one word of 1 to 32 letters a-z or A-Z, digits, '_', '-' or '.'; this server has no accounts, so give no password"}
	// ErrZeroToken answers the all-zero token as ErrUnknownToken does,
	// code and text: it is well formed, and no one holds it. It is a
	// value of its own because, unlike a token some user might hold, it
	// guesses nothing, so the engine does not count it as a failed
	// connect (limits.connect_failures), as it does not a bad_token.
	ErrZeroToken = &Error{ErrUnknownToken.Code, ErrUnknownToken.Text}
	// ErrPeerAwayFull refuses a message to a partner who is away and
	// whose kept messages fill resume.buffer. It is sent as
	// PeerAwayFull makes it, with the partner's name and how much is
	// waiting; this text is the one without them.
	ErrPeerAwayFull = &Error{"peer_away_full", "your partner is away and no more of your messages can be kept for them; this one was not sent"}
	// ErrPeerCannotDecrypt refuses a sealed frame to a partner whose
	// client cannot open one (a terminal, which could only print
	// base64), or whom the server cannot vouch for.
	ErrPeerCannotDecrypt = &Error{"peer_cannot_decrypt", "your partner's client cannot read encrypted messages; it was not sent"}
	// ErrControlChar refuses a line that holds a key a terminal sends
	// as a control character rather than as text: an arrow (an escape
	// sequence), Escape, Ctrl-L and the like. The partner's terminal
	// could only show it as U+FFFD, and an arrow stands for an edit the
	// server cannot know, so the line is not sent as something else.
	ErrControlChar = &Error{"control_character", "the line holds a key that is not text (an arrow, Escape, Ctrl-L, ...); it was not sent"}

	// Connection-level errors: the connection closes right after them.
	ErrLoginTimeout   = &Error{"login_timeout", "no login within 1m; goodbye"} // LoginTimeout, with the default limit
	ErrServerFull     = &Error{"server_full", "the server has too many connections; try again later"}
	ErrTooManyConns   = &Error{"too_many_connections", "too many connections from your address"}
	ErrUntrustedProxy = &Error{"untrusted_proxy", "a PROXY header is accepted only from a trusted proxy"}
	// ErrBadProxyHeader is told by the line port to a connection from
	// a trusted proxy's address that began with no valid PROXY header:
	// most often an admin's nc on the proxy's host, who needs to know
	// why a port that greets others greets no one from there.
	ErrBadProxyHeader = &Error{"bad_proxy_header", "this port expects connections through the proxy: one from a trusted_proxies address must begin with a PROXY protocol header, and this one's was malformed or missing"}
	ErrHTTPRequest    = &Error{"http_request", "this port speaks duet's line protocol, not HTTP"}
	// ErrNotParked ends a session that a node of a cluster, draining
	// for a restart, could not park for a resume (its link to Redis
	// failed): no node will have it, so the client is not told to
	// resume, but to log in again.
	ErrNotParked = &Error{"not_parked", "the server is restarting and could not keep your session; log in again"}
	// ErrFlooded shares rate_limited's code, so a client needs to know
	// only one; its text says the connection is being closed.
	ErrFlooded = &Error{"rate_limited", "too many requests for too long; closing the connection"}
)

// Errors lists every error, for documentation and tests.
var Errors = []*Error{
	ErrNotLoggedIn, ErrNotLoggedInAccounts, ErrAlreadyLoggedIn, ErrBadName, ErrNoAccounts, ErrNameTaken, ErrBadToken,
	ErrUnknownToken, ErrZeroToken, ErrSelfConnect, ErrAlreadyPaired, ErrRoomFull, ErrNotPaired,
	ErrUnknownCommand, ErrUnknownType, ErrBadJSON, ErrBadMessage, ErrTooLong,
	ErrInvalidUTF8, ErrInvalidUTF8Telnet, ErrInvalidUTF8Terminal, ErrEmptyMessage, ErrRateLimited, ErrThrottled, ErrAuthFailed, ErrNoPassword,
	ErrTooManyAttempts, ErrAlreadyOnline, ErrUnavailable, ErrShuttingDown, ErrRestarting,
	ErrBadResumeKey, ErrUnknownResumeKey, ErrSessionEndedWithNode, ErrResumeOff, ErrPeerAwayFull, ErrPeerCannotDecrypt, ErrControlChar,
	ErrLoginTimeout, ErrServerFull, ErrTooManyConns, ErrUntrustedProxy, ErrBadProxyHeader, ErrHTTPRequest,
	ErrNotParked, ErrFlooded, ErrCommandTooLong,
}

// NotLoggedIn is the not_logged_in error of a server whose auth.mode is
// mode ("open" or "accounts"): it says how to log in there, as the hello
// does, so that following it does not end in auth_failed.
func NotLoggedIn(mode string) *Error {
	if mode == "accounts" {
		return ErrNotLoggedInAccounts
	}
	return ErrNotLoggedIn
}

// LoginTimeout is ErrLoginTimeout told with the limit, limits.login_timeout,
// so that whoever was cut off knows how long they have next time. Its
// Code is ErrLoginTimeout's.
func LoginTimeout(limit time.Duration) *Error {
	return &Error{Code: ErrLoginTimeout.Code, Text: string(AppendWindow([]byte("no login within "), limit)) + "; goodbye"}
}

// AlreadyPaired is ErrAlreadyPaired told with the partner's name: two
// users who connect to each other at once are paired by the first
// connect, and the second is answered so, which says who with. Its Code
// is ErrAlreadyPaired's; compare codes, not pointers.
func AlreadyPaired(peer string) *Error {
	return &Error{Code: ErrAlreadyPaired.Code, Text: "you are already connected with " + peer + "; /leave first to connect to someone else"}
}

// NameAway is ErrNameTaken told for a name whose session is away (its
// connection dropped, and it waits for a resume) for left more: most
// often its own user, back on a new connection, who needs to know that
// the name is theirs to resume, or to have again once that time is up,
// and not to pick another. Its Code is ErrNameTaken's.
func NameAway(left time.Duration) *Error {
	text := make([]byte, 0, 224)
	text = append(text, "that name is in use by a session whose connection dropped; if it is yours, resume it (on a terminal, /resume KEY with the key you were shown; a page resumes by itself when reloaded in its tab), or log in again once its time is up, in "...)
	text = AppendWindow(text, left)
	return &Error{Code: ErrNameTaken.Code, Text: string(text)}
}

// PeerAwayFull is ErrPeerAwayFull told with the partner's name and what
// is waiting for them: waiting messages kept since they went away,
// taking size bytes. None may be: what was kept for a resume before they
// went away (messages they may not have read) can fill the room on its
// own. Its Code is ErrPeerAwayFull's; compare codes, not pointers.
func PeerAwayFull(peer string, waiting int, size int64) *Error {
	text := make([]byte, 0, 96+len(peer))
	text = append(text, peer...)
	if waiting <= 0 {
		text = append(text, " is away, and the messages kept for them from before they went fill all the room there is; this one was not sent"...)
		return &Error{Code: ErrPeerAwayFull.Code, Text: string(text)}
	}
	text = append(text, " is away, and "...)
	text = strconv.AppendInt(text, int64(waiting), 10)
	text = append(text, " of your messages ("...)
	text = appendSize(text, size)
	if waiting == 1 {
		text = append(text, ") is waiting for them; this one was not sent"...)
	} else {
		text = append(text, ") are waiting for them; this one was not sent"...)
	}
	return &Error{Code: ErrPeerAwayFull.Code, Text: string(text)}
}

// appendSize appends n bytes in the unit a person reads best: bytes
// under 1 KiB, else KiB, rounded up, so a full buffer never reads as
// less than it is.
func appendSize(dst []byte, n int64) []byte {
	if n < 1024 {
		dst = strconv.AppendInt(dst, n, 10)
		return append(dst, " bytes"...)
	}
	dst = strconv.AppendInt(dst, (n+1023)/1024, 10)
	return append(dst, " KiB"...)
}

// AppendWindow appends d as a person writes a short duration: whole
// hours, minutes and seconds, rounded up to the second, leaving out the
// parts that are zero ("2m", "1m30s", "1h").
func AppendWindow(dst []byte, d time.Duration) []byte {
	secs := int64((d + time.Second - 1) / time.Second)
	if secs <= 0 {
		return append(dst, "0s"...)
	}
	if h := secs / 3600; h > 0 {
		dst = strconv.AppendInt(dst, h, 10)
		dst = append(dst, 'h')
	}
	if m := secs / 60 % 60; m > 0 {
		dst = strconv.AppendInt(dst, m, 10)
		dst = append(dst, 'm')
	}
	if s := secs % 60; s > 0 {
		dst = strconv.AppendInt(dst, s, 10)
		dst = append(dst, 's')
	}
	return dst
}
