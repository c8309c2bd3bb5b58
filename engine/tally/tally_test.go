package tally

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestAddrKey(t *testing.T) {
	for _, tc := range []struct {
		addr string
		bits int
		want string
	}{
		{"192.0.2.7", 64, "192.0.2.7/32"},
		{"::ffff:192.0.2.7", 64, "192.0.2.7/32"}, // IPv4-mapped counts as IPv4
		{"::ffff:192.0.2.7", 128, "192.0.2.7/32"},
		{"2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64, "2001:db8:1:2::/64"},
		{"2001:db8:1:2:aaaa:bbbb:cccc:dddd", 48, "2001:db8:1::/48"},
		{"2001:db8:1:2:aaaa:bbbb:cccc:dddd", 56, "2001:db8:1::/56"},
		{"2001:db8:1:2ff:aaaa:bbbb:cccc:dddd", 56, "2001:db8:1:200::/56"},
		{"2001:db8:1:2:aaaa:bbbb:cccc:dddd", 128, "2001:db8:1:2:aaaa:bbbb:cccc:dddd/128"},
		{"2001:db8::1", 0, "2001:db8::1/128"}, // out of range: each address on its own
		{"2001:db8::1", 129, "2001:db8::1/128"},
		{"fe80::1%eth0", 64, "fe80::/64"},
		{"::1", 64, "::/64"},
	} {
		got := AddrKey(netip.MustParseAddr(tc.addr), tc.bits)
		if got.String() != tc.want {
			t.Errorf("AddrKey(%s, %d) = %s, want %s", tc.addr, tc.bits, got, tc.want)
		}
		if k := KeyOf(tc.addr, tc.bits); k != got {
			t.Errorf("KeyOf(%q) = %s, AddrKey = %s", tc.addr, k, got)
		}
	}
	if AddrKey(netip.Addr{}, 64) != (netip.Prefix{}) || KeyOf("not an address", 64) != (netip.Prefix{}) {
		t.Error("an invalid address does not have the zero key")
	}
}

// TestAddrKeyGroupsOneSubnet: every address of one /64 has one key, and
// the next /64 another; IPv4 addresses are never grouped.
func TestAddrKeyGroupsOneSubnet(t *testing.T) {
	base := netip.MustParseAddr("2001:db8:5:6::").As16()
	keys := map[netip.Prefix]int{}
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		a := base
		for i := 8; i < 16; i++ {
			a[i] = byte(r.Uint32())
		}
		keys[AddrKey(netip.AddrFrom16(a), 64)]++
	}
	if len(keys) != 1 {
		t.Fatalf("1000 addresses of one /64 have %d keys", len(keys))
	}
	next := base
	next[7] = 1
	if _, ok := keys[AddrKey(netip.AddrFrom16(next), 64)]; ok {
		t.Fatal("the next /64 shares the key")
	}
	if AddrKey(netip.MustParseAddr("192.0.2.7"), 64) == AddrKey(netip.MustParseAddr("192.0.2.8"), 64) {
		t.Fatal("two IPv4 addresses share a key")
	}
}

type rec struct {
	n      int
	pinned bool
	dead   bool
}

func recOptions(max int, evictPinned bool) Options[rec] {
	return Options[rec]{
		Max:         max,
		Expired:     func(v *rec, _ time.Time) bool { return v.dead },
		Pinned:      func(v *rec, _ time.Time) bool { return v.pinned },
		EvictPinned: evictPinned,
	}
}

func set(tb *Table[string, rec], key string, v rec, a Action) bool {
	return tb.Update(key, time.Time{}, true, func(r *rec, _ bool) Action { *r = v; return a })
}

func has(tb *Table[string, rec], key string) bool {
	return tb.Update(key, time.Time{}, false, func(*rec, bool) Action { return Keep })
}

func TestTableEvictsLeastRecentlyUsedUnpinned(t *testing.T) {
	tb := NewTable[string, rec](recOptions(3, true))
	set(tb, "a", rec{n: 1}, Touch)
	set(tb, "b", rec{n: 1}, Touch)
	set(tb, "c", rec{n: 1}, Touch)
	set(tb, "a", rec{n: 2}, Touch) // a is now the most recent
	set(tb, "d", rec{n: 1}, Touch) // evicts b
	if has(tb, "b") || !has(tb, "a") || !has(tb, "c") || !has(tb, "d") || tb.Len() != 3 {
		t.Fatalf("after d: a %v b %v c %v d %v, len %d", has(tb, "a"), has(tb, "b"), has(tb, "c"), has(tb, "d"), tb.Len())
	}
	// Keep does not refresh: c, untouched since it was made, goes next.
	tb.Update("c", time.Time{}, false, func(r *rec, _ bool) Action { r.n++; return Keep })
	set(tb, "e", rec{n: 1}, Touch)
	if has(tb, "c") {
		t.Fatal("a record updated with Keep was treated as recently used")
	}
}

