package jsonproto

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"duet/proto"
	"duet/proto/internal/golden"
)

// decodeTests are messages and what Decode makes of them, written as
// golden.FormatCommand writes it. They also seed the decoder fuzz
// targets.
var decodeTests = []struct {
	msg  string
	want string
}{
	// Every type.
	{`{"type":"login","name":"alice"}`, `login name="alice"`},
	{`{"type":"login","name":"alice","password":"s3cret pass"}`, `login name="alice" password="s3cret pass"`},
	{`{"type":"connect","token":"` + testTokenHex + `"}`, `connect token="` + testTokenHex + `"`},
	{`{"type":"say","text":"hello"}`, `say text="hello"`},
	{`{"type":"leave"}`, "leave"},
	{`{"type":"who"}`, "who"},
	{`{"type":"help"}`, "help"},
	{`{"type":"quit"}`, "quit"},
	{`{"type":"newtoken"}`, "newtoken"},

	// Layout and order do not matter; unknown fields are ignored.
	{" \r\n\t{ \"text\" : \"hi\" , \"type\" : \"say\" } \n", `say text="hi"`},
	{`{"type":"say","text":"hi","id":7,"meta":{"a":[1,2,{"b":null}]},"x":true}`, `say text="hi" id=7`},
	{`{"type":"who","text":42,"name":null}`, "who"},

	// Escapes are undone; text is taken as sent.
	{`{"type":"say","text":"line\none\ttab \"q\" \\ \/ \b\f\r \u00e9\u0000"}`, `say text="line\none\ttab \"q\" \\ / \b\f\r é\x00"`},
	{`{"type":"say","text":"\ud83d\ude42 and \uD83D\uDE42"}`, `say text="🙂 and 🙂"`},
	{`{"type":"say","text":"  spaced  "}`, `say text="  spaced  "`},
	{`{"type":"say","text":"é ✓ 🙂"}`, `say text="é ✓ 🙂"`},
	{`{"t\u0079pe":"say","te\u0078t":"escaped keys"}`, `say text="escaped keys"`},
	{`{"type":"say","text":""}`, `say text=""`},
	{`{"type":"say","text":"\u2028"}`, `say text="\u2028"`},

	// Not JSON, or not an object.
	{``, "error bad_json"},
	{`   `, "error bad_json"},
	{`{`, "error bad_json"},
	{`{"type":"say","text":"hi"`, "error bad_json"},
	{`{"type":"say","text":"hi"}{}`, "error bad_json"},
	{`{"type":"say","text":"hi"} x`, "error bad_json"},
	{`{'type':'say'}`, "error bad_json"},
	{`{type:"say"}`, "error bad_json"},
	{`{"type":"say",}`, "error bad_json"},
	{`{"type":"say","n":NaN}`, "error bad_json"},
	{`{"type":"say","n":1.2.3}`, "error bad_json"},
	{`{"type":"say","n":01}`, "error bad_json"},
	{`{"type":"say","n":+1}`, "error bad_json"},
	{`{"type":"say","text":"a` + "\n" + `b"}`, "error bad_json"},
	{`{"type":"say","text":"a` + "\t" + `b"}`, "error bad_json"},
	// A raw control character in a string, or a key, that also holds
	// an escape (the JSON validator of an earlier decoder missed these).
	{"{\"type\":\"say\",\"text\":\"\x01\\n\"}", "error bad_json"},
	{"{\"type\":\"say\",\"text\":\"a\tb\\nc\"}", "error bad_json"},
	{"{\"type\":\"say\",\"text\":\"\\n\x1f\\n\"}", "error bad_json"},
	{"{\"t\x01\\u0079pe\":\"say\",\"text\":\"hi\"}", "error bad_json"},
	{"{\"type\":\"say\",\"text\":\"\\ud83d\x01\\n\"}", "error bad_json"},
	{`{"type":"say","text":"\q"}`, "error bad_json"},
	{`{"type":"say","text":"\u12"}`, "error bad_json"},
	{`{"type":"say","text":"\u12G4"}`, "error bad_json"},
	{`["type","say"]`, "error bad_json"},
	{`"say"`, "error bad_json"},
	{`42`, "error bad_json"},
	{`null`, "error bad_json"},
	{`{"a":` + strings.Repeat("[", 400) + strings.Repeat("]", 400) + `}`, "error bad_json"},
	{"\v{\"type\":\"who\"}", "error bad_json"},
	{"{\"type\":\"who\"}\f", "error bad_json"},
	{"\ufeff{\"type\":\"who\"}", "error bad_json"},
	{`{"type":"who","n":1.}`, "error bad_json"},
	{`{"type":"who","n":.5}`, "error bad_json"},
	{`{"type":"who","n":-}`, "error bad_json"},
	{`{"type":"who","n":1e+}`, "error bad_json"},
	{`{"type":"who","a":tru}`, "error bad_json"},

	// Numbers and literals by JSON's grammar.
	{`{"type":"who","n":[-0,0.5,1e5,1E+5,-1.25e-3,true,false,null]}`, "who"},

	// Nesting: the top-level object is depth 1, so an empty array may
	// sit 299 arrays deep inside it and a number 298.
	{`{"type":"who","a":` + strings.Repeat("[", 299) + strings.Repeat("]", 299) + `}`, "who"},
	{`{"type":"who","a":` + strings.Repeat("[", 300) + strings.Repeat("]", 300) + `}`, "error bad_json"},
	{`{"type":"who","a":` + strings.Repeat("[", 298) + "1" + strings.Repeat("]", 298) + `}`, "who"},
	{`{"type":"who","a":` + strings.Repeat("[", 299) + "1" + strings.Repeat("]", 299) + `}`, "error bad_json"},
	{`{"type":"who","a":` + strings.Repeat(`{"b":`, 299) + "{}" + strings.Repeat("}", 299) + `}`, "error bad_json"},

	// A type that is missing, not a string, or unknown.
	{`{}`, "error bad_message"},
	{`{"text":"hi"}`, "error bad_message"},
	{`{"type":null}`, "error bad_message"},
	{`{"type":1}`, "error bad_message"},
	{`{"type":["say"]}`, "error bad_message"},
	{`{"type":"shout","text":"hi"}`, "error unknown_type"},
	{`{"type":"Say","text":"hi"}`, "error unknown_type"},
	{`{"type":""}`, "error unknown_type"},
	{`{"type":"message","text":"hi"}`, "error unknown_type"},

	// Required fields.
	{`{"type":"login"}`, "error bad_name"},
	{`{"type":"login","name":7}`, "error bad_message"},
	{`{"type":"login","name":null}`, "error bad_message"},
	{`{"type":"login","name":"alice","password":1}`, "error bad_message"},
	{`{"type":"login","name":""}`, `login name=""`},
	{`{"type":"connect"}`, "error bad_token"},
	{`{"type":"connect","token":12345}`, "error bad_message"},
	{`{"type":"say"}`, "error bad_message"},
	{`{"type":"say","text":null}`, "error bad_message"},
	{`{"type":"say","text":["hi"]}`, "error bad_message"},

	// A field duet reads may appear once.
	{`{"type":"say","text":"a","text":"b"}`, "error bad_message"},
	{`{"type":"say","type":"login","name":"x","text":"hi"}`, "error bad_message"},
	{`{"type":"say","text":"a","te\u0078t":"b"}`, "error bad_message"},
	{`{"type":"say","text":"a","x":1,"x":2}`, `say text="a"`},

	// UTF-8: raw bytes and escaped surrogates.
	{"{\"type\":\"say\",\"text\":\"caf\xe9\"}", "error invalid_utf8"},
	{"{\"type\":\"say\",\"text\":\"ok\",\"x\":\"\xff\"}", "error invalid_utf8"},
	{"\xff{}", "error invalid_utf8"},
	{`{"type":"say","text":"\ud83d"}`, "error invalid_utf8"},
	{`{"type":"say","text":"\ude42"}`, "error invalid_utf8"},
	{`{"type":"say","text":"\ud83dx"}`, "error invalid_utf8"},
	{`{"type":"say","text":"\ud83d\u0041"}`, "error invalid_utf8"},
	{`{"type":"say","text":"\ud83d\ud83d\ude42"}`, "error invalid_utf8"},
	{`{"type":"say","text":"\\ud83d"}`, `say text="\\ud83d"`},
	{`{"type":"say","text":"\\\ud83d\ude42"}`, `say text="\\🙂"`},
	{`{"type":"who","x":"\udc00"}`, "error invalid_utf8"},
	{`"\ud800"`, "error invalid_utf8"},
	{"{\"type\":\"who\",}\xff", "error invalid_utf8"},
	{"{\"type\":\"who\"}\xff", "error invalid_utf8"},
	{"{\"a\":01,\"b\":\"\xc0\x80\"}", "error invalid_utf8"},

	// What is answered first: not UTF-8, then not JSON, then a lone
	// surrogate, then too deep, then not an object, then the members.
	{`{"type":"say","text":"\ud800","n":01}`, "error bad_json"},
	{`{"n":01,"type":"say","text":"\ud800"}`, "error bad_json"},
	{`{"type":"who","a":` + strings.Repeat("[", 400) + `"\ud800"` + strings.Repeat("]", 400) + `}`, "error invalid_utf8"},
	{`{"type":"who","a":` + strings.Repeat("[", 400) + `"\ud800"` + strings.Repeat("]", 399) + `}`, "error bad_json"},
	{`["\ud800"]`, "error invalid_utf8"},
	{`{"type":"say","text":"a","text":"b"`, "error bad_json"},
	{`{"type":"say","text":"a","text":"b","x":` + strings.Repeat("[", 300) + strings.Repeat("]", 300) + `}`, "error bad_json"},
	{`{"type":7,"type":"say"}`, "error bad_message"},
}

