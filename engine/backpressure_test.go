package engine_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"duet/engine"
	"duet/engine/enginetest"
)

// numberedLines writes count lines "prefix N <padding>" of about size bytes.
func numberedLines(w io.Writer, prefix string, count, size int) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	pad := strings.Repeat("x", size)
	for i := 0; i < count; i++ {
		if _, err := fmt.Fprintf(bw, "%s %d %s\n", prefix, i, pad); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// TestBackPressureLosesNothing: a sender pastes far more than any buffer
// holds while its partner does not read for a while. The sender is slowed
// (its input is not read), not cut off, and once the partner reads,
// every line arrives in order.
func TestBackPressureLosesNothing(t *testing.T) {
	d := enginetest.Start(t, func(o *engine.Options) {
		o.Limits.OutboundHigh = 64 << 10
		o.Limits.SlowTimeout = 30 * time.Second
	})
	alice, bob := pairLines(t, d, "alice", "bob")

	const lines, size = 100_000, 200 // about 20 MB
	sent := make(chan error, 1)
	start := time.Now()
	go func() {
		alice.Conn.SetWriteDeadline(time.Now().Add(time.Minute))
		sent <- numberedLines(alice.Conn, "alice", lines, size)
	}()

	// bob does not read for a while: alice must be held back, not refused.
	time.Sleep(1500 * time.Millisecond)
	select {
	case err := <-sent:
		t.Fatalf("20 MB went nowhere in %v with a reader not reading (err %v): no back-pressure", time.Since(start), err)
	default:
	}
	pad := strings.Repeat("x", size)
	for i := 0; i < lines; i++ {
		want := "<alice> alice " + strconv.Itoa(i) + " " + pad
		if got := bob.Line(); got != want {
			t.Fatalf("line %d: got %.60q, want %.60q", i, got, want)
		}
	}
	if err := <-sent; err != nil {
		t.Fatalf("sender: %v", err)
	}
	// The pair still works both ways.
	bob.Send("got it all")
	alice.Expect(`^<bob> got it all$`)
}

// TestSlowReaderIsCut: a partner that never reads is cut off after
// limits.slow_timeout. With resume off the sender is told with a count
// of the messages that were not delivered; with resume on the reader's
// session goes away (a stalled mobile network looks just like it), and
// the sender is told it may come back.
func TestSlowReaderIsCut(t *testing.T) {
	for _, tc := range []struct {
		name   string
		window time.Duration
		told   string // the notice alice waits for; (\d+), if any, counts what was lost
	}{
		// Without a count when the socket took all that was held as it
		// closed (a send buffer grown meanwhile, a busy machine that
		// cut it before it filled): what reached bob's socket is his to
		// read, and not counted lost. TestCutReaderCountIsExact holds
		// the count to what bob finds.
		{"resume off", 0, `^\* bob stopped reading and was cut off; (?:(\d+) of your messages were not delivered; )?you are free`},
		// With a count when more was held for bob than resume.buffer
		// keeps (TestResetReaderTellsSenderWhatWasNotKept holds it to
		// what his resume counts).
		{"resume on", 2 * time.Minute, `^\* bob lost the connection; waiting up to 2m for bob to come back(?:; (\d+) of your messages were not delivered)?$`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := enginetest.Start(t, func(o *engine.Options) {
				o.Limits.OutboundHigh = 64 << 10
				o.Limits.SlowTimeout = time.Second
				o.Resume.Window = tc.window
			})
			alice, bob := pairLines(t, d, "alice", "bob")

			go func() {
				alice.Conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
				_ = numberedLines(alice.Conn, "alice", 200_000, 200)
			}()
			re := regexp.MustCompile(tc.told)
			for {
				l := alice.Line()
				if strings.HasPrefix(l, "*") || strings.HasPrefix(l, "!") {
					t.Logf("alice read %q", l)
				}
				if strings.HasPrefix(l, "! not_paired") {
					t.Fatalf("not_paired before the cut notice")
				}
				if m := re.FindStringSubmatch(l); m != nil {
					if len(m) > 1 && m[1] != "" {
						if n, _ := strconv.Atoi(m[1]); n <= 0 {
							t.Fatalf("count %d in %q", n, l)
						}
					}
					break
				}
			}
			bob.ExpectClosed()
		})
	}
}

