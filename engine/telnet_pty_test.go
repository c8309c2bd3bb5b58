//go:build linux

package engine_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"duet/engine"
	"duet/engine/enginetest"
	"duet/proto"
)

// TestRealTelnet runs Debian's telnet (inetutils) in a pseudo-terminal,
// as a person would, paired with a netcat-style user. Outside BINARY
// that client turns some bytes of UTF-8 letters into telnet commands,
// and after each, as after Ctrl-C, it shows nothing the server sends
// until the server answers its timing mark. The partner must get the
// exact text, and the telnet user must go on seeing the partner's
// messages and answers to commands.
func TestRealTelnet(t *testing.T) {
	d, bob, tn := telnetWithBob(t, false)

	// The partner's UTF-8 reaches the telnet user, before any telnet
	// command has been sent either way.
	bob.Send("привет из nc, 本日は晴天なり")
	tn.expect(regexp.QuoteMeta("<bob> привет из nc, 本日は晴天なり"))

	// The first line with letters telnet mangles is sent outside BINARY:
	// it holds a byte of each kind telnet turns into a command (0x83 IP,
	// 0x8f AO, 0x9a SUSP, 0x9c BRK), and none of those it drops or acts
	// on itself (0x85, 0x9d), which no server could put back.
	first := "у меня всё получилось, я рад: Ěmil 本当に"
	for _, b := range []byte{0x83, 0x8f, 0x9a, 0x9c} {
		if !strings.Contains(first, string([]byte{b})) {
			t.Fatalf("the first line lacks byte %#x", b)
		}
	}
	if strings.Contains(first, "\x85") || strings.Contains(first, "\x9d") {
		t.Fatal("the first line holds a byte telnet drops")
	}
	tn.typeLine(first)
	if got := bob.Line(); got != "<alice> "+first {
		t.Fatalf("bob got %q, want %q", got, "<alice> "+first)
	}

	// Ctrl-C, Ctrl-\ and Ctrl-Z, each with half a line typed, which the
	// terminal throws away (docs/PROTOCOL.md, keys): each is a command
	// and a timing mark. After each, the telnet user still gets answers
	// and the partner's messages.
	for i, key := range []string{"half a line\x03", "half a line\x1c", "half a line\x1a"} {
		tn.type_(key)
		tn.typeLine("/who")
		tn.expect(`\* you are alice, your token is [0-9a-f]{32}, connected with bob`)
		msg := "после клавиши " + strconv.Itoa(i)
		bob.Send(msg)
		tn.expect(regexp.QuoteMeta("<bob> " + msg))
	}

	// Now the client sends in BINARY: every letter arrives as typed,
	// those telnet would drop or act on included (Н is 0x9d, telnet's
	// escape character with the high bit set).
	var all strings.Builder
	for r := rune(0x400); r < 0x460; r++ {
		all.WriteRune(r)
	}
	all.WriteString(" そ本ك")
	tn.typeLine(all.String())
	if got := bob.Line(); got != "<alice> "+all.String() {
		t.Fatalf("bob got %q\nwant   %q", got, "<alice> "+all.String())
	}

	tn.typeLine("/quit")
	tn.leaves("alice", bob)

	// What the documentation tells telnet users: Ctrl-C once after
	// connecting, and every letter is safe from the first line on, those
	// telnet would drop (х, Å) or act on (Н, そ) included.
	carol := dialInPTY(t, d, nil, enginetest.ToolPath(t, "telnet"))
	carol.type_("\x03")
	carol.pairWith("carol", bob)
	const safe = "Нет, всё хорошо: Åsa, ąż, そうです"
	carol.typeLine(safe)
	if got := bob.Line(); got != "<carol> "+safe {
		t.Fatalf("bob got %q, want %q", got, "<carol> "+safe)
	}
	carol.typeLine("/quit")
	carol.leaves("carol", bob)

	// Without it, a line with a letter telnet drops (х) is refused, and
	// the answer says what to do: a Ctrl-C, then the line again, which
	// then arrives as typed.
	dave := dialInPTY(t, d, nil, enginetest.ToolPath(t, "telnet"))
	dave.pairWith("dave", bob)
	const russian = "хорошо, привет"
	dave.typeLine(russian)
	dave.expect(regexp.QuoteMeta("! invalid_utf8: text must be valid UTF-8; it was not sent (if you use telnet, press Ctrl-C once, then type it again"))
	dave.type_("\x03")
	// telnet agrees to BINARY a round trip later.
	dave.typeLine("/who")
	dave.expect(`\* you are dave, your token is [0-9a-f]{32}, connected with bob`)
	dave.typeLine(russian)
	if got := bob.Line(); got != "<dave> "+russian {
		t.Fatalf("bob got %q, want %q", got, "<dave> "+russian)
	}
}

