package hub

import "time"

// clock is the hub's time: when messages were delivered, when sessions
// went away, and the timers that end them and sweep what aged out. The
// hub reads it rather than package time so that a test can move time on
// at will (fakeClock in the tests) instead of sleeping.
type clock interface {
	// now is the time since the clock started, on a monotonic clock:
	// a change of the wall clock cannot make kept messages age.
	now() time.Duration
	// afterFunc calls f on a goroutine of its own once d has passed,
	// unless stopped first.
	afterFunc(d time.Duration, f func()) stopper
}

// stopper is a timer that can be stopped: Stop reports whether it
// stopped the call, as time.Timer's does.
type stopper interface {
	Stop() bool
}

// realClock is the clock of package time.
type realClock struct {
	start time.Time
}

func newRealClock() realClock { return realClock{start: time.Now()} }

func (c realClock) now() time.Duration { return time.Since(c.start) }

func (realClock) afterFunc(d time.Duration, f func()) stopper { return time.AfterFunc(d, f) }