// TestSteadySlowReaderIsNotCut: a reader that reads steadily, or in
// bursts, but far slower than its partner sends, is behind all the while
// and is not cut off; once it stops reading, it is, within about
// limits.slow_timeout. What it reads empties the kernel's send buffer,
// which grows to megabytes on loopback, and Linux lets the server write
// to it again only once about a third of it is free: until then gnet's
// own buffer stays as it is. (Progress was measured by gnet's buffer
// alone: a reader taking less than a third of the kernel's buffer per
// slow_timeout was cut off as one that had stopped reading, and its
// partner told its messages were not delivered.)
func TestSteadySlowReaderIsNotCut(t *testing.T) {
	// A second and a half: a pause of the reader's is stretched on a
	// busy machine (the race detector, the suite in parallel), and must
	// stay well within it.
	const slow = 1500 * time.Millisecond
	for _, tc := range []struct {
		name  string
		chunk int           // bob reads this much at a time, all of it
		pause time.Duration // and then reads nothing this long
	}{
		{"steadily", 4 << 10, 50 * time.Millisecond},
		{"in bursts", 64 << 10, 400 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := enginetest.Start(t, func(o *engine.Options) {
				o.Limits.SlowTimeout = slow
				o.Resume.Window = 0
			})
			alice := d.DialLine(t).Login("alice")
			bob := newLineConn(t, dialReceiveBuffer(t, d.TCP, 16<<10))
			bob.resume = false
			bob.expect(`^\* welcome`)
			bob.login("bob")
			bob.send("/connect " + alice.Token)
			bob.expect(`^\* you are connected with alice$`)
			alice.Expect(`^\* bob is connected$`)

			go func() {
				alice.Conn.SetWriteDeadline(time.Now().Add(time.Minute))
				_ = numberedLines(alice.Conn, "alice", 2_000_000, 200)
			}()
			told := make(chan string, 1)
			go func() {
				for {
					l, err := alice.TryLine(time.Minute)
					if err != nil {
						return
					}
					if strings.HasPrefix(l, "*") || strings.HasPrefix(l, "!") {
						told <- l
						return
					}
				}
			}()

			// A few hundred KB per slow_timeout: far less than a third
			// of what the server's kernel holds for bob.
			buf := make([]byte, tc.chunk)
			total, start := 0, time.Now()
			for time.Since(start) < 3*slow {
				time.Sleep(tc.pause)
				bob.c.SetReadDeadline(time.Now().Add(enginetest.Timeout))
				n, err := io.ReadFull(bob.c, buf)
				total += n
				if err != nil {
					t.Fatalf("bob's read after %d bytes: %v", total, err)
				}
				select {
				case l := <-told:
					t.Fatalf("after %v, bob having read %d bytes, alice was told %q", time.Since(start).Round(time.Millisecond), total, l)
				default:
				}
			}
			t.Logf("bob read %d bytes in %v", total, time.Since(start).Round(time.Millisecond))

			// bob stops reading: he is cut off as slow.
			stopped := time.Now()
			select {
			case l := <-told:
				if !strings.HasPrefix(l, "* bob stopped reading and was cut off; ") {
					t.Fatalf("alice was told %q", l)
				}
				t.Logf("bob was cut off %v after his last read", time.Since(stopped).Round(time.Millisecond))
			case <-time.After(slow + 3*time.Second):
				t.Fatalf("bob stopped reading %v ago and was not cut off", time.Since(stopped).Round(time.Millisecond))
			}
		})
	}
}

