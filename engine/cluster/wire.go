package cluster

import (
	"encoding/binary"
	"errors"
)

// Events between nodes travel as batches on the receiving node's pub/sub
// channel: one PUBLISH carries everything a sender had queued for that
// node, in order. A batch is a header, in the clear but authenticated,
// and the frames, sealed (trust.go says how and why):
//
//	batch  = header sealed
//	header = version:byte str(src) srcinc:8 uvarint(seq) uvarint(srcepoch)
//	         dstinc:8 uvarint(dstepoch)
//	sealed = AES-256-GCM(frame*), key of (src, srcinc), nonce from seq,
//	         the header as additional data
//	frame  = kind:byte uvarint(pair) str(to) str(a) str(b) uvarint(n)
//	str    = uvarint(len) bytes
//
// src is the sending node's id and srcinc its incarnation; seq numbers
// what the incarnation seals; srcepoch is the sender's own current
// receive epoch; dstinc and dstepoch bind the batch to one incarnation
// of the receiver and one of its epochs.
//
// kind is one of the frame kinds below; to is the receiving user's
// folded name and pair the pairing's number, so a frame left over from
// an ended pairing is recognised and dropped.
const (
	framePaired  = 'P' // a = claimant's key, b = claimant's name, n = its protocol
	frameMessage = 'M' // a = sender's key, b = text
	frameLeft    = 'L' // a = reason, n = undelivered count, b = arrivals

	// A left frame's arrivals (b) are, as a uvarint, how many of the
	// receiving user's messages in the pairing reached the sending node
	// (hub.ArrivalCounter) from the receiving node, since the user's
	// session went live there (a session that moved during the pairing
	// came from other nodes before): the receiving node counts what it
	// sent there since beyond them as undelivered too. The left frame
	// of a pairing cut rather than left (link_lost: a node linked to
	// Redis again, a full sender) carries them as well. A node from
	// before it sends none (b empty), and the count is then n alone; one
	// from before the move's reckoning counts the whole pairing's, which
	// tells a moved user too few.

	// A sealed frame's data (end-to-end encryption between two pages,
	// docs/E2E.md), carried as a message is and numbered in the same
	// sequence: a = sender's key, b = the data, which no node reads.
	frameSealed = 'S'

	// The partner's session went away (n = how long it may still take
	// to come back, in milliseconds; b = how many of the receiving
	// user's messages will never reach it, as a uvarint, empty when
	// none: peer_away's undelivered), came back, or refused a message
	// (a = the error's code, b = its text: peer_away_full, which says
	// how much is waiting, or peer_cannot_decrypt for a sealed frame
	// that reached a terminal): what a resumable session's partner is
	// told besides messages and the pairing's end. B's n is the
	// protocol the session came back over. A protocol (P, B) is
	// proto.Protocol's number: 0 from a node from before it was said,
	// and the partner is then told none, as for a pairing that cannot
	// be encrypted. An away frame's b is empty from a node from before
	// it was carried, and read as none; a node from before ignores it,
	// and its user is told the away news without the count. An away
	// frame's a is "shutdown" when the session's node drains for a
	// restart, else empty (lost the connection); a node from before
	// sends and ignores it alike.
	frameAway  = 'A'
	frameBack  = 'B'
	frameError = 'E'

	// A session moves between nodes (move.go, route.go). Its node tells
	// the node of its partner to hold what the partner says (Z, n = its
	// moves so far), which answers once all it sent before has gone
	// (z); then that it is parked (K, a = its moves, n = how long it may
	// still wait, in milliseconds); the node that takes it up says it
	// has it (O, a = its key, n = its moves). A node asks the node that
	// holds a session to let it go for a resume (H, b = the SHA-256 of
	// the resume key, n = a request number), which answers (h, a =
	// "ok" or an error code, n = the request number). H and h name no
	// user or pairing.
	frameFreeze     = 'Z'
	frameFrozen     = 'z'
	frameParked     = 'K'
	frameMoved      = 'O'
	frameHandOver   = 'H'
	frameHandedOver = 'h'

	// A login of an account whose password it proved asks the node that
	// holds the account's session to log it out (X, to = the folded
	// name, b = 1 to do so only if it is away, else 0, n = a request
	// number), which answers with h as for a hand-over ("ok", or
	// name_taken for a session that stays).
	frameEvict = 'X'
)

