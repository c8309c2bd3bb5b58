package web_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"

	"duet/engine/enginetest"
)

// The page across the ends of sessions: logging out, a resume the
// server cannot answer yet, and the offer of a share link.

// TestPageNewSessionMarksNoEarlierMessage: alice's message of her first
// session reached bob; she logs out, which clears the conversation from
// the screen, and logs in again. When her new session drops and
// resumes before she has sent anything in it, nothing of the first
// session is marked not sent.
func TestPageNewSessionMarksNoEarlierMessage(t *testing.T) {
	bt := startResumeTest(t, 0)
	proxy, alice, bob := pairBehindProxy(t, bt)
	talk(alice, bob, "sent in the first session")
	alice.do("log out", chromedp.Click(chromedp.ID("logout")))
	alice.expectEntry("logged out", func(e logEntry) bool { return e.Text == "Logged out." })
	for _, e := range alice.log() {
		if e.has("msg") {
			t.Fatalf("after logging out the page still shows %q", e.Text)
		}
	}
	alice.login()
	proxy.cut()
	alice.expectEntry("a reconnecting notice", func(e logEntry) bool { return e.Kind == "reconnecting" })
	proxy.restore()
	alice.do("retry now", chromedp.Click(chromedp.ID("reconnect")))
	e := alice.expectEntry("a resumed notice", func(e logEntry) bool { return e.Kind == "resumed" })
	if e.Text != "Reconnected; your conversation goes on." && e.Text != "Reconnected." {
		t.Logf("alice is told %q", e.Text)
	}
	for _, e := range alice.log() {
		if e.has("failed") {
			t.Errorf("alice's page marks %q not sent", e.Text)
		}
	}
	alice.onlyFailedSockets()
}

// TestPageResumeUnavailableKeepsSession: in a cluster, the node alice's
// page reaches after a drop cannot reach Redis for a moment, and answers
// her resume unavailable. The session is still there: the page keeps its
// key and tries again, and resumes once Redis answers, rather than
// telling her it ended and logging her in afresh.
func TestPageResumeUnavailableKeepsSession(t *testing.T) {
	chromium := setUpBrowserTest(t)
	r := enginetest.StartRedis(t)
	rr := &rollingRestart{a: startClusterNode(t, r, "a"), b: startClusterNode(t, r, "b")}
	rr.bt = launchBrowser(t, chromium, rr.b.daemon)
	rr.balancer = startCutProxy(t, rr.a.daemon.WS)
	alice, bob := rr.bt.newPerson("alice"), rr.bt.newPerson("bob")
	pair(alice, bob, rr.balancer.url(), rr.bt.pageURL())
	talk(alice, bob, "hi bob")
	rr.balancer.cut()
	bob.expectEntry("a peer_away notice", func(e logEntry) bool { return e.Kind == "peer_away" })
	alice.expectEntry("a reconnecting notice", func(e logEntry) bool { return e.Kind == "reconnecting" })
	r.Pause()
	paused := true
	defer func() {
		if paused {
			r.Continue()
		}
	}()
	rr.balancer.retarget(rr.b.daemon.WS)
	rr.balancer.restore()
	alice.do("retry now", chromedp.Click(chromedp.ID("reconnect")))
	// The node's Redis calls give up after its op timeout (3 s here).
	time.Sleep(5 * time.Second)
	r.Continue()
	paused = false
	e := alice.expectEntry("resumed or expired", func(e logEntry) bool { return e.Kind == "resumed" || e.Kind == "expired" })
	if e.Kind != "resumed" {
		t.Fatalf("alice is told %q%s", e.Text, alice.logDump())
	}
	// (Redis was away long enough for the nodes to cut their pairings
	// across nodes, as they must: the session itself came back.)
	alice.onlyFailedSockets()
	bob.onlyFailedSockets()
}

