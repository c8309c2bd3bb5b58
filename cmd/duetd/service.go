package main

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"duet/config"
	"duet/engine"
	"duet/engine/hub"
	"duet/service"
)

// operations is what runs beside the engine for operators: metrics, the
// admin listener and systemd notifications. main only calls its methods
// at the points of the daemon's life they belong to.
type operations struct {
	log      *zap.Logger
	core     *hub.Hub
	metrics  *service.Metrics
	notifier *service.Notifier
	admin    *service.Admin // nil when admin.listen is ""
	stopRun  context.CancelFunc
}

func newOperations(log *zap.Logger, core *hub.Hub) *operations {
	return &operations{
		log:      log,
		core:     core,
		metrics:  service.NewMetrics(core),
		notifier: service.NewNotifier(log),
	}
}

// started runs once the engine's listeners are bound: it binds the admin
// listener, and only then tells systemd the service is ready.
func (o *operations) started(cfg *config.Config, srv *engine.Server) error {
	if cfg.Admin.Listen != "" {
		a, err := service.StartAdmin(cfg.Admin.Listen, o.metrics.Registry, o.log)
		if err != nil {
			return fmt.Errorf("admin listener: %w", err)
		}
		o.admin = a
		a.SetReady(true)
		o.log.Info("admin listening", zap.Stringer("admin", a.Addr()))
	}
	o.notifier.Ready()
	ctx, cancel := context.WithCancel(context.Background())
	o.stopRun = cancel
	status := func() string {
		st := o.core.Stats()
		return fmt.Sprintf("%d connections, %d users, %d pairs", srv.Conns(), st.Users, st.Pairs)
	}
	healthy := func() bool { return srv.Healthy(5 * time.Second) }
	go o.notifier.Run(ctx, status, healthy)
	return nil
}

// reloading and reloaded bracket a SIGHUP reload for systemd.
func (o *operations) reloading() { o.notifier.Reloading() }
func (o *operations) reloaded()  { o.notifier.Reloaded() }

// stopping runs as a shutdown begins: systemd is told, and /readyz turns
// 503 so a load balancer stops sending new users here.
func (o *operations) stopping() {
	o.notifier.Stopping()
	if o.admin != nil {
		o.admin.SetReady(false)
	}
}

// stop ends the notifier and the admin listener, after the engine.
func (o *operations) stop() {
	if o.stopRun != nil {
		o.stopRun()
	}
	if o.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = o.admin.Close(ctx)
	}
}
