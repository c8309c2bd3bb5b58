// Package e2e is duet's end-to-end encryption between two clients, as
// docs/E2E.md specifies it: the envelopes two clients exchange inside
// sealed frames, the handshake that agrees on keys, the verification
// code, and the sealing and opening of messages.
//
// The browser's implementation is web/static/e2e.js; this one is written
// from the same document, independently of it, and the two are held to
// one test vector (testdata/vectors.json) and to each other in Chromium
// (web/e2e_browser_test.go). It is what a future terminal client would
// use, and it is the test suite's second opinion on the browser's.
//
// The package knows bytes, keys and the rules of the exchange. It does
// not know JSON, sockets, the pairing core or sessionStorage: the caller
// carries envelopes in and out of sealed frames (DecodeData, EncodeData)
// and decides what to show. Every primitive is the standard library's:
// crypto/ecdh (X25519), crypto/hkdf and crypto/hmac over crypto/sha256,
// crypto/aes with crypto/cipher's GCM.
//
// A Session is not safe for concurrent use; its owner feeds it one
// envelope at a time, in the order the server delivered them.
package e2e

// Version is the protocol version every envelope carries in its first
// byte.
const Version = 1

// Role is a side's part in a pairing. The initiator is the one who sent
// connect (the server's paired event says initiator true); the responder
// is the holder of the token it connected to. The values are the bytes
// the envelopes and the key schedule use.
type Role byte

// The two roles.
const (
	Initiator Role = 1
	Responder Role = 2
)

func (r Role) String() string {
	switch r {
	case Initiator:
		return "initiator"
	case Responder:
		return "responder"
	}
	return "unknown"
}

// other returns the role of the other side.
func (r Role) other() Role {
	if r == Initiator {
		return Responder
	}
	return Initiator
}

// The labels, each an ASCII string, that separate every hash, key and MAC
// of the protocol from one another and from any other use of the same
// bytes. docs/E2E.md lists them; changing one is a new version.
const (
	labelCommit     = "duet-e2e v1 commit"
	labelTranscript = "duet-e2e v1 transcript"
	labelLinkID     = "duet-e2e v1 link id"
	labelNoSecret   = "duet-e2e v1 no link secret"
	labelKeyI2R     = "duet-e2e v1 key i2r"
	labelKeyR2I     = "duet-e2e v1 key r2i"
	labelKeyConfirm = "duet-e2e v1 key confirm"
	labelConfirm    = "duet-e2e v1 confirm"
	labelCode       = "duet-e2e v1 code"
	labelMessage    = "duet-e2e v1 message"
)

// Sizes of the protocol's fields, in bytes.
const (
	PublicSize  = 32 // an X25519 public key
	NonceSize   = 16 // a hello's random nonce
	LinkIDSize  = 8  // the identifier of a link secret
	DigestSize  = 32 // a commitment or a confirmation MAC (SHA-256)
	KeySize     = 32 // an AES-256 key, and the confirmation key
	TagSize     = 16 // the AES-GCM tag
	CounterSize = 8

	// MinLinkSecret and MaxLinkSecret bound a link secret's length. A
	// client makes 16 bytes (128 bits, 22 base64url characters, which
	// keeps the link short); up to 64 are accepted so that a client that
	// wants more may have it.
	MinLinkSecret = 16
	MaxLinkSecret = 64

	// MaxEnvelope bounds an envelope a receiver decodes: larger ones are
	// refused as bad_envelope before any work is done on them. It is
	// above anything the server relays at the default limits.max_text
	// (proto.SealedLimit: 21,932 characters of base64url).
	MaxEnvelope = 64 * 1024

	// MaxCounter is the first message counter a sender may not use and a
	// receiver refuses: 2^53, the first integer a JavaScript number
	// cannot hold exactly, so that both implementations count alike. No
	// pairing reaches it.
	MaxCounter = 1 << 53

	// DefaultMaxText is the server's default limit on a message's text
	// (limits.max_text); Seal refuses longer text unless told otherwise.
	DefaultMaxText = 16 * 1024

	// Overhead is what sealing adds to a text of n bytes: the envelope's
	// version, kind and counter, the body's kind byte, and the tag.
	Overhead = 2 + CounterSize + 1 + TagSize
)

// Error is an outcome of the protocol that the caller must tell the
// person about: a frame refused, a handshake failed, a peer that gave up.
// Code is stable and the same in e2e.js; Text is for people. Fatal errors
// end the pairing's encryption: the Session fails, and whatever it
// received afterwards is refused with ErrFailed.
type Error struct {
	Code  string
	Text  string
	Fatal bool
}

