package wsframe

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/gobwas/ws"
)

// UpgradeConfig is what the server checks in a handshake beyond RFC 6455.
type UpgradeConfig struct {
	// Path is the request path that upgrades, such as "/ws". A query
	// string is ignored. Empty accepts any path.
	Path string
	// CheckOrigin decides whether a browser page from origin may connect
	// to host. Both alias the request and are valid only during the call.
	// origin is nil when the request has no Origin header, which is how
	// clients other than browsers connect. nil allows every origin.
	CheckOrigin func(origin, host []byte) bool
	// Subprotocols lists the subprotocols the server speaks. A client
	// that offers one of them (Sec-WebSocket-Protocol) gets the first it
	// offers echoed back; a client that offers none is answered with
	// none. A client that offers subprotocols of which none is listed is
	// refused with 400 and ErrSubprotocol: RFC 6455 would let the server
	// answer 101 choosing none, but a browser then fails the connection
	// without saying why, and a client that pinned a version must not
	// talk on as if it had it. nil ignores the header altogether.
	Subprotocols []string
}

// Handshake failures that are ours rather than RFC 6455's. Upgrade's
// HandshakeError wraps them, so errors.Is works; the other failures are
// gobwas's ws.ErrHandshake* values and ws.ErrMalformedRequest. All of
// them are *ws.ConnectionRejectedError, whose StatusCode is the HTTP
// status to answer with.
var (
	ErrOriginRefused = ws.RejectConnectionError(
		ws.RejectionStatus(http.StatusForbidden),
		ws.RejectionReason("handshake error: origin not allowed"),
	)
	ErrPathNotFound = ws.RejectConnectionError(
		ws.RejectionStatus(http.StatusNotFound),
		ws.RejectionReason("handshake error: no WebSocket endpoint at this path"),
	)
	ErrDuplicateHeader = ws.RejectConnectionError(
		ws.RejectionStatus(http.StatusBadRequest),
		ws.RejectionReason("handshake error: repeated Host, Origin or Sec-WebSocket-Key header"),
	)
	// ErrSubprotocol is the cause for a client that offered
	// subprotocols, none of which UpgradeConfig.Subprotocols lists. The
	// HandshakeError's reason names the ones that are spoken.
	ErrSubprotocol = ws.RejectConnectionError(
		ws.RejectionStatus(http.StatusBadRequest),
		ws.RejectionReason("handshake error: unsupported subprotocol"),
	)
)

// A HandshakeError is a refused opening handshake, and how to answer it:
// with HTTP status Status, Reason as the text, and Header's lines (each
// ending in CRLF) when the status calls for some. The answer itself is
// the caller's to write, with the headers its other error answers carry.
type HandshakeError struct {
	Status int
	Reason string
	Header string
	// Err is the cause: ErrOriginRefused, ErrPathNotFound,
	// ErrDuplicateHeader, ErrSubprotocol, or one of gobwas's
	// ws.ErrHandshake* values or ws.ErrMalformedRequest.
	Err error
}

func (e *HandshakeError) Error() string { return e.Reason }

func (e *HandshakeError) Unwrap() error { return e.Err }

// Upgrade runs the server side of the opening handshake on one complete
// request head (httphead.End measures one), with ws.Upgrader reading
// from and writing to memory. head is not modified.
//
// On success resp is the 101 Switching Protocols response and err is nil.
// On failure resp is nil and err is a *HandshakeError, to be answered
// before closing the connection: 400 for a malformed or incomplete
// handshake (a Sec-WebSocket-Key that is not the base64 of 16 bytes, as
// RFC 6455 section 4.2.1 requires, or that comes twice, among others), 403 for a refused Origin, 404 for another path, 405 with
// "Allow: GET" for a method other than GET, 426 with
// "Sec-WebSocket-Version: 13" for a version other than 13, and 505 for
// HTTP older than 1.1.
//
// A subprotocol is chosen as UpgradeConfig.Subprotocols says; no
// extension is negotiated, so frames never carry RSV bits, which Reader
// enforces.
func Upgrade(head []byte, cfg UpgradeConfig) (resp []byte, err error) {
	var (
		host, origin         []byte
		seenHost, seenOrigin bool
		offered              bool   // the client named some subprotocol
		chosen               string // the one it gets, "" for none
		refused              error  // ErrSubprotocol's response, with the names
	)
	upgrader := ws.Upgrader{
		OnRequest: func(uri []byte) error {
			if cfg.Path != "" && !bytes.Equal(requestPath(uri), []byte(cfg.Path)) {
				return ErrPathNotFound
			}
			return nil
		},
		// The callbacks' arguments point into the upgrader's read buffer,
		// which later lines may overwrite, so they are copied.
		OnHost: func(value []byte) error {
			if seenHost {
				return ErrDuplicateHeader
			}
			seenHost = true
			host = bytes.Clone(value)
			return nil
		},
		OnHeader: func(key, value []byte) error {
			// gobwas has already put key in canonical form.
			if string(key) != "Origin" {
				return nil
			}
			if seenOrigin {
				return ErrDuplicateHeader
			}
			seenOrigin = true
			origin = bytes.Clone(value)
			if origin == nil {
				// An empty Origin header is still an Origin header.
				origin = []byte{}
			}
			return nil
		},
		// The Origin check waits for the end of the head because Host and
		// Origin may come in either order.
		OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
			if err := checkKey(head); err != nil {
				return nil, err
			}
			if cfg.CheckOrigin != nil && !cfg.CheckOrigin(origin, host) {
				return nil, ErrOriginRefused
			}
			if offered && chosen == "" {
				spoken := strings.Join(cfg.Subprotocols, ", ")
				if spoken == "" {
					spoken = "none"
				}
				refused = ws.RejectConnectionError(
					ws.RejectionStatus(http.StatusBadRequest),
					ws.RejectionReason("handshake error: unsupported subprotocol; this server speaks "+spoken),
				)
				return nil, refused
			}
			return nil, nil
		},
	}
	if cfg.Subprotocols != nil {
		// Called for each Sec-WebSocket-Protocol line until one yields a
		// choice; what it returns is echoed in the 101 response.
		upgrader.ProtocolCustom = func(value []byte) (string, bool) {
			for item := range bytes.SplitSeq(value, []byte(",")) {
				item = bytes.Trim(item, " \t")
				if len(item) == 0 {
					continue
				}
				offered = true
				for _, p := range cfg.Subprotocols {
					if string(item) == p {
						chosen = p
						return p, true
					}
				}
			}
			return "", true
		}
	}

	var out bytes.Buffer
	conn := struct {
		io.Reader
		io.Writer
	}{bytes.NewReader(head), &out}
	if _, err = upgrader.Upgrade(conn); err == nil {
		return out.Bytes(), nil
	}
	// gobwas has written an answer of its own to out; it is dropped, and
	// the caller answers from the HandshakeError instead.
	if err == refused {
		return nil, &HandshakeError{Status: http.StatusBadRequest, Reason: refused.Error(), Err: ErrSubprotocol}
	}
	return nil, refusal(err)
}

