package hub

import (
	"encoding/binary"
	"sync"
	"time"

	"duet/proto"
)

// What a session keeps for a resume.
//
// Every message delivered to a session that can be resumed gets the
// next number (Event.Seq, from 1) and a copy in the session's history:
// the sender, the text and when it was delivered. It is kept as an
// event, not as bytes of a protocol, so a session can be resumed over
// the other protocol. Messages delivered together (a run that SayAll
// relays) are kept as one run, a header and their texts side by side,
// so that keeping a message costs little more than copying its text.
// Runs are written into chunks that grow with the history, from 512
// bytes to 16 KiB, and go back to pools shared by all sessions, so a
// busy history allocates nothing in steady state, and one that empties
// is given back whole: a session that keeps nothing costs nothing for
// it but its place in the sweep's set, which it leaves at the next
// sweep.
//
// A history is trimmed from its oldest end, by:
//   - acknowledgement: a JSON client names the last message it received
//     (Session.Ack, and last in a resume);
//   - the transport's acknowledgement, for a session whose client does
//     not acknowledge messages itself (the line protocol's; a JSON
//     client's until it first does): what the client's TCP acknowledged
//     was received (TransportAcker), so a message is kept only until
//     then, and a session that loses nothing keeps a few KiB at most;
//   - age: a message delivered more than resume.window before the
//     session went away (or before now, while it is attached) was read
//     by then: a dead connection is noticed sooner than that, by the
//     keepalive and idle timeouts;
//   - room: past resume.buffer, while the session is attached, the
//     oldest are dropped, and the loss noted (lossRun), so a resume can
//     say how many it could not replay.
//
// While the session is away nothing is dropped for room: a message that
// does not fit is refused instead (peer_away_full), so what was queued
// while away is complete.

// entryCost is what a kept message counts against resume.buffer besides
// its text. A message takes its text and a length of one to three bytes
// in a chunk, and a share of its run's header; counting a fixed 64 keeps
// a flood of one-byte messages from costing many times the buffer, and
// the buffer's meaning from depending on how messages came in runs.
const entryCost = 64

// Chunks hold kept texts: classes of 512 bytes << class, up to 16 KiB; a
// longer text gets a chunk of its own size, which is not pooled.
const (
	minChunk     = 512
	chunkClasses = 6
)

// chunkPools share chunks among all histories, one pool per class.
var chunkPools [chunkClasses]sync.Pool

type chunk struct {
	buf   []byte // the runs written so far, each a header and its texts
	class int    // its pool in chunkPools; -1 for a chunk of its own size
}

// chunkClass returns the smallest class that holds n bytes, or -1.
func chunkClass(n int) int {
	for c := range chunkClasses {
		if n <= minChunk<<c {
			return c
		}
	}
	return -1
}

// getChunk returns an empty chunk of class, or of n bytes for class -1.
func getChunk(class, n int) *chunk {
	if class < 0 {
		return &chunk{buf: make([]byte, 0, n), class: -1}
	}
	if c, _ := chunkPools[class].Get().(*chunk); c != nil {
		return c
	}
	return &chunk{buf: make([]byte, 0, minChunk<<class), class: class}
}

func putChunk(c *chunk) {
	if c.class < 0 {
		return
	}
	c.buf = c.buf[:0]
	chunkPools[c.class].Put(c)
}

// A run of kept messages: consecutive numbers, from one sender,
// delivered at the same moment, all messages or one sealed frame. A run
// of messages relayed together (SayAll) is kept as one, so keeping a
// message costs its text's copy and not a record of its own.
//
// A run is written into its chunk as a header followed by its texts,
// each a uvarint length then the text; a chunk holds its runs one after
// the other, oldest first. The header is on the lines the texts' copy
// writes anyway: a record of runs elsewhere (a ring of them, as the
// history once had) is one more line for every run kept, and on a busy
// server, where a session's turn comes round after hundreds of others',
// that line has left the cache (BENCHMARKS.md, twentieth round).
//
// The header's fields, little-endian, at these offsets:
const (
	runSeq    = 0  // uint64: the first message's number
	runAt     = 8  // int64: when the run was delivered (Hub.clock)
	runN      = 16 // uint32: messages in it; its top bit (sealedBit) marks a sealed frame
	runSize   = 20 // uint32: the bytes after the header: the texts with their lengths
	runText   = 24 // uint32: the texts' bytes, lengths excluded
	runFrom   = 28 // uint32: the sender, an index in history.senders
	runHeader = 32
)

