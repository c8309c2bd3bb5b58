package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"duet/config"
	"duet/engine"
	"duet/engine/auth"
	"duet/engine/auth/authtest"
	"duet/engine/enginetest"
)

// redisSpy is someone with access to the Redis server: it sees every
// command any client sends (MONITOR, which shows script arguments and
// published payloads too) and every batch published on the nodes'
// channels, and can read every key.
type redisSpy struct {
	t testing.TB
	r *redisServer
	c *redis.Client

	mu       sync.Mutex
	commands [][]byte // MONITOR lines, unescaped
	batches  []spiedBatch
}

type spiedBatch struct {
	channel string
	payload []byte
}

func watchRedis(t testing.TB, r *redisServer) *redisSpy {
	t.Helper()
	s := &redisSpy{t: t, r: r, c: redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + r.Port})}
	t.Cleanup(func() { s.c.Close() })

	mon, err := net.DialTimeout("tcp", "127.0.0.1:"+r.Port, enginetest.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mon.Close() })
	mr := bufio.NewReader(mon)
	if _, err := mon.Write([]byte("MONITOR\r\n")); err != nil {
		t.Fatal(err)
	}
	if l, err := mr.ReadString('\n'); err != nil || l != "+OK\r\n" {
		t.Fatalf("MONITOR: %q, %v", l, err)
	}
	go func() {
		for {
			l, err := mr.ReadString('\n')
			if err != nil {
				return
			}
			s.mu.Lock()
			s.commands = append(s.commands, unescapeMonitor(strings.TrimSuffix(l, "\r\n")))
			s.mu.Unlock()
		}
	}()

	ps := s.c.PSubscribe(context.Background(), "duet:node:*")
	if _, err := ps.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ps.Close() })
	go func() {
		for msg := range ps.Channel() {
			s.mu.Lock()
			s.batches = append(s.batches, spiedBatch{msg.Channel, []byte(msg.Payload)})
			s.mu.Unlock()
		}
	}()
	return s
}

// unescapeMonitor undoes the quoting MONITOR applies to arguments
// (sdscatrepr), so binary arguments can be searched as bytes.
func unescapeMonitor(l string) []byte {
	var out []byte
	for i := 0; i < len(l); i++ {
		c := l[i]
		if c != '\\' || i+1 >= len(l) {
			out = append(out, c)
			continue
		}
		i++
		switch l[i] {
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'a':
			out = append(out, '\a')
		case 'b':
			out = append(out, '\b')
		case 'x':
			if i+2 < len(l) {
				if v, err := strconv.ParseUint(l[i+1:i+3], 16, 8); err == nil {
					out = append(out, byte(v))
					i += 2
					continue
				}
			}
			out = append(out, 'x')
		default:
			out = append(out, l[i])
		}
	}
	return out
}

