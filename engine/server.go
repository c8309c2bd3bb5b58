// Package engine is duet's network side: one gnet engine that accepts the
// line protocol on one port and HTTP/WebSocket on another, turns bytes
// into proto.Commands for the pairing core (package hub), and turns the
// core's events back into bytes for whichever protocol each session
// speaks. It moves bytes and enforces limits; it makes no pairing
// decisions.
package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"duet/config"
	"duet/engine/auth"
	"duet/engine/hub"
	"duet/engine/logsample"
	"duet/engine/tally"
	"duet/proto"
	"duet/web"
)

// backlogInterval is how often a loop rechecks readers whose sockets
// were full, while it has any: it bounds how long a drained socket waits
// for more output. tickInterval is how often each loop enforces the
// deadlines (handshake, login, idle, ping), which have always been
// checked once a second. Only the tick runs when nothing is backlogged,
// so an idle server wakes once a second, not a hundred times.
const (
	backlogInterval = 10 * time.Millisecond
	tickInterval    = time.Second
)

// Options configure a Server.
type Options struct {
	TCPListen      string // "" disables the line-protocol listener
	WSListen       string // "" disables the HTTP/WebSocket listener
	AllowedOrigins []string
	Limits         config.Limits
	Resume         config.Resume // handed to the hub with limits.max_text (HubOptions); the zero value turns resume off
	AuthMode       string        // "open" or "accounts"; told to clients in the greeting
	Auth           AuthOptions
	Hub            *hub.Hub
	Site           *web.Site // the browser client; nil serves 404 for pages
	Logger         *zap.Logger
	Loops          int // event loops; 0 means one per CPU
	// TrustedProxies are the peers whose PROXY header (line port) or
	// X-Forwarded-For (web port) names the real client.
	TrustedProxies []netip.Prefix
	Metrics        Metrics // nil counts nothing
	// Descriptors is the part of the descriptor limit the engine may
	// use; the zero value caps nothing (descriptors.go).
	Descriptors Descriptors
}

// Server is a running duet engine.
type Server struct {
	opts   Options
	log    *zap.Logger
	hub    *hub.Hub
	logins *auth.Logins // nil in open mode
	// directory runs the commands that wait on a cluster's directory
	// (callDirectory).
	directory workQueue
	// takeover: a login of an account online elsewhere replaces that
	// session (accounts mode, AuthOptions.Takeover).
	takeover atomic.Bool

	limits atomic.Pointer[config.Limits]
	resume atomic.Pointer[config.Resume]
	hubMu  sync.Mutex // orders the hub's options as SetLimits and SetResume set them
	// listening is set under hubMu once gnet has bound the listeners,
	// whose TCP_USER_TIMEOUT SetResume then sets (listenerUserTimeouts).
	listening bool
	// userTimeoutEach: the listeners could not be given the
	// TCP_USER_TIMEOUT their connections inherit, so each connection is
	// given it as it opens.
	userTimeoutEach atomic.Bool

	origin atomic.Pointer[[]string]

	trusted atomic.Pointer[[]netip.Prefix]
	metrics Metrics

	eng     gnet.Engine
	tcpAddr net.Addr
	wsAddr  net.Addr
	booted  chan struct{}
	done    chan error

	draining atomic.Bool
	// onFailure hands the sessions on when the engine stops on its own
	// (OnFailure); nil: they end.
	onFailure atomic.Pointer[func() bool]
	// hello is the line port's greeting, made once: gnet writes it, or
	// copies what the socket does not take, and keeps no reference.
	hello []byte
	// restarting is set by Drain: new connections are refused, and
	// those open are told to reconnect elsewhere (drain.go).
	restarting atomic.Bool
	nextID     atomic.Uint64
	conns      atomic.Int64
	connsPeak  atomic.Int64 // see TakeConnsPeak

	loopsMu sync.Mutex
	loops   map[gnet.EventLoop]*loopState

	files        fileShare             // the engine's share of the descriptor limit (descriptors.go)
	perIP        *tally.Counter        // open connections per client address (tally.AddrKey)
	refusing     *tally.Counter        // connections refused as they opened, kept to read their request (refuseRequest), per peer address
	connectFails *auth.ConnectThrottle // failed connects per address (throttle.go)
	// Connections refused, and closed for flooding, are logged at most
	// once a second for each reason: a flood of one reason (a client
	// that reconnects to flood again, a loop past max_conns_per_ip)
	// costs a line a second, and does not hide the lines of another
	// (an origin to allow) from the operator.
	endingLog [numEndings]logsample.Sampler
	// Failed connects and resumes are logged at most once a second, and
	// so are addresses reaching limits.connect_failures (throttle.go).
	failureLog, failureLimitLog logsample.Sampler
}

