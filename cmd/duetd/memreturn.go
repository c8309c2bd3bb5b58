package main

import (
	"context"
	"runtime/debug"
	"time"

	"go.uber.org/zap"
)

// memReturn gives the system back the memory that connections which
// ended together freed: many clients gone at once (a network that went
// away, phones asleep, a load balancer restarted). The Go runtime keeps
// freed heap for reuse, up to about twice what is live after its last
// collection, and collects only as it allocates: a server whose clients
// all dropped would hold the RSS of their connections until it is
// restarted. When the connections open have fallen by a quarter of
// their peak, and by minDrop at least, it collects and returns what is
// free (debug.FreeOSMemory), a second later (check), and once per every
// at most: a few milliseconds of CPU for a heap of tens of megabytes.
type memReturn struct {
	conns   func() int64 // open now
	peak    func() int64 // the most open at once since the last call
	free    func()
	minDrop int64
	every   time.Duration

	high int64 // the most open at once since memory was last returned
	last time.Time
	due  bool // the last check found a drop: the next returns it
}

// memReturnDrop and memReturnEvery are the defaults: drops smaller than
// a thousand connections leave little to return.
const (
	memReturnDrop  = 1000
	memReturnEvery = 30 * time.Second
)

func newMemReturn(conns, peak func() int64) *memReturn {
	return &memReturn{conns: conns, peak: peak, free: debug.FreeOSMemory, minDrop: memReturnDrop, every: memReturnEvery}
}

// check looks at the connections open now, and returns memory if they
// fell far enough at this check and the one before; it reports how many
// fewer there were than at the peak when it did, 0 otherwise. Waiting
// for a second check lets a drop that is still under way (thousands of
// resets take a while to be read) finish first, so that one return
// takes it all.
func (m *memReturn) check(now time.Time) int64 {
	n := m.conns()
	m.high = max(m.high, m.peak(), n)
	drop := m.high - n
	if drop < m.minDrop || 4*drop < m.high || !m.last.IsZero() && now.Sub(m.last) < m.every {
		m.due = false
		return 0
	}
	if !m.due {
		m.due = true
		return 0
	}
	m.due = false
	m.free()
	m.last, m.high = now, n
	return drop
}

// run checks once a second until ctx is done.
func (m *memReturn) run(ctx context.Context, log *zap.Logger) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if drop := m.check(now); drop > 0 {
				log.Info("returned freed memory to the system", zap.Int64("connections_ended", drop))
			}
		}
	}
}
