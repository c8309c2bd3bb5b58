package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"strconv"
)

// The PROXY protocol (haproxy's proxy-protocol.txt, versions 1 and 2)
// lets a TLS front such as nginx tell duetd who the client really is: the
// proxy sends one header before the client's bytes. Only a peer listed in
// trusted_proxies may send it; from anyone else it would let a client
// claim any address, so it is refused.

// proxyV1Prefix starts a version 1 (text) header.
var proxyV1Prefix = []byte("PROXY ")

// proxyV2Sig starts a version 2 (binary) header.
var proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

const (
	// maxProxyV1 is the longest version 1 header, CRLF included.
	maxProxyV1 = 107
	// maxProxyV2 bounds a version 2 header; its TLVs are skipped, and a
	// proxy has no reason to send kilobytes of them.
	maxProxyV2 = 16 + 2048
)

var errBadProxyHeader = errors.New("malformed PROXY protocol header")

// parseProxyHeader reads a PROXY protocol header (version 1 or 2) at the
// start of buf. It returns the header's length and the client's address,
// which is invalid when the proxy speaks for itself (v1 UNKNOWN, v2
// LOCAL, or an address family other than TCP over IPv4 or IPv6). n is 0
// with no error while buf holds only the beginning of a header.
func parseProxyHeader(buf []byte) (client netip.Addr, n int, err error) {
	switch {
	case hasPrefixOrIsPrefix(buf, proxyV1Prefix):
		if len(buf) < len(proxyV1Prefix) {
			return netip.Addr{}, 0, nil
		}
		return parseProxyV1(buf)
	case hasPrefixOrIsPrefix(buf, proxyV2Sig):
		if len(buf) < len(proxyV2Sig) {
			return netip.Addr{}, 0, nil
		}
		return parseProxyV2(buf)
	}
	return netip.Addr{}, 0, errBadProxyHeader
}

// hasPrefixOrIsPrefix reports whether buf starts with sig, or is the start
// of it.
func hasPrefixOrIsPrefix(buf, sig []byte) bool {
	if len(buf) >= len(sig) {
		return bytes.HasPrefix(buf, sig)
	}
	return bytes.HasPrefix(sig, buf)
}

// looksLikeProxyHeader tells, for a connection that may not send one,
// whether buf starts with a PROXY header (yes), could still turn out to
// (more), or cannot (neither).
func looksLikeProxyHeader(buf []byte) (yes, more bool) {
	for _, sig := range [][]byte{proxyV1Prefix, proxyV2Sig} {
		if hasPrefixOrIsPrefix(buf, sig) {
			if len(buf) >= len(sig) {
				return true, false
			}
			more = true
		}
	}
	return false, more
}

// parseProxyV1 reads "PROXY TCP4 src dst sport dport\r\n".
func parseProxyV1(buf []byte) (netip.Addr, int, error) {
	end := bytes.Index(buf, []byte("\r\n"))
	if end < 0 {
		if len(buf) >= maxProxyV1 {
			return netip.Addr{}, 0, errBadProxyHeader
		}
		return netip.Addr{}, 0, nil
	}
	n := end + 2
	if n > maxProxyV1 {
		return netip.Addr{}, 0, errBadProxyHeader
	}
	fields := bytes.Split(buf[len(proxyV1Prefix):end], []byte(" "))
	if len(fields) >= 1 && string(fields[0]) == "UNKNOWN" {
		return netip.Addr{}, n, nil
	}
	if len(fields) != 5 {
		return netip.Addr{}, 0, errBadProxyHeader
	}
	src, err1 := netip.ParseAddr(string(fields[1]))
	dst, err2 := netip.ParseAddr(string(fields[2]))
	if err1 != nil || err2 != nil || !validPort(fields[3]) || !validPort(fields[4]) {
		return netip.Addr{}, 0, errBadProxyHeader
	}
	switch string(fields[0]) {
	case "TCP4":
		if !src.Is4() || !dst.Is4() {
			return netip.Addr{}, 0, errBadProxyHeader
		}
	case "TCP6":
		if !src.Is6() || !dst.Is6() {
			return netip.Addr{}, 0, errBadProxyHeader
		}
	default:
		return netip.Addr{}, 0, errBadProxyHeader
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

// parseProxyV2 reads the binary header: signature, version and command,
// family and transport, length, addresses, TLVs.
func parseProxyV2(buf []byte) (netip.Addr, int, error) {
	const fixed = 16
	if len(buf) < fixed {
		return netip.Addr{}, 0, nil
	}
	verCmd, fam := buf[12], buf[13]
	length := int(binary.BigEndian.Uint16(buf[14:16]))
	if verCmd>>4 != 2 || fixed+length > maxProxyV2 {
		return netip.Addr{}, 0, errBadProxyHeader
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
		return netip.Addr{}, 0, errBadProxyHeader
	}
	switch fam {
	case 0x11: // TCP over IPv4
		if len(body) < 12 {
			return netip.Addr{}, 0, errBadProxyHeader
		}
		return netip.AddrFrom4([4]byte(body[0:4])), n, nil
	case 0x21: // TCP over IPv6
		if len(body) < 36 {
			return netip.Addr{}, 0, errBadProxyHeader
		}
		return netip.AddrFrom16([16]byte(body[0:16])).Unmap(), n, nil
	}
	// UNSPEC, UDP or UNIX sockets: nothing duetd can use as an address.
	return netip.Addr{}, n, nil
}
