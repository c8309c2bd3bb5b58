// Package web is duet's browser client: the static files under static/,
// embedded in the binary, and the HTTP responder that serves them.
//
// The engine parses each request with http.ReadRequest inside its event
// loop and hands it to Site.Respond, which returns the whole response as
// bytes. Nothing here touches a socket, reads a file at run time or keeps
// state between requests: everything a response needs (bodies, gzip
// bodies, ETags, header blocks) is computed once by NewSite.
package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// Header values sent with every response. The policy allows the page
// nothing but its own origin: no inline script or style, no frames, no
// form posts. 'self' in connect-src covers ws: and wss: to the same host,
// which is how the page reaches /ws.
const (
	contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
		"img-src 'self' data:; connect-src 'self'; base-uri 'none'; " +
		"form-action 'none'; frame-ancestors 'none'"
	allowedMethods = "GET, HEAD"

	// cacheRevalidate makes a browser ask every time, cheaply, with
	// If-None-Match. index.html is always served so: it names the current
	// asset versions, and a stale copy would pin old ones.
	cacheRevalidate = "no-cache"
	// cacheImmutable is for an asset requested under its current version
	// tag (app.js?v=TAG, as index.html names it). A new build changes the
	// tag and so the URL, so the old entry is simply never asked for again.
	cacheImmutable = "public, max-age=31536000, immutable"
)

// securityHeaders is the block every answer carries, Respond's and
// ErrorResponse's alike:
//
//   - nosniff: a body is only ever what its Content-Type says.
//   - no-referrer: a page opened from a share link holds a token in its
//     URL (until the page clears it), and no request may carry it away.
//   - frame-ancestors 'none' in the policy, and X-Frame-Options for
//     browsers that predate it: no other site may frame the page and
//     steer a click.
//   - Cross-Origin-Opener-Policy: same-origin: a page from another site
//     that opened duet (window.open) loses its handle on the window, so
//     it cannot navigate it, change its fragment or watch it.
const securityHeaders = "X-Content-Type-Options: nosniff\r\n" +
	"Referrer-Policy: no-referrer\r\n" +
	"X-Frame-Options: DENY\r\n" +
	"Cross-Origin-Opener-Policy: same-origin\r\n" +
	"Content-Security-Policy: " + contentSecurityPolicy + "\r\n"

// contentTypes maps the extensions the site may hold to their types. A
// fixed table rather than package mime, whose answers depend on the host's
// /etc/mime.types. NewSite refuses a file whose extension is missing here,
// so adding an asset of a new kind fails at start rather than serving it
// as application/octet-stream.
var contentTypes = map[string]string{
	".html":        "text/html; charset=utf-8",
	".js":          "text/javascript; charset=utf-8",
	".css":         "text/css; charset=utf-8",
	".svg":         "image/svg+xml",
	".png":         "image/png",
	".ico":         "image/x-icon",
	".txt":         "text/plain; charset=utf-8",
	".json":        "application/json",
	".webmanifest": "application/manifest+json",
}

// indexName is the file served for "/".
const indexName = "index.html"

// Site serves the embedded client. Build it once at start with NewSite;
// it is read-only afterwards and safe for concurrent use.
type Site struct {
	// files is keyed by request path: "/" and "/index.html" both lead to
	// the index, every other file is "/" + its name under static/. Lookup
	// is by exact string, so no path that is not literally one of these
	// keys can reach a file.
	files map[string]*file
	// now is the clock for the Date header; tests replace it.
	now func() time.Time
	// hsts is the Strict-Transport-Security header line, or "" when
	// Options.HSTSMaxAge is zero.
	hsts string
}

// Options are the deployment's choices for the site.
type Options struct {
	// HSTSMaxAge, when not zero, adds Strict-Transport-Security with this
	// max-age (whole seconds) to every Respond answer. Only for a site
	// that users reach over https: a browser that has seen the header
	// refuses plain http to the host until it runs out.
	HSTSMaxAge time.Duration
}

// file is one embedded file, ready to send.
type file struct {
	name        string
	contentType string
	index       bool   // served with cacheRevalidate whatever the query
	version     string // the tag index.html appends as ?v=
	identity    representation
	gzip        *representation // nil when compressing does not make it smaller
}

// representation is one encoding of a file's body.
type representation struct {
	body []byte
	etag string // strong, quoted; differs between encodings of one file
}

