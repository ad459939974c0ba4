#!/usr/bin/env bash
# bench.sh - the benchmark harness of presenced (issue 5): starts its own
# nats-server (JetStream on), redis-server and presence nodes on free
# loopback ports, drives them with pd-bench and presence-sim, stops
# everything it started (also on failure or ^C), and writes the results:
# a Markdown table on stdout, <out>/latest.json and PNG plots (gnuplot).
#
#   bench/bench.sh [--quick] [--build DIR] [--out DIR] [--nodes N] [--phases LIST]
#                  [--keep]
#
# --phases runs only some of baselines,stub,latency,flood,throughput,batch,
# memory,churn (memory includes recovery; stub is the same-pattern baseline
# of issue #15, batch its batched events, flood the query flood of issue
# #11, churn the forgetting of issue #13); --keep leaves the work directory
# behind.
#
# Phases, in order: raw NATS baselines (one hop and relay, SendAsap on and
# off, paced, plus the unpaced one-hop rate); the same-pattern stub nodes
# (latency and throughput, driven as presenced is); presenced sync latency;
# throughput (presence-sim, increasing rates); batched events (1M events in
# batches of 1000 into every node, then convergence); memory (RSS per device and
# per user); recovery (restart with a snapshot, then from the stream only);
# churn (CHURN_USERS distinct users, 2M, through a short user retention).
# --quick runs every phase small, in well under a minute: it checks the
# harness, not the numbers. Exit status: 0 when every phase produced its
# results (whatever the numbers), 1 when the harness itself failed.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
QUICK=0
BUILD=$ROOT/build
OUT=$ROOT/bench/results
NODES=3
PHASES=baselines,stub,latency,flood,throughput,batch,memory,churn
KEEP=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --quick) QUICK=1 ;;
        --build) BUILD=$(cd "$2" && pwd); shift ;;
        --out) OUT=$2; shift ;;
        --nodes) NODES=$2; shift ;;
        --phases) PHASES=$2; shift ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
for bin in pd-bench presenced presence-sim; do
    [[ -x $BUILD/$bin ]] || { echo "bench.sh: $BUILD/$bin is missing: build first" >&2; exit 1; }
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /tmp/pd-bench-XXXXXX)
RAW=$WORK/raw.jsonl
# Debian's python3 first: a version manager's shim can cost a second a call.
PY=$(command -v /usr/bin/python3 || command -v python3)
LIB="$PY $ROOT/bench/bench_lib.py"
PIDS=()            # every process this script started, in start order
FAILED=0
T_START=$(date +%s)

log() { printf '[bench %4ds] %s\n' $(($(date +%s) - T_START)) "$*" >&2; }

