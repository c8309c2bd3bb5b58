package web_test

// End-to-end encryption, browser side: web/static/e2e.js loaded into the
// daemon's own page in Chromium, held to proto/e2e's test vector and run
// against proto/e2e, the independent Go implementation of docs/E2E.md.
// The test is the server here: it carries each envelope between the page
// (through chromedp) and the Go session, and it is the attacker that
// flips, replays and substitutes them.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"duet/proto/e2e"
)

// e2eHarness is test code put into the page beside the module: named
// sessions, and errors returned as values so that Go can read them.
const e2eHarness = `(async () => {
	const e2e = await import('/e2e.js');
	const hex = (s) => Uint8Array.from(s.match(/../g) || [], (h) => parseInt(h, 16));
	const sessions = {};
	window.e2e = e2e;
	window.h = {
		async start(name, cfg, storeAs) {
			if (cfg.random) cfg.random = { private: hex(cfg.random.private), nonce: hex(cfg.random.nonce) };
			if (storeAs) cfg.persist = (st) => sessionStorage.setItem(storeAs, JSON.stringify(st));
			const r = await e2e.Session.start(cfg);
			sessions[name] = r.session;
			return r.out;
		},
		async restore(name, storeAs) {
			const persist = (st) => sessionStorage.setItem(storeAs, JSON.stringify(st));
			sessions[name] = await e2e.Session.restore(JSON.parse(sessionStorage.getItem(storeAs)), persist);
			return true;
		},
		receive(name, data) {
			return sessions[name].receive(data);
		},
		async seal(name, text) {
			try {
				return { data: await sessions[name].seal(text), error: '' };
			} catch (err) {
				if (!(err instanceof e2e.E2EError)) throw err;
				return { data: '', error: err.code };
			}
		},
		resend(name) {
			return sessions[name].resend();
		},
		abort(name, reason) {
			return sessions[name].abort(reason);
		},
		state(name) {
			return sessions[name].toJSON();
		},
		info(name) {
			const s = sessions[name];
			return { state: s.state, code: s.code, link: s.linkSecretUsed, role: s.role };
		},
	};
	return true;
})()`

// e2ePage is a page of the daemon's own site, the module loaded into it
// the way app.js would load it: under the page's CSP, from its origin.
func e2ePage(t *testing.T) *person {
	t.Helper()
	bt := startBrowserTest(t)
	p := bt.newPerson("page")
	p.open(bt.pageURL())
	loadE2E(p)
	return p
}

func loadE2E(p *person) {
	p.t.Helper()
	if !evalAwait[bool](p, e2eHarness) {
		p.t.Fatal("the harness did not load")
	}
}

// evalAwait evaluates an expression in the page, waits for its promise,
// and decodes the value.
func evalAwait[T any](p *person, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		p.t.Fatalf("%s: evaluate %.200s: %v", p.name, expr, err)
	}
	return v
}

