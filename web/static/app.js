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

// How often, and for how long, to try logging in again while the server
// still holds our name from a connection it has not yet seen die. Its idle
// timeout is 90s by default, so two minutes covers it.
const RELOGIN_EVERY_MS = 5000;
const RELOGIN_TRIES = 24;

// Old entries are dropped past this, so a long session cannot grow the page
// without bound.
const LOG_LIMIT = 1000;

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

  invite: '', // a token from a share link, offered once logged in; connects only on a click
  lastOp: '', // the type of the last command sent, to tie errors to it
  lastMine: null, // the log entry of our last message

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
  shutdown: false, // the server said it is going down
  quitting: false, // the person logged out; the close that follows is expected

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
  secure.unpaired();
  clearTimers();

  if (st.quitting) {
    // Logging out ends the session on purpose: start afresh at once.
    st.quitting = false;
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
  const delay = backoff(st.attempt);
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
    error('offline', 'Not connected to the server; wait for it to come back.');
    return false;
  }
  st.ws.send(JSON.stringify(obj));
  st.lastOp = obj.type;
  return true;
}

// ---- Server events ------------------------------------------------------

function receive(data) {
  let ev;
  try {
    ev = JSON.parse(data);
  } catch {
    console.warn('duet: ignoring a frame that is not JSON');
    return;
  }
  if (!ev || typeof ev !== 'object' || typeof ev.type !== 'string') return;
  const handler = handlers[ev.type];
  // Types this page does not know are ignored, so the server can add some.
  if (handler) handler(ev);
  render();
}

