package hub

import (
	"encoding/binary"
	"errors"
	"time"

	"duet/proto"
)

// The sessions a single node hands to its next process across a restart
// (resume.state_file), written down:
//
//	state = "DS" 1 uvarint(at) uvarint(count) entry*
//	entry = str(parked) uvarint(tag) uvarint(client)
//
// at is when the sessions were parked (Unix nanoseconds), so that the
// next process counts the time it took to start against each session's
// window (Parked.Age); parked is one Parked as AppendBinary writes it;
// tag is the id its pairing's two sides were told (Event.PairID), 0
// when it is not paired, so that the pages of a pairing restored find
// it by the id they know and go on under the same keys; client is the
// protocol the session's last connection spoke (Parked.Client), by
// which its partner's seals are kept for it until it is back. Both
// travel beside the Parked, which a cluster's nodes exchange in the
// form every version since the first reads, and which needs neither
// there: a cluster's nodes tag a pairing alike (Directory.PairTag), and
// keep each user's protocol in the directory.

const stateVersion = 1

// ErrBadState is the error of a state that cannot be read.
var ErrBadState = errors.New("hub: malformed session state")

// AppendState appends parked, parked at at, written down, to dst.
func AppendState(dst []byte, at time.Time, parked []*Parked) []byte {
	dst = append(dst, 'D', 'S', stateVersion)
	dst = binary.AppendUvarint(dst, uint64(at.UnixNano()))
	dst = binary.AppendUvarint(dst, uint64(len(parked)))
	var one []byte
	for _, p := range parked {
		one = p.AppendBinary(one[:0])
		dst = appendPBytes(dst, one)
		var tag uint64
		if p.Pair != nil {
			tag = p.Pair.Tag
		}
		dst = binary.AppendUvarint(dst, tag)
		dst = binary.AppendUvarint(dst, uint64(p.Client))
	}
	return dst
}

// ParseState reads what AppendState wrote: when the sessions were
// parked, and the sessions. It fails with ErrBadState on anything else,
// a session ParseParked refuses or extra bytes included.
func ParseState(b []byte) (at time.Time, parked []*Parked, err error) {
	if len(b) < 3 || b[0] != 'D' || b[1] != 'S' || b[2] != stateVersion {
		return at, nil, ErrBadState
	}
	r := pReader{b: b[3:]}
	ns := r.uvarint()
	if ns > 1<<63-1 {
		r.fail()
	}
	n := r.count(2)
	for range n {
		blob := r.bytes()
		tag, client := r.uvarint(), r.uvarint()
		if r.bad || client > uint64(proto.ProtoJSON) {
			r.fail()
			break
		}
		p, err := ParseParked(blob)
		if err != nil {
			return at, nil, ErrBadState
		}
		p.Client = proto.Protocol(client)
		if p.Pair != nil {
			p.Pair.Tag = tag
		} else if tag != 0 {
			r.fail()
		}
		parked = append(parked, p)
	}
	if r.bad || len(r.b) != 0 {
		return at, nil, ErrBadState
	}
	return time.Unix(0, int64(ns)), parked, nil
}

// Age makes p, parked d ago, what it is now: d more away, its messages
// and losses d older, and d less of its window left (it may run out: a
// hub that takes it up then ends it at its next sweep, its partner told
// timeout, as if it had waited here).
func (p *Parked) Age(d time.Duration) {
	if d <= 0 {
		return
	}
	p.AwayFor += d
	p.WindowLeft = max(p.WindowLeft-d, 0)
	for i := range p.History {
		p.History[i].Age += d
	}
	for i := range p.Loss {
		p.Loss[i].MinAge += d
		p.Loss[i].MaxAge += d
	}
}