// js quotes Go values as JavaScript literals.
func js(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// jsResult is what Session.receive resolves to.
type jsResult struct {
	Kind      string   `json:"kind"`
	Duplicate bool     `json:"duplicate"`
	Text      string   `json:"text"`
	Gap       int      `json:"gap"`
	Reason    string   `json:"reason"`
	Out       []string `json:"out"`
	Error     *struct {
		Code  string `json:"code"`
		Fatal bool   `json:"fatal"`
	} `json:"error"`
}

func (r jsResult) code() string {
	if r.Error == nil {
		return ""
	}
	return r.Error.Code
}

type jsInfo struct {
	State string `json:"state"`
	Code  string `json:"code"`
	Link  bool   `json:"link"`
	Role  string `json:"role"`
}

// jsSide is one of the page's sessions.
type jsSide struct {
	p    *person
	name string
}

func (s jsSide) start(cfg map[string]any, storeAs string) []string {
	s.p.t.Helper()
	return evalAwait[[]string](s.p, fmt.Sprintf(`h.start(%s, %s, %s)`, js(s.name), js(cfg), js(storeAs)))
}

func (s jsSide) receive(data string) jsResult {
	s.p.t.Helper()
	return evalAwait[jsResult](s.p, fmt.Sprintf(`h.receive(%s, %s)`, js(s.name), js(data)))
}

// seal returns the data, or the error code.
func (s jsSide) seal(text string) (string, string) {
	s.p.t.Helper()
	r := evalAwait[struct {
		Data  string `json:"data"`
		Error string `json:"error"`
	}](s.p, fmt.Sprintf(`h.seal(%s, %s)`, js(s.name), js(text)))
	return r.Data, r.Error
}

func (s jsSide) info() jsInfo {
	s.p.t.Helper()
	return evalAwait[jsInfo](s.p, fmt.Sprintf(`h.info(%s)`, js(s.name)))
}

// jsConfig is a start configuration for the page's session.
func jsConfig(role e2e.Role, secret string) map[string]any {
	return map[string]any{
		"role": role.String(), "token": testTokenE2E, "initiatorName": "bob", "responderName": "alice",
		"linkSecret": secret,
	}
}

const testTokenE2E = "2711929ec8e0355f5114f12de5370c65"

// goStart begins the Go side in role with secret (base64url, or "").
func goStart(t *testing.T, role e2e.Role, secret string) (*e2e.Session, []string) {
	t.Helper()
	var raw []byte
	if secret != "" {
		var err error
		if raw, err = base64.RawURLEncoding.Strict().DecodeString(secret); err != nil {
			t.Fatal(err)
		}
	}
	s, out, err := e2e.Start(e2e.Config{
		Role: role, Token: testTokenE2E, InitiatorName: "BOB", ResponderName: "alice", LinkSecret: raw,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, datas(out)
}

func datas(envs [][]byte) []string {
	var out []string
	for _, env := range envs {
		out = append(out, e2e.EncodeData(env))
	}
	return out
}

// goReceive hands data to the Go session as a client would: decoded from
// the frame, then received.
func goReceive(g *e2e.Session, data string) (e2e.Result, error) {
	env, err := e2e.DecodeData(data)
	if err != nil {
		return e2e.Result{}, err
	}
	return g.Receive(env)
}

// wire is the test playing the server between the page's session and
// the Go one. tamper, when set, sees each envelope on its way and may
// change it.
type wire struct {
	t      *testing.T
	js     jsSide
	g      *e2e.Session
	tamper func(toJS bool, data string) string

	jsErrors []string // codes the page's session reported
	goErrors []error  // errors the Go session returned
}

// run carries envelopes both ways until neither side has more to send.
func (w *wire) run(toGo, toJS []string) {
	w.t.Helper()
	for len(toGo) > 0 || len(toJS) > 0 {
		var nextJS, nextGo []string
		for _, d := range toGo {
			if w.tamper != nil {
				d = w.tamper(false, d)
			}
			r, err := goReceive(w.g, d)
			if err != nil {
				w.goErrors = append(w.goErrors, err)
			}
			nextJS = append(nextJS, datas(r.Out)...)
		}
		for _, d := range toJS {
			if w.tamper != nil {
				d = w.tamper(true, d)
			}
			r := w.js.receive(d)
			if c := r.code(); c != "" {
				w.jsErrors = append(w.jsErrors, c)
			}
			nextGo = append(nextGo, r.Out...)
		}
		toGo, toJS = nextGo, nextJS
	}
}

// pairUp runs a whole exchange between a new page session and a new Go
// session, the page in role, both holding secret ("" for none).
func pairUp(t *testing.T, p *person, name string, role e2e.Role, secret string, tamper func(bool, string) string) *wire {
	t.Helper()
	w := &wire{t: t, js: jsSide{p, name}, tamper: tamper}
	fromJS := w.js.start(jsConfig(role, secret), "")
	var fromGo []string
	otherRole := e2e.Responder
	if role == e2e.Responder {
		otherRole = e2e.Initiator
	}
	w.g, fromGo = goStart(t, otherRole, secret)
	w.run(fromJS, fromGo)
	return w
}

// expectConfirmed checks that both sides completed, agree on the code,
// and say whether the link secret authenticates the pairing.
func (w *wire) expectConfirmed(link bool) {
	w.t.Helper()
	if len(w.jsErrors) > 0 || len(w.goErrors) > 0 {
		w.t.Fatalf("errors: page %v, Go %v", w.jsErrors, w.goErrors)
	}
	info := w.js.info()
	if info.State != "confirmed" || w.g.State() != e2e.StateConfirmed {
		w.t.Fatalf("states: page %s, Go %v", info.State, w.g.State())
	}
	if info.Code == "" || info.Code != w.g.Code() {
		w.t.Fatalf("codes: page %q, Go %q", info.Code, w.g.Code())
	}
	if info.Link != link || w.g.LinkSecretUsed() != link {
		w.t.Fatalf("link secret used: page %v, Go %v, want %v", info.Link, w.g.LinkSecretUsed(), link)
	}
}

// jsToGo seals text in the page and opens it in Go.
func (w *wire) jsToGo(text string) {
	w.t.Helper()
	data, code := w.js.seal(text)
	if code != "" {
		w.t.Fatalf("the page cannot seal %q: %s", text, code)
	}
	r, err := goReceive(w.g, data)
	if err != nil || r.Text != text || r.Gap != 0 {
		w.t.Fatalf("Go opens %q (gap %d, %v), want %q", r.Text, r.Gap, err, text)
	}
}

// goToJS seals text in Go and opens it in the page.
func (w *wire) goToJS(text string) {
	w.t.Helper()
	r := w.js.receive(goSeal(w.t, w.g, text))
	if r.code() != "" || r.Text != text || r.Gap != 0 || r.Kind != "message" {
		w.t.Fatalf("the page opens %q (gap %d, error %s), want %q", r.Text, r.Gap, r.code(), text)
	}
}

func goSeal(t *testing.T, g *e2e.Session, text string) string {
	t.Helper()
	env, err := g.Seal(text)
	if err != nil {
		t.Fatal(err)
	}
	return e2e.EncodeData(env)
}

// flip changes one bit of the envelope inside data at byte i.
func flip(t *testing.T, data string, i int) string {
	t.Helper()
	env, err := e2e.DecodeData(data)
	if err != nil {
		t.Fatal(err)
	}
	env[i] ^= 0x20
	return e2e.EncodeData(env)
}

// readVectors reads proto/e2e's test vectors: the file Go's tests hold
// proto/e2e to.
func readVectors(t *testing.T) []map[string]any {
	t.Helper()
	data, err := os.ReadFile("../proto/e2e/testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Vectors []map[string]any `json:"vectors"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	return f.Vectors
}

// TestE2EBrowserVectors: e2e.js, in Chromium, under the page's CSP,
// reproduces every value of every test vector, and its error list and
// link helpers agree with proto/e2e.
func TestE2EBrowserVectors(t *testing.T) {
	p := e2ePage(t)

	if why := evalAwait[string](p, `e2e.supported()`); why != "" {
		t.Fatalf("supported() on the daemon's loopback origin: %q", why)
	}

	for _, v := range readVectors(t) {
		name := v["name"].(string)
		// The page computes the whole exchange from the vector's inputs
		// and returns its values, in the vector's hex.
		got := evalAwait[map[string]string](p, fmt.Sprintf(`(async (v) => {
			const hex = (s) => Uint8Array.from(s.match(/../g) || [], (x) => parseInt(x, 16));
			const tohex = (d) => Array.from(e2e.fromBase64url(d), (x) => x.toString(16).padStart(2, '0')).join('');
			const cfg = (role, priv, nonce) => ({
				role, token: v.token, initiatorName: v.initiator_name, responderName: v.responder_name,
				linkSecret: v.link_secret, random: { private: hex(priv), nonce: hex(nonce) },
			});
			const I = await e2e.Session.start(cfg('initiator', v.initiator_private, v.initiator_nonce));
			const R = await e2e.Session.start(cfg('responder', v.responder_private, v.responder_nonce));
			const out = { commit: tohex(I.out[0]), responder_start: String(R.out.length) };
			const r1 = await R.session.receive(I.out[0]);
			out.responder_hello = tohex(r1.out[0]);
			const r2 = await I.session.receive(r1.out[0]);
			out.initiator_hello = tohex(r2.out[0]);
			out.initiator_confirm = tohex(r2.out[1]);
			const r3 = await R.session.receive(r2.out[0]);
			out.responder_confirm = tohex(r3.out[0]);
			const r4 = await R.session.receive(r2.out[1]);
			const r5 = await I.session.receive(r3.out[0]);
			out.errors = [r1, r2, r3, r4, r5].map((r) => r.error ? r.error.code : '').join('');
			out.code = I.session.code;
			out.code_responder = R.session.code;
			out.link = String(I.session.linkSecretUsed) + ' ' + String(R.session.linkSecretUsed);
			// The transcript hash, as the session keeps it for a reload.
			out.transcript = tohex(I.session.toJSON().transcript);
			out.key_i2r = tohex(I.session.toJSON().send_key);
			out.key_r2i = tohex(I.session.toJSON().recv_key);
			out.key_confirm = tohex(I.session.toJSON().confirm_key);
			for (const [i, m] of v.messages.entries()) {
				const [from, to] = m.from === 'initiator' ? [I.session, R.session] : [R.session, I.session];
				out['data' + i] = await from.seal(m.text);
				const r = await to.receive(m.data);
				out['text' + i] = r.text;
			}
			return out;
		})(%s)`, js(v)))
		for _, key := range []string{"commit", "responder_hello", "initiator_hello", "initiator_confirm", "responder_confirm", "code", "transcript", "key_i2r", "key_r2i", "key_confirm"} {
			if got[key] != v[key] {
				t.Errorf("%s: %s: the page computes %s, the vector says %s", name, key, got[key], v[key])
			}
		}
		if got["code_responder"] != v["code"] || got["responder_start"] != "0" || got["errors"] != "" {
			t.Errorf("%s: responder's code %s, responder starts with %s envelopes, errors %q",
				name, got["code_responder"], got["responder_start"], got["errors"])
		}
		link := fmt.Sprint(v["link_secret"] != "")
		if got["link"] != link+" "+link {
			t.Errorf("%s: link secret used: %s", name, got["link"])
		}
		for i, m := range v["messages"].([]any) {
			m := m.(map[string]any)
			if got[fmt.Sprint("data", i)] != m["data"] || got[fmt.Sprint("text", i)] != m["text"] {
				t.Errorf("%s: message %d: the page seals %s and opens %q; the vector has %s and %q",
					name, i, got[fmt.Sprint("data", i)], got[fmt.Sprint("text", i)], m["data"], m["text"])
			}
		}
	}

	// What a whole exchange costs the page, both sides in it: logged, for
	// the record (the page's wait before its first sealed message is this
	// plus two round trips through the server).
	ms := evalAwait[float64](p, `(async () => {
		const cfg = (role) => ({ role, token: '2711929ec8e0355f5114f12de5370c65', initiatorName: 'bob', responderName: 'alice' });
		const t0 = performance.now();
		for (let i = 0; i < 20; i++) {
			const I = await e2e.Session.start(cfg('initiator'));
			const R = await e2e.Session.start(cfg('responder'));
			const hello = (await R.session.receive(I.out[0])).out;
			const [helloI, confirmI] = (await I.session.receive(hello[0])).out;
			const confirmR = (await R.session.receive(helloI)).out[0];
			await R.session.receive(confirmI);
			await I.session.receive(confirmR);
			if (I.session.state !== 'confirmed' || R.session.state !== 'confirmed') throw new Error('not confirmed');
		}
		return (performance.now() - t0) / 20;
	})()`)
	t.Logf("a whole exchange, both sides in the page: %.1f ms", ms)

	// One list of errors, with the same fatality, in both.
	jsErrors := evalAwait[map[string]struct {
		Fatal bool `json:"fatal"`
	}](p, `Promise.resolve(e2e.E2E_ERRORS)`)
	for _, e := range e2e.Errors {
		if je, ok := jsErrors[e.Code]; !ok || je.Fatal != e.Fatal {
			t.Errorf("error %s: in e2e.js %v (fatal %v), in Go fatal %v", e.Code, ok, je.Fatal, e.Fatal)
		}
		delete(jsErrors, e.Code)
	}
	for code := range jsErrors {
		t.Errorf("e2e.js has error %s, which Go lacks", code)
	}

	// A link secret the page makes is 16 random bytes in canonical
	// base64url, and parseLink reads links as docs/E2E.md writes them.
	secret := evalAwait[string](p, `Promise.resolve(e2e.makeLinkSecret())`)
	if raw, err := base64.RawURLEncoding.Strict().DecodeString(secret); err != nil || len(raw) != 16 || len(secret) != 22 {
		t.Fatalf("makeLinkSecret: %q (%d bytes, %v)", secret, len(raw), err)
	}
	for _, tt := range []struct {
		in           string
		token, found string // found: the secret, "" for none, "null" for refused
	}{
		{p.bt.pageURL() + "#" + testTokenE2E + "." + secret, testTokenE2E, secret},
		{"#" + strings.ToUpper(testTokenE2E) + "." + secret, testTokenE2E, secret},
		{" " + testTokenE2E + " ", testTokenE2E, ""},
		{p.bt.pageURL() + "#" + testTokenE2E, testTokenE2E, ""},
		{"#" + testTokenE2E + "." + secret[:21], "", "null"},             // damaged: not canonical
		{"#" + testTokenE2E + "." + secret[:20], "", "null"},             // 15 bytes
		{"#" + testTokenE2E + "." + secret + "=", "", "null"},            // padding
		{"#" + testTokenE2E[:31] + "." + secret, "", "null"},             // short token
		{"#" + testTokenE2E + "." + strings.Repeat("A", 87), "", "null"}, // 65 bytes, too long
	} {
		got := evalAwait[*struct {
			Token  string `json:"token"`
			Secret string `json:"secret"`
		}](p, fmt.Sprintf(`Promise.resolve(e2e.parseLink(%s))`, js(tt.in)))
		switch {
		case tt.found == "null" && got != nil:
			t.Errorf("parseLink(%q) = %+v, want null", tt.in, *got)
		case tt.found != "null" && (got == nil || got.Token != tt.token || got.Secret != tt.found):
			t.Errorf("parseLink(%q) = %+v, want %s, %q", tt.in, got, tt.token, tt.found)
		}
	}
}

// TestE2EBrowserInterop: the page and the Go implementation pair in both
// roles, with and without the link secret, show the same code and read
// each other; every attack docs/E2E.md names is caught on both sides.
func TestE2EBrowserInterop(t *testing.T) {
	p := e2ePage(t)
	secret := evalAwait[string](p, `Promise.resolve(e2e.makeLinkSecret())`)
	long := strings.Repeat("é", e2e.DefaultMaxText/2)

	for _, role := range []e2e.Role{e2e.Initiator, e2e.Responder} {
		for _, link := range []bool{true, false} {
			name := fmt.Sprintf("page %v, link %v", role, link)
			s := ""
			if link {
				s = secret
			}
			w := pairUp(t, p, name, role, s, nil)
			w.expectConfirmed(link)
			for _, text := range []string{"hi from the page", "two\nlines, 🙂, <b>&amp;", "\ufeffa leading BOM stays", long} {
				w.jsToGo(text)
				w.goToJS(text)
			}
			// Steps sent again after a resume are recognised as such.
			for _, d := range evalAwait[[]string](p, fmt.Sprintf(`Promise.resolve(h.resend(%s))`, js(name))) {
				if r, err := goReceive(w.g, d); err != nil || !r.Duplicate {
					t.Fatalf("%s: Go takes the page's resent step: duplicate %v, %v", name, r.Duplicate, err)
				}
			}
			for _, d := range datas(w.g.Resend()) {
				if r := w.js.receive(d); r.code() != "" || !r.Duplicate {
					t.Fatalf("%s: the page takes Go's resent step: duplicate %v, %s", name, r.Duplicate, r.code())
				}
			}
			w.jsToGo("after the resent steps")
		}
	}

	// The page refuses what it must not seal, and spends no counter on it.
	w := pairUp(t, p, "refusals", e2e.Initiator, "", nil)
	w.expectConfirmed(false)
	for _, tt := range []struct{ text, want string }{
		{"", "empty"},
		{strings.Repeat("x", e2e.DefaultMaxText+1), "too_long"},
	} {
		if _, code := w.js.seal(tt.text); code != tt.want {
			t.Errorf("seal %.20q: %q, want %s", tt.text, code, tt.want)
		}
	}
	// A lone surrogate has no UTF-8 form (and no Go string can hold
	// one): the page builds it.
	if r := evalAwait[struct {
		Error string `json:"error"`
	}](p, `h.seal('refusals', 'lone \ud800 surrogate')`); r.Error != "bad_text" {
		t.Errorf("seal with a lone surrogate: %q, want bad_text", r.Error)
	}
	w.jsToGo("the first message after the refusals")

	t.Run("flipped byte", func(t *testing.T) {
		w := pairUp(t, p, "flip", e2e.Initiator, secret, nil)
		w.expectConfirmed(true)
		// Go to the page: a flipped byte in the header's counter, and in
		// the ciphertext, and in the tag.
		data := goSeal(t, w.g, "the real text")
		for _, i := range []int{9, 12, len(mustDecode(t, data)) - 1} {
			r := w.js.receive(flip(t, data, i))
			if r.code() != "altered" || r.Text != "" || r.Error.Fatal {
				t.Fatalf("the page takes a flipped byte %d: %+v", i, r)
			}
		}
		w2 := w.js.receive(goSeal(t, w.g, "the next one"))
		if w2.code() != "" || w2.Text != "the next one" || w2.Gap != 1 {
			t.Fatalf("after the altered message the page reads %q gap %d %s; want the gap reported", w2.Text, w2.Gap, w2.code())
		}
		// The page to Go.
		data, _ = w.js.seal("the page's real text")
		_, err := goReceive(w.g, flip(t, data, 14))
		if !errors.Is(err, e2e.ErrAltered) {
			t.Fatalf("Go takes a flipped byte: %v", err)
		}
		w.jsToGoAfterGap("next", 1)
	})

	t.Run("replayed", func(t *testing.T) {
		w := pairUp(t, p, "replay", e2e.Responder, "", nil)
		w.expectConfirmed(false)
		a, b := goSeal(t, w.g, "one"), goSeal(t, w.g, "two")
		if r := w.js.receive(a); r.Text != "one" {
			t.Fatalf("first: %+v", r)
		}
		if r := w.js.receive(a); r.code() != "replayed" || r.Text != "" {
			t.Fatalf("the page takes a replay: %+v", r)
		}
		if r := w.js.receive(b); r.Text != "two" || r.Gap != 0 {
			t.Fatalf("after the replay: %+v", r)
		}
		// Reordered: the later message first.
		c, d := goSeal(t, w.g, "three"), goSeal(t, w.g, "four")
		if r := w.js.receive(d); r.Text != "four" || r.Gap != 1 {
			t.Fatalf("four before three: %+v", r)
		}
		if r := w.js.receive(c); r.code() != "replayed" {
			t.Fatalf("three after four: %+v", r)
		}
		data, _ := w.js.seal("from the page")
		if _, err := goReceive(w.g, data); err != nil {
			t.Fatal(err)
		}
		if _, err := goReceive(w.g, data); !errors.Is(err, e2e.ErrReplayed) {
			t.Fatalf("Go takes a replay: %v", err)
		}
	})

	t.Run("substituted public key", func(t *testing.T) {
		// The responder's key replaced on its way to the initiator: both
		// confirmations fail, whichever side is the page.
		for _, role := range []e2e.Role{e2e.Initiator, e2e.Responder} {
			for _, s := range []string{"", secret} {
				w := pairUp(t, p, fmt.Sprintf("substitute %v %q", role, s), role, s, substituteKey(t, e2e.Responder))
				if !slicesContain(w.jsErrors, "confirm_failed") || !containsErr(w.goErrors, e2e.ErrConfirm) {
					t.Fatalf("page %v, link secret %v: errors page %v, Go %v", role, s != "", w.jsErrors, w.goErrors)
				}
				if info := w.js.info(); info.State != "failed" || w.g.State() != e2e.StateFailed {
					t.Fatalf("states after the substitution: page %s, Go %v", info.State, w.g.State())
				}
				if _, code := w.js.seal("anything"); code != "failed" {
					t.Fatalf("the page seals after a failed exchange: %s", code)
				}
			}
		}
		// The initiator's key replaced: the responder's commitment no
		// longer matches, and the initiator hears its abort.
		w := pairUp(t, p, "substitute initiator's", e2e.Responder, "", substituteKey(t, e2e.Initiator))
		if !slicesContain(w.jsErrors, "commit_mismatch") || !containsErr(w.goErrors, e2e.ErrPeerAborted) {
			t.Fatalf("errors page %v, Go %v", w.jsErrors, w.goErrors)
		}
		w = pairUp(t, p, "substitute initiator's in Go", e2e.Initiator, "", substituteKey(t, e2e.Initiator))
		if !containsErr(w.goErrors, e2e.ErrCommit) || !slicesContain(w.jsErrors, "peer_aborted") {
			t.Fatalf("errors page %v, Go %v", w.jsErrors, w.goErrors)
		}
	})

	t.Run("man in the middle", func(t *testing.T) {
		// Without the link secret the server completes an exchange with
		// each side: the page and the Go side each confirm, with the
		// server, and show different codes.
		for _, s := range []string{"", secret} {
			page := jsSide{p, "mitm page " + s}
			fromPage := page.start(jsConfig(e2e.Initiator, s), "")
			mResp, _ := goStart(t, e2e.Responder, "")
			mIni, fromM := goStart(t, e2e.Initiator, "")
			peer, _ := goStart(t, e2e.Responder, s)
			// The server and the peer.
			toM := mustRun(t, peer, fromM)
			mustRun(t, peer, mustRun(t, mIni, toM))
			// The server and the page.
			if s == "" {
				w := &wire{t: t, js: page, g: mResp}
				w.run(fromPage, nil)
				w.expectConfirmed(false)
				if page.info().Code == peer.Code() {
					t.Fatalf("the codes match under a man in the middle: %s", peer.Code())
				}
				continue
			}
			// With the secret, the server cannot take the page's hello (the
			// link id is not its own): it commits its own session to the
			// hello without it, and answers the page with that.
			helloNoID := stripLinkID(t, page)
			r, err := mResp.Receive(commitTo(helloNoID))
			if err != nil {
				t.Fatal(err)
			}
			pr := page.receive(e2e.EncodeData(r.Out[0])) // the server's hello
			if pr.code() != "" || len(pr.Out) != 2 {
				t.Fatalf("the page answers the server's hello: %+v", pr)
			}
			r, err = mResp.Receive(helloNoID)
			if err != nil {
				t.Fatal(err)
			}
			if pr := page.receive(e2e.EncodeData(r.Out[0])); pr.code() != "confirm_failed" {
				t.Fatalf("with the link secret the page takes the server's confirmation: %+v", pr)
			}
			if peer.LinkSecretUsed() {
				t.Fatal("the peer, facing the server, believes the link authenticates it")
			}
		}
	})

	t.Run("low-order key", func(t *testing.T) {
		w := pairUp(t, p, "low order", e2e.Initiator, "", func(toJS bool, d string) string {
			env := mustDecode(t, d)
			if toJS && env[1] == byte(e2e.KindHello) {
				copy(env[4:36], make([]byte, 32))
				return e2e.EncodeData(env)
			}
			return d
		})
		if !slicesContain(w.jsErrors, "bad_key") || !containsErr(w.goErrors, e2e.ErrPeerAborted) {
			t.Fatalf("errors page %v, Go %v", w.jsErrors, w.goErrors)
		}
		// Web Crypto itself refuses the all-zero secret, as docs/E2E.md
		// says; e2e.js checks again in case a browser does not.
		got := evalAwait[string](p, `(async () => {
			const k = await crypto.subtle.generateKey({ name: 'X25519' }, false, ['deriveBits']);
			const zero = await crypto.subtle.importKey('raw', new Uint8Array(32), { name: 'X25519' }, true, []);
			try {
				await crypto.subtle.deriveBits({ name: 'X25519', public: zero }, k.privateKey, 256);
				return 'derived';
			} catch (err) {
				return err.name;
			}
		})()`)
		if got != "OperationError" {
			t.Errorf("Web Crypto's X25519 with the zero point: %s, want OperationError", got)
		}
	})

	t.Run("unknown link secret", func(t *testing.T) {
		other := evalAwait[string](p, `Promise.resolve(e2e.makeLinkSecret())`)
		w := &wire{t: t, js: jsSide{p, "unknown secret"}}
		fromJS := w.js.start(jsConfig(e2e.Initiator, other), "")
		w.g, _ = goStart(t, e2e.Responder, secret)
		w.run(fromJS, nil)
		if !containsErr(w.goErrors, e2e.ErrUnknownSecret) || !slicesContain(w.jsErrors, "peer_aborted") {
			t.Fatalf("errors page %v, Go %v", w.jsErrors, w.goErrors)
		}
	})

	t.Run("abort", func(t *testing.T) {
		w := pairUp(t, p, "abort", e2e.Responder, "", nil)
		w.expectConfirmed(false)
		data := evalAwait[string](p, `Promise.resolve(h.abort('abort', 'cannot_encrypt'))`)
		r, err := goReceive(w.g, data)
		if !errors.Is(err, e2e.ErrPeerAborted) || r.Reason != e2e.ReasonCannotEncrypt {
			t.Fatalf("Go hears the page's abort as %v, reason %v", err, r.Reason)
		}
	})

	t.Run("every abort reason", func(t *testing.T) {
		// Both know the same reasons by the same bytes and names, and
		// each hears the other's as it was sent.
		inJS := evalAwait[map[string]int](p, `Promise.resolve(e2e.REASONS)`)
		for _, reason := range e2e.Reasons {
			name := reason.String()
			if b, ok := inJS[name]; !ok || b != int(reason) {
				t.Errorf("e2e.js knows %s as %d (known: %v), proto/e2e as %d", name, b, ok, reason)
			}
			delete(inJS, name)
			env, err := e2e.DecodeData(evalAwait[string](p, fmt.Sprintf(`Promise.resolve(e2e.abortData(%s))`, js(name))))
			if err != nil {
				t.Fatal(err)
			}
			if e, err := e2e.Decode(env); err != nil || e.Kind != e2e.KindAbort || e.Reason != reason {
				t.Errorf("Go reads the page's abort %s as %v %v, %v", name, e.Kind, e.Reason, err)
			}
			s := jsSide{p, "abort " + name}
			s.start(jsConfig(e2e.Responder, ""), "")
			g, _ := goStart(t, e2e.Initiator, "")
			if r := s.receive(e2e.EncodeData(g.Abort(reason))); r.code() != "peer_aborted" || r.Reason != name {
				t.Errorf("the page hears Go's abort %s as %s, reason %q", name, r.code(), r.Reason)
			}
		}
		for name := range inJS {
			t.Errorf("e2e.js knows the reason %s, proto/e2e does not", name)
		}
	})
}

// jsToGoAfterGap seals text in the page and expects Go to open it after gap
// missing messages.
func (w *wire) jsToGoAfterGap(text string, gap uint64) {
	w.t.Helper()
	data, code := w.js.seal(text)
	if code != "" {
		w.t.Fatal(code)
	}
	r, err := goReceive(w.g, data)
	if err != nil || r.Text != text || r.Gap != gap {
		w.t.Fatalf("Go opens %q gap %d (%v), want %q gap %d", r.Text, r.Gap, err, text, gap)
	}
}

func mustDecode(t *testing.T, data string) []byte {
	t.Helper()
	env, err := e2e.DecodeData(data)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// mustRun feeds envelopes to a Go session and returns what it sends.
func mustRun(t *testing.T, g *e2e.Session, in []string) []string {
	t.Helper()
	var out []string
	for _, d := range in {
		r, err := goReceive(g, d)
		if err != nil {
			t.Fatalf("%v: %v", g.Role(), err)
		}
		out = append(out, datas(r.Out)...)
	}
	return out
}

// substituteKey replaces the public key in role's hello with a random one,
// as a server that wants to be in the middle would.
func substituteKey(t *testing.T, role e2e.Role) func(bool, string) string {
	return func(_ bool, d string) string {
		env := mustDecode(t, d)
		if env[1] != byte(e2e.KindHello) || e2e.Role(env[2]) != role {
			return d
		}
		if _, err := rand.Read(env[4:36]); err != nil {
			t.Fatal(err)
		}
		return e2e.EncodeData(env)
	}
}

// stripLinkID returns the page session's own hello, read from the state
// it would store, without the link identifier.
func stripLinkID(t *testing.T, s jsSide) []byte {
	t.Helper()
	st := evalAwait[map[string]any](s.p, fmt.Sprintf(`Promise.resolve(h.state(%s))`, js(s.name)))
	hello, err := e2e.Decode(mustDecode(t, st["own_hello"].(string)))
	if err != nil || !hello.HasLinkID {
		t.Fatalf("the page's own hello: %+v, %v", hello, err)
	}
	hello.HasLinkID = false
	return hello.Append(nil)
}

func commitTo(hello []byte) []byte {
	e := e2e.Envelope{Kind: e2e.KindCommit, Digest: e2e.Commitment(hello)}
	return e.Append(nil)
}

func slicesContain(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func containsErr(list []error, want error) bool {
	for _, err := range list {
		if errors.Is(err, want) {
			return true
		}
	}
	return false
}

// TestE2EBrowserReload: the page's state lives in sessionStorage, so a
// reload in the middle of the exchange, or of the conversation, goes on
// where it was: no counter is used twice, nothing is replayed, and the
// private key and the link secret are gone from storage once the keys
// are derived. Nothing is written to localStorage.
func TestE2EBrowserReload(t *testing.T) {
	p := e2ePage(t)
	secret := evalAwait[string](p, `Promise.resolve(e2e.makeLinkSecret())`)
	page := jsSide{p, "reload"}
	// Not secure.js's own key (duet.e2e): the page this harness runs in
	// clears that one when it is hidden with no session to keep.
	const key = "duet-test.e2e"
	reload := func() {
		t.Helper()
		p.do("reload", chromedp.Reload())
		p.waitJS("the page is online", `document.getElementById('state').dataset.state === 'online'`)
		loadE2E(p)
		evalAwait[bool](p, fmt.Sprintf(`h.restore(%s, %s)`, js(page.name), js(key)))
	}
	stored := func() map[string]any {
		t.Helper()
		return evalAwait[map[string]any](p, fmt.Sprintf(`Promise.resolve(JSON.parse(sessionStorage.getItem(%s)))`, js(key)))
	}

	// The page commits; it is reloaded before the responder's hello.
	fromPage := page.start(jsConfig(e2e.Initiator, secret), key)
	if st := stored(); st["private"] == "" || st["secret"] == "" || st["state"] != "wait_hello" {
		t.Fatalf("stored while waiting for the hello: %v", st)
	}
	g, _ := goStart(t, e2e.Responder, secret)
	helloR := mustRun(t, g, fromPage)
	reload()
	w := &wire{t: t, js: page, g: g}
	w.run(nil, helloR)
	w.expectConfirmed(true)
	if st := stored(); st["private"] != "" || st["secret"] != "" || st["state"] != "confirmed" {
		t.Fatalf("stored once confirmed: private %q, secret %q, state %v", st["private"], st["secret"], st["state"])
	}

	w.jsToGo("before the reload 1")
	w.jsToGo("before the reload 2")
	early := goSeal(t, g, "from Go before the reload")
	if r := page.receive(early); r.Text != "from Go before the reload" {
		t.Fatalf("%+v", r)
	}
	reload()
	// The counters went on from where they were: Go sees no gap and no
	// reuse, and the page opens Go's next message.
	w.jsToGo("after the reload")
	w.goToJS("from Go after the reload")
	// A frame the page processed before the reload, replayed: refused.
	if r := page.receive(early); r.code() != "replayed" {
		t.Fatalf("a message from before the reload, again: %+v", r)
	}
	if code := page.info().Code; code != g.Code() {
		t.Fatalf("the code after a reload: %q, Go %q", code, g.Code())
	}
	if n := evalAwait[int](p, `Promise.resolve(localStorage.length)`); n != 0 {
		t.Fatalf("localStorage holds %d items", n)
	}

	// A stored state that is not one is refused, not half used.
	for _, bad := range []string{`{}`, `{"v":1,"role":"initiator"}`, `null`} {
		err := evalAwait[string](p, fmt.Sprintf(`e2e.Session.restore(JSON.parse(%s)).then(() => '', (e) => e.name)`, js(bad)))
		if err != "TypeError" {
			t.Errorf("restore(%s): %q, want a TypeError", bad, err)
		}
	}
}
