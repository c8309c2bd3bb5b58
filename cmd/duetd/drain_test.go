package main

import (
	"testing"

	"duet/engine"
)

// TestDrainedText: the answer to POST /drain counts in the plural but
// for one.
func TestDrainedText(t *testing.T) {
	for _, c := range []struct {
		told   engine.Drained
		parked int64
		want   string
	}{
		{engine.Drained{}, 0, "drained: 0 connections told to reconnect, 0 told their session could not be kept (not_parked), 0 sessions parked"},
		{engine.Drained{Told: 1, NotParked: 1}, 1, "drained: 1 connection told to reconnect, 1 told their session could not be kept (not_parked), 1 session parked"},
		{engine.Drained{Told: 12, NotParked: 2}, 10, "drained: 12 connections told to reconnect, 2 told their session could not be kept (not_parked), 10 sessions parked"},
	} {
		if got := drainedText(c.told, c.parked); got != c.want {
			t.Errorf("drainedText(%+v, %d) = %q, want %q", c.told, c.parked, got, c.want)
		}
	}
}