// TestNetcatPipesAFile pipes a file through the real netcat binary, as a
// user would (`nc host 7070 < file`), to a partner that reads it all.
func TestNetcatPipesAFile(t *testing.T) {
	d := enginetest.Start(t, nil)
	bob := d.DialLine(t).Login("bob")

	const lines = 50_000
	file := filepath.Join(t.TempDir(), "input.txt")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "/login piper\n/connect %s\n", bob.Token)
	if err := numberedLines(f, "line", lines, 100); err != nil {
		t.Fatal(err)
	}
	f.Close()

	in, _ := os.Open(file)
	defer in.Close()
	var out strings.Builder
	finished := enginetest.PipeNetcat(t, d.TCP, in, &out)

	bob.Expect(`^\* piper is connected$`)
	pad := strings.Repeat("x", 100)
	for i := 0; i < lines; i++ {
		if got, want := bob.Line(), "<piper> line "+strconv.Itoa(i)+" "+pad; got != want {
			t.Fatalf("line %d: got %.50q", i, got)
		}
	}
	bob.Expect(`^\* piper disconnected; `)
	finished()
	if !strings.Contains(out.String(), "you are connected with bob") {
		t.Fatalf("nc saw: %.300q", out.String())
	}
}

// TestNetcatPipesAFileWithoutFinalNewline: a file whose last line has no
// line feed, as editors and printf leave many, is piped through netcat
// with -N. Its last line is a message like the others: at the end of
// the client's input it ends there, and is not dropped unsaid.
func TestNetcatPipesAFileWithoutFinalNewline(t *testing.T) {
	d := enginetest.Start(t, nil)
	bob := d.DialLine(t).Login("bob")

	finished := enginetest.PipeNetcat(t, d.TCP, strings.NewReader("/login piper\n/connect "+bob.Token+"\nfirst\nsecond, with no line feed"), io.Discard)

	bob.Expect(`^\* piper is connected$`)
	bob.ExpectLines("<piper> first", "<piper> second, with no line feed")
	bob.Expect(`^\* piper disconnected; `)
	finished()
}

// TestNetcatPipesAFileWithColours pipes a build log through the real
// netcat: every other line is coloured (ESC, a control character that
// is refused). The plain lines are relayed, all of them and in order;
// the coloured ones are refused, past the burst by a rate_limited a
// second. Before, the refusals dropped past ten bursts counted as a
// flood though the plain lines between them were relayed: the
// connection was cut, and the rest of the file lost.
func TestNetcatPipesAFileWithColours(t *testing.T) {
	d := enginetest.Start(t, nil)
	bob := d.DialLine(t).Login("bob")

	const lines = 30_000 // past ten bursts of refusals (2000 each by default)
	var in strings.Builder
	fmt.Fprintf(&in, "/login piper\n/connect %s\n", bob.Token)
	for i := range lines {
		fmt.Fprintf(&in, "%d plain line\n\x1b[32mINFO\x1b[0m %d coloured line\n", i, i)
	}
	var out strings.Builder
	finished := enginetest.PipeNetcat(t, d.TCP, strings.NewReader(in.String()), &out)

	bob.Expect(`^\* piper is connected$`)
	for i := range lines {
		if got, want := bob.Line(), fmt.Sprintf("<piper> %d plain line", i); got != want {
			t.Fatalf("line %d: got %.60q", i, got)
		}
	}
	bob.Expect(`^\* piper disconnected; `)
	finished()
	said := out.String()
	if !strings.Contains(said, "! control_character: ") || strings.Contains(said, "closing the connection") {
		t.Fatalf("nc saw: %.300q ... %.300q", said, said[max(len(said)-300, 0):])
	}
}

