package e2e

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
)

const testToken = "2711929ec8e0355f5114f12de5370c65"

func testSecret(b byte) []byte { return bytes.Repeat([]byte{b}, 16) }

// start begins one side with random keys.
func start(t testing.TB, role Role, secret []byte) (*Session, [][]byte) {
	t.Helper()
	s, out, err := Start(Config{Role: role, Token: testToken, InitiatorName: "bob", ResponderName: "alice", LinkSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	return s, out
}

// deliver hands each envelope to s and collects what it sends back; any
// error fails the test.
func deliver(t testing.TB, s *Session, envs [][]byte) [][]byte {
	t.Helper()
	var out [][]byte
	for _, env := range envs {
		r, err := s.Receive(env)
		if err != nil {
			t.Fatalf("%v receives %v: %v", s.Role(), kindOf(env), err)
		}
		out = append(out, r.Out...)
	}
	return out
}

func kindOf(env []byte) Kind {
	if len(env) < 2 {
		return 0
	}
	return Kind(env[1])
}

// handshake runs a whole exchange between two fresh sessions, honest
// server, and returns them confirmed.
func handshake(t testing.TB, secretI, secretR []byte) (ini, res *Session) {
	t.Helper()
	ini, toR := start(t, Initiator, secretI)
	res, toI := start(t, Responder, secretR)
	for len(toR) > 0 || len(toI) > 0 {
		toI, toR = deliver(t, res, toR), deliver(t, ini, toI)
	}
	for _, s := range []*Session{ini, res} {
		if s.State() != StateConfirmed {
			t.Fatalf("%v: %v after the handshake", s.Role(), s.State())
		}
	}
	return ini, res
}

func wantErr(t *testing.T, what string, err error, want *Error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: error %v, want %s", what, err, want.Code)
	}
}

func TestHandshake(t *testing.T) {
	for _, tt := range []struct {
		name           string
		secretI        []byte
		secretR        []byte
		linkSecretUsed bool
	}{
		{"link", testSecret(1), testSecret(1), true},
		{"typed token", nil, nil, false},
		// The responder shares a link, but the initiator typed the token:
		// nothing to mix in, and the pairing is not authenticated.
		{"typed token to a sharer", nil, testSecret(1), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ini, res := handshake(t, tt.secretI, tt.secretR)
			if ini.LinkSecretUsed() != tt.linkSecretUsed || res.LinkSecretUsed() != tt.linkSecretUsed {
				t.Errorf("LinkSecretUsed %v/%v, want %v", ini.LinkSecretUsed(), res.LinkSecretUsed(), tt.linkSecretUsed)
			}
			if ini.Code() == "" || ini.Code() != res.Code() {
				t.Errorf("codes %q and %q", ini.Code(), res.Code())
			}
			if ini.priv != nil || res.priv != nil {
				t.Error("a private key outlives the handshake")
			}
			talk(t, ini, res, "hi alice")
			talk(t, res, ini, "hi bob")
			talk(t, ini, res, strings.Repeat("é", DefaultMaxText/2))
		})
	}
}

// talk seals text on from and opens it on to.
func talk(t *testing.T, from, to *Session, text string) {
	t.Helper()
	env, err := from.Seal(text)
	if err != nil {
		t.Fatalf("%v seals: %v", from.Role(), err)
	}
	if len(env) != len(text)+Overhead {
		t.Errorf("envelope of %d bytes for %d of text", len(env), len(text))
	}
	r, err := to.Receive(env)
	if err != nil || r.Text != text || r.Gap != 0 || r.Kind != KindMessage {
		t.Fatalf("%v opens %q, gap %d, %v", to.Role(), r.Text, r.Gap, err)
	}
}

