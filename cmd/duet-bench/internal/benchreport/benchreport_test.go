package benchreport

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"duet/cmd/duet-bench/internal/loadgen"
)

var update = flag.Bool("update", false, "rewrite testdata/report.golden.md")

// figures is what a fake run reports.
type figures struct {
	mps, cpu float64 // messages/s, server CPU µs per message
	p99      int64
}

func relayReport(f figures) *loadgen.Report {
	return &loadgen.Report{
		Proto: loadgen.ProtoTCP, Mode: "relay", Pairs: 200, MessagesPerSide: 5000, Size: 64, Window: 16,
		Connect: loadgen.Phase{Count: 400, Seconds: 0.1, PerSecond: 4000},
		Pair:    loadgen.Phase{Count: 200, Seconds: 0.02, PerSecond: 10000},
		Relay: &loadgen.RelayReport{Sent: 2000000, Delivered: 2000000, MessagesPerSecond: f.mps,
			Latency: loadgen.LatencyReport{P50: f.p99 / 4, P99: f.p99, P999: 2 * f.p99}},
		Server: &loadgen.ServerReport{PID: 7, Relay: &loadgen.ServerUsage{
			Ops: 2000000, CPUMicrosPerOp: f.cpu, UserSeconds: 1, SystemSeconds: 3,
			ReadsPerOp: 0.0625, WritesPerOp: 0.07, SwitchesPerOp: 0.02,
		}},
		// The client's own CPU: twice the server's, and a quarter more.
		LoadGenerator: &loadgen.ServerUsage{Ops: 2000000, CPUMicrosPerOp: 2*f.cpu + 0.25},
	}
}

