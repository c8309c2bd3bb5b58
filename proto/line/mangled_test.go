package line

import (
	"bytes"
	"testing"
	"unicode/utf8"

	"duet/proto"
)

// TestTelnetMangled: what inetutils telnet sends outside BINARY for
// UTF-8 letters with a byte 0x85 or 0x9d is telnet's doing, which a
// Ctrl-C mends; a terminal's Latin-1, a byte 255 (IAC IAC) or a byte
// that continues nothing is not. The wire bytes of the first lines are
// those Debian's telnet sent.
func TestTelnetMangled(t *testing.T) {
	for _, tc := range []struct {
		name string
		line string
		want bool
	}{
		// Telnet's: a dropped 0x85.
		{"хорошо, х without its 85", "\xd1\xd0\xbe\xd1\x80\xd0\xbe\xd1\x88\xd0\xbe", true},
		{"хохот, two of them", "\xd1\xd0\xbe\xd1\xd0\xbe\xd1\x82", true},
		{"Åsa", "\xc3sa", true},
		{"ą at the end", "\xc4", true},
		{"ぅ (e3 81 85)", "\xe3\x81 ok", true},
		{"a 0x85 in the middle (ᅀ e1 85 80)", "\xe1\x80", true},
		{"🅰 (f0 9f 85 b0)", "\xf0\x9f\xb0!", true},
		// Telnet's: a cut at 0x9d, the user's next line after it.
		{"Нет, then ok2", "\xd0ok2", true},
		{"Нет, then an empty line", "\xd0", true},
		{"да Нет, then ok", "\xd0\xb4\xd0\xb0 \xd0ok", true},
		{"そ (e3 81 9d), then ok", "\xe3\x81ok", true},
		{"是非 (e9 9d 9e) cut after e9", "\xe6\x98\xaf\xe9ok", true},
		{"나는 은 (ec 9d 80) cut after ec", "\xeb\x82\x98\xeb\x8a\x94 \xecok", true},
		{"녠 (ed 85 a0) without its 85", "\xed\xa0", true},
		{"Latin-1 capital Ñ: ambiguous with х", "\xd1u", true},
		{"both kinds", "\xd1\xd0\xbe\xd1\xd0\xbe \xd0ok", true},
		// Not telnet's.
		{"valid UTF-8", "хорошо", false},
		{"empty", "", false},
		{"Latin-1 café", "caf\xe9", false},
		{"Latin-1 café au lait", "caf\xe9 au lait", false},
		{"Latin-1 À (c0) starts nothing", "\xc0 la carte", false},
		{"Latin-1 naïve", "na\xefve", false},
		{"Latin-1 Müller", "M\xfcller", false},
		{"Latin-1 Ñandú: ú starts nothing", "\xd1and\xfa", false},
		{"Latin-1 ñ (f1) alone", "ma\xf1ana", false},
		{"은 cut, nothing else beyond ASCII", "\xecok", false},
		{"byte 255", "I say \xffes", false},
		{"a lone continuation byte", "bad \x80", false},
		{"one short and a lone continuation", "bad \xc3\x28 utf8 \x80", false},
		{"an overlong form", "\xc0\xaf", false},
		{"an encoded surrogate", "\xed\xa0\x80", false},
		{"past U+10FFFF", "\xf4\x90\x80\x80", false},
		{"e0 needs a0 and up: neither 85 nor 9d fits", "\xe0x", false},
	} {
		if got := TelnetMangled([]byte(tc.line)); got != tc.want {
			t.Errorf("%s: TelnetMangled(%q) = %v, want %v", tc.name, tc.line, got, tc.want)
		}
	}
}

