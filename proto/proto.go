// Package proto is the vocabulary both of duet's wire protocols share:
// the commands a client sends, the events the server sends back, the
// stable error codes, the 128-bit token that names a user, and the
// resume key that lets a user take a session back after its connection
// dropped.
//
// The line protocol (package proto/line, for netcat and telnet) and the
// JSON protocol (package proto/jsonproto, for browsers over WebSocket)
// are two spellings of these same values. The pairing core speaks only
// this vocabulary and never sees bytes from a socket.
package proto

import "time"

// Op says what a client asks for.
type Op uint8

// The commands a client can send. The zero Op is never produced by a
// decoder; it marks an empty Command.
const (
	OpNone     Op = iota
	OpLogin       // log in under a name (and, in accounts mode, a password)
	OpConnect     // pair with the user who holds a token
	OpSay         // send text to the peer
	OpLeave       // end the pairing, stay logged in
	OpWho         // report own name, token and peer
	OpHelp        // list the commands
	OpQuit        // end the session and close the connection
	OpNewToken    // replace own token with a fresh one
	OpResume      // take back a session whose connection dropped: Key, and Last (JSON)
	OpAck         // confirm that messages up to Last were received (JSON)
	OpSeal        // send an end-to-end encrypted envelope to the peer (JSON): Text holds its base64url
)

var opNames = [...]string{
	OpNone:     "none",
	OpLogin:    "login",
	OpConnect:  "connect",
	OpSay:      "say",
	OpLeave:    "leave",
	OpWho:      "who",
	OpHelp:     "help",
	OpQuit:     "quit",
	OpNewToken: "newtoken",
	OpResume:   "resume",
	OpAck:      "ack",
	OpSeal:     "seal",
}

func (o Op) String() string {
	if int(o) < len(opNames) {
		return opNames[o]
	}
	return "unknown"
}

// Command is one decoded client request. Its byte slices alias the
// decoder's input: they are valid only until that input is reused, so a
// consumer that keeps one must copy it. This keeps decoding free of
// allocations on the relay path.
type Command struct {
	Op       Op
	Name     []byte // OpLogin
	Password []byte // OpLogin, accounts mode only; empty otherwise
	Token    []byte // OpConnect, as sent; checked with ParseToken
	// Text is, for OpSay, the message, valid UTF-8; for OpSeal, the
	// sealed envelope as the client sent it, base64url characters that
	// the server relays and never decodes.
	Text []byte
	Key  []byte // OpResume, as sent; checked with ParseResumeKey
	// Last is, for OpAck and a JSON OpResume, the Seq of the last
	// message the client received (0: none). A line-protocol client
	// cannot say, and leaves it 0; the engine knows which it speaks.
	Last uint64
	// ID is, for a JSON OpSay or OpSeal, the number the client gave the
	// message ("id"), 0 for none: a refusal of it names it, so that the
	// client knows which of its messages was not sent, since a message
	// sent is answered with nothing.
	ID uint64
}

// EventKind says what the server is telling a client.
type EventKind uint8

// The events the server sends.
const (
	EvNone     EventKind = iota
	EvHello              // greeting on connect: how to start, which auth mode is on
	EvWelcome            // logged in: Name, Token
	EvPaired             // paired with Peer; Initiator is true for the side that connected
	EvMessage            // From sent Text
	EvPeerLeft           // Peer is gone for Reason; Count messages to it were not delivered
	EvLeft               // you left your pairing with Peer
	EvStatus             // answer to who: Name, Token, Peer (empty when not paired)
	EvHelp               // answer to help
	EvError              // Err says what went wrong; the connection stays usable
	EvShutdown           // the server is shutting down; the connection closes next
	EvBye                // answer to quit; the connection closes next
	EvNotice             // Text is a server notice that needs no reply (e.g. throttling); Count as for EvPeerLeft
	// EvResumed answers a resume: Name, Token and Peer (empty when not
	// paired) as after it, Count messages replayed next, Missed older
	// ones that could not be kept, ID the last message of the session's
	// own that was relayed, and the new ResumeKey, good for Window.
	EvResumed
	// EvReplayEnd follows the Count replayed messages of a resume that
	// replayed any, with the same fields as EvResumed: the line
	// protocol closes its list of missed messages with it; JSON sends
	// nothing for it.
	EvReplayEnd
	EvPeerAway // Peer lost the connection; the session waits up to Window for it to come back; Count as for EvPeerLeft
	EvPeerBack // Peer came back (resumed its session)
	// EvSealed: From sent an end-to-end encrypted envelope, Text, in
	// base64url (docs/E2E.md). It is numbered and kept for a resume as
	// a message is.
	EvSealed
	// EvEndedAway tells a resumed session of a pairing that ended while
	// it was away and was followed by another, before the one it is in
	// now (or before the one whose EvPeerLeft follows): Peer is gone for
	// Reason, and Count messages to it were not delivered.
	EvEndedAway
)

