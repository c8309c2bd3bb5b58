package line

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
	"unsafe"

	"duet/proto"
)

// FuzzFramer feeds a byte stream to a Framer in reads of a fuzzed size
// and checks it against refFrame, the byte-at-a-time model: the same
// lines and errors in the same order, whatever the read boundaries but
// for the one rule that looks at them (keyAlone), which the model
// follows too. drain
// checks the per-call invariants (n within buf, progress once buf holds
// Max bytes, no line breaks in a line, ErrTooLong only with n > 0).
func FuzzFramer(f *testing.F) {
	f.Add([]byte("hello\r\nworld\n"), uint16(16), uint8(1))
	f.Add([]byte("\xff\xfb\x01hi\xff\xff\r\x00x\n"), uint16(16), uint8(2))
	f.Add([]byte("\xff\xfa\x1f\x00\x0a\xff\xff\n\xff\xf0ok\n"), uint16(64), uint8(3))
	f.Add([]byte("0123456789abcdef\nok\n"), uint16(8), uint8(5))
	f.Add([]byte("\xff\xfa\x01never ends\nline\nline\n"), uint16(6), uint8(4))
	f.Add([]byte("abc\xff\xfd\nde\r\n"), uint16(4), uint8(1))
	// Keys a terminal leaves to the server: Ctrl-D alone and mid-line,
	// both backspaces, an arrow.
	f.Add([]byte("\x04abc\x04\x04de\x7f\bf\r\n\xff\xf4\xff\xfd\x06\x04\xd1\x84\b\x1b[A\n"), uint16(64), uint8(2))
	// What inetutils telnet sent for "у я 本 ك Ě ŏ" and Ctrl-C outside BINARY.
	f.Add([]byte("\xd1\xff\xf4\xff\xfd\x06 \xd1\xff\xf5\xff\xfd\x06 \xe6\xff\xf3\xff\xfd\x06\xac \xd9\xff\xf4\xff\xfd\x06 \xc4\xff\xed\xff\xfd\x06 \xc5\xff\xf5\xff\xfd\x06\r\n\xff\xf4\xff\xfd\x06\xff\xfb\x00\xd1\xff\xf4\x83\n"), uint16(64), uint8(3))
	// Ctrl-C after telnet sent part of a line, outside BINARY and in it;
	// telnet's `send el` and `send ec`.
	f.Add([]byte("secret\xff\xf4\xff\xfd\x06hi\r\n\xff\xfb\x00no\xd1\xff\xf4\xff\xfd\x06\x04yes\r\n\xff\xf8x\xd1\x84\xff\xf7\xff\xf7y\n"), uint16(64), uint8(3))
	// Part of "Н" telnet sent as its prompt opened, a Ctrl-C, the answer
	// to the request for BINARY, and the line typed again.
	f.Add([]byte("\xd0\xff\xf4\xff\xfd\x06\xff\xfb\x00\xd0\x9d\xd0\xb5\xd1\x82\r\n\xd1\xff\xf4\xff\xfd\x06\xff\xfc\x00\xd1\xff\xf4\n"), uint16(64), uint8(1))
	// A netcat user's "ÿú" and "ÿð" (255, then SB or SE), then telnet's
	// first command and a subnegotiation after it.
	f.Add([]byte("\xff\xfahi\n\xff\xf0\n\xff\xf1\xff\xfa\x1f\n\xff\xf0ok\n"), uint16(64), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, maxLine uint16, readSize uint8) {
		fr := &Framer{Max: 1 + int(maxLine)%512}
		step := 1 + int(readSize)%64

		var reads []int
		for i := 0; i < len(data); i += step {
			reads = append(reads, min(i+step, len(data)))
		}
		checkAgainstModel(t, fr, data, reads)
	})
}

