package e2e

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// State is where a Session is in the exchange.
type State uint8

// The states, in the order a pairing goes through them.
const (
	// StateWaitCommit: a responder waits for the initiator's commitment.
	StateWaitCommit State = iota + 1
	// StateWaitHello: each side waits for the other's hello.
	StateWaitHello
	// StateKeyed: the keys are derived; the partner has not yet proved
	// it holds the same ones. Messages may be sealed and opened.
	StateKeyed
	// StateConfirmed: the partner proved it holds the same keys, by its
	// confirmation or by a message that opened.
	StateConfirmed
	// StateFailed: the encryption of this pairing is over.
	StateFailed
)

func (s State) String() string {
	switch s {
	case StateWaitCommit:
		return "wait_commit"
	case StateWaitHello:
		return "wait_hello"
	case StateKeyed:
		return "keyed"
	case StateConfirmed:
		return "confirmed"
	case StateFailed:
		return "failed"
	}
	return "unknown"
}

// Config is what a side knows about a pairing when it starts.
type Config struct {
	Role Role
	// Token is the responder's token, the one the initiator connected
	// to: 32 lowercase hexadecimal characters.
	Token string
	// InitiatorName and ResponderName are the two sides' names as the
	// server gave them (each side's own from welcome, the partner's from
	// paired). They enter the transcript in ASCII lowercase, since the
	// server compares names without regard to case.
	InitiatorName, ResponderName string
	// LinkSecret: for the initiator, the secret of the share link it
	// connected by, and only when it connected to that link's token; for
	// the responder, the secret of the link it is currently sharing.
	// Nil when there is none.
	LinkSecret []byte
	// MaxText bounds the text Seal accepts, in bytes; zero means
	// DefaultMaxText.
	MaxText int
	// Rand is where the ephemeral key and the nonce come from; nil means
	// crypto/rand. Only tests give another.
	Rand io.Reader
}

// Session is one side of one pairing's encryption.
type Session struct {
	role        Role
	token       string
	initiator   string // lowercased
	responder   string // lowercased
	secret      []byte
	maxText     int
	priv        *ecdh.PrivateKey
	state       State
	linkUsed    bool
	ownHello    []byte
	sent        [][]byte // every handshake envelope sent, in order, for Resend
	peerCommit  []byte
	peerHello   []byte
	peerConfirm []byte
	transcript  [sha256.Size]byte
	confirmKey  []byte
	seal, open  cipher.AEAD
	sendNext    uint64
	recvNext    uint64
	code        string
}

// Result is what Receive made of one envelope.
type Result struct {
	// Kind is the envelope's kind; zero when it could not be decoded.
	Kind Kind
	// Duplicate: the envelope is a handshake step identical to one
	// already accepted (a client sends its steps again after a resume).
	// It changed nothing and needs no word to the person.
	Duplicate bool
	// Text is a message's text.
	Text string
	// Gap is how many of the partner's messages went missing just
	// before this one (its counter minus the one expected).
	Gap uint64
	// Reason is a partner's abort reason.
	Reason Reason
	// Out holds envelopes to send to the partner now, in order: the next
	// handshake steps, or an abort after a fatal error.
	Out [][]byte
}

