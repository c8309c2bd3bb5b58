package main

import (
	"context"
	"fmt"
	"net"
	"time"

	"go.uber.org/zap"

	"duet/engine"
	"duet/engine/hub"
	"duet/engine/service"
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

// listen binds the admin listener when addr is not "". It runs before
// the engine binds its own, and logs nothing: the daemon says where it
// listens only once every listener is bound. /readyz answers 503 until
// started.
func (o *operations) listen(addr string) error {
	if addr == "" {
		return nil
	}
	a, err := service.StartAdmin(addr, o.metrics.Registry, o.log)
	if err != nil {
		return &engine.ListenError{Key: "admin.listen", Addr: addr, Err: err}
	}
	o.admin = a
	return nil
}

// started runs once every listener is bound: it says where the admin
// listener is, turns /readyz to 200 (a node of a cluster's only while it
// is linked to Redis, linkedToRedis), and only then tells systemd the
// service is ready.
func (o *operations) started(srv *engine.Server) {
	if o.admin != nil {
		o.admin.SetReady(true)
		o.log.Info("admin listening", zap.Stringer("admin", o.admin.Addr()))
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
}

// adminAddr is the admin listener's bound address, nil when it is off.
func (o *operations) adminAddr() net.Addr {
	if o.admin == nil {
		return nil
	}
	return o.admin.Addr()
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

// draining runs as a drain begins (drain.go): /readyz turns 503, as
// the node takes no new users.
func (o *operations) draining() {
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
