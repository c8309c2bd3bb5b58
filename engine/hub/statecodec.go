package hub

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"time"

	"duet/proto"
)

// The sessions a single node hands to its next process across a restart
// (resume.state_file), written down:
//
//	state = "DS" 2 uvarint(at) uvarint(count) entry*
//	entry = str(parked) uvarint(tag) uvarint(client) uvarint(flags)
//
// at is when the sessions were parked (Unix nanoseconds), so that the
// next process counts the time it took to start against each session's
// window (Parked.Age); parked is one Parked as AppendBinary writes it
// (with the key the session's last resume used, if it kept one:
// Parked.Used);
// tag is the id its pairing's two sides were told (Event.PairID), 0
// when it is not paired, so that the pages of a pairing restored find
// it by the id they know and go on under the same keys; client is the
// protocol the session's last connection spoke (Parked.Client), by
// which its partner's seals are kept for it until it is back; flags has
// flagHolder set for the side of a pairing whose token its partner
// claimed (ParkedPair.Holder), so that Restore gives each side its role
// again, flagPeerWasAway and flagJoined for Parked.PeerWasAway and
// Joined, flagLeftJoined for Parked.Left.Joined, and flagShutdown for
// Parked.Shutdown, so that a resume after the restart tells what it
// would have told before. All travel
// beside the Parked, which a cluster's nodes exchange in the form every
// version since the first reads, and which needs none of them there: a
// cluster's nodes tag a pairing alike (Directory.PairTag), keep each
// user's protocol in the directory, and carry the flags beside the
// park.
//
// Version 1, written before flags, is read too: its entries have no
// flags, and each pair's side that connected comes first (Restore takes
// the first it reads as that side when neither is marked). A flag is
// set only where it holds; flagShutdown holds for every session a
// drain sent away, so a build that knows no flag but flagHolder reads
// none of this build's states (OPERATIONS.md says a downgrade ends the
// conversations).

const (
	stateVersion    = 2
	flagHolder      = 1
	flagPeerWasAway = 2
	flagJoined      = 4
	flagLeftJoined  = 8
	flagShutdown    = 16
	// flagsPaired are the flags of a session's pairing.
	flagsPaired = flagHolder | flagPeerWasAway | flagJoined
)

// ErrBadState is the error of a state that cannot be read.
var ErrBadState = errors.New("hub: malformed session state")

// WriteState writes parked, parked at at, to w: one session at a time,
// so that writing down a node's sessions costs no second copy of them
// all.
func WriteState(w io.Writer, at time.Time, parked []*Parked) error {
	bw := bufio.NewWriter(w)
	head := []byte{'D', 'S', stateVersion}
	head = binary.AppendUvarint(head, uint64(at.UnixNano()))
	head = binary.AppendUvarint(head, uint64(len(parked)))
	bw.Write(head)
	var one, num []byte
	for _, p := range parked {
		one = p.AppendBinary(one[:0])
		var tag uint64
		if p.Pair != nil {
			tag = p.Pair.Tag
		}
		num = binary.AppendUvarint(num[:0], uint64(len(one)))
		bw.Write(num)
		bw.Write(one)
		var flags uint64
		if p.Pair != nil {
			flags |= bit(p.Pair.Holder, flagHolder) | bit(p.PeerWasAway, flagPeerWasAway) | bit(p.Joined, flagJoined)
		}
		if p.Left != nil {
			flags |= bit(p.Left.Joined, flagLeftJoined)
		}
		flags |= bit(p.Shutdown, flagShutdown)
		num = binary.AppendUvarint(num[:0], tag)
		num = binary.AppendUvarint(num, uint64(p.Client))
		num = binary.AppendUvarint(num, flags)
		bw.Write(num)
	}
	return bw.Flush() // the first error of any write, if one failed
}

// bit is flag if b holds, else 0.
func bit(b bool, flag uint64) uint64 {
	if b {
		return flag
	}
	return 0
}

// ReadState reads what WriteState wrote, to its end: when the sessions
// were parked, and the sessions. It fails with ErrBadState on anything
// else, a session ParseParked refuses or bytes after the last included,
// and with the reader's error if it fails. What it holds at once is the
// sessions read so far and one more, however many the state claims.
func ReadState(r io.Reader) (at time.Time, parked []*Parked, err error) {
	br := bufio.NewReader(r)
	bad := func(e error) (time.Time, []*Parked, error) {
		if e == nil || errors.Is(e, io.EOF) || errors.Is(e, io.ErrUnexpectedEOF) {
			e = ErrBadState
		}
		return time.Time{}, nil, e
	}
	var head [3]byte
	if _, err := io.ReadFull(br, head[:]); err != nil || head[0] != 'D' || head[1] != 'S' || head[2] < 1 || head[2] > stateVersion {
		return bad(err)
	}
	version := head[2]
	ns, err := binary.ReadUvarint(br)
	if err != nil || ns > 1<<63-1 {
		return bad(err)
	}
	n, err := binary.ReadUvarint(br)
	if err != nil {
		return bad(err)
	}
	var blob bytes.Buffer
	for range n {
		l, err := binary.ReadUvarint(br)
		if err != nil || l > 1<<62 {
			return bad(err)
		}
		// Copied as it comes, so that a length the state only claims
		// costs no more than the bytes that are there.
		blob.Reset()
		if _, err := io.CopyN(&blob, br, int64(l)); err != nil {
			return bad(err)
		}
		tag, err := binary.ReadUvarint(br)
		if err != nil {
			return bad(err)
		}
		client, err := binary.ReadUvarint(br)
		if err != nil || client > uint64(proto.ProtoJSON) {
			return bad(err)
		}
		var flags uint64
		if version >= 2 {
			if flags, err = binary.ReadUvarint(br); err != nil || flags&^(flagsPaired|flagLeftJoined|flagShutdown) != 0 {
				return bad(err)
			}
		}
		p, err := ParseParked(blob.Bytes()) // it copies what it keeps
		if err != nil || p.Pair == nil && (tag != 0 || flags&flagsPaired != 0) || p.Left == nil && flags&flagLeftJoined != 0 {
			return bad(nil)
		}
		p.Client = proto.Protocol(client)
		if p.Pair != nil {
			p.Pair.Tag = tag
			p.Pair.Holder = flags&flagHolder != 0
			p.PeerWasAway, p.Joined = flags&flagPeerWasAway != 0, flags&flagJoined != 0
		}
		if p.Left != nil {
			p.Left.Joined = flags&flagLeftJoined != 0
		}
		p.Shutdown = flags&flagShutdown != 0
		parked = append(parked, p)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return bad(err)
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
	p.UntoldWindow = max(p.UntoldWindow-d, 0)
	if p.Used != nil {
		p.Used.UntoldWindow = max(p.Used.UntoldWindow-d, 0)
	}
	for i := range p.History {
		p.History[i].Age += d
	}
	for i := range p.Loss {
		p.Loss[i].MinAge += d
		p.Loss[i].MaxAge += d
	}
}
