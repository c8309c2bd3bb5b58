package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"duet/engine/auth"
	"duet/engine/auth/authtest"
	"duet/engine/enginetest"
	"duet/engine/hub"
	"duet/proto"
)

// restartingRE is what a line client is told as a single node with a
// state file stops.
var restartingRE = regexp.MustCompile(`^\* the server is restarting; reconnect and type /resume ([0-9a-z]{26}) within \w+$`)

// stateFileConfig is the config of a single node that keeps its
// sessions in sf across a restart, its drain all at once and its stop
// within five seconds.
func stateFileConfig(sf string) string {
	return fmt.Sprintf("shutdown_timeout: 5s\nshutdown:\n  drain_period: 0s\nresume:\n  state_file: %q\n", sf)
}

// pairTerminalAndPage logs alice in on cl's line port and bob on its
// web port, and pairs them.
func pairTerminalAndPage(t *testing.T, cl *enginetest.Daemon) (alice *enginetest.LineClient, bob *enginetest.WSClient) {
	t.Helper()
	alice = cl.DialLine(t).Login("alice")
	bob = cl.DialWS(t).Login("bob")
	bob.Connect(alice.Token)
	alice.Expect(`^\* bob is connected$`)
	bob.Expect("paired")
	return alice, bob
}

// TestRestartKeepsConversations: the real binary, on a single node
// with resume.state_file, is stopped with SIGTERM and started again on
// the same addresses. Every client is told to reconnect and resume;
// the file is written 0600, and gone once the next process has taken
// it up. A terminal and a page resume there, are told they are with
// each other still, and talk on; a message sent before the restart
// that the terminal never read is replayed to it. Two pages' pairing
// is told by the same id, so their encryption goes on, and a seal
// reaches the partner. (Before, a restart ended every conversation.)
func TestRestartKeepsConversations(t *testing.T) {
	sf := filepath.Join(t.TempDir(), "sessions")
	extra := stateFileConfig(sf)
	d1 := startDaemon(t, extra)
	d1.WaitReady()
	cl := &enginetest.Daemon{TCP: d1.TCP, WS: d1.WS, Resume: true}
	alice, bob := pairTerminalAndPage(t, cl)
	carol := cl.DialWS(t).Login("carol")
	dan := cl.DialWS(t).Login("dan")
	dan.Connect(carol.Token)
	id := carol.Expect("paired")["pair_id"]
	if ev := dan.Expect("paired"); ev["pair_id"] != id || id == nil || ev["peer_proto"] != "json" {
		t.Fatalf("dan: %v", ev)
	}
	alice.Send("before the restart")
	if ev := bob.Expect("message"); ev["text"] != "before the restart" {
		t.Fatalf("bob: %v", ev)
	}
	bob.Say("you will read this after it")

	d1.Signal(syscall.SIGTERM)
	var aliceKey string
	for aliceKey == "" {
		if m := restartingRE.FindStringSubmatch(alice.Line()); m != nil {
			aliceKey = m[1]
		}
	}
	for _, wc := range []*enginetest.WSClient{bob, carol, dan} {
		if code, _ := wc.ReadUntilClose(func(map[string]any) {}); code != 1012 {
			t.Errorf("%s closed with %d, want 1012 (service restart)", wc.Name, code)
		}
	}
	if code := d1.WaitExit(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if st, err := os.Stat(sf); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("the state file: %v, %v", st, err)
	}

	d2 := startDaemonAt(t, d1.TCP, d1.WS, "", extra)
	d2.WaitReady()
	if e, _ := d2.WaitLog(0, "took up the sessions the previous process kept"); e["sessions"] != float64(4) {
		t.Fatalf("the next process says %v", e)
	}
	if _, err := os.Stat(sf); !os.IsNotExist(err) {
		t.Fatalf("the state file is still there after its sessions were taken up: %v", err)
	}
	cl = &enginetest.Daemon{TCP: d2.TCP, WS: d2.WS, Resume: true}
	back, bback := resumeBoth(t, cl, aliceKey, bob.Key)
	bback.Say("so it is")
	back.Expect(`^<bob> so it is$`)

	cback, ev := enginetest.ResumeWS(t, cl, carol.Key, 0)
	if ev["peer"] != "dan" || ev["pair_id"] != id || ev["peer_proto"] != "json" {
		t.Fatalf("carol resumed: %v", ev)
	}
	// dan is not back yet: carol's seal is kept for him.
	cback.Send(map[string]string{"type": "seal", "data": "c2VhbGVk"})
	dback, ev := enginetest.ResumeWS(t, cl, dan.Key, 0)
	if ev["peer"] != "carol" || ev["pair_id"] != id {
		t.Fatalf("dan resumed: %v", ev)
	}
	if ev := dback.Expect("sealed"); ev["data"] != "c2VhbGVk" {
		t.Fatalf("dan: %v", ev)
	}
}