// Start begins one side's part in a pairing and returns the envelopes to
// send at once: the initiator's commitment, or nothing for the responder,
// who speaks when the commitment arrives.
func Start(cfg Config) (*Session, [][]byte, error) {
	if cfg.Role != Initiator && cfg.Role != Responder {
		return nil, nil, errors.New("e2e: no role")
	}
	if !validToken(cfg.Token) {
		return nil, nil, fmt.Errorf("e2e: token %q is not 32 lowercase hexadecimal characters", cfg.Token)
	}
	for _, name := range []string{cfg.InitiatorName, cfg.ResponderName} {
		if !validName(name) {
			return nil, nil, fmt.Errorf("e2e: %q is not a name", name)
		}
	}
	if cfg.LinkSecret != nil && (len(cfg.LinkSecret) < MinLinkSecret || len(cfg.LinkSecret) > MaxLinkSecret) {
		return nil, nil, fmt.Errorf("e2e: a link secret is %d to %d bytes, not %d", MinLinkSecret, MaxLinkSecret, len(cfg.LinkSecret))
	}
	r := cfg.Rand
	if r == nil {
		r = rand.Reader
	}
	// The private key is 32 bytes read here rather than from
	// ecdh.GenerateKey, which since Go 1.26 ignores its reader: the test
	// vector needs fixed keys.
	var scalar [32]byte
	var nonce [NonceSize]byte
	if _, err := io.ReadFull(r, scalar[:]); err != nil {
		return nil, nil, err
	}
	if _, err := io.ReadFull(r, nonce[:]); err != nil {
		return nil, nil, err
	}
	priv, err := ecdh.X25519().NewPrivateKey(scalar[:])
	if err != nil {
		return nil, nil, err
	}
	s := &Session{
		role:      cfg.Role,
		token:     cfg.Token,
		initiator: strings.ToLower(cfg.InitiatorName),
		responder: strings.ToLower(cfg.ResponderName),
		secret:    bytes.Clone(cfg.LinkSecret),
		maxText:   cfg.MaxText,
		priv:      priv,
	}
	if s.maxText <= 0 {
		s.maxText = DefaultMaxText
	}
	hello := Envelope{Kind: KindHello, Role: s.role, Nonce: nonce}
	copy(hello.Public[:], priv.PublicKey().Bytes())
	if s.role == Initiator && s.secret != nil {
		hello.HasLinkID = true
		hello.LinkID = LinkID(s.secret)
		s.linkUsed = true
	}
	s.ownHello = hello.Append(nil)
	if s.role == Responder {
		s.state = StateWaitCommit
		return s, nil, nil
	}
	s.state = StateWaitHello
	commit := Envelope{Kind: KindCommit, Digest: Commitment(s.ownHello)}
	out := s.send(nil, commit.Append(nil))
	return s, out, nil
}

// send records a handshake envelope for Resend and adds it to out.
func (s *Session) send(out [][]byte, env []byte) [][]byte {
	s.sent = append(s.sent, env)
	return append(out, env)
}

// Resend returns every handshake envelope this side has sent, in order,
// to be sent again after a resume: a step lost with a dropped connection
// would otherwise stall the handshake. The partner ignores the ones it
// already has.
func (s *Session) Resend() [][]byte {
	return append([][]byte(nil), s.sent...)
}

// Role is this side's role.
func (s *Session) Role() Role { return s.role }

// State is where the exchange is.
func (s *Session) State() State { return s.state }

// Code is the verification code, empty until the keys are derived.
func (s *Session) Code() string { return s.code }

// Transcript is the transcript hash, zero until the keys are derived.
func (s *Session) Transcript() [sha256.Size]byte { return s.transcript }

// LinkSecretUsed reports whether the keys depend on a link secret. Once
// the partner has confirmed them, the pairing is authenticated by the
// link: the server, which never saw the secret, cannot be in the middle.
func (s *Session) LinkSecretUsed() bool { return s.linkUsed }

// Receive takes one envelope from the partner, exactly as it arrived (the
// sealed frame's data, decoded with DecodeData). Errors are *Error; after
// a fatal one the Session has failed and Result.Out holds an abort to
// send, unless the partner's own abort was the error.
func (s *Session) Receive(b []byte) (Result, error) {
	var res Result
	if s.state == StateFailed {
		return res, ErrFailed
	}
	e, err := Decode(b)
	if err != nil {
		if err == ErrBadVersion {
			return s.fail(res, ErrBadVersion)
		}
		return res, err
	}
	res.Kind = e.Kind
	switch e.Kind {
	case KindAbort:
		s.state = StateFailed
		s.forget()
		res.Reason = e.Reason
		return res, ErrPeerAborted
	case KindCommit:
		return s.receiveCommit(res, b)
	case KindHello:
		return s.receiveHello(res, &e, b)
	case KindConfirm:
		return s.receiveConfirm(res, &e, b)
	}
	return s.openMessage(res, &e)
}

