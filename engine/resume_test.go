package engine_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"duet/config"
	"duet/engine"
	"duet/engine/auth/authtest"
	"duet/engine/enginetest"
	"duet/engine/service"
	"duet/proto"
)

// Session resume over the wire (docs/RESUME.md): every test here runs a
// real daemon on loopback and real clients, and drops connections the
// way networks do, with a TCP reset.

// netcat runs the real nc against the daemon's line port: lines written
// to in go to the server, lines the server sends come out of next.
type netcat struct {
	t    *testing.T
	in   io.WriteCloser
	out  chan string
	done chan error
}

func startNetcat(t *testing.T, d *enginetest.Daemon) *netcat {
	t.Helper()
	host, port, _ := strings.Cut(d.TCP, ":")
	cmd := exec.Command(enginetest.ToolPath(t, "nc"), "-N", host, port) // -N: shut down the socket at end of input, as Ctrl-D does
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	nc := &netcat{t: t, in: in, out: make(chan string, 1024), done: make(chan error, 1)}
	go func() {
		r := bufio.NewScanner(stdout)
		for r.Scan() {
			nc.out <- r.Text()
		}
		close(nc.out)
	}()
	go func() { nc.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-nc.done
	})
	return nc
}

func (nc *netcat) send(line string) {
	nc.t.Helper()
	if _, err := io.WriteString(nc.in, line+"\n"); err != nil {
		nc.t.Fatalf("nc: %v", err)
	}
}

// next is the next line nc printed, without its CR LF.
func (nc *netcat) next() string {
	nc.t.Helper()
	select {
	case l, ok := <-nc.out:
		if !ok {
			nc.t.Fatal("nc exited")
		}
		return strings.TrimSuffix(l, "\r")
	case <-time.After(enginetest.Timeout):
		nc.t.Fatal("nc printed nothing")
	}
	return ""
}

// TestResumeAfterResetNetcat: alice's connection is reset in the middle
// of a conversation; bob is told she is away and sends 100 messages
// meanwhile, none refused; alice comes back with the real nc and
// /resume: every message arrives, in order, with the one she had read
// before the drop in front (a line client cannot say what it read, so
// what came in the moments before is replayed too), and bob is told she
// is back. The key used is dead; the new one works.
func TestResumeAfterResetNetcat(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, nil)
	alice := d.DialLine(t).Login("alice")
	bob := d.DialLine(t).Login("bob")
	bob.Send("/connect " + alice.Token)
	bob.Expect(`^\* you are connected with alice$`)
	alice.Expect(`^\* bob is connected$`)
	bob.Send("before the drop")
	alice.Expect(`^<bob> before the drop$`)

	enginetest.Reset(t, alice.Conn)
	bob.Expect(`^\* alice lost the connection; waiting up to 2m for alice to come back$`)
	const n = 100
	for i := range n {
		bob.Send(fmt.Sprintf("while away %d", i))
	}
	// Nothing was refused: the answer to who is the next thing bob reads.
	bob.Send("/who")
	bob.Expect(`^\* you are bob, your token is [0-9a-f]{32}, connected with alice, who lost the connection; `)

	nc := startNetcat(t, d)
	if g := nc.next(); !strings.HasPrefix(g, "* welcome to duet") {
		t.Fatalf("greeting %q", g)
	}
	nc.send("/resume " + alice.Key)
	peer, replayed, missed, key := enginetest.ReadResumed(t, nc.next)
	if peer != "bob" || missed != 0 {
		t.Fatalf("resumed with %q, %d missed", peer, missed)
	}
	want := []string{"<bob> before the drop"}
	for i := range n {
		want = append(want, fmt.Sprintf("<bob> while away %d", i))
	}
	if strings.Join(replayed, "\n") != strings.Join(want, "\n") {
		t.Fatalf("replayed %d messages:\n%s", len(replayed), strings.Join(replayed, "\n"))
	}
	bob.Expect(`^\* alice is back$`)

	// The conversation goes on, both ways.
	nc.send("back again")
	bob.Expect(`^<alice> back again$`)
	bob.Send("welcome back")
	if l := nc.next(); l != "<bob> welcome back" {
		t.Fatalf("alice got %q", l)
	}
	// The key used is dead.
	old := d.DialLine(t)
	old.Send("/resume " + alice.Key)
	old.Expect(`^! bad_resume_key: no session is waiting for that resume key`)

	// nc's end of input (Ctrl-D) is a leave, not a drop: bob is free at
	// once, and the new key resumes nothing.
	nc.in.Close()
	bob.Expect(`^\* alice disconnected; you are free to be joined again$`)
	late := d.DialLine(t)
	late.Send("/resume " + key)
	late.Expect(`^! bad_resume_key: `)
	if st := d.Hub.Stats(); st.ResumedAway != 1 || st.Away != 0 {
		t.Fatalf("hub stats %+v", st)
	}
}

// TestResumeAnswerLost: a phone reconnects and resumes, and its new
// connection fails as the answer comes back, unread, with the fresh key
// in it: reset, or, as a network that fails sends nothing, still
// looking open. Before, the key it held was dead and its name taken for
// the whole window: it could neither resume nor log in, and bob was
// told at the end that alice timed out. The key it used takes the
// session back, with everything bob said, until alice says something
// after an answer; from then on only the fresh key works (with real
// netcat).
func TestResumeAnswerLost(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, nil)
	alice, bob := pairLines(t, d, "alice", "bob")
	awayAgain := func(c net.Conn) {
		t.Helper()
		enginetest.Reset(t, c)
		bob.Expect(`^\* alice lost the connection; waiting up to 2m for alice to come back$`)
	}
	awayAgain(alice.Conn)
	bob.Send("while away 1")

	lost := d.DialLine(t)
	lost.Send("/resume " + alice.Key)
	bob.Expect(`^\* alice is back$`)
	awayAgain(lost.Conn) // its answer never read
	bob.Send("while away 2")

	zombie := d.DialLine(t) // its answer never read, and it looks open
	zombie.Send("/resume " + alice.Key)
	bob.Expect(`^\* alice is back$`)

	back, peer, replayed, _ := enginetest.ResumeLine(t, d, alice.Key)
	if got := strings.Join(replayed, "|"); peer != "bob" || got != "<bob> while away 1|<bob> while away 2" {
		t.Fatalf("resumed with %q, replayed %q", peer, got)
	}

	// alice speaks: she has the answer, and the key she used is dead.
	back.Send("back")
	bob.Expect(`^<alice> back$`)
	awayAgain(back.Conn)
	stale := d.DialLine(t)
	stale.Send("/resume " + alice.Key)
	stale.Expect(`^! bad_resume_key: no session is waiting for that resume key`)

	nc := startNetcat(t, d)
	if g := nc.next(); !strings.HasPrefix(g, "* welcome to duet") {
		t.Fatalf("greeting %q", g)
	}
	nc.send("/resume " + back.Key)
	if peer, _, _, _ := enginetest.ReadResumed(t, nc.next); peer != "bob" {
		t.Fatalf("the fresh key resumed with %q", peer)
	}
	bob.Expect(`^\* alice is back$`)
}

