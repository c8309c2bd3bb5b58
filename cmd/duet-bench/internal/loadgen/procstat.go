package loadgen

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"syscall"
	"time"
)

// What a server costs per message is read from the kernel's own counters
// for the server process, before and after a phase:
//
//   - CPU time. /proc/PID/stat's utime and stime count in clock ticks
//     (USER_HZ, 100 a second): 10 ms steps, a few percent of a pairing
//     phase that costs the server 0.2 s. Each thread's
//     /proc/PID/task/TID/schedstat starts with the nanoseconds it has
//     spent on a CPU, which the scheduler keeps exactly; their sum is the
//     process's CPU time to the nanosecond, as long as no thread exited
//     during the phase (an exited thread's time leaves the per-thread
//     files but stays in stat's totals). So the sum is used when every
//     thread of the first reading is still there and the sum agrees with
//     stat's ticks to within their rounding; otherwise stat's ticks are.
//     stat also gives the split between user and kernel time, in ticks.
//   - Read and write system calls: syscr and syscw of /proc/PID/io,
//     counted by the kernel for the whole process, exited threads
//     included. They count read(2), readv(2) and their kin, and write(2),
//     writev(2) and theirs; an eventfd wake-up is a write and its
//     consumption a read, so those are in the counts too.
//   - Context switches: the third field of each thread's schedstat, how
//     many times the thread was put on a CPU.
//
// Nothing here slows the server: the files are read twice per phase.

// clockTicksPerSecond is USER_HZ, the unit of /proc/PID/stat's times. The
// kernel fixes it at 100 for user space on every architecture Go supports
// on Linux (what getconf CLK_TCK prints).
const clockTicksPerSecond = 100

// procCounters is one reading of a process's counters.
type procCounters struct {
	threadNanos map[int]int64 // time on a CPU by thread id, from schedstat
	switches    int64         // times any live thread was put on a CPU
	userTicks   int64         // utime, from stat
	systemTicks int64         // stime, from stat
	readCalls   int64         // syscr, from io
	writeCalls  int64         // syscw, from io
}

// procReader reads a process's counters from a proc file system: /proc
// itself, or a directory of fixture files in tests.
type procReader struct {
	fsys fs.FS
	pid  int
}

func newProcReader(pid int) procReader {
	return procReader{fsys: os.DirFS("/proc"), pid: pid}
}

func (p procReader) read() (procCounters, error) {
	dir := strconv.Itoa(p.pid)
	c := procCounters{threadNanos: make(map[int]int64)}
	// Threads first and io last: a reading spans a few system calls, and
	// this order keeps the CPU reading and the call counts close together.
	tasks, err := fs.ReadDir(p.fsys, dir+"/task")
	if err != nil {
		return c, err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		data, err := fs.ReadFile(p.fsys, dir+"/task/"+t.Name()+"/schedstat")
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			continue // the thread exited since the directory was listed
		}
		if err != nil {
			return c, err
		}
		nanos, runs, err := parseSchedstat(data)
		if err != nil {
			return c, fmt.Errorf("task %d schedstat: %w", tid, err)
		}
		c.threadNanos[tid] = nanos
		c.switches += runs
	}
	data, err := fs.ReadFile(p.fsys, dir+"/stat")
	if err != nil {
		return c, err
	}
	if c.userTicks, c.systemTicks, err = parseStatTimes(data); err != nil {
		return c, fmt.Errorf("stat: %w", err)
	}
	data, err = fs.ReadFile(p.fsys, dir+"/io")
	if err != nil {
		return c, err
	}
	if c.readCalls, c.writeCalls, err = parseIOCalls(data); err != nil {
		return c, fmt.Errorf("io: %w", err)
	}
	return c, nil
}

// parseStatTimes reads utime and stime, fields 14 and 15 of
// /proc/PID/stat. Field 2, the command name in parentheses, may itself
// hold spaces and parentheses, so fields are counted from the last ')'.
func parseStatTimes(stat []byte) (user, system int64, err error) {
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, 0, errors.New("no command name")
	}
	fields := bytes.Fields(stat[end+1:])
	// fields[0] is field 3 (the state), so field n is fields[n-3].
	if len(fields) < 13 {
		return 0, 0, fmt.Errorf("%d fields after the command name, want at least 13", len(fields))
	}
	if user, err = strconv.ParseInt(string(fields[11]), 10, 64); err != nil {
		return 0, 0, fmt.Errorf("utime: %w", err)
	}
	if system, err = strconv.ParseInt(string(fields[12]), 10, 64); err != nil {
		return 0, 0, fmt.Errorf("stime: %w", err)
	}
	return user, system, nil
}