func TestDecode(t *testing.T) {
	var d Decoder
	for _, tt := range decodeTests {
		t.Run(fmt.Sprintf("%q", tt.msg), func(t *testing.T) {
			if got := golden.FormatCommand(d.Decode([]byte(tt.msg))); got != tt.want {
				t.Errorf("Decode(%s) = %s, want %s", tt.msg, got, tt.want)
			}
		})
	}
}

// TestDecodeAliases checks where the Command's slices live: a string
// without escapes in the message itself, one with escapes in the
// Decoder's buffer. Either way Decode leaves the message as it was, and
// no slice can be appended to over what follows it.
func TestDecodeAliases(t *testing.T) {
	var d Decoder
	msg := []byte(`{"type":"login","name":"alice","password":"p\u0077"}`)
	orig := string(msg)
	cmd, err := d.Decode(msg)
	if err != nil {
		t.Fatal(err)
	}
	if string(msg) != orig {
		t.Errorf("Decode changed the message to %s", msg)
	}
	if cap(cmd.Name) != len(cmd.Name) || cap(cmd.Password) != len(cmd.Password) {
		t.Errorf("cap(Name), cap(Password) = %d, %d; want %d, %d", cap(cmd.Name), cap(cmd.Password), len(cmd.Name), len(cmd.Password))
	}
	_ = append(cmd.Name, "XXXXXXXXXXXXXXXXXXXX"...)
	if string(msg) != orig {
		t.Errorf("appending to Name changed the message to %s", msg)
	}
	msg[24] = 'X'
	if string(cmd.Name) != "Xlice" {
		t.Errorf("Name = %q after the message changed; want it to alias the message", cmd.Name)
	}
	if string(cmd.Password) != "pw" {
		t.Errorf("Password = %q after the message changed; want it in the Decoder's buffer", cmd.Password)
	}

	// Both in the Decoder's buffer, one after the other.
	cmd, err = d.Decode([]byte(`{"type":"login","name":"\u0061lice","password":"p\u0077"}`))
	if err != nil {
		t.Fatal(err)
	}
	if cap(cmd.Name) != len(cmd.Name) {
		t.Errorf("cap(Name) = %d, want %d", cap(cmd.Name), len(cmd.Name))
	}
	_ = append(cmd.Name, "XXXXXXXXXXXXXXXXXXXX"...)
	if string(cmd.Password) != "pw" {
		t.Errorf("appending to Name changed Password: %q", cmd.Password)
	}
}

