package loadgen

import (
	"encoding/json"
	"net"
	"os"
	"strings"
	"testing"
)

func sampleReport() *Report {
	h := newLatencyHistogram()
	for v := int64(1); v <= 1000; v++ {
		_ = h.RecordValue(v)
	}
	return &Report{
		Proto: ProtoTCP, Mode: "relay", Pairs: 2, MessagesPerSide: 500, Size: 64, Window: 16,
		Connect: Phase{Count: 4, Seconds: 0.01, PerSecond: 400},
		Pair:    Phase{Count: 2, Seconds: 0.002, PerSecond: 1000},
		Relay: &RelayReport{
			Sent: 2000, Delivered: 2000, Seconds: 0.5, MessagesPerSecond: 4000,
			Latency: summarise(h),
		},
		RSS: &MemoryReport{PID: 1, BeforeKiB: 1024, AfterKiB: 2048, Connections: 4, PerConnectionBytes: 262144},
		Server: &ServerReport{
			PID: 1,
			Pair: &ServerUsage{Ops: 2, CPUSeconds: 0.0001, CPUSource: cpuFromSchedstat, CPUMicrosPerOp: 50,
				ReadCalls: 6, WriteCalls: 8, ReadsPerOp: 3, WritesPerOp: 4, ContextSwitches: 2, SwitchesPerOp: 1},
			Relay: &ServerUsage{Ops: 2000, CPUSeconds: 0.002, CPUSource: cpuFromStat, CPUMicrosPerOp: 1,
				UserSeconds: 0.01, SystemSeconds: 0.02, ReadCalls: 125, WriteCalls: 130, ReadsPerOp: 0.0625, WritesPerOp: 0.065},
		},
	}
}

func TestReportOK(t *testing.T) {
	tests := []struct {
		name  string
		spoil func(*Report)
	}{
		{"lost", func(r *Report) { r.Errors.Lost = 1 }},
		{"rejected", func(r *Report) { r.Errors.Rejected = 1 }},
		{"out of order", func(r *Report) { r.Errors.OutOfOrder = 1 }},
		{"corrupt", func(r *Report) { r.Errors.Corrupt = 1 }},
		{"pair failed", func(r *Report) { r.Errors.PairFailed = 1 }},
		{"connect failed", func(r *Report) { r.Errors.ConnectFailed = 1 }},
		{"stalled", func(r *Report) { r.Errors.Stalled = "relay stalled" }},
		{"disconnected", func(r *Report) { r.Errors.Disconnected = 1 }},
		{"peer left", func(r *Report) { r.Errors.PeerLeft = 1 }},
		{"short delivery", func(r *Report) { r.Relay.Delivered-- }},
	}
	if r := sampleReport(); !r.OK() {
		t.Fatal("a clean report is not OK")
	}
	for _, tt := range tests {
		r := sampleReport()
		tt.spoil(r)
		if r.OK() {
			t.Errorf("%s: report still OK", tt.name)
		}
	}
	idle := sampleReport()
	idle.Relay = nil
	if !idle.OK() {
		t.Error("an idle report without errors is not OK")
	}
}

func TestSummarise(t *testing.T) {
	l := sampleReport().Relay.Latency
	if l.Count != 1000 || l.P50 != 500 || l.P99 != 990 || l.P999 != 999 || l.Max != 1000 {
		t.Fatalf("summary %+v", l)
	}
	if l.Mean < 500 || l.Mean > 501 {
		t.Fatalf("mean %v, want 500.5", l.Mean)
	}
}

