#!/usr/bin/env bash
# updown_check.sh - `make up` then `make down` leave no process behind: runs
# scripts/up.sh and scripts/down.sh on random loopback ports with a private
# state folder and the binaries of the given build folder, then looks for
# anything still running from that folder. On the way: each node has its
# own metrics port, printed, answering /metrics and /readyz; the hints keep
# the PD_* overrides; the README's next steps work on what the demo leaves;
# a node that dies at start is reported at once with this run's log lines;
# after the workload and a node's restart every node answers the same
# (cluster --diff); make down is quick, and a clean stop logs no NATS
# warning.
# usage: updown_check.sh BUILD_DIR
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$1" && pwd)
state=$(mktemp -d /tmp/pd-updown-XXXXXX)
# A failure stops what up.sh started (the state stays, for its logs).
fail() {
    echo "FAIL: $*"
    bash "$root/scripts/down.sh" >/dev/null 2>&1
    echo "0 passed, 1 failed (logs in $state)"
    exit 1
}

# Ports below the kernel's ephemeral range (32768 and up), where the other
# tests' servers get theirs; still, a port may be taken: try three bases.
for attempt in 1 2 3; do
    base=$((20000 + (RANDOM % 7000)))
    export PD_STATE=$state PD_BUILD=$build PD_NATS_PORT=$base PD_ROUTE_PORT=$((base + 1000)) \
           PD_REDIS_PORT=$((base + 500)) PD_METRICS_PORT=$((base + 2000)) \
           PD_DASH_ADDR=127.0.0.1:$((base + 700))
    if timeout 180 bash "$root/scripts/up.sh" >"$state/up.out" 2>&1; then break; fi
    bash "$root/scripts/down.sh" >/dev/null 2>&1
    if [ "$attempt" -eq 3 ] || ! grep -qiE "address already in use|cannot listen" "$state"/*.log 2>/dev/null; then
        cat "$state/up.out"
        fail "scripts/up.sh failed"
    fi
    echo "ports around $base taken; trying others"
    rm -rf "${state:?}"/*
done
grep -q "got 1 notification" "$state/up.out" || { cat "$state/up.out"; fail "the tour did not show one notification"; }
pids=$(for f in "$state"/*.pid; do [ -f "$f" ] && echo "$(cat "$f")"; done)
[ "$(echo $pids | wc -w)" -eq 9 ] || fail "up.sh recorded $(echo $pids | wc -w) pids, expected 9 (3 NATS, Redis, 3 nodes, simulator, presence-dash)"
grep -q "the dashboard .*: http://127.0.0.1:$((base + 700))/" "$state/up.out" ||
    { cat "$state/up.out"; fail "up.sh did not print the dashboard's URL"; }
source "$root/scripts/cluster-env.sh" # pd_http_ok, PD_NATS_URL

# One metrics port per node, printed, each answering.
ports=$(sed -n 's|^node n[0-9]* (pid [0-9]*): metrics http://127.0.0.1:\([0-9]*\)/metrics$|\1|p' "$state/up.out")
[ "$(echo $ports | wc -w)" -eq 3 ] || { cat "$state/up.out"; fail "expected 3 metrics ports printed, got '$ports'"; }
[ "$(echo $ports | tr ' ' '\n' | sort -u | wc -l)" -eq 3 ] || fail "metrics ports not distinct: $ports"
for p in $ports; do
    pd_http_ok "$p" /metrics || fail "no /metrics on $p"
    pd_http_ok "$p" /readyz || fail "/readyz on $p is not 200"
done
# The hints keep the overrides.
grep -q "PD_NATS_PORT=$base .*make status" "$state/up.out" || fail "the hints drop PD_NATS_PORT"
# The README's next steps, on what the demo left: alice connects, goes idle: away.
admin_pw=$(sed -n 's/^PRESENCE_NATS_PASS_ADMIN=//p' "$state/nats-auth.env")
ctl() { PRESENCE_NATS_USER=admin PRESENCE_NATS_PASSWORD=$admin_pw \
        "$build/presencectl" --server "$PD_NATS_URL" "$@"; }
ctl --node n1 --as web-1 connect c1 alice web >/dev/null || fail "connect c1 alice"
ctl --node n1 --as web-1 idle c1 >/dev/null || fail "idle c1"
st=$(ctl --json get alice | python3 -c 'import json,sys; print(json.load(sys.stdin)["users"][0]["status"])')
[ "$st" = away ] || fail "after connect + idle alice is $st, not away (the demo left her busy?)"
# A node that dies at start: reported as dead (not after a readiness
# timeout), with this run's error.
kill -9 "$(cat "$state/n2.pid")"
PRESENCE_MAX_MSG_BYTES=1 timeout 60 bash "$root/scripts/up.sh" >"$state/up2.out" 2>&1 &&
    fail "up.sh succeeded with a node that cannot start"
grep -q "node n2: exited while starting" "$state/up2.out" || { cat "$state/up2.out"; fail "no word of n2's exit"; }
grep -q "PRESENCE_MAX_MSG_BYTES: 1 is below" "$state/up2.out" || fail "n2's error not shown"
# Restarted with PRESENCE_METRICS_ADDR (port 0: n2 picks a free port, which
# up.sh prints; the running nodes keep theirs).
PRESENCE_METRICS_ADDR=127.0.0.1:0 timeout 120 bash "$root/scripts/up.sh" >"$state/up3.out" 2>&1 ||
    { cat "$state/up3.out"; fail "up.sh did not restart n2"; }
p2=$(sed -n 's|^node n2 (pid [0-9]*): metrics http://127.0.0.1:\([0-9]*\)/metrics$|\1|p' "$state/up3.out")
[ -n "$p2" ] && pd_http_ok "$p2" /readyz || { cat "$state/up3.out"; fail "n2's new metrics port '$p2' does not answer"; }
# After the workload and n2's restart (killed, restored from its snapshot,
# the stream and its peers), every node answers the same, ver included
# (issue 13): once the simulator stops, presencectl cluster --diff exits 0
# within the offline delay (5 s here) and a few sync intervals.
kill -TERM "$(cat "$state/sim.pid")" 2>/dev/null
same=false
for _ in $(seq 1 40); do
    if ctl cluster --diff >"$state/diff.out" 2>&1; then same=true; break; fi
    sleep 1
done
$same || { cat "$state/diff.out"; fail "cluster --diff after n2's restart: the nodes differ"; }
grep -q "no difference" "$state/diff.out" || { cat "$state/diff.out"; fail "cluster --diff said no 'no difference'"; }
pids=$(for f in "$state"/*.pid; do [ -f "$f" ] && echo "$(cat "$f")"; done)
# Every process stops on SIGTERM: none needs down.sh's SIGKILL after 10 s.
timeout 120 bash "$root/scripts/down.sh" >"$state/down.out" 2>&1 || fail "scripts/down.sh failed"
grep -q "ignored SIGTERM" "$state/down.out" && fail "$(grep "ignored SIGTERM" "$state/down.out")"
if grep -l "disconnected from NATS\|NATS connection closed" "$state"/n[0-9].log; then
    fail "a clean stop logged a NATS warning"
fi
for pid in $pids; do
    # A zombie (stopped, not yet reaped by a container's init) is gone.
    st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)
    if [ -n "$st" ] && [ "$st" != Z ]; then
        fail "pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline")) still runs"
    fi
done
left=$(for p in $(pgrep -f "$state"); do
    [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" = Z ] || echo "$p"; done)
[ -z "$left" ] || fail "processes still using $state: $left"
ls "$state"/*.pid >/dev/null 2>&1 && fail "pid files left in $state"
rm -rf "$state"
echo "make up / make down: $(echo $pids | wc -w) processes started and stopped"
echo "1 passed, 0 failed"
