package cluster

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"duet/engine/logsample"
	"duet/proto"
)

// Trust. Redis is shared infrastructure, and whoever can read it, or
// write to it, must not learn what duet's users say or how to reach
// them, nor speak in a node's name. Every node holds the cluster secret;
// Redis never sees it or anything it could be recovered from. From it
// each node derives (HKDF-SHA256):
//
//   - a directory key. Tokens and names are stored as HMAC-SHA256
//     under it, cut to 128 bits: a token presented to /connect is
//     hashed and looked up, and nothing in Redis gives the token back.
//     A user's record also holds a tag binding the token to the
//     holder's hashed name, which only a node with the token and the
//     secret can make; a claim checks it, so a Redis writer who
//     repoints a token's key at another user's record pairs nobody.
//   - one AES-256-GCM key per sending incarnation (node id and a random
//     value new at every start). Batches between nodes are sealed with
//     it, the header in the clear but authenticated; so is the name as
//     the user spelled it, in the user's record. Nonces are a counter of
//     the incarnation's, so none repeats under one key.
//
// Replay. A batch's header binds the receiving node's incarnation and
// one of its receive epochs, and a sequence number. The receiver takes
// only batches bound to itself and to its current or previous epoch,
// and from each sending incarnation only ever higher sequence numbers.
// Epochs advance every epochPeriod, and a sender learns the current one
// from the receiver's lease, from a claim, or from the receiver's own
// batches; so a batch captured earlier is refused for its sequence
// number while its epoch is current, and for its epoch afterwards, and
// the receiver remembers sequence numbers only of senders heard from
// within the last two epochs.

// incarnation tells apart two runs of a node with one node id. Its
// random bytes make each run's batch key its own.
type incarnation [8]byte

func newIncarnation() incarnation {
	var inc incarnation
	_, _ = rand.Read(inc[:])
	return inc
}

func (i incarnation) String() string { return hex.EncodeToString(i[:]) }

// address names a node's incarnation to the hub: the node id, '#' and
// the incarnation in hex. The hub treats it as an opaque node name, so a
// node that restarted under the same id is a different node to it, and
// its pairings with the old run are cut as those of a dead node.
func address(id string, inc incarnation) string { return id + "#" + inc.String() }

// splitAddress undoes address. A node id may itself hold '#'; the
// incarnation is the fixed-length tail.
func splitAddress(addr string) (id string, inc incarnation, ok bool) {
	const tail = 1 + 2*len(incarnation{})
	if len(addr) < tail || addr[len(addr)-tail] != '#' {
		return "", inc, false
	}
	if _, err := hex.Decode(inc[:], []byte(addr[len(addr)-tail+1:])); err != nil {
		return "", inc, false
	}
	return addr[:len(addr)-tail], inc, true
}

// hashLen is the length of a stored hash, in bytes: 128 bits is beyond
// collision among any number of users duet will see, and half the
// memory of the full 256.
const hashLen = 16

// keyring holds what is derived from the cluster secret.
type keyring struct {
	prk   []byte // HKDF's pseudorandom key, from which the others are expanded
	dir   []byte // HMAC key for tokens, names and token tags
	keyID string // names the secret in leases: 8 hex digits
}

func newKeyring(secret []byte) (*keyring, error) {
	if len(secret) < 32 {
		return nil, fmt.Errorf("cluster: the cluster secret holds %d bits; it must hold at least 256", 8*len(secret))
	}
	prk, err := hkdf.Extract(sha256.New, secret, []byte("duet cluster v1"))
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	k := &keyring{prk: prk}
	if k.dir, err = hkdf.Expand(sha256.New, prk, "directory", 32); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	id, err := hkdf.Expand(sha256.New, prk, "key id", 4)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	k.keyID = hex.EncodeToString(id)
	return k, nil
}

// mac is HMAC-SHA256 under the directory key of a domain byte and the
// parts, cut to hashLen and written in hex. The domain byte keeps a
// token's hash, a name's hash and a tag from ever being equal.
func (k *keyring) mac(domain byte, parts ...[]byte) string {
	h := hmac.New(sha256.New, k.dir)
	h.Write([]byte{domain})
	for _, p := range parts {
		h.Write(p)
	}
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])[:hashLen])
}

