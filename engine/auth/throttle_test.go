package auth

import (
	"fmt"
	"net/netip"
	"runtime"
	"strconv"
	"testing"
	"time"

	"duet/engine/tally"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func newFakeClock() *fakeClock           { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func opts() ThrottleOptions {
	return ThrottleOptions{Free: 3, Base: time.Second, Max: 8 * time.Second, MaxWait: 16 * time.Second, Forget: time.Minute}
}

func addr(s string) netip.Prefix { return tally.KeyOf(s, 64) }

// attempt admits one attempt and, if it is admitted, lets its turn come
// and fails it, as a client that waits for each answer would.
func attempt(th *Throttle, clk *fakeClock, ip, name string) Admission {
	a := th.Admit(addr(ip), name)
	if !a.Refused {
		clk.add(a.Wait)
		th.Failed(addr(ip), name)
	}
	return a
}

func TestThrottleSpacesAttemptsOneAfterAnother(t *testing.T) {
	clk := newFakeClock()
	th := NewThrottle(opts(), clk.now)
	var got []time.Duration
	for range 8 {
		got = append(got, attempt(th, clk, "10.0.0.1", "alice").Wait)
	}
	want := []time.Duration{0, 0, 0, 1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("attempt %d waits %v, want %v (all: %v)", i+1, got[i], want[i], got)
		}
	}
}

// TestThrottleQueuesAttemptsMadeAtOnce is the attack that got through the
// old throttle: many attempts sent at once, on many connections, each
// delayed but all checked together. Now they take turns, and those that
// would wait past MaxWait are refused.
func TestThrottleQueuesAttemptsMadeAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		from func(i int) string
	}{
		{"one address", func(int) string { return "10.0.0.1" }},
		{"one account from many addresses", func(i int) string { return fmt.Sprintf("10.1.%d.%d", i/250, i%250+1) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock()
			th := NewThrottle(opts(), clk.now)
			var waits []time.Duration
			var refused []Admission
			for i := range 60 {
				a := th.Admit(addr(tc.from(i)), "alice")
				if a.Refused {
					refused = append(refused, a)
					continue
				}
				waits = append(waits, a.Wait)
			}
			// Three free, then turns of 1, 2, 4 and 8 s end at 1, 3, 7 and
			// 15 s; the next would end at 23 s, past MaxWait (16 s).
			want := []time.Duration{0, 0, 0, 1 * time.Second, 3 * time.Second, 7 * time.Second, 15 * time.Second}
			if fmt.Sprint(waits) != fmt.Sprint(want) {
				t.Fatalf("admitted with waits %v, want %v", waits, want)
			}
			if len(refused) != 60-len(want) {
				t.Fatalf("%d refused", len(refused))
			}
			for _, a := range refused {
				if a.RetryAfter != 7*time.Second {
					t.Fatalf("refused with retry after %v, want 7s (a turn ending at 23s is 16s away then)", a.RetryAfter)
				}
			}
			// Trying again too early is refused again; at the time told,
			// the attempt is admitted.
			clk.add(6 * time.Second)
			if a := th.Admit(addr(tc.from(0)), "alice"); !a.Refused {
				t.Fatalf("admitted before the time told: %+v", a)
			}
			clk.add(time.Second)
			if a := th.Admit(addr(tc.from(0)), "alice"); a.Refused || a.Wait != 16*time.Second {
				t.Fatalf("at the time told: %+v, want admitted with a 16s wait", a)
			}
		})
	}
}

// TestThrottleRateOverTime: however an attacker spreads attempts, past the
// free ones an address is checked no more often than its turns allow.
func TestThrottleRateOverTime(t *testing.T) {
	clk := newFakeClock()
	th := NewThrottle(opts(), clk.now)
	checked := 0
	var pending []time.Time
	for step := 0; step < 600; step++ { // ten minutes, ten attempts a second
		for range 10 {
			if a := th.Admit(addr("10.0.0.1"), fmt.Sprintf("name%d", step%7)); !a.Refused {
				pending = append(pending, clk.t.Add(a.Wait))
			}
		}
		clk.add(time.Second)
		for len(pending) > 0 && !pending[0].After(clk.t) {
			th.Failed(addr("10.0.0.1"), "x")
			checked++
			pending = pending[1:]
		}
	}
	// 3 free, then 1+2+4 s, then one per 8 s: 3 + 3 + (600-7)/8 = 80.
	if checked > 81 {
		t.Fatalf("%d attempts checked in 10 minutes, want at most 81", checked)
	}
	if checked < 75 {
		t.Fatalf("only %d attempts checked: the limit is stricter than its turns", checked)
	}
}

