package engine

import (
	"strconv"
	"time"

	"duet/proto"
)

// What telnet throws away at a Ctrl-C, and the notice that says so.
//
// At a Ctrl-C (and Ctrl-\, Ctrl-Z, and the letters it turns into
// commands before BINARY), telnet sends IAC IP and IAC DO TIMING-MARK,
// and throws away everything it reads from the server until the answer,
// WILL TIMING-MARK: what the server writes in that round trip, and what
// telnet had read, or its socket held, and not shown yet (the kernel
// throws away what the terminal had not passed on, too). The server
// cannot know which messages those were: the client's TCP acknowledged
// them, and the connection stays up, so no resume brings them back. What
// it can know is how many it wrote lately. So the messages written to a
// telnet client are noted as they leave (markWatch), and when a timing
// mark is read, a notice after its answer, which telnet shows, counts
// those written shortly before, and those its TCP had not acknowledged
// yet, which telnet had not even read: "* telnet may not have shown the
// last 3 messages from bob, which arrived as you pressed Ctrl-C". None
// is sent when there were none, as at a Ctrl-C in a quiet conversation.
//
// The messages are not sent again: the keep holds a line client's only
// until its TCP is seen to acknowledge them, which it did for most of
// these, and those telnet did show would be shown twice.
//
// The watch begins with the client's first timing mark, a telnet command
// no other client sends: a client that only ends its lines in CR LF, as
// telnet does but so do nc -C and many programs, costs what any line
// client does. From then on every byte for the client leaves through its
// loop's flush, where it is noted: direct writes (owner.go) are turned
// off for it, which costs a loop wake-up a delivery for a human typing,
// and its framer stays with it, as a telnet client's does anyway once it
// has sent a command.
//
// So the first timing mark finds no log of what was written before it:
// it counts only what was queued behind its answer. If the client's TCP
// had not acknowledged all that was written before then (SIOCOUTQ), which
// telnet threw away too, the notice says so without a count: "* telnet
// may not have shown messages from bob that arrived as you pressed
// Ctrl-C". Messages it had read and not shown are not told of: the first
// Ctrl-C is best pressed right after connecting, before pairing.

const (
	// markWindow is how long before a timing mark is read the messages
	// written may have been thrown away. It covers the round trip the
	// timing mark took, which is all telnet loses of what it reads as
	// fast as it comes, with room for a slow network (a second of
	// mobile latency) and a terminal a little behind. Messages written
	// earlier that the client's TCP had not acknowledged are counted
	// however old. Longer, and a Ctrl-C seconds after a message would
	// be told of it, which telnet has shown.
	markWindow = 2 * time.Second
	// markSlot is how long one entry of the watch gathers writes: a
	// count may take in this much more than markWindow.
	markSlot = 250 * time.Millisecond
	// markEntries entries of markSlot cover twice markWindow; a timing
	// mark ends an entry early, so a flood of them with messages between
	// forgets older messages sooner, and counts fewer of them.
	markEntries = 16
	// markEvery bounds the notices to one a second: what a flood of
	// Ctrl-Cs hides meanwhile is counted in the next, which the tick
	// sends (tellMarks).
	markEvery = time.Second
	// markAnswers is how many of the server's latest answers to the
	// client's lines the watch keeps to tell again.
	markAnswers = 4
)

// markAnswer is an answer to one of the client's lines (an error, or the
// notice counting lines not sent), kept to be told again.
type markAnswer struct {
	// kind, err and text are what the line encoder writes of the
	// event (a whole proto.Event would make the watch 1 KiB larger).
	kind proto.EventKind
	err  *proto.Error
	text []byte
	end  int64 // markWatch.written just after it; 0 while queued
	owed bool  // a timing mark may have thrown it away: to tell again
}

// markEntry is messages written to the client within markSlot.
type markEntry struct {
	first   stamp // when the first of them was written
	end     int64 // markWatch.written just after the last of them
	msgs    int32
	answers int32 // the server's answers to the client's lines among them
}