// batchVersion is the header's first byte. A node that meets another
// version refuses the batch as malformed.
const batchVersion = 1

type header struct {
	src      string
	srcInc   incarnation
	seq      uint64
	srcEpoch uint64
	dstInc   incarnation
	dstEpoch uint64
}

type frame struct {
	kind byte
	pair uint64
	to   string
	a    string
	b    []byte
	n    uint64
}

func appendStr(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

func appendHeader(dst []byte, h *header) []byte {
	dst = append(dst, batchVersion)
	dst = appendStr(dst, h.src)
	dst = append(dst, h.srcInc[:]...)
	dst = binary.AppendUvarint(dst, h.seq)
	dst = binary.AppendUvarint(dst, h.srcEpoch)
	dst = append(dst, h.dstInc[:]...)
	return binary.AppendUvarint(dst, h.dstEpoch)
}

func appendFrame(dst []byte, kind byte, pair uint64, to, a string, b []byte, n uint64) []byte {
	dst = append(dst, kind)
	dst = binary.AppendUvarint(dst, pair)
	dst = appendStr(dst, to)
	dst = appendStr(dst, a)
	dst = appendBytes(dst, b)
	return binary.AppendUvarint(dst, n)
}

// appendCount is a count carried in a frame's b, as a uvarint: a left
// frame's arrivals, an away frame's undelivered.
func appendCount(count uint64) []byte { return binary.AppendUvarint(nil, count) }

// parseCount reads a count carried in a frame's b; ok is false when it
// has none (a node from before it was carried), or none that reads.
func parseCount(b []byte) (count uint64, ok bool) {
	v, n := binary.Uvarint(b)
	return v, n > 0 && n == len(b)
}

var errBadBatch = errors.New("cluster: malformed batch")

// batchReader walks a received batch: its header, then, once decrypted,
// its frames.
type batchReader struct {
	b []byte
}

func (r *batchReader) uvarint() (uint64, error) {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		return 0, errBadBatch
	}
	r.b = r.b[n:]
	return v, nil
}

func (r *batchReader) bytes() ([]byte, error) {
	l, err := r.uvarint()
	if err != nil || l > uint64(len(r.b)) {
		return nil, errBadBatch
	}
	v := r.b[:l:l]
	r.b = r.b[l:]
	return v, nil
}

func (r *batchReader) incarnation() (inc incarnation, err error) {
	if len(r.b) < len(inc) {
		return inc, errBadBatch
	}
	copy(inc[:], r.b)
	r.b = r.b[len(inc):]
	return inc, nil
}

// parseHeader reads a batch's header; n is its length in bytes, and what
// follows it is the sealed frames.
func parseHeader(b []byte) (h header, n int, err error) {
	if len(b) == 0 || b[0] != batchVersion {
		return h, 0, errBadBatch
	}
	r := batchReader{b: b[1:]}
	src, err := r.bytes()
	if err != nil {
		return h, 0, err
	}
	h.src = string(src)
	if h.srcInc, err = r.incarnation(); err != nil {
		return h, 0, err
	}
	if h.seq, err = r.uvarint(); err != nil {
		return h, 0, err
	}
	if h.srcEpoch, err = r.uvarint(); err != nil {
		return h, 0, err
	}
	if h.dstInc, err = r.incarnation(); err != nil {
		return h, 0, err
	}
	if h.dstEpoch, err = r.uvarint(); err != nil {
		return h, 0, err
	}
	return h, len(b) - len(r.b), nil
}

// next reads one frame; ok is false at the end of the batch.
func (r *batchReader) next() (f frame, ok bool, err error) {
	if len(r.b) == 0 {
		return f, false, nil
	}
	f.kind = r.b[0]
	r.b = r.b[1:]
	if f.pair, err = r.uvarint(); err != nil {
		return f, false, err
	}
	to, err := r.bytes()
	if err != nil {
		return f, false, err
	}
	a, err := r.bytes()
	if err != nil {
		return f, false, err
	}
	if f.b, err = r.bytes(); err != nil {
		return f, false, err
	}
	if f.n, err = r.uvarint(); err != nil {
		return f, false, err
	}
	f.to, f.a = string(to), string(a)
	return f, true, nil
}
