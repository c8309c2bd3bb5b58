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
	for _, st := range []struct {
		wait  time.Duration
		rate  float64 // a reload to this rate and burst first, if set
		burst int
		want  int
		what  string
	}{
		{0, 0, 0, 5, "a fresh bucket: the burst"},
		{99 * time.Millisecond, 0, 0, 0, "before a tenth of a second: none back"},
		{time.Millisecond, 0, 0, 1, "at a tenth of a second: one"},
		{350 * time.Millisecond, 0, 0, 3, "350ms later: three"},
		{time.Hour, 0, 0, 5, "an hour later: no more than the burst"},
		// A reload: a faster rate refills sooner, a deeper bucket holds
		// more at once.
		{10 * time.Millisecond, 100, 50, 1, "10ms after a reload to 100/s: one"},
		{time.Hour, 0, 0, 50, "an hour later: the new burst"},
	} {
		if st.rate > 0 {
			lim := *cn.loop.srv.lim()
			lim.MessageRate, lim.MessageBurst = st.rate, st.burst
			cn.loop.srv.SetLimits(lim)
		}
		cn.loop.now = cn.loop.now.Add(st.wait)
		if n := takeAll(cn); n != st.want {
			t.Fatalf("%s: %d tokens, want %d", st.what, n, st.want)
		}
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
