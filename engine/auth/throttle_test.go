package auth

import (
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func newFakeClock() *fakeClock           { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }
func opts() ThrottleOptions {
	return ThrottleOptions{Free: 3, Base: time.Second, Max: 8 * time.Second, Forget: time.Minute}
}
func delays(th *Throttle, ip, name string, n int) (out []time.Duration) {
	for range n {
		out = append(out, th.Delay(ip, name))
		th.Failed(ip, name)
	}
	return out
}

func TestThrottleGrowsAndCaps(t *testing.T) {
	clk := newFakeClock()
	th := NewThrottle(opts(), clk.now)
	got := delays(th, "10.0.0.1", "alice", 8)
	want := []time.Duration{0, 0, 0, 1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("attempt %d waits %v, want %v (all: %v)", i+1, got[i], want[i], got)
		}
	}
}

func TestThrottlePerAddressAndPerAccount(t *testing.T) {
	clk := newFakeClock()
	th := NewThrottle(opts(), clk.now)
	// One address guessing many names is slowed by its address record.
	for _, name := range []string{"a", "b", "c", "d"} {
		th.Failed("10.0.0.1", name)
	}
	if d := th.Delay("10.0.0.1", "e"); d != 2*time.Second {
		t.Fatalf("address after 4 failures: %v, want 2s", d)
	}
	// Many addresses guessing one name are slowed by its account record,
	// in any case.
	for _, ip := range []string{"10.0.1.1", "10.0.1.2", "10.0.1.3"} {
		th.Failed(ip, "Bob")
	}
	if d := th.Delay("10.0.2.2", "bob"); d != time.Second {
		t.Fatalf("account after 3 failures: %v, want 1s", d)
	}
	// A fresh address and a fresh name are not slowed.
	if d := th.Delay("10.0.3.3", "carol"); d != 0 {
		t.Fatalf("fresh: %v", d)
	}
}

func TestThrottleLifts(t *testing.T) {
	clk := newFakeClock()
	th := NewThrottle(opts(), clk.now)
	delays(th, "10.0.0.1", "alice", 5)
	if th.Delay("10.0.0.1", "alice") == 0 {
		t.Fatal("not throttled")
	}
	// Success clears the account, not the address.
	th.Succeeded("ALICE")
	if d := th.Delay("10.0.0.2", "alice"); d != 0 {
		t.Fatalf("account after success: %v", d)
	}
	if d := th.Delay("10.0.0.1", "bob"); d == 0 {
		t.Fatal("success cleared the address")
	}
	// Time clears the address.
	clk.add(time.Minute + time.Second)
	if d := th.Delay("10.0.0.1", "bob"); d != 0 {
		t.Fatalf("after Forget: %v", d)
	}
	// And the count starts over.
	if got := delays(th, "10.0.0.1", "bob", 4); got[3] != time.Second {
		t.Fatalf("after Forget, delays %v", got)
	}
}

func TestThrottleBounded(t *testing.T) {
	clk := newFakeClock()
	o := opts()
	o.MaxEntries = 10
	th := NewThrottle(o, clk.now)
	for i := range 100 {
		th.Failed("10.0.0.1", string(rune('a'+i%26))+string(rune('a'+i/26)))
	}
	if n := len(th.names); n > 10 {
		t.Fatalf("%d name records, bound 10", n)
	}
	// Forgotten records make room again.
	clk.add(2 * time.Minute)
	th.Failed("10.0.0.9", "newname")
	if _, ok := th.names["newname"]; !ok {
		t.Fatal("no room after the old records were forgotten")
	}
}
