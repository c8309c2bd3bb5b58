package outbox

import (
	"testing"
	"unsafe"
)

// TestOutboxFitsItsSizeClass: every connection holds an Outbox, idle or
// not, and the allocator rounds 65 to 80 bytes: a field added or moved
// past 64 costs 16 bytes a connection.
func TestOutboxFitsItsSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(Outbox{}); n > 64 {
		t.Fatalf("Outbox is %d bytes, want at most 64", n)
	}
}