// TestBackPressureWakesEverySender: two senders wait on one reader's
// queue: its partner, and the reader itself, which asks for help again
// and again without reading the answers. As the reader catches up both
// are woken, the reader first (it waited first); it reads more of its
// own commands and fills its queue again before its partner looks. The
// partner must then wait for the next catch-up, not forever: every
// line it sent still arrives.
func TestBackPressureWakesEverySender(t *testing.T) {
	d := enginetest.Start(t, func(o *engine.Options) {
		o.Loops = 1 // the wakes run one after the other, in the order the senders waited
		// Marks above what the sockets hold: the reader's queue is down
		// to the low mark while its socket is still full, so what the
		// first woken adds stays queued when the second looks.
		o.Limits.OutboundHigh = 1 << 20
		o.Limits.OutboundMax = 256 << 20
		o.Limits.MessageRate = 1e6
		o.Limits.MessageBurst = 1e6
	})
	alice := d.DialLine(t).Login("alice")
	// bob's socket holds little, and he reads a little at a time.
	raw := dialSmallReceiveBuffer(t, d.TCP)
	bob := &lineConn{t: t, c: raw, r: bufio.NewReaderSize(raw, 4<<10), resume: d.Resume}
	bob.expect(`^\* welcome`)
	bob.login("bob")
	bob.send("/connect " + alice.Token)
	alice.Expect(`is connected`)
	bob.expect(`connected with alice`)

	// bob does not read: the answers to his commands fill his queue, and
	// he is held for his own replies.
	const asks = 10000
	go func() {
		bob.c.SetWriteDeadline(time.Now().Add(time.Minute))
		_, _ = bob.c.Write([]byte(strings.Repeat("/help\n", asks)))
	}()
	time.Sleep(500 * time.Millisecond)
	// alice talks to him, and is held behind his queue too.
	const lines = 3000
	go func() {
		alice.Conn.SetWriteDeadline(time.Now().Add(time.Minute))
		_ = numberedLines(alice.Conn, "alice", lines, 100)
	}()
	time.Sleep(500 * time.Millisecond)

	// bob reads, at a slow reader's pace.
	pad := strings.Repeat("x", 100)
	for got, n := 0, 0; got < lines; n++ {
		l, err := bob.read(5 * time.Second)
		if err != nil {
			t.Fatalf("bob got %d of alice's %d lines, then: %v", got, lines, err)
		}
		if strings.HasPrefix(l, "<alice> ") {
			if want := "<alice> alice " + strconv.Itoa(got) + " " + pad; l != want {
				t.Fatalf("line %d: got %.60q", got, l)
			}
			got++
		}
		if n%64 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
}

// TestBackPressureEndsWithTheReader: a sender is held behind its
// partner's connection, which stopped reading, when the partner resumes
// its session on a new connection. The old connection is done with the
// session and is left to write its goodbye, or be cut as a slow reader;
// the sender must not wait for that, but talk to the new one at once.
func TestBackPressureEndsWithTheReader(t *testing.T) {
	d := enginetest.Start(t, func(o *engine.Options) {
		o.Limits.SlowTimeout = 30 * time.Second
	})
	alice, bob := pairLines(t, d, "alice", "bob")

	// bob stops reading; alice pastes until she is held, then one more.
	go func() {
		alice.Conn.SetWriteDeadline(time.Now().Add(time.Minute))
		if numberedLines(alice.Conn, "alice", 100_000, 200) == nil {
			_, _ = alice.Conn.Write([]byte("the last line\n"))
		}
	}()
	time.Sleep(time.Second)

	back, peer, _, _ := enginetest.ResumeLine(t, d, bob.Key)
	if peer != "alice" {
		t.Fatalf("resumed with %q", peer)
	}
	// About 20 MB follow the resume, which a loaded machine under the
	// race detector can take several seconds to relay; a sender left
	// waiting on the old connection would wait for it to be cut as slow,
	// 30 s after it stalled, past this deadline.
	deadline := time.Now().Add(20 * time.Second)
	for {
		l, err := back.TryLine(time.Until(deadline))
		if err != nil {
			t.Fatalf("alice's last line did not reach bob's new connection: %v", err)
		}
		if l == "<alice> the last line" {
			break
		}
	}
}
