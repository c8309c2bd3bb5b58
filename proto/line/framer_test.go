package line

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"duet/proto"
)

// frame feeds chunks to f the way the engine does: append what was read
// to the pending bytes, call Next until it wants more, discard what it
// consumed. It returns a log of what happened, one entry per result.
func frame(t testing.TB, f *Framer, chunks ...string) []string {
	t.Helper()
	var log []string
	var pending []byte
	for _, chunk := range chunks {
		pending = append(pending, chunk...)
		log = append(log, drain(t, f, &pending)...)
		if len(pending) > 0 {
			log = append(log, fmt.Sprintf("wait %d", len(pending)))
		}
	}
	return log
}

// drain calls Next on *pending until it asks for more bytes, checking the
// invariants every caller relies on, and logs each result.
func drain(t testing.TB, f *Framer, pending *[]byte) []string {
	t.Helper()
	var log []string
	for {
		buf := *pending
		line, n, err := f.Next(buf)
		if n < 0 || n > len(buf) {
			t.Fatalf("Next consumed %d of %d bytes", n, len(buf))
		}
		if len(buf) >= f.maxLine() && n == 0 {
			t.Fatalf("Next made no progress on %d bytes with Max %d", len(buf), f.maxLine())
		}
		if strings.ContainsAny(string(line), "\r\n") {
			t.Fatalf("Next returned a line with a line break: %q", line)
		}
		if len(line) > f.maxLine() {
			t.Fatalf("Next returned %d bytes, more than Max %d", len(line), f.maxLine())
		}
		switch {
		case err != nil:
			if err != proto.ErrTooLong || n == 0 || line != nil {
				t.Fatalf("Next returned error %v with n=%d line=%q", err, n, line)
			}
			log = append(log, fmt.Sprintf("%s dropped %d", err.Code, n))
		case line != nil:
			log = append(log, fmt.Sprintf("line %q", line))
		case n > 0:
			log = append(log, fmt.Sprintf("skipped %d", n))
		default:
			return log
		}
		*pending = buf[n:]
	}
}

