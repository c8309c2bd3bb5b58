package hub

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"duet/proto"
)

// kept lists a history's messages as "seq from kind text", oldest first.
func kept(hs *history) []string {
	var out []string
	hs.each(0, func(seq uint64, _ time.Duration, from string, kind proto.EventKind, text []byte) {
		k := "m"
		if kind == proto.EvSealed {
			k = "s"
		}
		out = append(out, fmt.Sprintf("%d %s %s %s", seq, from, k, text))
	})
	return out
}

// costOf is what a history's messages should count against the buffer.
func costOf(hs *history) int64 {
	var c int64
	hs.each(0, func(_ uint64, _ time.Duration, _ string, _ proto.EventKind, text []byte) {
		c += int64(len(text)) + entryCost
	})
	return c
}

// TestHistoryRunsJoin: runs kept together (pushRun, as SayAll keeps
// them) join the newest run when they continue it, whichever way either
// was kept, and start a new one at a new moment.
func TestHistoryRunsJoin(t *testing.T) {
	hs := new(history)
	run := func(seq uint64, at time.Duration, texts ...string) {
		b := make([][]byte, len(texts))
		for i, text := range texts {
			b[i] = []byte(text)
		}
		hs.pushRun(seq, at, "bob", b)
	}
	run(1, 10, "a", "b")
	run(3, 10, "c")
	if hs.runs != 1 {
		t.Fatalf("%d runs after two that continue each other; want 1", hs.runs)
	}
	run(4, 20, "d")                           // a new moment
	hs.push(5, 20, "bob", false, []byte("e")) // one message continues a run
	run(6, 20, "f", "g")                      // and a run continues it
	if hs.runs != 2 || hs.n != 7 {
		t.Fatalf("%d runs, %d messages; want 2 and 7", hs.runs, hs.n)
	}
	want := []string{"1 bob m a", "2 bob m b", "3 bob m c", "4 bob m d", "5 bob m e", "6 bob m f", "7 bob m g"}
	if got := kept(hs); strings.Join(got, "|") != strings.Join(want, "|") || hs.cost != costOf(hs) {
		t.Fatalf("kept %q, cost %d", got, hs.cost)
	}
	hs.release()
}

// TestHistoryRuns: messages delivered together share an entry, which a
// new sender, a new moment, a sealed frame or a gap in numbers ends;
// dropping from the front takes messages one at a time or runs whole,
// and the counts, the cost and the indexes stay those of the messages.
func TestHistoryRuns(t *testing.T) {
	hs := new(history)
	push := func(seq uint64, at time.Duration, from string, sealed bool, text string) {
		hs.push(seq, at, from, sealed, []byte(text))
	}
	push(1, 10, "bob", false, "a")
	push(2, 10, "bob", false, "bb")
	push(3, 10, "bob", false, strings.Repeat("c", 300)) // a two-byte length
	push(4, 20, "bob", false, "d")                      // a new moment
	push(5, 20, "bob", true, "sealed")                  // a sealed frame stands alone
	push(6, 20, "bob", false, "e")
	push(7, 20, "eve", false, "f") // a new sender
	push(9, 20, "eve", false, "g") // a gap in numbers
	if hs.runs != 6 || hs.n != 8 {
		t.Fatalf("%d runs, %d messages; want 6 and 8", hs.runs, hs.n)
	}
	want := []string{"1 bob m a", "2 bob m bb", "3 bob m " + strings.Repeat("c", 300), "4 bob m d", "5 bob s sealed", "6 bob m e", "7 eve m f", "9 eve m g"}
	if got := kept(hs); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("kept %q", got)
	}
	if hs.cost != costOf(hs) {
		t.Fatalf("cost %d, want %d", hs.cost, costOf(hs))
	}
	if i := hs.since(15); i != 3 {
		t.Fatalf("since(15) = %d, want 3", i)
	}
	if i, j := hs.seqIndex(2), hs.seqIndex(8); i != 1 || j != 7 {
		t.Fatalf("seqIndex(2), seqIndex(8) = %d, %d; want 1, 7", i, j)
	}

	// One from the front of a run, then through the middle of another.
	if seq, at := hs.dropFront(); seq != 1 || at != 10 {
		t.Fatalf("dropFront: %d at %d", seq, at)
	}
	hs.dropThrough(4)
	want = want[4:]
	if got := kept(hs); strings.Join(got, "|") != strings.Join(want, "|") || hs.n != 4 || hs.cost != costOf(hs) {
		t.Fatalf("after dropping through 4: %q, %d messages, cost %d", got, hs.n, hs.cost)
	}
	var texts []string
	hs.each(2, func(seq uint64, _ time.Duration, _ string, _ proto.EventKind, text []byte) {
		texts = append(texts, fmt.Sprint(seq, string(text)))
	})
	if strings.Join(texts, ",") != "7f,9g" {
		t.Fatalf("each from 2: %v", texts)
	}
	hs.trimAge(21)
	if hs.n != 0 || hs.runs != 0 || hs.cost != 0 || !hs.empty() {
		t.Fatalf("after trimming everything: %d messages, %d runs, cost %d", hs.n, hs.runs, hs.cost)
	}
	// A chunk nothing lives in any more is written afresh.
	if len(hs.chunks) != 1 || len(hs.chunks[0].buf) != 0 {
		t.Fatalf("%d chunks left, the first holding %d bytes", len(hs.chunks), len(hs.chunks[0].buf))
	}
}

