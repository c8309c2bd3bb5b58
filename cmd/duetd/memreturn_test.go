package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"strconv"
	"testing"
	"time"
)

// TestMemReturnAfterADrop: memory is returned when the connections open
// fell by a quarter of the most open since the last return, and by the
// minimum, at two checks in a row (the drop may still be under way at
// the first), not for a smaller drop, and not again within the period;
// a burst that came and went between two checks counts.
func TestMemReturnAfterADrop(t *testing.T) {
	var open, burst int64
	frees := 0
	m := &memReturn{
		conns:   func() int64 { return open },
		peak:    func() int64 { b := burst; burst = 0; return b },
		free:    func() { frees++ },
		minDrop: 100,
		every:   time.Minute,
	}
	t0 := time.Unix(1000, 0)
	step := func(n int64, at time.Duration, wantDrop int64) {
		t.Helper()
		open = n
		before := frees
		if got := m.check(t0.Add(at)); got != wantDrop {
			t.Fatalf("%d open at %v: returned after a drop of %d, want %d", n, at, got, wantDrop)
		}
		if want := before + min(int(wantDrop), 1); frees != want {
			t.Fatalf("%d open at %v: %d returns, want %d", n, at, frees, want)
		}
	}
	step(1000, 0, 0)
	step(2000, time.Second, 0)
	step(1600, 2*time.Second, 0)   // a fifth fewer
	step(1500, 3*time.Second, 0)   // a quarter: due at the next check
	step(1600, 4*time.Second, 0)   // no longer a quarter
	step(1400, 5*time.Second, 0)   // due again
	step(1200, 6*time.Second, 800) // still: all of it at once
	step(800, 7*time.Second, 0)    // within the period
	step(600, 70*time.Second, 0)
	step(400, 71*time.Second, 800) // from the most since the last return
	burst = 3000                   // opened and closed between two checks
	step(400, 200*time.Second, 0)
	step(400, 201*time.Second, 2600)
	step(360, 300*time.Second, 0) // a tenth fewer
	step(300, 301*time.Second, 0)
	step(300, 302*time.Second, 100)

	// A quarter, but fewer than the minimum.
	open, frees = 300, 0
	m = &memReturn{conns: func() int64 { return open }, peak: func() int64 { return 0 }, free: func() { frees++ }, minDrop: 100, every: time.Minute}
	step(300, 0, 0)
	step(210, time.Second, 0)
	step(210, 2*time.Second, 0)
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