// TestNotUTF8: the Ctrl-C hint goes only to a client outside BINARY
// with a line telnet broke; every other line, and every line once in
// BINARY, is told to set the terminal to UTF-8. Both say invalid_utf8.
func TestNotUTF8(t *testing.T) {
	for _, tc := range []struct {
		line   string
		binary bool
		want   *proto.Error
	}{
		{"\xd0ok2", false, proto.ErrInvalidUTF8Telnet},
		{"\xd0ok2", true, proto.ErrInvalidUTF8Terminal},
		{"caf\xe9", false, proto.ErrInvalidUTF8Terminal},
		{"caf\xe9", true, proto.ErrInvalidUTF8Terminal},
		{"\xff", false, proto.ErrInvalidUTF8Terminal},
	} {
		got := NotUTF8([]byte(tc.line), tc.binary)
		if got != tc.want {
			t.Errorf("NotUTF8(%q, binary %v) = %q, want %q", tc.line, tc.binary, got.Text, tc.want.Text)
		}
		if got.Code != proto.ErrInvalidUTF8.Code {
			t.Errorf("NotUTF8(%q) has code %q", tc.line, got.Code)
		}
	}
}

// FuzzTelnetMangled checks TelnetMangled against telnet itself, modelled
// (telnetSends): what telnet sends for a UTF-8 line, then the user's next
// line, is telnet's if it is not UTF-8, unless a character lost more than
// one byte with no character beyond ASCII left whole to show the
// terminal's UTF-8. And a line in Latin-1 of ASCII and the small letters
// à to ÿ (e0 to ff), which telnet sends as they are, never is.
func FuzzTelnetMangled(f *testing.F) {
	for _, seed := range []struct{ text, next string }{
		{"хорошо", ""},
		{"Нет", "ok2"},
		{"Нет, всё хорошо: Åsa, ąż, そうです", "/who"},
		{"是非", ""},
		{"은", "ok"},
		{"나는 은", "ok"},
		{"ᅅ 🅰 녠", ""},
		{"caf\xe9", ""},
		{"na\xefve \xff", "x"},
	} {
		f.Add(seed.text, seed.next)
	}
	f.Fuzz(func(t *testing.T, text, next string) {
		if utf8.ValidString(text) {
			if TelnetMangled([]byte(text)) {
				t.Fatalf("TelnetMangled(%q), which is UTF-8", text)
			}
			sent, wide, lostMore := telnetSends(text, next)
			want := !utf8.Valid(sent) && (wide || !lostMore)
			if got := TelnetMangled(sent); got != want {
				t.Fatalf("telnet sent %q for %q, then %q: TelnetMangled = %v, want %v", sent, text, next, got, want)
			}
		}
		var latin1 []byte
		for _, c := range []byte(text) {
			if c < utf8.RuneSelf || c >= 0xe0 {
				latin1 = append(latin1, c)
			}
		}
		if TelnetMangled(latin1) {
			t.Fatalf("TelnetMangled(%q), Latin-1", latin1)
		}
	})
}

// telnetSends is what inetutils telnet sends outside BINARY for the line
// text, typed, and then the line next: every 0x85 dropped; a 0x9d opens
// the command prompt, which takes the rest of the line, and what came
// before it goes out with the next line the user types (here only the
// ASCII of next: a line with a 0x9d of its own would be cut again). wide
// says whether a character beyond ASCII went out whole, lostMore whether
// one lost more than one byte.
func telnetSends(text, next string) (sent []byte, wide, lostMore bool) {
	for _, r := range text {
		b := []byte(string(r))
		cut := bytes.IndexByte(b, telnetCut)
		if cut >= 0 {
			b = b[:cut]
		}
		kept := bytes.ReplaceAll(b, []byte{telnetDropped}, nil)
		sent = append(sent, kept...)
		switch lost := utf8.RuneLen(r) - len(kept); {
		case lost == 0 && r >= utf8.RuneSelf:
			wide = true
		case lost > 1:
			lostMore = true
		}
		if cut >= 0 {
			for _, c := range []byte(next) {
				if c < utf8.RuneSelf {
					sent = append(sent, c)
				}
			}
			break
		}
	}
	return sent, wide, lostMore
}