// TestHistoryRunsSpanChunks: a run whose next text does not fit its
// chunk goes on as a new entry in the next chunk, and chunks go back to
// their pool as their runs are dropped.
func TestHistoryRunsSpanChunks(t *testing.T) {
	hs := new(history)
	text := []byte(strings.Repeat("x", 100))
	for i := range 40 {
		hs.push(uint64(i+1), 5, "bob", false, text)
	}
	if hs.n != 40 || len(hs.chunks) < 2 || hs.runs != len(hs.chunks) {
		t.Fatalf("%d messages, %d runs in %d chunks; want 40 messages, a run per chunk", hs.n, hs.runs, len(hs.chunks))
	}
	hs.dropThrough(39)
	if hs.n != 1 || len(hs.chunks) != 1 || hs.cost != 100+entryCost {
		t.Fatalf("after dropping 39: %d messages, %d chunks, cost %d", hs.n, len(hs.chunks), hs.cost)
	}
	if got := kept(hs); len(got) != 1 || !strings.HasPrefix(got[0], "40 bob m x") {
		t.Fatalf("kept %q", got)
	}
}

// oldestRun is the header of a history's oldest run.
func oldestRun(hs *history) *header { return hs.chunks[0].run(hs.head) }

// TestHistoryTrimAgeFollowsTheOldest: trimAge drops exactly the runs
// delivered before its limit, whatever mix of pushes, drops from the
// front (one message or runs whole), trims by number and new chunks
// came before: the oldest's time it keeps in the history's header stays
// that of the oldest run's own header.
func TestHistoryTrimAgeFollowsTheOldest(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	hs := new(history)
	var seq uint64
	at := time.Duration(0)
	for step := range 20000 {
		switch op := rng.IntN(10); {
		case op < 5:
			if rng.IntN(3) == 0 {
				at += time.Duration(1 + rng.IntN(3))
			}
			seq++
			hs.push(seq, at, "bob", rng.IntN(20) == 0, []byte("text"))
		case op < 7 && hs.n > 0:
			hs.dropFront()
		case op < 8 && hs.n > 0:
			hs.dropThrough(seq - uint64(rng.IntN(5)))
		case op < 10:
			before := at - time.Duration(rng.IntN(6))
			hs.trimAge(before)
			if hs.runs > 0 && oldestRun(hs).at() < before {
				t.Fatalf("step %d: kept a run delivered at %v, before %v", step, oldestRun(hs).at(), before)
			}
		}
		if hs.runs > 0 && hs.oldestAt != oldestRun(hs).at() {
			t.Fatalf("step %d: oldest kept at %v, the oldest run's header says %v", step, hs.oldestAt, oldestRun(hs).at())
		}
	}
}

