package web_test

// Browser tests: the page in web/static, served by a real daemon on
// loopback, driven in Debian's Chromium through the DevTools protocol.
// Each person in a test is a tab in a browser context of its own (its own
// storage, its own WebSocket), in one Chromium process that the tests
// share (sharedBrowser), or, for a test that needs Chromium's options
// of its own, one of its own.

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"duet/engine"
	"duet/engine/auth/authtest"
	"duet/engine/enginetest"
)

const (
	// browserTestTimeout bounds one browser test from Chromium's start to
	// its end; when it runs out the browser is killed and every action
	// fails, so a hung page cannot hang the suite.
	browserTestTimeout = 120 * time.Second
	// waitTimeout bounds one action or one wait for the page to show
	// something. It is generous because a busy machine can stall Chromium
	// for many seconds; a test that passes takes a fraction of it.
	waitTimeout = 20 * time.Second
	// pollEvery is how often a wait looks at the page again.
	pollEvery = 40 * time.Millisecond
	// A laptop's browser window, in CSS pixels, unless a test emulates
	// another screen.
	desktopWidth, desktopHeight = 1024, 720
)

// xssText looks like markup and would run script if the page parsed
// messages as HTML.
const xssText = `<img src=x onerror=alert(1)>`

// findChromium returns the path of Chromium, or skips the test when there
// is none; under DUET_REQUIRE_BROWSER=1 (set by CI) a missing browser is a
// failure instead, so a broken install cannot pass as skipped tests.
func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "/usr/bin/chromium"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	const msg = "Chromium not found (no chromium on PATH, no /usr/bin/chromium): " +
		"browser tests need it; scripts/deps.sh installs it (apt-get install chromium)"
	if os.Getenv("DUET_REQUIRE_BROWSER") == "1" {
		t.Fatal(msg + "; DUET_REQUIRE_BROWSER=1 makes that a failure")
	}
	t.Skip(msg)
	return ""
}

// browserTest is one test's daemon and Chromium.
type browserTest struct {
	t      *testing.T
	daemon *enginetest.Daemon
	root   context.Context // the browser, within the test's deadline; its tab is not used by any person
	shots  string          // where screenshots go
}

// startBrowserTest starts a daemon and opens the shared headless
// Chromium to the test. The daemon stops, and the test's tabs close,
// when the test ends, or when browserTestTimeout runs out, whichever is
// first. The daemon has session resume off, as
// resume.window 0 sets it: these tests hold the page to what it does
// without resume (a closed tab ends the conversation; after a drop the
// page logs in again), which it must still do for such a server.
// resume_browser_test.go starts daemons with resume on.
func startBrowserTest(t *testing.T) *browserTest {
	t.Helper()
	chromium := setUpBrowserTest(t)
	return launchBrowser(t, chromium, enginetest.Start(t, func(o *engine.Options) { o.Resume.Window = 0 }))
}

// setUpBrowserTest runs the test beside others and returns the path of
// Chromium, or skips the test.
func setUpBrowserTest(t *testing.T) string {
	t.Helper()
	// Most of a browser test is waiting on Chromium and the network, not
	// computing: two at a time (go test's -parallel is GOMAXPROCS) take
	// about half the time of one after another.
	t.Parallel()
	return findChromium(t)
}

// launchBrowser starts Chromium for a test against the daemon d, which
// must have been started first so that it stops after the browser.
func launchBrowser(t *testing.T, chromium string, d *enginetest.Daemon) *browserTest {
	t.Helper()
	return launchBrowserWith(t, chromium, d)
}

// launchBrowserWith is launchBrowser with more of Chromium's options.
// With none, the test shares the package's one Chromium (sharedBrowser);
// with some, it starts one of its own.
func launchBrowserWith(t *testing.T, chromium string, d *enginetest.Daemon, extra ...chromedp.ExecAllocatorOption) *browserTest {
	t.Helper()
	// Screenshots go to the test's temporary directory, or, to look at
	// them afterwards, to DUET_SCREENSHOT_DIR.
	shots := t.TempDir()
	if dir := os.Getenv("DUET_SCREENSHOT_DIR"); dir != "" {
		shots = filepath.Join(dir, t.Name())
		if err := os.MkdirAll(shots, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bt := &browserTest{t: t, daemon: d, shots: shots}
	// chromedp reports its own errors from its goroutines; t.Logf must
	// not be called once the test is over.
	var logMu sync.Mutex
	testOver := false
	logf := func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		if !testOver {
			t.Logf("chromedp: "+format, args...)
		}
	}
	over := func() {
		logMu.Lock()
		testOver = true
		logMu.Unlock()
	}
	if len(extra) == 0 {
		root, err := sharedBrowser.start(chromium)
		if err != nil {
			t.Fatalf("start Chromium (%s): %v", chromium, err)
		}
		// The test's tabs close when it ends (each person's cleanup,
		// which waits for its tab to close), before the daemon stops; a
		// test that runs past browserTestTimeout has them closed, and
		// every action fails, so a hung page cannot hang the suite.
		ctx, cancel := context.WithTimeout(root, browserTestTimeout)
		sharedBrowser.listen(bt, logf)
		t.Cleanup(func() {
			sharedBrowser.listen(bt, nil)
			cancel()
			over()
		})
		bt.root = ctx
		return bt
	}
	ctx, cancelTimeout := context.WithTimeout(context.Background(), browserTestTimeout)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, chromiumOptions(chromium, t.TempDir(), extra...)...)
	root, cancelRoot := chromedp.NewContext(allocCtx, chromedp.WithErrorf(logf))
	// Cleanups run last-registered first: the browser closes (and its
	// process is waited for) before the profile directory is removed and
	// before the daemon stops.
	t.Cleanup(func() {
		cancelRoot()
		cancelAlloc()
		cancelTimeout()
		over()
	})
	if err := chromedp.Do(root); err != nil {
		t.Fatalf("start Chromium (%s): %v", chromium, err)
	}
	bt.root = root
	return bt
}

// chromiumOptions are the options Chromium runs with, with its profile in
// profile.
func chromiumOptions(chromium, profile string, extra ...chromedp.ExecAllocatorOption) []chromedp.ExecAllocatorOption {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.UserDataDir(profile),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.WindowSize(desktopWidth, desktopHeight),
	)
	return append(opts, extra...)
}

// sharedBrowser is the one Chromium that browser tests with no options of
// their own share. Starting and stopping Chromium took about 2 s of each
// test's 4 to 15; shared, each test still has tabs of its own, each in a
// browser context of its own (its own storage, cookies, permissions and
// WebSockets), which is all a test's persons ever had of their own.
// TestMain stops it.
var sharedBrowser sharedChromium

type sharedChromium struct {
	once    sync.Once
	root    context.Context
	stop    func()
	profile string
	err     error

	mu   sync.Mutex
	logs map[*browserTest]func(string, ...any) // the running tests', for chromedp's errors
}

// start starts the shared Chromium, the first time, and returns its root
// context, whose tab no test uses.
func (sc *sharedChromium) start(chromium string) (context.Context, error) {
	sc.once.Do(func() {
		sc.profile, sc.err = os.MkdirTemp("", "duet-chromium-")
		if sc.err != nil {
			return
		}
		allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), chromiumOptions(chromium, sc.profile)...)
		root, cancelRoot := chromedp.NewContext(allocCtx, chromedp.WithErrorf(sc.logf))
		sc.root = root
		sc.stop = func() {
			cancelRoot() // waits for Chromium to exit
			cancelAlloc()
			_ = os.RemoveAll(sc.profile)
		}
		sc.err = chromedp.Do(root)
	})
	return sc.root, sc.err
}

// listen sends chromedp's errors to bt's log while bt runs (logf), and
// stops (nil). An error of the browser's cannot be told from which
// test's tab it came, so each running test logs it.
func (sc *sharedChromium) listen(bt *browserTest, logf func(string, ...any)) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if logf == nil {
		delete(sc.logs, bt)
		return
	}
	if sc.logs == nil {
		sc.logs = make(map[*browserTest]func(string, ...any))
	}
	sc.logs[bt] = logf
}

