#!/usr/bin/env bash
# Measures duetd against the reference relays built into duet-bench (a
# bare gnet relay: the ceiling; a goroutine-per-connection relay, with
# one write per message and with batched writes: what most people write
# first), and against itself with resume off (what keeping messages for
# a resume costs), all on loopback on this machine, under both of duet-bench's
# relay clients (the tuned one, and the plain one a user writes), and
# writes the results with the exact commands to docs/BENCHMARKS.md.
#
#   scripts/bench.sh                  run everything and rewrite docs/BENCHMARKS.md
#   OUT=/tmp/b.md scripts/bench.sh    write elsewhere
#   ROUNDS=1 MESSAGES=1000 LAT_MESSAGES=200 IDLE_PAIRS=1000 scripts/bench.sh
#                                     a quick, rough pass (the defaults are 3,
#                                     5000, 1000 and 9000)
#
# Server and load generator share the machine's cores, so a busy
# neighbour slows whatever runs at the time. The servers are therefore
# measured in alternating rounds (the bare relay, duetd, the goroutine
# relays, then again), and the report gives medians over the rounds with
# their spread, and ratios between servers of the same rounds. Each run
# with -pid also reads the server's CPU time and system calls from /proc
# around its pair and relay phases (see docs/BENCHMARKS.notes.md).
#
# A relay run moves 200 pairs x 2 sides x MESSAGES messages: 2M by
# default, about 2 s at the tuned client's rate on two cores and up to
# 10 s for the slowest server and client, enough that the server's CPU
# time, read to the nanosecond, is well above the noise of reading it.
# The whole script, three rounds, used about nine minutes of CPU time in
# all (servers, clients, builds and micro-benchmarks): about five minutes
# of wall time with both cores to itself, and 9.5 minutes on a machine
# whose load average was 17 to 20.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${OUT:-docs/BENCHMARKS.md}
rounds=${ROUNDS:-3}
messages=${MESSAGES:-5000}
lat_messages=${LAT_MESSAGES:-1000}
idle_pairs=${IDLE_PAIRS:-9000}
bin=$(mktemp -d)
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$bin" "$work"
}
trap cleanup EXIT
started=$SECONDS

echo "building"
go build -o "$bin/duetd" ./cmd/duetd
go build -o "$bin/duet-bench" ./cmd/duet-bench

# Ports: duetd 17070 (line) and 18080 (web); bare relay 17071; goroutine
# relay 17072 (one write per message, as a first version does) and 17073
# (the same, batching a burst into one write); duetd with resume off
# 17074.
# launch_duetd LOG ARGS...: starts duetd in the background with the
# connection caps lifted and ARGS for its listeners, logging to LOG in
# the work directory; $! is its pid. Variables set before the call
# (DUETD_RESUME_WINDOW) reach it too.
launch_duetd() {
  local log=$1; shift
  DUETD_LIMITS_MAX_CONNS_PER_IP=1000000 DUETD_LIMITS_MAX_CONNS=1000000 \
    "$bin/duetd" "$@" --admin-listen "" \
    --log-level warn --log-format json >>"$work/$log" 2>&1 &
}
start_duetd() {
  launch_duetd duetd.log --tcp-listen 127.0.0.1:17070 --ws-listen 127.0.0.1:18080
  duetd_pid=$!; pids+=("$duetd_pid")
  sleep 1
}
start_duetd
# The same duetd with resume off, line protocol only: beside duetd as
# configured, it shows what keeping each message for a resume costs.
DUETD_RESUME_WINDOW=0s launch_duetd duetd-resume-off.log --tcp-listen 127.0.0.1:17074 --ws-listen ""
noresume_pid=$!; pids+=("$noresume_pid")
"$bin/duet-bench" bare-relay -listen 127.0.0.1:17071 >"$work/bare.log" 2>&1 &
bare_pid=$!; pids+=("$bare_pid")
"$bin/duet-bench" goroutine-relay -listen 127.0.0.1:17072 >"$work/gor.log" 2>&1 &
gor_pid=$!; pids+=("$gor_pid")
"$bin/duet-bench" goroutine-relay -batch -listen 127.0.0.1:17073 >"$work/gorb.log" 2>&1 &
gorb_pid=$!; pids+=("$gorb_pid")
sleep 1

