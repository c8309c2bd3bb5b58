package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"duet/config"
	"duet/engine"
	"duet/engine/cluster"
)

// parkTimeout bounds the parking of the sessions a drain sent away,
// after the engine's part, which shutdown_timeout bounds: a drain that
// used all of it still gets to hand its sessions to the other nodes.
const parkTimeout = 5 * time.Second

// drainer drains a node of a cluster for a restart, once, whether
// SIGTERM or POST /drain asks first: the engine tells every client to
// reconnect and resume, closing the connections over
// shutdown.drain_period, and the node parks the sessions so that any
// other node takes them up (docs/RESUME.md). A node drained by POST
// /drain stays up, refusing connections and not ready, until it is
// stopped.
type drainer struct {
	srv  *engine.Server
	node *cluster.Node
	ops  *operations
	log  *zap.Logger
	cfg  atomic.Pointer[config.Config] // the configuration in force (a reload changes it)

	mu    sync.Mutex
	begun bool // a drain has begun; done closes when it ends
	done  chan struct{}
	said  string // what the drain did, once done is closed
}

func newDrainer(srv *engine.Server, node *cluster.Node, ops *operations, log *zap.Logger, cfg *config.Config) *drainer {
	d := &drainer{srv: srv, node: node, ops: ops, log: log, done: make(chan struct{})}
	d.cfg.Store(cfg)
	return d
}

// errUnlinked refuses a drain the node cannot carry out.
var errUnlinked = errors.New("cannot drain: not linked to Redis, so no session can be parked for another node; " +
	"the node is left as it was (a stop ends every session, telling each user so)")

// run drains the node, or waits for the drain already under way, and
// says what it did; it returns early with ctx's error if ctx ends
// first, the drain going on. A node that is not linked to Redis is not
// drained (errUnlinked): its parks would all fail, and every client
// would be told to resume a session that no node will have. It stays
// as it was, and a later drain may find Redis back.
func (d *drainer) run(ctx context.Context) (string, error) {
	d.mu.Lock()
	if !d.begun {
		if !d.node.Up() {
			d.mu.Unlock()
			return "", errUnlinked
		}
		d.begun = true
		go d.drain()
	}
	d.mu.Unlock()
	select {
	case <-d.done:
		return d.said, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (d *drainer) drain() {
	defer close(d.done)
	cfg := d.cfg.Load()
	d.ops.draining()
	d.log.Info("draining", zap.Duration("drain_period", cfg.DrainSpread()), zap.Duration("deadline", cfg.ShutdownTimeout))
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	var parked atomic.Int64
	park := func(ctx context.Context, key string) bool {
		ok := d.node.Park(ctx, key)
		if ok {
			parked.Add(1)
		}
		return ok
	}
	told := d.srv.Drain(ctx, cfg.DrainSpread(), park)
	cancel()
	// Sessions away before the drain are parked now; what cannot be is
	// ended by the shutdown. (A connected session whose park failed was
	// ended by the drain, its client told not_parked.)
	ctx, cancel = context.WithTimeout(context.Background(), parkTimeout)
	parked.Add(int64(d.node.Drain(ctx)))
	cancel()
	d.said = drainedText(told, parked.Load())
	d.log.Info("drained", zap.Int("connections", told.Told), zap.Int("not_parked", told.NotParked),
		zap.Int64("parked", parked.Load()), zap.Duration("took", time.Since(start)))
}

// drainedText is the answer to POST /drain: the connections told to
// reconnect apart from those told their session could not be kept, so
// that an operator never reads the second as the first.
func drainedText(told engine.Drained, parked int64) string {
	return fmt.Sprintf("drained: %s told to reconnect, %d told their session could not be kept (not_parked), %s parked",
		counted(int64(told.Told), "connection"), told.NotParked, counted(parked, "session"))
}

// counted is n of thing, in the plural but for one.
func counted(n int64, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return strconv.FormatInt(n, 10) + " " + thing + "s"
}