func (sc *sharedChromium) logf(format string, args ...any) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	for _, logf := range sc.logs {
		logf(format, args...)
	}
}

// close stops the shared Chromium if it was started.
func (sc *sharedChromium) close() {
	if sc.stop != nil {
		sc.stop()
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	sharedBrowser.close()
	os.Exit(code)
}

// pageURL is the page's address on the test daemon.
func (bt *browserTest) pageURL() string { return "http://" + bt.daemon.WS + "/" }

// person is one user of the page: a tab in a browser context of its own.
type person struct {
	t     *testing.T
	bt    *browserTest
	name  string
	ctx   context.Context
	close context.CancelFunc // closes the tab, as a person closes a window

	mu       sync.Mutex
	problems []string // console errors, exceptions, CSP violations
	dialogs  []string // alert, confirm, prompt: the page never opens one
}

// newPerson opens a tab in a new browser context and records everything
// the page reports that a person would count as broken. Unless the test
// takes them first, those reports fail the test when it ends.
func (bt *browserTest) newPerson(name string) *person {
	bt.t.Helper()
	ctx, cancel := chromedp.NewContext(bt.root, chromedp.WithNewBrowserContext())
	return bt.watch(name, ctx, cancel)
}

// watch makes a person of the tab in ctx, a new one or one a page opened,
// and records its reports as newPerson says.
func (bt *browserTest) watch(name string, ctx context.Context, cancel context.CancelFunc) *person {
	t := bt.t
	t.Helper()
	t.Cleanup(cancel)
	p := &person{t: t, bt: bt, name: name, ctx: ctx, close: cancel}
	if err := chromedp.Listen(ctx, p.record); err != nil {
		t.Fatalf("%s: open a tab: %v", name, err)
	}
	// The window's size less what headless Chromium keeps for itself
	// varies; the viewport should not.
	p.do("size the viewport", chromedp.EmulateViewport(desktopWidth, desktopHeight))
	t.Cleanup(func() {
		if problems := p.takeProblems(); len(problems) > 0 {
			t.Errorf("%s: the page reported problems:\n  %s", name, strings.Join(problems, "\n  "))
		}
		if dialogs := p.takeDialogs(); len(dialogs) > 0 {
			t.Errorf("%s: the page opened dialogs: %q", name, dialogs)
		}
	})
	return p
}

// record runs in the tab's event loop: it must return at once and send no
// command of its own (a dialog is dismissed from another goroutine).
func (p *person) record(ev any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert ||
			ev.Type == runtime.ConsoleAPICalledTypeWarning {
			var args []string
			for _, a := range ev.Args {
				if len(a.Value) > 0 {
					args = append(args, string(a.Value))
				} else {
					args = append(args, a.Description)
				}
			}
			p.problems = append(p.problems, fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " ")))
		}
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		text := d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			text += " " + d.Exception.Description
		}
		p.problems = append(p.problems, fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber+1, text))
	case *cdplog.EventEntryAdded:
		// Errors here include CSP violations ("Refused to ... because it
		// violates the following Content Security Policy directive") and
		// failed loads of the page's own files.
		if e := ev.Entry; e.Level == cdplog.EntryLevelError || e.Level == cdplog.EntryLevelWarning {
			p.problems = append(p.problems, fmt.Sprintf("log %s/%s: %s %s", e.Source, e.Level, e.Text, e.URL))
		}
	case *page.EventJavascriptDialogOpening:
		p.dialogs = append(p.dialogs, string(ev.Type)+": "+ev.Message)
		// A dialog blocks the page until answered; answer it so that the
		// test can go on and report it.
		go chromedp.Call(p.ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
	}
}

func (p *person) takeProblems() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.problems
	p.problems = nil
	return out
}

func (p *person) takeDialogs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.dialogs
	p.dialogs = nil
	return out
}

// do runs actions in the person's tab and fails the test on error.
func (p *person) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("%s: %s: %v%s", p.name, what, err, p.logDump())
	}
}

// eval evaluates a JavaScript expression in the page and decodes its value.
func eval[T any](p *person, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("%s: evaluate %s: %v", p.name, expr, err)
	}
	return v
}

// open loads the page (or a share link) and waits until it is online.
func (p *person) open(url string) {
	p.t.Helper()
	p.do("open "+url, chromedp.Navigate(url))
	p.waitJS("the page is online", `document.getElementById('state').dataset.state === 'online'`)
}

// waitJS waits until a JavaScript expression is true in the page.
func (p *person) waitJS(what, expr string) {
	p.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !eval[bool](p, "!!("+expr+")") {
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: timed out waiting until %s%s", p.name, what, p.logDump())
		}
		time.Sleep(pollEvery)
	}
}

var tokenRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

// login logs in with the form and returns the token the page shows.
func (p *person) login() string {
	p.t.Helper()
	p.submitLogin("")
	return p.waitLoggedIn()
}

// submitLogin fills in the login form, with a password unless it is
// empty, and submits it.
func (p *person) submitLogin(password string) {
	p.t.Helper()
	// The button is enabled once the server's hello has arrived; a form
	// whose submit button is disabled ignores Enter.
	steps := []chromedp.Action[chromedp.Void]{
		chromedp.WaitEnabled(chromedp.ID("login")),
		// After logging out, or a refused login, the box still holds the
		// old name.
		chromedp.Evaluate[chromedp.Void](`document.getElementById('name').value = ''`),
		chromedp.SendKeys(chromedp.ID("name"), p.name),
	}
	if password != "" {
		steps = append(steps, chromedp.SendKeys(chromedp.ID("password"), password))
	}
	p.do("log in", append(steps, chromedp.Click(chromedp.ID("login")))...)
}

// waitLoggedIn waits for the session view and returns the token.
func (p *person) waitLoggedIn() string {
	p.t.Helper()
	p.waitJS("logged in", `/^[0-9a-f]{32}$/.test(document.getElementById('token').textContent)`)
	token := eval[string](p, `document.getElementById('token').textContent`)
	if me := eval[string](p, `document.getElementById('me').textContent`); me != p.name {
		p.t.Fatalf("%s: #me is %q", p.name, me)
	}
	if !tokenRE.MatchString(token) {
		p.t.Fatalf("%s: token %q", p.name, token)
	}
	return token
}

// allowClipboard lets pages of the origin write and read the clipboard
// without asking, as a person who clicked "Allow" would.
func (p *person) allowClipboard(origin string) {
	p.t.Helper()
	id := chromedp.FromContext(p.ctx).BrowserContextID
	for _, name := range []string{"clipboard-write", "clipboard-read"} {
		ctx, cancel := context.WithTimeout(p.ctx, waitTimeout)
		_, err := chromedp.CallBrowser(ctx, browser.SetPermission, browser.SetPermissionParams{
			Permission:       &browser.PermissionDescriptor{Name: name},
			Setting:          browser.PermissionSettingGranted,
			Origin:           strings.TrimSuffix(origin, "/"),
			BrowserContextID: id,
		})
		cancel()
		if err != nil {
			p.t.Fatalf("%s: allow %s: %v", p.name, name, err)
		}
	}
}

// shareLink is the href of #share-link.
func (p *person) shareLink() string {
	p.t.Helper()
	return eval[string](p, `document.getElementById('share-link').href`)
}

// acceptInvite answers the question a share link asks after logging in,
// "Connect to 9f8b1c…?", with a click on Connect. token is the link's.
func (p *person) acceptInvite(token string) {
	p.t.Helper()
	p.expectInvite(token)
	p.do("accept the link's offer", chromedp.Click(chromedp.ID("invite-accept")))
}

// expectInvite waits until the page asks whether to connect to token.
func (p *person) expectInvite(token string) {
	p.t.Helper()
	p.waitJS("asked to connect to "+token[:6], fmt.Sprintf(`(() => {
		const invite = document.getElementById('invite');
		return !invite.hidden && invite.checkVisibility()
			&& document.getElementById('invite-title').textContent === %q;
	})()`, "Connect to "+token[:6]+"…?"))
}

