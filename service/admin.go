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
)

// Admin is the admin listener: a plain net/http server, since its
// traffic is a scrape every few seconds from loopback, not users.
//
//	/metrics  Prometheus text format
//	/healthz  200 while the process runs
//	/readyz   200 once every listener is bound, 503 before and while shutting down
type Admin struct {
	srv   *http.Server
	ln    net.Listener
	ready atomic.Bool
	done  chan struct{}
}

// StartAdmin listens on addr and serves reg's metrics and the health
// endpoints in the background.
func StartAdmin(addr string, reg *prometheus.Registry, log *zap.Logger) (*Admin, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
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
		_, _ = w.Write([]byte("ready\n"))
	})
	a.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
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

// Addr is the bound address.
func (a *Admin) Addr() net.Addr { return a.ln.Addr() }

// SetReady sets what /readyz answers.
func (a *Admin) SetReady(ready bool) { a.ready.Store(ready) }

// Close stops the listener, letting scrapes in flight finish until ctx ends.
func (a *Admin) Close(ctx context.Context) error {
	err := a.srv.Shutdown(ctx)
	<-a.done
	return err
}
