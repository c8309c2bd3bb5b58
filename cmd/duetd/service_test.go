package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"duet/engine/enginetest"
)

func TestVersionAndCheckConfig(t *testing.T) {
	bin := duetdBinary(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("limits:\n  max_line: -5\n"), 0o644)
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("log:\n  level: debug\n"), 0o644)
	tests := []struct {
		name   string
		args   []string
		env    []string
		code   int
		stdout string // a pattern the output must match
		stderr string
	}{
		{"version", []string{"version"}, nil, 0, `^duetd \S+\n$`, `^$`},
		{"check-config defaults", []string{"check-config"}, nil, 0, `(?m)^tcp\.listen\s+":7070"\s+default$`, `^$`},
		{"check-config file", []string{"check-config", "--config", good}, nil, 0, `(?m)^log\.level\s+"debug"\s+file$`, `^$`},
		{"check-config bad file", []string{"check-config", "--config", bad}, nil, 2, `^$`, `limits\.max_line`},
		{"check-config bad env", []string{"check-config"}, []string{"DUETD_LOG_LEVEL=loud"}, 2, `^$`, `log\.level`},
		{"run with a bad file", []string{"--config", bad}, nil, 2, `^$`, `limits\.max_line`},
		{"missing file", []string{"check-config", "--config", filepath.Join(dir, "none.yaml")}, nil, 2, `^$`, `none\.yaml`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(bin, tt.args...)
			cmd.Env = append(os.Environ(), tt.env...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.code {
				t.Errorf("exit code %d, want %d; stderr %q", code, tt.code, stderr.String())
			}
			if !regexp.MustCompile(tt.stdout).Match(stdout.Bytes()) {
				t.Errorf("stdout %q does not match %q", stdout.String(), tt.stdout)
			}
			if !regexp.MustCompile(tt.stderr).Match(stderr.Bytes()) {
				t.Errorf("stderr %q does not match %q", stderr.String(), tt.stderr)
			}
		})
	}
}

// TestNotify: sd_notify over a real NOTIFY_SOCKET. READY=1 comes only
// once both ports accept connections, then STATUS= and WATCHDOG=1, and
// STOPPING=1 on SIGTERM.
func TestNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	d := startDaemon(t, "", "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=200000")

	// Notifications arrive in order; the first must be READY=1, sent only
	// once both ports accept connections: the test dials them as soon as
	// it reads READY=1, before it reads anything else.
	pc.SetReadDeadline(time.Now().Add(2 * waitLimit))
	buf := make([]byte, 4096)
	n, _, err := pc.ReadFromUnix(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	first := string(buf[:n])
	if first != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", first)
	}
	d.WaitReady() // the addresses; logged before READY=1 was sent
	if !canDial(d.TCP) || !canDial(d.WS) || !canDial(d.Admin) {
		t.Fatal("READY=1 but a port does not accept connections")
	}

	notes := make(chan string, 64)
	go func() {
		defer close(notes)
		for {
			n, _, err := pc.ReadFromUnix(buf)
			if err != nil {
				return
			}
			notes <- string(buf[:n])
		}
	}()
	order := []string{first}
	seen := map[string]bool{}
	for !(seen["STATUS"] && seen["WATCHDOG=1"]) {
		nt, ok := <-notes
		if !ok {
			t.Fatalf("notify socket closed; saw %q", order)
		}
		order = append(order, nt)
		switch {
		case strings.HasPrefix(nt, "STATUS="):
			if !regexp.MustCompile(`^STATUS=\d+ connections, \d+ users, \d+ pairs$`).MatchString(nt) {
				t.Fatalf("status %q", nt)
			}
			seen["STATUS"] = true
		case nt == "WATCHDOG=1":
			seen["WATCHDOG=1"] = true
		}
	}

	d.Signal(syscall.SIGTERM)
	stopping := false
	for nt := range notes {
		if nt == "STOPPING=1" {
			stopping = true
			break
		}
	}
	if !stopping {
		t.Fatal("no STOPPING=1 after SIGTERM")
	}
	if code := d.WaitExit(waitLimit); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