// markWatch notes what was written to a telnet client lately, and counts
// for a notice what a timing mark may have thrown away. It lives with
// the connection's framer, on its loop.
type markWatch struct {
	// written counts the bytes handed to the socket since the watch
	// began: positions in the client's stream.
	written int64
	log     [markEntries]markEntry // newest at head; n in use
	head, n int
	// split: the next write begins an entry of its own, so that an
	// entry lies wholly before or after a timing mark's answer.
	split bool

	// due: a timing mark was read at dueAt, when everything up to
	// dueAcked had been acknowledged by the client's TCP, and its answer
	// is still queued. It is counted once the answer leaves (wrote).
	// dueAcked < 0: bytes written before the watch began were not
	// acknowledged, and how many messages they held is not known.
	due      bool
	dueAt    stamp
	dueAcked int64
	// counted: the entries that end up to here are counted already, in
	// owed or in a notice.
	counted int64
	// owed is the messages counted for a notice not sent yet; vague
	// says it holds some not counted, written before the watch began,
	// and the notice gives no count.
	owed  int
	vague bool
	// told is the count of the last notice, sent at toldAt, and
	// toldVague whether it gave none; both are cleared when that notice
	// may itself have been thrown away since, and are in owed again.
	told      int
	toldVague bool
	toldAt    stamp
	spoke     bool // a notice was sent

	// answers are the latest of the server's answers to the client's
	// lines, oldest first from ahead (a ring), for their texts; the log
	// counts them all, as it does messages: owedAnswers counts those
	// owed, even the ones the ring has let go, and queued those noted
	// since the last write.
	answers     [markAnswers]markAnswer
	ahead, an   int
	owedAnswers int
	queued      int32

	// byKey: a timing mark since the last notice came at a key press;
	// else all came in letters telnet changed, and its user pressed no
	// key (the notice says so).
	byKey bool
}

// answered notes an answer to one of the client's lines, just queued.
func (w *markWatch) answered(ev *proto.Event) {
	a := &w.answers[(w.ahead+w.an)%markAnswers]
	if w.an == markAnswers {
		w.ahead = (w.ahead + 1) % markAnswers
	} else {
		w.an++
	}
	*a = markAnswer{kind: ev.Kind, err: ev.Err, text: ev.Text}
	w.queued++
}

// wrote notes size bytes handed to the socket at now, msgs relayed
// messages among them, and counts for a timing mark whose answer was
// among them.
func (w *markWatch) wrote(now stamp, msgs, size int) {
	w.written += int64(size)
	for i := w.an - 1; i >= 0; i-- {
		// Queued answers left in this write.
		a := &w.answers[(w.ahead+i)%markAnswers]
		if a.end != 0 {
			break
		}
		a.end = w.written
	}
	if msgs > 0 || w.queued > 0 {
		e := &w.log[w.head]
		if w.n == 0 || w.split || now-e.first >= stamp(markSlot) {
			w.head = (w.head + 1) % markEntries
			w.n = min(w.n+1, markEntries)
			e = &w.log[w.head]
			*e = markEntry{first: now}
			w.split = false
		}
		e.msgs += int32(msgs)
		e.answers += w.queued
		w.queued = 0
		e.end = w.written
	}
	if w.due {
		w.count()
	}
}

// marked notes a timing mark read at now, when the client's TCP had
// acknowledged everything written up to acked; byKey says it came at a
// key press, not in a letter telnet changed (Framer.TimingMarkByKey).
// Its answer is queued already; what was written or queued before it is
// counted as it leaves (wrote). A second one before that widens the
// count.
func (w *markWatch) marked(now stamp, acked int64, byKey bool) {
	w.byKey = w.byKey || byKey
	if !w.due {
		w.due, w.dueAt, w.dueAcked = true, now, acked
	} else {
		w.dueAcked = min(w.dueAcked, acked)
	}
	w.split = true
}

