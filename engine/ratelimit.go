package engine

import (
	"strconv"
	"time"

	"go.uber.org/zap"

	"duet/proto"
)

// Rate limiting in duet has one rule: a say that reaches a partner is
// governed by back-pressure, never refused, so a paste of a few screens
// or a file piped through netcat always gets through while the partner
// reads. Everything else a client sends (commands, WebSocket pings,
// HTTP requests, and any input that only produces an error) spends a
// token from a per-connection bucket of limits.message_rate tokens a
// second and limits.message_burst tokens in all.
//
// The bucket is one stamp in the conn (bucketFull): the moment it will be
// full again. That is the generic cell rate algorithm (GCRA), which
// models the same bucket as a count of tokens and the time of its last
// refill, in 8 bytes and without an allocation. Every client spends
// tokens on its login and connect; a bucket made for each one (an
// x/time/rate Limiter and the state around it, 160 bytes) outlived
// them only as garbage, and that garbage, not yet collected when a
// busy server goes quiet, was an eighth of an idle connection's RSS.
// The limits are read at each spend, so a reload applies at once.
//
// Input that finds the bucket empty is dropped. The client is told with
// one rate_limited error at most once a second: never silence, never a
// flood of errors. A say or seal its client numbered ("id") is told
// as a refused say is (below): the error names the first dropped, the
// per-second notice the rest, so that no message is taken for sent. A
// client that keeps going far past the limit (more than abuseFactor
// times the burst dropped without a quiet second in between, less ten
// for each message relayed meanwhile) is a script, not a person; it is
// told so and disconnected.
//
// A say that cannot be sent is a different case: a sender still pasting
// after its pair ended (not_paired), or while its partner is away with
// as much kept for them as resume.buffer allows (peer_away_full), would
// otherwise get one error per line. It gets the error once and then,
// once a second, a notice that counts the lines that were not sent. A
// seal is a say the server cannot read: it joins the same run, and is
// counted in the same notice. The ending of the connection, if it comes
// first, tells that notice before its goodbye (endAs), so that no
// refused line goes untold. A JSON client that numbers its messages
// ("id") is told which: the error names the first, and each notice the
// first and last it counts. Anything carried out ends the run (handle,
// answer); input refused as it is decoded does not, and is told its own
// error (rejectInput), so every say or seal between those ids was
// refused, by the notice or by an error of its own.

// abuseFactor is how many bursts' worth of dropped input, without a
// quiet second in between, end a connection; each message relayed
// meanwhile takes forgivenPerMessage dropped inputs off the count.
const abuseFactor = 10

// forgivenPerMessage is how many dropped inputs a message relayed
// makes up for: a person's text, or a file of it piped through nc,
// among lines that cannot be sent (colour codes, another encoding), is
// not a flood, even with ten such lines for every one sent; a script
// that adds a say now and then to its flood still is.
const forgivenPerMessage = 10

// forgive takes what relayed messages make up for off the count of
// dropped inputs.
func (g *inputGuard) forgive(relayed int) {
	g.droppedRun = max(g.droppedRun-relayed*forgivenPerMessage, 0)
}

// inputGuard is a connection's state for input that was dropped or
// summarised rather than relayed. It is allocated on the first such
// input and released once the connection has been quiet for a second,
// so an idle connection, and one that only talks or sends commands
// within the limit, carry none of it. It is loop-only.
type inputGuard struct {
	// Rate limiting.
	lastRateError  time.Time // when rate_limited was last told
	droppedRun     int       // inputs dropped since the last quiet second, less those relayed messages made up for (forgive)
	droppedThisSec int       // inputs dropped since the last per-second check

	// Says and seals that could not be sent.
	refused        refusal // the run of refused says going on, if any
	refusedCount   int     // says of the run not sent since the last summary
	refusedThisSec bool    // a say of the run was refused since the last check
	// refusedLate: the run is of refusals from the partner's node
	// (RefusedLate), which come after the says were taken here. A say
	// taken meanwhile does not end it: it is refused there in turn.
	refusedLate bool
	// The ids of the first and last says refusedCount counts, as their
	// client gave them (0: none).
	refusedFirstID, refusedLastID uint64

	// retired counts the says and seals refused because the session
	// left this connection: the hub took it (a resume or a login
	// elsewhere), which the eviction that follows tells (evicted), or a
	// drain sent it away (sentAway), which its notice tells
	// (drainFinish). They are told no error of their own, which would
	// not be true of the user (retiredAnswer), or could not be written
	// (the drain retired the outbox), but not lost without a word
	// either.
	retired int
	// sentAway: a drain sent the connection's session away (drainBegin)
	// and closes the connection with its notice (drainFinish), a park
	// on Redis later. The input read meanwhile is not carried out: the
	// connection carries no session, its outbox takes nothing but the
	// goodbye, and its client is about to be told to resume elsewhere
	// (drainedInput).
	sentAway bool
}