// New checks opts and returns a server that is not yet listening.
func New(opts Options) (*Server, error) {
	if opts.TCPListen == "" && opts.WSListen == "" {
		return nil, errors.New("engine: no listener configured")
	}
	if opts.Hub == nil {
		return nil, errors.New("engine: no hub")
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.AuthMode == "" {
		opts.AuthMode = "open"
	}
	s := &Server{
		opts:      opts,
		log:       opts.Logger,
		hub:       opts.Hub,
		directory: workQueue{max: directoryWorkers},
		booted:    make(chan struct{}),
		done:      make(chan error, 1),
		loops:     make(map[gnet.EventLoop]*loopState),
	}
	var err error
	if s.logins, err = newLogins(opts, opts.Logger); err != nil {
		return nil, err
	}
	s.hello = s.lineHello()
	s.SetTakeover(opts.Auth.Takeover)
	s.resume.Store(&opts.Resume)
	s.SetLimits(opts.Limits)
	s.SetAllowedOrigins(opts.AllowedOrigins)
	s.SetTrustedProxies(opts.TrustedProxies)
	if s.metrics = opts.Metrics; s.metrics == nil {
		s.metrics = noMetrics{}
	}
	declareLabels(s.metrics)
	// The counter holds only addresses with connections open, so
	// limits.max_conns (which a reload may raise) bounds it; it needs no
	// bound of its own.
	s.perIP = tally.NewCounter(math.MaxInt)
	listeners := 0
	for _, l := range []string{opts.TCPListen, opts.WSListen} {
		if l != "" {
			listeners++
		}
	}
	s.files = shareFiles(opts.Descriptors, eventLoops(opts), listeners, opts.WSListen != "", somaxconn())
	s.refusing = tally.NewCounter(s.files.refusalAddrs)
	s.connectFails = auth.NewConnectThrottle()
	return s, nil
}

// SetLimits replaces the limits; connections see them from their next
// event on. Safe at any time (config reload).
func (s *Server) SetLimits(l config.Limits) {
	l = withDefaultLimits(l)
	s.hubMu.Lock()
	defer s.hubMu.Unlock()
	s.limits.Store(&l)
	s.setHubOptions()
}

// SetResume replaces the resume section (config reload). Every key of it
// may change: each applies from the next time the hub uses it. A new
// resume.window counts for connections that drop from then on (a session
// away already keeps the time it was given), resume.buffer for the next
// message kept, resume.max_away and resume.max_away_per_ip for the next
// session that goes away, resume.replay_recent for the next resume.
// Turning resume off ends no session that is away (it can still be
// resumed) but sends none away from then on; turning it on gives a
// resume key to the sessions that log in from then on, not to those
// logged in while it was off.
func (s *Server) SetResume(r config.Resume) {
	s.hubMu.Lock()
	defer s.hubMu.Unlock()
	s.resume.Store(&r)
	s.setHubOptions()
	if s.listening {
		s.listenerUserTimeouts()
	}
}

// listenerUserTimeouts gives the listening sockets the TCP_USER_TIMEOUT
// their connections are to have (userTimeout). Linux copies it to each
// connection accepted from them, which spares every connection a system
// call as it opens: a login-and-pair opens two, and its whole exchange
// is a dozen or so. A listener that cannot be given it has each of its
// connections given it instead, as it opens. s.hubMu is held.
func (s *Server) listenerUserTimeouts() {
	d, each := s.userTimeout(), false
	for _, listen := range []string{s.opts.TCPListen, s.opts.WSListen} {
		if listen == "" {
			continue
		}
		fd, err := s.eng.DupListener("tcp", listen)
		if err == nil {
			err = setUserTimeout(fd, d)
			_ = unix.Close(fd)
		}
		if err != nil {
			each = true
			s.log.Warn("cannot set TCP_USER_TIMEOUT on the listener; setting it on each connection instead", zap.String("listen", listen), zap.Error(err))
		}
	}
	s.userTimeoutEach.Store(each)
}

// listenerOOBInline keeps TCP urgent data in the stream of every
// connection accepted on the line listener (SO_OOBINLINE, which Linux
// copies from the listener as it does TCP_USER_TIMEOUT). telnet sends
// its Synch (`send synch`, and with each interrupt under `toggle
// autosynch`) as IAC DM with the DM urgent; taken out of the stream, the
// urgent byte would leave a lone IAC or DM in the next line, which would
// be refused as not UTF-8. In the stream, the framer reads IAC DM as the
// command it is, and drops it. A listener that cannot be given it only
// leaves that line refused, which its user is told.
func (s *Server) listenerOOBInline() {
	if s.opts.TCPListen == "" {
		return
	}
	fd, err := s.eng.DupListener("tcp", s.opts.TCPListen)
	if err == nil {
		err = setOOBInline(fd)
		_ = unix.Close(fd)
	}
	if err != nil {
		s.log.Warn("cannot keep urgent data in line on the listener; a telnet Synch will cost its user the next line", zap.String("listen", s.opts.TCPListen), zap.Error(err))
	}
}

// setHubOptions hands the hub limits.max_text and the resume section, as
// they are now. s.hubMu is held.
func (s *Server) setHubOptions() {
	s.hub.SetOptions(HubOptions(*s.lim(), *s.resume.Load()))
}

// userTimeout is the TCP_USER_TIMEOUT a new connection gets: with resume
// on, resume.replay_recent, or 0 to leave the kernel's default.
//
// A line client cannot say which messages it read before its connection
// dropped, so its resume replays those written from replay_recent before
// the drop was noticed (and those never written at all). The rule is
// whole only if a connection that stops acknowledging what is written to
// it is found dead within replay_recent: then anything written earlier
// was acknowledged by the client's TCP. Keepalive alone does not do it,
// since it probes only idle connections, and the kernel's retransmissions
// give up only after some fifteen minutes.
func (s *Server) userTimeout() time.Duration {
	r := s.resume.Load()
	if r.Window <= 0 {
		return 0
	}
	d := r.ReplayRecent
	if d <= 0 {
		d = hub.DefaultReplayRecent
	}
	return min(d, r.Window)
}

// HubOptions are the hub's options for limits l and resume section r:
// what the engine sets, and what a hub made for it should start with.
func HubOptions(l config.Limits, r config.Resume) hub.Options {
	cfg := config.Config{Limits: l, Resume: r}
	return hub.Options{
		MaxText:      l.MaxText,
		ResumeWindow: r.Window,
		ResumeBuffer: r.Buffer,
		MaxAway:      cfg.ResumeMaxAway(),
		MaxAwayPerIP: cfg.ResumeMaxAwayPerIP(),
		ReplayRecent: r.ReplayRecent,
	}
}

// SetAllowedOrigins replaces the WebSocket Origin allow-list.
func (s *Server) SetAllowedOrigins(origins []string) {
	o := append([]string(nil), origins...)
	s.origin.Store(&o)
}

func (s *Server) lim() *config.Limits { return s.limits.Load() }

// withDefaultLimits fills zero limits from the embedded defaults, so a
// test or embedder may set only what it cares about.
func withDefaultLimits(l config.Limits) config.Limits {
	d := config.Defaults().Limits
	fill := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	fillD := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	fill(&l.MaxLine, d.MaxLine)
	fill(&l.MaxFrame, d.MaxFrame)
	fill(&l.MaxText, d.MaxText)
	fillD(&l.LoginTimeout, d.LoginTimeout)
	fillD(&l.HandshakeTimeout, d.HandshakeTimeout)
	fillD(&l.IdleTimeout, d.IdleTimeout)
	fillD(&l.PingInterval, d.PingInterval)
	fillD(&l.TCPKeepAlive, d.TCPKeepAlive)
	fill(&l.MaxConns, d.MaxConns)
	fill(&l.MaxConnsPerIP, d.MaxConnsPerIP)
	fill(&l.IPv6Prefix, d.IPv6Prefix)
	if l.MessageRate <= 0 {
		l.MessageRate = d.MessageRate
	}
	fill(&l.MessageBurst, d.MessageBurst)
	fill(&l.OutboundHigh, d.OutboundHigh)
	fill(&l.OutboundMax, d.OutboundMax)
	fillD(&l.SlowTimeout, d.SlowTimeout)
	fill(&l.ConnectFailures, d.ConnectFailures)
	return l
}

// Start binds the listeners and runs the engine in the background. It
// returns once every listener accepts connections, or with the error
// that stopped it.
//
// A listener given port 0 gets the port the kernel chose for a probe
// (probeListen), which something else may take before gnet binds it: a
// connection made meanwhile may be given it as its own port. Start then
// chooses again, twice at most.
func (s *Server) Start() error {
	tcp, web := s.opts.TCPListen, s.opts.WSListen
	for attempt := 1; ; attempt++ {
		err := s.start()
		if err == nil || attempt == 3 || !errors.Is(err, syscall.EADDRINUSE) || !portZero(tcp) && !portZero(web) {
			return err
		}
		s.opts.TCPListen, s.opts.WSListen = tcp, web
	}
}

// portZero reports whether listen asks for a port the kernel chooses.
func portZero(listen string) bool {
	_, port, err := net.SplitHostPort(listen)
	return err == nil && port == "0"
}

func (s *Server) start() error {
	var err error
	if s.opts.TCPListen, err = probeListen("tcp.listen", s.opts.TCPListen); err != nil {
		return err
	}
	if s.opts.WSListen, err = probeListen("ws.listen", s.opts.WSListen); err != nil {
		return err
	}
	var addrs []string
	if s.opts.TCPListen != "" {
		addrs = append(addrs, "tcp://"+s.opts.TCPListen)
	}
	if s.opts.WSListen != "" {
		addrs = append(addrs, "tcp://"+s.opts.WSListen)
	}
	opts := []gnet.Option{
		gnet.WithMulticore(true),
		gnet.WithTicker(true),
		gnet.WithReuseAddr(true),
		gnet.WithTCPKeepAlive(s.lim().TCPKeepAlive),
		gnet.WithLogger(gnetLogger{s.log.Sugar()}),
	}
	if s.opts.Loops > 0 {
		opts = append(opts, gnet.WithNumEventLoop(s.opts.Loops))
	}
	go func() { s.done <- gnet.Rotate(s, addrs, opts...) }()
	select {
	case <-s.booted:
		return nil
	case err := <-s.done:
		if err == nil {
			err = errors.New("engine stopped before it started")
		}
		// An address taken between the probe and gnet's own bind: ask
		// again, since gnet's error would not say which or why.
		for _, l := range [][2]string{{"tcp.listen", s.opts.TCPListen}, {"ws.listen", s.opts.WSListen}} {
			if _, perr := probeListen(l[0], l[1]); perr != nil {
				return perr
			}
		}
		return fmt.Errorf("engine: %w", err)
	}
}

// ListenError is a listen address that could not be bound.
type ListenError struct {
	Key  string // the configuration key that set it, such as "tcp.listen"
	Addr string // the address as configured
	Err  error  // the bind's error, a *net.OpError
}

func (e *ListenError) Error() string {
	msg := fmt.Sprintf("cannot listen on %s (%s): ", e.Addr, e.Key)
	switch {
	case errors.Is(e.Err, syscall.EADDRINUSE):
		return msg + "address already in use: another program, or another duetd, is listening there"
	case errors.Is(e.Err, syscall.EACCES):
		return msg + "permission denied: ports below 1024 need CAP_NET_BIND_SERVICE"
	case errors.Is(e.Err, syscall.EADDRNOTAVAIL):
		return msg + "no interface of this machine has that address"
	}
	return msg + e.Err.Error()
}

func (e *ListenError) Unwrap() error { return e.Err }

// TCPAddr is the bound line-protocol address (nil when disabled).
func (s *Server) TCPAddr() net.Addr { return s.tcpAddr }

// WSAddr is the bound HTTP/WebSocket address (nil when disabled).
func (s *Server) WSAddr() net.Addr { return s.wsAddr }

// Conns is the number of open connections.
func (s *Server) Conns() int64 { return s.conns.Load() }

// TakeConnsPeak returns the most connections that were open at once
// since it was last called, and starts counting again from those open
// now: a caller that samples Conns now and then still sees a burst that
// came and went between two samples.
func (s *Server) TakeConnsPeak() int64 { return s.connsPeak.Swap(s.conns.Load()) }

// Done is closed... it yields the engine's exit error once it has stopped.
func (s *Server) Done() <-chan error { return s.done }

// Shutdown stops the server gracefully: new connections are refused,
// every connected user is told the server is shutting down, their
// partners are told why, queued output is flushed, and whatever is still
// open when ctx ends is closed anyway. It returns when the engine stopped.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.draining.Swap(true) {
		return errors.New("engine: already shutting down")
	}
	s.endAll(ctx)
	s.unlisten()
	// gnet's Stop looks whether the engine has stopped every half
	// second: waited for, it would keep the process up to that long
	// past shutdown_timeout. It asks the loops to stop, and the engine's
	// own end (done) is waited for instead.
	stopped := make(chan error, 1)
	go func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stopped <- s.eng.Stop(stopCtx)
	}()
	select {
	case err := <-s.done:
		return err
	case err := <-stopped:
		// Stop failed, or found the engine stopped before done was
		// told: done says how it ended.
		if exitErr := <-s.done; err == nil {
			err = exitErr
		}
		return err
	}
}

