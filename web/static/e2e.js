// duet's end-to-end encryption in the browser: docs/E2E.md, implemented
// with Web Crypto alone (X25519, HKDF, HMAC, SHA-256, AES-GCM and
// getRandomValues). No primitive is written here; this file only puts the
// platform's together in the order the document gives, and checks what
// the partner sends.
//
// It is an ES module with no UI, no timers and no network: the page hands
// it the sealed frames' data as they arrive and sends what it returns.
// proto/e2e is an independent implementation of the same document in Go;
// the two are held to one test vector and run against each other in
// Chromium (web/e2e_browser_test.go).
//
// A share link reads https://host/#TOKEN.SECRET; the secret never leaves
// the page except inside the link the person hands on.

const VERSION = 1;

const KIND = { commit: 1, hello: 2, confirm: 3, message: 4, abort: 5 };
const KIND_NAMES = ['', 'commit', 'hello', 'confirm', 'message', 'abort'];
const ROLE = { initiator: 1, responder: 2 };

const PUBLIC_SIZE = 32;
const NONCE_SIZE = 16;
const LINK_ID_SIZE = 8;
const DIGEST_SIZE = 32;
const TAG_SIZE = 16;
const HEAD_SIZE = 2 + 8; // a message's version, kind and counter
const HELLO_SIZE = 4 + PUBLIC_SIZE + NONCE_SIZE;
const MIN_SECRET = 16;
const MAX_SECRET = 64;
const MAX_ENVELOPE = 64 * 1024;
const DEFAULT_MAX_TEXT = 16 * 1024;
const BODY_TEXT = 1;
const FLAG_LINK_ID = 1;
// 2^53: the first counter no side uses, so that counters stay exact in a
// JavaScript number.
const MAX_COUNTER = 2 ** 53;

const encoder = new TextEncoder();
// fatal: text that is not UTF-8 is refused, not patched with U+FFFD;
// ignoreBOM: a text that starts with U+FEFF keeps it, as it was sent.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

const label = (name) => encoder.encode('duet-e2e v1 ' + name);
const LABEL = {
  commit: label('commit'),
  transcript: label('transcript'),
  linkId: label('link id'),
  noSecret: label('no link secret'),
  keyI2R: label('key i2r'),
  keyR2I: label('key r2i'),
  keyConfirm: label('key confirm'),
  confirm: label('confirm'),
  code: label('code'),
  message: label('message'),
};

// The abort reasons an envelope carries, by name.
export const REASONS = {
  cannot_encrypt: 1,
  unknown_link_secret: 2,
  handshake_failed: 3,
  protocol_error: 4,
  unsupported_version: 5,
  keys_lost: 6,
};
const REASON_NAMES = Object.fromEntries(Object.entries(REASONS).map(([k, v]) => [v, k]));

// Every error the protocol can report, as docs/E2E.md lists them; the codes
// are the same in proto/e2e.
export const E2E_ERRORS = {
  bad_version: { fatal: true, text: 'the partner speaks another version of end-to-end encryption' },
  unexpected: { fatal: true, text: 'a handshake step arrived out of turn or changed: the keys cannot be trusted' },
  commit_mismatch: { fatal: true, text: "the partner's key does not match what it committed to: the keys cannot be trusted" },
  unknown_link_secret: { fatal: true, text: "the link's secret is not one this side made" },
  bad_key: { fatal: true, text: "the partner's public key is not usable" },
  confirm_failed: { fatal: true, text: 'the two sides did not arrive at the same keys: someone between them changed the exchange' },
  peer_aborted: { fatal: true, text: 'the partner gave up on encryption' },
  bad_envelope: { fatal: false, text: 'a frame that is not an envelope was refused' },
  no_keys: { fatal: false, text: 'an encrypted message arrived before the keys were agreed; it cannot be read' },
  altered: { fatal: false, text: 'a message was altered on the way and was refused' },
  replayed: { fatal: false, text: 'a message arrived again or out of order and was refused' },
  bad_body: { fatal: false, text: 'a message held something other than text and was not shown' },
  not_ready: { fatal: false, text: 'the keys are not agreed yet' },
  too_long: { fatal: false, text: 'message too long; it was not sent' },
  empty: { fatal: false, text: 'nothing to send' },
  bad_text: { fatal: false, text: 'text must be valid UTF-8' },
  exhausted: { fatal: false, text: 'this pairing has sent all the messages its keys allow' },
  failed: { fatal: false, text: 'encryption with this partner has failed' },
};

