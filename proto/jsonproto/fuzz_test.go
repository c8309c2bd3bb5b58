package jsonproto

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
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
	`{"type":"resume","key":"k7m2qv0c9x4t8ghj3nwp5rbe6d","last":42}`, `{"type":"resume","key":"k"}`,
	`{"type":"ack","last":18446744073709551615}`, `{"type":"ack","last":18446744073709551616}`,
	`{"type":"ack","last":1.0}`, `{"type":"ack","last":-1}`, `{"type":"ack","last":"3"}`, `{"type":"ack"}`,
	`{"type":"say","text":"caf` + "\xe9" + `"}`, `{"type":"say","n":1.2.3}`, `{"type":"say"`,
	`{"type":"seal","data":"AQQAAAAAAAAAAfo_eEKPDsp2p1I9GsiZCiqINQ"}`, `{"type":"seal","data":"AQ=="}`,
	`{"type":"seal","data":"\u0041Q"}`, `{"type":"seal","data":""}`, `{"type":"seal","text":"AQUB"}`,
}

// addDecodeSeeds adds decodeSeeds and the messages of decodeTests and
// refusedIDTests.
func addDecodeSeeds(f *testing.F) {
	for _, seed := range decodeSeeds {
		f.Add([]byte(seed))
	}
	for _, tt := range decodeTests {
		f.Add([]byte(tt.msg))
	}
	for _, tt := range refusedIDTests {
		f.Add([]byte(tt.msg))
	}
}

// lexMember is a member of a message's top-level object as lexMembers
// reads it.
type lexMember struct {
	name  string // the name as encoding/json reads it ("" if it cannot)
	value []byte // the value's first token, as written
	whole bool   // the value is that one token, and ',' or '}' follows it
}

// lexMembers lists the members of msg's top-level object as a lexer
// sees them, whether or not msg is JSON: it splits msg into tokens
// (punctuation; a string, from a quote to the next quote that no
// backslash escapes; a run of anything else), with JSON's four
// whitespace bytes between them, counts the depth of brackets, and
// takes for a member a string at depth 1 just after '{' or ',' and
// followed by ':'. It shares no code with Decoder and knows nothing of
// UTF-8, escapes or numbers, nor of where msg stops being JSON: it sees
// every member Decoder can read, and maybe more.
func lexMembers(msg []byte) []lexMember {
	const punct = "{}[],:"
	var toks [][]byte
	for i := 0; i < len(msg); {
		c := msg[i]
		j := i + 1
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i = j
			continue
		case strings.IndexByte(punct, c) >= 0:
		case c == '"':
			for j < len(msg) && msg[j] != '"' {
				if msg[j] == '\\' {
					j++
				}
				j++
			}
			// A string not closed is a token to the end.
			j = min(j+1, len(msg))
		default:
			for j < len(msg) && strings.IndexByte(punct+" \t\n\r\"", msg[j]) < 0 {
				j++
			}
		}
		toks = append(toks, msg[i:j])
		i = j
	}
	is := func(k int, s string) bool { return k < len(toks) && string(toks[k]) == s }
	if !is(0, "{") {
		return nil
	}
	var members []lexMember
	depth := 1
	for k := 1; k < len(toks) && depth > 0; k++ {
		switch t := toks[k]; {
		case t[0] == '{' || t[0] == '[':
			depth++
		case t[0] == '}' || t[0] == ']':
			depth--
		case depth == 1 && t[0] == '"' && (is(k-1, "{") || is(k-1, ",")) && is(k+1, ":"):
			m := lexMember{}
			if json.Unmarshal(t, &m.name) != nil {
				m.name = ""
			}
			if k+2 < len(toks) {
				m.value = toks[k+2]
				m.whole = strings.IndexByte(punct, m.value[0]) < 0 && (is(k+3, ",") || is(k+3, "}"))
			}
			members = append(members, m)
		}
	}
	return members
}