const handlers = {
  hello(ev) {
    clearTimeout(st.helloTimer);
    st.ready = true;
    st.auth = ev.auth === 'accounts' ? 'accounts' : 'open';
    if (Number.isInteger(ev.max_text) && ev.max_text > 0) st.maxText = ev.max_text;
    setState('online', 'Online');
    if (st.failNoted) notice('Connected to the server again.', { kind: 'connection' });
    st.failNoted = false;
    const renewed = st.renewing;
    st.renewing = false;
    if (st.name) {
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

  message(ev) {
    addMessage('theirs', String(ev.from || st.peer), String(ev.text ?? ''));
    if (document.hidden) {
      st.unread++;
      document.title = '(' + st.unread + ') duet';
    }
  },

  peer_left(ev) {
    const peer = String(ev.peer || st.peer || 'Your peer');
    let text = leftReason(peer, String(ev.reason || ''));
    const n = Number(ev.undelivered) || 0;
    if (n > 0) text += ' ' + n + (n === 1 ? ' message' : ' messages') + ' you sent did not reach them.';
    notice(text, { kind: 'peer_left', reason: ev.reason });
    unpair();
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
  },

  error(ev) {
    serverError(String(ev.code || 'error'), String(ev.text || 'Something went wrong.'));
  },

  shutdown(ev) {
    st.shutdown = true;
    // The server's text already says it is going down; show it as a sentence.
    const text = String(ev.text || '') || 'the server is shutting down.';
    notice(text.charAt(0).toUpperCase() + text.slice(1), { kind: 'shutdown' });
  },

  notice(ev) {
    notice(String(ev.text || ''));
  },

  help(ev) {
    if (ev.text) notice(String(ev.text));
  },

  bye() {
    // The server ended the session on purpose (we quit, or our account was
    // taken over elsewhere): do not log back in by ourselves.
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
    notice('Logged out.');
  },
};

// leftReason puts a peer_left reason into words.
function leftReason(peer, reason) {
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
      return peer + ' was silent too long and timed out.';
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

// Errors that follow a message we sent mean that message went nowhere.
const SAY_ERRORS = new Set(['too_long', 'invalid_utf8', 'empty_message', 'not_paired', 'rate_limited', 'peer_cannot_decrypt']);

// Errors about a token we tried to connect to.
const TOKEN_ERRORS = new Set(['bad_token', 'unknown_token', 'self_connect']);

// Errors that mean a login under this name may work if tried again shortly:
// the server still holds it for a connection it has not seen die.
const NAME_BUSY = new Set(['name_taken', 'already_online']);

function serverError(code, text) {
  const shown = FRIENDLY[code] || text;

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
  if ((st.lastOp === 'say' || st.lastOp === 'seal') && SAY_ERRORS.has(code) && st.lastMine) {
    st.lastMine.classList.add('failed');
    st.lastMine = null;
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
    error('bad_name', 'A name is 1 to 32 letters, digits, “_”, “-” or “.”.');
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
  const size = new TextEncoder().encode(text).length;
  if (size > st.maxText) {
    error('too_long', 'Message too long: ' + size + ' bytes, the limit is ' + st.maxText + '. It was not sent.');
    return;
  }
  if (secure.sendText(text)) {
    // Sealed (shown once sent), waiting for the keys, or refused with a
    // word to the person: secure.js has it.
    ui.message.value = '';
    ui.message.focus();
    return;
  }
  if (!send({ type: 'say', text })) return;
  st.lastMine = addMessage('mine', st.name, text);
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
  if (st.peer) send({ type: 'leave' });
}

function onNewToken() {
  if (st.loggedIn) send({ type: 'newtoken' });
}

function onLogout() {
  const ws = st.ws;
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
    notice('Logged out.');
    render();
    focusLogin();
    return;
  }
  st.quitting = true;
  send({ type: 'quit' });
  // The server closes after bye; should it not, close from this side.
  setTimeout(() => {
    if (st.ws === ws) ws.close();
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

function stamp() {
  const now = new Date();
  const t = document.createElement('time');
  t.dateTime = now.toISOString();
  t.title = now.toLocaleString();
  t.textContent = now.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return t;
}

function append(li) {
  const log = ui.log;
  // Follow new entries only if the reader is already at the bottom, so
  // scrolling back to read is not interrupted. Only the log scrolls: moving
  // the whole page would yank a phone's view away from what it shows.
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 48;
  log.append(li);
  while (log.childElementCount > LOG_LIMIT) log.firstElementChild.remove();
  if (atBottom || li.classList.contains('mine')) log.scrollTop = log.scrollHeight;
  return li;
}

function addMessage(side, from, text) {
  const li = document.createElement('li');
  li.className = 'msg ' + side;
  const meta = document.createElement('div');
  meta.className = 'meta';
  const who = document.createElement('span');
  who.className = 'from';
  who.textContent = side === 'mine' ? 'You' : from;
  meta.append(who, stamp());
  const p = document.createElement('p');
  p.className = 'text';
  p.textContent = text;
  li.append(meta, p);
  return append(li);
}

// notice logs a system line. opts.kind and opts.reason become data
// attributes so that tests and styles can pick them out.
function notice(text, opts = {}) {
  const li = document.createElement('li');
  li.className = 'notice';
  if (opts.kind) li.dataset.kind = opts.kind;
  if (opts.reason) li.dataset.reason = String(opts.reason);
  const span = document.createElement('span');
  span.className = 'text';
  span.textContent = text;
  li.append(stamp(), span);
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
  ui.login.disabled = !st.ready || st.loggingIn;
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
  addMessage,
  addMine: (text) => {
    st.lastMine = addMessage('mine', st.name, text);
    return st.lastMine;
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
hook('sealed', (ev) => secure.sealed(ev));
hook('peer_back', (ev) => secure.peerBack(ev));
hook('peer_away', () => secure.peerAway());
hook('resumed', (ev) => secure.resumed(ev));
hook('bye', () => secure.unpaired());
{
  // A plaintext message in a pairing that encrypts is not the partner's
  // page, which seals everything: it is refused, not shown.
  const shown = handlers.message;
  handlers.message = (ev) => {
    if (secure.plainMessage()) shown(ev);
  };
}

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
  // When the device comes back online, do not sit out the backoff.
  window.addEventListener('online', () => {
    if (!st.ws) retryNow();
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
  ui.inviteDismiss.addEventListener('click', onInviteDismiss);

  takeLinkToken();
  render();
  connect();
}

start();
