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
