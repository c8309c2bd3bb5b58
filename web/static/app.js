// duet's browser client.
//
// The page keeps one WebSocket to /ws on its own origin and speaks the JSON
// protocol described in proto/: one JSON object per text frame, each with a
// "type". The server greets with hello, answers login with welcome, and
// tells each side of a pairing about the other. It does not echo what we
// say, so our own messages are shown as soon as they are sent.
//
// Everything a person or the server wrote reaches the page through
// textContent and is never parsed as markup: a message that looks like a tag
// is shown as the characters it is.
//
// A share link (https://host/#TOKEN) is read once, when the page loads, and
// never acts by itself: after logging in the person is asked whether to
// connect, and only their click connects. A page on another site can open
// duet with a link of its choosing, so the link only proposes. It cannot
// change the fragment later: the server sends Cross-Origin-Opener-Policy,
// which takes the opener's handle on this window away, and the page does
// not listen for hashchange anyway.
//
// A session outlives its connection (docs/RESUME.md). When the server
// gives a resume key, the page keeps it in sessionStorage with the seq of
// the last message shown and the messages themselves; a socket that closes
// without the person logging out is a drop, and the page reconnects and
// resumes, as it does after a reload of the tab. The functions under
// "Session resume" below are that logic.

'use strict';

import { createSecure } from './secure.js';

// The server's default limit on one message's text, in UTF-8 bytes. A frame
// over the server's frame limit would cost the whole connection, and with
// it the pairing, so the page refuses such text before sending it. A hello
// that carries max_text overrides this.
const DEFAULT_MAX_TEXT = 16 * 1024;

// Reconnect delays grow from 1s to 30s. Each is jittered so that a server
// restart is not met by every page at the same instant.
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30000;

// A socket that opens but never greets is as good as closed.
const HELLO_TIMEOUT_MS = 10000;

// The close code a page sends as it is hidden for another: duet's own
// for "going away", which the server takes as it takes the browser's
// 1001, a page script being allowed only 1000 and 3000-4999
// (docs/PROTOCOL.md).
const CLOSE_PAGE_AWAY = 4001;

// How the server's notice of a drain begins (engine/drain.go,
// drainNoticeText): it tells a WebSocket client to reconnect and
// resume, which the page does by itself as the socket closes (1012),
// and says so in its own words instead.
const DRAIN_NOTICE = 'the server is restarting; reconnect and resume your session';

// How often, and for how long, to try logging in again while the server
// still holds our name from a connection it has not yet seen die. Its idle
// timeout is 90s by default, so two minutes covers it.
const RELOGIN_EVERY_MS = 5000;
const RELOGIN_TRIES = 24;

// Old entries are dropped past this, so a long session cannot grow the page
// without bound.
const LOG_LIMIT = 1000;

// Acknowledge what was shown after this many messages, or after this long
// without one, so that the server need not keep them for a resume.
const ACK_EVERY = 32;
const ACK_QUIET_MS = 1000;

// Where the session lives across reloads of the tab: sessionStorage, which
// belongs to this tab alone and ends with it. Not localStorage, which every
// tab of the origin shares and which outlives the browser; not the
// address, which is shared, bookmarked and logged.
const STORE_KEY = 'duet.session';
// The messages kept there for a reload to show again: the newest, up to
// this many and this many characters of text.
const KEEP_MESSAGES = 200;
const KEEP_CHARS = 256 * 1024;
// Writes to sessionStorage are gathered for this long; pagehide writes
// at once whatever is waiting.
const SAVE_DELAY_MS = 200;

// A clock that jumps by more than this between two ticks means the
// machine slept: the socket may be dead without the browser knowing.
const WAKE_TICK_MS = 5000;
const WAKE_GAP_MS = 20000;
// A socket that does not answer "who" this soon after a wake is given up
// for a new one, which resumes the session. Giving up a socket that was
// only slow costs one resume: the server hands the session over.
const PROBE_TIMEOUT_MS = 3000;
// A page that has heard nothing from the server for QUIET_PROBE_MS asks
// it "who", and one that then hears nothing within ANSWER_TIMEOUT_MS
// gives the socket up for another, which resumes: a network that dies
// without a word (a Wi-Fi handover, a NAT that forgot the connection)
// leaves the socket looking open, and the browser does not tell the
// page that the server's pings go unanswered. The answer to a resume is
// waited for as long, and the socket given up the same way: the key the
// resume used still takes the session back (docs/RESUME.md, "The key").
// The wait is longer than the failed-connect throttle holds a resume or
// a connect, and what comes behind it, at most (16 s): a socket only
// held is not given up.
const QUIET_PROBE_MS = 30000;
const ANSWER_TIMEOUT_MS = 20000;

const NAME_RE = /^[A-Za-z0-9_.-]{1,32}$/;

const byId = (id) => document.getElementById(id);

const ui = {
  state: byId('state'),
  stateText: byId('state-text'),
  reconnect: byId('reconnect'),
  loginView: byId('login-view'),
  loginForm: byId('login-form'),
  name: byId('name'),
  passwordField: byId('password-field'),
  password: byId('password'),
  login: byId('login'),
  sessionView: byId('session-view'),
  me: byId('me'),
  logout: byId('logout'),
  token: byId('token'),
  copy: byId('copy'),
  copyLink: byId('copy-link'),
  newToken: byId('newtoken'),
  shareLink: byId('share-link'),
  share: byId('share'),
  connectForm: byId('connect-form'),
  connectToken: byId('connect-token'),
  connect: byId('connect'),
  invite: byId('invite'),
  inviteToken: byId('invite-token'),
  inviteAccept: byId('invite-accept'),
  inviteDismiss: byId('invite-dismiss'),
  peer: byId('peer'),
  leave: byId('leave'),
  log: byId('log'),
  compose: byId('compose'),
  message: byId('message'),
  send: byId('send'),
  announce: byId('announce'),
};

// All the page's state. The DOM is drawn from it by render(); handlers
// change it and call render() rather than touching controls one by one.
const st = {
  ws: null,
  ready: false, // hello has arrived on the current socket
  auth: 'open', // "open" or "accounts", from hello
  maxText: DEFAULT_MAX_TEXT,

  // The credentials of the last successful login, kept in memory only, so
  // that the page can log in again by itself after the connection drops.
  // Empty when no one is logged in or the person logged out.
  name: '',
  password: '',

  loggedIn: false,
  loggingIn: false, // a login is sent and not yet answered
  autoLogin: false, // that login is the page's own, after a drop
  nameBusy: false, // that login found the name still held; retrying
  token: '',
  peer: '',
  pairId: '', // the pairing's id (pair_id), to tell a new pairing with the same partner

  invite: '', // a token from a share link, offered once logged in; connects only on a click
  lastOp: '', // the type of the last command sent, to tie errors to it
  lastMine: null, // our message, if it was the last command sent: { li, kept }, its log entry and its record in kept
  // Our messages by the id each was sent with, newest last, so that a
  // refusal that names one (docs/PROTOCOL.md, "Which messages were
  // refused") marks that one: a message sent is answered with nothing,
  // and several may be on their way when a refusal comes. A resume
  // names the last one the server had (lostAfter): those after it were
  // lost with the connection.
  mine: new Map(),
  nextId: 1,

  attempt: 0, // reconnects since the last good connection
  retryTimer: 0,
  tickTimer: 0,
  retryAt: 0,
  helloTimer: 0,
  reloginTimer: 0,
  relogins: 0,
  wasOnline: false, // the socket that closed had greeted us
  loginExpired: false, // the server closed this socket for not logging in in time
  loginResend: false, // a login was on its way when it did: send it again
  renewing: false, // reconnecting after loginExpired, which is not news
  failNoted: false, // the log already says the server cannot be reached
  refused: '', // the code of the refusal last told, until a hello: the same one is not told again
  shutdown: false, // the server said it is going down
  quitting: false, // the person logged out; the close that follows is expected

  // Session resume. resume is null when the server gave no key (resume
  // is off, or no one is logged in); else what sessionStorage keeps.
  resume: null, // { key, last, windowS }
  kept: [], // messages kept for a reload: { side, from, text, at }, failed: true if not sent, and ours their id
  resuming: false, // a resume is sent and not yet answered
  restored: false, // the page was reloaded and showed a kept session
  peerAway: false, // the peer lost its connection and may come back
  unacked: 0, // messages shown since the last ack
  ackTimer: 0,
  saveTimer: 0,
  probeTimer: 0,
  lastHeard: 0, // when the last frame came from the server (Date.now())
  stale: null, // a socket given up after a wake, closed once resumed
  keptChars: 0, // the text in kept, in characters
  leaveKey: '', // the key of a session to end on the next socket: logged out while offline
  quietQuit: false, // that session is being ended; its frames are not shown
  awayNoted: false, // the log says the page is reconnecting
  // A resume found no pairing: the peer_left the server tells next is
  // of one that ended while away; timer is the fallback that says so if
  // none comes (endedAway).
  endedAway: null, // { timer }

  unread: 0,
};

// ---- Connection ---------------------------------------------------------

function socketURL() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return scheme + '//' + location.host + '/ws';
}