// TestResumeToldPartnerBack: alice's connection drops, and bob is told;
// then his drops too, and alice comes back while he is away. Before,
// his resume said nothing more of her, and his last word of her was
// that she lost the connection. It tells him she is back; and first
// that she lost the connection, news that may have died unread with
// his own (then he was told only "alice is back", of an absence he had
// never heard of).
func TestResumeToldPartnerBack(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, nil)
	alice, bob := pairLines(t, d, "alice", "bob")
	enginetest.Reset(t, alice.Conn)
	bob.Expect(`^\* alice lost the connection; waiting up to 2m for alice to come back$`)
	enginetest.Reset(t, bob.Conn)
	// Both away before alice comes back: else she may come back while
	// bob's connection, already reset, still counts as open.
	waitFor(t, "both sessions to be away", func() bool { return d.Hub.Stats().Away == 2 })
	back, _, _, _ := enginetest.ResumeLine(t, d, alice.Key)
	back.Expect(`^\* bob lost the connection; waiting up to \w+ for bob to come back$`)
	back.Send("while you were away")
	waitFor(t, "alice's message to be kept for bob", func() bool { return d.Hub.Stats().HistoryBytes > 0 })
	bobBack, peer, replayed, _ := enginetest.ResumeLine(t, d, bob.Key)
	if peer != "alice" || strings.Join(replayed, "|") != "<alice> while you were away" {
		t.Fatalf("bob resumed with %q, replayed %q", peer, replayed)
	}
	bobBack.Expect(`^\* alice lost the connection; waiting up to 2m for alice to come back$`)
	bobBack.Expect(`^\* alice is back$`)
	back.Expect(`^\* bob is back$`)
}

// TestResumeToldPairingEndedBeforeAnother: alice's messages to bob, who
// was away, never reached him: his session ended while alice was away
// too, and carol connected to alice's token before she came back. Her
// resume names carol, and tells how the pairing with bob ended and that
// her messages never reached him; before, it told nothing of bob, and
// said carol, who never went away, "is back" (news of bob's absence
// taken for carol's).
func TestResumeToldPairingEndedBeforeAnother(t *testing.T) {
	t.Parallel()
	// One session away at most: alice's going away ends bob's.
	d := enginetest.Start(t, func(o *engine.Options) { o.Resume.MaxAway = 1 })
	alice, bob := pairLines(t, d, "alice", "bob")
	enginetest.Reset(t, bob.Conn)
	alice.Expect(`^\* bob lost the connection`)
	for _, text := range []string{"one", "two", "three"} {
		alice.Send(text)
	}
	alice.Send("/who") // its answer: the three were read before the reset
	alice.Expect(`^\* you are alice, .* connected with bob`)
	enginetest.Reset(t, alice.Conn)
	carol := d.DialLine(t).Login("carol")
	waitFor(t, "bob's session ended", func() bool {
		carol.Send("/connect " + alice.Token)
		l := carol.Expect(`^(\* you are connected with alice|! room_full: )`)
		return strings.HasPrefix(l, "* you are")
	})
	carol.Expect(`^\* alice lost the connection`)
	back, peer, _, _ := enginetest.ResumeLine(t, d, alice.Key)
	if peer != "carol" {
		t.Fatalf("alice resumed with %q", peer)
	}
	carol.Expect(`^\* alice is back$`)
	back.Send("/who")
	var told []string
	for l := back.Line(); !strings.HasPrefix(l, "* you are alice"); l = back.Line() {
		told = append(told, l)
	}
	if want := []string{"* while you were away, bob timed out; 3 of your messages were not delivered"}; !slices.Equal(told, want) {
		t.Fatalf("alice's resume told %q, want %q", told, want)
	}
}

// TestResumeAgainShowsTheKey: a line client that types /resume on a
// connection resumed already is refused, and shown who it is and its
// key again: a telnet user whose Ctrl-C during the replay threw away the
// answer's last lines, the new key among them, does just that, and had
// no way to see the key before; the resume typed retires the key used,
// so the user had none.
func TestResumeAgainShowsTheKey(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, nil)
	alice, bob := pairLines(t, d, "alice", "bob")
	enginetest.Reset(t, alice.Conn)
	bob.Expect(`lost the connection`)
	back, _, _, _ := enginetest.ResumeLine(t, d, alice.Key)
	bob.Expect(`^\* alice is back$`)
	// The key used, or none: a user who lost the key has none to type.
	for _, again := range []string{"/resume " + alice.Key, "/resume"} {
		back.Send(again)
		back.Expect(`^! already_logged_in: `)
		back.Expect(`^\* you are alice, your token is ` + alice.Token + `$`)
		back.Expect(`^\* resume key: ` + back.Key + ` \(if your connection drops, reconnect and type /resume ` + back.Key + ` within 2m\)$`)
	}
	// Before a login, no key is a bad one.
	none := d.DialLine(t)
	none.Send("/resume  ")
	none.Expect(`^! bad_resume_key: a resume key is 26 letters and digits`)
	enginetest.Reset(t, back.Conn)
	bob.Expect(`lost the connection`)
	if _, peer, _, _ := enginetest.ResumeLine(t, d, back.Key); peer != "bob" {
		t.Fatalf("the key shown resumed with %q", peer)
	}
}

// TestResumeAnswerLostRetellsNews: what a resume's answer tells of the
// user's absence (the partner is back; the pairing ended) is told again
// to a resume with the same key, when the first answer was lost with
// its connection, whether the server saw that connection drop or not:
// before, the second resume, taking the session over from the first,
// told nothing of it, and nor did one after a drop the server saw.
func TestResumeAnswerLostRetellsNews(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, nil)
	resumeTwice := func(key string, dropped bool, news ...string) {
		t.Helper()
		// The answer read here stands for one its client never read:
		// the client says nothing after it, and its network fails,
		// without a word (the connection open still to the server) or
		// with a reset the server sees (the session away again).
		lost, _, _, _ := enginetest.ResumeLine(t, d, key)
		for _, n := range news {
			lost.Expect(n)
		}
		if dropped {
			away := d.Hub.Stats().Away
			enginetest.Reset(t, lost.Conn)
			waitFor(t, "the session away again", func() bool { return d.Hub.Stats().Away > away })
		}
		back, _, _, _ := enginetest.ResumeLine(t, d, key)
		for _, n := range news {
			back.Expect(n)
		}
	}
	for i, dropped := range []bool{false, true} {
		alice, bob := pairLines(t, d, fmt.Sprint("alice", i), fmt.Sprint("bob", i))
		enginetest.Reset(t, bob.Conn)
		alice.Expect(`^\* bob\d lost the connection`)
		away := d.Hub.Stats().Away
		enginetest.Reset(t, alice.Conn)
		// Alice away before bob comes back: else he may come back while
		// her connection, already reset, still counts as open, and the
		// news of his return goes to it.
		waitFor(t, "alice away", func() bool { return d.Hub.Stats().Away > away })
		enginetest.ResumeLine(t, d, bob.Key)
		resumeTwice(alice.Key, dropped, `^\* bob\d lost the connection; waiting up to 2m for bob\d to come back$`, `^\* bob\d is back$`)

		carol, dave := pairLines(t, d, fmt.Sprint("carol", i), fmt.Sprint("dave", i))
		enginetest.Reset(t, carol.Conn)
		dave.Expect(`^\* carol\d lost the connection`)
		pairs := d.Hub.Stats().Pairs
		dave.Send("/quit")
		waitFor(t, "dave gone", func() bool { return d.Hub.Stats().Pairs < pairs })
		resumeTwice(carol.Key, dropped, `^\* dave\d left; you are free to be joined again$`)
	}
}