// TestHistoryKeepsWhatAListKeeps: under a random mix of keeps (one
// message or runs, sealed or not, texts short and long, from more
// senders than a history names before it compacts them), drops from the
// front, trims by number and by age, the history holds exactly what a
// plain list of messages does, with the same count, cost and indexes.
func TestHistoryKeepsWhatAListKeeps(t *testing.T) {
	type msg struct {
		seq  uint64
		at   time.Duration
		from string
		kind string
		text string
	}
	rng := rand.New(rand.NewPCG(7, 8))
	hs := new(history)
	defer hs.release()
	var list []msg
	var seq uint64
	at := time.Duration(0)
	from := "bob"
	text := func() string {
		n := rng.IntN(80)
		if rng.IntN(40) == 0 {
			n = rng.IntN(20000)
		}
		return strings.Repeat(string(rune('a'+rng.IntN(26))), n)
	}
	for step := range 30000 {
		if rng.IntN(50) == 0 {
			// A new partner: more of them than maxSenders, so that
			// senders no run is from are dropped along the way.
			from = fmt.Sprint("peer", rng.IntN(3*maxSenders))
		}
		if rng.IntN(3) == 0 {
			at += time.Duration(1 + rng.IntN(3))
		}
		switch op := rng.IntN(12); {
		case op < 4:
			seq += uint64(1 + rng.IntN(2)) // now and then a gap
			sealed := rng.IntN(10) == 0
			tx := text()
			hs.push(seq, at, from, sealed, []byte(tx))
			kind := "m"
			if sealed {
				kind = "s"
			}
			list = append(list, msg{seq, at, from, kind, tx})
		case op < 7:
			texts := make([][]byte, 1+rng.IntN(20))
			for i := range texts {
				tx := text()
				texts[i] = []byte(tx)
				list = append(list, msg{seq + 1 + uint64(i), at, from, "m", tx})
			}
			hs.pushRun(seq+1, at, from, texts)
			seq += uint64(len(texts))
		case op < 8 && len(list) > 0:
			s, a := hs.dropFront()
			if s != list[0].seq || a != list[0].at {
				t.Fatalf("step %d: dropFront gave %d at %v, want %d at %v", step, s, a, list[0].seq, list[0].at)
			}
			list = list[1:]
		case op < 10:
			last := seq - uint64(rng.IntN(30))
			hs.dropThrough(last)
			for len(list) > 0 && list[0].seq <= last {
				list = list[1:]
			}
		default:
			before := at - time.Duration(rng.IntN(8))
			hs.trimAge(before)
			// trimAge drops runs whole: a run delivered before `before`
			// goes with all its messages, which share its time.
			for len(list) > 0 && list[0].at < before {
				list = list[1:]
			}
		}
		var want []string
		var cost int64
		for _, m := range list {
			want = append(want, fmt.Sprintf("%d %s %s %s", m.seq, m.from, m.kind, m.text))
			cost += int64(len(m.text)) + entryCost
		}
		if got := kept(hs); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("step %d: kept %d messages, want %d, or they differ", step, len(got), len(want))
		}
		if hs.n != len(list) || hs.cost != cost || hs.empty() != (len(list) == 0) {
			t.Fatalf("step %d: %d messages, cost %d; want %d, %d", step, hs.n, hs.cost, len(list), cost)
		}
		if len(list) > 0 {
			if hs.oldestAt != list[0].at {
				t.Fatalf("step %d: oldest at %v, want %v", step, hs.oldestAt, list[0].at)
			}
			i := rng.IntN(len(list))
			if got := hs.seqIndex(list[i].seq); got != i {
				t.Fatalf("step %d: seqIndex(%d) = %d, want %d", step, list[i].seq, got, i)
			}
			j := 0
			for j < len(list) && list[j].at < list[i].at {
				j++
			}
			if got := hs.since(list[i].at); got != j {
				t.Fatalf("step %d: since(%v) = %d, want %d", step, list[i].at, got, j)
			}
		}
		senders := map[string]bool{}
		for _, m := range list {
			senders[m.from] = true
		}
		if len(hs.senders) > max(maxSenders, len(senders))+1 {
			t.Fatalf("step %d: %d senders named, runs from %d kept", step, len(hs.senders), len(senders))
		}
	}
}