function connect() {
  clearTimers();
  st.ready = false;
  setState('connecting', st.attempt > 0 ? 'Reconnecting…' : 'Connecting…');
  let ws;
  try {
    ws = new WebSocket(socketURL());
  } catch (err) {
    // Only a malformed URL or a blocked port throws here; treat it like
    // any other failed attempt.
    console.error('duet: cannot open WebSocket', err);
    dropped(null);
    return;
  }
  st.ws = ws;
  st.helloTimer = setTimeout(() => {
    if (st.ws === ws && !st.ready) ws.close();
  }, HELLO_TIMEOUT_MS);
  ws.addEventListener('message', (ev) => {
    if (st.ws === ws) receive(ev.data);
  });
  ws.addEventListener('close', (ev) => {
    // A socket replaced by "Retry now" may still report its close late.
    if (st.ws === ws) dropped(ev);
  });
}

function clearTimers() {
  clearTimeout(st.retryTimer);
  clearInterval(st.tickTimer);
  clearTimeout(st.helloTimer);
  clearTimeout(st.reloginTimer);
  clearTimeout(st.ackTimer);
  clearTimeout(st.probeTimer);
  st.probeTimer = 0;
  ui.reconnect.hidden = true;
}

// dropped handles the end of a socket, whoever ended it, and plans the next
// attempt.
function dropped(ev) {
  const wasOnline = st.ready;
  const peer = st.peer;
  st.ws = null;
  st.ready = false;
  st.loggedIn = false;
  st.loggingIn = false;
  st.peer = '';
  st.lastMine = null;
  clearTimers();

  if (st.shutdown) {
    // A server that shuts down ends every session, away ones too.
    forgetResume();
  }
  if (st.resume && !st.quitting) {
    // The session waits for its resume, and the pairing's keys with it.
    droppedAway(peer);
    return;
  }
  secure.unpaired();

  if (st.quitting) {
    // Logging out ends the session on purpose: start afresh at once.
    st.quitting = false;
    st.quietQuit = false;
    st.attempt = 0;
    render();
    connect();
    return;
  }

  if (st.loginExpired) {
    // The server does not keep a socket that has not logged in within
    // its limits.login_timeout. Nothing was lost: open another, quietly,
    // once someone is looking at the page.
    st.loginExpired = false;
    st.loginResend = st.name !== '';
    st.renewing = true;
    st.attempt = 0;
    st.failNoted = false;
    render();
    if (document.hidden) {
      setState('connecting', 'Connecting…');
    } else {
      connect();
    }
    return;
  }

  if (wasOnline) {
    let text = st.shutdown ? 'The server closed the connection.' : 'Lost the connection to the server.';
    if (ev && ev.reason && !st.shutdown) text += ' (' + ev.reason + ')';
    if (peer) text += ' Your conversation with ' + peer + ' has ended.';
    if (st.name) text += ' You will be logged in again as ' + st.name + ' when it is back.';
    notice(text, { kind: 'connection' });
    st.failNoted = true;
  } else if (!st.failNoted) {
    notice('Cannot reach the server. Retrying…', { kind: 'connection' });
    st.failNoted = true;
  }
  st.shutdown = false;
  retryLater();
}

function backoff(attempt) {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(attempt, 10));
  // "Equal jitter": at least half the step, so delays still grow.
  return Math.max(BACKOFF_MIN_MS, Math.round(base * (0.5 + Math.random() * 0.5)));
}

function retryLater() {
  let delay = backoff(st.attempt);
  if (st.resume && st.resume.windowS > 0 && st.resume.awaySince > 0) {
    // The session is kept only so long: a step of the backoff must not
    // carry the next try past the window, or a network back in time
    // finds the session ended. Each is at most a third of what is left,
    // so the last tries land within it.
    const left = st.resume.windowS * 1000 - (Date.now() - st.resume.awaySince);
    if (left > 0) delay = Math.min(delay, Math.max(BACKOFF_MIN_MS, Math.round(left / 3)));
  }
  st.attempt++;
  st.retryAt = Date.now() + delay;
  st.retryTimer = setTimeout(connect, delay);
  st.tickTimer = setInterval(showCountdown, 250);
  ui.reconnect.hidden = false;
  showCountdown();
  render();
}

function showCountdown() {
  const secs = Math.max(1, Math.ceil((st.retryAt - Date.now()) / 1000));
  setState('reconnecting', 'Reconnecting in ' + secs + 's');
}

function retryNow() {
  if (st.ws) return;
  connect();
}

function setState(name, text) {
  ui.state.dataset.state = name;
  ui.stateText.textContent = text;
}

function send(obj) {
  if (!st.ws || st.ws.readyState !== WebSocket.OPEN || !st.ready) {
    tellOffline();
    return false;
  }
  st.ws.send(JSON.stringify(obj));
  st.lastOp = obj.type;
  st.lastMine = null;
  return true;
}

function tellOffline() {
  error('offline', 'Not connected to the server; wait for it to come back.');
}

// sendMine sends a message of the person's, a say or a seal, numbered
// so that the server's refusal of it names it, and shows it; text is
// what the person wrote. It returns the log entry, or null when offline.
function sendMine(obj, text) {
  const id = st.nextId++;
  if (!send({ ...obj, id })) return null;
  const li = addMessage('mine', st.name, text);
  const kept = keepMessage('mine', st.name, text);
  if (obj.type === 'seal') markSealed(li, kept);
  // Kept with its id, so that a reload can still mark it lost.
  if (kept) kept.id = id;
  st.lastMine = { li, kept };
  st.mine.set(id, st.lastMine);
  // A refusal comes within moments of its message, in the order sent:
  // one for a message older than the log holds has nothing to mark.
  for (const old of st.mine.keys()) {
    if (st.mine.size <= LOG_LIMIT) break;
    st.mine.delete(old);
  }
  return li;
}

// refused marks failed the messages of ours, numbered first to last,
// that the server says it refused.
function refused(first, last) {
  if (!Number.isSafeInteger(first) || !Number.isSafeInteger(last) || first <= 0 || last < first) return;
  for (const [id, m] of st.mine) {
    if (id < first || id > last) continue;
    markFailed(m.li, m.kept);
    st.mine.delete(id);
  }
  // The refusal is kept with the message, for a reload to show.
  saveSoon();
}

// lostAfter marks not sent the messages of ours numbered after last,
// the id of the last one the server relayed, as a resume tells it
// (resumed's last_id): the page sent them into a connection that died
// before the server read them, and they went nowhere. It returns how
// many it marked. A server that does not say (no last_id) leaves them
// as they are.
function lostAfter(last) {
  if (!Number.isSafeInteger(last) || last < 0) return 0;
  let lost = 0;
  for (const [id, m] of st.mine) {
    if (id <= last) continue;
    markFailed(m.li, m.kept);
    st.mine.delete(id);
    lost++;
  }
  // A page that numbers from 1 again (reloaded, with nothing kept to go
  // on from) goes on from the server's count instead, or its next
  // messages would compare as older than those of the page before it.
  st.nextId = Math.max(st.nextId, last + 1);
  return lost;
}

// ---- Session resume -----------------------------------------------------
//
// The server keeps a session whose connection drops for resume.window and
// takes it back from whoever shows its resume key (docs/RESUME.md). The
// page keeps the key, the seq of the last message shown and the messages
// themselves in sessionStorage, so that a drop and a reload of the tab
// both come back to the same conversation: the server replays exactly the
// messages after that seq, and the page shows again what it kept.

// startResume takes the resume key of a login's welcome, or forgets the
// last one when the server gives none (resume is off there).
function startResume(ev) {
  forgetResume();
  const key = typeof ev.resume_key === 'string' ? ev.resume_key : '';
  if (!key) return;
  st.resume = { key, last: 0, windowS: Number(ev.window_s) || 0, reading: [] };
  saveNow();
  // The page acknowledges what it shows, and says so at once: until a
  // client acknowledges, the server keeps for it only what its TCP has
  // not acknowledged, and a message the browser received but the page
  // had not shown before a reload would be missing (docs/RESUME.md).
  sendQuiet({ type: 'ack', last: 0 });
}

// forgetResume drops the key, in memory and in sessionStorage: after a
// logout, a bye, a shutdown or a resume refused, there is nothing to
// resume.
function forgetResume() {
  st.resume = null;
  st.resuming = false;
  // The messages of ours a resume could find the server never got are
  // this session's: a later session's resume must not mark them.
  st.mine.clear();
  st.lastMine = null;
  st.kept = [];
  st.keptChars = 0;
  st.unacked = 0;
  clearTimeout(st.ackTimer);
  clearTimeout(st.saveTimer);
  st.saveTimer = 0;
  try {
    sessionStorage.removeItem(STORE_KEY);
  } catch {
    // Storage refused altogether (some private modes): nothing was kept.
  }
}

function sendResume() {
  st.unacked = 0;
  clearTimeout(st.ackTimer);
  const ws = st.ws;
  if (send({ type: 'resume', key: st.resume.key, last: st.resume.last })) {
    st.resuming = true;
    expectAnswer(ws, ANSWER_TIMEOUT_MS);
  }
}