// TestResumeKeyRetiredByAnyInput: whatever the client sends after the
// answer to its resume retires the key it used, a command refused
// included: it read the answer.
func TestResumeKeyRetiredByAnyInput(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, nil)
	for i, input := range []string{"/nosuchcommand", "/who", "hello"} {
		alice, bob := pairLines(t, d, fmt.Sprint("alice", i), fmt.Sprint("bob", i))
		enginetest.Reset(t, alice.Conn)
		bob.Expect(`lost the connection`)
		back, _, _, _ := enginetest.ResumeLine(t, d, alice.Key)
		bob.Expect(`is back$`)
		back.Send(input)
		if strings.HasPrefix(input, "/") {
			back.Line() // its answer
		} else {
			bob.Expect(input + "$")
		}
		enginetest.Reset(t, back.Conn)
		stale := d.DialLine(t)
		stale.Send("/resume " + alice.Key)
		stale.Expect(`^! bad_resume_key: no session is waiting for that resume key`)
		resumed, _, _, _ := enginetest.ResumeLine(t, d, back.Key)
		resumed.Send("/quit")
	}
}

// TestResumeJSONExactlyOnce: a browser reads some of the messages sent
// to it, and its socket is reset with more on the way (some written to
// it, some still queued, some sent while it is away). Resuming with last
// = the seq of the last message it read replays exactly the rest, in
// order, none twice, and the numbering goes on without a gap. An ack
// lets the server forget what it kept.
func TestResumeJSONExactlyOnce(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, nil)
	alice := d.DialWS(t).Login("alice")
	bob := d.DialLine(t).Login("bob")
	bob.Send("/connect " + alice.Token)
	bob.Expect(`^\* you are connected with alice$`)
	alice.Expect("paired")

	const sent, read, later = 50, 20, 10
	// In one write: the server relays lines read together as one run,
	// and numbers each message of it.
	var lines strings.Builder
	for i := range sent {
		fmt.Fprintf(&lines, "m%d\n", i+1)
	}
	if _, err := bob.Conn.Write([]byte(lines.String())); err != nil {
		t.Fatal(err)
	}
	for i := range read {
		text, seq := enginetest.WSMessage(t, alice)
		if text != fmt.Sprintf("m%d", i+1) || seq != uint64(i+1) {
			t.Fatalf("message %d: %q seq %d", i+1, text, seq)
		}
	}
	// Cut mid-stream: what the client has not read yet is lost with it.
	enginetest.Reset(t, alice.Conn)
	bob.Expect(`^\* alice lost the connection; waiting up to 2m for alice to come back$`)
	for i := range later {
		bob.Send(fmt.Sprintf("m%d", sent+i+1))
	}
	taken(t, d, sent+later)

	back, ev := enginetest.ResumeWS(t, d, alice.Key, read)
	if ev["name"] != "alice" || ev["token"] != alice.Token || ev["peer"] != "bob" ||
		ev["replayed"] != float64(sent+later-read) || ev["missed"] != float64(0) {
		t.Fatalf("resumed %v", ev)
	}
	for i := read; i < sent+later; i++ {
		text, seq := enginetest.WSMessage(t, back)
		if text != fmt.Sprintf("m%d", i+1) || seq != uint64(i+1) {
			t.Fatalf("replay: %q seq %d, want m%d seq %d", text, seq, i+1, i+1)
		}
	}
	bob.Expect(`^\* alice is back$`)
	bob.Send("after")
	if text, seq := enginetest.WSMessage(t, back); text != "after" || seq != sent+later+1 {
		t.Fatalf("after the replay: %q seq %d", text, seq)
	}

	// What the client acknowledges is no longer kept.
	if st := d.Hub.Stats(); st.HistoryBytes == 0 {
		t.Fatal("nothing kept before the ack")
	}
	back.Send(map[string]any{"type": "ack", "last": sent + later + 1})
	waitFor(t, "the ack to empty the history", func() bool { return d.Hub.Stats().HistoryBytes == 0 })
	back.Say("hi bob")
	bob.Expect(`^<alice> hi bob$`)
}

// taken waits until the server has taken n messages in all
// (hub.Stats.Messages): what a client sent with no answer to wait for is
// then in the hub, so that a resume that follows finds it kept rather
// than racing it (what comes after a resume arrives live, after the
// replay, which is right but not what such a test counts).
func taken(t *testing.T, d *enginetest.Daemon, n uint64) {
	t.Helper()
	// Tens of thousands of messages, under the race detector on a
	// machine other tests load too, may take longer than one Timeout;
	// progress is what must not stop.
	what := fmt.Sprintf("the server to take %d messages", n)
	for tries := 0; ; tries++ {
		before := d.Hub.Stats().Messages
		deadline := time.Now().Add(enginetest.Timeout)
		for d.Hub.Stats().Messages < n && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		now := d.Hub.Stats().Messages
		if now >= n {
			return
		}
		if now == before || tries == 5 {
			t.Fatalf("timed out waiting for %s: %d taken", what, now)
		}
	}
}

// waitFor polls cond until it holds, or fails the test.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(enginetest.Timeout); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestResumeTakesOverZombie: the old connection is still open (the
// server has not noticed it is dead) when the user resumes from a new
// one. The old one is told why and closed, nothing it sends acts for the
// user any more, the new one carries on, and the partner sees no leave.
func TestResumeTakesOverZombie(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, nil)
	alice, bob := enginetest.PairWS(t, d)
	bob.Say("one")
	if text, _ := enginetest.WSMessage(t, alice); text != "one" {
		t.Fatalf("alice got %q", text)
	}

	back, ev := enginetest.ResumeWS(t, d, alice.Key, 1)
	if ev["peer"] != "bob" || ev["replayed"] != float64(0) {
		t.Fatalf("resumed %v", ev)
	}
	// The old connection: a notice, bye, and a close frame that says why.
	if n := alice.Expect("notice"); n["text"] != "your session was resumed on another connection; this one is closed" {
		t.Fatalf("old connection told %v", n)
	}
	alice.Expect("bye")
	code, reason := alice.ExpectClose()
	if code != 1000 || reason != "resumed elsewhere" {
		t.Fatalf("close %d %q", code, reason)
	}

	// bob sees nothing but what the new connection says.
	back.Say("still me")
	if got := bob.Next(); got["type"] != "message" || got["text"] != "still me" {
		t.Fatalf("bob got %v, want alice's message and no notice", got)
	}
	bob.Say("two")
	if text, seq := enginetest.WSMessage(t, back); text != "two" || seq != 2 {
		t.Fatalf("new connection got %q seq %d", text, seq)
	}
	if st := d.Hub.Stats(); st.ResumedZombie != 1 || st.Users != 2 || st.Pairs != 1 {
		t.Fatalf("hub stats %+v", st)
	}
}

// pairLineWS logs alice in on the line protocol and bob on WebSocket,
// and has bob connect to alice; both have been told.
func pairLineWS(t *testing.T, d *enginetest.Daemon) (alice *enginetest.LineClient, bob *enginetest.WSClient) {
	t.Helper()
	alice = d.DialLine(t).Login("alice")
	bob = d.DialWS(t).Login("bob")
	bob.Connect(alice.Token)
	bob.Expect("paired")
	alice.Expect(`^\* bob is connected$`)
	return alice, bob
}