// checkNamed checks what Decode's Command holds with an error: nothing,
// or a say's or seal's Op and ID, where the message has that type and
// id as members of its top-level object: the first "type" whole and a
// string that encoding/json reads as the type, the first "id" whole and
// written as the id is.
func checkNamed(t *testing.T, msg []byte, cmd proto.Command, err *proto.Error) {
	t.Helper()
	if err == nil || cmd.Op == proto.OpNone && cmd.ID == 0 {
		return
	}
	if cmd.Op != proto.OpSay && cmd.Op != proto.OpSeal || cmd.Text != nil {
		t.Fatalf("Decode(%q) = %v %q id %d, %v", msg, cmd.Op, cmd.Text, cmd.ID, err)
	}
	members := lexMembers(msg)
	first := func(name string) (lexMember, bool) {
		for _, m := range members {
			if m.name == name {
				return m, true
			}
		}
		return lexMember{}, false
	}
	typ, ok := first("type")
	var typName string
	if !ok || !typ.whole || typ.value[0] != '"' || json.Unmarshal(typ.value, &typName) != nil || typName != cmd.Op.String() {
		t.Fatalf("Decode(%q) = %v id %d, %v; the message's type is %q", msg, cmd.Op, cmd.ID, err, typ.value)
	}
	if cmd.ID == 0 {
		return
	}
	id, ok := first("id")
	if !ok || !id.whole || string(id.value) != strconv.FormatUint(cmd.ID, 10) {
		t.Fatalf("Decode(%q) = %v id %d, %v; the message's id is %q", msg, cmd.Op, cmd.ID, err, id.value)
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
		if cmd.Op == proto.OpSeal && err == nil && (len(cmd.Text) == 0 || strings.Trim(string(cmd.Text), referenceBase64URL) != "") {
			t.Fatalf("Decode(%q) seals data that is not base64url: %q", msg, cmd.Text)
		}
		// An error comes with no command, or a say's or seal's Op and
		// ID alone, which the message has.
		if err != nil && !slices.Contains(proto.Errors, err) {
			t.Fatalf("Decode(%q) = %v, %v", msg, cmd.Op, err)
		}
		checkNamed(t, msg, cmd, err)
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
		// Numbers are kept as text: 1e700 is JSON, but not a float64,
		// and Unmarshal would refuse the whole object for it. null
		// decodes into a map without error, and leaves it nil.
		dec := json.NewDecoder(bytes.NewReader(msg))
		dec.UseNumber()
		isObject := dec.Decode(&obj) == nil && obj != nil
		// Frames shorter than 600 bytes cannot nest deeper than
		// maxDepth (300), so valid JSON must get past parsing.
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
		textKey := "text"
		if cmd.Op == proto.OpSeal {
			textKey = "data" // a seal carries its data in Text
		}
		for _, field := range []struct {
			key string
			got []byte
		}{{"name", cmd.Name}, {"password", cmd.Password}, {"token", cmd.Token}, {textKey, cmd.Text}, {"key", cmd.Key}} {
			if len(field.got) == 0 {
				continue
			}
			if want, _ := obj[field.key].(string); string(field.got) != want {
				t.Fatalf("Decode(%q): %s = %q; encoding/json reads %q", msg, field.key, field.got, want)
			}
		}
		// A count is what encoding/json reads as a whole number.
		if cmd.Op == proto.OpAck || cmd.Op == proto.OpResume && obj["last"] != nil {
			n, isNumber := obj["last"].(json.Number)
			want, err := strconv.ParseUint(string(n), 10, 64)
			if !isNumber || err != nil || want != cmd.Last {
				t.Fatalf("Decode(%q): last = %d; encoding/json reads %v", msg, cmd.Last, obj["last"])
			}
		}
	})
}

