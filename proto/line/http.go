package line

import "bytes"

// IsHTTPRequest reports whether line, as Next returns it, is part of an
// HTTP request's head: a request line ("POST / HTTP/1.1") or one of the
// header lines a browser sends before the body ("Host: ...").
//
// A web page can make a browser send an HTTP request to any port, the
// line port included, with a body of the page's choosing; were the
// body's lines read as commands, the page could log in and connect from
// the visitor's address. The request line always comes first, and a
// browser's first header is Host, so a server that refuses the
// connection at the first line this recognizes acts on nothing the page
// wrote. The header lines matter when the request line was too long to
// be read (a URL of more than limits.max_line).
//
// Neither can be a line of duet's protocol before login: a command
// starts with '/', which no HTTP method or header name contains, and a
// message is refused until the sender has logged in.
func IsHTTPRequest(line []byte) bool {
	return isRequestLine(line) || isBrowserHeader(line)
}

// isRequestLine reports whether line is "METHOD TARGET HTTP/d...": a
// method made of token characters (RFC 9110), a target without spaces,
// and a version.
func isRequestLine(line []byte) bool {
	method, rest, ok := bytes.Cut(line, []byte(" "))
	if !ok || len(method) == 0 || !isToken(method) {
		return false
	}
	target, version, ok := bytes.Cut(rest, []byte(" "))
	if !ok || len(target) == 0 {
		return false
	}
	return len(version) > len("HTTP/") && bytes.HasPrefix(version, []byte("HTTP/")) &&
		version[len("HTTP/")] >= '0' && version[len("HTTP/")] <= '9'
}

// browserHeaders are the header names, in lower case, that browsers send
// in the head of a request a page makes: Host always, and first.
var browserHeaders = []string{
	"host", "origin", "referer", "user-agent", "accept", "accept-encoding",
	"accept-language", "connection", "content-length", "content-type",
	"cookie", "sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest",
	"sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform", "priority",
	"cache-control", "pragma", "upgrade-insecure-requests",
}

// isBrowserHeader reports whether line is "Name:..." with a name from
// browserHeaders, in any case.
func isBrowserHeader(line []byte) bool {
	name, _, ok := bytes.Cut(line, []byte(":"))
	if !ok {
		return false
	}
	for _, h := range browserHeaders {
		if len(name) == len(h) && bytes.EqualFold(name, []byte(h)) {
			return true
		}
	}
	return false
}

// isToken reports whether b is made of HTTP token characters.
func isToken(b []byte) bool {
	for _, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0:
		default:
			return false
		}
	}
	return true
}