// TestDecodeReuse checks that a Decoder gives the same answers however
// often it is reused, and whatever it decoded before.
func TestDecodeReuse(t *testing.T) {
	var d Decoder
	msgs := []string{
		`{"type":"say","text":"one"}`,
		`{"type":"login","name":"bob","a":{"b":{"c":[1,2,3]}}}`,
		`not json`,
		`{"type":"say","text":"t\u0077o"}`,
	}
	want := []string{`say text="one"`, `login name="bob"`, "error bad_json", `say text="two"`}
	for round := range 3 {
		for i, m := range msgs {
			if got := golden.FormatCommand(d.Decode([]byte(m))); got != want[i] {
				t.Errorf("round %d: Decode(%s) = %s, want %s", round, m, got, want[i])
			}
		}
	}
}

// TestDecodeSayTakesBrowserSays checks which messages decodeSay reads
// itself: a say as browsers write it, with or without escapes and
// whitespace after it, and nothing else, which the pass then reads.
func TestDecodeSayTakesBrowserSays(t *testing.T) {
	for _, tt := range []struct {
		msg  string
		text string // what decodeSay reads, if it takes the message
		took bool
		id   uint64
	}{
		{`{"type":"say","text":"hi","id":42}`, "hi", true, 42},
		{`{"type":"say","text":"hi","id":0} `, "hi", true, 0},
		{`{"type":"say","text":"hi","id":042}`, "", false, 0},
		{`{"type":"say","text":"hi","id":1e3}`, "", false, 0},
		{`{"type":"say","text":"hi","id":"4"}`, "", false, 0},
		{`{"type":"say","text":"hi","id":18446744073709551616}`, "", false, 0},
		{`{"type":"say","text":"hi","id":4,"x":1}`, "", false, 0},
		{`{"type":"say","text":"hello bob"}`, "hello bob", true, 0},
		{`{"type":"say","text":""}`, "", true, 0},
		{`{"type":"say","text":"h\u00e9llo\n\"bob\""}` + " \r\n", "héllo\n\"bob\"", true, 0},
		{`{"type":"say","text":"\ud800"}`, "", true, 0},
		{`{"type":"say","text":"hello" }`, "", false, 0},
		{`{"type":"say","text":"hello","x":1}`, "", false, 0},
		{`{"type":"say","text":"hello"} x`, "", false, 0},
		{`{"text":"hello","type":"say"}`, "", false, 0},
		{`{"type": "say", "text": "hello"}`, "", false, 0},
		{"{\"type\":\"say\",\"text\":\"caf\xe9\"}", "", false, 0},
	} {
		var d Decoder
		text, id, err, took := d.decodeSay([]byte(tt.msg))
		if took != tt.took || took && err == nil && (string(text) != tt.text || id != tt.id) {
			t.Errorf("decodeSay(%q) = %q id %d, %v, %v; want %q id %d, took %v", tt.msg, text, id, err, took, tt.text, tt.id, tt.took)
		}
		if took && strings.Contains(tt.msg, `\ud800`) != (err == proto.ErrInvalidUTF8) {
			t.Errorf("decodeSay(%q) = error %v", tt.msg, err)
		}
	}
}

