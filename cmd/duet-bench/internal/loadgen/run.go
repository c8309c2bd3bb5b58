// Package loadgen is duet-bench's load generator: it opens pairs of
// client connections to a duet server (or a reference relay), pairs them,
// relays numbered and timestamped messages between the two sides of each
// pair with a bounded window, and reports throughput, latency, errors,
// and the server's memory per connection and CPU and system calls per
// pair and per message. The relay phase is driven by one of two clients:
// the tuned one (relay.go), built to cost the machine little, or the
// plain one (plain.go), written as a user would write it.
package loadgen

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// runner holds one run's endpoints and the failures of its setup phases.
type runner struct {
	cfg    Config
	clock  clock
	dialer dialer
	eps    []*endpoint

	mu      sync.Mutex
	reasons map[string]int64 // setup failures by reason
	server  map[string]int64 // error replies by code
}

// Run performs one benchmark run and reports on it. The report is
// returned whenever the run got as far as connecting, together with an
// error if it could not finish; check Report.OK for lost or reordered
// messages.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &runner{
		cfg:     cfg,
		clock:   clock{base: time.Now()},
		reasons: make(map[string]int64),
		server:  make(map[string]int64),
	}
	r.dialer = dialer{cfg: &r.cfg}
	rep := &Report{
		Proto:  cfg.Proto,
		Client: cfg.Client,
		Mode:   "relay",
		Pairs:  cfg.Pairs,
		Size:   cfg.Size,
		Window: cfg.Window,
	}
	switch {
	case cfg.Idle:
		rep.Mode = "idle"
	case cfg.Duration > 0:
		rep.DurationSeconds = cfg.Duration.Seconds()
	default:
		rep.MessagesPerSide = cfg.Messages
	}

	var rssBefore int64
	var meter *phaseMeter
	if cfg.PID > 0 {
		var err error
		if rssBefore, err = ReadRSS(cfg.PID); err != nil {
			return nil, fmt.Errorf("server RSS: %w", err)
		}
		meter = &phaseMeter{proc: newProcReader(cfg.PID)}
		// Read once up front so that a server whose counters cannot be
		// read fails the run before any load, not after.
		if err := meter.begin(); err != nil {
			return nil, fmt.Errorf("server counters: %w", err)
		}
		rep.Server = &ServerReport{PID: cfg.PID}
	}
	var kernelBefore kernelReading
	var kernelErr error
	if cfg.Idle {
		kernelBefore, kernelErr = readKernelMemory(os.DirFS("/proc"))
	}

	r.eps = r.newEndpoints()
	defer r.closeAll()

	connected := r.connectAll(ctx, &rep.Connect)
	rep.Errors.ConnectFailed = len(r.eps) - len(connected)
	if len(connected) == 0 {
		r.fillSetupErrors(rep)
		return rep, errors.New("no connection could be opened")
	}
	var meterErrs []error
	if meter != nil {
		meterErrs = append(meterErrs, meter.begin())
	}
	paired := r.pairAll(ctx, connected, &rep.Pair)
	if meter != nil {
		u, err := meter.end(int64(rep.Pair.Count))
		rep.Server.Pair = u
		meterErrs = append(meterErrs, err)
	}
	rep.Errors.PairFailed = cfg.Pairs - rep.Pair.Count
	if cfg.Idle {
		// The kernel's share is read as soon as the pairs are up: the
		// shorter the window, the less of the machine's other activity is
		// in it.
		if kernelErr == nil {
			var after kernelReading
			if after, kernelErr = readKernelMemory(os.DirFS("/proc")); kernelErr == nil {
				rep.Kernel = kernelMemoryBetween(kernelBefore, after, len(connected))
			}
		}
		if kernelErr != nil {
			// Not a failure of the run: slabinfo is root's to read.
			rep.Kernel = &KernelMemoryReport{Connections: len(connected), Error: kernelErr.Error()}
		}
	}
	r.fillSetupErrors(rep)
	if len(paired) == 0 {
		return rep, errors.New("no pair could be formed")
	}

	// Every paired connection gets its reading goroutine in both modes:
	// an idle connection still answers pings and notices being dropped.
	// The plain client has a relay phase of its own; idle, the clients
	// are the same.
	rl := newRelay(&r.cfg, r.clock)
	startSending := func() {
		for _, e := range paired {
			rl.sendMore(e)
		}
	}
	if cfg.Client == ClientPlain && !cfg.Idle {
		pr := newPlainRelay(rl, paired)
		pr.startReaders()
		startSending = pr.startWriters
	} else {
		for _, e := range paired {
			rl.wg.Add(1)
			go rl.readLoop(e)
		}
	}
	var runErr error
	if cfg.Idle {
		if meter != nil {
			meterErrs = append(meterErrs, meter.begin())
		}
		select {
		case <-ctx.Done():
			runErr = ctx.Err()
		case <-time.After(cfg.Hold):
		}
		if meter != nil {
			u, err := meter.end(int64(len(connected)))
			rep.Server.Hold = u
			meterErrs = append(meterErrs, err)
		}
	} else {
		var self *phaseMeter
		if meter != nil {
			meterErrs = append(meterErrs, meter.begin())
			// The generator's own figure is for reading beside the
			// server's; a run whose own counters cannot be read goes on
			// without it.
			self = &phaseMeter{proc: newProcReader(os.Getpid())}
			if self.begin() != nil {
				self = nil
			}
		}
		runErr = r.relay(ctx, rl, paired, rep, startSending)
		if meter != nil {
			// The relay's figures are final only once the readers are
			// done; the op count is filled in below.
			u, err := meter.end(0)
			rep.Server.Relay = u
			meterErrs = append(meterErrs, err)
			if self != nil {
				rep.LoadGenerator, _ = self.end(0)
			}
		}
	}

	// Read the server's memory while every connection is still open.
	var rssErr error
	if cfg.PID > 0 {
		rssAfter, err := ReadRSS(cfg.PID)
		if err == nil {
			m := &MemoryReport{PID: cfg.PID, BeforeKiB: rssBefore, AfterKiB: rssAfter, Connections: len(connected)}
			m.PerConnectionBytes = float64(rssAfter-rssBefore) * 1024 / float64(len(connected))
			rep.RSS = m
		} else {
			rssErr = fmt.Errorf("server RSS: %w", err)
		}
	}

	rl.closing.Store(true)
	if cfg.Away > 0 && cfg.PID > 0 && rssErr == nil {
		// A reset is a dropped connection, which sends its session away
		// (a close would be a goodbye on the line port). Both sides of
		// every pair go, so the server holds only away sessions. Their
		// RSS is read after the wait, which gives the runtime time to
		// reuse or return what the connections freed.
		for _, e := range paired {
			if tc, ok := e.conn.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			_ = e.conn.Close()
		}
		select {
		case <-ctx.Done():
			runErr = errors.Join(runErr, ctx.Err())
		case <-time.After(cfg.Away):
		}
		if rssAway, err := ReadRSS(cfg.PID); err == nil {
			m := &MemoryReport{PID: cfg.PID, BeforeKiB: rssBefore, AfterKiB: rssAway, Connections: len(paired)}
			m.PerConnectionBytes = float64(rssAway-rssBefore) * 1024 / float64(len(paired))
			rep.Away = m
		} else {
			rssErr = fmt.Errorf("server RSS: %w", err)
		}
	}
	for _, e := range paired {
		_ = e.conn.Close()
	}
	rl.wg.Wait()
	collectErrors(rl, paired, rep)
	if rep.Server != nil && rep.Server.Relay != nil && rep.Relay != nil {
		rep.Server.Relay.setOps(rep.Relay.Delivered)
	}
	if rep.LoadGenerator != nil && rep.Relay != nil {
		rep.LoadGenerator.setOps(rep.Relay.Delivered)
	}
	var meterErr error
	if err := errors.Join(meterErrs...); err != nil {
		meterErr = fmt.Errorf("server counters: %w", err)
	}
	return rep, errors.Join(runErr, rssErr, meterErr)
}

