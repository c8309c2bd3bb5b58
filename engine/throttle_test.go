package engine

import (
	"fmt"
	"testing"
	"time"
)

func TestFailureTableDelaysGrowAndQueue(t *testing.T) {
	var ft failureTable
	now := time.Unix(1000, 0)
	const limit = 3
	for i := 0; i < limit; i++ {
		if wait, refuse := ft.admit("192.0.2.1", now, limit, true); wait != 0 || refuse {
			t.Fatalf("failure %d: held %v (refused %v) before the limit", i, wait, refuse)
		}
		ft.failed("192.0.2.1", now)
	}
	// Past the limit, holds queue one behind the other and grow with
	// each failure; another address is untouched.
	if wait, _ := ft.admit("192.0.2.1", now, limit, true); wait != throttleFirstDelay {
		t.Fatalf("first hold %v, want %v", wait, throttleFirstDelay)
	}
	if wait, _ := ft.admit("192.0.2.1", now, limit, true); wait != 2*throttleFirstDelay {
		t.Fatalf("a second connect at once queues behind the first: held %v", wait)
	}
	if wait, refuse := ft.admit("192.0.2.2", now, limit, true); wait != 0 || refuse {
		t.Fatalf("another address held %v", wait)
	}
	later := now.Add(time.Second)
	ft.failed("192.0.2.1", later)
	if wait, _ := ft.admit("192.0.2.1", later, limit, false); wait != 2*throttleFirstDelay {
		t.Fatalf("after %d failures held %v, want %v", limit+1, wait, 2*throttleFirstDelay)
	}
	// Far past the limit, a connect that would wait too long is refused.
	for i := 0; i < 10; i++ {
		ft.failed("192.0.2.1", later)
	}
	refused := false
	for i := 0; i < 10 && !refused; i++ {
		_, refused = ft.admit("192.0.2.1", later, limit, true)
	}
	if !refused {
		t.Fatal("queued holds past throttleMaxWait were not refused")
	}
	// An address quiet for throttleForget starts afresh.
	if wait, refuse := ft.admit("192.0.2.1", later.Add(throttleForget+time.Minute), limit, true); wait != 0 || refuse {
		t.Fatalf("a forgotten address is still held %v", wait)
	}
}

func TestFailureTableIsBounded(t *testing.T) {
	var ft failureTable
	now := time.Unix(1000, 0)
	for i := 0; i < throttleMaxAddrs+500; i++ {
		ft.failed(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), now)
	}
	if n := ft.size(); n != throttleMaxAddrs {
		t.Fatalf("%d addresses on record, want the cap %d", n, throttleMaxAddrs)
	}
	// The oldest were evicted, the newest kept.
	if _, ok := ft.entries["10.0.0.0"]; ok {
		t.Fatal("the oldest address was not evicted")
	}
	last := throttleMaxAddrs + 499
	if _, ok := ft.entries[fmt.Sprintf("10.%d.%d.%d", last>>16&255, last>>8&255, last&255)]; !ok {
		t.Fatal("the newest address was evicted")
	}
}

func TestFailureKeyGroupsIPv6By64(t *testing.T) {
	for _, tc := range []struct{ a, b string }{
		{"2001:db8:1:2:aaaa::1", "2001:db8:1:2:bbbb::2"},
		{"192.0.2.7", "192.0.2.7"},
	} {
		if failureKey(tc.a) != failureKey(tc.b) {
			t.Errorf("%s and %s are keyed apart: %s, %s", tc.a, tc.b, failureKey(tc.a), failureKey(tc.b))
		}
	}
	if failureKey("2001:db8:1:2::1") == failureKey("2001:db8:1:3::1") {
		t.Error("two /64s share a key")
	}
	if failureKey("192.0.2.7") == failureKey("192.0.2.8") {
		t.Error("two IPv4 addresses share a key")
	}
}

func TestTokenPrefixShowsSixSafeCharacters(t *testing.T) {
	for in, want := range map[string]string{
		"0123456789abcdef0123456789abcdef": "012345",
		"ab":                               "ab",
		"\x1b[31mred":                      "??31??",
		"":                                 "",
	} {
		if got := tokenPrefix([]byte(in)); got != want {
			t.Errorf("tokenPrefix(%q) = %q, want %q", in, got, want)
		}
	}
}