// sealedBit marks a run that holds a sealed frame (in its count): no run
// reaches 2^31 messages, and the flag then costs the header no room.
const sealedBit = 1 << 31

// header is a run's header, in its chunk.
type header [runHeader]byte

// run returns the header of the run at off in c.
func (c *chunk) run(off int) *header { return (*header)(c.buf[off : off+runHeader]) }

func (r *header) seq() uint64       { return binary.LittleEndian.Uint64(r[runSeq:]) }
func (r *header) at() time.Duration { return time.Duration(binary.LittleEndian.Uint64(r[runAt:])) }
func (r *header) n() uint32         { return binary.LittleEndian.Uint32(r[runN:]) }
func (r *header) size() int         { return int(binary.LittleEndian.Uint32(r[runSize:])) }
func (r *header) text() int         { return int(binary.LittleEndian.Uint32(r[runText:])) }
func (r *header) from() uint32      { return binary.LittleEndian.Uint32(r[runFrom:]) }
func (r *header) count() int        { return int(r.n() &^ sealedBit) }

// kind returns the event a run's messages are replayed as.
func (r *header) kind() proto.EventKind {
	if r.n()&sealedBit != 0 {
		return proto.EvSealed
	}
	return proto.EvMessage
}

// set writes every field of r.
func (r *header) set(seq uint64, at time.Duration, n uint32, size, text int, from uint32) {
	binary.LittleEndian.PutUint64(r[runSeq:], seq)
	binary.LittleEndian.PutUint64(r[runAt:], uint64(at))
	binary.LittleEndian.PutUint32(r[runN:], n)
	binary.LittleEndian.PutUint32(r[runSize:], uint32(size))
	binary.LittleEndian.PutUint32(r[runText:], uint32(text))
	binary.LittleEndian.PutUint32(r[runFrom:], from)
}

// add counts k more messages in r, of size bytes with their lengths and
// text without.
func (r *header) add(k, size, text int) {
	binary.LittleEndian.PutUint32(r[runN:], r.n()+uint32(k))
	binary.LittleEndian.PutUint32(r[runSize:], uint32(r.size()+size))
	binary.LittleEndian.PutUint32(r[runText:], uint32(r.text()+text))
}

// history is one session's kept messages, oldest first: runs in chunks,
// the oldest run at head in chunks[0].
type history struct {
	// cur is the newest chunk, the one written to (the last of chunks):
	// here, a keep finds it without a look at chunks.
	cur *chunk
	// newest is the newest run's offset in cur, or -1 when it is in an
	// older chunk (the next run then starts anew).
	newest int
	runs   int   // runs kept
	n      int   // messages kept
	cost   int64 // what they count against resume.buffer
	// lastSeq is the newest message's number, while one is kept.
	lastSeq uint64
	// oldestAt and newestAt are when the oldest and the newest run were
	// delivered, while there is one. trimAge, at every keep, reads the
	// first here rather than in the oldest run's chunk, a line of its
	// own for a busy server; a keep reads the second to learn whether
	// its run may continue the newest, which on a real clock it seldom
	// can (two deliveries in the same nanosecond), without a look at
	// the newest run.
	oldestAt time.Duration
	newestAt time.Duration
	// newestFrom is the newest run's sender, fromIndex its index in
	// senders: a run from the same sender, nearly every one, finds its
	// index here.
	newestFrom string
	fromIndex  uint32
	head       int // the oldest run's offset in chunks[0]
	chunks     []*chunk
	// senders are the names the runs' headers point to, which a
	// history's bytes cannot hold: nearly always the one partner. It
	// is emptied with the history, and compacted when it grows
	// (maxSenders).
	senders []string
	loss    []lossRun // messages dropped for room lately, oldest first
}

// maxSenders is how many senders a history names before it drops those
// no kept run is from: a session that changes partners often, and whose
// history never empties, names at most this many more than it keeps
// runs from.
const maxSenders = 16

// A lossRun counts messages dropped from a history for room that were
// delivered between minAt and maxAt, the last of them numbered last. A
// resume that cannot say what it received (the line protocol's) replays
// what was delivered in the moments before the drop; the runs tell it
// how many of those it cannot replay. Runs are at most a few seconds
// wide (replay_recent / maxLossRuns), and a run that straddles the
// start of that period counts whole: the count may be high by the
// messages of those few seconds, never low.
type lossRun struct {
	last         uint64
	count        int
	minAt, maxAt time.Duration
}

const maxLossRuns = 8