// FuzzDecode checks that Decode never panics and keeps its promises:
// invalid UTF-8 is always refused, a message is the line (or, after
// "//", the line without its first slash), and every field is valid
// UTF-8 that came from the line.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		"", "   ", "hello", "//x", "/login alice", "/login alice pw word", "/LOGIN\tbob",
		"/connect 0123456789abcdef0123456789abcdef", "/connect", "/who", "/quit", "/exit",
		"/connect http://duet.example:8080/#0123456789abcdef0123456789abcdef", "/connect https://x/#", "/connect #",
		"/connect https://x/#0123456789abcdef0123456789abcdef.oKGio6SlpqeoqaqrrK2urw", "/connect #.x", "/connect a.b",
		"/newtoken", "/nope", "/", "caf\xe9", "\xff\xfe", " /who",
		"/resume k7m2qv0c9x4t8ghj3nwp5rbe6d", "/resume", "/Resume a b \t",
		"\x04", "\x04\x04", "a\x1b[Db", "\f", "\u0085", "\u00a9\t",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		orig := slices.Clone(line)
		cmd, err := Decode(line)
		if !bytes.Equal(line, orig) {
			t.Fatalf("Decode changed its input: %q -> %q", orig, line)
		}
		// Say finds a message exactly where Decode does, the same text.
		var fr Framer
		text, ok := fr.Say(line)
		if isSay := err == nil && cmd.Op == proto.OpSay; ok != isSay ||
			ok && (unsafe.SliceData(text) != unsafe.SliceData(cmd.Text) || len(text) != len(cmd.Text) || cap(text) != cap(cmd.Text)) {
			t.Fatalf("Say(%q) = %q, %v; Decode says op %v, text %q, error %v", line, text, ok, cmd.Op, cmd.Text, err)
		}
		if !utf8.Valid(line) {
			if err != proto.ErrInvalidUTF8 {
				t.Fatalf("Decode(%q) = %v, want invalid_utf8", line, err)
			}
			return
		}
		if isEOT(line) {
			if err != nil || cmd.Op != proto.OpQuit {
				t.Fatalf("Decode(%q) = op %v, error %v; want quit", line, cmd.Op, err)
			}
			return
		}
		// No command or message carries a control character but tab.
		if refHasControl(line) != (err == proto.ErrControlChar) {
			t.Fatalf("Decode(%q) = %v", line, err)
		}
		if err != nil {
			if cmd.Op != proto.OpNone {
				t.Fatalf("Decode(%q) returned op %v with error %v", line, cmd.Op, err)
			}
			if !slices.Contains(proto.Errors, err) {
				t.Fatalf("Decode(%q) returned unknown error %v", line, err)
			}
			return
		}
		for _, field := range [][]byte{cmd.Name, cmd.Password, cmd.Token, cmd.Text, cmd.Key} {
			if !utf8.Valid(field) || !bytes.Contains(line, field) {
				t.Fatalf("Decode(%q) returned field %q", line, field)
			}
		}
		switch cmd.Op {
		case proto.OpNone:
			if !isBlank(line) {
				t.Fatalf("Decode(%q) returned none for a line that is not blank", line)
			}
		case proto.OpSay:
			want := line
			if bytes.HasPrefix(line, []byte("//")) {
				want = line[1:]
			}
			if !bytes.Equal(cmd.Text, want) {
				t.Fatalf("Decode(%q) says %q, want %q", line, cmd.Text, want)
			}
		case proto.OpLogin:
			if len(cmd.Name) == 0 || bytes.ContainsAny(cmd.Name, " \t") {
				t.Fatalf("Decode(%q) logs in as %q", line, cmd.Name)
			}
		case proto.OpConnect:
			if len(cmd.Token) == 0 || bytes.IndexByte(cmd.Token, '#') >= 0 {
				t.Fatalf("Decode(%q) connects to %q", line, cmd.Token)
			}
			// The token ends the line, blanks aside: a share link's
			// fragment, or the whole argument; or a link secret follows
			// it in the fragment (#TOKEN.SECRET), and is dropped.
			rest := bytes.TrimRight(line, " \t")
			inLink := bytes.Contains(rest, []byte("#"+string(cmd.Token)+".")) && bytes.IndexByte(cmd.Token, '.') < 0
			if !bytes.HasSuffix(rest, cmd.Token) && !inLink {
				t.Fatalf("Decode(%q) connects to %q, which does not end the line", line, cmd.Token)
			}
		case proto.OpResume:
			// The key is the rest of the line, blanks around it dropped;
			// none is passed on too, for the engine to answer.
			k := cmd.Key
			if cmd.Last != 0 || !bytes.HasSuffix(bytes.TrimRight(line, " \t"), k) ||
				len(k) > 0 && (isBlankByte(k[0]) || isBlankByte(k[len(k)-1])) ||
				len(k) == 0 && !isBlank(line[len("/resume"):]) {
				t.Fatalf("Decode(%q) resumes with key %q, last %d", line, cmd.Key, cmd.Last)
			}
		}
		if cmd.Op != proto.OpSay && cmd.Op != proto.OpNone && line[0] != '/' {
			t.Fatalf("Decode(%q) = %v for a line that does not start with '/'", line, cmd.Op)
		}
	})
}

