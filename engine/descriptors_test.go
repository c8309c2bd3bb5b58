package engine

import "testing"

// TestShareFiles: what the engine takes of a descriptor limit, and that
// it never takes more than the limit leaves it.
func TestShareFiles(t *testing.T) {
	const kept = refusalsKeptAddrs * refusalsKeptPerAddr
	for _, tc := range []struct {
		name      string
		d         Descriptors
		web       bool
		somaxconn int
		want      fileShare
	}{
		{"no limit", Descriptors{}, true, 4096,
			fileShare{refusalAddrs: refusalsKeptAddrs}},
		// 2 loops and the main reactor (6), 2 listeners, 1 duplicated.
		{"room for all", Descriptors{Limit: 1 << 20, Elsewhere: 62}, true, 4096,
			fileShare{conns: 1<<20 - 62 - 9 - kept - 2*4097, refusalAddrs: refusalsKeptAddrs, besides: 62 + 9 + kept + 2*4097}},
		{"backlog shortened", Descriptors{Limit: 20000, Elsewhere: 62}, true, 4096,
			fileShare{conns: 19929 - kept - 2*2491, backlog: 2490, refusalAddrs: refusalsKeptAddrs, besides: 62 + 9 + kept + 2*4097}},
		{"low", Descriptors{Limit: 500, Elsewhere: 62}, true, 4096,
			fileShare{conns: 429 - 13*4 - 2*53, backlog: 52, refusalAddrs: 13, besides: 62 + 9 + kept + 2*4097}},
		{"line port only", Descriptors{Limit: 500, Elsewhere: 62}, false, 4096,
			fileShare{conns: 429 - 2*53, backlog: 52, refusalAddrs: refusalsKeptAddrs, besides: 62 + 9 + 2*4097}},
		{"less than nothing", Descriptors{Limit: 40, Elsewhere: 62}, true, 4096,
			fileShare{conns: 1, backlog: 1, refusalAddrs: 1, besides: 62 + 9 + kept + 2*4097}},
	} {
		if got := shareFiles(tc.d, 2, 2, tc.web, tc.somaxconn); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}

	// Everything the engine may hold at once fits in the limit, once
	// the limit leaves room for a few connections at all.
	for limit := 150; limit <= 1<<20; limit += limit/7 + 1 {
		for _, somax := range []int{128, 4096, 65535} {
			d := Descriptors{Limit: limit, Elsewhere: 62}
			s := shareFiles(d, 4, 2, true, somax)
			backlog := somax
			if s.backlog > 0 {
				backlog = s.backlog
			}
			held := d.Elsewhere + 2*(4+1) + 2 + 1 + s.refusalAddrs*refusalsKeptPerAddr + 2*(backlog+1) + s.conns
			if held > limit || s.conns < 1 || backlog > somax {
				t.Errorf("limit %d, somaxconn %d: %+v holds %d", limit, somax, s, held)
			}
		}
	}
}