// endAll ends every connection for shutdown, telling each client, and
// each partner, that the server is shutting down, and returns once all
// have closed or ctx has ended. s.draining is set.
func (s *Server) endAll(ctx context.Context) {
	// No session is kept waiting for a resume: the process that could
	// resume it is going. Those away now end first, their partners told
	// shutdown; connections that drop from now on end their sessions
	// instead of sending them away (endSession).
	s.hub.CloseAway(proto.ReasonShutdown)
	for _, ls := range s.loopList() {
		_ = ls.eachConn(func(cn *conn) { cn.shutdown() })
	}
	s.waitClosed(ctx)
	// A connection that dropped as the shutdown began may have sent its
	// session away just before; none is left waiting.
	s.hub.CloseAway(proto.ReasonShutdown)
}

// waitClosed returns once every connection has closed, or ctx has
// ended.
func (s *Server) waitClosed(ctx context.Context) {
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for s.conns.Load() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-poll.C:
		}
	}
}

// unlisten makes a reload leave the listeners alone from now on: gnet
// closes them as it stops, and a descriptor duplicated meanwhile might
// be another socket's by then (SetResume).
func (s *Server) unlisten() {
	s.hubMu.Lock()
	s.listening = false
	s.hubMu.Unlock()
}

// failEndTimeout bounds how long an engine that stops on its own waits
// for its connections to take their goodbyes (OnShutdown).
const failEndTimeout = 5 * time.Second