func (e *Error) Error() string { return "e2e: " + e.Code + ": " + e.Text }

// The errors, as docs/E2E.md lists them.
var (
	// Fatal: the encryption of this pairing cannot go on.
	ErrBadVersion    = &Error{"bad_version", "the partner speaks another version of end-to-end encryption", true}
	ErrUnexpected    = &Error{"unexpected", "a handshake step arrived out of turn or changed: the keys cannot be trusted", true}
	ErrCommit        = &Error{"commit_mismatch", "the partner's key does not match what it committed to: the keys cannot be trusted", true}
	ErrUnknownSecret = &Error{"unknown_link_secret", "the link's secret is not one this side made", true}
	ErrBadKey        = &Error{"bad_key", "the partner's public key is not usable", true}
	ErrConfirm       = &Error{"confirm_failed", "the two sides did not arrive at the same keys: someone between them changed the exchange", true}
	ErrPeerAborted   = &Error{"peer_aborted", "the partner gave up on encryption", true}

	// Not fatal: the one frame is refused, the pairing goes on.
	ErrBadEnvelope = &Error{"bad_envelope", "a frame that is not an envelope was refused", false}
	ErrNoKeys      = &Error{"no_keys", "an encrypted message arrived before the keys were agreed; it cannot be read", false}
	ErrAltered     = &Error{"altered", "a message was altered on the way and was refused", false}
	ErrReplayed    = &Error{"replayed", "a message arrived again or out of order and was refused", false}
	ErrBadBody     = &Error{"bad_body", "a message held something other than text and was not shown", false}

	// The caller's mistakes, or a session that is over: nothing changes.
	ErrNotReady  = &Error{"not_ready", "the keys are not agreed yet", false}
	ErrTooLong   = &Error{"too_long", "message too long; it was not sent", false}
	ErrEmpty     = &Error{"empty", "nothing to send", false}
	ErrBadText   = &Error{"bad_text", "text must be valid UTF-8", false}
	ErrExhausted = &Error{"exhausted", "this pairing has sent all the messages its keys allow", false}
	ErrFailed    = &Error{"failed", "encryption with this partner has failed", false}
)

// Errors lists every error, for documentation and tests.
var Errors = []*Error{
	ErrBadVersion, ErrUnexpected, ErrCommit, ErrUnknownSecret, ErrBadKey, ErrConfirm, ErrPeerAborted,
	ErrBadEnvelope, ErrNoKeys, ErrAltered, ErrReplayed, ErrBadBody,
	ErrNotReady, ErrTooLong, ErrEmpty, ErrBadText, ErrExhausted, ErrFailed,
}

// Reason says why a side aborted, in an abort envelope.
type Reason byte

// The abort reasons. A receiver shows an unknown reason as a plain abort.
const (
	ReasonCannotEncrypt      Reason = 1 // this client cannot do end-to-end encryption (no X25519, no secure context)
	ReasonUnknownLinkSecret  Reason = 2 // the initiator's link secret is not the responder's
	ReasonHandshakeFailed    Reason = 3 // commitment or confirmation mismatch, or an unusable key
	ReasonProtocolError      Reason = 4 // an envelope out of turn
	ReasonUnsupportedVersion Reason = 5 // an envelope of a version this side does not speak
	ReasonKeysLost           Reason = 6 // this side no longer holds the pairing's keys (a reloaded page whose storage was full, a copied tab)
)

// Reasons lists every abort reason, for documentation and tests.
var Reasons = []Reason{
	ReasonCannotEncrypt, ReasonUnknownLinkSecret, ReasonHandshakeFailed, ReasonProtocolError,
	ReasonUnsupportedVersion, ReasonKeysLost,
}

func (r Reason) String() string {
	switch r {
	case ReasonCannotEncrypt:
		return "cannot_encrypt"
	case ReasonUnknownLinkSecret:
		return "unknown_link_secret"
	case ReasonHandshakeFailed:
		return "handshake_failed"
	case ReasonProtocolError:
		return "protocol_error"
	case ReasonUnsupportedVersion:
		return "unsupported_version"
	case ReasonKeysLost:
		return "keys_lost"
	}
	return "unknown"
}

// reasonFor is the abort reason a side sends for a fatal error of its own.
func reasonFor(e *Error) Reason {
	switch e {
	case ErrBadVersion:
		return ReasonUnsupportedVersion
	case ErrUnknownSecret:
		return ReasonUnknownLinkSecret
	case ErrCommit, ErrBadKey, ErrConfirm:
		return ReasonHandshakeFailed
	}
	return ReasonProtocolError
}
