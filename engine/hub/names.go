package hub

import "hash/maphash"

// nameIndex files this node's sessions by name, regardless of case. It
// is keyed by a 64-bit hash of the folded name (hash/maphash, with a
// seed of the hub's own that no client sees), not the name: an entry is
// then 16 bytes where the name's string made it 24, for every session.
// A lookup compares the name. Two names with one hash cannot both be
// filed: the second is refused as a name taken, which among a million
// users online befalls one login in 2^44, and which a client cannot
// bring about, not knowing the seed.
type nameIndex struct {
	seed maphash.Seed
	m    map[uint64]*Session
}

func newNameIndex() nameIndex {
	return nameIndex{seed: maphash.MakeSeed(), m: make(map[uint64]*Session)}
}

func (x nameIndex) hash(key string) uint64 { return maphash.String(x.seed, key) }

// lookup returns the session whose folded name is key, or nil.
func (x nameIndex) lookup(key string) *Session {
	if s := x.m[x.hash(key)]; s != nil && s.keyIs(key) {
		return s
	}
	return nil
}

// filed returns the session filed where key would be, whatever its name:
// nil when key can be filed.
func (x nameIndex) filed(key string) *Session { return x.m[x.hash(key)] }

// file files s under key, in place of whatever was filed there: the
// caller has checked that it is free (filed), or s takes over the
// session of that name (a resume).
func (x nameIndex) file(key string, s *Session) { x.m[x.hash(key)] = s }

// unfile takes s out from under key; what else may be filed there stays.
func (x nameIndex) unfile(key string, s *Session) {
	if k := x.hash(key); x.m[k] == s {
		delete(x.m, k)
	}
}