func TestThrottlePerAddressAndPerAccount(t *testing.T) {
	clk := newFakeClock()
	th := NewThrottle(opts(), clk.now)
	// One address guessing many names is limited by its address record.
	for _, name := range []string{"a", "b", "c", "d"} {
		attempt(th, clk, "10.0.0.1", name)
	}
	if a := th.Admit(addr("10.0.0.1"), "e"); a.Wait != 2*time.Second {
		t.Fatalf("address after 4 failures: %+v, want a 2s wait", a)
	}
	// Many addresses guessing one name are limited by its record, in any
	// case.
	for _, ip := range []string{"10.0.1.1", "10.0.1.2", "10.0.1.3"} {
		attempt(th, clk, ip, "Bob")
	}
	if a := th.Admit(addr("10.0.2.2"), "bob"); a.Wait != time.Second {
		t.Fatalf("account after 3 failures: %+v, want a 1s wait", a)
	}
	// A fresh address and a fresh name are not slowed.
	if a := th.Admit(addr("10.0.3.3"), "carol"); a.Wait != 0 || a.Refused {
		t.Fatalf("fresh: %+v", a)
	}
}

// TestThrottleKnownAddress: an attack on an account from elsewhere fills
// its schedule, so logins from new addresses are refused, but its owner
// at an address they have logged in from is not held at all.
func TestThrottleKnownAddress(t *testing.T) {
	clk := newFakeClock()
	o := opts()
	o.KnownFor = time.Hour
	th := NewThrottle(o, clk.now)
	home := addr("192.0.2.1")
	if a := th.Admit(home, "alice"); a.Wait != 0 {
		t.Fatal(a)
	}
	th.Succeeded(home, "alice")
	if !th.Known(home, "ALICE") {
		t.Fatal("not known after a successful login")
	}
	for i := range 100 {
		th.Admit(addr(fmt.Sprintf("10.9.0.%d", i+1)), "alice")
	}
	if a := th.Admit(addr("198.51.100.7"), "alice"); !a.Refused {
		t.Fatalf("a new address during the attack: %+v, want refused", a)
	}
	if a := th.Admit(home, "alice"); a.Refused || a.Wait != 0 {
		t.Fatalf("the owner's known address during the attack: %+v, want at once", a)
	}
	// A known address still has its own address record: the owner's
	// typos there are limited as anyone's.
	th.Failed(home, "alice") // the attempt admitted above: one failure
	for range 2 {
		attempt(th, clk, "192.0.2.1", "alice")
	}
	if a := th.Admit(home, "alice"); a.Wait != time.Second {
		t.Fatalf("known address after its own failures: %+v, want a 1s wait", a)
	}
	// Known is only for the account logged in to, and only for KnownFor.
	if a := th.Admit(addr("192.0.2.1"), "bob"); a.Wait == 0 {
		t.Fatal("the address was known for another account")
	}
	clk.add(time.Hour + time.Second)
	if th.Known(home, "alice") {
		t.Fatal("still known after KnownFor")
	}
}

