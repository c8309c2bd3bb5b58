package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"duet/engine/enginetest"
)

// serverFull is what a connection past the engine's share of the descriptor
// limit is told.
const serverFull = "! server_full: the server has too many connections; try again later"

// dialLine opens a connection to d's line port and reads its first
// line: the greeting, or a refusal.
func dialLine(d *daemon) (net.Conn, string, error) {
	c, err := net.DialTimeout("tcp", d.TCP, waitLimit)
	if err != nil {
		return nil, "", err
	}
	c.SetReadDeadline(time.Now().Add(waitLimit))
	first, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		c.Close()
		return nil, first, err
	}
	return c, strings.TrimSuffix(first, "\r\n"), nil
}

// failed fails the test for what a connection read, saying if duetd
// exited meanwhile.
func (d *daemon) failed(what string, first string, err error) {
	d.t.Helper()
	select {
	case <-d.exited:
		d.t.Fatalf("duetd exited (%v) at %s", d.err, what)
	case <-time.After(time.Second):
	}
	d.t.Fatalf("%s: read %q, %v", what, first, err)
}

// startLimited starts duetd with extra config under a descriptor limit
// of limit, soft and hard, so that it cannot raise it again.
func startLimited(t *testing.T, limit int, extra string) *daemon {
	t.Helper()
	d := newDaemon(t, "", "", "", extra)
	d.start(exec.Command("/bin/sh", "-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, limit),
		duetdBinary(t), "--config", d.Conf))
	d.WaitReady()
	return d
}

// TestDescriptorLimitCapsConnections: a duetd whose descriptor limit is
// far below limits.max_conns admits only as many connections as its
// descriptors allow, says so once as it starts, and refuses the rest
// with server_full, counted, instead of running out of descriptors (an
// accept that fails so stops the engine, and every user with it). More
// connections are tried than the limit: once those open close, two new
// users pair and talk.
func TestDescriptorLimitCapsConnections(t *testing.T) {
	const limit = 500
	d := startLimited(t, limit, "limits:\n  max_conns_per_ip: 100000\n")

	var open []net.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	refused := 0
	for i := 0; i < limit+50; i++ {
		c, first, err := dialLine(d)
		switch {
		case err == nil && strings.HasPrefix(first, "* welcome to duet"):
			open = append(open, c)
			continue
		case err == nil && first == serverFull:
			refused++
			c.Close()
			continue
		}
		d.failed(fmt.Sprintf("connection %d, with %d open and %d refused", i+1, len(open), refused), first, err)
	}
	if len(open) >= limit || refused == 0 {
		t.Fatalf("%d connections admitted and %d refused under a descriptor limit of %d", len(open), refused, limit)
	}
	e, _ := d.WaitLog(0, "limits.max_conns is more than the descriptor limit allows; admitting fewer")
	if e["max_conns"] != float64(100000) || e["descriptor_limit"] != float64(limit) || e["admitting"] != float64(len(open)) {
		t.Errorf("warning %v, want max_conns 100000, descriptor_limit %d, admitting %d", e, limit, len(open))
	}
	backlog, _ := e["listen_backlog"].(float64)
	if backlog < 1 {
		t.Fatalf("warning %v: no listen_backlog", e)
	}

	// A burst of as many connections as the limit has descriptors left
	// beside those admitted, more than are free, while the server is
	// full and stopped: as it goes on, its main reactor accepts every
	// one its listener has queued before a loop refuses any. Each
	// listener queues its backlog and one more; the others' SYNs are
	// sent again (1 s, 3 s, 7 s after the first), by which time those
	// queued are closed, so that no more than the burst less the queue
	// are ever open at once. (A flood that goes on, larger than the
	// room kept for it, can still exhaust the descriptors: the room is
	// a margin.) A round larger than the queue is answered with SYN
	// cookies, and the kernel forgets a connection it then has no room
	// for: its client is reset at its first packet, here its first
	// keepalive probe.
	burst := limit - len(open)
	dialer := net.Dialer{Timeout: time.Minute,
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: time.Second, Interval: time.Second, Count: 3}}
	type result struct {
		first string
		err   error
	}
	results := make(chan result, burst)
	var queued atomic.Int64
	d.Signal(syscall.SIGSTOP)
	for range burst {
		go func() {
			c, err := dialer.Dial("tcp", d.TCP)
			if err != nil {
				results <- result{"", err}
				return
			}
			queued.Add(1)
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(time.Minute))
			first, err := bufio.NewReader(c).ReadString('\n')
			results <- result{strings.TrimSuffix(first, "\r\n"), err}
		}()
	}
	// Until the queue is full: as many queued as it holds, and no more
	// for a while.
	for deadline, last, since := time.Now().Add(waitLimit), int64(-1), time.Now(); ; time.Sleep(10 * time.Millisecond) {
		n := queued.Load()
		if n != last {
			last, since = n, time.Now()
		}
		if n >= int64(backlog)+1 && time.Since(since) > 300*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			d.Signal(syscall.SIGCONT)
			t.Fatalf("%d connections queued of a backlog of %v", n, backlog)
		}
	}
	t.Logf("%d of %d connections queued while stopped", queued.Load(), burst)
	d.Signal(syscall.SIGCONT)
	forgotten := 0
	for range burst {
		switch r := <-results; {
		case r.err == nil && r.first == serverFull:
			refused++
		case r.first == "" && errors.Is(r.err, syscall.ECONNRESET):
			forgotten++
		default:
			d.failed("a burst of connections", r.first, r.err)
		}
	}
	t.Logf("%d admitted, %d refused, %d of the burst forgotten by the kernel", len(open), refused, forgotten)
	if forgotten > burst-int(backlog)-1 {
		t.Errorf("%d of a burst of %d refused: fewer than the backlog, %v, and one more", burst-forgotten, burst, backlog)
	}

	for _, c := range open {
		c.Close()
	}
	open = nil
	want := map[string]float64{
		`duet_connections_rejected_total{reason="server_full"}`: float64(refused),
		`duet_connections{protocol="line"}`:                     0,
	}
	waitMetrics(t, "http://"+d.Admin+"/metrics", want)

	alice, bob := enginetest.PairWS(t, &enginetest.Daemon{TCP: d.TCP, WS: d.WS, Resume: true}) // duetd has resume on by default
	alice.Say("still here")
	if ev := bob.Expect("message"); ev["text"] != "still here" {
		t.Fatalf("message %v", ev)
	}

	d.Signal(syscall.SIGTERM)
	if code := d.WaitExit(waitLimit); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

