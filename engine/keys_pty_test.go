//go:build linux

package engine_test

import (
	"bytes"
	"regexp"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"duet/engine/enginetest"
)

// typedKeys are lines typed with the keys a terminal user presses while
// writing, and what the partner must read of each: what the user meant,
// whether the terminal acts on the key (^?, its erase; Ctrl-U; Ctrl-W; a
// first Ctrl-D, which sends the line so far) or the server does.
var typedKeys = []struct{ name, keys, want string }{
	{"Backspace as ^H, which the terminal leaves", "abx\bc", "abc"},
	{"Backspace as ^?, the terminal's erase", "abx\x7fc", "abc"},
	{"^H after a letter of two bytes", "фы\b!", "ф!"},
	{"Ctrl-U", "junk\x15abc", "abc"},
	{"Ctrl-W", "abc junk\x17def", "abc def"},
	{"Ctrl-D mid-line", "abc\x04def", "abcdef"},
	{"Tab", "a\tb", "a\tb"},
}

// refusedKeys are lines that hold keys that are not text: an arrow, an
// arrow in the middle, Escape, Ctrl-L. The server refuses each, and the
// session goes on.
var refusedKeys = []string{"\x1b[Ahello", "abd\x1b[Dc", "\x1b", "\x0chello"}

// typeKeysIn starts a daemon, bob (a line client) and prog in a
// terminal, whose user logs in as alice and pairs with bob, and types
// typedKeys and refusedKeys there (typeKeys). It returns the daemon, bob
// and alice's program, for the keys that prog handles its own way.
func typeKeysIn(t *testing.T, prog string) (*enginetest.Daemon, *enginetest.LineClient, *ptyProgram) {
	t.Helper()
	d := enginetest.Start(t, nil)
	bob := d.DialLine(t).Login("bob")
	alice := dialInPTY(t, d, nil, prog)
	alice.pairWith("alice", bob)
	typeKeys(t, alice, "alice", bob)
	return d, bob, alice
}

// typeKeys types each of typedKeys and refusedKeys as a line in p, whose
// user is paired with peer as name, and checks what peer reads.
func typeKeys(t *testing.T, p *ptyProgram, name string, peer *enginetest.LineClient) {
	t.Helper()
	for _, k := range typedKeys {
		p.typeLine(k.keys)
		if got := peer.Line(); got != "<"+name+"> "+k.want {
			t.Errorf("%s: %q reached the partner as %q, want %q", k.name, k.keys, got, "<"+name+"> "+k.want)
		}
	}
	for _, keys := range refusedKeys {
		p.typeLine(keys)
		p.expect(regexp.QuoteMeta("! control_character: the line holds a key that is not text"))
		p.typeLine("still here")
		if got := peer.Line(); got != "<"+name+"> still here" {
			t.Errorf("after %q, the partner read %q", keys, got)
		}
	}
}

// TestTelnetKeys drives Debian's telnet (inetutils) in a terminal with
// every key a user may press while writing a line, and Ctrl-D on an
// empty line, which telnet sends as an EOT byte: it leaves, as /quit
// does, before and after login, and in BINARY.
func TestTelnetKeys(t *testing.T) {
	telnet := enginetest.ToolPath(t, "telnet")
	d, bob, tn := typeKeysIn(t, telnet)
	// A second Ctrl-D after part of a line: telnet sends the part, then
	// an EOT, which the terminal does not show.
	tn.typeLine("abc\x04\x04def")
	if got := bob.Line(); got != "<alice> abcdef" {
		t.Errorf("Ctrl-D twice mid-line reached the partner as %q", got)
	}
	tn.type_("\x04")
	tn.leaves("alice", bob)

	// A terminal whose erase is ^H leaves ^? to the server; and Ctrl-D
	// once telnet sends in BINARY (after Ctrl-C).
	carol := dialInPTY(t, d, func(tio *unix.Termios) { tio.Cc[unix.VERASE] = '\b' }, telnet)
	carol.type_("\x03")
	carol.pairWith("carol", bob)
	for _, keys := range []string{"abx\x7fc", "abx\bc"} {
		carol.typeLine(keys)
		if got := bob.Line(); got != "<carol> abc" {
			t.Errorf("%q reached the partner as %q", keys, got)
		}
	}
	carol.type_("\x04")
	carol.leaves("carol", bob)

	// Ctrl-D before logging in.
	dave := dialInPTY(t, d, nil, telnet)
	dave.type_("\x04")
	dave.expect(`\* bye`)
	dave.wait()
}

// TestNetcatKeys drives Debian's nc (OpenBSD netcat) in a terminal with
// the same keys as TestTelnetKeys. Ctrl-D on an empty line sends nothing:
// nc stops reading the keyboard, and without -N keeps the connection, so
// the session goes on, its user still reading; with -N it ends the
// connection, and the session with it.
func TestNetcatKeys(t *testing.T) {
	nc := enginetest.ToolPath(t, "nc")
	d, bob, alice := typeKeysIn(t, nc)
	alice.type_("\x04")
	bob.Send("are you there?")
	alice.expect(regexp.QuoteMeta("<bob> are you there?"))
	if l, err := bob.TryLine(200 * time.Millisecond); err == nil {
		t.Fatalf("after nc's Ctrl-D bob read %q", l)
	}
	bob.Send("/leave")
	bob.Expect(`^\* you left alice$`)

	carol := dialInPTY(t, d, nil, nc, "-N")
	carol.pairWith("carol", bob)
	carol.typeLine("bye")
	bob.Expect(`^<carol> bye$`)
	carol.type_("\x04")
	bob.Expect(`^\* carol disconnected; you are free to be joined again$`)
	carol.wait()
}

