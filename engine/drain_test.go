package engine_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"duet/engine"
	"duet/engine/enginetest"
	"duet/engine/hub"
)

// TestDrain: a drain tells each client to reconnect, a line client with
// its resume key and a browser with close 1012, sends each session away
// instead of ending it, spreads the closes over the period, and refuses
// new connections meanwhile.
func TestDrain(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, nil)
	alice := d.DialLine(t).Login("alice")
	bob := d.DialWS(t).Login("bob")
	carol := d.DialLine(t).Login("carol")
	dora := d.DialWS(t).Login("dora")
	anon := d.DialLine(t) // not logged in: told to reconnect, nothing more
	bob.Connect(alice.Token)
	bob.Expect("paired")
	alice.Expect(`^\* bob is connected$`)

	const period = 1200 * time.Millisecond
	start := time.Now()
	told := make(chan engine.Drained, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), enginetest.Timeout)
		defer cancel()
		told <- d.Drain(ctx, period, nil)
	}()

	var mu sync.Mutex
	var closedAt []time.Duration // when each was told
	closed := func() {
		mu.Lock()
		closedAt = append(closedAt, time.Since(start))
		mu.Unlock()
	}
	var wg sync.WaitGroup
	lineNotice := regexp.MustCompile(`^\* the server is restarting; reconnect and type /resume ([0-9a-z]{26}) within 2m$`)
	for _, lc := range []*enginetest.LineClient{alice, carol} {
		wg.Go(func() {
			for {
				l := lc.Line()
				if m := lineNotice.FindStringSubmatch(l); m != nil {
					if m[1] != lc.Key {
						t.Errorf("%s told key %s, has %s", lc.Name, m[1], lc.Key)
					}
					break
				}
				if !strings.HasPrefix(l, "* bob ") && !strings.HasPrefix(l, "* alice ") {
					t.Errorf("%s: %q", lc.Name, l)
				}
			}
			// Told now; closed a grace later, for lines sent as the
			// notice came (TestDrainAnswersLinesSentLate).
			closed()
			lc.ExpectClosed()
		})
	}
	wg.Go(func() {
		if l := anon.Line(); l != "* the server is restarting; reconnect" {
			t.Errorf("not logged in: %q", l)
		}
		closed()
		anon.ExpectClosed()
	})
	for _, wc := range []*enginetest.WSClient{bob, dora} {
		wg.Go(func() {
			var notice string
			code, reason := wc.ReadUntilClose(func(ev map[string]any) {
				if ev["type"] == "notice" {
					notice, _ = ev["text"].(string)
				}
			})
			if code != 1012 || reason != "service restart" {
				t.Errorf("%s: close %d %q", wc.Name, code, reason)
			}
			if notice != "the server is restarting; reconnect and resume your session within 2m" {
				t.Errorf("%s: notice %q", wc.Name, notice)
			}
			closed()
		})
	}
	wg.Wait()
	if n := <-told; n != (engine.Drained{Told: 5}) {
		t.Fatalf("drained %+v, want 5 connections told to reconnect", n)
	}
	took := time.Since(start)
	mu.Lock()
	spread := closedAt[len(closedAt)-1] - closedAt[0]
	mu.Unlock()
	t.Logf("5 closes spread over %v, drain took %v (period %v)", spread, took, period)
	// The fifth of five closes at 4/5 of the period.
	if spread < period/2 || took > period+5*time.Second {
		t.Fatalf("closes spread over %v, drain took %v, for a period of %v", spread, took, period)
	}
	if st := d.Hub.Stats(); st.Away != 4 || st.Users != 4 || st.Pairs != 1 {
		t.Fatalf("after the drain: %+v", st)
	}
	late, err := net.DialTimeout("tcp", d.TCP, enginetest.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	late.SetReadDeadline(time.Now().Add(enginetest.Timeout))
	// Its users were just told to reconnect: one who does so at once is
	// told the server is restarting, not that it is going away.
	if l, _ := bufio.NewReader(late).ReadString('\n'); l != "! shutting_down: the server is restarting; connect again in a moment\r\n" {
		t.Fatalf("a connection during a drain: %q", l)
	}
	lateWS := refusedWS(t, d, "127.0.0.1", "")
	if ev := lateWS.event(); ev["type"] != "error" || ev["code"] != "shutting_down" || ev["text"] != "the server is restarting; connect again in a moment" {
		t.Fatalf("a WebSocket during a drain: %v", ev)
	}
	if code, _ := lateWS.expectClose(); code != 1013 {
		t.Fatalf("a WebSocket during a drain closed with %d, want 1013", code)
	}
	resp, err := http.Get("http://" + d.WS + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body), "the server is restarting; connect again in a moment") {
		t.Fatalf("a page request during a drain: %d %q", resp.StatusCode, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if n := d.Drain(ctx, period, nil); n != (engine.Drained{}) {
		t.Fatalf("a second drain ended %+v", n)
	}
}

// TestDrainNotParkedTellsWhatNeverArrived: a session a drain cannot park
// ends, and its partner is told how many of its messages never reached
// the reader, as when a connection that ends with messages queued tells
// it: a reader that had stopped reading has some queued, and some its
// socket wrote that its TCP never acknowledged. Two engines share one
// hub, as a node's would if it had two; alice's drains, and the park
// fails.
func TestDrainNotParkedTellsWhatNeverArrived(t *testing.T) {
	const count = 30_000
	h := hub.New(hub.Options{})
	keep := keepsForSlowReader(32<<20, 0)
	edit := func(o *engine.Options) {
		keep(o)
		o.Hub = h
		o.Limits.MessageRate = 1e6
		o.Limits.MessageBurst = 1e6
	}
	a, b := enginetest.Start(t, edit), enginetest.Start(t, edit)
	alice := a.DialLine(t)
	enginetest.SmallWindow(t, alice.Conn)
	alice.Login("alice")
	bob := b.DialLine(t).Login("bob")
	bob.Send("/connect " + alice.Token)
	bob.Expect(`^\* you are connected with alice$`)
	alice.Expect(`^\* bob is connected$`)

	// alice reads nothing more: her socket's buffers fill, and a queues
	// the rest.
	enginetest.SendNumbered(t, bob.Conn, count)
	for deadline := time.Now().Add(2 * enginetest.Timeout); h.Stats().Messages < count; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the messages did not all cross: %+v", h.Stats())
		}
	}
	// The drain waits a second for alice's connection to close, which,
	// stalled, it does not; stopping a closes it, with what it never
	// wrote.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	fail := func(context.Context, string) bool { return false }
	if n := a.Drain(ctx, 0, fail); n.NotParked != 1 {
		t.Fatalf("drained %+v, want alice's session not parked", n)
	}
	stop, cancelStop := context.WithTimeout(context.Background(), time.Second)
	defer cancelStop()
	_ = a.Stop(stop)
	// alice went away to be parked: bob, on the hub that drains, is not
	// told so (TestDrainTellsNoOneTheirPartnerLostTheConnection).
	l := bob.Expect(`^\* alice's server is shutting down; \d+ of your messages were not delivered; `)
	told, _ := strconv.Atoi(regexp.MustCompile(`\d+`).FindString(l))

	// alice reads what her old connection wrote, to its end: what her
	// socket and a's kernel held for her.
	read := 0
	r := bufio.NewReader(alice.Conn)
	for {
		alice.Conn.SetReadDeadline(time.Now().Add(time.Second))
		l, err := r.ReadString('\n')
		if err != nil {
			break
		}
		if strings.HasPrefix(l, "<bob> m ") {
			read++
		}
	}
	t.Logf("alice read %d of %d messages; bob was told %d were not delivered", read, count, told)
	if told < count-read || read == count {
		t.Fatalf("alice read %d of %d messages, bob was told %d were not delivered", read, count, told)
	}
}