// droppedAway handles a socket that ended while the server keeps the
// session: the page shows the conversation as it was, says it is
// reconnecting, and tries again with backoff.
function droppedAway(peer) {
  // The pairing holds on the server while the session is away.
  st.peer = peer;
  secure.offline();
  st.resuming = false;
  // Its window is counted from about now (retryLater), whoever said it
  // went away: this drop, or a restart's notice just before it.
  if (!st.resume.awaySince) st.resume.awaySince = Date.now();
  if (!st.awayNoted) {
    st.awayNoted = true;
    const kept = st.resume.windowS > 0 ? ' for up to ' + duration(st.resume.windowS) : '';
    notice('Lost the connection to the server; reconnecting. Your session is kept' + kept + '.', { kind: 'reconnecting' });
  }
  retryLater();
}

// resumed handles the answer to a resume: the session is back, with the
// pairing the server says, and the messages missed follow it.
function resumed(ev) {
  if (!st.resume) return;
  const before = st.peer;
  const restored = st.restored;
  st.resuming = false;
  st.restored = false;
  st.awayNoted = false;
  st.resume.awaySince = 0;
  st.loggedIn = true;
  st.attempt = 0;
  setState('online', 'Online');
  st.name = String(ev.name || st.name);
  st.token = String(ev.token || '');
  st.peer = String(ev.peer || '');
  // The same partner may be a new pairing: the one before ended while
  // the page was away (ended_away says how), and the partner connected
  // again. An id missing on either side (a node of an older version)
  // says nothing.
  const pairBefore = st.pairId;
  st.pairId = typeof ev.pair_id === 'string' ? ev.pair_id : '';
  const newPairing = pairBefore !== '' && st.pairId !== '' && pairBefore !== st.pairId;
  st.peerAway = false;
  if (typeof ev.resume_key === 'string' && ev.resume_key) st.resume.key = ev.resume_key;
  if (Number(ev.window_s) > 0) st.resume.windowS = Number(ev.window_s);
  // What the page sent into the connection that died, after the last
  // message the server had, never reached it: marked not sent, as a
  // refusal is, and kept so.
  const lost = lostAfter(ev.last_id);
  // The key used is retired: only the new one may be kept.
  saveNow();
  closeStale();

  let text;
  let kind = 'resumed';
  if (st.peer && st.peer === before && newPairing) {
    text = 'Reconnected. ' + st.peer + ' connected to you again while you were away: this is a new conversation.';
    kind = 'paired';
  } else if (st.peer && st.peer === before) {
    text = restored ? 'Back in your conversation with ' + st.peer + '.' : 'Reconnected; your conversation with ' + st.peer + ' goes on.';
  } else if (st.peer) {
    text = 'Reconnected. ' + st.peer + ' connected to you while you were away.';
    kind = 'paired';
  } else {
    // A pairing that ended while away is told by the peer_left that
    // follows the replay, with who went, why, and what of ours never
    // reached them: that notice says it, not this one.
    text = 'Reconnected.';
  }
  const missed = Number(ev.missed) || 0;
  if (missed > 0) {
    text += ' ' + missed + (missed === 1 ? ' message' : ' messages') + ' sent to you could not be kept, and are lost.';
  }
  if (lost > 0) {
    text += ' ' + (lost === 1 ? '1 message' : lost + ' messages') + ' you sent as the connection dropped did not reach the server: marked not sent.';
  }
  notice(text, { kind });
  clearEndedAway();
  if (!st.peer) endedAway(before);
  // A resume that gives no key (resume was turned off on the server
  // meanwhile) leaves nothing to resume after the next drop.
  if (typeof ev.resume_key !== 'string' || !ev.resume_key) forgetResume();
}

// endedAway notes that a resume found no pairing, where the page showed
// one with before ('' for none): the server tells how it ended right
// after the replay. Should no peer_left come (a pairing the server could
// not keep, say), the page still says it ended rather than drop it
// without a word.
function endedAway(before) {
  const e = { timer: 0 };
  if (before) {
    e.timer = setTimeout(() => {
      if (st.endedAway !== e) return;
      st.endedAway = null;
      notice('Your conversation with ' + before + ' ended while you were away.', { kind: 'peer_left' });
    }, 3000);
  }
  st.endedAway = e;
}

function clearEndedAway() {
  if (st.endedAway) clearTimeout(st.endedAway.timer);
  st.endedAway = null;
}

// resumeFailed handles a resume refused: the window ran out (or the key
// is no good), so the session and its pairing are gone. The page says so
// and logs in afresh under the same name, as it can.
function resumeFailed() {
  const peer = st.peer;
  const windowS = st.resume ? st.resume.windowS : 0;
  forgetResume();
  setState('online', 'Online');
  // The pairing ended with the session: its keys go too, in memory and
  // in sessionStorage, and #secure stops speaking of it.
  secure.unpaired();
  closeStale();
  st.restored = false;
  st.awayNoted = false;
  st.loggedIn = false;
  st.token = '';
  st.peer = '';
  st.peerAway = false;
  st.attempt = 0;
  let text = 'Your session ended while you were away';
  if (windowS > 0) text += ' (the server keeps one for ' + duration(windowS) + ')';
  text += '.';
  if (peer) text += ' Your conversation with ' + peer + ' is over.';
  if (st.name && st.auth !== 'accounts') {
    notice(text + ' Logging in again as ' + st.name + '…', { kind: 'expired' });
    st.autoLogin = true;
    st.relogins = 0;
    sendLogin();
    return;
  }
  // In accounts mode the person is asked, even with the password still
  // in memory: a tab that wakes long after may find its person logged
  // in elsewhere since, or logged out on purpose, and a login of its
  // own would replace that session (takeover) or undo the logout. After
  // a reload the password is not known anyway: it is never kept.
  askToLogIn(text + ' Log in again.');
}

// askToLogIn says text and gives the login form back, the name filled
// in: the session is gone, and the page does not log in by itself.
function askToLogIn(text) {
  notice(text, { kind: 'expired' });
  ui.name.value = st.name;
  st.name = '';
  st.password = '';
  st.attempt = 0;
  render();
  focusLogin();
}

// takeSeq reads a message's seq and reports whether the message is new:
// one at or below the last seq taken was shown already, or is being read
// (a sealed message, while it is decrypted: see shownLast).
function takeSeq(seq) {
  if (!st.resume || !Number.isSafeInteger(seq) || seq <= 0) return true;
  if (seq <= st.resume.last) return false;
  st.resume.last = seq;
  st.unacked++;
  return true;
}

// ackSoon acknowledges what was shown after ACK_EVERY messages or
// ACK_QUIET_MS without one, whichever comes first.
function ackSoon() {
  if (!st.resume || st.unacked === 0) return;
  clearTimeout(st.ackTimer);
  if (st.unacked >= ACK_EVERY) ackNow();
  else st.ackTimer = setTimeout(ackNow, ACK_QUIET_MS);
}

function ackNow() {
  clearTimeout(st.ackTimer);
  if (!st.resume || st.unacked === 0 || !st.loggedIn) return;
  // What the server is told it may forget must be in sessionStorage
  // first, or a reload would find it in neither.
  saveNow();
  if (sendQuiet({ type: 'ack', last: shownLast() })) st.unacked = st.resume.reading.length;
}

// shownLast is the seq of the last message shown, with every one before
// it: a sealed message being decrypted is not shown yet, and a reload
// must resume from before it, however many came after it.
function shownLast() {
  const r = st.resume;
  return r.reading.length > 0 ? Math.min(r.last, r.reading[0] - 1) : r.last;
}

// sendQuiet sends a frame the person did not ask for: it says nothing
// when offline, and is not the command that later errors belong to.
function sendQuiet(obj) {
  if (!st.ws || st.ws.readyState !== WebSocket.OPEN || !st.ready) return false;
  st.ws.send(JSON.stringify(obj));
  return true;
}

// keepMessage keeps a message shown, for a reload to show again: the
// newest KEEP_MESSAGES, within KEEP_CHARS of text, with the notices of
// KEPT_NOTICES among them (side "notice"). It returns the record kept,
// or null when nothing is kept (resume is off).
function keepMessage(side, from, text) {
  if (!st.resume) return null;
  const m = { side, from, text, at: Date.now() };
  st.kept.push(m);
  st.keptChars += text.length;
  trimKept();
  saveSoon();
  return m;
}

function trimKept() {
  while (st.kept.length > KEEP_MESSAGES || (st.kept.length > 1 && st.keptChars > KEEP_CHARS)) {
    st.keptChars -= st.kept.shift().text.length;
  }
}

function saveSoon() {
  if (!st.resume || st.saveTimer) return;
  st.saveTimer = setTimeout(saveNow, SAVE_DELAY_MS);
}

// saveNow writes the session to sessionStorage: the key, the last seq and
// the messages shown go together, so that a reload resumes after exactly
// the messages it shows again.
function saveNow() {
  clearTimeout(st.saveTimer);
  st.saveTimer = 0;
  if (!st.resume) return;
  const data = {
    key: st.resume.key,
    last: shownLast(),
    window_s: st.resume.windowS,
    name: st.name,
    peer: st.peer,
    pair_id: st.pairId,
    kept: st.kept,
  };
  try {
    sessionStorage.setItem(STORE_KEY, JSON.stringify(data));
  } catch {
    // Storage full or refused: keep at least the key, so that a reload
    // still resumes; the messages it shows again start from there.
    try {
      sessionStorage.setItem(STORE_KEY, JSON.stringify({ ...data, kept: [] }));
    } catch {
      // Nothing can be kept: a reload logs in afresh.
    }
  }
}

