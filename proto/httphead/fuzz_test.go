package httphead

import (
	"bufio"
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// FuzzParse: whatever bytes arrive first on the web port,
// parsing never panics, never claims more than it was given, asks for
// more only while the head can still fit, and yields either a request
// or an error status.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://x\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /app.js HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\nHost: x\n\n",
		"GET / HTTP/1.1\r\nHost: x\r\n",
		"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
		"GET /%zz HTTP/1.1\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
		"GET / HTTP/9.9\r\n\r\n",
		"/login alice\r\n",
		"GET / HTTP/1.1\r\n" + strings.Repeat("X: y\r\n", 2000) + "\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, buf []byte) {
		h := Parse(buf)
		if h.Command && h.Status != http.StatusBadRequest {
			t.Fatalf("a line command answered %d", h.Status)
		}
		switch {
		case h.Status == 0 && h.End == 0:
			if len(buf) > MaxHead {
				t.Fatalf("waits for more with %d bytes, over the %d-byte limit", len(buf), MaxHead)
			}
		case h.Status == 0:
			if h.Request == nil || h.End > len(buf) || h.End > MaxHead {
				t.Fatalf("request %v with end %d of %d", h.Request, h.End, len(buf))
			}
		case h.Status == http.StatusBadRequest || h.Status == http.StatusRequestHeaderFieldsTooLarge:
			if h.Request != nil || h.Used <= 0 || h.Used > len(buf) {
				t.Fatalf("status %d using %d of %d bytes", h.Status, h.Used, len(buf))
			}
		default:
			t.Fatalf("unexpected status %d", h.Status)
		}
	})
}

// FuzzEnd holds End to http.ReadRequest, which parses the head End
// measures: where ReadRequest reads a request, End says the head ends
// exactly where ReadRequest stopped reading, and the head it measures
// reads as a request again; where End finds no end, ReadRequest finds no
// request. The two disagreeing is a request pipelined behind a head
// swallowed, or one read from the middle of another.
func FuzzEnd(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /a HTTP/1.1\nHost: x\n\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\n",
		"GET / HTTP/1.1\nHost: x\n\r\n",
		"GET / HTTP/1.1\nHost: x\n \n\n",
		"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
		"GET / HTTP/1.1\r\rHost: x\r\r\n\r\n",
		"\r\nGET / HTTP/1.1\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
		"GET / HTTP/1.1\r\nHost: x\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, buf []byte) {
		end := End(buf)
		if end < 0 || end > len(buf) {
			t.Fatalf("End %d of %d bytes", end, len(buf))
		}
		if end > 0 && End(buf[:end-1]) != 0 {
			t.Fatalf("End %d, yet a head ends at %d before it", end, End(buf[:end-1]))
		}
		read, ok := readRequest(buf)
		switch {
		case ok && read != end:
			t.Fatalf("ReadRequest read a %d-byte head, End says %d", read, end)
		case end > 0:
			if again, ok := readRequest(buf[:end]); ok && again != end {
				t.Fatalf("ReadRequest read %d bytes of a %d-byte head", again, end)
			}
		}
	})
}

// readRequest reads a request from buf with http.ReadRequest, and
// returns how many bytes of buf it read: the request head, since it
// reads a body only when asked to.
func readRequest(buf []byte) (int, bool) {
	src := bytes.NewReader(buf)
	br := bufio.NewReader(src)
	if _, err := http.ReadRequest(br); err != nil {
		return 0, false
	}
	return len(buf) - src.Len() - br.Buffered(), true
}