// TestDrainClosesIdleKeepAliveQuietly: a browser's keep-alive
// connection on the web port, idle between requests, is closed by a
// drain without a word, so that the browser's next request goes on a
// new connection (to the next process, or another node); one with a
// request begun is answered 503, "the server is restarting". (Before,
// the idle one was sent a 503 it had not asked for, which a browser
// reloading the page just then read as the page's answer.)
func TestDrainClosesIdleKeepAliveQuietly(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, nil)
	idle, err := net.DialTimeout("tcp", d.WS, enginetest.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if _, err := idle.Write([]byte("GET / HTTP/1.1\r\nHost: duet.test\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	idle.SetReadDeadline(time.Now().Add(enginetest.Timeout))
	r := bufio.NewReader(idle)
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != 200 || resp.Close {
		t.Fatalf("the page: %v, %v", resp, err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatal(err)
	}
	begun, err := net.DialTimeout("tcp", d.WS, enginetest.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	defer begun.Close()
	if _, err := begun.Write([]byte("GET / HTTP/1.1\r\nHost: duet.test\r\n")); err != nil {
		t.Fatal(err)
	}
	// The half request is read before the drain.
	for deadline := time.Now().Add(enginetest.Timeout); d.Conns() < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the connections never opened")
		}
	}
	time.Sleep(50 * time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), enginetest.Timeout)
	defer cancel()
	if n := d.Drain(ctx, 0, nil); n.Told != 2 {
		t.Fatalf("drained %+v", n)
	}
	if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
		t.Fatalf("the idle connection was sent %q (%v) as it closed", rest, err)
	}
	begun.SetReadDeadline(time.Now().Add(enginetest.Timeout))
	resp, err = http.ReadResponse(bufio.NewReader(begun), nil)
	if err != nil || resp.StatusCode != 503 {
		t.Fatalf("the request begun: %v, %v", resp, err)
	}
}