func canDial(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// TestReloadKeepsPairsTalking: SIGHUP applies a new log level at once; a
// bad file is logged and the old configuration kept; a pair connected
// across both reloads keeps talking.
func TestReloadKeepsPairsTalking(t *testing.T) {
	d := startDaemon(t, "log:\n  level: info\n")
	d.WaitReady()
	cl := &enginetest.Daemon{TCP: d.TCP, WS: d.WS, Resume: true} // duetd has resume on by default
	alice := cl.DialLine(t).Login("alice")
	bob := cl.DialWS(t).Login("bob")
	bob.Connect(alice.Token)
	alice.Expect(`^\* bob is connected$`)
	bob.Expect("paired")
	for _, l := range d.Lines() {
		if strings.Contains(l, `"level":"debug"`) {
			t.Fatalf("debug line at info level: %s", l)
		}
	}

	d.writeConfig("log:\n  level: debug\n")
	d.Signal(syscall.SIGHUP)
	_, next := d.WaitLog(0, "configuration reloaded")
	carol := cl.DialLine(t) // a new connection logs at debug now
	e, _ := d.WaitLog(next, "connection opened")
	if e.level() != "debug" || e["conn"] == nil || e["remote"] != "127.0.0.1" {
		t.Fatalf("debug line %v", e)
	}
	carol.Conn.Close()
	alice.Send("still here")
	if ev := bob.Expect("message"); ev["text"] != "still here" {
		t.Fatalf("message %v", ev)
	}

	d.writeConfig("log:\n  level: loud\n")
	d.Signal(syscall.SIGHUP)
	e, next = d.WaitLog(next, "reload failed; keeping the old configuration")
	if !strings.Contains(e["error"].(string), "log.level") {
		t.Errorf("reload error %v does not name the key", e["error"])
	}
	bob.Say("and me")
	alice.Expect(`^<bob> and me$`)
	dave := cl.DialLine(t) // still at debug: the bad file changed nothing
	_, next = d.WaitLog(next, "connection opened")
	dave.Conn.Close()

	// A reload that quiets the log still says it was done, and what it
	// changed; the lines after it are at the new level.
	d.writeConfig("log:\n  level: warn\n")
	d.Signal(syscall.SIGHUP)
	if e, _ = d.WaitLog(next, "configuration reloaded"); !strings.Contains(fmt.Sprint(e["changed"]), "log.level") {
		t.Errorf("the reload to warn logged %v", e)
	}

	d.Signal(syscall.SIGTERM)
	if code := d.WaitExit(waitLimit); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

// TestSIGTERMWithPairs: paired users on both protocols are told the
// server is shutting down, and duetd exits 0 within shutdown_timeout.
// Each user gets that one notice and nothing else: a partner on the same
// node leaving for the same reason adds no "bob's server is shutting
// down; you are free to be joined again" before it.
func TestSIGTERMWithPairs(t *testing.T) {
	d := startDaemon(t, "shutdown_timeout: 5s\n")
	d.WaitReady()
	cl := &enginetest.Daemon{TCP: d.TCP, WS: d.WS, Resume: true} // duetd has resume on by default
	alice := cl.DialLine(t).Login("alice")
	bob := cl.DialWS(t).Login("bob")
	carol := cl.DialLine(t).Login("carol")
	dan := cl.DialLine(t).Login("dan")
	erin := cl.DialWS(t).Login("erin")
	fred := cl.DialWS(t).Login("fred")
	bob.Connect(alice.Token)
	alice.Expect(`is connected`)
	bob.Expect("paired")
	dan.Send("/connect " + carol.Token)
	carol.Expect(`is connected`)
	dan.Expect(`connected with carol`)
	fred.Connect(erin.Token)
	erin.Expect("paired")
	fred.Expect("paired")

	start := time.Now()
	d.Signal(syscall.SIGTERM)
	for _, lc := range []*enginetest.LineClient{alice, carol, dan} {
		if got := restOfLines(t, lc.Conn); !slices.Equal(got, []string{"* the server is shutting down; goodbye"}) {
			t.Errorf("%s got %q, want only the shutdown notice", lc.Name, got)
		}
	}
	for _, wc := range []*enginetest.WSClient{bob, erin, fred} {
		events, closeCode := restOfEvents(t, wc)
		if !slices.Equal(events, []string{`{"type":"shutdown","text":"the server is shutting down; goodbye"}`}) || closeCode != 1001 {
			t.Errorf("%s got %q and close %d, want only a shutdown event and close 1001", wc.Name, events, closeCode)
		}
	}
	if code := d.WaitExit(6 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	t.Logf("stopped in %v", time.Since(start))
}

// restOfLines reads a line-protocol connection to its end and returns
// the lines, without their CR LF.
func restOfLines(t *testing.T, c net.Conn) []string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitLimit))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading to the end: %v (got %q)", err, b)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\r\n"), "\r\n")
}