// OnFailure sets f to be called when the engine stops on its own, on an
// error it cannot go on from: gnet stops the whole engine when a
// listener's accept fails for want of a descriptor or of memory
// (EMFILE past the margin descriptors.go keeps, ENFILE, ENOBUFS,
// ENOMEM). f runs before the connections close, the loops still
// running, as a stop's hand-over of the sessions would (Drain, then
// the state file, or the cluster's parks), and reports whether it
// handed them on. If it did not, or with no f, every connection is
// ended as Shutdown ends it, each client and partner told. Either way
// Done then yields the engine's error.
func (s *Server) OnFailure(f func() bool) { s.onFailure.Store(&f) }

// OnShutdown implements gnet.EventHandler. gnet calls it as the engine
// stops, before the loops close their connections: after Shutdown's
// goodbyes, or, with no Shutdown under way, when the engine stops on
// an error (gnet logs which). Then whatever connection is open is
// ended here, its client told, rather than closed by gnet without a
// word, and its session handed on if OnFailure can.
func (s *Server) OnShutdown(gnet.Engine) {
	if s.draining.Load() {
		return
	}
	s.unlisten()
	s.log.Error("the engine is stopping on an error; ending every connection as a stop does")
	if f := s.onFailure.Load(); f != nil && (*f)() {
		ctx, cancel := context.WithTimeout(context.Background(), failEndTimeout)
		defer cancel()
		s.waitClosed(ctx)
		return
	}
	if s.draining.Swap(true) {
		return // a Shutdown began meanwhile, and ends them
	}
	ctx, cancel := context.WithTimeout(context.Background(), failEndTimeout)
	defer cancel()
	s.endAll(ctx)
}

