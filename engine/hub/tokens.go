package hub

import (
	"encoding/binary"

	"duet/proto"
)

// tokenIndex files this node's sessions by token. It is keyed by the
// token's first eight bytes, not the whole token: an entry is then 16
// bytes where it was 24, for every session. Those bytes tell sessions
// apart because the hub never files two tokens that share them: it
// draws tokens itself (freshTokenLocked draws again while the half is
// filed, which among a million sessions befalls one draw in 2^44) and
// refuses to take up a session whose token's half is filed (Import). A
// lookup compares the whole token, so a token that shares the half of a
// filed one finds nothing.
//
// A session is briefly filed under two tokens while the directory is
// asked for a new one (drawToken, adoptToken): under the new one it is
// only held, and found by nothing but filed, since the session still
// holds the old one, the only one its user knows yet.
type tokenIndex map[uint64]*Session

func tokenHalf(t proto.Token) uint64 { return binary.LittleEndian.Uint64(t[:8]) }

// lookup returns the session that holds t, or nil.
func (x tokenIndex) lookup(t proto.Token) *Session {
	if s := x[tokenHalf(t)]; s != nil && s.token == t {
		return s
	}
	return nil
}

// filed returns the session filed under t's half, whichever token it
// holds: nil when t can be filed.
func (x tokenIndex) filed(t proto.Token) *Session { return x[tokenHalf(t)] }

// file files s under t, in place of whatever was filed under its half:
// the caller has checked that it is free, or s takes over the session
// filed there (a resume).
func (x tokenIndex) file(t proto.Token, s *Session) { x[tokenHalf(t)] = s }

// unfile takes s out from under t; what else may be filed there stays.
func (x tokenIndex) unfile(t proto.Token, s *Session) {
	if k := tokenHalf(t); x[k] == s {
		delete(x, k)
	}
}