// TestLoginAsAwayName: a user whose connection dropped and who logs in
// again under the same name is told the name is its away session's, to
// resume with its key, or to have again once the session's time is up;
// not merely to pick another, which a name held by a connected user is
// still answered, in either protocol.
func TestLoginAsAwayName(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, nil)
	alice := d.DialLine(t).Login("alice")
	enginetest.Reset(t, alice.Conn)
	waitFor(t, "alice away", func() bool { return d.Hub.Stats().Away == 1 })

	again := d.DialLine(t)
	again.Send("/login alice")
	again.Expect(`^! name_taken: that name is in use by a session whose connection dropped; if it is yours, resume it \(on a terminal, /resume KEY with the key you were shown; a page resumes by itself when reloaded in its tab\), or log in again once its time is up, in (1m\d+s|2m)$`)
	w := d.DialWS(t)
	w.Send(map[string]string{"type": "login", "name": "Alice"})
	if ev := w.Expect("error"); ev["code"] != "name_taken" || !strings.Contains(ev["text"].(string), "/resume KEY") {
		t.Fatalf("login over WebSocket as away alice: %v", ev)
	}

	again.Send("/resume " + alice.Key)
	if peer, _, _, _ := enginetest.ReadResumed(t, again.Line); peer != "" {
		t.Fatalf("resumed with %q", peer)
	}
	w.Send(map[string]string{"type": "login", "name": "alice"})
	if ev := w.Expect("error"); ev["code"] != "name_taken" || ev["text"] != "that name is in use; pick another" {
		t.Fatalf("login over WebSocket as connected alice: %v", ev)
	}
}

// TestResumeWindowExpires: a session nobody resumes within
// resume.window ends: its partner is told timeout and is free to be
// joined at once, its name is free, and its key is refused.
func TestResumeWindowExpires(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, func(o *engine.Options) { o.Resume.Window = time.Second })
	alice, bob := pairLineWS(t, d)

	enginetest.Reset(t, alice.Conn)
	start := time.Now()
	if ev := bob.Expect("peer_away"); ev["name"] != "alice" || ev["window_s"] != float64(1) {
		t.Fatalf("bob got %v", ev)
	}
	// While away, the pair holds: a third party is refused.
	carol := d.DialLine(t).Login("carol")
	carol.Send("/connect " + bob.Token)
	carol.Expect(`^! room_full: `)
	// What bob says meanwhile is kept for alice, and when she does not
	// come back, bob is told it never reached her.
	bob.Say("are you there?")

	if ev := bob.Expect("peer_left"); ev["peer"] != "alice" || ev["reason"] != "timeout" || ev["undelivered"] != float64(1) {
		t.Fatalf("bob got %v", ev)
	}
	if waited := time.Since(start); waited < 900*time.Millisecond {
		t.Fatalf("timed out after %v, before the window", waited)
	}
	carol.Send("/connect " + bob.Token)
	carol.Expect(`^\* you are connected with bob$`)
	bob.Expect("paired")
	late := d.DialLine(t)
	late.Send("/resume " + alice.Key)
	late.Expect(`^! bad_resume_key: no session is waiting for that resume key`)
	late.Login("alice") // the name is free
	if st := d.Hub.Stats(); st.AwayTimedOut != 1 || st.Away != 0 {
		t.Fatalf("hub stats %+v", st)
	}
}

// TestResumeWhilePartnerAway: both of a pair drop. The one who resumes
// first is told, after the answer to its resume, that its partner is
// away too, and then that it is back.
func TestResumeWhilePartnerAway(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, nil)
	alice, bob := pairLineWS(t, d)

	enginetest.Reset(t, alice.Conn)
	bob.Expect("peer_away")
	enginetest.Reset(t, bob.Conn)
	waitFor(t, "both away", func() bool { return d.Hub.Stats().Away == 2 })

	back, peer, _, _ := enginetest.ResumeLine(t, d, alice.Key)
	if peer != "bob" {
		t.Fatalf("resumed connected with %q", peer)
	}
	back.Expect(`^\* bob lost the connection; waiting up to (?:2m|1m5\ds) for bob to come back$`)
	enginetest.ResumeWS(t, d, bob.Key, 0)
	back.Expect(`^\* bob is back$`)
}

// TestResumeTellsWhoLeftWhileAway: the partner goes while the session
// is away. The resume says, after its answer and replay, the peer_left
// the user would have been told live, as a live one is written, on
// either protocol: who went and why, not only that the user is paired
// with no one.
func TestResumeTellsWhoLeftWhileAway(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, nil)

	// On the line protocol: bob, on a browser, quits.
	alice, bob := pairLineWS(t, d)
	enginetest.Reset(t, alice.Conn)
	bob.Expect("peer_away")
	bob.Say("are you there?")
	taken(t, d, 1)
	bob.Send(map[string]any{"type": "quit"})
	bob.Expect("bye")
	waitFor(t, "bob's logout", func() bool { return d.Hub.Stats().Pairs == 0 })
	back, peer, replayed, _ := enginetest.ResumeLine(t, d, alice.Key)
	if peer != "" || strings.Join(replayed, "|") != "<bob> are you there?" {
		t.Fatalf("resumed with %q, replayed %q", peer, replayed)
	}
	back.Expect(`^\* bob left; you are free to be joined again$`)

	// On WebSocket: carol, on netcat, ends her input.
	dave := d.DialWS(t).Login("dave")
	carol := d.DialLine(t).Login("carol")
	carol.Send("/connect " + dave.Token)
	carol.Expect(`^\* you are connected with dave$`)
	dave.Expect("paired")
	enginetest.Reset(t, dave.Conn)
	carol.Expect(`^\* dave lost the connection; `)
	closeWrite(t, carol.Conn)
	waitFor(t, "carol's logout", func() bool { return d.Hub.Stats().Pairs == 0 })
	web, ev := enginetest.ResumeWS(t, d, dave.Key, 0)
	if _, paired := ev["peer"]; paired {
		t.Fatalf("resumed %v", ev)
	}
	if left := web.Expect("peer_left"); len(left) != 3 || left["peer"] != "carol" || left["reason"] != "disconnected" {
		t.Fatalf("after the resume dave got %v", left)
	}
}

// TestResumeCrossProtocol: a session begun on netcat is resumed from a
// browser and carries on there; dropped again, it is resumed on the line
// protocol. What is kept is messages, so each new connection's encoder
// writes them in its own protocol; what the browser acknowledged is not
// replayed to the line.
func TestResumeCrossProtocol(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, nil)
	alice, bob := pairLineWS(t, d)
	bob.Say("one")
	alice.Expect(`^<bob> one$`)

	// Line to browser.
	enginetest.Reset(t, alice.Conn)
	bob.Expect("peer_away")
	bob.Say("two\nlines")
	taken(t, d, 2)
	web, ev := enginetest.ResumeWS(t, d, alice.Key, 0)
	if ev["name"] != "alice" || ev["token"] != alice.Token || ev["peer"] != "bob" || ev["replayed"] != float64(2) {
		t.Fatalf("resumed %v", ev)
	}
	for i, want := range []string{"one", "two\nlines"} {
		if text, seq := enginetest.WSMessage(t, web); text != want || seq != uint64(i+1) {
			t.Fatalf("replayed %q seq %d", text, seq)
		}
	}
	bob.Expect("peer_back")
	web.Say("from the browser")
	if m := bob.Expect("message"); m["text"] != "from the browser" {
		t.Fatalf("bob got %v", m)
	}
	bob.Say("three")
	if text, seq := enginetest.WSMessage(t, web); text != "three" || seq != 3 {
		t.Fatalf("got %q seq %d", text, seq)
	}
	web.Send(map[string]any{"type": "ack", "last": 3})
	bob.Send(map[string]any{"type": "ack", "last": 1}) // "from the browser"

	// Browser to line: only what the browser did not acknowledge.
	waitFor(t, "the ack", func() bool { return d.Hub.Stats().HistoryBytes == 0 })
	enginetest.Reset(t, web.Conn)
	bob.Expect("peer_away")
	bob.Say("four")
	taken(t, d, 5)
	line, peer, replayed, missed := enginetest.ResumeLine(t, d, web.Key)
	if peer != "bob" || missed != 0 || strings.Join(replayed, "|") != "<bob> four" {
		t.Fatalf("resumed with %q: %q, %d missed", peer, replayed, missed)
	}
	bob.Expect("peer_back")
	line.Send("and from netcat again")
	if m := bob.Expect("message"); m["text"] != "and from netcat again" {
		t.Fatalf("bob got %v", m)
	}
	bob.Say("five")
	line.Expect(`^<bob> five$`)
}

