#!/usr/bin/env bash
# down.sh - stops what up.sh started, by the pids it recorded: the
# dashboard and nodes first
# (SIGTERM, then SIGKILL after 10 s), then redis-server and nats-server.
set -uo pipefail
source "$(dirname "$0")/cluster-env.sh"

stop() {
    local name=$1 pidfile=$2
    if ! pd_alive "$pidfile"; then
        rm -f "$pidfile"
        return
    fi
    local pid; pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null
    if ! pd_wait 10 bash -c "! kill -0 $pid"; then
        echo "$name (pid $pid) ignored SIGTERM; killing it"
        kill -KILL "$pid" 2>/dev/null
    fi
    echo "stopped $name (pid $pid)"
    rm -f "$pidfile"
}

[ -f "$PD_STATE/dash.pid" ] && stop presence-dash "$PD_STATE/dash.pid"
for id in $PD_NODES; do stop "presenced $id" "$PD_STATE/$id.pid"; done
[ -f "$PD_STATE/sim.pid" ] && stop presence-sim "$PD_STATE/sim.pid"
stop redis-server "$PD_STATE/redis.pid"
for name in $PD_NATS_SERVERS; do stop "nats-server $name" "$PD_STATE/$name.pid"; done
