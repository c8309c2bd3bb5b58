// Package benchreport writes docs/BENCHMARKS.md from the runs of
// scripts/bench.sh: duet-bench's JSON reports, one per run, listed in a
// runs.tsv file, and the output of the relay micro-benchmarks.
//
// bench.sh runs the servers in alternating rounds (the bare relay, duetd
// and duetd with resume off, the goroutine relays, then again), each
// with both relay clients, so that a busy neighbour on the machine hits
// every server alike. The report gives, for every server, scenario and
// client, the median over the rounds and the spread (lowest to
// highest), and reads the targets from ratios of medians between
// servers of the same rounds.
package benchreport

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"duet/cmd/duet-bench/internal/loadgen"
)

// Servers, scenarios and clients as runs.tsv names them.
const (
	ServerBare  = "bare"
	ServerDuetd = "duetd"
	// ServerDuetdNoResume is duetd with resume off (resume.window 0):
	// beside duetd as configured, it shows what keeping each message for
	// a resume costs.
	ServerDuetdNoResume    = "duetd-resume-off"
	ServerGoroutine        = "goroutine"
	ServerGoroutineBatched = "goroutine-batched"

	ScenarioTCP     = "tcp"     // line protocol, 200 pairs, 16 in flight
	ScenarioWS      = "ws"      // WebSocket JSON, the same load
	ScenarioMix     = "mix"     // line protocol to WebSocket
	ScenarioLatency = "lat"     // one in flight, 100 pairs
	ScenarioPairing = "pairing" // logins and pairings
	ScenarioIdle    = "idle"    // idle pairs held open

	ClientTuned = string(loadgen.ClientTuned)
	ClientPlain = string(loadgen.ClientPlain)
)

var (
	clients = []string{ClientTuned, ClientPlain}

	serverNames = map[string]string{
		ServerBare:             "bare gnet relay",
		ServerDuetd:            "duetd",
		ServerDuetdNoResume:    "duetd with resume off",
		ServerGoroutine:        "goroutine relay, one write per message",
		ServerGoroutineBatched: "goroutine relay, batched writes",
	}
	scenarioNames = map[string]string{
		ScenarioTCP: "line protocol",
		ScenarioWS:  "WebSocket JSON",
		ScenarioMix: "line to WebSocket",
	}
)

// Run is one duet-bench run.
type Run struct {
	Round    int
	Server   string
	Scenario string
	Client   string
	Command  string
	Report   *loadgen.Report // nil when the run left no report
}

// OK reports whether the run completed with every message delivered.
func (r *Run) OK() bool { return r.Report != nil && r.Report.OK() }

type key struct{ server, scenario, client string }

// Set is every run of one bench.sh invocation.
type Set struct {
	Runs   []*Run
	Micro  map[string]Micro // relay micro-benchmarks by name, e.g. "RelayTCPToTCP"
	groups map[key][]*Run   // the runs that completed, by round
}

// Micro is one micro-benchmark's result.
type Micro struct {
	NsPerOp     float64
	AllocsPerOp float64
}