// TestRealTelnetBinaryTurnedOff: a telnet user who turns BINARY off
// (Ctrl-], then toggle outbinary) has a line with a letter telnet drops
// refused, told to press Ctrl-C and type it again; doing so works: the
// Ctrl-C asks for BINARY anew.
func TestRealTelnetBinaryTurnedOff(t *testing.T) {
	_, bob, tn := telnetWithBob(t, true)
	tn.typeLine("хорошо 1")
	if got := bob.Line(); got != "<alice> хорошо 1" {
		t.Fatalf("bob got %q", got)
	}
	tn.type_("\x1d")
	tn.expect(regexp.QuoteMeta("telnet> "))
	tn.typeLine("toggle outbinary")
	tn.expect("Negotiating network ascii mode on output")
	tn.typeLine("хорошо 2")
	tn.expect(regexp.QuoteMeta("press Ctrl-C once, then type it again"))
	tn.type_("\x03") // as the answer says
	tn.typeLine("/who")
	tn.expect(`\* you are alice, your token is [0-9a-f]{32}, connected with bob`)
	tn.typeLine("хорошо 3")
	if got := bob.Line(); got != "<alice> хорошо 3" {
		t.Fatalf("bob got %q", got)
	}
}

// TestRealTelnetWhichHint: the answer to a line that is not UTF-8 tells
// a telnet user to press Ctrl-C only when telnet broke the line, which a
// Ctrl-C mends. A terminal that sends Latin-1 (é as the byte e9, which
// telnet passes as it is) is told to send UTF-8, before the Ctrl-C and
// after it. A letter with a byte 0x9d (Н) opens telnet's prompt, which
// takes the rest of the line; what came before the letter goes out with
// the next line, which is refused: it is told to press Ctrl-C, and once
// it has, the letter arrives. Before, every line outside BINARY got the
// Ctrl-C hint, Latin-1 too.
func TestRealTelnetWhichHint(t *testing.T) {
	_, bob, tn := telnetWithBob(t, false)
	useUTF8 := "! invalid_utf8: " + proto.ErrInvalidUTF8Terminal.Text
	ctrlC := "! invalid_utf8: " + proto.ErrInvalidUTF8Telnet.Text

	tn.typeLine("caf\xe9 au lait")
	tn.expect(regexp.QuoteMeta(useUTF8))

	tn.typeLine("Нет")
	tn.expect(regexp.QuoteMeta("telnet> "))
	tn.type_("\r") // back to the connection
	tn.typeLine("ok")
	tn.expect(regexp.QuoteMeta(ctrlC))
	tn.type_("\x03")
	tn.typeLine("/who")
	tn.expect(`\* you are alice, your token is [0-9a-f]{32}, connected with bob`)
	tn.typeLine("Нет")
	if got := bob.Line(); got != "<alice> Нет" {
		t.Fatalf("bob got %q", got)
	}

	tn.typeLine("caf\xe9 au lait")
	tn.expect(regexp.QuoteMeta(useUTF8))
	tn.typeLine("still here")
	if got := bob.Line(); got != "<alice> still here" {
		t.Fatalf("bob got %q", got)
	}
}