// TestTablePinnedRecordsSurviveAFlood is the throttle's case: one record
// under attack (pinned) must outlast any number of new keys.
func TestTablePinnedRecordsSurviveAFlood(t *testing.T) {
	tb := NewTable[string, rec](recOptions(100, true))
	set(tb, "alice", rec{n: 9, pinned: true}, Touch)
	for i := range 100_000 {
		set(tb, fmt.Sprintf("junk%d", i), rec{n: 1}, Touch)
	}
	if !has(tb, "alice") {
		t.Fatal("the pinned record was evicted by a flood of new keys")
	}
	if tb.Len() != 100 {
		t.Fatalf("len %d, want the bound 100", tb.Len())
	}
	// A new key is still tracked under that pressure.
	set(tb, "bob", rec{n: 1}, Touch)
	if !has(tb, "bob") {
		t.Fatal("a new key was not tracked")
	}
}

func TestTableExpiredGoFirst(t *testing.T) {
	tb := NewTable[string, rec](recOptions(3, true))
	set(tb, "old", rec{n: 1, pinned: true}, Touch)
	set(tb, "a", rec{n: 1}, Touch)
	set(tb, "b", rec{n: 1}, Touch)
	// "old" expires while filed as pinned: it goes before any live one.
	tb.Update("old", time.Time{}, false, func(r *rec, _ bool) Action { r.dead = true; return Keep })
	set(tb, "c", rec{n: 1}, Touch)
	if !has(tb, "a") || !has(tb, "b") || !has(tb, "c") {
		t.Fatal("a live record was evicted while an expired one was held")
	}
	// An expired record is absent to a lookup, and fresh to a create.
	set(tb, "a", rec{n: 5, dead: true}, Keep)
	if has(tb, "a") {
		t.Fatal("an expired record was found")
	}
	set(tb, "b", rec{n: 5, dead: true}, Keep)
	var fresh bool
	var got rec
	tb.Update("b", time.Time{}, true, func(r *rec, f bool) Action { fresh, got = f, *r; return Keep })
	if !fresh || got != (rec{}) {
		t.Fatalf("expired record re-created as %+v, fresh %v", got, fresh)
	}
}

func TestTableAllPinned(t *testing.T) {
	for _, evict := range []bool{true, false} {
		tb := NewTable[string, rec](recOptions(2, evict))
		set(tb, "a", rec{pinned: true}, Touch)
		set(tb, "b", rec{pinned: true}, Touch)
		ok := set(tb, "c", rec{pinned: true}, Touch)
		if evict && (!ok || has(tb, "a") || !has(tb, "b") || !has(tb, "c")) {
			t.Fatal("EvictPinned: the least recently used pinned record did not make way")
		}
		if !evict && (ok || !has(tb, "a") || !has(tb, "b") || has(tb, "c")) {
			t.Fatal("without EvictPinned a pinned record made way, or the new key was counted")
		}
	}
}

func TestTableDrop(t *testing.T) {
	tb := NewTable[string, rec](recOptions(2, true))
	set(tb, "a", rec{n: 1}, Touch)
	set(tb, "a", rec{}, Drop)
	if has(tb, "a") || tb.Len() != 0 {
		t.Fatal("dropped record still held")
	}
}

