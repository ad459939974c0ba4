#!/usr/bin/env bash
# updown_check.sh - `make up` then `make down` leave no process behind: runs
# scripts/up.sh and scripts/down.sh on random loopback ports with a private
# state folder and the binaries of the given build folder, then looks for
# anything still running from that folder.
# usage: updown_check.sh BUILD_DIR
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$1" && pwd)
state=$(mktemp -d /tmp/pd-updown-XXXXXX)
fail() { echo "FAIL: $*"; echo "0 passed, 1 failed"; exit 1; }

# Ports below the kernel's ephemeral range (32768 and up), where the other
# tests' servers get theirs; still, a port may be taken: try three bases.
for attempt in 1 2 3; do
    base=$((20000 + (RANDOM % 7000)))
    export PD_STATE=$state PD_BUILD=$build PD_NATS_PORT=$base PD_ROUTE_PORT=$((base + 1000)) \
           PD_REDIS_PORT=$((base + 500)) PD_DASH_ADDR=127.0.0.1:$((base + 700))
    if timeout 180 bash "$root/scripts/up.sh" >"$state/up.out" 2>&1; then break; fi
    bash "$root/scripts/down.sh" >/dev/null 2>&1
    if [ "$attempt" -eq 3 ] || ! grep -q "address already in use" "$state"/*.log 2>/dev/null; then
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
timeout 120 bash "$root/scripts/down.sh" >"$state/down.out" 2>&1 || fail "scripts/down.sh failed"
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
