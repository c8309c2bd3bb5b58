package logsample

import (
	"strings"
	"testing"
	"time"
)

func TestSamplerLetsOneThroughPerInterval(t *testing.T) {
	var l Sampler
	now := time.Unix(1000, 0)
	if ok, _ := l.Allow(now); !ok {
		t.Fatal("the first line was held back")
	}
	for i := 0; i < 500; i++ {
		if ok, _ := l.Allow(now.Add(time.Duration(i) * time.Millisecond)); ok {
			t.Fatalf("line %d within the second was let through", i)
		}
	}
	ok, suppressed := l.Allow(now.Add(time.Second))
	if !ok || suppressed != 500 {
		t.Fatalf("after a second: ok %v, %d held back; want true, 500", ok, suppressed)
	}
	s := Sampler{Interval: time.Minute}
	s.Allow(now)
	if ok, _ := s.Allow(now.Add(time.Second)); ok {
		t.Fatal("a line a second after the last was let through, with a minute's interval")
	}
}

func TestPrintable(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"https://chat.example", "https://chat.example"},
		{"http://x/\u202e\"} fake", `http://x/\u202e\"} fake`},
		{"a\nb\x00c\x1b[2J", `a\nb\x00c\x1b[2J`},
		{"\xff\xfe", `\xff\xfe`},
		{strings.Repeat("A", 7000), strings.Repeat("A", 64) + "…"},
		{"日本", `\u65e5\u672c`},
	} {
		if got := Printable(tc.in, 64); got != tc.want {
			t.Errorf("Printable(%.20q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