// refusal is why a run of says (seals among them) is not sent.
type refusal uint8

const (
	refusedNone refusal = iota
	refusedNotPaired
	refusedAwayFull
	refusedRateLimited // numbered says and seals dropped for want of a token
)

// refusalErr is why a run of says is not sent, by the error its first
// was told (whose text may say more), for the notices that count the
// rest.
var refusalErr = [...]*proto.Error{
	refusedNotPaired:   proto.ErrNotPaired,
	refusedAwayFull:    proto.ErrPeerAwayFull,
	refusedRateLimited: proto.ErrRateLimited,
}

// refusalOf is the run a say or seal refused with err belongs to, if
// any.
func refusalOf(err *proto.Error) refusal {
	switch err.Code {
	case proto.ErrNotPaired.Code:
		return refusedNotPaired
	case proto.ErrPeerAwayFull.Code:
		return refusedAwayFull
	}
	return refusedNone
}

// guardFor returns the connection's inputGuard, allocating it on first
// use.
func (cn *conn) guardFor() *inputGuard {
	if cn.guard == nil {
		cn.guard = &inputGuard{}
	}
	return cn.guard
}

// bucketShape is the bucket of limits.message_rate tokens a second and
// limits.message_burst in all, as GCRA sees it: the time one token takes
// to come back, and the time an empty bucket takes to fill. Both are
// capped, so that no sum of them and a stamp overflows: a token every 36
// years is as good as none, and a burst that would take longer than 146
// years to refill is as good as endless.
func bucketShape(rate float64, burst int) (interval, depth stamp) {
	iv := min(float64(time.Second)/rate, 1<<60)
	return stamp(iv), stamp(min(iv*float64(burst), 1<<62))
}

// takeToken takes a token from the bucket, if it has one, at the loop's
// now. The bucket is full when bucketFull is now or past; each token
// taken moves bucketFull on by interval, and a token is there while
// that leaves it at most depth ahead of now.
func (cn *conn) takeToken() bool {
	lim := cn.loop.srv.lim()
	interval, depth := bucketShape(lim.MessageRate, lim.MessageBurst)
	now := cn.loop.stamp()
	full := max(cn.bucketFull, now) + interval
	if full-now > depth {
		return false
	}
	cn.bucketFull = full
	return true
}

// admit decides whether a decoded command may run. A say from a logged-in
// user is governed by back-pressure, an ack costs next to nothing, and
// quit is always allowed: leaving must never be refused. Everything else
// spends a token.
func (cn *conn) admit(cmd *proto.Command) bool {
	switch {
	case (cmd.Op == proto.OpSay || cmd.Op == proto.OpSeal) && cn.sess != nil:
		// A sealed frame is a message the server cannot read: governed
		// by back-pressure as a say is.
		return true
	case cmd.Op == proto.OpSay || cmd.Op == proto.OpSeal:
		// Before login: refused, and if dropped, dropped by its id.
		return cn.spendSay(cmd.ID)
	case cmd.Op == proto.OpAck && cn.sess != nil:
		// An acknowledgement is answered with nothing and costs a trim of
		// the history; a browser sends one for every 32 messages it
		// receives, which its partner's pace sets, not its own.
		return true
	case cmd.Op == proto.OpQuit:
		return true
	}
	return cn.spend()
}

// spend takes one token from the bucket. Without one, the input is
// dropped, counted, and the client told (see dropInput).
func (cn *conn) spend() bool {
	return cn.spendSay(0)
}

// spendSay is spend for a say or seal its client gave id (0: none, or
// not a say), which a drop names.
func (cn *conn) spendSay(id uint64) bool {
	if cn.takeToken() {
		return true
	}
	cn.dropInput(cn.guardFor(), id)
	return false
}