// NewSite loads the embedded files, rewrites index.html to name each asset
// by version, and precomputes ETags and gzip bodies.
func NewSite(opts Options) (*Site, error) {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		return nil, err
	}
	return newSite(sub, opts)
}

func newSite(fsys fs.FS, opts Options) (*Site, error) {
	if opts.HSTSMaxAge < 0 || opts.HSTSMaxAge%time.Second != 0 {
		return nil, fmt.Errorf("web: HSTS max-age %v is not a whole number of seconds", opts.HSTSMaxAge)
	}
	s := &Site{files: make(map[string]*file), now: time.Now}
	if opts.HSTSMaxAge > 0 {
		s.hsts = "Strict-Transport-Security: max-age=" +
			strconv.FormatInt(int64(opts.HSTSMaxAge/time.Second), 10) + "\r\n"
	}
	var index *file
	err := fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ctype, ok := contentTypes[path.Ext(name)]
		if !ok {
			return fmt.Errorf("web: no content type for %s", name)
		}
		body, err := fs.ReadFile(fsys, name)
		if err != nil {
			return err
		}
		f := &file{name: name, contentType: ctype, index: name == indexName}
		f.identity.body = body
		s.files["/"+name] = f
		if f.index {
			index = f
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if index == nil {
		return nil, fmt.Errorf("web: static/%s is missing", indexName)
	}
	s.files["/"] = index

	// Assets first: the index's body depends on their versions.
	for key, f := range s.files {
		if !f.index && key != "/" {
			f.version = versionOf(f.identity.body)
		}
	}
	if err := versionImports(s.files); err != nil {
		return nil, err
	}
	index.identity.body = versionReferences(index.identity.body, s.files)
	for key, f := range s.files {
		if key == "/" {
			continue // the index, reached again under /index.html
		}
		if err := f.encode(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// versionOf names a body's content: the first 12 bytes of its SHA-256,
// in hex. Used both as the ?v= tag and as the ETag.
func versionOf(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:12])
}

// versionReferences rewrites each src="NAME" and href="NAME" in the index
// that names an asset to NAME?v=TAG, so that assets can be cached for good
// and a new build is still picked up at once.
func versionReferences(html []byte, files map[string]*file) []byte {
	for key, f := range files {
		if f.index || key == "/" {
			continue
		}
		for _, attr := range []string{"src", "href"} {
			old := attr + `="` + f.name + `"`
			html = bytes.ReplaceAll(html, []byte(old),
				[]byte(attr+`="`+f.name+`?v=`+f.version+`"`))
		}
	}
	return html
}

// versionImports does for modules what versionReferences does for the
// index: in each script, a quoted relative specifier that names another
// asset ('./e2e.js' or "./e2e.js", as in import ... from './e2e.js')
// becomes './e2e.js?v=TAG', so that an imported module is cached for good
// like the script that imports it, and fetched under one URL by every
// importer. A script's own version is taken after its rewrite: a new
// version of a module it imports is a new version of it, and so of every
// URL on the way to it from the index. Scripts are done after what they
// import; a cycle of imports cannot be versioned this way and is refused.
func versionImports(files map[string]*file) error {
	const (
		visiting = 1
		done     = 2
	)
	state := map[*file]int{}
	var visit func(f *file) error
	visit = func(f *file) error {
		if path.Ext(f.name) != ".js" {
			return nil // its version is its body's, taken already
		}
		switch state[f] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("web: %s imports itself through other scripts", f.name)
		}
		state[f] = visiting
		body := f.identity.body
		for key, dep := range files {
			if dep.index || key == "/" || dep == f {
				continue
			}
			for _, quote := range []string{"'", `"`} {
				spec := []byte(quote + "./" + dep.name + quote)
				if !bytes.Contains(body, spec) {
					continue
				}
				if err := visit(dep); err != nil {
					return err
				}
				body = bytes.ReplaceAll(body, spec, []byte(quote+"./"+dep.name+"?v="+dep.version+quote))
			}
		}
		f.identity.body = body
		f.version = versionOf(body)
		state[f] = done
		return nil
	}
	for key, f := range files {
		if !f.index && key != "/" {
			if err := visit(f); err != nil {
				return err
			}
		}
	}
	return nil
}

// encode computes the file's ETags and its gzip body.
func (f *file) encode() error {
	tag := versionOf(f.identity.body)
	f.identity.etag = `"` + tag + `"`
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return err
	}
	if _, err := zw.Write(f.identity.body); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if buf.Len() < len(f.identity.body) {
		f.gzip = &representation{body: buf.Bytes(), etag: `"` + tag + `-gz"`}
	}
	return nil
}

