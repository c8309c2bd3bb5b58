package main

import (
	"fmt"

	"go.uber.org/zap"

	"duet/config"
	"duet/engine"
	"duet/engine/cluster"
	"duet/engine/service"
)

// descriptors is the part of the process's descriptor limit the engine
// may use: the limit, less what the process holds outside the engine at
// most (engine/descriptors.go says what the engine holds itself, and why
// it admits no more connections than fit).
func descriptors(cfg *config.Config) engine.Descriptors {
	elsewhere := 3 + // standard input, output and error
		2 + // the Go runtime's poller and its wake-up
		8 + // files open for a moment: the users file, the state file and its directory, /proc for the metrics
		32 // a margin: name lookups, systemd's notify socket, what a library opens unsaid
	if cfg.Admin.Listen != "" {
		// The listener, and the scrapes, probes and operators' calls it
		// serves at once: the admin listener is for the operator's
		// network, and makes any more wait.
		elsewhere += 1 + service.AdminConns
	}
	if cfg.Cluster.Redis != "" {
		elsewhere += cluster.RedisConns(cfg.Cluster.Redis)
	}
	return engine.Descriptors{Limit: engine.FileLimit(), Elsewhere: elsewhere}
}

// raiseFileLimit is how to raise the descriptor limit.
const raiseFileLimit = "set LimitNOFILE= in the systemd unit (the shipped one sets 1048576), or ulimit -n in the shell that starts duetd"

// connsRoomNote is what check-config says of limits.max_conns when the
// descriptor limit admits fewer connections, "" when it does not.
func connsRoomNote(d *built, maxConns int) string {
	room := d.srv.ConnsRoom()
	if room == 0 || maxConns <= room {
		return ""
	}
	return fmt.Sprintf("the descriptor limit here, %d, admits %d; a limit of %d admits them all: %s",
		d.files.Limit, room, d.srv.FilesFor(maxConns), raiseFileLimit)
}

// warnConnsRoom logs that the descriptor limit admits fewer connections
// than limits.max_conns, once for each value of max_conns: at start,
// and on a reload that sets another. warned is the value last warned
// about (0: none); it returns the value to pass next time.
func warnConnsRoom(log *zap.Logger, d *built, maxConns, warned int) int {
	room := d.srv.ConnsRoom()
	if room == 0 || maxConns <= room {
		return 0
	}
	if maxConns != warned {
		fields := []zap.Field{zap.String("key", "limits.max_conns"), zap.Int("max_conns", maxConns),
			zap.Int("descriptor_limit", d.files.Limit), zap.Int("admitting", room),
			zap.Int("descriptor_limit_needed", d.srv.FilesFor(maxConns)), zap.String("raise_with", raiseFileLimit)}
		if b := d.srv.Backlog(); b > 0 {
			fields = append(fields, zap.Int("listen_backlog", b))
		}
		log.Warn("limits.max_conns is more than the descriptor limit allows; admitting fewer", fields...)
	}
	return maxConns
}