// again handles a handshake step of a kind already accepted: the same
// bytes are a resend and are ignored; different ones mean the partner's
// side of the exchange changed, which no honest partner does.
func (s *Session) again(res Result, have, b []byte, changed *Error) (Result, error) {
	if bytes.Equal(have, b) {
		res.Duplicate = true
		return res, nil
	}
	return s.fail(res, changed)
}

func (s *Session) receiveCommit(res Result, b []byte) (Result, error) {
	if s.role != Responder {
		return s.fail(res, ErrUnexpected)
	}
	if s.peerCommit != nil {
		return s.again(res, s.peerCommit, b, ErrUnexpected)
	}
	s.peerCommit = bytes.Clone(b)
	s.state = StateWaitHello
	res.Out = s.send(res.Out, s.ownHello)
	return res, nil
}

func (s *Session) receiveHello(res Result, e *Envelope, b []byte) (Result, error) {
	if s.peerHello != nil {
		return s.again(res, s.peerHello, b, ErrUnexpected)
	}
	if s.state != StateWaitHello || e.Role != s.role.other() {
		return s.fail(res, ErrUnexpected)
	}
	if s.role == Responder {
		var want [DigestSize]byte
		copy(want[:], s.peerCommit[2:])
		if Commitment(b) != want {
			return s.fail(res, ErrCommit)
		}
		if e.HasLinkID {
			if s.secret == nil || LinkID(s.secret) != e.LinkID {
				return s.fail(res, ErrUnknownSecret)
			}
			s.linkUsed = true
		}
	} else if e.HasLinkID {
		// Only the initiator can hold the responder's link.
		return s.fail(res, ErrUnexpected)
	}
	s.peerHello = bytes.Clone(b)
	helloI, helloR := s.ownHello, s.peerHello
	if s.role == Responder {
		helloI, helloR = helloR, helloI
	}
	s.transcript = Transcript(s.token, s.initiator, s.responder, helloI, helloR)
	if err := s.derive(e.Public[:]); err != nil {
		return s.fail(res, err)
	}
	s.state = StateKeyed
	if s.role == Initiator {
		res.Out = s.send(res.Out, s.ownHello)
	}
	confirm := Envelope{Kind: KindConfirm, Digest: confirmMAC(s.confirmKey, s.role, s.transcript)}
	res.Out = s.send(res.Out, confirm.Append(nil))
	return res, nil
}

// derive computes the keys and the code from the X25519 shared secret
// and the transcript, then drops the private key: nothing this side holds
// afterwards can rebuild the shared secret.
func (s *Session) derive(peerPublic []byte) *Error {
	pub, err := ecdh.X25519().NewPublicKey(peerPublic)
	if err != nil {
		return ErrBadKey
	}
	shared, err := s.priv.ECDH(pub)
	if err != nil {
		// The all-zero result of a low-order public key.
		return ErrBadKey
	}
	k := deriveKeys(shared, s.salt(), s.transcript)
	s.confirmKey = k.confirm
	send, recv := k.i2r, k.r2i
	if s.role == Responder {
		send, recv = recv, send
	}
	s.seal, s.open = newGCM(send), newGCM(recv)
	s.code = Code(s.transcript)
	s.priv = nil
	return nil
}

// salt is HKDF's salt: the link secret when the keys depend on it, the
// fixed label otherwise.
func (s *Session) salt() []byte {
	if s.linkUsed {
		return s.secret
	}
	return []byte(labelNoSecret)
}

func (s *Session) receiveConfirm(res Result, e *Envelope, b []byte) (Result, error) {
	if s.state != StateKeyed && s.state != StateConfirmed {
		return s.fail(res, ErrUnexpected)
	}
	if s.peerConfirm != nil {
		return s.again(res, s.peerConfirm, b, ErrConfirm)
	}
	want := confirmMAC(s.confirmKey, s.role.other(), s.transcript)
	if !hmac.Equal(e.Digest[:], want[:]) {
		return s.fail(res, ErrConfirm)
	}
	s.peerConfirm = bytes.Clone(b)
	s.state = StateConfirmed
	return res, nil
}

