package main

// Tests of duetd as a process, the way systemd and operators run it: the
// built binary, real signals, real sockets on loopback.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// waitLimit bounds every wait on the process, so a broken daemon fails a
// test instead of hanging it.
const waitLimit = 15 * time.Second

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// duetdBinary builds cmd/duetd once per test run and returns its path.
func duetdBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "duetd-test-")
		if buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(buildDir, "duetd"), ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "duetd")
}

// daemon is a duetd process with its JSON log lines collected. It
// listens on ports the kernel picks; their numbers come from its log.
type daemon struct {
	t    *testing.T
	cmd  *exec.Cmd
	Conf string // the config file

	// Set by WaitReady.
	TCP, WS, Admin string

	mu     sync.Mutex
	lines  []string
	notify chan struct{} // closed and replaced whenever a line arrives
	exited chan struct{}
	err    error // the exit error, once exited is closed
}

// startDaemon runs duetd on free loopback ports with the config YAML
// extra (appended to the listen addresses) and env added to its
// environment. It is killed when the test ends, if still running.
func startDaemon(t *testing.T, extra string, env ...string) *daemon {
	t.Helper()
	return startDaemonAt(t, "", "", "", extra, env...)
}

// startDaemonAt is startDaemon with the listen addresses given; "" is a
// free loopback port.
func startDaemonAt(t *testing.T, tcp, ws, admin, extra string, env ...string) *daemon {
	t.Helper()
	d := newDaemon(t, tcp, ws, admin, extra)
	d.start(exec.Command(duetdBinary(t), "--config", d.Conf), env...)
	return d
}

// newDaemon writes the config file of a daemon that start is to run.
func newDaemon(t *testing.T, tcp, ws, admin, extra string) *daemon {
	t.Helper()
	d := &daemon{t: t, notify: make(chan struct{}), exited: make(chan struct{}), TCP: tcp, WS: ws, Admin: admin}
	d.Conf = filepath.Join(t.TempDir(), "duetd.yaml")
	d.writeConfig(extra)
	return d
}

// start runs cmd, duetd with d's config file or a program that runs it
// in the end, with env added to its environment.
func (d *daemon) start(cmd *exec.Cmd, env ...string) {
	t := d.t
	t.Helper()
	d.cmd = cmd
	// Only the config file counts, and log.format stays "auto": stderr is
	// a pipe here, as under systemd, so the logs must come out as JSON,
	// which WaitLog relies on.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DUETD_") {
			d.cmd.Env = append(d.cmd.Env, kv)
		}
	}
	d.cmd.Env = append(d.cmd.Env, env...)
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go d.collect(stderr)
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			_ = d.cmd.Process.Kill()
			<-d.exited
		}
		if t.Failed() {
			t.Logf("duetd log:\n%s", strings.Join(d.Lines(), "\n"))
		}
	})
}

// writeConfig writes the config file: the bound addresses once known,
// so that a reload keeps them, and extra.
func (d *daemon) writeConfig(extra string) {
	d.t.Helper()
	or0 := func(addr string) string {
		if addr == "" {
			return "127.0.0.1:0"
		}
		return addr
	}
	yaml := fmt.Sprintf("tcp:\n  listen: %q\nws:\n  listen: %q\nadmin:\n  listen: %q\n%s",
		or0(d.TCP), or0(d.WS), or0(d.Admin), extra)
	if err := os.WriteFile(d.Conf, []byte(yaml), 0o644); err != nil {
		d.t.Fatal(err)
	}
}

func (d *daemon) collect(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		d.mu.Lock()
		d.lines = append(d.lines, sc.Text())
		close(d.notify)
		d.notify = make(chan struct{})
		d.mu.Unlock()
	}
	d.err = d.cmd.Wait()
	close(d.exited)
}

// Lines returns the log lines so far.
func (d *daemon) Lines() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.lines...)
}

// logEntry is one JSON log line.
type logEntry map[string]any

func (e logEntry) msg() string   { s, _ := e["msg"].(string); return s }
func (e logEntry) level() string { s, _ := e["level"].(string); return s }

// WaitLog waits for a log line whose message is msg, among those from
// index from on, and returns it with the index after it.
func (d *daemon) WaitLog(from int, msg string) (logEntry, int) {
	d.t.Helper()
	deadline := time.After(waitLimit)
	for {
		d.mu.Lock()
		lines, notify := d.lines, d.notify
		d.mu.Unlock()
		for i := from; i < len(lines); i++ {
			var e logEntry
			if json.Unmarshal([]byte(lines[i]), &e) == nil && e.msg() == msg {
				return e, i + 1
			}
		}
		from = len(lines)
		select {
		case <-notify:
		case <-d.exited:
			d.t.Fatalf("duetd exited (%v) before logging %q", d.err, msg)
		case <-deadline:
			d.t.Fatalf("no log line %q", msg)
		}
	}
}

// WaitReady waits until duetd logs that it listens, and records where.
func (d *daemon) WaitReady() {
	d.t.Helper()
	e, _ := d.WaitLog(0, "duetd listening")
	d.TCP, _ = e["tcp"].(string)
	d.WS, _ = e["ws"].(string)
	e, _ = d.WaitLog(0, "admin listening")
	d.Admin, _ = e["admin"].(string)
	if d.TCP == "" || d.WS == "" || d.Admin == "" {
		d.t.Fatalf("addresses tcp %q ws %q admin %q", d.TCP, d.WS, d.Admin)
	}
}

// Signal sends sig to the process.
func (d *daemon) Signal(sig syscall.Signal) {
	d.t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		d.t.Fatal(err)
	}
}

// WaitExit waits for the process to end within limit and returns its
// exit code.
func (d *daemon) WaitExit(limit time.Duration) int {
	d.t.Helper()
	select {
	case <-d.exited:
		if d.err == nil {
			return 0
		}
		if ee, ok := d.err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		d.t.Fatalf("wait: %v", d.err)
	case <-time.After(limit):
		d.t.Fatalf("duetd did not exit within %v", limit)
	}
	return -1
}

// requireTool returns the path of a program the test needs, or skips the
// test, or fails it when DUET_REQUIRE_TOOLS=1 (CI).
func requireTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p
		}
	}
	if os.Getenv("DUET_REQUIRE_TOOLS") == "1" {
		t.Fatalf("%s is missing and DUET_REQUIRE_TOOLS=1 (scripts/deps.sh installs it)", name)
	}
	t.Skipf("%s is missing; scripts/deps.sh installs it", name)
	return ""
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}
