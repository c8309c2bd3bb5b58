package engine

import (
	"net/http"
	"strings"
	"testing"
)

// FuzzParseRequestHead: whatever bytes arrive first on the web port,
// parsing never panics, never claims more than it was given, asks for
// more only while the head can still fit, and yields either a request
// or an error status.
func FuzzParseRequestHead(f *testing.F) {
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
		"GET / HTTP/1.1\r\n" + strings.Repeat("X: y\r\n", 2000) + "\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, buf []byte) {
		h := parseRequestHead(buf)
		switch {
		case h.status == 0 && h.end == 0:
			if len(buf) > maxRequestHead {
				t.Fatalf("waits for more with %d bytes, over the %d-byte limit", len(buf), maxRequestHead)
			}
		case h.status == 0:
			if h.req == nil || h.end > len(buf) || h.end > maxRequestHead {
				t.Fatalf("request %v with end %d of %d", h.req, h.end, len(buf))
			}
		case h.status == http.StatusBadRequest || h.status == http.StatusRequestHeaderFieldsTooLarge:
			if h.req != nil || h.used <= 0 || h.used > len(buf) {
				t.Fatalf("status %d using %d of %d bytes", h.status, h.used, len(buf))
			}
		default:
			t.Fatalf("unexpected status %d", h.status)
		}
	})
}