// count adds to owed the messages the timing mark due may have thrown
// away: those written from markWindow before it was read, and before
// that, those the client's TCP had not acknowledged, up to the answer,
// which has just left. Entries newest first: once one is neither recent
// nor unacknowledged, no older one is.
func (w *markWatch) count() {
	from := w.dueAt - stamp(markWindow) - stamp(markSlot)
	if w.spoke && (w.told > 0 || w.toldVague) && w.dueAt-w.toldAt < stamp(markWindow) {
		// The last notice came shortly before this timing mark, which
		// may have thrown it away too: its count is owed again.
		w.owed += w.told
		w.vague = w.vague || w.toldVague
		w.told, w.toldVague = 0, false
	}
	if w.dueAcked < 0 {
		w.vague = true
	}
	// What lies after the entries counted is counted: a kept answer
	// among it is told again.
	counted := w.counted
	for i, k := 0, w.head; i < w.n; i, k = i+1, (k+markEntries-1)%markEntries {
		e := &w.log[k]
		if e.end <= w.counted || e.first <= from && e.end <= w.dueAcked {
			counted = max(counted, e.end)
			break
		}
		w.owed += int(e.msgs)
		w.owedAnswers += int(e.answers)
	}
	for i := w.an - 1; i >= 0; i-- {
		a := &w.answers[(w.ahead+i)%markAnswers]
		if a.end <= counted {
			break
		}
		a.owed = true
	}
	w.counted = w.written
	w.due = false
	w.split = true
}

// take returns the count for a notice to send at now, and whether it is
// vague (a lower bound, which the notice does not give), if one is owed
// and the last was at least markEvery ago, and notes it sent. Answers
// owed are told by retell, at the same time: ok is true for those alone
// too.
func (w *markWatch) take(now stamp) (n int, vague, ok bool) {
	if w.owed == 0 && !w.vague && w.owedAnswers == 0 || w.due || w.spoke && now-w.toldAt < stamp(markEvery) {
		return 0, false, false
	}
	n, vague = w.owed, w.vague
	w.owed, w.vague = 0, false
	w.told, w.toldVague, w.toldAt, w.spoke = n, vague, now, true
	w.byKey = false
	return n, vague, true
}

// retell takes the answers owed: how many, and those the watch still
// holds, oldest first, with the owed mark cleared. Each one told again
// is noted again (answered), so that a timing mark soon after it counts
// it as it would the first time.
func (w *markWatch) retell() (n int, kept []proto.Event) {
	n, w.owedAnswers = w.owedAnswers, 0
	for i := range w.an {
		if a := &w.answers[(w.ahead+i)%markAnswers]; a.owed {
			a.owed = false
			kept = append(kept, proto.Event{Kind: a.kind, Err: a.err, Text: a.text})
		}
	}
	// An answer whose entry the log let go (a flood of timing marks
	// between them) was not counted, but is told.
	return max(n, len(kept)), kept
}

// watchMarks begins the connection's markWatch at its first timing mark.
// Every write to it passes its loop's flush from now on.
func (cn *conn) watchMarks() {
	if cn.line.marks != nil {
		return
	}
	cn.line.marks = new(markWatch)
	cn.out.SetDirect(false)
}

// timingMark acts on a timing mark the client sent, whose answer has
// just been queued: what was written before it is counted, and the
// notice, if any, queued behind the answer.
func (cn *conn) timingMark(byKey bool) {
	if cn.flow.draining || cn.closing != endNone {
		// Closed, or ending: nothing is told any more, and the
		// goodbye is the last line written.
		return
	}
	cn.watchMarks()
	w := cn.line.marks
	held := cn.c.OutboundBuffered()
	acked := w.written - int64(held)
	if n, ok := unacked(cn.c.Fd()); ok {
		acked -= int64(n)
	}
	if acked < 0 && (cn.sess == nil || cn.sess.Peer() == "") {
		// What was written before the watch began and not acknowledged
		// holds no partner's message: unpaired, the server writes only
		// its own lines.
		acked = 0
	}
	w.marked(cn.loop.stamp(), acked, byKey)
	// The answer, and what was queued before it, leave now, unless the
	// socket is full, and then as it drains: the flush that hands them
	// to the socket counts them and queues the notice.
	cn.flush()
}