stop_pid() { # pid [signal] [seconds]: stop it and wait; SIGKILL after 10 s
    local pid=$1 sig=${2:-TERM} i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -"$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < ${3:-10} * 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.01
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
    if [[ $rc -ne 0 || $FAILED -ne 0 ]]; then
        mkdir -p "$OUT/logs" && cp "$WORK"/*.log "$OUT/logs/" 2>/dev/null || true
        echo "bench.sh: failed; the logs are in $OUT/logs" >&2
    fi
    if [[ $KEEP -eq 1 ]]; then echo "bench.sh: work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # seconds command...: polls every 20 ms
    local end=$(($(date +%s) + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [[ $(date +%s) -ge $end ]] && return 1
        sleep 0.02
    done
}

# ---- servers -----------------------------------------------------------------------------

NATS_PID='' NATS_URL='' NATS_MON='' REDIS_PID='' REDIS_PORT=''
declare -A NODE_PID NODE_LOG
STACK=0

start_nats() {
    local dir=$WORK/nats$STACK
    mkdir -p "$dir"
    nats-server -a 127.0.0.1 -p -1 -m -1 -js -sd "$dir/js" --ports_file_dir "$dir" \
        >"$WORK/nats$STACK.log" 2>&1 &
    NATS_PID=$!; PIDS+=("$NATS_PID")
    wait_for 10 compgen -G "$dir/*.ports" || { echo "nats-server did not start" >&2; return 1; }
    read -r NATS_URL NATS_MON < <($LIB ports "$dir"/*.ports)
}

start_redis() {
    local dir=$WORK/redis$STACK try
    mkdir -p "$dir"
    for try in 1 2 3 4 5; do
        REDIS_PORT=$($LIB free-port)
        redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$dir" --save "" \
            --appendonly no --lazyfree-lazy-user-del yes >"$WORK/redis$STACK.log" 2>&1 &
        REDIS_PID=$!; PIDS+=("$REDIS_PID")
        wait_for 10 redis-cli -p "$REDIS_PORT" ping && return 0
        stop_pid "$REDIS_PID"
    done
    echo "redis-server did not start" >&2
    return 1
}

NODE_ENV=(
    PRESENCE_SYNC_INTERVAL_MS=200 PRESENCE_NODE_TIMEOUT_MS=10000
    PRESENCE_SERVER_TIMEOUT_MS=60000 PRESENCE_SNAPSHOT_INTERVAL_MS=3600000
    PRESENCE_OFFLINE_DELAY_MS=30000 PRESENCE_LOG_LEVEL=info
)

start_node() { # id [log-suffix]
    local id=$1 log=$WORK/$1${2:-}.log
    NODE_LOG[$id]=$log
    env "${NODE_ENV[@]}" PRESENCE_NODE_ID="$id" PRESENCE_NATS_URL="$NATS_URL" \
        PRESENCE_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" "$BUILD/presenced" >"$log" 2>&1 &
    NODE_PID[$id]=$!; PIDS+=("$!")
}

wait_ready() { # ids...: each logs that it announces changes
    local id
    for id in "$@"; do
        wait_for 60 grep -q "announcing changes" "${NODE_LOG[$id]}" ||
            { echo "node $id did not become ready (see ${NODE_LOG[$id]})" >&2; return 1; }
    done
}

node_ids() { local i; for ((i = 1; i <= $1; i++)); do printf 'n%d ' "$i"; done; }
csv() { local IFS=,; echo "$*"; }

start_stack() { # nodes: a fresh nats-server, redis-server and n1..n<nodes>
    local id
    STACK=$((STACK + 1))
    start_nats
    start_redis
    for id in $(node_ids "$1"); do start_node "$id"; done
    # shellcheck disable=SC2046
    wait_ready $(node_ids "$1")
}

stop_stack() {
    local id
    for id in "${!NODE_PID[@]}"; do stop_pid "${NODE_PID[$id]}"; done
    NODE_PID=()
    [[ -n $REDIS_PID ]] && stop_pid "$REDIS_PID"
    [[ -n $NATS_PID ]] && stop_pid "$NATS_PID"
    REDIS_PID='' NATS_PID=''
}

# ---- measurements ------------------------------------------------------------------------

record() { # phase json-object: one raw line, tagged with its phase
    printf '{"phase":"%s",%s\n' "$1" "${2#\{}" >>"$RAW"
}

bench() { # phase pd-bench-args...: runs pd-bench, records its JSON line
    local phase=$1 out rc=0; shift
    out=$("$BUILD/pd-bench" "$@" --url "$NATS_URL") || rc=$?
    if [[ -z $out ]]; then
        echo "bench.sh: pd-bench $1 produced nothing (exit $rc)" >&2
        FAILED=1
        return 1
    fi
    record "$phase" "$out"
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

if [[ $QUICK -eq 1 ]]; then
    LAT_SECS=(0.5 0.5); LAT_RATES=(1000 10000); RATE_COUNT=200000
    PD_SECS=1; PD_USERS=2000
    TP_SECS=1; TP_RATES=(5000 0); TP_USERS=5000
    MEM_SIZES=(10000); MEM_CLUSTER=0
    CHURN_USERS=${CHURN_USERS:-20000}
else
    LAT_SECS=(5 3 2); LAT_RATES=(1000 10000 50000); RATE_COUNT=2000000
    PD_SECS=5; PD_USERS=10000
    TP_SECS=3; TP_RATES=(10000 20000 40000 80000 160000 320000 0); TP_USERS=100000
    MEM_SIZES=(100000 1000000); MEM_CLUSTER=1
    CHURN_USERS=${CHURN_USERS:-2000000}
fi
# BENCH_MEM_SIZES (devices, space-separated) and BENCH_MEM_CLUSTER (0: no
# run of every node) narrow the memory phase, e.g. BENCH_MEM_SIZES=1000000
# BENCH_MEM_CLUSTER=0 bench/bench.sh --phases memory --out /tmp/m.
# shellcheck disable=SC2206
[[ -n ${BENCH_MEM_SIZES:-} ]] && MEM_SIZES=($BENCH_MEM_SIZES)
MEM_CLUSTER=${BENCH_MEM_CLUSTER:-$MEM_CLUSTER}
CHURN_ROUNDS=4
CHURN_RETENTION_MS=${CHURN_RETENTION_MS:-3000}
ALL_NODES=$(csv $(node_ids "$NODES"))

# 1. Raw NATS: the limit presenced is divided by.
phase_baselines() {
    local asap i mode
    log "phase 1/5: raw NATS baselines (one hop, relay to $((NODES - 1)) subscribers)"
    for asap in 1 0; do
        for i in "${!LAT_RATES[@]}"; do
            for mode in onehop relay; do
                log "  $mode, SendAsap $asap, ${LAT_RATES[i]} msg/s"
                bench baseline nats-lat --mode "$mode" --asap "$asap" --rate "${LAT_RATES[i]}" \
                    --secs "${LAT_SECS[i]}" --subs $((NODES - 1)) --prefix "bench.l$asap$i$mode"
            done
        done
        log "  unpaced one-hop rate, SendAsap $asap"
        bench baseline nats-rate --asap "$asap" --count "$RATE_COUNT" --prefix "bench.r$asap"
    done
}

# 2. presenced: publish -> every node applied (trace) and -> watcher.
phase_latency() {
    local i r every
    log "phase 2/5: presenced sync latency over $NODES nodes"
    for i in "${!LAT_RATES[@]}"; do
        r=${LAT_RATES[i]}
        every=$((r / 1000)); [[ $every -lt 1 ]] && every=1
        log "  $r events/s (one in $every traced)"
        bench latency pd-lat --nodes "$ALL_NODES" --rate "$r" --secs "$PD_SECS" \
            --users "$PD_USERS" --trace-every "$every" || true
    done
}

# Query flood (issue #11): event replies alone, then during 1000-user gets
# at 3000/s (300/s quick); reported as p50/p99 and the ratio flood/alone.
phase_flood() {
    local secs=10 rate=3000
    [[ $QUICK -eq 1 ]] && { secs=4; rate=300; }
    log "phase flood: event replies during a query flood ($rate gets/s of 1000 users)"
    bench flood flood --nodes "$ALL_NODES" --rate "$rate" --secs "$secs" || true
}

# 3. Throughput: presence-sim at increasing rates, then flat out; a step
# passes when every event is answered ok, the pace is held, and every node
# converges (same devices as the oracle, same vector clocks) within 2 s.
# Each step has servers of its own (and no server heartbeats, so no server
# timeout), so the nodes must end with what they held before plus the
# step's live devices.
TP_STEP=0
# What a step drives and how it checks convergence: presenced's nodes, or
# the stub nodes of phase_stub (whose "converged" is: every stub received
# every delta the others sent).
TP_RECORD=throughput TP_ALL='' TP_CONVERGE=converge
throughput_run() { # label nodes-csv rate
    local label=$1 nodes=$2 rate=$3 sim rc=0 devices conv base all=${TP_ALL:-$ALL_NODES}
    TP_STEP=$((TP_STEP + 1))
    base=$("$BUILD/pd-bench" "$TP_CONVERGE" --url "$NATS_URL" --nodes "$all" --timeout 10) ||
        { echo "bench.sh: the cluster did not settle before the step" >&2; FAILED=1; return 1; }
    sim=$("$BUILD/presence-sim" --nats "$NATS_URL" --nodes "$nodes" --servers 12 \
        --users "$TP_USERS" --rate "$rate" --duration "$TP_SECS" --heartbeat-ms 0 \
        --server-prefix "tp$TP_STEP" --drain 20 --json --quiet) || rc=$?
    [[ -z $sim ]] && { FAILED=1; return 1; }
    devices=$(($($LIB field devices "$sim") + $($LIB devices0 "$base")))
    conv=$("$BUILD/pd-bench" "$TP_CONVERGE" --url "$NATS_URL" --nodes "$all" \
        --count "$devices" --timeout 5) || true
    record "$TP_RECORD" "$($LIB merge-tp "$label" "$rate" "$TP_SECS" "$rc" "$sim" "$conv")"
    $LIB tp-passed "$(tail -n 1 "$RAW")"
}

throughput_ladder() { # all-nodes-csv first-node
    local label nodes r
    for label in node cluster; do
        if [[ $label == node ]]; then nodes=$2; else nodes=$1; fi
        for r in "${TP_RATES[@]}"; do
            log "  into $nodes at $([[ $r == 0 ]] && echo 'full speed' || echo "$r events/s")"
            if ! throughput_run "$label" "$nodes" "$r"; then
                log "  $label: step at $r did not keep up; stopping the ladder"
                [[ $r != 0 ]] && { log "  into $nodes at full speed"; throughput_run "$label" "$nodes" 0 || true; }
                break
            fi
        done
    done
}

phase_throughput() {
    log "phase 3/5: throughput (presence-sim, ${TP_SECS}s per step)"
    throughput_ladder "$ALL_NODES" n1
}

# Batched events (issue 15): pd-bench batch-rate (bench/bench_batch.c),
# events in `batch` requests of 1000, round-robin over every node, each
# device connecting and leaving in its batch; passed when every batch is
# answered ok and every node then holds what it held before with equal
# vector clocks within 2 s.
phase_batch() {
    local count=1000000 base out conv devices
    [[ $QUICK -eq 1 ]] && count=20000
    log "phase batch: $count events in batches of 1000 into every node"
    base=$("$BUILD/pd-bench" converge --url "$NATS_URL" --nodes "$ALL_NODES" --timeout 10) ||
        { echo "bench.sh: the cluster did not settle before the batches" >&2; FAILED=1; return 1; }
    out=$("$BUILD/pd-bench" batch-rate --url "$NATS_URL" --nodes "$ALL_NODES" --count "$count") || true
    [[ -z $out ]] && { echo "bench.sh: pd-bench batch-rate produced nothing" >&2; FAILED=1; return 1; }
    devices=$($LIB devices0 "$base")
    conv=$("$BUILD/pd-bench" converge --url "$NATS_URL" --nodes "$ALL_NODES" \
        --count "$devices" --timeout 5) || true
    record batch "$($LIB merge-batch "$out" "$conv")"
}

# The same-pattern baseline (issue 15): NODES stub nodes (pd-bench
# stub-node: a node's NATS work per event, no model; bench/README.md) on
# a nats-server of their own, whose PRESENCE_DELTAS they create with the
# node's settings; driven exactly as the latency and throughput phases
# drive presenced (pd-lat at the same rates, the presence-sim ladder).
phase_stub() {
    local saved_url=$NATS_URL saved_mon=$NATS_MON saved_pid=$NATS_PID i r every stubs
    local -a spids=()
    log "phase stub: the same-pattern baseline, $NODES stub nodes"
    STACK=$((STACK + 1))
    start_nats
    for ((i = 1; i <= NODES; i++)); do
        "$BUILD/pd-bench" stub-node --nodes "s$i" --url "$NATS_URL" >"$WORK/stub$i.log" 2>&1 &
        spids+=("$!"); PIDS+=("$!")
    done
    for ((i = 1; i <= NODES; i++)); do
        wait_for 20 grep -q "ready" "$WORK/stub$i.log" ||
            { echo "stub node s$i did not start (see $WORK/stub$i.log)" >&2; FAILED=1; }
    done
    stubs=$(csv $(for ((i = 1; i <= NODES; i++)); do printf 's%d ' "$i"; done))
    if [[ $FAILED -eq 0 ]]; then
        for i in "${!LAT_RATES[@]}"; do
            r=${LAT_RATES[i]}
            every=$((r / 1000)); [[ $every -lt 1 ]] && every=1
            log "  stub latency, $r events/s (one in $every traced)"
            bench stub pd-lat --nodes "$stubs" --rate "$r" --secs "$PD_SECS" \
                --users "$PD_USERS" --trace-every "$every" || true
        done
        TP_RECORD=stub_tp TP_ALL=$stubs TP_CONVERGE=stub-converge
        throughput_ladder "$stubs" s1
        TP_RECORD=throughput TP_ALL='' TP_CONVERGE=converge
    fi
    for ((i = ${#spids[@]} - 1; i >= 0; i--)); do stop_pid "${spids[i]}"; done
    stop_pid "$NATS_PID"
    NATS_URL=$saved_url NATS_MON=$saved_mon NATS_PID=$saved_pid
}

# 4 + 5. Memory of one node at each size (1 and 3 devices per user), then
# recovery of that node: restart with its snapshot, then from the stream.
recovery_run() { # devices kind(snapshot|stream)
    local d=$1 kind=$2 sig=TERM t0 rb0 nb0 rb1 nb1 conv old=${NODE_LOG[n1]}
    [[ $kind == stream ]] && sig=KILL
    # SIGTERM: the node writes its final snapshot (synchronously) first.
    stop_pid "${NODE_PID[n1]}" "$sig" 300
    [[ $kind == stream ]] && redis-cli -p "$REDIS_PORT" DEL presence:snapshot:n1 >/dev/null
    rb0=$($LIB redis-out "$REDIS_PORT"); nb0=$($LIB nats-out "$NATS_MON")
    t0=$($LIB now-ms)
    start_node n1 ".$kind"
    wait_for 120 grep -q "restore done" "${NODE_LOG[n1]}" ||
        { echo "n1 did not restore (see ${NODE_LOG[n1]})" >&2; FAILED=1; return 1; }
    # Back: it answers. Its devices then go out as the new life's, in
    # slices: the bytes count once that is done too.
    wait_for 120 grep -q "republish done" "${NODE_LOG[n1]}" ||
        { echo "n1 did not republish (see ${NODE_LOG[n1]})" >&2; FAILED=1; return 1; }
    rb1=$($LIB redis-out "$REDIS_PORT"); nb1=$($LIB nats-out "$NATS_MON")
    conv=$("$BUILD/pd-bench" converge --url "$NATS_URL" --nodes n1 --count "$d" --timeout 30) || true
    record recovery "$($LIB recovery "${NODE_LOG[n1]}" "$t0" "$d" "$kind" \
        $((rb1 - rb0)) $((nb1 - nb0)) "$conv" "$old")"
}

# 6. A node of three restarted with the cluster loaded (issue 15): first
# after a clean stop (its final snapshot; its peers dropped its devices at
# its leaving, so it sends them again), then, started again with
# snapshots every few seconds, killed after one that holds everything
# (its peers keep its devices: schemas/cluster.md "Incarnations"). NATS
# bytes out during each restart, until its devices or registers are out
# and every node holds all devices.
# Notifications: every node's cluster-wide, counted from before the stop
# until the windows of floors the restart opens (two node timeouts and two
# sync intervals after the start, a rejoin or a take-over) have closed and
# their closing walks are done: NOTES_SECS, with the restart itself and
# margin. No user's status changes (the node is back before the offline
# delay ends), so each one is a repeat.
NOTES_SECS=40
cluster_restart_run() { # devices kind(term|kill)
    local d=$1 kind=$2 t0 nb0 nb1 sb0 sb1 conv old=${NODE_LOG[n1]} saved notes_pid notes notes_t0
    if [[ $kind == kill ]]; then
        # a snapshot of the life the clean-stop run started (it writes one
        # once its state changed: the restore did)
        wait_for 120 $LIB snapshot-after "$REDIS_PORT" presence:snapshot:n1 "$CLUSTER_T0" ||
            { echo "no snapshot of n1 after the restart (see ${NODE_LOG[n1]})" >&2; FAILED=1; return 1; }
    fi
    "$BUILD/pd-bench" notes --url "$NATS_URL" --secs "$NOTES_SECS" >"$WORK/notes.$kind.json" \
        2>"$WORK/notes.$kind.err" &
    notes_pid=$!; PIDS+=("$notes_pid"); notes_t0=$($LIB now-ms)
    wait_for 10 grep -q "notes: subscribed" "$WORK/notes.$kind.err" ||
        { echo "pd-bench notes did not subscribe (see $WORK/notes.$kind.err)" >&2; FAILED=1; }
    stop_pid "${NODE_PID[n1]}" "${kind^^}" 300
    nb0=$($LIB nats-out "$NATS_MON" pd-bench-notes); sb0=$($LIB stream-bytes "$NATS_MON")
    t0=$($LIB now-ms)
    CLUSTER_T0=$t0
    saved=("${NODE_ENV[@]}")
    [[ $kind == term ]] && NODE_ENV+=(PRESENCE_SNAPSHOT_INTERVAL_MS=3000)
    start_node n1 ".cluster-$kind"
    NODE_ENV=("${saved[@]}")
    wait_for 120 grep -q "restore done" "${NODE_LOG[n1]}" ||
        { echo "n1 did not restore (see ${NODE_LOG[n1]})" >&2; FAILED=1; return 1; }
    wait_for 120 grep -q "republish done" "${NODE_LOG[n1]}" ||
        { echo "n1 did not republish (see ${NODE_LOG[n1]})" >&2; FAILED=1; return 1; }
    conv=$("$BUILD/pd-bench" converge --url "$NATS_URL" --nodes "$ALL_NODES" --count "$d" \
        --timeout 60) || true
    nb1=$($LIB nats-out "$NATS_MON" pd-bench-notes); sb1=$($LIB stream-bytes "$NATS_MON")
    # The windows close two node timeouts and two sync intervals (20.4 s
    # here) after the restart is back: the count must still run then.
    (($($LIB now-ms) - notes_t0 + 20400 > NOTES_SECS * 1000)) &&
        log "  warning: the restart took long; notifications counted for $NOTES_SECS s may miss the closing walks"
    wait "$notes_pid" || true
    notes=$(cat "$WORK/notes.$kind.json")
    [[ -n $notes ]] || notes='{}'
    record recovery "$($LIB recovery "${NODE_LOG[n1]}" "$t0" "$d" "cluster-$kind" 0 \
        $((nb1 - nb0)) "$conv" "$old" "$($LIB nats-published "$NATS_MON" n1)" $((sb1 - sb0)) \
        "$notes")"
}

phase_memory() {
    local d dpu users r0 r1 id
    log "phase 4/5 and 5/5: memory of one node, and its recovery"
    for d in "${MEM_SIZES[@]}"; do
        for dpu in 1 3; do
            users=$(((d + dpu - 1) / dpu))
            log "  one node, $d devices of $users users"
            stop_stack
            start_stack 1
            sleep 0.3
            r0=$(rss_kb "${NODE_PID[n1]}")
            bench load load --nodes n1 --count "$d" --users "$users" --prefix presence
            bench memory-wait converge --nodes n1 --count "$d" --timeout 60
            sleep 0.5
            r1=$(rss_kb "${NODE_PID[n1]}")
            record memory "{\"nodes\":1,\"node\":\"n1\",\"devices\":$d,\"users\":$users,\"rss_before_kb\":$r0,\"rss_after_kb\":$r1}"
            if [[ $dpu -eq 3 ]]; then
                log "  recovery of $d devices: restart with the snapshot"
                recovery_run "$d" snapshot || true
                log "  recovery of $d devices: restart from the stream only"
                recovery_run "$d" stream || true
            fi
        done
    done
    if [[ $MEM_CLUSTER -eq 1 ]]; then
        d=${MEM_SIZES[-1]}; users=$((d / 3))
        log "  $NODES nodes, $d devices of $users users"
        stop_stack
        start_stack "$NODES"
        sleep 0.3
        declare -A before
        for id in $(node_ids "$NODES"); do before[$id]=$(rss_kb "${NODE_PID[$id]}"); done
        bench load load --nodes "$ALL_NODES" --count "$d" --users "$users"
        bench memory-wait converge --nodes "$ALL_NODES" --count "$d" --timeout 120
        sleep 0.5
        for id in $(node_ids "$NODES"); do
            record memory "{\"nodes\":$NODES,\"node\":\"$id\",\"devices\":$d,\"users\":$users,\"rss_before_kb\":${before[$id]},\"rss_after_kb\":$(rss_kb "${NODE_PID[$id]}")}"
        done
        log "  n1 of $NODES restarted with $d devices in the cluster: after a clean stop"
        cluster_restart_run "$d" term || true
        log "  n1 of $NODES restarted with $d devices in the cluster: killed after a snapshot"
        cluster_restart_run "$d" kill || true
    fi
}

# Churn (issue 13): CHURN_USERS distinct users (env; 2M by default, 20k
# with --quick) connect and leave in CHURN_ROUNDS rounds against one node
# with a short PRESENCE_USER_RETENTION_MS; RSS after each round and after
# its retention. Flat "after" figures: forgetting gives the memory back.
phase_churn() {
    local per=$((CHURN_USERS / CHURN_ROUNDS)) r0 k peak after held rounds='' saved
    log "  churn: $CHURN_USERS users in $CHURN_ROUNDS rounds, retention ${CHURN_RETENTION_MS} ms"
    stop_stack
    saved=("${NODE_ENV[@]}")
    NODE_ENV+=(PRESENCE_USER_RETENTION_MS="$CHURN_RETENTION_MS" PRESENCE_OFFLINE_DELAY_MS=200)
    start_stack 1
    NODE_ENV=("${saved[@]}")
    sleep 0.3
    r0=$(rss_kb "${NODE_PID[n1]}")
    for ((k = 1; k <= CHURN_ROUNDS; k++)); do
        "$BUILD/pd-bench" churn --url "$NATS_URL" --nodes n1 --count "$per" --mode "r$k" \
            >>"$WORK/churn.log" || { FAILED=1; return 1; }
        peak=$(rss_kb "${NODE_PID[n1]}")
        sleep $(((CHURN_RETENTION_MS + 200) / 1000 + 2))
        after=$(rss_kb "${NODE_PID[n1]}")
        held=$($LIB users0 "$("$BUILD/presencectl" --server "$NATS_URL" --json cluster)")
        log "    round $k: RSS $((peak / 1024)) MiB after it, $((after / 1024)) MiB after the retention, $held users held"
        rounds+="$peak:$after:$held,"
    done
    record churn "$($LIB churn "$r0" "$per" "$CHURN_RETENTION_MS" "$rounds")"
}

want() { [[ ,$PHASES, == *,$1,* ]]; }

# Other work on this machine skews every figure (2 cores): a full run first
# waits, up to QUIET_WAIT seconds, for the 1-minute load average to drop
# below 1, and records the load average at each phase.
wait_quiet() {
    local end=$(($(date +%s) + ${QUIET_WAIT:-300})) load
    while :; do
        load=$(cut -d' ' -f1 /proc/loadavg)
        awk -v l="$load" 'BEGIN { exit !(l < 1.0) }' && return 0
        [[ $(date +%s) -ge $end ]] && { log "load average still $load: measuring anyway"; return 0; }
        log "waiting for a quiet machine (load average $load)"
        sleep 10
    done
}
note_load() { record machine "{\"loadavg_$1\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}"; }

log "work dir $WORK, results to $OUT ($([[ $QUICK -eq 1 ]] && echo quick || echo full) run: $PHASES)"
[[ $QUICK -eq 0 ]] && wait_quiet
note_load start
STACK=1
start_nats
start_redis
want baselines && phase_baselines
want stub && { note_load stub; phase_stub; }
if want latency || want throughput || want flood || want batch; then
    for id in $(node_ids "$NODES"); do start_node "$id"; done
    # shellcheck disable=SC2046
    wait_ready $(node_ids "$NODES")
fi
want latency && { note_load latency; phase_latency; }
want flood && { note_load flood; phase_flood; }
want throughput && { note_load throughput; phase_throughput; }
want batch && { note_load batch; phase_batch; }
want memory && { note_load memory; phase_memory; }
want churn && { note_load churn; phase_churn; }
stop_stack
note_load end
log "writing $OUT/latest.json and the plots"
$LIB report "$RAW" "$OUT" "$([[ $QUICK -eq 1 ]] && echo quick || echo full)" \
    "bench/bench.sh$([[ $QUICK -eq 1 ]] && echo ' --quick')"
# A full run into bench/results is the one bench/README.md shows.
if [[ $QUICK -eq 0 && $OUT == "$ROOT/bench/results" && $PHASES == baselines,stub,latency,flood,throughput,batch,memory,churn ]]; then
    $LIB readme "$OUT/latest.json" "$ROOT/bench/README.md"
fi
[[ $FAILED -eq 0 ]] || { echo "bench.sh: some measurements did not run (see above)" >&2; exit 1; }
