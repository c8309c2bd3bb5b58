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
// A say with no partner is a different case: a sender still pasting
// after its pair ended would otherwise get one not_paired error per line.
// It gets one not_paired error and then, once a second, a notice that
// counts the lines that were not sent.

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

	// Says with no partner.
	notPairedStreak  bool // not_paired was told; later ones are counted
	notPairedCount   int  // says not sent since the last summary
	notPairedThisSec bool // a say found no partner since the last check
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
// user is governed by back-pressure, and quit is always allowed: leaving
// must never be refused. Everything else spends a token.
func (cn *conn) admit(cmd *proto.Command) bool {
	switch {
	case cmd.Op == proto.OpSay && cn.sess != nil:
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
	if op != proto.OpSay || err == nil {
		// Anything but a failed say ends a run of not_paired: the user
		// is doing something else now, and the next failure is told anew.
		cn.endNotPairedStreak()
	}
	switch {
	case err == nil:
	case op == proto.OpSay && err == proto.ErrNotPaired:
		cn.notPaired()
	case op == proto.OpSay:
		// The say was not charged on the way in: its error is.
		cn.rejectInput(err)
	default:
		cn.tell(err)
	}
}

// notPaired answers a say that found no partner: the first with the
// error, the rest of a run counted for the per-second summary.
func (cn *conn) notPaired() {
	g := cn.guardFor()
	g.notPairedThisSec = true
	if !g.notPairedStreak {
		g.notPairedStreak = true
		cn.tell(proto.ErrNotPaired)
		return
	}
	g.notPairedCount++
}

// endNotPairedStreak tells what is still uncounted of a run of says with
// no partner, and ends the run.
func (cn *conn) endNotPairedStreak() {
	g := cn.guard
	if g == nil || !g.notPairedStreak {
		return
	}
	cn.tellNotSent(g)
	g.notPairedStreak = false
}

// tellNotSent sends the summary of says not sent since the last one.
func (cn *conn) tellNotSent(g *inputGuard) {
	if g.notPairedCount == 0 {
		return
	}
	unit := " more lines were"
	switch {
	case cn.stage == stageWS && g.notPairedCount == 1:
		unit = " more message was"
	case cn.stage == stageWS:
		unit = " more messages were"
	case g.notPairedCount == 1:
		unit = " more line was"
	}
	text := strconv.Itoa(g.notPairedCount) + unit + " not sent: you are not connected to anyone"
	g.notPairedCount = 0
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
	if g.notPairedStreak {
		cn.tellNotSent(g)
		if !g.notPairedThisSec {
			g.notPairedStreak = false
		}
	}
	g.notPairedThisSec = false
	if g.droppedThisSec == 0 {
		g.droppedRun = 0
	}
	g.droppedThisSec = 0
	if g.notPairedStreak || g.droppedRun > 0 {
		return
	}
	if g.bucket.TokensAt(cn.loop.now) >= float64(g.bucket.Burst()) {
		cn.guard = nil
	}
}