// expectUnpaired checks, after a moment for anything under way to arrive,
// that the page is connected to no one and, from the #log entry numbered
// since on, has neither tried to connect nor been paired.
func (p *person) expectUnpaired(why string, since int) {
	p.t.Helper()
	p.do("settle", chromedp.Sleep(700*time.Millisecond))
	if peer := eval[string](p, `document.getElementById('peer').textContent`); peer != "Not connected to anyone" {
		p.t.Fatalf("%s: %s: the page says %q%s", p.name, why, peer, p.logDump())
	}
	for _, e := range p.log()[since:] {
		if e.Kind == "paired" || strings.HasPrefix(e.Text, "Connecting to") {
			p.t.Fatalf("%s: %s: %v%s", p.name, why, e, p.logDump())
		}
	}
}

// connectTo connects with the form, as someone who was sent a token.
func (p *person) connectTo(token string) {
	p.t.Helper()
	p.do("connect",
		// A token that failed stays in the box to be corrected; start over.
		chromedp.Evaluate[chromedp.Void](`document.getElementById('connect-token').value = ''`),
		chromedp.SendKeys(chromedp.ID("connect-token"), token),
		chromedp.Click(chromedp.ID("connect")),
	)
}

// say enters a message and sends it with the Enter key. The text goes in
// as one insertion, as from a paste or an input method: typing it key by
// key costs three round trips to the browser per character.
func (p *person) say(text string) {
	p.t.Helper()
	p.typeAndEnter(text)
	p.waitJS("the message box is empty again", `document.getElementById('message').value === ''`)
}

// typeAndEnter enters text in the message box, as say does, and presses
// Enter, without waiting to see it sent.
func (p *person) typeAndEnter(text string) {
	p.t.Helper()
	// As a person would, it waits for the box to take input: a paired
	// event may still be on its way to this page when the other shows
	// the pairing.
	p.waitJS("the message box enabled", `!document.getElementById('message').disabled`)
	p.do("say "+text,
		chromedp.Focus(chromedp.ID("message")),
		chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := cdp.Call(ctx, t, input.InsertText, input.InsertTextParams{Text: text})
			return err
		}),
		chromedp.SendKeys(chromedp.ID("message"), "\r"),
	)
}

// waitPaired waits until the page says who it talks with.
func (p *person) waitPaired(peer string) {
	p.t.Helper()
	p.waitJS("paired with "+peer, fmt.Sprintf(`document.getElementById('peer').textContent === %q`, "Talking with "+peer))
	p.expectEntry("a paired notice", func(e logEntry) bool { return e.has("notice") && e.Kind == "paired" })
}

// logEntry is one li of #log as the page drew it.
type logEntry struct {
	Class  string `json:"class"`
	From   string `json:"from"`
	Text   string `json:"text"`
	Kind   string `json:"kind"`
	Reason string `json:"reason"`
	Code   string `json:"code"`
}

// has reports whether the entry has every one of the classes.
func (e logEntry) has(classes ...string) bool {
	fields := strings.Fields(e.Class)
	for _, c := range classes {
		if !slices.Contains(fields, c) {
			return false
		}
	}
	return true
}

func (e logEntry) String() string {
	s := fmt.Sprintf("[%s]", e.Class)
	for _, kv := range [][2]string{{"from", e.From}, {"kind", e.Kind}, {"reason", e.Reason}, {"code", e.Code}} {
		if kv[1] != "" {
			s += " " + kv[0] + "=" + kv[1]
		}
	}
	return s + fmt.Sprintf(" %q", e.Text)
}

const readLog = `[...document.querySelectorAll('#log > li')].map((li) => ({
	class: li.className,
	from: li.querySelector('.from')?.textContent ?? '',
	text: li.querySelector('.text')?.textContent ?? '',
	kind: li.dataset.kind ?? '',
	reason: li.dataset.reason ?? '',
	code: li.dataset.code ?? '',
}))`

func (p *person) log() []logEntry {
	p.t.Helper()
	return eval[[]logEntry](p, readLog)
}

// logDump is the page's log for a failure message; empty if it cannot
// be read (the browser may be what failed).
func (p *person) logDump() string {
	ctx, cancel := context.WithTimeout(p.ctx, time.Second)
	defer cancel()
	entries, err := chromedp.Run(ctx, chromedp.Evaluate[[]logEntry](readLog))
	if err != nil {
		return ""
	}
	var b strings.Builder
	b.WriteString("\n" + p.name + "'s #log:")
	for _, e := range entries {
		b.WriteString("\n  " + e.String())
	}
	return b.String()
}

// expectEntry waits until #log has an entry that matches.
func (p *person) expectEntry(what string, match func(logEntry) bool) logEntry {
	p.t.Helper()
	return p.expectEntryWithin(waitTimeout, what, match)
}

// expectEntryWithin is expectEntry, waiting up to within.
func (p *person) expectEntryWithin(within time.Duration, what string, match func(logEntry) bool) logEntry {
	p.t.Helper()
	deadline := time.Now().Add(within)
	for {
		for _, e := range p.log() {
			if match(e) {
				return e
			}
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: no %s in #log%s", p.name, what, p.logDump())
		}
		time.Sleep(pollEvery)
	}
}

// expectMessage waits for a chat message with exactly this text: "mine"
// from the person, or "theirs" from the peer.
func (p *person) expectMessage(side, from, text string) {
	p.t.Helper()
	e := p.expectEntry(fmt.Sprintf("%s message %q from %s", side, text, from), func(e logEntry) bool {
		return e.has("msg", side) && e.Text == text && e.From == from
	})
	if e.has("failed") {
		p.t.Fatalf("%s: message %q marked as failed: %v", p.name, text, e)
	}
}

// screenshot saves the whole page to the test's screenshot directory
// and returns the PNG.
func (p *person) screenshot(name string) []byte {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Fatalf("%s: screenshot: %v", p.name, err)
	}
	path := filepath.Join(p.bt.shots, p.name+"-"+name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("screenshot: %s", path)
	return png
}

// linkRE is a share link's fragment: the token, then the link secret of
// end-to-end encryption, 16 random bytes in base64url (docs/E2E.md).
var linkRE = regexp.MustCompile(`^#([0-9a-f]{32})\.([A-Za-z0-9_-]{22})$`)

// linkParts splits a share link of the test's page into its token and
// secret, failing the test if it is not one.
func linkParts(t *testing.T, bt *browserTest, link string) (token, secret string) {
	t.Helper()
	m := linkRE.FindStringSubmatch(strings.TrimPrefix(link, bt.pageURL()))
	if !strings.HasPrefix(link, bt.pageURL()+"#") || m == nil {
		t.Fatalf("share link %q is not %s#TOKEN.SECRET", link, bt.pageURL())
	}
	return m[1], m[2]
}