// TestResumeBufferLimit: messages to an away user past resume.buffer are
// refused, and the sender told how much is waiting, then given a count
// of the lines not sent, never an error per line; after the resume,
// everything that was accepted arrives, in order.
func TestResumeBufferLimit(t *testing.T) {
	t.Parallel()
	const buffer, size = 4096, 100 // each message counts its text and 64 bytes: 24 fit
	d := enginetest.Start(t, func(o *engine.Options) {
		o.Limits.MaxText = 1024
		o.Resume.Buffer = buffer
	})
	alice := d.DialWS(t).Login("alice")
	bob := d.DialLine(t).Login("bob")
	bob.Send("/connect " + alice.Token)
	bob.Expect(`^\* you are connected with alice$`)
	alice.Expect("paired")

	enginetest.Reset(t, alice.Conn)
	bob.Expect(`^\* alice lost the connection`)
	fits := buffer / (size + 64)
	const sent = 30
	var lines strings.Builder
	for i := range sent {
		fmt.Fprintf(&lines, "%03d %s\n", i, strings.Repeat("x", size-4))
	}
	if _, err := bob.Conn.Write([]byte(lines.String())); err != nil {
		t.Fatal(err)
	}
	bob.Expect(fmt.Sprintf(`^! peer_away_full: alice is away, and %d of your messages \(3 KiB\) are waiting for them; this one was not sent$`, fits))
	bob.Expect(fmt.Sprintf(`^\* %d more lines were not sent: your partner is away and no more of your messages can be kept for them$`, sent-fits-1))

	back, ev := enginetest.ResumeWS(t, d, alice.Key, 0)
	if ev["replayed"] != float64(fits) || ev["missed"] != float64(0) {
		t.Fatalf("resumed %v", ev)
	}
	for i := range fits {
		if text, seq := enginetest.WSMessage(t, back); !strings.HasPrefix(text, fmt.Sprintf("%03d ", i)) || seq != uint64(i+1) {
			t.Fatalf("replayed %.8q seq %d, want %03d seq %d", text, seq, i, i+1)
		}
	}
	bob.Expect(`^\* alice is back$`)
	bob.Send("there is room again")
	if text, _ := enginetest.WSMessage(t, back); text != "there is room again" {
		t.Fatalf("got %q", text)
	}
	if st := d.Hub.Stats(); st.AwayRefused == 0 {
		t.Fatalf("hub stats %+v: no refusal counted", st)
	}
}

// TestThrottledResumeAnsweredBeforeLoginDeadline: a user who mistyped
// the key several times, past limits.connect_failures, types it again
// and again before logging in. Each try is held longer than the one
// before; one held past limits.login_timeout was cut by it unanswered,
// the connection told only that it had not logged in in time. Every
// try is answered: held while the deadline allows, throttled past it.
func TestThrottledResumeAnsweredBeforeLoginDeadline(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, func(o *engine.Options) {
		o.Limits.ConnectFailures = 1
		o.Limits.LoginTimeout = 2 * time.Second // holds of 0.25, 0.5 and 1 s fit; one of 2 s does not
	})
	lc := d.DialLine(t)
	const tries = 6
	lc.Send(strings.TrimSuffix(strings.Repeat("/resume "+strings.Repeat("k", 26)+"\n", tries), "\n"))
	var answers []string
	for l := lc.Line(); !strings.HasPrefix(l, "! login_timeout: "); l = lc.Line() {
		answers = append(answers, l)
	}
	if len(answers) != tries {
		t.Fatalf("%d tries answered before the login deadline, want %d: %q", len(answers), tries, answers)
	}
	for i, a := range answers {
		// Past the limit a wrong key is answered throttled, held or not
		// (TestResumeWrongKeyThrottled).
		if want := "! throttled: "; i == 0 && !strings.HasPrefix(a, "! bad_resume_key: ") || i > 0 && !strings.HasPrefix(a, want) {
			t.Fatalf("try %d answered %q", i+1, a)
		}
	}
}

// TestResumeWrongKeyThrottled: a wrong resume key is a failed connect
// for the connect throttle, like a wrong token: past
// limits.connect_failures, resumes and connects from the address are
// held and a wrong one answered throttled, while a right key still
// works. A malformed key guesses nothing and is not counted.
func TestResumeWrongKeyThrottled(t *testing.T) {
	t.Parallel()
	const limit = 3
	d := enginetest.Start(t, func(o *engine.Options) { o.Limits.ConnectFailures = limit })
	alice := d.DialLine(t).Login("alice")
	bob := d.DialLine(t).Login("bob")
	bob.Send("/connect " + alice.Token)
	bob.Expect(`connected with alice`)
	alice.Expect(`bob is connected`)

	guesser := d.DialLine(t)
	for range 5 {
		guesser.Send("/resume not-a-key")
		guesser.Expect(`^! bad_resume_key: a resume key is 26 letters and digits`)
	}
	wrong := strings.Repeat("k", 26)
	for range limit {
		guesser.Send("/resume " + wrong)
		guesser.Expect(`^! bad_resume_key: no session is waiting for that resume key`)
	}
	start := time.Now()
	guesser.Send("/resume " + wrong)
	guesser.Expect(`^! throttled: `)
	if held := time.Since(start); held < 200*time.Millisecond {
		t.Fatalf("answered after %v; the throttle holds the attempt first", held)
	}
	// The same table holds connects from the address.
	carol := d.DialLine(t).Login("carol")
	carol.Send("/connect " + strings.Repeat("0", 31) + "1")
	carol.Expect(`^! throttled: `)

	// A right key from the same address is held, then works.
	enginetest.Reset(t, alice.Conn)
	bob.Expect(`^\* alice lost the connection`)
	back := d.DialLine(t)
	back.Send("/resume " + alice.Key)
	back.Expect(`^\* resumed: you are alice`)
	if st := d.Hub.Stats(); st.ResumeBadKey != 5+limit+1 {
		t.Fatalf("hub counted %d bad keys, want %d", st.ResumeBadKey, 5+limit+1)
	}
}

