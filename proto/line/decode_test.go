package line

import (
	"fmt"
	"testing"

	"duet/proto"
	"duet/proto/internal/golden"
)

func TestDecode(t *testing.T) {
	const token = "0123456789abcdef0123456789ABCDEF"
	tests := []struct {
		line string
		want string
	}{
		// Messages.
		{"hello", `say text="hello"`},
		{"  hello  there\t", `say text="  hello  there\t"`},
		{"héllo wörld ✓", `say text="héllo wörld ✓"`},
		{"//etc/passwd", `say text="/etc/passwd"`},
		{"//", `say text="/"`},
		{"// x ", `say text="/ x "`},
		{" /who", `say text=" /who"`},

		// Blank lines.
		{"", "none"},
		{"   ", "none"},
		{"\t \t", "none"},

		// Commands.
		{"/login alice", `login name="alice"`},
		{"/LOGIN alice", `login name="alice"`},
		{"/Login\talice\t", `login name="alice"`},
		{"  /login alice", `say text="  /login alice"`},
		{"/login alice s3cret", `login name="alice" password="s3cret"`},
		{"/login alice  two words  ", `login name="alice" password="two words"`},
		{"/login", "error bad_name"},
		{"/login   \t", "error bad_name"},
		{"/connect " + token, `connect token="` + token + `"`},
		{"/CONNECT   " + token + "  ", `connect token="` + token + `"`},
		{"/connect abc def", `connect token="abc def"`},
		{"/connect http://duet.example:8080/#" + token, `connect token="` + token + `"`},
		{"/connect  https://duet.example/#" + token + " ", `connect token="` + token + `"`},
		{"/connect https://duet.example/?x=1#" + token, `connect token="` + token + `"`},
		{"/connect #" + token, `connect token="` + token + `"`},
		{"/connect https://duet.example/#a#" + token, `connect token="` + token + `"`},
		{"/connect https://duet.example/# " + token, `connect token=" ` + token + `"`},
		{"/connect https://duet.example/#", "error bad_token"},
		{"/connect https://duet.example/", `connect token="https://duet.example/"`},
		{"/connect", "error bad_token"},
		{"/connect  ", "error bad_token"},
		{"/leave", "leave"},
		{"/who", "who"},
		{"/WHO", "who"},
		{"/help", "help"},
		{"/quit", "quit"},
		{"/exit", "quit"},
		{"/quit see you", "quit"},
		{"/newtoken", "newtoken"},
		{"/NewToken", "newtoken"},

		// Unknown commands.
		{"/", "error unknown_command"},
		{"/ who", "error unknown_command"},
		{"/whom", "error unknown_command"},
		{"/wh", "error unknown_command"},
		{"/msg bob hi", "error unknown_command"},
		{"/newto\u212Aen", "error unknown_command"},    // Kelvin sign, which Unicode folds to 'k'
		{"/l\u043egin alice", "error unknown_command"}, // Cyrillic o

		// Invalid UTF-8 is checked before anything else.
		{"caf\xe9", "error invalid_utf8"},
		{"/login \xffalice", "error invalid_utf8"},
		{"\xff", "error invalid_utf8"},
		{"/bogus \xc3", "error invalid_utf8"},
		{"\xed\xa0\x80", "error invalid_utf8"}, // an encoded surrogate
		{"caf\xe9\x1b[A", "error invalid_utf8"},

		// Ctrl-D on an empty line, as Next returns it, is a quit.
		{"\x04", "quit"},

		// Then control characters other than tab: the keys a terminal
		// sends that are not text. A partner could only be shown them
		// as U+FFFD.
		{"abd\x1b[Dc", "error control_character"}, // an arrow
		{"\x1b[A", "error control_character"},
		{"\x1bOA", "error control_character"}, // an arrow in application mode
		{"\x1b", "error control_character"},   // Escape
		{"\fabc", "error control_character"},  // Ctrl-L
		{"\f", "error control_character"},
		{"a\x04b", "error control_character"}, // EOT not alone: Next drops those
		{"\x00", "error control_character"},
		{"x\x7f", "error control_character"},
		{"\u0085 next line", "error control_character"}, // a C1 control
		{"\u009b31m", "error control_character"},        // C1 CSI
		{"/who\x0c", "error control_character"},
		{"/login ali\x1bce", "error control_character"},
		{"\u00a0non-breaking \u00a9\u00bf", `say text="\u00a0non-breaking ©¿"`},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.line), func(t *testing.T) {
			if got := golden.FormatCommand(Decode([]byte(tt.line))); got != tt.want {
				t.Errorf("Decode(%q) = %s, want %s", tt.line, got, tt.want)
			}
		})
	}
}

// TestDecodeErrorsAreProtoErrors checks that every error Decode returns
// is one of the values in proto.Errors, so clients can rely on its code.
func TestDecodeErrorsAreProtoErrors(t *testing.T) {
	for _, line := range []string{"/login", "/connect", "/nope", "\xff"} {
		_, err := Decode([]byte(line))
		found := false
		for _, known := range proto.Errors {
			found = found || err == known
		}
		if !found {
			t.Errorf("Decode(%q) returned %v, not in proto.Errors", line, err)
		}
	}
}

// TestDecodeAliases checks that a Command points into the line it came
// from, and that its slices cannot be appended to over the rest of it.
func TestDecodeAliases(t *testing.T) {
	line := []byte("/login alice pw")
	cmd, err := Decode(line)
	if err != nil {
		t.Fatal(err)
	}
	if &cmd.Name[0] != &line[7] {
		t.Error("Name does not alias the line")
	}
	if cap(cmd.Name) != len(cmd.Name) {
		t.Errorf("cap(Name) = %d, want %d", cap(cmd.Name), len(cmd.Name))
	}
	_ = append(cmd.Name, '!')
	if string(line) != "/login alice pw" {
		t.Errorf("appending to Name changed the line: %q", line)
	}
}

func TestIsCommand(t *testing.T) {
	for in, want := range map[string]bool{
		"/login alice": true,
		"/":            true,
		"/frob\xff":    true,
		"//not one":    false,
		"hello":        false,
		"":             false,
		" /x":          false,
		"caf\xe9":      false,
	} {
		if got := IsCommand([]byte(in)); got != want {
			t.Errorf("IsCommand(%q) = %v, want %v", in, got, want)
		}
	}
}
