package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// clock gives monotonic nanoseconds since the run started; message texts
// carry its readings, so sender and receiver compare like with like.
type clock struct{ base time.Time }

func (c clock) now() int64 { return int64(time.Since(c.base)) }

// Latencies are recorded in microseconds from 1µs to a minute with three
// significant digits.
const (
	latencyMaxMicros  = 60_000_000
	latencySigFigures = 3
	latencyShards     = 16
	latencyBatch      = 512
)

func newLatencyHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, latencyMaxMicros, latencySigFigures)
}

// latencyShard is one of a few shared histograms. A histogram of this
// range takes ~200 KiB, too much to give each of thousands of connections
// one; readers batch their samples and take a shard's lock once per batch.
type latencyShard struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

// relay runs the message phase over paired endpoints.
type relay struct {
	clock   clock
	window  int64
	target  int64 // messages per sender, or -1 when bounded by time
	size    int
	padding []byte
	shards  [latencyShards]latencyShard

	stop    atomic.Bool // duration mode: the time is up, send no more
	closing atomic.Bool // the run is closing connections: read errors are expected
	wg      sync.WaitGroup

	// wake, when set, is called for each endpoint whose flow closeFlows
	// has closed: the plain client's writers wait for room in their
	// window and must hear that sending is over.
	wake func(*endpoint)
}

func newRelay(cfg *Config, c clock) *relay {
	r := &relay{
		clock:   c,
		window:  int64(cfg.Window),
		target:  cfg.messagesPerSide(),
		size:    cfg.Size,
		padding: make([]byte, cfg.Size-MinTextSize),
	}
	for i := range r.padding {
		r.padding[i] = paddingByte
	}
	for i := range r.shards {
		r.shards[i].h = newLatencyHistogram()
	}
	return r
}

// sendMore fills e's window: it writes as many new messages as the window
// has room for, in one write. Whoever learns that room has opened calls
// it: the peer's reader after taking in messages, e's own reader after an
// error reply, the run itself to start.
func (r *relay) sendMore(e *endpoint) {
	f := &e.out
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	if r.stop.Load() {
		f.closed = true
		return
	}
	next := int64(f.next)
	credit := r.window - (next - f.resolved())
	if r.target >= 0 {
		if next >= r.target {
			f.closed = true
			return
		}
		credit = min(credit, r.target-next)
	}
	if credit <= 0 {
		return
	}
	// One timestamp per batch: the messages leave in the same write.
	stamp := r.clock.now()
	buf := f.buf[:0]
	for range credit {
		buf = e.codec.appendMessage(buf, f.next, stamp, r.padding)
		f.next++
	}
	f.buf = buf
	f.sent.Store(int64(f.next))
	if _, err := e.conn.Write(buf); err != nil {
		f.closed = true
		f.failed.Store(true)
	}
}

// closeFlows stops all sending; afterwards every flow's sent count is
// final.
func (r *relay) closeFlows(eps []*endpoint) {
	r.stop.Store(true)
	for _, e := range eps {
		e.out.mu.Lock()
		e.out.closed = true
		e.out.mu.Unlock()
		if r.wake != nil {
			r.wake(e)
		}
	}
}