// historyPool recycles histories, chunk lists included, so a session
// whose history empties and fills again, as a JSON client's does with
// each acknowledgement, allocates nothing for it.
var historyPool = sync.Pool{New: func() any { return new(history) }}

// push keeps a copy of text as the newest message, numbered seq: a
// sealed frame's data when sealed is set. It joins the newest run when
// it continues it. It is appendRun for one text, written out: through
// appendRun, the message-by-message path (a full history, a session
// away) took 3 ns a message more (BenchmarkSayResumeRun, 24 against 27).
func (hs *history) push(seq uint64, at time.Duration, from string, sealed bool, text []byte) {
	c := hs.chunkFor(runHeader + binary.MaxVarintLen32 + len(text))
	hs.n++
	hs.cost += int64(len(text)) + entryCost
	if !sealed && hs.continues(seq, at, from) {
		start := len(c.buf)
		c.buf = binary.AppendUvarint(c.buf, uint64(len(text)))
		c.buf = append(c.buf, text...)
		c.run(hs.newest).add(1, len(c.buf)-start, len(text))
		hs.lastSeq = seq
		return
	}
	off := len(c.buf)
	c.buf = c.buf[:off+runHeader]
	c.buf = binary.AppendUvarint(c.buf, uint64(len(text)))
	c.buf = append(c.buf, text...)
	n := uint32(1)
	if sealed {
		n |= sealedBit
	}
	hs.started(c, off, seq, at, from, n, len(text))
}

// pushRun keeps copies of texts, messages numbered from seq delivered
// together from one sender, as push would one at a time, but with one
// look for a chunk and at the newest run for all the texts that fit in
// the chunk the first goes to: keeping a message then costs little
// more than copying its text.
func (hs *history) pushRun(seq uint64, at time.Duration, from string, texts [][]byte) {
	for len(texts) > 0 {
		c := hs.chunkFor(runHeader + binary.MaxVarintLen32 + len(texts[0]))
		room, k, used := cap(c.buf)-len(c.buf), 0, runHeader
		for k < len(texts) && used+binary.MaxVarintLen32+len(texts[k]) <= room {
			used += binary.MaxVarintLen32 + len(texts[k])
			k++
		}
		hs.appendRun(c, seq, at, from, texts[:k])
		seq += uint64(k)
		texts = texts[k:]
	}
}

// appendRun writes texts, which fit with a header, to c, the newest
// chunk, and keeps them as messages numbered from seq: in the newest
// run when they continue it.
func (hs *history) appendRun(c *chunk, seq uint64, at time.Duration, from string, texts [][]byte) {
	joins := hs.continues(seq, at, from)
	off := len(c.buf)
	if !joins {
		c.buf = c.buf[:off+runHeader]
	}
	start, size := len(c.buf), 0
	for _, text := range texts {
		c.buf = binary.AppendUvarint(c.buf, uint64(len(text)))
		c.buf = append(c.buf, text...)
		size += len(text)
	}
	k := len(texts)
	hs.n += k
	hs.cost += int64(size) + int64(k)*entryCost
	if joins {
		c.run(hs.newest).add(k, len(c.buf)-start, size)
		hs.lastSeq = seq + uint64(k) - 1
		return
	}
	hs.started(c, off, seq, at, from, uint32(k), size)
}

// continues reports whether messages numbered from seq, from `from`,
// delivered at, join the newest run.
func (hs *history) continues(seq uint64, at time.Duration, from string) bool {
	if hs.runs == 0 || hs.newestAt != at || hs.newest < 0 || hs.newestFrom != from {
		return false
	}
	r := hs.cur.run(hs.newest)
	n := r.n()
	return n&sealedBit == 0 && r.seq()+uint64(n) == seq
}

// started writes the header of the run just written at off in c, the
// newest chunk, and counts it: n messages (and sealedBit), text bytes
// of texts.
func (hs *history) started(c *chunk, off int, seq uint64, at time.Duration, from string, n uint32, text int) {
	if from != hs.newestFrom || hs.fromIndex >= uint32(len(hs.senders)) {
		hs.fromIndex = hs.senderIndex(from)
		hs.newestFrom = from
	}
	c.run(off).set(seq, at, n, len(c.buf)-off-runHeader, text, hs.fromIndex)
	if hs.runs == 0 {
		hs.oldestAt, hs.head = at, off
	}
	hs.newestAt, hs.newest = at, off
	hs.lastSeq = seq + uint64(n&^sealedBit) - 1
	hs.runs++
}