// restOfEvents reads a WebSocket to its close frame and returns the text
// frames and the close code.
func restOfEvents(t *testing.T, wc *enginetest.WSClient) (events []string, closeCode int) {
	t.Helper()
	wc.Conn.SetReadDeadline(time.Now().Add(waitLimit))
	for {
		f, err := ws.ReadFrame(wc.Conn)
		if err != nil {
			t.Fatalf("reading to the close frame: %v (got %q)", err, events)
		}
		if f.Header.Masked {
			ws.Cipher(f.Payload, f.Header.Mask, 0)
		}
		switch f.Header.OpCode {
		case ws.OpText:
			events = append(events, string(f.Payload))
		case ws.OpClose:
			code, _ := ws.ParseCloseFrameData(f.Payload)
			return events, int(code)
		}
	}
}

// TestMetrics checks /metrics, parsed as Prometheus text, against the
// traffic sent: 3 pairings, 10 messages, a room_full error, one pair
// ended by a leave, a refused connection. Each of the 8 connections is
// counted opened once, by the port it came in on, and each of the 3
// WebSockets upgraded once. /healthz and /readyz answer too.
func TestMetrics(t *testing.T) {
	d := startDaemon(t, "")
	d.WaitReady()
	cl := &enginetest.Daemon{TCP: d.TCP, WS: d.WS, Resume: true} // duetd has resume on by default
	var holders []*enginetest.LineClient
	var joiners []*enginetest.WSClient
	for i := 0; i < 3; i++ {
		h := cl.DialLine(t).Login("holder" + string(rune('a'+i)))
		j := cl.DialWS(t).Login("joiner" + string(rune('a'+i)))
		j.Connect(h.Token)
		h.Expect(`is connected`)
		j.Expect("paired")
		holders, joiners = append(holders, h), append(joiners, j)
	}
	text := "0123456789" // 10 bytes a message
	for i := 0; i < 10; i++ {
		holders[i%3].Send(text)
		joiners[i%3].Expect("message")
	}
	third := cl.DialLine(t).Login("third")
	third.Send("/connect " + holders[0].Token)
	third.Expect(`^! room_full:`)
	// One pair ends: its joiner is told holderc left.
	holders[2].Send("/leave")
	holders[2].Expect(`^\* you left joinerc$`)
	if ev := joiners[2].Expect("peer_left"); ev["reason"] != "left" {
		t.Fatalf("joinerc: %v", ev)
	}
	// A PROXY header from an address that is no trusted proxy.
	c, err := net.Dial("tcp", d.TCP)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("PROXY TCP4 192.0.2.1 127.0.0.1 1 2\r\n"))
	c.SetReadDeadline(time.Now().Add(waitLimit))
	answer, _ := readAll(c)
	if !strings.Contains(answer, "! untrusted_proxy:") {
		t.Fatalf("untrusted PROXY header answered %q", answer)
	}

	want := map[string]float64{
		`duet_pairings_total`: 3,
		`duet_pairs`:          2,
		`duet_pairings_ended_total{reason="left"}`:         1,
		`duet_pairings_ended_total{reason="disconnected"}`: 0,
		`duet_pairings_ended_total{reason="link_lost"}`:    0,
		`duet_users`:                                                7,
		`duet_messages_relayed_total`:                               10,
		`duet_relayed_bytes_total`:                                  100,
		`duet_errors_total{code="room_full"}`:                       1,
		`duet_connections_rejected_total{reason="untrusted_proxy"}`: 1,
		`duet_connections{protocol="line"}`:                         4,
		`duet_connections{protocol="ws"}`:                           3,
		`duet_connections_opened_total{protocol="line"}`:            5,
		`duet_connections_opened_total{protocol="http"}`:            3,
		`duet_ws_upgrades_total`:                                    3,
		`duet_slow_consumer_cuts_total`:                             0,
	}
	got := waitMetrics(t, "http://"+d.Admin+"/metrics", want)
	// An upgrade opens no second connection.
	if v, ok := got[`duet_connections_opened_total{protocol="ws"}`]; ok {
		t.Errorf(`duet_connections_opened_total{protocol="ws"} = %v, want no such series`, v)
	}
	for _, name := range []string{"go_goroutines", "process_open_fds"} {
		if _, ok := got[name]; !ok {
			t.Errorf("no %s", name)
		}
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + d.Admin + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d", path, resp.StatusCode)
		}
	}
}

