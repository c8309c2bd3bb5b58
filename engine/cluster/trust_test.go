package cluster

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"duet/proto"
)

func testKeys(t testing.TB, secret []byte) *keyring {
	t.Helper()
	k, err := newKeyring(secret)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testSealer(t testing.TB, k *keyring, id string) *sealer {
	t.Helper()
	return fixedSealer(t, k, id, newIncarnation())
}

// fixedSealer seals the same bytes in every process that makes it, as
// fuzz targets need: their seeds are made in one process and run in
// others.
func fixedSealer(t testing.TB, k *keyring, id string, inc incarnation) *sealer {
	t.Helper()
	s, err := newSealer(k, id, inc)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var otherSecret = []byte("another secret, also of 32 bytes")

func TestKeyringRefusesShortSecrets(t *testing.T) {
	if _, err := newKeyring(testSecret[:31]); err == nil || !strings.Contains(err.Error(), "at least 256") {
		t.Fatalf("31 bytes: %v", err)
	}
}

// TestHashes: a token's and a name's hashes depend on the secret, are
// the same on every node with it, never show the token or name, and a
// token tag binds one token to one holder.
func TestHashes(t *testing.T) {
	k1, k2, other := testKeys(t, testSecret), testKeys(t, testSecret), testKeys(t, otherSecret)
	tok := proto.NewToken()
	if k1.tokenHash(tok) != k2.tokenHash(tok) || k1.nameHash("alice") != k2.nameHash("alice") {
		t.Fatal("two keyrings from one secret disagree")
	}
	if k1.tokenHash(tok) == other.tokenHash(tok) || k1.nameHash("alice") == other.nameHash("alice") {
		t.Fatal("hashes do not depend on the secret")
	}
	h := k1.tokenHash(tok)
	if len(h) != 2*hashLen || strings.Contains(h, tok.String()[:8]) {
		t.Fatalf("token hash %q", h)
	}
	if k1.nameHash("alice") == k1.nameHash("alicf") || k1.tokenHash(tok) == k1.tokenHash(proto.NewToken()) {
		t.Fatal("distinct inputs, one hash")
	}
	hk := k1.nameHash("bob")
	if k1.tokenTag(tok, hk) != k2.tokenTag(tok, hk) ||
		k1.tokenTag(tok, hk) == k1.tokenTag(tok, k1.nameHash("carol")) ||
		k1.tokenTag(tok, hk) == k1.tokenTag(proto.NewToken(), hk) ||
		k1.tokenTag(tok, hk) == other.tokenTag(tok, hk) {
		t.Fatal("a tag does not bind its token, its holder and the secret")
	}
}

func TestRecordSeal(t *testing.T) {
	k := testKeys(t, testSecret)
	s := testSealer(t, k, "node-1")
	hk := k.nameHash("alice")
	sealed := s.record("Alice", "alice", hk)
	if strings.Contains(sealed, "lice") {
		t.Fatalf("sealed record shows the name: %q", sealed)
	}
	name, key, err := testKeys(t, testSecret).openRecord("node-1", sealed, hk)
	if err != nil || name != "Alice" || key != "alice" {
		t.Fatalf("open: %q %q %v", name, key, err)
	}
	if s.record("Alice", "alice", hk) == sealed {
		t.Fatal("two seals of one name are equal: a nonce repeated")
	}
	for what, open := range map[string]func() error{
		"another record's hash": func() error { _, _, err := k.openRecord("node-1", sealed, k.nameHash("bob")); return err },
		"another node":          func() error { _, _, err := k.openRecord("node-2", sealed, hk); return err },
		"another secret": func() error {
			_, _, err := testKeys(t, otherSecret).openRecord("node-1", sealed, hk)
			return err
		},
		"a changed byte": func() error {
			b := []byte(sealed)
			b[len(b)-3] ^= 0x40
			_, _, err := k.openRecord("node-1", string(b), hk)
			return err
		},
		"truncated": func() error { _, _, err := k.openRecord("node-1", sealed[:5], hk); return err },
		"empty":     func() error { _, _, err := k.openRecord("node-1", "", hk); return err },
	} {
		if err := open(); err == nil {
			t.Errorf("a record opened with %s", what)
		}
	}
}

func TestAddressAndLease(t *testing.T) {
	inc := newIncarnation()
	for _, id := range []string{"a", "web-3", "odd#id", ""} {
		got, gotInc, ok := splitAddress(address(id, inc))
		if !ok || got != id || gotInc != inc {
			t.Errorf("%q: %q %v %v", id, got, gotInc, ok)
		}
	}
	for _, bad := range []string{"", "a", "a#12", "a#zz00000000000000", "a-0011223344556677"} {
		if _, _, ok := splitAddress(bad); ok {
			t.Errorf("%q split", bad)
		}
	}
	k := testKeys(t, testSecret)
	li, ok := parseLease(k.lease(inc, 42))
	if !ok || li.keyID != k.keyID || li.inc != inc || li.epoch != 42 {
		t.Fatalf("lease: %+v %v", li, ok)
	}
	if testKeys(t, otherSecret).keyID == k.keyID {
		t.Fatal("two secrets, one key id")
	}
	for _, bad := range []string{"", "1", "0011aabb.0011223344556677", "0011aabb.00112233445566.1", "0011aabb.0011223344556677.x", "0011aabb.0011223344556677.1.2"} {
		if _, ok := parseLease(bad); ok {
			t.Errorf("lease %q parsed", bad)
		}
	}
}

// gatePair is a sender and a receiver's gate, as on two nodes.
type gatePair struct {
	from *sealer
	to   *gate
}

func newGatePair(t testing.TB) gatePair {
	k := testKeys(t, testSecret)
	return gatePair{from: testSealer(t, k, "a"), to: newGate(testKeys(t, testSecret), newIncarnation())}
}

func (p gatePair) seal(text string, epoch uint64) []byte {
	frames := appendFrame(nil, frameMessage, 1, "bob", "alice", []byte(text), 0)
	return p.from.batch(nil, frames, new(sealScratch), 1, p.to.inc, epoch)
}

func (p gatePair) open(b []byte) (string, string) {
	_, src, frames, reason := p.to.open(nil, b)
	if reason != "" {
		return "", reason
	}
	if src != address(p.from.id, p.from.inc) {
		panic("sender's address " + src)
	}
	r := batchReader{b: frames}
	f, ok, err := r.next()
	if !ok || err != nil {
		panic(fmt.Sprintf("frames %q: %v %v", frames, ok, err))
	}
	return string(f.b), ""
}

func TestGate(t *testing.T) {
	p := newGatePair(t)
	first := p.seal("one", 1)
	if strings.Contains(string(first), "one") || strings.Contains(string(first), "alice") {
		t.Fatalf("a sealed batch shows its frames: %q", first)
	}
	if text, reason := p.open(first); text != "one" || reason != "" {
		t.Fatalf("first: %q %q", text, reason)
	}
	if _, reason := p.open(first); reason != RejectReplayed {
		t.Fatalf("replayed: %q", reason)
	}
	second := p.seal("two", 1)
	third := p.seal("three", 1)
	if text, _ := p.open(third); text != "three" {
		t.Fatal("third")
	}
	// Published out of order (never by one sender): the older one is
	// refused, as a replay would be.
	if _, reason := p.open(second); reason != RejectReplayed {
		t.Fatalf("older after newer: %q", reason)
	}

	// Bound to another incarnation of the receiver, or to an epoch it
	// has not reached.
	other := newGatePair(t)
	if _, reason := p.open(other.seal("x", 1)); reason != RejectStale {
		t.Fatalf("another receiver's: %q", reason)
	}
	if _, reason := p.open(p.seal("future", 2)); reason != RejectStale {
		t.Fatalf("future epoch: %q", reason)
	}

	// Sealed with another secret, all else right.
	foreign := gatePair{from: testSealer(t, testKeys(t, otherSecret), "a"), to: p.to}
	if _, reason := p.open(foreign.seal("x", 1)); reason != RejectForged {
		t.Fatalf("another secret: %q", reason)
	}
	// Any byte changed, with a fresh sequence number so it is not taken
	// for a replay; a header re-encoded with a new number but the old
	// ciphertext.
	good := p.seal("four", 1)
	h, n, _ := parseHeader(good)
	for i := range good {
		b := bytes.Clone(good)
		b[i] ^= 0x01
		if _, reason := p.open(b); reason == "" {
			t.Fatalf("byte %d changed, and accepted", i)
		}
	}
	h.seq += 100
	if _, reason := p.open(append(appendHeader(nil, &h), good[n:]...)); reason != RejectForged {
		t.Fatalf("new sequence number, old ciphertext: %q", reason)
	}
	if text, reason := p.open(good); text != "four" || reason != "" {
		t.Fatalf("the real batch after the forgeries: %q %q", text, reason)
	}
	if _, reason := p.open([]byte("not a batch")); reason != RejectMalformed {
		t.Fatalf("garbage: %q", reason)
	}
}

// TestGateEpochs: a batch bound to the current or the previous epoch is
// taken; older ones are refused, and what the gate remembers of a
// sender goes once no batch of it could be taken any more.
func TestGateEpochs(t *testing.T) {
	p := newGatePair(t)
	early := p.seal("early", 1)
	held := p.seal("held back", 1)
	if text, _ := p.open(early); text != "early" {
		t.Fatal("early")
	}
	if p.to.advance() != 2 {
		t.Fatal("epoch 2")
	}
	// A sender that has not heard of epoch 2 yet is still heard.
	if text, _ := p.open(held); text != "held back" {
		t.Fatal("bound to the previous epoch")
	}
	if _, reason := p.open(early); reason != RejectReplayed {
		t.Fatalf("replay in the next epoch: %q", reason)
	}
	if text, _ := p.open(p.seal("now", 2)); text != "now" {
		t.Fatal("current epoch")
	}
	p.to.advance()
	p.to.advance() // 4: epoch 2's batches are refused, and a is forgotten
	if len(p.to.peers) != 0 {
		t.Fatalf("still remembers %d senders", len(p.to.peers))
	}
	if _, reason := p.open(early); reason != RejectStale {
		t.Fatalf("replay two epochs on: %q", reason)
	}
	if text, _ := p.open(p.seal("later", 4)); text != "later" {
		t.Fatal("a sender heard again after being forgotten")
	}
	// A sender heard in the previous epoch is kept.
	p.to.advance()
	if len(p.to.peers) != 1 {
		t.Fatalf("remembers %d senders, want 1", len(p.to.peers))
	}
}

// FuzzGate: of anything published on a node's channel, the gate takes
// only batches sealed by a node with the secret, each once. The fuzzer
// starts from real batches and changes them; whatever it makes that is
// not one of them byte for byte must be refused, and must not stop the
// real ones from being taken afterwards.
func FuzzGate(f *testing.F) {
	k := testKeys(f, testSecret)
	p := gatePair{
		from: fixedSealer(f, k, "a", incarnation{1, 2, 3, 4, 5, 6, 7, 8}),
		to:   newGate(k, incarnation{8, 7, 6, 5, 4, 3, 2, 1}),
	}
	var real [][]byte
	for i := range 3 {
		real = append(real, p.seal(fmt.Sprint("message ", i), 1))
	}
	for _, b := range real {
		f.Add(b)
	}
	f.Add([]byte{batchVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		g := newGate(p.to.keys, p.to.inc)
		_, _, _, reason := g.open(nil, b)
		isReal := false
		for _, r := range real {
			isReal = isReal || bytes.Equal(r, b)
		}
		if reason == "" && !isReal {
			t.Fatalf("accepted bytes no node sealed: %q", b)
		}
		if reason == "" {
			if _, _, _, again := g.open(nil, b); again != RejectReplayed {
				t.Fatalf("accepted twice: %q", again)
			}
			return
		}
		last := real[len(real)-1]
		if _, _, _, r := g.open(nil, last); r != "" {
			t.Fatalf("a real batch refused (%s) after %q", r, b)
		}
	})
}

// Benchmarks: what sealing and opening cost per batch, beside framing,
// which the relay did before. A batch holds what a sender had queued for
// one node during one round trip to Redis: one message at light load,
// many under a burst.
func BenchmarkBatch(b *testing.B) {
	for _, msgs := range []int{1, 16, 256} {
		text := bytes.Repeat([]byte("x"), 80)
		var frames []byte
		for range msgs {
			frames = appendFrame(frames, frameMessage, 1<<50, "alice", "bob", text, 0)
		}
		b.Run(fmt.Sprintf("frames=%d/bytes=%d/seal", msgs, len(frames)), func(b *testing.B) {
			p := newGatePair(b)
			var out []byte
			var sc sealScratch
			b.SetBytes(int64(len(frames)))
			b.ReportAllocs()
			for b.Loop() {
				out = p.from.batch(out[:0], frames, &sc, 1, p.to.inc, 1)
			}
		})
		b.Run(fmt.Sprintf("frames=%d/bytes=%d/open", msgs, len(frames)), func(b *testing.B) {
			p := newGatePair(b)
			batches := make([][]byte, 1024)
			for i := range batches {
				batches[i] = p.from.batch(nil, frames, new(sealScratch), 1, p.to.inc, 1)
			}
			var buf []byte
			b.SetBytes(int64(len(frames)))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if i == len(batches) {
					// Fresh sequence numbers: the gate takes each batch once.
					b.StopTimer()
					p.to = newGate(p.to.keys, p.to.inc)
					i = 0
					b.StartTimer()
				}
				var reason string
				if _, _, buf, reason = p.to.open(buf, batches[i]); reason != "" {
					b.Fatal(reason)
				}
				i++
			}
		})
	}
}

// BenchmarkRefuse: what a batch published by someone without the secret
// costs the node that refuses it. The dearest is one that names a
// sender run the node has not heard from, bound to the node's own
// incarnation and epoch (both are in its lease): the node derives that
// run's key before the seal fails.
func BenchmarkRefuse(b *testing.B) {
	p := newGatePair(b)
	p.open(p.seal("known", 1))
	frames := appendFrame(nil, frameMessage, 1, "bob", "alice", bytes.Repeat([]byte("x"), 80), 0)
	outsider := testSealer(b, testKeys(b, otherSecret), "a")
	for _, tc := range []struct {
		name, want string
		batch      func() []byte
	}{
		{"malformed", RejectMalformed, func() []byte { return frames }},
		{"stale", RejectStale, func() []byte {
			return outsider.batch(nil, frames, new(sealScratch), 1, newIncarnation(), 1)
		}},
		{"forged/known-sender", RejectForged, func() []byte {
			outsider.inc = p.from.inc
			outsider.seq.Store(1 << 40)
			return outsider.batch(nil, frames, new(sealScratch), 1, p.to.inc, 1)
		}},
		{"forged/unknown-sender", RejectForged, func() []byte {
			outsider.inc = newIncarnation()
			return outsider.batch(nil, frames, new(sealScratch), 1, p.to.inc, 1)
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			batch := tc.batch()
			var buf []byte
			b.ReportAllocs()
			for b.Loop() {
				if _, _, _, reason := p.to.open(buf, batch); reason != tc.want {
					b.Fatalf("refused as %q, want %q", reason, tc.want)
				}
			}
		})
	}
}

// FuzzLease: a lease is read from Redis, where anyone with access may
// have written it. Reading must never panic, and what reads must write
// back the same.
func FuzzLease(f *testing.F) {
	k := testKeys(f, testSecret)
	f.Add(k.lease(newIncarnation(), 7))
	f.Add("1")
	f.Add("..")
	f.Add("0011aabb.0011223344556677.18446744073709551615")
	f.Fuzz(func(t *testing.T, s string) {
		li, ok := parseLease(s)
		if !ok {
			return
		}
		again, ok := parseLease(li.keyID + "." + li.inc.String() + "." + fmt.Sprint(li.epoch))
		if !ok || again != li {
			t.Fatalf("%q read as %+v, which reads back as %+v", s, li, again)
		}
	})
}

// FuzzRecord: a sealed name is read from Redis. Opening arbitrary bytes
// must never panic, and must fail unless they are a seal a node made
// for that record.
func FuzzRecord(f *testing.F) {
	k := testKeys(f, testSecret)
	s := fixedSealer(f, k, "node-1", incarnation{1, 2, 3, 4, 5, 6, 7, 8})
	hk := k.nameHash("alice")
	genuine := s.record("Alice", "alice", hk)
	f.Add([]byte(genuine))
	f.Add([]byte{})
	f.Add(make([]byte, 8))
	f.Fuzz(func(t *testing.T, b []byte) {
		name, key, err := k.openRecord("node-1", string(b), hk)
		if err == nil && (string(b) != genuine || name != "Alice" || key != "alice") {
			t.Fatalf("%q opened as %q %q", b, name, key)
		}
	})
}
