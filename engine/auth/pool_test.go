package auth

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestPoolBounds(t *testing.T) {
	p := NewPool(PoolOptions{Workers: 2, MaxQueue: 3, MaxWait: time.Hour})
	release := make(chan struct{})
	var running, peak atomic.Int64
	var wg sync.WaitGroup
	accepted := 0
	for range 10 {
		wg.Add(1)
		c := p.Submit(4, func() {
			defer wg.Done()
			n := running.Add(1)
			for {
				old := peak.Load()
				if n <= old || peak.CompareAndSwap(old, n) {
					break
				}
			}
			<-release
			running.Add(-1)
		})
		if c != nil {
			accepted++
		} else {
			wg.Done()
		}
	}
	if accepted != 5 {
		t.Fatalf("accepted %d checks, want 2 running + 3 queued", accepted)
	}
	close(release)
	wg.Wait()
	if peak.Load() > 2 {
		t.Fatalf("%d checks ran at once, want at most 2", peak.Load())
	}
	// Once drained it accepts again.
	for p.Busy() > 0 {
		time.Sleep(time.Millisecond)
	}
	done := make(chan struct{})
	if p.Submit(4, func() { close(done) }) == nil {
		t.Fatal("refused after draining")
	}
	<-done
}

// TestPoolOrder: checks run in the order they were submitted.
func TestPoolOrder(t *testing.T) {
	p := NewPool(PoolOptions{Workers: 1, MaxQueue: 100, MaxWait: time.Hour})
	gate := make(chan struct{})
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	wg.Add(21)
	p.Submit(4, func() { <-gate; wg.Done() })
	for i := range 20 {
		p.Submit(4, func() {
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			wg.Done()
		})
	}
	close(gate)
	wg.Wait()
	for i, v := range order {
		if v != i {
			t.Fatalf("order %v", order)
		}
	}
}

// TestPoolSizedByExpectedTime: the queue holds as many checks as the
// checkers can be expected to get through within MaxWait, by their
// measured speed and the cost of each check, not a fixed number. The
// checks here sleep, 2^cost times 20 µs: at cost 10 about 20 ms.
func TestPoolSizedByExpectedTime(t *testing.T) {
	const unit = 20 * time.Microsecond
	p := NewPool(PoolOptions{Workers: 1, MaxQueue: 1000, MaxWait: 200 * time.Millisecond})
	sleep := func(cost int) func() { return func() { time.Sleep(unit << cost) } }
	// Let the pool measure its speed.
	var wg sync.WaitGroup
	for range 24 {
		wg.Add(1)
		job := sleep(8) // 5 ms: long enough that a sleep's overshoot is small beside it
		if p.Submit(8, func() { job(); wg.Done() }) == nil {
			t.Fatal("refused while learning")
		}
		wg.Wait()
	}
	for p.Busy() > 0 { // the last check's time is learnt once it is not running
		time.Sleep(time.Millisecond)
	}
	// Sleep overshoots, more so on a loaded machine, so the measure is
	// at least the nominal time and within a few times of it.
	e10, e4 := p.Expected(10), p.Expected(4)
	if e10 < unit<<10 || e10 > 4*unit<<10 || e10 != e4<<6 {
		t.Fatalf("expects %v for a cost-10 check that sleeps %v, and %v for cost 4", e10, unit<<10, e4)
	}
	// queueFor is how many checks of expected time e are admitted behind
	// one of the same running: while the work ahead is at most MaxWait.
	queueFor := func(e time.Duration) int { return int(200 * time.Millisecond / e) }

	// Costly checks: 200 ms of queue is about ten of 20 ms; a cheap check
	// is refused once they fill it.
	gate := make(chan struct{})
	p.Submit(10, func() { <-gate })
	accepted := 0
	for p.Submit(10, sleep(10)) != nil {
		accepted++
		if accepted > 1000 {
			break
		}
	}
	if want := queueFor(e10); accepted != want {
		t.Fatalf("%d cost-10 checks queued behind one running, want %d: the work of 200 ms at %v each", accepted, want, e10)
	}
	if p.Submit(4, sleep(4)) != nil {
		t.Fatal("a check was queued behind more than MaxWait of work")
	}
	close(gate)
	for p.Busy() > 0 {
		time.Sleep(time.Millisecond)
	}
	// Cheap checks: the same 200 ms holds 64 times as many at cost 4.
	e4 = p.Expected(4)
	gate = make(chan struct{})
	p.Submit(4, func() { <-gate })
	accepted = 0
	for p.Submit(4, func() {}) != nil {
		accepted++
		if accepted > 5000 {
			break
		}
	}
	close(gate)
	if want := queueFor(e4); accepted != want {
		t.Fatalf("%d cost-4 checks queued behind one running, want %d: the work of 200 ms at %v each", accepted, want, e4)
	}
	for p.Busy() > 0 {
		time.Sleep(time.Millisecond)
	}
}

// TestPoolCancel: a cancelled check never runs and frees its place at
// once; a running one cannot be cancelled.
func TestPoolCancel(t *testing.T) {
	p := NewPool(PoolOptions{Workers: 1, MaxQueue: 2, MaxWait: time.Hour})
	gate, started := make(chan struct{}), make(chan struct{})
	first := p.Submit(4, func() { close(started); <-gate })
	<-started
	var ran atomic.Int64
	a := p.Submit(4, func() { ran.Add(1) })
	b := p.Submit(4, func() { ran.Add(1) })
	if a == nil || b == nil || p.Submit(4, func() {}) != nil {
		t.Fatal("queue bound not as set up")
	}
	if !p.Cancel(a) || !p.Cancel(b) {
		t.Fatal("a waiting check could not be cancelled")
	}
	if p.Cancel(a) {
		t.Fatal("cancelled twice")
	}
	if p.Cancel(first) {
		t.Fatal("a running check was cancelled")
	}
	// Their places are free at once, before the running check ends.
	done := make(chan struct{})
	if p.Submit(4, func() { close(done) }) == nil {
		t.Fatal("a cancelled check still holds its place")
	}
	close(gate)
	<-done
	for p.Busy() > 0 {
		time.Sleep(time.Millisecond)
	}
	if ran.Load() != 0 {
		t.Fatalf("%d cancelled checks ran", ran.Load())
	}
}

// TestPoolDefaultsAsDocumented: half the CPUs (at least one), 5 s of
// expected work, 64 waiting per checker, as AUTH.md says.
func TestPoolDefaultsAsDocumented(t *testing.T) {
	o := PoolOptions{}.withDefaults()
	if want := max(1, runtime.GOMAXPROCS(0)/2); o.Workers != want {
		t.Fatalf("%d workers, want %d", o.Workers, want)
	}
	if o.MaxWait != 5*time.Second || o.MaxQueue != 64*o.Workers {
		t.Fatalf("defaults %+v", o)
	}
}
