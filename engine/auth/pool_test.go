package auth

import (
	"sync"
	"sync/atomic"
	"testing"
)

func TestPoolBounds(t *testing.T) {
	p := NewPool(2, 3)
	release := make(chan struct{})
	var running, peak atomic.Int64
	var wg sync.WaitGroup
	accepted := 0
	for range 10 {
		wg.Add(1)
		ok := p.Submit(func() {
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
		if ok {
			accepted++
		} else {
			wg.Done()
		}
	}
	if accepted != 5 {
		t.Fatalf("accepted %d jobs, want 2 workers + 3 queued", accepted)
	}
	close(release)
	wg.Wait()
	if peak.Load() > 2 {
		t.Fatalf("%d jobs ran at once, want at most 2", peak.Load())
	}
	// Once drained it accepts again.
	for p.Busy() > 0 {
		// the deferred release runs just after the job returns
	}
	done := make(chan struct{})
	if !p.Submit(func() { close(done) }) {
		t.Fatal("refused after draining")
	}
	<-done
}
