package main

import (
	"context"
	"runtime/debug"
	"time"

	"go.uber.org/zap"
)

// memReturn gives the system back memory the Go runtime keeps and a
// quiet server no longer needs. The runtime keeps freed heap for reuse,
// up to about twice what was live after its last collection, and
// collects only as it allocates, so a server that goes quiet keeps what
// it last grew to. Two moments leave much of that behind:
//
//   - A drop: many clients gone at once (a network that went away,
//     phones asleep, a load balancer restarted). A server whose clients
//     all dropped would hold the RSS of their connections until it is
//     restarted. When the connections open have fallen by a quarter of
//     their peak, and by minConns at least, at two checks in a row (the
//     drop may still be under way at the first, and thousands of resets
//     take a while to be read), it returns what they freed.
//   - A surge: many clients come at once (a restart, a network back,
//     the morning). Each login leaves garbage behind (its commands, the
//     hub's and gnet's tables as they grow), uncollected until the heap
//     doubles, which an idle server never does: about a tenth of an
//     idle connection's RSS. When the connections open have risen by a
//     quarter, and by minConns at least, since the last return, and
//     have stopped rising at two checks in a row, it returns that.
//
// A return is a collection and debug.FreeOSMemory: a few milliseconds of
// CPU for a heap of tens of megabytes, at most once per every for each
// kind.
type memReturn struct {
	conns    func() int64 // open now
	peak     func() int64 // the most open at once since the last call
	free     func()
	minConns int64
	every    time.Duration

	high, low int64 // the most and fewest open at once since memory was last returned
	prev      int64 // open at the last check
	lastDrop  time.Time
	lastSurge time.Time
	dropDue   bool // the last check found a drop: the next returns it
	surgeDue  bool // the last check found a surge over: the next returns it
}

// memReturnConns and memReturnEvery are the defaults: a drop or surge
// of fewer than a thousand connections leaves little to return.
const (
	memReturnConns = 1000
	memReturnEvery = 30 * time.Second
)

func newMemReturn(conns, peak func() int64) *memReturn {
	return &memReturn{conns: conns, peak: peak, free: debug.FreeOSMemory, minConns: memReturnConns, every: memReturnEvery}
}

// A memory return, and what made it.
type memEvent struct {
	ended  int64 // connections fewer than at the peak, for a drop
	opened int64 // connections more than at the low, for a surge
}

// check looks at the connections open now, and returns memory after a
// drop or a surge (see memReturn); it says which, or nothing.
func (m *memReturn) check(now time.Time) memEvent {
	n := m.conns()
	m.high = max(m.high, m.peak(), n)
	m.low = min(m.low, n)
	prev := m.prev
	m.prev = n
	drop, rise := m.high-n, n-m.low
	if m.due(now, m.far(drop, m.high), m.lastDrop, &m.dropDue) {
		m.lastDrop = now
		return memEvent{ended: drop}
	}
	if m.due(now, m.far(rise, n) && n <= prev, m.lastSurge, &m.surgeDue) {
		m.lastSurge = now
		return memEvent{opened: rise}
	}
	return memEvent{}
}

// far reports whether a change by d from or to level is worth a return.
func (m *memReturn) far(d, level int64) bool { return d >= m.minConns && 4*d >= level }

// due returns memory at the second check in a row that finds a change
// worth it (found), unless the last return of its kind was within
// every; pending records the first. A return resets the levels changes
// are measured from.
func (m *memReturn) due(now time.Time, found bool, last time.Time, pending *bool) bool {
	if !found || !last.IsZero() && now.Sub(last) < m.every {
		*pending = false
		return false
	}
	if !*pending {
		*pending = true
		return false
	}
	m.dropDue, m.surgeDue = false, false
	m.free()
	m.high, m.low = m.prev, m.prev
	return true
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
			switch ev := m.check(now); {
			case ev.ended > 0:
				log.Info("returned freed memory to the system", zap.Int64("connections_ended", ev.ended))
			case ev.opened > 0:
				log.Info("returned the memory a surge of connections left over", zap.Int64("connections_opened", ev.opened))
			}
		}
	}
}