// A server that replaces a hello's public key with its own, without
// going on to run a whole exchange of its own with each side, is caught
// by both sides: their transcripts and shared secrets differ, and so do
// their confirmations.
func TestSubstitutedPublicKey(t *testing.T) {
	substitute := func(env []byte) []byte {
		e, err := Decode(env)
		if err != nil || e.Kind != KindHello {
			return env
		}
		if _, err := rand.Read(e.Public[:]); err != nil {
			t.Fatal(err)
		}
		return e.Append(nil)
	}
	t.Run("responder's key", func(t *testing.T) {
		ini, toR := start(t, Initiator, nil)
		res, _ := start(t, Responder, nil)
		helloR := deliver(t, res, toR)
		toR = deliver(t, ini, [][]byte{substitute(helloR[0])}) // hello_I, confirm_I
		// The responder derives from the true keys, so the initiator's
		// confirmation does not verify there...
		r, err := res.Receive(toR[0])
		if err != nil {
			t.Fatal(err)
		}
		_, err = res.Receive(toR[1])
		wantErr(t, "the responder checks the confirmation", err, ErrConfirm)
		// ...and the responder's does not verify at the initiator.
		_, err = ini.Receive(r.Out[0])
		wantErr(t, "the initiator checks the confirmation", err, ErrConfirm)
		for _, s := range []*Session{ini, res} {
			if s.State() != StateFailed {
				t.Errorf("%v: %v", s.Role(), s.State())
			}
			if _, err := s.Seal("still there?"); !errors.Is(err, ErrFailed) {
				t.Errorf("%v seals after the failure: %v", s.Role(), err)
			}
		}
	})
	t.Run("initiator's key", func(t *testing.T) {
		ini, toR := start(t, Initiator, nil)
		res, _ := start(t, Responder, nil)
		helloR := deliver(t, res, toR)
		toR = deliver(t, ini, helloR)
		// The hello no longer matches the commitment the responder holds.
		r, err := res.Receive(substitute(toR[0]))
		wantErr(t, "the responder checks the commitment", err, ErrCommit)
		if len(r.Out) != 1 {
			t.Fatalf("no abort sent")
		}
		r, err = ini.Receive(r.Out[0])
		wantErr(t, "the initiator hears the abort", err, ErrPeerAborted)
		if r.Reason != ReasonHandshakeFailed {
			t.Errorf("abort reason %v", r.Reason)
		}
	})
}

// mitm is a server that runs a whole exchange of its own with each side:
// it plays the responder to the initiator and the initiator to the
// responder, holding no link secret.
type mitm struct {
	toIni, toRes *Session // its sessions facing the initiator and the responder
}

// TestMITMWithoutLinkSecret: both sides complete, each with the server,
// and nothing in the protocol can tell; the codes differ, which is what
// two people who compare them find.
func TestMITMWithoutLinkSecret(t *testing.T) {
	ini, toM := start(t, Initiator, nil)
	res, _ := start(t, Responder, nil)
	m := mitm{}
	m.toIni, _ = start(t, Responder, nil)
	var mOut [][]byte
	m.toRes, mOut = start(t, Initiator, nil)

	// Facing the responder, the server commits first, as it must.
	fromRes := deliver(t, res, mOut)
	mOut = deliver(t, m.toRes, fromRes)
	deliver(t, m.toRes, deliver(t, res, mOut))
	// Facing the initiator.
	fromIni := deliver(t, ini, deliver(t, m.toIni, toM))
	deliver(t, ini, deliver(t, m.toIni, fromIni))

	for _, s := range []*Session{ini, res} {
		if s.State() != StateConfirmed {
			t.Fatalf("%v: %v", s.Role(), s.State())
		}
	}
	if ini.Code() == res.Code() {
		t.Fatalf("the codes match under a man in the middle: %q", ini.Code())
	}
	// The server reads what each says.
	env, _ := ini.Seal("secret plan")
	r, err := m.toIni.Receive(env)
	if err != nil || r.Text != "secret plan" {
		t.Fatalf("the server could not read it: %v", err)
	}
}