// senderIndex returns from's index in senders, naming it there if it
// is not yet.
func (hs *history) senderIndex(from string) uint32 {
	for i, s := range hs.senders {
		if s == from {
			return uint32(i)
		}
	}
	if len(hs.senders) >= maxSenders {
		hs.compactSenders()
	}
	hs.senders = append(hs.senders, from)
	return uint32(len(hs.senders) - 1)
}

// compactSenders drops the senders no kept run is from, and renumbers
// the runs' senders.
func (hs *history) compactSenders() {
	index := make([]int, len(hs.senders))
	for i := range index {
		index[i] = -1
	}
	var kept []string
	hs.eachRun(func(c *chunk, off int) bool {
		r := c.run(off)
		from := r.from()
		if index[from] < 0 {
			index[from] = len(kept)
			kept = append(kept, hs.senders[from])
		}
		binary.LittleEndian.PutUint32(r[runFrom:], uint32(index[from]))
		return true
	})
	clear(hs.senders)
	// fromIndex is stale now; senderIndex's caller sets it afresh.
	hs.senders = append(hs.senders[:0], kept...)
}

// eachRun calls f with the chunk and offset of every run, oldest
// first, until f returns false.
func (hs *history) eachRun(f func(c *chunk, off int) bool) {
	ci, off := 0, hs.head
	for range hs.runs {
		c := hs.chunks[ci]
		if !f(c, off) {
			return
		}
		if off += runHeader + c.run(off).size(); off == len(c.buf) {
			ci, off = ci+1, 0
		}
	}
}

// chunkFor returns the chunk to write n more bytes to: the newest, if it
// has room, else a new one, twice the size of the one before, so that a
// history that grows takes few chunks and one that stays small takes a
// small one.
func (hs *history) chunkFor(n int) *chunk {
	if c := hs.cur; c != nil && cap(c.buf)-len(c.buf) >= n {
		return c
	}
	class := chunkClass(n)
	if class >= 0 && hs.cur != nil {
		if last := hs.cur.class; last >= 0 {
			class = max(class, min(last+1, chunkClasses-1))
		}
	}
	if hs.runs == 0 {
		// The oldest run is always in the first chunk.
		hs.freeChunks()
	}
	c := getChunk(class, n)
	hs.chunks = append(hs.chunks, c)
	hs.cur, hs.newest = c, -1
	return c
}

// freeChunks gives back every chunk, once no run is kept.
func (hs *history) freeChunks() {
	for _, c := range hs.chunks {
		putChunk(c)
	}
	clear(hs.chunks)
	hs.chunks, hs.cur, hs.head, hs.newest = hs.chunks[:0], nil, 0, -1
}

// dropRun drops the oldest run whole.
func (hs *history) dropRun() {
	c := hs.chunks[0]
	r := c.run(hs.head)
	k := r.count()
	hs.n -= k
	hs.cost -= int64(r.text()) + int64(k)*entryCost
	hs.head += runHeader + r.size()
	hs.runs--
	if hs.runs == 0 {
		hs.emptied()
		return
	}
	if hs.head == len(c.buf) {
		// The next run starts the next chunk: the first holds no more.
		putChunk(c)
		k := copy(hs.chunks, hs.chunks[1:])
		hs.chunks[k] = nil
		hs.chunks = hs.chunks[:k]
		hs.head = 0
	}
	hs.oldestAt = hs.chunks[0].run(hs.head).at()
}

// dropAll drops every message kept, without a look at their runs.
func (hs *history) dropAll() {
	if hs.runs == 0 {
		return
	}
	hs.runs, hs.n, hs.cost = 0, 0, 0
	hs.emptied()
}

// keepNewest drops every run but the newest, r, without a look at
// them.
func (hs *history) keepNewest(r *header) {
	hs.freeOlderChunks()
	k := r.count()
	hs.head, hs.runs, hs.n = hs.newest, 1, k
	hs.cost = int64(r.text()) + int64(k)*entryCost
	hs.oldestAt = r.at()
}

// emptied starts the history afresh once it keeps no run: the newest
// chunk is written again from its start, and the others go back.
func (hs *history) emptied() {
	hs.freeOlderChunks()
	hs.cur.buf = hs.cur.buf[:0]
	hs.head, hs.newest = 0, -1
	hs.forgetSenders()
}

// forgetSenders empties senders, once no run names one.
func (hs *history) forgetSenders() {
	clear(hs.senders)
	hs.senders, hs.newestFrom, hs.fromIndex = hs.senders[:0], "", 0
}