func readAll(c net.Conn) (string, error) {
	var b strings.Builder
	buf := make([]byte, 1024)
	for {
		n, err := c.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String(), err
		}
	}
}

// waitMetrics scrapes url until its metrics read as want, or fails the
// test with those that do not at waitLimit, and returns the last read.
func waitMetrics(t *testing.T, url string, want map[string]float64) map[string]float64 {
	t.Helper()
	var got map[string]float64
	for deadline := time.Now().Add(waitLimit); ; time.Sleep(50 * time.Millisecond) {
		got = scrape(t, url)
		if matches(got, want) || time.Now().After(deadline) {
			break
		}
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	return got
}

func matches(got, want map[string]float64) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// scrape reads a Prometheus text page into "name{label="value"}" keys.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("content type %q", ct)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			key := name
			if lp := m.GetLabel(); len(lp) > 0 {
				var parts []string
				for _, l := range lp {
					parts = append(parts, l.GetName()+`="`+l.GetValue()+`"`)
				}
				key += "{" + strings.Join(parts, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key] = m.Gauge.GetValue()
			case m.Untyped != nil:
				out[key] = m.Untyped.GetValue()
			default:
				out[key] = -1 // summaries and histograms: present
			}
		}
	}
	return out
}

// TestLogsKeepSecrets: a whole session logged at debug level shows no
// message text, no full token and no resume key, and every connection
// line carries the connection's id and address.
func TestLogsKeepSecrets(t *testing.T) {
	d := startDaemon(t, "log:\n  level: debug\n")
	d.WaitReady()
	cl := &enginetest.Daemon{TCP: d.TCP, WS: d.WS, Resume: true} // duetd has resume on by default
	alice := cl.DialLine(t).Login("alice")
	bob := cl.DialWS(t).Login("bob")
	bob.Connect(alice.Token)
	alice.Expect(`is connected`)
	bob.Expect("paired")
	secrets := []string{"the-secret-plan-is-blue", "tell-no-one-4242"}
	alice.Send(secrets[0])
	bob.Expect("message")
	bob.Say(secrets[1])
	alice.Expect(secrets[1])
	alice.Send("/newtoken")
	newToken := alice.Expect(`^\* your new token is [0-9a-f]{32}; `)[len("* your new token is "):][:32]
	alice.Send("/leave")
	alice.Expect(`you left`)
	bob.Expect("peer_left")
	alice.Send("/quit")
	alice.ExpectClosed()
	bob.Conn.Close()
	// Resumes, with a wrong key and the right one, log no key either.
	wrong := strings.Repeat("w", 26)
	back := cl.DialLine(t)
	back.Send("/resume " + wrong)
	back.Expect(`^! bad_resume_key: `)
	back.Send("/resume " + bob.Key)
	back.Expect(`^\* resumed: you are bob`)
	var newKey string
	for newKey == "" { // past the message bob may have missed
		if l := back.Line(); strings.HasPrefix(l, "* resume key: ") {
			newKey = strings.Fields(l)[3]
		}
	}
	back.Send("/quit")
	back.ExpectClosed()
	d.Signal(syscall.SIGTERM)
	if code := d.WaitExit(waitLimit); code != 0 {
		t.Fatalf("exit code %d", code)
	}

	tokens := []string{alice.Token, bob.Token, newToken, alice.Key, bob.Key, newKey, wrong}
	lines := d.Lines()
	connLines := 0
	for _, l := range lines {
		for _, s := range append(secrets, tokens...) {
			if strings.Contains(strings.ToLower(l), strings.ToLower(s)) {
				t.Errorf("log line shows %q: %s", s, l)
			}
		}
		if strings.Contains(l, `"msg":"connection `) || strings.Contains(l, `"msg":"logged in"`) {
			connLines++
			if !strings.Contains(l, `"conn":`) || !strings.Contains(l, `"remote":"127.0.0.1"`) {
				t.Errorf("connection log line without conn id or address: %s", l)
			}
		}
	}
	if connLines < 4 {
		t.Errorf("only %d connection log lines at debug level:\n%s", connLines, strings.Join(lines, "\n"))
	}
	var sawShort bool
	for _, l := range lines {
		if strings.Contains(l, `"token":"`+alice.Token[:6]+`"`) {
			sawShort = true
		}
	}
	if !sawShort {
		t.Errorf("no log line with the token's first 6 characters")
	}
}

