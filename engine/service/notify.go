package service

import (
	"context"
	"fmt"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Notifier speaks systemd's notification protocol (sd_notify) for a
// Type=notify unit. Outside systemd (no NOTIFY_SOCKET) every call does
// nothing.
type Notifier struct {
	log *zap.Logger
	// StatusEvery is how often Run sends STATUS=.
	StatusEvery time.Duration
}

// NewNotifier returns a notifier that logs failures to log.
func NewNotifier(log *zap.Logger) *Notifier {
	return &Notifier{log: log, StatusEvery: 5 * time.Second}
}

func (n *Notifier) send(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.log.Warn("sd_notify failed", zap.String("state", state), zap.Error(err))
	}
}

// Ready tells systemd the service is up: every listener is bound.
func (n *Notifier) Ready() { n.send(daemon.SdNotifyReady) }

// Stopping tells systemd a shutdown has begun.
func (n *Notifier) Stopping() { n.send(daemon.SdNotifyStopping) }

// Reloading and Reloaded bracket a configuration reload. systemd wants
// the monotonic clock with RELOADING=1 to order it against the reload
// request.
func (n *Notifier) Reloading() {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	n.send(fmt.Sprintf("%s\nMONOTONIC_USEC=%d", daemon.SdNotifyReloading, ts.Nano()/1000))
}

// Reloaded ends a reload begun with Reloading.
func (n *Notifier) Reloaded() { n.send(daemon.SdNotifyReady) }

// Status sends a one-line status for `systemctl status`.
func (n *Notifier) Status(s string) { n.send("STATUS=" + s) }

// Run sends STATUS= every StatusEvery and, when the unit sets
// WatchdogSec, WATCHDOG=1 at half the watchdog interval as long as
// healthy says so (a wedged engine then gets restarted). It returns when
// ctx ends.
func (n *Notifier) Run(ctx context.Context, status func() string, healthy func() bool) {
	var watchdog <-chan time.Time
	if every, err := daemon.SdWatchdogEnabled(false); err != nil {
		n.log.Warn("bad watchdog settings", zap.Error(err))
	} else if every > 0 {
		t := time.NewTicker(every / 2)
		defer t.Stop()
		watchdog = t.C
	}
	statusTick := time.NewTicker(n.StatusEvery)
	defer statusTick.Stop()
	n.Status(status())
	for {
		select {
		case <-ctx.Done():
			return
		case <-statusTick.C:
			n.Status(status())
		case <-watchdog:
			if healthy() {
				n.send(daemon.SdNotifyWatchdog)
			}
		}
	}
}
