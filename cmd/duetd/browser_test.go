package main

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// findChromium returns the path of Chromium, or skips the test when there
// is none; under DUET_REQUIRE_BROWSER=1 (CI) a missing browser fails it.
func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "/usr/bin/chromium"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	const msg = "Chromium not found: scripts/deps.sh installs it (apt-get install chromium)"
	if os.Getenv("DUET_REQUIRE_BROWSER") == "1" {
		t.Fatal(msg + "; DUET_REQUIRE_BROWSER=1 makes that a failure")
	}
	t.Skip(msg)
	return ""
}

// TestBrowserSubprotocols opens WebSockets from Chromium, on a page duetd
// serves, offering subprotocols as a page's script would
// (new WebSocket(url, protocols)): offering duet.v1, alone or among
// others, connects with duet.v1 chosen; offering nothing connects with
// none; offering only something else fails, as it must for a client that
// pinned a version the server does not speak.
func TestBrowserSubprotocols(t *testing.T) {
	chromium := findChromium(t)
	d := startDaemon(t, "")
	d.WaitReady()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	tab, cancelTab := chromedp.NewContext(allocCtx)
	defer cancelTab()
	if err := chromedp.Do(tab, chromedp.Navigate("http://"+d.WS+"/")); err != nil {
		t.Fatalf("Chromium (%s): %v", chromium, err)
	}

	for _, tc := range []struct{ protocols, want string }{
		{"undefined", "open, protocol \"\""},
		{"[]", "open, protocol \"\""},
		{"'duet.v1'", "open, protocol \"duet.v1\""},
		{"['duet.v2', 'duet.v1']", "open, protocol \"duet.v1\""},
		{"'duet'", "error"},
		{"['chat', 'superchat']", "error"},
	} {
		js := `new Promise(resolve => {
			const w = new WebSocket('ws://' + location.host + '/ws', ` + tc.protocols + `);
			w.onopen = () => { resolve('open, protocol ' + JSON.stringify(w.protocol)); w.close(); };
			w.onerror = () => resolve('error');
		})`
		got, err := chromedp.Run(tab, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("%s: %v", tc.protocols, err)
		}
		if got != tc.want {
			t.Errorf("new WebSocket(url, %s): %s, want %s", tc.protocols, got, tc.want)
		}
	}
}