: >"$work/runs.tsv"
failed=0
# run ROUND SERVER SCENARIO CLIENT ARGS...: runs one scenario, keeps its
# JSON report and lists it in runs.tsv for the report. A failed run is
# kept (the report lists it) and the script carries on.
run() {
  local round=$1 server=$2 scenario=$3 client=$4; shift 4
  local file="$round-$server-$scenario-$client.json"
  local cmd="duet-bench run -client $client $*"
  echo "== round $round, $server, $scenario, $client: $cmd"
  if ! "$bin/duet-bench" run -json -client "$client" "$@" >"$work/$file"; then
    echo "   failed"
    failed=1
    [ -s "$work/$file" ] || rm -f "$work/$file"
  fi
  cmd=$(sed -E 's/-pid [0-9]+/-pid <server pid>/' <<<"$cmd")
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$server" "$scenario" "$client" "$file" "$cmd" >>"$work/runs.tsv"
}

common=(-pairs 200 -messages "$messages" -size 64 -window 16)
lat=(-pairs 100 -messages "$lat_messages" -size 64 -window 1)
for round in $(seq 1 "$rounds"); do
  for client in tuned plain; do
    run "$round" bare tcp "$client" -proto bare -tcp 127.0.0.1:17071 "${common[@]}" -pid "$bare_pid"
    run "$round" bare lat "$client" -proto bare -tcp 127.0.0.1:17071 "${lat[@]}" -pid "$bare_pid"
  done
  for client in tuned plain; do
    run "$round" duetd tcp "$client" -proto tcp -tcp 127.0.0.1:17070 "${common[@]}" -pid "$duetd_pid"
    run "$round" duetd ws "$client" -proto ws -ws 127.0.0.1:18080 "${common[@]}" -pid "$duetd_pid"
    run "$round" duetd mix "$client" -proto mix -tcp 127.0.0.1:17070 -ws 127.0.0.1:18080 "${common[@]}" -pid "$duetd_pid"
    run "$round" duetd lat "$client" -proto tcp -tcp 127.0.0.1:17070 "${lat[@]}" -pid "$duetd_pid"
    run "$round" duetd-resume-off tcp "$client" -proto tcp -tcp 127.0.0.1:17074 "${common[@]}" -pid "$noresume_pid"
    run "$round" duetd-resume-off lat "$client" -proto tcp -tcp 127.0.0.1:17074 "${lat[@]}" -pid "$noresume_pid"
  done
  # Pairing is the same for both clients: it is measured once a round,
  # on duetd and on the bare relay, whose pairing (each side's first line
  # relayed to the other) is the same loopback exchange with no protocol.
  pairing=(-pairs 4000 -messages 1 -concurrency 1024 -sources 127.0.0.1,127.0.0.2)
  run "$round" bare pairing tuned -proto bare -tcp 127.0.0.1:17071 "${pairing[@]}" -pid "$bare_pid"
  run "$round" duetd pairing tuned -proto tcp -tcp 127.0.0.1:17070 "${pairing[@]}" -pid "$duetd_pid"
  for client in tuned plain; do
    run "$round" goroutine tcp "$client" -proto tcp -tcp 127.0.0.1:17072 "${common[@]}" -pid "$gor_pid"
    run "$round" goroutine-batched tcp "$client" -proto tcp -tcp 127.0.0.1:17073 "${common[@]}" -pid "$gorb_pid"
  done
done
# Memory per idle connection is read against a fresh duetd, whose RSS
# before the run is not inflated by the relay runs above; it is listed
# as round 0, made once. The run also reads the kernel's socket slab
# caches (as root; otherwise the report says they were not measured).
# Then every connection is reset, which sends its session away (resume),
# and the RSS is read again: the RSS per away session.
kill "$duetd_pid" "$noresume_pid"; wait "$duetd_pid" "$noresume_pid" 2>/dev/null || true
start_duetd
run 0 duetd idle tuned -idle -proto tcp -tcp 127.0.0.1:17070 -pairs "$idle_pairs" -hold 3s -away 5s \
  -pid "$duetd_pid" -sources 127.0.0.1,127.0.0.2,127.0.0.3

# Allocations per relayed message come from the relay micro-benchmarks,
# which time duet's own work per message without sockets.
echo "== micro-benchmarks: go test -run '^\$' -bench Relay -benchmem ./engine/"
go test -run '^$' -bench 'Relay' -benchmem ./engine/ | tee "$work/micro.txt"

# The report is written by duet-bench itself (package benchreport), so
# the script needs nothing the Go toolchain does not have.
"$bin/duet-bench" report -dir "$work" -out "$out" -notes docs/BENCHMARKS.notes.md
echo "wrote $out in $((SECONDS - started)) s"
cat "$out"
if [ "$failed" != 0 ]; then
  echo "some runs failed; the report lists them" >&2
  exit 1
fi
