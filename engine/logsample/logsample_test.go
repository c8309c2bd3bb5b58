package logsample

import (
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
