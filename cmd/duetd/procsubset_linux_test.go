package main

import (
	"os/exec"
	"testing"
	"time"
)

// TestStartTimeUnderProcSubsetPid runs duetd as the systemd unit does,
// with a /proc of processes only (ProcSubset=pid, ProtectProc=invisible):
// there is no /proc/stat, so the process collector cannot tell the
// boot time and leaves out process_start_time_seconds. When duetd
// started must still show, as duet_start_time_seconds.
func TestStartTimeUnderProcSubsetPid(t *testing.T) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("no unshare")
	}
	// A mount and pid namespace of its own, in a user namespace so that
	// no privilege is needed where the kernel allows that; the new /proc
	// shows processes only, as the unit's does (Linux 5.8 or later).
	wrap := []string{unshare, "--map-root-user", "--mount", "--pid", "--fork", "--kill-child",
		"sh", "-c", `mount -t proc -o subset=pid,hidepid=invisible proc /proc && test ! -e /proc/stat && exec "$0" "$@"`}
	if out, err := exec.Command(wrap[0], append(wrap[1:], "true")...).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a /proc of processes only here: %v %s", err, out)
	}
	before := time.Now()
	d := newDaemon(t, "", "", "", "")
	d.start(exec.Command(wrap[0], append(wrap[1:], duetdBinary(t), "--config", d.Conf)...))
	d.WaitReady()
	got := scrape(t, "http://"+d.Admin+"/metrics")
	_, procShows := got["process_start_time_seconds"]
	start, ok := got["duet_start_time_seconds"]
	if !ok {
		t.Fatalf("no duet_start_time_seconds (process_start_time_seconds shows: %v)", procShows)
	}
	if lo, hi := float64(before.Unix()), float64(time.Now().Unix()+1); start < lo || start > hi {
		t.Fatalf("duet_start_time_seconds %f, want between %f and %f", start, lo, hi)
	}
	if procShows {
		t.Log("process_start_time_seconds shows even without /proc/stat")
	}
}