// TestMITMWithLinkSecret: the server does not know the link's secret, so
// the initiator, who connected by the link, never sees the pairing
// confirmed, and what it seals before it finds out is unreadable to the
// server. The server can drop the link's identifier towards the
// responder, who then sees a pairing that is not authenticated by the
// link, never one that is.
func TestMITMWithLinkSecret(t *testing.T) {
	secret := testSecret(7)
	ini, _ := start(t, Initiator, secret)
	res, _ := start(t, Responder, secret)
	m := mitm{}
	m.toIni, _ = start(t, Responder, nil)
	var mOut [][]byte
	m.toRes, mOut = start(t, Initiator, nil)

	// Facing the initiator. Its commitment is of no use to the server,
	// whose session cannot take a hello that names a secret it lacks; it
	// commits its own session to the initiator's hello without the
	// identifier (which it can, as it makes the commitment it checks),
	// and plays the responder to the initiator with that.
	helloM := deliver(t, m.toIni, [][]byte{forgeCommit(t, strip(t, ini.ownHello))})
	fromIni := deliver(t, ini, helloM) // hello_I, confirm_I
	confirmM := deliver(t, m.toIni, [][]byte{strip(t, fromIni[0])})
	if m.toIni.State() != StateKeyed {
		t.Fatalf("the server's session facing the initiator: %v", m.toIni.State())
	}
	_, err := m.toIni.Receive(mustSeal(t, ini, "sealed before the confirmation"))
	wantErr(t, "the server opens what the initiator sealed", err, ErrAltered)
	_, err = ini.Receive(confirmM[0])
	wantErr(t, "the initiator checks the server's confirmation", err, ErrConfirm)

	// Facing the responder, the server has no secret to offer: the
	// responder's pairing completes, not authenticated by the link.
	fromRes := deliver(t, res, mOut)
	deliver(t, res, deliver(t, m.toRes, fromRes))
	if res.State() != StateConfirmed || res.LinkSecretUsed() {
		t.Fatalf("responder: %v, link secret used %v", res.State(), res.LinkSecretUsed())
	}
}

// strip returns a hello envelope without its link identifier.
func strip(t *testing.T, hello []byte) []byte {
	t.Helper()
	e, err := Decode(hello)
	if err != nil || e.Kind != KindHello {
		t.Fatalf("not a hello: %v", err)
	}
	e.HasLinkID = false
	return e.Append(nil)
}

// forgeCommit returns a commitment to hello (or to nothing much).
func forgeCommit(t *testing.T, hello []byte) []byte {
	t.Helper()
	e := Envelope{Kind: KindCommit, Digest: Commitment(hello)}
	return e.Append(nil)
}

func TestUnknownLinkSecret(t *testing.T) {
	ini, toR := start(t, Initiator, testSecret(1))
	res, _ := start(t, Responder, testSecret(2))
	toR = deliver(t, ini, deliver(t, res, toR))
	r, err := res.Receive(toR[0])
	wantErr(t, "responder with another secret", err, ErrUnknownSecret)
	r, err = ini.Receive(r.Out[0])
	wantErr(t, "initiator told", err, ErrPeerAborted)
	if r.Reason != ReasonUnknownLinkSecret {
		t.Errorf("reason %v", r.Reason)
	}
	// And a responder that shares no link at all.
	ini, toR = start(t, Initiator, testSecret(1))
	res, _ = start(t, Responder, nil)
	toR = deliver(t, ini, deliver(t, res, toR))
	_, err = res.Receive(toR[0])
	wantErr(t, "responder without a secret", err, ErrUnknownSecret)
}