func (r *runner) newEndpoints() []*endpoint {
	var tag [2]byte
	_, _ = rand.Read(tag[:])
	prefix := "bench" + hex.EncodeToString(tag[:]) + "-"
	eps := make([]*endpoint, 2*r.cfg.Pairs)
	for i := range eps {
		e := &endpoint{index: i, name: fmt.Sprintf("%s%d", prefix, i)}
		switch {
		case r.cfg.Proto == ProtoBare:
			e.codec = bareCodec{}
		case r.cfg.Proto == ProtoWS, r.cfg.Proto == ProtoMix && isConnector(i):
			e.codec = newWSCodec(uint32(i)*2654435761 + 1)
		default:
			e.codec = lineCodec{}
		}
		eps[i] = e
	}
	return eps
}

// Endpoints 2i and 2i+1 are pair i: the first logs in and hands out its
// token (the owner), the second connects with it (the connector).
func isConnector(index int) bool { return index%2 == 1 }

func (r *runner) closeAll() {
	for _, e := range r.eps {
		if e.conn != nil {
			_ = e.conn.Close()
		}
	}
}

// fail counts a setup failure under a short reason.
func (r *runner) fail(err error) {
	reason := "error"
	var se *serverError
	var ne net.Error
	switch {
	case errors.As(err, &se):
		reason = se.code
	case errors.Is(err, syscall.ECONNREFUSED):
		reason = "connection_refused"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		reason = "address_not_available"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		reason = "too_many_open_files"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		reason = "timeout"
	case errors.Is(err, errPeerGone):
		reason = "peer_gone"
	case errors.Is(err, errBarePairing):
		reason = "bare_pairing"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		reason = "connection_reset"
	}
	r.mu.Lock()
	if se != nil {
		r.server[se.code]++
	}
	r.reasons[reason]++
	r.mu.Unlock()
}