// restoreSession runs as the page loads: a session kept by this tab
// before a reload is shown as it was, messages and pairing, and resumed
// once the server says hello.
function restoreSession() {
  let data = null;
  try {
    data = JSON.parse(sessionStorage.getItem(STORE_KEY) || 'null');
  } catch {
    data = null;
  }
  if (!data || typeof data.key !== 'string' || data.key === '') return;
  st.resume = {
    key: data.key,
    last: Number.isSafeInteger(data.last) && data.last > 0 ? data.last : 0,
    windowS: Number(data.window_s) || 0,
    reading: [],
  };
  st.name = typeof data.name === 'string' && NAME_RE.test(data.name) ? data.name : '';
  st.peer = typeof data.peer === 'string' ? data.peer : '';
  st.pairId = typeof data.pair_id === 'string' ? data.pair_id : '';
  st.restored = true;
  for (const m of Array.isArray(data.kept) ? data.kept : []) {
    if (!m || typeof m.text !== 'string') continue;
    const at = Number(m.at);
    const when = Number.isFinite(at) ? new Date(at) : undefined;
    if (m.side === 'notice') {
      if (!KEPT_NOTICES.has(m.kind)) continue;
      const opts = { kind: m.kind, reason: typeof m.reason === 'string' ? m.reason : '' };
      showNotice(m.text, opts, when);
      st.kept.push({ side: 'notice', from: '', text: m.text, at, ...opts });
      st.keptChars += m.text.length;
      continue;
    }
    if (m.side !== 'mine' && m.side !== 'theirs') continue;
    const from = String(m.from || '');
    const li = addMessage(m.side, from, m.text, when);
    const kept = { side: m.side, from, text: m.text, at };
    st.kept.push(kept);
    st.keptChars += m.text.length;
    // A message the server refused is shown refused again, or the person
    // would take it for sent. A copy kept before refusals were recorded
    // has no failed field: its messages show as they did then.
    if (m.failed === true && m.side === 'mine') markFailed(li, kept);
    if (m.unencrypted === true && m.side === 'theirs') markUnencrypted(li, kept);
    if (m.sealed === true) markSealed(li, kept);
    // One shown as sent keeps its id, so that the resume can still mark
    // it lost if the server never had it, and the page numbers on after
    // it. A copy kept without ids has nothing to go by.
    if (m.side === 'mine' && Number.isSafeInteger(m.id) && m.id > 0) {
      kept.id = m.id;
      st.nextId = Math.max(st.nextId, m.id + 1);
      if (m.failed !== true) st.mine.set(m.id, { li, kept });
    }
  }
  trimKept();
}

// woke runs when the device is back online or wakes from sleep: a socket
// that is down is tried again at once, and one that looks open is asked
// whether it still works.
function woke() {
  if (!st.ws) {
    // A socket closed by the login deadline is reopened once someone
    // looks at the page, not by a background tab's slowed timers.
    if (st.quitting || (st.renewing && document.hidden)) return;
    st.attempt = 0;
    connect();
    return;
  }
  if (!st.ready || !st.loggedIn) return;
  probe(PROBE_TIMEOUT_MS);
}

// wentOffline runs when the browser says the device lost its network. A
// socket may look open long after (Chromium keeps it, carrying nothing),
// and the page would say Online meanwhile: it is asked at once whether
// it still works, and given up if it does not answer (probe), so that
// the page says it is reconnecting, and tries as its backoff says.
function wentOffline() {
  if (st.ws && st.ready && st.loggedIn) probe(PROBE_TIMEOUT_MS);
}

// probe asks the server "who" on the socket, quietly: one that sends
// nothing back within timeout is given up.
function probe(timeout) {
  const ws = st.ws;
  if (sendQuiet({ type: 'who' })) expectAnswer(ws, timeout);
}

// expectAnswer gives up socket ws for another if no frame at all comes
// through it within timeout (receive clears the timer).
function expectAnswer(ws, timeout) {
  clearTimeout(st.probeTimer);
  st.probeTimer = setTimeout(() => {
    st.probeTimer = 0;
    if (st.ws === ws) replaceSocket(ws);
  }, timeout);
}

// replaceSocket gives up a socket that stopped answering, though the
// browser has not seen it close, and opens another at once.
function replaceSocket(ws) {
  st.ws = null;
  if (st.resume) {
    // The new socket resumes, and the server hands the session over and
    // closes the old connection. The page cannot close it itself without
    // ending the session (1000) or sending it away, its partner told
    // (CLOSE_PAGE_AWAY); it closes it once the session has moved.
    st.stale = ws;
  } else {
    ws.close(1000, 'not answering');
  }
  dropped(null);
  connect();
}

// quitAway ends a session that is away on the server, for a person who
// logged out while the page was offline: it is resumed and at once quit,
// on this socket if it is up, or on the next.
function quitAway(key, resuming) {
  st.leaveKey = '';
  const ws = st.ws;
  if (!ws || !st.ready) {
    st.leaveKey = key;
    return;
  }
  // A resume still unanswered on this socket is answered before the
  // quit; another would be refused.
  if (!resuming) sendQuiet({ type: 'resume', key });
  sendQuiet({ type: 'quit' });
  st.quitting = true;
  st.quietQuit = true;
  setTimeout(() => {
    if (st.ws === ws) ws.close(1000, 'logged out');
  }, 3000);
}

// closeStale closes the socket given up after a wake, once the session
// has moved off it or is gone: a close of it can no longer end the
// session.
function closeStale() {
  if (!st.stale) return;
  const old = st.stale;
  st.stale = null;
  old.close(1000, 'replaced');
}

// pageHidden runs as the page is hidden for another, or unloaded. A page
// left for another in the same tab may be kept, frozen, to be shown
// again on Back (the back-forward cache), and its socket with it: open,
// the server's pings answered, the partner told nothing until the
// browser drops the page minutes later. So the page closes its socket
// itself, as the browser does for a reload or a closed tab: the session
// goes away on the server, and the partner is told at once. Shown again
// from the cache, the page reconnects and resumes (pageshow, woke).
// What is waiting to be written to sessionStorage is written first.
function pageHidden() {
  saveNow();
  const ws = st.ws;
  // A logout under way ends the session with its quit.
  if (!ws || st.quitting) return;
  ws.close(CLOSE_PAGE_AWAY, 'page hidden');
  // Closed on purpose, with nothing lost: a page shown again says it
  // reconnected, not that it lost the connection.
  st.awayNoted = true;
  dropped(null);
}

// watchForWake notices a machine that slept: timers stop meanwhile, so
// the clock jumps between two ticks. A tab in the background has its
// timers slowed down and may be taken for one that woke; that costs a
// "who".
function watchForWake() {
  let last = Date.now();
  setInterval(() => {
    const now = Date.now();
    if (now - last > WAKE_GAP_MS) {
      woke();
    } else if (st.ready && st.loggedIn && !st.probeTimer && now - st.lastHeard > QUIET_PROBE_MS) {
      probe(ANSWER_TIMEOUT_MS);
    }
    last = now;
  }, WAKE_TICK_MS);
}

// duration says a number of seconds as the server's texts do
// (proto.AppendWindow): 2m, 1m53s, 1h30m.
function duration(s) {
  const secs = Math.ceil(s);
  if (!(secs > 0)) return '0s';
  const h = Math.floor(secs / 3600);
  const m = Math.floor(secs / 60) % 60;
  const r = secs % 60;
  return (h > 0 ? h + 'h' : '') + (m > 0 ? m + 'm' : '') + (r > 0 ? r + 's' : '');
}

// ---- Server events ------------------------------------------------------

function receive(data) {
  // Any frame says the socket works: a probe is answered.
  st.lastHeard = Date.now();
  clearTimeout(st.probeTimer);
  st.probeTimer = 0;
  let ev;
  try {
    ev = JSON.parse(data);
  } catch {
    console.warn('duet: ignoring a frame that is not JSON');
    return;
  }
  if (!ev || typeof ev !== 'object' || typeof ev.type !== 'string') return;
  // A session taken back only to be ended says nothing to a person who
  // has logged out already.
  if (st.quietQuit && ev.type !== 'bye') return;
  const handler = handlers[ev.type];
  // Types this page does not know are ignored, so the server can add some.
  if (handler) handler(ev);
  render();
}