// TestHistoryNamesFewSenders: a history that never empties while its
// session changes partners names only the senders of the runs it keeps,
// and maxSenders more at most, each run still with its own sender.
func TestHistoryNamesFewSenders(t *testing.T) {
	hs := new(history)
	defer hs.release()
	const window = 5 // runs kept at a time
	for i := range 200 {
		seq := uint64(i + 1)
		hs.push(seq, time.Duration(i), fmt.Sprint("peer", i), false, []byte("hi"))
		if seq > window {
			hs.dropThrough(seq - window)
		}
		if len(hs.senders) > maxSenders+1 {
			t.Fatalf("after %d partners: %d senders named for %d runs", i+1, len(hs.senders), hs.runs)
		}
		var want []string
		for j := max(1, int(seq)-window+1); j <= int(seq); j++ {
			want = append(want, fmt.Sprintf("%d peer%d m hi", j, j-1))
		}
		if got := kept(hs); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("after %d partners: kept %q, want %q", i+1, got, want)
		}
	}
}

// TestHistoryPushRunKeepsWhatPushKeeps: a run kept in one go (pushRun)
// leaves the same messages, counts, cost, oldest time and indexes as its
// texts pushed one at a time, over runs that span chunks and texts that
// need a chunk of their own.
func TestHistoryPushRunKeepsWhatPushKeeps(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	one, run := new(history), new(history)
	defer one.release()
	defer run.release()
	seq := uint64(1)
	at := time.Duration(0)
	for step := range 2000 {
		texts := make([][]byte, 1+rng.IntN(64))
		for i := range texts {
			n := rng.IntN(100)
			if rng.IntN(50) == 0 {
				n = rng.IntN(20000)
			}
			texts[i] = []byte(strings.Repeat(string(rune('a'+rng.IntN(26))), n))
		}
		from := []string{"bob", "eve"}[rng.IntN(2)]
		if rng.IntN(4) == 0 {
			at++
		}
		for i, text := range texts {
			one.push(seq+uint64(i), at, from, false, text)
		}
		run.pushRun(seq, at, from, texts)
		seq += uint64(len(texts))
		if rng.IntN(3) == 0 {
			last := seq - uint64(rng.IntN(200))
			one.dropThrough(last)
			run.dropThrough(last)
		}
		if one.n != run.n || one.cost != run.cost || one.oldestAt != run.oldestAt {
			t.Fatalf("step %d: one at a time %d messages, cost %d, oldest at %v; in a run %d, %d, %v",
				step, one.n, one.cost, one.oldestAt, run.n, run.cost, run.oldestAt)
		}
		if a, b := strings.Join(kept(one), "|"), strings.Join(kept(run), "|"); a != b {
			t.Fatalf("step %d: kept differ", step)
		}
		if q := seq - uint64(rng.IntN(100)); one.seqIndex(q) != run.seqIndex(q) {
			t.Fatalf("step %d: index of %d differs", step, q)
		}
		if run.cost != costOf(run) {
			t.Fatalf("step %d: cost %d, want %d", step, run.cost, costOf(run))
		}
	}
}

// ackingQueue is the Queue of a client whose transport received every
// message handed to it, as a line client's TCP does that reads all; it
// counts the looks at what it received.
type ackingQueue struct {
	last  uint64 // the newest message handed over
	looks int
}

