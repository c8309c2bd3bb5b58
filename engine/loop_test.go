package engine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"duet/config"
	"duet/engine/hub"
)

// sameArray reports whether two slices share a backing array.
func sameArray(a, b []*conn) bool {
	return cap(a) > 0 && cap(b) > 0 && &a[:1][0] == &b[:1][0]
}

// TestFlushListsNeverShareAnArray: the loop swaps two lists, one being
// filled by other goroutines while the other is flushed. If both ever
// pointed at one array, a flush would overwrite entries being added and
// crash on a nil connection; bursts of thousands of connections once did.
func TestFlushListsNeverShareAnArray(t *testing.T) {
	srv, err := New(Options{TCPListen: "127.0.0.1:0", Hub: hub.New(hub.Options{}), Limits: config.Defaults().Limits})
	if err != nil {
		t.Fatal(err)
	}
	ls := newLoopState(srv, idleLoop{}, -1)
	conns := make([]*conn, 6000)
	for i := range conns {
		conns[i] = &conn{loop: ls, closed: true} // closed: flush does nothing
	}
	for _, burst := range []int{3, 6000, 10, 5000, 1, 4097, 2} {
		for _, cn := range conns[:burst] {
			ls.schedule(cn)
		}
		if err := ls.flushPending(nil); err != nil {
			t.Fatal(err)
		}
		if sameArray(ls.pending, ls.spare) {
			t.Fatalf("after a burst of %d, pending and spare share an array", burst)
		}
		if len(ls.pending) != 0 {
			t.Fatalf("pending not empty after flush: %d", len(ls.pending))
		}
	}
}

// TestLoopConnList: the loop's list of connections holds exactly those
// added and not dropped, each at the index it records, whatever the
// order of drops (a drop twice, or of one never added, changes nothing),
// and gives back its array once a drop leaves it mostly empty.
func TestLoopConnList(t *testing.T) {
	srv, err := New(Options{TCPListen: "127.0.0.1:0", Hub: hub.New(hub.Options{}), Limits: config.Defaults().Limits})
	if err != nil {
		t.Fatal(err)
	}
	ls := newLoopState(srv, idleLoop{}, -1)
	rng := rand.New(rand.NewPCG(1, 2))
	in := make(map[*conn]bool)
	check := func(when string) {
		t.Helper()
		if len(ls.conns) != len(in) {
			t.Fatalf("%s: %d listed, want %d", when, len(ls.conns), len(in))
		}
		for i, cn := range ls.conns {
			if !in[cn] || int(cn.slot) != i {
				t.Fatalf("%s: index %d holds a connection listed %v, recorded at %d", when, i, in[cn], cn.slot)
			}
		}
	}
	var all []*conn
	for range 5000 {
		cn := &conn{loop: ls}
		ls.addConn(cn)
		in[cn] = true
		all = append(all, cn)
	}
	check("after adding")
	peak := cap(ls.conns)
	stranger := &conn{loop: ls}
	ls.dropConn(stranger)
	check("after dropping one never added")
	for k, i := range rng.Perm(len(all))[:4900] {
		cn := all[i]
		ls.dropConn(cn)
		delete(in, cn)
		if cn.slot != -1 {
			t.Fatalf("a dropped connection records index %d", cn.slot)
		}
		ls.dropConn(cn) // twice
		if k%97 == 0 {
			check("while dropping")
		}
	}
	check("after dropping")
	if cap(ls.conns) >= peak/4 {
		t.Fatalf("the list keeps room for %d with %d left (it held %d)", cap(ls.conns), len(ls.conns), peak)
	}
	for range 100 {
		cn := &conn{loop: ls}
		ls.addConn(cn)
		in[cn] = true
	}
	check("after adding again")
}

// taskLoop is an event loop that hands the tasks it is given to a test,
// which runs them as the loop would.
type taskLoop struct {
	idleLoop
	tasks chan gnet.Runnable
}

func (l taskLoop) Execute(_ context.Context, r gnet.Runnable) error {
	l.tasks <- r
	return nil
}

// TestBacklogTimerOnlyWhileBacklogged: a loop is woken to recheck its
// backlogged connections every backlogInterval while it has any, and not
// at all once it has none, so an idle server is not woken a hundred
// times a second for them.
func TestBacklogTimerOnlyWhileBacklogged(t *testing.T) {
	srv, err := New(Options{TCPListen: "127.0.0.1:0", Hub: hub.New(hub.Options{}), Limits: config.Defaults().Limits})
	if err != nil {
		t.Fatal(err)
	}
	loop := taskLoop{tasks: make(chan gnet.Runnable, 8)}
	ls := newLoopState(srv, loop, -1)
	quiet := func(when string) {
		t.Helper()
		select {
		case <-loop.tasks:
			t.Fatalf("%s: the loop was woken with nothing backlogged", when)
		case <-time.After(10 * backlogInterval):
		}
	}
	recheck := func(when string) {
		t.Helper()
		select {
		case task := <-loop.tasks:
			if err := task.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no recheck of the backlogged connection", when)
		}
	}
	quiet("before any backlog")

	cn := &conn{loop: ls, closed: true} // closed: its checks do nothing
	ls.addBacklog(cn)
	ls.addBacklog(cn) // twice: still one timer
	for i := range 3 {
		recheck(fmt.Sprintf("recheck %d", i+1))
	}
	select {
	case <-loop.tasks:
		t.Fatal("two rechecks queued for one interval")
	default:
	}

	delete(ls.backlogged, cn) // as its close does
	recheck("the last recheck, armed before the close")
	quiet("after the backlog emptied")

	ls.addBacklog(cn)
	recheck("a new backlog")
}