func (r *runner) fillSetupErrors(rep *Report) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.reasons) > 0 {
		rep.Errors.Reasons = r.reasons
	}
	if len(r.server) > 0 {
		rep.Errors.Server = r.server
	}
}

// forEach runs fn over items with at most limit running at once.
func forEach[T any](items []T, limit int, fn func(T)) {
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for _, it := range items {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(it)
		}()
	}
	wg.Wait()
}

// connectAll opens every endpoint's connection and returns those that
// opened. Bare connections are opened one after another, because the
// bare relay pairs them in accept order.
func (r *runner) connectAll(ctx context.Context, phase *Phase) []*endpoint {
	start := time.Now()
	ok := make([]bool, len(r.eps))
	connect := func(e *endpoint) {
		if err := r.connect(ctx, e); err != nil {
			r.fail(err)
			if e.conn != nil {
				_ = e.conn.Close()
				e.conn = nil
			}
			return
		}
		ok[e.index] = true
	}
	if r.cfg.Proto == ProtoBare {
		for _, e := range r.eps {
			if ctx.Err() != nil {
				break
			}
			connect(e)
		}
	} else {
		forEach(r.eps, r.cfg.Concurrency, connect)
	}
	phase.Seconds = time.Since(start).Seconds()
	var connected []*endpoint
	for i, e := range r.eps {
		if ok[i] {
			connected = append(connected, e)
		}
	}
	phase.Count = len(connected)
	phase.PerSecond = perSecond(int64(phase.Count), phase.Seconds)
	return connected
}

func (r *runner) connect(ctx context.Context, e *endpoint) error {
	var err error
	if _, isWS := e.codec.(*wsCodec); isWS {
		err = r.dialer.dialWS(ctx, e)
	} else {
		err = r.dialer.dialTCP(ctx, e)
	}
	if err != nil || r.cfg.Proto == ProtoBare {
		return err
	}
	// A duet server greets every connection; waiting for the greeting
	// means the connection is fully set up before pairing is timed.
	e.setDeadline(time.Now().Add(r.cfg.Timeout))
	defer e.setDeadline(time.Time{})
	_, err = e.expect(evNotice)
	return err
}

// pairAll pairs the connected endpoints and returns those that were
// paired. The phase is timed from the first login sent to the last
// pairing confirmed.
func (r *runner) pairAll(ctx context.Context, connected []*endpoint, phase *Phase) []*endpoint {
	if r.cfg.Proto == ProtoBare {
		return r.pairBare(ctx, connected, phase)
	}
	var pairs [][2]*endpoint
	up := make(map[int]bool, len(connected))
	for _, e := range connected {
		up[e.index] = true
	}
	for i := 0; i < len(r.eps); i += 2 {
		if up[i] && up[i+1] {
			pairs = append(pairs, [2]*endpoint{r.eps[i], r.eps[i+1]})
		}
	}
	ok := make([]bool, len(pairs))
	done := make([]time.Time, len(pairs))
	start := time.Now()
	indexes := make([]int, len(pairs))
	for i := range indexes {
		indexes[i] = i
	}
	forEach(indexes, r.cfg.Concurrency, func(i int) {
		if ctx.Err() != nil {
			r.fail(ctx.Err())
			return
		}
		if err := r.pairOne(pairs[i][0], pairs[i][1]); err != nil {
			r.fail(err)
			return
		}
		ok[i], done[i] = true, time.Now()
	})
	var paired []*endpoint
	last := start
	for i, p := range pairs {
		if ok[i] {
			paired = append(paired, p[0], p[1])
			if done[i].After(last) {
				last = done[i]
			}
		}
	}
	phase.Count = len(paired) / 2
	phase.Seconds = last.Sub(start).Seconds()
	phase.PerSecond = perSecond(int64(phase.Count), phase.Seconds)
	return paired
}