// tokenHash is what the directory holds for a token.
func (k *keyring) tokenHash(t proto.Token) string { return k.mac('t', t[:]) }

// nameHash is what the directory holds for a user's folded name.
func (k *keyring) nameHash(key string) string { return k.mac('n', []byte(key)) }

// resumeHash is what the directory holds for a session's resume key,
// given the key's SHA-256 (all a hub keeps of it): a resume on any node
// finds the session by it.
func (k *keyring) resumeHash(sum *[sha256.Size]byte) string { return k.mac('r', sum[:]) }

// pairTag is the id a pairing's two sides are told (hub.Directory's
// PairTag): every node of the cluster tags pairing pairID alike, with
// no word between them, and a page resumed on any node is told the id
// it was told at its pairing; keyed, it says nothing of the pairing's
// number, as a hub on its own's random ids say nothing.
func (k *keyring) pairTag(pairID uint64) uint64 {
	tag, _ := strconv.ParseUint(k.mac('p', binary.BigEndian.AppendUint64(nil, pairID))[:16], 16, 64)
	return max(tag, 1) // 0 says "none"
}

// clientField is what a user's record holds of the protocol its client
// speaks (hub.Claim.PeerProto): its name and a tag binding it to the
// record's hashed name, so that a Redis writer cannot tell a claimant
// that a partner who can encrypt cannot (or the other way), only
// replay what a node wrote for that user before. Empty for
// proto.ProtoUnknown.
func (k *keyring) clientField(hashedName string, client proto.Protocol) string {
	name := client.String()
	if name == "" {
		return ""
	}
	return name + "." + k.mac('c', []byte(hashedName), []byte(name))
}

// clientOf reads a record's client field; proto.ProtoUnknown when it is
// empty (written by a node from before it) or fails its tag.
func (k *keyring) clientOf(hashedName, field string) (client proto.Protocol, ok bool) {
	name, tag, found := strings.Cut(field, ".")
	if !found {
		return proto.ProtoUnknown, field == ""
	}
	if !hmac.Equal([]byte(tag), []byte(k.mac('c', []byte(hashedName), []byte(name)))) {
		return proto.ProtoUnknown, false
	}
	switch name {
	case proto.ProtoJSON.String():
		return proto.ProtoJSON, true
	case proto.ProtoLine.String():
		return proto.ProtoLine, true
	}
	return proto.ProtoUnknown, false
}

// tokenTag binds a token to the hashed name of its holder: only a node
// that has the token and the secret can make it.
func (k *keyring) tokenTag(t proto.Token, hashedName string) string {
	return k.mac('b', t[:], []byte(hashedName))
}