// TestUnitFileVerifies runs systemd-analyze verify on the unit, with
// ExecStart pointed at the freshly built binary (verify checks it exists).
func TestUnitFileVerifies(t *testing.T) {
	analyze := requireTool(t, "systemd-analyze")
	unit, err := os.ReadFile("../../scripts/duetd.service")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(unit, []byte("DynamicUser=yes")) {
		t.Error("DynamicUser=yes: the configuration's group (root:duetd 0640) would not exist")
	}
	for _, want := range []string{"Type=notify", "Restart=on-failure", "User=duetd", "Group=duetd", "ProtectSystem=strict",
		"ProtectHome=yes", "NoNewPrivileges=yes", "PrivateTmp=yes", "CapabilityBoundingSet=\n",
		"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "SystemCallFilter=@system-service",
		"MemoryDenyWriteExecute=yes", "LimitNOFILE=1048576", "WatchdogSec=30", "ExecReload=/bin/kill -HUP $MAINPID",
		"--config /etc/duetd/duetd.yaml"} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("unit lacks %q", want)
		}
	}
	path := filepath.Join(t.TempDir(), "duetd.service")
	unit = bytes.Replace(unit, []byte("/usr/local/bin/duetd"), []byte(duetdBinary(t)), 1)
	if err := os.WriteFile(path, unit, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// verify exits 0 on unknown keys and bad values; it only warns.
	if bytes.Contains(out, []byte("duetd.service")) {
		t.Fatalf("systemd-analyze verify warns:\n%s", out)
	}
}