// pairOne logs both sides in and has the connector connect with the
// owner's token; it returns once both sides are told they are paired.
func (r *runner) pairOne(owner, connector *endpoint) error {
	deadline := time.Now().Add(r.cfg.Timeout)
	owner.setDeadline(deadline)
	connector.setDeadline(deadline)
	defer owner.setDeadline(time.Time{})
	defer connector.setDeadline(time.Time{})

	if err := owner.write(owner.codec.appendLogin(nil, owner.name)); err != nil {
		return err
	}
	if err := connector.write(connector.codec.appendLogin(nil, connector.name)); err != nil {
		return err
	}
	ev, err := owner.expect(evWelcome)
	if err != nil {
		return err
	}
	token := bytes.Clone(ev.text)
	if _, err := connector.expect(evWelcome); err != nil {
		return err
	}
	if err := connector.write(connector.codec.appendConnect(nil, token)); err != nil {
		return err
	}
	if _, err := connector.expect(evPaired); err != nil {
		return err
	}
	if _, err := owner.expect(evPaired); err != nil {
		return err
	}
	owner.peer, connector.peer = connector, owner
	return nil
}

var errBarePairing = errors.New("bare relay paired a connection with one outside this run")

// pairBare learns how the bare relay paired the connections: each sends
// "hello INDEX" as its first line, and what arrives first names its
// partner. The relay pairs in accept order, but its event loops may open
// connections in a slightly different order, so the client asks rather
// than assumes.
func (r *runner) pairBare(ctx context.Context, connected []*endpoint, phase *Phase) []*endpoint {
	start := time.Now()
	partner := make([]int, len(r.eps))
	done := make([]time.Time, len(r.eps))
	for i := range partner {
		partner[i] = -1
	}
	var live []*endpoint
	for _, e := range connected {
		if err := e.write(appendHello(nil, e.index)); err != nil {
			r.fail(err)
			continue
		}
		live = append(live, e)
	}
	forEach(live, r.cfg.Concurrency, func(e *endpoint) {
		if ctx.Err() != nil {
			r.fail(ctx.Err())
			return
		}
		e.setDeadline(time.Now().Add(r.cfg.Timeout))
		defer e.setDeadline(time.Time{})
		ev, err := e.expect(evMessage)
		if err != nil {
			r.fail(err)
			return
		}
		p, ok := parseHello(ev.text)
		if !ok || p < 0 || p >= len(r.eps) || p == e.index {
			r.fail(errBarePairing)
			return
		}
		partner[e.index], done[e.index] = p, time.Now()
	})
	var paired []*endpoint
	last := start
	for _, e := range live {
		p := partner[e.index]
		if p < 0 || partner[p] != e.index {
			continue
		}
		e.peer = r.eps[p]
		paired = append(paired, e)
		if done[e.index].After(last) {
			last = done[e.index]
		}
	}
	phase.Count = len(paired) / 2
	phase.Seconds = last.Sub(start).Seconds()
	phase.PerSecond = perSecond(int64(phase.Count), phase.Seconds)
	return paired
}

func appendHello(dst []byte, index int) []byte {
	return fmt.Appendf(dst, "hello %d\n", index)
}

// relay runs the message phase over paired endpoints whose readers are
// running, and fills in the report's relay numbers.
func (r *runner) relay(ctx context.Context, rl *relay, paired []*endpoint, rep *Report, startSending func()) error {
	start := r.clock.now()
	startSending()
	waitErr := rl.wait(ctx, paired, r.cfg.Duration, r.cfg.Timeout)
	rl.closeFlows(paired)
	end := start
	for _, e := range paired {
		end = max(end, e.lastReceive.Load())
	}
	rep.Relay = &RelayReport{Seconds: float64(end-start) / 1e9}
	if waitErr != nil {
		rep.Errors.Stalled = waitErr.Error()
	}
	return waitErr
}

// collectErrors adds up what the readers saw, once they have all exited,
// and completes the relay numbers that depend on it.
func collectErrors(rl *relay, paired []*endpoint, rep *Report) {
	errs := &rep.Errors
	var sent, delivered int64
	for _, e := range paired {
		in := &e.in
		sent += e.out.sent.Load()
		delivered += in.delivered
		errs.Rejected += in.rejected
		errs.OutOfOrder += in.outOfOrder
		errs.Corrupt += in.corrupt
		errs.PeerLeft += in.peerLeft
		if in.readErr != nil {
			errs.Disconnected++
		}
		for code, n := range in.errors {
			if errs.Server == nil {
				errs.Server = make(map[string]int64)
			}
			errs.Server[code] += n
		}
	}
	rr := rep.Relay
	if rr == nil {
		return
	}
	rr.Sent, rr.Delivered = sent, delivered
	errs.Lost = max(sent-delivered-errs.Rejected-errs.Corrupt, 0)
	rr.MessagesPerSecond = perSecond(delivered, rr.Seconds)
	rr.Latency = summarise(rl.histogram())
}
