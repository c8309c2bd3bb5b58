package cluster

import (
	"encoding/binary"
	"errors"
)

// Events between nodes travel as batches on the receiving node's pub/sub
// channel: one PUBLISH carries everything a sender had queued for that
// node, in order. A batch is the sending node's id followed by frames:
//
//	batch = str(node) frame*
//	frame = kind:byte uvarint(pair) str(to) str(a) str(b) uvarint(n)
//	str   = uvarint(len) bytes
//
// kind is one of the frame kinds below; to is the receiving user's
// folded name and pair the pairing's number, so a frame left over from
// an ended pairing is recognised and dropped.
const (
	framePaired  = 'P' // a = claimant's key, b = claimant's name
	frameMessage = 'M' // a = sender's key, b = text
	frameLeft    = 'L' // a = reason, n = undelivered count
)

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

func appendFrame(dst []byte, kind byte, pair uint64, to, a string, b []byte, n uint64) []byte {
	dst = append(dst, kind)
	dst = binary.AppendUvarint(dst, pair)
	dst = appendStr(dst, to)
	dst = appendStr(dst, a)
	dst = appendBytes(dst, b)
	return binary.AppendUvarint(dst, n)
}

var errBadBatch = errors.New("cluster: malformed batch")

// batchReader walks a received batch.
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

// header reads the sending node's id.
func (r *batchReader) header() (string, error) {
	b, err := r.bytes()
	return string(b), err
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
