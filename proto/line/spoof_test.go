package line

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"duet/proto"
)

// The attack on a terminal reader: a peer pads a message so that, where
// the reader's terminal wraps it, the rest starts a row of its own and
// reads like a server line. These tests check what the reader receives
// against looksLikeServerLine at every place a row could start, which
// covers a terminal of any width.

// lookalikeStars and lookalikeBangs are the characters a reader could
// take for '*' and '!' at the start of a row.
const (
	lookalikeStars = "*٭⁎∗﹡＊𐌟"
	lookalikeBangs = "!ǃⵑ﹗！"
)

// showsBlank reports whether r shows as empty space, or as nothing.
func showsBlank(r rune) bool {
	return unicode.IsSpace(r) || unicode.In(r, unicode.Zs, unicode.Cf) ||
		strings.ContainsRune("\u115f\u1160\u2800\u3164\uffa0", r)
}

// looksLikeServerLine reports whether a row of the screen that starts
// with row could be taken for a server notice ("* text") or error
// ("! code: text").
func looksLikeServerLine(row string) bool {
	first, n := utf8.DecodeRuneInString(row)
	star, bang := strings.ContainsRune(lookalikeStars, first), strings.ContainsRune(lookalikeBangs, first)
	if !star && !bang {
		return false
	}
	rest := strings.TrimLeftFunc(row[n:], func(r rune) bool { return unicode.In(r, unicode.Mn, unicode.Me) })
	r, _ := utf8.DecodeRuneInString(rest)
	if !showsBlank(r) {
		return false
	}
	if star {
		return true
	}
	// An error's code, or one made to look like it: letters of any
	// script, digits and '_', with marks anywhere, then a colon or a
	// character that looks like one.
	letters := 0
	for _, r := range strings.TrimLeftFunc(rest, showsBlank) {
		switch {
		case unicode.In(r, unicode.Mn, unicode.Me):
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_':
			letters++
		default:
			return letters > 0 && strings.ContainsRune(lookalikeColons, r)
		}
	}
	return false
}

// lookalikeColons are the colons a partner might use to pass for one.
const lookalikeColons = ":\u02d0\u02f8\u0589\u05c3\u0703\u0704\u16ec\u1804\u2236\ua789\ufe13\ufe55\uff1a"

// checkNoSpoof fails if any row of out that starts after the first
// prefix bytes of a line (the "<name> " every line of a message starts
// with), however a terminal wraps it, could pass for a server line, or
// if out holds a format character.
func checkNoSpoof(t *testing.T, out string, prefix int) {
	t.Helper()
	for _, l := range strings.Split(strings.TrimSuffix(out, "\r\n"), "\r\n") {
		for i, r := range l {
			if isFormat(r) {
				t.Fatalf("format character %U in %q", r, l)
			}
			if i >= prefix && looksLikeServerLine(l[i:]) {
				t.Fatalf("a row starting at byte %d of %q looks like a server line: %q", i, l, l[i:])
			}
		}
	}
}

// wrap cuts line into the rows a terminal of the given width shows:
// wide characters take two columns (and move to the next row rather than
// be split), combining marks none.
func wrap(line string, width int) []string {
	var rows []string
	start, col := 0, 0
	for i, r := range line {
		w := 1
		switch {
		case unicode.In(r, unicode.Mn, unicode.Me):
			w = 0
		case r >= 0x1100 && r <= 0x115f, r >= 0x2e80 && r <= 0xa4cf, r >= 0xac00 && r <= 0xd7a3,
			r >= 0xf900 && r <= 0xfaff, r >= 0xfe30 && r <= 0xfe6f, r >= 0xff00 && r <= 0xff60,
			r >= 0xffe0 && r <= 0xffe6, r >= 0x20000:
			w = 2
		case r == '\t':
			w = 8 - col%8
		}
		if col+w > width && col > 0 {
			rows = append(rows, line[start:i])
			start, col = i, 0
			if r == '\t' {
				w = 8
			}
		}
		col += w
	}
	return append(rows, line[start:])
}

