package engine

import (
	"testing"

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
		conns[i] = &conn{srv: srv, loop: ls, closed: true} // closed: flush does nothing
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