// TestBrowserPairByShareLink: two people pair through the share link,
// talk both ways, and one leaves.
func TestBrowserPairByShareLink(t *testing.T) {
	bt := startBrowserTest(t)
	alice, bob := bt.newPerson("alice"), bt.newPerson("bob")

	alice.open(bt.pageURL())
	aliceToken := alice.login()
	link := alice.shareLink()
	if token, _ := linkParts(t, bt, link); token != aliceToken {
		t.Fatalf("share link %q, want the token %s", link, aliceToken)
	}

	// Whoever opens the link and logs in is asked, and connected on a
	// click, not before.
	bob.open(link)
	bob.expectEntry("the share-link notice", func(e logEntry) bool {
		return e.has("notice") && strings.Contains(e.Text, "You opened a link to talk with someone ("+aliceToken[:6]+"…)")
	})
	// The token leaves the address bar as the page loads, so a reload or
	// a bookmark does not offer it again.
	if hash := eval[string](bob, `location.hash`); hash != "" {
		t.Errorf("the link's token stays in the address bar: %q", hash)
	}
	bob.login()
	bob.expectInvite(aliceToken)
	bob.screenshot("invite")
	if focused := eval[string](bob, `document.activeElement.id`); focused != "invite-accept" {
		t.Errorf("after logging in from a link, focus is on #%s, want #invite-accept", focused)
	}
	bob.expectUnpaired("logged in from a link, before answering it", 0)
	alice.expectUnpaired("while bob has not answered the link", 0)
	bob.do("accept the link's offer", chromedp.Click(chromedp.ID("invite-accept")))
	bob.waitPaired("alice")
	alice.waitPaired("bob")
	bob.waitJS("the offer gone", `document.getElementById('invite').hidden`)

	conversation := []struct {
		from, to *person
		text     string
	}{
		{alice, bob, "hi bob, you found the link"},
		{bob, alice, "hello alice! this was quick"},
		{alice, bob, "shall we meet at 6?"},
		{bob, alice, "6 works. See you at the café"},
	}
	for _, m := range conversation {
		m.from.say(m.text)
		m.from.expectMessage("mine", "You", m.text)
		m.to.expectMessage("theirs", m.from.name, m.text)
	}
	bob.screenshot("chat")
	// The picture in the README: without the focus ring of the message
	// box, which the last Enter left there.
	alice.do("blur", chromedp.Evaluate[chromedp.Void](`document.activeElement.blur()`))
	png := alice.screenshot("chat")
	if os.Getenv("DUET_UPDATE_SCREENSHOT") == "1" {
		const docShot = "../docs/screenshot.png"
		if err := os.WriteFile(docShot, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", docShot)
	}

	bob.do("leave", chromedp.Click(chromedp.ID("leave")))
	bob.expectEntry("a left notice", func(e logEntry) bool { return e.has("notice") && e.Kind == "left" })
	e := alice.expectEntry("a peer_left notice", func(e logEntry) bool { return e.has("notice") && e.Kind == "peer_left" })
	if e.Reason != "left" || e.Text != "bob left the conversation." {
		t.Fatalf("peer_left notice: %v", e)
	}
	alice.waitJS("unpaired", `document.getElementById('peer').textContent === 'Not connected to anyone'
		&& document.getElementById('message').disabled`)
	alice.screenshot("after-leave")
}

// terminalConnects logs name in on the line port and connects it to p,
// whose token is token; both are told they are paired.
func (p *person) terminalConnects(token, name string) *enginetest.LineClient {
	p.t.Helper()
	lc := p.bt.daemon.DialLine(p.t).Login(name)
	lc.Send("/connect " + token)
	lc.Expect(`^\* you are connected with ` + regexp.QuoteMeta(p.name) + `$`)
	p.waitPaired(name)
	return lc
}

// TestBrowserWithLineClient: a browser and a netcat-style client talk
// both ways.
func TestBrowserWithLineClient(t *testing.T) {
	bt := startBrowserTest(t)
	alice := bt.newPerson("alice")
	alice.open(bt.pageURL())
	bob := alice.terminalConnects(alice.login(), "bob")

	bob.Send("hello from the terminal")
	alice.expectMessage("theirs", "bob", "hello from the terminal")

	alice.say("hi bob, from the browser")
	alice.expectMessage("mine", "You", "hi bob, from the browser")
	bob.Expect(`^<alice> hi bob, from the browser$`)

	// Shift+Enter makes a message of two lines; netcat shows each as a
	// line of its own.
	alice.do("type two lines", chromedp.Evaluate[chromedp.Void](`(() => {
		const m = document.getElementById('message');
		m.value = 'first line\nsecond line';
		m.dispatchEvent(new Event('input', { bubbles: true }));
	})()`), chromedp.Click(chromedp.ID("send")))
	alice.expectMessage("mine", "You", "first line\nsecond line")
	bob.Expect(`^<alice> first line$`)
	bob.Expect(`^<alice> second line$`)

	bob.Send("/leave")
	bob.Expect(`^\* you left alice$`)
	e := alice.expectEntry("a peer_left notice", func(e logEntry) bool { return e.Kind == "peer_left" })
	if e.Reason != "left" || !strings.Contains(e.Text, "bob left") {
		t.Fatalf("peer_left notice: %v", e)
	}
	alice.screenshot("with-netcat")
}

// TestBrowserKnowsTheServersMaxText: the page checks a message against
// the server's limits.max_text, which the hello tells it, not against its
// own default: past a lowered limit it says the limit and keeps the text,
// and a message at the limit goes. (Before, the hello did not carry the
// limit: the page sent a message past it, to be refused, and never said
// what the limit was; under a raised one it refused messages the server
// would take.)
func TestBrowserKnowsTheServersMaxText(t *testing.T) {
	const maxText = 100
	bt := launchBrowser(t, setUpBrowserTest(t), enginetest.Start(t, func(o *engine.Options) {
		o.Resume.Window = 0
		o.Limits.MaxText = maxText
	}))
	alice := bt.newPerson("alice")
	alice.open(bt.pageURL())
	bob := alice.terminalConnects(alice.login(), "bob")

	long := strings.Repeat("x", maxText+1)
	alice.typeAndEnter(long)
	e := alice.expectEntry("the too_long error", func(e logEntry) bool { return e.Code == "too_long" })
	if want := fmt.Sprintf("Message too long: %d bytes, the limit is %d. It was not sent.", maxText+1, maxText); e.Text != want {
		t.Errorf("the page says %q, want %q", e.Text, want)
	}
	alice.waitJS("the text kept", fmt.Sprintf(`document.getElementById('message').value === %q`, long))
	alice.do("clear the box", chromedp.Evaluate[chromedp.Void](`document.getElementById('message').value = ''`))
	alice.say(long[1:])
	bob.Expect(`^<alice> x{100}$`)
}

// TestBrowserRoomFull: a third person who tries the token of someone who
// is talking is told Room is Full, and the pair is not disturbed.
func TestBrowserRoomFull(t *testing.T) {
	bt := startBrowserTest(t)
	alice, bob, carol := bt.newPerson("alice"), bt.newPerson("bob"), bt.newPerson("carol")
	for _, p := range []*person{alice, bob, carol} {
		p.open(bt.pageURL())
	}
	aliceToken := alice.login()
	bob.login()
	carol.login()

	bob.connectTo(aliceToken)
	bob.waitPaired("alice")
	alice.waitPaired("bob")

	carol.connectTo(aliceToken)
	e := carol.expectEntry("a room_full error", func(e logEntry) bool { return e.has("notice", "error") && e.Code != "" })
	if e.Code != "room_full" || !strings.Contains(e.Text, "Room is Full") {
		t.Fatalf("carol sees %v, want room_full with the text Room is Full", e)
	}
	if n := eval[int](carol, `document.querySelectorAll('#log li.notice.error[data-code="room_full"]').length`); n != 1 {
		t.Fatalf("%d room_full entries", n)
	}
	carol.waitJS("still not connected", `document.getElementById('peer').textContent === 'Not connected to anyone'
		&& !document.getElementById('connect').disabled`)
	carol.screenshot("room-full")

	// The pair goes on as before, and was not told.
	bob.say("did someone knock?")
	alice.expectMessage("theirs", "bob", "did someone knock?")
	for _, p := range []*person{alice, bob} {
		for _, e := range p.log() {
			if e.has("error") || strings.Contains(e.Text, "carol") {
				t.Errorf("%s was told of carol: %v", p.name, e)
			}
		}
	}
}

// TestBrowserRoomFullByLink: a share link to someone already talking
// gets Room is Full on Connect, and the keyboard's focus is not lost
// with the offer that went away: it is on the token box, where the
// person can try again.
func TestBrowserRoomFullByLink(t *testing.T) {
	bt := startBrowserTest(t)
	alice, bob, carol := bt.newPerson("alice"), bt.newPerson("bob"), bt.newPerson("carol")
	alice.open(bt.pageURL())
	bob.open(bt.pageURL())
	aliceToken := alice.login()
	link := alice.shareLink()
	bob.login()
	bob.connectTo(aliceToken)
	bob.waitPaired("alice")

	carol.open(link)
	carol.login()
	carol.waitJS("the offer's Connect has the focus", `document.activeElement === document.getElementById('invite-accept')`)
	carol.acceptInvite(aliceToken)
	e := carol.expectEntry("a room_full error", func(e logEntry) bool { return e.has("notice", "error") && e.Code != "" })
	if e.Code != "room_full" {
		t.Fatalf("carol sees %v, want room_full", e)
	}
	if id := eval[string](carol, `document.activeElement.id || document.activeElement.tagName`); id != "connect-token" {
		t.Errorf("after Room is Full the focus is on %q, want connect-token", id)
	}
}

// TestBrowserMessagesAreText: markup in a message, from netcat or from
// another browser, is shown as the characters it is and runs nothing.
func TestBrowserMessagesAreText(t *testing.T) {
	bt := startBrowserTest(t)
	alice, bob := bt.newPerson("alice"), bt.newPerson("bob")
	alice.open(bt.pageURL())
	aliceToken := alice.login()

	mallory := bt.daemon.DialLine(t).Login("mallory")
	mallory.Send("/connect " + aliceToken)
	mallory.Expect(`^\* you are connected with alice$`)
	alice.waitPaired("mallory")
	mallory.Send(xssText)
	alice.expectMessage("theirs", "mallory", xssText)
	alice.say(xssText)
	alice.expectMessage("mine", "You", xssText)
	mallory.Expect("^<alice> " + regexp.QuoteMeta(xssText) + "$")
	mallory.Send("/leave")
	alice.expectEntry("a peer_left notice", func(e logEntry) bool { return e.Kind == "peer_left" })

	bob.open(alice.shareLink())
	bob.login()
	bob.acceptInvite(aliceToken)
	bob.waitPaired("alice")
	alice.waitPaired("bob")
	bob.say(xssText)
	bob.expectMessage("mine", "You", xssText)
	alice.expectMessage("theirs", "bob", xssText)

	for _, p := range []*person{alice, bob} {
		// Had the text been parsed, the img would exist, and its error
		// event (the browser fetches /x, which is a 404) would have run
		// the handler or been refused by the CSP; a short wait lets such
		// an event fire before the checks.
		p.do("wait for stray events", chromedp.Sleep(300*time.Millisecond))
		if n := eval[int](p, `document.querySelectorAll('#log img').length`); n != 0 {
			t.Errorf("%s: %d img elements in #log", p.name, n)
		}
		if n := eval[int](p, `document.images.length`); n != 1 {
			t.Errorf("%s: %d images in the page, want only the logo", p.name, n)
		}
		texts := eval[[]string](p, `[...document.querySelectorAll('#log .msg .text')].map((e) => e.textContent)`)
		for _, s := range texts {
			if s != xssText {
				t.Errorf("%s: message shown as %q, want %q", p.name, s, xssText)
			}
		}
		if len(texts) == 0 {
			t.Errorf("%s: no messages", p.name)
		}
		p.screenshot("markup")
	}
	// The dialogs and CSP reports are checked as the test ends.
}

// TestBrowserPageLoadsClean: the page loads with no console error, no
// exception and no CSP violation, and the listener does see a violation
// when there is one.
func TestBrowserPageLoadsClean(t *testing.T) {
	bt := startBrowserTest(t)
	alice := bt.newPerson("alice")
	// By name rather than address, as people type it: the WebSocket's
	// Origin and Host are then names too, and must still match.
	alice.open(strings.Replace(bt.pageURL(), "127.0.0.1", "localhost", 1))
	alice.login()
	// Anything logged after load (a late asset, the favicon) has arrived
	// once the page has been online and logged in for a moment.
	alice.do("settle", chromedp.Sleep(200*time.Millisecond))
	alice.screenshot("loaded")
	if problems := alice.takeProblems(); len(problems) > 0 {
		t.Errorf("the page reported problems:\n  %s", strings.Join(problems, "\n  "))
	}

	// Reloading revalidates index.html and takes the versioned assets
	// from the cache: the daemon's 304s and keep-alive must serve a page
	// that works as well as the first time.
	alice.do("reload", chromedp.Reload())
	alice.waitJS("online again", `document.getElementById('state').dataset.state === 'online'`)
	fetched := eval[[]string](alice, `performance.getEntriesByType('resource')
		.filter((e) => e.name.includes('?v=') && e.transferSize > 0).map((e) => e.name)`)
	if len(fetched) > 0 {
		t.Errorf("after a reload these versioned assets were fetched again, not taken from the cache: %q", fetched)
	}
	if problems := alice.takeProblems(); len(problems) > 0 {
		t.Errorf("after a reload the page reported problems:\n  %s", strings.Join(problems, "\n  "))
	}

	// The control: an image from another origin (a loopback address, so
	// nothing leaves the machine even were it let through) is refused by
	// img-src 'self', and that refusal is reported.
	alice.do("break the CSP", chromedp.Evaluate[chromedp.Void](`(() => {
		const img = document.createElement('img');
		img.src = 'http://127.0.0.2:9/blocked.png';
		document.body.append(img);
	})()`))
	deadline := time.Now().Add(waitTimeout)
	for {
		problems := alice.takeProblems()
		if strings.Contains(strings.Join(problems, "\n"), "Content Security Policy") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a CSP violation was not reported (got %q)", problems)
		}
		time.Sleep(pollEvery)
	}
}

