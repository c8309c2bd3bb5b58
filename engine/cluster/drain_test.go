package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"duet/engine/enginetest"
)

// The rolling restart: a two-node cluster on a real redis-server, real
// engines on loopback, pairs across the nodes and within each; one node
// is drained (its clients reconnect to the other and resume), restarted,
// and then the other is drained (its clients resume on the restarted
// one). Every pair survives, and each client reads every message its
// partner sent, in order: a JSON client exactly once (each seq one more
// than the last), a line client at least once (a resume replays what
// came in its last moments, which it may have read).

// roller is a client of the rolling restart, driven on a goroutine of
// its own: it reads until its node drains it, resumes on another node,
// and talks on. Its reads fail with errors, not with the test, so that
// every client reports what went wrong.
type roller struct {
	t    testing.TB
	name string
	json bool
	peer *roller
	wc   *enginetest.WSClient
	lc   *enginetest.LineClient
	key  string // the resume key last told
	last uint64 // JSON: the seq of the last message read

	got  []string // the partner's texts as read, each once
	seen map[string]bool
	dups int // line: texts replayed that had been read before

	mu   sync.Mutex
	sent []string
}

func newRoller(t testing.TB, d *enginetest.Daemon, name string, json bool) *roller {
	r := &roller{t: t, name: name, json: json, seen: make(map[string]bool)}
	if json {
		r.wc = d.DialWS(t).Login(name)
		r.key = r.wc.Key
	} else {
		r.lc = d.DialLine(t).Login(name)
		r.key = r.lc.Key
	}
	return r
}

func (r *roller) token() string {
	if r.json {
		return r.wc.Token
	}
	return r.lc.Token
}

// pair connects r to p, on the test's goroutine.
func (r *roller) pair(p *roller) {
	r.peer, p.peer = p, r
	if r.json {
		r.wc.Connect(p.token())
		r.wc.Expect("paired")
	} else {
		r.lc.Send("/connect " + p.token())
		r.lc.Expect(`^\* you are connected with ` + p.name + `$`)
	}
	if p.json {
		p.wc.Expect("paired")
	} else {
		p.lc.Expect(`^\* ` + r.name + ` is connected$`)
	}
}

func (r *roller) say(text string) {
	if r.json {
		r.wc.Say(text)
	} else {
		r.lc.Send(text)
	}
	r.mu.Lock()
	r.sent = append(r.sent, text)
	r.mu.Unlock()
}

func (r *roller) sentCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sent)
}

var (
	drainLineRE = regexp.MustCompile(`^\* the server is restarting; reconnect and type /resume ([0-9a-z]{26}) within \w+$`)
	keyLine2RE  = regexp.MustCompile(`^\* resume key: ([0-9a-z]{26}) `)
)

// errDrained is how read says the node drained the connection.
var errDrained = errors.New("drained")

// read reads until enough() holds (nil: until the node drains the
// connection, which it then returns as errDrained).
func (r *roller) read(enough func() bool) error {
	deadline := time.Now().Add(2 * enginetest.Timeout)
	toldDrain := false
	for enough == nil || !enough() {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("%s: timed out with %d of %s's messages read", r.name, len(r.got), r.peer.name)
		}
		if r.json {
			ev, code, err := r.wc.TryNext(left)
			if err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
			if code != 0 {
				if code == 1012 && toldDrain && enough == nil {
					return errDrained
				}
				return fmt.Errorf("%s: closed with %d (told of a drain: %v)", r.name, code, toldDrain)
			}
			if err := r.onEvent(ev, &toldDrain); err != nil {
				return err
			}
			continue
		}
		l, err := r.lc.TryLine(left)
		if err != nil {
			if toldDrain && enough == nil && l == "" {
				return errDrained
			}
			return fmt.Errorf("%s: after %q: %w", r.name, l, err)
		}
		if err := r.onLine(l, &toldDrain); err != nil {
			return err
		}
	}
	return nil
}

