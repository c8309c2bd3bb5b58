// The page's end-to-end encryption: what docs/E2E.md ("What the page
// does") asks of a page, on top of the protocol in e2e.js.
//
// app.js owns the connection and the log; this module owns everything
// about encryption, and app.js reaches it through a few hooks: the share
// link's fragment, the pairing's start and end, the sealed frames that
// arrive, a plaintext message that arrives, and the text the person
// sends. It draws its own part of the page (#secure) and nothing else.
//
// Keys live in this module's memory and, for a reload, in sessionStorage
// under duet.e2e (the id of the page that holds them, e2e.js's state,
// the pairing's id, whether the people compared the code and the texts
// waiting for the keys; for a plain pairing, its id and partner only;
// for one whose keys the storage refused, its id and that they are lost);
// nothing of them goes to the server, a cookie, localStorage or the
// console. A link's secret lives in memory, in the link the person
// hands on and, on the page that shares it, in sessionStorage under
// duet.e2e.link, so that a reload keeps the link good for as long as
// its token is.

import * as e2e from './e2e.js';

// How long a pairing may take to confirm its keys before the page says
// encryption failed (docs/E2E.md, "What the page does").
const HANDSHAKE_LIMIT_MS = 30000;

// How many of the partner's plaintext messages a failed pairing holds
// until the person agrees to go on without encryption; more are refused.
const HOLD_LIMIT = 100;

// The keys the state is kept under in sessionStorage: the pairing's, and
// the secret of the link this page shares, so that a link handed out
// stays good across a reload for as long as its token does.
const STORE_KEY = 'duet.e2e';
const LINK_KEY = 'duet.e2e.link';

// A page holds a Web Lock named this and its id for as long as it lives,
// and writes the id beside the state it keeps (see claim).
const HOLDER_LOCK = 'duet.e2e.holder.';

// How long a page waits for the page that kept the state it finds to let
// go of its lock: after a reload, the page before it may not be gone yet
// when this one runs. It is gone in milliseconds; a tab that holds a
// copy of another's state (a duplicated tab) waits this long before it
// gives up on that state.
const CLAIM_WAIT_MS = 5000;

// What a peer's abort reason means, in words; {peer} is its name. Each
// follows "Encryption failed: ", hence the small letter.
const ABORT_WORDS = {
  cannot_encrypt: '{peer}’s browser cannot encrypt.',
  unknown_link_secret:
    '{peer}’s page no longer knows the link you used (it makes a new one after a conversation with someone on a terminal, and when its token changes), so the conversation could not be secured. Ask {peer} for their current link, leave, and connect with it; or leave and connect with their token alone, to talk encrypted but not verified.',
  handshake_failed: 'the keys did not match: someone between you may be interfering.',
  protocol_error:
    '{peer}’s page gave up on encryption: the exchange went wrong, or did not complete in time (one of you may have been asleep or offline as it began). Leave and connect again to talk encrypted.',
  unsupported_version: '{peer}’s page speaks another version of encryption.',
  keys_lost: '{peer}’s tab lost the keys of this conversation, and can no longer read or seal in it. Leave and connect again to talk encrypted.',
};

// An abort handshake_failed that comes once this page has checked the
// partner's confirmation, in a pairing whose people compare the code:
// the partner's page arrived at the same keys, so "the keys did not
// match" would be untrue. Its person found that the codes differ ("They
// differ" sends this abort, since the protocol has no reason of its own
// for it), or, less likely, that page never got this one's confirmation
// intact, or in time. (A pairing the link's secret proves shows no code.)
const CODES_DIFFER_WORDS =
  '{peer} found that the codes differ (or {peer}’s page could not confirm the keys): someone between you may be interfering.';

// An abort that says the partner cannot encrypt, from a partner whose
// page has encrypted; and a message from the partner after an abort.
const FORGED_ABORT_WORDS =
  'an abort in {peer}’s name said their browser cannot encrypt, but it has been encrypting: someone between you may be interfering.';
const FORGED_MESSAGE_WORDS =
  'A message from {peer} arrived after an abort in their name, which their page cannot have sent: someone between you may be interfering. It cannot be read; {peer}’s page is told that encryption failed.';

// A resume into a new pairing with the same partner as the one this page
// encrypted before.
const NEW_PAIRING_WORDS =
  'The server says your conversation with {peer} ended and a new one began while you were away. It is secured afresh: what you verified before does not carry over.';

// Why this tab resumed into a pairing without its keys, in words
// (lostKeys): its storage refused them, or another tab holds them.
const LOST_WORDS = {
  storage: 'this tab lost the conversation’s keys: its storage was full, so they could not be kept for a reload. Leave and connect again to talk encrypted.',
  elsewhere: 'another tab holds this conversation’s keys, and this one may not use them. Leave and connect again to talk encrypted.',
};

// What this page's own fatal errors mean, in words; as ABORT_WORDS,
// each follows "Encryption failed: ".
const FATAL_WORDS = {
  confirm_failed: 'the keys did not match: someone between you may be interfering.',
  commit_mismatch: 'the keys did not match: someone between you may be interfering.',
  bad_key: 'the keys did not match: someone between you may be interfering.',
  unknown_link_secret:
    '{peer} used a link of yours this page no longer knows (it makes a new one after a conversation with someone on a terminal, and when your token changes), so the conversation could not be secured. Send {peer} your current link.',
};

// Why this browser cannot encrypt, in words (e2e.supported()).
const UNSUPPORTED_WORDS = {
  insecure_context: 'This page is not served over https, so it cannot encrypt.',
  no_webcrypto: 'This browser has no Web Crypto, so it cannot encrypt.',
  no_x25519: 'This browser cannot make X25519 keys, so it cannot encrypt.',
};