func TestWriteTable(t *testing.T) {
	r := sampleReport()
	r.Client = ClientTuned
	r.Kernel = &KernelMemoryReport{Connections: 2000, SlabPerConnectionBytes: 8248.888,
		Caches: []SlabDelta{{Name: "TCP", ObjectBytes: 2368, Objects: 4000, ObjectsPerConnection: 2, Bytes: 9472000}}}
	r.Errors.Server = map[string]int64{"rate_limited": 3}
	r.Errors.Rejected = 3
	var b strings.Builder
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if last := strings.Fields(lines[len(lines)-1]); len(last) != 2 || last[0] != "result" || last[1] != "FAILED" {
		t.Errorf("last line %q, want the result FAILED", lines[len(lines)-1])
	}
	for _, want := range []string{
		"proto=tcp client=tuned pairs=2 size=64 window=16 messages/side=500",
		"server pair", "50.000 µs/pair", "reads 3.000  writes 4.000  switches 1.000 per pair",
		"server relay", "(user 0.01s, system 0.02s; stat)", "1.000 µs/message", "reads 0.062  writes 0.065",
		"kernel slab", "8,249 bytes/conn, both ends", "TCP 2.00×2368",
		"kernel, other", "0 /proc inodes made meanwhile, left out", "the machine's TCP buffers +0 bytes",
		"4 connections", "2 pairs", "1,000 pairings/s",
		"2000 of 2000 delivered", "4,000 messages/s",
		"p50 500  p99 990  p999 999",
		"rejected=3 server:rate_limited=3",
		"1.0 MiB before, 2.0 MiB after", "262,144 bytes/conn",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestReportJSON(t *testing.T) {
	b, err := json.Marshal(sampleReport())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	relay := m["relay"].(map[string]any)
	if relay["messages_per_second"].(float64) != 4000 {
		t.Errorf("relay: %v", relay)
	}
	if lat := relay["latency_us"].(map[string]any); lat["p999"].(float64) != 999 {
		t.Errorf("latency: %v", lat)
	}
	if m["pair"].(map[string]any)["per_second"].(float64) != 1000 {
		t.Errorf("pair: %v", m["pair"])
	}
	if m["rss"].(map[string]any)["per_connection_bytes"].(float64) != 262144 {
		t.Errorf("rss: %v", m["rss"])
	}
	server := m["server"].(map[string]any)
	if relay := server["relay"].(map[string]any); relay["cpu_us_per_op"].(float64) != 1 || relay["reads_per_op"].(float64) != 0.0625 || relay["cpu_source"] != "stat" {
		t.Errorf("server relay: %v", relay)
	}
	if pair := server["pair"].(map[string]any); pair["cpu_us_per_op"].(float64) != 50 || pair["writes_per_op"].(float64) != 4 {
		t.Errorf("server pair: %v", pair)
	}
}

func TestThousands(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.4: "1,234,567", 100000: "100,000"} {
		if got := thousands(v); got != want {
			t.Errorf("thousands(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestParseVmRSS(t *testing.T) {
	status := "Name:\tduetd\nVmPeak:\t  9999 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n"
	if got, err := parseVmRSS([]byte(status)); err != nil || got != 12345 {
		t.Fatalf("parseVmRSS = %d, %v", got, err)
	}
	if _, err := parseVmRSS([]byte("Name:\tkthreadd\n")); err == nil {
		t.Fatal("no VmRSS line accepted")
	}
	if rss, err := ReadRSS(os.Getpid()); err != nil || rss <= 0 {
		t.Fatalf("ReadRSS(self) = %d, %v", rss, err)
	}
}

func TestValidate(t *testing.T) {
	ok := DefaultConfig()
	if err := ok.Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	tests := []struct {
		name   string
		change func(*Config)
	}{
		{"remote target", func(c *Config) { c.TCPAddr = "10.0.0.1:7070" }},
		{"remote ws target", func(c *Config) { c.Proto = ProtoWS; c.WSAddr = "example.com:80" }},
		{"no host", func(c *Config) { c.TCPAddr = ":7070" }},
		{"remote source", func(c *Config) { c.Sources = mustSources("192.168.1.1") }},
		{"tiny size", func(c *Config) { c.Size = MinTextSize - 1 }},
		{"no window", func(c *Config) { c.Window = 0 }},
		{"no pairs", func(c *Config) { c.Pairs = 0 }},
		{"too many pairs", func(c *Config) { c.Pairs = maxConnections }},
		{"no messages", func(c *Config) { c.Messages = 0 }},
		{"bad proto", func(c *Config) { c.Proto = "udp" }},
		{"ws path", func(c *Config) { c.Proto = ProtoMix; c.WSPath = "ws" }},
	}
	for _, tt := range tests {
		c := DefaultConfig()
		tt.change(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
	c := DefaultConfig()
	c.Messages, c.Duration = 0, 1
	c.TCPAddr = "localhost:7070"
	c.Sources = mustSources("127.0.0.2, ::1")
	if err := c.Validate(); err != nil {
		t.Errorf("duration run from loopback sources: %v", err)
	}
}

func mustSources(s string) []net.IP {
	ips, err := ParseSources(s)
	if err != nil {
		panic(err)
	}
	return ips
}