func (r *roller) onEvent(ev map[string]any, toldDrain *bool) error {
	switch ev["type"] {
	case "message":
		seq := uint64(ev["seq"].(float64))
		if ev["from"] != r.peer.name || seq != r.last+1 {
			return fmt.Errorf("%s: message %v after seq %d", r.name, ev, r.last)
		}
		r.last = seq
		r.got = append(r.got, ev["text"].(string))
	case "notice":
		if strings.HasPrefix(ev["text"].(string), "the server is restarting; ") {
			*toldDrain = true
		}
	case "resumed":
		if ev["peer"] != r.peer.name || ev["missed"] != float64(0) {
			return fmt.Errorf("%s: resumed %v", r.name, ev)
		}
		r.key = ev["resume_key"].(string)
	case "error":
		return fmt.Errorf("%s: %v", r.name, ev)
	}
	return nil
}

func (r *roller) onLine(l string, toldDrain *bool) error {
	if text, ok := strings.CutPrefix(l, "<"+r.peer.name+"> "); ok {
		if r.seen[text] {
			r.dups++
			return nil
		}
		r.seen[text] = true
		r.got = append(r.got, text)
		return nil
	}
	if m := drainLineRE.FindStringSubmatch(l); m != nil {
		if m[1] != r.key {
			return fmt.Errorf("%s: told to resume with %s, its key is %s", r.name, m[1], r.key)
		}
		*toldDrain = true
		return nil
	}
	if m := keyLine2RE.FindStringSubmatch(l); m != nil {
		r.key = m[1]
		return nil
	}
	if strings.HasPrefix(l, "* resumed: ") && !strings.HasSuffix(l, "connected with "+r.peer.name) ||
		strings.Contains(l, "could not be kept") || !strings.HasPrefix(l, "* ") {
		return fmt.Errorf("%s: %q", r.name, l)
	}
	return nil
}

// resume takes r's session up on d.
func (r *roller) resume(d *enginetest.Daemon) {
	if r.json {
		r.wc = d.DialWS(r.t)
		r.wc.Send(map[string]any{"type": "resume", "key": r.key, "last": r.last})
	} else {
		r.lc = d.DialLine(r.t)
		r.lc.Send("/resume " + r.key)
	}
}

// move is a client's part in a drain of its node: it reads until it is
// told to go, resumes on to, says k messages, and reads until it has
// every message its partner sent by the time the partner said it was
// done (peerDone).
func (r *roller) move(to *enginetest.Daemon, k int, tag string, done chan<- struct{}, peerDone <-chan struct{}) error {
	if err := r.read(nil); !errors.Is(err, errDrained) {
		close(done)
		return fmt.Errorf("%s: not drained: %w", r.name, err)
	}
	r.resume(to)
	for i := range k {
		r.say(fmt.Sprintf("%s %s %d", r.name, tag, i))
	}
	close(done)
	return r.readAll(peerDone)
}

// stay is the part of a client whose node is not drained: it says k
// messages over spread, while its partner moves, then reads as move.
func (r *roller) stay(k int, spread time.Duration, tag string, done chan<- struct{}, peerDone <-chan struct{}) error {
	for i := range k {
		r.say(fmt.Sprintf("%s %s %d", r.name, tag, i))
		time.Sleep(spread / time.Duration(k))
	}
	close(done)
	return r.readAll(peerDone)
}

func (r *roller) readAll(peerDone <-chan struct{}) error {
	select {
	case <-peerDone:
	case <-time.After(2 * enginetest.Timeout):
		return fmt.Errorf("%s: its partner never finished", r.name)
	}
	want := r.peer.sentCount()
	if err := r.read(func() bool { return len(r.got) >= want }); err != nil {
		return fmt.Errorf("%s read %d of the %d %s sent (last %q): %w", r.name, len(r.got), want, r.peer.name, r.got[max(len(r.got)-1, 0):], err)
	}
	return nil
}

// check holds what r read to what its partner sent.
func (r *roller) check() error {
	r.peer.mu.Lock()
	sent := slices.Clone(r.peer.sent)
	r.peer.mu.Unlock()
	if !slices.Equal(r.got, sent) {
		return fmt.Errorf("%s read %d of %s's messages, not the %d sent, in order:\n got %q\nsent %q", r.name, len(r.got), r.peer.name, len(sent), r.got, sent)
	}
	return nil
}