func (s *Server) loopList() []*loopState {
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	out := make([]*loopState, 0, len(s.loops))
	for _, ls := range s.loops {
		out = append(out, ls)
	}
	return out
}

// loopFor returns the state of the loop that owns c, creating it on the
// loop's first connection (gnet does not list its loops up front).
func (s *Server) loopFor(c gnet.Conn) *loopState {
	el := c.EventLoop()
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	ls, ok := s.loops[el]
	if !ok {
		ls = newLoopState(s, el, epollFD(c))
		if ls.epfd < 0 {
			s.log.Warn("cannot pause reads on this platform or gnet version; senders to slow readers are buffered up to limits.outbound_max instead")
		}
		s.loops[el] = ls
	}
	return ls
}

// OnBoot records the bound addresses (a configured port 0 gets a real one).
func (s *Server) OnBoot(eng gnet.Engine) gnet.Action {
	s.eng = eng
	var err error
	if s.opts.TCPListen != "" {
		if s.tcpAddr, err = boundAddr(eng, s.opts.TCPListen); err != nil {
			s.log.Error("cannot read bound address", zap.String("listen", s.opts.TCPListen), zap.Error(err))
		}
	}
	if s.opts.WSListen != "" {
		if s.wsAddr, err = boundAddr(eng, s.opts.WSListen); err != nil {
			s.log.Error("cannot read bound address", zap.String("listen", s.opts.WSListen), zap.Error(err))
		}
	}
	s.listenerOOBInline()
	s.listenerBacklogs()
	s.hubMu.Lock()
	s.listening = true
	s.listenerUserTimeouts()
	s.hubMu.Unlock()
	close(s.booted)
	return gnet.None
}

