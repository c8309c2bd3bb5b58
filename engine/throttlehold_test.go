package engine_test

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"sync"
	"testing"
	"time"

	"duet/engine"
)

// TestThrottleHoldBoundsInput: a connect held by the failed-connect
// throttle leaves the connection's input unread, but gnet reads some of
// it each time the connection's own output starts and drains (its
// partner talking to it). A client that goes on sending behind the held
// connect, while its partner keeps its output busy, must not pile its
// input up in the daemon for the whole hold: past the held input's
// bound (1 MiB) the connect is answered throttled, unchecked, and the
// input is read as usual, back-pressure and all.
func TestThrottleHoldBoundsInput(t *testing.T) {
	d := startDaemon(t, func(o *engine.Options) { o.Limits.ConnectFailures = 1 })
	a := dialLine(t, d, "127.0.0.1")
	b := dialLine(t, d, "127.0.0.1")
	token := a.login("alice")
	b.login("bob")
	// Failures from the address hold its next connect 250 ms, 500 ms,
	// 1 s, 2 s, then 4 s.
	for range 5 {
		a.send("/connect " + randomToken(t))
		a.expect(`^! (unknown_token|throttled): `)
	}
	b.send("/connect " + token)
	b.expect(`^\* you are connected with alice$`)
	a.expect(`^\* bob is connected$`)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() {
		close(stop)
		a.c.Close()
		b.c.Close()
		wg.Wait()
	}()
	answer := make(chan string, 1)
	wg.Add(1)
	go func() { // alice reads everything, and notes the connect's answer
		defer wg.Done()
		r := bufio.NewReaderSize(a.c, 64<<10)
		for {
			a.c.SetReadDeadline(time.Now().Add(20 * time.Second))
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if strings.HasPrefix(l, "! ") {
				select {
				case answer <- l:
				default:
				}
			}
		}
	}()
	wg.Add(1)
	go func() { // bob talks to alice without pause, and reads nothing
		defer wg.Done()
		line := strings.Repeat("b", 8000) + "\n"
		w := bufio.NewWriterSize(b.c, 1<<20)
		for {
			select {
			case <-stop:
				return
			default:
			}
			for range 100 {
				w.WriteString(line)
			}
			b.c.SetWriteDeadline(time.Now().Add(time.Second))
			if w.Flush() != nil {
				select {
				case <-stop:
					return
				default:
					continue
				}
			}
		}
	}()
	base := heapInuse()
	peak := heapPeak()
	a.send("/connect " + randomToken(t)) // held 4 s
	sent := 0
	chunk := []byte(strings.Repeat(strings.Repeat("a", 99)+"\n", 600))
	for start := time.Now(); time.Since(start) < 4*time.Second; {
		a.c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		n, _ := a.c.Write(chunk)
		sent += n
	}
	grew := int64(peak()) - int64(base)
	t.Logf("alice sent %d MiB behind the held connect; the daemon's heap grew by at most %d MiB", sent>>20, grew>>20)
	// Answered throttled once the bound is passed; already_paired (the
	// token is checked for a paired session) had the hold run its course.
	select {
	case l := <-answer:
		if !strings.HasPrefix(l, "! throttled: ") && !strings.HasPrefix(l, "! already_paired: ") {
			t.Fatalf("the held connect was answered %q", l)
		}
		t.Logf("answered %q", strings.TrimSpace(l))
	case <-time.After(10 * time.Second):
		t.Fatal("the held connect was never answered")
	}
	if grew > 8<<20 {
		t.Fatalf("the daemon's heap grew by %d MiB while alice's connect was held", grew>>20)
	}
}

func randomToken(t *testing.T) string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}