// openMessage applies the receiver's rules: a counter below the next one
// expected is refused unopened; a message that does not open is refused
// and changes nothing; one that opens is accepted, and any counters it
// skipped are reported as missing.
func (s *Session) openMessage(res Result, e *Envelope) (Result, error) {
	if s.state != StateKeyed && s.state != StateConfirmed {
		return res, ErrNoKeys
	}
	if e.Counter < s.recvNext {
		return res, ErrReplayed
	}
	peer := s.role.other()
	body, err := s.open.Open(nil, nonce(e.Counter), e.Sealed, messageAAD(peer, e.Counter))
	if err != nil {
		return res, ErrAltered
	}
	// The message is the partner's: its counter is spent whatever it
	// holds, and it proves the partner derived the same keys.
	res.Gap = e.Counter - s.recvNext
	s.recvNext = e.Counter + 1
	s.state = StateConfirmed
	if len(body) < 2 || body[0] != bodyText || !utf8.Valid(body[1:]) {
		return res, ErrBadBody
	}
	res.Text = string(body[1:])
	return res, nil
}

// bodyText is the first byte of a message body that holds text. Other
// values are kept for later versions of the body.
const bodyText = 1

// Seal encrypts text for the partner and returns the envelope to send.
// Each call spends one counter, so each envelope must be sent (or the
// partner will report it missing), and never sent twice.
func (s *Session) Seal(text string) ([]byte, error) {
	switch {
	case s.state == StateFailed:
		return nil, ErrFailed
	case s.state != StateKeyed && s.state != StateConfirmed:
		return nil, ErrNotReady
	case text == "":
		return nil, ErrEmpty
	case !utf8.ValidString(text):
		return nil, ErrBadText
	case len(text) > s.maxText:
		return nil, ErrTooLong
	case s.sendNext >= MaxCounter:
		return nil, ErrExhausted
	}
	counter := s.sendNext
	s.sendNext++
	body := make([]byte, 0, 1+len(text))
	body = append(body, bodyText)
	body = append(body, text...)
	env := make([]byte, messageHeadLen, messageHeadLen+len(body)+TagSize)
	env[envelopeVersion], env[envelopeKind] = Version, byte(KindMessage)
	binary.BigEndian.PutUint64(env[2:], counter)
	return s.seal.Seal(env, nonce(counter), body, messageAAD(s.role, counter)), nil
}

// Abort gives up on this pairing's encryption from this side (the caller
// found it cannot go on, such as a person who saw the codes differ) and
// returns the envelope that tells the partner why.
func (s *Session) Abort(reason Reason) []byte {
	s.state = StateFailed
	s.forget()
	e := Envelope{Kind: KindAbort, Reason: reason}
	return e.Append(nil)
}

// fail ends the session for a fatal error and adds the abort that tells
// the partner.
func (s *Session) fail(res Result, err *Error) (Result, error) {
	res.Out = append(res.Out, s.Abort(reasonFor(err)))
	return res, err
}

// forget drops every key, so a failed session holds nothing that could
// read the conversation.
func (s *Session) forget() {
	s.priv, s.confirmKey, s.seal, s.open = nil, nil, nil, nil
}

// ---- The protocol's functions, each as docs/E2E.md defines it ----------

// LinkID identifies a link secret in the initiator's hello: the first 8
// bytes of SHA-256("duet-e2e v1 link id" || secret). It tells the
// responder which secret to use and reveals nothing about it.
func LinkID(secret []byte) [LinkIDSize]byte {
	h := sha256.New()
	h.Write([]byte(labelLinkID))
	h.Write(secret)
	var id [LinkIDSize]byte
	copy(id[:], h.Sum(nil))
	return id
}

