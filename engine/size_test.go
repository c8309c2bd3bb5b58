package engine

import (
	"testing"
	"unsafe"
)

// TestConnFitsItsSizeClass: every connection holds a conn, idle or not,
// and the allocator rounds 209 up to 224 bytes: a field added past 208
// costs 16 bytes a connection (times are stamps, not time.Time, for this).
func TestConnFitsItsSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(conn{}); n > 208 {
		t.Fatalf("conn is %d bytes, want at most 208", n)
	}
}
