package hub

import (
	"encoding/binary"
	"errors"
	"time"

	"duet/proto"
)

// A Parked written down, to travel between nodes, sealed by the
// cluster:
//
//	parked  = "DP" 1 body | "DP" 2 body left | "DP" 3 body uvarint(lastid) hasleft
//	        | "DP" 4 body uvarint(lastid) hasleft untold
//	        | "DP" 5 body uvarint(lastid) hasleft uvarint(untold) varint(window) back:byte used
//	body    = str(name) str(key) token:16 resume:32
//	          uvarint(gen) uvarint(seq) flags:byte varint(awayfor)
//	          varint(windowleft) uvarint(awayseq) varint(awaytext) uvarint(unsent)
//	          uvarint(count) message* uvarint(count) loss* pair
//	message = uvarint(seq) varint(age) str(from) sealed:byte str(text)
//	loss    = uvarint(last) uvarint(count) varint(minage) varint(maxage)
//	pair    = 0 | 1 uvarint(id) str(peerkey) str(peername) str(peernode)
//	left    = str(peer) str(reason) uvarint(undelivered)
//	hasleft = 0 | 1 left
//	untold  = uvarint(count) varint(window) back:byte
//	used    = resume:32 uvarint(count) end* hasend uvarint(untold) varint(window) flags:byte
//	          uvarint(replayfrom)
//	end     = left joined:byte
//	hasend  = 0 | 1 end
//	str     = uvarint(len) bytes
//
// Durations are in nanoseconds; flags' bit 0 is Attached; sealed is 1
// for a sealed frame, else 0. A message queued for a parked session
// travels on its own: its text, from the session's partner.
//
// Version 2 is version 1 with the peer_left the session was told while
// away (Parked.Left). A Parked without one is written as version 1, so
// that a node not yet upgraded, which reads only version 1, still takes
// up every session that does not need more during a rolling restart;
// version 1 reads as a Parked without Left.
//
// Version 3 adds the id of the session's last message relayed
// (Parked.LastID), never 0, and Left if there is one. A Parked whose
// LastID is 0 is written as version 1 or 2, as before, for the same
// reason. The cluster parks a session with its LastID sealed beside
// this form instead, and the form without it (cluster's writePark), so
// that a node from before version 3 takes up a page's session too;
// version 3 is still read, as the build before that wrote it.
//
// Version 4 adds what the session's partner went away without that the
// session was not told (Parked.Untold, never 0; UntoldWindow; back is 1
// for UntoldBack, else 0), with LastID, 0 when not known, and Left if
// there is one. A Parked whose Untold is 0 is written as an older
// version, for the same reason; and the cluster seals Untold beside
// the form too, as it does LastID.
//
// Version 5 adds the key the session's last resume used and the news
// its answer told (Parked.Used: used, written by ParkedUsed's
// AppendBinary), with LastID, Left and Untold as version 4 has them,
// Untold 0 allowed (its window and back then 0). A Parked without Used
// is written as an older version, for the same reason; and the cluster
// seals Used beside the form too. In used, ends are the news's earlier
// ends, oldest first, then its last (hasend); joined is 1 for
// PeerLeft.Joined; flags' bit 0 is UntoldBack, allowed only with an
// untold count, and bit 1 PeerWasAway; replayfrom is ReplayFrom, 0 for
// none.

const (
	parkedVersion1 = 1
	parkedVersion2 = 2 // with Left
	parkedVersion3 = 3 // with LastID, and Left or not
	parkedVersion4 = 4 // with Untold, and LastID and Left or not
	parkedVersion5 = 5 // with Used, and Untold, LastID and Left or not
)

// ErrBadParked is the error of a Parked that cannot be read.
var ErrBadParked = errors.New("hub: malformed parked session")

// maxParkedString bounds a name or node in a Parked; texts are bounded
// by what is left of the input.
const maxParkedString = 1 << 10

