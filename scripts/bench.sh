#!/usr/bin/env bash
# Measures duetd against the two reference relays built into duet-bench
# (a bare gnet relay: the ceiling; a goroutine-per-connection relay: what
# most people write first), all on loopback on this machine, and writes
# the results with the exact commands to docs/BENCHMARKS.md.
#
#   scripts/bench.sh               run everything and rewrite docs/BENCHMARKS.md
#   OUT=/tmp/b.md scripts/bench.sh write elsewhere
#
# Server and load generator share the machine's cores, so figures are for
# comparison on one machine in one run, not absolute capacities.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${OUT:-docs/BENCHMARKS.md}
bin=$(mktemp -d)
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$bin" "$work"
}
trap cleanup EXIT

echo "building"
go build -o "$bin/duetd" ./cmd/duetd
go build -o "$bin/duet-bench" ./cmd/duet-bench

# Ports: duetd 17070 (line) and 18080 (web); bare relay 17071; goroutine
# relay 17072 (one write per message, as a first version does) and 17073
# (the same, batching a burst into one write).
start_duetd() {
  DUETD_LIMITS_MAX_CONNS_PER_IP=1000000 DUETD_LIMITS_MAX_CONNS=1000000 \
    "$bin/duetd" --tcp-listen 127.0.0.1:17070 --ws-listen 127.0.0.1:18080 --admin-listen "" \
    --log-level warn --log-format json >>"$work/duetd.log" 2>&1 &
  duetd_pid=$!; pids+=("$duetd_pid")
  sleep 1
}
start_duetd
"$bin/duet-bench" bare-relay -listen 127.0.0.1:17071 >"$work/bare.log" 2>&1 &
pids+=($!)
"$bin/duet-bench" goroutine-relay -listen 127.0.0.1:17072 >"$work/gor.log" 2>&1 &
pids+=($!)
"$bin/duet-bench" goroutine-relay -batch -listen 127.0.0.1:17073 >"$work/gorb.log" 2>&1 &
pids+=($!)
sleep 1

results="$work/results.tsv"
: >"$results"
# run NAME ARGS...: runs one scenario, keeps its JSON, prints its table.
run() {
  local name=$1; shift
  echo "== $name: duet-bench run $*"
  "$bin/duet-bench" run -json "$@" >"$work/$name.json"
  printf '%s\t%s\n' "$name" "duet-bench run ${*//$duetd_pid/<duetd pid>}" >>"$results"
}

common=(-pairs 200 -messages 20000 -size 64 -window 16)
run tcp-bare      -proto bare -tcp 127.0.0.1:17071 "${common[@]}"
run tcp-goroutine -proto tcp  -tcp 127.0.0.1:17072 "${common[@]}"
run tcp-goroutine-batched -proto tcp -tcp 127.0.0.1:17073 "${common[@]}"
run tcp-duetd     -proto tcp  -tcp 127.0.0.1:17070 "${common[@]}" -pid "$duetd_pid"
run ws-duetd      -proto ws   -ws  127.0.0.1:18080 "${common[@]}" -pid "$duetd_pid"
run mix-duetd     -proto mix  -tcp 127.0.0.1:17070 -ws 127.0.0.1:18080 "${common[@]}"
lat=(-pairs 100 -messages 5000 -size 64 -window 1)
run lat-bare      -proto bare -tcp 127.0.0.1:17071 "${lat[@]}"
run lat-duetd     -proto tcp  -tcp 127.0.0.1:17070 "${lat[@]}"
run pairing-duetd -proto tcp  -tcp 127.0.0.1:17070 -pairs 4000 -messages 1 -concurrency 1024 -sources 127.0.0.1,127.0.0.2
# Memory per idle connection is read against a fresh duetd, whose RSS
# before the run is not inflated by the relay runs above.
kill "$duetd_pid"; wait "$duetd_pid" 2>/dev/null || true
start_duetd
run idle-duetd    -idle -proto tcp -tcp 127.0.0.1:17070 -pairs 9000 -hold 3s -pid "$duetd_pid" -sources 127.0.0.1,127.0.0.2,127.0.0.3

