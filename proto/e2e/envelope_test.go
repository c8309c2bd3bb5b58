package e2e

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// h builds bytes from hex with spaces for readability.
func h(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

var (
	pub32   = strings.Repeat("aa", 32)
	nonce16 = strings.Repeat("bb", 16)
	dig32   = strings.Repeat("cc", 32)
)

var decodeTests = []struct {
	name string
	in   []byte
	want *Error // nil: accepted
	kind Kind
}{
	{"commit", h("01 01" + dig32), nil, KindCommit},
	{"initiator hello", h("01 02 01 00" + pub32 + nonce16), nil, KindHello},
	{"initiator hello with link id", h("01 02 01 01" + pub32 + nonce16 + "0102030405060708"), nil, KindHello},
	{"responder hello", h("01 02 02 00" + pub32 + nonce16), nil, KindHello},
	{"confirm", h("01 03" + dig32), nil, KindConfirm},
	{"message", h("01 04 0000000000000007 01" + strings.Repeat("dd", 16)), nil, KindMessage},
	{"message at the last counter", h("01 04 001fffffffffffff 01" + strings.Repeat("dd", 16)), nil, KindMessage},
	{"abort", h("01 05 02"), nil, KindAbort},
	{"abort of another version", h("07 05 09"), nil, KindAbort},

	{"empty", nil, ErrBadEnvelope, 0},
	{"version only", h("01"), ErrBadEnvelope, 0},
	{"version 0", h("00 01" + dig32), ErrBadVersion, 0},
	{"version 2", h("02 02 01 00" + pub32 + nonce16), ErrBadVersion, 0},
	{"kind 0", h("01 00"), ErrBadEnvelope, 0},
	{"kind 6", h("01 06 00"), ErrBadEnvelope, 0},
	{"short commit", h("01 01" + dig32[2:]), ErrBadEnvelope, 0},
	{"long commit", h("01 01" + dig32 + "00"), ErrBadEnvelope, 0},
	{"hello with role 0", h("01 02 00 00" + pub32 + nonce16), ErrBadEnvelope, 0},
	{"hello with role 3", h("01 02 03 00" + pub32 + nonce16), ErrBadEnvelope, 0},
	{"hello with unknown flag", h("01 02 01 02" + pub32 + nonce16), ErrBadEnvelope, 0},
	{"hello with flag but no link id", h("01 02 01 01" + pub32 + nonce16), ErrBadEnvelope, 0},
	{"hello with link id but no flag", h("01 02 01 00" + pub32 + nonce16 + "0102030405060708"), ErrBadEnvelope, 0},
	{"short hello", h("01 02 01 00" + pub32), ErrBadEnvelope, 0},
	{"short confirm", h("01 03 cc"), ErrBadEnvelope, 0},
	{"message without tag", h("01 04 0000000000000000 01"), ErrBadEnvelope, 0},
	{"message one byte short", h("01 04 0000000000000000" + strings.Repeat("dd", 16)), ErrBadEnvelope, 0},
	{"message past the last counter", h("01 04 0020000000000000 01" + strings.Repeat("dd", 16)), ErrBadEnvelope, 0},
	{"abort without reason", h("01 05"), ErrBadEnvelope, 0},
	{"abort with reason 0", h("01 05 00"), ErrBadEnvelope, 0},
	{"long abort", h("01 05 01 01"), ErrBadEnvelope, 0},
	{"too long", append(h("01 04 0000000000000000"), make([]byte, MaxEnvelope)...), ErrBadEnvelope, 0},
}

func TestDecode(t *testing.T) {
	for _, tt := range decodeTests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Decode(tt.in)
			if tt.want != nil {
				if !errors.Is(err, tt.want) {
					t.Fatalf("error %v, want %s", err, tt.want.Code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if e.Kind != tt.kind {
				t.Fatalf("kind %v, want %v", e.Kind, tt.kind)
			}
			// Every accepted envelope encodes back to its bytes, but for
			// the version of an abort, which is always written as ours.
			want := bytes.Clone(tt.in)
			want[0] = Version
			if got := e.Append(nil); !bytes.Equal(got, want) {
				t.Fatalf("re-encoded as %x", got)
			}
		})
	}
}

func TestDecodeFields(t *testing.T) {
	e, err := Decode(h("01 02 01 01" + pub32 + nonce16 + "0102030405060708"))
	if err != nil {
		t.Fatal(err)
	}
	if e.Role != Initiator || !e.HasLinkID || e.LinkID != [8]byte{1, 2, 3, 4, 5, 6, 7, 8} ||
		e.Public[0] != 0xaa || e.Nonce[15] != 0xbb {
		t.Fatalf("hello %+v", e)
	}
	e, err = Decode(h("01 04 001f020304050607 01" + strings.Repeat("dd", 16)))
	if err != nil {
		t.Fatal(err)
	}
	if e.Counter != 0x001f020304050607 || len(e.Sealed) != 17 {
		t.Fatalf("message counter %x, sealed %d bytes", e.Counter, len(e.Sealed))
	}
}

func TestDecodeData(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want string // hex; "" means refused
	}{
		{"AQUC", "010502"},
		{"AQ", "01"},
		{"__-_", "ffffbf"}, // bytes that standard base64 would spell with / and +
		{"", ""},
		{"AQUC=", ""}, // padding
		{"AQ==", ""},
		{"AQ\nUC", ""},   // package base64 would skip the line break
		{"AQ\rUC", ""},   // and the carriage return
		{"AQ/C", ""},     // the standard alphabet
		{"AQ+C", ""},     // likewise
		{"AR", ""},       // stray bits in the last character (AQ is canonical)
		{"A", ""},        // one character is no byte
		{"AQUC ", ""},    // a space
		{"AQUC\x00", ""}, // a NUL
		{strings.Repeat("A", (MaxEnvelope*4+2)/3+4), ""},
	} {
		got, err := DecodeData(tt.in)
		if tt.want == "" {
			if !errors.Is(err, ErrBadEnvelope) {
				t.Errorf("%q: %x, %v; want bad_envelope", tt.in, got, err)
			}
			continue
		}
		if err != nil || hex.EncodeToString(got) != tt.want {
			t.Errorf("%q: %x, %v; want %s", tt.in, got, err, tt.want)
		}
		if again := EncodeData(got); again != tt.in {
			t.Errorf("%q encodes back as %q", tt.in, again)
		}
	}
}
