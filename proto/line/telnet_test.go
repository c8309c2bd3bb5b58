package line

import (
	"bytes"
	"strings"
	"testing"

	"duet/proto"
)

// TestTelnetNetcatGetsNoAnswer checks that a client that never sends a
// telnet command is never sent one, whatever else it sends: byte 255
// doubled (IAC IAC, a data byte), invalid UTF-8, over-long lines.
func TestTelnetNetcatGetsNoAnswer(t *testing.T) {
	f := Framer{Max: 16}
	input := []byte("hello\n\xff\xff\r\n\x83\x9c\x9a\x8f\n" + strings.Repeat("x", 40) + "\nok\n")
	for len(input) > 0 {
		_, n, _ := f.Next(input)
		if r := f.Reply(); len(r) > 0 {
			t.Fatalf("netcat was answered %q", r)
		}
		if n == 0 {
			t.Fatalf("no progress on %q", input)
		}
		input = input[n:]
	}
}

// TestTelnetReplyIsBounded floods a Framer with commands that each earn
// an answer and checks that what it holds for one call of Reply stays
// within maxReply, and that the answers start again once taken.
func TestTelnetReplyIsBounded(t *testing.T) {
	f := Framer{Max: 1 << 20}
	flood := bytes.Repeat([]byte{telnetIAC, telnetAYT, telnetIAC, telnetDO, optTimingMark}, 10000)
	if _, n, _ := f.Next(flood); n != 0 {
		t.Fatalf("Next consumed %d bytes of a line with no end", n)
	}
	r := f.Reply()
	if len(r) > maxReply || len(r) < maxReply-len(aytAnswer) {
		t.Fatalf("Reply holds %d bytes, want at most %d and close to it", len(r), maxReply)
	}
	if _, _, _ = f.Next(append(flood, []byte("\xff\xfd\x06\n")...)); !bytes.Equal(f.Reply(), []byte{telnetIAC, telnetWILL, optTimingMark}) {
		t.Fatal("the timing mark after the flood was not answered once Reply was taken")
	}
}

