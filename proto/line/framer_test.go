package line

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

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
// invariants every caller relies on, and logs each result: the telnet
// answers Reply has after the call, then the line, error or skip.
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
		if r := f.Reply(); len(r) > 0 {
			log = append(log, fmt.Sprintf("reply %q", r))
		}
		switch {
		case err != nil:
			if err.Code != proto.ErrTooLong.Code || n == 0 || line != nil {
				t.Fatalf("Next returned error %v with n=%d line=%q", err, n, line)
			}
			log = append(log, fmt.Sprintf("%s dropped %d", err.Code, n))
		case line != nil:
			checkFramedDecode(t, f, line)
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
		{"Ctrl-D on an empty line is a line at once", 0, []string{"\x04"}, []string{`line "\x04"`}},
		{"Ctrl-D and the next line in one read", 0, []string{"\x04bye\r\n"}, []string{`line "\x04"`, `line "bye"`}},
		{"Ctrl-D after a line", 0, []string{"hi\r\n\x04"}, []string{`line "hi"`, `line "\x04"`}},
		{"Ctrl-D after Ctrl-C", 0, []string{"\xff\xf4\xff\xfd\x06", "\x04"}, []string{`reply "\xff\xfd\x00\xff\xfb\x06"`, "wait 5", `line "\x04"`}},
		{"Ctrl-D mid-line is dropped", 0, []string{"abc", "\x04def\r\n"}, []string{"wait 3", `line "abcdef"`}},
		{"Ctrl-D after IAC IAC is mid-line", 0, []string{"\xff\xff\x04\n"}, []string{`line "\xff"`}},
		{"Ctrl-D after a bare CR is mid-line", 0, []string{"\r\x00\x04x\n"}, []string{`line "x"`}},
		{"Ctrl-D while skipping starts nothing", 4, []string{"abcdef", "\x04gh\nok\n"}, []string{"too_long dropped 6", "skipped 4", `line "ok"`}},
		{"^H erases", 0, []string{"abx\bc\r\n"}, []string{`line "abc"`}},
		{"DEL erases", 0, []string{"abx\x7fc\n"}, []string{`line "abc"`}},
		{"backspace erases a whole UTF-8 character", 0, []string{"\u0444\u044b\b!\n", "\u65e5\u672c\x7f\x7f\u8a9e\n"}, []string{`line "ф!"`, `line "語"`}},
		{"backspace at the start erases nothing", 0, []string{"\b\x7fhi\n"}, []string{`line "hi"`}},
		{"backspace erases one byte that is not UTF-8", 0, []string{"a\xe6\x9c\bb\n"}, []string{`line "a\xe6b"`}},
		{"backspace across reads", 0, []string{"ab", "\b", "c\n"}, []string{"wait 2", "wait 3", `line "ac"`}},
		{"IAC WILL", 0, []string{"\xff\xfb\x01hi\n"}, []string{`reply "\xff\xfd\x00\xff\xfe\x01"`, `line "hi"`}},
		{"IAC WONT DO DONT", 0, []string{"\xff\xfc\x01a\xff\xfd\x05b\xff\xfe\x18c\n"}, []string{`reply "\xff\xfd\x00\xff\xfc\x05"`, `line "abc"`}},
		// A request to type a character at a time (DO SGA, DO ECHO:
		// Debian telnet's `mode character`) is refused, and said why,
		// once.
		{"mode character", 0, []string{"\xff\xfd\x03\xff\xfd\x01", "hi\n\xff\xfd\x03\xff\xfd\x01ok\n"}, []string{
			`reply "\xff\xfd\x00\xff\xfc\x03* duet reads a line at a time: type a line and press Enter; telnet stays in line mode\r\n\xff\xfc\x01"`,
			"wait 6", `line "hi"`, `reply "\xff\xfc\x03\xff\xfc\x01"`, `line "ok"`}},
		{"IAC DO with option byte 10 is not a line end", 0, []string{"\xff\xfd\nhi\n"}, []string{`reply "\xff\xfd\x00\xff\xfc\n"`, `line "hi"`}},
		{"IAC DO with option byte 13 is not dropped as CR", 0, []string{"a\xff\xfd\rb\n"}, []string{`reply "\xff\xfd\x00\xff\xfc\r"`, `line "ab"`}},
		{"IAC IAC is a literal 255", 0, []string{"a\xff\xffb\n"}, []string{`line "a\xffb"`}},
		{"IAC NOP", 0, []string{"a\xff\xf1b\n"}, []string{`reply "\xff\xfd\x00"`, `line "ab"`}},
		{
			"Ctrl-C with BINARY turned off asks for it again", 0,
			[]string{"\xff\xfb\x00", "\xff\xfc\x00", "\xff\xf4", "\xff\xf4", "\xff\xfb\x00ok\n"},
			[]string{`reply "\xff\xfd\x00"`, "wait 3", `reply "\xff\xfe\x00"`, "wait 6", `reply "\xff\xfd\x00"`, "wait 8", "wait 10", `line "ok"`},
		},
		// A netcat user's own 255 (Latin-1 "ÿ", cp1251 "я") begins no
		// command: it stays in the line, which Decode refuses as not
		// UTF-8, and a line feed after it ends the line.
		{"a 255 that begins no command is text", 0, []string{"I say \xffes\n"}, []string{`line "I say \xffes"`}},
		{"a 255 before the line feed", 0, []string{"\xff\nok then\n"}, []string{`line "\xff"`, `line "ok then"`}},
		{"a 255 before CRLF", 0, []string{"\xff\r\nok\n"}, []string{`line "\xff"`, `line "ok"`}},
		{"a 255 split from the line feed", 0, []string{"ab\xff", "\nok\n"}, []string{"wait 3", `line "ab\xff"`, `line "ok"`}},
		{"IAC AYT and IP", 0, []string{"a\xff\xf6b\xff\xf4c\n"}, []string{`reply "\xff\xfd\x00* yes, the server is here\r\n"`, `line "c"`}},
		// Ctrl-C, Ctrl-\ and Ctrl-Z after telnet has sent part of a line
		// (a Ctrl-D or its escape prompt sends what the terminal holds):
		// the terminal throws away what it holds, and the server the
		// part it was sent. So does telnet's `send el`; `send ec`
		// erases one character.
		{
			"Ctrl-C after part of a line was sent", 0,
			[]string{"secret password", "\xff\xf4\xff\xfd\x06", "hi\r\n"},
			[]string{"wait 15", `reply "\xff\xfd\x00\xff\xfb\x06"`, "wait 20", `line "hi"`},
		},
		{"Ctrl-D after Ctrl-C after part of a line is mid-line", 0, []string{"secret\xff\xf4\xff\xfd\x06\x04hi\n"}, []string{`reply "\xff\xfd\x00\xff\xfb\x06"`, `line "hi"`}},
		{"Ctrl-\\ after part of a line", 0, []string{"secret\xff\xf3\xff\xfd\x06hi\n"}, []string{`reply "\xff\xfd\x00\xff\xfb\x06"`, `line "hi"`}},
		{"Ctrl-Z after part of a line", 0, []string{"secret\xff\xed\xff\xfd\x06hi\n"}, []string{`reply "\xff\xfd\x00\xff\xfb\x06"`, `line "hi"`}},
		{"Ctrl-C after a whole letter", 0, []string{"\xd1\x83\xff\xf4\xff\xfd\x06hi\n"}, []string{`reply "\xff\xfd\x00\xff\xfb\x06"`, `line "hi"`}},
		{
			"Ctrl-C in BINARY after part of a line", 0,
			[]string{"\xff\xfb\x00", "secret\xd1", "\xff\xf4\xff\xfd\x06hi\n"},
			[]string{`reply "\xff\xfd\x00"`, "wait 3", "wait 10", `reply "\xff\xfb\x06"`, `line "hi"`},
		},
		// Debian's telnet, outside BINARY, opens its prompt at the
		// second byte of "Н" (0x9d: Ctrl-] in its low seven bits),
		// sending the first alone; its user leaves the prompt and
		// presses Ctrl-C to throw the line away, as the server's
		// answer to a mangled line says. The Ctrl-C arrives on its
		// own: a key, not the byte 0x83 (which made "Ѓ" of the next
		// line's start, sent so). In one read with the byte before it,
		// or with more of the line after it, it is that byte.
		{
			"Ctrl-C after telnet's prompt sent part of a letter", 0,
			[]string{"\xd0", "\xff\xf4\xff\xfd\x06", "\xff\xfb\x00", "\xd0\x9d\xd0\xb5\xd1\x82\r\n"},
			[]string{"wait 1", `reply "\xff\xfd\x00\xff\xfb\x06"`, "wait 6", "wait 9", `line "Нет"`},
		},
		{
			"the same after part of a Japanese letter", 0,
			[]string{"\xe3\x81", "\xff\xf4", "\xff\xfd\x06\xff\xfb\x00\xe3\x81\x9d\r\n"},
			[]string{"wait 2", `reply "\xff\xfd\x00"`, "wait 4", `reply "\xff\xfb\x06"`, `line "そ"`},
		},
		{
			"a letter telnet made IP cut by the network stays", 0,
			[]string{"say \xd1", "\xff\xf4\xff\xfd\x06!\n"},
			[]string{"wait 5", `reply "\xff\xfd\x00\xff\xfb\x06"`, `line "say у!"`},
		},
		// Without its autoflush, telnet sends each byte it replaced as
		// a command of its own, with no timing mark: "ッ" (e3 83 83)
		// comes as e3 IAC IP, then IAC IP alone. The second follows a
		// command, not a letter's first bytes: a byte too.
		{
			"two bytes telnet made IP, each in a write of its own", 0,
			[]string{"ab\xe3\xff\xf4", "\xff\xf4", "\r\n"},
			[]string{`reply "\xff\xfd\x00"`, "wait 5", "wait 7", `line "abッ"`},
		},
		{"a letter telnet made IP stays", 0, []string{"say \xd1\xff\xf4\xff\xfd\x06!\n"}, []string{`reply "\xff\xfd\x00\xff\xfb\x06"`, `line "say у!"`}},
		{"EL erases the line", 0, []string{"secret\xff\xf8hi\n"}, []string{`reply "\xff\xfd\x00"`, `line "hi"`}},
		{"EC erases a character", 0, []string{"ab\xd1\x84\xff\xf7c\n"}, []string{`reply "\xff\xfd\x00"`, `line "abc"`}},
		{"EC at the start erases nothing", 0, []string{"\xff\xf7\xff\xf7ab\n"}, []string{`reply "\xff\xfd\x00"`, `line "ab"`}},
		{"AO erases nothing", 0, []string{"ab\xff\xf5\xff\xfd\x06c\n"}, []string{`reply "\xff\xfd\x00\xff\xfb\x06"`, `line "abc"`}},
		{"IAC SE outside a subnegotiation", 0, []string{"\xff\xfb\x1fa\xff\xf0b\n"}, []string{`reply "\xff\xfd\x00\xff\xfe\x1f"`, `line "ab"`}},
		// A client offers an option before it sends its subnegotiation
		// (WILL NAWS here); the server refuses it, but one sent at once
		// arrives all the same.
		{
			"subnegotiation with a newline in its data",
			0, []string{"\xff\xfb\x1f\xff\xfa\x1f\x00\x50\x00\x0a\xff\xf0hi\n"}, []string{`reply "\xff\xfd\x00\xff\xfe\x1f"`, `line "hi"`},
		},
		{
			"subnegotiation with IAC IAC and a stray IAC in its data",
			0, []string{"\xff\xfb\x18\xff\xfa\x18\xff\xff\xff\x01\n\xff\xf0ok\n"}, []string{`reply "\xff\xfd\x00\xff\xfe\x18"`, `line "ok"`},
		},
		// No telnet client sends SB or SE before it has offered an
		// option: a netcat user typed 255 and that byte ("ÿú", "ÿð" in
		// Latin-1), and its line is refused as not UTF-8, not
		// swallowed.
		{"SB first is text", 0, []string{"\xff\xfahi\nok\n"}, []string{`line "\xffhi"`, `line "ok"`}},
		{"SE first is text", 0, []string{"a\xff\xf0b\n"}, []string{`line "a\xffb"`}},
		{"SB first split from its IAC", 0, []string{"a\xff", "\xfa", "\n", "ok\n"}, []string{"wait 2", "wait 3", `line "a\xff"`, `line "ok"`}},
		// Nor after other commands, while the client has offered no
		// option: cp1251 "ясно" is IAC NOP, then "яъ" is text again.
		{"SB after a NOP is text", 0, []string{"\xff\xf1x\n\xff\xfahi\nok\n"}, []string{`reply "\xff\xfd\x00"`, `line "x"`, `line "\xffhi"`, `line "ok"`}},
		{"IAC split from its command", 0, []string{"\xff", "\xfb", "\x01hi\n"}, []string{"wait 1", `reply "\xff\xfd\x00"`, "wait 2", `reply "\xff\xfe\x01"`, `line "hi"`}},
		{"IAC WILL split from its option", 0, []string{"\xff\xfb", "\n", "hi\n"}, []string{`reply "\xff\xfd\x00"`, "wait 2", `reply "\xff\xfe\n"`, "wait 3", `line "hi"`}},
		{
			"subnegotiation split everywhere",
			0, []string{"x\xff\xfb\x1f", "\xff", "\xfa", "\x1f\n", "\xff", "\xf0", "y\r", "\n"},
			[]string{`reply "\xff\xfd\x00\xff\xfe\x1f"`, "wait 4", "wait 5", "wait 6", "wait 8", "wait 9", "wait 10", "wait 12", `line "xy"`},
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
		{"too long, then a newline inside a telnet command is skipped", 4, []string{"abcdef\xff\xfd\nxy\nok\n"}, []string{`reply "\xff\xfd\x00\xff\xfc\n"`, "too_long dropped 12", `line "ok"`}},
		{
			// A subnegotiation that never ends swallows at most one line.
			"unterminated subnegotiation",
			8, []string{"\xff\xfb\x01\xff\xfa\x01hello\nworld\nok\n"},
			[]string{`reply "\xff\xfd\x00\xff\xfe\x01"`, "too_long dropped 12", `line "world"`, `line "ok"`},
		},
		{"default Max", 0, []string{strings.Repeat("x", DefaultMaxLine) + "\nok\n"}, []string{fmt.Sprintf("too_long dropped %d", DefaultMaxLine+1), `line "ok"`}},
		{
			// The user saw Ctrl-C throw the over-long line away: what it
			// types next is a line of its own, not the rest of that one
			// skipped without a word.
			"Ctrl-C ends the skip of an over-long line",
			12, []string{"0123456789abcd", "\xff\xf4\xff\xfd\x06", "next\r\n"},
			[]string{"too_long dropped 14", `reply "\xff\xfd\x00"`, "skipped 2", `reply "\xff\xfb\x06"`, "wait 3", `line "next"`},
		},
		{
			// telnet sends a byte it replaces at the end of a write, with
			// a request for a timing mark: "ッ" (e3 83 83) comes as two
			// writes, the second beginning with IAC IP. After a write
			// that ended in a command, it is no key.
			"a letter's second replaced byte goes on skipping",
			64, []string{strings.Repeat("a", 70) + "\xe3\xff\xf4\xff\xfd\x06", "\xff\xf4\xff\xfd\x06", " leaked tail\r\n", "next\r\n"},
			[]string{`reply "\xff\xfd\x00\xff\xfb\x06"`, "too_long dropped 76", `reply "\xff\xfb\x06"`, "skipped 5", "skipped 14", `line "next"`},
		},
		{
			// Telnet sends the byte 0x83 of a letter such as "у" (d1 83)
			// as IAC IP: inside a letter it is no key, and the skip goes
			// on to the line feed.
			"IAC IP inside a letter goes on skipping",
			8, []string{"0123456789ab\xd1\xff\xf4cd\nok\n"},
			[]string{`reply "\xff\xfd\x00"`, "too_long dropped 18", `line "ok"`},
		},
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

// TestFramerEnd: once the input has ended, what follows the last line
// feed is the last line, cleaned as any line is; nothing else changes.
func TestFramerEnd(t *testing.T) {
	tests := []struct {
		name   string
		max    int
		chunks []string
		want   []string
	}{
		{"plain", 0, []string{"a\nlast"}, []string{`line "a"`, `line "last"`}},
		{"not plain", 0, []string{"a\nпока"}, []string{`line "a"`, `line "пока"`}},
		{"CR before the end", 0, []string{"last\r"}, []string{`line "last"`}},
		{"telnet command cut short", 0, []string{"last\xff\xfd"}, []string{`reply "\xff\xfd\x00"`, `line "last"`}},
		{"ends with its line feed", 0, []string{"a\n"}, []string{`line "a"`}},
		{"nothing", 0, []string{""}, nil},
		{"rest of an over-long line", 4, []string{"abcdef"}, []string{"too_long dropped 6"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &Framer{Max: tt.max}
			f.End()
			got := frame(t, f, tt.chunks...)
			if !slices.Equal(got, tt.want) {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
	// A line begun before the end is finished by it.
	f := &Framer{}
	pending := []byte("hal")
	if got := drain(t, f, &pending); got != nil {
		t.Fatalf("before the end: %q", got)
	}
	pending = append(pending, "f"...)
	f.End()
	if got := drain(t, f, &pending); !slices.Equal(got, []string{`line "half"`}) || len(pending) != 0 {
		t.Fatalf("at the end: %q, %q left", got, pending)
	}
}

// TestFramerMaxLowered: Max lowered while a line is coming in (a reload
// of limits.max_line) below what has come of it makes that line too
// long, once, and the next line is read as ever.
func TestFramerMaxLowered(t *testing.T) {
	for _, tt := range []struct {
		name, before, after string
		want                []string
	}{
		{"plain", "0123456789", "ab\nok\n", []string{"too_long dropped 13", `line "ok"`}},
		{"not plain", "01234567\x80", "9\nok\n", []string{"too_long dropped 11", `line "ok"`}},
		{"exactly the new Max", "012345", "\nok\n", []string{"too_long dropped 7", `line "ok"`}},
		{"inside a subnegotiation", "\xff\xfb\x01\xff\xfa\x01\n", "xy\xff\xf0\nok\n", []string{"too_long dropped 12", `line "ok"`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := &Framer{Max: 64}
			pending := []byte(tt.before)
			drain(t, f, &pending)
			f.Reply()
			if len(pending) != len(tt.before) {
				t.Fatalf("consumed %d bytes before the end of the line", len(tt.before)-len(pending))
			}
			f.Max = 6
			pending = append(pending, tt.after...)
			if got := drain(t, f, &pending); !slices.Equal(got, tt.want) || len(pending) != 0 {
				t.Errorf("got  %q, %q left\nwant %q", got, pending, tt.want)
			}
		})
	}
}

// checkFramedDecode checks the verdict Next gave on line, the line it
// has just returned: it may call only a line of plain printable ASCII
// plain, and Framer.Decode, which trusts it, must decode the line exactly
// as Decode, which does not.
func checkFramedDecode(t testing.TB, f *Framer, line []byte) {
	t.Helper()
	if f.plainAt != 0 && refPlainRun(line) != len(line) {
		t.Fatalf("Next found %q plain", line)
	}
	got, gotErr := f.Decode(line)
	want, wantErr := Decode(line)
	if gotErr != wantErr || !sameCommand(got, want) {
		t.Fatalf("Framer.Decode(%q) = %+v, %v; Decode = %+v, %v", line, got, gotErr, want, wantErr)
	}
}

// sameCommand reports whether a and b are the same command, field by
// field.
func sameCommand(a, b proto.Command) bool {
	return a.Op == b.Op && bytes.Equal(a.Name, b.Name) && bytes.Equal(a.Password, b.Password) &&
		bytes.Equal(a.Token, b.Token) && bytes.Equal(a.Text, b.Text)
}

// TestFramerFindsPlainLines checks which lines Next calls plain: those of
// plain printable ASCII, ended by "\n" or "\r\n", in one read or in
// several, and no others. A line it calls plain is not looked at again
// by Framer.Decode; one it does not is checked in full.
func TestFramerFindsPlainLines(t *testing.T) {
	for _, tt := range []struct {
		reads []string
		plain bool
	}{
		{[]string{"hello\n"}, true},
		{[]string{"hello bob, this is a fairly ordinary chat message.\r\n"}, true},
		{[]string{"\n"}, true},
		{[]string{"/who\r\n"}, true},
		{[]string{"hello bob, this is a fairly ", "ordinary chat message.\n"}, true},
		{[]string{"h", "e", "l", "l", "o", "\n"}, true},
		{[]string{"tab\there\n"}, false},
		{[]string{"caf\xc3\xa9\n"}, false},
		{[]string{"a\rb\n"}, false},
		{[]string{"a\xff\xf1b\n"}, false},
		{[]string{"del\x7f\n"}, false},
		{[]string{"before \xc3", "\xa9 after\n"}, false},
	} {
		var f Framer
		var pending []byte
		var line []byte
		for _, r := range tt.reads {
			pending = append(pending, r...)
			var n int
			line, n, _ = f.Next(pending)
			pending = pending[n:]
		}
		if line == nil {
			t.Fatalf("%q: no line", tt.reads)
		}
		if got := f.plainAt != 0; got != tt.plain {
			t.Errorf("%q: Next found %q plain: %v, want %v", tt.reads, line, got, tt.plain)
		}
		checkFramedDecode(t, &f, line)
	}
}

// TestFramerDecodeTrustsOnlyItsLine checks that Framer.Decode trusts
// Next's verdict only for the line Next returned: another line, however
// alike, is checked as Decode checks it.
func TestFramerDecodeTrustsOnlyItsLine(t *testing.T) {
	var f Framer
	buf := []byte("abc\n")
	line, _, _ := f.Next(buf)
	if f.plainAt == 0 {
		t.Fatalf("Next did not find %q plain", line)
	}
	for _, other := range [][]byte{[]byte("\xffbc"), buf[1:3], buf[:2]} {
		got, gotErr := f.Decode(other)
		want, wantErr := Decode(other)
		if gotErr != wantErr || !sameCommand(got, want) {
			t.Errorf("Framer.Decode(%q) = %+v, %v; Decode = %+v, %v", other, got, gotErr, want, wantErr)
		}
	}
	if _, err := f.Decode([]byte("\xffbc")); err != proto.ErrInvalidUTF8 {
		t.Errorf("Framer.Decode of a line Next did not return = %v, want invalid_utf8", err)
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
// clarity rather than speed, with its own model of telnet's answers
// (refTelnet). It returns the lines and errors in order, and every
// answer the client is owed, in order.
func refFrame(data []byte, maxLine int, reads []int) (log []string, reply []byte) {
	var tn refTelnet
	st := telnetData
	var line []byte
	raw := 0 // bytes of the current line so far, as received
	// lineIn is the current line as received, commands and all.
	var lineIn []byte
	// readEnd is where the read that each byte came in ends.
	readEnd := make([]int, len(data))
	readStart := make([]bool, len(data))
	start := 0
	for _, end := range append(reads, len(data)) {
		for j := start; j < end; j++ {
			readEnd[j] = end
		}
		if start < end {
			readStart[start] = true
		}
		start = max(start, end)
	}
	// begun: the line has had data, even if a key has erased it since;
	// an EOT is a line of its own only before any.
	begun := false
	skipping := false
	// dataAt says which bytes, read while skipping, were data.
	dataAt := make([]bool, len(data))
	for j, c := range data {
		if st == telnetCommand && !tn.offered && (c == 0xfa || c == 0xf0) {
			// SB or SE from a client that offered no option (WILL):
			// no telnet client sends one then, and the 255 before it
			// is text.
			c = 0xff
		}
		// Outside BINARY, a command may stand for a byte the client
		// replaced; in BINARY it never does.
		replacing := st == telnetCommand && tn.binary != optYes
		if st != telnetData && st != telnetSub && st != telnetSubCommand {
			reply = tn.heard(reply, st, c)
		}
		if skipping {
			if st == telnetCommand && refErasesLine(c) && (tn.binary == optYes || (j > 1 && readStart[j-1] && dataAt[j-2])) {
				// A key that erases the line ends the skip: in BINARY,
				// or its IAC first in a read, after one that ended in
				// a data byte.
				st = telnetData
				skipping = false
				continue
			}
			if (st == telnetData || st == telnetCommand) && c == '\n' {
				st = telnetData
				skipping = false
				continue
			}
			st, dataAt[j] = st.step(c)
			continue
		}
		if (st == telnetData || st == telnetCommand) && c == '\n' {
			if st == telnetCommand {
				// A 255 that began no command is text, and the line
				// feed after it ends the line.
				line = append(line, 0xff)
				st = telnetData
			}
			log = append(log, fmt.Sprintf("line %q", refClean(line)))
			line, raw, begun, lineIn = line[:0], 0, false, lineIn[:0]
			continue
		}
		if st == telnetData && c == 0x04 && !begun {
			// Ctrl-D before any data of the line: a line of its own.
			log = append(log, `line "\x04"`)
			raw, lineIn = 0, lineIn[:0]
			continue
		}
		raw++
		if raw >= maxLine {
			// Max bytes and no line end: the line is over-long. The
			// parser restarts in plain data after the cut.
			log = append(log, "too_long")
			skipping, st, line, raw, begun, lineIn = true, telnetData, line[:0], 0, false, lineIn[:0]
			continue
		}
		lineIn = append(lineIn, c)
		prev := st
		var keep bool
		st, keep = st.step(c)
		if keep {
			if prev == telnetCommand && c != 0xff {
				line = append(line, 0xff) // a 255 that began no command
			}
			line = append(line, c)
			begun = true
			continue
		}
		if prev != telnetCommand {
			continue
		}
		// A command where a UTF-8 continuation byte is due is the byte
		// inetutils telnet replaced with it, outside BINARY; unless it
		// came on its own, beginning a read of commands alone, after a
		// line that ended inside a character (its prompt sent that).
		alone := j > 0 && readStart[j-1] && readEnd[j-1] > j && refDataEndsPartial(lineIn[:len(lineIn)-2]) && refCommandsOnly(data[j+1:readEnd[j]])
		if b := refRestored[c]; b != 0 && replacing && !alone && refPartialRune(refClean(line)) {
			line = append(line, b)
			continue
		}
		// Any other is the key it stands for: IP, BRK, SUSP and EL erase
		// the line so far, EC the character before it.
		switch c {
		case 0xf4, 0xf3, 0xed, 0xf8:
			line = line[:0]
		case 0xf7:
			line = refClean(line)
			_, size := utf8.DecodeLastRune(line)
			line = line[:len(line)-size]
		}
	}
	return log, reply
}

// refErasesLine reports whether c, after an IAC, is a key that erases
// the line: IP, BRK, SUSP or EL.
func refErasesLine(c byte) bool { return c == 0xf4 || c == 0xf3 || c == 0xed || c == 0xf8 }

// refDataEndsPartial reports whether b, a line as received from plain
// data, ends in a data byte, and its data bytes end with the first
// bytes of a UTF-8 character.
func refDataEndsPartial(b []byte) bool {
	var dataBytes []byte
	st := telnetData
	keep := false
	for _, c := range b {
		if st, keep = st.step(c); keep {
			dataBytes = append(dataBytes, c)
		}
	}
	return keep && refPartialRune(dataBytes)
}

// refCommandsOnly reports whether b, read from plain data, holds telnet
// commands alone.
func refCommandsOnly(b []byte) bool {
	st := telnetData
	for _, c := range b {
		var keep bool
		if st, keep = st.step(c); keep {
			return false
		}
	}
	return true
}

// refClean drops every '\r', a NUL right after one, and every EOT
// (Ctrl-D), and makes each backspace (^H or DEL) erase the UTF-8
// character before it.
func refClean(b []byte) []byte {
	var out []byte
	for i, c := range b {
		switch {
		case c == '\r' || c == 0 && i > 0 && b[i-1] == '\r', c == 0x04:
		case c == 0x08 || c == 0x7f:
			_, size := utf8.DecodeLastRune(out)
			out = out[:len(out)-size]
		default:
			out = append(out, c)
		}
	}
	return out
}

// refRestored maps the commands inetutils telnet sends in place of a
// byte to that byte: the byte is 0x80 plus the terminal's default
// interrupt, quit, suspend or discard character.
var refRestored = map[byte]byte{0xf4: 0x83, 0xf3: 0x9c, 0xed: 0x9a, 0xf5: 0x8f}

// refPartialRune reports whether b ends with the first bytes of a UTF-8
// character whose other bytes have not come.
func refPartialRune(b []byte) bool {
	for start := max(0, len(b)-3); start < len(b); start++ {
		if !utf8.RuneStart(b[start]) {
			continue
		}
		want := 0
		switch c := b[start]; {
		case c >= 0xf0 && c < 0xf8:
			want = 4
		case c >= 0xe0 && c < 0xf0:
			want = 3
		case c >= 0xc0 && c < 0xe0:
			want = 2
		}
		// Only the last lead byte counts, and only if all after it are
		// continuation bytes.
		tail := b[start+1:]
		if slices.ContainsFunc(tail, func(c byte) bool { return utf8.RuneStart(c) }) {
			continue
		}
		return len(b)-start < want
	}
	return false
}

// refTelnet models the server's answers to telnet commands, from the
// rules in PROTOCOL.md rather than from telnet.go.
type refTelnet struct {
	spoke, toldLineMode, offered bool
	binary                       optState
}

// heard answers the byte c read in parser state st (after IAC, or after
// IAC WILL/WONT/DO/DONT), appending to reply.
func (m *refTelnet) heard(reply []byte, st telnetState, c byte) []byte {
	const iac = 0xff
	switch st {
	case telnetCommand:
		if c >= 0xec && c <= 0xfe && !m.spoke {
			m.spoke = true
			m.binary = optWantYes
			reply = append(reply, iac, 0xfd, 0) // DO BINARY
		} else if c == 0xf4 && m.binary == optNo { // IP with BINARY off
			m.binary = optWantYes
			reply = append(reply, iac, 0xfd, 0) // DO BINARY, again
		}
		if c == 0xf6 { // AYT
			reply = append(reply, "* yes, the server is here\r\n"...)
		}
	case telnetWill:
		m.offered = true
		switch {
		case c != 0:
			reply = append(reply, iac, 0xfe, c) // DONT
		case m.binary == optNo:
			reply = append(reply, iac, 0xfd, 0) // DO BINARY
			m.binary = optYes
		default:
			m.binary = optYes
		}
	case telnetWont:
		if c == 0 {
			if m.binary == optYes {
				reply = append(reply, iac, 0xfe, 0) // DONT BINARY
			}
			m.binary = optNo
		}
	case telnetDo:
		if c == 6 {
			reply = append(reply, iac, 0xfb, 6) // WILL TIMING-MARK
		} else {
			reply = append(reply, iac, 0xfc, c)        // WONT
			if (c == 1 || c == 3) && !m.toldLineMode { // ECHO, SGA: once
				m.toldLineMode = true
				reply = append(reply, "* duet reads a line at a time: type a line and press Enter; telnet stays in line mode\r\n"...)
			}
		}
	}
	return reply
}

func TestRefFrameAgrees(t *testing.T) {
	// The model itself must agree with the hand-written table above on a
	// few cases, so that a fuzz failure points at the right side.
	got, reply := refFrame([]byte("a\r\nb\xff\xfb\nc\n0123456789\nok\n\xd1\xff\xf4\xff\xfd\x06!\n"), 8, nil)
	want := []string{`line "a"`, `line "bc"`, "too_long", `line "ok"`, `line "у!"`}
	wantReply := "\xff\xfd\x00\xff\xfe\n\xff\xfb\x06"
	if !slices.Equal(got, want) || string(reply) != wantReply {
		t.Fatalf("refFrame = %q, %q; want %q, %q", got, reply, want, wantReply)
	}
}

// TestFramerAtRest: a Framer is at rest when it holds nothing of its
// input beyond the lines it returned; a line begun, a line being
// skipped, a telnet command cut in two or a telnet session under way
// keeps it busy.
func TestFramerAtRest(t *testing.T) {
	for _, c := range []struct {
		name  string
		input string // fed in one call of Next per complete line, then once more
		rest  bool
	}{
		{"new", "", true},
		{"whole lines", "hello\r\nworld\n", true},
		{"a line begun", "hello\nwor", false},
		{"plain bytes begun", "wor", false},
		{"a telnet command cut", "hi\n\xff", false},
		{"a telnet session", "\xff\xfb\x01hi\n", false},
		{"an over-long line being skipped", strings.Repeat("x", 40), false},
		{"an over-long line skipped", strings.Repeat("x", 40) + "\n", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := &Framer{Max: 32}
			buf := []byte(c.input)
			for {
				_, n, _ := f.Next(buf)
				f.Reply()
				if n == 0 {
					break
				}
				buf = buf[n:]
			}
			if got := f.AtRest(); got != c.rest {
				t.Fatalf("AtRest %v after %q, want %v", got, c.input, c.rest)
			}
		})
	}
}

// TestFramerTooLongCommand: an over-long line that starts as a command
// is told in a command's words (it was ignored), not a message's (it
// was not sent); one that starts "//" is a message.
func TestFramerTooLongCommand(t *testing.T) {
	for _, tc := range []struct {
		line string
		want *proto.Error
	}{
		{"/login alice a-long-password\n", proto.ErrCommandTooLong},
		{"//a message that starts with a slash\n", proto.ErrTooLong},
		{"a plain message, too long\n", proto.ErrTooLong},
	} {
		f := &Framer{Max: 8}
		if _, _, err := f.Next([]byte(tc.line)); err != tc.want {
			t.Errorf("%q: %v, want %v", tc.line, err, tc.want)
		}
	}
}
