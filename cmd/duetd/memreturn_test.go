package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// memSteps drives m through checks a second or more apart: each step
// sets the connections open, checks at the given time, and expects the
// return it names, or none.
type memSteps struct {
	t      *testing.T
	m      *memReturn
	open   int64
	burst  int64
	frees  int
	origin time.Time
}

func newMemSteps(t *testing.T, open int64) *memSteps {
	ms := &memSteps{t: t, open: open, origin: time.Unix(1000, 0)}
	ms.m = &memReturn{
		conns:    func() int64 { return ms.open },
		peak:     func() int64 { b := ms.burst; ms.burst = 0; return b },
		free:     func() { ms.frees++ },
		minConns: 100,
		every:    time.Minute,
		// As after a return with open connections.
		high: open, low: open, prev: open,
	}
	return ms
}

func (ms *memSteps) step(n int64, at time.Duration, want memEvent) {
	ms.t.Helper()
	ms.open = n
	before := ms.frees
	if got := ms.m.check(ms.origin.Add(at)); got != want {
		ms.t.Fatalf("%d open at %v: returned %+v, want %+v", n, at, got, want)
	}
	if want := before + min(int(want.ended+want.opened), 1); ms.frees != want {
		ms.t.Fatalf("%d open at %v: %d returns, want %d", n, at, ms.frees, want)
	}
}

// TestMemReturnAfterADrop: memory is returned when the connections open
// fell by a quarter of the most open since the last return, and by the
// minimum, at two checks in a row (the drop may still be under way at
// the first), not for a smaller drop, and not again within the period;
// a burst that came and went between two checks counts.
func TestMemReturnAfterADrop(t *testing.T) {
	ms := newMemSteps(t, 2000)
	none := memEvent{}
	ms.step(1600, 2*time.Second, none)                   // a fifth fewer
	ms.step(1500, 3*time.Second, none)                   // a quarter: due at the next check
	ms.step(1600, 4*time.Second, none)                   // no longer a quarter
	ms.step(1400, 5*time.Second, none)                   // due again
	ms.step(1200, 6*time.Second, memEvent{ended: 800})   // still: all of it at once
	ms.step(800, 7*time.Second, none)                    // within the period
	ms.step(600, 70*time.Second, none)                   // due
	ms.step(400, 71*time.Second, memEvent{ended: 800})   // from the most since the last return
	ms.burst = 3000                                      // opened and closed between two checks
	ms.step(400, 200*time.Second, none)                  // due
	ms.step(400, 201*time.Second, memEvent{ended: 2600}) //
	ms.step(360, 300*time.Second, none)                  // a tenth fewer
	ms.step(300, 301*time.Second, none)                  // a quarter
	ms.step(300, 302*time.Second, memEvent{ended: 100})  //

	// A quarter, but fewer than the minimum.
	ms = newMemSteps(t, 300)
	ms.step(210, time.Second, none)
	ms.step(210, 2*time.Second, none)
}

// TestMemReturnAfterASurge: memory is returned when the connections open
// rose by a quarter of those open, and by the minimum, since the last
// return, once they stopped rising at two checks in a row, and not
// again within the period; a rise of less than a quarter, or of fewer
// than the minimum, returns nothing. Drops and surges are timed apart.
func TestMemReturnAfterASurge(t *testing.T) {
	ms := newMemSteps(t, 0)
	none := memEvent{}
	ms.step(500, time.Second, none)                       // rising
	ms.step(900, 2*time.Second, none)                     // rising
	ms.step(900, 3*time.Second, none)                     // stopped: due at the next check
	ms.step(950, 4*time.Second, none)                     // rising again
	ms.step(940, 5*time.Second, none)                     // due
	ms.step(940, 6*time.Second, memEvent{opened: 940})    // all of it at once
	ms.step(1000, 7*time.Second, none)                    // rising
	ms.step(1000, 8*time.Second, none)                    // 60 more: fewer than the minimum
	ms.step(2000, 9*time.Second, none)                    // rising
	ms.step(2000, 10*time.Second, none)                   // due, but
	ms.step(2000, 11*time.Second, none)                   // within the period
	ms.step(2000, 70*time.Second, none)                   // due
	ms.step(2000, 71*time.Second, memEvent{opened: 1060}) // from the fewest since the last return
	ms.step(2400, 200*time.Second, none)                  // a fifth more
	ms.step(2400, 201*time.Second, none)                  //
	ms.step(2400, 202*time.Second, none)                  //
	ms.step(1000, 300*time.Second, none)                  // a drop: due
	ms.step(1000, 301*time.Second, memEvent{ended: 1400}) // a drop's period is its own
	ms.step(1800, 302*time.Second, none)                  // rising
	ms.step(1800, 303*time.Second, none)                  // due
	ms.step(1800, 304*time.Second, memEvent{opened: 800}) // a surge's too
}