// createSecure returns the page's encryption, drawing into the elements
// of #secure and reaching the rest of the page through page: send(obj)
// (a frame, false when offline), notice(text, opts) and error(code,
// text) (each returns the log entry), addMessage(side, from, text)
// (shows a message that came sealed, marked so; likewise),
// sendMine(obj, text) (sends the person's own message and shows it,
// marked sealed if obj is a seal: its entry is marked failed if the
// server refuses it; null when offline), notSent(text) (shows the
// person's message as not sent), unsent(text) (gives back a text that
// could not be sent, offline), sendRefused(text) (sends the message
// box as the person would, if it still holds text), me() (own name),
// myToken(), maxText(), redraw() (the whole page, whose share link this
// module's secret is part of).
export function createSecure(page) {
  const byId = (id) => document.getElementById(id);
  const ui = {
    box: byId('secure'),
    text: byId('secure-text'),
    codeRow: byId('secure-code-row'),
    code: byId('secure-code'),
    verify: byId('secure-verify'),
    match: byId('secure-match'),
    differ: byId('secure-differ'),
    plain: byId('secure-plain'),
  };

  // Whether this browser can encrypt here: '' when it can (supported()).
  let unsupported = 'checking';
  const ready = e2e.supported().then((why) => {
    unsupported = why;
    // The share link gains its secret once the page knows it can use one.
    page.redraw();
  });

  // holder is this page's id, '' until claimed settles: the id written
  // beside the state it keeps, and the name (after HOLDER_LOCK) of the
  // lock it holds for as long as it lives. A page uses a state kept in
  // sessionStorage only when its holder is this page's own (keptState).
  let holder = '';
  // elsewhere is the holder of the state kept in this tab when another
  // live page held its lock as this one claimed it.
  let elsewhere = '';
  const claimed = claim();

  // claim makes this page the holder of the state kept in this tab, if
  // no other live page holds it, or else a holder of its own. A reload
  // of the tab finds the state of the page before it, which lets go of
  // its lock as it goes: the new page takes the lock over, and the keys.
  // A tab that got a copy of another's sessionStorage (a browser's
  // Duplicate copies it) finds a state that a live page holds, and may
  // go on sealing with: sealing from the copy too would use its counters
  // twice. It waits CLAIM_WAIT_MS for that lock, then takes a new id,
  // so that the kept state is not used and the pairing starts a new
  // exchange. A page kept for Back (the back-forward cache) keeps its
  // lock; the browser drops the page from the cache rather than keep a
  // lock another page asks for. Without Web Locks (not a secure
  // context, where the page cannot encrypt anyway) the page holds
  // nothing, and uses no kept state. It never rejects.
  async function claim() {
    if (!globalThis.navigator || !navigator.locks) return;
    const kept = readKept();
    const was = kept && typeof kept.holder === 'string' ? kept.holder : '';
    if (was !== '') {
      if (await hold(was, CLAIM_WAIT_MS)) {
        holder = was;
        return;
      }
      elsewhere = was;
    }
    const id = e2e.toBase64url(crypto.getRandomValues(new Uint8Array(16)));
    if (!(await hold(id, 0))) return;
    holder = id;
    // A state kept by a page of the version before holders carries none:
    // a reload into this version goes on with its keys, as that page
    // did, rather than secure anew a conversation whose partner holds
    // them (which would fail as if someone between them interfered).
    if (kept && kept.holder === undefined && kept.state) adopt(kept);
  }

  // adopt makes kept, a state with no holder, this page's own.
  function adopt(kept) {
    try {
      sessionStorage.setItem(STORE_KEY, JSON.stringify({ ...kept, holder }));
    } catch {
      unstore();
    }
  }

  // hold takes the lock of id for as long as this page lives, waiting up
  // to waitMs for a page that holds it, and resolves to whether it got it.
  function hold(id, waitMs) {
    return new Promise((resolve) => {
      const options = waitMs > 0 ? { signal: AbortSignal.timeout(waitMs) } : { ifAvailable: true };
      navigator.locks
        .request(HOLDER_LOCK + id, options, (lock) => {
          resolve(lock !== null);
          // Held until the page is gone.
          return lock === null ? undefined : new Promise(() => {});
        })
        .catch(() => resolve(false));
    });
  }

  // The link secret of each token this page made one for (the sharer's
  // side), and those of links it opened (the side that connects).
  const ownSecrets = new Map();
  const linkSecrets = new Map();
  try {
    const kept = JSON.parse(sessionStorage.getItem(LINK_KEY) || 'null');
    if (kept && e2e.parseLink(kept.token + '.' + kept.secret)) ownSecrets.set(kept.token, kept.secret);
  } catch {
    // Nothing usable kept: a new secret is made when one is needed.
  }

  // keepOwnSecret stores the secret of the link this page shares (or
  // that there is none).
  function keepOwnSecret(token, secret) {
    try {
      if (secret) sessionStorage.setItem(LINK_KEY, JSON.stringify({ token, secret }));
      else sessionStorage.removeItem(LINK_KEY);
    } catch {
      // Kept in memory only, then.
    }
  }
  let connectingTo = ''; // the token of the last connect sent
  // promised is the id of a plain pairing that a page reloaded into it
  // found kept unagreed (storePlain): its link promised encryption, and
  // the reload forgot the link's secret, not the promise (goPlain).
  let promised = '';

  // The current pairing, or null. Its fields:
  //   peer, role, pairId, peerProto, linkSecret (held for this pairing)
  //   mode: 'securing' | 'secure' | 'plain' | 'failed'
  //   session (e2e.Session), verified (people compared), agreed (to
  //   send without encryption), chose (the person agreed, rather than
  //   the page for them), cannot (the partner said it cannot encrypt),
  //   why (shown while plain or failed), waiting (texts typed while
  //   securing), held (the partner's plaintext, until the person
  //   agrees), timer, abort (not sent yet), lost (why this tab lost
  //   the keys), quiet (logged out: nothing more of it is shown).
  let pairing = null;

  // retired is the pairing a resume found ended or replaced while this
  // page was away, kept only to read what its partner sealed or said in
  // the clear before it ended: the replay that follows the resume. Set
  // and cleared in later's steps, so that each frame is read by the
  // pairing it came in.
  let retired = null;

  // One queue for every asynchronous step, so that frames are sent and
  // handled in the order they come.
  let queue = Promise.resolve();
  const later = (fn) => {
    queue = queue.then(fn).catch((err) => {
      // A bug, not the partner's doing: say so rather than go silent.
      console.error('duet: encryption step failed', err);
    });
    return queue;
  };

  const words = (s, peer) => s.replaceAll('{peer}', peer);

  function sendSeal(data) {
    return page.send({ type: 'seal', data });
  }

  function store() {
    const p = pairing;
    if (!p || !p.session) return;
    try {
      sessionStorage.setItem(
        STORE_KEY,
        JSON.stringify({
          holder,
          pair_id: p.pairId,
          verified: p.verified,
          agreed: p.agreed,
          cannot: p.cannot,
          waiting: p.waiting,
          peer_abort: p.peerAbort,
          forged_told: p.forgedTold,
          state: p.session.toJSON(),
        }),
      );
    } catch {
      // Storage full (the page keeps its log there too) or refused. What
      // an earlier write kept is older than what this page may have sent
      // since: a reload that restored it would seal again with counters
      // already used, which AES-GCM does not survive. It goes (removing
      // needs no room), the keys stay in memory, and a reload finds
      // that they were lost.
      unstore();
      keepLost(p.pairId, 'storage');
    }
  }

  // keepLost notes, where no state is kept, that this tab lost the keys
  // of the pairing pairId, and why (a name in LOST_WORDS), so that a
  // reload into that pairing tells the partner so (lostKeys) rather than
  // secure it anew: the partner's page holds the keys, and would fail
  // the exchange as if someone between them interfered. A note of a few
  // dozen characters fits where the state did not; if even it does not,
  // a reload finds nothing kept, and secures the pairing anew.
  function keepLost(pairId, why) {
    if (pairId === '') return;
    try {
      sessionStorage.setItem(STORE_KEY, JSON.stringify({ lost: pairId, why }));
    } catch {
      // Nothing kept, then.
    }
  }

  // storePlain notes that p, a pairing with no keys, is plain, so that
  // a reloaded page reads what its partner sent before it ended as such;
  // and whether the person agreed to send in the clear: a page that
  // opened a link promising encryption sends nothing until they do, and
  // a reload, which forgets the link's secret, must not forget that.
  function storePlain(p) {
    try {
      sessionStorage.setItem(STORE_KEY, JSON.stringify({ holder, pair_id: p.pairId, peer: p.peer, plain: true, agreed: p.agreed }));
    } catch {
      // Then a reload refuses that replay, as text in another pairing;
      // nothing kept of a pairing before it is left for a reload to use.
      unstore();
    }
  }

  // unstore deletes what is kept under STORE_KEY.
  function unstore() {
    try {
      sessionStorage.removeItem(STORE_KEY);
    } catch {
      // Storage refused altogether: nothing was stored, then.
    }
  }

  function forget() {
    if (pairing) {
      clearTimeout(pairing.timer);
      dropWaiting(pairing);
    }
    pairing = null;
    unstore();
  }

  // ---- Share links ------------------------------------------------------

  // takeLink reads a link's fragment (#TOKEN or #TOKEN.SECRET) and
  // returns its token ('' for none); the secret is kept for a pairing
  // with that token.
  function takeLink(text) {
    const link = e2e.parseLink(text);
    if (!link) return '';
    if (link.secret) linkSecrets.set(link.token, link.secret);
    return link.token;
  }

  // fragment is what follows '#' in this page's share link for token:
  // the token, and a secret of this page's when it can encrypt.
  function fragment(token) {
    if (!token) return '';
    if (unsupported !== '') return token;
    let secret = ownSecrets.get(token);
    if (!secret) {
      // One secret per token, so a link stays good as long as its
      // token; a new token gets a new one.
      ownSecrets.clear();
      secret = e2e.makeLinkSecret();
      ownSecrets.set(token, secret);
      keepOwnSecret(token, secret);
    }
    return token + '.' + secret;
  }

  function noteConnect(token) {
    connectingTo = token;
  }

  // ---- Pairing ----------------------------------------------------------

  // newPairing is the state of the pairing a paired or resumed event
  // names, as its exchange begins: token is the one this side paired
  // through.
  function newPairing(ev, token) {
    return {
      peer: String(ev.peer || ''),
      role: ev.initiator ? 'initiator' : 'responder',
      token,
      pairId: typeof ev.pair_id === 'string' ? ev.pair_id : '',
      peerProto: typeof ev.peer_proto === 'string' ? ev.peer_proto : '',
      linkSecret: '',
      mode: 'securing',
      session: null,
      verified: false,
      agreed: false,
      chose: false,
      cannot: false,
      why: '',
      waiting: [],
      held: [],
      refused: '', // the last text refused, to go once the person agrees
      timer: 0,
      abort: '', // an abort not sent yet: this page was offline
      lost: '', // why this tab lost the keys (LOST_WORDS), when it did
      quiet: false, // logged out: nothing more of it is shown
      peerAbort: '', // the reason of the abort received in the partner's name
      forgedTold: false, // that abort was found not the partner's, and answered
    };
  }

  function paired(ev) {
    forget();
    later(() => {
      retired = null;
    });
    const me = page.me();
    const peer = String(ev.peer || '');
    const role = ev.initiator ? 'initiator' : 'responder';
    const token = role === 'initiator' ? connectingTo : page.myToken();
    const p = newPairing(ev, token);
    p.linkSecret = role === 'initiator' ? linkSecrets.get(token) || '' : ownSecrets.get(token) || '';
    pairing = p;
    if (p.peerProto !== 'json') {
      // A terminal cannot encrypt; nor can a partner the server cannot
      // vouch for. Said before the first message.
      if (role === 'responder') {
        // It may be pasted into /connect, secret and all: the next link
        // gets a new one.
        ownSecrets.clear();
        keepOwnSecret('', '');
      }
      const why =
        p.peerProto === 'line'
          ? peer + ' uses a terminal: the server can read this conversation.'
          : peer + '’s client cannot encrypt: the server can read this conversation.';
      goPlain(p, why);
      return;
    }
    later(async () => {
      await ready;
      // What it stores carries its holder.
      await claimed;
      if (pairing !== p) return;
      if (unsupported !== '') {
        sendSeal(e2e.abortData('cannot_encrypt'));
        goPlain(p, UNSUPPORTED_WORDS[unsupported] + ' The server can read this conversation.');
        return;
      }
      if (!p.token) {
        // The token this side connected to is gone (the page was
        // reloaded): the exchange cannot be made, and the partner is told.
        sendSeal(e2e.abortData('protocol_error'));
        fail(p, 'this page no longer knows the token of the pairing.', '');
        return;
      }
      const names = role === 'initiator' ? [me, peer] : [peer, me];
      const { session, out } = await e2e.Session.start({
        role,
        token: p.token,
        initiatorName: names[0],
        responderName: names[1],
        linkSecret: p.linkSecret,
        maxText: page.maxText(),
        persist: () => {
          if (pairing === p) store();
        },
      });
      if (pairing !== p) return;
      p.session = session;
      store();
      for (const data of out) sendSeal(data);
      startTimer(p);
      draw();
    });
    draw();
  }

  // goPlain puts p in plaintext mode for the reason why. A page that
  // opened a link with a secret for this pairing expected encryption: it
  // sends nothing until the person agrees. (The sharer's own secret
  // promises nothing: anyone, on a terminal too, may connect to a token.)
  function goPlain(p, why) {
    p.mode = 'plain';
    p.why = why;
    p.agreed = !(p.role === 'initiator' && (p.linkSecret || promised === p.pairId));
    storePlain(p);
    page.error('plaintext', why + (p.agreed ? '' : ' You opened a link that promised encryption: nothing is sent unless you choose “Send without encryption”.')).dataset.kind = 'plaintext';
    draw();
  }

  function fail(p, why, abortReason) {
    if (p.mode === 'failed') return;
    clearTimeout(p.timer);
    if (abortReason && !(p.session && p.session.state === 'failed')) {
      // Offline, it goes once the connection is back (resend): the
      // partner must learn that this side failed. A pairing with no
      // session (this tab lost it) says so without one.
      const data = p.session ? p.session.abort(abortReason) : e2e.abortData(abortReason);
      if (!sendSeal(data)) p.abort = data;
    }
    p.mode = 'failed';
    p.why = why;
    p.agreed = false;
    store();
    const shown = p.cannot ? ' What ' + p.peer + ' sends is shown marked unencrypted.' : '';
    page.error(
      'e2e_failed',
      'Encryption failed: ' + why + shown + ' Nothing more is sent unless you choose “Send without encryption”.',
    );
    dropWaiting(p);
    draw();
  }

  // dropWaiting shows the texts typed while securing, which the page
  // said would go as soon as it could, as not sent: the pairing ended or
  // its encryption failed first. The person sees which, and can copy
  // them.
  function dropWaiting(p) {
    for (const text of p.waiting) page.notSent(text);
    p.waiting = [];
    if (pairing === p) store();
  }

  // keptWaiting is the texts a reloaded page kept waiting for the keys
  // of the pairing in kept.
  function keptWaiting(kept) {
    const waiting = kept && Array.isArray(kept.waiting) ? kept.waiting : [];
    return waiting.filter((text) => typeof text === 'string');
  }

  // dropKeptWaiting shows what a reloaded page kept waiting as not sent:
  // the pairing it waited for is not the one the page goes on with.
  function dropKeptWaiting(kept) {
    for (const text of keptWaiting(kept)) page.notSent(text);
  }

  // startTimer gives the exchange HANDSHAKE_LIMIT_MS from now; it is
  // stopped while either side is away, since then nothing can come.
  function startTimer(p) {
    clearTimeout(p.timer);
    p.timer = setTimeout(() => later(() => timeUp(p)), HANDSHAKE_LIMIT_MS);
  }

  function timeUp(p) {
    if (pairing !== p || p.mode !== 'securing' || !p.session) return;
    if (p.session.state === 'confirmed') return;
    // protocol_error, not handshake_failed: no key was found wrong, and
    // the partner's page, perhaps only asleep (a phone locked as it
    // connected), would read "the keys did not match: someone between
    // you may be interfering".
    fail(p, p.peer + '’s page did not complete the exchange in time.', 'protocol_error');
  }

  // progress looks at the session after a step, and moves the page on.
  function progress(p) {
    const s = p.session;
    if (!s || p.mode === 'failed' || p.mode === 'plain') return;
    if (s.state === 'keyed' || s.state === 'confirmed') {
      // Texts typed while securing go now, in order.
      const waiting = p.waiting;
      p.waiting = [];
      for (const text of waiting) sealAndSend(p, text);
      if (waiting.length > 0) store();
    }
    if (s.state === 'confirmed' && p.mode === 'securing') {
      clearTimeout(p.timer);
      p.mode = 'secure';
      if (s.linkSecretUsed) {
        page.notice('End-to-end encrypted: the link’s secret proves the keys. Verification code ' + s.code + '.', {
          kind: 'e2e',
        });
      } else {
        page.notice(
          'Encrypted, not verified. Compare the code ' + s.code + ' with ' + p.peer + ' (by voice, say), then confirm.',
          { kind: 'e2e' },
        );
      }
    }
    draw();
  }

  // loggedOut drops the texts waiting for the keys without a word: the
  // log they would be shown in, as not sent, is cleared for whoever uses
  // the tab next. The pairing itself ends as ever (unpaired).
  function loggedOut() {
    if (!pairing) return;
    pairing.waiting = [];
    // Nor is a text whose sealing is under way shown not sent in the
    // log cleared for the next person.
    pairing.quiet = true;
    store();
  }

  function unpaired() {
    forget();
    later(() => {
      retired = null;
    });
    draw();
  }

  // ---- Frames -----------------------------------------------------------

  // sealed reads a sealed frame, and calls done, if given, once it is
  // shown or refused.
  function sealed(ev, done) {
    const p = pairing;
    const data = String(ev.data || '');
    const from = String(ev.from || '');
    later(async () => {
      try {
        if (retired && retired.peer === from && !(p && pairing === p && p.peer === from)) {
          await read(retired, data, true);
        } else {
          // A frame of a pairing that has ended since it came is still
          // read with that pairing's keys: its partner sealed it before
          // the end.
          await read(p, data, p !== null && pairing !== p);
        }
      } finally {
        if (done) done();
      }
    });
  }

  // read reads a frame of pairing p: the current one, or, over, the
  // one retired, whose partner's frames are read but answered nothing:
  // that pairing is over.
  async function read(p, data, over) {
    if (!over && pairing !== p) return;
    if (!p || !p.session) {
      // A page that cannot encrypt (or whose partner cannot) has told
      // its partner so; what the partner sent before it heard, its
      // first steps or its own word that it cannot either, carries no
      // message.
      if (p && p.mode === 'plain') return;
      if (p && p.lost) {
        // The partner's steps of the exchange whose keys this tab lost
        // (sent again as it came back), or its own abort, carry no
        // message; a message sealed with those keys is lost with them.
        if (e2e.kindOf(data) !== 'message') return;
        page.error('e2e_unreadable', 'A message from ' + p.peer + ' arrived sealed with the keys this tab lost; it cannot be read.');
        return;
      }
      page.error('e2e_unreadable', 'An encrypted message arrived that this page cannot read.');
      return;
    }
    const had = p.session.state;
    const r = await p.session.receive(data);
    // A pairing that ended while the frame was read (a peer_left right
    // behind the partner's last message, a slow decryption) is over now:
    // its partner sealed the message before the end, and it is shown,
    // as one read after the end is (sealed); nothing is answered.
    if (pairing !== p) over = true;
    if (!over) for (const out of r.out) sendSeal(out);
    if (r.gap > 0) {
      page.error('e2e_missing', r.gap + (r.gap === 1 ? ' message' : ' messages') + ' from ' + p.peer + ' did not arrive.');
    }
    if (r.error) {
      if (!over && r.error.code === 'peer_aborted') {
        // Aborts are not signed (a page with no keys must be able to
        // send one): what one says is weighed against what the partner
        // did. A page that cannot encrypt says so in place of its first
        // step; one whose steps gave keys here has encrypted, and this
        // abort is not its own. Else a partner that cannot encrypt
        // sends in the clear from now on, as it says: its text is
        // shown, marked, rather than lost.
        p.peerAbort = r.reason;
        if (r.reason === 'cannot_encrypt' && (had === 'keyed' || had === 'confirmed')) {
          // Answered at once, as below.
          p.forgedTold = true;
          sendSeal(e2e.abortData('protocol_error'));
          fail(p, words(FORGED_ABORT_WORDS, p.peer), '');
        } else {
          p.cannot = r.reason === 'cannot_encrypt';
          if (r.reason === 'unknown_link_secret' && p.role === 'initiator' && linkSecrets.get(p.token) === p.linkSecret) {
            // The partner's page no longer knows it: kept, it would fail
            // the same way at every connect with that token, typed
            // alone included, until the tab is reloaded.
            linkSecrets.delete(p.token);
          }
          const differ = r.reason === 'handshake_failed' && had === 'confirmed' && !p.session.linkSecretUsed;
          fail(p, words((differ ? CODES_DIFFER_WORDS : ABORT_WORDS[r.reason]) || ABORT_WORDS.protocol_error, p.peer), '');
        }
      } else if (!over && r.error.fatal) {
        fail(p, FATAL_WORDS[r.error.code] ? words(FATAL_WORDS[r.error.code], p.peer) : r.error.text + '.', '');
      } else if (!over && p.peerAbort && p.peerAbort !== 'keys_lost' && e2e.kindOf(data) === 'message') {
        // A page that aborts seals nothing after it, and what it sealed
        // before comes before it: the abort was not the partner's, whose
        // page goes on sealing, unaware. Said here once, and answered
        // with an abort, so that the partner's page fails too and its
        // person learns that nothing it sends is read. (An abort from a
        // tab that lost its keys is excepted: the tab that kept them may
        // still be sealing.)
        if (!p.forgedTold) {
          p.forgedTold = true;
          page.error('e2e_forged_abort', words(FORGED_MESSAGE_WORDS, p.peer));
          sendSeal(e2e.abortData('protocol_error'));
        }
      } else {
        const li = page.error('e2e_' + r.error.code, 'From ' + p.peer + ': ' + r.error.text + '.');
        li.dataset.kind = 'e2e_refused';
      }
    }
    if (r.kind === 'message' && !r.error && r.text !== '') {
      page.addMessage('theirs', p.peer, r.text);
    }
    if (!over) progress(p);
  }

  // plainMessage judges a plaintext message, in order with the sealed
  // frames before it: show(unencrypted) shows it, and done, if given, is
  // called once it is shown, held or refused. A server must not slip
  // text into an encrypted conversation unnoticed (docs/E2E.md, "What
  // the page does"): in a pairing that encrypts, or is being secured,
  // it is refused, since the partner's page seals everything. Once
  // encryption failed it is shown marked unencrypted, at once if the
  // partner said it cannot encrypt or the person agreed to go on
  // without encryption, else held until the person does.
  //
  // It is judged by the pairing it came in, taken as it comes, as
  // sealed() takes it: the step may wait behind sealed frames still
  // being read, and a peer_left right behind the message ends the
  // pairing at once. Judged by the pairing in force when its turn came,
  // none, text a server slipped in just before a leave was shown as a
  // plain message.
  function plainMessage(ev, show, done) {
    const came = pairing;
    later(() => {
      try {
        // A message of the pairing a resume found ended or replaced is
        // judged by that pairing, as its sealed frames are read by it.
        const from = String(ev.from || '');
        let p = came;
        if (retired && retired.peer === from && !(p && p.peer === from)) p = retired;
        if (!p || p.mode === 'plain') {
          show(false);
        } else if (p.mode === 'failed' && (p.agreed || p.cannot)) {
          show(true);
        } else if (p.mode === 'failed' && p === pairing && p.held.length < HOLD_LIMIT) {
          if (p.held.length === 0) {
            page.error(
              'e2e_plaintext_held',
              'Unencrypted text from ' + p.peer + ' arrived; it is shown, marked unencrypted, if you choose “Send without encryption”.',
            );
          }
          p.held.push(() => show(true));
        } else {
          const where = p.mode === 'securing' ? 'while the conversation was being secured' : 'in an encrypted conversation';
          page.error('e2e_plaintext_refused', 'Unencrypted text arrived ' + where + '; it was not shown.');
        }
      } finally {
        if (done) done();
      }
    });
  }

  // ---- Sending ----------------------------------------------------------

  // sendText takes the text the person sends. It returns 'say' when the
  // page should send it as a plain say, 'taken' when this module took
  // care of it (sealed it, or queued it for the keys), and 'kept' when
  // it refused it with a word to the person: the text stays in the box,
  // and goes if the person then agrees to send without encryption
  // (onPlain). A box emptied on a refusal lost the text: the button
  // the refusal pointed to had nothing to send.
  function sendText(text) {
    const p = pairing;
    if (!p) return 'say';
    if (p.mode === 'plain' || p.mode === 'failed') {
      if (p.agreed) return 'say';
      p.refused = text;
      page.error(
        'e2e_not_sent',
        'Not sent: ' + p.why + ' It is still in the message box: choose “Send without encryption” to send it anyway.',
      );
      return 'kept';
    }
    const s = p.session;
    if (!s || (s.state !== 'keyed' && s.state !== 'confirmed')) {
      p.waiting.push(text);
      // Kept for a reload too: it goes from the restored page, or is
      // shown not sent there.
      store();
      page.notice('Securing the conversation… your message goes as soon as it is.', { kind: 'e2e_waiting' });
      return 'taken';
    }
    sealAndSend(p, text);
    return 'taken';
  }

  function sealAndSend(p, text) {
    later(async () => {
      // A pairing that ended before the text was sealed (the partner
      // left as it was sent) takes nothing more: the text is shown not
      // sent, as one waiting for the keys is (dropWaiting), never
      // dropped without a word.
      if (pairing !== p) {
        if (!p.quiet) page.notSent(text);
        return;
      }
      let data;
      try {
        data = await p.session.seal(text);
      } catch (err) {
        if (!(err instanceof e2e.E2EError)) throw err;
        page.error('e2e_' + err.code, 'Not sent: ' + err.message + '.');
        return;
      }
      if (pairing !== p) {
        if (!p.quiet) page.notSent(text);
        return;
      }
      // The connection may have died while the text was sealed (a page
      // woken from sleep learns so moments after it wakes): nothing was
      // sent, and the text goes back to the person (page.unsent), never
      // dropped. Its counter is spent: the partner is told of a gap.
      if (!page.sendMine({ type: 'seal', data }, text)) page.unsent(text);
    });
  }

  // afterSent calls fn once every text sealed before it is sent: a
  // leave clicked right after a message must not overtake it.
  function afterSent(fn) {
    later(fn);
  }

  // ---- Resume -----------------------------------------------------------

  // keptPartner is the partner's name in a session's kept state.
  function keptPartner(state) {
    return String(state.role === 'initiator' ? state.responder : state.initiator);
  }

  // apart is why a pairing stops encrypting when a resume brings one
  // side to a node of an older version of the server, which passes on
  // no sealed frame (during a rolling upgrade).
  function apart(peer) {
    return peer + ' is now reached through another server of this service, which cannot pass on encrypted messages.';
  }

  // peerBack and resumed send the handshake steps again, since one may
  // have been lost with a dropped connection (docs/E2E.md, "Steps
  // again"). resumed also restores a pairing the page kept in
  // sessionStorage before a reload, when the server finds the same one.
  function peerBack(ev) {
    const p = pairing;
    if (p && ev && ev.peer_proto !== 'json' && p.mode !== 'plain') {
      // A partner that came back on a node of an older version of the
      // server is told with no protocol: that node passes on no sealed
      // frame (docs/CLUSTER.md).
      fail(p, ev.peer_proto ? p.peer + ' came back on a terminal, which cannot encrypt.' : apart(p.peer), '');
      return;
    }
    if (p && p.mode === 'securing' && p.session) startTimer(p);
    resend(p);
  }

  function peerAway() {
    if (pairing) clearTimeout(pairing.timer);
  }

  // offline stops the exchange's clock while this page's own connection
  // is down: the partner's steps cannot reach it meanwhile.
  function offline() {
    if (pairing) clearTimeout(pairing.timer);
  }

  function resend(p) {
    later(() => {
      if (!p || pairing !== p) return;
      if (p.mode === 'failed') {
        if (p.abort && sendSeal(p.abort)) p.abort = '';
        return;
      }
      if (!p.session) return;
      for (const d of p.session.resend()) sendSeal(d);
    });
  }

  // retire keeps old, ended or replaced by a resume, to read the replay
  // of what its partner sealed or said (see retired). kept is the state a
  // reloaded page kept of it instead, when it has none in memory.
  function retire(old, kept) {
    if (old && (old.session || old.mode === 'plain')) {
      later(() => {
        retired = old;
      });
      return;
    }
    if (kept && kept.plain === true) {
      later(() => {
        const p = newPairing({ peer: kept.peer, pair_id: kept.pair_id }, '');
        p.mode = 'plain';
        p.agreed = true;
        retired = p;
      });
      return;
    }
    if (!kept || !kept.state) return;
    later(async () => {
      let session = null;
      try {
        session = await e2e.Session.restore(kept.state, () => {});
      } catch {
        session = null;
      }
      if (!session) return;
      const p = newPairing({ peer: keptPartner(kept.state), pair_id: kept.pair_id }, kept.state.token);
      p.session = session;
      p.mode = session.state === 'confirmed' ? 'secure' : 'failed';
      retired = p;
    });
  }

  // keptState is what this page kept in sessionStorage, or what the page
  // before it in this tab kept, once claimed has made this page its
  // holder; null otherwise.
  function keptState() {
    const kept = readKept();
    return kept && holder !== '' && kept.holder === holder ? kept : null;
  }

  // lostKeys says why this tab, reloaded or copied, lost the keys of
  // the pairing ev resumes it into (a name in LOST_WORDS), or '' when it
  // did not: its storage refused them (keepLost), or it holds a copy of
  // them that another live page holds (claim), which it may not use. A
  // partner now on a terminal (or a node that cannot say) could not read
  // an abort: the pairing goes plain, as a new one would.
  function lostKeys(ev) {
    const kept = readKept();
    if (!kept || !ev.pair_id || ev.peer_proto !== 'json') return '';
    if (kept.lost === ev.pair_id && Object.hasOwn(LOST_WORDS, kept.why)) return kept.why;
    if (kept.state && elsewhere !== '' && kept.holder === elsewhere && kept.pair_id === ev.pair_id) return 'elsewhere';
    return '';
  }

  function readKept() {
    try {
      return JSON.parse(sessionStorage.getItem(STORE_KEY) || 'null');
    } catch {
      return null;
    }
  }

  function resumed(ev) {
    const old = pairing;
    if (!ev.peer) {
      const kept = old ? null : keptState();
      forget();
      dropKeptWaiting(kept);
      retire(old, kept);
      draw();
      return;
    }
    // Every node of a cluster tells a pairing by the same id. A pairing
    // that a node of an older version made across nodes has none: the
    // same partner is then the same pairing, and it keeps its mode,
    // whether a resume now names no id or, on a newer node, one.
    const pairId = typeof ev.pair_id === 'string' ? ev.pair_id : '';
    if (pairing && (pairing.pairId === pairId || pairing.pairId === '') && pairing.peer === String(ev.peer)) {
      if (pairing.mode === 'securing' && pairing.session) startTimer(pairing);
      resend(pairing);
      return;
    }
    if (pairing && pairing.pairId !== '' && pairId === '' && pairing.peer === String(ev.peer)) {
      // The same partner, but this session came back on a node of an
      // older version, which passes on no sealed frame.
      if (pairing.mode !== 'plain') fail(pairing, apart(pairing.peer), '');
      return;
    }
    const lost = old ? '' : lostKeys(ev);
    if (lost !== '') {
      // The partner's page holds this pairing's keys, and this one has
      // none: an exchange begun anew would fail there as if someone
      // between them interfered. The partner is told what happened,
      // and the pairing's encryption ends on both pages. The note stays
      // for another reload, which says so again.
      forget();
      pairing = newPairing(ev, '');
      pairing.lost = lost;
      keepLost(pairing.pairId, lost);
      fail(pairing, LOST_WORDS[lost], 'keys_lost');
      return;
    }
    const kept = keptState();
    if (kept && kept.pair_id && pairId === '' && kept.state && keptPartner(kept.state) === String(ev.peer)) {
      // As above, after a reload: the pairing this page encrypted, with
      // the same partner, is now on a node that passes on no sealed
      // frame.
      forget();
      pairing = newPairing(ev, '');
      if (!old) pairing.waiting = keptWaiting(kept);
      fail(pairing, apart(pairing.peer), '');
      return;
    }
    // A plain pairing kept before a reload, or by the tab this one was
    // copied from, with no agreement to send in the clear: its link
    // promised encryption, and the person is asked again (goPlain).
    // Being asked once too often is safe where keys are not: no holder
    // is needed.
    const keptPlain = old ? null : readKept();
    promised = keptPlain && keptPlain.plain === true && keptPlain.agreed === false && pairId !== '' && keptPlain.pair_id === pairId ? pairId : '';
    if (!kept || !kept.state || kept.pair_id !== ev.pair_id || !ev.pair_id) {
      // Another pairing, or none kept: a new exchange, in the role the
      // server gives; the partner's first steps are among the replay,
      // after what the partner of the pairing before (if any) sealed
      // before it ended.
      const peer = String(ev.peer);
      const again = old ? old.peer === peer && old.session !== null : !!(kept && kept.state && keptPartner(kept.state) === peer);
      paired(ev);
      if (again) {
        // The same partner, a new pairing: the server says the one
        // before ended while this page was away (told by ended_away),
        // or lies. Either way what was verified of it does not carry
        // over, which the person must know before trusting the new one.
        page.error('e2e_new_pairing', words(NEW_PAIRING_WORDS, peer));
      }
      if (!old) dropKeptWaiting(kept);
      retire(old, old ? null : kept);
      return;
    }
    const p = newPairing(ev, kept.state.token);
    p.verified = kept.verified === true;
    p.cannot = kept.cannot === true;
    // An abort in the partner's name is weighed after a reload as
    // before it: a sealed message that follows it shows it forged.
    p.peerAbort = typeof kept.peer_abort === 'string' ? kept.peer_abort : '';
    p.forgedTold = kept.forged_told === true;
    // What was typed before the reload waits for these keys still.
    p.waiting = old ? [] : keptWaiting(kept);
    forget();
    pairing = p;
    later(async () => {
      let session;
      try {
        session = await e2e.Session.restore(kept.state, () => {
          if (pairing === p) store();
        });
      } catch {
        session = null;
      }
      if (pairing !== p) return;
      if (!session) {
        paired(ev);
        return;
      }
      p.session = session;
      // Kept again at once: forget() took it out of the storage, and
      // nothing may change the state before another reload (a partner
      // away, or quiet), which would find no keys.
      store();
      if (session.state === 'failed') {
        fail(p, 'encryption had failed before the page was reloaded.', '');
        // The choice to go on without encryption outlives the reload.
        if (kept.agreed === true) onPlain();
        return;
      }
      if (session.state === 'confirmed') p.mode = 'secure';
      else startTimer(p);
      for (const d of session.resend()) sendSeal(d);
      // Sends what was waiting, if the keys are agreed already.
      progress(p);
    });
  }

  // ---- Drawing ----------------------------------------------------------

  function draw() {
    const p = pairing;
    let state = 'none';
    let text = '';
    if (!p) {
      if (unsupported !== '' && unsupported !== 'checking') {
        state = 'unsupported';
        text = UNSUPPORTED_WORDS[unsupported] || '';
      }
    } else if (p.mode === 'plain') {
      state = 'plain';
      text = p.why + (p.agreed ? '' : ' Nothing is sent unless you agree.');
    } else if (p.mode === 'failed') {
      state = 'failed';
      text = 'Encryption failed: ' + p.why;
    } else if (p.mode === 'securing') {
      state = 'securing';
      text = 'Securing the conversation…';
    } else if (p.session && p.session.linkSecretUsed) {
      // The code is still shown, for those who compare it anyway: say
      // that they need not.
      state = 'verified';
      text = 'End-to-end encrypted, verified by the link: nothing to compare.';
    } else if (p.verified) {
      state = 'verified';
      text = 'End-to-end encrypted, verified.';
    } else {
      state = 'unverified';
      text = 'Encrypted, not verified: compare the code with ' + p.peer + '.';
    }
    if (p && (p.mode === 'plain' || p.mode === 'failed') && p.chose) {
      text += ' You chose to send without encryption.';
    }
    ui.box.hidden = state === 'none';
    ui.box.dataset.state = state;
    ui.text.textContent = text;
    const code = p && p.session && p.mode === 'secure' ? p.session.code : '';
    ui.codeRow.hidden = code === '';
    ui.code.textContent = code;
    ui.verify.hidden = state !== 'unverified';
    ui.plain.hidden = !(p && (p.mode === 'plain' || p.mode === 'failed') && !p.agreed);
  }

  function onMatch() {
    const p = pairing;
    if (!p || p.mode !== 'secure') return;
    p.verified = true;
    store();
    page.notice('You confirmed that the codes match: the conversation is end-to-end encrypted and verified.', {
      kind: 'e2e_verified',
    });
    draw();
  }

  function onDiffer() {
    const p = pairing;
    if (!p || p.mode !== 'secure') return;
    fail(p, 'the codes differ: someone between you may be reading this conversation.', 'handshake_failed');
  }

  function onPlain() {
    const p = pairing;
    if (!p || p.agreed) return;
    p.agreed = true;
    p.chose = true;
    if (p.mode === 'plain') storePlain(p);
    else store();
    page.notice('You chose to send without encryption: the server can read what you send from now on.', {
      kind: 'plaintext_agreed',
    });
    // What the partner sent in the clear meanwhile is shown now, marked.
    const held = p.held;
    p.held = [];
    for (const show of held) show();
    draw();
    // The text the page refused goes now: the refusal said this button
    // sends it. Only if the box still holds it as it was refused: what
    // the person has changed or typed since is theirs to send.
    const refused = p.refused;
    p.refused = '';
    if (refused !== '') page.sendRefused(refused);
  }

  ui.match.addEventListener('click', onMatch);
  ui.differ.addEventListener('click', onDiffer);
  ui.plain.addEventListener('click', onPlain);
  draw();

  return {
    takeLink,
    fragment,
    noteConnect,
    paired,
    unpaired,
    loggedOut,
    sealed,
    plainMessage,
    sendText,
    afterSent,
    peerBack,
    peerAway,
    offline,
    resumed,
    // claimed resolves once the page knows whether the state kept in
    // this tab is its own: a resume, which restores it, waits for it.
    claimed,
    // encrypting says whether the current pairing seals what is sent.
    encrypting: () => pairing !== null && (pairing.mode === 'securing' || pairing.mode === 'secure'),
    draw,
  };
}