// freeOlderChunks gives back every chunk but the newest, once the runs
// they held are dropped.
func (hs *history) freeOlderChunks() {
	older := hs.chunks[:len(hs.chunks)-1]
	for _, c := range older {
		putChunk(c)
	}
	clear(older)
	hs.chunks[0] = hs.cur
	hs.chunks = hs.chunks[:1]
}

// dropFront drops the oldest message and returns its number and when it
// was delivered.
func (hs *history) dropFront() (seq uint64, at time.Duration) {
	c := hs.chunks[0]
	r := c.run(hs.head)
	seq, at = r.seq(), r.at()
	if r.count() == 1 {
		hs.dropRun()
		return seq, at
	}
	size, w := binary.Uvarint(c.buf[hs.head+runHeader:])
	took := w + int(size)
	// The header moves up over the first text, which the run no longer
	// holds: through a copy of its own, as the two may overlap.
	moved := *r
	binary.LittleEndian.PutUint64(moved[runSeq:], seq+1)
	moved.add(-1, -took, -int(size))
	old := hs.head
	hs.head += took
	*c.run(hs.head) = moved
	if c == hs.cur && hs.newest == old {
		hs.newest = hs.head
	}
	hs.n--
	hs.cost -= int64(size) + entryCost
	return seq, at
}

// dropThrough drops the messages numbered up to last.
func (hs *history) dropThrough(last uint64) {
	if last >= hs.lastSeq {
		// All of them, nearly always: what TCP acknowledged after the
		// client's read is all that was written but the newest, if
		// that. No run need be read, which for a look that frees dozens
		// of one-message runs is dozens of lines.
		hs.dropAll()
		return
	}
	if hs.runs > 1 && hs.newest >= 0 {
		// All but the newest run, as often: what was written last is
		// on its way still. The newest run's header says what is left.
		if r := hs.cur.run(hs.newest); last+1 >= r.seq() {
			hs.keepNewest(r)
		}
	}
	for hs.runs > 0 {
		r := hs.chunks[0].run(hs.head)
		switch seq := r.seq(); {
		case seq > last:
			return
		case seq+uint64(r.count())-1 <= last:
			hs.dropRun()
		default:
			hs.dropFront()
		}
	}
}

// trimAge drops the messages delivered before the time before.
func (hs *history) trimAge(before time.Duration) {
	for hs.runs > 0 && hs.oldestAt < before {
		hs.dropRun()
	}
}

// since returns the index, among the messages kept, of the first one
// delivered at or after t.
func (hs *history) since(t time.Duration) int {
	i := 0
	hs.eachRun(func(c *chunk, off int) bool {
		r := c.run(off)
		if r.at() >= t {
			return false
		}
		i += r.count()
		return true
	})
	return i
}

// seqIndex returns the index, among the messages kept, of the first one
// numbered seq or more.
func (hs *history) seqIndex(seq uint64) int {
	i := 0
	hs.eachRun(func(c *chunk, off int) bool {
		r := c.run(off)
		if end := r.seq() + uint64(r.count()); seq < end {
			if seq > r.seq() {
				i += int(seq - r.seq())
			}
			return false
		}
		i += r.count()
		return true
	})
	return i
}

// each calls f for every message kept from index from on, oldest first,
// with its text, valid only during the call.
func (hs *history) each(from int, f func(seq uint64, at time.Duration, sender string, kind proto.EventKind, text []byte)) {
	i := 0
	hs.eachRun(func(c *chunk, off int) bool {
		r := c.run(off)
		k := r.count()
		if i+k <= from {
			i += k
			return true
		}
		seq, at, sender, kind := r.seq(), r.at(), hs.senders[r.from()], r.kind()
		b := c.buf[off+runHeader : off+runHeader+r.size()]
		for j := range k {
			size, w := binary.Uvarint(b)
			text := b[w : w+int(size)]
			b = b[w+int(size):]
			if i >= from {
				f(seq+uint64(j), at, sender, kind, text)
			}
			i++
		}
		return true
	})
}

// unreceivedAfterAck bounds n, a count of the newest messages up to seq
// that s's connection did not deliver, to those after the last its
// client acknowledged (acked): a connection's queue learns what was
// received from its TCP only, now and then, and counts from there, so
// it may count messages a JSON client acknowledged since, which are
// neither kept nor lost. s.hmu is held.
func (s *Session) unreceivedAfterAck(n int, seq uint64) int {
	return min(n, int(seq-min(s.acked, seq)))
}

