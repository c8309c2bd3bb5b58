package web_test

// The conversation log under load: a flood of messages must not freeze
// the page, and the log keeps order, its cap and its place on screen.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

const (
	// floodLines is how many lines the terminal sends in one write: five
	// times what the log keeps (LOG_LIMIT in app.js), so the log is full
	// for most of them.
	floodLines = 5000
	logLimit   = 1000
	// maxStall bounds the longest time the page's main thread may be
	// kept from its timers while it takes the flood: as long as the
	// messages queue up faster than it shows them, the browser runs
	// their events first. A page that measured the log's height for each
	// message was kept for 50 s and more; one that lays it out once a
	// frame, 2 to 8 s on a 2-core machine at a load average of 15 to 25
	// (with another browser test beside it).
	maxStall = 15 * time.Second
	// floodWait bounds the wait for the whole flood to be shown, within
	// browserTestTimeout: a page stalled for longer fails here.
	floodWait = 90 * time.Second
)

// floodProbe installs, in the page, a timer that measures how late it
// runs (a stalled main thread runs it late) and a MutationObserver that
// records the text of each message of the partner's as it enters #log,
// since the log itself keeps only the newest. window.flood(n) resolves,
// on the tick after the nth message, to what was recorded.
const floodProbe = `(() => {
	const seen = [];
	let stall = 0;
	let last = performance.now();
	const waiting = [];
	setInterval(() => {
		const now = performance.now();
		stall = Math.max(stall, now - last);
		last = now;
		for (const w of waiting.splice(0)) {
			if (seen.length >= w.n) w.done({ texts: seen, stall_ms: stall });
			else waiting.push(w);
		}
	}, 100);
	new MutationObserver((records) => {
		for (const r of records) {
			for (const li of r.addedNodes) {
				if (li.matches('li.msg.theirs')) seen.push(li.querySelector('.text').textContent);
			}
		}
	}).observe(document.getElementById('log'), { childList: true });
	window.flood = (n) => new Promise((done) => waiting.push({ n, done }));
})()`

type floodSeen struct {
	Texts   []string `json:"texts"`
	StallMS float64  `json:"stall_ms"`
}

// atBottom is true when #log shows its newest entry, as append() judges.
const atBottom = `(() => {
	const log = document.getElementById('log');
	return log.scrollHeight - log.scrollTop - log.clientHeight < 48;
})()`

// TestBrowserLogFlood: a terminal user sends 5000 lines in one write.
// The page shows every one, in order, keeps the newest 1000 entries,
// follows them to the bottom, and its main thread is never stalled for
// long; a reader who scrolled back stays there.
func TestBrowserLogFlood(t *testing.T) {
	bt := startBrowserTest(t)
	alice := bt.newPerson("alice")
	alice.open(bt.pageURL())
	bob := alice.terminalConnects(alice.login(), "bob")
	alice.do("install the probe", chromedp.Evaluate[chromedp.Void](floodProbe))

	want := make([]string, floodLines)
	for i := range want {
		want[i] = fmt.Sprintf("line %04d", i+1)
	}
	bob.Send(strings.Join(want, "\n"))

	ctx, cancel := context.WithTimeout(alice.ctx, floodWait)
	seen, err := chromedp.Run(ctx, chromedp.Evaluate[floodSeen](fmt.Sprintf(`window.flood(%d)`, floodLines), chromedp.EvalAwaitPromise))
	cancel()
	if err != nil {
		t.Fatalf("the page did not show %d messages within %v: %v", floodLines, floodWait, err)
	}
	stall := time.Duration(seen.StallMS * float64(time.Millisecond))
	t.Logf("longest time between two 100 ms ticks: %v", stall)
	if stall > maxStall {
		t.Errorf("the page stalled for %v while it took %d messages; want under %v", stall, floodLines, maxStall)
	}
	if len(seen.Texts) != floodLines {
		t.Fatalf("%d messages shown, want %d", len(seen.Texts), floodLines)
	}
	for i, text := range seen.Texts {
		if text != want[i] {
			t.Fatalf("message %d shown is %q, want %q", i+1, text, want[i])
		}
	}

	// The log holds the newest entries, up to its cap, in order.
	log := alice.log()
	if len(log) != logLimit {
		t.Fatalf("#log holds %d entries, want %d", len(log), logLimit)
	}
	for i, e := range log {
		if w := want[floodLines-logLimit+i]; !e.has("msg", "theirs") || e.Text != w || e.From != "bob" {
			t.Fatalf("#log entry %d is %v, want bob's %q", i, e, w)
		}
	}
	alice.waitJS("the log follows to its newest entry", atBottom)

	// A reader who scrolled back is not moved by what comes in ...
	alice.do("scroll back", chromedp.Evaluate[chromedp.Void](`document.getElementById('log').scrollTop = 0`))
	bob.Send("one more")
	alice.expectMessage("theirs", "bob", "one more")
	alice.do("let the page draw", chromedp.Evaluate[chromedp.Void](
		`new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))`, chromedp.EvalAwaitPromise))
	if top := eval[float64](alice, `document.getElementById('log').scrollTop`); top != 0 {
		t.Errorf("the log scrolled to %v under a reader who had scrolled back", top)
	}
	// ... until they send a message themselves.
	alice.say("back at the bottom")
	bob.Expect(`^<alice> back at the bottom$`)
	alice.waitJS("the log follows the reader's own message", atBottom)
}