// resumeBoth resumes alice's line session (key aliceKey) and bob's
// page's (bobKey) on cl, after a restart: alice is replayed bob's
// "you will read this after it", which she never read, and told his
// server is restarting, then that he is back; and what she sends
// reaches him.
func resumeBoth(t *testing.T, cl *enginetest.Daemon, aliceKey, bobKey string) (alice *enginetest.LineClient, bob *enginetest.WSClient) {
	t.Helper()
	alice, peer, replayed, missed := enginetest.ResumeLine(t, cl, aliceKey)
	if peer != "bob" || missed != 0 || len(replayed) == 0 || replayed[len(replayed)-1] != "<bob> you will read this after it" {
		t.Fatalf("alice resumed with %q, replayed %q, %d missed", peer, replayed, missed)
	}
	// bob is not back yet: alice is told he is away, for the restart
	// (he lost no connection), then that he is back.
	alice.Expect(`^\* bob's server is restarting; waiting up to \w+ for bob to come back$`)
	bob, ev := enginetest.ResumeWS(t, cl, bobKey, 1)
	if ev["peer"] != "alice" {
		t.Fatalf("bob resumed: %v", ev)
	}
	alice.Expect(`^\* bob is back$`)
	alice.Send("after the restart")
	if ev := bob.Expect("message"); ev["text"] != "after the restart" {
		t.Fatalf("bob: %v", ev)
	}
	return alice, bob
}

