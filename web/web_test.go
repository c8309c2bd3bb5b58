package web

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"io"
	"io/fs"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"
)

// fixedNow is the clock the tests give the site, so Date is predictable.
var fixedNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newTestSite(t testing.TB) *Site {
	t.Helper()
	s, err := NewSite(Options{})
	if err != nil {
		t.Fatalf("NewSite: %v", err)
	}
	s.now = func() time.Time { return fixedNow }
	return s
}

// embedded returns a file as it is stored under static/.
func embedded(t testing.TB, name string) []byte {
	t.Helper()
	b, err := fs.ReadFile(static, "static/"+name)
	if err != nil {
		t.Fatalf("read embedded %s: %v", name, err)
	}
	return b
}

// servedApp is app.js as the site serves it: the embedded file, with its
// import of secure.js under that module's versioned URL (versionImports).
func servedApp(t testing.TB, s *Site) []byte {
	t.Helper()
	return bytes.Replace(embedded(t, "app.js"), []byte("from './secure.js'"),
		[]byte("from './secure.js?v="+s.files["/secure.js"].version+"'"), 1)
}

// staticNames lists every embedded file.
func staticNames(t testing.TB) []string {
	t.Helper()
	var names []string
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			names = append(names, strings.TrimPrefix(p, "static/"))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// request builds a request the way the engine does: raw bytes through
// http.ReadRequest.
func request(t testing.TB, raw string) *http.Request {
	t.Helper()
	req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		t.Fatalf("ReadRequest(%q): %v", raw, err)
	}
	return req
}

// get builds "METHOD target HTTP/1.1" with a Host and the given header lines.
func get(t testing.TB, method, target string, headers ...string) *http.Request {
	t.Helper()
	var b strings.Builder
	b.WriteString(method + " " + target + " HTTP/1.1\r\nHost: duet.test\r\n")
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	return request(t, b.String())
}

// response parses raw as exactly one HTTP response to req and returns it
// with its body read. Bytes left over after the response fail the test:
// they would be taken for the start of the next one.
func response(t testing.TB, raw []byte, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(raw))
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatalf("ReadResponse: %v\n%s", err, raw)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	if n := br.Buffered(); n > 0 {
		t.Fatalf("%d bytes after the response:\n%s", n, raw)
	}
	return resp, body
}

