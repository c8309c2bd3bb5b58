package engine

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"duet/proto/jsonproto"
)

// loopState is duet's state for one gnet event loop. Fields marked
// loop-only are touched only by code running on that loop's goroutine
// (gnet callbacks and tasks passed to Execute), so they need no lock.
type loopState struct {
	srv  *Server
	el   gnet.EventLoop
	epfd int // the loop's epoll descriptor, or -1 (see readpause_linux.go)

	// loop-only
	conns      []*conn            // open connections, in no order (addConn)
	backlogged map[*conn]struct{} // gnet holds output for these; rechecked every backlogInterval (addBacklog)
	lingering  map[*conn]stamp    // ended with input unread, closed by the stamp at the latest (closeSocket)
	// graced are lingering line connections a drain told to resume,
	// in their grace (closeSocket); made at the first.
	graced map[*conn]*grace
	// late holds, for a connection that closed while its input waited
	// on an answer, what its close left to do (lateClose, hold.go).
	late map[*conn]*lateClose
	// watched are the connections whose user timeout is set aside and
	// that owed their client something at the last look, with what the
	// look saw; looked at every watchInterval while there are any
	// (untimed.go).
	watched      map[*conn]tcpLook
	watchTimer   loopTimer         // runs lookWatched
	backlogTimer loopTimer         // runs checkBacklogs
	framers      []*lineIn         // spare line readers (lendFramer)
	json         jsonproto.Decoder // one per loop: decoding happens on the loop
	run          [][]byte          // messages read together, relayed as one run (see addToRun)
	runIDs       []uint64          // the id each message of run came with (0: none), for its refusal
	runBytes     int               // text bytes in run
	runCopy      []byte            // texts of run that had to be copied (see keepForRun)
	now          time.Time         // the loop's clock: read as each callback or task begins (clockIn)
	start        time.Time         // when the loop was made: connections keep their times as stamps since it

	// Shared: connections to flush, filled by Deliver on any goroutine.
	mu        sync.Mutex
	pending   []*conn
	spare     []*conn
	triggered bool

	flushTask, tickTask gnet.Runnable // made once: a method value would allocate per call

	busy atomic.Bool // the loop is in a read callback and flushes when it ends
}

func newLoopState(srv *Server, el gnet.EventLoop, epfd int) *loopState {
	ls := &loopState{
		srv:        srv,
		el:         el,
		epfd:       epfd,
		backlogged: make(map[*conn]struct{}),
		lingering:  make(map[*conn]stamp),
		watched:    make(map[*conn]tcpLook),
	}
	ls.now = time.Now()
	ls.start = ls.now
	ls.flushTask = gnet.RunnableFunc(ls.flushPending)
	ls.tickTask = gnet.RunnableFunc(ls.tick)
	ls.backlogTimer = loopTimer{ls: ls, every: backlogInterval, task: gnet.RunnableFunc(ls.checkBacklogs)}
	ls.watchTimer = loopTimer{ls: ls, every: watchInterval, task: gnet.RunnableFunc(ls.lookWatched)}
	return ls
}

// clockIn reads the loop's clock, as a gnet callback or a task begins on
// the loop: what the loop stamps and checks while it runs (a rate
// limit's tokens, a reader's progress, a WebSocket's last frame) is then
// as fresh as the input, whether or not a tick came lately.
func (ls *loopState) clockIn() { ls.now = time.Now() }

// execute runs fn on the loop, its clock read first; it fails only when
// the engine is shutting down. The loop's own tasks, made once so as not
// to allocate (flushTask, tickTask, the timers'), read the clock
// themselves.
func (ls *loopState) execute(ctx context.Context, fn func()) error {
	return ls.el.Execute(ctx, gnet.RunnableFunc(func(context.Context) error {
		ls.clockIn()
		fn()
		return nil
	}))
}

// A stamp is a moment of a loop's clock (loopState.now), as the time
// since the loop was made: a connection keeps its deadlines' starts as
// stamps, 8 bytes each where a time.Time takes 24.
type stamp time.Duration

// stamp is the loop's clock now, as a stamp.
func (ls *loopState) stamp() stamp { return stamp(ls.now.Sub(ls.start)) }

// since is how long ago s was, by the loop's clock.
func (ls *loopState) since(s stamp) time.Duration { return time.Duration(ls.stamp() - s) }

// schedule queues cn for a flush on this loop. Only the first connection
// queued since the last flush wakes the loop.
func (ls *loopState) schedule(cn *conn) {
	ls.mu.Lock()
	ls.pending = append(ls.pending, cn)
	// A loop busy in a read callback flushes its list when the callback
	// ends (see endTraffic), so it needs no wake-up: under load that
	// saves an eventfd write and an extra turn of the loop per batch.
	// busy is read under mu, and endTraffic clears it before it takes the
	// list under mu, so an entry added while busy is always flushed.
	wake := !ls.triggered && !ls.busy.Load()
	if wake {
		ls.triggered = true
	}
	ls.mu.Unlock()
	if wake {
		if err := ls.el.Execute(context.Background(), ls.flushTask); err != nil {
			// The loop is shutting down; its connections are being closed.
			ls.mu.Lock()
			ls.triggered = false
			ls.mu.Unlock()
		}
	}
}

