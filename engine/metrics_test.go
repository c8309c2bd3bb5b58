package engine_test

import (
	"bufio"
	"maps"
	"sync"
	"testing"
	"time"

	"duet/engine"
	"duet/engine/enginetest"
)

// countingMetrics records every engine.Metrics call.
type countingMetrics struct {
	mu     sync.Mutex
	counts map[string]int
}

func (m *countingMetrics) add(key string, d int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.counts[key] += d
}

func (m *countingMetrics) ConnOpened(p string)   { m.add("open "+p, 1); m.add("now "+p, 1) }
func (m *countingMetrics) ConnClosed(p string)   { m.add("now "+p, -1) }
func (m *countingMetrics) Upgraded()             { m.add("now http", -1); m.add("now ws", 1); m.add("upgraded", 1) }
func (m *countingMetrics) Rejected(r string)     { m.add("rejected "+r, 1) }
func (m *countingMetrics) Error(c string)        { m.add("error "+c, 1) }
func (m *countingMetrics) SlowCut()              { m.add("slow", 1) }
func (m *countingMetrics) Disconnected(r string) { m.add("disconnected "+r, 1) }

func (m *countingMetrics) snapshot() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.counts)
}

// TestMetricsHooks: every connection opened is closed again, per
// protocol, across a WebSocket upgrade, which opens nothing more; errors and refusals are counted
// by code and reason.
func TestMetricsHooks(t *testing.T) {
	m := &countingMetrics{counts: map[string]int{}}
	d := enginetest.Start(t, func(o *engine.Options) {
		o.Metrics = m
		o.Limits.MaxConnsPerIP = 3
	})
	a := d.DialLine(t)
	a.Send("hello")
	a.Expect(`^! not_logged_in:`)
	b := d.DialWS(t).Login("bob")
	b.Connect("0123456789abcdef0123456789abcdef")
	b.ExpectError("unknown_token")
	c := d.DialLine(t)
	refused := dialFrom(t, "127.0.0.1", d.TCP)
	if l, _ := bufio.NewReader(refused).ReadString('\n'); l != "! too_many_connections: too many connections from your address\r\n" {
		t.Fatalf("fourth connection: %q", l)
	}
	a.Conn.Close()
	b.Conn.Close()
	c.Conn.Close()
	want := map[string]int{
		// The fourth line connection, refused, is kept to linger
		// after its refusal: opened, and closed again.
		"open line": 3, "open http": 1, "upgraded": 1,
		"now line": 0, "now http": 0, "now ws": 0,
		"error not_logged_in": 1, "error unknown_token": 1,
		"rejected too_many_connections": 1,
		// The line clients hang up; the WebSocket client drops its socket
		// without a close frame; the fourth is refused as it opens.
		"disconnected closed": 2, "disconnected lost": 1, "disconnected too_many_connections": 1,
	}
	deadline := time.Now().Add(enginetest.Timeout)
	for {
		got := m.snapshot()
		if maps.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics %v, want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