// TestMemoryReturnedWhenClientsDrop: duetd, with 3,000 connections open
// that then all reset, logs that it returned what they freed, and its
// RSS falls.
func TestMemoryReturnedWhenClientsDrop(t *testing.T) {
	const n = 3000
	d := startDaemon(t, "limits:\n  max_conns_per_ip: 10000\n  max_conns: 20000\n")
	d.WaitReady()
	conns := make([]*net.TCPConn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for range n {
		c, err := net.DialTimeout("tcp", d.TCP, 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", len(conns), err)
		}
		conns = append(conns, c.(*net.TCPConn))
		// The greeting says the server has taken the connection up.
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			t.Fatalf("greeting %d: %v", len(conns), err)
		}
	}
	peak := processRSS(t, d.cmd.Process.Pid)
	for _, c := range conns {
		_ = c.SetLinger(0)
		_ = c.Close()
	}
	conns = nil
	e, _ := d.WaitLog(0, "returned freed memory to the system")
	// The return waits a second for a drop under way: the resets take a
	// fraction of that to be read, so it comes once nearly all ended.
	if ended, _ := e["connections_ended"].(float64); ended < n*9/10 {
		t.Fatalf("returned after %v connections ended, want nearly all %d", e["connections_ended"], n)
	}
	after := processRSS(t, d.cmd.Process.Pid)
	t.Logf("RSS %d KiB with %d connections open, %d KiB after they dropped", peak, n, after)
	if after >= peak {
		t.Fatalf("RSS %d KiB after the drop, %d KiB before", after, peak)
	}
}

// TestMemoryReturnedAfterASurge: duetd, once 3,000 clients that came at
// once have logged in and gone quiet, logs that it returned what their
// logins left over, counting nearly all of them.
func TestMemoryReturnedAfterASurge(t *testing.T) {
	const n = 3000
	d := startDaemon(t, "limits:\n  max_conns_per_ip: 10000\n  max_conns: 20000\n")
	d.WaitReady()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for i := range n {
		c, err := net.DialTimeout("tcp", d.TCP, 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
		if _, err := fmt.Fprintf(c, "/login s%d\n", i); err != nil {
			t.Fatalf("login %d: %v", i, err)
		}
	}
	// Every login answered: the surge is over.
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("connection %d, waiting for its login: %v", i, err)
			}
			if strings.Contains(l, "your token is") {
				break
			}
		}
	}
	e, _ := d.WaitLog(0, "returned the memory a surge of connections left over")
	if opened, _ := e["connections_opened"].(float64); opened < n*9/10 {
		t.Fatalf("returned after %v connections opened, want nearly all %d", e["connections_opened"], n)
	}
}

// processRSS is the VmRSS of process pid, in KiB.
func processRSS(t *testing.T, pid int) int64 {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range bytes.Split(status, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(l, []byte("VmRSS:")); ok {
			f := bytes.Fields(rest)
			if len(f) == 2 {
				kib, err := strconv.ParseInt(string(f[0]), 10, 64)
				if err == nil {
					return kib
				}
			}
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}