// readLoop is e's reading goroutine for the relay phase. It checks each
// message's order and latency, and at the end of each socket read
// publishes its counts and refills the peer's window.
func (r *relay) readLoop(e *endpoint) {
	defer r.wg.Done()
	in := &e.in
	peerFlow := &e.peer.out
	shard := &r.shards[e.index%latencyShards]
	defer r.flushLatencies(in, shard)

	batchStart := true
	rejectedBefore := in.rejected
	var now int64
	for {
		ev, err := e.codec.read(e.br)
		if err != nil {
			if !r.closing.Load() {
				in.readErr = err
				// Nothing more can cross this connection either way.
				e.out.failed.Store(true)
				peerFlow.failed.Store(true)
			}
			return
		}
		switch ev.kind {
		case evMessage:
			if batchStart {
				// Every message of one read arrived together.
				now = r.clock.now()
				batchStart = false
			}
			r.receive(in, ev.text, now)
		case evError:
			// The only requests sent now are messages, so an error
			// reply means one of ours was not relayed.
			in.countError(ev.code)
			in.rejected++
		case evPeerLeft:
			if !r.closing.Load() {
				in.peerLeft++
				peerFlow.failed.Store(true)
			}
		case evPing:
			_ = e.pong(ev.text)
		case evClosed:
			if !r.closing.Load() {
				in.readErr = errors.New("server sent a close frame")
				e.out.failed.Store(true)
				peerFlow.failed.Store(true)
			}
			return
		case evOversize:
			in.corrupt++
		}
		if e.codec.messageBuffered(e.br) {
			continue
		}
		peerFlow.delivered.Store(in.delivered)
		peerFlow.skipped.Store(in.skipped)
		if !batchStart {
			e.lastReceive.Store(now)
			batchStart = true
		}
		if len(in.latencies) >= latencyBatch {
			r.flushLatencies(in, shard)
		}
		r.sendMore(e.peer)
		if in.rejected != rejectedBefore {
			rejectedBefore = in.rejected
			e.out.rejected.Store(in.rejected)
			r.sendMore(e)
		}
	}
}

// receive checks one message text: its size, its padding, its place in
// the sequence, and its latency. A text that is not byte for byte what
// some sender wrote is corrupt.
func (r *relay) receive(in *receiver, text []byte, now int64) {
	seq, stamp, ok := parseText(text)
	if !ok || len(text) != r.size || !bytes.Equal(text[MinTextSize:], r.padding) {
		in.corrupt++
		return
	}
	in.record(seq, stamp, now)
}

// record counts one intact message: its place in its sender's sequence,
// and its latency from the stamp it carried to now. Both clients count
// through it.
func (in *receiver) record(seq uint64, stamp, now int64) {
	in.delivered++
	switch {
	case seq == in.nextSeq:
		in.nextSeq++
	case seq > in.nextSeq:
		in.skipped += int64(seq - in.nextSeq)
		in.nextSeq = seq + 1
	default:
		in.outOfOrder++
	}
	in.latencies = append(in.latencies, max(now-stamp, 0)/1000)
}

func (r *relay) flushLatencies(in *receiver, shard *latencyShard) {
	if len(in.latencies) == 0 {
		return
	}
	shard.mu.Lock()
	for _, v := range in.latencies {
		_ = shard.h.RecordValue(min(v, latencyMaxMicros))
	}
	shard.mu.Unlock()
	in.latencies = in.latencies[:0]
}

func (r *relay) histogram() *hdrhistogram.Histogram {
	h := newLatencyHistogram()
	for i := range r.shards {
		h.Merge(r.shards[i].h)
	}
	return h
}

// errStalled ends a relay that made no progress for the whole timeout.
var errStalled = errors.New("relay stalled")

// wait polls until every flow is accounted for, the run is cancelled, or
// nothing has moved for cfg.Timeout. Polling costs a few atomic loads per
// flow; its period does not affect the measured relay time, which ends at
// the last message received.
func (r *relay) wait(ctx context.Context, eps []*endpoint, duration, timeout time.Duration) error {
	const poll = 5 * time.Millisecond
	ticker := time.NewTicker(poll)
	defer ticker.Stop()
	started := time.Now()
	lastProgress := started
	var lastResolved int64 = -1
	for {
		now := time.Now()
		if duration > 0 && !r.stop.Load() && now.Sub(started) >= duration {
			r.closeFlows(eps)
		}
		done := true
		var resolved int64
		for _, e := range eps {
			f := &e.out
			res := f.resolved()
			resolved += res
			if f.failed.Load() {
				continue
			}
			sent := f.sent.Load()
			switch {
			case r.target >= 0 && sent < r.target:
				done = false
			case r.target < 0 && !r.stop.Load():
				done = false
			case res < sent:
				done = false
			}
		}
		if done {
			return nil
		}
		if resolved != lastResolved {
			lastResolved, lastProgress = resolved, now
		} else if now.Sub(lastProgress) > timeout {
			return fmt.Errorf("%w: no message accounted for in %v", errStalled, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
	}
}
