package httphead

import (
	"net/http"
	"strings"
	"testing"
)

const request = "GET /ws HTTP/1.1\r\nHost: duet.test\r\nUpgrade: websocket\r\n\r\n"

// TestEnd: the head ends exactly at its blank line, whatever follows it
// (here a WebSocket frame sent right behind an upgrade request), and not
// before the whole blank line has arrived.
func TestEnd(t *testing.T) {
	stream := request + "\x81\x85\x01\x02\x03\x04hello"
	for i := 0; i <= len(request); i++ {
		want := 0
		if i == len(request) {
			want = len(request)
		}
		if got := End([]byte(stream[:i])); got != want {
			t.Fatalf("End of the first %d bytes = %d, want %d", i, got, want)
		}
	}
	if got := End([]byte(stream)); got != len(request) {
		t.Fatalf("End with a frame behind the head = %d, want %d", got, len(request))
	}
}

// TestEndBareLF: a head ends where http.ReadRequest, which parses it,
// stops reading: at the first empty line, whether its lines end in CRLF
// or in a bare LF. (A head that ReadRequest took to end at a bare LF
// while End waited for CRLF CRLF swallowed the request pipelined behind
// it.)
func TestEndBareLF(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want int
	}{
		{"bare LFs", "GET / HTTP/1.1\nHost: x\n\n", 24},
		{"bare LFs, then a request", "GET /a HTTP/1.1\nHost: x\n\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n", 25},
		{"CRLF lines, bare LF blank line", "GET / HTTP/1.1\r\nHost: x\r\n\n", 26},
		{"bare LF lines, CRLF blank line", "GET / HTTP/1.1\nHost: x\n\r\n", 25},
		{"no header", "GET / HTTP/1.1\n\n", 16},
		{"an empty first line", "\r\nGET / HTTP/1.1\r\n\r\n", 2},
		{"a blank line of spaces continues a header", "GET / HTTP/1.1\nHost: x\n \n\n", 26},
		{"a lone CR is no line end", "GET / HTTP/1.1\r\rHost: x\r\r\n", 0},
		{"unfinished", "GET / HTTP/1.1\nHost: x\n", 0},
		{"unfinished blank line", "GET / HTTP/1.1\nHost: x\n\r", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := End([]byte(tc.in)); got != tc.want {
				t.Fatalf("End = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name   string
		in     string
		status int
		end    int
		path   string
	}{
		{"whole", request, 0, len(request), "/ws"},
		{"pipelined", "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n", 0, 19, "/a"},
		{"bare LFs", "GET /a HTTP/1.1\nHost: x\n\n", 0, 25, "/a"},
		{"bare LFs, pipelined", "GET /a HTTP/1.1\nHost: x\n\nGET /b HTTP/1.1\r\n\r\n", 0, 25, "/a"},
		{"incomplete", "GET / HTTP/1.1\r\nHost: x\r\n", 0, 0, ""},
		{"malformed", "GET /%zz HTTP/1.1\r\n\r\n", http.StatusBadRequest, 21, ""},
		{"not HTTP", "\x16\x03\x01\x02\x00\r\n\r\n", http.StatusBadRequest, 9, ""},
		{"too large", "GET / HTTP/1.1\r\n" + strings.Repeat("X: y\r\n", 2000) + "\r\n", http.StatusRequestHeaderFieldsTooLarge, 0, ""},
		{"too large, bare LFs", "GET / HTTP/1.1\n" + strings.Repeat("X: y\n", 2000) + "\n", http.StatusRequestHeaderFieldsTooLarge, 0, ""},
		{"too large, unfinished", "GET / HTTP/1.1\r\n" + strings.Repeat("X", MaxHead), http.StatusRequestHeaderFieldsTooLarge, 0, ""},
		{"a space before a colon", "GET /ws HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello", http.StatusBadRequest, 49, ""},
		{"a tab before a colon", "GET /ws HTTP/1.1\r\nUpgrade\t: websocket\r\n\r\n", http.StatusBadRequest, 41, ""},
		{"spaces around a colon in a value", "GET /a HTTP/1.1\r\nX-Note: a : b\r\n\r\n", 0, 34, "/a"},
		{"a line command", "/login alice\n", http.StatusBadRequest, 0, ""},
		{"a line command, in telnet", "/login alice\r\n", http.StatusBadRequest, 0, ""},
		{"a line command, unfinished", "/login ali", 0, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := Parse([]byte(tc.in))
			if h.Status != tc.status || h.End != tc.end {
				t.Fatalf("status %d end %d, want %d %d", h.Status, h.End, tc.status, tc.end)
			}
			if tc.path != "" && (h.Request == nil || h.Request.URL.Path != tc.path) {
				t.Fatalf("request %v, want path %s", h.Request, tc.path)
			}
			if command := strings.HasPrefix(tc.in, "/") && tc.status != 0; h.Command != command {
				t.Fatalf("command %v, want %v", h.Command, command)
			}
			if tc.status == http.StatusRequestHeaderFieldsTooLarge && h.Used != len(tc.in) {
				t.Fatalf("used %d of %d", h.Used, len(tc.in))
			}
		})
	}
}

func TestOrigin(t *testing.T) {
	for _, tc := range []struct {
		in           string
		scheme, host string
		ok           bool
	}{
		{"https://chat.example.com", "https", "chat.example.com", true},
		{"http://localhost:8080", "http", "localhost:8080", true},
		{"https://[::1]:8443", "https", "[::1]:8443", true},
		{"https://chat.example.com/", "", "", false},
		{"https://chat.example.com/path", "", "", false},
		{"https://chat.example.com?q", "", "", false},
		{"https://chat.example.com#f", "", "", false},
		{"https://user@chat.example.com", "", "", false},
		{"ws://chat.example.com", "", "", false},
		{"chat.example.com", "", "", false},
		{"null", "", "", false},
		{"", "", "", false},
		{"https:chat.example.com", "", "", false},
	} {
		scheme, host, ok := Origin(tc.in)
		if scheme != tc.scheme || host != tc.host || ok != tc.ok {
			t.Errorf("Origin(%q) = %q, %q, %v; want %q, %q, %v", tc.in, scheme, host, ok, tc.scheme, tc.host, tc.ok)
		}
	}
}