// TestContinuationDue checks the UTF-8 test behind restoring the bytes
// inetutils telnet replaces with commands.
func TestContinuationDue(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want bool
	}{
		{"", false},
		{"a", false},
		{"\xd1", true},          // first of two
		{"\xd1\x83", false},     // whole
		{"\xe6", true},          // first of three
		{"\xe6\x9c", true},      // two of three
		{"\xe6\x9c\xac", false}, // whole
		{"\xf0\x9f\x9c", true},  // three of four
		{"\xf0\x9f\x9c\x83", false},
		{"\x83", false},         // a continuation byte with no lead
		{"\x83\x83\x83", false}, // no lead in reach
		{"a\xd1", true},
		{"\xff", false},
	} {
		if got := continuationDue([]byte(tt.in)); got != tt.want {
			t.Errorf("continuationDue(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// TestBinaryKeyPressAcrossCopies: in BINARY a key press (IAC AO, IAC
// IP) after the first byte of a character is no byte telnet replaced,
// whether the line comes in one read or in two, and whether the second
// read hands back the bytes of the first as they were or as a copy made
// before the framer looked at them (gnet copies what it buffered
// together with what arrives): AO does nothing, IP (Ctrl-C) erases the
// line begun.
func TestBinaryKeyPressAcrossCopies(t *testing.T) {
	for _, key := range []struct {
		cmd  byte
		want string
	}{{telnetAO, "\xd1"}, {telnetIP, ""}} {
		for _, copyBetween := range []bool{false, true} {
			f := &Framer{}
			f.Next([]byte("\xff\xfb\x00\n")) // IAC WILL BINARY
			f.Reply()
			buf := secondRead(t, f, []byte{0xd1, telnetIAC, key.cmd}, "\n", copyBetween) // a lead byte, then the key
			line, _, err := f.Next(buf)
			if err != nil || string(line) != key.want {
				t.Fatalf("command %d, copy %v: line %q, %v; want %q", key.cmd, copyBetween, line, err, key.want)
			}
		}
	}
}

// secondRead hands f first, the start of a line, and returns what the
// next read holds: first followed by then, as gnet hands it back, first
// as f left it or, copyBetween, as a copy made before f looked at it.
func secondRead(t *testing.T, f *Framer, first []byte, then string, copyBetween bool) []byte {
	t.Helper()
	before := bytes.Clone(first)
	if line, n, err := f.Next(first); line != nil || n != 0 || err != nil {
		t.Fatalf("a line begun: %q %d %v", line, n, err)
	}
	if copyBetween {
		first = before
	}
	return append(bytes.Clone(first), then...)
}

// TestNetcatSBAcrossCopies: a netcat user's 255 before a byte telnet
// reads as SB (subCommand) is text whether the line comes in one
// read or two, and whether the second read hands back the bytes of the
// first as they were or as a copy made before the framer looked at
// them: the line is refused, not swallowed, and no answer is owed.
func TestNetcatSBAcrossCopies(t *testing.T) {
	for _, copyBetween := range []bool{false, true} {
		f := &Framer{}
		buf := secondRead(t, f, []byte("a\xff\xfa"), "b\nok\n", copyBetween)
		line, n, err := f.Next(buf)
		if err != nil || string(line) != "a\xffb" {
			t.Fatalf("copy %v: line %q, %v; want %q", copyBetween, line, err, "a\xffb")
		}
		if _, derr := Decode(line); derr != proto.ErrInvalidUTF8 {
			t.Fatalf("copy %v: Decode(%q) = %v, want invalid_utf8", copyBetween, line, derr)
		}
		if line, _, err := f.Next(buf[n:]); err != nil || string(line) != "ok" {
			t.Fatalf("copy %v: next line %q, %v", copyBetween, line, err)
		}
		if r := f.Reply(); len(r) > 0 {
			t.Fatalf("copy %v: a netcat user owed %q", copyBetween, r)
		}
	}
}

// TestTelnetTimingMark checks that TimingMark tells the answers Reply
// holds a timing mark's, at a Ctrl-C and nowhere else, and
// TimingMarkByKey whether one came at a key rather than in a letter
// telnet changed; that Reply
// forgets it, and that a timing mark whose answer the full queue
// dropped is not told: no answer, no notice after it would be shown.
func TestTelnetTimingMark(t *testing.T) {
	for _, tt := range []struct {
		name, in    string
		want, byKey bool
	}{
		{"Ctrl-C", "\xff\xf4\xff\xfd\x06", true, true},
		{"Ctrl-C in a line", "half\xff\xf4\xff\xfd\x06hi\r\n", true, true},
		{"a timing mark split across reads, whole", "\xff\xfd\x06", true, true},
		// "угу": telnet sends each у, d1 83, as d1 IAC IP DO TM.
		{"letters telnet changed", "\xd1\xff\xf4\xff\xfd\x06\xd0\xb3\xd1\xff\xf4\xff\xfd\x06\r\n", true, false},
		{"a letter telnet changed, then Ctrl-C", "\xd1\xff\xf4\xff\xfd\x06\r\n\xff\xf4\xff\xfd\x06", true, true},
		{"other options", "\xff\xfd\x01\xff\xfb\x18\xff\xfd\x00", false, false},
		{"IP alone", "\xff\xf4", false, false},
		{"AYT", "\xff\xf6", false, false},
		{"a 6 that is data", "\xff\xf4 \x06\n", false, false},
		{"netcat", "hello\n", false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var f Framer
			buf := []byte(tt.in)
			for len(buf) > 0 {
				_, n, _ := f.Next(buf)
				if n == 0 {
					break
				}
				buf = buf[n:]
			}
			if got := f.TimingMark(); got != tt.want {
				t.Fatalf("TimingMark() = %v, want %v (reply %q)", got, tt.want, f.tn.reply)
			}
			if got := f.TimingMarkByKey(); got != tt.byKey {
				t.Fatalf("TimingMarkByKey() = %v, want %v", got, tt.byKey)
			}
			f.Reply()
			if f.TimingMark() || f.TimingMarkByKey() {
				t.Fatal("TimingMark() still true after Reply")
			}
		})
	}

	t.Run("answer dropped", func(t *testing.T) {
		f := Framer{Max: 1 << 20}
		// DO BINARY, then a WONT for each: room for one answer more.
		flood := bytes.Repeat([]byte{telnetIAC, telnetDO, 5}, maxReply/3-2)
		f.Next(append(flood, telnetIAC, telnetDO, optTimingMark, telnetIAC, telnetDO, optTimingMark, '\n'))
		if !f.TimingMark() {
			t.Fatal("TimingMark() false for a timing mark answered as the queue filled")
		}
		if r := f.Reply(); len(r)+3 <= maxReply || !bytes.HasSuffix(r, []byte{telnetIAC, telnetWILL, optTimingMark}) {
			t.Fatalf("reply of %d bytes ends %q, want it full, ending in one WILL TIMING-MARK", len(r), r[max(0, len(r)-6):])
		}
		f.Next(append(bytes.Repeat([]byte{telnetIAC, telnetDO, 5}, maxReply/3), telnetIAC, telnetDO, optTimingMark, '\n'))
		if r := f.tn.reply; len(r)+3 <= maxReply || bytes.HasSuffix(r, []byte{telnetIAC, telnetWILL, optTimingMark}) {
			t.Fatalf("reply of %d bytes ends %q, want it full, with no room for the answer", len(r), r[max(0, len(r)-6):])
		}
		if f.TimingMark() {
			t.Fatal("TimingMark() true for a timing mark that was not answered")
		}
	})
}