// TestDrainCountsOnlyThoseTold: clients that hang up before their turn
// in a drain are not counted among those told to reconnect: Drain's
// count and the drain endings counted agree. Three of six hang up at
// once, with turns half a second apart: whatever the order of the turns,
// at most one of the three has its turn first.
func TestDrainCountsOnlyThoseTold(t *testing.T) {
	t.Parallel()
	m := &countingMetrics{counts: map[string]int{}}
	d := enginetest.Start(t, func(o *engine.Options) { o.Metrics = m })
	const n = 6
	var leaving []*enginetest.LineClient
	for i := range n {
		c := d.DialLine(t).Login(fmt.Sprint("user", i))
		if i%2 == 0 {
			leaving = append(leaving, c)
		}
	}
	go func() {
		time.Sleep(200 * time.Millisecond)
		for _, c := range leaving {
			c.Conn.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), enginetest.Timeout)
	defer cancel()
	got := d.Drain(ctx, 3*time.Second, nil)
	counted := m.snapshot()
	if got.Told != counted["disconnected drain"] || got.NotParked != 0 ||
		got.Told+counted["disconnected closed"] != n || counted["disconnected closed"] < len(leaving)-1 {
		t.Fatalf("Drain says %+v; counted %v", got, counted)
	}
}

// TestDrainTellsNoOneTheirPartnerLostTheConnection: a single server
// drains for a restart, and closes a pair's connections one after the
// other. The one closed later is told the restart, not first that its
// partner lost the connection, which the partner did not (hub
// TestDrainedPartnerToldOnResume: what the resumes say). Before, it
// read "* alice lost the connection; waiting up to 2m for alice to come
// back", then the restart.
func TestDrainTellsNoOneTheirPartnerLostTheConnection(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, nil)
	alice, bob := pairLines(t, d, "alice", "bob")

	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), enginetest.Timeout)
		defer cancel()
		d.Drain(ctx, 600*time.Millisecond, nil)
	}()
	var wg sync.WaitGroup
	for _, lc := range []*enginetest.LineClient{alice, bob} {
		wg.Go(func() {
			if l := lc.Line(); !strings.HasPrefix(l, "* the server is restarting; reconnect and type /resume ") {
				t.Errorf("%s is told %q before the restart", lc.Name, l)
			}
			lc.ExpectClosed()
		})
	}
	wg.Wait()
}

// TestDrainAnswersLinesSentLate: what a line client sent as the drain's
// notice was on its way to it, which the server reads after the
// notice, is answered: the notice again, once, with how many of its
// messages were not delivered, as the client would otherwise take them
// for sent; commands among it count for nothing. Then the connection
// closes at once, as one with nothing unread does, not lingering: a
// netcat whose input is a terminal ignores the end of the stream, and
// its user would type on into it. Before, what came late was read and
// thrown away untold (an audit lost a line in one restart of three,
// with both users typing).
func TestDrainAnswersLinesSentLate(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, nil)
	alice := d.DialLine(t).Login("alice")
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), enginetest.Timeout)
		defer cancel()
		d.Drain(ctx, 0, nil)
	}()
	notice := `^\* the server is restarting; reconnect and type /resume ` + alice.Key + ` within 2m`
	alice.Expect(notice + `$`)
	// As the notice came: typed before it was read, in two reads.
	if _, err := alice.Conn.Write([]byte("one\r\n/who\r\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if _, err := alice.Conn.Write([]byte("\r\ntwo\n//three\n")); err != nil {
		t.Fatal(err)
	}
	alice.Expect(notice + `; 3 of your messages were not delivered$`)
	told := time.Now()
	alice.ExpectClosed()
	if waited := time.Since(told); waited > time.Second {
		t.Errorf("closed %v after the count, lingering", waited)
	}
}
