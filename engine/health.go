package engine

import (
	"context"
	"time"
)

// Healthy reports whether the engine is running and each event loop that
// has served a connection runs a task within timeout. A loop stuck in a
// callback fails it, so the systemd watchdog stops being fed and the
// service is restarted. It never reads Done, whose one value belongs to
// whoever waits for the engine to end.
func (s *Server) Healthy(timeout time.Duration) bool {
	select {
	case <-s.booted:
	default:
		return false
	}
	if s.eng.Validate() != nil {
		return false
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for _, ls := range s.loopList() {
		ran := make(chan struct{})
		err := ls.execute(context.Background(), func() { close(ran) })
		if err != nil {
			return false
		}
		select {
		case <-ran:
		case <-deadline.C:
			return false
		}
	}
	return true
}
