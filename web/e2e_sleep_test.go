package web_test

// What a phone does to an encrypted conversation's page: it sleeps, and
// wakes to find its connection dead.

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// socketSpy keeps each WebSocket the page opens in window.duetSockets,
// so that a test can end one as a dead network would.
const socketSpy = `(() => {
	const W = window.WebSocket;
	window.duetSockets = [];
	window.WebSocket = function (...args) {
		const ws = new W(...args);
		window.duetSockets.push(ws);
		return ws;
	};
	window.WebSocket.prototype = W.prototype;
	for (const k of ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED']) window.WebSocket[k] = W[k];
})()`

// spySockets installs socketSpy in every page p opens from now on.
func (p *person) spySockets() {
	p.t.Helper()
	p.do("spy on sockets", chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: socketSpy})
		return err
	}))
}

// lifecycle freezes or wakes p's page, as a phone's sleep does.
func (p *person) lifecycle(state page.SetWebLifecycleStateState) {
	p.t.Helper()
	p.do("lifecycle "+string(state), chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, page.SetWebLifecycleState, page.SetWebLifecycleStateParams{State: state})
		return err
	}))
}

// TestE2EPageTextSealedAsTheSocketDies: alice sends, and her socket dies
// while the text is being sealed (a page woken from sleep learns its
// connection died moments after it wakes). The text goes back to her
// message box, to send once she is back, and reaches bob sealed. Before,
// the box was emptied as the seal began, the seal could not be sent,
// and the text was gone from both pages.
func TestE2EPageTextSealedAsTheSocketDies(t *testing.T) {
	bt := startResumeTest(t, 0)
	alice, bob := bt.newPerson("alice"), bt.newPerson("bob")
	alice.spySockets()
	pair(alice, bob, bt.pageURL(), bt.pageURL())
	alice.waitSecure("unverified")
	bob.waitSecure("unverified")
	talk(alice, bob, "before")

	const text = "typed as the network died"
	alice.do("send as the socket dies", chromedp.Evaluate[chromedp.Void](`(() => {
		document.getElementById('message').value = `+"`"+text+"`"+`;
		document.getElementById('compose').requestSubmit();
		window.duetSockets.at(-1).close(4001, 'gone');
	})()`))
	alice.expectEntry("a resumed notice", func(e logEntry) bool { return e.Kind == "resumed" })
	alice.waitJS("the text back in the box", `document.getElementById('message').value === `+"`"+text+"`")
	alice.do("send it again", chromedp.Click(chromedp.ID("send")))
	bob.expectSealedMessage("theirs", text)
	if n := alice.countText(text); n != 1 {
		t.Errorf("alice's page shows the text %d times%s", n, alice.logDump())
	}
}

// TestE2EPagePartnerAsleepAsItConnects: bob opens alice's link, accepts,
// and his phone sleeps at once, for longer than the exchange's 30 s.
// Alice's page gives up, and, when bob's page wakes, it says her page
// gave up on an exchange that did not complete; neither page speaks of
// keys that did not match or of someone interfering. Before, alice's
// page aborted as if the keys had not matched, and bob's page, woken,
// said someone between them might be interfering.
func TestE2EPagePartnerAsleepAsItConnects(t *testing.T) {
	bt := startResumeTest(t, 0)
	alice, bob := bt.newPerson("alice"), bt.newPerson("bob")
	alice.open(bt.pageURL())
	token := alice.login()
	bob.open(alice.shareLink())
	bob.login()
	bob.expectInvite(token)
	bob.do("accept", chromedp.Click(chromedp.ID("invite-accept")))
	bob.lifecycle(page.SetWebLifecycleStateStateFrozen)
	e := alice.expectEntryWithin(45*time.Second, "the exchange's time up", func(e logEntry) bool { return e.Code == "e2e_failed" })
	if e.Text != "Encryption failed: bob’s page did not complete the exchange in time. Nothing more is sent unless you choose “Send without encryption”." {
		t.Errorf("alice's page says %q", e.Text)
	}
	bob.lifecycle(page.SetWebLifecycleStateStateActive)
	// Chromium drops a frozen page's socket, and says so in its console.
	bob.onlyFailedSockets()
	e = bob.expectEntry("the abort told", func(e logEntry) bool { return e.Code == "e2e_failed" })
	if !strings.Contains(e.Text, "alice’s page gave up on encryption: the exchange went wrong, or did not complete in time") {
		t.Errorf("bob's page says %q", e.Text)
	}
	for _, p := range []*person{alice, bob} {
		for _, e := range p.log() {
			if strings.Contains(e.Text, "interfering") {
				t.Errorf("%s's page says %q", p.name, e.Text)
			}
		}
	}
}
