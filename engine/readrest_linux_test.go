package engine

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

// TestReadRest: what a socket still holds when its peer has ended its
// input is read whole, after what was read before, and the end is
// reported; past the bound, what fits is read and the end is not.
func TestReadRest(t *testing.T) {
	sent := bytes.Repeat([]byte("line of the file\n"), 5000) // 85,000 bytes
	pair := func() int {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
		if err := unix.SetsockoptInt(fds[1], unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20); err != nil {
			t.Fatal(err)
		}
		if n, err := unix.Write(fds[1], sent); n != len(sent) || err != nil {
			t.Fatalf("wrote %d: %v", n, err)
		}
		if err := unix.Shutdown(fds[1], unix.SHUT_WR); err != nil {
			t.Fatal(err)
		}
		return fds[0]
	}
	got, end := readRest(pair(), []byte("before\n"), 1<<20)
	if !end || !bytes.Equal(got, append([]byte("before\n"), sent...)) {
		t.Fatalf("read %d bytes, end %v", len(got), end)
	}
	got, end = readRest(pair(), nil, 1000)
	if end || !bytes.Equal(got, sent[:1000]) {
		t.Fatalf("read %d bytes within a bound of 1000, end %v", len(got), end)
	}
}