// probeListen binds listen and lets it go again, and returns the address
// with port 0 replaced by the free port the kernel chose.
//
// The probe is what reports an address that cannot be bound, with its
// key and the reason: gnet, when its bind fails, closes the socket and
// then sets TCP keepalive on it, and reports only that second failure
// ("setsockopt: bad file descriptor"). Port 0 must be made concrete
// anyway: gnet finds a listener again only by the address string it was
// given, so two listeners both given port 0 could not be told apart once
// bound.
func probeListen(key, listen string) (string, error) {
	if listen == "" {
		return "", nil
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen, nil // gnet reports a malformed address itself
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return "", &ListenError{Key: key, Addr: listen, Err: err}
	}
	defer ln.Close()
	if port == "0" {
		return net.JoinHostPort(host, fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)), nil
	}
	return listen, nil
}

func boundAddr(eng gnet.Engine, listen string) (net.Addr, error) {
	fd, err := eng.DupListener("tcp", listen)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, err
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}, nil
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}, nil
	}
	return nil, fmt.Errorf("unexpected socket address %T", sa)
}

// onListener reports whether a connection whose LocalAddr is local came
// in on the listener bound at bound. gnet sets a connection's LocalAddr
// to its listener's address as configured, which Start made concrete
// (probeListen), so no system call is needed to ask the socket. The port
// tells duet's two listeners apart, unless both use one port on two
// addresses; then the address does (a wildcard one could not share the
// port with another).
func onListener(local, bound net.Addr) bool {
	l, ok := local.(*net.TCPAddr)
	b, ok2 := bound.(*net.TCPAddr)
	if !ok || !ok2 || l.Port != b.Port {
		return false
	}
	return l.IP == nil || l.IP.IsUnspecified() || b.IP.IsUnspecified() || l.IP.Equal(b.IP)
}

