#!/usr/bin/env bash
# valgrind_smoke.sh - the ctest entry valgrind_smoke: one presenced, built
# without sanitizers, runs under valgrind (memcheck) against a real
# nats-server (JetStream) and redis-server on free loopback ports, through a
# short smoke workload: presence-sim for a few seconds, queries and events
# through presencectl, a few malformed messages, the metrics page, then
# SIGTERM (final snapshot, clean exit). Fails on any valgrind error
# (invalid access, uninitialised value, definite leak) or any other exit
# than a clean one.
#
#   valgrind_smoke.sh PRESENCED PRESENCE_SIM PRESENCECTL
#
# Suppressions: tests/valgrind.supp (library internals only, each commented).
# Everything started here is stopped by pid on exit; the logs of a failed
# run are kept and their tails printed.
set -euo pipefail

node_bin=$1 sim_bin=$2 ctl_bin=$3
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d /tmp/pd-valgrind-XXXXXX)
pids=()
ok=0

cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "$ok" = 1 ]; then
        rm -rf "$dir"
    else
        echo "valgrind_smoke: FAILED; logs in $dir" >&2
        for f in valgrind.log node.log sim.log nats.log; do
            echo "--- tail of $f" >&2
            tail -n 40 "$dir/$f" >&2 2>/dev/null || true
        done
    fi
}
trap cleanup EXIT
trap 'echo "valgrind_smoke: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

# wait_for SECONDS CMD...: polls CMD every 0.1 s until it succeeds.
wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.1
    done
}

read -r nats_port redis_port metrics_port < <(python3 "$here/freeport.py" 3)
nats_url=nats://127.0.0.1:$nats_port

nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$dir/js" >"$dir/nats.log" 2>&1 &
pids+=($!)
redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$dir" --save "" --appendonly no \
    >"$dir/redis.log" 2>&1 &
pids+=($!)
wait_for 10 bash -c "echo >/dev/tcp/127.0.0.1/$nats_port"
wait_for 10 bash -c "echo >/dev/tcp/127.0.0.1/$redis_port"

PRESENCE_NODE_ID=n1 PRESENCE_NATS_URL=$nats_url PRESENCE_REDIS_URL=redis://127.0.0.1:$redis_port \
PRESENCE_SYNC_INTERVAL_MS=200 PRESENCE_SNAPSHOT_INTERVAL_MS=500 PRESENCE_OFFLINE_DELAY_MS=500 \
PRESENCE_METRICS_ADDR=127.0.0.1:$metrics_port \
    valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
        --show-leak-kinds=definite --track-origins=yes --num-callers=30 \
        --suppressions="$here/valgrind.supp" --log-file="$dir/valgrind.log" \
        "$node_bin" >"$dir/node.log" 2>&1 &
node=$!
pids+=("$node")
wait_for 120 grep -q "announcing changes" "$dir/node.log" ||
    { echo "valgrind_smoke: the node did not start" >&2; exit 1; }

# Load: every event must be answered ok (presence-sim exits 0).
"$sim_bin" --nats "$nats_url" --nodes n1 --servers 2 --users 200 --rate 200 --duration 3s \
    --drain 10 --heartbeat-ms 200 --seed 7 --quiet --json --shutdown-at-end \
    >"$dir/sim.json" 2>"$dir/sim.log" ||
    { echo "valgrind_smoke: presence-sim failed: $(cat "$dir/sim.json")" >&2; exit 1; }

# The node for events by PRESENCE_NODE_ID: --node belongs to the event commands only.
ctl() { PRESENCE_NODE_ID=n1 "$ctl_bin" --server "$nats_url" --timeout 10000 "$@"; }
ctl --as vg-srv connect vg-c1 alice web >/dev/null
ctl --as vg-srv idle vg-c1 >/dev/null
ctl status alice busy >/dev/null
ctl custom alice "valgrind" --emoji ":mag:" --expires 10m >/dev/null
# Captured first: grep -q may exit before the writer is done (pipefail).
out=$(ctl --json get alice bob); grep -q '"busy"' <<<"$out"
out=$(ctl --json devices alice); grep -q 'vg-c1' <<<"$out"
ctl --json online >/dev/null
out=$(ctl --json cluster); grep -q '"n1"' <<<"$out"
ctl --as vg-srv disconnect vg-c1 >/dev/null
# Malformed input: each refused, nothing changed, the node still answers.
PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=$here/chaos python3 - "$nats_url" <<'PY'
import sys
import pdwire
nc = pdwire.Nats([sys.argv[1]], timeout=10)
for subj, data in [("presence.events.n1", b"\xdd\xff\xff\xff\xff"),
                   ("presence.events.n1", b"\x81\xa4type\xa7connect"),
                   ("presence.query.get", b"\x81\xa5users\xdc\xff\xff"),
                   ("presence.sync.n1", b"\xc1"),
                   ("presence.hb.n2", b"\x82\xa1v\x01\xa4node\xa2n2")]:
    nc.publish(subj, data, "_INBOX.vg.x")
rep = nc.request("presence.events.n1", b"\x80", timeout=10)
assert rep is not None and b"error" in rep, rep
nc.close()
PY
python3 -c "import urllib.request,sys; sys.exit(b'presenced_events_total' not in urllib.request.urlopen('http://127.0.0.1:$metrics_port/metrics', timeout=10).read())"

kill -TERM "$node"
status=0
wait "$node" || status=$?
pids=("${pids[@]/$node}")
grep -q "final snapshot written" "$dir/node.log" ||
    { echo "valgrind_smoke: no final snapshot on SIGTERM" >&2; exit 1; }
if [ "$status" -ne 0 ]; then
    echo "valgrind_smoke: presenced under valgrind exited with $status (99: valgrind errors)" >&2
    exit 1
fi
grep -q "ERROR SUMMARY: 0 errors" "$dir/valgrind.log" ||
    { echo "valgrind_smoke: valgrind reported errors" >&2; exit 1; }
echo "valgrind_smoke: clean ($(grep -o 'definitely lost: [0-9,]* bytes' "$dir/valgrind.log" || echo 'no leaks'))"
ok=1
