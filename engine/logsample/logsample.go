// Package logsample keeps a flood from filling the log: a line that a
// client can cause at will (a refused connection, a refused login) is
// let through at most once per interval, with the count of those held
// back since the last one.
package logsample

import (
	"strconv"
	"sync"
	"time"
)

// Sampler lets a log line through at most once per Interval and counts
// the ones it holds back. Its zero value lets one through a second. It is
// safe for concurrent use.
type Sampler struct {
	// Interval is the least time between two lines let through; zero
	// means a second. Set it before first use.
	Interval time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// Allow reports whether to log now and how many lines were held back
// since the last one that was let through.
func (s *Sampler) Allow(now time.Time) (ok bool, suppressed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	interval := s.Interval
	if interval <= 0 {
		interval = time.Second
	}
	if !s.last.IsZero() && now.Sub(s.last) < interval {
		s.suppressed++
		return false, 0
	}
	s.last = now
	suppressed, s.suppressed = s.suppressed, 0
	return true, suppressed
}

// Printable is s, a string a client chose (a header, a node id in a
// forged frame), made fit for a log line: cut to at most max bytes, with
// "…" after it if cut, and every rune outside printable ASCII written as
// a Go escape. A log line then shows what was sent, and neither a bidi
// override nor a control character nor a header of kilobytes reaches an
// operator's terminal as it was.
func Printable(s string, max int) string {
	cut := len(s) > max
	if cut {
		s = s[:max]
	}
	q := strconv.QuoteToASCII(s)
	q = q[1 : len(q)-1]
	if cut {
		q += "…"
	}
	return q
}