// TestTelnetEscapeCommands drives Debian's telnet through its escape
// (Ctrl-]) to send each telnet command its manual offers, then types a
// line, which must reach the partner whole. `send synch` sends IAC DM
// as TCP urgent data, which the kernel would take out of the stream (the
// IAC) and leave the DM in the next line, refused as not UTF-8: the
// listener keeps urgent data in line (SO_OOBINLINE), where the framer
// reads the command as any other.
func TestTelnetEscapeCommands(t *testing.T) {
	telnet := enginetest.ToolPath(t, "telnet")
	d := enginetest.Start(t, nil)
	bob := d.DialLine(t).Login("bob")
	tn := dialInPTY(t, d, nil, telnet)
	tn.pairWith("alice", bob)
	for _, cmd := range []string{"synch", "ayt", "brk", "ao", "ip", "abort", "eof", "susp", "ec", "el", "nop", "ga", "synch"} {
		tn.type_("\x1d")
		tn.expect(regexp.QuoteMeta("telnet> "))
		tn.typeLine("send " + cmd)
		if cmd == "ayt" {
			tn.expect(regexp.QuoteMeta("* yes, the server is here"))
		}
		tn.typeLine("after " + cmd)
		if got := bob.Line(); got != "<alice> after "+cmd {
			t.Errorf("after telnet's `send %s` the partner read %q", cmd, got)
		}
	}
}

// TestNetcatLatin1Bytes types, in nc in a terminal, text in a single-byte
// encoding whose 255 comes before a byte telnet reads as SB or SE
// (Latin-1 "ÿú", cp1251 "яр"). No telnet client sends either before it
// has offered an option, so the 255 is text, even after a command
// netcat sent the same way: the line is refused as not UTF-8, the next line
// reaches the partner, and the netcat user is sent no telnet command.
// (Taken for a subnegotiation, "ÿú" swallowed every line after it,
// unanswered, up to limits.max_line bytes.)
func TestNetcatLatin1Bytes(t *testing.T) {
	nc := enginetest.ToolPath(t, "nc")
	d := enginetest.Start(t, nil)
	bob := d.DialLine(t).Login("bob")
	alice := dialInPTY(t, d, nil, nc)
	alice.pairWith("alice", bob)
	// Each text is refused, and the line after it reaches bob.
	refused := func(texts ...string) {
		t.Helper()
		for _, text := range texts {
			alice.typeLine(text)
			alice.expect(regexp.QuoteMeta("! invalid_utf8: "))
			alice.typeLine("ok")
			if got := bob.Line(); got != "<alice> ok" {
				t.Fatalf("after %q the partner read %q", text, got)
			}
		}
	}
	refused("\xff\xfa hi", "\xff\xf0\xea\xee")
	alice.mu.Lock()
	if bytes.Contains(alice.out, []byte("\xff\xfd")) {
		t.Fatalf("the netcat user was sent a telnet command: %q", alice.out)
	}
	alice.mu.Unlock()
	// cp1251 "ясно" is IAC NOP, a telnet command (PROTOCOL.md): after
	// it, "яъ" is still text, as the client offered no option.
	refused("\xff\xf1\xed\xee", "\xff\xfa hi")
}

// TestTelnetModeCharacter: Debian telnet's `mode character` asks the
// server to echo and to suppress go-ahead; both are refused, telnet
// stays in line mode, and its user is told why, once. The next line
// typed reaches the partner. Before, the refusal said nothing, and the
// user was left to wonder why the mode did not change.
func TestTelnetModeCharacter(t *testing.T) {
	_, bob, tn := telnetWithBob(t, false)
	escape := func(cmd string) {
		t.Helper()
		tn.type_("\x1d")
		tn.expect(regexp.QuoteMeta("telnet> "))
		tn.typeLine(cmd)
	}
	for range 2 {
		escape("mode character")
		// telnet goes a character at a time until the refusals come
		// back, sending Enter as CR NUL, which ends no line: a line
		// typed within that round trip would wait. A person types
		// slower than that; the test waits for an answer that comes
		// after the refusals, as telnet reads them in turn.
		escape("send ayt")
		tn.expect(regexp.QuoteMeta("* yes, the server is here"))
		tn.typeLine("still a line")
		if got := bob.Line(); got != "<alice> still a line" {
			t.Fatalf("after `mode character` the partner read %q", got)
		}
	}
	tn.mu.Lock()
	defer tn.mu.Unlock()
	if n := bytes.Count(tn.out, []byte("* duet reads a line at a time: type a line and press Enter; telnet stays in line mode")); n != 1 {
		t.Fatalf("told %d times why the mode stays: %q", n, tn.out)
	}
}