// TestThrottleKnownAddressKeptFromOthers performs the attack on a known
// address: a user of an account of their own logs in from as many
// addresses as the throttle's tables hold (one IPv6 /48's /64s), to
// push the owner's home out of what is known, then fails at her
// account from elsewhere. Her home stays known, and her login from it
// is not held; her own logins from many addresses push out only her
// own oldest.
func TestThrottleKnownAddressKeptFromOthers(t *testing.T) {
	clk := newFakeClock()
	th := NewThrottle(ThrottleOptions{}, clk.now)
	home := addr("192.0.2.1")
	th.Admit(home, "alice")
	th.Succeeded(home, "alice")
	for i := range 65536 {
		a := tally.AddrKey(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x77, byte(i >> 8), byte(i), 15: 1}), 64)
		th.Admit(a, "mallory")
		th.Succeeded(a, "mallory")
	}
	for i := range 40 {
		k := addr(netip.AddrFrom4([4]byte{10, 9, 0, byte(i + 1)}).String())
		if a := th.Admit(k, "alice"); !a.Refused {
			th.Failed(k, "alice")
		}
	}
	if a := th.Admit(home, "alice"); !th.Known(home, "alice") || a.Refused || a.Wait != 0 {
		t.Fatalf("alice at home during the attack: known %v, %+v", th.Known(home, "alice"), a)
	}
	for i := range knownPerAccount - 1 {
		a := addr(netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}).String())
		th.Admit(a, "alice")
		th.Succeeded(a, "alice")
	}
	if !th.Known(home, "alice") {
		t.Fatalf("home forgotten after %d other addresses", knownPerAccount-1)
	}
	th.Succeeded(addr("203.0.113.9"), "alice")
	if th.Known(home, "alice") || !th.Known(addr("203.0.113.9"), "alice") {
		t.Fatalf("an account knows more than its %d latest addresses", knownPerAccount)
	}
}

func TestThrottleRefunds(t *testing.T) {
	clk := newFakeClock()
	th := NewThrottle(opts(), clk.now)
	for range 2 {
		attempt(th, clk, "10.0.0.1", "alice")
	}
	// A right password, and an attempt the server could not check, are
	// not failures...
	th.Admit(addr("10.0.0.1"), "alice")
	th.Succeeded(addr("10.0.0.1"), "alice")
	th.Admit(addr("10.0.0.2"), "alice")
	th.Unchecked(addr("10.0.0.2"), "alice")
	if a := th.Admit(addr("10.0.0.3"), "alice"); a.Wait != 0 {
		t.Fatalf("third failure waited %v: a success or an unchecked attempt was counted", a.Wait)
	}
	th.Failed(addr("10.0.0.3"), "alice")
	// ...but they clear nothing: the next is the fourth failure.
	if a := th.Admit(addr("10.0.0.4"), "alice"); a.Wait != time.Second {
		t.Fatalf("fourth failure on the account: %+v, want a 1s wait", a)
	}
}

func TestThrottleForgets(t *testing.T) {
	clk := newFakeClock()
	th := NewThrottle(opts(), clk.now)
	for range 5 {
		attempt(th, clk, "10.0.0.1", "alice")
	}
	if a := th.Admit(addr("10.0.0.1"), "bob"); a.Wait == 0 {
		t.Fatal("not throttled")
	}
	clk.add(16*time.Second + time.Minute + time.Second) // past the turn just taken, then Forget
	if a := th.Admit(addr("10.0.0.1"), "bob"); a.Wait != 0 {
		t.Fatalf("after Forget: %+v", a)
	}
	th.Failed(addr("10.0.0.1"), "bob")
	// And the count starts over.
	var waits []time.Duration
	for range 3 {
		waits = append(waits, attempt(th, clk, "10.0.0.1", "carol").Wait)
	}
	if waits[1] != 0 || waits[2] != time.Second {
		t.Fatalf("after Forget, waits %v", waits)
	}
}

// TestThrottleUnderTablePressure: a flood of made-up names, each failed
// once from addresses of its own, neither evicts an account under attack
// nor stops new names from being tracked. (The old table stopped
// recording new names once full: after 100000 made-up names a real
// account could be guessed at with no delay at all.)
func TestThrottleUnderTablePressure(t *testing.T) {
	clk := newFakeClock()
	o := opts()
	o.MaxEntries = 0 // the default
	th := NewThrottle(o, clk.now)
	for range 6 {
		attempt(th, clk, "10.0.0.1", "alice")
	}
	for i := range 100_000 {
		ip := tally.AddrKey(netip.AddrFrom4([4]byte{10, byte(2 + i>>16), byte(i >> 8), byte(i)}), 64)
		name := "junk" + strconv.Itoa(i)
		th.Admit(ip, name)
		th.Failed(ip, name)
	}
	if n := th.names.Len(); n > th.opts.MaxEntries {
		t.Fatalf("%d names on record, bound %d", n, th.opts.MaxEntries)
	}
	if a := th.Admit(addr("172.16.0.1"), "alice"); a.Wait == 0 {
		t.Fatal("the account under attack was forgotten in the flood")
	}
	// A name first failed after the flood is tracked like any.
	var last Admission
	for i := range 4 {
		last = attempt(th, clk, fmt.Sprintf("172.17.0.%d", i+1), "bob")
	}
	if last.Wait != time.Second {
		t.Fatalf("a new name after the flood: fourth failure waited %v, want 1s", last.Wait)
	}
}

