package service

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"golang.org/x/net/netutil"
)

// Admin is the admin listener: a plain net/http server, since its
// traffic is a scrape every few seconds from loopback, not users.
//
//	/metrics     Prometheus text format
//	/healthz     200 while the process runs
//	/readyz      200 once every listener is bound, 503 before and while shutting down or drained,
//	             and while a readiness check fails (SetReadyCheck: a node of a cluster not linked to Redis)
//	POST /drain  drains a node of a cluster for a restart (SetDrain), answering when it is done
type Admin struct {
	srv   *http.Server
	ln    net.Listener
	ready atomic.Bool
	check atomic.Pointer[ReadyCheck]
	drain atomic.Pointer[Drainer]
	done  chan struct{}
}

// ReadyCheck is a condition of readiness besides the daemon's own start
// and stop, asked at each /readyz: "" when it holds, or why not, which
// /readyz answers with its 503.
type ReadyCheck func() string

// Drainer drains the node (POST /drain) and says what it did in a line,
// or why it could not.
type Drainer func(ctx context.Context) (string, error)

// AdminConns is how many connections the admin listener serves at once;
// more wait in its listen queue, which holds no descriptor. The daemon
// keeps as many descriptors aside for them (cmd/duetd's descriptors):
// past that, a burst of scrapes, or anyone who can reach the port and
// holds connections open, would take the descriptors the engine's
// connections are counted on, and an accept of the engine's that finds
// none stops it.
const AdminConns = 16

// adminHeadTimeout bounds the wait for a request's head on the admin
// listener, and adminIdleTimeout how long a connection is kept open
// between requests: each holds one of AdminConns meanwhile.
const (
	adminHeadTimeout = 2 * time.Second
	adminIdleTimeout = time.Second
)

// StartAdmin listens on addr and serves reg's metrics and the health
// endpoints in the background, AdminConns connections at a time.
func StartAdmin(addr string, reg *prometheus.Registry, log *zap.Logger) (*Admin, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	ln = netutil.LimitListener(ln, AdminConns)
	a := &Admin{ln: ln, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:          zap.NewStdLog(log),
		EnableOpenMetrics: false,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		if f := a.check.Load(); f != nil {
			if why := (*f)(); why != "" {
				http.Error(w, why, http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("POST /drain", func(w http.ResponseWriter, r *http.Request) {
		// A browser always says where a POST comes from; an operator's
		// curl does not. Refusing every request a browser sends keeps a
		// page the operator visits (or one that rebinds a name to
		// loopback) from draining the node.
		if r.Header.Get("Origin") != "" || r.Header.Get("Sec-Fetch-Site") != "" {
			http.Error(w, "drain is not for browsers", http.StatusForbidden)
			return
		}
		f := a.drain.Load()
		if f == nil {
			http.Error(w, "drain needs cluster mode (cluster.redis): a single node has no other node to hand its sessions to; "+
				"it drains when it stops (SIGTERM), keeping its sessions for the next process with resume.state_file and ending them without", http.StatusConflict)
			return
		}
		// A drain takes as long as shutdown.drain_period and the parks
		// take, which may be longer than the listener's write deadline:
		// the answer must still reach the caller that waits for it
		// (OPERATIONS.md's rolling restart).
		_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
		said, err := (*f)(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte(said + "\n"))
	})
	a.srv = &http.Server{
		Handler: mux,
		// Of AdminConns, none is held long by a connection that asks
		// nothing: a request's head from an operator's tool or a probe
		// comes at once, and a scraper or a health check asks again
		// seconds later, so keeping an idle connection open spares it
		// nothing. Else sixteen connections that made one request each
		// and stayed open kept /readyz waiting in the listen queue for
		// ReadTimeout, past any health check's own timeout.
		ReadHeaderTimeout: adminHeadTimeout,
		IdleTimeout:       adminIdleTimeout,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      adminWriteTimeout,
		ErrorLog:          zap.NewStdLog(log),
	}
	go func() {
		defer close(a.done)
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin listener stopped", zap.Error(err))
		}
	}()
	return a, nil
}

// adminWriteTimeout bounds the writing of an answer; a test shortens it.
var adminWriteTimeout = 30 * time.Second

// Addr is the bound address.
func (a *Admin) Addr() net.Addr { return a.ln.Addr() }

// SetDrain sets what POST /drain runs; with none set (a single node), it
// answers 409.
func (a *Admin) SetDrain(f Drainer) { a.drain.Store(&f) }

// SetReady sets what /readyz answers.
func (a *Admin) SetReady(ready bool) { a.ready.Store(ready) }

// SetReadyCheck sets a condition /readyz asks while the daemon is
// ready; with none set, being ready is enough.
func (a *Admin) SetReadyCheck(f ReadyCheck) { a.check.Store(&f) }

// Close stops the listener, letting scrapes in flight finish until ctx ends.
func (a *Admin) Close(ctx context.Context) error {
	err := a.srv.Shutdown(ctx)
	<-a.done
	return err
}