// FuzzDecodeMatchesReference holds Decode to the answers of the
// decoder it replaced (referenceDecoder, built on fastjson): the same
// error, or the same command with the same bytes, for every input. It
// also checks what Decode promises beyond that: msg is left as it was,
// and no field can be appended to over what follows it.
func FuzzDecodeMatchesReference(f *testing.F) {
	deep := func(n int, inner string) string {
		return strings.Repeat("[", n) + inner + strings.Repeat("]", n)
	}
	addDecodeSeeds(f)
	for _, seed := range []string{
		// Lone surrogates before and after what is not JSON, and
		// surrogates in member names.
		`{"type":"say","text":"\ud800"`, `{"type":"say","text":"\ud800","n":01}`,
		`{"n":01,"type":"say","text":"\udc00"}`, `{"type":"say","text":"\ud800"} x`,
		`{"type":"say","text":"\ud800\ud800\udc00"}`, `{"type":"say","text":"\ud800\u00"}`,
		`{"type":"say","text":"\udbff\udfff\ud800\udc00"}`, `"\ud800"`, `["\udc00"]`,
		`{"t\ud800ype":"say"}`, `{"\ud83d\ude42":1,"type":"who"}`,
		// Escapes next to raw control characters.
		"{\"type\":\"say\",\"text\":\"\\n\x01\"}", "{\"type\":\"say\",\"text\":\"\\ud800\x01\"}",
		"{\"t\\u0079pe\x1f\":\"say\"}", "{\"type\":\"say\",\"text\":\"\x7f\"}",
		// Nesting around maxDepth: an empty array may sit at depth 300,
		// a number at 299; a lone surrogate too deep is still invalid_utf8.
		`{"type":"who","a":` + deep(298, "") + `}`, `{"type":"who","a":` + deep(299, "") + `}`,
		`{"type":"who","a":` + deep(300, "") + `}`, `{"type":"who","a":` + deep(301, "") + `}`,
		`{"type":"who","a":` + deep(298, "1") + `}`, `{"type":"who","a":` + deep(299, "1") + `}`,
		`{"type":"who","a":` + deep(299, "{}") + `}`, `{"type":"who","a":` + deep(299, `{"b":1}`) + `}`,
		deep(299, ""), deep(300, ""), deep(301, ""),
		`{"type":"who","a":` + deep(400, `"\ud800"`) + `}`, `{"type":"who","a":` + deep(400, `"x"`) + `]}`,
		`{"type":"who","a":` + strings.Repeat(`{"b":`, 400) + "1" + strings.Repeat("}", 400) + `}`,
		`{"type":"who","a":[{"b":[1,{"c":[]}]},{}]}`, `{"type":"who","a":[1,}`, `{"type":"who","a":{"b":]}`,
		// Numbers.
		`{"type":"who","n":-0}`, `{"type":"who","n":1e5}`, `{"type":"who","n":1E+5}`,
		`{"type":"who","n":-1.5e-3}`, `{"type":"who","n":0.0e-0}`, `{"type":"who","n":01}`,
		`{"type":"who","n":1.}`, `{"type":"who","n":.5}`, `{"type":"who","n":-}`,
		`{"type":"who","n":-01}`, `{"type":"who","n":1e}`, `{"type":"who","n":1e+}`,
		`{"type":"who","n":1.e5}`, `{"type":"who","n":+1}`, `{"type":"who","n":0x1}`, `{"type":"who","n":Infinity}`,
		// Literals.
		`{"type":"who","a":true,"b":false,"c":null}`, `{"type":"who","a":tru}`, `{"type":"who","a":nul}`,
		`{"type":"who","a":True}`, `{"type":"who","a":NaN}`,
		// Duplicates, whatever their values, and escaped names.
		`{"type":"say","text":1,"text":"b"}`, `{"type":"who","name":null,"name":null}`,
		`{"type":"say","te\u0078t":"a","text":"b"}`, `{"t\u0079pe":"say","text":"hi"}`,
		`{"type":"say","text":"a","text":"b",}`, `{"type":"say","type":"say","text":"a"} x`,
		`{"x":{"type":"say","text":"nested"},"type":"who"}`,
		// Resume and ack: counts in every form JSON has for a number.
		`{"type":"ack","last":0}`, `{"type":"ack","last":-0}`, `{"type":"ack","last":1e3}`,
		`{"type":"ack","last":99999999999999999999}`, `{"type":"ack","last":null}`, `{"type":"ack","last":[1]}`,
		`{"type":"ack","last":7,"last":7}`, `{"type":"resume","key":null}`, `{"type":"resume","last":1}`,
		`{"type":"resume","ke\u0079":"abc","last": 12 }`, `{"type":"resume","key":"abc","last":true}`,
		// Types and fields.
		`{"type":["say"]}`, `{"type":{"say":1}}`, `{"type":"s\u0061y","text":"\u0068i"}`,
		`{"type":"login","name":"a","password":null}`, `{"type":"login","password":"pw"}`,
		`{"type":"connect","token":7}`, `{"type":"connect"}`, `{"type":"say","text":"a\/b\"\\"}`,
		// Whitespace, a byte-order mark, what follows the object.
		" \t\r\n{ \"type\" : \"who\" } \n", "\v{\"type\":\"who\"}", "{\"type\":\"who\"}\f",
		"{\"type\":\u00a0\"who\"}", "\ufeff{\"type\":\"who\"}", `{"type":"who"}{}`,
		`{"type":"who"},`, `{"type":"who"}]`, "", " ", "{", "}", `{"type"}`, `{"type":}`, `{"type" "who"}`,
		// A byte that is not UTF-8 before, in and after what is not JSON.
		"\xff{\"type\":\"who\"}", "{\"type\":\"who\",\xff}", "{\"type\":\"who\"\xff",
		"{\"type\":\"who\",}\xff", "{\"type\":\"say\",\"text\":\"\xed\xa0\x80\"}", "{\"a\":01,\"b\":\"\xc0\x80\"}",
	} {
		f.Add([]byte(seed))
	}
	var d Decoder
	var ref referenceDecoder
	f.Fuzz(func(t *testing.T, msg []byte) {
		orig := slices.Clone(msg)
		want, wantErr := ref.Decode(slices.Clone(msg))
		got, gotErr := d.Decode(msg)
		if !bytes.Equal(msg, orig) {
			t.Fatalf("Decode changed its input")
		}
		// The reference names no say or seal it cannot parse: for those,
		// Decode's is checked against the message itself.
		if gotErr != nil && gotErr == wantErr && !ref.parses(msg) {
			checkNamed(t, msg, got, gotErr)
			want.Op, want.ID = got.Op, got.ID
		}
		if gotErr != wantErr || got.Op != want.Op || got.Last != want.Last || got.ID != want.ID {
			t.Fatalf("Decode(%q) = %v last %d id %d, %v; the reference decoder says %v last %d id %d, %v", msg, got.Op, got.Last, got.ID, gotErr, want.Op, want.Last, want.ID, wantErr)
		}
		for _, field := range []struct {
			name      string
			got, want []byte
		}{{"name", got.Name, want.Name}, {"password", got.Password, want.Password}, {"token", got.Token, want.Token}, {"text", got.Text, want.Text}, {"key", got.Key, want.Key}} {
			if !bytes.Equal(field.got, field.want) {
				t.Fatalf("Decode(%q): %s = %q; the reference decoder reads %q", msg, field.name, field.got, field.want)
			}
			if cap(field.got) != len(field.got) {
				t.Fatalf("Decode(%q): %s has capacity %d for length %d", msg, field.name, cap(field.got), len(field.got))
			}
		}
	})
}