// TestTableMatchesModel runs random operations against the table and a
// plain slice model of the eviction rule, and compares what each holds.
func TestTableMatchesModel(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for round := range 50 {
		max := 1 + r.IntN(8)
		evictPinned := round%2 == 0
		tb := NewTable[int, rec](Options[rec]{
			Max:         max,
			Expired:     func(v *rec, _ time.Time) bool { return v.dead },
			Pinned:      func(v *rec, _ time.Time) bool { return v.pinned },
			EvictPinned: evictPinned,
		})
		m := &model{max: max, evictPinned: evictPinned}
		for step := range 400 {
			key := r.IntN(16)
			v := rec{n: step, pinned: r.IntN(3) == 0, dead: r.IntN(8) == 0}
			a := Action(r.IntN(3))
			create := r.IntN(4) != 0
			called := tb.Update(key, time.Time{}, create, func(p *rec, _ bool) Action { *p = v; return a })
			mcalled := m.update(key, create, v, a)
			if called != mcalled {
				t.Fatalf("round %d step %d: key %d create %v: table called %v, model %v", round, step, key, create, called, mcalled)
			}
			var held []int
			for k := range 16 {
				if _, ok := tb.m[k]; ok {
					held = append(held, k)
				}
			}
			if want := m.keys(); !slices.Equal(held, want) {
				t.Fatalf("round %d step %d: table holds %v, model %v", round, step, held, want)
			}
		}
	}
}

// model keeps records in a slice, most recently used first, and applies
// the eviction rule literally.
type model struct {
	max         int
	evictPinned bool
	recs        []mrec
}

type mrec struct {
	key    int
	v      rec
	pinned bool // class when last filed
}

func (m *model) index(key int) int {
	return slices.IndexFunc(m.recs, func(r mrec) bool { return r.key == key })
}

func (m *model) update(key int, create bool, v rec, a Action) bool {
	i := m.index(key)
	if i >= 0 && m.recs[i].v.dead {
		if !create {
			m.recs = slices.Delete(m.recs, i, i+1)
			return false
		}
		r := m.recs[i]
		m.recs = slices.Delete(m.recs, i, i+1)
		r.v, r.pinned = rec{}, false
		m.recs = slices.Insert(m.recs, m.frontOf(false), r)
		i = m.index(key)
	}
	if i < 0 {
		if !create {
			return false
		}
		if len(m.recs) >= m.max && !m.makeRoom() {
			return false
		}
		m.recs = slices.Insert(m.recs, m.frontOf(false), mrec{key: key})
		i = m.index(key)
	}
	m.recs[i].v = v
	switch {
	case a == Drop:
		m.recs = slices.Delete(m.recs, i, i+1)
	case a == Touch || m.recs[i].pinned != v.pinned:
		r := m.recs[i]
		m.recs = slices.Delete(m.recs, i, i+1)
		r.pinned = v.pinned
		m.recs = slices.Insert(m.recs, m.frontOf(r.pinned), r)
	}
	return true
}

// The model's order is one slice: the class is only a label, so the
// most recent of a class is the first with that label. frontOf returns
// where a record becomes the most recent of its class: the very front.
func (m *model) frontOf(bool) int { return 0 }

// last returns the index of the least recently used record of a class.
func (m *model) last(pinned bool) int {
	for i := len(m.recs) - 1; i >= 0; i-- {
		if m.recs[i].pinned == pinned {
			return i
		}
	}
	return -1
}

func (m *model) makeRoom() bool {
	u, p := m.last(false), m.last(true)
	switch {
	case p >= 0 && m.recs[p].v.dead:
		m.recs = slices.Delete(m.recs, p, p+1)
	case u >= 0:
		m.recs = slices.Delete(m.recs, u, u+1)
	case p >= 0 && (!m.recs[p].v.pinned || m.evictPinned):
		m.recs = slices.Delete(m.recs, p, p+1)
	default:
		return false
	}
	return true
}

func (m *model) keys() []int {
	var out []int
	for _, r := range m.recs {
		out = append(out, r.key)
	}
	slices.Sort(out)
	return out
}

func TestCounter(t *testing.T) {
	c := NewCounter(2)
	a := KeyOf("2001:db8:1:2::1", 64)
	b := KeyOf("2001:db8:1:2::ffff", 64) // same /64
	if !c.Acquire(a, 2) || !c.Acquire(b, 2) {
		t.Fatal("refused under the limit")
	}
	if c.Acquire(a, 2) {
		t.Fatal("a third connection from one /64 was counted")
	}
	other := KeyOf("192.0.2.1", 64)
	if !c.Acquire(other, 2) {
		t.Fatal("another key refused")
	}
	// Full of keys with something open: a new key is refused, and no
	// count is lost to make room for it.
	if c.Acquire(KeyOf("192.0.2.2", 64), 2) {
		t.Fatal("a new key was counted in a full counter")
	}
	if c.Count(a) != 2 || c.Count(other) != 1 {
		t.Fatalf("counts %d and %d after a refused key", c.Count(a), c.Count(other))
	}
	c.Release(a)
	if !c.Acquire(b, 2) {
		t.Fatal("refused after a release")
	}
	c.Release(a)
	c.Release(a)
	c.Release(other)
	c.Release(other) // more releases than acquires do nothing
	if c.Len() != 0 {
		t.Fatalf("%d keys left after every release", c.Len())
	}
	if c.Acquire(a, 0) || c.Len() != 0 {
		t.Fatal("limit 0 counted something or kept a record")
	}
}

