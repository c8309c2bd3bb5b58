package engine

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"duet/engine/tally"
	"duet/proto"
	"duet/proto/httphead"
	"duet/proto/line"
	"duet/proto/proxyproto"
)

// Real client addresses behind a TLS front. A connection from a peer in
// trusted_proxies is counted against the per-address limit, and logged,
// under the address the proxy vouches for: the PROXY protocol header on
// the line port, X-Forwarded-For on the web port. From any other peer
// both are refused or ignored, since they would let a client pick its
// own address.

// SetTrustedProxies replaces the peers whose PROXY header or
// X-Forwarded-For is believed; new connections see them (config reload).
func (s *Server) SetTrustedProxies(nets []netip.Prefix) {
	n := slices.Clone(nets)
	s.trusted.Store(&n)
}

// trustedAddr reports whether ip is a trusted proxy.
func (s *Server) trustedAddr(ip netip.Addr) bool {
	nets := s.trusted.Load()
	if nets == nil || !ip.IsValid() {
		return false
	}
	ip = ip.Unmap()
	for _, p := range *nets {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func (s *Server) trustedPeer(a net.Addr) bool {
	t, ok := a.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip, ok := netip.AddrFromSlice(t.IP)
	return ok && s.trustedAddr(ip)
}

// claimAddr counts the connection against ip's limit, moving it from the
// address it was counted under before. It reports false, leaving the
// connection uncounted, when ip has too many connections already.
func (cn *conn) claimAddr(ip netip.Addr) bool {
	a := &cn.addr
	bits := v6bitsOf(cn.loop.srv.lim().IPv6Prefix)
	key := tally.AddrKey(ip, int(bits))
	if a.counted && key == a.key() {
		// Still counted under the key it had, with the bits it had.
		a.ip = ip
		return true
	}
	cn.releaseAddr()
	a.ip = ip
	if !cn.loop.srv.perIP.Acquire(key, cn.loop.srv.lim().MaxConnsPerIP) {
		return false
	}
	a.counted, a.v6bits = true, bits
	return true
}

// releaseAddr undoes claimAddr.
func (cn *conn) releaseAddr() {
	if a := &cn.addr; a.counted {
		cn.loop.srv.perIP.Release(a.key())
		a.counted = false
	}
}

// readPreamble handles a line connection's first bytes (stageProxy). From
// a trusted proxy they must be a PROXY header, whose client address the
// connection takes before it is greeted; from anyone else they must not
// be one. Either way the connection then speaks the line protocol, and
// what followed the header is read as lines at once.
func (cn *conn) readPreamble(buf []byte) int {
	if !cn.addr.fromProxy {
		yes, more := proxyproto.Looks(buf)
		switch {
		case yes:
			cn.refuse(endUntrusted)
			return len(buf)
		case more:
			return 0
		}
		cn.stage = stageLine
		return cn.readLines(buf)
	}
	client, n, err := proxyproto.Parse(buf)
	if err != nil {
		cn.refuse(endBadProxy)
		return len(buf)
	}
	if n == 0 {
		return 0
	}
	ip := cn.addr.ip
	if client.IsValid() {
		ip = client.Unmap().WithZone("")
	}
	if !cn.claimAddr(ip) {
		cn.refuse(endPerAddr)
		return len(buf)
	}
	cn.stage = stageLine
	// The login's time runs from here: the proxy may have opened the
	// connection a while before its client said anything.
	cn.opened = cn.loop.stamp()
	cn.logger().Debug("connection via proxy")
	cn.out.Deliver(&proto.Event{Kind: proto.EvHello, Auth: cn.loop.srv.opts.AuthMode})
	return n + cn.readLines(buf[n:])
}

// refuse ends a connection refused for who it comes from or for what it
// sent first, and logs it as a connection refused as it opens is logged:
// sampled, since a client can open such connections in a loop, and under
// the client's address, the one a proxy named if it named one.
func (cn *conn) refuse(e ending) { cn.refuseAs(e, endDetail{}) }

// refuseAs is refuse with the defaults d overrides.
func (cn *conn) refuseAs(e ending, d endDetail) {
	cn.loop.srv.logRefusal(e, cn.id, cn.addr.ip)
	cn.endAs(e, d)
}

// checkPreamble enforces limits.handshake_timeout on a proxy's
// connection still waiting for its PROXY header, and the login timeout on
// a user's connection that has not sent a whole line yet.
func (cn *conn) checkPreamble() {
	lim := cn.loop.srv.lim()
	switch {
	case cn.addr.fromProxy && cn.loop.since(cn.opened) > lim.HandshakeTimeout:
		cn.refuse(endBadProxy)
	case !cn.addr.fromProxy && cn.loop.since(cn.opened) > lim.LoginTimeout:
		cn.loginTimedOut()
	}
}

// forwardedFor takes the client's address from X-Forwarded-For on a
// request from a trusted proxy. It returns the refusal the connection
// meets for that address (logged), endNone if none.
func (cn *conn) forwardedFor(req *http.Request) ending {
	if !cn.addr.fromProxy {
		return endNone
	}
	ip := peerIP(cn.c.RemoteAddr()) // the proxy's own
	if a, ok := httphead.ForwardedClient(req.Header.Values("X-Forwarded-For"), cn.loop.srv.trustedAddr); ok {
		ip = a.Unmap().WithZone("")
	}
	if !cn.claimAddr(ip) {
		cn.loop.srv.logRefusal(endPerAddr, cn.id, cn.addr.ip)
		return endPerAddr
	}
	return endNone
}

// lineHello is the greeting a line connection gets on open.
func (s *Server) lineHello() []byte {
	return line.AppendEvent(nil, &proto.Event{Kind: proto.EvHello, Auth: s.opts.AuthMode})
}

// RemoteAddrs lists the client address of every open connection, as
// duetd sees it (behind a trusted proxy, the address the proxy vouches
// for). It is for tests and diagnostics; it waits for each loop.
func (s *Server) RemoteAddrs() []string {
	var out []string
	for _, ls := range s.loopList() {
		ch := make(chan []string, 1)
		err := ls.execute(context.Background(), func() {
			var addrs []string
			for _, cn := range ls.conns {
				if !cn.closed {
					addrs = append(addrs, cn.addr.text())
				}
			}
			ch <- addrs
		})
		if err != nil {
			continue
		}
		select {
		case a := <-ch:
			out = append(out, a...)
		case <-time.After(5 * time.Second):
		}
	}
	slices.Sort(out)
	return out
}