var eventNames = [...]string{
	EvNone:      "none",
	EvHello:     "hello",
	EvWelcome:   "welcome",
	EvPaired:    "paired",
	EvMessage:   "message",
	EvPeerLeft:  "peer_left",
	EvLeft:      "left",
	EvStatus:    "status",
	EvHelp:      "help",
	EvError:     "error",
	EvShutdown:  "shutdown",
	EvBye:       "bye",
	EvNotice:    "notice",
	EvResumed:   "resumed",
	EvReplayEnd: "replay_end",
	EvPeerAway:  "peer_away",
	EvPeerBack:  "peer_back",
	EvSealed:    "sealed",
	EvEndedAway: "ended_away",
}

// String returns the event's JSON "type" value.
func (k EventKind) String() string {
	if int(k) < len(eventNames) {
		return eventNames[k]
	}
	return "unknown"
}

// Protocol is the wire protocol a session's connection speaks, as its
// partner is told it (Event.PeerProto): whether the partner's client can
// read sealed frames.
type Protocol uint8

// The protocols. ProtoUnknown is said of a partner whose client the
// server cannot vouch for (one on another node of a cluster): it is
// treated as unable to read sealed frames.
const (
	ProtoUnknown Protocol = iota
	ProtoLine             // netcat, telnet: the line protocol
	ProtoJSON             // a browser: JSON over WebSocket
)

// String returns the protocol as "peer_proto" spells it: "line",
// "json", or "" when unknown.
func (p Protocol) String() string {
	switch p {
	case ProtoLine:
		return "line"
	case ProtoJSON:
		return "json"
	}
	return ""
}

// Reason says why a pairing ended, as seen by the partner who stayed.
type Reason string

// The reasons a peer can leave. They are part of the protocol: clients
// may switch on them.
const (
	ReasonLeft         Reason = "left"         // the peer asked to leave (leave or quit)
	ReasonDisconnected Reason = "disconnected" // the peer's connection closed or died
	ReasonShutdown     Reason = "shutdown"     // the peer's server is shutting down
	ReasonSlow         Reason = "slow"         // the peer stopped reading and was cut off
	ReasonTimeout      Reason = "timeout"      // the peer went silent past the idle limit
	ReasonReplaced     Reason = "replaced"     // the peer's account logged in elsewhere
	ReasonLinkLost     Reason = "link_lost"    // the link to the peer's server was lost
)

// Reasons lists every reason, for counts that show each from the start.
var Reasons = [...]Reason{ReasonLeft, ReasonDisconnected, ReasonShutdown, ReasonSlow, ReasonTimeout, ReasonReplaced, ReasonLinkLost}

// Index returns r's place in Reasons, or -1 for a reason this version
// does not know.
func (r Reason) Index() int {
	for i, k := range Reasons {
		if k == r {
			return i
		}
	}
	return -1
}

// IDUnknown is the ID of an EvResumed whose session's last message
// relayed is not known: it was taken up from a server that did not keep
// it (one from before the resumed event carried it), and the client is
// told nothing rather than a number it would take for the truth. A
// client that numbers a message with it is not told either.
const IDUnknown = ^uint64(0)