const handlers = {
  hello(ev) {
    clearTimeout(st.helloTimer);
    st.ready = true;
    st.refused = '';
    st.auth = ev.auth === 'accounts' ? 'accounts' : 'open';
    if (Number.isInteger(ev.max_text) && ev.max_text > 0) st.maxText = ev.max_text;
    // A session to take back is online once the server has said so.
    if (st.resume) setState('connecting', 'Reconnecting…');
    else setState('online', 'Online');
    if (st.leaveKey) {
      quitAway(st.leaveKey, false);
      return;
    }
    if (st.resume) {
      // The session is away on the server: take it back. What the page
      // says about it waits for the answer. The resume waits, too, until
      // the page knows whether the encryption's keys kept in this tab
      // are its own to go on with (secure.js, claim): at once but after
      // a reload, where the page before this one must be gone first.
      st.failNoted = false;
      st.renewing = false;
      const ws = st.ws;
      secure.claimed.then(() => {
        if (st.ws === ws && st.resume) sendResume();
      });
      return;
    }
    if (st.failNoted) notice('Connected to the server again.', { kind: 'connection' });
    st.failNoted = false;
    const renewed = st.renewing;
    st.renewing = false;
    if (st.name && st.auth === 'accounts' && !st.loginResend) {
      // The connection dropped while logged in, and the server keeps no
      // session to resume: in accounts mode the person is asked, as
      // after a session that ran out while away (resumeFailed), rather
      // than logged in with the password the page holds, which would
      // replace a session opened elsewhere since, or undo a logout.
      askToLogIn('Log in again to go on.');
    } else if (st.name) {
      // The connection dropped while logged in: take the same name again.
      // Or a login the person sent was cut off by the login deadline:
      // send it again as theirs.
      st.autoLogin = !st.loginResend;
      st.loginResend = false;
      st.relogins = 0;
      sendLogin();
    } else {
      st.attempt = 0;
      render();
      if (!renewed && !ui.loginView.contains(document.activeElement)) focusLogin();
    }
  },

  welcome(ev) {
    // A login answered after the person logged out is about to be undone
    // by the quit that followed it.
    if (st.quitting) return;
    const again = st.loggedIn; // newtoken answers with a second welcome
    const auto = st.autoLogin;
    if (auto) {
      // Logging in again by itself, the page offers no link it was
      // holding: the person may have left it long ago, and should not
      // come back to a question they did not ask.
      st.invite = '';
    }
    st.loggedIn = true;
    st.loggingIn = false;
    st.autoLogin = false;
    st.nameBusy = false;
    st.attempt = 0;
    clearTimeout(st.reloginTimer);
    st.name = String(ev.name || st.name);
    st.token = String(ev.token || '');
    // A login gives a resume key when the server keeps sessions whose
    // connection drops; a new token's welcome gives none and changes
    // nothing of the session.
    if (!again) startResume(ev);
    saveSoon();
    if (again) {
      notice('You have a new token. The old one no longer works: give this one out instead.');
    } else if (auto) {
      notice('Logged in again as ' + st.name + '. Your token has changed: give the new one to whoever you want to talk to.');
    } else {
      notice('Logged in as ' + st.name + '. Give your token to the person you want to talk to.');
    }
    render();
    if (again || auto) {
      // Not after logging in again by itself: the person may be busy
      // elsewhere on the page, and on a phone focus opens the keyboard.
      return;
    }
    if (st.invite) {
      ui.inviteAccept.focus();
    } else {
      ui.connectToken.focus();
    }
  },

  paired(ev) {
    st.peer = String(ev.peer || '');
    st.pairId = typeof ev.pair_id === 'string' ? ev.pair_id : '';
    clearEndedAway();
    st.peerAway = false;
    saveSoon();
    st.invite = '';
    ui.connectToken.value = '';
    ui.connectToken.removeAttribute('aria-invalid');
    if (ev.initiator) {
      notice('You are now talking with ' + st.peer + '.', { kind: 'paired' });
    } else {
      notice(st.peer + ' connected to you. Say hello!', { kind: 'paired' });
    }
    render();
    ui.message.focus();
  },

  peer_left(ev) {
    const peer = String(ev.peer || st.peer || 'Your peer');
    let text = leftReason(peer, String(ev.reason || ''), st.peerAway);
    if (st.endedAway) {
      // Told after a resume: it happened while the page was away.
      text = whileAway(peer, joinedAway(ev, peer, text));
      clearEndedAway();
    }
    notice(text + undelivered(ev), { kind: 'peer_left', reason: ev.reason });
    unpair();
  },

  // A pairing that ended while the page was away, and another came
  // after it: told after a resume, before the peer_left of the later
  // one if that ended too. It ends nothing now. A partner of then who
  // timed out had gone away: with resume on, a session waits only so.
  ended_away(ev) {
    const peer = String(ev.peer || 'Your peer');
    const text = whileAway(peer, joinedAway(ev, peer, leftReason(peer, String(ev.reason || ''), true)));
    notice(text + undelivered(ev), { kind: 'peer_left', reason: ev.reason });
  },

  peer_away(ev) {
    const peer = String(ev.name || st.peer || 'Your peer');
    st.peerAway = true;
    const wait = Number(ev.window_s) > 0 ? ' up to ' + duration(Number(ev.window_s)) : '';
    const why = ev.reason === 'shutdown' ? '’s server is restarting' : ' lost the connection';
    notice(peer + why + '; waiting' + wait + ' for them to come back.' + undelivered(ev), { kind: 'peer_away' });
  },

  peer_back(ev) {
    st.peerAway = false;
    notice(String(ev.name || st.peer || 'Your peer') + ' is back.', { kind: 'peer_back' });
  },

  resumed(ev) {
    const restored = st.restored;
    resumed(ev);
    if (restored && (!document.activeElement || document.activeElement === document.body)) {
      // A reload leaves the focus nowhere: it goes where the person
      // goes on, as after a login or a pairing.
      render();
      (st.peer ? ui.message : ui.connectToken).focus();
    }
  },

  left(ev) {
    notice('You left the conversation with ' + String(ev.peer || st.peer) + '.', { kind: 'left' });
    unpair();
  },

  status(ev) {
    // The answer to "who": bring the page in line with the server.
    if (ev.name) st.name = String(ev.name);
    if (ev.token) st.token = String(ev.token);
    st.peer = String(ev.peer || '');
    saveSoon();
  },

  error(ev) {
    serverError(String(ev.code || 'error'), String(ev.text || 'Something went wrong.'), ev.id);
  },

  shutdown(ev) {
    st.shutdown = true;
    // The server's text already says it is going down; show it as a sentence.
    const text = String(ev.text || '') || 'the server is shutting down.';
    notice(text.charAt(0).toUpperCase() + text.slice(1), { kind: 'shutdown' });
  },

  notice(ev) {
    if (ev.code) {
      // A count of messages the server refused, and which, from the
      // first to the last.
      notice(String(ev.text || ''), { kind: 'not_sent' }).dataset.code = String(ev.code);
      refused(ev.first_id, ev.last_id);
      return;
    }
    const text = String(ev.text || '');
    if (st.resume && text.startsWith(DRAIN_NOTICE)) {
      // The close that follows is a drop like any other, whose notice
      // this one stands for (droppedAway).
      st.awayNoted = true;
      const kept = st.resume.windowS > 0 ? ' for up to ' + duration(st.resume.windowS) : '';
      notice('The server is restarting; reconnecting. Your session is kept' + kept + '.' + undelivered(ev), { kind: 'reconnecting' });
      return;
    }
    notice(text);
  },

  help(ev) {
    if (ev.text) notice(String(ev.text));
  },

  bye() {
    clearEndedAway();
    // The server ended the session on purpose (we quit, or our account was
    // taken over elsewhere, or another tab resumed it): do not log back
    // in or resume by ourselves.
    forgetResume();
    st.name = '';
    st.password = '';
    st.invite = '';
    st.loggedIn = false;
    st.autoLogin = false;
    st.nameBusy = false;
    st.peer = '';
    // The close that follows is part of the goodbye, not a lost
    // connection: open a fresh one at once, without a warning.
    st.quitting = true;
    // A session ended after logging out while offline was told so then.
    if (!st.quietQuit) notice('Logged out.');
    st.quietQuit = false;
  },
};

// noteUnread counts a message from the partner that arrived while the
// tab is hidden, in the title, where a tab in the background shows it.
function noteUnread() {
  if (!document.hidden) return;
  st.unread++;
  document.title = '(' + st.unread + ') duet';
}

// undelivered says how many of the user's messages will never reach the
// partner (peer_left's and peer_away's "undelivered"), or nothing.
function undelivered(ev) {
  const n = Number(ev.undelivered) || 0;
  return n > 0 ? ' ' + n + (n === 1 ? ' message' : ' messages') + ' you sent did not reach them.' : '';
}

// joinedAway puts before text, the end of a pairing with peer told on a
// resume, that the pairing began while the page was away too, when the
// server says so: the person never heard of it.
function joinedAway(ev, peer, text) {
  if (ev.joined_away !== true) return text;
  return peer + ' connected to you, then ' + continued(peer, text);
}

// whileAway words text, the end of a pairing, as one that came while
// the page was away.
function whileAway(peer, text) {
  return 'While you were away, ' + continued(peer, text);
}

// continued is text, a sentence about peer, as it reads after words
// put before it: lowercase first, but for a sentence that begins with
// peer's name.
function continued(peer, text) {
  return text.startsWith(peer) ? text : text.charAt(0).toLowerCase() + text.slice(1);
}