// unsentKept looks at the newest unsent messages up to seq, those a
// session's connection never wrote before it went (away.unsent): it
// returns the index, among the messages kept, of the first of them kept,
// and how many of them are not kept. Those are missing for good: a
// resume counts them as missed (replayLocked), and the sender is told
// of them as the session goes away (DetachFrom). A nil history keeps
// none.
func (hs *history) unsentKept(seq uint64, unsent int) (first, lost int) {
	if hs == nil {
		return 0, unsent
	}
	first = hs.seqIndex(seq - min(uint64(unsent), seq) + 1)
	return first, unsent - (hs.seqIndex(seq+1) - first)
}

// noteLoss records that message seq, delivered at, was dropped for room
// now. Runs that ended more than recent ago are forgotten: no resume can
// ask about them any more.
func (hs *history) noteLoss(seq uint64, at, now, recent time.Duration) {
	if at < now-recent {
		return
	}
	if k := len(hs.loss); k > 0 {
		if r := &hs.loss[k-1]; r.last+1 == seq && at-r.minAt < recent/maxLossRuns {
			r.last, r.count, r.maxAt = seq, r.count+1, at
			return
		}
	}
	// Runs are forgotten only as new ones come: lostSince does not count
	// them, and only the number of runs needs a bound.
	hs.trimLoss(now - recent)
	if len(hs.loss) == maxLossRuns {
		// Merge the two oldest: the count stays exact, the times blur.
		hs.loss[1].count += hs.loss[0].count
		hs.loss[1].minAt = hs.loss[0].minAt
		k := copy(hs.loss, hs.loss[1:])
		hs.loss = hs.loss[:k]
	}
	hs.loss = append(hs.loss, lossRun{last: seq, count: 1, minAt: at, maxAt: at})
}

// trimLoss forgets the runs that ended before the time before.
func (hs *history) trimLoss(before time.Duration) {
	i := 0
	for i < len(hs.loss) && hs.loss[i].maxAt < before {
		i++
	}
	if i > 0 {
		k := copy(hs.loss, hs.loss[i:])
		hs.loss = hs.loss[:k]
	}
}

// lostSince counts the messages dropped for room that were delivered at
// or after t (see lossRun on the runs that straddle t).
func (hs *history) lostSince(t time.Duration) int {
	n := 0
	for _, r := range hs.loss {
		if r.maxAt >= t {
			n += r.count
		}
	}
	return n
}

func (hs *history) empty() bool { return hs.n == 0 && len(hs.loss) == 0 }

// textBytes is the bytes of the texts kept, their lengths excluded.
func (hs *history) textBytes() int64 { return hs.cost - int64(hs.n)*entryCost }

// release gives the history and its chunks back to their pools.
func (hs *history) release() {
	hs.freeChunks()
	hs.forgetSenders()
	hs.runs, hs.n, hs.cost, hs.loss, hs.oldestAt, hs.newestAt, hs.lastSeq = 0, 0, 0, hs.loss[:0], 0, 0, 0
	historyPool.Put(hs)
}

// keepLocked keeps copies of texts from `from` (sealed frames' data
// when sealed is set), delivered now and numbered from first, and
// returns how many of them s may be handed:
// while it is attached, all, the oldest kept ones dropped to make room;
// while it is away, as many as fit in resume.buffer, with the error that
// refuses the next (peer_away_full), which says how much is waiting.
// s.hmu is held, and the lock of the room the texts come through; h is
// s's hub (see deliverMessages).
func (s *Session) keepLocked(h *Hub, from string, sealed bool, texts [][]byte, first uint64, now time.Duration) (int, *proto.Error) {
	buffer := h.resumeBuffer.Load()
	if hs := s.hist; hs != nil {
		hs.trimAge(s.ageLimitLocked(h, now))
	}
	if a := s.away; a != nil {
		var cost int64
		if s.hist != nil {
			cost = s.hist.cost
		}
		n, size := 0, int64(0)
		for _, text := range texts {
			c := int64(len(text)) + entryCost
			if cost+c > buffer {
				break
			}
			cost += c
			size += int64(len(text))
			n++
		}
		for i, text := range texts[:n] {
			s.historyLocked().push(first+uint64(i), now, from, sealed, text)
		}
		if n > 0 {
			a.keep(from, n, size)
		}
		if n < len(texts) {
			h.awayRefused.Add(1)
			s.settleLocked()
			return n, a.refusal(s.name, from)
		}
		return n, nil
	}
	var cost int64
	for _, text := range texts {
		cost += int64(len(text)) + entryCost
	}
	if hs := s.hist; hs != nil && !s.clientAcks {
		switch {
		case hs.cost+cost > buffer:
			// Room would be made by dropping the oldest, and a resume
			// told they were lost: first drop what the client is known
			// to have received, asking its socket as often as after
			// the client's reads.
			s.trimReceivedLocked(ReadStride)
		case hs.textBytes() >= keepStride && !s.answerUnread:
			// Otherwise only a history that holds a stride's worth is
			// looked at: a look finds something new only once a stride
			// more was written since the last, and a client that sends
			// is looked at after its reads, which keeps its history
			// below that. So only a client that only reads is looked at
			// here, and no keep takes the outbox's lock, last held by
			// the reader's loop, to learn nothing.
			s.trimReceivedLocked(keepStride)
		}
	}
	if !sealed {
		// Nearly always the whole run fits, and is kept in one go.
		if hs := s.historyLocked(); hs.cost+cost <= buffer {
			hs.pushRun(first, now, from, texts)
			return len(texts), nil
		}
	}
	recent := h.recent()
	for i, text := range texts {
		seq := first + uint64(i)
		hs := s.historyLocked()
		c := int64(len(text)) + entryCost
		if c > buffer {
			// It could not be kept even alone.
			hs.noteLoss(seq, now, now, recent)
			continue
		}
		for hs.n > 0 && hs.cost+c > buffer {
			seq, at := hs.dropFront()
			hs.noteLoss(seq, at, now, recent)
		}
		hs.push(seq, now, from, sealed, text)
	}
	return len(texts), nil
}