// TestThrottleMemoryBound fills every table of a default throttle
// (65536 addresses, names of 32 characters, and accounts with a known
// address) and holds it to the bound AUTH.md states: under 40 MiB,
// whatever clients do.
func TestThrottleMemoryBound(t *testing.T) {
	clk := newFakeClock()
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	th := NewThrottle(ThrottleOptions{}, clk.now)
	for i := range 65536 + 8192 { // more than the tables hold: eviction must keep them there
		a := tally.AddrKey(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 16), byte(i >> 8), byte(i), 15: 1}), 64)
		name := fmt.Sprintf("u%031d", i)
		th.Admit(a, name)
		th.Succeeded(a, name)
		clk.add(time.Millisecond)
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	if th.addrs.Len() != 65536 || th.names.Len() != 65536 || th.known.Len() != 65536 {
		t.Fatalf("tables hold %d, %d, %d records, want 65536 each", th.addrs.Len(), th.names.Len(), th.known.Len())
	}
	used := int64(m1.HeapAlloc) - int64(m0.HeapAlloc)
	t.Logf("%.1f MiB for full tables", float64(used)/(1<<20))
	if used > 40<<20 {
		t.Fatalf("%.1f MiB for full tables, AUTH.md says under 40", float64(used)/(1<<20))
	}
	runtime.KeepAlive(th)
}

// TestThrottleDefaultsAsDocumented holds the default throttle to the
// numbers AUTH.md gives: five free failures, then turns of 1, 2, 4, 8,
// 16 and 30 s, a queue of 30 s, records forgotten after 15 minutes,
// addresses known for 30 days.
func TestThrottleDefaultsAsDocumented(t *testing.T) {
	clk := newFakeClock()
	th := NewThrottle(ThrottleOptions{}, clk.now)
	var waits []time.Duration
	for range 12 {
		waits = append(waits, attempt(th, clk, "10.0.0.1", "alice").Wait)
	}
	s := time.Second
	want := []time.Duration{0, 0, 0, 0, 0, 1 * s, 2 * s, 4 * s, 8 * s, 16 * s, 30 * s, 30 * s}
	if fmt.Sprint(waits) != fmt.Sprint(want) {
		t.Fatalf("waits %v, want %v", waits, want)
	}
	// Attempts made at once: the queue holds 30 s of turns.
	th = NewThrottle(ThrottleOptions{}, clk.now)
	waits = waits[:0]
	refused := 0
	for range 20 {
		a := th.Admit(addr("10.0.0.2"), "bob")
		if a.Refused {
			refused++
			continue
		}
		waits = append(waits, a.Wait)
	}
	want = []time.Duration{0, 0, 0, 0, 0, 1 * s, 3 * s, 7 * s, 15 * s}
	if fmt.Sprint(waits) != fmt.Sprint(want) || refused != 11 {
		t.Fatalf("at once: waits %v and %d refused, want %v and 11", waits, refused, want)
	}
	clk.add(15*time.Minute + 15*time.Second + time.Second)
	if a := th.Admit(addr("10.0.0.2"), "bob"); a.Wait != 0 {
		t.Fatalf("after 15 minutes: %+v", a)
	}
	th.Succeeded(addr("10.0.0.2"), "bob")
	clk.add(30*24*time.Hour - time.Second)
	if !th.Known(addr("10.0.0.2"), "bob") {
		t.Fatal("not known for 30 days")
	}
	clk.add(2 * time.Second)
	if th.Known(addr("10.0.0.2"), "bob") {
		t.Fatal("known past 30 days")
	}
}
