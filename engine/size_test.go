package engine

import (
	"testing"
	"unsafe"
)

// TestConnFitsItsSizeClass: every connection holds a conn, idle or not,
// and the allocator rounds 193 up to 208 bytes: a field added past 192
// costs 16 bytes a connection (times are stamps, not time.Time, and the
// client's address is a netip.Addr with a byte for its key, for this).
func TestConnFitsItsSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(conn{}); n > 192 {
		t.Fatalf("conn is %d bytes, want at most 192", n)
	}
}

// TestConnLayout: what a partner's loop reads of a connection as it
// delivers to it (owner.go: the encoder's protocol, the loop's busy
// flag, the socket) is in conn's first cache line, which the
// connection's own reads do not write. web once sat in the second,
// beside the framer the connection's loop lends and takes back at
// every read, and each delivery had to fetch that line from the other
// processor.
func TestConnLayout(t *testing.T) {
	var cn conn
	if n := unsafe.Sizeof(cn); n%64 != 0 {
		t.Fatalf("conn is %d bytes, not whole cache lines: its objects would not start on one", n)
	}
	for _, f := range []struct {
		name      string
		off, size uintptr
	}{
		{"loop", unsafe.Offsetof(cn.loop), unsafe.Sizeof(cn.loop)},
		{"c", unsafe.Offsetof(cn.c), unsafe.Sizeof(cn.c)},
		{"web", unsafe.Offsetof(cn.web), unsafe.Sizeof(cn.web)},
	} {
		if f.off+f.size > 64 {
			t.Errorf("conn.%s is at bytes %d-%d, want it in the first cache line", f.name, f.off, f.off+f.size-1)
		}
	}
	if off := unsafe.Offsetof(cn.line); off < 64 {
		t.Errorf("conn.line, written at every read, is at byte %d, in the first cache line", off)
	}
}