// Load reads dir/runs.tsv (round, server, scenario, client, JSON file and
// command, tab-separated), the JSON reports it names, and dir/micro.txt.
// A run whose report is missing is kept, without a report, to be listed
// as failed.
func Load(dir string) (*Set, error) {
	f, err := os.Open(filepath.Join(dir, "runs.tsv"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s := &Set{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		fields := strings.Split(sc.Text(), "\t")
		if len(fields) != 6 {
			return nil, fmt.Errorf("runs.tsv line %d: %d fields, want 6", n, len(fields))
		}
		round, err := strconv.Atoi(fields[0])
		if err != nil {
			return nil, fmt.Errorf("runs.tsv line %d: round %q", n, fields[0])
		}
		r := &Run{Round: round, Server: fields[1], Scenario: fields[2], Client: fields[3], Command: fields[5]}
		if data, err := os.ReadFile(filepath.Join(dir, fields[4])); err == nil {
			var rep loadgen.Report
			if err := json.Unmarshal(data, &rep); err != nil {
				return nil, fmt.Errorf("%s: %w", fields[4], err)
			}
			r.Report = &rep
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		s.Runs = append(s.Runs, r)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	micro, err := os.ReadFile(filepath.Join(dir, "micro.txt"))
	if err != nil {
		return nil, err
	}
	s.Micro = ParseMicro(micro)
	return s, nil
}

// ParseMicro reads `go test -bench Relay -benchmem` output.
func ParseMicro(out []byte) map[string]Micro {
	m := make(map[string]Micro)
	for line := range strings.SplitSeq(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "BenchmarkRelay") {
			continue
		}
		var r Micro
		for i := 1; i+1 < len(f); i++ {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "ns/op":
				r.NsPerOp = v
			case "allocs/op":
				r.AllocsPerOp = v
			}
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(f[0], "Benchmark"), "-")
		m[name] = r
	}
	return m
}

func (s *Set) group(server, scenario, client string) []*Run {
	if s.groups == nil {
		s.groups = make(map[key][]*Run)
		for _, r := range s.Runs {
			if r.OK() {
				k := key{r.Server, r.Scenario, r.Client}
				s.groups[k] = append(s.groups[k], r)
			}
		}
	}
	return s.groups[key{server, scenario, client}]
}

// stat is a figure over the rounds: its median and its spread.
type stat struct {
	median, min, max float64
	n                int
}

func (st stat) ok() bool { return st.n > 0 }

func statOf(values []float64) stat {
	if len(values) == 0 {
		return stat{}
	}
	v := slices.Clone(values)
	slices.Sort(v)
	n := len(v)
	med := v[n/2]
	if n%2 == 0 {
		med = (v[n/2-1] + v[n/2]) / 2
	}
	return stat{median: med, min: v[0], max: v[n-1], n: n}
}

// figure picks one number out of a run; ok is false when the run does
// not have it.
type figure func(*loadgen.Report) (float64, bool)

func messagesPerSecond(r *loadgen.Report) (float64, bool) {
	if r.Relay == nil {
		return 0, false
	}
	return r.Relay.MessagesPerSecond, true
}

func p50(r *loadgen.Report) (float64, bool) {
	if r.Relay == nil {
		return 0, false
	}
	return float64(r.Relay.Latency.P50), true
}

func p99(r *loadgen.Report) (float64, bool) {
	if r.Relay == nil {
		return 0, false
	}
	return float64(r.Relay.Latency.P99), true
}

func p999(r *loadgen.Report) (float64, bool) {
	if r.Relay == nil {
		return 0, false
	}
	return float64(r.Relay.Latency.P999), true
}

// usage makes a figure of what a process spent in one phase of a run
// (phase returns nil when the run has no such reading), picked by pick.
func usage(phase func(*loadgen.Report) *loadgen.ServerUsage, pick func(*loadgen.ServerUsage) float64) figure {
	return func(r *loadgen.Report) (float64, bool) {
		u := phase(r)
		if u == nil || u.Ops == 0 {
			return 0, false
		}
		return pick(u), true
	}
}

// serverPhase is usage's phase for one of the server's readings, nil
// when the run did not read the server (-pid).
func serverPhase(phase func(*loadgen.ServerReport) *loadgen.ServerUsage) func(*loadgen.Report) *loadgen.ServerUsage {
	return func(r *loadgen.Report) *loadgen.ServerUsage {
		if r.Server == nil {
			return nil
		}
		return phase(r.Server)
	}
}

func relayUsage(pick func(*loadgen.ServerUsage) float64) figure {
	return usage(serverPhase(func(s *loadgen.ServerReport) *loadgen.ServerUsage { return s.Relay }), pick)
}

func pairUsage(pick func(*loadgen.ServerUsage) float64) figure {
	return usage(serverPhase(func(s *loadgen.ServerReport) *loadgen.ServerUsage { return s.Pair }), pick)
}

var (
	cpuPerMessage    = relayUsage(func(u *loadgen.ServerUsage) float64 { return u.CPUMicrosPerOp })
	readsPerMessage  = relayUsage(func(u *loadgen.ServerUsage) float64 { return u.ReadsPerOp })
	writesPerMessage = relayUsage(func(u *loadgen.ServerUsage) float64 { return u.WritesPerOp })
	switchesPerMsg   = relayUsage(func(u *loadgen.ServerUsage) float64 { return u.SwitchesPerOp })
	systemShare      = relayUsage(func(u *loadgen.ServerUsage) float64 { return share(u.SystemSeconds, u.UserSeconds) })
	cpuPerPair       = pairUsage(func(u *loadgen.ServerUsage) float64 { return u.CPUMicrosPerOp })
	pairSystemShare  = pairUsage(func(u *loadgen.ServerUsage) float64 { return share(u.SystemSeconds, u.UserSeconds) })
	readsPerPair     = pairUsage(func(u *loadgen.ServerUsage) float64 { return u.ReadsPerOp })
	writesPerPair    = pairUsage(func(u *loadgen.ServerUsage) float64 { return u.WritesPerOp })
	// cpuPerPairCall is the pairing's server CPU per read or write system
	// call: what a pairing costs once the number of its exchanges is
	// taken out, so that duetd's login-and-pair (three reads, four
	// writes) and the bare relay's hello exchange (two of each) compare.
	cpuPerPairCall = pairUsage(func(u *loadgen.ServerUsage) float64 {
		if calls := u.ReadsPerOp + u.WritesPerOp; calls > 0 {
			return u.CPUMicrosPerOp / calls
		}
		return math.NaN()
	})
	pairingsPerSec = func(r *loadgen.Report) (float64, bool) { return r.Pair.PerSecond, r.Pair.Count > 0 }
)

// generatorCPUPerMsg is the load generator's own CPU per message over
// the relay phase: how heavy the client was.
var generatorCPUPerMsg = usage(
	func(r *loadgen.Report) *loadgen.ServerUsage { return r.LoadGenerator },
	func(u *loadgen.ServerUsage) float64 { return u.CPUMicrosPerOp })

func share(part, rest float64) float64 {
	if part+rest == 0 {
		return math.NaN()
	}
	return part / (part + rest)
}

// values collects a figure from runs, by round.
func values(runs []*Run, f figure) map[int]float64 {
	out := make(map[int]float64)
	for _, r := range runs {
		if v, ok := f(r.Report); ok && !math.IsNaN(v) {
			out[r.Round] = v
		}
	}
	return out
}

func statOfRounds(byRound map[int]float64) stat {
	var v []float64
	for _, x := range byRound {
		v = append(v, x)
	}
	return statOf(v)
}

func (s *Set) stat(server, scenario, client string, f figure) stat {
	return statOfRounds(values(s.group(server, scenario, client), f))
}

// ratio is one server's figure over another's: the ratio of the medians,
// and the spread of the ratios of the rounds both ran in.
type ratio struct {
	value    float64
	perRound stat
}

func (s *Set) ratio(num, den key, f figure) (ratio, bool) {
	a := values(s.group(num.server, num.scenario, num.client), f)
	b := values(s.group(den.server, den.scenario, den.client), f)
	ma, mb := statOfRounds(a), statOfRounds(b)
	if !ma.ok() || !mb.ok() || mb.median == 0 {
		return ratio{}, false
	}
	var perRound []float64
	for round, x := range a {
		if y, ok := b[round]; ok && y != 0 {
			perRound = append(perRound, x/y)
		}
	}
	return ratio{value: ma.median / mb.median, perRound: statOf(perRound)}, true
}

// Machine is what the report says about where it ran.
type Machine struct {
	When  string // e.g. 2026-11-25 01:55 UTC
	CPU   string
	Cores int
	Host  string
}

// ThisMachine describes the machine the report is written on.
func ThisMachine(now time.Time) Machine {
	m := Machine{When: now.UTC().Format("2006-01-02 15:04 UTC"), CPU: "unknown CPU", Cores: runtime.NumCPU()}
	m.Host, _ = os.Hostname()
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(data), "\n") {
			if name, value, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == "model name" {
				m.CPU = strings.TrimSpace(value)
				break
			}
		}
	}
	return m
}