// The receiver's rules for messages: a flipped byte anywhere in the
// sealed part is refused and changes nothing, a replay and a reordering
// are refused, a drop is reported with the message after it.
func TestMessageRules(t *testing.T) {
	ini, res := handshake(t, testSecret(1), testSecret(1))
	seal := func(text string) []byte {
		t.Helper()
		env, err := ini.Seal(text)
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	m0 := seal("zero")
	for i := messageHeadLen; i < len(m0); i++ {
		bad := bytes.Clone(m0)
		bad[i] ^= 0x01
		_, err := res.Receive(bad)
		wantErr(t, "a flipped byte", err, ErrAltered)
	}
	// The counter is authenticated too: the same ciphertext under another
	// counter does not open.
	bad := bytes.Clone(m0)
	bad[9] ^= 0x01
	_, err := res.Receive(bad)
	wantErr(t, "a changed counter", err, ErrAltered)
	// None of that moved the receiver on.
	if r, err := res.Receive(m0); err != nil || r.Text != "zero" || r.Gap != 0 {
		t.Fatalf("the genuine message after the altered copies: %q gap %d %v", r.Text, r.Gap, err)
	}
	_, err = res.Receive(m0)
	wantErr(t, "a replay", err, ErrReplayed)

	m1, m2, m3 := seal("one"), seal("two"), seal("three")
	// Reordered: two arrives before one.
	if r, err := res.Receive(m2); err != nil || r.Text != "two" || r.Gap != 1 {
		t.Fatalf("two after zero: %q gap %d %v", r.Text, r.Gap, err)
	}
	_, err = res.Receive(m1)
	wantErr(t, "one after two", err, ErrReplayed)
	if r, err := res.Receive(m3); err != nil || r.Gap != 0 {
		t.Fatalf("three: gap %d %v", r.Gap, err)
	}
	if res.State() != StateConfirmed {
		t.Fatalf("the non-fatal refusals changed the state: %v", res.State())
	}
}

// A message reflected back to its sender is under the other direction's
// key and AAD, and does not open, even at a counter the sender expects.
func TestReflectedMessage(t *testing.T) {
	_, res := handshake(t, nil, nil)
	_, err := res.Receive(mustSeal(t, res, "mine"))
	wantErr(t, "a reflected message", err, ErrAltered)
}

func TestSealRefuses(t *testing.T) {
	ini, _ := start(t, Initiator, nil)
	_, err := ini.Seal("too early")
	wantErr(t, "before the keys", err, ErrNotReady)
	ini, res := handshake(t, nil, nil)
	for _, tt := range []struct {
		text string
		want *Error
	}{
		{"", ErrEmpty},
		{"caf\xe9", ErrBadText},
		{strings.Repeat("x", DefaultMaxText+1), ErrTooLong},
	} {
		_, err := ini.Seal(tt.text)
		wantErr(t, "seal "+tt.want.Code, err, tt.want)
	}
	// Refusals spend no counter: the next message is the first.
	talk(t, ini, res, strings.Repeat("x", DefaultMaxText))
	ini.sendNext = MaxCounter
	_, err = ini.Seal("one too many")
	wantErr(t, "past the last counter", err, ErrExhausted)
}

// A body that is not text, sealed by a partner that holds the keys, is
// not shown, but it was the partner's and spends its counter.
func TestBadBody(t *testing.T) {
	ini, res := handshake(t, nil, nil)
	for _, body := range [][]byte{{2, 'h', 'i'}, {bodyText}, {bodyText, 0xff}} {
		env := make([]byte, messageHeadLen)
		env[0], env[1] = Version, byte(KindMessage)
		env[9] = byte(ini.sendNext)
		env = ini.seal.Seal(env, nonce(ini.sendNext), body, messageAAD(Initiator, ini.sendNext))
		ini.sendNext++
		_, err := res.Receive(env)
		wantErr(t, "a body that is not text", err, ErrBadBody)
	}
	if r, err := res.Receive(mustSeal(t, ini, "text")); err != nil || r.Gap != 0 {
		t.Fatalf("after bad bodies: gap %d %v", r.Gap, err)
	}
}

func mustSeal(t *testing.T, s *Session, text string) []byte {
	t.Helper()
	env, err := s.Seal(text)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// Handshake steps sent again after a resume change nothing; a step that
// is different the second time ends the encryption.
func TestResend(t *testing.T) {
	ini, res := handshake(t, testSecret(3), testSecret(3))
	if n := len(ini.Resend()); n != 3 {
		t.Errorf("the initiator resends %d steps, want 3 (commit, hello, confirm)", n)
	}
	if n := len(res.Resend()); n != 2 {
		t.Errorf("the responder resends %d steps, want 2 (hello, confirm)", n)
	}
	talk(t, ini, res, "before")
	for _, pair := range [][2]*Session{{ini, res}, {res, ini}} {
		for _, env := range pair[0].Resend() {
			r, err := pair[1].Receive(env)
			if err != nil || !r.Duplicate || len(r.Out) != 0 {
				t.Fatalf("%v resends %v: duplicate %v, %d out, %v", pair[0].Role(), kindOf(env), r.Duplicate, len(r.Out), err)
			}
		}
	}
	talk(t, res, ini, "after")

	// A second, different hello from the partner.
	other, toR := start(t, Initiator, testSecret(3))
	toR = deliver(t, other, deliver(t, mustStart(t, Responder, testSecret(3)), toR))
	_, err := res.Receive(toR[0])
	wantErr(t, "a different hello", err, ErrUnexpected)
}

func mustStart(t *testing.T, role Role, secret []byte) *Session {
	s, _ := start(t, role, secret)
	return s
}

// Steps out of turn end the exchange, and the partner is told; a message
// before the keys is refused without ending anything.
func TestOutOfTurn(t *testing.T) {
	ini, toR := start(t, Initiator, nil)
	res, _ := start(t, Responder, nil)
	helloR := deliver(t, res, toR)
	toR = deliver(t, ini, helloR)
	helloI, confirmI := toR[0], toR[1]

	for _, tt := range []struct {
		name string
		role Role
		feed [][]byte // accepted first
		env  []byte
		want *Error
	}{
		{"hello before the commitment", Responder, nil, helloI, ErrUnexpected},
		{"confirmation before the hellos", Responder, nil, confirmI, ErrUnexpected},
		{"a responder's hello to a responder", Responder, [][]byte{forgeCommit(t, helloR[0])}, helloR[0], ErrUnexpected},
		{"an initiator's hello to an initiator", Initiator, nil, helloI, ErrUnexpected},
		{"a responder's hello with a link identifier", Initiator, nil, withLinkID(t, helloR[0]), ErrUnexpected},
		{"another version", Responder, nil, append([]byte{2}, helloI[1:]...), ErrBadVersion},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := start(t, tt.role, nil)
			deliver(t, s, tt.feed)
			r, err := s.Receive(tt.env)
			wantErr(t, tt.name, err, tt.want)
			if s.State() != StateFailed || len(r.Out) != 1 || kindOf(r.Out[0]) != KindAbort {
				t.Fatalf("state %v, out %x", s.State(), r.Out)
			}
			_, err = s.Receive(tt.env)
			wantErr(t, "after failing", err, ErrFailed)
		})
	}
	t.Run("commit to an initiator", func(t *testing.T) {
		s, out := start(t, Initiator, nil)
		_, err := s.Receive(out[0])
		wantErr(t, "a commitment", err, ErrUnexpected)
	})
	t.Run("message before the keys", func(t *testing.T) {
		a, _ := handshake(t, nil, nil)
		s, _ := start(t, Responder, nil)
		_, err := s.Receive(mustSeal(t, a, "early"))
		wantErr(t, "early message", err, ErrNoKeys)
		if s.State() != StateWaitCommit {
			t.Fatalf("state %v", s.State())
		}
	})
	t.Run("malformed", func(t *testing.T) {
		_, b := handshake(t, nil, nil)
		for _, env := range [][]byte{nil, {1}, {1, 9}, {1, byte(KindConfirm), 0}} {
			_, err := b.Receive(env)
			wantErr(t, "malformed", err, ErrBadEnvelope)
		}
		if b.State() != StateConfirmed {
			t.Fatalf("state %v", b.State())
		}
	})
}