// leftReason puts a peer_left reason into words; peerAway says the peer
// was last known to be away.
function leftReason(peer, reason, peerAway) {
  switch (reason) {
    case 'left':
      return peer + ' left the conversation.';
    case 'disconnected':
      return peer + ' disconnected.';
    case 'shutdown':
      return peer + '’s server is shutting down, so the conversation ended.';
    case 'slow':
      return peer + ' was cut off: their connection could not keep up.';
    case 'timeout':
      // With resume on, a partner who went away and did not come back
      // within the server's window; else a connection gone silent.
      return peerAway
        ? peer + ' did not come back in time, so the conversation ended.'
        : peer + '’s connection went silent and timed out, so the conversation ended.';
    case 'replaced':
      return peer + ' logged in somewhere else, so this conversation ended.';
    case 'link_lost':
      return 'The link to ' + peer + '’s server was lost, so the conversation ended.';
    default:
      return peer + ' left' + (reason ? ' (' + reason + ').' : '.');
  }
}

function unpair() {
  secure.unpaired();
  const hadFocus = ui.compose.contains(document.activeElement) || document.activeElement === ui.leave;
  st.peer = '';
  st.peerAway = false;
  saveSoon();
  st.lastMine = null;
  render();
  // The message box is about to be disabled; move a keyboard user's focus
  // somewhere useful rather than letting it fall to the page.
  if (hadFocus) ui.connectToken.focus();
}

// Some server texts name the netcat commands (/leave, /connect); a browser
// user has buttons instead. The code is the API, so the page may say it its
// own way.
const FRIENDLY = {
  not_logged_in: 'Log in first.',
  already_paired: 'You are already in a conversation; leave it first.',
  not_paired: 'You are not connected to anyone; connect with their token first.',
};

// Errors that follow a message we sent mean that message went nowhere,
// when they name none (a frame the server could not read). rate_limited
// is not one: the server names every message it drops (by id, in the
// error or a count's first_id and last_id), so one that names none
// dropped a command, and the message sent last may well have gone.
const SAY_ERRORS = new Set([
  'too_long',
  'invalid_utf8',
  'empty_message',
  'not_paired',
  'peer_cannot_decrypt',
  'peer_away_full',
]);

// Answers to a resume that do not say the session is gone: it is tried
// again later.
const RESUME_AGAIN = new Set(['unavailable', 'rate_limited']);

// Errors about a token we tried to connect to.
const TOKEN_ERRORS = new Set(['bad_token', 'unknown_token', 'self_connect']);

// Errors that mean a login under this name may work if tried again shortly:
// the server still holds it for a connection it has not seen die.
const NAME_BUSY = new Set(['name_taken', 'already_online']);

// serverError shows an error of the server's; id is that of the message
// of ours it refuses, if it names one.
function serverError(code, text, id) {
  const shown = FRIENDLY[code] || text;

  if (!st.ready) {
    // Before its hello the server speaks only to refuse the connection
    // (too many from this address, the server full or shutting down),
    // and then closes it: the page tries again with back-off, as when it
    // cannot reach the server, and says why once, not at every try. A
    // server restarting refuses the page it told to reconnect until the
    // next process listens: the page said it is reconnecting, which is
    // what it goes on doing, and the refusal's "connect again" would ask
    // the person to act.
    const restarting = code === 'shutting_down' && text.startsWith('the server is restarting') && st.resume && st.awayNoted;
    if (st.refused !== code && !restarting) error(code, shown);
    st.refused = code;
    st.failNoted = true;
    return;
  }

  if (st.resuming) {
    // The server answers in order, and nothing else was sent while the
    // resume was pending: this error is the resume's.
    if (RESUME_AGAIN.has(code)) {
      // The session may well be there still (a cluster node could not
      // reach it just now): the page tries again later, as after a
      // drop, and keeps its key.
      st.resuming = false;
      if (st.ws) st.ws.close(1000, 'resume again later');
      return;
    }
    resumeFailed();
    return;
  }

  if (code === 'login_timeout' && !st.loggedIn) {
    // The close that follows is handled by dropped(): a new socket, with
    // nothing to tell the person.
    st.loginExpired = true;
    return;
  }

  if (st.loggingIn) {
    // The server answers in order, and nothing else was sent while the
    // login was pending: this error is the login's.
    st.loggingIn = false;
    if (st.autoLogin && NAME_BUSY.has(code) && st.relogins < RELOGIN_TRIES) {
      st.relogins++;
      if (!st.nameBusy) {
        st.nameBusy = true;
        error(code, shown + ' (The server may not have noticed that the old connection is gone; trying again every few seconds. Or log in under another name.)');
        ui.name.value = st.name;
        render();
      }
      st.reloginTimer = setTimeout(() => {
        if (st.autoLogin && st.ready && !st.loggedIn) sendLogin();
      }, RELOGIN_EVERY_MS);
      return;
    }
    error(code, shown);
    // Give the form back to the person.
    ui.name.value = ui.name.value || st.name;
    st.autoLogin = false;
    st.nameBusy = false;
    st.attempt = 0;
    st.name = '';
    st.password = '';
    render();
    if (code === 'auth_failed' && st.auth === 'accounts') {
      ui.password.focus();
      ui.password.select();
    } else {
      ui.name.setAttribute('aria-invalid', 'true');
      focusLogin();
    }
    return;
  }

  error(code, shown);
  if (Number.isSafeInteger(id) && id > 0) {
    refused(id, id);
  } else if (SAY_ERRORS.has(code) && st.lastMine) {
    // An error that names no message (a server that does not read ids,
    // or a frame it could not read) is taken for the last one sent, if
    // a message of ours was the last command sent.
    markFailed(st.lastMine.li, st.lastMine.kept);
    st.lastMine = null;
    saveSoon();
  }
  if (st.lastOp === 'connect' && TOKEN_ERRORS.has(code)) {
    ui.connectToken.setAttribute('aria-invalid', 'true');
    ui.connectToken.focus();
  }
}

// ---- Commands -----------------------------------------------------------

function sendLogin() {
  const msg = { type: 'login', name: st.name };
  if (st.auth === 'accounts') msg.password = st.password;
  if (send(msg)) {
    st.loggingIn = true;
    render();
  }
}

function onLogin(e) {
  e.preventDefault();
  if (st.loggedIn || st.loggingIn) return;
  const name = ui.name.value.trim();
  if (!NAME_RE.test(name)) {
    ui.name.setAttribute('aria-invalid', 'true');
    error('bad_name', 'A name is 1 to 32 letters a–z or A–Z, digits, “_”, “-” or “.”.');
    ui.name.focus();
    return;
  }
  ui.name.removeAttribute('aria-invalid');
  if (st.auth === 'accounts' && ui.password.value === '') {
    error('password_required', 'Enter your password.');
    ui.password.focus();
    return;
  }
  clearTimeout(st.reloginTimer);
  st.autoLogin = false;
  st.nameBusy = false;
  st.name = name;
  st.password = st.auth === 'accounts' ? ui.password.value : '';
  ui.password.value = '';
  sendLogin();
}

// tokenFrom accepts a bare token or anything ending in #TOKEN or
// #TOKEN.SECRET (a share link), with stray spaces, and returns the token
// or ''. A link's secret stays with the encryption (secure.js), for a
// pairing with that token.
function tokenFrom(raw) {
  return secure.takeLink(raw);
}

function onConnect(e) {
  e.preventDefault();
  const token = tokenFrom(ui.connectToken.value);
  if (!token) {
    ui.connectToken.setAttribute('aria-invalid', 'true');
    error('bad_token', 'A token is 32 hexadecimal characters (0–9, a–f).');
    ui.connectToken.focus();
    return;
  }
  connectTo(token);
}

function connectTo(token) {
  // Whatever the person connects to, a link's offer is answered.
  st.invite = '';
  ui.connectToken.value = token;
  ui.connectToken.removeAttribute('aria-invalid');
  secure.noteConnect(token);
  if (send({ type: 'connect', token })) notice('Connecting to ' + shortToken(token));
}

function onSend(e) {
  e.preventDefault();
  const text = ui.message.value;
  if (text.trim() === '' || !st.peer) return;
  if (!st.loggedIn) {
    // Reconnecting: the pairing holds, but the session is not back
    // yet. The text stays in the box to be sent once it is. Sealing it
    // would lose it (the box is emptied before the seal is sent), and a
    // say sent behind a resume the server then refuses would be
    // answered not_logged_in, which the page would take for its new
    // login's answer.
    tellOffline();
    return;
  }
  if (typeof text.isWellFormed === 'function' && !text.isWellFormed()) {
    // Half of a surrogate pair (a pasted emoji cut in two) has no UTF-8
    // form: the server would refuse the say (invalid_utf8), and sealing
    // refuses it after the box is emptied. Say so now, and keep the text
    // to be mended.
    error('invalid_utf8', 'The message holds a broken character (half of an emoji, say), so it was not sent.');
    return;
  }
  const size = new TextEncoder().encode(text).length;
  if (size > st.maxText) {
    error('too_long', 'Message too long: ' + size + ' bytes, the limit is ' + st.maxText + '. It was not sent.');
    return;
  }
  const how = secure.sendText(text);
  if (how === 'kept') {
    // Refused with a word to the person, until they agree to send
    // without encryption: the text stays, to go then.
    ui.message.focus();
    return;
  }
  if (how === 'taken') {
    // Sealed (shown once sent) or waiting for the keys: secure.js has it.
    ui.message.value = '';
    ui.message.focus();
    return;
  }
  if (!sendMine({ type: 'say', text }, text)) return;
  ui.message.value = '';
  ui.message.focus();
}

