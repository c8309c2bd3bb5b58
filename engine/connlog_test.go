package engine_test

import (
	"bufio"
	"io"
	"net/http"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"duet/engine"
	"duet/engine/enginetest"
)

// TestRefusalLogsCarryTheConnection: the line logging a refusal names
// the connection (conn) beside its address (remote), as every line about
// a connection does, on both ports, refused as it opens or for its
// WebSocket's origin; a web connection kept to be told its refusal is
// logged closed under the same id, which is how an operator finds what
// became of it.
func TestRefusalLogsCarryTheConnection(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		limit  func(o *engine.Options)
		refuse func(t *testing.T, d *enginetest.Daemon)
		msg    string // the warning's message
		closed string // the reason the refused connection is logged closed with; "" if it never opened
	}{
		{"line, too many from one address", perAddr, refuseLine, "connection refused: too many from one address", ""},
		{"line, server full", full, refuseLine, "connection refused: server full", ""},
		{"web, too many from one address", perAddr, refuseWeb, "connection refused: too many from one address", "too_many_connections"},
		{"web, server full", full, refuseWeb, "connection refused: server full", "server_full"},
		{"web, origin", func(*engine.Options) {}, func(t *testing.T, d *enginetest.Daemon) {
			if _, status := dialWSRaw(t, d, "127.0.0.1", "Origin: https://chat.example\r\n"); status != http.StatusForbidden {
				t.Fatalf("status %d, want 403", status)
			}
		}, "WebSocket refused: its origin is not allowed; if it is your page's, add it to ws.allowed_origins", "origin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			core, logs := observer.New(zapcore.DebugLevel)
			d := enginetest.Start(t, func(o *engine.Options) {
				o.Logger = zap.New(core)
				tc.limit(o)
			})
			tc.refuse(t, d)
			refusal := waitLog(t, logs, tc.msg, "")
			conn, ok := refusal.ContextMap()["conn"].(uint64)
			if !ok || refusal.ContextMap()["remote"] != "127.0.0.1" {
				t.Fatalf("%q logged with %v", tc.msg, refusal.ContextMap())
			}
			if tc.closed != "" {
				if got := waitLog(t, logs, "connection closed", tc.closed).ContextMap()["conn"]; got != conn {
					t.Errorf("refused as conn %d, closed as conn %v", conn, got)
				}
			}
			for _, e := range logs.All() {
				f := e.ContextMap()
				if _, remote := f["remote"]; remote {
					if _, ok := f["conn"].(uint64); !ok {
						t.Errorf("%q names remote but no conn: %v", e.Message, f)
					}
				}
			}
		})
	}
}

// perAddr and full let one connection in from an address, or in all;
// the test's own connection takes it.
func perAddr(o *engine.Options) { o.Limits.MaxConnsPerIP = 1 }
func full(o *engine.Options)    { o.Limits.MaxConns = 1 }

// refuseLine opens a connection, then another on the line port, which
// is refused as it opens.
func refuseLine(t *testing.T, d *enginetest.Daemon) {
	d.DialLine(t)
	c := dialFrom(t, "127.0.0.1", d.TCP)
	if l, _ := bufio.NewReader(c).ReadString('\n'); len(l) < 2 || l[0] != '!' {
		t.Fatalf("second connection read %q, want a refusal", l)
	}
}

// refuseWeb opens a connection, then asks for the page on another,
// which is refused as it opens and told why in the answer.
func refuseWeb(t *testing.T, d *enginetest.Daemon) {
	d.DialLine(t)
	c := dialFrom(t, "127.0.0.1", d.WS)
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", resp.StatusCode)
	}
}

// waitLog waits for a line with message msg, and with reason if not "".
func waitLog(t *testing.T, logs *observer.ObservedLogs, msg, reason string) observer.LoggedEntry {
	t.Helper()
	for deadline := time.Now().Add(enginetest.Timeout); ; time.Sleep(10 * time.Millisecond) {
		found := logs.FilterMessage(msg)
		if reason != "" {
			found = found.FilterField(zap.String("reason", reason))
		}
		if all := found.All(); len(all) > 0 {
			return all[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q line (reason %q); the log has %v", msg, reason, messages(logs))
		}
	}
}
