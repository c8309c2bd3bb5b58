package line

import (
	"bufio"
	"bytes"
	"net/http"
	"strings"
	"testing"
)

func TestIsHTTPRequest(t *testing.T) {
	for _, tt := range []struct {
		line string
		want bool
	}{
		// What browsers and tools send.
		{"POST / HTTP/1.1", true},
		{"GET /favicon.ico HTTP/1.1", true},
		{"OPTIONS * HTTP/1.1", true},
		{"PRI * HTTP/2.0", true},
		{"CONNECT duet.example:7070 HTTP/1.1", true},
		{"PROPFIND /x?y=z HTTP/1.0", true},
		{"Host: 127.0.0.1:7070", true},
		{"host:127.0.0.1", true},
		{"Origin: https://evil.example", true},
		{"User-Agent: Mozilla/5.0", true},
		{"Content-Type: text/plain;charset=UTF-8", true},
		{"Sec-Fetch-Mode: no-cors", true},

		// The protocol's own lines, and what people type.
		{"/login alice", false},
		{"/connect 0123456789abcdef0123456789abcdef", false},
		{"/login GET / HTTP/1.1", false},
		{"hello", false},
		{"", false},
		{"GET", false},
		{"GET /", false},
		{"GET / HTTP/", false},
		{"GET / HTTPS/1.1", false},
		{"GET  / HTTP/1.1", false},
		{"G(T / HTTP/1.1", false},
		{"hosts: many", false},
		{"Host", false},
		{"my host: alice", false},
		{"note: Host: x", false},
	} {
		if got := IsHTTPRequest([]byte(tt.line)); got != tt.want {
			t.Errorf("IsHTTPRequest(%q) = %v, want %v", tt.line, got, tt.want)
		}
	}
}

// TestIsHTTPRequestRealHead runs the head of real requests, as Go's
// client writes them, through Framer and IsHTTPRequest: the first line
// is recognized, and so is the Host line after it, for when a request
// line is too long to be read.
func TestIsHTTPRequestRealHead(t *testing.T) {
	for _, method := range []string{"GET", "POST", "PUT", "DELETE", "PATCH", "QUERY"} {
		req, err := http.NewRequest(method, "http://127.0.0.1:7070/some/path?q=1", strings.NewReader("/login mallory\n"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Origin", "https://evil.example")
		var buf bytes.Buffer
		if err := req.Write(&buf); err != nil {
			t.Fatal(err)
		}
		var f Framer
		head := buf.Bytes()
		first, n, _ := f.Next(head)
		second, _, _ := f.Next(head[n:])
		if !IsHTTPRequest(first) || !IsHTTPRequest(second) {
			t.Errorf("%s: IsHTTPRequest(%q) = %v, IsHTTPRequest(%q) = %v", method, first, IsHTTPRequest(first), second, IsHTTPRequest(second))
		}
	}
}

// FuzzIsHTTPRequest checks that no line of the protocol's commands is
// taken for HTTP, and that every request line Go's own server accepts
// is.
func FuzzIsHTTPRequest(f *testing.F) {
	for _, seed := range []string{
		"POST / HTTP/1.1", "GET /x HTTP/1.0", "Host: x", "/login alice", "hello",
		"M-SEARCH * HTTP/1.1", "GET / HTTP/1.1 ", "get / http/1.1", "A B HTTP/9",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		got := IsHTTPRequest(line)
		if got && len(line) > 0 && line[0] == '/' {
			t.Fatalf("IsHTTPRequest(%q) for a command", line)
		}
		if bytes.ContainsAny(line, "\r\n") {
			return // Next never returns such a line
		}
		head := append(append([]byte(nil), line...), "\r\nHost: x\r\n\r\n"...)
		if _, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head))); err == nil && !got {
			t.Fatalf("Go's server reads %q as a request line, IsHTTPRequest does not", line)
		}
	})
}
