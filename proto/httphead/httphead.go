// Package httphead reads what the web port needs of an HTTP/1.x request
// before it acts on one: where the request head ends, the request it
// holds, and which client a trusted proxy's X-Forwarded-For names.
//
// It is pure: it works on the bytes that have arrived so far, which may
// end anywhere, and knows nothing of sockets, of the browser client or of
// WebSocket. The engine asks it about the front of a connection's input,
// then hands the request to the web site or the WebSocket handshake
// (package wsframe).
package httphead

import (
	"bufio"
	"bytes"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// MaxHead bounds a request head, its blank line included. A longer one
// is answered 431 Request Header Fields Too Large.
const MaxHead = 8 << 10

// End returns the length of the HTTP request head at the front of buf,
// including the blank line that ends it, or 0 while that line has not
// arrived. The caller bounds how long it waits (Parse does, at MaxHead).
//
// The head ends where http.ReadRequest, which parses it, stops reading:
// at the first empty line, ending in CRLF or in a bare LF as any of its
// lines may (a line of spaces is not empty: ReadRequest reads it as the
// continuation of a header). Were the two to disagree, a request
// pipelined behind a head ending in bare LFs would be taken for part of
// that head, and never answered.
func End(buf []byte) int {
	start := 0 // where the current line starts
	for {
		i := bytes.IndexByte(buf[start:], '\n')
		if i < 0 {
			return 0
		}
		if i == 0 || i == 1 && buf[start] == '\r' {
			return start + i + 1
		}
		start += i + 1
	}
}

// Head is what the front of a connection that has not upgraded holds:
// nothing yet, an error to answer, or a request.
type Head struct {
	// End is the length of the head, terminating blank line included;
	// zero while it is incomplete.
	End int
	// Status, when not zero, is the HTTP error to answer before closing
	// (400 or 431); Used is then how much of the input it accounts for.
	Status int
	Used   int
	// Request is the parsed request when Status is zero and End is not.
	Request *http.Request
	// Command is set with Status 400 when the first line is one of
	// duet's line-protocol commands ("/login alice"): a user typed it
	// into netcat or telnet connected to the web port. It is answered at
	// once, not after limits.handshake_timeout, since no blank line
	// ending a head follows it.
	Command bool
}

// Parse reads one HTTP request head from the front of buf. Whatever buf
// holds, it returns a request, an error status, or asks for more bytes
// (a zero Head) while buf is still within MaxHead.
func Parse(buf []byte) Head {
	end := End(buf)
	if first, _, complete := bytes.Cut(buf, []byte("\n")); complete && len(first) > 0 && first[0] == '/' {
		// No request line starts with '/': the method comes first.
		return Head{Status: http.StatusBadRequest, Used: len(buf), Command: true}
	}
	if end == 0 || end > MaxHead {
		if end > MaxHead || len(buf) > MaxHead {
			return Head{Status: http.StatusRequestHeaderFieldsTooLarge, Used: len(buf)}
		}
		return Head{}
	}
	if spaceBeforeColon(buf[:end]) {
		return Head{End: end, Status: http.StatusBadRequest, Used: end}
	}
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(buf[:end])))
	if err != nil {
		return Head{End: end, Status: http.StatusBadRequest, Used: end}
	}
	return Head{End: end, Request: req}
}

// spaceBeforeColon reports whether a header line of head has a space or
// tab between its name and the colon, which RFC 9112 (section 5.1) has a
// server refuse with 400: http.ReadRequest takes "Content-Length : 5"
// for a header of another name, and gobwas's handshake trims the name,
// so such a request would be read two ways (a body one side does not
// see, then read as WebSocket frames).
func spaceBeforeColon(head []byte) bool {
	_, rest, _ := bytes.Cut(head, []byte("\n")) // the request line has no header
	for len(rest) > 0 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte("\n"))
		if i := bytes.IndexByte(line, ':'); i > 0 && (line[i-1] == ' ' || line[i-1] == '\t') {
			return true
		}
	}
	return false
}

// ForwardedClient reads the client's address from the X-Forwarded-For
// lines a trusted proxy passed on. Each proxy appends the address of the
// peer it heard from, so only the end of the list can be believed: the
// rightmost entry was written by the trusted proxy that talks to duetd,
// and an entry left of it only while the entry to its right names a
// trusted proxy too (that proxy wrote it). The walk therefore goes from
// the right across every line as one list (RFC 9110 section 5.3: repeated
// lines are one comma-separated value), past trusted proxies, and takes
// the first address that is not one. An entry that is not an address
// (empty, "unknown", an address with a port) ends the walk with nothing
// believed: whoever wrote it, what lies left of it is the client's own
// writing. ok is false when no address could be believed; the caller
// then keeps the proxy's own.
func ForwardedClient(values []string, trusted func(netip.Addr) bool) (client netip.Addr, ok bool) {
	for i := len(values) - 1; i >= 0; i-- {
		line := values[i]
		for {
			j := strings.LastIndexByte(line, ',')
			a, err := netip.ParseAddr(strings.TrimSpace(line[j+1:]))
			if err != nil || a.Zone() != "" {
				return netip.Addr{}, false
			}
			if a = a.Unmap(); !trusted(a) {
				return a, true
			}
			if j < 0 {
				break
			}
			line = line[:j]
		}
	}
	return netip.Addr{}, false
}

// Origin reads an Origin header's value as a browser writes it (RFC
// 6454): scheme://host[:port], the scheme http or https, and nothing
// after. It returns the scheme and the host, port included; ok is false
// for anything else, the opaque origin "null" included.
func Origin(o string) (scheme, host string, ok bool) {
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" ||
		u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return "", "", false
	}
	return u.Scheme, u.Host, true
}
