package main

// Tests of what an operator meets first: the command line, check-config,
// a start that cannot bind, and the warnings of a start and a reload.

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"duet/config"
	"duet/engine/auth/authtest"
	"duet/engine/enginetest"
)

// runDuetd runs the binary to its end with args and env added to a
// DUETD_-free environment, and returns its exit code and output.
func runDuetd(t *testing.T, args []string, env ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(duetdBinary(t), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DUETD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errOut.String()
}

// TestCommandLine: version and help are asked for the usual ways, print
// to stdout and exit 0; anything else that is not a command is an error
// on stderr, exit 2, with a pointer to the help.
func TestCommandLine(t *testing.T) {
	tests := []struct {
		args   []string
		code   int
		stdout string // patterns
		stderr string
	}{
		{[]string{"version"}, 0, `^duetd \S+\n$`, `^$`},
		{[]string{"--version"}, 0, `^duetd \S+\n$`, `^$`},
		{[]string{"--config", "/nonexistent.yaml", "--version"}, 0, `^duetd \S+\n$`, `^$`},
		{[]string{"help"}, 0, `(?s)^duetd pairs.*Usage:\n.*duetd check-config.*--tcp-listen.*DUETD_TCP_LISTEN.*lists every key.*scripts/duetd\.yaml`, `^$`},
		{[]string{"-h"}, 0, `(?s)^duetd pairs.*Usage:.*--admin-listen`, `^$`},
		{[]string{"--help"}, 0, `(?s)^duetd pairs.*Usage:.*--admin-listen`, `^$`},
		{[]string{"check-config", "--help"}, 0, `(?s)^duetd pairs.*Usage:`, `^$`},
		{[]string{"run", "--help"}, 0, `(?s)^duetd pairs.*Usage:`, `^$`},
		{[]string{"serve"}, 2, `^$`, `^duetd: unknown command "serve"\nRun 'duetd help' for usage\.\n$`},
		{[]string{"--tcp-listn", ":7000"}, 2, `^$`, `unknown flag: --tcp-listn\nRun 'duetd help' for usage\.\n$`},
		{[]string{"check-config", "extra"}, 2, `^$`, `unexpected argument "extra"\nRun 'duetd help'`},
		{[]string{"--log-level", "debug", "check-config"}, 2, `^$`, `unexpected argument "check-config"\nThe command goes before the flags: duetd check-config \[flags\]\.\nRun 'duetd help'`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runDuetd(t, tt.args)
			if code != tt.code {
				t.Errorf("exit code %d, want %d; stderr %q", code, tt.code, stderr)
			}
			if !regexp.MustCompile(tt.stdout).MatchString(stdout) {
				t.Errorf("stdout %q does not match %q", stdout, tt.stdout)
			}
			if !regexp.MustCompile(tt.stderr).MatchString(stderr) {
				t.Errorf("stderr %q does not match %q", stderr, tt.stderr)
			}
		})
	}
}

// TestEveryErrorPrefixed: when the configuration has several problems,
// each is a line of its own that starts with the program's name, as the
// first does, for a reader (or a grep) of a log that holds other
// programs' lines too. A value that does not parse is one of them, and
// the others are still found.
func TestEveryErrorPrefixed(t *testing.T) {
	env := []string{"DUETD_LIMITS_MAX_TEXT=abc", "DUETD_LOG_LEVEL=loud", "DUETD_LIMITS_MAX_CONNS=0", "DUETD_AUTH_MODE=nobody"}
	for _, args := range [][]string{{"check-config"}, {"run", "--admin-listen", ""}} {
		code, _, stderr := runDuetd(t, args, env...)
		want := "duetd: config: limits.max_text: want a whole number, got \"abc\" from DUETD_LIMITS_MAX_TEXT\n" +
			"duetd: config: log.level: want debug, info, warn or error, got \"loud\" (set from DUETD_LOG_LEVEL)\n" +
			"duetd: config: limits.max_conns: must be greater than 0, got 0 (set from DUETD_LIMITS_MAX_CONNS)\n" +
			"duetd: config: auth.mode: want open or accounts, got \"nobody\" (set from DUETD_AUTH_MODE)\n"
		if code != exitConfig || stderr != want {
			t.Errorf("%v: exit code %d, stderr\n%s\nwant %d and\n%s", args, code, stderr, exitConfig, want)
		}
	}
}

