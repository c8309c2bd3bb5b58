// Package tally keeps the per-key records behind every limit and
// throttle duet applies to a source: open connections per address
// (limits.max_conns_per_ip), failed connects per address, and failed
// logins per address and per account. It is one table for all of them,
// so they bound their memory, evict and group addresses the same way.
//
// It knows addresses only as netip values and time only as the now its
// callers pass in; it knows nothing of sockets, protocols or clocks.
//
// Locking: a Table has one mutex, held for the whole of each call,
// callbacks included. Callbacks must not call back into the table.
package tally

import "net/netip"

// AddrKey is the key an address is counted under. An IPv4 address is
// its own key, and so is an IPv4-mapped IPv6 address (::ffff:192.0.2.7
// counts as 192.0.2.7). An IPv6 address counts by its first v6bits bits:
// one home or server usually holds a whole /64 (or more), and keying on
// single addresses would let it take every slot a limit allows, one
// address at a time. v6bits outside 1..128 is read as 128. The zone of
// a link-local address is dropped. An invalid address has the zero
// Prefix as its key, shared by all invalid addresses.
func AddrKey(a netip.Addr, v6bits int) netip.Prefix {
	if !a.IsValid() {
		return netip.Prefix{}
	}
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	if v6bits < 1 || v6bits > 128 {
		v6bits = 128
	}
	p, _ := a.Prefix(v6bits) // cannot fail: a is valid IPv6 and v6bits in range
	return p
}

// KeyOf parses a textual address and returns AddrKey of it, for those
// that have the address as text (tests, mostly: a connection keeps its
// client's as a netip.Addr). Text that is not an address is keyed as an
// invalid address.
func KeyOf(ip string, v6bits int) netip.Prefix {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return netip.Prefix{}
	}
	return AddrKey(a, v6bits)
}