// TestResetOrEndOfInput: what gnet hands OnClose tells a drop from a
// leave. A reset sends the session away (with resume on) or ends it with
// reason disconnected (with resume off, as before resume existed); an
// end of input (netcat's Ctrl-D) ends it. A reset while the
// connection's input is held for back-pressure, when gnet learns of it
// from epoll without reading and says only io.EOF, is a drop all the
// same: the socket's pending error says so.
//
// Through a trusted proxy an end of input is a drop too: nginx's stream
// proxy passes its client's reset, its own restart and its
// proxy_timeout on as a clean end of input, so that proves nothing of
// the user. A drop resumes from a new connection; a leave leaves nothing
// to resume.
func TestResetOrEndOfInput(t *testing.T) {
	t.Parallel()
	const (
		away = `^\* alice lost the connection; waiting up to 2m for alice to come back$`
		gone = `^\* alice disconnected; you are free to be joined again$`
		// proxy is the trusted proxy's address, where the proxied
		// connections come from; the others come from 127.0.0.1.
		proxy = "127.0.0.9"
	)
	for _, tc := range []struct {
		name    string
		window  time.Duration
		held    bool
		proxied bool
		end     func(t testing.TB, c net.Conn)
		told    string
	}{
		{"reset, resume on", 2 * time.Minute, false, false, enginetest.Reset, away},
		{"reset while held, resume on", 2 * time.Minute, true, false, enginetest.Reset, away},
		{"reset, resume off", 0, false, false, enginetest.Reset, gone},
		{"reset while held, resume off", 0, true, false, enginetest.Reset, gone},
		{"end of input, resume on", 2 * time.Minute, false, false, closeWrite, gone},
		{"end of input while held, resume on", 2 * time.Minute, true, false, closeWrite, gone},
		{"end of input, resume off", 0, false, false, closeWrite, gone},
		{"proxied reset, resume on", 2 * time.Minute, false, true, enginetest.Reset, away},
		{"proxied end of input, resume on", 2 * time.Minute, false, true, closeWrite, away},
		{"proxied end of input while held, resume on", 2 * time.Minute, true, true, closeWrite, away},
		{"proxied end of input, resume off", 0, false, true, closeWrite, gone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := enginetest.Start(t, func(o *engine.Options) {
				o.Resume.Window = tc.window
				o.Limits.OutboundHigh = 64 << 10
				o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix(proxy + "/32")}
			})
			dial := d.DialLine
			if tc.proxied {
				dial = func(t testing.TB) *enginetest.LineClient { return d.DialLineVia(t, proxy, "192.0.2.7") }
			}
			alice := dial(t).Login("alice")
			bob := d.DialLine(t).Login("bob")
			bob.Send("/connect " + alice.Token)
			bob.Expect(`connected with alice`)
			alice.Expect(`bob is connected`)
			if tc.held {
				holdBack(t, d, alice.Conn)
			}
			tc.end(t, alice.Conn)
			// bob reads what alice sent, then the notice.
			for {
				l := bob.Line()
				if strings.HasPrefix(l, "<alice> ") {
					continue
				}
				if !regexp.MustCompile(tc.told).MatchString(l) {
					t.Fatalf("bob got %q, want %q", l, tc.told)
				}
				break
			}
			if st := d.Hub.Stats(); (st.Away == 1) != (tc.told == away) {
				t.Fatalf("hub stats %+v", st)
			}
			if tc.window == 0 {
				return
			}
			back := dial(t)
			back.Send("/resume " + alice.Key)
			if tc.told == gone {
				back.Expect(`^! bad_resume_key: `)
				return
			}
			if peer, _, missed, _ := enginetest.ReadResumed(t, back.Line); peer != "bob" || missed != 0 {
				t.Fatalf("resumed with %q, %d missed", peer, missed)
			}
			bob.Expect(`^\* alice is back$`)
		})
	}
}

func closeWrite(t testing.TB, c net.Conn) {
	t.Helper()
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
}

// holdBack makes the server hold c's input: c sends to a partner that is
// not reading until the server stops reading c (its writes stall).
func holdBack(t *testing.T, d *enginetest.Daemon, c net.Conn) {
	t.Helper()
	var written atomic.Int64
	go func() {
		line := []byte(strings.Repeat("x", 1000) + "\n")
		c.SetWriteDeadline(time.Now().Add(enginetest.Timeout))
		for {
			n, err := c.Write(line)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	last, still := int64(-1), 0
	for deadline := time.Now().Add(enginetest.Timeout); still < 5; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the sender was never held")
		}
		if n := written.Load(); n == last && n > 64<<10 {
			still++
		} else {
			last, still = n, 0
		}
	}
}

// TestWebSocketCloseCodes: a page's close frame says what became of its
// session. 1000, which a page sends only on purpose, is a leave; 1001
// going away (a reload, a tab closed) is a drop, and the session waits,
// and so is 4001, the code a page sends itself for it (a page left for
// another, which the browser may keep with its socket open); any other
// code ends it as a disconnect.
func TestWebSocketCloseCodes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		code uint16
		told string
	}{
		{1000, `^\* alice left; you are free to be joined again$`},
		{1001, `^\* alice lost the connection; waiting up to 2m for alice to come back$`},
		{4000, `^\* alice disconnected; you are free to be joined again$`},
		{4001, `^\* alice lost the connection; waiting up to 2m for alice to come back$`},
	} {
		t.Run(strconv.Itoa(int(tc.code)), func(t *testing.T) {
			t.Parallel()
			d := enginetest.Start(t, nil)
			bob := d.DialLine(t).Login("bob")
			alice := d.DialWS(t).Login("alice")
			alice.Connect(bob.Token)
			alice.Expect("paired")
			bob.Expect(`alice is connected`)
			write(t, alice.Conn, clientFrame(0x88, []byte{byte(tc.code >> 8), byte(tc.code)}, true))
			bob.Expect(tc.told)
		})
	}
}

// TestResumeCommandsInPlace: a resume is a way in, like a login: after
// one it is refused; an ack needs a session; help lists both.
func TestResumeCommandsInPlace(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, nil)
	lc := d.DialLine(t)
	lc.Send("/help")
	listed := false
	for l := lc.Line(); !strings.HasPrefix(l, "* any other line"); l = lc.Line() {
		listed = listed || strings.HasPrefix(l, "* /resume KEY ")
	}
	if !listed {
		t.Fatal("/help does not list /resume")
	}
	lc.Login("alice")
	lc.Send("/resume " + lc.Key)
	lc.Expect(`^! already_logged_in: `)

	wc := d.DialWS(t)
	wc.Send(map[string]any{"type": "ack", "last": 1})
	wc.ExpectError("not_logged_in")
	wc.Send(map[string]string{"type": "help"})
	if h := wc.Expect("help"); !strings.Contains(h["text"].(string), "resume {key, last?}") ||
		!strings.Contains(h["text"].(string), "ack {last}") {
		t.Fatalf("help %v", h)
	}
}

// TestResumeOffNoKey: with resume.window 0 a login gets no resume key,
// a reset ends the session at once as before, and no key resumes
// anything.
func TestResumeOffNoKey(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, func(o *engine.Options) { o.Resume.Window = 0 })
	alice := d.DialWS(t).Login("alice")
	if alice.Key != "" {
		t.Fatalf("a key with resume off: %q", alice.Key)
	}
	bob := d.DialLine(t).Login("bob")
	bob.Send("/connect " + alice.Token)
	bob.Expect(`connected with alice`)
	enginetest.Reset(t, alice.Conn)
	bob.Expect(`^\* alice disconnected; you are free to be joined again$`)
	d.DialWS(t).Login("alice") // the name is free at once
	if st := d.Hub.Stats(); st.Away != 0 {
		t.Fatalf("hub stats %+v", st)
	}
}

// TestResumeReload: a reload of the limits keeps resume as configured,
// and a reload of the resume section applies to what comes next:
// turned off, a new login gets no key and a drop ends its session.
func TestResumeReload(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, nil)
	lim := config.Defaults().Limits
	lim.MaxText = 1000
	d.SetLimits(lim)
	if a := d.DialWS(t).Login("alice"); a.Key == "" {
		t.Fatal("a reload of the limits turned resume off")
	}
	off := config.Defaults().Resume
	off.Window = 0
	d.SetResume(off)
	bob := d.DialWS(t).Login("bob")
	if bob.Key != "" {
		t.Fatal("a login after resume was turned off got a key")
	}
	d.Resume = false // the clients expect no key from now on
	carol := d.DialLine(t).Login("carol")
	carol.Send("/connect " + bob.Token)
	carol.Expect(`connected with bob`)
	enginetest.Reset(t, bob.Conn)
	carol.Expect(`^\* bob disconnected; `)
}

