package proto

import (
	"crypto/rand"
	"encoding/hex"
)

// TokenLen is the length of a token on the wire: 32 hexadecimal characters.
const TokenLen = 32

// Token names a logged-in user: 128 random bits, shown as 32 lowercase
// hexadecimal characters. Whoever knows it can ask to pair with its holder.
type Token [16]byte

// NewToken returns a fresh random token from crypto/rand.
func NewToken() Token {
	var t Token
	// crypto/rand.Read never returns an error on supported platforms
	// (Go 1.24+ crashes the program instead of returning short reads).
	_, _ = rand.Read(t[:])
	return t
}

// IsZero reports whether t is the zero token, which no user holds.
func (t Token) IsZero() bool { return t == Token{} }

// String returns the 32-character lowercase hexadecimal form.
func (t Token) String() string { return hex.EncodeToString(t[:]) }

// Append appends the 32-character form to dst.
func (t Token) Append(dst []byte) []byte { return hex.AppendEncode(dst, t[:]) }

// Short returns the first 6 characters, the most a log line may show.
func (t Token) Short() string { return t.String()[:6] }

// ParseToken reads a token as sent by a client: exactly 32 hexadecimal
// characters, either case (ErrBadToken otherwise). The zero token is
// well formed, but no user is ever given it: it is ErrZeroToken
// (unknown_token), and is never looked up. It does not allocate.
func ParseToken(b []byte) (Token, *Error) {
	var t Token
	if len(b) != TokenLen {
		return t, ErrBadToken
	}
	for i := 0; i < len(t); i++ {
		hi, ok1 := fromHex(b[2*i])
		lo, ok2 := fromHex(b[2*i+1])
		if !ok1 || !ok2 {
			return Token{}, ErrBadToken
		}
		t[i] = hi<<4 | lo
	}
	if t.IsZero() {
		return t, ErrZeroToken
	}
	return t, nil
}

func fromHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// MaxNameLen is the longest name a user may take.
const MaxNameLen = 32

// ValidName reports whether b is a name duet accepts: 1 to 32 ASCII
// letters, digits, '_', '-' or '.'.
func ValidName(b []byte) bool {
	if len(b) == 0 || len(b) > MaxNameLen {
		return false
	}
	for _, c := range b {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '_', c == '-', c == '.':
		default:
			return false
		}
	}
	return true
}