// refusedIDTests are says and seals refused before their members are
// read (not UTF-8, not JSON, a lone surrogate, a member given twice,
// too deep): the refusal names the id when the message has one, given
// once as a member of the top-level object with a count for its value,
// whole, beside a "type" of say or seal given once, all before anything
// that breaks JSON's structure; bytes a string may not hold do not.
var refusedIDTests = []struct {
	msg  string
	want string
}{
	// Not JSON after the id.
	{`{"type":"say","id":5,"text":"hi"`, "error bad_json id=5"},
	{`{"type":"say","id":5,"text":hi}`, "error bad_json id=5"},
	{`{"type":"say","text":"hi","id":5} x`, "error bad_json id=5"},
	{`{"type":"say","text":"hi","id":5,}`, "error bad_json id=5"},
	{`{"type":"say","id":5,"text":"\ud800","n":01}`, "error bad_json id=5"},
	{"{\"type\":\"say\",\"id\":5,\xff}", "error invalid_utf8 id=5"},
	// A member given twice.
	{`{"type":"say","text":"a","text":"b","id":6}`, "error bad_message id=6"},
	{`{"type":"seal","id":6,"data":"AQUB","data":"AQUB"}`, "error bad_message id=6"},
	// A lone surrogate, the short way and the pass's.
	{`{"type":"say","text":"\ud800","id":7}`, "error invalid_utf8 id=7"},
	{`{"type":"say","id":7,"text":"\ud800"}`, "error invalid_utf8 id=7"},
	{`{"t\u0079pe":"s\u0061y","text":"\udc00","i\u0064":7}`, "error invalid_utf8 id=7"},
	// Bytes a string may not hold, before or after the id.
	{"{\"type\":\"say\",\"text\":\"caf\xe9\",\"id\":8}", "error invalid_utf8 id=8"},
	{"{\"type\":\"say\",\"id\":8,\"text\":\"caf\xe9\"}", "error invalid_utf8 id=8"},
	{"{\"type\":\"seal\",\"data\":\"\xff\",\"id\":8}", "error invalid_utf8 id=8"},
	{"{\"type\":\"say\",\"text\":\"a\x01b\",\"id\":9}", "error bad_json id=9"},
	{`{"type":"say","text":"\q","id":9}`, "error bad_json id=9"},
	{`{"type":"say","text":"\u12","id":9}`, "error bad_json id=9"},
	{"{\"type\":\"say\",\"x\":[\"\xff\",{\"a\":\"\x01\"}],\"text\":\"hi\",\"id\":9}", "error invalid_utf8 id=9"},
	// Too deep.
	{`{"type":"say","text":"hi","id":10,"x":` + strings.Repeat("[", 300) + strings.Repeat("]", 300) + `}`, "error bad_json id=10"},

	// The id is the broken part: cut short, not whole, or not a count.
	{`{"type":"say","text":"\ud800","id":5`, "error bad_json"},
	{`{"type":"say","text":"\ud800","id":5 `, "error bad_json"},
	{`{"type":"say","text":"\ud800","id":5x}`, "error bad_json"},
	{`{"type":"say","text":"\ud800","id":05}`, "error bad_json"},
	{`{"type":"say","text":"\ud800","id":5.0}`, "error invalid_utf8"},
	{`{"type":"say","text":"\ud800","id":"5"}`, "error invalid_utf8"},
	{"{\"type\":\"say\",\"text\":\"hi\",\"id\":\xff5}", "error invalid_utf8"},
	{"{\"type\":\"say\",\"text\":\"hi\",\"i\xffd\":5}", "error invalid_utf8"},
	// Given twice, with the same value or not.
	{`{"type":"say","text":"\ud800","id":5,"id":6}`, "error invalid_utf8"},
	{`{"type":"say","text":"\ud800","id":5,"id":5}`, "error invalid_utf8"},
	{`{"type":"say","id":5,"text":"a","text":"b","i\u0064":5}`, "error bad_message"},
	// After what breaks the structure, it cannot be told from text.
	{`{"type":"say","text":"a"b,"id":5}`, "error bad_json"},
	{`{"type":"say","text":"a "b" c","id":5}`, "error bad_json"},
	{`{"type":"say","text":"hi,"id":5}`, "error bad_json"},
	{`{"type":"say","text":"hi"]"id":5}`, "error bad_json"},
	// Not a member of the top-level object.
	{`{"type":"say","text":"\ud800","x":{"id":5}}`, "error invalid_utf8"},
	{`{"type":"say","text":"\ud800 \"id\":5"}`, "error invalid_utf8"},
	{`[{"type":"say","text":"\ud800","id":5}]`, "error invalid_utf8"},
	{`{"type":"say","text":"hi"}{"type":"say","text":"hi","id":5}`, "error bad_json"},
	// Not a say or seal, or not known to be one.
	{`{"type":"login","name":"\ud800","id":5}`, "error invalid_utf8"},
	{`{"type":"who","x":1,"x":2,"name":"a","name":"b","id":5}`, "error bad_message"},
	{`{"text":"\ud800","id":5}`, "error invalid_utf8"},
	{`{"id":5,"text":"a"b,"type":"say"}`, "error bad_json"},
	{`{"type":"say","type":"say","text":"hi","id":5}`, "error bad_message"},
	{`{"type":"say","type":"seal","text":"hi","id":5}`, "error bad_message"},
	{"{\"type\":\"say\xff\",\"text\":\"hi\",\"id\":5}", "error invalid_utf8"},
	{`{"type":"s\u0061y\q","text":"hi","id":5}`, "error bad_json"},
	{`{"type":"\u12","text":"hi","id":5}`, "error bad_json"},
	{`{"type":"say"x,"text":"hi","id":5}`, "error bad_json"},
}