// TestBrowserNarrowScreen: on a 360px-wide phone the main controls are
// on screen, and the page never scrolls sideways.
func TestBrowserNarrowScreen(t *testing.T) {
	bt := startBrowserTest(t)
	alice := bt.newPerson("alice")
	alice.do("emulate a phone", chromedp.EmulateViewport(360, 740, chromedp.EmulateMobile, chromedp.EmulatePortrait))
	alice.open(bt.pageURL())
	alice.expectOnScreen("name", "login", "state")
	alice.screenshot("narrow-login")

	token := alice.login()
	alice.expectOnScreen("me", "logout", "token", "copy", "copy-link", "connect-token", "connect")

	bob := alice.terminalConnects(token, "bob")
	bob.Send("hi from a terminal")
	alice.expectMessage("theirs", "bob", "hi from a terminal")
	alice.say("hi from a phone")
	bob.Expect(`^<alice> hi from a phone$`)
	// A long word (a link, a token) wraps inside its bubble.
	long := "https://example.com/" + strings.Repeat("0123456789abcdef", 12)
	bob.Send(long)
	alice.expectMessage("theirs", "bob", long)
	alice.expectOnScreen("peer", "leave", "log", "message", "send")
	if wide := eval[[]string](alice, `(() => {
		const log = document.getElementById('log').getBoundingClientRect();
		return [...document.querySelectorAll('#log li')]
			.filter((li) => li.getBoundingClientRect().right > log.right + 0.5)
			.map((li) => li.textContent.slice(0, 40));
	})()`); len(wide) > 0 {
		t.Errorf("log entries wider than the log: %q", wide)
	}
	alice.screenshot("narrow-chat")
}

// expectOnScreen checks that each element is rendered, inside the
// viewport, and not covered by something else, and that the page is no
// wider than the screen.
func (p *person) expectOnScreen(ids ...string) {
	p.t.Helper()
	const check = `((ids) => {
		const bad = [];
		const vw = document.documentElement.clientWidth, vh = window.innerHeight;
		if (document.documentElement.scrollWidth > vw) {
			bad.push('the page is ' + document.documentElement.scrollWidth + 'px wide, the screen ' + vw + 'px');
		}
		for (const id of ids) {
			const el = document.getElementById(id);
			if (!el) { bad.push(id + ': missing'); continue; }
			const r = el.getBoundingClientRect();
			const cs = getComputedStyle(el);
			if (!el.checkVisibility({ visibilityProperty: true, opacityProperty: true }) || r.width < 1 || r.height < 1) {
				bad.push(id + ': not visible');
				continue;
			}
			if (r.left < 0 || r.top < 0 || r.right > vw + 0.5 || r.bottom > vh + 0.5) {
				bad.push(id + ': outside the screen at ' + [r.left, r.top, r.right, r.bottom].map(Math.round).join(','));
				continue;
			}
			const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
			if (hit && hit !== el && !el.contains(hit) && !hit.contains(el)) {
				bad.push(id + ': covered by ' + hit.tagName + (hit.id ? '#' + hit.id : ''));
			}
		}
		return bad;
	})(%s)`
	list := `["` + strings.Join(ids, `","`) + `"]`
	if bad := eval[[]string](p, fmt.Sprintf(check, list)); len(bad) > 0 {
		p.t.Errorf("%s at %dpx: %s", p.name, eval[int](p, `window.innerWidth`), strings.Join(bad, "; "))
	}
}

