package engine

import (
	"testing"
	"time"
)

func TestLogSamplerLetsOneThroughPerInterval(t *testing.T) {
	var l logSampler
	now := time.Unix(1000, 0)
	if ok, _ := l.allow(now); !ok {
		t.Fatal("the first line was held back")
	}
	for i := 0; i < 500; i++ {
		if ok, _ := l.allow(now.Add(time.Duration(i) * time.Millisecond)); ok {
			t.Fatalf("line %d within the second was let through", i)
		}
	}
	ok, suppressed := l.allow(now.Add(time.Second))
	if !ok || suppressed != 500 {
		t.Fatalf("after a second: ok %v, %d held back; want true, 500", ok, suppressed)
	}
}