// TestUnreadableStateFileIsDropped: a state file that is not one duetd
// wrote (cut short by a full disk, or anything else) is logged and
// deleted, and the node starts with no sessions rather than some; a
// state file that is missing is no error at all.
func TestUnreadableStateFileIsDropped(t *testing.T) {
	sf := filepath.Join(t.TempDir(), "sessions")
	core, logs := observer.New(zap.InfoLevel)
	h := hub.New(hub.Options{ResumeWindow: time.Minute})
	restoreState(sf, h, nil, zap.New(core))
	if n := logs.Len(); n != 0 {
		t.Fatalf("a missing state file logged %v", logs.All())
	}
	if err := os.WriteFile(sf, []byte("DS\x01junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	restoreState(sf, h, nil, zap.New(core))
	if got := logs.FilterMessage("cannot read the state file; its sessions are lost").Len(); got != 1 {
		t.Fatalf("logged %v", logs.All())
	}
	if _, err := os.Stat(sf); !os.IsNotExist(err) {
		t.Fatalf("the unreadable state file is still there: %v", err)
	}
	if st := h.Stats(); st.Users != 0 {
		t.Fatalf("took up %d sessions", st.Users)
	}
}

// TestStaleStateIsRemoved: what a process killed while writing the state
// left beside the state file, with its users' messages in it, is
// removed at the next start; the state file itself, and other files,
// are not.
func TestStaleStateIsRemoved(t *testing.T) {
	dir := t.TempDir()
	sf := filepath.Join(dir, "sessions")
	stale := filepath.Join(dir, ".duetd-state-3375873797")
	other := filepath.Join(dir, "notes")
	for _, name := range []string{sf, stale, other} {
		if err := os.WriteFile(name, []byte("yyyyyyyy"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	removeStaleState(sf)
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("the half-written state is still there: %v", err)
	}
	for _, name := range []string{sf, other} {
		if _, err := os.Stat(name); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// TestRestoreKeepsOnlyAccounts: in accounts mode, a restart takes up
// only the sessions of accounts the users file has now (removing an
// account and restarting shuts its user out at once, AUTH.md), and none
// from a state written in open mode, whose sessions proved no password:
// whoever took alice's name before the switch does not keep it from
// alice.
func TestRestoreKeepsOnlyAccounts(t *testing.T) {
	users := authtest.Users(t, "alice", "pw-alice", "bob", "pw-bob")
	accounts, err := auth.Load(users)
	if err != nil {
		t.Fatal(err)
	}
	opts := hub.Options{ResumeWindow: time.Minute}
	write := func(mode string, names ...string) string {
		h := hub.New(opts)
		for _, name := range names {
			s, err := h.Login([]byte(name), discard{})
			if err != nil {
				t.Fatal(err)
			}
			s.Detach(proto.ReasonDisconnected, 0)
		}
		var b bytes.Buffer
		b.WriteString(authLine + mode + "\n")
		if err := hub.WriteState(&b, time.Now(), h.Snapshot()); err != nil {
			t.Fatal(err)
		}
		sf := filepath.Join(t.TempDir(), "sessions")
		if err := os.WriteFile(sf, b.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		return sf
	}
	for _, tc := range []struct {
		name, mode string
		accounts   *auth.Accounts
		want       int
	}{
		{"accounts mode, an account removed", "accounts", accounts, 2},
		{"accounts mode, from open mode", "open", accounts, 0},
		{"open mode", "open", nil, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sf := write(tc.mode, "alice", "bob", "carol") // carol is no account
			h := hub.New(opts)
			restoreState(sf, h, tc.accounts, zap.NewNop())
			if st := h.Stats(); st.Users != tc.want {
				t.Fatalf("took up %d sessions, want %d", st.Users, tc.want)
			}
		})
	}
}

// TestRestoreRefusesAPlantedStateFile performs the attack a state file
// in a directory others can write to would allow: someone writes a
// file holding a session of alice's, whose resume key they chose, for
// the next start to take up, and resumes it, in accounts mode a login
// as alice without her password. A file others may write, or another
// user owns, is not taken up, and is left for the operator; duetd's own
// is.
func TestRestoreRefusesAPlantedStateFile(t *testing.T) {
	users := authtest.Users(t, "alice", "pw-alice")
	accounts, err := auth.Load(users)
	if err != nil {
		t.Fatal(err)
	}
	opts := hub.Options{ResumeWindow: time.Minute}
	planted := hub.New(opts)
	var welcome keyBox
	s, perr := planted.Login([]byte("alice"), &welcome)
	if perr != nil || welcome.key == "" {
		t.Fatalf("login: %v, resume key %q", perr, welcome.key)
	}
	s.Detach(proto.ReasonDisconnected, 0)
	var b bytes.Buffer
	b.WriteString(authLine + "accounts\n")
	if err := hub.WriteState(&b, time.Now(), planted.Snapshot()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, sf string)
		taken bool
	}{
		{"written by duetd's user, 0600", func(t *testing.T, sf string) {}, true},
		{"writable by others", func(t *testing.T, sf string) { os.Chmod(sf, 0o666) }, false},
		{"writable by its group", func(t *testing.T, sf string) { os.Chmod(sf, 0o620) }, false},
		{"owned by another user", func(t *testing.T, sf string) {
			if os.Geteuid() != 0 {
				t.Skip("giving a file to another user takes root, as CI runs")
			}
			if err := os.Chown(sf, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sf := filepath.Join(t.TempDir(), "sessions")
			if err := os.WriteFile(sf, b.Bytes(), 0o600); err != nil {
				t.Fatal(err)
			}
			tc.plant(t, sf)
			h := hub.New(opts)
			core, logs := observer.New(zap.InfoLevel)
			took := restoreState(sf, h, accounts, zap.New(core))
			_, resumeErr := h.Resume([]byte(welcome.key), 0, false, discard{})
			if tc.taken {
				if !took || resumeErr != nil {
					t.Fatalf("duetd's own state file: took %v, resume %v", took, resumeErr)
				}
				return
			}
			if took || resumeErr == nil {
				t.Fatalf("a planted state file was taken up (%v), and alice's session resumed with the planter's key (%v)", took, resumeErr)
			}
			if logs.FilterMessage("the state file is not one this process's user alone could have written; its sessions are not taken up").Len() != 1 {
				t.Errorf("logged %v", logs.All())
			}
			if _, err := os.Stat(sf); err != nil {
				t.Errorf("the planted file is gone: %v; it is left for the operator", err)
			}
		})
	}
}

// keyBox keeps the resume key a login is welcomed with.
type keyBox struct{ key string }

func (b *keyBox) Deliver(ev *proto.Event) {
	if ev.ResumeKey != "" {
		b.key = ev.ResumeKey
	}
}

type discard struct{}

func (discard) Deliver(*proto.Event) {}

// TestStopWithAStalledReaderKeepsTheDeadline: a single node with a state
// file stops within shutdown_timeout, its drain and the writing of its
// sessions included, even when a reader that stopped reading holds the
// drain to the end of it. (The shutdown after the drain used to get a
// deadline of its own: twice shutdown_timeout, past the unit's
// TimeoutStopSec with the defaults.)
func TestStopWithAStalledReaderKeepsTheDeadline(t *testing.T) {
	sf := filepath.Join(t.TempDir(), "sessions")
	d := startDaemon(t, fmt.Sprintf("shutdown_timeout: 2s\nshutdown:\n  drain_period: 0s\nresume:\n  state_file: %q\n", sf))
	d.WaitReady()
	cl := &enginetest.Daemon{TCP: d.TCP, WS: d.WS, Resume: true}
	alice := cl.DialLine(t)
	enginetest.SmallWindow(t, alice.Conn)
	alice.Login("alice")
	bob := cl.DialLine(t).Login("bob")
	bob.Send("/connect " + alice.Token)
	bob.Expect(`^\* you are connected with alice$`)
	alice.Expect(`^\* bob is connected$`)
	// alice reads nothing more; bob says megabytes to her.
	enginetest.SendNumbered(t, bob.Conn, 20000)
	start := time.Now()
	d.Signal(syscall.SIGTERM)
	d.WaitExit(20 * time.Second)
	if took := time.Since(start); took > 3500*time.Millisecond {
		t.Errorf("the stop took %v with shutdown_timeout 2s", took)
	}
	if _, err := os.Stat(sf); err != nil {
		t.Errorf("the sessions were not kept: %v", err)
	}
}

// TestFailedStartKeepsTheState: a start that takes up the state file and
// then cannot bind (its admin address is taken) leaves the sessions for
// the next start, where the client resumes.
func TestFailedStartKeepsTheState(t *testing.T) {
	sf := filepath.Join(t.TempDir(), "sessions")
	extra := stateFileConfig(sf)
	d1 := startDaemon(t, extra)
	d1.WaitReady()
	alice := (&enginetest.Daemon{TCP: d1.TCP, WS: d1.WS, Resume: true}).DialLine(t).Login("alice")
	d1.Signal(syscall.SIGTERM)
	var key string
	for key == "" {
		if m := restartingRE.FindStringSubmatch(alice.Line()); m != nil {
			key = m[1]
		}
	}
	d1.WaitExit(10 * time.Second)

	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d2 := startDaemonAt(t, d1.TCP, d1.WS, busy.Addr().String(), extra)
	if code := d2.WaitExit(10 * time.Second); code == 0 {
		t.Fatal("a start whose admin address is taken started")
	}
	busy.Close()
	if _, err := os.Stat(sf); err != nil {
		t.Fatalf("the failed start lost the state file: %v", err)
	}

	d3 := startDaemonAt(t, d1.TCP, d1.WS, "", extra)
	d3.WaitReady()
	back := (&enginetest.Daemon{TCP: d3.TCP, WS: d3.WS, Resume: true}).DialLine(t)
	back.Send("/resume " + key)
	back.Expect(`^\* resumed: you are alice, `)
	if _, err := os.Stat(sf); !os.IsNotExist(err) {
		t.Fatalf("the state file is still there once taken up: %v", err)
	}
}

// TestReloadedAuthModeDoesNotLabelTheStateFile: auth.mode changes only on
// restart, so a stop after a reload that switched it to accounts mode
// still stops an open-mode node, and its state file must say so. (The
// file was labelled with the mode last loaded: the next process, in
// accounts mode, took up the open-mode session of whoever had logged in
// as alice without a password, and handed them alice's account.)
func TestReloadedAuthModeDoesNotLabelTheStateFile(t *testing.T) {
	sf := filepath.Join(t.TempDir(), "sessions")
	users := authtest.Users(t, "alice", "pw-alice")
	open := fmt.Sprintf("shutdown:\n  drain_period: 0s\nresume:\n  state_file: %q\n", sf)
	accounts := open + fmt.Sprintf("auth:\n  mode: accounts\n  users_file: %q\n", users)
	d1 := startDaemon(t, open)
	d1.WaitReady()
	cl := &enginetest.Daemon{TCP: d1.TCP, WS: d1.WS, Resume: true}
	mallory := cl.DialLine(t).Login("alice") // open mode: no password
	d1.writeConfig(accounts)
	d1.Signal(syscall.SIGHUP)
	d1.WaitLog(0, "configuration reloaded")
	d1.Signal(syscall.SIGTERM)
	var key string
	for key == "" {
		if m := restartingRE.FindStringSubmatch(mallory.Line()); m != nil {
			key = m[1]
		}
	}
	if code := d1.WaitExit(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	d2 := startDaemonAt(t, d1.TCP, d1.WS, "", accounts)
	d2.WaitReady()
	m2 := (&enginetest.Daemon{TCP: d2.TCP, WS: d2.WS, Resume: true}).DialLine(t)
	m2.Send("/resume " + key)
	if l := m2.Line(); strings.HasPrefix(l, "* resumed:") {
		t.Fatalf("a session that logged in without a password in open mode was taken up in accounts mode: %q", l)
	}
	d2.WaitLog(0, "sessions in the state file that are not accounts now are not taken up")
}

// TestRestoreLeavesADirectory: a state file that cannot be read is
// deleted, but only if it is a file: a directory named by mistake is
// left as it was, however it got past checkStateDir.
func TestRestoreLeavesADirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sessions")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if restoreState(dir, hub.New(hub.Options{ResumeWindow: time.Minute}), nil, zap.NewNop()) {
		t.Error("took up a directory")
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		t.Errorf("the directory: %v, %v", st, err)
	}
}
