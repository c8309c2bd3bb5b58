package tally

import (
	"sync"
	"time"
)

// Options shape a Table.
type Options[V any] struct {
	// Max bounds the records kept. At Max, a record for a new key takes
	// the place of an old one (see Table); Max <= 0 means 1.
	Max int
	// Expired reports that a record no longer matters (its failures are
	// forgotten, its counts are zero). An expired record is treated as
	// absent when its key comes up again, and goes first when room is
	// needed. nil: records never expire.
	Expired func(v *V, now time.Time) bool
	// Pinned reports that a record must not make way for a new key while
	// another can: it counts something still in force, such as open
	// connections or an attack being throttled. nil: nothing is pinned.
	Pinned func(v *V, now time.Time) bool
	// EvictPinned says what happens when the table is full and every
	// record is pinned: true, the least recently used record goes
	// anyway (a throttle must keep tracking newcomers, and the oldest
	// attack is the one least likely to be going on); false, the new key
	// is refused (a connection count must never be lost).
	EvictPinned bool
}

// Action is what an Update callback asks to be done with the record.
type Action uint8

const (
	// Keep leaves the record where it stands in the order of use.
	Keep Action = iota
	// Touch makes the record the most recently used.
	Touch
	// Drop forgets the record.
	Drop
)

// Table is a bounded map from keys to records, safe for concurrent use.
//
// Records are kept in order of use (Touch), in two classes: pinned and
// not. When a new key needs room, the table gives up, in this order, the
// least recently used record if it has expired, the least recently used
// record that is not pinned, and then, if Options.EvictPinned, the least
// recently used pinned one. Which class a record is in is decided when
// an Update leaves it; a record whose pin has lapsed with time since is
// still found at the end of the pinned class, which is where eviction
// looks next.
//
// Each record costs its key and value plus about 120 bytes (its map
// slot, the map's spare room, and two list links): an address key with a
// throttle's 56-byte record comes to about 200 bytes (TestTableMemory).
type Table[K comparable, V any] struct {
	opts Options[V]

	mu    sync.Mutex
	m     map[K]*node[K, V]
	lists [2]list[K, V] // by class: unpinned, pinned; most recently used first

	// Dropped nodes kept for reuse, linked through next: a connection
	// counter makes and drops a record for most connections it counts.
	spare  *node[K, V]
	spares int
}

// maxSpares bounds the nodes a table keeps for reuse.
const maxSpares = 64

type node[K comparable, V any] struct {
	key        K
	val        V
	prev, next *node[K, V]
	class      uint8 // index into Table.lists
}

// list is a circular doubly linked list with a sentinel. Written out
// rather than container/list so a record is one allocation, not two,
// and its value needs no interface conversion.
type list[K comparable, V any] struct {
	root node[K, V]
	len  int
}

func (l *list[K, V]) init() { l.root.prev, l.root.next = &l.root, &l.root }

func (l *list[K, V]) pushFront(n *node[K, V]) {
	n.prev, n.next = &l.root, l.root.next
	n.prev.next, n.next.prev = n, n
	l.len++
}

func (l *list[K, V]) remove(n *node[K, V]) {
	n.prev.next, n.next.prev = n.next, n.prev
	n.prev, n.next = nil, nil
	l.len--
}

// back is the least recently used node, or nil.
func (l *list[K, V]) back() *node[K, V] {
	if l.len == 0 {
		return nil
	}
	return l.root.prev
}

// NewTable returns an empty table.
func NewTable[K comparable, V any](opts Options[V]) *Table[K, V] {
	if opts.Max <= 0 {
		opts.Max = 1
	}
	t := &Table[K, V]{opts: opts, m: make(map[K]*node[K, V])}
	t.lists[0].init()
	t.lists[1].init()
	return t
}

// Update calls f with key's record, under the table's lock, and does
// what f returns with it. A missing or expired record is, when create is
// true, replaced by a fresh one (the zero V, fresh true) before f is
// called; when create is false, f is not called. Update reports whether
// f was called: false also when create is true but the table is full of
// pinned records and Options.EvictPinned is false.
func (t *Table[K, V]) Update(key K, now time.Time, create bool, f func(v *V, fresh bool) Action) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, fresh := t.find(key, now, create)
	if n == nil {
		return false
	}
	t.apply(n, f(&n.val, fresh), now)
	return true
}

// Len is the number of records held, expired ones included until they
// are evicted or met again.
func (t *Table[K, V]) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// find returns key's live record; with create, a fresh one in place of a
// missing or expired one (nil only when no room can be made).
func (t *Table[K, V]) find(key K, now time.Time, create bool) (n *node[K, V], fresh bool) {
	n = t.m[key]
	if n != nil && t.opts.Expired != nil && t.opts.Expired(&n.val, now) {
		if !create {
			t.drop(n)
			return nil, false
		}
		var zero V
		n.val = zero
		t.lists[n.class].remove(n)
		n.class = 0
		t.lists[0].pushFront(n)
		return n, true
	}
	if n != nil || !create {
		return n, false
	}
	if len(t.m) >= t.opts.Max && !t.makeRoom(now) {
		return nil, false
	}
	if n = t.spare; n != nil {
		t.spare, n.next = n.next, nil
		t.spares--
		n.key, n.class = key, 0
	} else {
		n = &node[K, V]{key: key}
	}
	t.m[key] = n
	t.lists[0].pushFront(n)
	return n, true
}

// apply carries out a callback's action on n and files n under the class
// its value now has.
func (t *Table[K, V]) apply(n *node[K, V], a Action, now time.Time) {
	if a == Drop {
		t.drop(n)
		return
	}
	class := uint8(0)
	if t.opts.Pinned != nil && t.opts.Pinned(&n.val, now) {
		class = 1
	}
	if a == Touch || class != n.class {
		t.lists[n.class].remove(n)
		n.class = class
		t.lists[class].pushFront(n)
	}
}

func (t *Table[K, V]) drop(n *node[K, V]) {
	t.lists[n.class].remove(n)
	delete(t.m, n.key)
	var zero V
	n.val = zero // a value may hold pointers: let them go
	if t.spares < maxSpares {
		n.next, t.spare = t.spare, n
		t.spares++
	}
}

// makeRoom evicts one record for a new key, or reports false when every
// record is pinned and pinned records are not to be evicted.
func (t *Table[K, V]) makeRoom(now time.Time) bool {
	unpinned, pinned := t.lists[0].back(), t.lists[1].back()
	expired := func(n *node[K, V]) bool {
		return n != nil && t.opts.Expired != nil && t.opts.Expired(&n.val, now)
	}
	stale := func(n *node[K, V]) bool {
		return n != nil && (t.opts.Pinned == nil || !t.opts.Pinned(&n.val, now))
	}
	switch {
	case expired(pinned):
		t.drop(pinned)
	case unpinned != nil:
		t.drop(unpinned)
	case stale(pinned), pinned != nil && t.opts.EvictPinned:
		t.drop(pinned)
	default:
		return false
	}
	return true
}
