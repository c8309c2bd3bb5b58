package e2e

import (
	"encoding/base64"
	"encoding/binary"
)

// Kind says what an envelope holds: its second byte.
type Kind byte

// The envelope kinds.
const (
	KindCommit  Kind = 1 // the initiator's commitment to its hello
	KindHello   Kind = 2 // a side's ephemeral public key and nonce
	KindConfirm Kind = 3 // a side's key confirmation MAC
	KindMessage Kind = 4 // a sealed message
	KindAbort   Kind = 5 // a side gives up, and says why
)

func (k Kind) String() string {
	switch k {
	case KindCommit:
		return "commit"
	case KindHello:
		return "hello"
	case KindConfirm:
		return "confirm"
	case KindMessage:
		return "message"
	case KindAbort:
		return "abort"
	}
	return "unknown"
}

// flagLinkID in a hello's flags byte says a link secret identifier
// follows. No other bit may be set.
const flagLinkID = 0x01

// The fixed lengths of the envelopes, version and kind bytes included.
const (
	commitLen       = 2 + DigestSize
	helloLen        = 2 + 1 + 1 + PublicSize + NonceSize
	helloLinkLen    = helloLen + LinkIDSize
	confirmLen      = 2 + DigestSize
	messageHeadLen  = 2 + CounterSize
	minMessageLen   = messageHeadLen + 1 + TagSize // a body is at least its kind byte
	abortLen        = 3
	envelopeVersion = 0
	envelopeKind    = 1
)

// Envelope is one decoded envelope. Which fields mean something depends on
// Kind; the others are zero.
type Envelope struct {
	Kind Kind

	// KindHello.
	Role      Role
	Public    [PublicSize]byte
	Nonce     [NonceSize]byte
	HasLinkID bool
	LinkID    [LinkIDSize]byte

	// KindCommit: the commitment; KindConfirm: the MAC.
	Digest [DigestSize]byte

	// KindMessage. Sealed is the ciphertext with its tag; it aliases the
	// decoder's input.
	Counter uint64
	Sealed  []byte

	// KindAbort.
	Reason Reason
}

// Decode reads one envelope. It is a pure function of its input, and
// every way the input can be wrong is one of two errors: ErrBadVersion
// for a first byte other than Version (an abort of any version excepted:
// its layout is the same in every version, so that a side can always say
// why it gives up), ErrBadEnvelope for anything else.
func Decode(b []byte) (Envelope, error) {
	var e Envelope
	if len(b) < 2 || len(b) > MaxEnvelope {
		return e, ErrBadEnvelope
	}
	e.Kind = Kind(b[envelopeKind])
	if e.Kind == KindAbort {
		if len(b) != abortLen || b[2] == 0 {
			return Envelope{}, ErrBadEnvelope
		}
		e.Reason = Reason(b[2])
		return e, nil
	}
	if b[envelopeVersion] != Version {
		return Envelope{}, ErrBadVersion
	}
	switch e.Kind {
	case KindCommit:
		if len(b) != commitLen {
			return Envelope{}, ErrBadEnvelope
		}
		copy(e.Digest[:], b[2:])
	case KindHello:
		if len(b) < helloLen {
			return Envelope{}, ErrBadEnvelope
		}
		e.Role = Role(b[2])
		flags := b[3]
		if e.Role != Initiator && e.Role != Responder || flags&^flagLinkID != 0 {
			return Envelope{}, ErrBadEnvelope
		}
		e.HasLinkID = flags&flagLinkID != 0
		want := helloLen
		if e.HasLinkID {
			want = helloLinkLen
		}
		if len(b) != want {
			return Envelope{}, ErrBadEnvelope
		}
		copy(e.Public[:], b[4:])
		copy(e.Nonce[:], b[4+PublicSize:])
		if e.HasLinkID {
			copy(e.LinkID[:], b[helloLen:])
		}
	case KindConfirm:
		if len(b) != confirmLen {
			return Envelope{}, ErrBadEnvelope
		}
		copy(e.Digest[:], b[2:])
	case KindMessage:
		if len(b) < minMessageLen {
			return Envelope{}, ErrBadEnvelope
		}
		e.Counter = binary.BigEndian.Uint64(b[2:])
		if e.Counter >= MaxCounter {
			return Envelope{}, ErrBadEnvelope
		}
		e.Sealed = b[messageHeadLen:]
	default:
		return Envelope{}, ErrBadEnvelope
	}
	return e, nil
}

// Append appends the envelope's encoding to dst. It encodes what it is
// given; a Session only ever gives it envelopes Decode accepts.
func (e *Envelope) Append(dst []byte) []byte {
	dst = append(dst, Version, byte(e.Kind))
	switch e.Kind {
	case KindCommit, KindConfirm:
		dst = append(dst, e.Digest[:]...)
	case KindHello:
		var flags byte
		if e.HasLinkID {
			flags = flagLinkID
		}
		dst = append(dst, byte(e.Role), flags)
		dst = append(dst, e.Public[:]...)
		dst = append(dst, e.Nonce[:]...)
		if e.HasLinkID {
			dst = append(dst, e.LinkID[:]...)
		}
	case KindMessage:
		dst = binary.BigEndian.AppendUint64(dst, e.Counter)
		dst = append(dst, e.Sealed...)
	case KindAbort:
		dst = append(dst, byte(e.Reason))
	}
	return dst
}

// EncodeData writes an envelope as a sealed frame's data: base64url
// (RFC 4648 section 5) without padding.
func EncodeData(env []byte) string {
	return base64.RawURLEncoding.EncodeToString(env)
}

// DecodeData reads a sealed frame's data. Only the canonical form is
// accepted: the base64url alphabet, no padding, no line breaks (which
// package base64 would otherwise skip), no stray bits in the last
// character; anything else, and anything longer than an envelope may be,
// is ErrBadEnvelope.
func DecodeData(s string) ([]byte, error) {
	if s == "" || len(s) > base64.RawURLEncoding.EncodedLen(MaxEnvelope) {
		return nil, ErrBadEnvelope
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return nil, ErrBadEnvelope
		}
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, ErrBadEnvelope
	}
	return b, nil
}
