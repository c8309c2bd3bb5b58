package engine

import (
	"sync"
	"time"

	"go.uber.org/zap"
)

// logSampler lets a log line through at most once per interval and counts
// the ones it holds back, so a flood of refused connections costs one
// line a second in the log instead of filling the disk. Its zero value
// logs at most once a second; it is safe for concurrent use.
type logSampler struct {
	mu         sync.Mutex
	interval   time.Duration
	last       time.Time
	suppressed int
}

// allow reports whether to log now and how many lines were held back
// since the last one that was let through.
func (l *logSampler) allow(now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	interval := l.interval
	if interval <= 0 {
		interval = time.Second
	}
	if !l.last.IsZero() && now.Sub(l.last) < interval {
		l.suppressed++
		return false, 0
	}
	l.last = now
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}

// logRefusal logs a refused connection, sampled.
func (s *Server) logRefusal(msg, ip string) {
	ok, suppressed := s.refusalLog.allow(time.Now())
	if !ok {
		return
	}
	fields := []zap.Field{zap.String("remote", ip)}
	if suppressed > 0 {
		fields = append(fields, zap.Int("refusals_not_logged", suppressed))
	}
	s.log.Warn(msg, fields...)
}
