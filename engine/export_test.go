package engine

import (
	"net/netip"

	"duet/engine/tally"
)

// RefusalsKeptPerAddr is refusalsKeptPerAddr, for tests.
const RefusalsKeptPerAddr = refusalsKeptPerAddr

// RefusalsKept is how many connections from IPv4 address ip, refused as
// they opened, are kept to read their request.
func (s *Server) RefusalsKept(ip string) int {
	return s.refusing.Count(tally.AddrKey(netip.MustParseAddr(ip), 128))
}