// ageLimitLocked is when a kept message must have been delivered, at
// the latest, to be kept still (see trimAge): resume.window before the
// session went away, or before now while it is attached. h is s's hub.
//
// A session away counts the window it was given as it went, not
// resume.window now: a reload that shortens the window or turns resume
// off leaves it that window, and its resume what was kept for it.
func (s *Session) ageLimitLocked(h *Hub, now time.Duration) time.Duration {
	if a := s.away; a != nil {
		return a.since - (a.deadline - a.since)
	}
	return now - h.window()
}

// historyLocked returns s's history, taking one from the pool if it has
// none; the hub's sweep then looks after it.
func (s *Session) historyLocked() *history {
	if s.hist != nil {
		return s.hist
	}
	s.hist = historyPool.Get().(*history)
	if !s.swept {
		h := s.hub
		h.histMu.Lock()
		h.histories[s] = struct{}{}
		s.swept = true
		if !h.sweeping {
			h.sweeping = true
			h.clock.afterFunc(h.sweepPeriod(), h.sweep)
		}
		h.histMu.Unlock()
	}
	return s.hist
}

// loseAway numbers n messages delivered to s, away, that could not be
// kept and whose sender cannot be told (see TellLeft), and notes them
// lost, as messages dropped for room are: its resume counts them as
// missed, whether it says what it received (they are numbered) or not
// (a loss run recalls them).
func (s *Session) loseAway(h *Hub, n int) {
	now, recent := h.clock.now(), h.recent()
	s.hmu.Lock()
	defer s.hmu.Unlock()
	hs := s.historyLocked()
	for range n {
		s.seq++
		hs.noteLoss(s.seq, now, now, recent)
	}
}

// settleLocked gives s's history back if it holds nothing.
func (s *Session) settleLocked() {
	if hs := s.hist; hs != nil && hs.empty() {
		s.releaseHistoryLocked()
	}
}

// releaseHistoryLocked gives s's history back to the pool. s stays in
// the sweep's set until the sweep finds it without one (or it closes):
// a conversation's history empties at nearly every acknowledgement and
// fills again at the next message, and taking s out of the hub's set
// and putting it back each time would take the hub-wide histMu twice a
// round trip, from every loop.
func (s *Session) releaseHistoryLocked() {
	s.hist.release()
	s.hist = nil
}

// unsweepLocked takes s out of the sweep's set. s.hmu is held.
func (s *Session) unsweepLocked() {
	if !s.swept {
		return
	}
	h := s.hub
	h.histMu.Lock()
	delete(h.histories, s)
	h.histMu.Unlock()
	s.swept = false
}

// dropHistory gives back all s keeps, once nothing can be delivered to
// it any more (its logout).
func (s *Session) dropHistory() {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	if s.hist != nil {
		s.releaseHistoryLocked()
	}
	s.unsweepLocked()
}

