// Package proxyproto reads the PROXY protocol header (haproxy's
// proxy-protocol.txt, versions 1 and 2), with which a TLS front such as
// nginx tells duetd who the client really is: the proxy sends one header
// before the client's bytes.
//
// It is a pure codec over bytes: it knows nothing of sockets, and
// nothing of which peers may send a header. Only a peer listed in
// trusted_proxies may; from anyone else a header would let a client claim
// any address, and the engine refuses it (Looks tells it apart).
package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"strconv"
)

// v1Prefix starts a version 1 (text) header.
var v1Prefix = []byte("PROXY ")

// v2Sig starts a version 2 (binary) header.
var v2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

const (
	// maxV1 is the longest version 1 header, CRLF included.
	maxV1 = 107
	// maxV2 bounds a version 2 header; its TLVs are skipped, and a
	// proxy has no reason to send kilobytes of them.
	maxV2 = 16 + 2048
)

// ErrMalformed is the error for anything that is not a header.
var ErrMalformed = errors.New("malformed PROXY protocol header")

// Parse reads a PROXY protocol header (version 1 or 2) at the start of
// buf. It returns the header's length and the client's address,
// which is invalid when the proxy speaks for itself (v1 UNKNOWN, v2
// LOCAL, or an address family other than TCP over IPv4 or IPv6). n is 0
// with no error while buf holds only the beginning of a header.
func Parse(buf []byte) (client netip.Addr, n int, err error) {
	switch {
	case hasPrefixOrIsPrefix(buf, v1Prefix):
		if len(buf) < len(v1Prefix) {
			return netip.Addr{}, 0, nil
		}
		return parseV1(buf)
	case hasPrefixOrIsPrefix(buf, v2Sig):
		if len(buf) < len(v2Sig) {
			return netip.Addr{}, 0, nil
		}
		return parseV2(buf)
	}
	return netip.Addr{}, 0, ErrMalformed
}

// hasPrefixOrIsPrefix reports whether buf starts with sig, or is the start
// of it.
func hasPrefixOrIsPrefix(buf, sig []byte) bool {
	if len(buf) >= len(sig) {
		return bytes.HasPrefix(buf, sig)
	}
	return bytes.HasPrefix(sig, buf)
}

// Looks tells, for a connection that may not send a header, whether buf
// starts with one (yes), could still turn out to (more), or cannot
// (neither).
func Looks(buf []byte) (yes, more bool) {
	for _, sig := range [][]byte{v1Prefix, v2Sig} {
		if hasPrefixOrIsPrefix(buf, sig) {
			if len(buf) >= len(sig) {
				return true, false
			}
			more = true
		}
	}
	return false, more
}

// parseV1 reads "PROXY TCP4 src dst sport dport\r\n".
func parseV1(buf []byte) (netip.Addr, int, error) {
	end := bytes.Index(buf, []byte("\r\n"))
	if end < 0 {
		if len(buf) >= maxV1 {
			return netip.Addr{}, 0, ErrMalformed
		}
		return netip.Addr{}, 0, nil
	}
	n := end + 2
	if n > maxV1 {
		return netip.Addr{}, 0, ErrMalformed
	}
	fields := bytes.Split(buf[len(v1Prefix):end], []byte(" "))
	if len(fields) >= 1 && string(fields[0]) == "UNKNOWN" {
		return netip.Addr{}, n, nil
	}
	if len(fields) != 5 {
		return netip.Addr{}, 0, ErrMalformed
	}
	src, err1 := netip.ParseAddr(string(fields[1]))
	dst, err2 := netip.ParseAddr(string(fields[2]))
	if err1 != nil || err2 != nil || !validPort(fields[3]) || !validPort(fields[4]) {
		return netip.Addr{}, 0, ErrMalformed
	}
	switch string(fields[0]) {
	case "TCP4":
		if !src.Is4() || !dst.Is4() {
			return netip.Addr{}, 0, ErrMalformed
		}
	case "TCP6":
		if !src.Is6() || !dst.Is6() {
			return netip.Addr{}, 0, ErrMalformed
		}
	default:
		return netip.Addr{}, 0, ErrMalformed
	}
	return src.Unmap(), n, nil
}

func validPort(b []byte) bool {
	if len(b) == 0 || len(b) > 5 || (len(b) > 1 && b[0] == '0') {
		return false
	}
	p, err := strconv.Atoi(string(b))
	return err == nil && p >= 0 && p <= 65535
}

// parseV2 reads the binary header: signature, version and command,
// family and transport, length, addresses, TLVs.
func parseV2(buf []byte) (netip.Addr, int, error) {
	const fixed = 16
	if len(buf) < fixed {
		return netip.Addr{}, 0, nil
	}
	verCmd, fam := buf[12], buf[13]
	length := int(binary.BigEndian.Uint16(buf[14:16]))
	if verCmd>>4 != 2 || fixed+length > maxV2 {
		return netip.Addr{}, 0, ErrMalformed
	}
	if len(buf) < fixed+length {
		return netip.Addr{}, 0, nil
	}
	n := fixed + length
	body := buf[fixed:n]
	switch verCmd & 0x0F {
	case 0x0: // LOCAL: the proxy's own connection, e.g. a health check
		return netip.Addr{}, n, nil
	case 0x1: // PROXY
	default:
		return netip.Addr{}, 0, ErrMalformed
	}
	switch fam {
	case 0x11: // TCP over IPv4
		if len(body) < 12 {
			return netip.Addr{}, 0, ErrMalformed
		}
		return netip.AddrFrom4([4]byte(body[0:4])), n, nil
	case 0x21: // TCP over IPv6
		if len(body) < 36 {
			return netip.Addr{}, 0, ErrMalformed
		}
		return netip.AddrFrom16([16]byte(body[0:16])).Unmap(), n, nil
	}
	// UNSPEC, UDP or UNIX sockets: nothing duetd can use as an address.
	return netip.Addr{}, n, nil
}
