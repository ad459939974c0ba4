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
base=$((30000 + (RANDOM % 9000)))
export PD_STATE=$state PD_BUILD=$build PD_NATS_PORT=$base PD_ROUTE_PORT=$((base + 1000)) \
       PD_REDIS_PORT=$((base + 500))
fail() { echo "FAIL: $*"; echo "0 passed, 1 failed"; exit 1; }

if ! timeout 180 bash "$root/scripts/up.sh" >"$state/up.out" 2>&1; then
    cat "$state/up.out"; bash "$root/scripts/down.sh" >/dev/null 2>&1
    fail "scripts/up.sh failed"
fi
grep -q "got 1 notification" "$state/up.out" || { cat "$state/up.out"; fail "the tour did not show one notification"; }
pids=$(for f in "$state"/*.pid; do [ -f "$f" ] && echo "$(cat "$f")"; done)
[ "$(echo $pids | wc -w)" -eq 8 ] || fail "up.sh recorded $(echo $pids | wc -w) pids, expected 8 (3 NATS, Redis, 3 nodes, simulator)"
timeout 120 bash "$root/scripts/down.sh" >"$state/down.out" 2>&1 || fail "scripts/down.sh failed"
for pid in $pids; do
    if kill -0 "$pid" 2>/dev/null; then fail "pid $pid ($(cat /proc/$pid/cmdline | tr '\0' ' ')) still runs"; fi
done
left=$(pgrep -f "$state" || true)
[ -z "$left" ] || fail "processes still using $state: $left"
ls "$state"/*.pid >/dev/null 2>&1 && fail "pid files left in $state"
rm -rf "$state"
echo "make up / make down: $(echo $pids | wc -w) processes started and stopped"
echo "1 passed, 0 failed"