// AppendBinary appends p, written down, to dst.
func (p *Parked) AppendBinary(dst []byte) []byte {
	version := byte(parkedVersion1)
	switch {
	case p.Used != nil:
		version = parkedVersion5
	case p.Untold > 0:
		version = parkedVersion4
	case p.LastID != 0:
		version = parkedVersion3
	case p.Left != nil:
		version = parkedVersion2
	}
	dst = append(dst, 'D', 'P', version)
	dst = appendPStr(dst, p.Name)
	dst = appendPStr(dst, p.Key)
	dst = append(dst, p.Token[:]...)
	dst = append(dst, p.Resume[:]...)
	dst = binary.AppendUvarint(dst, uint64(p.Gen))
	dst = binary.AppendUvarint(dst, p.Seq)
	dst = append(dst, flag(p.Attached)) // flags: bit 0 alone
	dst = binary.AppendVarint(dst, int64(p.AwayFor))
	dst = binary.AppendVarint(dst, int64(p.WindowLeft))
	dst = binary.AppendUvarint(dst, p.AwaySeq)
	dst = binary.AppendVarint(dst, p.AwayText)
	dst = binary.AppendUvarint(dst, uint64(p.Unsent))
	dst = binary.AppendUvarint(dst, uint64(len(p.History)))
	for _, m := range p.History {
		dst = binary.AppendUvarint(dst, m.Seq)
		dst = binary.AppendVarint(dst, int64(m.Age))
		dst = appendPStr(dst, m.From)
		dst = append(dst, flag(m.Sealed))
		dst = appendPBytes(dst, m.Text)
	}
	dst = binary.AppendUvarint(dst, uint64(len(p.Loss)))
	for _, l := range p.Loss {
		dst = binary.AppendUvarint(dst, l.Last)
		dst = binary.AppendUvarint(dst, uint64(l.Count))
		dst = binary.AppendVarint(dst, int64(l.MinAge))
		dst = binary.AppendVarint(dst, int64(l.MaxAge))
	}
	dst = append(dst, flag(p.Pair != nil))
	if p.Pair != nil {
		dst = binary.AppendUvarint(dst, p.Pair.ID)
		dst = appendPStr(dst, p.Pair.PeerKey)
		dst = appendPStr(dst, p.Pair.PeerName)
		dst = appendPStr(dst, p.Pair.PeerNode)
	}
	if version >= parkedVersion3 {
		dst = binary.AppendUvarint(dst, p.LastID)
		dst = append(dst, flag(p.Left != nil))
	}
	if p.Left != nil {
		dst = appendPStr(dst, p.Left.Peer)
		dst = appendPStr(dst, string(p.Left.Reason))
		dst = binary.AppendUvarint(dst, uint64(p.Left.Undelivered))
	}
	if version >= parkedVersion4 {
		dst = binary.AppendUvarint(dst, uint64(p.Untold))
		dst = binary.AppendVarint(dst, int64(p.UntoldWindow))
		dst = append(dst, flag(p.UntoldBack))
	}
	if version == parkedVersion5 {
		dst = p.Used.AppendBinary(dst)
	}
	return dst
}

// AppendBinary appends u, written down (used, above), to dst.
func (u *ParkedUsed) AppendBinary(dst []byte) []byte {
	dst = append(dst, u.Resume[:]...)
	dst = binary.AppendUvarint(dst, uint64(len(u.Earlier)))
	for i := range u.Earlier {
		dst = appendEnd(dst, &u.Earlier[i])
	}
	dst = append(dst, flag(u.Left != nil))
	if u.Left != nil {
		dst = appendEnd(dst, u.Left)
	}
	dst = binary.AppendUvarint(dst, uint64(u.Untold))
	dst = binary.AppendVarint(dst, int64(u.UntoldWindow))
	dst = append(dst, flag(u.UntoldBack)|flag(u.PeerWasAway)<<1)
	return binary.AppendUvarint(dst, u.ReplayFrom)
}

// appendEnd appends l, the end of a pairing (end, above), to dst.
func appendEnd(dst []byte, l *PeerLeft) []byte {
	dst = appendPStr(dst, l.Peer)
	dst = appendPStr(dst, string(l.Reason))
	dst = binary.AppendUvarint(dst, uint64(l.Undelivered))
	return append(dst, flag(l.Joined))
}

// ParseParkedUsed reads a ParkedUsed that its AppendBinary wrote, and
// nothing after it; it fails with ErrBadParked on anything else.
func ParseParkedUsed(b []byte) (*ParkedUsed, error) {
	r := pReader{b: b}
	u := r.used()
	if r.bad || len(r.b) != 0 {
		return nil, ErrBadParked
	}
	return u, nil
}

// used reads a ParkedUsed (used, above).
func (r *pReader) used() *ParkedUsed {
	u := &ParkedUsed{}
	r.fixed(u.Resume[:])
	n := r.count(4)
	if n > maxEndedAway {
		r.fail()
	}
	for range n {
		u.Earlier = append(u.Earlier, r.end())
	}
	if r.flag() {
		l := r.end()
		u.Left = &l
	}
	u.Untold, u.UntoldWindow = r.count31(), r.duration()
	flags := r.byte()
	u.UntoldBack, u.PeerWasAway = flags&1 != 0, flags&2 != 0
	// Nothing of the partner's absence is kept without a count but
	// PeerWasAway (Parked.Untold).
	if flags&^3 != 0 || u.Untold == 0 && (u.UntoldWindow != 0 || u.UntoldBack) {
		r.fail()
	}
	u.ReplayFrom = r.uvarint()
	return u
}

// end reads the end of a pairing (end, above).
func (r *pReader) end() PeerLeft {
	l := PeerLeft{Peer: r.str(), Reason: proto.Reason(r.str())}
	l.Undelivered = r.count31()
	l.Joined = r.flag()
	return l
}

