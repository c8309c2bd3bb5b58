package web_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"duet/engine"
	"duet/engine/enginetest"
	"duet/engine/hub"
)

// TestBrowserRestartKeepsEncryption: a single node restarts, handing
// its sessions to the next process as duetd does with
// resume.state_file: a drain tells each page to reconnect, the sessions
// are written down (hub.Snapshot, hub.WriteState) and read back by
// the next process (hub.ReadState, Parked.Age, hub.Restore) before it
// listens. Two pages talking encrypted, behind a proxy that stands for
// the address they know, reconnect to the next process and resume
// there: the same code, every message sealed, no word of encryption
// failing, and no message in the clear on either process. (Before, a
// restart ended the conversation; and a pairing rebuilt with a new id
// would have made both pages start a new exchange, with a new code to
// compare.)
func TestBrowserRestartKeepsEncryption(t *testing.T) {
	first, proxy, alice, bob := pairedToRestart(t, nil)
	alice.waitSecure("unverified")
	bob.waitSecure("unverified")
	_, code := alice.secureState()
	talk(alice, bob, "before the restart")
	bob.expectSealedMessage("theirs", "before the restart")

	// The pages try to reconnect a second or so after the drain's
	// notice, while this process still answers, refusing them for the
	// restart (shutting_down), as a process that hands its sessions on
	// does until it stops. The page says nothing of that refusal: its
	// own notice has said it is reconnecting.
	next := restart(t, first, 2500*time.Millisecond, nil, nil)
	proxy.retarget(next.WS)

	for _, p := range []*person{alice, bob} {
		// The drain's notice, in the page's words: it reconnects by
		// itself, and says so once.
		p.expectEntry("the restart notice", func(e logEntry) bool {
			return e.Kind == "reconnecting" && strings.HasPrefix(e.Text, "The server is restarting; reconnecting. Your session is kept for up to 2m.")
		})
		for _, e := range p.log() {
			if strings.Contains(e.Text, "reconnect and resume") || strings.Contains(e.Text, "Lost the connection") || e.Code == "shutting_down" {
				t.Errorf("%s is told %q", p.name, e.Text)
			}
		}
		p.expectEntry("a resumed notice", func(e logEntry) bool { return e.Kind == "resumed" })
		p.waitJS("online", `document.getElementById('state').dataset.state === 'online'
			&& document.getElementById('peer').textContent !== ''`)
	}
	talk(alice, bob, "after the restart")
	talk(bob, alice, "still sealed")
	bob.expectSealedMessage("theirs", "after the restart")
	alice.expectSealedMessage("theirs", "still sealed")
	for _, p := range []*person{alice, bob} {
		p.waitSecure("unverified")
		if _, again := p.secureState(); again != code {
			t.Errorf("%s's page shows the code %q after the restart, %q before", p.name, again, code)
		}
		for _, e := range p.log() {
			if e.Code == "e2e_failed" || e.Code == "peer_cannot_decrypt" || e.Code == "e2e_plaintext_refused" {
				t.Errorf("%s is told %v%s", p.name, e, p.logDump())
			}
		}
		p.expectOnlySealed()
	}
	for _, d := range []*enginetest.Daemon{first, next} {
		if st := d.Hub.Stats(); st.Messages != 0 {
			t.Errorf("%d messages relayed in the clear", st.Messages)
		}
	}
	alice.screenshot("encryption kept through a restart")
	alice.onlyFailedSockets()
	bob.onlyFailedSockets()
}

// TestBrowserRestartRetriesWithinWindow: a restart that takes 7 s of a
// 9 s resume window. As after a network drop
// (TestBrowserResumeRetriesWithinWindow), no step of the page's backoff
// carries its next try past the window; the restart's notice, which
// comes before the socket closes, must not keep the window from being
// counted. Before, the page tried again at 10.5-11.4 s and found its
// session ended.
func TestBrowserRestartRetriesWithinWindow(t *testing.T) {
	const window = 9 * time.Second
	short := func(o *engine.Options) { o.Resume.Window, o.Resume.ReplayRecent = window, window }
	first, proxy, alice, bob := pairedToRestart(t, short)
	talk(alice, bob, "before the restart")

	drained := time.Now()
	next := restart(t, first, 1500*time.Millisecond, func() {
		alice.do("the restart takes 7 s", chromedp.Sleep(time.Until(drained.Add(7*time.Second))))
	}, short)
	proxy.retarget(next.WS)
	for _, p := range []*person{alice, bob} {
		e := p.expectEntry("a resumed notice", func(e logEntry) bool {
			return e.Kind == "resumed" || e.Kind == "expired"
		})
		if e.Kind != "resumed" {
			t.Errorf("%s, the server back %v after the drain, with a %v window, is told %v%s",
				p.name, time.Since(drained).Round(100*time.Millisecond), window, e, p.logDump())
		}
	}
	talk(alice, bob, "after the restart")
	// The pages tried while no process listened: the browser's words
	// for a socket it could not open then are expected.
	alice.onlyFailedSockets()
	bob.onlyFailedSockets()
}

// pairedToRestart starts a daemon with edit's options and pairs alice's
// and bob's pages on it, both behind a proxy that stands for the address
// they know, which a restart retargets to the next process.
func pairedToRestart(t *testing.T, edit func(*engine.Options)) (first *enginetest.Daemon, proxy *cutProxy, alice, bob *person) {
	t.Helper()
	chromium := setUpBrowserTest(t)
	first = enginetest.Start(t, edit)
	bt := launchBrowser(t, chromium, first)
	proxy = startCutProxy(t, first.WS)
	alice, bob = bt.newPerson("alice"), bt.newPerson("bob")
	pair(alice, bob, proxy.url(), proxy.url())
	return first, proxy, alice, bob
}

// restart hands first's two sessions to a next process, as duetd does
// with resume.state_file: a drain tells each page to reconnect; settle
// later the sessions are written down (hub.Snapshot, hub.WriteState)
// and first stops; down, if given, is the time until the next process,
// which reads them back (hub.ReadState, Parked.Age, hub.Restore) before
// it listens, with edit's options.
func restart(t *testing.T, first *enginetest.Daemon, settle time.Duration, down func(), edit func(*engine.Options)) *enginetest.Daemon {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*enginetest.Timeout)
	defer cancel()
	first.Drain(ctx, 0, nil)
	time.Sleep(settle)
	var state bytes.Buffer
	if err := hub.WriteState(&state, time.Now(), first.Hub.Snapshot()); err != nil {
		t.Fatal(err)
	}
	if err := first.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	at, parked, err := hub.ReadState(&state)
	if err != nil || len(parked) != 2 {
		t.Fatalf("read back %d sessions: %v", len(parked), err)
	}
	if down != nil {
		down()
	}
	for _, p := range parked {
		p.Age(time.Since(at))
	}
	h := hub.New(hub.Options{})
	if n := h.Restore(parked); n != 2 {
		t.Fatalf("restored %d sessions", n)
	}
	return enginetest.Start(t, func(o *engine.Options) {
		o.Hub = h
		if edit != nil {
			edit(o)
		}
	})
}