// Commitment is SHA-256("duet-e2e v1 commit" || hello), over the
// initiator's whole hello envelope.
func Commitment(hello []byte) [DigestSize]byte {
	h := sha256.New()
	h.Write([]byte(labelCommit))
	h.Write(hello)
	var d [DigestSize]byte
	h.Sum(d[:0])
	return d
}

// Transcript is the hash every key and the code depend on:
//
//	SHA-256("duet-e2e v1 transcript" || lp(token) || lp(initiator name) ||
//	        lp(responder name) || lp(initiator hello) || lp(responder hello))
//
// where lp(x) is x's length as one byte, then x; names in ASCII lowercase.
func Transcript(token, initiator, responder string, helloI, helloR []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(labelTranscript))
	for _, part := range [][]byte{[]byte(token), []byte(strings.ToLower(initiator)), []byte(strings.ToLower(responder)), helloI, helloR} {
		h.Write([]byte{byte(len(part))})
		h.Write(part)
	}
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}

// keys are the HKDF outputs of one pairing.
type keys struct {
	i2r, r2i, confirm []byte
}

// deriveKeys runs HKDF-SHA256 (extract and expand) once per key, with
// the shared secret as input keying material, the salt, and the key's
// label followed by the transcript hash as info.
func deriveKeys(shared, salt []byte, th [sha256.Size]byte) keys {
	key := func(label string) []byte {
		k, err := hkdf.Key(sha256.New, shared, salt, label+string(th[:]), KeySize)
		if err != nil {
			// Only a length past 255 hashes fails.
			panic(err)
		}
		return k
	}
	return keys{i2r: key(labelKeyI2R), r2i: key(labelKeyR2I), confirm: key(labelKeyConfirm)}
}

// confirmMAC is HMAC-SHA256(confirm key, "duet-e2e v1 confirm" || role ||
// transcript hash), the role being the sender's.
func confirmMAC(key []byte, role Role, th [sha256.Size]byte) [DigestSize]byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(labelConfirm))
	m.Write([]byte{byte(role)})
	m.Write(th[:])
	var d [DigestSize]byte
	m.Sum(d[:0])
	return d
}

// Code is the verification code: from D = SHA-256("duet-e2e v1 code" ||
// transcript hash), three groups of four digits, group i being the 40-bit
// big-endian number D[5i:5i+5] modulo 10000, with leading zeros, joined
// by spaces.
func Code(th [sha256.Size]byte) string {
	h := sha256.New()
	h.Write([]byte(labelCode))
	h.Write(th[:])
	return codeFromDigest(h.Sum(nil))
}

// codeFromDigest formats the first 15 bytes of d as Code says.
func codeFromDigest(d []byte) string {
	var groups []string
	for i := range 3 {
		var n uint64
		for _, c := range d[5*i : 5*i+5] {
			n = n<<8 | uint64(c)
		}
		g := strconv.FormatUint(n%10000, 10)
		groups = append(groups, strings.Repeat("0", 4-len(g))+g)
	}
	return strings.Join(groups, " ")
}

// nonce is AES-GCM's 12-byte nonce for a counter: four zero bytes, then
// the counter as 8 bytes big-endian. Each direction has its own key, so a
// counter is used once per key.
func nonce(counter uint64) []byte {
	n := make([]byte, 12)
	binary.BigEndian.PutUint64(n[4:], counter)
	return n
}

// messageAAD is "duet-e2e v1 message" || sender's role || counter (8
// bytes big-endian).
func messageAAD(sender Role, counter uint64) []byte {
	a := make([]byte, 0, len(labelMessage)+1+CounterSize)
	a = append(a, labelMessage...)
	a = append(a, byte(sender))
	return binary.BigEndian.AppendUint64(a, counter)
}

func newGCM(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err) // the key is always 32 bytes
	}
	g, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return g
}

func validToken(t string) bool {
	if len(t) != 32 {
		return false
	}
	for i := 0; i < len(t); i++ {
		if c := t[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// validName accepts what the server accepts as a name: 1 to 32 ASCII
// letters, digits, '_', '-' or '.'.
func validName(n string) bool {
	if len(n) == 0 || len(n) > 32 {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}