# Allocations per relayed message come from the relay micro-benchmarks,
# which time duet's own work per message without sockets.
echo "== micro-benchmarks: go test -run '^\$' -bench Relay -benchmem ./engine/"
go test -run '^$' -bench 'Relay' -benchmem ./engine/ | tee "$work/micro.txt"
printf '%s\t%s\n' micro-allocs "go test -run '^\$' -bench Relay -benchmem ./engine/" >>"$results"

# The figures are read from duet-bench's JSON by a short Go program, so
# the script needs nothing the Go toolchain does not have.
cat >"$work/report.go" <<'EOF'
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

type report struct {
	Pair  struct{ PerSecond float64 `json:"per_second"` } `json:"pair"`
	Relay struct {
		MessagesPerSecond float64 `json:"messages_per_second"`
		Latency           struct{ P50, P99, P999 float64 } `json:"latency_us"`
	} `json:"relay"`
	RSS *struct {
		BytesPerConn float64 `json:"per_connection_bytes"`
		Conns        int     `json:"connections"`
	} `json:"rss"`
}

func main() {
	dir, out := os.Args[1], os.Args[2]
	load := func(name string) report {
		var r report
		b, err := os.ReadFile(filepath.Join(dir, name+".json"))
		if err == nil {
			err = json.Unmarshal(b, &r)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, name, err)
			os.Exit(1)
		}
		return r
	}
	cmds := map[string]string{}
	f, _ := os.Open(filepath.Join(dir, "results.tsv"))
	sc := bufio.NewScanner(f)
	var order []string
	for sc.Scan() {
		name, cmd, _ := strings.Cut(sc.Text(), "\t")
		cmds[name] = cmd
		order = append(order, name)
	}
	bare, gor, gorb, tcp, ws, mix := load("tcp-bare"), load("tcp-goroutine"), load("tcp-goroutine-batched"), load("tcp-duetd"), load("ws-duetd"), load("mix-duetd")
	lb, ld := load("lat-bare"), load("lat-duetd")
	pairing, idle := load("pairing-duetd"), load("idle-duetd")
	check := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**not met**"
	}
	var b strings.Builder
	host, _ := os.Hostname()
	cpu := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(l, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	fmt.Fprintf(&b, "# Benchmarks\n\nWritten by `scripts/bench.sh` on %s (%s, %d cores, %s). Server and load\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), cpu, runtime.NumCPU(), host)
	fmt.Fprintf(&b, "generator share the machine, so the ratios between servers in one run are\nthe figures to read; absolute numbers move with the machine's load.\n\n")
	fmt.Fprintf(&b, "## Targets\n\n| target | measured | |\n| --- | --- | --- |\n")
	r1 := tcp.Relay.MessagesPerSecond / bare.Relay.MessagesPerSecond
	r2 := tcp.Relay.MessagesPerSecond / gor.Relay.MessagesPerSecond
	r3 := ws.Relay.MessagesPerSecond / bare.Relay.MessagesPerSecond
	r4 := ld.Relay.Latency.P99 / lb.Relay.Latency.P99
	fmt.Fprintf(&b, "| TCP relay ≥ 85%% of the bare gnet relay | %.0f%% | %s |\n", 100*r1, check(r1 >= 0.85))
	fmt.Fprintf(&b, "| TCP relay ≥ 3x the goroutine relay (one write per message) | %.2fx | %s |\n", r2, check(r2 >= 3))
	fmt.Fprintf(&b, "| (for reference: against the goroutine relay that batches writes) | %.2fx | |\n", tcp.Relay.MessagesPerSecond/gorb.Relay.MessagesPerSecond)
	fmt.Fprintf(&b, "| WebSocket relay ≥ 60%% of the bare gnet relay | %.0f%% | %s |\n", 100*r3, check(r3 >= 0.60))
	fmt.Fprintf(&b, "| p99 latency, one in flight, ≤ 1.5x the bare relay's | %.2fx | %s |\n", r4, check(r4 <= 1.5))
	if idle.RSS != nil {
		fmt.Fprintf(&b, "| ≤ 3 KiB of server RSS per idle paired connection (%d connections) | %.0f bytes | %s |\n", idle.RSS.Conns, idle.RSS.BytesPerConn, check(idle.RSS.BytesPerConn <= 3072))
	}
	fmt.Fprintf(&b, "| ≥ 20,000 logins-and-pairs per second | %.0f/s | %s |\n", pairing.Pair.PerSecond, check(pairing.Pair.PerSecond >= 20000))
	micro := map[string][2]float64{} // benchmark name: ns/op, allocs/op
	if data, err := os.ReadFile(filepath.Join(dir, "micro.txt")); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			f := strings.Fields(l)
			if len(f) < 8 || !strings.HasPrefix(f[0], "BenchmarkRelay") {
				continue
			}
			var ns, allocs float64
			for i := 1; i+1 < len(f); i++ {
				switch f[i+1] {
				case "ns/op":
					fmt.Sscan(f[i], &ns)
				case "allocs/op":
					fmt.Sscan(f[i], &allocs)
				}
			}
			micro[strings.TrimPrefix(strings.SplitN(f[0], "-", 2)[0], "Benchmark")] = [2]float64{ns, allocs}
		}
	}
	for _, m := range []struct {
		name, label string
		max         float64
	}{{"RelayTCPToTCP", "TCP to TCP: 0", 0}, {"RelayWSToWS", "WebSocket to WebSocket: ≤ 2", 2}} {
		r, ok := micro[m.name]
		if !ok {
			fmt.Fprintf(os.Stderr, "no result for Benchmark%s\n", m.name)
			os.Exit(1)
		}
		fmt.Fprintf(&b, "| heap allocations per relayed message, %s (%.0f ns/op) | %.0f | %s |\n", m.label, r[0], r[1], check(r[1] <= m.max))
	}
	fmt.Fprintf(&b, "\n## Relay: 200 pairs, 64-byte messages, 16 in flight per sender\n\n| server | messages/s | p50 µs | p99 µs | p999 µs |\n| --- | ---: | ---: | ---: | ---: |\n")
	for _, row := range []struct {
		name string
		r    report
	}{{"bare gnet relay (ceiling)", bare}, {"goroutine-per-connection relay, one write per message", gor}, {"goroutine-per-connection relay, batched writes", gorb}, {"duetd, line protocol", tcp}, {"duetd, WebSocket JSON", ws}, {"duetd, line to WebSocket", mix}, {"bare relay, 1 in flight (100 pairs)", lb}, {"duetd, 1 in flight (100 pairs)", ld}} {
		fmt.Fprintf(&b, "| %s | %.0f | %.0f | %.0f | %.0f |\n", row.name, row.r.Relay.MessagesPerSecond, row.r.Relay.Latency.P50, row.r.Relay.Latency.P99, row.r.Relay.Latency.P999)
	}
	fmt.Fprintf(&b, "\n## Commands\n\nEach server runs on loopback (duetd with `--tcp-listen 127.0.0.1:17070 --ws-listen 127.0.0.1:18080`,\n`duet-bench bare-relay -listen 127.0.0.1:17071`, `duet-bench goroutine-relay -listen 127.0.0.1:17072`,\n`duet-bench goroutine-relay -batch -listen 127.0.0.1:17073`), then:\n\n```\n")
	for _, name := range order {
		fmt.Fprintf(&b, "%-14s %s\n", name, cmds[name])
	}
	fmt.Fprintf(&b, "```\n")
	if extra, err := os.ReadFile("docs/BENCHMARKS.notes.md"); err == nil {
		b.WriteString("\n")
		b.Write(extra)
	}
	if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
EOF
go run "$work/report.go" "$work" "$out"
echo "wrote $out"
cat "$out"