// TestRealTelnetCtrlCAfterItsPromptSentPartOfALetter: before its first
// Ctrl-C, telnet opens its prompt at the second byte of "Н", sending the
// first alone; its user leaves the prompt and, as the README says,
// presses Ctrl-C and types the line again. The Ctrl-C throws the lone
// byte away, and the line arrives as typed. Before, the Ctrl-C was
// taken for the byte telnet replaces with it inside a letter, and the
// partner read "ЃНет, спасибо" (a command typed next went to the
// partner as a message: "Ѓ/who").
func TestRealTelnetCtrlCAfterItsPromptSentPartOfALetter(t *testing.T) {
	_, bob, tn := telnetWithBob(t, false)
	tn.typeLine("Нет")
	// The prompt took the rest of the line for a command, and asks
	// again; an empty line leaves it.
	tn.expect(regexp.QuoteMeta("?Invalid command"))
	tn.expect(regexp.QuoteMeta("telnet> "))
	// Each key waits for telnet to have acted on the one before: it
	// changes the terminal's modes as it leaves the prompt, and again
	// as it takes up BINARY, which the server asks for in its answer
	// to the Ctrl-C; what was typed ahead of a change can be thrown
	// away, or read in the mode before it. (The first change follows
	// the read of the Enter at once; the second a round trip over
	// loopback after the Ctrl-C, which telnet reads from no terminal:
	// the pauses let those few calls run.)
	mark := tn.bytesRead()
	tn.type_("\r")
	tn.waitRead(mark, 1)
	time.Sleep(200 * time.Millisecond)
	tn.type_("\x03")
	time.Sleep(500 * time.Millisecond)
	tn.typeLine("/who")
	tn.expect(`\* you are alice, your token is [0-9a-f]{32}, connected with bob`)
	tn.typeLine("Нет, спасибо")
	if got := bob.Line(); got != "<alice> Нет, спасибо" {
		t.Fatalf("bob got %q", got)
	}
}

// TestRealTelnetPastedBlockToldItsRefusal: alice pastes two lines.
// Telnet drops a byte of the first (the 0x85 in "х"), which is refused;
// in the second it turns a byte of "у" into a command and a timing mark,
// and throws away what it has not shown of the server's output, the
// refusal among it. After the answer she is told, and shown the refusal
// again, in words that do not say she pressed Ctrl-C. (Before, the
// first line was lost without a word, every time.)
func TestRealTelnetPastedBlockToldItsRefusal(t *testing.T) {
	_, bob, tn := telnetWithBob(t, false)
	from := tn.written()
	tn.type_("хорошо\rугу\r")
	if got := bob.Line(); got != "<alice> угу" {
		t.Fatalf("bob got %q", got)
	}
	tn.expect(regexp.QuoteMeta("! invalid_utf8: text must be valid UTF-8; it was not sent (if you use telnet, press Ctrl-C once"))
	tn.typeLine("/who")
	tn.expect(`\* you are alice, your token is [0-9a-f]{32}, connected with bob`)
	// She pressed no key: a notice says what telnet did.
	if screen := tn.output(from); strings.Contains(screen, "you pressed Ctrl-C") {
		t.Fatalf("a notice says she pressed Ctrl-C:\n%s", screen)
	}
}

// ptyProgram is a program running in a pseudo-terminal: what it writes
// to the terminal is collected, and what is typed goes to the terminal's
// input, through its line discipline, as from a keyboard.
type ptyProgram struct {
	t      *testing.T
	master *os.File
	cmd    *exec.Cmd
	exited chan error

	mu   sync.Mutex
	out  []byte // everything the program wrote
	seen int    // how much of out expect has matched past
}

// startInTerminal starts name with args in a new session whose
// controlling terminal is a fresh pseudo-terminal with the kernel's
// default settings (interrupt Ctrl-C, quit Ctrl-\, suspend Ctrl-Z, erase
// ^?, canonical input with echo), changed by setup when it is not nil, as
// a user's stty would, and stops it when the test ends.
func startInTerminal(t *testing.T, setup func(*unix.Termios), name string, args ...string) *ptyProgram {
	t.Helper()
	master, slave := openPTY(t)
	if setup != nil {
		tio, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		setup(tio)
		if err := unix.IoctlSetTermios(int(slave.Fd()), unix.TCSETS, tio); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "LANG=C.UTF-8", "TERM=xterm")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	p := &ptyProgram{t: t, master: master, cmd: cmd, exited: make(chan error, 1)}
	go func() { p.exited <- cmd.Wait() }()
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			p.mu.Lock()
			p.out = append(p.out, buf[:n]...)
			p.mu.Unlock()
			if err != nil {
				return // EIO once the program has exited
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		master.Close()
	})
	return p
}

// openPTY allocates a pseudo-terminal pair from /dev/ptmx.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fd := int(m.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.FormatUint(uint64(n), 10), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 80}); err != nil {
		t.Fatal(err)
	}
	tio, err := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if tio.Cc[unix.VINTR] != 0x03 || tio.Cc[unix.VQUIT] != 0x1c || tio.Cc[unix.VSUSP] != 0x1a || tio.Lflag&unix.ISIG == 0 {
		t.Fatalf("the new terminal does not have the default special characters: %+v", tio.Cc)
	}
	return m, s
}

