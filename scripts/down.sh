#!/usr/bin/env bash
# down.sh - stops what up.sh started, by the pids it recorded: the
# dashboard, the nodes and the simulator first, all at once (SIGTERM, then SIGKILL after 10 s), then
# redis-server and the nats-servers. A stopped process that nobody reaps (a
# zombie, in containers without an init) counts as stopped.
set -uo pipefail
source "$(dirname "$0")/cluster-env.sh"

# stop_all NAME=PIDFILE...: SIGTERM to each running one, then wait for all.
stop_all() {
    local entry name pidfile pid pending=()
    for entry in "$@"; do
        name=${entry%%=*} pidfile=${entry#*=}
        if ! pd_alive "$pidfile"; then
            rm -f "$pidfile"
            continue
        fi
        pid=$(cat "$pidfile")
        kill -TERM "$pid" 2>/dev/null
        pending+=("$name=$pidfile=$pid")
    done
    local deadline=$((SECONDS + 10))
    for entry in "${pending[@]}"; do
        name=${entry%%=*} pid=${entry##*=} pidfile=${entry#*=}; pidfile=${pidfile%=*}
        while pd_pid_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.05; done
        if pd_pid_alive "$pid"; then
            echo "$name (pid $pid) ignored SIGTERM for 10 s; killing it"
            kill -KILL "$pid" 2>/dev/null
        fi
        echo "stopped $name (pid $pid)"
        rm -f "$pidfile"
    done
}

procs=()
[ -f "$PD_STATE/dash.pid" ] && procs+=("presence-dash=$PD_STATE/dash.pid")
for id in $PD_NODES; do procs+=("presenced $id=$PD_STATE/$id.pid"); done
[ -f "$PD_STATE/sim.pid" ] && procs+=("presence-sim=$PD_STATE/sim.pid")
stop_all "${procs[@]}"
procs=("redis-server=$PD_STATE/redis.pid")
for name in $PD_NATS_SERVERS; do procs+=("nats-server $name=$PD_STATE/$name.pid"); done
stop_all "${procs[@]}"
