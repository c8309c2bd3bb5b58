package auth

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"duet/engine/tally"
)

func addrKey(ip string) netip.Prefix { return tally.KeyOf(ip, 64) }

func TestConnectThrottleDelaysGrowAndQueue(t *testing.T) {
	ft := NewConnectThrottle()
	now := time.Unix(1000, 0)
	const limit = 3
	for i := 0; i < limit; i++ {
		if wait, refuse := ft.Admit(addrKey("192.0.2.1"), now, limit, true); wait != 0 || refuse {
			t.Fatalf("failure %d: held %v (refused %v) before the limit", i, wait, refuse)
		}
		ft.Failed(addrKey("192.0.2.1"), now)
	}
	// Past the limit, holds queue one behind the other and grow with
	// each failure; another address is untouched.
	if wait, _ := ft.Admit(addrKey("192.0.2.1"), now, limit, true); wait != throttleFirstDelay {
		t.Fatalf("first hold %v, want %v", wait, throttleFirstDelay)
	}
	if wait, _ := ft.Admit(addrKey("192.0.2.1"), now, limit, true); wait != 2*throttleFirstDelay {
		t.Fatalf("a second connect at once queues behind the first: held %v", wait)
	}
	if wait, refuse := ft.Admit(addrKey("192.0.2.2"), now, limit, true); wait != 0 || refuse {
		t.Fatalf("another address held %v", wait)
	}
	later := now.Add(time.Second)
	ft.Failed(addrKey("192.0.2.1"), later)
	if wait, _ := ft.Admit(addrKey("192.0.2.1"), later, limit, false); wait != 2*throttleFirstDelay {
		t.Fatalf("after %d failures held %v, want %v", limit+1, wait, 2*throttleFirstDelay)
	}
	// Far past the limit, a connect that would wait too long is refused.
	for i := 0; i < 10; i++ {
		ft.Failed(addrKey("192.0.2.1"), later)
	}
	refused := false
	for i := 0; i < 10 && !refused; i++ {
		_, refused = ft.Admit(addrKey("192.0.2.1"), later, limit, true)
	}
	if !refused {
		t.Fatal("queued holds past throttleMaxWait were not refused")
	}
	// An address quiet for throttleForget starts afresh.
	if wait, refuse := ft.Admit(addrKey("192.0.2.1"), later.Add(throttleForget+time.Minute), limit, true); wait != 0 || refuse {
		t.Fatalf("a forgotten address is still held %v", wait)
	}
}

func TestConnectThrottleIsBounded(t *testing.T) {
	ft := NewConnectThrottle()
	now := time.Unix(1000, 0)
	for i := 0; i < throttleMaxAddrs+500; i++ {
		ft.Failed(addrKey(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)), now)
	}
	if n := ft.Len(); n != throttleMaxAddrs {
		t.Fatalf("%d addresses on record, want the cap %d", n, throttleMaxAddrs)
	}
	// The oldest were evicted, the newest kept.
	if wait, _ := ft.Admit(addrKey("10.0.0.0"), now, 1, false); wait != 0 {
		t.Fatal("the oldest address was not evicted")
	}
	last := throttleMaxAddrs + 499
	if wait, _ := ft.Admit(addrKey(fmt.Sprintf("10.%d.%d.%d", last>>16&255, last>>8&255, last&255)), now, 1, false); wait == 0 {
		t.Fatal("the newest address was evicted")
	}
}

// TestConnectThrottleGroupsIPv6: failures from different addresses of one
// /64 add up; another /64, or another prefix length, keeps them apart.
func TestConnectThrottleGroupsIPv6(t *testing.T) {
	ft := NewConnectThrottle()
	now := time.Unix(1000, 0)
	for i := range 3 {
		ft.Failed(tally.KeyOf(fmt.Sprintf("2001:db8:1:2:%x::1", i+1), 64), now)
	}
	if wait, _ := ft.Admit(tally.KeyOf("2001:db8:1:2:ffff::9", 64), now, 3, false); wait != throttleFirstDelay {
		t.Fatalf("a fourth address of the /64 held %v, want %v", wait, throttleFirstDelay)
	}
	if wait, _ := ft.Admit(tally.KeyOf("2001:db8:1:3::1", 64), now, 3, false); wait != 0 {
		t.Fatalf("the next /64 held %v", wait)
	}
	if wait, _ := ft.Admit(tally.KeyOf("2001:db8:1:2:ffff::9", 128), now, 3, false); wait != 0 {
		t.Fatalf("with limits.ipv6_prefix 128 another address held %v", wait)
	}
	// IPv4-mapped IPv6 is the IPv4 address.
	ft.Failed(addrKey("192.0.2.9"), now)
	ft.Failed(addrKey("::ffff:192.0.2.9"), now)
	ft.Failed(addrKey("192.0.2.9"), now)
	if wait, _ := ft.Admit(addrKey("::ffff:192.0.2.9"), now, 3, false); wait != throttleFirstDelay {
		t.Fatalf("IPv4 and IPv4-mapped failures counted apart: held %v", wait)
	}
}