// sync waits until the spy has seen everything sent to Redis so far: a
// marker command and a marker publish, which arrive after it.
func (s *redisSpy) sync() {
	s.t.Helper()
	ctx := context.Background()
	var marker [8]byte
	rand.Read(marker[:])
	m := "spy-marker-" + hex.EncodeToString(marker[:])
	if err := s.c.Echo(ctx, m).Err(); err != nil {
		s.t.Fatal(err)
	}
	if err := s.c.Publish(ctx, "duet:node:spy-marker", m).Err(); err != nil {
		s.t.Fatal(err)
	}
	deadline := time.Now().Add(enginetest.Timeout)
	for {
		s.mu.Lock()
		seenCmd, seenBatch := false, false
		for _, c := range s.commands {
			if bytes.Contains(c, []byte(m)) && !bytes.Contains(c, []byte("publish")) {
				seenCmd = true
			}
		}
		for _, b := range s.batches {
			if string(b.payload) == m {
				seenBatch = true
			}
		}
		s.mu.Unlock()
		if seenCmd && seenBatch {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatal("the spy did not see its own marker")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dump reads every key and its value: SCAN, then TYPE and the reader
// for that type. Each entry is the key and its contents, as bytes.
func (s *redisSpy) dump() map[string][]byte {
	s.t.Helper()
	ctx := context.Background()
	out := make(map[string][]byte)
	var cursor uint64
	for {
		keys, next, err := s.c.Scan(ctx, cursor, "*", 100).Result()
		if err != nil {
			s.t.Fatal(err)
		}
		for _, k := range keys {
			typ, err := s.c.Type(ctx, k).Result()
			if err != nil {
				s.t.Fatal(err)
			}
			var v bytes.Buffer
			switch typ {
			case "string":
				b, _ := s.c.Get(ctx, k).Bytes()
				v.Write(b)
			case "hash":
				for f, x := range s.c.HGetAll(ctx, k).Val() {
					v.WriteString(f + "=" + x + "\n")
				}
			case "set":
				for _, m := range s.c.SMembers(ctx, k).Val() {
					v.WriteString(m + "\n")
				}
			case "list":
				for _, m := range s.c.LRange(ctx, k, 0, -1).Val() {
					v.WriteString(m + "\n")
				}
			case "zset":
				for _, m := range s.c.ZRange(ctx, k, 0, -1).Val() {
					v.WriteString(m + "\n")
				}
			default:
				s.t.Fatalf("key %q has type %s, which the cluster does not write", k, typ)
			}
			out[k] = v.Bytes()
		}
		if cursor = next; cursor == 0 {
			return out
		}
	}
}

var tokenRE = regexp.MustCompile(`your (?:new )?token is ([0-9a-f]{32})`)

// tokenIn reads the token out of a welcome line.
func tokenIn(t testing.TB, line string) string {
	t.Helper()
	m := tokenRE.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no token in %q", line)
	}
	return m[1]
}

// needle is something a Redis reader must not find, in every form it
// could take.
type needle struct {
	what  string
	forms [][]byte
}

func tokenNeedle(what, tok string) needle {
	raw, err := hex.DecodeString(tok)
	if err != nil {
		panic(err)
	}
	return needle{what, [][]byte{[]byte(tok), []byte(strings.ToUpper(tok)), raw}}
}

func textNeedle(what, s string) needle {
	return needle{what, [][]byte{[]byte(s), []byte(strings.ToLower(s))}}
}

// find reports where any needle shows: in a command sent to Redis, a
// published batch, or a key or value stored.
func (s *redisSpy) find(needles []needle) []string {
	s.t.Helper()
	s.sync()
	var found []string
	look := func(where string, hay []byte) {
		for _, n := range needles {
			for _, f := range n.forms {
				if bytes.Contains(hay, f) {
					found = append(found, n.what+" in "+where)
					break
				}
			}
		}
	}
	s.mu.Lock()
	for i, c := range s.commands {
		look("command "+strconv.Itoa(i)+" ("+strconv.Quote(string(c[:min(len(c), 120)]))+")", c)
	}
	for i, b := range s.batches {
		look("batch "+strconv.Itoa(i)+" on "+b.channel, b.payload)
	}
	s.mu.Unlock()
	for k, v := range s.dump() {
		look("key name "+strconv.Quote(k), []byte(k))
		look("value of "+strconv.Quote(k), v)
	}
	return found
}

// TestRedisReaderLearnsNoSecrets pairs users across nodes, has them
// talk, change a token and pair again, while a spy records everything
// Redis sees: no token, no name and no message text may show, in any
// key, value, command argument or published batch.
func TestRedisReaderLearnsNoSecrets(t *testing.T) {
	r := startRedis(t)
	spy := watchRedis(t, r)
	a, b := startNode(t, r, "a"), startNode(t, r, "b")

	alice := a.DialLine(t).Login("Wisteria")
	bob := b.DialWS(t).Login("Brambleby")
	firstToken := alice.Token
	bob.Connect(alice.Token)
	alice.Expect(`^\* Brambleby is connected$`)
	bob.Expect("paired")

	var nonce [8]byte
	rand.Read(nonce[:])
	fromAlice := "alice-says-" + hex.EncodeToString(nonce[:])
	fromBob := "bob-answers-" + hex.EncodeToString(nonce[:])
	alice.Send(fromAlice)
	if ev := bob.Expect("message"); ev["text"] != fromAlice {
		t.Fatalf("bob: %v", ev)
	}
	bob.Say(fromBob)
	alice.Expect(`^<Brambleby> ` + fromBob + `$`)

	// A new token, and a second pairing through it.
	bob.Send(map[string]any{"type": "leave"})
	bob.Expect("left")
	alice.Expect(`^\* Brambleby left; you are free to be joined again$`)
	alice.Send("/newtoken")
	newToken := tokenIn(t, alice.Expect(`^\* your new token is `))
	bob.Connect(newToken)
	alice.Expect(`^\* Brambleby is connected$`)
	bob.Expect("paired")
	alice.Send(fromAlice + "-again")
	if ev := bob.Expect("message"); ev["text"] != fromAlice+"-again" {
		t.Fatalf("bob: %v", ev)
	}

	needles := []needle{
		{"the cluster secret", [][]byte{testSecret, []byte(hex.EncodeToString(testSecret))}},
		tokenNeedle("alice's first token", firstToken),
		tokenNeedle("alice's second token", newToken),
		tokenNeedle("bob's token", bob.Token),
		textNeedle("alice's name", "Wisteria"),
		textNeedle("bob's name", "Brambleby"),
		textNeedle("alice's message", fromAlice),
		textNeedle("bob's message", fromBob),
	}
	for _, f := range spy.find(needles) {
		t.Errorf("a Redis reader finds %s", f)
	}
	spy.mu.Lock()
	seen := len(spy.commands)
	batches := len(spy.batches)
	spy.mu.Unlock()
	// The spy must have seen the traffic it vouches for.
	if seen < 20 || batches < 4 {
		t.Fatalf("the spy saw only %d commands and %d batches", seen, batches)
	}
	t.Logf("searched %d commands, %d batches", seen, batches)
}

// recordOf finds the directory record of the one user of node: the
// attacker reads the directory to find its targets.
func (s *redisSpy) recordOf(node string) (key string, fields map[string]string) {
	s.t.Helper()
	ctx := context.Background()
	for k := range s.dump() {
		if !strings.HasPrefix(k, "duet:user:") {
			continue
		}
		f := s.c.HGetAll(ctx, k).Val()
		if f["node"] == node {
			return k, f
		}
	}
	s.t.Fatalf("no record of a user of node %s", node)
	return "", nil
}

// capturedWith returns the first batch published on channel whose
// payload makes a node deliver text; the test knows which batch that is
// by when it was sent, not by reading it.
func (s *redisSpy) batchesOn(channel string) [][]byte {
	s.t.Helper()
	s.sync()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out [][]byte
	for _, b := range s.batches {
		if b.channel == channel {
			out = append(out, b.payload)
		}
	}
	return out
}

// TestInjectedBatchesAreDropped publishes on a node's channel what
// someone with access to Redis could: a batch written by hand in the
// frame format, one in the batch format bound to the receiver but sealed
// with another secret, a real batch replayed, a real batch with a new
// sequence number or a changed byte, and a real batch sent to another
// node. None reaches a user, each is counted by its reason, and the
// pairs go on talking as if nothing happened.
func TestInjectedBatchesAreDropped(t *testing.T) {
	r := startRedis(t)
	spy := watchRedis(t, r)
	a, b, c := startNode(t, r, "a"), startNode(t, r, "b"), startNode(t, r, "c")
	alice := a.DialLine(t).Login("alice")
	bob := b.DialLine(t).Login("bob")
	carol := c.DialLine(t).Login("carol")
	dave := c.DialLine(t).Login("dave")
	bob.Send("/connect " + alice.Token)
	alice.Expect(`^\* bob is connected$`)
	bob.Expect(`^\* you are connected with alice$`)
	dave.Send("/connect " + carol.Token)
	carol.Expect(`^\* dave is connected$`)
	dave.Expect(`^\* you are connected with carol$`)

	before := len(spy.batchesOn("duet:node:b"))
	alice.Send("replay-me")
	bob.Expect(`^<alice> replay-me$`)
	real := spy.batchesOn("duet:node:b")
	if len(real) != before+1 {
		t.Fatalf("%d batches for b after one message, %d before", len(real), before)
	}
	captured := real[before]
	_, bobRec := spy.recordOf("b")
	pair, err := strconv.ParseUint(bobRec["pair"], 10, 64)
	if err != nil || pair == 0 {
		t.Fatalf("bob's record: %v", bobRec)
	}

	ctx := context.Background()
	publish := func(channel string, payload []byte) {
		t.Helper()
		if err := spy.c.Publish(ctx, channel, payload).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// Written by hand in the frame format, as node a.
	forged := appendStr(nil, "a")
	forged = appendFrame(forged, frameMessage, pair, "bob", "alice", []byte("FORGED"), 0)
	publish("duet:node:b", forged)
	// The real batch again, to its node and to another.
	publish("duet:node:b", captured)
	publish("duet:node:c", captured)
	// The real batch with a new sequence number, so it is no replay,
	// and then with a byte of its ciphertext changed too.
	h, n, err := parseHeader(captured)
	if err != nil {
		t.Fatalf("the captured batch: %v", err)
	}
	h.seq += 1000
	renumbered := append(appendHeader(nil, &h), captured[n:]...)
	publish("duet:node:b", renumbered)
	flipped := bytes.Clone(renumbered)
	flipped[len(flipped)-20] ^= 1
	publish("duet:node:b", flipped)
	// Everything right but the key: bound to b's incarnation and epoch,
	// as its lease shows them, and sealed by a node with another secret.
	lease, err := spy.c.Get(ctx, "duet:lease:b").Result()
	if err != nil {
		t.Fatal(err)
	}
	li, ok := parseLease(lease)
	if !ok {
		t.Fatalf("b's lease %q", lease)
	}
	outsider := testSealer(t, testKeys(t, otherSecret), "a")
	frames := appendFrame(nil, frameMessage, pair, "bob", "alice", []byte("FORGED"), 0)
	publish("duet:node:b", outsider.batch(nil, frames, new(sealScratch), 1, li.inc, li.epoch))

	// The pairs go on; the next thing each user sees is the real next
	// message, so nothing injected was delivered before it.
	alice.Send("sentinel one")
	bob.Expect(`^<alice> sentinel one$`)
	bob.Send("sentinel two")
	alice.Expect(`^<bob> sentinel two$`)
	dave.Send("still us")
	carol.Expect(`^<dave> still us$`)

	want := map[*testNode]map[string]uint64{
		b: {RejectMalformed: 1, RejectReplayed: 1, RejectForged: 3, RejectStale: 0},
		c: {RejectMalformed: 0, RejectReplayed: 0, RejectForged: 0, RejectStale: 1},
		a: {RejectMalformed: 0, RejectReplayed: 0, RejectForged: 0, RejectStale: 0},
	}
	// The counts are read until they hold: a node counts a batch sent
	// once Redis has answered its PUBLISH, which may be after the
	// receiver delivered it, and nothing a user sees follows c's look at
	// the batch sent to it.
	var wrong []string
	for deadline := time.Now().Add(enginetest.Timeout); ; time.Sleep(20 * time.Millisecond) {
		wrong = wrong[:0]
		for node, counts := range want {
			st := node.Stats()
			for reason, n := range counts {
				if st.BatchesRejected[reason] != n {
					wrong = append(wrong, fmt.Sprintf("node %s refused %d batches as %s, want %d", node.ID(), st.BatchesRejected[reason], reason, n))
				}
			}
		}
		if st := b.Stats(); st.BatchesReceived < 2 || a.Stats().BatchesSent < 2 {
			wrong = append(wrong, fmt.Sprintf("b received %d batches, a sent %d", st.BatchesReceived, a.Stats().BatchesSent))
		}
		if len(wrong) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, w := range wrong {
		t.Error(w)
	}
}

// TestTamperedDirectoryPairsNobody: someone who can write to Redis
// points the key of a token they know (their own user's) at another
// user's record. Connecting with that token must not pair anyone with
// the other user, who did not give out their token, and the other user
// stays free to be joined by their real token.
func TestTamperedDirectoryPairsNobody(t *testing.T) {
	r := startRedis(t)
	spy := watchRedis(t, r)
	a, b := startNode(t, r, "a"), startNode(t, r, "b")
	mallory := a.DialLine(t).Login("mallory")
	bob := b.DialLine(t).Login("bob")
	_, malloryRec := spy.recordOf("a")
	bobKey, _ := spy.recordOf("b")
	eve := a.DialLine(t).Login("eve")

	ctx := context.Background()
	tokenKey := "duet:token:" + malloryRec["tok"]
	if n, err := spy.c.Exists(ctx, tokenKey).Result(); err != nil || n != 1 {
		t.Fatalf("mallory's token key %s: %d, %v", tokenKey, n, err)
	}
	if err := spy.c.Set(ctx, tokenKey, strings.TrimPrefix(bobKey, "duet:user:"), 0).Err(); err != nil {
		t.Fatal(err)
	}
	eve.Send("/connect " + mallory.Token)
	eve.Expect(`^! unknown_token: `)
	if n := a.Stats().RecordsRejected; n != 1 {
		t.Errorf("records refused: %d, want 1", n)
	}

	// bob heard nothing and is free: his real token still pairs.
	carol := a.DialLine(t).Login("carol")
	carol.Send("/connect " + bob.Token)
	carol.Expect(`^\* you are connected with bob$`)
	bob.Expect(`^\* carol is connected$`)
}

// TestTamperedClientFieldIsRefused: someone who can write to Redis
// rewrites what a page's record says its client speaks, to make a page
// on another node that claims its token believe it cannot encrypt, with
// the field of a terminal's record (a node's tag, for another name) or
// with one made up. The claim stands, and the claimant is told no
// protocol at all, as for a record from before the field, which its
// page says is unencrypted; the record is counted as refused. The
// untouched field of a page's record tells the claimant "json".
func TestTamperedClientFieldIsRefused(t *testing.T) {
	r := startRedis(t)
	spy := watchRedis(t, r)
	a, b := startNode(t, r, "a"), startNode(t, r, "b")
	term := a.DialLine(t).Login("term")
	_, termRec := spy.recordOf("a")
	if !strings.HasPrefix(termRec["cl"], "line.") {
		t.Fatalf("a terminal's record: %v", termRec)
	}
	term.Send("/quit")
	ctx := context.Background()
	for i, forged := range []string{termRec["cl"], "json.00112233445566778899aabbccddeeff"} {
		page := b.DialWS(t).Login(fmt.Sprint("page", i))
		key := "duet:user:" + b.keys.nameHash(page.Name)
		if rec := spy.c.HGetAll(ctx, key).Val(); !strings.HasPrefix(rec["cl"], "json.") {
			t.Fatalf("a page's record: %v", rec)
		}
		if err := spy.c.HSet(ctx, key, "cl", forged).Err(); err != nil {
			t.Fatal(err)
		}
		other := a.DialWS(t).Login(fmt.Sprint("other", i))
		other.Connect(page.Token)
		if ev := other.Expect("paired"); ev["peer"] != page.Name || ev["peer_proto"] != nil {
			t.Fatalf("claimed with the field %q: %v", forged, ev)
		}
		if n := a.Stats().RecordsRejected; n != uint64(i+1) {
			t.Errorf("records refused: %d, want %d", n, i+1)
		}
		page.Expect("paired")
		other.Send(map[string]string{"type": "leave"})
		other.Expect("left")
		page.Expect("peer_left")
		page.Send(map[string]string{"type": "logout"})
	}

	// Untouched, a page's field is told.
	page := b.DialWS(t).Login("page")
	other := a.DialWS(t).Login("other")
	other.Connect(page.Token)
	if ev := other.Expect("paired"); ev["peer_proto"] != "json" {
		t.Fatalf("claimed with the field as written: %v", ev)
	}
}

// TestDifferentSecretsCannotPair: two nodes given different secrets
// share a Redis. Their users cannot pair, either way round, and each
// node says why in its log and its metrics.
func TestDifferentSecretsCannotPair(t *testing.T) {
	r := startRedis(t)
	logs := make(map[string]*observer.ObservedLogs)
	start := func(id string, secret []byte) *testNode {
		core, obs := observer.New(zap.ErrorLevel)
		logs[id] = obs
		return startNodeWith(t, r, id, func(o *Options) {
			o.Secret = secret
			o.Logger = zap.New(zapcore.NewTee(o.Logger.Core(), core))
		})
	}
	a, b := start("a", testSecret), start("b", otherSecret)
	alice := a.DialLine(t).Login("alice")
	bob := b.DialLine(t).Login("bob")
	bob.Send("/connect " + alice.Token)
	bob.Expect(`^! unknown_token: `)
	alice.Send("/connect " + bob.Token)
	alice.Expect(`^! unknown_token: `)

	// Each finds the other at its next check, within a heartbeat. The
	// count is set just before the line is logged: both are waited for.
	for _, n := range []*testNode{a, b} {
		deadline := time.Now().Add(enginetest.Timeout)
		for n.Stats().ForeignNodes != 1 {
			if time.Now().After(deadline) {
				t.Fatalf("node %s never found the other secret", n.ID())
			}
			time.Sleep(20 * time.Millisecond)
		}
		var entries []observer.LoggedEntry
		for {
			if entries = logs[n.ID()].FilterMessageSnippet("have another cluster secret").All(); len(entries) > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %s did not log the other secret", n.ID())
			}
			time.Sleep(20 * time.Millisecond)
		}
		other := map[string]string{"a": "b", "b": "a"}[n.ID()]
		if f := entries[0].ContextMap()["nodes"]; fmt.Sprint(f) != "["+other+"]" {
			t.Errorf("node %s logged nodes %v", n.ID(), f)
		}
	}

	// Each node goes on working with the nodes that share its secret
	// (here, itself).
	carol := a.DialLine(t).Login("carol")
	carol.Send("/connect " + alice.Token)
	carol.Expect(`^\* you are connected with alice$`)
}

// TestEpochsAdvanceUnderTraffic: the receiver's epoch advances while a
// user streams messages one way, so the sender learns each new epoch
// from the receiver's lease alone; nothing is refused or lost.
func TestEpochsAdvanceUnderTraffic(t *testing.T) {
	r := startRedis(t)
	fast := func(o *Options) { o.epochPeriod = 2 * time.Second }
	a, b := startNodeWith(t, r, "a", fast), startNodeWith(t, r, "b", fast)
	alice := a.DialLine(t).Login("alice")
	bob := b.DialLine(t).Login("bob")
	bob.Send("/connect " + alice.Token)
	alice.Expect(`^\* bob is connected$`)
	bob.Expect(`^\* you are connected with alice$`)

	// Traffic goes on until b's epoch has moved three times: about 6 s
	// of 2 s epochs, but a loaded machine may stretch a period, so the
	// bound is how long it may take, not how long it does.
	first := b.gate.epoch.Load()
	end := time.Now().Add(30 * time.Second)
	sent := 0
	for ; b.gate.epoch.Load() < first+3; sent++ {
		if time.Now().After(end) {
			t.Fatalf("b's epoch went from %d to %d in 30 s of 2 s epochs", first, b.gate.epoch.Load())
		}
		alice.Send("tick " + strconv.Itoa(sent))
		time.Sleep(50 * time.Millisecond)
	}
	for i := range sent {
		bob.Expect(`^<alice> tick ` + strconv.Itoa(i) + `$`)
	}
	for _, n := range []*testNode{a, b} {
		for reason, c := range n.Stats().BatchesRejected {
			if c != 0 {
				t.Errorf("node %s refused %d batches as %s", n.ID(), c, reason)
			}
		}
	}
}

// TestRestartUnderSameID: a node that crashes and comes back under the
// same node id before its lease expires is a new incarnation. Its
// earlier run's partners are told it is gone at the next check (they
// would otherwise wait for a reply that cannot come), and its new users
// pair as usual.
func TestRestartUnderSameID(t *testing.T) {
	r := startRedis(t)
	a, b := startNode(t, r, "a"), startNode(t, r, "b")
	alice := a.DialLine(t).Login("alice")
	bob := b.DialLine(t).Login("bob")
	bob.Send("/connect " + alice.Token)
	alice.Expect(`^\* bob is connected$`)
	bob.Expect(`^\* you are connected with alice$`)

	b.halt() // its lease (10 s in these tests) outlives it
	b2 := startNode(t, r, "b")
	if b2.NodeID() == b.NodeID() {
		t.Fatal("two runs, one address")
	}
	restarted := time.Now()
	alice.Expect(`^\* bob disconnected; you are free to be joined again$`)
	t.Logf("told after %v", time.Since(restarted))

	bob2 := b2.DialLine(t).Login("bob")
	bob2.Send("/connect " + alice.Token)
	alice.Expect(`^\* bob is connected$`)
	bob2.Expect(`^\* you are connected with alice$`)
	alice.Send("welcome back")
	bob2.Expect(`^<alice> welcome back$`)
	bob2.Send("thanks")
	alice.Expect(`^<bob> thanks$`)
}

// TestAccountsOnClusterNodes: two nodes in accounts mode, with one
// users file. A login is the password's before it is the directory's:
// by name alone, or with a wrong password, it is refused on a cluster
// node as on a single one (the commands that need the directory are
// carried out off the event loop, and that path must not log anyone in
// by name, as open mode does). An account online on one node is
// already_online on the other; accounts on two nodes pair and talk; a
// netcat-like client that pipes its login, a connect and a message in
// one write has them carried out in order, through both waits (the
// password check, then the directory). A session of the account away
// on the other node is logged out there by a login with the password,
// its partner told it logged in elsewhere; and the real netcat piping
// a file with a password loses nothing.
func TestAccountsOnClusterNodes(t *testing.T) {
	r := startRedis(t)
	nodes := accountsNodes(t, r, false, "a", "b")
	a, b := nodes[0], nodes[1]

	for _, login := range []string{"/login alice", "/login alice wrong password"} {
		c := a.DialLine(t)
		c.Send(login)
		if got := c.Line(); !strings.HasPrefix(got, "! auth_failed: ") {
			t.Errorf("%q on a cluster node: %q", login, got)
		}
	}
	alice := a.DialLine(t).LoginPassword("alice", "s3cret")
	again := b.DialLine(t)
	again.Send("/login alice s3cret")
	again.Expect(`^! already_online: `)

	bob := b.DialLine(t).LoginPassword("bob", "hunter2")
	bob.Send("/connect " + alice.Token)
	bob.Expect(`^\* you are connected with alice$`)
	alice.Expect(`^\* bob is connected$`)
	alice.Send("across nodes, with passwords")
	bob.Expect(`^<alice> across nodes, with passwords$`)

	carol := b.DialLine(t)
	if _, err := carol.Conn.Write([]byte("/login carol tr0mbone\n/connect " + alice.Token + "\nhello\n")); err != nil {
		t.Fatal(err)
	}
	carol.Expect(`^\* you are carol, your token is [0-9a-f]{32}$`)
	carol.Expect(`^\* resume key: `)
	carol.Expect(`^! room_full: `)
	carol.Expect(`^! not_paired: `)

	// alice's connection drops: her session waits for a resume on a,
	// and a login on b with her password takes its place.
	enginetest.Reset(t, alice.Conn)
	bob.Expect(`^\* alice lost the connection`)
	back := b.DialLine(t).LoginPassword("alice", "s3cret")
	bob.Expect(`^\* alice logged in elsewhere; you are free to be joined again$`)
	bob.Send("/connect " + back.Token)
	bob.Expect(`^\* you are connected with alice$`)
	back.Expect(`^\* bob is connected$`)

	// The real netcat, piping a file and ending its input behind it:
	// the password check, the login's directory call and the connect's
	// wait in turn, and nothing is lost.
	dave := a.DialLine(t).LoginPassword("dave", "0boe")
	bob.Send("/quit")
	bob.Expect(`^\* bye$`)
	back.Expect(`^\* bob left; `)
	in := "/login bob hunter2\n/connect " + dave.Token + "\npiped, with a password\n"
	finished := enginetest.PipeNetcat(t, b.TCP, strings.NewReader(in), io.Discard)
	dave.Expect(`^\* bob is connected$`)
	dave.Expect(`^<bob> piped, with a password$`)
	dave.Expect(`^\* bob disconnected; `)
	finished()
}

// accountsNodes starts nodes in accounts mode on r, with one users
// file, takeover as given.
func accountsNodes(t *testing.T, r *redisServer, takeover bool, ids ...string) []*testNode {
	t.Helper()
	users := authtest.Users(t, "alice", "s3cret", "bob", "hunter2", "carol", "tr0mbone", "dave", "0boe")
	withAccounts := func(o *engine.Options) {
		accounts, err := auth.Load(users)
		if err != nil {
			t.Fatal(err)
		}
		o.AuthMode, o.Auth = "accounts", engine.AuthOptions{Accounts: accounts, Takeover: takeover}
		o.Resume = config.Defaults().Resume
	}
	var nodes []*testNode
	for _, id := range ids {
		nodes = append(nodes, startNodeEngine(t, r, id, nil, withAccounts))
	}
	return nodes
}

// TestAccountLoginEndsAParkedSession: a drain parks alice's and dave's
// sessions between nodes; each logs in again on b with the password
// before resuming (a lost key, a new device). The parked session is
// ended where it is parked, its resume key is unknown from then on, and
// its partner is told it was replaced, with how many of its messages
// the session never had: bob on another node, carol on b itself.
func TestAccountLoginEndsAParkedSession(t *testing.T) {
	r := startRedis(t)
	nodes := accountsNodes(t, r, false, "a", "b", "c")
	a, b, c := nodes[0], nodes[1], nodes[2]
	alice := a.DialLine(t).LoginPassword("alice", "s3cret")
	bob := c.DialLine(t).LoginPassword("bob", "hunter2")
	bob.Send("/connect " + alice.Token)
	bob.Expect(`^\* you are connected with alice$`)
	alice.Expect(`^\* bob is connected$`)
	dave := a.DialLine(t).LoginPassword("dave", "0boe")
	carol := b.DialLine(t).LoginPassword("carol", "tr0mbone")
	carol.Send("/connect " + dave.Token)
	carol.Expect(`^\* you are connected with dave$`)
	// Both sides know of the pairing before the drain: a claim still on
	// its way to the holder's node as that node parks the holder is not
	// carried into the park, and the claimant is told disconnected
	// (docs/CLUSTER.md, What is not done yet).
	dave.Expect(`^\* carol is connected$`)

	if _, parked := drainNode(t, a, 0); parked != 2 {
		t.Fatalf("a parked %d sessions", parked)
	}
	bob.Expect(`^\* alice's server is restarting; `)
	carol.Expect(`^\* dave's server is restarting; `)
	// What each says to the parked session is queued for it, and when
	// the session ends parked, its partner is told of it as on one node.
	bob.Send("one")
	bob.Send("two")
	carol.Send("three")
	rc := redisClient(t, r)
	for _, q := range []struct {
		name string
		n    int64
	}{{"alice", 2}, {"dave", 1}} {
		qk := "duet:parkq:" + a.keys.nameHash(q.name)
		for deadline := time.Now().Add(enginetest.Timeout); rc.LLen(context.Background(), qk).Val() < q.n; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("never queued for %s", q.name)
			}
		}
	}

	b.DialLine(t).LoginPassword("alice", "s3cret")
	bob.Expect(`^\* alice logged in elsewhere; 2 of your messages were not delivered; you are free to be joined again$`)
	b.DialLine(t).LoginPassword("dave", "0boe")
	carol.Expect(`^\* dave logged in elsewhere; 1 of your messages was not delivered; you are free to be joined again$`)
	old := c.DialLine(t)
	old.Send("/resume " + alice.Key)
	old.Expect(`^! bad_resume_key: `)
}

// TestTakeoverAcrossNodes: with auth.takeover on, a login with the
// password on one node replaces the account's session online on
// another: that node tells the old connection why and closes it, and
// the partner, on a third connection, is told the account logged in
// elsewhere. Without the password nothing is replaced.
func TestTakeoverAcrossNodes(t *testing.T) {
	r := startRedis(t)
	nodes := accountsNodes(t, r, true, "a", "b")
	a, b := nodes[0], nodes[1]
	alice := a.DialLine(t).LoginPassword("alice", "s3cret")
	bob := a.DialLine(t).LoginPassword("bob", "hunter2")
	bob.Send("/connect " + alice.Token)
	bob.Expect(`^\* you are connected with alice$`)
	alice.Expect(`^\* bob is connected$`)

	wrong := b.DialLine(t)
	wrong.Send("/login alice guess")
	wrong.Expect(`^! auth_failed: `)
	alice.Send("still here")
	bob.Expect(`^<alice> still here$`)

	phone := b.DialLine(t).LoginPassword("alice", "s3cret")
	alice.Expect(`^\* your account logged in on another connection; this one is closed$`)
	alice.Expect(`^\* bye$`)
	alice.ExpectClosed()
	bob.Expect(`^\* alice logged in elsewhere; you are free to be joined again$`)
	bob.Send("/connect " + phone.Token)
	bob.Expect(`^\* you are connected with alice$`)
	phone.Expect(`^\* bob is connected$`)
	phone.Send("from my phone, on the other node")
	bob.Expect(`^<alice> from my phone, on the other node$`)
}