// FuzzDecodeSay holds decodeSay, Decode's short way for a say written
// as browsers write it, to the pass it shortcuts: for every message that
// starts with sayHead, Decode answers as decode does, with the same error
// or the same text, whether or not the short way took the message.
func FuzzDecodeSay(f *testing.F) {
	for _, seed := range []string{
		`hello"}`, `h\u00e9llo \ud83d\ude42 \n"}`, `\ud800"}`, `\udc00\ud800"}`, `a\"b\\"}`,
		`x"} `, "x\"}\r\n\t", `x" }`, `x"}x`, `x"},`, `x","n":1}`, `x","text":"y"}`,
		"caf\xe9\"}", "\x01\"}", "\x7f\"}", `"}`, ``, `"`, `x"`, `\u00"}`,
		`x","id":7}`, `x","id":0}`, `x","id":07}`, `x","id":18446744073709551616}`, `x","id":1.5}`,
		`x","id":"7"}`, `x","id":7,"id":8}`, `x","id":}`, `x","id":7 }`,
		`\ud800","id":7}`, `\ud800","id":7,"id":7}`, `\ud800","id":7`, `\ud800","id":07}`,
		"caf\xe9\",\"id\":7}", "\x01\",\"id\":7}", `\q","id":7}`, `a"b","id":7}`,
		`x","id":7,"text":"y"}`, `x","id":7} x`, `x","id":7,}`, `x","type":"seal","id":7}`,
	} {
		f.Add([]byte(seed))
	}
	var d, pass Decoder
	f.Fuzz(func(t *testing.T, rest []byte) {
		msg := append([]byte(sayHead), rest...)
		got, gotErr := d.Decode(msg)
		want, wantErr := pass.decode(msg)
		if gotErr != wantErr || got.Op != want.Op || !bytes.Equal(got.Text, want.Text) || got.ID != want.ID {
			t.Fatalf("Decode(%q) = %v %q id %d, %v; the pass gives %v %q id %d, %v", msg, got.Op, got.Text, got.ID, gotErr, want.Op, want.Text, want.ID, wantErr)
		}
		if cap(got.Text) != len(got.Text) {
			t.Fatalf("Decode(%q): text has capacity %d for length %d", msg, cap(got.Text), len(got.Text))
		}
		// A refusal names only an id the message has,
		checkNamed(t, msg, got, gotErr)
		// and it names the id of a say or seal whose text or data is
		// rest, if rest can only be that (no quote ends it, no
		// backslash escapes), with the id after it or before, however
		// it fails.
		if !bytes.ContainsAny(rest, `"\`) {
			for _, m := range []string{
				sayHead + string(rest) + `","id":7}`,
				`{"type":"say","id":7,"text":"` + string(rest) + `"}`,
				`{"type":"seal","data":"` + string(rest) + `","id":7}`,
			} {
				if cmd, err := d.Decode([]byte(m)); err != nil && cmd.ID != 7 {
					t.Fatalf("Decode(%q) = %v id %d, %v; want id 7", m, cmd.Op, cmd.ID, err)
				}
			}
		}
		// Say answers only what it is sure of: a text, where the pass
		// finds a say with that text.
		if text, id, ok := d.Say(msg); ok && (wantErr != nil || want.Op != proto.OpSay || !bytes.Equal(text, want.Text) || id != want.ID || cap(text) != len(text)) {
			t.Fatalf("Say(%q) = %q id %d; the pass gives %v %q id %d, %v", msg, text, id, want.Op, want.Text, want.ID, wantErr)
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