// parseSchedstat reads a thread's /proc/PID/task/TID/schedstat: the
// nanoseconds it has run, the nanoseconds it waited to run, and how many
// times it was put on a CPU.
func parseSchedstat(data []byte) (nanos, runs int64, err error) {
	fields := bytes.Fields(data)
	if len(fields) != 3 {
		return 0, 0, fmt.Errorf("%d fields, want 3", len(fields))
	}
	if nanos, err = strconv.ParseInt(string(fields[0]), 10, 64); err != nil {
		return 0, 0, err
	}
	if runs, err = strconv.ParseInt(string(fields[2]), 10, 64); err != nil {
		return 0, 0, err
	}
	return nanos, runs, nil
}

// parseIOCalls reads syscr and syscw from /proc/PID/io.
func parseIOCalls(data []byte) (reads, writes int64, err error) {
	found := 0
	for line := range bytes.SplitSeq(data, []byte("\n")) {
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		var dst *int64
		switch string(name) {
		case "syscr":
			dst = &reads
		case "syscw":
			dst = &writes
		default:
			continue
		}
		if *dst, err = strconv.ParseInt(string(bytes.TrimSpace(value)), 10, 64); err != nil {
			return 0, 0, fmt.Errorf("%s: %w", name, err)
		}
		found++
	}
	if found != 2 {
		return 0, 0, errors.New("no syscr and syscw lines")
	}
	return reads, writes, nil
}

// CPU sources a ServerUsage may report.
const (
	cpuFromSchedstat = "schedstat"
	cpuFromStat      = "stat"
)

// usageBetween is what the process spent between two readings; setOps
// adds the figures per op.
func usageBetween(before, after procCounters, elapsed time.Duration) *ServerUsage {
	const tick = int64(time.Second / clockTicksPerSecond)
	statNanos := (after.userTicks + after.systemTicks - before.userTicks - before.systemTicks) * tick
	u := &ServerUsage{
		Seconds:         elapsed.Seconds(),
		UserSeconds:     float64(after.userTicks-before.userTicks) / clockTicksPerSecond,
		SystemSeconds:   float64(after.systemTicks-before.systemTicks) / clockTicksPerSecond,
		ReadCalls:       after.readCalls - before.readCalls,
		WriteCalls:      after.writeCalls - before.writeCalls,
		ContextSwitches: after.switches - before.switches,
	}
	// The threads' sum is exact unless a thread exited in between, which
	// takes its time out of the sum: then it falls short of stat's total,
	// which stat's rounding (under a tick at each end) cannot explain.
	kept := len(before.threadNanos) > 0
	var schedNanos int64
	for tid, n := range before.threadNanos {
		if _, ok := after.threadNanos[tid]; !ok {
			kept = false
			break
		}
		schedNanos -= n
	}
	for _, n := range after.threadNanos {
		schedNanos += n
	}
	if kept && schedNanos > statNanos-2*tick && schedNanos < statNanos+2*tick {
		u.CPUSource, u.CPUSeconds = cpuFromSchedstat, float64(schedNanos)/1e9
	} else {
		u.CPUSource, u.CPUSeconds = cpuFromStat, float64(statNanos)/1e9
	}
	return u
}

// setOps records how many ops (delivered messages, or pairs formed) the
// usage was for, and divides by them.
func (u *ServerUsage) setOps(ops int64) {
	u.Ops = ops
	u.CPUMicrosPerOp, u.ReadsPerOp, u.WritesPerOp, u.SwitchesPerOp = 0, 0, 0, 0
	if ops <= 0 {
		return
	}
	n := float64(ops)
	u.CPUMicrosPerOp = u.CPUSeconds * 1e6 / n
	u.ReadsPerOp = float64(u.ReadCalls) / n
	u.WritesPerOp = float64(u.WriteCalls) / n
	u.SwitchesPerOp = float64(u.ContextSwitches) / n
}

// phaseMeter brackets phases of a run with readings of the server's
// counters.
type phaseMeter struct {
	proc   procReader
	before procCounters
	start  time.Time
}

func (m *phaseMeter) begin() error {
	var err error
	m.before, err = m.proc.read()
	m.start = time.Now()
	return err
}

func (m *phaseMeter) end(ops int64) (*ServerUsage, error) {
	elapsed := time.Since(m.start)
	after, err := m.proc.read()
	if err != nil {
		return nil, err
	}
	u := usageBetween(m.before, after, elapsed)
	u.setOps(ops)
	return u, nil
}