function onMessageKey(e) {
  // Enter sends; Shift+Enter is a newline. While an input method is
  // composing (Japanese, Chinese, ...), Enter confirms the composition.
  if (e.key !== 'Enter' || e.shiftKey || e.isComposing || e.keyCode === 229) return;
  e.preventDefault();
  ui.compose.requestSubmit();
}

// A browser never sends keypress for a key whose keydown was cancelled, but
// synthetic input (automation, some on-screen keyboards) may send the
// character on its own; without this the Enter that sent a message would
// also leave a newline behind in the emptied box.
function onMessageKeypress(e) {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) e.preventDefault();
}

function onLeave() {
  if (!st.peer) return;
  if (!st.loggedIn) {
    // Reconnecting: a leave sent behind a resume the server refuses
    // would be answered not_logged_in, which the page would take for its
    // new login's answer.
    tellOffline();
    return;
  }
  // What was sent before the click goes first: a text being sealed
  // would otherwise reach the server after the leave, and be refused.
  secure.afterSent(() => {
    if (!st.peer) return;
    if (!st.loggedIn) {
      tellOffline();
      return;
    }
    send({ type: 'leave' });
  });
}

function onNewToken() {
  if (st.loggedIn) send({ type: 'newtoken' });
}

function onLogout() {
  const ws = st.ws;
  // The conversation goes from the screen too, before the next person
  // uses this tab; so does what waits to be sealed, which would come
  // back as not sent once the pairing ends.
  secure.loggedOut();
  ui.log.replaceChildren();
  // Logging out is not a drop: the session is not to be resumed, by this
  // page or by a reload of it.
  const away = st.resume && !st.loggedIn ? st.resume.key : '';
  const resuming = st.resuming;
  forgetResume();
  st.name = '';
  st.password = '';
  st.invite = '';
  st.autoLogin = false;
  st.nameBusy = false;
  clearTimeout(st.reloginTimer);
  if (!ws || !st.ready || !(st.loggedIn || st.loggingIn)) {
    // No session on the server and none on its way (the connection is
    // down, or a busy name is waiting to be retried): forgetting the name
    // is all there is to do.
    st.loggedIn = false;
    st.loggingIn = false;
    st.peer = '';
    // The pairing's keys go now, as they do on bye: the server may not
    // be reached again before the next person uses this tab.
    secure.unpaired();
    notice('Logged out.');
    // A session away on the server is ended there too, or its peer would
    // wait out the window for someone who has left.
    if (away) quitAway(away, resuming);
    render();
    focusLogin();
    return;
  }
  st.quitting = true;
  send({ type: 'quit' });
  // The server closes after bye; should it not, close from this side,
  // with 1000: the page closes on purpose, which ends the session.
  setTimeout(() => {
    if (st.ws === ws) ws.close(1000, 'logged out');
  }, 3000);
}

// ---- Copying ------------------------------------------------------------

// shareURL is the link to give out: the token and, when this page can
// encrypt, the link secret (secure.js), which only the fragment carries.
function shareURL() {
  return location.protocol + '//' + location.host + '/#' + secure.fragment(st.token);
}

async function copy(text, source, button, what) {
  let ok = false;
  try {
    // Needs a secure context (https or localhost).
    await navigator.clipboard.writeText(text);
    ok = true;
  } catch {
    // Fall back to selecting the element and the legacy copy command,
    // which works over plain http too.
    const range = document.createRange();
    range.selectNodeContents(source);
    const sel = getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    try {
      ok = document.execCommand('copy');
    } catch {
      ok = false;
    }
    if (ok) sel.removeAllRanges();
  }
  const label = button.textContent;
  if (ok) {
    button.textContent = 'Copied';
    announce(what + ' copied.');
  } else {
    button.textContent = 'Select and copy';
    announce('Could not copy; the ' + what.toLowerCase() + ' is selected, copy it by hand.');
  }
  setTimeout(() => {
    button.textContent = label;
  }, 1500);
}

function announce(text) {
  // Clearing first makes a repeat of the same words announced again.
  ui.announce.textContent = '';
  setTimeout(() => {
    ui.announce.textContent = text;
  }, 50);
}

// ---- Share links --------------------------------------------------------

// takeLinkToken reads a token from the page's address (https://host/#TOKEN)
// when the page loads, and offers to connect to it once logged in. The
// token leaves the address bar at once, so a reload or a bookmark does not
// offer it again. It runs at load only: a fragment that changes later is
// not a link anyone opened.
function takeLinkToken() {
  const token = tokenFrom(location.hash);
  clearHash();
  if (!token) return;
  st.invite = token;
  notice('You opened a link to talk with someone (' + shortToken(token) + '). Log in, and you will be asked whether to connect.');
}

function onInviteAccept() {
  const token = st.invite;
  if (!token || !st.loggedIn || st.peer) return;
  connectTo(token);
  render();
  // The offer, and the button that had the focus, are hidden now: the
  // focus goes to the token box, which holds the token, so that a
  // keyboard user refused (room_full, say) is where to try again. Paired,
  // it moves on to the message box.
  ui.connectToken.focus();
}

function onInviteDismiss() {
  st.invite = '';
  render();
  ui.connectToken.focus();
}

// shortToken is how the page names a token in a sentence: enough of it to
// check against what the other person sent, too little to be used.
function shortToken(token) {
  return token.slice(0, 6) + '…';
}

function clearHash() {
  if (location.hash) history.replaceState(null, '', location.pathname + location.search);
}

// ---- The log ------------------------------------------------------------

// An entry's time, short on the line and in full in its title. The
// formats are made once: toLocaleTimeString and toLocaleString make
// theirs anew at each call, which made an entry's stamp five times as
// slow, a fifth of what a flood of messages cost the page.
const SHORT_TIME = new Intl.DateTimeFormat([], { hour: '2-digit', minute: '2-digit' });
const FULL_TIME = new Intl.DateTimeFormat([], {
  year: 'numeric',
  month: 'numeric',
  day: 'numeric',
  hour: 'numeric',
  minute: 'numeric',
  second: 'numeric',
});

function stamp(when) {
  const now = when || new Date();
  const t = document.createElement('time');
  t.dateTime = now.toISOString();
  t.title = FULL_TIME.format(now);
  t.textContent = SHORT_TIME.format(now);
  return t;
}

// The log follows new entries only if the reader is at the bottom, so
// scrolling back to read is not interrupted, and always follows the
// person's own. Only the log scrolls: moving the whole page would yank
// a phone's view away from what it shows.
//
// Where the reader is takes a layout of the whole log to know (4 ms for
// a full one), so it is judged once a frame, as the frame lays the log
// out anyway: was the newest entry before this frame's in view? Judged
// before and after each entry, 5000 lines pasted through netcat kept
// the page from answering for 50 s.
const follow = { pending: false, last: null, mine: false };

function append(li) {
  const log = ui.log;
  if (!follow.pending) {
    follow.pending = true;
    follow.last = log.lastElementChild;
    requestAnimationFrame(scrollLog);
  }
  if (li.classList.contains('mine')) follow.mine = true;
  log.append(li);
  while (log.childElementCount > LOG_LIMIT) log.firstElementChild.remove();
  return li;
}

function scrollLog() {
  const log = ui.log;
  const last = follow.last;
  // An entry dropped since (past LOG_LIMIT, or by a logout) was not
  // being read.
  const atBottom = !last || !last.isConnected || last.getBoundingClientRect().bottom - log.getBoundingClientRect().bottom < 48;
  if (atBottom || follow.mine) log.scrollTop = log.scrollHeight;
  follow.pending = false;
  follow.last = null;
  follow.mine = false;
}

function addMessage(side, from, text, when) {
  const li = document.createElement('li');
  li.className = 'msg ' + side;
  const meta = document.createElement('div');
  meta.className = 'meta';
  const who = document.createElement('span');
  who.className = 'from';
  who.textContent = side === 'mine' ? 'You' : from;
  meta.append(who, stamp(when));
  const p = document.createElement('p');
  p.className = 'text';
  p.textContent = text;
  li.append(meta, p);
  return append(li);
}

// showMessage shows a plaintext message of the partner's, marked
// unencrypted when it came in a pairing whose encryption failed, in the
// log and in its kept record.
function showMessage(ev, unencrypted) {
  const from = String(ev.from || st.peer);
  const text = String(ev.text ?? '');
  const li = addMessage('theirs', from, text);
  const kept = keepMessage('theirs', from, text);
  if (unencrypted) markUnencrypted(li, kept);
  noteUnread();
}

// markUnencrypted marks a partner's message that came in the clear in a
// pairing that was to be encrypted, so that a reload shows it so too.
function markUnencrypted(li, kept) {
  li.classList.add('unencrypted');
  li.dataset.e2e = 'plain';
  if (kept) kept.unencrypted = true;
}

// markSealed marks a message that went or came sealed, in the log and in
// its kept record, so that a reload shows it so too.
function markSealed(li, kept) {
  li.dataset.e2e = 'sealed';
  if (kept) kept.sealed = true;
}