// TestBrowserSessionControls: a new token retires the old link, Shift+Enter
// writes a line break, a closed tab ends the conversation, and logging out
// frees the name for logging in again.
func TestBrowserSessionControls(t *testing.T) {
	bt := startBrowserTest(t)
	alice, bob := bt.newPerson("alice"), bt.newPerson("bob")
	alice.open(bt.pageURL())
	oldToken := alice.login()
	oldLink := alice.shareLink()

	// The copy buttons put the token and the link on the clipboard.
	alice.allowClipboard(bt.pageURL())
	for _, c := range []struct{ button, want string }{{"copy", oldToken}, {"copy-link", oldLink}} {
		alice.do("copy", chromedp.Click(chromedp.ID(c.button)))
		alice.waitJS(c.button+" says Copied", fmt.Sprintf(`document.getElementById(%q).textContent === 'Copied'`, c.button))
		ctx, cancel := context.WithTimeout(alice.ctx, waitTimeout)
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](`navigator.clipboard.readText()`, chromedp.EvalAwaitPromise))
		cancel()
		if err != nil || got != c.want {
			t.Fatalf("after #%s the clipboard holds %q (%v), want %q", c.button, got, err, c.want)
		}
	}

	alice.do("new token", chromedp.Click(chromedp.ID("newtoken")))
	alice.waitJS("a new token", fmt.Sprintf(`(() => {
		const t = document.getElementById('token').textContent;
		return /^[0-9a-f]{32}$/.test(t) && t !== %q;
	})()`, oldToken))
	newToken := eval[string](alice, `document.getElementById('token').textContent`)
	_, oldSecret := linkParts(t, bt, oldLink)
	if token, secret := linkParts(t, bt, alice.shareLink()); token != newToken || secret == oldSecret {
		t.Fatalf("share link %q after newtoken %s: a new token gets a new secret", alice.shareLink(), newToken)
	}

	// The old link no longer works.
	bob.open(oldLink)
	bob.login()
	bob.acceptInvite(oldToken)
	e := bob.expectEntry("an error", func(e logEntry) bool { return e.has("error") })
	if e.Code != "unknown_token" {
		t.Fatalf("the old link gave %v, want unknown_token", e)
	}
	// A link opened in the same tab, already logged in, changes only the
	// fragment: the page acts on a link when it loads, never on a
	// hashchange, which another page could have caused.
	newLink := bt.pageURL() + "#" + newToken
	before := len(bob.log())
	bob.do("open the new link in the same tab", chromedp.Evaluate[chromedp.Void](
		fmt.Sprintf(`location.href = %q`, newLink)))
	bob.expectUnpaired("the fragment changed under a loaded page", before)
	if !eval[bool](bob, `document.getElementById('invite').hidden`) {
		t.Error("a fragment changed after load was offered")
	}
	// Pasted into the connect box, the link works.
	bob.connectTo(newLink)
	bob.waitPaired("alice")
	alice.waitPaired("bob")

	// Shift+Enter is a line break in the message, Enter sends.
	alice.do("type two lines",
		chromedp.SendKeys(chromedp.ID("message"), "line one"),
		chromedp.KeyEvent("\r", chromedp.KeyModifiers(chromedp.ModifierShift)),
		chromedp.SendKeys(chromedp.ID("message"), "line two\r"),
	)
	alice.expectMessage("mine", "You", "line one\nline two")
	bob.expectMessage("theirs", "alice", "line one\nline two")

	// Closing the tab drops bob's WebSocket; alice is told at once.
	bob.close()
	e = alice.expectEntry("a peer_left notice", func(e logEntry) bool { return e.Kind == "peer_left" })
	if e.Reason != "disconnected" || e.Text != "bob disconnected." {
		t.Fatalf("peer_left notice: %v", e)
	}

	alice.do("log out", chromedp.Click(chromedp.ID("logout")))
	alice.waitJS("the login form", `!document.getElementById('login-view').hidden
		&& document.getElementById('session-view').hidden`)
	alice.expectEntry("a logged-out notice", func(e logEntry) bool { return e.Text == "Logged out." })
	if token := alice.login(); token == newToken || token == oldToken {
		t.Fatalf("logged in again with an old token %s", token)
	}
	alice.screenshot("logged-in-again")
}

// TestBrowserReconnects: when the server shuts down the page says so,
// and when a server is back on the same address the page reconnects and
// logs in again under the same name by itself.
func TestBrowserReconnects(t *testing.T) {
	bt := startBrowserTest(t)
	alice := bt.newPerson("alice")
	alice.open(bt.pageURL())
	oldToken := alice.login()
	alice.terminalConnects(oldToken, "bob")

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := bt.daemon.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	alice.expectEntry("a shutdown notice", func(e logEntry) bool { return e.Kind == "shutdown" })
	e := alice.expectEntry("a connection notice", func(e logEntry) bool { return e.Kind == "connection" })
	if !strings.Contains(e.Text, "logged in again as alice") {
		t.Errorf("connection notice: %v", e)
	}
	// The end of the conversation is told either by bob's peer_left
	// (his connection closed first) or with the closed connection.
	alice.expectEntry("the end of the conversation", func(e logEntry) bool {
		return e.Kind == "peer_left" && e.Reason == "shutdown" ||
			e.Kind == "connection" && strings.Contains(e.Text, "conversation with bob has ended")
	})
	alice.waitJS("reconnecting", `document.getElementById('state').dataset.state === 'reconnecting'
		&& !document.getElementById('reconnect').hidden
		&& document.getElementById('peer').textContent === 'Not connected to anyone'`)
	alice.screenshot("server-gone")

	enginetest.Start(t, func(o *engine.Options) {
		o.WSListen = bt.daemon.WS
		o.TCPListen = "127.0.0.1:0"
	})
	// "Retry now" instead of sitting out the back-off keeps the test
	// short. The button is hidden while an attempt is under way, so it is
	// pressed from script only if it is there; the timer gets there too.
	alice.do("retry now", chromedp.Evaluate[chromedp.Void](`(() => {
		const retry = document.getElementById('reconnect');
		if (!retry.hidden) retry.click();
	})()`))
	alice.waitJS("online again", `document.getElementById('state').dataset.state === 'online'`)
	alice.expectEntry("a logged-in-again notice", func(e logEntry) bool {
		return strings.HasPrefix(e.Text, "Logged in again as alice.")
	})
	alice.waitJS("a new token", fmt.Sprintf(`(() => {
		const t = document.getElementById('token').textContent;
		return /^[0-9a-f]{32}$/.test(t) && t !== %q;
	})()`, oldToken))
	alice.screenshot("back")

	// While the server was away the browser's own attempts to connect
	// failed, and it says so in the console; nothing else may appear.
	for _, p := range alice.takeProblems() {
		if !strings.Contains(p, "WebSocket connection to") {
			t.Errorf("the page reported: %s", p)
		}
	}
}