// Write writes the report, then notes (the hand-written part).
func (s *Set) Write(w io.Writer, m Machine, notes []byte) error {
	var b strings.Builder
	rounds := 0
	for _, r := range s.Runs {
		rounds = max(rounds, r.Round)
	}
	fmt.Fprintf(&b, "# Benchmarks\n\n")
	fmt.Fprintf(&b, "Written by `scripts/bench.sh` on %s (%s, %d cores, %s). Server and load\n", m.When, m.CPU, m.Cores, m.Host)
	fmt.Fprintf(&b, "generator share the machine, so the figures to read are the ratios between\n")
	fmt.Fprintf(&b, "servers, and server CPU per message; absolute rates move with the machine's\n")
	plural := "s"
	if rounds == 1 {
		plural = ""
	}
	fmt.Fprintf(&b, "load. The servers ran in %d alternating round%s (the bare relay, duetd and\n", rounds, plural)
	fmt.Fprintf(&b, "duetd with resume off, the goroutine relays, then again), each under both\n")
	fmt.Fprintf(&b, "clients: the tuned client (`-client tuned`) and the plain one a user\n")
	fmt.Fprintf(&b, "writes (`-client plain`). Each figure is the median over the rounds, with\n")
	fmt.Fprintf(&b, "the lowest and highest in parentheses; a ratio is the ratio of the\n")
	fmt.Fprintf(&b, "medians, with the lowest and highest of the rounds' own ratios.\n\n")

	s.writeTargets(&b)
	s.writeRelay(&b)
	s.writeLatency(&b)
	s.writeSetup(&b)
	s.writeFailures(&b)
	s.writeCommands(&b)
	if len(notes) > 0 {
		b.WriteString("\n")
		b.Write(notes)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

func (r ratio) String() string { return r.format(2) }

// format is String with the median to digits decimals.
func (r ratio) format(digits int) string {
	if r.perRound.n < 2 {
		return fmt.Sprintf("%.*fx", digits, r.value)
	}
	return fmt.Sprintf("%.*fx (%.2f–%.2f)", digits, r.value, r.perRound.min, r.perRound.max)
}

// against is String for a row that holds r to limit at most: with more
// decimals when two would print a median above the limit as the limit
// itself, which would read as met beside "not met" (1.153x as 1.15x).
func (r ratio) against(limit float64) string {
	digits := 2
	for digits < 6 && r.value > limit && fmt.Sprintf("%.*f", digits, r.value) == fmt.Sprintf("%.*f", digits, limit) {
		digits++
	}
	return r.format(digits)
}

func percent(r ratio) string {
	if r.perRound.n < 2 {
		return fmt.Sprintf("%.0f%%", 100*r.value)
	}
	return fmt.Sprintf("%.0f%% (%.0f–%.0f%%)", 100*r.value, 100*r.perRound.min, 100*r.perRound.max)
}

// spread formats a stat with format for each number.
func spread(st stat, format string) string {
	if !st.ok() {
		return "–"
	}
	if st.n < 2 {
		return fmt.Sprintf(format, st.median)
	}
	return fmt.Sprintf(format+" ("+format+"–"+format+")", st.median, st.min, st.max)
}

func rate(st stat) string {
	if !st.ok() {
		return "–"
	}
	k := func(v float64) string { return thousands(v/1000) + "k" }
	if st.n < 2 {
		return k(st.median)
	}
	return fmt.Sprintf("%s (%s–%s)", k(st.median), k(st.min), k(st.max))
}

func thousands(v float64) string {
	n := int64(math.Round(v))
	s := strconv.FormatInt(n, 10)
	if n < 0 {
		return s
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func (s *Set) writeTargets(b *strings.Builder) {
	fmt.Fprintf(b, "## Targets\n\n| target | client | measured | |\n| --- | --- | --- | --- |\n")
	row := func(target, client, measured, status string) {
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", target, client, measured, status)
	}
	missing := func(target, client string) { row(target, client, "no result", "**not met**") }

	// Ratios between servers, under each client.
	// Ratios of duetd's figure to the bare relay's, each held under both
	// clients.
	tcpBare := func(c string) key { return key{ServerBare, ScenarioTCP, c} }
	for _, t := range []struct {
		label    string
		scenario string // duetd's
		bare     func(client string) key
		f        figure
		limit    float64
	}{
		{"server CPU per message, TCP line protocol, ≤ 1.15x the bare relay's", ScenarioTCP, tcpBare, cpuPerMessage, 1.15},
		{"server CPU per message, WebSocket JSON, ≤ 1.4x the bare relay's (TCP)", ScenarioWS, tcpBare, cpuPerMessage, 1.4},
		{"p99 latency, one in flight, 100 pairs, ≤ 1.2x the bare relay's", ScenarioLatency,
			func(c string) key { return key{ServerBare, ScenarioLatency, c} }, p99, 1.2},
	} {
		for _, c := range clients {
			r, ok := s.ratio(key{ServerDuetd, t.scenario, c}, t.bare(c), t.f)
			if !ok {
				missing(t.label, c)
				continue
			}
			row(t.label, c, r.against(t.limit), verdict(r.value <= t.limit))
		}
	}

	// Idle memory, from the one idle run.
	idle := s.group(ServerDuetd, ScenarioIdle, ClientTuned)
	const idleLabel = "server RSS per idle paired connection ≤ 1 KiB"
	if len(idle) > 0 && idle[0].Report.RSS != nil {
		m := idle[0].Report.RSS
		row(fmt.Sprintf("%s (%s connections)", idleLabel, thousands(float64(m.Connections))), "–",
			fmt.Sprintf("%s bytes", thousands(m.PerConnectionBytes)), verdict(m.PerConnectionBytes <= 1024))
	} else {
		missing(idleLabel, "–")
	}
	const awayLabel = "server RSS per away session ≤ 1 KiB"
	if len(idle) > 0 && idle[0].Report.Away != nil {
		m := idle[0].Report.Away
		row(fmt.Sprintf("%s (%s sessions)", awayLabel, thousands(float64(m.Connections))), "–",
			fmt.Sprintf("%s bytes", thousands(m.PerConnectionBytes)), verdict(m.PerConnectionBytes <= 1024))
	} else {
		missing(awayLabel, "–")
	}

	// Pairing.
	const pairLabel = "server CPU per login-and-pair < 35 µs"
	if st := s.stat(ServerDuetd, ScenarioPairing, ClientTuned, cpuPerPair); st.ok() {
		row(pairLabel, "–", spread(st, "%.1f")+" µs", verdict(st.median < 35))
	} else {
		missing(pairLabel, "–")
	}
	// The bare relay's own pairing is the floor the target is read
	// against: the same loopback reads and writes with no protocol.
	if st := s.stat(ServerBare, ScenarioPairing, ClientTuned, cpuPerPair); st.ok() {
		row("the bare relay's pairing (each side's first line relayed to the other), server CPU per pair", "–",
			spread(st, "%.1f")+" µs", "(for reference)")
	}
	if r, ok := s.ratio(key{ServerDuetd, ScenarioPairing, ClientTuned}, key{ServerBare, ScenarioPairing, ClientTuned}, cpuPerPairCall); ok {
		row("pairing: duetd's server CPU per read or write system call over the bare relay's", "–", r.String(), "(for reference)")
	}

	// Allocations.
	for _, m := range []struct{ name, label string }{
		{"RelayTCPToTCP", "heap allocations per relayed message, TCP to TCP: 0"},
		{"RelayWSToWS", "heap allocations per relayed message, WebSocket to WebSocket: 0"},
	} {
		r, ok := s.Micro[m.name]
		if !ok {
			missing(m.label, "–")
			continue
		}
		row(fmt.Sprintf("%s (%.0f ns/op)", m.label, r.NsPerOp), "–", fmt.Sprintf("%.0f", r.AllocsPerOp), verdict(r.AllocsPerOp == 0))
	}

	// Throughput ratios no lower than before: held for the tuned client,
	// with which they were first measured (TCP 90-97%, WebSocket 73-82%
	// of the bare relay); the plain client's are shown beside them.
	for _, t := range []struct {
		label    string
		scenario string
		floor    float64
	}{
		{"TCP relay messages/s ≥ 90% of the bare relay's", ScenarioTCP, 0.90},
		{"WebSocket relay messages/s ≥ 73% of the bare relay's", ScenarioWS, 0.73},
	} {
		for _, c := range clients {
			r, ok := s.ratio(key{ServerDuetd, t.scenario, c}, tcpBare(c), messagesPerSecond)
			switch {
			case !ok && c == ClientTuned:
				missing(t.label, c)
			case !ok:
			case c == ClientTuned:
				row(t.label, c, percent(r), verdict(r.value >= t.floor))
			default:
				row(t.label, c, percent(r), "(for reference)")
			}
		}
	}

	// For reference: duetd against the goroutine relays, and pairings/s.
	fmt.Fprintf(b, "\nFor reference:\n\n| | client | measured |\n| --- | --- | --- |\n")
	for _, c := range clients {
		for _, g := range []string{ServerGoroutine, ServerGoroutineBatched} {
			if r, ok := s.ratio(key{ServerDuetd, ScenarioTCP, c}, key{g, ScenarioTCP, c}, messagesPerSecond); ok {
				fmt.Fprintf(b, "| duetd's TCP messages/s over those of the %s | %s | %s |\n", serverNames[g], c, r)
			}
		}
	}
	// What resume costs: the same duetd with it off, against the bare
	// relay and against duetd as configured, in the same rounds.
	for _, c := range clients {
		noResume := key{ServerDuetdNoResume, ScenarioTCP, c}
		if r, ok := s.ratio(noResume, tcpBare(c), cpuPerMessage); ok {
			fmt.Fprintf(b, "| server CPU per message, TCP line protocol, of duetd with resume off over the bare relay's | %s | %s |\n", c, r)
		}
		if r, ok := s.ratio(key{ServerDuetd, ScenarioTCP, c}, noResume, cpuPerMessage); ok {
			fmt.Fprintf(b, "| server CPU per message, TCP line protocol, of duetd over duetd with resume off | %s | %s |\n", c, r)
		}
	}
	// With one message in flight every message is a run of its own, the
	// keep's dearest case: the p99 target read without it.
	for _, c := range clients {
		if r, ok := s.ratio(key{ServerDuetdNoResume, ScenarioLatency, c}, key{ServerBare, ScenarioLatency, c}, p99); ok {
			fmt.Fprintf(b, "| p99 latency, one in flight, of duetd with resume off over the bare relay's | %s | %s |\n", c, r)
		}
	}
	if st := s.stat(ServerDuetd, ScenarioPairing, ClientTuned, pairingsPerSec); st.ok() {
		fmt.Fprintf(b, "| logins-and-pairs per second | – | %s |\n", spread(st, "%.0f"))
	}
	fmt.Fprintf(b, "\n")
}

func (s *Set) writeRelay(b *strings.Builder) {
	fmt.Fprintf(b, "## Relay: 200 pairs, 64-byte messages, 16 in flight per sender\n\n")
	fmt.Fprintf(b, "Server CPU is user and system time of the server process over the relay\n")
	fmt.Fprintf(b, "phase per message delivered; reads and writes are its read and write\n")
	fmt.Fprintf(b, "system calls per message (eventfd wake-ups included), switches the times\n")
	fmt.Fprintf(b, "one of its threads was put on a CPU, per message; sys is the kernel's share\n")
	fmt.Fprintf(b, "of its CPU time; client CPU is the load generator's own, per message. All\n")
	fmt.Fprintf(b, "but messages/s and server CPU are medians. Client and server share the\n")
	fmt.Fprintf(b, "machine's cores, so a heavier client makes the same server's work dearer\n")
	fmt.Fprintf(b, "(see \"Twenty-first round\").\n\n")
	fmt.Fprintf(b, "| server | client | messages/s | server CPU µs/msg | sys | reads/msg | writes/msg | switches/msg | p99 µs | client CPU µs/msg |\n")
	fmt.Fprintf(b, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, row := range []struct{ server, scenario string }{
		{ServerBare, ScenarioTCP},
		{ServerDuetd, ScenarioTCP},
		{ServerDuetdNoResume, ScenarioTCP},
		{ServerDuetd, ScenarioWS},
		{ServerDuetd, ScenarioMix},
		{ServerGoroutine, ScenarioTCP},
		{ServerGoroutineBatched, ScenarioTCP},
	} {
		name := serverNames[row.server]
		if row.server == ServerDuetd || row.server == ServerDuetdNoResume {
			name += ", " + scenarioNames[row.scenario]
		}
		for _, c := range clients {
			if len(s.group(row.server, row.scenario, c)) == 0 {
				continue
			}
			st := func(f figure) stat { return s.stat(row.server, row.scenario, c, f) }
			fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", name, c,
				rate(st(messagesPerSecond)), spread(st(cpuPerMessage), "%.2f"), median(st(systemShare), "%.0f%%", 100),
				median(st(readsPerMessage), "%.4f", 1), median(st(writesPerMessage), "%.4f", 1),
				median(st(switchesPerMsg), "%.4f", 1), median(st(p99), "%.0f", 1),
				median(st(generatorCPUPerMsg), "%.2f", 1))
		}
	}
	fmt.Fprintf(b, "\n")
}

func median(st stat, format string, scale float64) string {
	if !st.ok() {
		return "–"
	}
	return fmt.Sprintf(format, st.median*scale)
}

func (s *Set) writeLatency(b *strings.Builder) {
	fmt.Fprintf(b, "## Latency: one message in flight per sender, 100 pairs\n\n")
	fmt.Fprintf(b, "| server | client | p50 µs | p99 µs | p999 µs | messages/s | server CPU µs/msg |\n")
	fmt.Fprintf(b, "| --- | --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, server := range []string{ServerBare, ServerDuetd, ServerDuetdNoResume} {
		for _, c := range clients {
			if len(s.group(server, ScenarioLatency, c)) == 0 {
				continue
			}
			st := func(f figure) stat { return s.stat(server, ScenarioLatency, c, f) }
			fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s |\n", serverNames[server], c,
				median(st(p50), "%.0f", 1), spread(st(p99), "%.0f"), median(st(p999), "%.0f", 1),
				rate(st(messagesPerSecond)), spread(st(cpuPerMessage), "%.2f"))
		}
	}
	fmt.Fprintf(b, "\n")
}

func (s *Set) writeSetup(b *strings.Builder) {
	fmt.Fprintf(b, "## Pairing and idle connections\n\n")
	if runs := s.group(ServerDuetd, ScenarioPairing, ClientTuned); len(runs) > 0 {
		st := func(f figure) stat { return s.stat(ServerDuetd, ScenarioPairing, ClientTuned, f) }
		fmt.Fprintf(b, "Pairing, %d pairs per round: %s logins-and-pairs/s; server CPU %s µs per\n",
			runs[0].Report.Pair.Count, spread(st(pairingsPerSec), "%.0f"), spread(st(cpuPerPair), "%.1f"))
		fmt.Fprintf(b, "login-and-pair (%s of it the kernel's), with %s reads and %s writes,\n%s µs per read or write.",
			median(st(pairSystemShare), "%.0f%%", 100), median(st(readsPerPair), "%.2f", 1), median(st(writesPerPair), "%.2f", 1),
			median(st(cpuPerPairCall), "%.1f", 1))
		if bare := func(f figure) stat { return s.stat(ServerBare, ScenarioPairing, ClientTuned, f) }; bare(cpuPerPair).ok() {
			fmt.Fprintf(b, " The bare relay's pairing, each side's first line relayed to its\n")
			fmt.Fprintf(b, "partner with no protocol at all, cost it %s µs per pair (%s of it the\n",
				spread(bare(cpuPerPair), "%.1f"), median(bare(pairSystemShare), "%.0f%%", 100))
			fmt.Fprintf(b, "kernel's), with %s reads and %s writes, %s µs per read or write.",
				median(bare(readsPerPair), "%.2f", 1), median(bare(writesPerPair), "%.2f", 1), median(bare(cpuPerPairCall), "%.1f", 1))
		}
		fmt.Fprintf(b, "\n\n")
	}
	idle := s.group(ServerDuetd, ScenarioIdle, ClientTuned)
	if len(idle) == 0 {
		return
	}
	rep := idle[0].Report
	if m := rep.RSS; m != nil {
		fmt.Fprintf(b, "Idle: %s paired connections held open cost duetd %s bytes of RSS each\n",
			thousands(float64(m.Connections)), thousands(m.PerConnectionBytes))
		fmt.Fprintf(b, "(%.1f MiB before, %.1f MiB with them open).", float64(m.BeforeKiB)/1024, float64(m.AfterKiB)/1024)
	}
	if rep.Server != nil && rep.Server.Hold != nil {
		// What a server does with nothing to do: its timers and
		// deadline checks, and how often they wake it.
		u := rep.Server.Hold
		fmt.Fprintf(b, " Held open for %.1f s, they cost\nduetd %.2f%% of a CPU, and its threads were put on a CPU %s times a\nsecond.",
			u.Seconds, 100*u.IdleCPUShare(), thousands(u.IdleSwitchesPerSecond()))
	}
	k := rep.Kernel
	switch {
	case k == nil:
		fmt.Fprintf(b, "\n\n")
	case k.Error != "":
		fmt.Fprintf(b, " The kernel's share was not measured: %s.\n\n", k.Error)
	default:
		fmt.Fprintf(b, " On top of that the kernel held %s bytes of\n", thousands(k.SlabPerConnectionBytes))
		fmt.Fprintf(b, "slab per connection, for both its ends: client and server share this\n")
		fmt.Fprintf(b, "machine, and each end has its own socket, inode, file, dentry and epoll\n")
		fmt.Fprintf(b, "entry, so about half of it is the server's. Left out: %s /proc inodes that\n", thousands(float64(k.ProcInodes)))
		fmt.Fprintf(b, "other processes made meanwhile, with their dentries (listing open\n")
		fmt.Fprintf(b, "descriptors makes them). Idle sockets hold no buffers (the machine's TCP\n")
		fmt.Fprintf(b, "buffers moved by %s bytes meanwhile). By cache, objects per connection ×\n", thousands(float64(k.SocketBufferBytes)))
		fmt.Fprintf(b, "bytes per object:\n\n| cache | objects/conn | bytes/object | bytes/conn |\n| --- | ---: | ---: | ---: |\n")
		for _, c := range k.Caches {
			fmt.Fprintf(b, "| %s | %.2f | %d | %s |\n", c.Name, c.ObjectsPerConnection, c.ObjectBytes,
				thousands(float64(c.Bytes)/float64(max(k.Connections, 1))))
		}
		fmt.Fprintf(b, "\n")
	}
	if m := rep.Away; m != nil {
		fmt.Fprintf(b, "Away: once every one of those connections was reset, leaving %s sessions\n", thousands(float64(m.Connections)))
		fmt.Fprintf(b, "away, duetd held %.1f MiB of RSS, %s bytes per away session over the fresh\n", float64(m.AfterKiB)/1024, thousands(m.PerConnectionBytes))
		fmt.Fprintf(b, "server's (what the connections freed is the runtime's to reuse, and stays\nresident meanwhile).\n\n")
	}
}

func (s *Set) writeFailures(b *strings.Builder) {
	var failed []string
	for _, r := range s.Runs {
		if r.OK() {
			continue
		}
		why := "no report"
		if r.Report != nil {
			why = "errors: " + errorSummary(r.Report)
		}
		failed = append(failed, fmt.Sprintf("- round %d, %s %s %s: %s", r.Round, r.Server, r.Scenario, r.Client, why))
	}
	if len(failed) == 0 {
		return
	}
	fmt.Fprintf(b, "## Failed runs (left out of the figures)\n\n%s\n\n", strings.Join(failed, "\n"))
}

func errorSummary(r *loadgen.Report) string {
	e := r.Errors
	var parts []string
	for _, p := range []struct {
		name string
		n    int64
	}{
		{"connect_failed", int64(e.ConnectFailed)}, {"pair_failed", int64(e.PairFailed)},
		{"rejected", e.Rejected}, {"lost", e.Lost}, {"out_of_order", e.OutOfOrder}, {"corrupt", e.Corrupt},
		{"peer_left", e.PeerLeft}, {"disconnected", int64(e.Disconnected)},
	} {
		if p.n != 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", p.name, p.n))
		}
	}
	if e.Stalled != "" {
		parts = append(parts, "stalled")
	}
	if len(parts) == 0 {
		parts = append(parts, "short delivery")
	}
	// Why: the failures' reasons (a timeout, a refused connection, an
	// error reply that ended a login) and the error replies the server
	// sent, so a failed run in a report can be told from load.
	for _, m := range []struct {
		name   string
		counts map[string]int64
	}{{"reasons", e.Reasons}, {"replies", e.Server}} {
		if len(m.counts) == 0 {
			continue
		}
		var kv []string
		for _, k := range slices.Sorted(maps.Keys(m.counts)) {
			kv = append(kv, fmt.Sprintf("%s=%d", k, m.counts[k]))
		}
		parts = append(parts, m.name+" "+strings.Join(kv, ","))
	}
	return strings.Join(parts, " ")
}

func (s *Set) writeCommands(b *strings.Builder) {
	fmt.Fprintf(b, "## Commands\n\n")
	fmt.Fprintf(b, "Each server runs on loopback (duetd with `--tcp-listen 127.0.0.1:17070 --ws-listen 127.0.0.1:18080`,\n")
	fmt.Fprintf(b, "duetd with resume off with `DUETD_RESUME_WINDOW=0s` and `--tcp-listen 127.0.0.1:17074 --ws-listen \"\"`,\n")
	fmt.Fprintf(b, "`duet-bench bare-relay -listen 127.0.0.1:17071`, `duet-bench goroutine-relay -listen 127.0.0.1:17072`,\n")
	fmt.Fprintf(b, "`duet-bench goroutine-relay -batch -listen 127.0.0.1:17073`); each round runs, in this order:\n\n```\n")
	seen := map[string]bool{}
	// The rounds run the same commands: list the first round's, and the
	// runs made once outside the rounds (round 0).
	first := math.MaxInt
	for _, r := range s.Runs {
		if r.Round > 0 {
			first = min(first, r.Round)
		}
	}
	for _, r := range s.Runs {
		if r.Round != first && r.Round != 0 || seen[r.Command] {
			continue
		}
		seen[r.Command] = true
		fmt.Fprintf(b, "%s\n", r.Command)
	}
	fmt.Fprintf(b, "go test -run '^$' -bench Relay -benchmem ./engine/\n```\n")
}
