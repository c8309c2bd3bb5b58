package auth

import (
	"runtime"
	"sync/atomic"
)

// Pool runs password checks off the event loops. At most Workers checks
// run at once and at most Queue wait for a turn; beyond that Submit
// refuses, and the caller answers "unavailable" instead of letting a
// flood of logins pile up memory or latency.
//
// A check is a bcrypt comparison: milliseconds of pure CPU. With the
// default of half the CPUs, a flood of logins can never take every core
// from the event loops that relay everyone else's messages.
//
// The pool keeps no goroutines while idle: each accepted job gets its own
// goroutine, which waits for one of the Workers slots. The bound on
// accepted jobs also bounds those goroutines, and there is nothing to
// stop when the server stops.
type Pool struct {
	slots    chan struct{} // one per running check
	accepted atomic.Int64  // running plus waiting
	limit    int64
}

// NewPool returns a pool. workers <= 0 means half the CPUs (at least
// one); queue <= 0 means 64 per worker.
func NewPool(workers, queue int) *Pool {
	if workers <= 0 {
		workers = max(1, runtime.GOMAXPROCS(0)/2)
	}
	if queue <= 0 {
		queue = 64 * workers
	}
	return &Pool{slots: make(chan struct{}, workers), limit: int64(workers + queue)}
}

// Submit runs job on the pool, or reports false at once when the pool
// is full. job must not block on anything but CPU.
func (p *Pool) Submit(job func()) bool {
	if p.accepted.Add(1) > p.limit {
		p.accepted.Add(-1)
		return false
	}
	go func() {
		p.slots <- struct{}{}
		defer func() {
			<-p.slots
			p.accepted.Add(-1)
		}()
		job()
	}()
	return true
}

// Busy is the number of jobs running or waiting.
func (p *Pool) Busy() int { return int(p.accepted.Load()) }
