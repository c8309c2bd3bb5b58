package hub

import (
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock that moves only when a test says so (advance),
// which then runs the timers that fall due on the test's goroutine, in
// the order they are due.
type fakeClock struct {
	mu     sync.Mutex
	t      time.Duration
	timers []*fakeTimer
}

type fakeTimer struct {
	c     *fakeClock
	at    time.Duration
	f     func()
	ended bool // stopped or fired
}

func (c *fakeClock) now() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) afterFunc(d time.Duration, f func()) stopper {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.t + d, f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.ended
	t.ended = true
	return was
}

// advance moves the clock on by d, firing what falls due on the way.
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	end := c.t + d
	for {
		var next *fakeTimer
		for _, t := range c.timers {
			if !t.ended && t.at <= end && (next == nil || t.at < next.at) {
				next = t
			}
		}
		if next == nil {
			break
		}
		next.ended = true
		c.t = max(c.t, next.at)
		c.mu.Unlock()
		next.f()
		c.mu.Lock()
	}
	c.t = end
	live := c.timers[:0]
	for _, t := range c.timers {
		if !t.ended {
			live = append(live, t)
		}
	}
	c.timers = live
	c.mu.Unlock()
}

// newClockedHub returns a hub with opts on a fake clock.
func newClockedHub(opts Options) (*Hub, *fakeClock) {
	h := New(opts)
	c := &fakeClock{}
	h.clock = c
	return h, c
}

func TestFakeClockFiresInOrder(t *testing.T) {
	c := &fakeClock{}
	var got []int
	c.afterFunc(3*time.Second, func() { got = append(got, 3) })
	stopped := c.afterFunc(2*time.Second, func() { got = append(got, 2) })
	c.afterFunc(time.Second, func() {
		got = append(got, 1)
		// A timer set by a timer that is due before the end fires too.
		c.afterFunc(time.Second, func() { got = append(got, 22) })
	})
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop does not report whether it stopped the timer")
	}
	c.advance(2 * time.Second)
	c.advance(time.Second)
	if len(got) != 3 || got[0] != 1 || got[1] != 22 || got[2] != 3 || c.now() != 3*time.Second {
		t.Fatalf("fired %v at %v", got, c.now())
	}
}
