package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json from this implementation")

const vectorsPath = "testdata/vectors.json"

// vectorFile is testdata/vectors.json: the exchange of docs/E2E.md worked
// through with fixed keys and nonces. The browser test holds e2e.js to the
// same file, and docs/E2E.md shows its first vector (TestDocVector).
type vectorFile struct {
	Comment string   `json:"comment"`
	Vectors []vector `json:"vectors"`
}

// vector is one worked exchange. Byte strings are lowercase hex, except
// link_secret and a message's data, which are base64url as they travel.
type vector struct {
	Name string `json:"name"`

	// Inputs.
	Token            string `json:"token"`
	InitiatorName    string `json:"initiator_name"`
	ResponderName    string `json:"responder_name"`
	LinkSecret       string `json:"link_secret"` // "" when there is none
	InitiatorPrivate string `json:"initiator_private"`
	InitiatorNonce   string `json:"initiator_nonce"`
	ResponderPrivate string `json:"responder_private"`
	ResponderNonce   string `json:"responder_nonce"`

	// Outputs.
	InitiatorPublic  string          `json:"initiator_public"`
	ResponderPublic  string          `json:"responder_public"`
	LinkID           string          `json:"link_id"` // "" when there is no link secret
	InitiatorHello   string          `json:"initiator_hello"`
	Commit           string          `json:"commit"`
	ResponderHello   string          `json:"responder_hello"`
	Transcript       string          `json:"transcript"`
	Shared           string          `json:"shared"`
	Salt             string          `json:"salt"`
	KeyI2R           string          `json:"key_i2r"`
	KeyR2I           string          `json:"key_r2i"`
	KeyConfirm       string          `json:"key_confirm"`
	InitiatorConfirm string          `json:"initiator_confirm"`
	ResponderConfirm string          `json:"responder_confirm"`
	Code             string          `json:"code"`
	Messages         []vectorMessage `json:"messages"`
}

// vectorMessage is one sealed message of a vector.
type vectorMessage struct {
	From     string `json:"from"` // "initiator" or "responder"
	Counter  uint64 `json:"counter"`
	Text     string `json:"text"`
	Envelope string `json:"envelope"` // hex
	Data     string `json:"data"`     // base64url, the sealed frame's data
}

// The private keys are RFC 7748's (section 6.1): Bob's for the initiator,
// Alice's for the responder, so that the public keys and the shared
// secret can be checked against the RFC (TestVectorsMatchRFC7748).
var vectorInputs = []vector{
	{
		Name:             "link secret",
		Token:            "2711929ec8e0355f5114f12de5370c65",
		InitiatorName:    "bob",
		ResponderName:    "Alice",
		LinkSecret:       "oKGio6SlpqeoqaqrrK2urw",
		InitiatorPrivate: "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
		InitiatorNonce:   "101112131415161718191a1b1c1d1e1f",
		ResponderPrivate: "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
		ResponderNonce:   "202122232425262728292a2b2c2d2e2f",
		Messages: []vectorMessage{
			{From: "initiator", Text: "hi alice!\nsecond line"},
			{From: "responder", Text: "hello \"bob\" 🙂"},
			{From: "initiator", Text: "x"},
		},
	},
	{
		Name:             "no link secret",
		Token:            "2711929ec8e0355f5114f12de5370c65",
		InitiatorName:    "bob",
		ResponderName:    "Alice",
		InitiatorPrivate: "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
		InitiatorNonce:   "101112131415161718191a1b1c1d1e1f",
		ResponderPrivate: "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
		ResponderNonce:   "202122232425262728292a2b2c2d2e2f",
		Messages: []vectorMessage{
			{From: "initiator", Text: "hi alice!\nsecond line"},
			{From: "responder", Text: "hello \"bob\" 🙂"},
		},
	},
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("hex %q: %v", s, err)
	}
	return b
}