// dialInPTY starts prog in a pseudo-terminal, its settings changed by
// setup when it is not nil (startInTerminal), with args and then the
// daemon's line port, and waits for the server's greeting.
func dialInPTY(t *testing.T, d *enginetest.Daemon, setup func(*unix.Termios), prog string, args ...string) *ptyProgram {
	t.Helper()
	host, port, _ := strings.Cut(d.TCP, ":")
	p := startInTerminal(t, setup, prog, append(args, host, port)...)
	p.expect(`\* welcome to duet`)
	return p
}

// pairWith logs the program's user in as name, after the server's
// greeting, and connects to peer, a line client logged in and free.
func (p *ptyProgram) pairWith(name string, peer *enginetest.LineClient) {
	p.t.Helper()
	p.typeLine("/login " + name)
	p.expect(`\* you are ` + name + `, your token is [0-9a-f]{32}`)
	p.typeLine("/connect " + peer.Token)
	p.expect(`\* you are connected with ` + peer.Name)
	peer.Expect(`^\* ` + name + ` is connected$`)
}

// leaves checks that the program's user, name, is told bye, that its
// partner peer is told it left, and that the program exits.
func (p *ptyProgram) leaves(name string, peer *enginetest.LineClient) {
	p.t.Helper()
	p.expect(`\* bye`)
	peer.Expect(`^\* ` + name + ` left; you are free to be joined again$`)
	p.wait()
}

// type_ types s as it is.
func (p *ptyProgram) type_(s string) {
	p.t.Helper()
	if _, err := p.master.Write([]byte(s)); err != nil {
		p.t.Fatalf("typing %q: %v", s, err)
	}
}

// typeLine types s and Enter.
func (p *ptyProgram) typeLine(s string) { p.type_(s + "\r") }

