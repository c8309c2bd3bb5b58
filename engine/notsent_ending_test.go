package engine_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"duet/engine"
	"duet/engine/enginetest"
)

// A refused run as these tests send it: runSays says, then a mark (a
// line that is not UTF-8, a frame that is not JSON) whose error does
// not end the run. The mark's answer says that every say before it was
// read, and that the run's count, but for what a second's count told
// meanwhile, is still to tell: the ending comes then. The counts told
// are summed, so the tests hold whichever moment the second turns.
const (
	runSays   = 40
	lineMark  = "caf\xe9"
	jsonMarkE = "bad_json"
	burst     = 4 // limits.message_burst where says are dropped: 36 of them are not a flood
)

var (
	lineMarkE   = regexp.MustCompile(`^! invalid_utf8: `)
	lineNotSent = regexp.MustCompile(`^\* (\d+) more lines? (?:was|were) not sent: `)
	jsonNotSent = regexp.MustCompile(`^(\d+) more messages? (?:was|were) not sent: `)
)

// TestEndingTellsTheNotSentCount: a user who goes on saying things that
// are refused (no partner, or numbered says past the rate limit) is told
// the first refusal, and then a count a second of the rest. When the
// server ends the connection in a way that still writes to the client
// (a shutdown, a drain, a resume elsewhere, the idle or the login
// timeout), the refusals not counted yet are counted before the
// goodbye: every say sent is in the error or in a count, and no count
// comes after the goodbye. A quit had done so; the other endings had
// dropped the count pending since the last second's.
func TestEndingTellsTheNotSentCount(t *testing.T) {
	t.Parallel()
	drain := func(d *enginetest.Daemon) {
		ctx, cancel := context.WithTimeout(context.Background(), enginetest.Timeout)
		defer cancel()
		d.Drain(ctx, 0, nil)
	}
	t.Run("line", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name string
			end  func(t *testing.T, d *enginetest.Daemon, alice *enginetest.LineClient)
			bye  string // the first line of the goodbye
		}{
			{"shutdown", func(t *testing.T, d *enginetest.Daemon, _ *enginetest.LineClient) { go shutdown(d) },
				`^\* the server is shutting down; goodbye$`},
			{"drain", func(t *testing.T, d *enginetest.Daemon, _ *enginetest.LineClient) { go drain(d) },
				`^\* the server is restarting; reconnect and type /resume `},
			{"resumed", func(t *testing.T, d *enginetest.Daemon, alice *enginetest.LineClient) {
				d.DialLine(t).Send("/resume " + alice.Key)
			}, `^\* your session was resumed on another connection; this one is closed$`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				d := enginetest.Start(t, nil)
				alice := d.DialLine(t).Login("alice")
				counted := refuseLines(t, alice)
				tc.end(t, d, alice)
				bye := regexp.MustCompile(tc.bye)
				said := false
				for {
					l, err := alice.TryLine(enginetest.Timeout)
					if err != nil {
						if ne, ok := err.(net.Error); ok && ne.Timeout() {
							t.Fatal("the connection was not closed")
						}
						break
					}
					switch {
					case bye.MatchString(l):
						said = true
					case said:
						// The rest of the goodbye (bye); no count.
						if lineNotSent.MatchString(l) {
							t.Fatalf("a count after the goodbye: %q", l)
						}
					default:
						counted += lineCount(t, l)
					}
				}
				if !said {
					t.Fatal("no goodbye")
				}
				if counted != runSays-1 {
					t.Fatalf("of %d says refused, the first told, %d were counted, want %d", runSays, counted, runSays-1)
				}
			})
		}
	})
	t.Run("json", func(t *testing.T) {
		t.Parallel()
		// The deadlines end a connection on the loop's tick, before its
		// count of the second is told (checkDeadlines, checkGuard): the
		// upgrade and every frame go in one write, so that no tick comes
		// between them, and the first tick after ends the connection.
		for _, tc := range []struct {
			name  string
			edit  func(o *engine.Options)
			login bool // log in first; else the says are dropped past the rate limit
			end   func(d *enginetest.Daemon)
			bye   string // the type of the goodbye's first event, "" for the close frame alone
			close ws.StatusCode
		}{
			{"shutdown", nil, true, shutdown, "shutdown", ws.StatusGoingAway},
			{"drain", nil, true, drain, "notice", 1012},
			{"idle", func(o *engine.Options) {
				o.Limits.IdleTimeout, o.Limits.PingInterval = time.Millisecond, time.Hour
			}, true, nil, "", ws.StatusGoingAway},
			{"login_timeout", func(o *engine.Options) {
				// Past the burst, says before a login are dropped,
				// and, numbered, counted as a refused run is.
				o.Limits.LoginTimeout = time.Millisecond
				o.Limits.MessageRate, o.Limits.MessageBurst = 1e-6, burst
			}, false, nil, "error", ws.StatusPolicyViolation},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				d := enginetest.Start(t, func(o *engine.Options) {
					if tc.edit != nil {
						tc.edit(o)
					}
				})
				c := dialFrom(t, "127.0.0.1", d.WS)
				in := []byte(upgradeRequest(d.WS, ""))
				if tc.login {
					in = append(in, clientFrame(0x81, []byte(`{"type":"login","name":"alice"}`), true)...)
				}
				for i := range runSays {
					in = append(in, clientFrame(0x81, fmt.Appendf(nil, `{"type":"say","text":"anyone there?","id":%d}`, i+1), true)...)
				}
				if tc.end != nil {
					in = append(in, clientFrame(0x81, []byte("{"), true)...)
				}
				write(t, c, in)
				wc := &wsConn{t: t, c: c, r: bufio.NewReader(c)}
				resp, err := http.ReadResponse(wc.r, nil)
				if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
					t.Fatalf("upgrade: %v %v", resp, err)
				}
				// What comes before the run's count: the says told an
				// error each, the last of them the run's first.
				answers := []string{"hello", "welcome", "error not_paired 1"}
				if !tc.login {
					answers = []string{"hello"}
					for id := 1; id <= burst; id++ {
						answers = append(answers, fmt.Sprint("error not_logged_in ", id))
					}
					answers = append(answers, fmt.Sprint("error rate_limited ", burst+1))
				}
				var told uint64 // the says told so far run from 1 to told
				for _, want := range answers {
					ev := wc.event()
					got := fmt.Sprint(ev["type"])
					if ev["type"] == "error" {
						got = fmt.Sprint(got, " ", ev["code"], " ", ev["id"])
						told++
					}
					if got != want {
						t.Fatalf("got %v, want %s", ev, want)
					}
				}
				first := told // the says told by the time the run's count began
				said := false
				var code ws.StatusCode
				for code == 0 {
					f, err := wc.frame(enginetest.Timeout)
					if err != nil {
						t.Fatalf("no close frame: %v", err)
					}
					if f.Header.OpCode == ws.OpClose {
						code, _ = ws.ParseCloseFrameData(f.Payload)
						break
					}
					if f.Header.OpCode != ws.OpText {
						continue
					}
					var ev map[string]any
					if err := json.Unmarshal(f.Payload, &ev); err != nil {
						t.Fatalf("bad JSON %q", f.Payload)
					}
					if ev["type"] == "error" && ev["code"] == jsonMarkE && !said {
						go tc.end(d)
						continue
					}
					if m := jsonNotSent.FindStringSubmatch(fmt.Sprint(ev["text"])); ev["type"] == "notice" && m != nil {
						if said {
							t.Fatalf("a count after the goodbye: %v", ev)
						}
						n, _ := strconv.Atoi(m[1])
						first, last := ev["first_id"].(float64), ev["last_id"].(float64)
						if uint64(first) != told+1 || int(last-first)+1 != n {
							t.Fatalf("after says 1 to %d were told, %v", told, ev)
						}
						told = uint64(last)
						continue
					}
					if ev["type"] == tc.bye && !said {
						said = true
						continue
					}
					if !said {
						t.Fatalf("told %v", ev)
					}
				}
				if tc.bye != "" && !said {
					t.Fatal("no goodbye")
				}
				if code != tc.close {
					t.Errorf("closed %d, want %d", code, tc.close)
				}
				if told != runSays {
					t.Fatalf("of says 1 to %d, 1 to %d were told, %d of them by a count, want all", runSays, told, told-first)
				}
			})
		}
	})
}

// lineCount is how many lines a count of refused lines counts; a line
// that is no such count fails the test.
func lineCount(t *testing.T, l string) int {
	t.Helper()
	m := lineNotSent.FindStringSubmatch(l)
	if m == nil {
		t.Fatalf("told %q", l)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// refuseLines sends runSays lines from lc, logged in and paired with no
// one, and then a line that is not UTF-8, and reads the answers to them
// all: the first line's not_paired error, and the error of the last,
// which does not end the run of the rest. It returns how many of the
// rest were counted meanwhile (a second passed since the first): the
// others are counted in the run, not told yet.
func refuseLines(t *testing.T, lc *enginetest.LineClient) (counted int) {
	t.Helper()
	var in []byte
	for i := range runSays {
		in = fmt.Appendf(in, "anyone there? %d\n", i)
	}
	write(t, lc.Conn, append(in, lineMark+"\n"...))
	lc.Expect(`^! not_paired: `)
	for l := lc.Line(); !lineMarkE.MatchString(l); l = lc.Line() {
		counted += lineCount(t, l)
	}
	return counted
}