// withLinkID returns a hello envelope with a link identifier added.
func withLinkID(t *testing.T, hello []byte) []byte {
	t.Helper()
	e, err := Decode(hello)
	if err != nil {
		t.Fatal(err)
	}
	e.HasLinkID = true
	return e.Append(nil)
}

// A low-order public key (here the all-zero point) would give an all-zero
// shared secret that anyone could compute; it is refused.
func TestLowOrderKey(t *testing.T) {
	ini, toR := start(t, Initiator, nil)
	res, _ := start(t, Responder, nil)
	helloR := deliver(t, res, toR)
	e, _ := Decode(helloR[0])
	e.Public = [PublicSize]byte{}
	r, err := ini.Receive(e.Append(nil))
	wantErr(t, "the zero point", err, ErrBadKey)
	if len(r.Out) != 1 || kindOf(r.Out[0]) != KindAbort {
		t.Fatalf("no abort: %x", r.Out)
	}
}

func TestAbort(t *testing.T) {
	ini, res := handshake(t, nil, nil)
	r, err := res.Receive(ini.Abort(ReasonCannotEncrypt))
	wantErr(t, "abort", err, ErrPeerAborted)
	if r.Reason != ReasonCannotEncrypt || len(r.Out) != 0 {
		t.Fatalf("reason %v, out %x", r.Reason, r.Out)
	}
	if res.seal != nil || res.open != nil || res.confirmKey != nil {
		t.Error("a failed session keeps its keys")
	}
}