func TestFramer(t *testing.T) {
	tests := []struct {
		name   string
		max    int
		chunks []string
		want   []string
	}{
		{"LF", 0, []string{"hello\n"}, []string{`line "hello"`}},
		{"CRLF", 0, []string{"hello\r\n"}, []string{`line "hello"`}},
		{"several lines in one read", 0, []string{"a\r\nb\nc"}, []string{`line "a"`, `line "b"`, "wait 1"}},
		{"line split across reads", 0, []string{"hel", "lo\r", "\n"}, []string{"wait 3", "wait 6", `line "hello"`}},
		{"byte at a time", 0, []string{"a", "b", "\r", "\n"}, []string{"wait 1", "wait 2", "wait 3", `line "ab"`}},
		{"empty lines", 0, []string{"\n\r\n"}, []string{`line ""`, `line ""`}},
		{"stray CR", 0, []string{"he\rllo\r\r\n"}, []string{`line "hello"`}},
		{"bare CR is not a line end", 0, []string{"a\rb"}, []string{"wait 3"}},
		{"telnet CR NUL", 0, []string{"a\r\x00b\r\n"}, []string{`line "ab"`}},
		{"NUL without CR is kept", 0, []string{"a\x00b\n"}, []string{`line "a\x00b"`}},
		{"IAC WILL", 0, []string{"\xff\xfb\x01hi\n"}, []string{`line "hi"`}},
		{"IAC WONT DO DONT", 0, []string{"\xff\xfc\x01a\xff\xfd\x03b\xff\xfe\x18c\n"}, []string{`line "abc"`}},
		{"IAC DO with option byte 10 is not a line end", 0, []string{"\xff\xfd\nhi\n"}, []string{`line "hi"`}},
		{"IAC DO with option byte 13 is not dropped as CR", 0, []string{"a\xff\xfd\rb\n"}, []string{`line "ab"`}},
		{"IAC IAC is a literal 255", 0, []string{"a\xff\xffb\n"}, []string{`line "a\xffb"`}},
		{"IAC NOP", 0, []string{"a\xff\xf1b\n"}, []string{`line "ab"`}},
		{"IAC AYT and IP", 0, []string{"a\xff\xf6b\xff\xf4c\n"}, []string{`line "abc"`}},
		{"IAC SE outside a subnegotiation", 0, []string{"a\xff\xf0b\n"}, []string{`line "ab"`}},
		{
			"subnegotiation with a newline in its data",
			0, []string{"\xff\xfa\x1f\x00\x50\x00\x0a\xff\xf0hi\n"}, []string{`line "hi"`},
		},
		{
			"subnegotiation with IAC IAC and a stray IAC in its data",
			0, []string{"\xff\xfa\x18\xff\xff\xff\x01\n\xff\xf0ok\n"}, []string{`line "ok"`},
		},
		{"IAC split from its command", 0, []string{"\xff", "\xfb", "\x01hi\n"}, []string{"wait 1", "wait 2", `line "hi"`}},
		{"IAC WILL split from its option", 0, []string{"\xff\xfb", "\n", "hi\n"}, []string{"wait 2", "wait 3", `line "hi"`}},
		{
			"subnegotiation split everywhere",
			0, []string{"x\xff", "\xfa", "\x1f\n", "\xff", "\xf0", "y\r", "\n"},
			[]string{"wait 2", "wait 3", "wait 5", "wait 6", "wait 7", "wait 9", `line "xy"`},
		},
		{"CR and NUL split", 0, []string{"a\r", "\x00b\n"}, []string{"wait 2", `line "ab"`}},
		{"longest line with LF", 8, []string{"1234567\n"}, []string{`line "1234567"`}},
		{"longest line with CRLF", 8, []string{"123456\r\n"}, []string{`line "123456"`}},
		{"one byte too long", 8, []string{"1234567\r\nok\n"}, []string{"too_long dropped 9", `line "ok"`}},
		{"too long in one read", 8, []string{"0123456789abc\nnext\n"}, []string{"too_long dropped 14", `line "next"`}},
		{
			"too long across reads",
			8, []string{"0123", "4567", "89", "ab\nok\n"},
			[]string{"wait 4", "too_long dropped 8", "skipped 2", "skipped 3", `line "ok"`},
		},
		{"too long ends exactly at the read", 8, []string{"01234567", "\n", "ok\n"}, []string{"too_long dropped 8", "skipped 1", `line "ok"`}},
		{"too long, then a newline inside a telnet command is skipped", 4, []string{"abcdef\xff\xfd\nxy\nok\n"}, []string{"too_long dropped 12", `line "ok"`}},
		{
			// A subnegotiation that never ends swallows at most one line.
			"unterminated subnegotiation",
			8, []string{"\xff\xfa\x01hello\nworld\nok\n"},
			[]string{"too_long dropped 9", `line "world"`, `line "ok"`},
		},
		{"default Max", 0, []string{strings.Repeat("x", DefaultMaxLine) + "\nok\n"}, []string{fmt.Sprintf("too_long dropped %d", DefaultMaxLine+1), `line "ok"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &Framer{Max: tt.max}
			got := frame(t, f, tt.chunks...)
			if !slices.Equal(got, tt.want) {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestFramerRestartsOnForeignBuffer checks that a caller who does not
// hand back its unconsumed bytes gets a correct answer for what it does
// pass, rather than one computed from a stale position.
func TestFramerRestartsOnForeignBuffer(t *testing.T) {
	var f Framer
	if line, n, err := f.Next([]byte("abcdef")); line != nil || n != 0 || err != nil {
		t.Fatalf("Next(partial) = %q, %d, %v", line, n, err)
	}
	line, n, err := f.Next([]byte("ok\n"))
	if string(line) != "ok" || n != 3 || err != nil {
		t.Fatalf("Next(other) = %q, %d, %v; want \"ok\", 3, nil", line, n, err)
	}
}

// TestFramerInPlace checks that Next leaves the bytes after the line it
// returns untouched.
func TestFramerInPlace(t *testing.T) {
	var f Framer
	buf := []byte("a\xff\xfb\x01b\r\nrest\xff")
	line, n, err := f.Next(buf)
	if string(line) != "ab" || n != 7 || err != nil {
		t.Fatalf("Next = %q, %d, %v", line, n, err)
	}
	if string(buf[n:]) != "rest\xff" {
		t.Fatalf("unconsumed bytes changed: %q", buf[n:])
	}
}

// refFrame is a byte-at-a-time model of the framing rules, written for
// clarity rather than speed. The fuzz test checks Framer against it.
func refFrame(data []byte, maxLine int) []string {
	var log []string
	st := telnetData
	var line []byte
	raw := 0 // bytes of the current line so far, as received
	skipping := false
	for _, c := range data {
		if skipping {
			if st == telnetData && c == '\n' {
				skipping = false
				continue
			}
			st, _ = st.step(c)
			continue
		}
		if st == telnetData && c == '\n' {
			log = append(log, fmt.Sprintf("line %q", refClean(line)))
			line, raw = line[:0], 0
			continue
		}
		raw++
		if raw >= maxLine {
			// Max bytes and no line end: the line is over-long. The
			// parser restarts in plain data after the cut.
			log = append(log, "too_long")
			skipping, st, line, raw = true, telnetData, line[:0], 0
			continue
		}
		var keep bool
		st, keep = st.step(c)
		if keep {
			line = append(line, c)
		}
	}
	return log
}

// refClean drops every '\r' and a NUL right after one.
func refClean(b []byte) []byte {
	var out []byte
	for i, c := range b {
		if c == '\r' || c == 0 && i > 0 && b[i-1] == '\r' {
			continue
		}
		out = append(out, c)
	}
	return out
}

func TestRefFrameAgrees(t *testing.T) {
	// The model itself must agree with the hand-written table above on a
	// few cases, so that a fuzz failure points at the right side.
	got := refFrame([]byte("a\r\nb\xff\xfb\nc\n0123456789\nok\n"), 8)
	want := []string{`line "a"`, `line "bc"`, "too_long", `line "ok"`}
	if !slices.Equal(got, want) {
		t.Fatalf("refFrame = %q, want %q", got, want)
	}
}