// TestCheckConfigChecksWhatStartChecks: for each configuration, check-config
// and a start give the same verdict, and a refusal names what to fix.
// check-config prints the effective value of every key, computed ones
// included, and the warnings a start would log.
func TestCheckConfigChecksWhatStartChecks(t *testing.T) {
	htpasswd := requireTool(t, "htpasswd")
	dir := t.TempDir()
	good := filepath.Join(dir, "users")
	for i, user := range []string{"alice", "bob"} {
		args := []string{"-b", "-B", good, user, "pw-" + user}
		if i == 0 {
			args = []string{"-b", "-B", "-c", good, user, "pw-" + user}
		}
		if out, err := exec.Command(htpasswd, args...).CombinedOutput(); err != nil {
			t.Fatalf("htpasswd: %v\n%s", err, out)
		}
	}
	one := filepath.Join(dir, "users-one")
	if out, err := exec.Command(htpasswd, "-b", "-B", "-c", one, "alice", "pw-alice").CombinedOutput(); err != nil {
		t.Fatalf("htpasswd: %v\n%s", err, out)
	}
	// Two bad lines, each to be reported, around a good one.
	twoBad := filepath.Join(dir, "users-two-bad")
	goodLines, err := os.ReadFile(one)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(twoBad, append(append([]byte("carol:$apr1$salt$hash\n"), goodLines...), "dave:secret\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	md5 := filepath.Join(dir, "users-md5")
	if out, err := exec.Command(htpasswd, "-b", "-m", "-c", md5, "carol", "pw").CombinedOutput(); err != nil {
		t.Fatalf("htpasswd: %v\n%s", err, out)
	}
	write := func(name, yaml string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("tcp:\n  listen: 127.0.0.1:0\nws:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\n"+yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// An empty directory: a start used to delete it, taking it for a
	// state file it could not read.
	stateDir := filepath.Join(dir, "statedir")
	if err := os.Mkdir(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	tests := []struct {
		name   string
		yaml   string
		env    []string
		ok     bool
		stdout string // check-config's, when ok
		stderr string // both, pattern
	}{
		{name: "md5 users file", yaml: "auth:\n  mode: accounts\n  users_file: " + md5 + "\n",
			stderr: `users-md5:1: user "carol": MD5 .*only bcrypt is accepted`},
		{name: "users file with two bad lines", yaml: "auth:\n  mode: accounts\n  users_file: " + twoBad + "\n",
			stderr: `auth\.users_file: .*users-two-bad:1: user "carol": MD5 .*only bcrypt is accepted.*\n` +
				`(duetd: )?auth\.users_file: .*users-two-bad:3: user "dave": plain-text or unknown hash`},
		{name: "missing users file", yaml: "auth:\n  mode: accounts\n  users_file: " + filepath.Join(dir, "none") + "\n",
			stderr: `auth\.users_file: .*none: no such file or directory; create it with its first user: htpasswd -B -c .*none NAME`},
		{name: "bcrypt users file", yaml: "auth:\n  mode: accounts\n  users_file: " + good + "\n", ok: true,
			stdout: `(?m)^auth\.users_file\s+"` + regexp.QuoteMeta(good) + `"\s+file\s+# 2 accounts$`},
		{name: "relative users file", yaml: "auth:\n  mode: accounts\n  users_file: no-such-users\n",
			stderr: `auth\.users_file: open no-such-users: no such file or directory; a relative path is read from the directory duetd runs in \(/ under systemd\): write it in full`},
		{name: "one account", yaml: "auth:\n  mode: accounts\n  users_file: " + one + "\n", ok: true,
			stdout: `(?m)^auth\.users_file\s+"` + regexp.QuoteMeta(one) + `"\s+file\s+# 1 account$`},
		{name: "redis database", yaml: "cluster:\n  redis: redis://:hunter2@127.0.0.1:1/zero\n  secret: 5f0c3b2a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a\n",
			stderr: `cluster\.redis: invalid database number`},
		{name: "redis option", yaml: "cluster:\n  redis: rediss://127.0.0.1:1/0?dial_timout=1s\n  secret: 5f0c3b2a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a\n",
			stderr: `cluster\.redis: unexpected option: dial_timout`},
		{name: "trusted proxy", yaml: "trusted_proxies: [\"10.0.0.1\", \"10.0.0.0/33\"]\n",
			stderr: `trusted_proxies: "10\.0\.0\.0/33" is neither an IP address nor a CIDR prefix`},
		{name: "node id computed", yaml: "cluster:\n  redis: rediss://duet:hunter2@127.0.0.1:1/0?dial_timeout=1s\n  secret: 5f0c3b2a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a\n", ok: true,
			stdout: `(?m)^cluster\.node_id\s+"` + regexp.QuoteMeta(host) + `-[0-9a-f]{6}"\s+computed\s+# the hostname and a random suffix, new at each start$`},
		{name: "node id set", yaml: "cluster:\n  node_id: web1\n", ok: true,
			stdout: `(?m)^cluster\.node_id\s+"web1"\s+file$`},
		{name: "trusted proxies wide open", yaml: "trusted_proxies: [\"0.0.0.0/0\"]\n", ok: true,
			stdout: `(?m)^trusted_proxies\s+\["0\.0\.0\.0/0"\]\s+file$`,
			stderr: `config: trusted_proxies: "0\.0\.0\.0/0" trusts every IPv4 address: any client there can claim any address`},
		{name: "state file where none can be written", yaml: "resume:\n  state_file: " + filepath.Join(dir, "none", "state") + "\n",
			stderr: `resume\.state_file: cannot write beside .*/none/state: .*no such file or directory; ` +
				`create .*/none writable by the user duetd runs as \(the systemd unit makes /var/lib/duetd: StateDirectory\), ` +
				`or set resume\.state_file: "" \(DUETD_RESUME_STATE_FILE=\) to end every session at a stop`},
		{name: "state file naming a directory", yaml: "resume:\n  state_file: " + stateDir + "\n",
			stderr: `resume\.state_file: .*/statedir is a directory; name a file in it, such as .*/statedir/sessions`},
		{name: "state file ending in a separator", yaml: "resume:\n  state_file: " + filepath.Join(dir, "newdir") + "/\n",
			stderr: `resume\.state_file: .*/newdir/ ends in "/", so it names a directory; name a file in it, such as .*/newdir/sessions`},
		{name: "users file in open mode", yaml: "auth:\n  users_file: " + good + "\n", ok: true,
			stdout: `(?m)^auth\.mode\s+"open"\s+default$`,
			stderr: `config: auth\.users_file: is set but auth\.mode is open: the file is ignored and anyone may log in under any free name; set auth\.mode: accounts`},
		{name: "unknown variable", env: []string{"DUETD_LIMITS_MAX_LINES=32768"}, ok: true,
			stdout: `(?m)^limits\.max_line\s+16384\s+default$`,
			stderr: `config: DUETD_LIMITS_MAX_LINES: names no key, so it is ignored; did you mean DUETD_LIMITS_MAX_LINE\?`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf := write(strings.ReplaceAll(tt.name, " ", "-")+".yaml", tt.yaml)
			code, stdout, stderr := runDuetd(t, []string{"check-config", "--config", conf}, tt.env...)
			if tt.ok != (code == 0) || (!tt.ok && code != 2) {
				t.Fatalf("check-config exit code %d; stderr %q", code, stderr)
			}
			if strings.Contains(stdout+stderr, "hunter2") {
				t.Errorf("a password shows:\n%s%s", stdout, stderr)
			}
			if !regexp.MustCompile(tt.stdout).MatchString(stdout) {
				t.Errorf("stdout does not match %q:\n%s", tt.stdout, stdout)
			}
			if !regexp.MustCompile(tt.stderr).MatchString(stderr) {
				t.Errorf("stderr %q does not match %q", stderr, tt.stderr)
			}
			if tt.ok {
				// A start with the same file starts, warning as check-config did.
				d := startDaemonAt(t, "", "", "", tt.yaml, tt.env...)
				d.WaitReady()
				if tt.stderr != "" && !regexp.MustCompile(tt.stderr).MatchString(logText(strings.Join(d.Lines(), "\n"))) {
					t.Errorf("the start did not warn %q", tt.stderr)
				}
				return
			}
			code, _, stderr = runDuetd(t, []string{"--config", conf}, tt.env...)
			if code != 2 || !regexp.MustCompile(tt.stderr).MatchString(logText(stderr)) {
				t.Errorf("start: exit code %d, stderr %q", code, stderr)
			}
			if strings.Contains(stderr, "listening") {
				t.Errorf("a start that failed said it listens: %s", stderr)
			}
		})
	}
	if st, err := os.Stat(stateDir); err != nil || !st.IsDir() {
		t.Errorf("the directory named as the state file: %v, %v", st, err)
	}
}

// TestUnreadableUsersFile: a users file the service may not read says
// how to give it to the service. Tests often run as root, which reads
// anything, so the error is made here rather than by a start.
func TestUnreadableUsersFile(t *testing.T) {
	err := usersFileError("/etc/duetd/users", &fs.PathError{Op: "open", Path: "/etc/duetd/users", Err: syscall.EACCES})
	want := "auth.users_file: open /etc/duetd/users: permission denied; the service runs as the duetd user, so give the file to its group: " +
		"chown root:duetd /etc/duetd/users && chmod 0640 /etc/duetd/users (and run check-config with sudo)"
	if err.Error() != want || !errors.Is(err, fs.ErrPermission) {
		t.Errorf("error %q\nwant %q", err, want)
	}
}

// TestLogDurations: a duration in a log line carries its unit, as in the
// configuration, whatever the format.
func TestLogDurations(t *testing.T) {
	for format, want := range map[string]string{"json": `"deadline":"10s"`, "console": `{"deadline": "10s"}`} {
		var out bytes.Buffer
		log, err := newLogger(config.Log{Level: "info", Format: format}, zap.NewAtomicLevel(), &out)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("shutting down", zap.Duration("deadline", 10*time.Second))
		if !strings.Contains(out.String(), want) {
			t.Errorf("%s: %q lacks %s", format, out.String(), want)
		}
	}
}

// TestConsoleLogUncolouredOffATerminal: log.format console written to a
// pipe or a file, not a terminal, holds no terminal escape codes, which
// would be bytes in every line read there; before, each level was
// coloured wherever it went.
func TestConsoleLogUncolouredOffATerminal(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	log, err := newLogger(config.Log{Level: "info", Format: "console"}, zap.NewAtomicLevel(), w)
	if err != nil {
		t.Fatal(err)
	}
	log.Warn("configuration reloaded")
	w.Close()
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "\tWARN\tconfiguration reloaded") || strings.Contains(string(out), "\x1b[") {
		t.Errorf("console log to a pipe: %q", out)
	}
}

// TestBusyPort: a listen address already taken, by another program or by
// duetd started twice, is named with its key and said to be in use; the
// start fails with status 1 and never says it listens.
func TestBusyPort(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	busy := taken.Addr().String()
	for _, key := range []string{"tcp.listen", "ws.listen", "admin.listen"} {
		t.Run(key, func(t *testing.T) {
			var d *daemon
			switch key {
			case "tcp.listen":
				d = startDaemonAt(t, busy, "", "", "")
			case "ws.listen":
				d = startDaemonAt(t, "", busy, "", "")
			case "admin.listen":
				d = startDaemonAt(t, "", "", busy, "")
			}
			checkBusyFailure(t, d, key, busy)
		})
	}
	t.Run("started twice", func(t *testing.T) {
		first := startDaemon(t, "")
		first.WaitReady()
		second := startDaemonAt(t, first.TCP, first.WS, first.Admin, "")
		// The admin listener is bound first, so it is the one named.
		checkBusyFailure(t, second, "admin.listen", first.Admin)
		second = startDaemonAt(t, first.TCP, first.WS, "127.0.0.1:0", "")
		checkBusyFailure(t, second, "tcp.listen", first.TCP)
		if !canDial(first.TCP) || !canDial(first.WS) || !canDial(first.Admin) {
			t.Error("the first duetd stopped listening")
		}
	})
}

// logText turns JSON log lines into plain text, message and error, so
// that patterns need not allow for JSON's escapes; other lines are kept
// as they are.
func logText(lines string) string {
	var b strings.Builder
	for _, l := range strings.Split(lines, "\n") {
		var e logEntry
		if json.Unmarshal([]byte(l), &e) != nil {
			b.WriteString(l + "\n")
			continue
		}
		errText, _ := e["error"].(string)
		b.WriteString(e.msg() + " " + errText + "\n")
	}
	return b.String()
}

func checkBusyFailure(t *testing.T, d *daemon, key, addr string) {
	t.Helper()
	if code := d.WaitExit(waitLimit); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	want := "cannot listen on " + addr + " (" + key + "): address already in use"
	var said bool
	for _, l := range d.Lines() {
		var e logEntry
		if json.Unmarshal([]byte(l), &e) != nil {
			t.Errorf("not a JSON log line: %s", l)
			continue
		}
		if strings.Contains(e.msg(), "listening") {
			t.Errorf("a start that failed logged %q", l)
		}
		if errText, _ := e["error"].(string); e.msg() == "cannot start" && strings.HasPrefix(errText, want) {
			said = true
			// And how to choose another address.
			flag := "--" + strings.ReplaceAll(key, ".", "-")
			if how, _ := e["choose_another_with"].(string); !strings.HasPrefix(how, flag+", DUETD_") {
				t.Errorf("choose_another_with is %q, want %s first", how, flag)
			}
		}
	}
	if !said {
		t.Errorf("no log line says %q:\n%s", want, strings.Join(d.Lines(), "\n"))
	}
}

// TestReloadNamesKeys: a reload's warnings name their key; a listen
// address is compared with the socket bound, not with the last file; and
// the closing log line lists every key that changed.
func TestReloadNamesKeys(t *testing.T) {
	d := startDaemon(t, "", "DUETD_LIMITS_MAX_LINES=1")
	d.WaitReady()
	e, next := d.WaitLog(0, "config: DUETD_LIMITS_MAX_LINES: names no key, so it is ignored; did you mean DUETD_LIMITS_MAX_LINE?")
	if e["key"] != "DUETD_LIMITS_MAX_LINES" || e.level() != "warn" {
		t.Errorf("start warning %v", e)
	}
	// What a start warns of besides (a descriptor limit lower than
	// limits.max_conns needs, say) is logged before it listens.
	_, next = d.WaitLog(next, "admin listening")

	// reload writes the file (listen addresses as bound, then extra),
	// reloads, and returns the warnings logged and the keys changed.
	reload := func(extra string) (warned []string, changed []string) {
		t.Helper()
		d.writeConfig(extra)
		d.Signal(syscall.SIGHUP)
		end, after := d.WaitLog(next, "configuration reloaded")
		lines := d.Lines()[next:after]
		next = after
		for _, l := range lines {
			var e logEntry
			if json.Unmarshal([]byte(l), &e) == nil && e.level() == "warn" {
				key, _ := e["key"].(string)
				if key == "" {
					t.Errorf("warning names no key: %s", l)
				}
				warned = append(warned, key)
			}
		}
		for _, k := range end["changed"].([]any) {
			changed = append(changed, k.(string))
		}
		return warned, changed
	}
	check := func(step string, warned, changed, wantWarned, wantChanged []string) {
		t.Helper()
		if !slices.Equal(warned, wantWarned) {
			t.Errorf("%s: warnings about %q, want %q", step, warned, wantWarned)
		}
		if !slices.Equal(changed, wantChanged) {
			t.Errorf("%s: changed %q, want %q", step, changed, wantChanged)
		}
	}
	bound := d.TCP

	// The file now names the bound ports instead of port 0: the same
	// sockets, so no warning, though the keys did change.
	w, c := reload("log:\n  level: debug\nlimits:\n  max_conns_per_ip: 8\n")
	check("same sockets", w, c, []string{"DUETD_LIMITS_MAX_LINES"},
		[]string{"admin.listen", "limits.max_conns_per_ip", "log.level", "tcp.listen", "ws.listen"})

	// Another TCP address and a restart-only key; takeover set in open
	// mode, which does nothing there and is warned about at each load.
	d.TCP = "127.0.0.1:1"
	w, c = reload("log:\n  level: debug\n  format: console\nlimits:\n  max_conns_per_ip: 8\nauth:\n  takeover: true\n")
	check("new address", w, c, []string{"DUETD_LIMITS_MAX_LINES", "auth.takeover", "tcp.listen", "log.format"},
		[]string{"auth.takeover", "log.format", "tcp.listen"})
	e, _ = d.WaitLog(0, "tcp.listen changes only on restart")
	if e["configured"] != "127.0.0.1:1" || e["listening"] != bound {
		t.Errorf("warning %v", e)
	}

	// The same file again: nothing changed since the last load, but
	// neither is in effect yet, so both are warned about again.
	w, c = reload("log:\n  level: debug\n  format: console\nlimits:\n  max_conns_per_ip: 8\nauth:\n  takeover: true\n")
	check("same file", w, c, []string{"DUETD_LIMITS_MAX_LINES", "auth.takeover", "tcp.listen", "log.format"}, nil)

	// Back to the bound address: no more warning about it.
	d.TCP = bound
	w, c = reload("log:\n  level: debug\nlimits:\n  max_conns_per_ip: 8\nauth:\n  takeover: true\n")
	check("back", w, c, []string{"DUETD_LIMITS_MAX_LINES", "auth.takeover"}, []string{"log.format", "tcp.listen"})

	d.Signal(syscall.SIGTERM)
	if code := d.WaitExit(waitLimit); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

// TestConnectByShareLink: /connect takes the share link the browser
// client shows, as the browser's token box does; malformed tokens are
// answered bad_token and do not count as failed connects, so they never
// bring on the throttle that wrong tokens do.
func TestConnectByShareLink(t *testing.T) {
	d := startDaemon(t, "limits:\n  connect_failures: 3\n")
	d.WaitReady()
	cl := &enginetest.Daemon{TCP: d.TCP, WS: d.WS, Resume: true} // duetd has resume on by default
	alice := cl.DialLine(t).Login("alice")
	bob := cl.DialLine(t).Login("bob")

	for range 10 {
		bob.Send("/connect http://" + d.WS + "/#" + alice.Token[:31])
		bob.Expect(`^! bad_token: `)
		bob.Send("/connect http://" + d.WS + "/#")
		bob.Expect(`^! bad_token: `)
	}
	// Wrong but well-formed tokens are failures: three are answered at
	// once, and the fourth is held and answered throttled.
	wrong := strings.Repeat("0", 31) + "1"
	for range 3 {
		bob.Send("/connect " + wrong)
		bob.Expect(`^! unknown_token: `)
	}
	bob.Send("/connect " + wrong)
	bob.Expect(`^! throttled: `)

	carol := cl.DialLine(t).Login("carol")
	dan := cl.DialLine(t).Login("dan")
	dan.Send("/connect http://" + d.WS + "/#" + strings.ToUpper(carol.Token))
	dan.Expect(`^\* you are connected with carol$`)
	carol.Expect(`^\* dan is connected$`)
}

// TestNoAccountsWarned: a users file with no entry (empty, or its last
// user removed with htpasswd -D) is valid, and nobody can log in: duetd
// says so as a warning, at start and at the reload that empties it,
// rather than in an info line's count alone.
func TestNoAccountsWarned(t *testing.T) {
	const warning = "the users file has no accounts: nobody can log in until one is added (htpasswd -B FILE NAME, then SIGHUP)"
	users := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(users, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "auth:\n  mode: accounts\n  users_file: "+users+"\n")
	d.WaitReady()
	_, from := d.WaitLog(0, warning)

	one := authtest.Users(t, "alice", "pw-alice")
	b, err := os.ReadFile(one)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(users, b, 0o600); err != nil {
		t.Fatal(err)
	}
	d.Signal(syscall.SIGHUP)
	_, from = d.WaitLog(from, "accounts reloaded")
	if err := os.WriteFile(users, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	d.Signal(syscall.SIGHUP)
	d.WaitLog(from, warning)
}