// beginTraffic and endTraffic bracket a read callback on the loop.
func (ls *loopState) beginTraffic() { ls.busy.Store(true) }

func (ls *loopState) endTraffic() {
	ls.busy.Store(false)
	ls.mu.Lock()
	n := len(ls.pending)
	ls.mu.Unlock()
	if n > 0 {
		_ = ls.flushPending(nil)
	}
}

// flushPending runs on the loop: it writes out every queued connection.
func (ls *loopState) flushPending(context.Context) error {
	ls.clockIn()
	ls.eachPending((*conn).flush)
	return nil
}

// eachPending takes the list of connections queued for a flush, leaving
// an empty one in its place, and calls fn for each.
func (ls *loopState) eachPending(fn func(*conn)) {
	ls.mu.Lock()
	list := ls.pending
	ls.pending = ls.spare[:0]
	ls.triggered = false
	ls.mu.Unlock()
	for i, cn := range list {
		fn(cn)
		list[i] = nil
	}
	// Keep the list for the next swap, unless a burst made it huge. Never
	// leave spare pointing at the array that pending now uses.
	ls.mu.Lock()
	if cap(list) <= 4096 {
		ls.spare = list[:0]
	} else {
		ls.spare = nil
	}
	ls.mu.Unlock()
}

// tick runs on the loop every tickInterval: it enforces the deadlines
// (handshake, login, idle; login too for closes that wait on their
// input) and the input guards' seconds. Readers whose
// sockets were full are rechecked apart, and more often (addBacklog).
func (ls *loopState) tick(context.Context) error {
	ls.clockIn()
	// By index, with the length read each turn: a connection that
	// closes meanwhile (a failed write closes at once) leaves its slot
	// to the last, which then waits for the next tick.
	for i := 0; i < len(ls.conns); i++ {
		cn := ls.conns[i]
		cn.checkDeadlines()
		cn.checkGuard()
		cn.tickTCP()
	}
	for cn, late := range ls.late {
		cn.checkLate(late)
	}
	ls.lingered()
	return nil
}

// loopTimer runs a task on its loop every so often, while the loop has
// something for it: it is armed only then, so that an idle loop is not
// woken for it.
type loopTimer struct {
	ls    *loopState
	every time.Duration
	task  gnet.Runnable // made once: a method value would allocate per call
	armed bool          // the timer will run task
	timer *time.Timer
}

// arm has the task run once, t.every from now, unless it is to already.
func (t *loopTimer) arm() {
	if t.armed {
		return
	}
	t.armed = true
	if t.timer == nil {
		t.timer = time.AfterFunc(t.every, t.wake)
	} else {
		t.timer.Reset(t.every)
	}
}

// wake runs on the timer's goroutine: it asks the loop to run the task.
// An engine shutting down refuses it; its connections are being closed
// anyway.
func (t *loopTimer) wake() {
	_ = t.ls.el.Execute(context.Background(), t.task)
}

// ran is called by the task as it begins: the timer is not armed any
// more, until the task arms it again.
func (t *loopTimer) ran() { t.armed = false }

// addBacklog notes that gnet holds output for cn, and arms the loop's
// backlog timer if it is not: a drained socket then waits at most
// backlogInterval for the rest of its output.
func (ls *loopState) addBacklog(cn *conn) {
	ls.backlogged[cn] = struct{}{}
	ls.backlogTimer.arm()
}

// checkBacklogs runs on the loop backlogInterval after a connection was
// backlogged, and again for as long as any is.
func (ls *loopState) checkBacklogs(context.Context) error {
	ls.clockIn()
	ls.backlogTimer.ran()
	for cn := range ls.backlogged {
		cn.checkBacklog()
	}
	if len(ls.backlogged) > 0 {
		ls.backlogTimer.arm()
	}
	return nil
}

// eachConn runs fn on the loop for each of its connections.
func (ls *loopState) eachConn(fn func(*conn)) error {
	return ls.execute(context.Background(), func() {
		for _, cn := range slices.Clone(ls.conns) {
			fn(cn)
		}
	})
}

// addConn and dropConn keep the loop's list of its connections: a slice,
// with each connection's index in it (conn.slot), where a set would take
// four times the memory per connection.
func (ls *loopState) addConn(cn *conn) {
	cn.slot = int32(len(ls.conns))
	ls.conns = append(ls.conns, cn)
}

func (ls *loopState) dropConn(cn *conn) {
	i, last := int(cn.slot), len(ls.conns)-1
	if i < 0 || i > last || ls.conns[i] != cn {
		return
	}
	moved := ls.conns[last]
	ls.conns[i], moved.slot = moved, int32(i)
	ls.conns[last] = nil
	ls.conns = ls.conns[:last]
	cn.slot = -1
	// A list left mostly empty by a drop is made anew, so that what it
	// held goes back with the connections' memory (memReturn).
	if c := cap(ls.conns); c > 1024 && len(ls.conns) < c/4 {
		ls.conns = append(make([]*conn, 0, 2*len(ls.conns)), ls.conns...)
	}
}