// TestResumeAccountsLogin: in accounts mode, the password logs in over
// a session that is away (its partner told replaced), so a user who lost
// the key is not locked out for the window; the old key is dead. A
// session that is attached still refuses a second login without
// takeover.
func TestResumeAccountsLogin(t *testing.T) {
	t.Parallel()
	users := authtest.Users(t, "alice", "s3cret", "bob", "hunter2")
	d, _ := enginetest.StartAccounts(t, users, nil)
	alice := d.DialLine(t).LoginPassword("alice", "s3cret")
	bob := d.DialLine(t).LoginPassword("bob", "hunter2")
	bob.Send("/connect " + alice.Token)
	bob.Expect(`connected with alice`)
	alice.Expect(`bob is connected`)

	again := d.DialLine(t)
	again.Send("/login alice s3cret")
	again.Expect(`^! already_online: `)

	enginetest.Reset(t, alice.Conn)
	bob.Expect(`^\* alice lost the connection`)
	again.LoginPassword("alice", "s3cret")
	bob.Expect(`^\* alice logged in elsewhere; you are free to be joined again$`)
	stale := d.DialLine(t)
	stale.Send("/resume " + alice.Key)
	stale.Expect(`^! bad_resume_key: `)
	// The new session resumes like any.
	enginetest.Reset(t, again.Conn)
	back := d.DialLine(t)
	back.Send("/resume " + again.Key)
	back.Expect(`^\* resumed: you are alice, your token is [0-9a-f]{32}; you are not connected to anyone$`)
}

// TestShutdownEndsAwaySessions: a single node that shuts down keeps no
// session waiting: those away end, reason shutdown, as the attached ones
// do.
func TestShutdownEndsAwaySessions(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, nil)
	alice := d.DialLine(t).Login("alice")
	bob := d.DialLine(t).Login("bob")
	bob.Send("/connect " + alice.Token)
	bob.Expect(`connected with alice`)
	enginetest.Reset(t, alice.Conn)
	bob.Expect(`^\* alice lost the connection`)
	if st := d.Hub.Stats(); st.Away != 1 {
		t.Fatalf("hub stats %+v", st)
	}
	go shutdown(d)
	bob.Expect(`^\* the server is shutting down; goodbye$`)
	bob.ExpectClosed()
	waitFor(t, "every session to end", func() bool { st := d.Hub.Stats(); return st.Users == 0 && st.Away == 0 })
}