// Respond returns the complete HTTP/1.1 response (status line, headers,
// body) for req, ready to write to the socket. keepAlive reports whether
// the connection may stay open for another request.
//
// Respond never reads req.Body. A request that declares a body is
// answered with Connection: close and keepAlive false, so the engine need
// not drain it and unread body bytes can never be taken for a request.
func (s *Site) Respond(req *http.Request) (resp []byte, keepAlive bool) {
	keepAlive = wantsKeepAlive(req)
	head := req.Method == http.MethodHead
	if req.Method != http.MethodGet && !head {
		return s.plain(req, http.StatusMethodNotAllowed, "method not allowed", "Allow: "+allowedMethods+"\r\n", head, keepAlive), keepAlive
	}
	f := s.lookup(req)
	if f == nil {
		return s.plain(req, http.StatusNotFound, "not found", "", head, keepAlive), keepAlive
	}

	rep := &f.identity
	if f.gzip != nil && acceptsGzip(req.Header) {
		rep = f.gzip
	}
	cacheControl := cacheRevalidate
	if !f.index && req.URL.RawQuery == "v="+f.version {
		cacheControl = cacheImmutable
	}

	status, size := http.StatusOK, len(rep.body)
	if etagMatches(req.Header.Values("If-None-Match"), rep.etag) {
		status, size = http.StatusNotModified, 0
	}
	if head {
		size = 0
	}
	b := make([]byte, 0, 512+size)
	b = s.appendHead(b, req, status, keepAlive)
	b = append(b, "ETag: "...)
	b = append(b, rep.etag...)
	b = append(b, "\r\nCache-Control: "...)
	b = append(b, cacheControl...)
	b = append(b, "\r\n"...)
	if f.gzip != nil {
		// Caches must key on Accept-Encoding whichever encoding this
		// request got, or a gzip body could be handed to a client that
		// did not ask for one.
		b = append(b, "Vary: Accept-Encoding\r\n"...)
	}
	if status == http.StatusNotModified {
		// A 304 has no body and, here, no Content-Length: the header
		// would describe the 200 body the client already holds.
		return append(b, "\r\n"...), keepAlive
	}
	b = append(b, "Content-Type: "...)
	b = append(b, f.contentType...)
	b = append(b, "\r\n"...)
	if rep == f.gzip {
		b = append(b, "Content-Encoding: gzip\r\n"...)
	}
	b = append(b, "Content-Length: "...)
	b = strconv.AppendInt(b, int64(len(rep.body)), 10)
	b = append(b, "\r\n\r\n"...)
	if !head {
		b = append(b, rep.body...)
	}
	return b, keepAlive
}

// lookup finds the file req names, or nil. Only a path that is literally
// one of the embedded names matches: a path that needed percent-decoding
// (RawPath is set, as for %2e%2e or %61pp.js) never does, and since the
// lookup is an exact map key, "..", backslashes, doubled or trailing
// slashes and case variants fall through to 404 without being cleaned.
func (s *Site) lookup(req *http.Request) *file {
	u := req.URL
	if u == nil || u.RawPath != "" || u.Opaque != "" {
		return nil
	}
	return s.files[u.Path]
}

// plain renders a short text/plain answer, such as 404 or 405, with the
// headers every Respond answer carries and extra, lines of its own.
func (s *Site) plain(req *http.Request, status int, text, extra string, head, keepAlive bool) []byte {
	b := s.appendHead(make([]byte, 0, 512+len(text)), req, status, keepAlive)
	b = append(b, extra...)
	return appendPlainBody(b, text, head)
}

// appendHead appends the status line and the headers every Respond answer
// shares: Date, Connection when it needs saying, the security block and
// HSTS when it is on.
func (s *Site) appendHead(b []byte, req *http.Request, status int, keepAlive bool) []byte {
	b = appendStatusLine(b, status)
	b = append(b, "Date: "...)
	b = s.now().UTC().AppendFormat(b, http.TimeFormat)
	b = append(b, "\r\n"...)
	switch {
	case !keepAlive:
		b = append(b, "Connection: close\r\n"...)
	case !req.ProtoAtLeast(1, 1):
		// An HTTP/1.0 client that asked to keep the connection must be
		// told it may; for 1.0, closing is the default.
		b = append(b, "Connection: keep-alive\r\n"...)
	}
	b = append(b, securityHeaders...)
	return append(b, s.hsts...)
}