// TestAdminFloodLeavesTheEngine: the admin port serves
// service.AdminConns connections at once, the number the daemon keeps
// descriptors aside for, and makes the rest wait. A duetd under a low
// descriptor limit is filled with line connections to its share, then
// held hundreds of admin connections that send nothing. Before, the
// admin listener took a descriptor for each, those the engine's share
// counts on among them, and the next line connection's accept failed
// for want of one, which stops the engine. Now it is refused
// server_full, as before the flood; once the admin connections close,
// /metrics answers, and once the line connections do, two users pair.
func TestAdminFloodLeavesTheEngine(t *testing.T) {
	const limit = 200
	d := startLimited(t, limit, "limits:\n  max_conns_per_ip: 100000\n")
	var open []net.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for i := 0; ; i++ {
		c, first, err := dialLine(d)
		if err == nil && strings.HasPrefix(first, "* welcome to duet") {
			open = append(open, c)
			continue
		}
		if err == nil && first == serverFull {
			c.Close()
			break
		}
		d.failed(fmt.Sprintf("connection %d", i+1), first, err)
	}
	var admin []net.Conn
	for range limit + 50 {
		c, err := net.DialTimeout("tcp", d.Admin, waitLimit)
		if err != nil {
			t.Fatal(err)
		}
		admin = append(admin, c)
	}
	// Time for the admin listener to accept what it will.
	time.Sleep(time.Second)
	c, first, err := dialLine(d)
	if err != nil || first != serverFull {
		d.failed(fmt.Sprintf("a line connection with %d open and %d admin connections held", len(open), len(admin)), first, err)
	}
	c.Close()
	if d.logged(0, "the engine is stopping on an error; ending every connection as a stop does") {
		t.Fatal("the engine stopped")
	}
	for _, c := range admin {
		c.Close()
	}
	waitMetrics(t, "http://"+d.Admin+"/metrics", map[string]float64{`duet_connections{protocol="line"}`: float64(len(open))})
	for _, c := range open {
		c.Close()
	}
	open = nil
	alice, bob := enginetest.PairWS(t, &enginetest.Daemon{TCP: d.TCP, WS: d.WS, Resume: true})
	alice.Say("still here")
	if ev := bob.Expect("message"); ev["text"] != "still here" {
		t.Fatalf("message %v", ev)
	}
}