// TestResumeMetrics reads resume's figures from a real /metrics: away
// sessions and what is kept for them, resumes by outcome, away sessions
// ended, and messages refused for a full buffer.
func TestResumeMetrics(t *testing.T) {
	t.Parallel()
	var m *service.Metrics
	d := enginetest.Start(t, func(o *engine.Options) {
		m = service.NewMetrics(o.Hub)
		o.Metrics = m
		o.Limits.MaxText = 1024
		o.Resume.Buffer = 2048
		o.Resume.MaxAway = 1
	})
	admin, err := service.StartAdmin("127.0.0.1:0", m.Registry, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Close(context.Background()) })
	client := &http.Client{Timeout: enginetest.Timeout}
	metric := func(series string) int {
		t.Helper()
		re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\d+)$`)
		m := re.FindSubmatch(scrape(t, client, admin.Addr().String()))
		if m == nil {
			t.Fatalf("/metrics has no %s", series)
		}
		n, _ := strconv.Atoi(string(m[1]))
		return n
	}

	alice := d.DialLine(t).Login("alice")
	bob := d.DialLine(t).Login("bob")
	bob.Send("/connect " + alice.Token)
	bob.Expect(`connected with alice`)
	alice.Expect(`bob is connected`)
	enginetest.Reset(t, alice.Conn)
	bob.Expect(`^\* alice lost the connection`)
	if n := metric("duet_away_sessions"); n != 1 {
		t.Fatalf("duet_away_sessions %d, want 1", n)
	}
	for i := range 30 {
		bob.Send(fmt.Sprintf("%02d %s", i, strings.Repeat("x", 97))) // 100 bytes; 12 fit in 2048
	}
	bob.Expect(`^! peer_away_full: `)
	if n := metric("duet_resume_kept_bytes"); n != 12*(100+64) {
		t.Fatalf("duet_resume_kept_bytes %d, want %d", n, 12*(100+64))
	}
	waitFor(t, "18 refusals", func() bool { return metric("duet_away_full_refusals_total") == 18 })

	back, _, replayed, _ := enginetest.ResumeLine(t, d, alice.Key)
	if len(replayed) != 12 {
		t.Fatalf("replayed %d", len(replayed))
	}
	second := d.DialLine(t)
	second.Send("/resume " + back.Key) // back is still open: a zombie
	second.Expect(`^\* resumed: `)
	// What second sends acknowledges all it received, the replay among
	// it: its reset below loses none of it (a delayed ACK could).
	second.Send("/who")
	for !strings.HasPrefix(second.Line(), "* you are alice, ") {
	}
	wrong := d.DialLine(t)
	wrong.Send("/resume " + strings.Repeat("z", 26))
	wrong.Expect(`^! bad_resume_key: `)

	// Past resume.max_away (1), the session away the longest ends.
	carol := d.DialLine(t).Login("carol")
	enginetest.Reset(t, second.Conn)
	bob.Expect(`^\* alice is back$`)
	bob.Expect(`^\* alice lost the connection`)
	enginetest.Reset(t, carol.Conn)
	bob.Expect(`^\* alice timed out; you are free to be joined again$`)
	for series, want := range map[string]int{
		`duet_resumes_total{outcome="away"}`:               1,
		`duet_resumes_total{outcome="zombie"}`:             1,
		`duet_resumes_total{outcome="bad_key"}`:            1,
		`duet_away_sessions_ended_total{reason="evicted"}`: 1,
		`duet_away_sessions_ended_total{reason="timeout"}`: 0,
		`duet_away_sessions`:                               1, // carol
		`duet_disconnects_total{reason="resumed"}`:         1,
	} {
		if n := metric(series); n != want {
			t.Errorf("%s = %d, want %d", series, n, want)
		}
	}
}

// TestAwayCapPerAddress: one address that logs in and drops its
// connection over and over cannot end anyone else's away session. Each
// address keeps at most resume.max_away_per_ip sessions away (by
// default limits.max_conns_per_ip, 16 here), and past it its own
// oldest ends; resume.max_away is never reached, so alice, away from
// another address, is kept, her partner told nothing more, and her
// resume works.
func TestAwayCapPerAddress(t *testing.T) {
	t.Parallel()
	const maxAway, perIP, drops = 60, 16, 90
	d := enginetest.Start(t, func(o *engine.Options) {
		o.Resume.MaxAway = maxAway
		o.Limits.MaxConnsPerIP = perIP
	})
	alice := d.DialLine(t).Login("alice")
	bob := d.DialLine(t).Login("bob")
	bob.Send("/connect " + alice.Token)
	bob.Expect(`connected with alice`)
	alice.Expect(`bob is connected`)
	enginetest.Reset(t, alice.Conn)
	bob.Expect(`^\* alice lost the connection`)

	// The attacker: log in from 127.0.0.2, be told a resume key, reset.
	var next atomic.Int32
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			var err error
			for i := next.Add(1); i <= drops && err == nil; i = next.Add(1) {
				err = loginAndReset(d, "127.0.0.2", fmt.Sprintf("m%d", i))
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every drop to be seen", func() bool {
		st := d.Hub.Stats()
		return st.Away+int(st.AwayEvicted) == 1+drops
	})
	if st := d.Hub.Stats(); st.Away != 1+perIP || st.AwayEvicted != drops-perIP {
		t.Errorf("%d away, %d evicted; want alice and the address's %d, %d evicted", st.Away, st.AwayEvicted, perIP, drops-perIP)
	}
	if l, err := bob.TryLine(300 * time.Millisecond); err == nil {
		t.Errorf("bob was told %q", l)
	}
	_, peer, _, _ := enginetest.ResumeLine(t, d, alice.Key)
	if peer != "bob" {
		t.Errorf("alice resumed connected with %q, want bob", peer)
	}
	bob.Expect(`^\* alice is back$`)
}

// loginAndReset logs name in over the line port from localIP, reads its
// resume key, and drops the connection with a reset.
func loginAndReset(d *enginetest.Daemon, localIP, name string) error {
	dialer := net.Dialer{Timeout: enginetest.Timeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}}
	c, err := dialer.Dial("tcp", d.TCP)
	if err != nil {
		return err
	}
	tc := c.(*net.TCPConn)
	defer func() { tc.SetLinger(0); tc.Close() }()
	c.SetDeadline(time.Now().Add(enginetest.Timeout))
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		return err
	}
	fmt.Fprintf(c, "/login %s\n", name)
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		if strings.HasPrefix(l, "* resume key") {
			return nil
		}
		if strings.HasPrefix(l, "!") {
			return fmt.Errorf("login of %s: %s", name, l)
		}
	}
}

// TestAwaySessionMemory measures what a session away costs the daemon:
// with nothing kept for it, and with resume.buffer full of messages kept
// for its resume. docs/LIMITS.md quotes the figures.
func TestAwaySessionMemory(t *testing.T) {
	const empty, full = 1000, 20
	d := enginetest.Start(t, func(o *engine.Options) { o.Limits.MaxConnsPerIP = 2 * (empty + 2*full) })
	buf := make([]byte, 512)
	churn := func(prefix string, end func(net.Conn)) {
		for i := range empty {
			// Not dialFrom: its cleanup would hold every client socket
			// to the end of the test, and they would be counted.
			c, err := net.DialTimeout("tcp", d.TCP, enginetest.Timeout)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(enginetest.Timeout))
			c.Read(buf) // the greeting
			fmt.Fprintf(c, "/login %s%d\n", prefix, i)
			c.Read(buf) // the welcome and the key
			end(c)
		}
		waitFor(t, "every connection closed", func() bool { return d.Conns() == 0 })
	}
	// The same number of connections opened and closed first, ending
	// their sessions, so that what connections leave behind (tables
	// grown for them) is not counted against the sessions.
	churn("gone", func(c net.Conn) { c.Close() })
	base := settledHeap()
	churn("away", func(c net.Conn) { enginetest.Reset(t, c) })
	if st := d.Hub.Stats(); st.Away != empty {
		t.Fatalf("%d sessions away, want %d", st.Away, empty)
	}
	perEmpty := (int64(settledHeap()) - int64(base)) / empty
	t.Logf("%d away sessions, nothing kept: %d bytes of heap each", empty, perEmpty)
	if perEmpty > 2<<10 {
		t.Errorf("an away session costs %d bytes of heap; want under 2 KiB", perEmpty)
	}

	buffer := config.Defaults().Resume.Buffer
	// Every client is kept alive to the end, so that both figures count
	// the same ones.
	alices, bobs := make([]*enginetest.LineClient, full), make([]*enginetest.LineClient, full)
	for i := range bobs {
		alice := d.DialLine(t).Login(fmt.Sprintf("alice%d", i))
		alices[i] = alice
		bob := d.DialLine(t).Login(fmt.Sprintf("bob%d", i))
		bob.Send("/connect " + alice.Token)
		bob.Expect(`connected with`)
		alice.Expect(`is connected`)
		enginetest.Reset(t, alice.Conn)
		bob.Expect(`lost the connection`)
		bobs[i] = bob
	}
	before, rssBefore := settledHeap(), vmRSS()
	text := strings.Repeat("x", 1000)
	fits := buffer / (len(text) + 64)
	for _, bob := range bobs {
		var lines strings.Builder
		for range fits + 1 {
			lines.WriteString(text + "\n")
		}
		bob.Conn.Write([]byte(lines.String()))
		bob.Expect(`^! peer_away_full: `)
	}
	if st := d.Hub.Stats(); st.HistoryBytes != int64(full*fits*(len(text)+64)) {
		t.Fatalf("kept %d bytes, want %d", st.HistoryBytes, full*fits*(len(text)+64))
	}
	perFull := (int64(settledHeap()) - int64(before)) / full
	t.Logf("%d away sessions with resume.buffer (%d KiB) full of %d-byte messages: %d KiB of heap each for what is kept; VmRSS %s -> %s",
		full, buffer>>10, len(text), perFull>>10, rssBefore, vmRSS())
	if perFull > int64(buffer)*3/2 {
		t.Errorf("a full history costs %d bytes of heap; want under 1.5 times resume.buffer (%d)", perFull, buffer)
	}
	runtime.KeepAlive(alices)
	runtime.KeepAlive(bobs)
}

// settledHeap is the bytes of live Go heap objects once pools have let
// go of what they held (sync.Pool keeps what it holds through one
// collection). Live objects, not spans in use, so that a span freed or
// taken by something else meanwhile does not blur a figure of a few
// hundred bytes.
func settledHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestWhoSaysPartnerAway: /who tells that the partner is away and for
// how long it may still take, as peer_away did, which its user may have
// scrolled past, wondering why nothing comes; before, it said only
// "connected with bob". Back, the partner is connected as before.
func TestWhoSaysPartnerAway(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, nil)
	alice, bob := pairLines(t, d, "alice", "bob")
	enginetest.Reset(t, bob.Conn)
	alice.Expect(`^\* bob lost the connection; `)
	alice.Send("/who")
	alice.Expect(`^\* you are alice, your token is [0-9a-f]{32}, connected with bob, who lost the connection; waiting up to (2m|1m5\ds) for bob to come back$`)
	enginetest.ResumeLine(t, d, bob.Key)
	alice.Expect(`^\* bob is back$`)
	alice.Send("/who")
	alice.Expect(`^\* you are alice, your token is [0-9a-f]{32}, connected with bob$`)
}

// TestResumeOffSaysSo: on a server with resume off, /help does not offer
// /resume, and a /resume typed all the same is told that the server
// keeps no sessions, not that the key is wrong; before, both read as on
// a server that keeps them.
func TestResumeOffSaysSo(t *testing.T) {
	t.Parallel()
	d := enginetest.Start(t, func(o *engine.Options) { o.Resume.Window = 0 })
	c := d.DialLine(t)
	c.Send("/help")
	c.Expect(`^\* commands `)
	for l := c.Line(); !strings.HasPrefix(l, "* any other line"); l = c.Line() {
		if strings.Contains(l, "/resume") {
			t.Errorf("/help offers %q", l)
		}
	}
	c.Send("/resume " + proto.NewResumeKey().String())
	c.Expect(`^! bad_resume_key: this server keeps no sessions to resume \(its resume is off\); log in again$`)
}
