package proto

import (
	"strings"
	"testing"
)

func TestNewResumeKey(t *testing.T) {
	seen := make(map[ResumeKey]bool)
	used := make(map[byte]bool)
	for range 1000 {
		k := NewResumeKey()
		if seen[k] {
			t.Fatalf("key %s drawn twice", k)
		}
		seen[k] = true
		for _, c := range []byte(k.String()) {
			if strings.IndexByte(resumeAlphabet, c) < 0 {
				t.Fatalf("key %s has %q, not in the alphabet", k, c)
			}
			used[c] = true
		}
		if back, err := ParseResumeKey([]byte(k.String())); err != nil || back != k {
			t.Fatalf("ParseResumeKey(%s) = %s, %v", k, back, err)
		}
	}
	// 26000 characters drawn: every one of the 32 shows up.
	if len(used) != len(resumeAlphabet) {
		t.Fatalf("only %d of the %d characters were drawn", len(used), len(resumeAlphabet))
	}
}

func TestParseResumeKey(t *testing.T) {
	const key = "k7m2qv0c9x4t8ghj3nwp5rbe6d"
	for _, c := range []struct {
		in, want string // want "" for an error
	}{
		{key, key},
		{strings.ToUpper(key), key},
		{"0123456789abcdefghjkmnpqrs", "0123456789abcdefghjkmnpqrs"},
		// Crockford's look-alikes: i and l are 1, o is 0.
		{"il0oOLIxxxxxxxxxxxxxxxxxxx", "1100011xxxxxxxxxxxxxxxxxxx"},
		{"u" + key[1:], ""}, // u is left out of the alphabet
		{key[:25], ""},
		{key + "x", ""},
		{" " + key[1:], ""},
		{key[:25] + "-", ""},
		{key[:25] + "\xff", ""},
		{"9f86d081884c7d659a2feaa0c55ad015", ""}, // a token
		{"", ""},
	} {
		k, err := ParseResumeKey([]byte(c.in))
		switch {
		case c.want == "" && err != ErrBadResumeKey:
			t.Errorf("ParseResumeKey(%q) = %s, %v; want bad_resume_key", c.in, k, err)
		case c.want != "" && (err != nil || k.String() != c.want):
			t.Errorf("ParseResumeKey(%q) = %s, %v; want %s", c.in, k, err, c.want)
		}
	}
}

// FuzzParseResumeKey: a key is accepted exactly when it is 26
// characters of the alphabet, in either case, look-alikes included; what
// is accepted is the canonical key, which reads back as itself.
func FuzzParseResumeKey(f *testing.F) {
	for _, seed := range []string{"k7m2qv0c9x4t8ghj3nwp5rbe6d", "K7M2QV0C9X4T8GHJ3NWP5RBE6D", "il0oILO", "", "uuuuuuuuuuuuuuuuuuuuuuuuuu"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParseResumeKey(b)
		valid := len(b) == ResumeKeyLen
		for _, c := range b {
			valid = valid && strings.IndexByte(resumeAlphabet+"ilo"+strings.ToUpper(resumeAlphabet+"ilo"), c) >= 0
		}
		if valid != (err == nil) {
			t.Fatalf("ParseResumeKey(%q) = %v, want valid %v", b, err, valid)
		}
		if err != nil {
			if k != (ResumeKey{}) {
				t.Fatalf("ParseResumeKey(%q) failed with key %q", b, k[:])
			}
			return
		}
		for _, c := range k {
			if strings.IndexByte(resumeAlphabet, c) < 0 {
				t.Fatalf("ParseResumeKey(%q) = %q, not canonical", b, k[:])
			}
		}
		if back, err := ParseResumeKey([]byte(k.String())); err != nil || back != k {
			t.Fatalf("ParseResumeKey(%s) = %s, %v", k, back, err)
		}
	})
}

func TestPeerAwayFull(t *testing.T) {
	for _, c := range []struct {
		waiting int
		size    int64
		want    string
	}{
		{0, 0, "bob is away, and the messages kept for them from before they went fill all the room there is; this one was not sent"},
		{1, 12, "bob is away, and 1 of your messages (12 bytes) is waiting for them; this one was not sent"},
		{40, 1023, "bob is away, and 40 of your messages (1023 bytes) are waiting for them; this one was not sent"},
		{3514, 250 << 10, "bob is away, and 3514 of your messages (250 KiB) are waiting for them; this one was not sent"},
		{3514, 250<<10 + 1, "bob is away, and 3514 of your messages (251 KiB) are waiting for them; this one was not sent"},
	} {
		err := PeerAwayFull("bob", c.waiting, c.size)
		if err.Code != ErrPeerAwayFull.Code || err.Text != c.want {
			t.Errorf("PeerAwayFull(%d, %d) = %v, want %s", c.waiting, c.size, err, c.want)
		}
	}
}
