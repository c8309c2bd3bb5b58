package auth

import (
	"runtime"
	"sync"
	"time"
)

// PoolOptions size the pool that checks passwords. Zero values take the
// defaults.
type PoolOptions struct {
	// Workers is how many checks run at once. Default: half the CPUs, at
	// least one, so a flood of logins can never take every core from the
	// event loops that relay everyone else's messages.
	Workers int
	// MaxWait bounds how long a check may be expected to wait for a
	// checker. Default 5s. A login beyond it is answered "unavailable" at
	// once: better told to try again than kept waiting longer.
	MaxWait time.Duration
	// MaxQueue bounds how many checks wait, whatever they cost, which
	// bounds the memory they hold. Default 64 per worker.
	MaxQueue int
}

func (o PoolOptions) withDefaults() PoolOptions {
	if o.Workers <= 0 {
		o.Workers = max(1, runtime.GOMAXPROCS(0)/2)
	}
	if o.MaxWait <= 0 {
		o.MaxWait = 5 * time.Second
	}
	if o.MaxQueue <= 0 {
		o.MaxQueue = 64 * o.Workers
	}
	return o
}

// Pool runs password checks off the event loops, first come first
// served. It admits a check only while the checks ahead of it are
// expected to take no longer than MaxWait, and no more than MaxQueue
// are waiting; beyond that Submit refuses, and the caller answers
// "unavailable" instead of letting a flood of logins pile up memory or
// latency.
//
// How long the checks ahead will take is counted, not guessed from their
// number: a bcrypt check's time doubles with each step of cost, so one
// check at cost 14 takes as long as five hundred at cost 5. The pool
// keeps a running measure of its checkers' speed (the time of a check
// divided by 2^cost, averaged over recent checks) and expects each
// queued check to take that times 2^cost of its hash; the wait for a new
// check is the sum over the checks running and queued, divided by
// Workers.
//
// A check still waiting can be cancelled (its connection has gone), and
// then never runs: a flood of logins that hang up must not keep the
// checkers busy after them.
//
// The pool keeps no goroutines while idle: checkers are started as
// checks arrive, up to Workers, and stop when the queue is empty.
type Pool struct {
	opts PoolOptions

	mu      sync.Mutex
	queue   checkList
	working int           // checkers (goroutines)
	running int           // checks running
	ahead   time.Duration // expected time of the checks queued and running
	unit    time.Duration // measured time of one check divided by 2^cost
}

// initialUnit is the pool's measure before it has timed any check: about
// twice what one core of a small virtual machine takes (60 µs, so cost
// 10 in 60 ms). Guessing slow errs on the side of answering unavailable
// a little early in the first seconds of a flood.
const initialUnit = 120 * time.Microsecond

// Check is one password check given to a Pool.
type Check struct {
	run        func()
	cost       int
	expected   time.Duration // as counted in Pool.ahead
	state      checkState
	prev, next *Check
}

type checkState uint8

const (
	checkQueued checkState = iota
	checkRunning
	checkFinished
	checkCancelled
)

// NewPool returns an idle pool.
func NewPool(opts PoolOptions) *Pool {
	p := &Pool{opts: opts.withDefaults(), unit: initialUnit}
	p.queue.init()
	return p
}

// Submit queues run, a check of the given bcrypt cost, and returns its
// handle, or returns nil at once when the pool is full: MaxQueue checks
// are waiting, or the check would be expected to wait more than MaxWait.
// run must not block on anything but CPU.
func (p *Pool) Submit(cost int, run func()) *Check {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.working >= p.opts.Workers {
		// Checks a checker has been started for but not yet taken are
		// not waiting for one.
		waiting := p.queue.len - (p.working - p.running)
		if waiting >= p.opts.MaxQueue || p.ahead/time.Duration(p.opts.Workers) > p.opts.MaxWait {
			return nil
		}
	}
	cost = min(max(cost, 0), 31)
	c := &Check{run: run, cost: cost, expected: p.unit << cost}
	p.queue.pushBack(c)
	p.ahead += c.expected
	if p.working < p.opts.Workers {
		p.working++
		go p.work()
	}
	return c
}

// Cancel withdraws c if it is still waiting, and reports whether it did:
// then its run is never called. A check already running finishes.
func (p *Pool) Cancel(c *Check) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.state != checkQueued {
		return false
	}
	p.queue.remove(c)
	p.ahead -= c.expected
	c.state = checkCancelled
	return true
}

// work is one checker: it runs queued checks in order until none is left.
func (p *Pool) work() {
	for {
		p.mu.Lock()
		c := p.queue.front()
		if c == nil {
			p.working--
			p.mu.Unlock()
			return
		}
		p.queue.remove(c)
		c.state = checkRunning
		p.running++
		p.mu.Unlock()

		start := time.Now()
		c.run()
		took := time.Since(start)

		p.mu.Lock()
		c.state = checkFinished
		p.running--
		p.ahead -= c.expected
		p.learn(c, took)
		p.mu.Unlock()
	}
}

// learn folds a check's time into the measure of the checkers' speed,
// with a weight of one in eight: a few checks are enough to follow a
// change of load, and one check slowed by chance moves it little.
func (p *Pool) learn(c *Check, took time.Duration) {
	sample := took >> c.cost
	p.unit += (sample - p.unit) / 8
	p.unit = max(p.unit, time.Nanosecond)
}

// Busy is the number of checks running or waiting.
func (p *Pool) Busy() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.queue.len + p.running
}

// Expected is how long a check of cost is expected to take now.
func (p *Pool) Expected(cost int) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.unit << min(max(cost, 0), 31)
}

// checkList is a FIFO of checks, linked through the checks themselves.
type checkList struct {
	root Check
	len  int
}

func (l *checkList) init() { l.root.prev, l.root.next = &l.root, &l.root }

func (l *checkList) pushBack(c *Check) {
	c.next, c.prev = &l.root, l.root.prev
	c.prev.next, c.next.prev = c, c
	l.len++
}

func (l *checkList) remove(c *Check) {
	c.prev.next, c.next.prev = c.next, c.prev
	c.prev, c.next = nil, nil
	l.len--
}

func (l *checkList) front() *Check {
	if l.len == 0 {
		return nil
	}
	return l.root.next
}
