package jsonproto

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"duet/proto"
)

// decodeSeeds start both decoder fuzz targets: each type, and each way a
// message can fail.
var decodeSeeds = []string{
	`{"type":"login","name":"alice"}`,
	`{"type":"login","name":"alice","password":"pw"}`,
	`{"type":"connect","token":"9f86d081884c7d659a2feaa0c55ad015"}`,
	`{"type":"say","text":"hello \u00e9 \ud83d\ude42 \n"}`,
	`{"type":"say","text":"\ud83d"}`,
	`{"type":"say","text":"a","text":"b"}`,
	`{"type":"leave"}`, `{"type":"who","x":[1,{"y":null}]}`, `{"type":7}`, `{}`, `[]`, `"x"`,
	`{"type":"say","text":"caf` + "\xe9" + `"}`, `{"type":"say","n":1.2.3}`, `{"type":"say"`,
}

// addDecodeSeeds adds decodeSeeds and the messages of decodeTests.
func addDecodeSeeds(f *testing.F) {
	for _, seed := range decodeSeeds {
		f.Add([]byte(seed))
	}
	for _, tt := range decodeTests {
		f.Add([]byte(tt.msg))
	}
}

// FuzzDecode checks that Decode never panics, that a say's text is always
// UTF-8, and that it agrees with encoding/json: a frame encoding/json
// rejects is bad_json here (or invalid_utf8), a frame it accepts is not,
// and a command carries the same strings encoding/json reads.
func FuzzDecode(f *testing.F) {
	addDecodeSeeds(f)
	var d Decoder
	f.Fuzz(func(t *testing.T, msg []byte) {
		orig := slices.Clone(msg)
		cmd, err := d.Decode(msg)
		if !bytes.Equal(msg, orig) {
			t.Fatalf("Decode changed its input")
		}
		if cmd.Op == proto.OpSay && !utf8.Valid(cmd.Text) {
			t.Fatalf("Decode(%q) says text that is not UTF-8: %q", msg, cmd.Text)
		}
		if err != nil && (cmd.Op != proto.OpNone || !slices.Contains(proto.Errors, err)) {
			t.Fatalf("Decode(%q) = %v, %v", msg, cmd.Op, err)
		}
		if !utf8.Valid(msg) {
			if err != proto.ErrInvalidUTF8 {
				t.Fatalf("Decode(%q) = %v, want invalid_utf8", msg, err)
			}
			return
		}
		if !json.Valid(msg) {
			if err != proto.ErrBadJSON {
				t.Fatalf("Decode(%q) = %v, %v; encoding/json says it is not JSON", msg, cmd.Op, err)
			}
			return
		}
		var obj map[string]any
		// null unmarshals into a map without error, and leaves it nil.
		isObject := json.Unmarshal(msg, &obj) == nil && obj != nil
		// Frames shorter than 600 bytes cannot nest deeper than
		// fastjson's limit of 300, so valid JSON must get past parsing.
		if err == proto.ErrBadJSON && isObject && len(msg) < 600 {
			t.Fatalf("Decode(%q) = bad_json; encoding/json reads an object", msg)
		}
		if err == proto.ErrInvalidUTF8 && !bytes.Contains(msg, []byte(`\u`)) && !bytes.Contains(msg, []byte(`\U`)) {
			t.Fatalf("Decode(%q) = invalid_utf8 for UTF-8 without \\u escapes", msg)
		}
		if err != nil {
			return
		}
		if !isObject {
			t.Fatalf("Decode(%q) = %v for something that is not an object", msg, cmd.Op)
		}
		if typ, _ := obj["type"].(string); typ != cmd.Op.String() {
			t.Fatalf("Decode(%q) = %v; encoding/json reads type %q", msg, cmd.Op, typ)
		}
		for _, field := range []struct {
			key string
			got []byte
		}{{"name", cmd.Name}, {"password", cmd.Password}, {"token", cmd.Token}, {"text", cmd.Text}} {
			if len(field.got) == 0 {
				continue
			}
			if want, _ := obj[field.key].(string); string(field.got) != want {
				t.Fatalf("Decode(%q): %s = %q; encoding/json reads %q", msg, field.key, field.got, want)
			}
		}
	})
}

// FuzzEscape checks appendString against encoding/json: the same bytes
// as its Encoder with HTML escaping off, always valid JSON, and for
// UTF-8 input a string that decodes back to the input.
func FuzzEscape(f *testing.F) {
	for _, seed := range []string{
		"", "plain", `"\`, "\b\f\n\r\t\x00\x1f\x7f", "<&>", "é✓🙂", "\u2028\u2029",
		"a\xffb", "\xe2\x82", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\U0010ffff",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := appendString(nil, s)
		if gotBytes := appendString(nil, []byte(s)); !bytes.Equal(got, gotBytes) {
			t.Fatalf("string and []byte forms differ for %q: %s and %s", s, got, gotBytes)
		}

		var want strings.Builder
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(s); err != nil {
			t.Fatal(err)
		}
		if string(got) != strings.TrimSuffix(want.String(), "\n") {
			t.Fatalf("appendString(%q) = %s; encoding/json gives %s", s, got, want.String())
		}

		if !json.Valid(got) {
			t.Fatalf("appendString(%q) = %s, not valid JSON", s, got)
		}
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("appendString(%q) = %s: %v", s, got, err)
		}
		if utf8.ValidString(s) && back != s {
			t.Fatalf("appendString(%q) = %s, which decodes to %q", s, got, back)
		}
		if !utf8.ValidString(back) {
			t.Fatalf("appendString(%q) = %s, which decodes to text that is not UTF-8", s, got)
		}
	})
}