// runVector performs the exchange of in with this package and returns
// the vector with every output filled in. It fails the test if the two
// sides disagree anywhere.
func runVector(t *testing.T, in vector) vector {
	t.Helper()
	v := in
	var secret []byte
	if in.LinkSecret != "" {
		var err error
		secret, err = base64.RawURLEncoding.Strict().DecodeString(in.LinkSecret)
		if err != nil {
			t.Fatal(err)
		}
	}
	random := func(priv, nonce string) *bytes.Reader {
		return bytes.NewReader(append(unhex(t, priv), unhex(t, nonce)...))
	}
	ini, out, err := Start(Config{
		Role: Initiator, Token: in.Token, InitiatorName: in.InitiatorName, ResponderName: in.ResponderName,
		LinkSecret: secret, Rand: random(in.InitiatorPrivate, in.InitiatorNonce),
	})
	if err != nil {
		t.Fatal(err)
	}
	v.InitiatorPublic = hex.EncodeToString(ini.ownHello[4 : 4+PublicSize])
	v.InitiatorHello = hex.EncodeToString(ini.ownHello)
	if len(out) != 1 {
		t.Fatalf("initiator starts with %d envelopes", len(out))
	}
	v.Commit = hex.EncodeToString(out[0])
	if secret != nil {
		id := LinkID(secret)
		v.LinkID = hex.EncodeToString(id[:])
	}

	res, out2, err := Start(Config{
		Role: Responder, Token: in.Token, InitiatorName: in.InitiatorName, ResponderName: in.ResponderName,
		LinkSecret: secret, Rand: random(in.ResponderPrivate, in.ResponderNonce),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out2) != 0 {
		t.Fatalf("responder starts with %d envelopes", len(out2))
	}
	v.ResponderPublic = hex.EncodeToString(res.ownHello[4 : 4+PublicSize])
	// The shared secret, from both sides' keys, before the sessions drop
	// their private keys.
	shared, err := ini.priv.ECDH(res.priv.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	shared2, err := res.priv.ECDH(ini.priv.PublicKey())
	if err != nil || !bytes.Equal(shared, shared2) {
		t.Fatalf("the two sides' X25519 disagree: %v", err)
	}
	v.Shared = hex.EncodeToString(shared)

	r, err := res.Receive(out[0])
	if err != nil || len(r.Out) != 1 {
		t.Fatalf("responder on the commitment: %v, %d out", err, len(r.Out))
	}
	v.ResponderHello = hex.EncodeToString(r.Out[0])
	r2, err := ini.Receive(r.Out[0])
	if err != nil || len(r2.Out) != 2 {
		t.Fatalf("initiator on the responder's hello: %v, %d out", err, len(r2.Out))
	}
	if got := hex.EncodeToString(r2.Out[0]); got != v.InitiatorHello {
		t.Fatalf("initiator reveals %s, committed to %s", got, v.InitiatorHello)
	}
	v.InitiatorConfirm = hex.EncodeToString(r2.Out[1])
	r3, err := res.Receive(r2.Out[0])
	if err != nil || len(r3.Out) != 1 {
		t.Fatalf("responder on the initiator's hello: %v, %d out", err, len(r3.Out))
	}
	v.ResponderConfirm = hex.EncodeToString(r3.Out[0])
	if _, err := res.Receive(r2.Out[1]); err != nil {
		t.Fatalf("responder on the initiator's confirmation: %v", err)
	}
	if _, err := ini.Receive(r3.Out[0]); err != nil {
		t.Fatalf("initiator on the responder's confirmation: %v", err)
	}
	for _, s := range []*Session{ini, res} {
		if s.State() != StateConfirmed {
			t.Fatalf("%v ends in %v", s.Role(), s.State())
		}
		if s.LinkSecretUsed() != (secret != nil) {
			t.Fatalf("%v: LinkSecretUsed %v", s.Role(), s.LinkSecretUsed())
		}
	}
	if ini.Transcript() != res.Transcript() || ini.Code() != res.Code() {
		t.Fatalf("transcripts or codes differ: %q %q", ini.Code(), res.Code())
	}
	th := ini.Transcript()
	v.Transcript = hex.EncodeToString(th[:])
	v.Code = ini.Code()
	salt := ini.salt()
	v.Salt = hex.EncodeToString(salt)
	k := deriveKeys(shared, salt, th)
	v.KeyI2R, v.KeyR2I, v.KeyConfirm = hex.EncodeToString(k.i2r), hex.EncodeToString(k.r2i), hex.EncodeToString(k.confirm)

	v.Messages = nil
	counters := map[string]uint64{}
	for _, m := range in.Messages {
		from, to := ini, res
		if m.From == "responder" {
			from, to = res, ini
		}
		env, err := from.Seal(m.Text)
		if err != nil {
			t.Fatal(err)
		}
		got, err := to.Receive(env)
		if err != nil || got.Text != m.Text || got.Gap != 0 {
			t.Fatalf("message %q: %q, gap %d, %v", m.Text, got.Text, got.Gap, err)
		}
		m.Counter = counters[m.From]
		counters[m.From]++
		m.Envelope = hex.EncodeToString(env)
		m.Data = EncodeData(env)
		v.Messages = append(v.Messages, m)
	}
	return v
}

func readVectors(t testing.TB) vectorFile {
	t.Helper()
	data, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	var f vectorFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("%s: %v", vectorsPath, err)
	}
	return f
}

// TestVectors holds this implementation to testdata/vectors.json, which
// it wrote (go test -run TestVectors -update ./proto/e2e/) and which
// e2e.js is held to as well.
func TestVectors(t *testing.T) {
	var got vectorFile
	got.Comment = "docs/E2E.md, worked through with fixed keys and nonces; byte strings are hex, link_secret and data base64url. Written by go test -run TestVectors -update ./proto/e2e/."
	for _, in := range vectorInputs {
		got.Vectors = append(got.Vectors, runVector(t, in))
	}
	if *update {
		data, err := json.MarshalIndent(got, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vectorsPath, append(data, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", vectorsPath)
		return
	}
	want := readVectors(t)
	if len(want.Vectors) != len(got.Vectors) {
		t.Fatalf("%s has %d vectors, want %d", vectorsPath, len(want.Vectors), len(got.Vectors))
	}
	for i := range got.Vectors {
		g, _ := json.MarshalIndent(got.Vectors[i], "", "  ")
		w, _ := json.MarshalIndent(want.Vectors[i], "", "  ")
		if !bytes.Equal(g, w) {
			t.Errorf("vector %q differs from %s:\n got  %s\n want %s", got.Vectors[i].Name, vectorsPath, g, w)
		}
	}
}

// TestVectorsMatchRFC7748 anchors the vectors outside this package: the
// public keys and the shared secret are the ones RFC 7748 section 6.1
// gives for its private keys.
func TestVectorsMatchRFC7748(t *testing.T) {
	const (
		alicePublic = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
		bobPublic   = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
		shared      = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
	)
	for _, v := range readVectors(t).Vectors {
		if v.InitiatorPublic != bobPublic || v.ResponderPublic != alicePublic || v.Shared != shared {
			t.Errorf("%s: public keys or shared secret are not RFC 7748's", v.Name)
		}
	}
}

// TestVectorsReplay feeds each vector's recorded envelopes, as the other
// side sent them, into a fresh session of each role, which must accept
// them and produce exactly the recorded answers. It checks the file
// against the rules as a receiver applies them, not only as a sender
// produces them.
func TestVectorsReplay(t *testing.T) {
	for _, v := range readVectors(t).Vectors {
		t.Run(v.Name, func(t *testing.T) {
			var secret []byte
			if v.LinkSecret != "" {
				secret, _ = base64.RawURLEncoding.DecodeString(v.LinkSecret)
			}
			cfg := func(role Role, priv, nonce string) Config {
				return Config{
					Role: role, Token: v.Token, InitiatorName: strings.ToUpper(v.InitiatorName),
					ResponderName: v.ResponderName, LinkSecret: secret,
					Rand: bytes.NewReader(append(unhex(t, priv), unhex(t, nonce)...)),
				}
			}
			// The responder, fed the initiator's recorded steps.
			res, _, err := Start(cfg(Responder, v.ResponderPrivate, v.ResponderNonce))
			if err != nil {
				t.Fatal(err)
			}
			r, err := res.Receive(unhex(t, v.Commit))
			if err != nil || len(r.Out) != 1 || hex.EncodeToString(r.Out[0]) != v.ResponderHello {
				t.Fatalf("responder answers the commitment with %x, %v", r.Out, err)
			}
			r, err = res.Receive(unhex(t, v.InitiatorHello))
			if err != nil || len(r.Out) != 1 || hex.EncodeToString(r.Out[0]) != v.ResponderConfirm {
				t.Fatalf("responder answers the hello with %x, %v", r.Out, err)
			}
			if _, err := res.Receive(unhex(t, v.InitiatorConfirm)); err != nil {
				t.Fatal(err)
			}
			if res.Code() != v.Code {
				t.Fatalf("code %q, want %q", res.Code(), v.Code)
			}
			// The initiator, fed the responder's.
			ini, _, err := Start(cfg(Initiator, v.InitiatorPrivate, v.InitiatorNonce))
			if err != nil {
				t.Fatal(err)
			}
			r, err = ini.Receive(unhex(t, v.ResponderHello))
			if err != nil || len(r.Out) != 2 || hex.EncodeToString(r.Out[1]) != v.InitiatorConfirm {
				t.Fatalf("initiator answers the hello with %x, %v", r.Out, err)
			}
			if _, err := ini.Receive(unhex(t, v.ResponderConfirm)); err != nil {
				t.Fatal(err)
			}
			for _, m := range v.Messages {
				to := res
				if m.From == "responder" {
					to = ini
				}
				env, err := DecodeData(m.Data)
				if err != nil || hex.EncodeToString(env) != m.Envelope {
					t.Fatalf("data %q does not decode to the envelope: %v", m.Data, err)
				}
				got, err := to.Receive(env)
				if err != nil || got.Text != m.Text {
					t.Fatalf("message %d from the %s: %q, %v", m.Counter, m.From, got.Text, err)
				}
			}
		})
	}
}