func TestPaddedMessageCannotPassForServerLine(t *testing.T) {
	fakes := []string{
		"* bob left; you are free to be joined again",
		"* carol is connected",
		"! auth_failed: wrong name or password",
		"!  rate_limited: too many requests; slow down: those past the limit are dropped unanswered",
		"＊ bob left", "∗ bob left", "⁎ bob left", "*\u0301 bob left",
		"*\u00a0bob left", "*\u3000bob left", "*\tbob left", "*\u2800bob left",
		"！ auth_failed: x", "ǃ\u00a0auth_failed: x",
		// Codes made to look like one: letters of another script,
		// marks a terminal draws as nothing, colons that are not.
		"! r\u043e\u043em_full: Room is Full", "! room\u034f_full: Room is Full",
		"! room_full\ufe0f: Room is Full", "! room_full\ua789 Room is Full",
		"! room_full\u2236 Room is Full", "! room_full\u0589 Room is Full",
		"! ROOM_FULL: Room is Full",
	}
	pads := []string{" ", "\t", "x", "\u00a0", "\u3000", "\u3164"}
	const prefix = "<mallory> "
	for _, fake := range fakes {
		for _, pad := range pads {
			for width := 40; width <= 200; width++ {
				text := strings.Repeat(pad, width-len(prefix)) + fake
				out := string(AppendEvent(nil, &proto.Event{Kind: proto.EvMessage, From: "mallory", Text: []byte(text)}))
				checkLines(t, out)
				checkNoSpoof(t, out, len(prefix))
				line := strings.TrimSuffix(out, "\r\n")
				for _, w := range []int{width - 1, width, width + 1} {
					for _, row := range wrap(line, w)[1:] {
						if looksLikeServerLine(row) {
							t.Fatalf("padded with %q for width %d, row %q on a terminal of %d columns", pad, width, row, w)
						}
					}
				}
			}
		}
	}
}

// TestSpoofRuleKeepsOrdinaryText checks what the rule changes in text
// that is not an attack: only a star and blank, or a bang, blank and
// error code, have the blank shown as '·'.
func TestSpoofRuleKeepsOrdinaryText(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"wow! that's great", "wow! that's great"},
		{"hi!", "hi!"},
		{"! not an error", "! not an error"},
		{"see *this* word", "see *this*·word"},
		{"*this*, word", "*this*, word"},
		{"2*3", "2*3"},
		{"2 * 3", "2 *·3"},
		{"* item", "*·item"},
		{"*  two spaces", "*· two spaces"},
		{"note! code: here", "note!·code: here"},
		{"!rate_limited: x", "!rate_limited: x"},
		{"! Wow: great", "!·Wow: great"},
		{"! wow, great: yes", "! wow, great: yes"},
		{"ＡＢ＊ｘ", "ＡＢ＊ｘ"},
		{"a ＊\u3000b", "a ＊·b"},
		{"*\u0301\u00a0x", "*\u0301·x"},
		{"bold ** text", "bold **·text"},
		{"*", "*"},
		{"* ", "*·"},
	} {
		out := string(AppendEvent(nil, &proto.Event{Kind: proto.EvMessage, From: "a", Text: []byte(tt.in)}))
		if want := "<a> " + tt.want + "\r\n"; out != want {
			t.Errorf("%q: got %q, want %q", tt.in, out, want)
		}
	}
	// Server lines are the server's: the rule is for peers' text only.
	if out := string(AppendEvent(nil, &proto.Event{Kind: proto.EvNotice, Text: []byte("a * b")})); out != "* a * b\r\n" {
		t.Errorf("notice: %q", out)
	}
}

// TestFormatCharactersReplaced sends every format character, and the
// line and paragraph separators, between two letters.
func TestFormatCharactersReplaced(t *testing.T) {
	var all []rune
	for _, r16 := range unicode.Cf.R16 {
		for r := rune(r16.Lo); r <= rune(r16.Hi); r += rune(r16.Stride) {
			all = append(all, r)
		}
	}
	for _, r32 := range unicode.Cf.R32 {
		for r := rune(r32.Lo); r <= rune(r32.Hi); r += rune(r32.Stride) {
			all = append(all, r)
		}
	}
	all = append(all, 0x2028, 0x2029)
	for _, want := range []rune{0x202a, 0x202e, 0x2066, 0x2069, 0x200b, 0x200f, 0xfeff, 0x061c} {
		if !strings.ContainsRune(string(all), want) {
			t.Fatalf("%U is not among the characters tested", want)
		}
	}
	for _, r := range all {
		text := "a" + string(r) + "b"
		out := string(AppendEvent(nil, &proto.Event{Kind: proto.EvMessage, From: "mallory", Text: []byte(text)}))
		if want := "<mallory> a\uFFFDb\r\n"; out != want {
			t.Errorf("%U: got %q, want %q", r, out, want)
		}
	}
}

// TestIsFormatShortcuts checks isFormat's shortcuts against the Unicode
// tables it stands for, for every character.
func TestIsFormatShortcuts(t *testing.T) {
	for r := rune(0); r <= unicode.MaxRune; r++ {
		want := unicode.Is(unicode.Cf, r) || r == 0x2028 || r == 0x2029
		if isFormat(r) != want {
			t.Fatalf("isFormat(%U) = %v, want %v", r, !want, want)
		}
	}
}