// TestBrowserRefusedTellsWhy: a server that refuses the page's
// connection (here: too many connections from its address, which the
// page's own connections count toward) says why, and the page shows it,
// once however often it tries again, not that it cannot reach the
// server; once there is room it is back by itself.
func TestBrowserRefusedTellsWhy(t *testing.T) {
	chromium := setUpBrowserTest(t)
	const perIP = 8
	d := enginetest.Start(t, func(o *engine.Options) { o.Limits.MaxConnsPerIP = perIP })
	bt := launchBrowser(t, chromium, d)
	proxy := startCutProxy(t, d.WS)
	alice := bt.newPerson("alice")
	alice.open(proxy.url())
	alice.login()
	proxy.cut()
	alice.waitJS("reconnecting", `document.getElementById('state').dataset.state === 'reconnecting'`)
	for deadline := time.Now().Add(waitTimeout); d.Conns() > 0; time.Sleep(pollEvery) {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon still holds %d connections after the page's were cut", d.Conns())
		}
	}
	// Terminals from the page's address take all its room.
	greet := func() (net.Conn, string) {
		c, err := net.DialTimeout("tcp", d.TCP, enginetest.Timeout)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(enginetest.Timeout))
		l, _ := bufio.NewReader(c).ReadString('\n')
		return c, l
	}
	var held []net.Conn
	for range perIP {
		c, l := greet()
		if !strings.HasPrefix(l, "* welcome") {
			t.Fatalf("a terminal within the limit is greeted %q", l)
		}
		held = append(held, c)
	}
	if c, l := greet(); !strings.HasPrefix(l, "! too_many_connections:") {
		t.Fatalf("a terminal past the limit is greeted %q", l)
	} else {
		c.Close()
	}

	proxy.restore()
	tries := proxy.carried.Load()
	alice.do("back online", chromedp.Evaluate[chromedp.Void](`window.dispatchEvent(new Event('online'))`))
	e := alice.expectEntry("the refusal", func(e logEntry) bool { return e.has("error") })
	if e.Code != "too_many_connections" || e.Text != "too many connections from your address" {
		t.Errorf("alice is told %v", e)
	}
	// The page goes on trying, with back-off.
	for deadline := time.Now().Add(waitTimeout); proxy.carried.Load() < tries+3; time.Sleep(pollEvery) {
		if time.Now().After(deadline) {
			t.Fatalf("the page tried %d times in %v", proxy.carried.Load()-tries, waitTimeout)
		}
	}
	alice.waitJS("reconnecting", `document.getElementById('state').dataset.state === 'reconnecting'`)
	told := 0
	for _, e := range alice.log() {
		if e.has("error") {
			told++
		}
		if strings.Contains(e.Text, "Cannot reach the server") {
			t.Errorf("alice is told %v", e)
		}
	}
	if told != 1 {
		t.Errorf("alice is told of the refusal %d times in %d tries%s", told, proxy.carried.Load()-tries, alice.logDump())
	}

	for _, c := range held {
		c.Close()
	}
	alice.do("back online", chromedp.Evaluate[chromedp.Void](`window.dispatchEvent(new Event('online'))`))
	e = alice.expectEntry("a resumed notice", func(e logEntry) bool { return e.Kind == "resumed" })
	if e.Text != "Reconnected." {
		t.Errorf("alice is told %v", e)
	}
	alice.waitJS("online", `document.getElementById('state').dataset.state === 'online'`)
	alice.onlyFailedSockets()
}

// TestBrowserOtherSiteCannotConnect: a page from another origin cannot
// open a WebSocket to the daemon and act as whoever visits it.
func TestBrowserOtherSiteCannotConnect(t *testing.T) {
	bt := startBrowserTest(t)
	other := anotherSite(t)

	mallory := bt.newPerson("mallory")
	mallory.do("open another site", chromedp.Navigate(other))
	try := fmt.Sprintf(`new Promise((resolve) => {
		const ws = new WebSocket('ws://%s/ws');
		ws.onopen = () => { ws.close(); resolve('opened'); };
		ws.onmessage = (ev) => resolve('message: ' + ev.data);
		ws.onclose = () => resolve('refused');
	})`, bt.daemon.WS)
	ctx, cancel := context.WithTimeout(mallory.ctx, waitTimeout)
	defer cancel()
	got, err := chromedp.Run(ctx, chromedp.Evaluate[string](try, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	if got != "refused" {
		t.Fatalf("a WebSocket from %s to the daemon: %s", other, got)
	}
	// Chromium reports the refused handshake in the console; that is the
	// point of the test, and the only report allowed.
	for _, p := range mallory.takeProblems() {
		if !strings.Contains(p, "WebSocket connection to") {
			t.Errorf("the page reported: %s", p)
		}
	}
}

// anotherSite serves a page of its own on loopback, on another origin
// than the daemon's, and returns its address.
func anotherSite(t *testing.T) string {
	t.Helper()
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, "<!doctype html><title>another site</title>")
	}))
	t.Cleanup(other.Close)
	return other.URL
}

// TestBrowserAccounts: with accounts, the page asks for a password, shows
// a wrong one refused, and logs in with the right one; a share link
// works as in open mode.
func TestBrowserAccounts(t *testing.T) {
	chromium := setUpBrowserTest(t)
	users := authtest.Users(t, "alice", "correct horse", "bob", "battery staple")
	d, _ := enginetest.StartAccounts(t, users, nil)
	bt := launchBrowser(t, chromium, d)
	alice, bob := bt.newPerson("alice"), bt.newPerson("bob")

	alice.open(bt.pageURL())
	alice.expectOnScreen("name", "password", "login")

	// Caught by the page before anything is sent.
	alice.submitLogin("")
	e := alice.expectEntry("an error", func(e logEntry) bool { return e.has("error") })
	if e.Code != "password_required" {
		t.Fatalf("login without a password: %v", e)
	}
	alice.submitLogin("wrong horse")
	e = alice.expectEntry("auth_failed", func(e logEntry) bool { return e.Code == "auth_failed" })
	if !strings.Contains(e.Text, "wrong name or password") {
		t.Errorf("auth_failed shown as %v", e)
	}
	alice.waitJS("the login form still there", `!document.getElementById('login-view').hidden
		&& document.getElementById('password').value === ''`)
	alice.submitLogin("correct horse")
	aliceToken := alice.waitLoggedIn()

	bob.open(alice.shareLink())
	bob.submitLogin("battery staple")
	bob.waitLoggedIn()
	bob.acceptInvite(aliceToken)
	bob.waitPaired("alice")
	alice.waitPaired("bob")
	bob.say("hello with a password")
	alice.expectMessage("theirs", "bob", "hello with a password")
	alice.screenshot("accounts")
}

// TestBrowserLoginDeadline: the server closes a WebSocket that has not
// logged in within limits.login_timeout; the page opens another quietly,
// so a person who takes their time to log in notices nothing.
func TestBrowserLoginDeadline(t *testing.T) {
	chromium := setUpBrowserTest(t)
	// Two seconds, not one: the page must send its login within the
	// deadline of the socket it has, and with one second, the whole
	// browser suite run beside two busy loops on two cores once saw the
	// page not logged in 20 s after the click.
	const deadline = 2 * time.Second
	d := enginetest.Start(t, func(o *engine.Options) { o.Limits.LoginTimeout = deadline })
	bt := launchBrowser(t, chromium, d)
	alice := bt.newPerson("alice")
	alice.open(bt.pageURL())
	alice.do("type a name, slowly", chromedp.SendKeys(chromedp.ID("name"), "ali"))
	// Two deadlines pass (each checked once a second by the server).
	alice.do("wait out the login deadline", chromedp.Sleep(2*(deadline+time.Second)+500*time.Millisecond))
	for _, e := range alice.log() {
		t.Errorf("the page told of the login deadline: %v", e)
	}
	if focused := eval[string](alice, `document.activeElement.id`); focused != "name" {
		t.Errorf("focus moved to #%s", focused)
	}
	alice.do("finish the name", chromedp.SendKeys(chromedp.ID("name"), "ce"))
	alice.waitJS("online", `document.getElementById('state').dataset.state === 'online'
		&& !document.getElementById('login').disabled`)
	alice.do("log in", chromedp.Click(chromedp.ID("login")))
	alice.waitLoggedIn()
	// Logged in, the connection outlives the deadline.
	alice.do("wait past the deadline again", chromedp.Sleep(deadline+1500*time.Millisecond))
	if state := eval[string](alice, `document.getElementById('state').dataset.state`); state != "online" {
		t.Errorf("state %q after logging in", state)
	}
	for _, e := range alice.log() {
		if e.has("error") || e.Kind == "connection" {
			t.Errorf("after logging in: %v", e)
		}
	}
}