// tellMarks sends the notice of what a timing mark may have thrown
// away, if one is owed and not too soon after the last. It runs after
// each flush that wrote (the one with a timing mark's answer counts
// what it cost), and each tick for what waited.
func (cn *conn) tellMarks() {
	if cn.closing != endNone || cn.flow.draining {
		return // the goodbye is the last line written
	}
	w := cn.line.marks
	byKey := w.byKey
	n, vague, ok := w.take(cn.loop.stamp())
	if !ok {
		return
	}
	if n > 0 || vague {
		peer := ""
		if cn.sess != nil {
			peer = cn.sess.Peer()
		}
		cn.out.Deliver(&proto.Event{Kind: proto.EvNotice, Text: markNotice(n, vague, peer, byKey)})
	}
	if w.owedAnswers == 0 {
		return
	}
	owed, kept := w.retell()
	cn.out.Deliver(&proto.Event{Kind: proto.EvNotice, Text: answersNotice(owed, len(kept), byKey)})
	for i := range kept {
		cn.answerLine(&kept[i])
	}
}

// answerLine sends an answer to the client's lines: an error, or the
// notice counting lines not sent. A telnet client's is noted, to be
// told again if a timing mark may have thrown it away.
func (cn *conn) answerLine(ev *proto.Event) {
	if cn.line != nil && cn.line.marks != nil {
		cn.line.marks.answered(ev)
	}
	cn.out.Deliver(ev)
}

// answersNotice is the text that comes before the server's answers a
// timing mark may have thrown away, kept of owed; byKey as markNotice's.
func answersNotice(owed, kept int, byKey bool) []byte {
	b := append(make([]byte, 0, 128), "telnet may not have shown "...)
	if owed == 1 {
		b = append(b, "the server's last answer to you"...)
	} else {
		b = append(b, "the server's last "...)
		b = strconv.AppendInt(b, int64(owed), 10)
		b = append(b, " answers to you"...)
	}
	b = append(b, ", which arrived as "...)
	b = appendMarkCause(b, byKey)
	switch {
	case kept == 0:
		// A flood of answers since has pushed them out.
		return b
	case kept == 1:
		b = append(b, "; here it is again:"...)
	case kept == owed:
		b = append(b, "; here they are again:"...)
	default:
		b = append(b, "; here are the last "...)
		b = strconv.AppendInt(b, int64(kept), 10)
		b = append(b, " again:"...)
	}
	return b
}

// markNotice is the notice's text for n messages, or for some not
// counted when vague, from peer, the partner, when there is one; byKey
// says a timing mark came at a key press, else only in letters telnet
// changed.
func markNotice(n int, vague bool, peer string, byKey bool) []byte {
	b := append(make([]byte, 0, 96), "telnet may not have shown "...)
	switch {
	case vague:
		b = append(b, "messages"...)
	case n == 1:
		b = append(b, "the last message"...)
	default:
		b = append(b, "the last "...)
		b = strconv.AppendInt(b, int64(n), 10)
		b = append(b, " messages"...)
	}
	if peer != "" {
		b = append(b, " from "...)
		b = append(b, peer...)
	}
	if vague {
		b = append(b, " that arrived as "...)
	} else {
		b = append(b, ", which arrived as "...)
	}
	b = appendMarkCause(b, byKey)
	if peer == "" {
		// The pairing whose messages are counted has ended since, and
		// telnet may have thrown its end's notice away with them.
		b = append(b, "; you are not connected to anyone now"...)
	}
	return b
}

// appendMarkCause says what made telnet send the timing mark: a key
// press, or, when byKey is false, only letters telnet changed, where its
// user pressed no key.
func appendMarkCause(b []byte, byKey bool) []byte {
	if byKey {
		return append(b, "you pressed Ctrl-C"...)
	}
	return append(b, "telnet turned a letter you typed into a Ctrl-C"...)
}
