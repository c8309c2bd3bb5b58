package engine

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestWorkQueueBoundsItsWorkers: a storm of calls that each wait (as a
// directory call waits on Redis) runs on at most max goroutines at
// once, every call runs, in order of arrival as workers free up, and
// no worker stays once the queue is empty.
func TestWorkQueueBoundsItsWorkers(t *testing.T) {
	q := &workQueue{max: 4}
	const calls = 200
	var (
		now, peak atomic.Int32
		mu        sync.Mutex
		order     []int
		wg        sync.WaitGroup
	)
	for i := range calls {
		wg.Add(1)
		q.do(func() {
			defer wg.Done()
			n := now.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			time.Sleep(time.Millisecond)
			now.Add(-1)
		})
	}
	wg.Wait()
	if p := peak.Load(); p > 4 || p < 2 {
		t.Fatalf("%d calls ran at once, want at most 4 (and more than one)", p)
	}
	if len(order) != calls {
		t.Fatalf("%d of %d calls ran", len(order), calls)
	}
	// Taken in order of arrival: a call starts no later than max places
	// after where it was queued.
	for pos, i := range order {
		if pos-i > 4 || i-pos > 4 {
			t.Fatalf("call %d started %dth", i, pos)
		}
	}
	for deadline := time.Now().Add(time.Second); ; time.Sleep(time.Millisecond) {
		q.mu.Lock()
		running := q.running
		q.mu.Unlock()
		if running == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d workers stay with nothing queued", running)
		}
	}
}
