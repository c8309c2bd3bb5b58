package engine

import "testing"

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