// Event is one thing the server tells one session. Text may alias the
// sender's input buffer; an encoder must finish with an Event before the
// call that handed it over returns.
type Event struct {
	Kind      EventKind
	Name      string // EvWelcome, EvStatus, EvResumed: the session's own name
	Token     Token  // EvWelcome, EvStatus, EvResumed
	Peer      string // EvPaired, EvPeerLeft, EvLeft, EvStatus, EvResumed, EvPeerAway, EvPeerBack, EvEndedAway
	From      string // EvMessage, EvSealed
	Text      []byte // EvMessage, EvNotice; EvSealed: the envelope's base64url
	Initiator bool   // EvPaired, EvResumed (when paired): true when this side sent connect
	// NewToken is, on EvWelcome, the answer to newtoken: Token replaces
	// the one before, which no longer works.
	NewToken bool
	// JoinedAway is, on EvPeerLeft and EvEndedAway told on a resume,
	// that the pairing began while the session was away: its user was
	// never told the partner connected.
	JoinedAway bool
	// PeerAway is, on EvStatus, that the partner is away: Window is how
	// long it may still take to come back, and Reason why it went, as
	// on EvPeerAway.
	PeerAway bool
	// Reason is, on EvPeerLeft, why the pairing ended; on EvPeerAway
	// (and EvStatus with PeerAway), ReasonShutdown when the partner's
	// server is restarting (its connection was closed for it to
	// reconnect elsewhere), else empty: the connection was lost.
	Reason Reason
	// Count is, on EvPeerLeft, the messages to the peer that were not
	// delivered; on EvPeerAway, the messages to the peer that will never
	// reach it (they were not kept for its resume); on an EvNotice that tells an ending, the messages the
	// user sent on the connection that were not delivered; on
	// EvResumed and EvReplayEnd, the messages replayed.
	Count int
	Err   *Error // EvError; EvNotice counting says refused: why
	Auth  string // EvHello: "open" or "accounts"
	// MaxText is, on EvHello, the most bytes of text a say may carry
	// (limits.max_text), for a client that checks before it sends; 0:
	// not told. JSON only: a line's limit is its length (limits.max_line).
	MaxText int

	// PeerProto is, on EvPaired, EvResumed (when paired) and
	// EvPeerBack, the protocol the partner's connection speaks, so a
	// page can say before the first message whether the conversation
	// can be end-to-end encrypted.
	PeerProto Protocol
	// PairID names the pairing, on EvPaired and EvResumed (when
	// paired): drawn at random for each pairing, the same for both
	// sides, never 0. A page that kept keys for a pairing tells by it
	// whether a resume finds the same pairing.
	PairID uint64

	// Seq numbers an EvMessage or EvSealed among those delivered to the session,
	// from 1, when the session can be resumed (0 otherwise): a JSON
	// client names the last it received when it resumes or acks.
	Seq uint64
	// ResumeKey, on EvWelcome (at login) and EvResumed, is the secret
	// that takes the session back if its connection drops, good for
	// Window after the drop. Empty when resume is off.
	ResumeKey string
	// Window is how long a session whose connection dropped waits for a
	// resume: EvWelcome, EvResumed, EvReplayEnd and EvPeerAway; on
	// EvStatus with PeerAway, what is left of the partner's; on EvHelp,
	// resume.window, 0 with resume off (the help leaves /resume out).
	Window time.Duration
	// Missed, on EvResumed and EvReplayEnd, counts the messages the
	// resume should have replayed but that could not be kept.
	Missed int

	// ID is, on an EvError that refuses a say or seal, the ID the
	// client gave it (0: none). On an EvNotice that counts says refused
	// (Err then holds why), FirstID and ID are those of the first and
	// the last of them: every say sent from the one to the other was
	// refused. On an EvResumed, ID is that of the last say or seal of
	// the session's that was relayed (0: none had one), or IDUnknown:
	// any the client sent after it never reached the server. JSON only.
	ID, FirstID uint64

	// RetryAfter, on an EvError, says how long to wait before trying
	// again (too_many_attempts); zero when it does not apply. JSON
	// carries it in whole seconds, rounded up.
	RetryAfter time.Duration
}