// writeRuns lays out a bench.sh work directory: three rounds of every
// server, scenario and client, an idle run, and the micro-benchmarks.
// Its figures are chosen so that the medians and ratios below can be
// checked by hand.
func writeRuns(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	var tsv strings.Builder
	add := func(round int, server, scenario, client string, rep *loadgen.Report) {
		file := fmt.Sprintf("%d-%s-%s-%s.json", round, server, scenario, client)
		if rep != nil {
			data, err := json.Marshal(rep)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, file), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		fmt.Fprintf(&tsv, "%d\t%s\t%s\t%s\t%s\tduet-bench run -client %s -proto %s (%s)\n", round, server, scenario, client, file, client, scenario, server)
	}
	byRound := map[key][3]figures{
		{ServerBare, ScenarioTCP, ClientTuned}:              {{1000e3, 1.0, 5000}, {900e3, 1.1, 5000}, {1100e3, 0.9, 5000}},
		{ServerBare, ScenarioTCP, ClientPlain}:              {{500e3, 0.6, 9000}, {400e3, 0.6, 9000}, {450e3, 0.7, 9000}},
		{ServerDuetd, ScenarioTCP, ClientTuned}:             {{950e3, 1.1, 6000}, {850e3, 1.2, 6000}, {1000e3, 1.0, 6000}},
		{ServerDuetd, ScenarioTCP, ClientPlain}:             {{400e3, 1.0, 9000}, {380e3, 1.1, 9000}, {420e3, 1.2, 9000}},
		{ServerDuetdNoResume, ScenarioTCP, ClientTuned}:     {{1000e3, 1.0, 5500}, {900e3, 1.0, 5500}, {1000e3, 0.8, 5500}},
		{ServerDuetdNoResume, ScenarioTCP, ClientPlain}:     {{420e3, 0.8, 9000}, {400e3, 1.0, 9000}, {440e3, 1.0, 9000}},
		{ServerDuetd, ScenarioWS, ClientTuned}:              {{700e3, 1.3, 7000}, {700e3, 1.3, 7000}, {700e3, 1.3, 7000}},
		{ServerDuetd, ScenarioWS, ClientPlain}:              {{300e3, 0.8, 9000}, {300e3, 0.8, 9000}, {300e3, 0.8, 9000}},
		{ServerDuetd, ScenarioMix, ClientTuned}:             {{800e3, 1.2, 6000}, {800e3, 1.2, 6000}, {800e3, 1.2, 6000}},
		{ServerDuetd, ScenarioMix, ClientPlain}:             {{350e3, 1.5, 9000}, {350e3, 1.5, 9000}, {350e3, 1.5, 9000}},
		{ServerBare, ScenarioLatency, ClientTuned}:          {{50e3, 10, 1000}, {50e3, 11, 1000}, {50e3, 12, 1000}},
		{ServerBare, ScenarioLatency, ClientPlain}:          {{40e3, 12, 1000}, {40e3, 12, 1000}, {40e3, 12, 1000}},
		{ServerDuetd, ScenarioLatency, ClientTuned}:         {{45e3, 12, 1100}, {45e3, 12, 1100}, {45e3, 12, 1100}},
		{ServerDuetd, ScenarioLatency, ClientPlain}:         {{35e3, 14, 1300}, {35e3, 14, 1300}, {35e3, 14, 1300}},
		{ServerDuetdNoResume, ScenarioLatency, ClientTuned}: {{48e3, 11, 1050}, {48e3, 11, 1000}, {48e3, 11, 1200}},
		{ServerDuetdNoResume, ScenarioLatency, ClientPlain}: {{38e3, 13, 1100}, {38e3, 13, 1100}, {38e3, 13, 1100}},
		{ServerGoroutine, ScenarioTCP, ClientTuned}:         {{200e3, 6, 30000}, {200e3, 6, 30000}, {200e3, 6, 30000}},
		{ServerGoroutine, ScenarioTCP, ClientPlain}:         {{190e3, 6.5, 30000}, {190e3, 6.5, 30000}, {190e3, 6.5, 30000}},
		{ServerGoroutineBatched, ScenarioTCP, ClientTuned}:  {{1000e3, 1.1, 5000}, {1000e3, 1.1, 5000}, {1000e3, 1.1, 5000}},
		{ServerGoroutineBatched, ScenarioTCP, ClientPlain}:  {{400e3, 1.3, 9000}, {400e3, 1.3, 9000}, {400e3, 1.3, 9000}},
	}
	order := []key{
		{ServerBare, ScenarioTCP, ClientTuned}, {ServerBare, ScenarioLatency, ClientTuned},
		{ServerBare, ScenarioTCP, ClientPlain}, {ServerBare, ScenarioLatency, ClientPlain},
		{ServerDuetd, ScenarioTCP, ClientTuned}, {ServerDuetd, ScenarioWS, ClientTuned},
		{ServerDuetd, ScenarioMix, ClientTuned}, {ServerDuetd, ScenarioLatency, ClientTuned},
		{ServerDuetd, ScenarioTCP, ClientPlain}, {ServerDuetd, ScenarioWS, ClientPlain},
		{ServerDuetd, ScenarioMix, ClientPlain}, {ServerDuetd, ScenarioLatency, ClientPlain},
		{ServerDuetdNoResume, ScenarioTCP, ClientTuned}, {ServerDuetdNoResume, ScenarioLatency, ClientTuned},
		{ServerDuetdNoResume, ScenarioTCP, ClientPlain}, {ServerDuetdNoResume, ScenarioLatency, ClientPlain},
		{ServerGoroutine, ScenarioTCP, ClientTuned}, {ServerGoroutineBatched, ScenarioTCP, ClientTuned},
		{ServerGoroutine, ScenarioTCP, ClientPlain}, {ServerGoroutineBatched, ScenarioTCP, ClientPlain},
	}
	pairCPU := []float64{30, 40, 34}
	barePairCPU := []float64{20, 24, 16}
	for round := 1; round <= 3; round++ {
		for _, k := range order {
			rep := relayReport(byRound[k][round-1])
			rep.Client = loadgen.Client(k.client)
			switch {
			case round == 2 && k == key{ServerDuetd, ScenarioMix, ClientPlain}:
				// A message lost: the run is left out and listed, with
				// why its failures failed and the server's error replies.
				rep.Errors.Lost = 1
				rep.Errors.Reasons = map[string]int64{"timeout": 1, "connection_reset": 2}
				rep.Errors.Server = map[string]int64{"rate_limited": 3}
				rep.Relay.Delivered--
			case round == 3 && k == key{ServerGoroutine, ScenarioTCP, ClientTuned}:
				rep = nil // the run left no report at all
			}
			add(round, k.server, k.scenario, k.client, rep)
			if k == (key{ServerDuetd, ScenarioLatency, ClientPlain}) {
				pairing := relayReport(figures{1000, 1, 1000})
				pairing.Pair = loadgen.Phase{Count: 4000, Seconds: 0.2, PerSecond: 20000 + 1000*float64(round)}
				pairing.Server.Pair = &loadgen.ServerUsage{Ops: 4000, CPUMicrosPerOp: pairCPU[round-1],
					UserSeconds: 0.03, SystemSeconds: 0.07, ReadsPerOp: 3, WritesPerOp: 4}
				add(round, ServerDuetd, ScenarioPairing, ClientTuned, pairing)
				bare := relayReport(figures{1000, 1, 1000})
				bare.Pair = loadgen.Phase{Count: 4000, Seconds: 0.2, PerSecond: 20000}
				bare.Server.Pair = &loadgen.ServerUsage{Ops: 4000, CPUMicrosPerOp: barePairCPU[round-1],
					UserSeconds: 0.02, SystemSeconds: 0.08, ReadsPerOp: 2, WritesPerOp: 2}
				add(round, ServerBare, ScenarioPairing, ClientTuned, bare)
			}
		}
	}
	idle := &loadgen.Report{
		Proto: loadgen.ProtoTCP, Client: loadgen.ClientTuned, Mode: "idle", Pairs: 9000,
		Connect: loadgen.Phase{Count: 18000}, Pair: loadgen.Phase{Count: 9000},
		RSS:    &loadgen.MemoryReport{PID: 7, BeforeKiB: 10240, AfterKiB: 26060, Connections: 18000, PerConnectionBytes: 900},
		Away:   &loadgen.MemoryReport{PID: 7, BeforeKiB: 10240, AfterKiB: 30000, Connections: 18000, PerConnectionBytes: 1124},
		Server: &loadgen.ServerReport{PID: 7, Hold: &loadgen.ServerUsage{Ops: 18000, Seconds: 3.2, CPUSeconds: 0.048, ContextSwitches: 192}},
		Kernel: &loadgen.KernelMemoryReport{Connections: 18000, SlabBytes: 18000 * 7000, SlabPerConnectionBytes: 7000, ProcInodes: 36000,
			Caches: []loadgen.SlabDelta{
				{Name: "TCP", ObjectBytes: 2368, Objects: 36000, ObjectsPerConnection: 2, Bytes: 36000 * 2368},
				{Name: "sock_inode_cache", ObjectBytes: 832, Objects: 36000, ObjectsPerConnection: 2, Bytes: 36000 * 832},
			}},
	}
	add(0, ServerDuetd, ScenarioIdle, ClientTuned, idle)
	if err := os.WriteFile(filepath.Join(dir, "runs.tsv"), []byte(tsv.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	micro := `goos: linux
BenchmarkRelayTCPToTCP-2   	 8000000	       145.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkRelayWSToWS-2     	 3000000	       383.0 ns/op	      16 B/op	       1 allocs/op
PASS
`
	if err := os.WriteFile(filepath.Join(dir, "micro.txt"), []byte(micro), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

var testMachine = Machine{When: "2026-01-02 03:04 UTC", CPU: "Test CPU", Cores: 2, Host: "test"}

func TestReport(t *testing.T) {
	set, err := Load(writeRuns(t))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := set.Write(&b, testMachine, []byte("## Notes\n\nHand-written.\n")); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	// Figures worked out by hand from writeRuns.
	for _, want := range []string{
		// duetd/bare CPU, tuned: medians 1.1/1.0; rounds 1.1/1.0, 1.2/1.1, 1.0/0.9.
		"| server CPU per message, TCP line protocol, ≤ 1.15x the bare relay's | tuned | 1.10x (1.09–1.11) | met |",
		// plain: medians 1.1/0.6; rounds 1.0/0.6, 1.1/0.6, 1.2/0.7.
		"| server CPU per message, TCP line protocol, ≤ 1.15x the bare relay's | plain | 1.83x (1.67–1.83) | **not met** |",
		"| server CPU per message, WebSocket JSON, ≤ 1.4x the bare relay's (TCP) | tuned | 1.30x (1.18–1.44) | met |",
		"| server CPU per message, WebSocket JSON, ≤ 1.4x the bare relay's (TCP) | plain | 1.33x (1.14–1.33) | met |",
		"| p99 latency, one in flight, 100 pairs, ≤ 1.2x the bare relay's | tuned | 1.10x (1.10–1.10) | met |",
		"| p99 latency, one in flight, 100 pairs, ≤ 1.2x the bare relay's | plain | 1.30x (1.30–1.30) | **not met** |",
		"| server RSS per idle paired connection ≤ 1 KiB (18,000 connections) | – | 900 bytes | met |",
		"| server RSS per away session ≤ 1 KiB (18,000 sessions) | – | 1,124 bytes | **not met** |",
		"| server CPU per login-and-pair < 35 µs | – | 34.0 (30.0–40.0) µs | met |",
		"| heap allocations per relayed message, TCP to TCP: 0 (145 ns/op) | – | 0 | met |",
		"| heap allocations per relayed message, WebSocket to WebSocket: 0 (383 ns/op) | – | 1 | **not met** |",
		// 950k over 1000k; rounds 950/1000, 850/900, 1000/1100.
		"| TCP relay messages/s ≥ 90% of the bare relay's | tuned | 95% (91–95%) | met |",
		"| WebSocket relay messages/s ≥ 73% of the bare relay's | tuned | 70% (64–78%) | **not met** |",
		"| WebSocket relay messages/s ≥ 73% of the bare relay's | plain | 67% (60–75%) | (for reference) |",
		// The goroutine relay's third round left no report: two rounds.
		"| duetd's TCP messages/s over those of the goroutine relay, one write per message | tuned | 4.75x (4.25–4.75) |",
		"| bare gnet relay | tuned | 1,000k (900k–1,100k) | 1.00 (0.90–1.10) | 75% | 0.0625 | 0.0700 | 0.0200 | 5000 |",
		"| goroutine relay, one write per message | tuned | 200k (200k–200k) | 6.00 (6.00–6.00) |",
		"| duetd, line to WebSocket | plain | 350k (350k–350k) | 1.50 (1.50–1.50) |",
		"| duetd with resume off, line protocol | tuned | 1,000k (900k–1,000k) | 1.00 (0.80–1.00) |",
		// Resume off over bare, tuned: medians 1.0/1.0; rounds 1.0/1.0,
		// 1.0/1.1, 0.8/0.9. Plain: 1.0/0.6; rounds 0.8/0.6, 1.0/0.6, 1.0/0.7.
		"| server CPU per message, TCP line protocol, of duetd with resume off over the bare relay's | tuned | 1.00x (0.89–1.00) |",
		"| server CPU per message, TCP line protocol, of duetd with resume off over the bare relay's | plain | 1.67x (1.33–1.67) |",
		// duetd over resume off, tuned: 1.1/1.0; rounds 1.1/1.0, 1.2/1.0, 1.0/0.8.
		"| server CPU per message, TCP line protocol, of duetd over duetd with resume off | tuned | 1.10x (1.10–1.25) |",
		"| server CPU per message, TCP line protocol, of duetd over duetd with resume off | plain | 1.10x (1.10–1.25) |",
		"| duetd | plain | 325 | 1300 (1300–1300) | 2600 | 35k (35k–35k) | 14.00 (14.00–14.00) |",
		"| duetd with resume off | tuned | 262 | 1050 (1000–1200) | 2100 | 48k (48k–48k) | 11.00 (11.00–11.00) |",
		// Resume off's p99 over the bare relay's, tuned: median 1050/1000;
		// rounds 1050/1000, 1000/1000, 1200/1000. Plain: 1100/1000.
		"| p99 latency, one in flight, of duetd with resume off over the bare relay's | tuned | 1.05x (1.00–1.20) |",
		"| p99 latency, one in flight, of duetd with resume off over the bare relay's | plain | 1.10x (1.10–1.10) |",
		"Pairing, 4000 pairs per round: 22000 (21000–23000) logins-and-pairs/s; server CPU 34.0 (30.0–40.0) µs per",
		// 34/7 µs per call; the bare relay's 20/4. Rounds: 30/7 over 20/4,
		// 40/7 over 24/4, 34/7 over 16/4.
		"login-and-pair (70% of it the kernel's), with 3.00 reads and 4.00 writes,\n4.9 µs per read or write.",
		"partner with no protocol at all, cost it 20.0 (16.0–24.0) µs per pair (80% of it the\n",
		"kernel's), with 2.00 reads and 2.00 writes, 5.0 µs per read or write.",
		"| the bare relay's pairing (each side's first line relayed to the other), server CPU per pair | – | 20.0 (16.0–24.0) µs | (for reference) |",
		"| pairing: duetd's server CPU per read or write system call over the bare relay's | – | 0.97x (0.86–1.21) | (for reference) |",
		"cost duetd 900 bytes of RSS each",
		// 0.048 s of CPU in 3.2 s is 1.5%; 192 switches in 3.2 s, 60 a second.
		" Held open for 3.2 s, they cost\nduetd 1.50% of a CPU, and its threads were put on a CPU 60 times a\nsecond.",
		"the kernel held 7,000 bytes of",
		"Left out: 36,000 /proc inodes that",
		"| TCP | 2.00 | 2368 | 4,736 |",
		"- round 2, duetd mix plain: errors: lost=1 reasons connection_reset=2,timeout=1 replies rate_limited=3\n",
		"- round 3, goroutine tcp tuned: no report",
		"duet-bench run -client tuned -proto idle (duetd)",
		"\n## Notes\n\nHand-written.\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	// The commands are the first round's and the idle run's, once each.
	if n := strings.Count(out, "duet-bench run -client plain -proto ws (duetd)"); n != 1 {
		t.Errorf("duetd's plain WebSocket command listed %d times", n)
	}

	golden := filepath.Join("testdata", "report.golden.md")
	if *update {
		if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if out != string(want) {
		t.Errorf("report differs from %s (go test -run TestReport -update to rewrite it after checking):\n%s", golden, out)
	}
}

func TestReportWithoutRuns(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir); err == nil {
		t.Error("a directory without runs.tsv loaded")
	}
	_ = os.WriteFile(filepath.Join(dir, "runs.tsv"), []byte("1\tbare\ttcp\ttuned\n"), 0o644)
	if _, err := Load(dir); err == nil {
		t.Error("a short runs.tsv line loaded")
	}
	_ = os.WriteFile(filepath.Join(dir, "runs.tsv"), []byte("1\tbare\ttcp\ttuned\tx.json\tcmd\n"), 0o644)
	_ = os.WriteFile(filepath.Join(dir, "x.json"), []byte("{"), 0o644)
	if _, err := Load(dir); err == nil {
		t.Error("a broken report loaded")
	}
	// Every target without its runs is not met, and says so.
	_ = os.Remove(filepath.Join(dir, "x.json"))
	_ = os.WriteFile(filepath.Join(dir, "micro.txt"), nil, 0o644)
	set, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := set.Write(&b, testMachine, nil); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(b.String(), "| no result | **not met** |"); n != 13 {
		t.Errorf("%d targets without a result, want 13:\n%s", n, b.String())
	}
}

// TestRatioAgainstLimit: a median just above a target's limit is not
// printed as the limit itself beside "not met"; others keep two decimals.
func TestRatioAgainstLimit(t *testing.T) {
	spread := stat{median: 1.2, min: 1.15, max: 1.29, n: 3}
	for _, c := range []struct {
		value, limit float64
		want         string
	}{
		{1.1534, 1.15, "1.153x (1.15–1.29)"},
		{1.1502, 1.15, "1.1502x (1.15–1.29)"},
		{1.146, 1.15, "1.15x (1.15–1.29)"}, // met, and reads so
		{1.15, 1.15, "1.15x (1.15–1.29)"},
		{1.24, 1.15, "1.24x (1.15–1.29)"},
		{1.4049, 1.4, "1.405x (1.15–1.29)"},
	} {
		if got := (ratio{value: c.value, perRound: spread}).against(c.limit); got != c.want {
			t.Errorf("%v against %v: %q, want %q", c.value, c.limit, got, c.want)
		}
	}
	if got := (ratio{value: 1.153}).against(1.15); got != "1.153x" {
		t.Errorf("one round: %q", got)
	}
}

func TestStatOf(t *testing.T) {
	for _, tt := range []struct {
		in   []float64
		want stat
	}{
		{[]float64{3, 1, 2}, stat{median: 2, min: 1, max: 3, n: 3}},
		{[]float64{4, 1, 3, 2}, stat{median: 2.5, min: 1, max: 4, n: 4}},
		{[]float64{5}, stat{median: 5, min: 5, max: 5, n: 1}},
		{nil, stat{}},
	} {
		if got := statOf(tt.in); got != tt.want {
			t.Errorf("statOf(%v) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestParseMicro(t *testing.T) {
	m := ParseMicro([]byte("BenchmarkRelayTCPToTCP-2 \t 100 \t 142.5 ns/op \t 0 B/op \t 0 allocs/op\nBenchmarkOther-2 1 2 ns/op\nok duet/engine 3s\n"))
	if len(m) != 1 || m["RelayTCPToTCP"] != (Micro{NsPerOp: 142.5}) {
		t.Errorf("micro %+v", m)
	}
}
