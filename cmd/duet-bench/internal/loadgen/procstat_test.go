package loadgen

import (
	"io/fs"
	"math"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"time"
)

// The fixtures under testdata/proc are a duetd's /proc/PID files (stat,
// io, and each thread's schedstat) read just before and just after
// 100,000 messages were relayed through it.
const fixturePID = 25897

func TestParseStatTimes(t *testing.T) {
	tests := []struct {
		name         string
		stat         string
		user, system int64
	}{
		{"duetd", "25897 (duetd) S 1 25890 7533 0 -1 4194560 2493 0 0 0 466 766 0 0 20 0 11 0 173581", 466, 766},
		// The command name is what the process chose: spaces and
		// parentheses in it must not shift the fields.
		{"name with spaces and parentheses", "77 (a b) (c)) R 1 77 77 0 -1 0 0 0 0 0 12 34 0 0 20 0 1 0 5", 12, 34},
		{"name that looks like fields", "78 (1 2 3 4 5 6 7 8 9 10 11 12) S 1 78 78 0 -1 0 0 0 0 0 56 78 0 0", 56, 78},
	}
	for _, tt := range tests {
		user, system, err := parseStatTimes([]byte(tt.stat))
		if err != nil || user != tt.user || system != tt.system {
			t.Errorf("%s: got %d, %d, %v; want %d, %d", tt.name, user, system, err, tt.user, tt.system)
		}
	}
	for _, bad := range []string{
		"",
		"25897 duetd S 1 2 3",
		"25897 (duetd) S 1 25890 7533 0 -1 4194560 2493 0 0 0 466",
		"25897 (duetd) S 1 25890 7533 0 -1 4194560 2493 0 0 0 x 766",
	} {
		if _, _, err := parseStatTimes([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseSchedstatAndIO(t *testing.T) {
	nanos, runs, err := parseSchedstat([]byte("2126021006 26721945935 105840\n"))
	if err != nil || nanos != 2126021006 || runs != 105840 {
		t.Errorf("schedstat: %d, %d, %v", nanos, runs, err)
	}
	for _, bad := range []string{"", "1 2", "1 2 3 4", "a 2 3", "1 2 c"} {
		if _, _, err := parseSchedstat([]byte(bad)); err == nil {
			t.Errorf("schedstat %q accepted", bad)
		}
	}
	io, err := os.ReadFile("testdata/proc/after/25897/io")
	if err != nil {
		t.Fatal(err)
	}
	reads, writes, err := parseIOCalls(io)
	if err != nil || reads != 516629 || writes != 595123 {
		t.Errorf("io: %d, %d, %v", reads, writes, err)
	}
	for _, bad := range []string{"", "rchar: 1\nwchar: 2\n", "syscr: 1\n", "syscr: 1\nsyscw: x\n"} {
		if _, _, err := parseIOCalls([]byte(bad)); err == nil {
			t.Errorf("io %q accepted", bad)
		}
	}
}

// mapFS copies a fixture directory into memory, to be changed by a test.
func mapFS(t *testing.T, dir string) fstest.MapFS {
	t.Helper()
	m := fstest.MapFS{}
	err := fs.WalkDir(os.DirFS(dir), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(dir + "/" + path)
		m[path] = &fstest.MapFile{Data: data}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func readFixture(t *testing.T, fsys fs.FS) procCounters {
	t.Helper()
	c, err := procReader{fsys: fsys, pid: fixturePID}.read()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestUsageFromFixtures(t *testing.T) {
	before := readFixture(t, os.DirFS("testdata/proc/before"))
	after := readFixture(t, os.DirFS("testdata/proc/after"))
	if len(before.threadNanos) != 11 || before.threadNanos[25908] != 2088762670 {
		t.Fatalf("threads: %v", before.threadNanos)
	}
	u := usageBetween(before, after, time.Second)
	u.setOps(100000)
	// The threads' runtimes (in ns) add up to 12,334,177,557 before and
	// 12,485,032,403 after; stat's ticks to 466+766 and 472+774.
	want := ServerUsage{
		Ops: 100000, Seconds: 1,
		CPUSeconds: 0.150854846, CPUSource: cpuFromSchedstat, CPUMicrosPerOp: 1.50854846,
		UserSeconds: 0.06, SystemSeconds: 0.08,
		ReadCalls: 516629 - 509720, WriteCalls: 595123 - 587573,
		ReadsPerOp: 0.06909, WritesPerOp: 0.0755,
		ContextSwitches: 354544 - 351548, SwitchesPerOp: 0.02996,
	}
	if !near(u.CPUSeconds, want.CPUSeconds) || u.CPUSource != want.CPUSource || !near(u.CPUMicrosPerOp, want.CPUMicrosPerOp) ||
		!near(u.UserSeconds, want.UserSeconds) || !near(u.SystemSeconds, want.SystemSeconds) ||
		u.ReadCalls != want.ReadCalls || u.WriteCalls != want.WriteCalls || !near(u.ReadsPerOp, want.ReadsPerOp) ||
		!near(u.WritesPerOp, want.WritesPerOp) || u.ContextSwitches != want.ContextSwitches ||
		!near(u.SwitchesPerOp, want.SwitchesPerOp) || u.Ops != want.Ops || u.Seconds != want.Seconds {
		t.Errorf("usage\n got %+v\nwant %+v", *u, want)
	}

	// A thread that exits takes its time out of the threads' sum; stat
	// keeps it, so stat's ticks are used: 14 ticks.
	exited := mapFS(t, "testdata/proc/after")
	delete(exited, "25897/task/25908/schedstat")
	u = usageBetween(before, readFixture(t, exited), time.Second)
	if u.CPUSource != cpuFromStat || !near(u.CPUSeconds, 0.14) {
		t.Errorf("a thread exited: %s %v, want stat 0.14", u.CPUSource, u.CPUSeconds)
	}

	// A thread started during the phase spent all its time in it.
	started := mapFS(t, "testdata/proc/after")
	started["25897/task/30000/schedstat"] = &fstest.MapFile{Data: []byte("5000000 100 7\n")}
	u = usageBetween(before, readFixture(t, started), time.Second)
	if u.CPUSource != cpuFromSchedstat || !near(u.CPUSeconds, 0.155854846) || u.ContextSwitches != 2996+7 {
		t.Errorf("a thread started: %s %v, %d switches", u.CPUSource, u.CPUSeconds, u.ContextSwitches)
	}

	// A sum far from stat's ticks means the threads are not the ones
	// counted before (a thread came and went, or an id was reused).
	reused := mapFS(t, "testdata/proc/after")
	reused["25897/task/25911/schedstat"] = &fstest.MapFile{Data: []byte("90355382 302662 1\n")}
	u = usageBetween(before, readFixture(t, reused), time.Second)
	if u.CPUSource != cpuFromStat || !near(u.CPUSeconds, 0.14) {
		t.Errorf("a sum stat cannot explain: %s %v, want stat 0.14", u.CPUSource, u.CPUSeconds)
	}

	// Without per-thread figures (a kernel without schedstat) stat is
	// all there is.
	withoutSchedstat := func(dir string) fs.FS {
		m := mapFS(t, dir)
		for name := range m {
			if task, ok := strings.CutSuffix(name, "/schedstat"); ok {
				delete(m, name)
				m[task] = &fstest.MapFile{Mode: fs.ModeDir}
			}
		}
		return m
	}
	u = usageBetween(readFixture(t, withoutSchedstat("testdata/proc/before")), readFixture(t, withoutSchedstat("testdata/proc/after")), time.Second)
	if u.CPUSource != cpuFromStat || !near(u.CPUSeconds, 0.14) {
		t.Errorf("no schedstat: %s %v, want stat 0.14", u.CPUSource, u.CPUSeconds)
	}

	u.setOps(0)
	if u.CPUMicrosPerOp != 0 || u.ReadsPerOp != 0 {
		t.Errorf("per op with no ops: %+v", u)
	}
}

func TestProcReaderFailures(t *testing.T) {
	good := mapFS(t, "testdata/proc/after")
	for _, tt := range []struct {
		name  string
		spoil func(fstest.MapFS)
	}{
		{"no such process", func(m fstest.MapFS) {
			for k := range m {
				delete(m, k)
			}
		}},
		{"no io (not ours to read)", func(m fstest.MapFS) { delete(m, "25897/io") }},
		{"bad stat", func(m fstest.MapFS) { m["25897/stat"] = &fstest.MapFile{Data: []byte("garbage")} }},
		{"bad schedstat", func(m fstest.MapFS) { m["25897/task/25908/schedstat"] = &fstest.MapFile{Data: []byte("1 2")} }},
	} {
		m := fstest.MapFS{}
		for k, v := range good {
			m[k] = v
		}
		tt.spoil(m)
		if _, err := (procReader{fsys: m, pid: fixturePID}).read(); err == nil {
			t.Errorf("%s: read succeeded", tt.name)
		}
	}
}

func cpuOfSelf(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestProcReaderSelf reads this process's own counters around work whose
// cost the test knows: CPU time as getrusage reports it, and a counted
// number of read and write calls.
func TestProcReaderSelf(t *testing.T) {
	r := newProcReader(os.Getpid())
	before, err := r.read()
	if err != nil {
		t.Fatal(err)
	}
	// CPU: spin until getrusage has seen 100 ms more.
	cpu0 := cpuOfSelf(t)
	deadline := time.Now().Add(20 * time.Second)
	x := 0
	for cpuOfSelf(t)-cpu0 < 100*time.Millisecond && time.Now().Before(deadline) {
		for i := range 100000 {
			x += i * i
		}
	}
	spent := cpuOfSelf(t) - cpu0
	if spent < 100*time.Millisecond {
		t.Fatalf("could not spend 100ms of CPU in 20s (%v, %d)", spent, x)
	}
	// System calls: 1000 reads of /dev/zero, 500 writes to /dev/null;
	// neither can be polled, so each is one system call.
	zero, err := os.Open("/dev/zero")
	if err != nil {
		t.Fatal(err)
	}
	defer zero.Close()
	null, err := os.OpenFile("/dev/null", os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	buf := make([]byte, 16)
	for range 1000 {
		if _, err := zero.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	for range 500 {
		if _, err := null.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	// Context switches: a thread that sleeps leaves its CPU each time.
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for range 20 {
			time.Sleep(time.Millisecond)
		}
		close(done)
	}()
	<-done
	total := cpuOfSelf(t) - cpu0
	after, err := r.read()
	if err != nil {
		t.Fatal(err)
	}
	u := usageBetween(before, after, time.Second)
	t.Logf("usage %+v; getrusage: %v spinning, %v in all", *u, spent, total)
	got := time.Duration(u.CPUSeconds * 1e9)
	// The readings bracket the spinning; anything else this process did
	// meanwhile is small. stat's ticks, if used, are within two ticks.
	if got < spent-20*time.Millisecond || got > total+total/10+20*time.Millisecond {
		t.Errorf("CPU %v from /proc (%s), getrusage %v spinning and %v in all", got, u.CPUSource, spent, total)
	}
	// The reading itself reads a few dozen files in between.
	if u.ReadCalls < 1000 || u.ReadCalls > 1300 {
		t.Errorf("read calls %d, want 1000 and a few", u.ReadCalls)
	}
	if u.WriteCalls < 500 || u.WriteCalls > 600 {
		t.Errorf("write calls %d, want 500 and a few", u.WriteCalls)
	}
	if u.ContextSwitches < 20 {
		t.Errorf("context switches %d, want at least 20", u.ContextSwitches)
	}
}
