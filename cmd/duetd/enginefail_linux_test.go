package main

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"duet/engine/enginetest"
)

// failEngine makes d's engine stop on an error, as it does when a
// listener's accept finds no descriptor left: it lowers the running
// process's descriptor limit to the descriptors it holds, then
// connects to the line port until the daemon says its engine is
// stopping. (gnet stops the whole engine when an accept fails so; the
// engine's own cap on connections, taken from the limit at start, is
// no help once the limit is lowered under it.)
func failEngine(t *testing.T, d *daemon) {
	t.Helper()
	pid := d.cmd.Process.Pid
	fds, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	var old unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		t.Fatal(err)
	}
	lowered := unix.Rlimit{Cur: uint64(len(fds)), Max: old.Max}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lowered, nil); err != nil {
		t.Fatal(err)
	}
	from := len(d.Lines())
	for i := 0; !d.logged(from, "the engine is stopping on an error; ending every connection as a stop does"); i++ {
		if i == 20 {
			t.Fatalf("the engine did not stop with the descriptor limit at %d", lowered.Cur)
		}
		if c, err := net.DialTimeout("tcp", d.TCP, time.Second); err == nil {
			defer c.Close()
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// logged reports whether d logged a line whose message is msg, among
// those from index from on.
func (d *daemon) logged(from int, msg string) bool {
	for _, l := range d.Lines()[from:] {
		var e logEntry
		if json.Unmarshal([]byte(l), &e) == nil && e.msg() == msg {
			return true
		}
	}
	return false
}

// TestEngineFailureKeepsConversations: the real binary, on a single
// node with resume.state_file, runs out of descriptors as it accepts a
// connection, and its engine stops. Before, every connection was
// closed without a word (alice was told bob had disconnected, and bob
// nothing), and the daemon exited with every session lost. Now every client is told to
// reconnect and resume, as at a stop, the sessions are written to the
// state file, and the daemon exits 1 (for systemd to start it again);
// the next process takes them up, and the conversation goes on, what
// alice had not read replayed to her.
func TestEngineFailureKeepsConversations(t *testing.T) {
	sf := filepath.Join(t.TempDir(), "sessions")
	extra := stateFileConfig(sf)
	d1 := startDaemon(t, extra)
	d1.WaitReady()
	cl := &enginetest.Daemon{TCP: d1.TCP, WS: d1.WS, Resume: true}
	alice, bob := pairTerminalAndPage(t, cl)
	bob.Say("you will read this after it")

	failEngine(t, d1)
	var aliceKey string
	for aliceKey == "" {
		if m := restartingRE.FindStringSubmatch(alice.Line()); m != nil {
			aliceKey = m[1]
		}
	}
	if code, _ := bob.ReadUntilClose(func(map[string]any) {}); code != 1012 {
		t.Errorf("bob closed with %d, want 1012 (service restart)", code)
	}
	if code := d1.WaitExit(10 * time.Second); code != exitRuntime {
		t.Fatalf("exit code %d, want %d", code, exitRuntime)
	}
	if _, err := os.Stat(sf); err != nil {
		t.Fatalf("the state file: %v", err)
	}

	d2 := startDaemonAt(t, d1.TCP, d1.WS, "", extra)
	d2.WaitReady()
	if e, _ := d2.WaitLog(0, "took up the sessions the previous process kept"); e["sessions"] != float64(2) {
		t.Fatalf("the next process says %v", e)
	}
	resumeBoth(t, &enginetest.Daemon{TCP: d2.TCP, WS: d2.WS, Resume: true}, aliceKey, bob.Key)
}

// TestEngineFailureTellsEveryone: with no state file to keep the
// sessions in, an engine that stops on an error ends every connection
// as a shutdown does: each client, and each partner, is told the
// server is shutting down, rather than one told the other left and the
// other told nothing.
func TestEngineFailureTellsEveryone(t *testing.T) {
	d := startDaemon(t, "shutdown_timeout: 5s\n")
	d.WaitReady()
	alice, bob := pairTerminalAndPage(t, &enginetest.Daemon{TCP: d.TCP, WS: d.WS, Resume: true})

	failEngine(t, d)
	alice.Expect(`^\* the server is shutting down; goodbye$`)
	alice.ExpectClosed()
	shutdown := false
	code, _ := bob.ReadUntilClose(func(ev map[string]any) { shutdown = shutdown || ev["type"] == "shutdown" })
	if !shutdown || code != 1001 {
		t.Errorf("bob was told shutdown: %v, and closed with %d, want 1001 (going away)", shutdown, code)
	}
	if code := d.WaitExit(10 * time.Second); code != exitRuntime {
		t.Fatalf("exit code %d, want %d", code, exitRuntime)
	}
}

// TestClusterEngineFailureParks: on a node of a cluster, an engine that
// stops on an error drains as a stop does: alice's session is parked on
// Redis, she is told to reconnect and resume, and she resumes on the
// other node, still with bob, while the failed node exits 1.
func TestClusterEngineFailureParks(t *testing.T) {
	r := enginetest.StartRedis(t)
	p1, p2 := startDaemon(t, clusterNode(r.URL(), "p1", "0s")), startDaemon(t, clusterNode(r.URL(), "p2", "0s"))
	n2, alice, bob := pairAcrossNodes(t, p1, p2)

	failEngine(t, p1)
	alice.Expect(`^\* the server is restarting; reconnect and type /resume ` + alice.Key + ` within 2m$`)
	alice.ExpectClosed()
	bob.Expect(`^\* alice's server is restarting; waiting up to 2m for alice to come back$`)
	if code := p1.WaitExit(waitLimit); code != exitRuntime {
		t.Fatalf("exit code %d, want %d", code, exitRuntime)
	}
	if e, _ := p1.WaitLog(0, "drained"); e["parked"] != float64(1) {
		t.Fatalf("p1 drained: %v", e)
	}

	resumeOnNode(t, n2, alice, bob)
}
