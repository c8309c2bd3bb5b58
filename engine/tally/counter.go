package tally

import (
	"net/netip"
	"time"
)

// Counter counts what is open per key (connections per address, for
// limits.max_conns_per_ip). It sits on the accept path: each Acquire and
// Release is one lock, one map lookup and no allocation for a key
// already counted.
//
// A count is never evicted: a key with anything open is pinned, so a
// Counter whose table is full refuses new keys instead. Give it room
// for as many keys as there can be open connections and that never
// happens.
type Counter struct {
	t *Table[netip.Prefix, int]
}

// NewCounter returns a counter with room for max keys.
func NewCounter(max int) *Counter {
	return &Counter{t: NewTable[netip.Prefix, int](Options[int]{
		Max:    max,
		Pinned: func(n *int, _ time.Time) bool { return *n > 0 },
	})}
}

// Acquire counts one more for key and reports true, or reports false
// and counts nothing when key already has limit or the table is full.
func (c *Counter) Acquire(key netip.Prefix, limit int) bool {
	t := c.t
	t.mu.Lock()
	defer t.mu.Unlock()
	n, _ := t.find(key, time.Time{}, true)
	if n == nil {
		return false
	}
	if n.val >= limit {
		if n.val == 0 {
			t.drop(n) // limit <= 0: nothing may be open, keep no record
		}
		return false
	}
	n.val++
	if n.val == 1 {
		t.apply(n, Keep, time.Time{}) // file it as pinned
	}
	return true
}

// Release undoes one Acquire of key.
func (c *Counter) Release(key netip.Prefix) {
	t := c.t
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.m[key]
	if n == nil {
		return
	}
	if n.val--; n.val <= 0 {
		t.drop(n)
	}
}

// Count is what is open for key.
func (c *Counter) Count(key netip.Prefix) int {
	t := c.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := t.m[key]; n != nil {
		return n.val
	}
	return 0
}

// Len is the number of keys with anything open.
func (c *Counter) Len() int { return c.t.Len() }