func (q *ackingQueue) Deliver(ev *proto.Event) {
	if ev.Seq > 0 {
		q.last = ev.Seq
	}
}

func (q *ackingQueue) DeliverMessages(ev *proto.Event, texts [][]byte) {
	if ev.Seq > 0 {
		q.last = ev.Seq + uint64(len(texts)) - 1
	}
}

func (q *ackingQueue) Backlog() int64                  { return 0 }
func (q *ackingQueue) Wait(Waiter) bool                { return false }
func (q *ackingQueue) Evict(Eviction)                  {}
func (q *ackingQueue) TransportAcked(after int) uint64 { q.looks++; return q.last }

// ackingPair pairs a sender with a reader whose Queue is an
// ackingQueue, on a hub with opts.
func ackingPair(t *testing.T, opts Options) (sender, reader *Session, q *ackingQueue) {
	t.Helper()
	h := New(opts)
	q = &ackingQueue{}
	reader, err := h.Login([]byte("reader"), q)
	if err != nil {
		t.Fatal(err)
	}
	sender, _ = h.Login([]byte("sender"), discard{})
	if err := sender.Connect([]byte(reader.Token().String())); err != nil {
		t.Fatal(err)
	}
	return sender, reader, q
}

// TestKeepLooksOncePerStride: as messages are kept for a client that
// only reads, its transport is looked at only once its history holds
// keepStride of texts, not at every run kept; and the look then trims
// it, so that the history stays within a stride and a run.
func TestKeepLooksOncePerStride(t *testing.T) {
	sender, reader, q := ackingPair(t, resumeOpts())
	run := make([][]byte, 16)
	for i := range run {
		run[i] = []byte(strings.Repeat("x", 64))
	}
	const runs, runText = 200, 16 * 64
	for i := range runs {
		if _, n, err := sender.SayAll(run, nil); err != nil || n != len(run) {
			t.Fatalf("run %d: relayed %d, %v", i, n, err)
		}
		reader.hmu.Lock()
		text := reader.hist.textBytes()
		reader.hmu.Unlock()
		if text > keepStride+runText {
			t.Fatalf("after run %d: %d bytes of texts kept, want at most a stride and a run (%d)", i, text, keepStride+runText)
		}
	}
	// The history holds a stride after keepStride/runText runs (16 here):
	// the next run looks, trims it to nothing and keeps itself, and so on.
	if want := (runs - 1) / (keepStride / runText); q.looks != want {
		t.Fatalf("%d looks over %d runs, want %d", q.looks, runs, want)
	}
}

// TestKeepLooksBeforeDroppingForRoom: a history about to drop its
// oldest for room before it holds a stride of texts (short messages
// against a small resume.buffer) first looks at what the client
// received, so that nothing its transport acknowledged is dropped and
// noted as lost to a resume.
func TestKeepLooksBeforeDroppingForRoom(t *testing.T) {
	opts := resumeOpts()
	opts.ResumeBuffer = 4 << 10 // three runs of 16 short messages, entries counted
	sender, reader, q := ackingPair(t, opts)
	run := make([][]byte, 16)
	for i := range run {
		run[i] = []byte("8 bytes.")
	}
	const runs = 100
	for i := range runs {
		if _, n, err := sender.SayAll(run, nil); err != nil || n != len(run) {
			t.Fatalf("run %d: relayed %d, %v", i, n, err)
		}
	}
	reader.hmu.Lock()
	lost, kept := reader.hist.lostSince(0), reader.hist.n
	reader.hmu.Unlock()
	if lost != 0 || kept > 3*len(run) {
		t.Fatalf("%d messages noted lost and %d kept, want none lost and at most three runs kept", lost, kept)
	}
	if q.looks == 0 || q.looks > runs/3 {
		t.Fatalf("%d looks over %d runs, want one each time the buffer filled", q.looks, runs)
	}
}