// aeadFor returns the AEAD of one sending incarnation.
func (k *keyring) aeadFor(node string, inc incarnation) (cipher.AEAD, error) {
	info := make([]byte, 0, 16+len(node)+len(inc))
	info = append(info, "batch "...)
	info = appendStr(info, node)
	info = append(info, inc[:]...)
	key, err := hkdf.Expand(sha256.New, k.prk, string(info), 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// nonce is the GCM nonce for sequence number seq: four zero bytes and
// seq, big-endian. Each incarnation numbers what it seals from 1 up.
func nonce(seq uint64) [12]byte {
	var n [12]byte
	binary.BigEndian.PutUint64(n[4:], seq)
	return n
}

// sealer seals what this incarnation writes: batches and records.
type sealer struct {
	id   string
	inc  incarnation
	aead cipher.AEAD
	seq  atomic.Uint64 // last sequence number used; batches and records share it
}

func newSealer(k *keyring, id string, inc incarnation) (*sealer, error) {
	aead, err := k.aeadFor(id, inc)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	return &sealer{id: id, inc: inc, aead: aead}, nil
}

// sealScratch is a sender's reusable space for sealing, so a batch
// costs no allocation.
type sealScratch struct {
	hdr   []byte
	nonce [12]byte
}

// batch appends to dst the batch of frames for the receiver incarnation
// dstInc in its epoch dstEpoch; srcEpoch is this node's own current
// epoch, told so the receiver can answer at once.
func (s *sealer) batch(dst, frames []byte, sc *sealScratch, srcEpoch uint64, dstInc incarnation, dstEpoch uint64) []byte {
	h := header{src: s.id, srcInc: s.inc, seq: s.seq.Add(1), srcEpoch: srcEpoch, dstInc: dstInc, dstEpoch: dstEpoch}
	sc.hdr = appendHeader(sc.hdr[:0], &h)
	sc.nonce = nonce(h.seq)
	out := append(dst, sc.hdr...)
	// The header is both written out and authenticated; Seal is given a
	// copy of it, as its additional data must not overlap its output.
	return s.aead.Seal(out, sc.nonce[:], frames, sc.hdr)
}

// Record sealing. The name as the user spelled it, and its folded form,
// are stored sealed by the node that holds the user, bound to the
// record's hashed name:
//
//	record = inc:8 uvarint(seq) AES-GCM(str(name) key)
//	aad    = 'R' hashed name
func (s *sealer) record(name, key, hashedName string) string {
	seq := s.seq.Add(1)
	pt := appendStr(make([]byte, 0, 2+len(name)+len(key)), name)
	pt = append(pt, key...)
	out := append(make([]byte, 0, len(s.inc)+binary.MaxVarintLen64+len(pt)+s.aead.Overhead()), s.inc[:]...)
	out = binary.AppendUvarint(out, seq)
	n := nonce(seq)
	return string(s.aead.Seal(out, n[:], pt, recordAAD(hashedName)))
}

func recordAAD(hashedName string) []byte { return append([]byte{'R'}, hashedName...) }

// Parked sessions and what is queued for them are sealed by whichever
// node writes them, and opened by whichever node takes them up, so the
// sealed form names its writer:
//
//	sealed = str(node) inc:8 uvarint(seq) AES-GCM(plaintext)
//
// under that incarnation's key and nonce seq, with additional data
// that binds it to its place (parkAAD, queueAAD).
func (s *sealer) sealNamed(dst, plaintext, aad []byte) []byte {
	seq := s.seq.Add(1)
	dst = appendStr(dst, s.id)
	dst = append(dst, s.inc[:]...)
	dst = binary.AppendUvarint(dst, seq)
	n := nonce(seq)
	return s.aead.Seal(dst, n[:], plaintext, aad)
}

// opener opens what sealNamed sealed, keeping the key of each writer it
// met.
type opener struct {
	k     *keyring
	aeads map[senderID]cipher.AEAD
}

func (k *keyring) opener() *opener { return &opener{k: k, aeads: make(map[senderID]cipher.AEAD)} }

func (o *opener) open(sealed, aad []byte) ([]byte, error) {
	r := batchReader{b: sealed}
	node, err := r.bytes()
	if err != nil {
		return nil, errBadRecord
	}
	inc, err := r.incarnation()
	if err != nil {
		return nil, errBadRecord
	}
	seq, err := r.uvarint()
	if err != nil {
		return nil, errBadRecord
	}
	id := senderID{string(node), inc}
	aead := o.aeads[id]
	if aead == nil {
		if aead, err = o.k.aeadFor(id.node, inc); err != nil {
			return nil, err
		}
		o.aeads[id] = aead
	}
	n := nonce(seq)
	pt, err := aead.Open(nil, n[:], r.b, aad)
	if err != nil {
		return nil, errBadRecord
	}
	return pt, nil
}

// parkAAD binds a parked session to its hashed name and its moves, so a
// parked state cannot be taken for another session's, or for an earlier
// one of the same session.
func parkAAD(hashedName string, gen uint32) []byte { return parkPartAAD('K', hashedName, gen) }

// lastIDAAD binds a parked session's last id (writePark) to that
// session and that park, as parkAAD binds the session itself, so an id
// cannot be moved to another session or another of its parks.
func lastIDAAD(hashedName string, gen uint32) []byte { return parkPartAAD('I', hashedName, gen) }

// holderAAD binds a parked session's holder mark (writePark) to that
// session and that park, as lastIDAAD binds its last id.
func holderAAD(hashedName string, gen uint32) []byte { return parkPartAAD('H', hashedName, gen) }

// untoldAAD binds what a parked session's partner went away without
// (writePark) to that session and that park, as lastIDAAD binds its
// last id.
func untoldAAD(hashedName string, gen uint32) []byte { return parkPartAAD('U', hashedName, gen) }

// usedAAD binds the key a parked session's last resume used, with its
// news (writePark), to that session and that park, as lastIDAAD binds
// its last id.
func usedAAD(hashedName string, gen uint32) []byte { return parkPartAAD('D', hashedName, gen) }

// toldAAD binds what a parked session was told of its pairing while away
// (writePark) to that session and that park, as lastIDAAD binds its
// last id.
func toldAAD(hashedName string, gen uint32) []byte { return parkPartAAD('T', hashedName, gen) }

// parkPartAAD binds a part of a park, of kind, to its session and that
// park (gen): each part is sealed for its own kind, so that none can be
// taken for another.
func parkPartAAD(kind byte, hashedName string, gen uint32) []byte {
	b := append([]byte{kind}, hashedName...)
	return binary.BigEndian.AppendUint32(b, gen)
}

// queueAAD binds a message queued for a parked session to that session,
// that park (gen) and its place in the queue, so queued messages cannot
// be moved to another queue, reordered or repeated; and to what it is,
// a text or a sealed frame's data (sealed), so that neither can be
// taken for the other. A node from before sealed frames crossed nodes opens only the
// first, and refuses the second as a record not written for its place.
func queueAAD(hashedName string, gen uint32, index uint64, sealed bool) []byte {
	kind := byte('Q')
	if sealed {
		kind = 'S'
	}
	b := append([]byte{kind}, hashedName...)
	b = binary.BigEndian.AppendUint32(b, gen)
	return binary.BigEndian.AppendUint64(b, index)
}

// leftAAD binds how a parked session's pairing ended (its park's left)
// to that session and that pairing, so it cannot be moved to another
// session, nor told of a pairing it did not end.
func leftAAD(hashedName string, pair uint64) []byte {
	b := append([]byte{'L'}, hashedName...)
	return binary.BigEndian.AppendUint64(b, pair)
}

var errBadRecord = errors.New("cluster: a directory record failed verification")

// openRecord reads a sealed record written by node.
func (k *keyring) openRecord(node, sealed, hashedName string) (name, key string, err error) {
	b := []byte(sealed)
	if len(b) < len(incarnation{}) {
		return "", "", errBadRecord
	}
	var inc incarnation
	copy(inc[:], b)
	b = b[len(inc):]
	seq, n := binary.Uvarint(b)
	if n <= 0 {
		return "", "", errBadRecord
	}
	aead, err := k.aeadFor(node, inc)
	if err != nil {
		return "", "", err
	}
	nc := nonce(seq)
	pt, err := aead.Open(nil, nc[:], b[n:], recordAAD(hashedName))
	if err != nil {
		return "", "", errBadRecord
	}
	r := batchReader{b: pt}
	nb, err := r.bytes()
	if err != nil {
		return "", "", errBadRecord
	}
	return string(nb), string(r.b), nil
}

// Leases. A node's lease holds, besides being there, what a sender needs
// to bind batches to it: the key id of its secret, its incarnation and
// its current receive epoch, as "keyid.incarnation.epoch". A Redis
// writer can change it; that makes batches to the node be refused (a
// denial of service, which such a writer can cause anyway), never
// accepted wrongly.
func (k *keyring) lease(inc incarnation, epoch uint64) string {
	return k.keyID + "." + inc.String() + "." + strconv.FormatUint(epoch, 10)
}

type leaseInfo struct {
	keyID string
	inc   incarnation
	epoch uint64
}

func parseLease(s string) (l leaseInfo, ok bool) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || len(parts[0]) != 8 || len(parts[1]) != 2*len(incarnation{}) {
		return l, false
	}
	if _, err := hex.Decode(l.inc[:], []byte(parts[1])); err != nil {
		return l, false
	}
	epoch, err := strconv.ParseUint(parts[2], 10, 64)
	if err != nil {
		return l, false
	}
	l.keyID, l.epoch = parts[0], epoch
	return l, true
}

// Reasons a received batch is refused; each is counted (Stats) and
// logged, sampled.
const (
	RejectMalformed = "malformed" // not a batch at all
	RejectStale     = "stale"     // bound to another incarnation or an old epoch of this node
	RejectReplayed  = "replayed"  // a sequence number the sender already used
	RejectForged    = "forged"    // fails authentication: not sealed with the cluster secret
)

// RejectReasons lists every reason, for metrics that show each from the
// start.
var RejectReasons = []string{RejectMalformed, RejectStale, RejectReplayed, RejectForged}

func rejectIndex(reason string) int {
	for i, r := range RejectReasons {
		if r == reason {
			return i
		}
	}
	panic("cluster: unknown reject reason " + reason)
}

// senderID identifies one sending incarnation.
type senderID struct {
	node string
	inc  incarnation
}

// inbound is what a receiver keeps of one sending incarnation.
type inbound struct {
	aead  cipher.AEAD
	addr  string // the sender's address, made once
	last  uint64 // highest sequence number accepted
	epoch uint64 // highest of this node's epochs an accepted batch was bound to
}

// gate admits the batches addressed to one receiving incarnation: those
// bound to it and to its current or previous epoch, sealed with the
// cluster secret, and fresh. Entries in peers are made only for batches
// that authenticated, so an attacker cannot grow it; advance drops those
// no batch could be accepted for any more.
type gate struct {
	keys  *keyring
	inc   incarnation
	epoch atomic.Uint64 // current receive epoch, from 1

	mu    sync.Mutex
	peers map[senderID]*inbound
	nonce [12]byte // scratch for open, under mu
}

func newGate(k *keyring, inc incarnation) *gate {
	g := &gate{keys: k, inc: inc, peers: make(map[senderID]*inbound)}
	g.epoch.Store(1)
	return g
}

// open checks a received batch and, if it is admitted, returns its
// header, the sender's address and its frames, decrypted into buf.
// Otherwise reason says why not (one of the Reject constants).
func (g *gate) open(buf, batch []byte) (h header, src string, frames []byte, reason string) {
	h, n, err := parseHeader(batch)
	if err != nil {
		return h, "", nil, RejectMalformed
	}
	// Under the lock, so an epoch cannot advance (and prune) between
	// this check and the sequence number's.
	g.mu.Lock()
	defer g.mu.Unlock()
	cur := g.epoch.Load()
	if h.dstInc != g.inc || (h.dstEpoch != cur && h.dstEpoch+1 != cur) {
		return h, "", nil, RejectStale
	}
	id := senderID{h.src, h.srcInc}
	in := g.peers[id]
	if in != nil && h.seq <= in.last {
		return h, "", nil, RejectReplayed
	}
	aead := (cipher.AEAD)(nil)
	if in != nil {
		aead = in.aead
	} else if aead, err = g.keys.aeadFor(h.src, h.srcInc); err != nil {
		return h, "", nil, RejectForged
	}
	g.nonce = nonce(h.seq)
	frames, err = aead.Open(buf[:0], g.nonce[:], batch[n:], batch[:n])
	if err != nil {
		return h, "", nil, RejectForged
	}
	if in == nil {
		in = &inbound{aead: aead, addr: address(h.src, h.srcInc)}
		g.peers[id] = in
	}
	in.last = h.seq
	in.epoch = max(in.epoch, h.dstEpoch)
	return h, in.addr, frames, ""
}

// advance starts this node's next receive epoch: batches bound to the
// one before the previous are refused from now on, so a sender whose
// batches were all bound to such epochs needs no sequence number kept.
func (g *gate) advance() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	cur := g.epoch.Add(1)
	for id, in := range g.peers {
		if in.epoch+1 < cur {
			delete(g.peers, id)
		}
	}
	return cur
}

// sampler lets a kind of log line through at most once per period, and
// says how many it held back meanwhile.
type sampler struct {
	period time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (s *sampler) allow() (ok bool, suppressed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if !s.last.IsZero() && now.Sub(s.last) < s.period {
		s.suppressed++
		return false, 0
	}
	s.last, suppressed, s.suppressed = now, s.suppressed, 0
	return true, suppressed
}

// printable shortens and cleans a string an attacker may have chosen
// (a node id in a forged header) for a log line.
func printable(s string) string { return logsample.Printable(s, 64) }
