#!/usr/bin/env bash
# syscalls.sh - what an event costs a node in system calls and thread
# switches (issue 15): counts that a busy machine changes far less than
# it changes latencies.
#
#   bench/syscalls.sh [--build DIR] [--bin PRESENCED] [--events N] [--rate R]
#
# Starts its own nats-server (JetStream on), redis-server and three nodes
# (the bench's settings) on free loopback ports, sends 2000 warm-up events,
# then N (20000) presence-sim events at R (2000) events/s into n1 while
# `perf stat` counts, on n1 (the receiving node) and n2 (a peer), every
# system call, the main ones by name, and the context switches; prints
# each per event. --bin compares another presenced binary with the same
# drivers. At a low rate most batches hold one event, so the counts are
# close to the cost of a lone event; at higher rates batching lowers them,
# and how much depends on the machine's load. Needs perf and the
# syscalls tracepoints (root, or perf_event_paranoid <= 1).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$ROOT/build BIN='' EVENTS=20000 RATE=2000
while [[ $# -gt 0 ]]; do
    case $1 in
        --build) BUILD=$(cd "$2" && pwd); shift ;;
        --bin) BIN=$2; shift ;;
        --events) EVENTS=$2; shift ;;
        --rate) RATE=$2; shift ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "syscalls.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
BIN=${BIN:-$BUILD/presenced}
for b in "$BIN" "$BUILD/presence-sim"; do
    [[ -x $b ]] || { echo "syscalls.sh: $b is missing: build first" >&2; exit 1; }
done
command -v perf >/dev/null || { echo "syscalls.sh: perf is missing" >&2; exit 1; }
PY=$(command -v /usr/bin/python3 || command -v python3)
LIB="$PY $ROOT/bench/bench_lib.py"
WORK=$(mktemp -d /tmp/pd-syscalls-XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

wait_for() { # seconds command...
    local end=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || return 1
        sleep 0.1
    done
}

nats-server -a 127.0.0.1 -p -1 -m -1 -js -sd "$WORK/js" --ports_file_dir "$WORK" \
    >"$WORK/nats.log" 2>&1 &
PIDS+=("$!")
wait_for 10 compgen -G "$WORK/*.ports" || { echo "nats-server did not start" >&2; exit 1; }
read -r NATS_URL _ < <($LIB ports "$WORK"/*.ports)
REDIS_PORT=$($LIB free-port)
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$WORK" --save "" --appendonly no \
    >"$WORK/redis.log" 2>&1 &
PIDS+=("$!")
wait_for 10 redis-cli -p "$REDIS_PORT" ping || { echo "redis-server did not start" >&2; exit 1; }
declare -A NODE_PID
for id in n1 n2 n3; do
    env PRESENCE_SYNC_INTERVAL_MS=200 PRESENCE_NODE_TIMEOUT_MS=10000 \
        PRESENCE_SERVER_TIMEOUT_MS=60000 PRESENCE_SNAPSHOT_INTERVAL_MS=3600000 \
        PRESENCE_OFFLINE_DELAY_MS=30000 PRESENCE_LOG_LEVEL=info PRESENCE_NODE_ID=$id \
        PRESENCE_NATS_URL="$NATS_URL" PRESENCE_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
        "$BIN" >"$WORK/$id.log" 2>&1 &
    NODE_PID[$id]=$!
    PIDS+=("$!")
done
for id in n1 n2 n3; do
    wait_for 60 grep -q "announcing changes" "$WORK/$id.log" ||
        { echo "node $id did not become ready:" >&2; tail -5 "$WORK/$id.log" >&2; exit 1; }
done

sim() { # server-prefix events
    "$BUILD/presence-sim" --nats "$NATS_URL" --nodes n1 --servers 12 --users 20000 \
        --rate "$RATE" --events "$2" --heartbeat-ms 0 --server-prefix "$1" --drain 10 \
        --json --quiet
}
sim warm 2000 >/dev/null
EVENTS_LIST=raw_syscalls:sys_enter,syscalls:sys_enter_sendto,syscalls:sys_enter_write
EVENTS_LIST+=,syscalls:sys_enter_read,syscalls:sys_enter_recvfrom,syscalls:sys_enter_futex
EVENTS_LIST+=,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl,context-switches
PERF=()
for id in n1 n2; do
    perf stat -x, -e "$EVENTS_LIST" -p "${NODE_PID[$id]}" -o "$WORK/perf.$id" &
    PERF+=("$!")
done
sleep 0.5 # perf attached
out=$(sim m "$EVENTS")
sleep 0.3
kill -INT "${PERF[@]}"
wait "${PERF[@]}" 2>/dev/null || true
ok=$(echo "$out" | $PY -c 'import json,sys; print(json.load(sys.stdin)["ok"])')
echo "presenced: $BIN; $EVENTS events at $RATE/s into n1 of 3 ($ok answered ok);" \
    "load average $(cut -d' ' -f1-3 /proc/loadavg)"
$PY - "$EVENTS" "$WORK/perf.n1" "$WORK/perf.n2" <<'EOF'
import sys
n = int(sys.argv[1])
def counts(path):
    out = {}
    for line in open(path):
        f = line.strip().split(",")
        if len(f) > 2 and f[0].isdigit():
            name = f[2].replace("syscalls:sys_enter_", "")
            out["all system calls" if name == "raw_syscalls:sys_enter" else name] = int(f[0])
    return out
a, b = counts(sys.argv[2]), counts(sys.argv[3])
print("%-22s %14s %10s" % ("per event", "n1 (receives)", "n2 (peer)"))
for k in a:
    print("%-22s %14.3f %10.3f" % (k, a[k] / n, b.get(k, 0) / n))
EOF