// The abort reason a side sends for a fatal error of its own.
const ABORT_FOR = {
  bad_version: REASONS.unsupported_version,
  unknown_link_secret: REASONS.unknown_link_secret,
  commit_mismatch: REASONS.handshake_failed,
  bad_key: REASONS.handshake_failed,
  confirm_failed: REASONS.handshake_failed,
};

export class E2EError extends Error {
  constructor(code) {
    super(E2E_ERRORS[code].text);
    this.name = 'E2EError';
    this.code = code;
    this.fatal = E2E_ERRORS[code].fatal;
  }
}

const TOKEN_RE = /^[0-9a-f]{32}$/;
const NAME_RE = /^[A-Za-z0-9_.-]{1,32}$/;

// ---- Bytes --------------------------------------------------------------

function concat(...parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function equal(a, b) {
  if (!a || !b || a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

// be64 writes a counter (below 2^53) as 8 bytes big-endian.
function be64(n) {
  const b = new Uint8Array(8);
  const v = new DataView(b.buffer);
  v.setUint32(0, Math.floor(n / 2 ** 32));
  v.setUint32(4, n % 2 ** 32);
  return b;
}

// readBe64 reads 8 bytes big-endian, or -1 when the number is 2^53 or
// more and so no counter.
function readBe64(b, at) {
  const v = new DataView(b.buffer, b.byteOffset + at, 8);
  const hi = v.getUint32(0);
  if (hi >= 2 ** 21) return -1;
  return hi * 2 ** 32 + v.getUint32(4);
}

// lp is a part of the transcript: its length as one byte, then it.
function lp(b) {
  return concat(Uint8Array.of(b.length), b);
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const B64_INDEX = new Map([...B64].map((c, i) => [c, i]));

// toBase64url encodes bytes as RFC 4648 base64url without padding.
export function toBase64url(bytes) {
  let s = '';
  let i = 0;
  for (; i + 3 <= bytes.length; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    s += B64[n >> 18] + B64[(n >> 12) & 63] + B64[(n >> 6) & 63] + B64[n & 63];
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = bytes[i] << 16;
    s += B64[n >> 18] + B64[(n >> 12) & 63];
  } else if (rest === 2) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8);
    s += B64[n >> 18] + B64[(n >> 12) & 63] + B64[(n >> 6) & 63];
  }
  return s;
}

// fromBase64url decodes the canonical form only (the alphabet, no
// padding, no stray bits in the last character), or returns null, so that
// one envelope has one spelling.
export function fromBase64url(s) {
  if (typeof s !== 'string' || s.length % 4 === 1) return null;
  const out = new Uint8Array(Math.floor((s.length * 3) / 4));
  let acc = 0;
  let bits = 0;
  let at = 0;
  for (const c of s) {
    const v = B64_INDEX.get(c);
    if (v === undefined) return null;
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[at++] = (acc >> bits) & 0xff;
      acc &= (1 << bits) - 1;
    }
  }
  if (acc !== 0) return null;
  return out;
}

// ---- Web Crypto ---------------------------------------------------------

const subtle = () => globalThis.crypto.subtle;

async function sha256(...parts) {
  return new Uint8Array(await subtle().digest('SHA-256', concat(...parts)));
}

async function hkdf(ikm, salt, info) {
  const key = await subtle().importKey('raw', ikm, 'HKDF', false, ['deriveBits']);
  return new Uint8Array(await subtle().deriveBits({ name: 'HKDF', hash: 'SHA-256', salt, info }, key, 256));
}

function hmacKey(raw) {
  return subtle().importKey('raw', raw, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify']);
}

function aesKey(raw, use) {
  return subtle().importKey('raw', raw, { name: 'AES-GCM' }, false, [use]);
}

// The PKCS #8 wrapping of a raw X25519 private key (RFC 8410): Web Crypto
// imports private keys only so.
const PKCS8_X25519 = Uint8Array.of(
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
);

// x25519FromRaw imports a private key held as its 32 raw bytes and
// returns it with its public key.
async function x25519FromRaw(raw) {
  const priv = await subtle().importKey('pkcs8', concat(PKCS8_X25519, raw), { name: 'X25519' }, true, ['deriveBits']);
  const jwk = await subtle().exportKey('jwk', priv);
  return { priv, raw, pub: fromBase64url(jwk.x) };
}

async function x25519Generate() {
  const pair = await subtle().generateKey({ name: 'X25519' }, true, ['deriveBits']);
  const jwk = await subtle().exportKey('jwk', pair.privateKey);
  const pub = new Uint8Array(await subtle().exportKey('raw', pair.publicKey));
  return { priv: pair.privateKey, raw: fromBase64url(jwk.d), pub };
}

function random(n) {
  return globalThis.crypto.getRandomValues(new Uint8Array(n));
}

// ---- What a page asks before it starts ----------------------------------

// supported says whether this page can encrypt: '' when it can, else why
// not ('insecure_context', 'no_webcrypto' or 'no_x25519').
export async function supported() {
  if (!globalThis.isSecureContext) return 'insecure_context';
  if (!globalThis.crypto || !globalThis.crypto.subtle) return 'no_webcrypto';
  try {
    await subtle().generateKey({ name: 'X25519' }, false, ['deriveBits']);
  } catch {
    return 'no_x25519';
  }
  return '';
}

// abortData returns the data of an abort for reason (a name in REASONS),
// for a page that has no session to abort: cannot_encrypt, from a page
// that cannot start one, sent in place of its first step so that its
// partner is not left waiting; keys_lost, from a page that lost the
// session of the pairing it resumed into.
export function abortData(reason) {
  return toBase64url(abortEnvelope(REASONS[reason] || REASONS.protocol_error));
}

// kindOf names the envelope in data ('commit', 'hello', 'confirm',
// 'message' or 'abort'), or '' for data that is none: for a page that
// has no session to read it with.
export function kindOf(data) {
  const b = fromBase64url(String(data));
  if (!b) return '';
  try {
    return KIND_NAMES[decode(b).kind];
  } catch {
    return '';
  }
}

// makeLinkSecret returns a new link secret: 16 random bytes, base64url.
export function makeLinkSecret() {
  return toBase64url(random(MIN_SECRET));
}

// parseLink reads a share link, its fragment, or a bare token, and returns
// {token, secret} (secret '' when the link has none) or null. A link whose
// secret is damaged is null too: pairing without it would not be what
// its sender meant.
export function parseLink(text) {
  let s = String(text).trim();
  const hash = s.lastIndexOf('#');
  if (hash >= 0) s = s.slice(hash + 1);
  s = s.replace(/\s+/g, '');
  const dot = s.indexOf('.');
  const token = (dot >= 0 ? s.slice(0, dot) : s).toLowerCase();
  if (!TOKEN_RE.test(token)) return null;
  if (dot < 0) return { token, secret: '' };
  const secret = s.slice(dot + 1);
  const bytes = fromBase64url(secret);
  if (!bytes || bytes.length < MIN_SECRET || bytes.length > MAX_SECRET) return null;
  return { token, secret };
}

// linkId is the first 8 bytes of SHA-256("duet-e2e v1 link id" || secret).
async function linkId(secret) {
  return (await sha256(LABEL.linkId, secret)).slice(0, LINK_ID_SIZE);
}

// ---- Envelopes ----------------------------------------------------------

// decode reads an envelope, or throws bad_envelope or bad_version.
function decode(b) {
  if (b.length < 2 || b.length > MAX_ENVELOPE) throw new E2EError('bad_envelope');
  const kind = b[1];
  if (kind === KIND.abort) {
    // An abort reads the same in every version.
    if (b.length !== 3 || b[2] === 0) throw new E2EError('bad_envelope');
    return { kind, reason: b[2] };
  }
  if (b[0] !== VERSION) throw new E2EError('bad_version');
  switch (kind) {
    case KIND.commit:
    case KIND.confirm:
      if (b.length !== 2 + DIGEST_SIZE) break;
      return { kind, digest: b.slice(2) };
    case KIND.hello: {
      if (b.length < HELLO_SIZE) break;
      const role = b[2];
      const flags = b[3];
      if ((role !== ROLE.initiator && role !== ROLE.responder) || (flags & ~FLAG_LINK_ID) !== 0) break;
      const hasLinkId = (flags & FLAG_LINK_ID) !== 0;
      if (b.length !== HELLO_SIZE + (hasLinkId ? LINK_ID_SIZE : 0)) break;
      return {
        kind,
        role,
        pub: b.slice(4, 4 + PUBLIC_SIZE),
        linkId: hasLinkId ? b.slice(HELLO_SIZE) : null,
      };
    }
    case KIND.message: {
      if (b.length < HEAD_SIZE + 1 + TAG_SIZE) break;
      const counter = readBe64(b, 2);
      if (counter < 0) break;
      return { kind, counter, sealed: b.slice(HEAD_SIZE) };
    }
  }
  throw new E2EError('bad_envelope');
}

function helloEnvelope(role, pub, nonce, id) {
  return concat(Uint8Array.of(VERSION, KIND.hello, role, id ? FLAG_LINK_ID : 0), pub, nonce, id || new Uint8Array(0));
}

function abortEnvelope(reason) {
  return Uint8Array.of(VERSION, KIND.abort, reason);
}

// ---- Keys ---------------------------------------------------------------

async function transcript(token, initiator, responder, helloI, helloR) {
  return sha256(
    LABEL.transcript,
    lp(encoder.encode(token)),
    lp(encoder.encode(initiator)),
    lp(encoder.encode(responder)),
    lp(helloI),
    lp(helloR),
  );
}

// code formats the verification code: three groups of four digits, each
// a 40-bit big-endian number modulo 10000.
async function code(th) {
  const d = await sha256(LABEL.code, th);
  const groups = [];
  for (let i = 0; i < 3; i++) {
    let n = 0;
    for (const c of d.subarray(5 * i, 5 * i + 5)) n = n * 256 + c;
    groups.push(String(n % 10000).padStart(4, '0'));
  }
  return groups.join(' ');
}

function nonce(counter) {
  return concat(new Uint8Array(4), be64(counter));
}

function messageAAD(senderRole, counter) {
  return concat(LABEL.message, Uint8Array.of(senderRole), be64(counter));
}

async function confirmMAC(key, role, th) {
  return new Uint8Array(await subtle().sign('HMAC', key, concat(LABEL.confirm, Uint8Array.of(role), th)));
}

// ---- The session --------------------------------------------------------

const STATES = ['wait_commit', 'wait_hello', 'keyed', 'confirmed', 'failed'];

// Session is one side of one pairing's encryption. Its calls are carried
// out one at a time, in the order they were made, so the page may pass
// frames to receive() as they arrive.
export class Session {
  // Use Session.start or Session.restore.
  constructor(fields, persist) {
    Object.assign(this, fields);
    this._persist = typeof persist === 'function' ? persist : null;
    this._queue = Promise.resolve();
  }

  // start begins this side's part in a pairing. cfg: role ('initiator' or
  // 'responder'), token (the responder's), initiatorName, responderName,
  // linkSecret (base64url: the initiator's from the link it connected by,
  // only when it connected to that link's token; the responder's current
  // one; '' for none), maxText, persist (called with the state to store
  // after every change). cfg.random ({private, nonce} as bytes) fixes the
  // ephemeral key for the test vector; a page never passes it.
  // Resolves to {session, out}: out holds the data to send now.
  static async start(cfg) {
    const role = ROLE[cfg.role];
    if (!role) throw new TypeError('e2e: role must be initiator or responder');
    if (!TOKEN_RE.test(String(cfg.token))) throw new TypeError('e2e: a token is 32 lowercase hexadecimal characters');
    for (const n of [cfg.initiatorName, cfg.responderName]) {
      if (!NAME_RE.test(String(n))) throw new TypeError('e2e: not a name: ' + n);
    }
    let secret = null;
    if (cfg.linkSecret) {
      secret = fromBase64url(cfg.linkSecret);
      if (!secret || secret.length < MIN_SECRET || secret.length > MAX_SECRET) {
        throw new TypeError('e2e: a link secret is 16 to 64 bytes in base64url');
      }
    }
    const maxText = Number.isInteger(cfg.maxText) && cfg.maxText > 0 ? cfg.maxText : DEFAULT_MAX_TEXT;
    const key = cfg.random ? await x25519FromRaw(Uint8Array.from(cfg.random.private)) : await x25519Generate();
    const helloNonce = cfg.random ? Uint8Array.from(cfg.random.nonce) : random(NONCE_SIZE);
    const withLink = role === ROLE.initiator && secret !== null;
    const ownHello = helloEnvelope(role, key.pub, helloNonce, withLink ? await linkId(secret) : null);
    const s = new Session(
      {
        _role: role,
        _token: cfg.token,
        _initiator: String(cfg.initiatorName).toLowerCase(),
        _responder: String(cfg.responderName).toLowerCase(),
        _secret: secret,
        _maxText: maxText,
        _key: key,
        _state: role === ROLE.initiator ? 'wait_hello' : 'wait_commit',
        _link: withLink,
        _ownHello: ownHello,
        _sent: [],
        _peerCommit: null,
        _peerHello: null,
        _peerConfirm: null,
        _th: null,
        _code: '',
        _raw: null, // the three keys' bytes, kept to be stored
        _keys: null, // the same, imported
        _sendNext: 0,
        _recvNext: 0,
      },
      cfg.persist,
    );
    const out = [];
    if (role === ROLE.initiator) {
      const commit = concat(Uint8Array.of(VERSION, KIND.commit), await sha256(LABEL.commit, ownHello));
      s._send(out, commit);
    }
    s._save();
    return { session: s, out };
  }

  get role() {
    return this._role === ROLE.initiator ? 'initiator' : 'responder';
  }

  // state is 'wait_commit', 'wait_hello', 'keyed', 'confirmed' or 'failed'.
  get state() {
    return this._state;
  }

  // code is the verification code, '' until the keys are derived.
  get code() {
    return this._code;
  }

  // linkSecretUsed: the keys depend on the link's secret, so once
  // confirmed the pairing is authenticated by the link.
  get linkSecretUsed() {
    return this._link;
  }

  // resend returns the data of every handshake step sent so far, to send
  // again after a resume or when the partner is back.
  resend() {
    return this._sent.map(toBase64url);
  }

  // abort ends this pairing's encryption from this side (the person saw
  // the codes differ, say) and returns the data that tells the partner.
  abort(reason = 'protocol_error') {
    const env = abortEnvelope(REASONS[reason] || REASONS.protocol_error);
    this._forget();
    this._save();
    return toBase64url(env);
  }

  // receive takes one sealed frame's data from the partner. It resolves
  // to {kind, duplicate, text, gap, reason, out, error}: kind names the
  // envelope ('' if unreadable); duplicate marks a step sent again; text
  // and gap (messages missing before this one) for a message; reason for
  // an abort; out, data to send now; error, null or {code, text, fatal}.
  receive(data) {
    return this._run(() => this._receive(data));
  }

  // seal encrypts text and resolves to the data to send, or rejects with
  // an E2EError. The state is stored before it resolves, so a reload can
  // never use the counter again.
  seal(text) {
    return this._run(() => this._seal(text));
  }

  _run(fn) {
    const p = this._queue.then(fn);
    this._queue = p.catch(() => {});
    return p;
  }

  _send(out, env) {
    this._sent.push(env);
    out.push(toBase64url(env));
  }

  async _receive(data) {
    const res = { kind: '', duplicate: false, text: '', gap: 0, reason: '', out: [], error: null };
    try {
      if (this._state === 'failed') throw new E2EError('failed');
      const b = fromBase64url(data);
      if (!b || b.length === 0) throw new E2EError('bad_envelope');
      const e = decode(b);
      res.kind = KIND_NAMES[e.kind];
      switch (e.kind) {
        case KIND.abort:
          this._forget();
          res.reason = REASON_NAMES[e.reason] || 'unknown';
          throw new E2EError('peer_aborted');
        case KIND.commit:
          this._onCommit(res, b);
          break;
        case KIND.hello:
          await this._onHello(res, e, b);
          break;
        case KIND.confirm:
          await this._onConfirm(res, e, b);
          break;
        default:
          await this._onMessage(res, e);
      }
    } catch (err) {
      if (!(err instanceof E2EError)) throw err;
      res.error = { code: err.code, text: err.message, fatal: err.fatal };
      if (err.fatal && err.code !== 'peer_aborted') {
        res.out.push(toBase64url(abortEnvelope(ABORT_FOR[err.code] || REASONS.protocol_error)));
        this._forget();
      }
    }
    this._save();
    return res;
  }

  // _again handles a step of a kind already accepted: the same bytes are a
  // step sent again, and ignored; other bytes end the exchange.
  _again(res, have, b, code) {
    if (!equal(have, b)) throw new E2EError(code);
    res.duplicate = true;
  }

  _onCommit(res, b) {
    if (this._role !== ROLE.responder) throw new E2EError('unexpected');
    if (this._peerCommit) return this._again(res, this._peerCommit, b, 'unexpected');
    this._peerCommit = b;
    this._state = 'wait_hello';
    this._send(res.out, this._ownHello);
  }

  async _onHello(res, e, b) {
    if (this._peerHello) return this._again(res, this._peerHello, b, 'unexpected');
    const peerRole = this._role === ROLE.initiator ? ROLE.responder : ROLE.initiator;
    if (this._state !== 'wait_hello' || e.role !== peerRole) throw new E2EError('unexpected');
    if (this._role === ROLE.responder) {
      const want = this._peerCommit.subarray(2);
      if (!equal(await sha256(LABEL.commit, b), want)) throw new E2EError('commit_mismatch');
      if (e.linkId) {
        if (!this._secret || !equal(await linkId(this._secret), e.linkId)) throw new E2EError('unknown_link_secret');
        this._link = true;
      }
    } else if (e.linkId) {
      // Only the initiator can hold the responder's link.
      throw new E2EError('unexpected');
    }
    this._peerHello = b;
    const [helloI, helloR] = this._role === ROLE.initiator ? [this._ownHello, b] : [b, this._ownHello];
    this._th = await transcript(this._token, this._initiator, this._responder, helloI, helloR);

    let dh;
    try {
      const peer = await subtle().importKey('raw', e.pub, { name: 'X25519' }, true, []);
      dh = new Uint8Array(await subtle().deriveBits({ name: 'X25519', public: peer }, this._key.priv, 256));
    } catch {
      throw new E2EError('bad_key');
    }
    // Web Crypto refuses the all-zero secret of a low-order key; this
    // check stands in case a browser does not.
    if (dh.every((x) => x === 0)) throw new E2EError('bad_key');
    const salt = this._link ? this._secret : LABEL.noSecret;
    const i2r = await hkdf(dh, salt, concat(LABEL.keyI2R, this._th));
    const r2i = await hkdf(dh, salt, concat(LABEL.keyR2I, this._th));
    const conf = await hkdf(dh, salt, concat(LABEL.keyConfirm, this._th));
    const [send, recv] = this._role === ROLE.initiator ? [i2r, r2i] : [r2i, i2r];
    await this._useKeys({ send, recv, conf });
    this._code = await code(this._th);
    // Nothing held from here on can rebuild the shared secret.
    this._key = null;
    this._secret = null;
    this._state = 'keyed';
    if (this._role === ROLE.initiator) this._send(res.out, this._ownHello);
    const mac = await confirmMAC(this._keys.conf, this._role, this._th);
    this._send(res.out, concat(Uint8Array.of(VERSION, KIND.confirm), mac));
  }

  async _useKeys(raw) {
    this._raw = raw;
    this._keys = {
      send: await aesKey(raw.send, 'encrypt'),
      recv: await aesKey(raw.recv, 'decrypt'),
      conf: await hmacKey(raw.conf),
    };
  }

  async _onConfirm(res, e, b) {
    if (this._state !== 'keyed' && this._state !== 'confirmed') throw new E2EError('unexpected');
    if (this._peerConfirm) return this._again(res, this._peerConfirm, b, 'confirm_failed');
    const peerRole = this._role === ROLE.initiator ? ROLE.responder : ROLE.initiator;
    const data = concat(LABEL.confirm, Uint8Array.of(peerRole), this._th);
    if (!(await subtle().verify('HMAC', this._keys.conf, e.digest, data))) throw new E2EError('confirm_failed');
    this._peerConfirm = b;
    this._state = 'confirmed';
  }

  // _onMessage applies the receiver's rules: below the next counter is a
  // replay, unopened; a message that does not open changes nothing; one
  // that opens is accepted, and the counters it skipped are reported.
  async _onMessage(res, e) {
    if (this._state !== 'keyed' && this._state !== 'confirmed') throw new E2EError('no_keys');
    if (e.counter < this._recvNext) throw new E2EError('replayed');
    const peerRole = this._role === ROLE.initiator ? ROLE.responder : ROLE.initiator;
    let body;
    try {
      body = new Uint8Array(
        await subtle().decrypt(
          { name: 'AES-GCM', iv: nonce(e.counter), additionalData: messageAAD(peerRole, e.counter), tagLength: 128 },
          this._keys.recv,
          e.sealed,
        ),
      );
    } catch {
      throw new E2EError('altered');
    }
    // The message is the partner's: its counter is spent whatever it
    // holds, and it proves the partner has the same keys.
    res.gap = e.counter - this._recvNext;
    this._recvNext = e.counter + 1;
    this._state = 'confirmed';
    if (body.length < 2 || body[0] !== BODY_TEXT) throw new E2EError('bad_body');
    try {
      res.text = utf8.decode(body.subarray(1));
    } catch {
      throw new E2EError('bad_body');
    }
  }

  async _seal(text) {
    if (this._state === 'failed') throw new E2EError('failed');
    if (this._state !== 'keyed' && this._state !== 'confirmed') throw new E2EError('not_ready');
    text = String(text);
    if (text === '') throw new E2EError('empty');
    // A lone surrogate has no UTF-8 form; TextEncoder would send U+FFFD
    // in its place, and the partner would read something not written.
    if (typeof text.isWellFormed === 'function' && !text.isWellFormed()) throw new E2EError('bad_text');
    const bytes = encoder.encode(text);
    if (bytes.length > this._maxText) throw new E2EError('too_long');
    if (this._sendNext >= MAX_COUNTER) throw new E2EError('exhausted');
    const counter = this._sendNext++;
    this._save();
    const sealed = new Uint8Array(
      await subtle().encrypt(
        { name: 'AES-GCM', iv: nonce(counter), additionalData: messageAAD(this._role, counter), tagLength: 128 },
        this._keys.send,
        concat(Uint8Array.of(BODY_TEXT), bytes),
      ),
    );
    return toBase64url(concat(Uint8Array.of(VERSION, KIND.message), be64(counter), sealed));
  }

  _forget() {
    this._state = 'failed';
    this._key = null;
    this._secret = null;
    this._raw = null;
    this._keys = null;
  }

  _save() {
    if (this._persist) this._persist(this.toJSON());
  }

  // toJSON is the state to keep in sessionStorage: everything needed to
  // go on after a reload, and nothing more. The private key and the link
  // secret are in it only until the keys are derived.
  toJSON() {
    const b = (x) => (x ? toBase64url(x) : '');
    return {
      v: VERSION,
      role: this.role,
      token: this._token,
      initiator: this._initiator,
      responder: this._responder,
      state: this._state,
      link: this._link,
      max_text: this._maxText,
      private: b(this._key && this._key.raw),
      secret: b(this._secret),
      own_hello: b(this._ownHello),
      sent: this._sent.map(toBase64url),
      peer_commit: b(this._peerCommit),
      peer_hello: b(this._peerHello),
      peer_confirm: b(this._peerConfirm),
      transcript: b(this._th),
      code: this._code,
      send_key: b(this._raw && this._raw.send),
      recv_key: b(this._raw && this._raw.recv),
      confirm_key: b(this._raw && this._raw.conf),
      send_next: this._sendNext,
      recv_next: this._recvNext,
    };
  }

  // restore rebuilds a session from what toJSON returned. It throws a
  // TypeError for anything that is not such a state.
  static async restore(st, persist) {
    const bad = (what) => new TypeError('e2e: stored state: ' + what);
    if (!st || typeof st !== 'object' || st.v !== VERSION) throw bad('version');
    const role = ROLE[st.role];
    if (!role) throw bad('role');
    if (!STATES.includes(st.state)) throw bad('state');
    if (!TOKEN_RE.test(String(st.token)) || !NAME_RE.test(String(st.initiator)) || !NAME_RE.test(String(st.responder))) {
      throw bad('token or names');
    }
    const bytes = (name, sizes) => {
      const v = st[name];
      if (v === '' || v === undefined) return null;
      const x = fromBase64url(v);
      if (!x || (sizes && !sizes.includes(x.length))) throw bad(name);
      return x;
    };
    const count = (name) => {
      const n = st[name];
      if (!Number.isSafeInteger(n) || n < 0 || n >= MAX_COUNTER) throw bad(name);
      return n;
    };
    const keyed = st.state === 'keyed' || st.state === 'confirmed';
    const fields = {
      _role: role,
      _token: st.token,
      _initiator: st.initiator,
      _responder: st.responder,
      _secret: bytes('secret'),
      _maxText: Number.isInteger(st.max_text) && st.max_text > 0 ? st.max_text : DEFAULT_MAX_TEXT,
      _key: null,
      _state: st.state,
      _link: st.link === true,
      _ownHello: bytes('own_hello', [HELLO_SIZE, HELLO_SIZE + LINK_ID_SIZE]),
      _sent: (Array.isArray(st.sent) ? st.sent : []).map((x) => fromBase64url(x)),
      _peerCommit: bytes('peer_commit', [2 + DIGEST_SIZE]),
      _peerHello: bytes('peer_hello', [HELLO_SIZE, HELLO_SIZE + LINK_ID_SIZE]),
      _peerConfirm: bytes('peer_confirm', [2 + DIGEST_SIZE]),
      _th: bytes('transcript', [32]),
      _code: typeof st.code === 'string' ? st.code : '',
      _raw: null,
      _keys: null,
      _sendNext: count('send_next'),
      _recvNext: count('recv_next'),
    };
    if (!fields._ownHello || fields._sent.some((x) => !x)) throw bad('handshake steps');
    const s = new Session(fields, persist);
    if (keyed) {
      const send = bytes('send_key', [32]);
      const recv = bytes('recv_key', [32]);
      const conf = bytes('confirm_key', [32]);
      if (!send || !recv || !conf || !fields._th) throw bad('keys');
      await s._useKeys({ send, recv, conf });
    } else if (st.state !== 'failed') {
      const raw = bytes('private', [32]);
      if (!raw) throw bad('private key');
      s._key = await x25519FromRaw(raw);
    }
    return s;
  }
}
