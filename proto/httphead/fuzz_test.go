package httphead

import (
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
