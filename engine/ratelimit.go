package engine

import (
	"strconv"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"

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
// Input that finds the bucket empty is dropped. The client is told with
// one rate_limited error at most once a second: never silence, never a
// flood of errors. A client that keeps going far past the limit (more
// than abuseFactor times the burst dropped without a quiet second in
// between) is a script, not a person; it is told so and disconnected.
//
// A say that cannot be sent is a different case: a sender still pasting
// after its pair ended (not_paired), or while its partner is away with
// as much kept for them as resume.buffer allows (peer_away_full), would
// otherwise get one error per line. It gets the error once and then,
// once a second, a notice that counts the lines that were not sent.

// abuseFactor is how many bursts' worth of dropped input, without a
// quiet second in between, end a connection.
const abuseFactor = 10

// inputGuard is a connection's state for input that is limited or
// summarised rather than relayed. It is allocated on the first such
// input and released once the connection has been quiet long enough for
// its bucket to refill, so an idle connection and a connection that only
// talks carry none of it. It is loop-only.
type inputGuard struct {
	bucket *rate.Limiter

	// Rate limiting.
	lastRateError  time.Time // when rate_limited was last told
	droppedRun     int       // inputs dropped since the last quiet second
	droppedThisSec int       // inputs dropped since the last per-second check

	// Says that could not be sent.
	refused        refusal // the run of refused says going on, if any
	refusedCount   int     // says of the run not sent since the last summary
	refusedThisSec bool    // a say of the run was refused since the last check
}

// refusal is why a run of says is not sent.
type refusal uint8

const (
	refusedNone refusal = iota
	refusedNotPaired
	refusedAwayFull
)

// refusalOf is the run a say refused with err belongs to, if any.
func refusalOf(err *proto.Error) refusal {
	switch err.Code {
	case proto.ErrNotPaired.Code:
		return refusedNotPaired
	case proto.ErrPeerAwayFull.Code:
		return refusedAwayFull
	}
	return refusedNone
}

// guardFor returns the connection's inputGuard, allocating it on first use
// and keeping its bucket in step with the current limits (they may be
// reloaded at any time).
func (cn *conn) guardFor() *inputGuard {
	lim := cn.srv.lim()
	g := cn.guard
	if g == nil {
		g = &inputGuard{bucket: rate.NewLimiter(rate.Limit(lim.MessageRate), lim.MessageBurst)}
		cn.guard = g
		return g
	}
	now := cn.loop.now
	if g.bucket.Limit() != rate.Limit(lim.MessageRate) {
		g.bucket.SetLimitAt(now, rate.Limit(lim.MessageRate))
	}
	if g.bucket.Burst() != lim.MessageBurst {
		g.bucket.SetBurstAt(now, lim.MessageBurst)
	}
	return g
}

// admit decides whether a decoded command may run. A say from a logged-in
// user is governed by back-pressure, an ack costs next to nothing, and
// quit is always allowed: leaving must never be refused. Everything else
// spends a token.
func (cn *conn) admit(cmd *proto.Command) bool {
	switch {
	case cmd.Op == proto.OpSay && cn.sess != nil:
		return true
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
	g := cn.guardFor()
	if g.bucket.AllowN(cn.loop.now, 1) {
		return true
	}
	cn.dropInput(g)
	return false
}

// dropInput records one dropped input: rate_limited is told at most once
// a second, and a sustained flood closes the connection.
func (cn *conn) dropInput(g *inputGuard) {
	if cn.flow.draining || cn.closing != endNone {
		// The connection is ending; nothing more can be told.
		return
	}
	g.droppedThisSec++
	g.droppedRun++
	if g.droppedRun > abuseFactor*max(cn.srv.lim().MessageBurst, 1) {
		cn.closeForFlood()
		return
	}
	if cn.stage == stageHTTP {
		return // the request is answered 429 by its caller
	}
	if g.lastRateError.IsZero() || cn.loop.now.Sub(g.lastRateError) >= time.Second {
		g.lastRateError = cn.loop.now
		cn.tell(proto.ErrRateLimited)
	}
}

// closeForFlood ends a connection that kept sending far past its rate.
func (cn *conn) closeForFlood() {
	cn.logger().Warn("connection closed: input flood past the rate limit", zap.String("reason", endings[endFlood].label),
		zap.Int("dropped", cn.guard.droppedRun), zap.Float64("message_rate", cn.srv.lim().MessageRate))
	cn.end(endFlood)
}

// rejectInput tells err about input that produced nothing but the error (a
// line that does not decode, a say that fails): such input spends a
// token like a command, so a flood of garbage is answered at the rate
// limit and not byte for byte.
func (cn *conn) rejectInput(err *proto.Error) {
	if cn.spend() {
		cn.tell(err)
	}
}

// answer tells the outcome of a command that handle carried out.
func (cn *conn) answer(op proto.Op, err *proto.Error) {
	var run refusal
	if op == proto.OpSay && err != nil {
		run = refusalOf(err)
	}
	if g := cn.guard; g != nil && g.refused != refusedNone &&
		(op != proto.OpSay || err == nil || run != refusedNone && run != g.refused) {
		// Anything but a failed say ends a run of refused says, and so
		// does a say refused another way (the partner left, or went
		// away): the user is doing something else now, or the reason
		// changed, and the next failure is told anew.
		cn.endRefusedRun()
	}
	switch {
	case err == nil:
	case run != refusedNone:
		cn.refusedSay(run, err)
	case op == proto.OpSay:
		// The say was not charged on the way in: its error is.
		cn.rejectInput(err)
	default:
		cn.tell(err)
	}
}

// refusedSay answers a say refused for run's reason: the first of a run
// with its error, the rest counted for the per-second summary.
func (cn *conn) refusedSay(run refusal, err *proto.Error) {
	g := cn.guardFor()
	g.refusedThisSec = true
	if g.refused != run {
		g.refused = run
		cn.tell(err)
		return
	}
	g.refusedCount++
}

// endRefusedRun tells what is still uncounted of a run of refused says,
// and ends the run.
func (cn *conn) endRefusedRun() {
	g := cn.guard
	if g == nil || g.refused == refusedNone {
		return
	}
	cn.tellNotSent(g)
	g.refused = refusedNone
}

// notSentWhy ends the summary of a run of refused says.
var notSentWhy = [...]string{
	refusedNotPaired: " not sent: you are not connected to anyone",
	refusedAwayFull:  " not sent: your partner is away and no more of your messages can be kept for them",
}

// tellNotSent sends the summary of says not sent since the last one.
func (cn *conn) tellNotSent(g *inputGuard) {
	if g.refusedCount == 0 {
		return
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
	cn.out.Deliver(&proto.Event{Kind: proto.EvNotice, Text: []byte(text)})
}

// checkGuard runs once a second for every connection: it sends the
// not_paired summary, ends runs that went quiet, and releases the guard
// once nothing in it matters any more.
func (cn *conn) checkGuard() {
	g := cn.guard
	if g == nil || cn.closed || cn.closing != endNone {
		return
	}
	if g.refused != refusedNone {
		cn.tellNotSent(g)
		if !g.refusedThisSec {
			g.refused = refusedNone
		}
	}
	g.refusedThisSec = false
	if g.droppedThisSec == 0 {
		g.droppedRun = 0
	}
	g.droppedThisSec = 0
	if g.refused != refusedNone || g.droppedRun > 0 {
		return
	}
	if g.bucket.TokensAt(cn.loop.now) >= float64(g.bucket.Burst()) {
		cn.guard = nil
	}
}