// Ack records that s's connection received every message numbered up to
// last (a JSON client's acknowledgement): those need no replay, and are
// no longer kept. A number s was not given yet acknowledges what it was.
func (s *Session) Ack(last uint64) {
	if !s.resumable {
		return
	}
	s.hmu.Lock()
	defer s.hmu.Unlock()
	s.clientAcks = true
	if a := s.away; a != nil {
		// Late, from the connection that carried s: what was kept
		// since s went was handed to no connection, and stays for its
		// resume (and in what a refusal says is waiting, away.kept).
		last = min(last, a.seq)
	}
	s.acked = max(s.acked, min(last, s.seq))
	s.dropThroughLocked(last)
	s.settleLocked()
}

// Received records that s's client's transport acknowledged every
// message numbered up to last (the engine asks, TransportAcker, right
// after reading from the client): unless the client acknowledges
// messages itself, those are no longer kept.
func (s *Session) Received(last uint64) {
	if last == 0 || !s.resumable {
		return
	}
	s.hmu.Lock()
	if !s.clientAcks && s.away == nil && !s.answerUnread {
		s.dropThroughLocked(last)
		s.settleLocked()
	}
	s.hmu.Unlock()
}

// trimReceivedLocked drops the kept messages s's client is known to have
// received, by its transport's acknowledgement (TransportAcker), which
// asks the socket once after bytes were written since it last did. s.hmu
// is held, and the lock of s's room or Hub.mu, which guard s.q; the
// caller has seen that the client does not acknowledge messages itself.
func (s *Session) trimReceivedLocked(after int) {
	hs := s.hist
	if hs == nil || hs.n == 0 {
		return
	}
	ta, ok := s.q.(TransportAcker)
	if !ok {
		return
	}
	s.dropThroughLocked(ta.TransportAcked(after))
}

// dropThroughLocked drops the kept messages numbered up to last. s.hmu
// is held.
func (s *Session) dropThroughLocked(last uint64) {
	if s.hist != nil {
		s.hist.dropThrough(last)
	}
}

// sweepPeriod is how often the hub looks for kept messages that aged
// out: a quarter of resume.window, from 1 s to 30 s. A message is kept
// at most that much longer than its age limit.
func (h *Hub) sweepPeriod() time.Duration {
	return min(max(h.window()/4, time.Second), 30*time.Second)
}

// recent is resume.replay_recent now.
func (h *Hub) recent() time.Duration { return time.Duration(h.replayRecent.Load()) }

// sweep trims every history by age, gives back those that empty, and
// comes back while any is left.
func (h *Hub) sweep() {
	now := h.clock.now()
	recent := h.recent()
	for _, s := range h.historySessions() {
		r := s.lockQueue()
		s.hmu.Lock()
		if hs := s.hist; hs != nil {
			hs.trimAge(s.ageLimitLocked(h, now))
			hs.trimLoss(now - recent)
			if s.away == nil && !s.clientAcks && !s.answerUnread {
				// A conversation that went quiet: what was written last is
				// looked at now rather than at the next message.
				s.trimReceivedLocked(0)
			}
			s.settleLocked()
		}
		if s.hist == nil {
			s.unsweepLocked()
		}
		s.hmu.Unlock()
		if r != nil {
			r.mu.Unlock()
		} else {
			h.mu.Unlock()
		}
	}
	h.histMu.Lock()
	defer h.histMu.Unlock()
	if len(h.histories) == 0 {
		h.sweeping = false
		return
	}
	h.clock.afterFunc(h.sweepPeriod(), h.sweep)
}

// lockQueue takes a lock that guards s.q: the lock of s's room, which it
// returns, or Hub.mu when s is not paired (it returns nil).
func (s *Session) lockQueue() *room {
	h := s.hub
	for {
		if r := s.room.Load(); r != nil {
			r.mu.Lock()
			if s.room.Load() == r {
				return r
			}
			r.mu.Unlock()
			continue
		}
		h.mu.Lock()
		if s.room.Load() == nil {
			return nil
		}
		h.mu.Unlock()
	}
}

// historySessions lists the sessions that hold a history now.
func (h *Hub) historySessions() []*Session {
	h.histMu.Lock()
	defer h.histMu.Unlock()
	list := make([]*Session, 0, len(h.histories))
	for s := range h.histories {
		list = append(list, s)
	}
	return list
}

// historyBytes sums what every history counts against resume.buffer.
func (h *Hub) historyBytes() int64 {
	var n int64
	for _, s := range h.historySessions() {
		s.hmu.Lock()
		if s.hist != nil {
			n += s.hist.cost
		}
		s.hmu.Unlock()
	}
	return n
}
