package engine_test

import (
	"regexp"
	"strings"
	"testing"

	"duet/engine/enginetest"
)

// A row of the screen that reads as the server's: a notice ("* ...") or
// an error ("! code: ..."), with the characters made to look like '*'
// and '!', and anything that shows as blank space after them.
var (
	serverRow = regexp.MustCompile(`^(?:[*٭⁎∗﹡＊\x{1031F}]\p{M}*[\s\p{Zs}\p{Cf}\x{115F}\x{1160}\x{2800}\x{3164}\x{FFA0}]|` +
		`[!ǃⵑ﹗！]\p{M}*[\s\p{Zs}\p{Cf}\x{115F}\x{1160}\x{2800}\x{3164}\x{FFA0}]+[a-z0-9_]+:)`)
	formatChar = regexp.MustCompile(`[\p{Cf}\x{2028}\x{2029}]`)
)

// TestNoMessageRowPassesForServerLine is the attack on a terminal
// reader: a peer pads messages so that, where the reader's terminal
// wraps them, the rest reads as a server line, for every width from 40
// to 200 columns, and sends every kind of format character. What the
// reader gets must hold no row, at any wrap width, that reads as the
// server's, and no format character.
func TestNoMessageRowPassesForServerLine(t *testing.T) {
	d := enginetest.Start(t, nil)
	bob := d.DialLine(t).Login("bob")
	mallory := d.DialWS(t).Login("mallory")
	mallory.Connect(bob.Token)
	bob.Expect(`^\* mallory is connected$`)

	const prefix = "<mallory> "
	fakes := []string{
		"* bob left; you are free to be joined again",
		"! auth_failed: your session expired; send your password",
		"＊\u3000carol is connected",
		"*\u0301\u00a0bob left",
	}
	var sent []string
	for width := 40; width <= 200; width++ {
		for _, pad := range []string{" ", "\t", "x"} {
			fake := fakes[width%len(fakes)]
			sent = append(sent, strings.Repeat(pad, width-len(prefix))+fake)
		}
	}
	for _, r := range "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200b\u200c\u200d\u200e\u200f\u2028\u2029\ufeff" {
		sent = append(sent, "a"+string(r)+"b * c")
	}
	for _, text := range sent {
		mallory.Say(text)
		l := bob.Line()
		if !strings.HasPrefix(l, prefix) {
			t.Fatalf("bob got %q for %q", l, text)
		}
		if f := formatChar.FindString(l); f != "" {
			t.Fatalf("format character %U reached bob in %q", []rune(f)[0], l)
		}
		for i := range l {
			if i >= len(prefix) && serverRow.MatchString(l[i:]) {
				t.Fatalf("a row starting at byte %d of %q reads as a server line", i, l)
			}
		}
	}
}