// logRefusal logs connection id refused for e, from client address ip,
// with extra fields if any, as the endings table says (logged), sampled:
// a flood of them costs one line a second for each reason.
func (s *Server) logRefusal(e ending, id uint64, ip netip.Addr, extra ...zap.Field) {
	ok, suppressed := s.endingLog[e].Allow(time.Now())
	if !ok {
		return
	}
	fields := append([]zap.Field{zap.String("reason", endings[e].label), zap.Uint64("conn", id), zap.Stringer("remote", ip)}, extra...)
	if suppressed > 0 {
		fields = append(fields, zap.Int("refusals_not_logged", suppressed))
	}
	s.log.Warn(endings[e].logged, fields...)
}

// OnOpen admits a connection, or refuses it with one line saying why. A
// connection refused on the web port is kept to read its request, and
// told why in the answer to it (refuseRequest); one refused on the line
// port is told at once and kept to linger (closeSocket); past the bounds
// of those, it is answered at once, unread, and closed.
func (s *Server) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	isLine := s.tcpAddr != nil && onListener(c.LocalAddr(), s.tcpAddr)
	ip := peerIP(c.RemoteAddr())
	// The id comes first, so that the lines logging a refusal name the
	// connection, as every line about one does, even one refused before
	// it is made.
	id := s.nextID.Add(1)
	refuse := func(e ending) ([]byte, gnet.Action) {
		label := endings[e].label
		s.metrics.Rejected(label)
		s.metrics.Disconnected(label)
		if s.log.Core().Enabled(zapcore.DebugLevel) {
			s.log.Debug("connection refused", zap.String("reason", label), zap.Uint64("conn", id), zap.Stringer("remote", ip))
		}
		if isLine {
			return lineRefusal(e, s.refusalDetail(e)), gnet.Close
		}
		return webRefusal(e, s.refusalDetail(e)), gnet.Close
	}
	lim := s.lim()
	bits := v6bitsOf(lim.IPv6Prefix)
	key := tally.AddrKey(ip, int(bits))
	// A trusted proxy's connection is counted once the client it carries
	// is known (realaddr.go), not against the proxy's own address.
	fromProxy := s.trustedPeer(c.RemoteAddr())
	refused := endNone
	switch {
	case s.draining.Load() || s.restarting.Load():
		refused = endDraining
	case s.conns.Load() >= int64(s.MaxConns()):
		s.logRefusal(endFull, id, ip)
		refused = endFull
	case !fromProxy && !s.perIP.Acquire(key, lim.MaxConnsPerIP):
		s.logRefusal(endPerAddr, id, ip)
		refused = endPerAddr
	}
	if refused != endNone && !s.refusing.Acquire(key, refusalsKeptPerAddr) {
		return refuse(refused)
	}
	// A connection kept only to be refused is not admitted: it counts
	// toward no limit.
	if refused == endNone {
		if n := s.conns.Add(1); n > s.connsPeak.Load() {
			// Two loops may race here; the lower store loses a connection
			// of the peak, which is only a hint (TakeConnsPeak).
			s.connsPeak.Store(n)
		}
	}
	if s.userTimeoutEach.Load() {
		if d := s.userTimeout(); d > 0 {
			_ = setUserTimeout(c.Fd(), d)
		}
	}
	ls := s.loopFor(c)
	ls.clockIn()
	cn := newConn(ls, c, id, isLine, connAddr{ip: ip, v6bits: bits, counted: !fromProxy && refused == endNone, fromProxy: fromProxy})
	cn.refused = refused
	c.SetContext(cn)
	ls.addConn(cn)
	s.metrics.ConnOpened(cn.protocol())
	cn.logOpened()
	if isLine && refused != endNone {
		// Told now, then lingering (closeSocket): its client may have
		// sent at once, as `nc -N < file` does, and a close as the
		// refusal is written answers that input with a reset, which a
		// netcat reads before the refusal, and exits on.
		cn.stage = stageLine
		cn.endAs(refused, endDetail{})
		return nil, gnet.None
	}
	if isLine && !fromProxy {
		return s.hello, gnet.None
	}
	return nil, gnet.None
}