// refHasControl reports whether s holds a rune of Unicode category Cc
// other than tab.
func refHasControl(s []byte) bool {
	return bytes.ContainsFunc(s, func(r rune) bool { return unicode.IsControl(r) && r != '\t' })
}

// FuzzAppendEvent checks that whatever a peer sends, the line it is
// rendered to is whole lines with no control characters but tab and no
// format characters, and that no row of a message, wherever a terminal
// wraps it, reads like a server line.
func FuzzAppendEvent(f *testing.F) {
	f.Add("alice", []byte("hi"))
	f.Add("bob", []byte("a\r\nb\n\x1b[31m\u009b\x7f\xff"))
	f.Add("", []byte("\n"))
	f.Add("mallory", []byte("                    * bob left; you are free to be joined again"))
	f.Add("mallory", []byte("x\t! auth_failed: wrong name\n＊\u0301\u3000y \u202eevil\u2066"))
	f.Fuzz(func(t *testing.T, from string, text []byte) {
		for _, kind := range []proto.EventKind{proto.EvMessage, proto.EvNotice} {
			out := AppendEvent(nil, &proto.Event{Kind: kind, From: from, Text: text})
			if !utf8.Valid(out) {
				t.Fatalf("output is not UTF-8: %q", out)
			}
			checkLines(t, string(out))
			if kind == proto.EvMessage {
				checkNoSpoof(t, string(out), len(appendSafe(nil, from))+len("<> "))
			}
		}
		out := AppendEvent(nil, &proto.Event{Kind: proto.EvPeerLeft, Peer: from, Reason: proto.Reason(text), Count: len(text)})
		checkLines(t, string(out))
		// The events of a resume carry names and a key: whatever they
		// hold, they are whole server lines.
		for _, kind := range []proto.EventKind{proto.EvWelcome, proto.EvResumed, proto.EvReplayEnd, proto.EvPeerAway, proto.EvPeerBack} {
			ev := proto.Event{Kind: kind, Name: from, Peer: string(text), ResumeKey: string(text) + from,
				Count: len(text) % 3, Missed: len(from) % 3, Window: time.Duration(len(text)) * time.Second}
			out := string(AppendEvent(nil, &ev))
			checkLines(t, out)
			for _, l := range strings.SplitAfter(out, "\r\n") {
				if l != "" && !strings.HasPrefix(l, "* ") {
					t.Fatalf("%v event renders a line that is not a server line: %q", kind, l)
				}
			}
		}
	})
}