// attackerSite serves a page from another origin (127.0.0.2, its own
// port) that opens duet in a new window when its button is clicked, and
// keeps the handle window.open returned in window.duet.
func attackerSite(t *testing.T, open string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><title>free prizes</title>
<button id="go">Open duet</button>
<script>
document.getElementById('go').onclick = () => { window.duet = window.open(%q, 'duet'); };
</script>`, open)
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL + "/"
}

// openFromAttacker loads the attacker's page in p's tab, clicks its
// button (a click, so that the window is not blocked as a pop-up) and
// returns the window it opened as a person of its own.
func (p *person) openFromAttacker(site, name string) *person {
	p.t.Helper()
	p.do("open the other site", chromedp.Navigate(site))
	p.waitJS("the other site's page", `document.getElementById('go') !== null`)
	opened := chromedp.WaitNewTarget(p.ctx, func(info *target.Info) bool { return info.Type == "page" })
	p.do("click the other site's button", chromedp.Click(chromedp.ID("go")))
	var id target.ID
	select {
	case id = <-opened:
	case <-time.After(waitTimeout):
		p.t.Fatalf("%s: the other site's page opened no window", p.name)
	}
	if id == "" {
		p.t.Fatalf("%s: the other site's page opened no window", p.name)
	}
	ctx, cancel := chromedp.NewContext(p.ctx, chromedp.WithTargetID(id))
	w := p.bt.watch(name, ctx, cancel)
	w.waitJS("the page is online", `document.getElementById('state').dataset.state === 'online'`)
	return w
}

// TestBrowserShareLinkFromAnotherSite: a page on another site that opens
// duet cannot connect whoever uses that window to a token of its choosing.
// Changing the window's fragment after the person logged in fails twice
// over: the opener's handle is gone (Cross-Origin-Opener-Policy), and the
// page acts on no hashchange. Opening duet with the token in the link
// from the start only gets the person asked, and nothing happens unless
// they click Connect.
func TestBrowserShareLinkFromAnotherSite(t *testing.T) {
	bt := startBrowserTest(t)
	mallory := bt.daemon.DialLine(t).Login("mallory")
	notPaired := func() {
		t.Helper()
		mallory.Send("/who")
		mallory.Expect(`^\* you are mallory, your token is [0-9a-f]{32}, not connected$`)
	}

	// The fragment changed after the person logged in.
	{
		victim := bt.newPerson("bob-on-the-other-site")
		site := attackerSite(t, bt.pageURL())
		duet := victim.openFromAttacker(site, "bob")
		// The opener relation is severed both ways.
		if !eval[bool](duet, `window.opener === null`) {
			t.Error("duet's window still has an opener")
		}
		if !eval[bool](victim, `window.duet.closed`) {
			t.Error("the other site still holds a live handle on duet's window")
		}
		duet.login()
		got := eval[string](victim, fmt.Sprintf(`(() => {
			try {
				window.duet.location.href = %q;
				return window.duet.closed ? 'handle closed' : 'navigated';
			} catch (e) {
				return 'refused: ' + e.name;
			}
		})()`, bt.pageURL()+"#"+mallory.Token))
		t.Logf("the other site changing duet's fragment: %s", got)
		duet.expectUnpaired("after another site changed the fragment", 0)
		if hash := eval[string](duet, `location.hash`); hash != "" {
			t.Errorf("the other site changed duet's address to ...%s", hash)
		}
		notPaired()
	}

	// The token in the link the other site opened.
	{
		victim := bt.newPerson("carol-on-the-other-site")
		site := attackerSite(t, bt.pageURL()+"#"+mallory.Token)
		duet := victim.openFromAttacker(site, "carol")
		if !eval[bool](victim, `window.duet.closed`) {
			t.Error("the other site still holds a live handle on duet's window")
		}
		duet.login()
		duet.expectInvite(mallory.Token)
		duet.expectUnpaired("logged in from another site's link, without a click", 0)
		notPaired()
		// Not now: the offer goes, and nothing was sent.
		duet.do("decline", chromedp.Click(chromedp.ID("invite-dismiss")))
		duet.waitJS("the offer gone", `document.getElementById('invite').hidden`)
		duet.expectUnpaired("after declining", 0)
		notPaired()
	}
}

// TestBrowserShareLinkNotAfterRelogin: a link's offer left unanswered is
// dropped when the page logs in again by itself after losing the server:
// it connects to no one and asks nothing.
func TestBrowserShareLinkNotAfterRelogin(t *testing.T) {
	bt := startBrowserTest(t)
	alice, bob := bt.newPerson("alice"), bt.newPerson("bob")
	alice.open(bt.pageURL())
	aliceToken := alice.login()
	bob.open(alice.shareLink())
	bob.login()
	bob.expectInvite(aliceToken)

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := bt.daemon.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	bob.waitJS("reconnecting", `document.getElementById('state').dataset.state === 'reconnecting'`)
	enginetest.Start(t, func(o *engine.Options) {
		o.WSListen = bt.daemon.WS
		o.TCPListen = "127.0.0.1:0"
	})
	// Both pages are asked to retry at once, and both are seen back, so
	// no attempt of theirs to reach the stopped server can still be on
	// its way when their reports are read below.
	for _, p := range []*person{alice, bob} {
		p.do("retry now", chromedp.Evaluate[chromedp.Void](`(() => {
			const retry = document.getElementById('reconnect');
			if (!retry.hidden) retry.click();
		})()`))
	}
	for _, p := range []*person{alice, bob} {
		want := "Logged in again as " + p.name + "."
		p.expectEntry("a logged-in-again notice", func(e logEntry) bool {
			return strings.HasPrefix(e.Text, want)
		})
	}
	if !eval[bool](bob, `document.getElementById('invite').hidden`) {
		t.Error("the link's offer is still shown after logging in again by itself")
	}
	bob.expectUnpaired("after logging in again by itself", 0)
	// While the server was away the browser's own attempts to connect
	// failed, and it says so in the console; nothing else may appear.
	for _, p := range []*person{alice, bob} {
		for _, problem := range p.takeProblems() {
			if !strings.Contains(problem, "WebSocket connection to") {
				t.Errorf("%s: the page reported: %s", p.name, problem)
			}
		}
	}
}

// TestBrowserRateLimitedCommandLeavesMessageSent: a rate_limited error
// that names no message is about a command the server dropped, since
// the server names every message it drops. A message the page sent
// after that command, and before the error came, went through, and is
// not marked not sent. (The page took the error for its last message.)
func TestBrowserRateLimitedCommandLeavesMessageSent(t *testing.T) {
	chromium := setUpBrowserTest(t)
	bt := launchBrowser(t, chromium, enginetest.Start(t, func(o *engine.Options) {
		// A token every 100 s: the burst is all there is.
		o.Limits.MessageRate = 0.01
		o.Limits.MessageBurst = 8
	}))
	alice, bob := bt.newPerson("alice"), bt.newPerson("bob")
	pair(alice, bob, bt.pageURL(), bt.pageURL())
	talk(alice, bob, "hi bob")

	// New tokens past the burst, then a message, before any answer.
	alice.do("ask for tokens, then say", chromedp.Evaluate[chromedp.Void](`for (let i = 0; i < 20; i++) document.getElementById('newtoken').click();
		document.getElementById('message').value = 'sent all the same';
		document.getElementById('compose').requestSubmit();`))
	alice.expectEntry("the rate_limited error", func(e logEntry) bool { return e.Code == "rate_limited" })
	bob.expectMessage("theirs", "alice", "sent all the same")
	alice.expectMessage("mine", "You", "sent all the same")
}