// refusal says how to answer a handshake gobwas refused with err.
func refusal(err error) *HandshakeError {
	var rejected *ws.ConnectionRejectedError
	if !errors.As(err, &rejected) {
		// gobwas cannot parse the request line, or the head ends before
		// its blank line: the client still deserves a 400 rather than a
		// silent close.
		rejected = ws.ErrMalformedRequest.(*ws.ConnectionRejectedError)
		err = fmt.Errorf("%w: %w", ws.ErrMalformedRequest, err)
	}
	e := &HandshakeError{Status: rejected.StatusCode(), Reason: rejected.Error(), Err: err}
	switch {
	case errors.Is(err, ws.ErrHandshakeUpgradeRequired):
		// RFC 6455 section 4.4: name the versions the server speaks.
		e.Header = "Sec-WebSocket-Version: 13\r\n"
	case errors.Is(err, ws.ErrHandshakeBadMethod):
		// RFC 9110 section 15.5.6: a 405 names the methods allowed.
		e.Header = "Allow: GET\r\n"
	}
	return e
}

// checkKey checks the Sec-WebSocket-Key lines of a head gobwas has
// accepted: there must be one, and its value the base64 of 16 bytes (RFC
// 6455 section 4.2.1). gobwas checks only that a value is 24 characters
// long, and answers the last of several; it hands none of them to
// OnHeader. So the lines are read here again, as gobwas reads them: lines
// end in LF or CRLF, the first is the request line, the first empty one
// ends the head, and a header's name (in any case) and value are what
// surround the first colon, trimmed of spaces and tabs.
func checkKey(head []byte) error {
	var key []byte
	seen := false
	_, rest, _ := bytes.Cut(head, []byte("\n"))
	for len(rest) > 0 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte("\n"))
		line, _ = bytes.CutSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || !asciiEqualFold(bytes.Trim(name, " \t"), "Sec-WebSocket-Key") {
			continue
		}
		if seen {
			return ErrDuplicateHeader
		}
		seen, key = true, bytes.Trim(value, " \t")
	}
	// Strict: the bits a 16-byte nonce leaves over in its last character
	// are zero, as every encoder writes them.
	var nonce [18]byte
	if n, err := base64.StdEncoding.Strict().Decode(nonce[:], key); err != nil || n != 16 {
		return ws.ErrHandshakeBadSecKey
	}
	return nil
}

// asciiEqualFold reports whether a and b are equal but for the case of
// ASCII letters, as gobwas compares header names. bytes.EqualFold would
// also take the Kelvin sign for a K.
func asciiEqualFold(a []byte, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		if lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// requestPath returns the path of a request target, without its query.
// A target in absolute form ("http://host/ws", RFC 9112 section 3.2.2),
// which a server must accept though browsers send the path alone, has
// its scheme and authority taken off first.
func requestPath(uri []byte) []byte {
	if len(uri) > 0 && uri[0] != '/' {
		if i := bytes.Index(uri, []byte("://")); i > 0 {
			rest := uri[i+len("://"):]
			j := bytes.IndexAny(rest, "/?")
			if j < 0 || rest[j] == '?' {
				return []byte("/")
			}
			uri = rest[j:]
		}
	}
	if i := bytes.IndexByte(uri, '?'); i >= 0 {
		return uri[:i]
	}
	return uri
}