// dropInput records one dropped input, a say or seal its client gave id
// if id is not 0: rate_limited is told at most once a second, a
// numbered say is told by its id (droppedSay), and a sustained flood
// closes the connection.
func (cn *conn) dropInput(g *inputGuard, id uint64) {
	if cn.flow.draining || cn.closing != endNone {
		// The connection is ending; nothing more can be told.
		return
	}
	g.droppedThisSec++
	if cn.floodDrop(g) {
		return
	}
	if cn.stage == stageHTTP {
		return // the request is answered 429 by its caller
	}
	if id != 0 {
		cn.droppedSay(g, id)
		return
	}
	if g.lastRateError.IsZero() || cn.loop.now.Sub(g.lastRateError) >= time.Second {
		g.lastRateError = cn.loop.now
		cn.tell(proto.ErrRateLimited)
	}
}

// dropQuietly records one dropped input that asks for no answer and
// whose loss changes nothing (a pong nobody asked for, spendPong): it
// counts toward the flood that closes the connection, as dropInput's
// do, and is not told, since nothing the client meant was lost.
func (cn *conn) dropQuietly() {
	if cn.flow.draining || cn.closing != endNone {
		return
	}
	cn.floodDrop(cn.guardFor())
}

// floodDrop counts one dropped input toward the flood that closes the
// connection, and reports whether it closed it.
func (cn *conn) floodDrop(g *inputGuard) bool {
	g.droppedRun++
	if g.droppedRun > abuseFactor*max(cn.loop.srv.lim().MessageBurst, 1) {
		cn.closeForFlood()
		return true
	}
	return false
}

// spendPong takes what a pong costs: nothing for the answer to a ping
// of the server's (pongsOwed), a token for any other, dropped quietly
// when there is none.
func (cn *conn) spendPong() {
	switch {
	case cn.ws.pongsOwed > 0:
		cn.ws.pongsOwed--
	case !cn.takeToken():
		cn.dropQuietly()
	}
}

// droppedSay tells a numbered say or seal dropped for want of a token
// as refusedSay tells a say with no partner: the first of a run with
// rate_limited and its id, the rest by the per-second notice, whose
// first and last ids hold only dropped says between them, since
// anything the client sends that is carried out ends the run (answer).
// Dropped commands do not end it: they change nothing about which says
// were sent. So a flood of numbered says gets an error, then a notice a
// second, as a flood of commands gets an error a second.
func (cn *conn) droppedSay(g *inputGuard, id uint64) {
	if g.refused != refusedRateLimited {
		cn.endRefusedRun()
	}
	if cn.refusedSay(refusedRateLimited, proto.ErrRateLimited, id) {
		// The error told also tells the commands dropped this second.
		g.lastRateError = cn.loop.now
	}
}

// closeForFlood ends a connection that kept sending far past its rate.
func (cn *conn) closeForFlood() {
	// Sampled as refusals are: a client that reconnects to flood again
	// is cut in milliseconds each time, and would write hundreds of
	// lines a second.
	if ok, suppressed := cn.loop.srv.endingLog[endFlood].Allow(time.Now()); ok {
		fields := []zap.Field{zap.String("reason", endings[endFlood].label),
			zap.Int("dropped", cn.guard.droppedRun), zap.Float64("message_rate", cn.loop.srv.lim().MessageRate)}
		if suppressed > 0 {
			fields = append(fields, zap.Int("floods_not_logged", suppressed))
		}
		cn.logger().Warn("connection closed: input flood past the rate limit", fields...)
	}
	cn.end(endFlood)
}

// rejectInput tells err about input that produced nothing but the error (a
// line that does not decode, a say that fails): such input spends a
// token like a command, so a flood of garbage is answered at the rate
// limit and not byte for byte.
func (cn *conn) rejectInput(err *proto.Error) {
	cn.rejectSay(err, 0)
}

// rejectSay is rejectInput for a say or seal its client gave id.
func (cn *conn) rejectSay(err *proto.Error, id uint64) {
	cn.heardAfterResume() // a line the client sent, refused or not
	if cn.spendSay(id) {
		cn.tellSay(err, id)
	}
}