// rawHeader returns a header's value as written, before http.ReadResponse
// consumes it (it drops Connection: close after setting resp.Close).
func rawHeader(raw []byte, name string) string {
	head, _, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
	for _, line := range strings.Split(string(head), "\r\n")[1:] {
		k, v, _ := strings.Cut(line, ":")
		if strings.EqualFold(k, name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func gunzip(t testing.TB, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("gzip: %v", err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	return out
}

// checkSecurity asserts the headers every Respond answer carries.
func checkSecurity(t testing.TB, h http.Header) {
	t.Helper()
	checkSecurityBlock(t, h)
	if got := h.Get("Date"); got != fixedNow.Format(http.TimeFormat) {
		t.Errorf("Date = %q", got)
	}
	// HSTS is for deployments behind TLS, and off unless asked for.
	if got := h.Values("Strict-Transport-Security"); len(got) > 0 {
		t.Errorf("Strict-Transport-Security = %q without Options.HSTSMaxAge", got)
	}
}

// checkSecurityBlock asserts the security headers every answer carries,
// ErrorResponse's included, each exactly once.
func checkSecurityBlock(t testing.TB, h http.Header) {
	t.Helper()
	want := map[string]string{
		"X-Content-Type-Options":     "nosniff",
		"Referrer-Policy":            "no-referrer",
		"X-Frame-Options":            "DENY",
		"Cross-Origin-Opener-Policy": "same-origin",
		"Content-Security-Policy":    contentSecurityPolicy,
	}
	for k, v := range want {
		if got := h.Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want %q once", k, got, v)
		}
	}
}

func TestCSPValue(t *testing.T) {
	// The policy is part of the contract with the page: spelled out here
	// so that a change to it is a visible change to a test.
	const want = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
	if contentSecurityPolicy != want {
		t.Fatalf("CSP = %q, want %q", contentSecurityPolicy, want)
	}
}

func TestFiles(t *testing.T) {
	s := newTestSite(t)
	index := s.files["/index.html"].identity.body
	tests := []struct {
		path, ctype string
		body        []byte
		cache       string
	}{
		{"/", "text/html; charset=utf-8", index, "no-cache"},
		{"/index.html", "text/html; charset=utf-8", index, "no-cache"},
		{"/?x=1", "text/html; charset=utf-8", index, "no-cache"},
		{"/app.js", "text/javascript; charset=utf-8", servedApp(t, s), "no-cache"},
		{"/style.css", "text/css; charset=utf-8", embedded(t, "style.css"), "no-cache"},
		{"/favicon.svg", "image/svg+xml", embedded(t, "favicon.svg"), "no-cache"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			req := get(t, "GET", tt.path)
			raw, keep := s.Respond(req)
			if !keep {
				t.Error("keepAlive = false for a plain HTTP/1.1 GET")
			}
			resp, body := response(t, raw, req)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			checkSecurity(t, resp.Header)
			if got := resp.Header.Get("Content-Type"); got != tt.ctype {
				t.Errorf("Content-Type = %q, want %q", got, tt.ctype)
			}
			if got := resp.Header.Get("Cache-Control"); got != tt.cache {
				t.Errorf("Cache-Control = %q, want %q", got, tt.cache)
			}
			if ce := resp.Header.Get("Content-Encoding"); ce != "" {
				t.Errorf("Content-Encoding = %q without Accept-Encoding", ce)
			}
			if etag := resp.Header.Get("ETag"); !regexp.MustCompile(`^"[0-9a-f]{24}"$`).MatchString(etag) {
				t.Errorf("ETag = %q, want a strong quoted tag", etag)
			}
			if resp.ContentLength != int64(len(tt.body)) {
				t.Errorf("Content-Length = %d, want %d", resp.ContentLength, len(tt.body))
			}
			if !bytes.Equal(body, tt.body) {
				t.Error("body differs from the embedded file")
			}
			if resp.Header.Get("Connection") != "" {
				t.Errorf("Connection = %q on a kept HTTP/1.1 connection", resp.Header.Get("Connection"))
			}
		})
	}
}

// Every embedded file must be reachable under its own name, so a file
// added to static/ cannot be forgotten by TestFiles' table.
func TestEveryFileServed(t *testing.T) {
	s := newTestSite(t)
	for _, name := range staticNames(t) {
		req := get(t, "GET", "/"+name)
		raw, _ := s.Respond(req)
		resp, _ := response(t, raw, req)
		if resp.StatusCode != 200 {
			t.Errorf("/%s: status %d", name, resp.StatusCode)
		}
	}
}

// index.html names each asset as NAME?v=TAG; under that exact URL the
// asset may be cached for good, under any other it must be revalidated.
func TestVersionedAssets(t *testing.T) {
	s := newTestSite(t)
	index := string(s.files["/"].identity.body)
	stored := string(embedded(t, "index.html"))
	for _, name := range []string{"app.js", "style.css", "favicon.svg"} {
		f := s.files["/"+name]
		ref := name + "?v=" + f.version
		if !strings.Contains(index, `"`+ref+`"`) {
			t.Errorf("index.html does not reference %s", ref)
		}
		if strings.Contains(index, `"`+name+`"`) {
			t.Errorf("index.html still has an unversioned reference to %s", name)
		}
		if !strings.Contains(stored, `"`+name+`"`) {
			t.Errorf("static/index.html does not reference %s at all", name)
		}
		for _, tt := range []struct{ query, cache string }{
			{"?v=" + f.version, "public, max-age=31536000, immutable"},
			{"?v=0000", "no-cache"},
			{"?v=" + f.version + "&x=1", "no-cache"},
			{"", "no-cache"},
		} {
			req := get(t, "GET", "/"+name+tt.query)
			raw, _ := s.Respond(req)
			resp, _ := response(t, raw, req)
			if got := resp.Header.Get("Cache-Control"); got != tt.cache {
				t.Errorf("/%s%s: Cache-Control = %q, want %q", name, tt.query, got, tt.cache)
			}
		}
	}
	// The index itself is never cached for good, whatever the query.
	req := get(t, "GET", "/?v="+s.files["/app.js"].version)
	raw, _ := s.Respond(req)
	resp, _ := response(t, raw, req)
	if got := resp.Header.Get("Cache-Control"); got != "no-cache" {
		t.Errorf("index with ?v: Cache-Control = %q", got)
	}
	// The rewrite changes nothing but the references.
	restored := regexp.MustCompile(`\?v=[0-9a-f]{24}"`).ReplaceAllString(index, `"`)
	if restored != stored {
		t.Error("index.html differs from static/index.html beyond the ?v= tags")
	}
}

func TestGzip(t *testing.T) {
	s := newTestSite(t)
	tests := []struct {
		accept   string // "" sends no Accept-Encoding
		wantGzip bool
	}{
		{"", false},
		{"gzip", true},
		{"GZIP", true},
		{"x-gzip", true},
		{"gzip, deflate, br, zstd", true},
		{"br;q=1.0, gzip;q=0.8, *;q=0.1", true},
		{"deflate, br", false},
		{"identity", false},
		{"gzip;q=0", false},
		{"gzip; q=0.000", false},
		{"gzip;q=0.001", true},
		{"*", true},
		{"*;q=0", false},
		{"br, *", true},
		{"gzip;q=0, *", false}, // an explicit gzip entry beats the wildcard
		{"gzip;q=nonsense", false},
	}
	for _, name := range []string{"index.html", "app.js", "style.css"} {
		f := s.files["/"+name]
		if f.gzip == nil {
			t.Fatalf("%s has no gzip body", name)
		}
		for _, tt := range tests {
			t.Run(name+"/"+tt.accept, func(t *testing.T) {
				var hdr []string
				if tt.accept != "" {
					hdr = append(hdr, "Accept-Encoding: "+tt.accept)
				}
				req := get(t, "GET", "/"+name, hdr...)
				raw, _ := s.Respond(req)
				resp, body := response(t, raw, req)
				if resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
				if got := resp.Header.Get("Vary"); got != "Accept-Encoding" {
					t.Errorf("Vary = %q", got)
				}
				want := f.identity.body
				if tt.wantGzip {
					if ce := resp.Header.Get("Content-Encoding"); ce != "gzip" {
						t.Fatalf("Content-Encoding = %q, want gzip", ce)
					}
					if resp.Header.Get("ETag") != f.gzip.etag {
						t.Errorf("ETag = %q, want the gzip tag %q", resp.Header.Get("ETag"), f.gzip.etag)
					}
					if len(body) >= len(want) {
						t.Errorf("gzip body %d bytes, identity %d", len(body), len(want))
					}
					body = gunzip(t, body)
				} else {
					if ce := resp.Header.Get("Content-Encoding"); ce != "" {
						t.Fatalf("Content-Encoding = %q, want none", ce)
					}
					if resp.Header.Get("ETag") != f.identity.etag {
						t.Errorf("ETag = %q, want %q", resp.Header.Get("ETag"), f.identity.etag)
					}
				}
				if name == "app.js" && !bytes.Equal(body, servedApp(t, s)) || name == "style.css" && !bytes.Equal(body, embedded(t, name)) {
					t.Error("body differs from the embedded file")
				}
				if !bytes.Equal(body, want) {
					t.Error("body differs from the identity body")
				}
			})
		}
	}
	if s.files["/app.js"].gzip.etag == s.files["/app.js"].identity.etag {
		t.Error("gzip and identity share an ETag; strong tags must differ per encoding")
	}
}

// A file that gzip does not shrink is only ever sent as is, and then
// there is nothing to vary on.
func TestGzipSkippedWhenLarger(t *testing.T) {
	s, err := newSite(fstest.MapFS{
		"index.html": {Data: []byte("<!doctype html><title>x</title>")},
		"tiny.txt":   {Data: []byte("hi")},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return fixedNow }
	req := get(t, "GET", "/tiny.txt", "Accept-Encoding: gzip")
	raw, _ := s.Respond(req)
	resp, body := response(t, raw, req)
	if resp.Header.Get("Content-Encoding") != "" || resp.Header.Get("Vary") != "" || string(body) != "hi" {
		t.Errorf("got %q with headers %v", body, resp.Header)
	}
}

// TestHSTS: with a max-age, every Respond answer carries
// Strict-Transport-Security, whatever its status; a max-age that is not
// whole seconds is refused.
func TestHSTS(t *testing.T) {
	s, err := NewSite(Options{HSTSMaxAge: 8760 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return fixedNow }
	etag := s.files["/app.js"].identity.etag
	for _, req := range []*http.Request{
		get(t, "GET", "/"),
		get(t, "HEAD", "/"),
		get(t, "GET", "/app.js", "If-None-Match: "+etag),
		get(t, "GET", "/missing"),
		get(t, "POST", "/"),
	} {
		raw, _ := s.Respond(req)
		resp, _ := response(t, raw, req)
		if got := resp.Header.Values("Strict-Transport-Security"); len(got) != 1 || got[0] != "max-age=31536000" {
			t.Errorf("%s %s (%d): Strict-Transport-Security = %q, want max-age=31536000 once",
				req.Method, req.URL, resp.StatusCode, got)
		}
		checkSecurityBlock(t, resp.Header)
	}
	for _, bad := range []time.Duration{-time.Second, 1500 * time.Millisecond} {
		if _, err := NewSite(Options{HSTSMaxAge: bad}); err == nil {
			t.Errorf("NewSite accepted an HSTS max-age of %v", bad)
		}
	}
}

func TestNewSiteErrors(t *testing.T) {
	for name, fsys := range map[string]fstest.MapFS{
		"no index":          {"app.js": {Data: []byte("1")}},
		"unknown extension": {"index.html": {Data: []byte("x")}, "data.bin": {Data: []byte("x")}},
	} {
		if _, err := newSite(fsys, Options{}); err == nil {
			t.Errorf("%s: newSite succeeded", name)
		}
	}
}

func TestConditional(t *testing.T) {
	s := newTestSite(t)
	f := s.files["/app.js"]
	id, gz := f.identity.etag, f.gzip.etag
	tests := []struct {
		name    string
		headers []string
		want    int
		etag    string
	}{
		{"match", []string{"If-None-Match: " + id}, 304, id},
		{"weak match", []string{"If-None-Match: W/" + id}, 304, id},
		{"in a list", []string{`If-None-Match: "nope", ` + id}, 304, id},
		{"across headers", []string{`If-None-Match: "nope"`, "If-None-Match: " + id}, 304, id},
		{"star", []string{"If-None-Match: *"}, 304, id},
		{"other tag", []string{`If-None-Match: "0123"`}, 200, id},
		{"unquoted", []string{"If-None-Match: " + strings.Trim(id, `"`)}, 200, id},
		{"gzip tag, identity chosen", []string{"If-None-Match: " + gz}, 200, id},
		{"gzip tag, gzip chosen", []string{"If-None-Match: " + gz, "Accept-Encoding: gzip"}, 304, gz},
		{"identity tag, gzip chosen", []string{"If-None-Match: " + id, "Accept-Encoding: gzip"}, 200, gz},
	}
	for _, tt := range tests {
		for _, method := range []string{"GET", "HEAD"} {
			t.Run(tt.name+"/"+method, func(t *testing.T) {
				req := get(t, method, "/app.js", tt.headers...)
				raw, keep := s.Respond(req)
				resp, body := response(t, raw, req)
				if resp.StatusCode != tt.want {
					t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
				}
				if !keep {
					t.Error("keepAlive = false")
				}
				checkSecurity(t, resp.Header)
				if got := resp.Header.Get("ETag"); got != tt.etag {
					t.Errorf("ETag = %q, want %q", got, tt.etag)
				}
				if resp.Header.Get("Cache-Control") == "" || resp.Header.Get("Vary") == "" {
					t.Errorf("304 and 200 both need Cache-Control and Vary: %v", resp.Header)
				}
				if tt.want == 304 {
					if len(body) != 0 || bytes.HasSuffix(raw, []byte("\r\n\r\n")) == false {
						t.Errorf("304 carries a body: %q", raw)
					}
					if resp.Header.Get("Content-Length") != "" {
						t.Error("304 with Content-Length")
					}
				}
			})
		}
	}
}

func TestHEAD(t *testing.T) {
	s := newTestSite(t)
	for _, target := range []string{"/", "/app.js", "/style.css", "/favicon.svg", "/missing"} {
		for _, accept := range []string{"identity", "gzip"} {
			getReq := get(t, "GET", target, "Accept-Encoding: "+accept)
			headReq := get(t, "HEAD", target, "Accept-Encoding: "+accept)
			getRaw, _ := s.Respond(getReq)
			headRaw, keep := s.Respond(headReq)
			getResp, getBody := response(t, getRaw, getReq)
			headResp, headBody := response(t, headRaw, headReq)
			if !keep {
				t.Errorf("HEAD %s: keepAlive = false", target)
			}
			if len(headBody) != 0 {
				t.Errorf("HEAD %s: body %q", target, headBody)
			}
			if headResp.StatusCode != getResp.StatusCode {
				t.Errorf("HEAD %s: status %d, GET %d", target, headResp.StatusCode, getResp.StatusCode)
			}
			if got, want := headResp.Header.Get("Content-Length"), strconv.Itoa(len(getBody)); got != want {
				t.Errorf("HEAD %s (%s): Content-Length %q, want %q", target, accept, got, want)
			}
			for k := range getResp.Header {
				if headResp.Header.Get(k) != getResp.Header.Get(k) {
					t.Errorf("HEAD %s: %s = %q, GET has %q", target, k, headResp.Header.Get(k), getResp.Header.Get(k))
				}
			}
			if want := len(getRaw) - len(getBody); len(headRaw) != want {
				t.Errorf("HEAD %s: %d bytes, want the GET head's %d", target, len(headRaw), want)
			}
		}
	}
}

func TestNotFound(t *testing.T) {
	s := newTestSite(t)
	// Each target is valid to http.ReadRequest, so it reaches Respond.
	targets := []string{
		"/missing",
		"/index.htm",
		"/APP.JS",
		"/app.js/",
		"//app.js",
		"/./app.js",
		"/static/app.js",
		"/web.go",
		"/ws/app.js",
		"/favicon.ico",
		// Traversal, plain and encoded.
		"/../web.go",
		"/../../etc/passwd",
		"/static/../app.js",
		"/x/../app.js",
		"/%2e%2e/web.go",
		"/%2E%2E/web.go",
		"/..%2fweb.go",
		"/%2e%2e%2fweb.go",
		"/.%2e/web.go",
		"/%2fapp.js",
		"/app%2ejs",
		"/%61pp.js",
		"/app.js%00",
		"/app.js%00.html",
		"/..\\web.go",
		"/.\\app.js",
		"/%5c..%5cweb.go",
		"/app.js\\",
		"/index.html/..",
		"/index.html/../app.js",
		"/%2findex.html",
		// Absolute form names a path too; it must match the same way.
		"http://duet.test/../web.go",
		"http://duet.test/%2e%2e/web.go",
	}
	for _, target := range targets {
		t.Run(target, func(t *testing.T) {
			req := get(t, "GET", target)
			raw, keep := s.Respond(req)
			resp, body := response(t, raw, req)
			if resp.StatusCode != 404 {
				t.Fatalf("status %d, want 404", resp.StatusCode)
			}
			if !keep {
				t.Error("keepAlive = false after a 404")
			}
			checkSecurity(t, resp.Header)
			if string(body) != "not found\n" {
				t.Errorf("body %q", body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
	// The absolute form of an existing path is that path.
	req := get(t, "GET", "http://duet.test/app.js")
	raw, _ := s.Respond(req)
	if resp, _ := response(t, raw, req); resp.StatusCode != 200 {
		t.Errorf("absolute-form /app.js: status %d", resp.StatusCode)
	}
}

func TestMethodNotAllowed(t *testing.T) {
	s := newTestSite(t)
	for _, method := range []string{"POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW", "get"} {
		for _, target := range []string{"/", "/app.js", "/missing"} {
			req := get(t, method, target)
			raw, keep := s.Respond(req)
			resp, body := response(t, raw, req)
			if resp.StatusCode != 405 {
				t.Errorf("%s %s: status %d, want 405", method, target, resp.StatusCode)
			}
			if got := resp.Header.Get("Allow"); got != "GET, HEAD" {
				t.Errorf("%s %s: Allow = %q", method, target, got)
			}
			if !keep {
				t.Errorf("%s %s: keepAlive = false for a bodiless request", method, target)
			}
			checkSecurity(t, resp.Header)
			if string(body) != "method not allowed\n" {
				t.Errorf("%s %s: body %q", method, target, body)
			}
		}
	}
	req := request(t, "OPTIONS * HTTP/1.1\r\nHost: duet.test\r\n\r\n")
	raw, _ := s.Respond(req)
	if resp, _ := response(t, raw, req); resp.StatusCode != 405 {
		t.Errorf("OPTIONS *: status %d", resp.StatusCode)
	}
}

func TestKeepAlive(t *testing.T) {
	s := newTestSite(t)
	tests := []struct {
		name       string
		raw        string
		keep       bool
		connection string // the response's Connection header
	}{
		{"1.1 default", "GET / HTTP/1.1\r\nHost: h\r\n\r\n", true, ""},
		{"1.1 keep-alive", "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n", true, ""},
		{"1.1 close", "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", false, "close"},
		{"1.1 Close", "GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n", false, "close"},
		{"1.1 close in list", "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, close\r\n\r\n", false, "close"},
		{"1.1 upgrade only", "GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n\r\n", true, ""},
		{"1.0 default", "GET / HTTP/1.0\r\n\r\n", false, "close"},
		{"1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true, "keep-alive"},
		{"1.0 Keep-Alive", "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true, "keep-alive"},
		{"1.0 HEAD keep-alive", "HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true, "keep-alive"},
		{"404 close", "GET /nope HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", false, "close"},
		{"405 1.0", "DELETE / HTTP/1.0\r\n\r\n", false, "close"},
		{"GET with body", "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", false, "close"},
		{"POST with body", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc", false, "close"},
		{"POST chunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false, "close"},
		{"POST empty", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := request(t, tt.raw)
			raw, keep := s.Respond(req)
			if keep != tt.keep {
				t.Errorf("keepAlive = %v, want %v", keep, tt.keep)
			}
			resp, _ := response(t, raw, req)
			if got := rawHeader(raw, "Connection"); got != tt.connection {
				t.Errorf("Connection = %q, want %q", got, tt.connection)
			}
			if resp.Close != !tt.keep {
				t.Errorf("a client would read Close = %v", resp.Close)
			}
			if resp.Proto != "HTTP/1.1" {
				t.Errorf("response proto %q", resp.Proto)
			}
		})
	}
}

func TestErrorResponse(t *testing.T) {
	tests := []struct {
		status     int
		text       string
		header     []string
		wantStatus int
	}{
		{400, "bad request", nil, 400},
		{408, "request timeout", nil, 408},
		{431, "request header fields too large", nil, 431},
		{503, "server busy, try again", nil, 503},
		{0, "no status", nil, 500},
		{799, "unknown status", nil, 500},
		{400, "already ends in a newline\n", nil, 400},
		{426, "handshake error: bad version", []string{"Sec-WebSocket-Version: 13\r\n"}, 426},
	}
	for _, tt := range tests {
		raw := ErrorResponse(http.MethodGet, tt.status, tt.text, tt.header...)
		resp, body := response(t, raw, &http.Request{Method: "GET"})
		if resp.StatusCode != tt.wantStatus {
			t.Errorf("%d: status %d, want %d", tt.status, resp.StatusCode, tt.wantStatus)
		}
		if resp.Status != strconv.Itoa(tt.wantStatus)+" "+http.StatusText(tt.wantStatus) {
			t.Errorf("%d: status line %q", tt.status, resp.Status)
		}
		if string(body) != strings.TrimSuffix(tt.text, "\n")+"\n" {
			t.Errorf("%d: body %q", tt.status, body)
		}
		if !resp.Close || rawHeader(raw, "Connection") != "close" {
			t.Errorf("%d: not Connection: close", tt.status)
		}
		if resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
			t.Errorf("%d: headers %v", tt.status, resp.Header)
		}
		for _, h := range tt.header {
			name, value, _ := strings.Cut(strings.TrimSuffix(h, "\r\n"), ": ")
			if got := resp.Header.Get(name); got != value {
				t.Errorf("%d: %s = %q, want %q", tt.status, name, got, value)
			}
		}
		checkSecurityBlock(t, resp.Header)
		// The answer to a HEAD request is the same but for the body
		// (RFC 9110 section 9.3.2): its length is still given.
		head := ErrorResponse(http.MethodHead, tt.status, tt.text, tt.header...)
		if want := raw[:len(raw)-len(body)]; !bytes.Equal(head, want) {
			t.Errorf("%d: to HEAD %q, want %q", tt.status, head, want)
		}
		response(t, head, &http.Request{Method: "HEAD"})
	}
}

// Respond keeps no state between calls; the race detector checks that
// concurrent calls share nothing mutable.
func TestRespondConcurrent(t *testing.T) {
	s := newTestSite(t)
	want, _ := s.Respond(get(t, "GET", "/app.js", "Accept-Encoding: gzip"))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				got, _ := s.Respond(get(t, "GET", "/app.js", "Accept-Encoding: gzip"))
				if !bytes.Equal(got, want) {
					t.Error("responses differ")
					return
				}
			}
		})
	}
	wg.Wait()
}

// ---- The static files themselves ----------------------------------------

// stripComments removes comments so that the URL check below may allow
// them there. For JavaScript and CSS it skips strings and template
// literals; it does not recognise regular expression literals, so the
// page's regexps must not contain quotes or comment markers.
func stripComments(t *testing.T, name string, src []byte) string {
	t.Helper()
	switch {
	case strings.HasSuffix(name, ".html"), strings.HasSuffix(name, ".svg"):
		return regexp.MustCompile(`(?s)<!--.*?-->`).ReplaceAllString(string(src), "")
	case strings.HasSuffix(name, ".js"), strings.HasSuffix(name, ".css"):
	default:
		return string(src)
	}
	js := strings.HasSuffix(name, ".js")
	var out strings.Builder
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch {
		case c == '/' && i+1 < len(src) && src[i+1] == '*':
			end := bytes.Index(src[i+2:], []byte("*/"))
			if end < 0 {
				t.Fatalf("%s: unterminated comment", name)
			}
			i += 2 + end + 1
		case js && c == '/' && i+1 < len(src) && src[i+1] == '/':
			for i < len(src) && src[i] != '\n' {
				i++
			}
			out.WriteByte('\n')
		case c == '"' || c == '\'' || (js && c == '`'):
			j := i + 1
			for ; j < len(src) && src[j] != c; j++ {
				if src[j] == '\\' {
					j++
				} else if src[j] == '\n' && c != '`' {
					t.Fatalf("%s: unterminated string at byte %d", name, i)
				}
			}
			if j >= len(src) {
				t.Fatalf("%s: unterminated string at byte %d", name, i)
			}
			out.Write(src[i : j+1])
			i = j
		default:
			out.WriteByte(c)
		}
	}
	return out.String()
}

// The page must load nothing from anywhere but its own origin. An XML
// namespace is a name, not a fetch, and is allowed.
func TestStaticNoRemoteURLs(t *testing.T) {
	url := regexp.MustCompile(`(?i)https?://`)
	namespace := regexp.MustCompile(`xmlns(:[a-z]+)?="http://www\.w3\.org/[0-9]{4}/[a-z]+"`)
	for _, name := range staticNames(t) {
		code := stripComments(t, name, embedded(t, name))
		code = namespace.ReplaceAllString(code, "")
		for _, loc := range url.FindAllStringIndex(code, -1) {
			line := strings.Count(code[:loc[0]], "\n") + 1
			t.Errorf("%s: URL outside a comment near line %d: %q", name, line, code[loc[0]:min(len(code), loc[0]+60)])
		}
		if strings.Contains(code, "//cdn") || regexp.MustCompile(`(src|href)="//`).MatchString(code) {
			t.Errorf("%s: protocol-relative URL", name)
		}
	}

	// Every src and href in the page names one of its own files (or a
	// fragment), and the stylesheet imports and fetches nothing.
	names := map[string]bool{}
	for _, n := range staticNames(t) {
		names[n] = true
	}
	index := string(embedded(t, "index.html"))
	for _, m := range regexp.MustCompile(`\b(?:src|href)="([^"]*)"`).FindAllStringSubmatch(index, -1) {
		if v := m[1]; !names[v] && !strings.HasPrefix(v, "#") {
			t.Errorf("index.html: reference %q is not an embedded file", v)
		}
	}
	css := stripComments(t, "style.css", embedded(t, "style.css"))
	if strings.Contains(css, "@import") || regexp.MustCompile(`url\(\s*['"]?[^d'"]`).MatchString(css) {
		t.Error("style.css imports or fetches something")
	}
}

// Everything people write reaches the page through textContent; the HTML
// parsing sinks (and eval's kin) must not appear in the script at all,
// not even in comments, so this check needs no parser.
func TestScriptNoHTMLSinks(t *testing.T) {
	banned := []string{
		"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
		"createContextualFragment", "setHTMLUnsafe", "parseHTMLUnsafe", "DOMParser",
		"eval(", "new Function", "javascript:",
	}
	for _, name := range staticNames(t) {
		if !strings.HasSuffix(name, ".js") {
			continue
		}
		src := string(embedded(t, name))
		for _, b := range banned {
			if strings.Contains(src, b) {
				t.Errorf("%s uses %s", name, b)
			}
		}
		// Timers given a string are eval in disguise.
		if regexp.MustCompile(`set(Timeout|Interval)\(\s*['"` + "`]").MatchString(src) {
			t.Errorf("%s passes a string to a timer", name)
		}
	}
}

// The CSP forbids inline script, inline style and handler attributes; a
// page that used them would break silently in the browser, so it is
// caught here instead.
func TestMarkupCSPClean(t *testing.T) {
	checks := []struct {
		what string
		re   *regexp.Regexp
	}{
		{"inline script", regexp.MustCompile(`(?i)<script\b[^>]*>\s*[^<\s]`)},
		{"style element", regexp.MustCompile(`(?i)<style\b`)},
		{"style attribute", regexp.MustCompile(`(?i)\sstyle\s*=`)},
		{"event handler attribute", regexp.MustCompile(`(?i)\son[a-z]+\s*=`)},
		{"javascript: URL", regexp.MustCompile(`(?i)javascript:`)},
		{"base element", regexp.MustCompile(`(?i)<base\b`)},
	}
	for _, name := range staticNames(t) {
		if !strings.HasSuffix(name, ".html") && !strings.HasSuffix(name, ".svg") {
			continue
		}
		src := stripComments(t, name, embedded(t, name))
		for _, c := range checks {
			if loc := c.re.FindStringIndex(src); loc != nil {
				t.Errorf("%s: %s: %q", name, c.what, src[loc[0]:min(len(src), loc[1]+40)])
			}
		}
		for _, tag := range regexp.MustCompile(`(?i)<script\b[^>]*>`).FindAllString(src, -1) {
			if !strings.Contains(tag, " src=") {
				t.Errorf("%s: script without src: %s", name, tag)
			}
		}
		if strings.HasSuffix(name, ".svg") && regexp.MustCompile(`(?i)<script|<foreignObject`).MatchString(src) {
			t.Errorf("%s: script in an image", name)
		}
	}
}

// The element ids are the contract with browser tests: each must exist
// exactly once, and no id may repeat.
func TestIndexIDs(t *testing.T) {
	index := string(embedded(t, "index.html"))
	count := map[string]int{}
	for _, m := range regexp.MustCompile(`\sid="([^"]+)"`).FindAllStringSubmatch(index, -1) {
		count[m[1]]++
	}
	for id, n := range count {
		if n > 1 {
			t.Errorf("id %q appears %d times", id, n)
		}
	}
	for _, id := range []string{
		"name", "password", "login", "token", "copy", "share-link", "connect-token",
		"connect", "leave", "message", "send", "log", "state",
	} {
		if count[id] != 1 {
			t.Errorf("id %q missing", id)
		}
	}
	// Every form control has a label.
	for _, m := range regexp.MustCompile(`<(?:input|textarea)\b[^>]*\sid="([^"]+)"`).FindAllStringSubmatch(index, -1) {
		if !strings.Contains(index, `<label for="`+m[1]+`"`) {
			t.Errorf("control #%s has no label", m[1])
		}
	}
	if !regexp.MustCompile(`<ol id="log"[^>]*aria-live="polite"`).MatchString(index) {
		t.Error("#log is not aria-live=polite")
	}
	// Every id the script looks up exists in the page.
	app := string(embedded(t, "app.js"))
	for _, m := range regexp.MustCompile(`byId\('([^']+)'\)`).FindAllStringSubmatch(app, -1) {
		if count[m[1]] != 1 {
			t.Errorf("app.js looks up #%s, which index.html lacks", m[1])
		}
	}
}

func BenchmarkRespond(b *testing.B) {
	s := newTestSite(b)
	for _, tt := range []struct{ name, raw string }{
		{"index-gzip", "GET / HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip\r\n\r\n"},
		{"app-304", "GET /app.js HTTP/1.1\r\nHost: h\r\nIf-None-Match: " + s.files["/app.js"].identity.etag + "\r\n\r\n"},
		{"404", "GET /missing HTTP/1.1\r\nHost: h\r\n\r\n"},
	} {
		req := request(b, tt.raw)
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.Respond(req)
			}
		})
	}
}