// TestCounterConcurrent: many goroutines acquire and release; the limit
// holds at every moment and every count returns to zero (go test -race).
func TestCounterConcurrent(t *testing.T) {
	c := NewCounter(1000)
	const limit = 5
	keys := []netip.Prefix{KeyOf("192.0.2.1", 64), KeyOf("2001:db8::1", 64), KeyOf("2001:db8::2", 64)}
	var wg sync.WaitGroup
	var mu sync.Mutex
	held := map[netip.Prefix]int{}
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				k := keys[(g+i)%len(keys)]
				if !c.Acquire(k, limit) {
					continue
				}
				mu.Lock()
				held[k]++
				over := held[k] > limit
				mu.Unlock()
				if over {
					t.Error("more than the limit held at once")
				}
				mu.Lock()
				held[k]--
				mu.Unlock()
				c.Release(k)
			}
		}()
	}
	wg.Wait()
	if c.Len() != 0 {
		t.Fatalf("%d keys left", c.Len())
	}
}

func TestTableConcurrent(t *testing.T) {
	tb := NewTable[int, rec](recOptions(64, true))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5000 {
				tb.Update((g*7919+i)%200, time.Time{}, true, func(r *rec, _ bool) Action {
					r.n++
					r.pinned = r.n%3 == 0
					return Action(i % 3)
				})
			}
		}()
	}
	wg.Wait()
	if n := tb.Len(); n > 64 {
		t.Fatalf("%d records, bound 64", n)
	}
	if l := tb.lists[0].len + tb.lists[1].len; l != tb.Len() {
		t.Fatalf("lists hold %d records, map %d", l, tb.Len())
	}
}

// BenchmarkCounter is the accept path: one Acquire and one Release per
// connection.
func BenchmarkCounter(b *testing.B) {
	c := NewCounter(100_000)
	keys := make([]netip.Prefix, 1024)
	for i := range keys {
		keys[i] = KeyOf(fmt.Sprintf("10.0.%d.%d", i>>8, i&255), 64)
	}
	b.ReportAllocs()
	b.Run("serial", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			k := keys[i&1023]
			c.Acquire(k, 64)
			c.Release(k)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				k := keys[i&1023]
				c.Acquire(k, 64)
				c.Release(k)
				i++
			}
		})
	})
	b.Run("held", func(b *testing.B) {
		// Keys already counted (open connections from them): no record is
		// made or freed.
		for _, k := range keys {
			c.Acquire(k, 64)
		}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			k := keys[i&1023]
			c.Acquire(k, 64)
			c.Release(k)
		}
	})
}

// BenchmarkTableFlood is a throttle under a flood of new keys: every
// update makes a record and evicts one.
func BenchmarkTableFlood(b *testing.B) {
	tb := NewTable[netip.Prefix, rec](recOptions(16384, true))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		k := AddrKey(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 64)
		tb.Update(k, time.Time{}, true, func(r *rec, _ bool) Action { r.n++; return Touch })
	}
}

// TestTableMemory holds the per-record cost the docs state (LIMITS.md,
// AUTH.md): an address key and a throttle's record (a count and two
// times) in under 256 bytes, map and links included.
func TestTableMemory(t *testing.T) {
	type record struct {
		n          int
		last, next time.Time
	}
	const n = 16384
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	tb := NewTable[netip.Prefix, record](Options[record]{Max: n})
	for i := range n {
		k := AddrKey(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 64)
		tb.Update(k, time.Time{}, true, func(r *record, _ bool) Action { r.n++; return Touch })
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	per := (int64(m1.HeapAlloc) - int64(m0.HeapAlloc)) / n
	t.Logf("%d bytes a record", per)
	if per > 256 {
		t.Fatalf("%d bytes a record, docs say under 256", per)
	}
	runtime.KeepAlive(tb)
}