// answer tells the outcome of a command that handle carried out; id is
// the one a say's or seal's client gave it (0: none, or not a message).
// A seal is answered exactly as a say is: its refusals join the same
// runs and counts, so that a page whose partner cannot take its
// messages is told once and counted, encrypted or not.
func (cn *conn) answer(op proto.Op, id uint64, err *proto.Error) {
	message := op == proto.OpSay || op == proto.OpSeal
	if err != nil && cn.retiredAnswer(err) {
		if message {
			cn.guardFor().retired++
		}
		return
	}
	var run refusal
	if message && err != nil {
		run = refusalOf(err)
	}
	if g := cn.guard; g != nil && g.refused != refusedNone &&
		(!message || err == nil && !g.refusedLate || run != refusedNone && run != g.refused) {
		// Anything but a failed message ends a run of refused ones, and
		// so does a message refused another way (the partner left, or
		// went away): the user is doing something else now, or the
		// reason changed, and the next failure is told anew.
		cn.endRefusedRun()
	}
	switch {
	case err == nil:
	case run != refusedNone:
		cn.refusedSay(run, err, id)
	case message:
		// The message was not charged on the way in: its error is, so
		// that a flood of seals to a terminal (peer_cannot_decrypt) is
		// answered at the rate limit, not frame for frame.
		cn.rejectSay(err, id)
	default:
		cn.tell(err)
	}
}

// refusedSay answers a say refused for run's reason: the first of a run
// with its error, the rest counted for the per-second summary. It
// reports whether it told the error.
func (cn *conn) refusedSay(run refusal, err *proto.Error, id uint64) bool {
	g := cn.guardFor()
	g.refusedThisSec = true
	if g.refused != run {
		g.refused = run
		cn.tellSay(err, id)
		return true
	}
	if g.refusedCount == 0 {
		g.refusedFirstID = id
	}
	g.refusedLastID = id
	g.refusedCount++
	return false
}

// endRefusedRun tells what is still uncounted of a run of refused says,
// and ends the run.
func (cn *conn) endRefusedRun() {
	g := cn.guard
	if g == nil || g.refused == refusedNone {
		return
	}
	cn.tellNotSent(g)
	g.refused, g.refusedLate = refusedNone, false
}

// notSentWhy ends the summary of a run of refused says.
var notSentWhy = [...]string{
	refusedNotPaired:   " not sent: you are not connected to anyone",
	refusedAwayFull:    " not sent: your partner is away and no more of your messages can be kept for them",
	refusedRateLimited: " not sent: you are sending too fast; slow down",
}

// tellNotSent sends the summary of says not sent since the last one.
func (cn *conn) tellNotSent(g *inputGuard) {
	if ev, ok := cn.notSent(g); ok {
		cn.answerLine(&ev)
	}
}

// notSent takes the summary of says not sent since the last one, if
// any, for the caller to tell: tellNotSent, or an ending, whose goodbye
// tells it first (endAs).
func (cn *conn) notSent(g *inputGuard) (proto.Event, bool) {
	if g.refusedCount == 0 {
		return proto.Event{}, false
	}
	unit := " more lines were"
	switch {
	case cn.stage == stageWS && g.refusedCount == 1:
		unit = " more message was"
	case cn.stage == stageWS:
		unit = " more messages were"
	case g.refusedCount == 1:
		unit = " more line was"
	}
	text := strconv.Itoa(g.refusedCount) + unit + notSentWhy[g.refused]
	g.refusedCount = 0
	return proto.Event{Kind: proto.EvNotice, Text: []byte(text),
		Err: refusalErr[g.refused], FirstID: g.refusedFirstID, ID: g.refusedLastID}, true
}

// checkGuard runs once a second for every connection: it sends the
// not_paired summary, ends runs that went quiet, and releases the guard
// once nothing in it matters any more.
func (cn *conn) checkGuard() {
	g := cn.guard
	if g == nil || cn.closed || cn.closing != endNone || g.sentAway {
		// A drained connection's summary could not be written: the
		// drain's goodbye tells it (endAs).
		return
	}
	if g.refused != refusedNone {
		cn.tellNotSent(g)
		if !g.refusedThisSec {
			g.refused, g.refusedLate = refusedNone, false
		}
	}
	g.refusedThisSec = false
	if g.droppedThisSec == 0 {
		g.droppedRun = 0
	}
	g.droppedThisSec = 0
	if g.refused == refusedNone && g.droppedRun == 0 && g.retired == 0 {
		cn.guard = nil
	}
}