// TestInstallScript installs into a staging root twice: the second run
// changes nothing it does not own, and keeps an edited config. A dry run
// changes nothing, prints exactly the commands a real run runs (the same
// build command included), and does not say it installed anything. The
// configuration, which may hold the Redis password, is not readable by
// every user.
func TestInstallScript(t *testing.T) {
	root := t.TempDir()
	install := func(env []string, args ...string) string {
		t.Helper()
		cmd := exec.Command("bash", append([]string{"../../scripts/install.sh"}, args...)...)
		cmd.Env = append(os.Environ(), append([]string{"DESTDIR=" + root}, env...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("install.sh %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	binary := "DUETD_BINARY=" + duetdBinary(t)

	// A dry run and a real run that builds: the same commands, in the same
	// order, once the build's temporary directory is set aside.
	dry := install(nil, "--dry-run")
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Fatalf("--dry-run wrote %v", entries)
	}
	if !strings.HasSuffix(dry, "dry run: nothing was changed\n") || strings.Contains(dry, "installed") {
		t.Errorf("--dry-run ends:\n%s", dry)
	}
	real := install(nil)
	if !strings.HasSuffix(real, "duetd installed under "+root+"\n") {
		t.Errorf("install ends:\n%s", real)
	}
	tmp := regexp.MustCompile(`/tmp\.[A-Za-z0-9]{10}/duetd`)
	commands := func(out, prefix string) []string {
		var cmds []string
		for _, l := range strings.Split(out, "\n") {
			if c, ok := strings.CutPrefix(l, prefix); ok {
				cmds = append(cmds, tmp.ReplaceAllString(c, "/tmp.X/duetd"))
			}
		}
		return cmds
	}
	dryCmds, realCmds := commands(dry, "would run: "), commands(real, "+ ")
	if !slices.Equal(dryCmds, realCmds) || len(dryCmds) < 7 {
		t.Errorf("dry run would run\n%s\nbut a real run ran\n%s", strings.Join(dryCmds, "\n"), strings.Join(realCmds, "\n"))
	}
	if !strings.HasPrefix(dryCmds[0], `go build -trimpath -ldflags -s\ -w\ -X\ main.version=`) {
		t.Errorf("first command %q is not the build", dryCmds[0])
	}
	// The build stamps the version it names.
	m := regexp.MustCompile(`main\.version=(\S+) `).FindStringSubmatch(dryCmds[0])
	if out, err := exec.Command(filepath.Join(root, "usr/local/bin/duetd"), "version").CombinedOutput(); err != nil || m == nil || string(out) != "duetd "+m[1]+"\n" {
		t.Errorf("installed binary says %q (%v); the build named %v", out, err, m)
	}

	install([]string{binary})
	for _, p := range []string{"usr/local/bin/duetd", "etc/systemd/system/duetd.service", "etc/duetd/duetd.yaml",
		"etc/sysusers.d/duetd.conf", "usr/local/share/doc/duetd/OPERATIONS.md"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("not installed: %s", p)
		}
	}
	// The state directory is there before the first start, so that
	// check-config passes on the installed configuration (below).
	if fi, err := os.Stat(filepath.Join(root, "var/lib/duetd")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("state directory: %v, %v; want a directory, mode 0700", fi, err)
	}
	// duetd help and the unit send the operator to the installed guide;
	// what it and the other guides link to is installed with them.
	docs := filepath.Join(root, "usr/local/share/doc/duetd")
	guide, _ := os.ReadFile(filepath.Join(docs, "OPERATIONS.md"))
	if !regexp.MustCompile(`\]\([A-Z]+\.md[#)]`).Match(guide) {
		t.Error("OPERATIONS.md links to no other guide")
	}
	checkDocLinks(t, root, docs)
	cfg := filepath.Join(root, "etc/duetd/duetd.yaml")
	if fi, err := os.Stat(cfg); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("config mode %v, %v: want 0640", fi.Mode().Perm(), err)
	}
	os.WriteFile(cfg, []byte("log:\n  level: debug\n"), 0o644)
	os.Chmod(cfg, 0o644)
	out := install([]string{binary})
	if !strings.Contains(out, "keeping the existing") || !strings.Contains(out, "warning: "+cfg+" is readable by every user") {
		t.Errorf("second run: %s", out)
	}
	// A configuration from before the state file's path moved from the
	// unit's environment into the file is kept, and said to lack it.
	if !strings.Contains(out, "note: "+cfg+" sets no resume.state_file") {
		t.Errorf("second run, an older configuration: %s", out)
	}
	unitText, _ := os.ReadFile(filepath.Join(root, "etc/systemd/system/duetd.service"))
	if bytes.Contains(unitText, []byte("DUETD_")) {
		t.Error("the unit sets a DUETD_ variable, which duetd check-config from a shell would not see")
	}
	if b, _ := os.ReadFile(cfg); string(b) != "log:\n  level: debug\n" {
		t.Errorf("config overwritten: %q", b)
	}
	// The installed example config is valid as it stands, with the
	// state directory the unit makes: check-config from a shell checks
	// what the service will run, the state file's path included.
	check := func(conf string, env ...string) (string, error) {
		cmd := exec.Command(filepath.Join(root, "usr/local/bin/duetd"), "check-config", "--config", conf)
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "DUETD_") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	stateDir := t.TempDir()
	example, _ := os.ReadFile("../../scripts/duetd.yaml")
	conf := filepath.Join(t.TempDir(), "duetd.yaml")
	os.WriteFile(conf, bytes.Replace(example, []byte("state_file: /var/lib/duetd/"), []byte("state_file: "+stateDir+"/"), 1), 0o600)
	if out2, err := check(conf); err != nil {
		t.Fatalf("check-config on the example: %v\n%s", err, out2)
	}
	// A cluster, or resume off, is refused until that line is emptied.
	for _, env := range [][]string{
		{"DUETD_CLUSTER_REDIS=redis://127.0.0.1:6379", "DUETD_CLUSTER_SECRET=" + clusterSecret},
		{"DUETD_RESUME_WINDOW=0s"},
	} {
		if out2, err := check(conf, env...); err == nil || !strings.Contains(out2, "resume.state_file") {
			t.Errorf("check-config on the example with %v: %v\n%s", env, err, out2)
		}
		if out2, err := check(conf, append(env, "DUETD_RESUME_STATE_FILE=")...); err != nil {
			t.Errorf("check-config on the example with %v and no state file: %v\n%s", env, err, out2)
		}
	}

	// The sysusers.d entry makes the user and group the unit runs as.
	sysusers := requireTool(t, "systemd-sysusers")
	target := t.TempDir()
	os.MkdirAll(filepath.Join(target, "etc"), 0o755)
	if out, err := exec.Command(sysusers, "--root="+target, filepath.Join(root, "etc/sysusers.d/duetd.conf")).CombinedOutput(); err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	passwd, _ := os.ReadFile(filepath.Join(target, "etc/passwd"))
	group, _ := os.ReadFile(filepath.Join(target, "etc/group"))
	if !regexp.MustCompile(`(?m)^duetd:x:\d+:\d+:duet daemon:/:/usr/sbin/nologin$`).Match(passwd) ||
		!regexp.MustCompile(`(?m)^duetd:x:\d+:$`).Match(group) {
		t.Errorf("systemd-sysusers made\n%s\n%s", passwd, group)
	}
}

// checkDocLinks checks that every relative link in every guide (.md)
// in dir resolves to a file inside root: a guide that links to a file
// the clone has and the install has not sends its reader nowhere.
// Anchors are not checked, only the files they are in.
func checkDocLinks(t *testing.T, root, dir string) {
	t.Helper()
	guides, _ := filepath.Glob(filepath.Join(dir, "*.md"))
	if len(guides) == 0 {
		t.Fatalf("no guides in %s", dir)
	}
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	for _, g := range guides {
		text, err := os.ReadFile(g)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range link.FindAllSubmatch(text, -1) {
			target := string(l[1])
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			target, _, _ = strings.Cut(target, "#")
			if target == "" {
				continue // an anchor in the guide itself
			}
			p := filepath.Join(dir, target)
			if rel, err := filepath.Rel(root, p); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
				t.Errorf("%s links to %s, outside %s", filepath.Base(g), l[1], root)
				continue
			}
			if fi, err := os.Stat(p); err != nil || fi.IsDir() {
				t.Errorf("%s links to %s, which is not there: %s", filepath.Base(g), l[1], p)
			}
		}
	}
}