// TestDecodeRefusalNamesID checks which refusals name a say's or seal's
// id.
func TestDecodeRefusalNamesID(t *testing.T) {
	var d Decoder
	for _, tt := range refusedIDTests {
		if got := golden.FormatCommand(d.Decode([]byte(tt.msg))); got != tt.want {
			t.Errorf("Decode(%q) = %s, want %s", tt.msg, got, tt.want)
		}
	}
}

// TestIsBase64URL: a seal's data is what an encoder of base64url without
// padding writes, exactly what base64.RawURLEncoding.Strict decodes:
// every string of up to three characters of the alphabet and '=', '+',
// and longer ones made of them, are judged as it judges them. "A",
// "AAAAA" (a character over, no whole byte) and "AB" (bits past the
// byte set) were taken before.
func TestIsBase64URL(t *testing.T) {
	strict := base64.RawURLEncoding.Strict()
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+"
	check := func(s string) {
		_, err := strict.DecodeString(s)
		if want := s != "" && err == nil; IsBase64URL([]byte(s)) != want {
			t.Fatalf("IsBase64URL(%q) = %v, want %v", s, !want, want)
		}
	}
	var b []byte
	var each func(n int)
	each = func(n int) {
		check(string(b))
		if n == 0 {
			return
		}
		for i := range len(alphabet) {
			b = append(b, alphabet[i])
			each(n - 1)
			b = b[:len(b)-1]
		}
	}
	each(3)
	for _, s := range []string{"A", "AAAAA", "AAAAAAAAA", "AB", "AAB", "AAAA==", "AA+/", "AQUB", "AQ", "QQ", "AQQAAAAAAAAAAfo_eEKPDsp2p1I9GsiZCiqINQ"} {
		check(s)
	}
}