// TestAbortReasons: each reason goes from one side to the other as it
// was given, under a name of its own.
func TestAbortReasons(t *testing.T) {
	names := map[string]Reason{}
	for _, reason := range Reasons {
		ini, res := handshake(t, nil, nil)
		r, err := res.Receive(ini.Abort(reason))
		wantErr(t, reason.String(), err, ErrPeerAborted)
		if r.Reason != reason {
			t.Errorf("abort %v arrives as %v", reason, r.Reason)
		}
		if other, dup := names[reason.String()]; dup || reason.String() == "unknown" {
			t.Errorf("reason %d is named %q, as %d is", reason, reason.String(), other)
		}
		names[reason.String()] = reason
	}
	if ReasonKeysLost.String() != "keys_lost" {
		t.Errorf("ReasonKeysLost is named %q", ReasonKeysLost.String())
	}
}

func TestConfigRefused(t *testing.T) {
	ok := Config{Role: Initiator, Token: testToken, InitiatorName: "bob", ResponderName: "alice"}
	for _, tt := range []struct {
		name string
		edit func(*Config)
	}{
		{"no role", func(c *Config) { c.Role = 0 }},
		{"uppercase token", func(c *Config) { c.Token = strings.ToUpper(testToken) }},
		{"short token", func(c *Config) { c.Token = testToken[1:] }},
		{"no name", func(c *Config) { c.ResponderName = "" }},
		{"bad name", func(c *Config) { c.InitiatorName = "bob smith" }},
		{"short secret", func(c *Config) { c.LinkSecret = make([]byte, MinLinkSecret-1) }},
		{"long secret", func(c *Config) { c.LinkSecret = make([]byte, MaxLinkSecret+1) }},
	} {
		c := ok
		tt.edit(&c)
		if _, _, err := Start(c); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
	if _, _, err := Start(ok); err != nil {
		t.Fatal(err)
	}
}

func TestCodeFormat(t *testing.T) {
	for range 100 {
		var th [32]byte
		rand.Read(th[:])
		c := Code(th)
		if len(c) != 14 || c[4] != ' ' || c[9] != ' ' || strings.Trim(strings.ReplaceAll(c, " ", ""), "0123456789") != "" {
			t.Fatalf("code %q", c)
		}
	}
	// Each group is 40 bits modulo 10000, with its leading zeros.
	d := []byte{
		0, 0, 0, 0, 1, // 1
		0, 0, 0, 0x27, 0x10, // 10000
		0xff, 0xff, 0xff, 0xff, 0xff, // 1099511627775
	}
	if got := codeFromDigest(d); got != "0001 0000 7775" {
		t.Fatalf("code %q", got)
	}
}