// drainNode drains n (its engine, then its node parks what is away),
// spreading the closes over period, and stops it.
func drainNode(t testing.TB, n *testNode, period time.Duration) (told, parked int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*enginetest.Timeout)
	defer cancel()
	told = n.Daemon.Drain(ctx, period, n.Node.Park).Told
	n.Node.Drain(ctx)
	parked = int(n.Node.Stats().SessionsParked)
	if err := n.Daemon.Stop(ctx); err != nil {
		t.Errorf("stopping %s: %v", n.ID(), err)
	}
	if err := n.Node.Close(ctx); err != nil {
		t.Errorf("leaving the cluster %s: %v", n.ID(), err)
	}
	return told, parked
}

// TestRollingRestart drains a, restarts it, and drains b, with pairs
// across the nodes and within each, JSON and line clients both; each
// phase ends with every client having read all its partner said, and
// nothing else.
func TestRollingRestart(t *testing.T) {
	began := time.Now()
	r := startRedis(t)
	a, b := startNode(t, r, "a"), startNode(t, r, "b")

	// Across: alice (JSON, a) and bob (JSON, b); gina (line, a) and
	// hank (JSON, b). Within a: carol (JSON) and dave (line). Within b:
	// erin (line) and frank (JSON).
	alice, bob := newRoller(t, a.Daemon, "alice", true), newRoller(t, b.Daemon, "bob", true)
	gina, hank := newRoller(t, a.Daemon, "gina", false), newRoller(t, b.Daemon, "hank", true)
	carol, dave := newRoller(t, a.Daemon, "carol", true), newRoller(t, a.Daemon, "dave", false)
	erin, frank := newRoller(t, b.Daemon, "erin", false), newRoller(t, b.Daemon, "frank", true)
	bob.pair(alice)
	hank.pair(gina)
	dave.pair(carol)
	frank.pair(erin)
	all := []*roller{alice, bob, gina, hank, carol, dave, erin, frank}
	onA := []*roller{alice, gina, carol, dave}

	// Before: everyone says a few, and reads them.
	talk := func(tag string) {
		t.Helper()
		done := make(map[*roller]chan struct{})
		for _, x := range all {
			done[x] = make(chan struct{})
		}
		var wg sync.WaitGroup
		for _, x := range all {
			wg.Go(func() {
				for i := range 5 {
					x.say(fmt.Sprintf("%s %s %d", x.name, tag, i))
				}
				close(done[x])
				if err := x.readAll(done[x.peer]); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		for _, x := range all {
			if err := x.check(); err != nil {
				t.Fatal(err)
			}
		}
	}
	talk("before")

	const period = time.Second
	phase := func(tag string, from *testNode, to *enginetest.Daemon, moving []*roller) {
		t.Helper()
		done := make(map[*roller]chan struct{})
		for _, x := range all {
			done[x] = make(chan struct{})
		}
		var wg sync.WaitGroup
		for _, x := range all {
			wg.Go(func() {
				var err error
				if slices.Contains(moving, x) {
					err = x.move(to, 10, tag, done[x], done[x.peer])
				} else {
					err = x.stay(10, period, tag, done[x], done[x.peer])
				}
				if err != nil {
					t.Error(err)
				}
			})
		}
		start := time.Now()
		told, parked := drainNode(t, from, period)
		t.Logf("%s: %s told %d connections to reconnect over %v and parked %d sessions", tag, from.ID(), told, time.Since(start).Round(time.Millisecond), parked)
		if told != len(moving) {
			t.Errorf("%s told %d connections, want %d", from.ID(), told, len(moving))
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		for _, x := range all {
			if err := x.check(); err != nil {
				t.Fatal(err)
			}
		}
	}
	phase("a drained", a, b.Daemon, onA)
	a2 := startNode(t, r, "a")
	talk("all on b")
	phase("b drained", b, a2.Daemon, all)
	talk("all on a")

	dups := 0
	for _, x := range all {
		dups += x.dups
	}
	if st := a2.Hub.Stats(); st.Users != len(all) || st.Pairs != 4 || st.Away != 0 {
		t.Fatalf("a after the restart: %+v", st)
	}
	t.Logf("every pair survived; %d messages read, line clients read %d twice in replays; %v in all",
		sumGot(all), dups, time.Since(began).Round(time.Millisecond))
}

func sumGot(rs []*roller) int {
	n := 0
	for _, x := range rs {
		n += len(x.got)
	}
	return n
}

// TestDrainedStalledReaderLosesNothing: alice's connection on node a is
// open, but she reads slowly, then stops, so that her socket's buffers
// are full and a holds the rest for her, queued, when a drains. Her
// session is parked and she resumes on b, having read the old connection
// to its end: what it wrote and what the resume replays are together
// every message bob sent, in order, none missing, however long ago they
// were sent. The messages her client is not known to have received go
// with the session: those a still queued, which the old connection
// never writes, and those a's kernel held unacknowledged, which it
// never delivers once the connection is found dead. Before, the drain
// sent the session away as if nothing were queued, and the resume
// replayed only resume.replay_recent's worth: nothing, here.
func TestDrainedStalledReaderLosesNothing(t *testing.T) {
	// Long enough that a loaded machine does not find alice, reading
	// slowly, dead (TCP_USER_TIMEOUT) before the drain.
	const recent = 5 * time.Second
	// As many as alice, reading 64 KiB each 200 ms, takes well over
	// the wait below to read: some are still queued for her when a
	// drains.
	const count = 10_000 * int(recent/time.Second)
	// Reading slowly, alice is never cut as slow: her stalled
	// connection, drained, is found dead by TCP_USER_TIMEOUT
	// (resume.replay_recent) once her reads stop.
	r := startRedis(t)
	a, b, old, bob := behindAcrossNodes(t, r, recent)
	// alice reads slowly, 64 KiB at a time, and keeps what she reads.
	var read bytes.Buffer
	stop := enginetest.ReadSlowlyInto(old.Conn, &read)
	sendAcross(t, a, b, bob, count)
	// Every message is older than resume.replay_recent by the drain.
	time.Sleep(recent + recent/2)
	stop()

	// alice has stopped reading: a drains with her messages queued.
	if told, _ := drainNode(t, a, 0); told != 1 {
		t.Fatalf("%d connections told to reconnect, want alice's", told)
	}
	// What the old connection wrote, alice reads to its end.
	buf := make([]byte, 64<<10)
	for {
		old.Conn.SetReadDeadline(time.Now().Add(time.Second))
		n, err := old.Conn.Read(buf)
		read.Write(buf[:n])
		if err != nil {
			break
		}
	}
	next := 0
	for l := range strings.Lines(read.String()) {
		if !strings.HasSuffix(l, "\r\n") {
			break // cut short as the connection closed
		}
		l = strings.TrimSuffix(l, "\r\n")
		if strings.HasPrefix(l, "* ") {
			continue
		}
		var n int
		if _, err := fmt.Sscanf(l, "<bob> m %d", &n); err != nil || n != next {
			t.Fatalf("the old connection wrote %q, want message %d", l, next)
		}
		next++
	}
	if next == count {
		t.Fatal("alice read every message before the drain: nothing was queued for her")
	}

	_, peer, replayed, missed := enginetest.ResumeLine(t, b.Daemon, old.Key)
	if peer != "bob" {
		t.Fatalf("resumed with %q", peer)
	}
	t.Logf("alice read %d of %d messages on the old connection; the resume replayed %d, %d not kept", next, count, len(replayed), missed)
	enginetest.ExpectReplayedRun(t, replayed, missed, "bob", count-1)
	var first int
	if _, err := fmt.Sscanf(replayed[0], "<bob> m %d", &first); err != nil || first > next {
		t.Fatalf("the resume replayed from message %d, alice had read up to %d: %d lost unsaid", first, next-1, first-next)
	}
}
