//go:build linux

package engine_test

import (
	"regexp"
	"strings"
	"testing"

	"duet/engine/enginetest"
)

// typedKeys are lines typed with the keys a terminal user presses while
// writing, and what the partner must read of each: what the user meant,
// whether the terminal acts on the key (^?, its erase; Ctrl-U; Ctrl-W; a
// first Ctrl-D, which sends the line so far) or the server does.
var typedKeys = []struct{ name, keys, want string }{
	{"Backspace as ^?, the terminal's erase", "abx\x7fc", "abc"},
	{"Ctrl-U", "junk\x15abc", "abc"},
	{"Ctrl-W", "abc junk\x17def", "abc def"},
	{"Ctrl-D mid-line", "abc\x04def", "abcdef"},
	{"Tab", "a\tb", "a\tb"},
}

// refusedKeys are lines that hold keys that are not text: an arrow, an
// arrow in the middle, Escape, Ctrl-L. The server refuses each, and the
// session goes on.
var refusedKeys = []string{"\x1b[Ahello", "abd\x1b[Dc", "\x1b", "\x0chello"}

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
// every key a user may press while writing a line.
func TestTelnetKeys(t *testing.T) {
	telnet := requireTelnet(t)
	d := enginetest.Start(t, nil)
	bob := d.DialLine(t).Login("bob")
	host, port, _ := strings.Cut(d.TCP, ":")

	tn := startInPTY(t, telnet, host, port)
	tn.expect(`\* welcome to duet`)
	tn.pairWith("alice", bob)
	typeKeys(t, tn, "alice", bob)
}

// TestNetcatKeys drives Debian's nc (OpenBSD netcat) in a terminal with
// the same keys as TestTelnetKeys.
func TestNetcatKeys(t *testing.T) {
	nc := netcatPath(t)
	d := enginetest.Start(t, nil)
	bob := d.DialLine(t).Login("bob")
	host, port, _ := strings.Cut(d.TCP, ":")

	alice := startInPTY(t, nc, host, port)
	alice.expect(`\* welcome to duet`)
	alice.pairWith("alice", bob)
	typeKeys(t, alice, "alice", bob)
}
