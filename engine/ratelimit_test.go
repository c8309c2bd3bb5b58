package engine

import (
	"math"
	"testing"
	"time"

	"duet/config"
	"duet/engine/hub"
)

// bucketConn returns a connection on a loop whose clock the test moves,
// with limits.message_rate and limits.message_burst set as given.
func bucketConn(t *testing.T, rate float64, burst int) *conn {
	t.Helper()
	lim := config.Defaults().Limits
	lim.MessageRate, lim.MessageBurst = rate, burst
	srv, err := New(Options{TCPListen: "127.0.0.1:0", Hub: hub.New(hub.Options{}), Limits: lim})
	if err != nil {
		t.Fatal(err)
	}
	return &conn{loop: newLoopState(srv, idleLoop{}, -1)}
}

// takeAll takes tokens until the bucket refuses one, and returns how
// many it gave.
func takeAll(cn *conn) int {
	n := 0
	for cn.takeToken() {
		n++
		if n > 1e6 {
			break
		}
	}
	return n
}

// TestTokenBucket: the bucket starts full with limits.message_burst
// tokens, refills at limits.message_rate a second up to the burst and
// no further, and follows a reload of either at once.
func TestTokenBucket(t *testing.T) {
	cn := bucketConn(t, 10, 5) // a token every 100ms
	if n := takeAll(cn); n != 5 {
		t.Fatalf("a fresh bucket gave %d tokens, want the burst, 5", n)
	}
	cn.loop.now = cn.loop.now.Add(99 * time.Millisecond)
	if cn.takeToken() {
		t.Fatal("a token came back before a tenth of a second")
	}
	cn.loop.now = cn.loop.now.Add(time.Millisecond)
	if n := takeAll(cn); n != 1 {
		t.Fatalf("after a tenth of a second %d tokens, want 1", n)
	}
	cn.loop.now = cn.loop.now.Add(350 * time.Millisecond)
	if n := takeAll(cn); n != 3 {
		t.Fatalf("after 350ms %d tokens, want 3", n)
	}
	cn.loop.now = cn.loop.now.Add(time.Hour)
	if n := takeAll(cn); n != 5 {
		t.Fatalf("after an hour %d tokens, want no more than the burst, 5", n)
	}

	// A reload: a deeper bucket holds more at once, a faster rate
	// refills sooner.
	lim := *cn.loop.srv.lim()
	lim.MessageRate, lim.MessageBurst = 100, 50
	cn.loop.srv.SetLimits(lim)
	cn.loop.now = cn.loop.now.Add(10 * time.Millisecond)
	if n := takeAll(cn); n != 1 {
		t.Fatalf("10ms after the reload to 100/s, %d tokens, want 1", n)
	}
	cn.loop.now = cn.loop.now.Add(time.Hour)
	if n := takeAll(cn); n != 50 {
		t.Fatalf("reloaded bucket gave %d tokens, want the new burst, 50", n)
	}
}

// TestTokenBucketExtremes: rates and bursts at the ends of what the
// configuration accepts neither overflow nor stop counting.
func TestTokenBucketExtremes(t *testing.T) {
	deep := bucketConn(t, 1, math.MaxInt)
	deep.loop.now = deep.loop.now.Add(24 * time.Hour)
	for range 1000 {
		if !deep.takeToken() {
			t.Fatal("a bucket of the largest burst ran dry")
		}
	}
	slow := bucketConn(t, 1e-12, 3) // a token every 30,000 years
	if n := takeAll(slow); n != 3 {
		t.Fatalf("the slowest rate gave %d tokens, want the burst, 3", n)
	}
	slow.loop.now = slow.loop.now.Add(10 * 365 * 24 * time.Hour)
	if slow.takeToken() {
		t.Fatal("the slowest rate gave a token back within ten years")
	}
	fast := bucketConn(t, math.MaxFloat64, 1)
	for range 1000 {
		if !fast.takeToken() {
			t.Fatal("the fastest rate refused a token")
		}
	}
}