// TestDocLinks checks the guides' links in the clone, as
// TestInstallScript checks them installed.
func TestDocLinks(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	checkDocLinks(t, root, filepath.Join(root, "docs"))
}

// TestInstallScriptWithoutGo: on a server with no Go, install.sh says
// how to get one or how to do without, and installs nothing.
func TestInstallScriptWithoutGo(t *testing.T) {
	bin := t.TempDir()
	for _, tool := range []string{"bash", "dirname", "sed"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Skipf("no %s: %v", tool, err)
		}
		if err := os.Symlink(p, filepath.Join(bin, tool)); err != nil {
			t.Fatal(err)
		}
	}
	root := t.TempDir()
	cmd := exec.Command(filepath.Join(bin, "bash"), "../../scripts/install.sh")
	cmd.Env = []string{"PATH=" + bin, "DESTDIR=" + root}
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("install.sh without go: %v, want exit status 1", err)
	}
	if !regexp.MustCompile(`no go command .*install Go 1\.\d+\S* or later \(https://go\.dev/dl/\), or .*DUETD_BINARY=`).Match(out) {
		t.Errorf("install.sh without go says:\n%s", out)
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Errorf("installed %v anyway", entries)
	}
}

// TestInstallScriptVersionInAnotherUsersClone: root runs install.sh in
// a clone that another user owns, as `sudo scripts/install.sh` does in
// one's own clone. git refuses to read such a repository ("dubious
// ownership"); install.sh still builds the version the clone holds, not
// one called "dev" without a word, as it did.
func TestInstallScriptVersionInAnotherUsersClone(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run install.sh as root does in a clone another user owns")
	}
	git, err := exec.LookPath("git")
	if err != nil {
		t.Fatalf("no git: %v", err)
	}
	clone := filepath.Join(t.TempDir(), "duet")
	for _, args := range [][]string{
		{git, "-c", "safe.directory=*", "clone", "-q", "../..", clone},
		// The script as it is here, committed or not.
		{"cp", "../../scripts/install.sh", filepath.Join(clone, "scripts/install.sh")},
		{"chown", "-R", "nobody", clone},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	head, err := exec.Command(git, "-c", "safe.directory=*", "-C", clone, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", filepath.Join(clone, "scripts/install.sh"), "--dry-run")
	cmd.Env = append(os.Environ(), "DESTDIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("install.sh --dry-run: %v\n%s", err, out)
	}
	want := regexp.MustCompile(`main\.version=` + strings.TrimSpace(string(head)) + `(-dirty)? `)
	if !want.Match(out) {
		t.Errorf("install.sh --dry-run in a clone of another user's builds no version %s:\n%s", want, out)
	}
}

// TestReadmeGoVersion: the README and OPERATIONS.md ask for the Go that
// go.mod requires, as install.sh does: an older one refuses to build the
// module.
func TestReadmeGoVersion(t *testing.T) {
	mod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod names no go version")
	}
	want := "Go " + string(m[1]) + " or later"
	if !bytes.Contains(bytes.Join(bytes.Fields(readme), []byte(" ")), []byte(want)) {
		t.Errorf("README.md does not say %q", want)
	}
	operations, err := os.ReadFile("../../docs/OPERATIONS.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(bytes.Join(bytes.Fields(operations), []byte(" ")), []byte(want)) {
		t.Errorf("docs/OPERATIONS.md does not say %q", want)
	}
}

// TestInstallScriptRelativePaths: DESTDIR and DUETD_BINARY name paths
// as the caller sees them, from wherever install.sh is run, not from
// the clone it changes into to find its own files.
func TestInstallScriptRelativePaths(t *testing.T) {
	script, err := filepath.Abs("../../scripts/install.sh")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	bin, err := os.ReadFile(duetdBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "duetd"), bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", script)
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "DESTDIR=stage", "DUETD_BINARY=./duetd")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("install.sh: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(work, "stage/usr/local/bin/duetd")); err != nil {
		t.Errorf("not staged under the caller's ./stage: %v", err)
	}
	if _, err := os.Stat("../../stage"); err == nil {
		os.RemoveAll("../../stage")
		t.Errorf("staged in the clone instead")
	}
	rel, err := filepath.Rel(work, script)
	if err != nil {
		t.Fatal(err)
	}
	help := exec.Command("bash", rel, "--help")
	help.Dir = work
	out, err := help.CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "# Installs duetd") || !strings.HasSuffix(string(out), "instead of building\n") {
		t.Errorf("install.sh --help run as %s: %v\n%s", rel, err, out)
	}
}