// markFailed marks a message of ours the server refused ("not sent", by
// the style), in the log and in its kept record, if any, so that a
// reload shows it refused too rather than sent.
function markFailed(li, kept) {
  li.classList.add('failed');
  if (kept) kept.failed = true;
}

// The notices that say where a conversation began or ended: kept with
// the messages, so that a reload does not run one conversation into the
// next.
const KEPT_NOTICES = new Set(['paired', 'left', 'peer_left']);

// notice logs a system line. opts.kind and opts.reason become data
// attributes so that tests and styles can pick them out.
function notice(text, opts = {}) {
  const li = showNotice(text, opts);
  if (KEPT_NOTICES.has(opts.kind)) {
    const kept = keepMessage('notice', '', text);
    if (kept) {
      kept.kind = opts.kind;
      kept.reason = opts.reason ? String(opts.reason) : '';
    }
  }
  return li;
}

// showNotice draws a notice, stamped when (now if not given).
function showNotice(text, opts, when) {
  const li = document.createElement('li');
  li.className = 'notice';
  if (opts.kind) li.dataset.kind = opts.kind;
  if (opts.reason) li.dataset.reason = String(opts.reason);
  const span = document.createElement('span');
  span.className = 'text';
  span.textContent = text;
  li.append(stamp(when), span);
  return append(li);
}

// error logs an error: the server's, or one the page caught before
// sending, under the code the server would have used.
function error(code, text) {
  const li = notice(text);
  li.classList.add('error');
  li.dataset.code = code;
  return li;
}

// ---- Drawing ------------------------------------------------------------

function render() {
  // While the page logs in again by itself it shows the session it is
  // restoring, unless the name is held and the person may pick another.
  const session = st.loggedIn || (st.name !== '' && !st.nameBusy);
  ui.loginView.hidden = session;
  ui.sessionView.hidden = !session;
  ui.passwordField.hidden = st.auth !== 'accounts';
  ui.password.required = st.auth === 'accounts';
  ui.login.disabled = !st.ready || st.loggingIn || st.quitting;
  ui.login.textContent = st.loggingIn ? 'Logging in…' : 'Log in';

  ui.me.textContent = st.name;
  const live = st.loggedIn && st.token !== '';
  ui.token.textContent = live ? st.token : '…';
  ui.token.classList.toggle('stale', !live);
  ui.shareLink.textContent = live ? shareURL() : '';
  ui.shareLink.href = live ? shareURL() : '#';
  ui.share.hidden = !live;
  ui.copy.disabled = !live;
  ui.copyLink.disabled = !live;
  ui.newToken.disabled = !live;
  ui.connect.disabled = !st.loggedIn || st.peer !== '';
  const inviting = st.invite !== '' && st.loggedIn && st.peer === '';
  ui.invite.hidden = !inviting;
  ui.inviteToken.textContent = st.invite ? shortToken(st.invite) : '';
  ui.inviteToken.title = st.invite;

  const paired = st.peer !== '';
  // Lets a narrow screen fold the token away while a conversation is on.
  document.body.classList.toggle('paired', paired);
  ui.peer.textContent = paired ? 'Talking with ' + st.peer : 'Not connected to anyone';
  // While either side is away the pairing holds, greyed out.
  const away = paired && (st.peerAway || !st.loggedIn);
  ui.peer.classList.toggle('away', away);
  ui.peer.title = !away ? '' : st.loggedIn ? st.peer + ' is away and may come back' : 'Reconnecting…';
  ui.leave.disabled = !paired;
  ui.message.disabled = !paired;
  ui.send.disabled = !paired;
  ui.message.placeholder = paired ? 'Message ' + st.peer : 'Connect to someone to chat';
  secure.draw();
}

function focusLogin() {
  if (st.auth === 'accounts' && ui.name.value !== '') ui.password.focus();
  else ui.name.focus();
}

// ---- End-to-end encryption ----------------------------------------------

// secure is the page's encryption (secure.js): it sees the pairing's
// events through the hooks below and draws #secure itself.
const secure = createSecure({
  send,
  notice,
  error,
  // A message that came sealed, decrypted.
  addMessage: (side, from, text, when) => {
    const el = addMessage(side, from, text, when);
    markSealed(el, keepMessage(side, from, text));
    // A sealed message counts as unread as a plaintext one does.
    if (side === 'theirs') noteUnread();
    return el;
  },
  sendMine,
  notSent: (text) => markFailed(addMessage('mine', st.name, text), keepMessage('mine', st.name, text)),
  // Back in the box, as a say sent offline stays there, unless the
  // person has typed something since: then shown not sent.
  unsent: (text) => {
    if (ui.message.value === '') {
      ui.message.value = text;
      return;
    }
    markFailed(addMessage('mine', st.name, text), keepMessage('mine', st.name, text));
  },
  // Through onSend, which checks it again (the connection, the size)
  // and empties the box once it is sent.
  sendRefused: (text) => {
    if (ui.message.value === text && !ui.message.disabled) ui.compose.requestSubmit();
  },
  me: () => st.name,
  myToken: () => st.token,
  maxText: () => st.maxText,
  redraw: () => render(),
});

// hook runs fn after the handler of an event type (or alone, when the
// page has none), so that encryption follows the pairing's life without
// the handlers knowing of it.
function hook(type, fn) {
  const handler = handlers[type];
  handlers[type] = (ev) => {
    if (handler) handler(ev);
    fn(ev);
  };
}

hook('paired', (ev) => secure.paired(ev));
// reading notes that the message numbered seq is being read: until the
// function it returns is called, once it is shown or refused, it is not
// acknowledged, nor saved as shown (shownLast).
function reading(seq) {
  const r = st.resume;
  const numbered = r !== null && Number.isSafeInteger(seq) && seq > 0;
  if (numbered) r.reading.push(seq);
  return () => {
    if (numbered) {
      const i = r.reading.indexOf(seq);
      if (i >= 0) r.reading.splice(i, 1);
      if (st.resume === r) saveSoon();
    }
    ackSoon();
  };
}

hook('sealed', (ev) => {
  // Numbered with the messages: one shown already is not shown again.
  if (!takeSeq(ev.seq)) return;
  // It is shown once decrypted.
  secure.sealed(ev, reading(ev.seq));
});
hook('peer_back', (ev) => secure.peerBack(ev));
hook('peer_away', () => secure.peerAway());
hook('resumed', (ev) => secure.resumed(ev));
hook('bye', () => secure.unpaired());
// A plaintext message is judged by the pairing it came in, in order with
// the sealed frames before it (the partner's word that it cannot
// encrypt, say): secure.js shows it, marked unencrypted if it must be,
// holds it until the person agrees to go on without encryption, or
// refuses it.
hook('message', (ev) => {
  // A message shown already (its seq is not past the last one) is not
  // shown again.
  if (!takeSeq(ev.seq)) return;
  secure.plainMessage(ev, (unencrypted) => showMessage(ev, unencrypted), reading(ev.seq));
});

// ---- Start --------------------------------------------------------------

function start() {
  ui.loginForm.addEventListener('submit', onLogin);
  ui.connectForm.addEventListener('submit', onConnect);
  ui.compose.addEventListener('submit', onSend);
  ui.message.addEventListener('keydown', onMessageKey);
  ui.message.addEventListener('keypress', onMessageKeypress);
  ui.leave.addEventListener('click', onLeave);
  ui.newToken.addEventListener('click', onNewToken);
  ui.logout.addEventListener('click', onLogout);
  ui.reconnect.addEventListener('click', retryNow);
  ui.name.addEventListener('input', () => ui.name.removeAttribute('aria-invalid'));
  ui.connectToken.addEventListener('input', () => ui.connectToken.removeAttribute('aria-invalid'));
  ui.copy.addEventListener('click', () => copy(st.token, ui.token, ui.copy, 'Token'));
  ui.copyLink.addEventListener('click', () => copy(shareURL(), ui.shareLink, ui.copyLink, 'Link'));
  // Following one's own link would only connect to oneself: copy it instead.
  ui.shareLink.addEventListener('click', (e) => {
    e.preventDefault();
    copy(shareURL(), ui.shareLink, ui.copyLink, 'Link');
  });
  // When the device comes back online, or wakes up, do not sit out the
  // backoff, and do not trust a socket that may have died meanwhile.
  window.addEventListener('online', woke);
  window.addEventListener('offline', wentOffline);
  watchForWake();
  window.addEventListener('pagehide', pageHidden);
  window.addEventListener('pageshow', (e) => {
    if (e.persisted) woke();
  });
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) return;
    if (st.unread) {
      st.unread = 0;
      document.title = 'duet';
    }
    // A socket closed by the login deadline while no one was looking.
    if (st.renewing && !st.ws) connect();
  });

  ui.inviteAccept.addEventListener('click', onInviteAccept);
  // The offer has the focus as soon as the login is answered: an Enter
  // held down on the login form repeats onto it. Only a fresh press
  // accepts.
  ui.inviteAccept.addEventListener('keydown', (e) => {
    if (e.repeat) e.preventDefault();
  });
  ui.inviteDismiss.addEventListener('click', onInviteDismiss);

  takeLinkToken();
  restoreSession();
  render();
  connect();
}

start();