// flag is a boolean written down: 1 for true, 0 for false.
func flag(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// ParseParked reads a Parked that AppendBinary wrote. It checks what it
// reads as far as it can be checked alone (a name duet accepts, folded
// as the key; no more entries than bytes), and fails with ErrBadParked
// on anything else, extra bytes included.
func ParseParked(b []byte) (*Parked, error) {
	r := pReader{b: b}
	if len(b) < 3 || b[0] != 'D' || b[1] != 'P' || b[2] < parkedVersion1 || b[2] > parkedVersion5 {
		return nil, ErrBadParked
	}
	r.b = b[3:]
	p := &Parked{}
	p.Name, p.Key = r.str(), r.str()
	r.fixed(p.Token[:])
	r.fixed(p.Resume[:])
	gen := r.uvarint()
	if gen > 1<<32-1 {
		r.fail()
	}
	p.Gen = uint32(gen)
	p.Seq = r.uvarint()
	flags := r.byte()
	if flags&^1 != 0 {
		r.fail()
	}
	p.Attached = flags&1 != 0
	p.AwayFor, p.WindowLeft = r.duration(), r.duration()
	p.AwaySeq, p.AwayText = r.uvarint(), r.varint()
	if u := r.uvarint(); u <= p.AwaySeq {
		p.Unsent = int(u)
	} else {
		r.fail()
	}
	n := r.count(5)
	for range n {
		m := ParkedMessage{Seq: r.uvarint(), Age: r.duration(), From: r.str()}
		m.Sealed = r.flag()
		m.Text = r.bytes()
		p.History = append(p.History, m)
	}
	n = r.count(4)
	for range n {
		l := ParkedLoss{Last: r.uvarint()}
		l.Count = r.count31()
		l.MinAge, l.MaxAge = r.duration(), r.duration()
		p.Loss = append(p.Loss, l)
	}
	if r.flag() {
		p.Pair = &ParkedPair{ID: r.uvarint(), PeerKey: r.str(), PeerName: r.str(), PeerNode: r.str()}
	}
	version := b[2]
	hasLeft := version == parkedVersion2
	if version >= parkedVersion3 {
		// Never 0 in version 3: that is written as an older version.
		if p.LastID = r.uvarint(); p.LastID == 0 && version == parkedVersion3 {
			r.fail()
		}
		hasLeft = r.flag()
	}
	if hasLeft {
		l := &PeerLeft{Peer: r.str(), Reason: proto.Reason(r.str())}
		l.Undelivered = r.count31()
		p.Left = l
	}
	if version >= parkedVersion4 {
		// Never 0 either in version 4; in version 5, 0 with nothing
		// else of it.
		p.Untold = r.count31()
		p.UntoldWindow, p.UntoldBack = r.duration(), r.flag()
		if p.Untold == 0 && (version == parkedVersion4 || p.UntoldWindow != 0 || p.UntoldBack) {
			r.fail()
		}
	}
	if version == parkedVersion5 {
		p.Used = r.used()
	}
	if r.bad || len(r.b) != 0 || !proto.ValidName([]byte(p.Name)) || fold(p.Name) != p.Key || p.AwaySeq > p.Seq {
		return nil, ErrBadParked
	}
	return p, nil
}

func appendPStr(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendPBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// pReader reads a written-down Parked; after the first failure every
// read returns a zero value and bad stays set.
type pReader struct {
	b   []byte
	bad bool
}

func (r *pReader) fail() { r.bad, r.b = true, nil }

func (r *pReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *pReader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *pReader) duration() time.Duration {
	v := r.varint()
	if v < 0 {
		r.fail()
		return 0
	}
	return time.Duration(v)
}

func (r *pReader) byte() byte {
	if len(r.b) == 0 {
		r.fail()
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// flag reads a boolean written down (flag).
func (r *pReader) flag() bool {
	switch r.byte() {
	case 0:
		return false
	case 1:
		return true
	}
	r.fail()
	return false
}

// count31 reads a count of messages: at most 1<<31.
func (r *pReader) count31() int {
	u := r.uvarint()
	if u > 1<<31 {
		r.fail()
		return 0
	}
	return int(u)
}

func (r *pReader) fixed(dst []byte) {
	if len(r.b) < len(dst) {
		r.fail()
		return
	}
	copy(dst, r.b)
	r.b = r.b[len(dst):]
}

func (r *pReader) bytes() []byte {
	l := r.uvarint()
	if l > uint64(len(r.b)) {
		r.fail()
		return nil
	}
	v := append([]byte(nil), r.b[:l]...)
	r.b = r.b[l:]
	return v
}

func (r *pReader) str() string {
	l := r.uvarint()
	if l > maxParkedString || l > uint64(len(r.b)) {
		r.fail()
		return ""
	}
	v := string(r.b[:l])
	r.b = r.b[l:]
	return v
}

// count reads how many entries follow, each at least least bytes long:
// no more than what is left can hold.
func (r *pReader) count(least int) int {
	n := r.uvarint()
	if n > uint64(len(r.b)/least) {
		r.fail()
		return 0
	}
	return int(n)
}
