package proto

import (
	"strings"
	"testing"
)

// TestParseToken: exactly 32 hexadecimal characters, either case, make
// a token; anything else is bad_token, and the zero token, well formed
// but never given to anyone, is unknown_token (ErrZeroToken).
func TestParseToken(t *testing.T) {
	cases := []struct {
		in   string
		want *Error
	}{
		{"5366c6d06ecff31059750e8cf80a97de", nil},
		{"5366C6D06ECFF31059750E8CF80A97DE", nil},
		{strings.Repeat("0", 31) + "1", nil},
		{"", ErrBadToken},
		{"5366c6d06ecff31059750e8cf80a97d", ErrBadToken},
		{"5366c6d06ecff31059750e8cf80a97de0", ErrBadToken},
		{"5366c6d06ecff31059750e8cf80a97dg", ErrBadToken},
		{" 366c6d06ecff31059750e8cf80a97de", ErrBadToken},
		{strings.Repeat("0", 32), ErrZeroToken},
	}
	for _, c := range cases {
		tok, err := ParseToken([]byte(c.in))
		if err != c.want {
			t.Errorf("ParseToken(%q): error %v, want %v", c.in, err, c.want)
			continue
		}
		if err == nil && tok.String() != strings.ToLower(c.in) {
			t.Errorf("ParseToken(%q) = %s", c.in, tok)
		}
	}
}
