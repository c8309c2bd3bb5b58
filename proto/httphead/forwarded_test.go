package httphead

import (
	"net/netip"
	"testing"
)

// TestForwardedClient: only the entries trusted proxies appended are
// believed, across every X-Forwarded-For line as one list.
func TestForwardedClient(t *testing.T) {
	proxies := netip.MustParsePrefix("10.0.0.0/8")
	trusted := func(a netip.Addr) bool { return proxies.Contains(a) }
	for _, tc := range []struct {
		name   string
		values []string
		want   string // "" when nothing may be believed
	}{
		{"none", nil, ""},
		{"one", []string{"203.0.113.9"}, "203.0.113.9"},
		{"rightmost untrusted", []string{"198.51.100.66, 203.0.113.9"}, "203.0.113.9"},
		{"past trusted proxies", []string{"198.51.100.66, 203.0.113.9, 10.0.0.2, 10.0.0.1"}, "203.0.113.9"},
		{"across lines", []string{"198.51.100.66", "203.0.113.9, 10.0.0.1"}, "203.0.113.9"},
		{"past a trusted line", []string{"198.51.100.66, 203.0.113.9", "10.0.0.1"}, "203.0.113.9"},
		{"IPv6", []string{"2001:db8::9"}, "2001:db8::9"},
		{"IPv4-mapped", []string{"::ffff:203.0.113.9"}, "203.0.113.9"},
		{"spaces and tabs", []string{" 198.51.100.66 ,\t203.0.113.9 "}, "203.0.113.9"},
		// The attacks: a client writes its own line or entries, and the
		// entry after them is not an address duetd can read.
		{"garbled last line", []string{"198.51.100.66", "unknown"}, ""},
		{"garbled last line with a port", []string{"198.51.100.66", "203.0.113.9:4711"}, ""},
		{"empty last line", []string{"198.51.100.66", ""}, ""},
		{"garbled after a trusted line", []string{"198.51.100.66", "garbage", "10.0.0.1"}, ""},
		{"garbled entry on the line", []string{"198.51.100.66, junk, 10.0.0.1"}, ""},
		{"empty entry", []string{"198.51.100.66, , 10.0.0.1"}, ""},
		{"trailing comma", []string{"198.51.100.66,"}, ""},
		{"zone", []string{"198.51.100.66", "fe80::1%eth0"}, ""},
		{"only trusted", []string{"10.0.0.2, 10.0.0.1"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ForwardedClient(tc.values, trusted)
			switch {
			case tc.want == "" && ok:
				t.Fatalf("believed %v, want nothing", got)
			case tc.want != "" && (!ok || got.String() != tc.want):
				t.Fatalf("got %v (%v), want %s", got, ok, tc.want)
			}
		})
	}
}

func FuzzForwardedClient(f *testing.F) {
	f.Add("198.51.100.66, 203.0.113.9", "10.0.0.1")
	f.Add("198.51.100.66", "unknown")
	f.Add("", ",,")
	proxies := netip.MustParsePrefix("10.0.0.0/8")
	trusted := func(a netip.Addr) bool { return proxies.Contains(a) }
	f.Fuzz(func(t *testing.T, first, last string) {
		got, ok := ForwardedClient([]string{first, last}, trusted)
		if !ok {
			return
		}
		// Whatever is believed is an address, not a trusted proxy, and
		// was written on the last line unless that line holds only
		// trusted proxies.
		if !got.IsValid() || trusted(got) || got.Zone() != "" {
			t.Fatalf("believed %v", got)
		}
		if _, lastOK := ForwardedClient([]string{last}, trusted); lastOK {
			if again, _ := ForwardedClient([]string{last}, trusted); again != got {
				t.Fatalf("believed %v from the first line over %v on the last", got, again)
			}
		}
	})
}
