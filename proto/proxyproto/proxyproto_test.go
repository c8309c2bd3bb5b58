package proxyproto

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

func proxyV2(cmd, fam byte, addrs []byte, tlv []byte) []byte {
	b := append([]byte(nil), v2Sig...)
	b = append(b, 0x20|cmd, fam, 0, 0)
	binary.BigEndian.PutUint16(b[14:], uint16(len(addrs)+len(tlv)))
	b = append(b, addrs...)
	return append(b, tlv...)
}

func TestParse(t *testing.T) {
	v4 := []byte{192, 0, 2, 7, 127, 0, 0, 1, 0x30, 0x39, 0x1b, 0x9e}
	v6 := make([]byte, 36)
	copy(v6, netip.MustParseAddr("2001:db8::7").AsSlice())
	copy(v6[16:], netip.MustParseAddr("::1").AsSlice())
	tests := []struct {
		name   string
		in     string
		client string // "" means no address (the proxy speaks for itself)
		n      int    // 0 with wantErr false: needs more
		bad    bool
	}{
		{"v1 tcp4", "PROXY TCP4 192.0.2.7 127.0.0.1 12345 7070\r\n/login a\r\n", "192.0.2.7", 43, false},
		{"v1 tcp6", "PROXY TCP6 2001:db8::7 ::1 12345 7070\r\n", "2001:db8::7", 39, false},
		{"v1 unknown", "PROXY UNKNOWN\r\n", "", 15, false},
		{"v1 unknown with addresses", "PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\n", "", 39, false},
		{"v1 partial prefix", "PRO", "", 0, false},
		{"v1 partial line", "PROXY TCP4 192.0.2.7 127.0.0.1 123", "", 0, false},
		{"v1 no CRLF within 107 bytes", "PROXY TCP4 " + string(make([]byte, 120)), "", 0, true},
		{"v1 bad family", "PROXY UDP4 192.0.2.7 127.0.0.1 1 2\r\n", "", 0, true},
		{"v1 family mismatch", "PROXY TCP4 2001:db8::7 ::1 1 2\r\n", "", 0, true},
		{"v1 bad address", "PROXY TCP4 192.0.2.777 127.0.0.1 1 2\r\n", "", 0, true},
		{"v1 bad port", "PROXY TCP4 192.0.2.7 127.0.0.1 65536 2\r\n", "", 0, true},
		{"v1 leading zero port", "PROXY TCP4 192.0.2.7 127.0.0.1 01 2\r\n", "", 0, true},
		{"v1 missing field", "PROXY TCP4 192.0.2.7 127.0.0.1 1\r\n", "", 0, true},
		{"v1 LF only", "PROXY TCP4 192.0.2.7 127.0.0.1 1 2\n", "", 0, false},
		{"not a header", "/login alice\r\n", "", 0, true},
		{"v2 tcp4", string(proxyV2(1, 0x11, v4, nil)), "192.0.2.7", 28, false},
		{"v2 tcp4 with TLV", string(proxyV2(1, 0x11, v4, []byte{0x04, 0, 1, 'x'})), "192.0.2.7", 32, false},
		{"v2 tcp6", string(proxyV2(1, 0x21, v6, nil)), "2001:db8::7", 52, false},
		{"v2 local", string(proxyV2(0, 0x00, nil, nil)), "", 16, false},
		{"v2 unix", string(proxyV2(1, 0x31, make([]byte, 216), nil)), "", 232, false},
		{"v2 partial signature", string(v2Sig[:5]), "", 0, false},
		{"v2 partial body", string(proxyV2(1, 0x11, v4, nil)[:20]), "", 0, false},
		{"v2 short tcp4 body", string(proxyV2(1, 0x11, v4[:8], nil)), "", 0, true},
		{"v2 bad version", string(append(append([]byte(nil), v2Sig...), 0x11, 0x11, 0, 0)), "", 0, true},
		{"v2 bad command", string(proxyV2(2, 0x11, v4, nil)), "", 0, true},
		{"v2 too long", string(append(append([]byte(nil), v2Sig...), 0x21, 0x11, 0xff, 0xff)), "", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, n, err := Parse([]byte(tt.in))
			if tt.bad {
				if err == nil {
					t.Fatalf("got n=%d client=%v, want an error", n, client)
				}
				return
			}
			if err != nil {
				t.Fatalf("error %v", err)
			}
			if tt.name == "v1 LF only" {
				// No CRLF yet: still waiting (and bounded by maxV1).
				if n != 0 {
					t.Fatalf("n = %d, want 0", n)
				}
				return
			}
			if n != tt.n {
				t.Errorf("n = %d, want %d", n, tt.n)
			}
			got := ""
			if client.IsValid() {
				got = client.String()
			}
			if got != tt.client {
				t.Errorf("client = %q, want %q", got, tt.client)
			}
		})
	}
}

func TestLooks(t *testing.T) {
	tests := []struct {
		in        string
		yes, more bool
	}{
		{"", false, true},
		{"P", false, true},
		{"PROXY", false, true},
		{"PROXY ", true, false},
		{"PROXY TCP4 1.2.3.4", true, false},
		{"PROXIMA", false, false},
		{"/login alice\r\n", false, false},
		{"\r\n", false, true},
		{"\r\n\r\n\x00\r\nQUIT\n", true, false},
		{"\r\n\r\nhello", false, false},
		{"hello", false, false},
	}
	for _, tt := range tests {
		yes, more := Looks([]byte(tt.in))
		if yes != tt.yes || more != tt.more {
			t.Errorf("%q: yes=%v more=%v, want %v %v", tt.in, yes, more, tt.yes, tt.more)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.7 127.0.0.1 12345 7070\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add(proxyV2(1, 0x11, []byte{192, 0, 2, 7, 127, 0, 0, 1, 0, 1, 0, 2}, nil))
	f.Add(proxyV2(1, 0x21, make([]byte, 36), nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		client, n, err := Parse(b)
		if err != nil && (n != 0 || client.IsValid()) {
			t.Fatalf("error with n=%d client=%v", n, client)
		}
		if n > len(b) {
			t.Fatalf("n=%d beyond %d bytes", n, len(b))
		}
		if n > 0 && n > maxV2 {
			t.Fatalf("n=%d beyond the bound", n)
		}
		if n == 0 && err == nil && len(b) > maxV2 {
			t.Fatalf("still waiting after %d bytes", len(b))
		}
	})
}