func appendStatusLine(b []byte, status int) []byte {
	text := http.StatusText(status)
	if text == "" || status < 100 || status > 999 {
		status, text = http.StatusInternalServerError, http.StatusText(http.StatusInternalServerError)
	}
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, text...)
	return append(b, "\r\n"...)
}

// wantsKeepAlive applies HTTP/1.x's persistence rules: 1.1 keeps the
// connection unless a Connection header says close; 1.0 closes it unless
// the request says keep-alive. http.ReadRequest already sets req.Close by
// the same rules; the headers are checked again so that a request built
// any other way is judged alike. A request with a body is never kept (see
// Respond).
func wantsKeepAlive(req *http.Request) bool {
	if req.Close || req.ContentLength != 0 || len(req.TransferEncoding) > 0 {
		return false
	}
	if !req.ProtoAtLeast(1, 0) {
		return false
	}
	if hasToken(req.Header.Values("Connection"), "close") {
		return false
	}
	if !req.ProtoAtLeast(1, 1) {
		return hasToken(req.Header.Values("Connection"), "keep-alive")
	}
	return true
}

// hasToken reports whether any comma-separated element of the header
// values equals token, ignoring case.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for elem := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(elem), token) {
				return true
			}
		}
	}
	return false
}

// acceptsGzip reports whether Accept-Encoding allows gzip: "gzip" or
// "x-gzip" with a non-zero quality, or failing those a "*" with one.
func acceptsGzip(h http.Header) bool {
	star := false
	for _, v := range h.Values("Accept-Encoding") {
		for elem := range strings.SplitSeq(v, ",") {
			coding, params, _ := strings.Cut(elem, ";")
			coding = strings.TrimSpace(coding)
			ok := qualityNonZero(params)
			switch {
			case strings.EqualFold(coding, "gzip"), strings.EqualFold(coding, "x-gzip"):
				return ok
			case coding == "*":
				star = ok
			}
		}
	}
	return star
}

// qualityNonZero reads the parameters after a coding (";q=0.5") and
// reports whether the quality is above zero; no q means 1.
func qualityNonZero(params string) bool {
	for p := range strings.SplitSeq(params, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "q") {
			continue
		}
		q, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		return err == nil && q > 0
	}
	return true
}

// etagMatches applies If-None-Match: "*" matches, and so does any listed
// tag equal to etag under weak comparison (a W/ prefix is ignored), as
// RFC 9110 section 13.1.2 requires for this header.
func etagMatches(values []string, etag string) bool {
	for _, v := range values {
		for elem := range strings.SplitSeq(v, ",") {
			elem = strings.TrimSpace(elem)
			if elem == "*" || strings.TrimPrefix(elem, "W/") == etag {
				return true
			}
		}
	}
	return false
}

// ErrorResponse renders a minimal response for a failure outside the
// site's own pages: before a request could be parsed or served (400, 408,
// 429, 431, 503) or a refused WebSocket handshake (403, 404, 405, 426,
// 505). Its body is text, ending in one newline (added unless text has
// it); header holds lines the status calls for, each ending in CRLF (426
// names the WebSocket versions spoken, 405 the methods allowed). method
// is the request's, "" when none could be read: the answer to a HEAD
// request leaves the body out (RFC 9110 section 9.3.2) but still gives
// its length, as Respond's do. It says Connection: close, since after
// such a failure the rest of the stream cannot be trusted to begin a
// request. It carries the security block as Respond's answers do; HSTS,
// a property of the Site, rides on those.
func ErrorResponse(method string, status int, text string, header ...string) []byte {
	b := appendStatusLine(make([]byte, 0, 512+len(text)), status)
	for _, h := range header {
		b = append(b, h...)
	}
	b = append(b, securityHeaders...)
	b = append(b, "Connection: close\r\n"...)
	return appendPlainBody(b, text, method == http.MethodHead)
}

// appendPlainBody ends every short text answer, the site's and
// ErrorResponse's alike: its type, no caching, its length, and text as
// the body, ending in one newline (added unless text has it). head (a
// HEAD request) leaves the body out but still gives its length.
func appendPlainBody(b []byte, text string, head bool) []byte {
	n := len(text)
	newline := !strings.HasSuffix(text, "\n")
	if newline {
		n++
	}
	b = append(b, "Content-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, "\r\n\r\n"...)
	if head {
		return b
	}
	b = append(b, text...)
	if newline {
		b = append(b, '\n')
	}
	return b
}