// FuzzAppendMessages checks that a run of messages encodes to exactly
// what AppendEvent gives for each message in turn, after any bytes
// already in the buffer, and says where each ends. The fuzzer's text is
// cut into the run's texts at each '|'.
func FuzzAppendMessages(f *testing.F) {
	f.Add("alice", []byte("hi|there"), []byte("* "))
	f.Add("b\x1bob", []byte("a\r\nb|\n|\x1b[31m\u009b\x7f\xff|"), []byte{})
	f.Add("", []byte(""), []byte("x"))
	f.Fuzz(func(t *testing.T, from string, joined, before []byte) {
		texts := bytes.Split(joined, []byte("|"))
		want := append([]byte(nil), before...)
		var wantEnds []int32
		for _, text := range texts {
			want = AppendEvent(want, &proto.Event{Kind: proto.EvMessage, From: from, Text: text})
			wantEnds = append(wantEnds, int32(len(want)))
		}
		// A small buffer, so that appending the prefix to itself grows it.
		got, ends := AppendMessages(append(make([]byte, 0, len(before)+1), before...), nil, from, texts)
		if !bytes.Equal(got, want) {
			t.Fatalf("AppendMessages(%q, %q) = %q, want %q", from, texts, got, want)
		}
		if !slices.Equal(ends, wantEnds) {
			t.Fatalf("AppendMessages(%q, %q) ends %v, want %v", from, texts, ends, wantEnds)
		}
		if got, ends := AppendMessages(before, nil, from, nil); !bytes.Equal(got, before) || len(ends) != 0 {
			t.Fatalf("AppendMessages of no texts = %q, %v, want %q and no ends", got, ends, before)
		}
	})
}

// checkAgainstModel feeds data to fr in reads that end at the offsets in
// reads, and checks the lines, errors and telnet answers against
// refFrame's: the same, in the same order, whatever the read boundaries.
func checkAgainstModel(t *testing.T, fr *Framer, data []byte, reads []int) {
	t.Helper()
	var got []string
	var reply []byte
	var pending []byte
	from := 0
	for _, end := range reads {
		pending = append(pending, data[from:end]...)
		from = end
		for _, entry := range drain(t, fr, &pending) {
			// The model does not know how many bytes each call
			// consumed: compare what was framed, not how.
			switch {
			case strings.HasPrefix(entry, "line "):
				got = append(got, entry)
			case strings.HasPrefix(entry, "too_long "):
				got = append(got, "too_long")
			case strings.HasPrefix(entry, "reply "):
				var r string
				if _, err := fmt.Sscanf(entry, "reply %q", &r); err != nil {
					t.Fatal(err)
				}
				reply = append(reply, r...)
			}
		}
	}
	want, wantReply := refFrame(data, fr.maxLine(), reads)
	if !slices.Equal(got, want) {
		t.Fatalf("Max %d, reads ending at %v, input %q:\n got  %q\n want %q", fr.maxLine(), reads, data, got, want)
	}
	// Answers past maxReply in one read are dropped, which the model
	// does not know; short of that they must be the same.
	if len(wantReply) < maxReply && !bytes.Equal(reply, wantReply) {
		t.Fatalf("Max %d, reads ending at %v, input %q:\n replies %q\n want    %q", fr.maxLine(), reads, data, reply, wantReply)
	}
}

// TestFramerMatchesModel runs FuzzFramer's comparison on many random
// streams drawn from the bytes that matter to framing, with random read
// sizes that change from read to read, so that every go test covers far
// more than the seed corpus.
func TestFramerMatchesModel(t *testing.T) {
	// Plain bytes, line ends, telnet's commands and options (BINARY,
	// TIMING-MARK, ECHO and SGA among them), the UTF-8 lead and
	// continuation bytes that restoring replaced bytes depends on, the
	// keys the framer acts on (Ctrl-D, both backspaces), and the
	// commands that erase (EL, EC) or do not (AO).
	const alphabet = "ab\r\n\x00\x01\x03\x06\xff\xfa\xf0\xfb\xfc\xfd\xfe\xf1\xf4\xf3\xf6\xed\xf8\xf7\xf5\xd1\xe6\xf0\x83\x9c\x04\x08\x7f"
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		data := make([]byte, rng.IntN(80))
		for i := range data {
			data[i] = alphabet[rng.IntN(len(alphabet))]
		}
		fr := &Framer{Max: 1 + rng.IntN(24)}
		var reads []int
		for i := 0; i < len(data); {
			i = min(len(data), i+1+rng.IntN(12))
			reads = append(reads, i)
		}
		checkAgainstModel(t, fr, data, reads)
	}
}
