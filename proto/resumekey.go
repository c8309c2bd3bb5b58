package proto

import "crypto/rand"

// ResumeKeyLen is the length of a resume key on the wire.
const ResumeKeyLen = 26

// resumeAlphabet is Crockford's base 32: digits and lowercase letters
// without i, l, o and u, so that no two characters look alike and a key
// read off one screen can be typed on another.
const resumeAlphabet = "0123456789abcdefghjkmnpqrstvwxyz"

// ResumeKey is the secret that takes a session back after its connection
// dropped: 26 characters of Crockford's base 32, each drawn at random,
// so 130 random bits. It is sent only to the session's own connection;
// unlike the token, which is shared to get connected, whoever knows it
// is the user.
//
// It is not written like a token (32 hexadecimal characters) on
// purpose: a user who pastes one where the other belongs is told so
// (bad_token, bad_resume_key), and the key is never sent to a partner
// by mistake for a token.
type ResumeKey [ResumeKeyLen]byte

// NewResumeKey returns a fresh key from crypto/rand.
func NewResumeKey() ResumeKey {
	var k ResumeKey
	// Each random byte gives 5 bits: 256 is a multiple of 32, so every
	// character is equally likely.
	_, _ = rand.Read(k[:])
	for i, b := range k {
		k[i] = resumeAlphabet[b&31]
	}
	return k
}

// String returns the key as it is shown.
func (k ResumeKey) String() string { return string(k[:]) }

// ParseResumeKey reads a key as a user sent it: exactly 26 characters of
// Crockford's base 32 in either case, where i and l stand for 1 and o
// for 0, as that alphabet reads them. It does not allocate.
func ParseResumeKey(b []byte) (ResumeKey, error) {
	var k ResumeKey
	if len(b) != ResumeKeyLen {
		return ResumeKey{}, ErrBadResumeKey
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		switch c {
		case 'i', 'l':
			c = '1'
		case 'o':
			c = '0'
		case 'u':
			return ResumeKey{}, ErrBadResumeKey
		}
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z') {
			return ResumeKey{}, ErrBadResumeKey
		}
		k[i] = c
	}
	return k, nil
}