// expect waits until the program has written something that matches
// pattern after what earlier calls matched, and moves past it.
func (p *ptyProgram) expect(pattern string) {
	p.t.Helper()
	re := regexp.MustCompile(pattern)
	deadline := time.Now().Add(enginetest.Timeout)
	for {
		p.mu.Lock()
		rest := p.out[p.seen:]
		loc := re.FindIndex(rest)
		if loc != nil {
			p.seen += loc[1]
		}
		p.mu.Unlock()
		if loc != nil {
			return
		}
		if time.Now().After(deadline) {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.t.Fatalf("no match for %q in what telnet showed:\n%s", pattern, bytes.ToValidUTF8(p.out[p.seen:], []byte("?")))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wait waits for the program to exit by itself.
func (p *ptyProgram) wait() {
	p.t.Helper()
	select {
	case <-p.exited:
		p.exited <- nil // for the cleanup
	case <-time.After(enginetest.Timeout):
		p.t.Fatal("telnet did not exit")
	}
}

// TestNewcomerSlipsInRealClients types, in Debian's telnet and in nc,
// two slips a newcomer makes, and checks that each is answered with what
// went wrong: a password on a server without accounts, and a token of
// all zeros, which is well formed but no one's. Then the user logs in and
// pairs as the answers say.
func TestNewcomerSlipsInRealClients(t *testing.T) {
	d := enginetest.Start(t, nil)
	for _, prog := range []string{"telnet", "nc"} {
		t.Run(prog, func(t *testing.T) {
			path := enginetest.ToolPath(t, prog)
			bob := d.DialLine(t).Login("bob" + prog)
			p := dialInPTY(t, d, nil, path)
			p.typeLine("/login alice secret")
			p.expect(regexp.QuoteMeta("! bad_name: " + proto.ErrNoAccounts.Text))
			p.typeLine("/login alice" + prog)
			p.expect(`\* you are alice` + prog + `, your token is [0-9a-f]{32}`)
			p.typeLine("/connect " + strings.Repeat("0", 32))
			p.expect(regexp.QuoteMeta("! unknown_token: " + proto.ErrUnknownToken.Text))
			p.typeLine("/connect " + bob.Token)
			p.expect(`\* you are connected with bob` + prog)
			bob.Expect(`^\* alice` + prog + ` is connected$`)
			p.typeLine("/quit")
			if prog == "telnet" {
				p.leaves("alice"+prog, bob)
				return
			}
			// Debian's nc does not exit when the server closes while
			// the terminal it reads is still open; it is stopped when
			// the test ends.
			p.expect(`\* bye`)
			bob.Expect(`^\* alice` + prog + ` left; you are free to be joined again$`)
		})
	}
	// The third slip: the web port instead of the line port. The first
	// command is answered at once with where to go, not with a
	// request_timeout some seconds later.
	for _, prog := range []string{"telnet", "nc"} {
		t.Run(prog+" to the web port", func(t *testing.T) {
			path := enginetest.ToolPath(t, prog)
			host, port, _ := strings.Cut(d.WS, ":")
			_, linePort, _ := strings.Cut(d.TCP, ":")
			p := startInTerminal(t, nil, path, host, port)
			start := time.Now()
			p.typeLine("/login alice")
			p.expect(`HTTP/1.1 400 `)
			p.expect(regexp.QuoteMeta("this is duet's web port, for browsers and WebSocket clients; netcat and telnet speak to the line port, port " + linePort))
			if waited := time.Since(start); waited > 3*time.Second {
				t.Errorf("answered after %v", waited)
			}
		})
	}
}

// TestRealTelnetCtrlCDropsSentPart: telnet sends the part of a line
// typed so far when its user presses Ctrl-D. A Ctrl-C (or Ctrl-\,
// Ctrl-Z) after that throws the line away, as the terminal shows it: the
// part already sent never reaches the partner, only the line typed after
// it. telnet's `send el` erases the line too, and `send ec` one
// character.
func TestRealTelnetCtrlCDropsSentPart(t *testing.T) {
	_, bob, tn := telnetWithBob(t, false)

	for _, key := range []string{"\x03", "\x1c", "\x1a"} {
		// Ctrl-D hands the part to telnet, which sends it at once; the
		// key after it must not be typed before telnet has read the
		// part, or the terminal throws the part away itself.
		mark := tn.bytesRead()
		tn.type_("secret password\x04")
		tn.waitRead(mark, len("secret password"))
		tn.type_(key)
		tn.typeLine("hi")
		if got := bob.Line(); got != "<alice> hi" {
			t.Errorf("Ctrl-D, then %q, then a line: the partner read %q", key, got)
		}
	}

	// telnet's escape prompt sends the part before the command:
	// `send el` erases the line, `send ec` the character before it.
	for _, c := range []struct{ cmd, then, want string }{
		{"el", "hi", "hi"},
		{"ec", "d!", "secret password!"},
	} {
		tn.type_("secret passworx\x1d")
		tn.expect(regexp.QuoteMeta("telnet> "))
		tn.typeLine("send " + c.cmd)
		tn.typeLine(c.then)
		if got := bob.Line(); got != "<alice> "+c.want {
			t.Errorf("`send %s`, then %q: the partner read %q, want %q", c.cmd, c.then, got, "<alice> "+c.want)
		}
	}
}

// TestRealTelnetCtrlCEndsOverLongLine: a line past limits.max_line is
// refused as it passes it, and the rest of it is thrown away up to its
// line feed. Its user, told, presses Ctrl-C, and the terminal throws the
// line away: what it types next is a new line, which reaches the
// partner. Before, the server went on throwing away up to the next line
// feed, and that line was lost without a word.
func TestRealTelnetCtrlCEndsOverLongLine(t *testing.T) {
	telnet := enginetest.ToolPath(t, "telnet")
	d := enginetest.Start(t, func(o *engine.Options) { o.Limits.MaxLine = 64 })
	bob := d.DialLine(t).Login("bob")
	tn := dialInPTY(t, d, nil, telnet)
	tn.pairWith("alice", bob)

	// Ctrl-D hands the part typed to telnet, which sends it at once.
	mark := tn.written()
	tn.type_(strings.Repeat("x", 100) + "\x04")
	tn.waitShown(mark, "! too_long: ")
	tn.type_("\x03")
	tn.typeLine("typed after Ctrl-C")
	if got := bob.Line(); got != "<alice> typed after Ctrl-C" {
		t.Errorf("after an over-long line and Ctrl-C, the partner read %q", got)
	}
}

// TestRealTelnetOverLongLineKeepsItsRest: outside BINARY, telnet sends
// some bytes of a letter as commands, each at the end of a write of its
// own: "ッ" (e3 83 83) comes as two writes, the second beginning with
// IAC IP, which is no Ctrl-C. Typed past limits.max_line, before any
// Ctrl-C, such a line is refused, and none of it reaches the partner.
func TestRealTelnetOverLongLineKeepsItsRest(t *testing.T) {
	telnet := enginetest.ToolPath(t, "telnet")
	d := enginetest.Start(t, func(o *engine.Options) { o.Limits.MaxLine = 64 })
	bob := d.DialLine(t).Login("bob")
	for i, long := range []string{
		strings.Repeat("a", 70) + "ッ leaked tail",
		strings.Repeat("a", 70) + "ボ leaked tail",
		"きょうはとてもよいてんきなので、でかけましょう。ボールをもっていきます",
		strings.Repeat("уГ ", 30) + "leaked tail",
	} {
		tn := dialInPTY(t, d, nil, telnet)
		name := fmt.Sprintf("alice%d", i)
		tn.pairWith(name, bob)
		mark := tn.written()
		tn.typeLine(long)
		tn.waitShown(mark, "! too_long: ")
		tn.typeLine("after")
		if got := bob.Line(); got != "<"+name+"> after" {
			t.Errorf("%q, too long: the partner read %q first, want only the line after it", long, got)
		}
		tn.type_("\x04")
		tn.leaves(name, bob)
	}
}

// bytesRead returns how many bytes the program has read so far
// (rchar in /proc/PID/io: from its terminal and its socket alike).
func (p *ptyProgram) bytesRead() int {
	p.t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/io")
	if err != nil {
		p.t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "rchar: "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				p.t.Fatal(err)
			}
			return n
		}
	}
	p.t.Fatalf("no rchar in %q", b)
	return 0
}

// waitRead waits until the program has read at least n bytes since
// bytesRead returned mark.
func (p *ptyProgram) waitRead(mark, n int) {
	p.t.Helper()
	deadline := time.Now().Add(enginetest.Timeout)
	for p.bytesRead() < mark+n {
		if time.Now().After(deadline) {
			p.t.Fatalf("the program did not read %d bytes typed", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRealTelnetCtrlCTellsWhatItHid: at a Ctrl-C telnet throws away all
// it has not shown of the server's output until the answer to its timing
// mark, and the kernel throws away what the terminal had not passed on
// yet. A burst of the partner's messages arriving as the user presses
// Ctrl-C is lost to the user, though written and acknowledged. The
// server cannot know which of them the user saw, but it knows how many
// it wrote lately: a notice after the answer says so, with a count that
// covers every message of the burst that never reached the screen. The
// user pressed Ctrl-C once right after connecting, as advised, which
// began the server's log of what it writes; most of the burst is still
// unread or unacknowledged at the second, and is counted however long
// the loaded machine took. A Ctrl-C in a quiet conversation shows no
// notice.
func TestRealTelnetCtrlCTellsWhatItHid(t *testing.T) {
	_, bob, tn := telnetWithBob(t, true)
	const status = `\* you are alice, your token is [0-9a-f]{32}, connected with bob`
	notice := regexp.MustCompile(`\* telnet may not have shown the last (?:(\d+) messages|(message)) from bob, which arrived as you pressed Ctrl-C\r\n`)

	const n = 20000
	from := tn.written()
	sendBurst(t, bob, n, "")
	// Ctrl-C as soon as telnet shows the burst.
	tn.waitShown(from, "<bob> burst 00000 ok")
	tn.type_("\x03")
	tn.typeLine("/who")
	tn.expect(status)
	// What bob sends now comes after the whole burst, and after the
	// answer to the timing mark, which telnet has had (it showed the
	// answer to /who): once it shows, every message of the burst is on
	// the screen or was thrown away.
	bob.Send("after the burst")
	tn.expect(regexp.QuoteMeta("<bob> after the burst"))
	screen := tn.output(from)
	shown := map[string]bool{}
	for _, m := range regexp.MustCompile(`<bob> burst (\d{5}) ok\r\n`).FindAllStringSubmatch(screen, -1) {
		shown[m[1]] = true
	}
	hidden := n - len(shown)
	told := 0
	switch m := notice.FindStringSubmatch(screen); {
	case m == nil:
	case m[2] != "":
		told = 1
	default:
		told, _ = strconv.Atoi(m[1])
	}
	t.Logf("telnet showed %d of the %d messages; the notice counted %d", len(shown), n, told)
	if told < hidden || told > n {
		t.Fatalf("%d of the %d messages never reached the screen, and the notice counted %d: want from %d to %d\n%s",
			hidden, n, told, hidden, n, screen[max(0, len(screen)-2000):])
	}

	// Quiet: a Ctrl-C seconds after the last message (well past the
	// window), and another right after it, show nothing new.
	bob.Send("hello")
	tn.expect(regexp.QuoteMeta("<bob> hello"))
	time.Sleep(3 * time.Second)
	from = tn.written()
	for range 2 {
		tn.type_("\x03")
		tn.typeLine("/who")
		tn.expect(status)
	}
	if screen := tn.output(from); strings.Contains(screen, "may not have shown") {
		t.Fatalf("a Ctrl-C in a quiet conversation showed a notice:\n%s", screen)
	}
}

// TestRealTelnetCtrlCAfterPartnerLeft: bob sends a burst and leaves;
// alice presses Ctrl-C as telnet starts showing it, and telnet throws
// away what it has not shown, bob's leaving among it. The screen says
// the pairing is over all the same: the notice of what telnet may not
// have shown says she is not connected to anyone now (or, had the leave
// come after her Ctrl-C, telnet shows it). (Before, the notice only
// left out "from bob".)
func TestRealTelnetCtrlCAfterPartnerLeft(t *testing.T) {
	_, bob, tn := telnetWithBob(t, true)

	from := tn.written()
	sendBurst(t, bob, 2000, "/quit\n")
	tn.waitShown(from, "<bob> burst 00000 ok")
	tn.type_("\x03")
	// Once bob's /quit is answered, the pairing is over, before the
	// Ctrl-C or after it (a busy machine).
	bob.Expect(`^\* bye$`)
	tn.typeLine("/who")
	tn.expect(`\* you are alice, your token is [0-9a-f]{32}, not connected`)
	screen := tn.output(from)
	if !strings.Contains(screen, "* bob left; you are free to be joined again") &&
		!strings.Contains(screen, "as you pressed Ctrl-C; you are not connected to anyone now") {
		t.Fatalf("nothing on the screen says bob left:\n%s", screen[max(0, len(screen)-2000):])
	}
}

// telnetWithBob starts a daemon, logs bob in with a line client, and
// pairs alice, in the real telnet on a pty, with him; ctrlC has her
// press Ctrl-C first, as the README advises.
func telnetWithBob(t *testing.T, ctrlC bool) (*enginetest.Daemon, *enginetest.LineClient, *ptyProgram) {
	t.Helper()
	telnet := enginetest.ToolPath(t, "telnet")
	d := enginetest.Start(t, nil)
	bob := d.DialLine(t).Login("bob")
	tn := dialInPTY(t, d, nil, telnet)
	if ctrlC {
		tn.type_("\x03")
	}
	tn.pairWith("alice", bob)
	return d, bob, tn
}

// sendBurst has bob send n lines "burst 00000 ok" and so on in one
// write, then tail.
func sendBurst(t *testing.T, bob *enginetest.LineClient, n int, tail string) {
	t.Helper()
	var burst bytes.Buffer
	for i := range n {
		fmt.Fprintf(&burst, "burst %05d ok\n", i)
	}
	burst.WriteString(tail)
	bob.Conn.SetWriteDeadline(time.Now().Add(enginetest.Timeout))
	if _, err := bob.Conn.Write(burst.Bytes()); err != nil {
		t.Fatal(err)
	}
}

// written is how much the program has written to its terminal so far,
// for output.
func (p *ptyProgram) written() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.out)
}

// waitShown waits until the program has written s after the mark
// written returned, looking often: it does not move expect on.
func (p *ptyProgram) waitShown(from int, s string) {
	p.t.Helper()
	deadline := time.Now().Add(enginetest.Timeout)
	for {
		p.mu.Lock()
		found := bytes.Contains(p.out[from:], []byte(s))
		p.mu.Unlock()
		if found {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("the program did not show %q", s)
		}
		time.Sleep(time.Millisecond)
	}
}

// output is what the program wrote from the mark written returned up to
// what expect last matched.
func (p *ptyProgram) output(from int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return string(p.out[from:max(from, p.seen)])
}
