package service

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"duet/engine/hub"
)

func TestAdminEndpoints(t *testing.T) {
	m := NewMetrics(hub.New(hub.Options{}))
	m.ConnOpened("line")
	m.ConnOpened("http")
	m.Upgraded()
	m.ConnOpened("ws")       // no connection opens as one: ignored
	m.ConnOpened("nonsense") // not a protocol: ignored, not a new series
	m.Rejected("server_full")
	m.Disconnected("server_full")
	m.Disconnected("slow")
	m.Disconnected("slow")
	m.Error("room_full")
	m.SlowCut()
	m.Declare([]string{"server_full", "too_many_connections"}, []string{"server_full", "slow", "quit"})
	a := startAdmin(t, m.Registry)
	client := &http.Client{Timeout: 5 * time.Second}
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := client.Get("http://" + a.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	steps := []struct {
		name  string
		ready *bool
		path  string
		code  int
	}{
		{"healthz", nil, "/healthz", 200},
		{"readyz before ready", nil, "/readyz", 503},
		{"readyz when ready", ptr(true), "/readyz", 200},
		{"readyz when stopping", ptr(false), "/readyz", 503},
		{"healthz when stopping", nil, "/healthz", 200},
		{"metrics", nil, "/metrics", 200},
		{"unknown path", nil, "/nope", 404},
	}
	for _, s := range steps {
		if s.ready != nil {
			a.SetReady(*s.ready)
		}
		code, body := get(s.path)
		if code != s.code {
			t.Errorf("%s: %d, want %d", s.name, code, s.code)
		}
		if s.path == "/metrics" {
			for _, want := range []string{
				`duet_connections{protocol="line"} 1`,
				`duet_connections{protocol="http"} 0`,
				`duet_connections{protocol="ws"} 1`,
				`duet_connections_opened_total{protocol="http"} 1`,
				`duet_ws_upgrades_total 1`,
				`duet_connections_rejected_total{reason="server_full"} 1`,
				`duet_errors_total{code="room_full"} 1`,
				`duet_disconnects_total{reason="server_full"} 1`,
				`duet_disconnects_total{reason="slow"} 2`,
				// Declared, and every error code: at zero from the start.
				`duet_disconnects_total{reason="quit"} 0`,
				`duet_connections_rejected_total{reason="too_many_connections"} 0`,
				`duet_errors_total{code="bad_token"} 0`,
				`duet_resumes_total{outcome="ended_with_node"} 0`,
				// The hub's resume figures show from the start, at zero.
				`duet_away_sessions 0`,
				`duet_resume_kept_bytes 0`,
				`duet_resumes_total{outcome="away"} 0`,
				`duet_resumes_total{outcome="zombie"} 0`,
				`duet_resumes_total{outcome="bad_key"} 0`,
				`duet_away_sessions_ended_total{reason="timeout"} 0`,
				`duet_away_sessions_ended_total{reason="evicted"} 0`,
				`duet_away_full_refusals_total 0`,
				`duet_slow_consumer_cuts_total 1`,
				`duet_users 0`,
				`go_goroutines `,
			} {
				if !strings.Contains(body, want+"") {
					t.Errorf("metrics lack %q", want)
				}
			}
			if strings.Contains(body, "nonsense") {
				t.Errorf("an unknown protocol made a series")
			}
			if strings.Contains(body, `duet_connections_opened_total{protocol="ws"}`) {
				t.Errorf("an upgrade counted as a connection opened")
			}
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestAdminReadyCheck: /readyz asks its check while the daemon is
// ready and answers 503 with why it fails; a daemon not ready (starting,
// stopping, drained) says so first.
func TestAdminReadyCheck(t *testing.T) {
	a := startAdmin(t, NewMetrics(hub.New(hub.Options{})).Registry)
	client := &http.Client{Timeout: 5 * time.Second}
	var why atomic.Pointer[string]
	why.Store(ptr("not linked to Redis"))
	a.SetReadyCheck(func() string { return *why.Load() })
	for _, s := range []struct {
		name  string
		ready bool
		why   string
		code  int
		body  string
	}{
		{"not ready, check failing", false, "not linked to Redis", 503, "not ready\n"},
		{"ready, check failing", true, "not linked to Redis", 503, "not linked to Redis\n"},
		{"ready, check holding", true, "", 200, "ready\n"},
		{"stopping, check holding", false, "", 503, "not ready\n"},
	} {
		a.SetReady(s.ready)
		why.Store(&s.why)
		resp, err := client.Get("http://" + a.Addr().String() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != s.code || string(b) != s.body {
			t.Errorf("%s: %d %q, want %d %q", s.name, resp.StatusCode, b, s.code, s.body)
		}
	}
}

// TestAdminDrain: POST /drain answers 409 on a single node, runs the
// drain set and says what it did, refuses GET, and refuses any request
// a browser makes (a page could otherwise drain the node).
func TestAdminDrain(t *testing.T) {
	a := startAdmin(t, NewMetrics(hub.New(hub.Options{})).Registry)
	client := &http.Client{Timeout: 5 * time.Second}
	do := func(method string, header map[string]string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+a.Addr().String()+"/drain", nil)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// A single node drains when it stops, with resume.state_file: the
	// answer must not say it ends its sessions whatever.
	if code, body := do("POST", nil); code != 409 || !strings.Contains(body, "cluster mode") || !strings.Contains(body, "resume.state_file") {
		t.Fatalf("single node: %d %q", code, body)
	}
	drains := 0
	a.SetDrain(func(context.Context) (string, error) {
		drains++
		return "drained: 3 connections told to reconnect, 0 told their session could not be kept (not_parked), 2 sessions parked", nil
	})
	for _, h := range []map[string]string{
		{"Origin": "http://evil.example"},
		{"Origin": "http://" + a.Addr().String()},
		{"Sec-Fetch-Site": "same-origin"},
	} {
		if code, _ := do("POST", h); code != 403 {
			t.Fatalf("a browser's POST %v: %d", h, code)
		}
	}
	if code, _ := do("GET", nil); code != 405 {
		t.Fatalf("GET /drain: %d", code)
	}
	if drains != 0 {
		t.Fatalf("drained %d times by refused requests", drains)
	}
	if code, body := do("POST", nil); code != 200 || body != "drained: 3 connections told to reconnect, 0 told their session could not be kept (not_parked), 2 sessions parked\n" {
		t.Fatalf("drain: %d %q", code, body)
	}
	if drains != 1 {
		t.Fatalf("drained %d times", drains)
	}
}

// TestAdminDrainLongerThanWriteTimeout: a drain may take longer than
// the listener's write deadline (a drain_period of a minute on a large
// node); its answer still reaches the caller, which waits for it.
func TestAdminDrainLongerThanWriteTimeout(t *testing.T) {
	was := adminWriteTimeout
	adminWriteTimeout = 200 * time.Millisecond
	a := startAdmin(t, NewMetrics(hub.New(hub.Options{})).Registry)
	adminWriteTimeout = was
	a.SetDrain(func(context.Context) (string, error) {
		time.Sleep(time.Second)
		return "drained", nil
	})
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Post("http://"+a.Addr().String()+"/drain", "", nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(b) != "drained\n" {
		t.Fatalf("drain: %d %q", resp.StatusCode, b)
	}
}

// startAdmin starts the admin endpoints on a free loopback port, with
// reg's metrics, and closes them when the test ends.
func startAdmin(t *testing.T, reg *prometheus.Registry) *Admin {
	t.Helper()
	a, err := StartAdmin("127.0.0.1:0", reg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		a.Close(ctx)
	})
	return a
}

// TestStartTime: duet_start_time_seconds says when the metrics were
// made, at start, read from the clock and not from /proc/stat, which
// the systemd unit hides (ProcSubset=pid) and without which the process
// collector leaves out process_start_time_seconds.
func TestStartTime(t *testing.T) {
	before := time.Now()
	m := NewMetrics(hub.New(hub.Options{}))
	after := time.Now()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "duet_start_time_seconds" {
			continue
		}
		got := f.GetMetric()[0].GetGauge().GetValue()
		if lo, hi := float64(before.UnixMilli())/1e3, float64(after.UnixMilli()+1)/1e3; got < lo || got > hi {
			t.Fatalf("duet_start_time_seconds %f, want between %f and %f", got, lo, hi)
		}
		return
	}
	t.Fatal("no duet_start_time_seconds")
}

// TestAdminHeldConnectionsLeaveReadyz: connections that hold every one
// of the admin listener's AdminConns, having asked once and kept open,
// or having asked nothing, leave /readyz answered within a health
// check's timeout: each is closed after adminIdleTimeout, or
// adminHeadTimeout, not after the ten seconds of ReadTimeout (kept
// open, before) or five of the head's old timeout (asked nothing).
func TestAdminHeldConnectionsLeaveReadyz(t *testing.T) {
	for _, asks := range []bool{true, false} {
		name := "asked nothing"
		if asks {
			name = "asked once, kept open"
		}
		t.Run(name, func(t *testing.T) {
			a := startAdmin(t, prometheus.NewRegistry())
			a.SetReady(true)
			addr := a.Addr().String()
			for range AdminConns {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				if !asks {
					continue
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || resp.Close {
					t.Fatalf("healthz: %d, close %v; want 200 on a connection kept open", resp.StatusCode, resp.Close)
				}
			}
			// A health check's own timeout; the connections above
			// held every slot for longer, before.
			client := &http.Client{Timeout: 4 * time.Second}
			start := time.Now()
			resp, err := client.Get("http://" + addr + "/readyz")
			if err != nil {
				t.Fatalf("/readyz with %d connections held: %v after %v", AdminConns, err, time.Since(start))
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("/readyz: %d", resp.StatusCode)
			}
			t.Logf("/readyz answered after %v", time.Since(start))
		})
	}
}