// TestPageHeldEnterDoesNotAcceptInvite: bob opens alice's share link,
// types his name and holds Enter. The offer "Connect to …?" has the
// focus as soon as his login is answered; the repeated Enter does not
// accept it: a link connects no one without a key press of its own.
func TestPageHeldEnterDoesNotAcceptInvite(t *testing.T) {
	bt := startBrowserTest(t)
	alice, bob := bt.newPerson("alice"), bt.newPerson("bob")
	alice.open(bt.pageURL())
	alice.login()
	bob.open(alice.shareLink())
	bob.do("type a name", chromedp.WaitEnabled(chromedp.ID("login")), chromedp.SendKeys(chromedp.ID("name"), "bob"))
	enter := func(typ input.DispatchKeyEventType, repeat bool) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			p := input.DispatchKeyEventParams{Type: typ, Key: "Enter", Code: "Enter", WindowsVirtualKeyCode: 13, NativeVirtualKeyCode: 13}
			if typ == input.DispatchKeyEventTypeKeyDown {
				p.Text, p.UnmodifiedText, p.AutoRepeat = "\r", "\r", &repeat
			}
			_, err := cdp.Call(ctx, t, input.DispatchKeyEvent, p)
			return err
		})
	}
	bob.do("hold Enter", enter(input.DispatchKeyEventTypeKeyDown, false), chromedp.Sleep(500*time.Millisecond),
		enter(input.DispatchKeyEventTypeKeyDown, true), chromedp.Sleep(30*time.Millisecond),
		enter(input.DispatchKeyEventTypeKeyDown, true), enter(input.DispatchKeyEventTypeKeyUp, false))
	bob.waitJS("the offer shown", `!document.getElementById('invite').hidden`)
	time.Sleep(700 * time.Millisecond)
	if peer := eval[string](alice, `document.getElementById('peer').textContent`); peer == "Talking with bob" {
		t.Fatal("holding Enter on the login form accepted the link's offer")
	}
	bob.do("press Enter on the offer", enter(input.DispatchKeyEventTypeKeyDown, false), enter(input.DispatchKeyEventTypeKeyUp, false))
	alice.waitPaired("bob")
}

// TestPageNarrowLongNames: on a phone's screen (360 by 640), a
// 32-character name on both sides and 10,000-character messages both
// ways: nothing is wider than the log, the warning that a terminal
// partner's conversation can be read stays on screen, and the Log out
// button keeps its label on one line.
func TestPageNarrowLongNames(t *testing.T) {
	bt := startBrowserTest(t)
	long := strings.Repeat("W", 32)
	alice := bt.newPerson(strings.Repeat("M", 32))
	alice.do("a phone's screen", chromedp.EmulateViewport(360, 640, chromedp.EmulateMobile, chromedp.EmulatePortrait))
	alice.open(bt.pageURL())
	token := alice.login()
	bob := alice.terminalConnects(token, long)
	bob.Send("hi")
	alice.expectMessage("theirs", long, "hi")
	bob.Send(strings.Repeat("x", 10000))
	alice.expectMessage("theirs", long, strings.Repeat("x", 10000))
	alice.say(strings.Repeat("y", 10000))
	alice.expectOnScreen("peer", "leave", "log", "message", "send")
	wide := eval[[]string](alice, `(() => {
		const out = [];
		const log = document.getElementById('log');
		const edge = log.getBoundingClientRect().right + 0.5;
		for (const li of log.querySelectorAll('li')) {
			if (li.getBoundingClientRect().right > edge || li.scrollWidth > li.clientWidth + 1) {
				out.push(li.className + ': ' + li.textContent.slice(0, 40));
			}
		}
		if (log.scrollWidth > log.clientWidth) out.push('the log scrolls sideways');
		const warning = document.querySelector('#secure p');
		if (warning && warning.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5) {
			out.push('the warning runs past the screen');
		}
		const logout = document.getElementById('logout');
		if (logout.getBoundingClientRect().height > 2 * parseFloat(getComputedStyle(logout).lineHeight || '20')) {
			out.push('Log out wraps');
		}
		return out;
	})()`)
	if len(wide) > 0 {
		t.Errorf("on a phone's screen: %q", wide)
	}
}

// TestPageInsecureContextPlainly: two pages served over plain http by a
// name that is not localhost cannot encrypt (no secure context): each
// says so, they talk in the clear, and neither reports the other's word
// that it cannot encrypt either as an unreadable encrypted message.
func TestPageInsecureContextPlainly(t *testing.T) {
	chromium := setUpBrowserTest(t)
	d := enginetest.Start(t, nil)
	bt := launchBrowserWith(t, chromium, d, chromedp.Flag("host-resolver-rules", "MAP duet.example 127.0.0.1"))
	_, port, _ := strings.Cut(d.WS, ":")
	alice, bob := bt.newPerson("alice"), bt.newPerson("bob")
	alice.open("http://duet.example:" + port + "/")
	if eval[bool](alice, `window.isSecureContext`) {
		t.Fatal("the page is in a secure context")
	}
	token := alice.login()
	bob.open(alice.shareLink())
	bob.login()
	bob.acceptInvite(token)
	alice.waitPaired("bob")
	bob.waitPaired("alice")
	talk(alice, bob, "hi over plain http")
	talk(bob, alice, "hi back")
	time.Sleep(500 * time.Millisecond)
	for _, p := range []*person{alice, bob} {
		for _, e := range p.log() {
			if e.Code == "e2e_unreadable" {
				t.Errorf("%s: %q%s", p.name, e.Text, p.logDump())
			}
		}
		// Chromium's own word that it ignores a header meant for a
		// secure context is the browser's, not the page's.
		for _, problem := range p.takeProblems() {
			if !strings.Contains(problem, "Cross-Origin-Opener-Policy") {
				t.Errorf("%s: the page reported %s", p.name, problem)
			}
		}
	}
}