// OnTraffic implements gnet.EventHandler.
func (s *Server) OnTraffic(c gnet.Conn) gnet.Action {
	cn, ok := c.Context().(*conn)
	if !ok {
		return gnet.Close
	}
	cn.loop.clockIn()
	cn.loop.beginTraffic()
	action := cn.onTraffic()
	cn.loop.endTraffic()
	return action
}

// OnClose implements gnet.EventHandler.
func (s *Server) OnClose(c gnet.Conn, err error) gnet.Action {
	cn, ok := c.Context().(*conn)
	if !ok {
		return gnet.None
	}
	cn.onClose(err)
	if !cn.flow.late.Load() {
		cn.logClosed() // else once its input has said how it ends (finishLate)
	}
	cn.loop.dropConn(cn)
	delete(cn.loop.backlogged, cn)
	delete(cn.loop.watched, cn)
	delete(cn.loop.lingering, cn)
	delete(cn.loop.graced, cn)
	if !cn.flow.late.Load() {
		cn.releaseAddr() // else once the close is over (finishLate)
	}
	s.metrics.ConnClosed(cn.protocol())
	if cn.refused != endNone {
		s.refusing.Release(cn.addr.key())
	} else {
		s.conns.Add(-1)
	}
	return gnet.None
}

// OnTick runs on gnet's ticker goroutine, not on a loop: it only asks
// each loop to run its own tick.
func (s *Server) OnTick() (time.Duration, gnet.Action) {
	for _, ls := range s.loopList() {
		_ = ls.el.Execute(context.Background(), ls.tickTask)
	}
	return tickInterval, gnet.None
}

// peerIP is a socket peer's address, unmapped (an IPv4 client on a
// dual-stack socket is shown and counted as IPv4) and without a zone;
// invalid when the peer is not on TCP.
func peerIP(a net.Addr) netip.Addr {
	t, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Addr{}
	}
	ip, _ := netip.AddrFromSlice(t.IP)
	return ip.Unmap().WithZone("")
}

// gnetLogger routes gnet's own log lines into zap, tagged as gnet's.
type gnetLogger struct{ s *zap.SugaredLogger }

func (l gnetLogger) Debugf(f string, a ...any) { l.s.Debugf("gnet: "+f, a...) }
func (l gnetLogger) Infof(f string, a ...any)  { l.s.Infof("gnet: "+f, a...) }
func (l gnetLogger) Warnf(f string, a ...any)  { l.s.Warnf("gnet: "+f, a...) }
func (l gnetLogger) Errorf(f string, a ...any) { l.s.Errorf("gnet: "+f, a...) }
func (l gnetLogger) Fatalf(f string, a ...any) {
	// gnet calls Fatalf for errors it cannot recover from; log them loudly
	// but leave the decision to exit to the daemon.
	l.s.Errorf("gnet fatal: "+strings.TrimSpace(f), a...)
}
