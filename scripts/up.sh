#!/usr/bin/env bash
# up.sh - starts a local presence cluster as plain processes: three
# nats-servers with JetStream, a redis-server, three presenced nodes and the
# web dashboard presence-dash (PD_DASH_ADDR, default 127.0.0.1:8080), all on
# loopback with their state under $PD_STATE, then shows presence moving
# through it and prints the dashboard's URL. `make down` (scripts/down.sh) stops everything this started,
# by pid; `make reset` also removes the state.
#
# Each process is checked for readiness on its own (a port, PING, a node's
# /readyz), and the wait fails at once if the process dies, with the lines
# it logged in this run. Each node gets its own metrics port, printed.
# Every process runs in a session of its own (setsid): Ctrl-C on make up
# stops the demonstration, not the cluster. setsid execs in place (a
# background job is no group leader), so $! is the process's pid.
#
# Parts, in order: start_nats, start_redis, start_nodes, start_dash, demo,
# start_sim, hints. A new process gets a start_X function and a line in main.
set -euo pipefail
source "$(dirname "$0")/cluster-env.sh"

# presencectl and the simulator run as the NATS admin user (nats-auth.sh,
# sourced in main below).
ctl() { pd_as_admin "$PD_BUILD/presencectl" --server "$PD_NATS_URL" "$@"; }

# fail NAME LOG OFFSET WHY: says why, with what NAME logged since OFFSET.
fail() {
    echo "$1: $4" >&2
    if [ -f "$2" ]; then
        echo "--- $2 (this run) ---" >&2
        tail -c +"$(($3 + 1))" "$2" | tail -n 20 >&2
    fi
    exit 1
}

# wait_ready NAME PIDFILE LOG OFFSET SECONDS CHECK...: polls CHECK until it
# succeeds; fails at once if the process of PIDFILE is gone.
wait_ready() {
    local name=$1 pidfile=$2 log=$3 off=$4 secs=$5 deadline=$((SECONDS + $5))
    shift 5
    until "$@" >/dev/null 2>&1; do
        pd_alive "$pidfile" || fail "$name" "$log" "$off" "exited while starting"
        [ "$SECONDS" -lt "$deadline" ] || fail "$name" "$log" "$off" "not ready after $secs s"
        sleep 0.1
    done
}

log_size() { stat -c %s "$1" 2>/dev/null || echo 0; }

start_nats() {
    local i=0 name port route
    for name in $PD_NATS_SERVERS; do
        port=$((PD_NATS_PORT + i)) route=$((PD_ROUTE_PORT + i)); i=$((i + 1))
        if pd_alive "$PD_STATE/$name.pid"; then
            echo "$name already running (pid $(cat "$PD_STATE/$name.pid"))"
            continue
        fi
        mkdir -p "$PD_STATE/$name"
        cat >"$PD_STATE/$name.conf" <<CONF
server_name: $name
listen: 127.0.0.1:$port
max_payload: 1MB
jetstream { store_dir: "$PD_STATE/$name" }
include ./nats-accounts.conf
cluster {
    name: presence-local
    listen: 127.0.0.1:$route
    routes: [ nats-route://127.0.0.1:$PD_ROUTE_PORT, nats-route://127.0.0.1:$((PD_ROUTE_PORT + 1)), nats-route://127.0.0.1:$((PD_ROUTE_PORT + 2)) ]
}
CONF
        echo "starting $name on 127.0.0.1:$port (JetStream on, routes on :$route)"
        local off; off=$(log_size "$PD_STATE/$name.log")
        echo "$off" >"$PD_STATE/$name.off"
        setsid nats-server -c "$PD_STATE/$name.conf" -l "$PD_STATE/$name.log" </dev/null \
            >/dev/null 2>&1 &
        echo $! >"$PD_STATE/$name.pid"
    done
    i=0
    for name in $PD_NATS_SERVERS; do
        port=$((PD_NATS_PORT + i)); i=$((i + 1))
        wait_ready "nats-server $name" "$PD_STATE/$name.pid" "$PD_STATE/$name.log" \
            "$(cat "$PD_STATE/$name.off" 2>/dev/null || echo 0)" 10 \
            bash -c "echo > /dev/tcp/127.0.0.1/$port"
    done
}

start_redis() {
    if pd_alive "$PD_STATE/redis.pid"; then
        echo "redis-server already running (pid $(cat "$PD_STATE/redis.pid"))"
        return
    fi
    echo "starting redis-server on 127.0.0.1:$PD_REDIS_PORT"
    mkdir -p "$PD_STATE/redis"
    local off; off=$(log_size "$PD_STATE/redis.log")
    setsid redis-server --bind 127.0.0.1 --port "$PD_REDIS_PORT" --dir "$PD_STATE/redis" \
        --logfile "$PD_STATE/redis.log" --save "" --appendonly no \
        --lazyfree-lazy-user-del yes </dev/null >/dev/null 2>&1 &
    echo $! >"$PD_STATE/redis.pid"
    wait_ready redis-server "$PD_STATE/redis.pid" "$PD_STATE/redis.log" "$off" 10 \
        redis-cli -p "$PD_REDIS_PORT" ping
}

# The metrics address of node number k (0, 1, ...).
metrics_addr() {
    if [ -n "${PRESENCE_METRICS_ADDR:-}" ]; then
        local host=${PRESENCE_METRICS_ADDR%:*} port=${PRESENCE_METRICS_ADDR##*:}
        [ "$port" = 0 ] && echo "$host:0" || echo "$host:$((port + $1))"
    else
        echo "127.0.0.1:$((PD_METRICS_PORT + $1))"
    fi
}

# The metrics port node id logged in this run (its log from offset off).
logged_port() {
    tail -c +"$(($2 + 1))" "$PD_STATE/$1.log" |
        sed -n 's|.*metrics on http://[^:]*:\([0-9]*\)/metrics.*|\1|p' | head -n 1 | grep .
}

start_nodes() {
    local k=0 id started=""
    for id in $PD_NODES; do
        local addr; addr=$(metrics_addr $k); k=$((k + 1))
        if pd_alive "$PD_STATE/$id.pid"; then
            echo "node $id already running (pid $(cat "$PD_STATE/$id.pid"))"
            continue
        fi
        local off; off=$(log_size "$PD_STATE/$id.log")
        echo "$off" >"$PD_STATE/$id.off"
        PRESENCE_NODE_ID=$id PRESENCE_NATS_URL=$PD_NATS_URL PRESENCE_REDIS_URL=$PD_REDIS_URL \
        PRESENCE_NATS_USER=$id PRESENCE_NATS_PASSWORD=$(pd_node_password "$id") \
        PRESENCE_METRICS_ADDR=$addr \
        PRESENCE_OFFLINE_DELAY_MS=${PRESENCE_OFFLINE_DELAY_MS:-5000} \
        PRESENCE_SYNC_INTERVAL_MS=${PRESENCE_SYNC_INTERVAL_MS:-1000} \
        PRESENCE_SNAPSHOT_INTERVAL_MS=${PRESENCE_SNAPSHOT_INTERVAL_MS:-5000} \
            setsid nohup "$PD_BUILD/presenced" </dev/null >>"$PD_STATE/$id.log" 2>&1 &
        echo $! >"$PD_STATE/$id.pid"
        started+=" $id"
    done
    for id in $started; do
        local off; off=$(cat "$PD_STATE/$id.off")
        wait_ready "node $id" "$PD_STATE/$id.pid" "$PD_STATE/$id.log" "$off" 10 \
            logged_port "$id" "$off"
        local port; port=$(logged_port "$id" "$off")
        echo "$port" >"$PD_STATE/$id.metrics"
        echo "node $id (pid $(cat "$PD_STATE/$id.pid")): metrics http://127.0.0.1:$port/metrics"
    done
    for id in $started; do
        wait_ready "node $id" "$PD_STATE/$id.pid" "$PD_STATE/$id.log" \
            "$(cat "$PD_STATE/$id.off")" 30 pd_http_ok "$(cat "$PD_STATE/$id.metrics")" /readyz
    done
    local nodes; nodes=$(echo $PD_NODES | wc -w)
    pd_wait 20 bash -c "[ \$(PRESENCE_NATS_USER=admin PRESENCE_NATS_PASSWORD=$PRESENCE_NATS_PASS_ADMIN \
        '$PD_BUILD/presencectl' --server $PD_NATS_URL --json cluster |
        grep -o '\"alive\":true' | wc -l) -ge $nodes ]" ||
        { echo "the nodes are ready but do not see each other: see $PD_STATE/n*.log" >&2; exit 1; }
}

# The web dashboard (docs/dashboard.md), with the nodes' timing settings.
start_dash() {
    if pd_alive "$PD_STATE/dash.pid"; then
        echo "presence-dash already running (pid $(cat "$PD_STATE/dash.pid"))"
    elif [ -x "$PD_BUILD/presence-dash" ]; then
        echo "starting presence-dash on $PD_DASH_ADDR"
        : >"$PD_STATE/dash.log"
        PRESENCE_NATS_URL=$PD_NATS_URL PRESENCE_DASH_ADDR=$PD_DASH_ADDR \
        PRESENCE_NATS_USER=dashboard PRESENCE_NATS_PASSWORD=$PRESENCE_NATS_PASS_DASHBOARD \
        PRESENCE_SYNC_INTERVAL_MS=${PRESENCE_SYNC_INTERVAL_MS:-1000} \
            setsid nohup "$PD_BUILD/presence-dash" </dev/null >>"$PD_STATE/dash.log" 2>&1 &
        echo $! >"$PD_STATE/dash.pid"
        wait_ready presence-dash "$PD_STATE/dash.pid" "$PD_STATE/dash.log" 0 10 \
            grep -q "serving http" "$PD_STATE/dash.log"
    fi
    dash_url=$(grep -o 'http://[^ ]*' "$PD_STATE/dash.log" 2>/dev/null | tail -1 || true)
}

# Shows presence moving, then leaves alice as it found her: no connection,
# status auto (offline after the offline delay), as the README's next steps
# expect.
demo() {
    set -- $PD_NODES
    local first=$1 second=${2:-$1} nodes; nodes=$(echo $PD_NODES | wc -w)
    run() { echo "\$ presencectl $*"; ctl "$@"; echo; }
    echo
    echo "== the cluster is up. A short demonstration:"
    run --node "$first" --as demo-server connect demo-conn-1 alice web
    echo "# every query is answered by whichever node of the queue group is first;"
    echo "# all of them see alice, connected through $first:"
    for _ in 1 2 3; do run get alice; done
    run devices alice
    : >"$PD_STATE/demo-watch.err"
    pd_as_admin timeout 3 "$PD_BUILD/presencectl" --server "$PD_NATS_URL" watch alice \
        >"$PD_STATE/demo-watch.txt" 2>"$PD_STATE/demo-watch.err" &
    local watcher=$!
    # It says "watching" once subscribed: the change below cannot pass it by.
    pd_wait 5 grep -q watching "$PD_STATE/demo-watch.err" || true
    run --node "$second" status alice busy
    wait "$watcher" || true
    echo "# a watcher of alice, listening for 3 s, got $(wc -l <"$PD_STATE/demo-watch.txt") notification(s)"
    echo "# for that change, announced once by the cluster of $nodes nodes:"
    cat "$PD_STATE/demo-watch.txt"
    echo
    run cluster
    echo "# the demonstration cleans up: alice back to auto and disconnected"
    run --node "$second" status alice auto
    run --node "$first" --as demo-server disconnect demo-conn-1
}

start_sim() {
    if pd_alive "$PD_STATE/sim.pid"; then
        echo "presence-sim already running (pid $(cat "$PD_STATE/sim.pid"))"
    elif [ -x "$PD_BUILD/presence-sim" ]; then
        echo "== a small simulated workload: 3 socket servers, 200 users, 20 events/s"
        PRESENCE_NATS_USER=admin PRESENCE_NATS_PASSWORD=$PRESENCE_NATS_PASS_ADMIN \
        setsid nohup "$PD_BUILD/presence-sim" --nats "$PD_NATS_URL" --nodes "$(echo $PD_NODES | tr ' ' ,)" \
            --servers 3 --users 200 --rate 20 --quiet </dev/null >"$PD_STATE/sim.log" 2>&1 &
        echo $! >"$PD_STATE/sim.pid"
        echo
    fi
}

# What to try next; every make command repeats the user's PD_*/PRESENCE_*
# overrides, so it reaches this cluster.
hints() {
    set -- $PD_NODES
    local first=$1 second=${2:-$1} mk="${PD_USER_ENV}make"
    cat <<TXT
== try it yourself:
  export PATH=$PD_BUILD:\$PATH PRESENCE_NATS_URL=$PD_NATS_URL
  export PRESENCE_NATS_USER=admin PRESENCE_NATS_PASSWORD=\$(sed -n 's/^PRESENCE_NATS_PASS_ADMIN=//p' $PD_STATE/nats-auth.env)
  presencectl watch all                        # notifications, one line each (Ctrl-C to stop)
  presencectl --node $first connect c2 bob mobile
  presencectl --node $first idle c2            # bob is away, on every node
  presencectl --node $second status bob busy    # a status can be set through any node
  presencectl --node $first disconnect c2      # bob offline after the offline delay (5 s here)
  presencectl online
  presencectl cluster
  kill -9 \$(cat $PD_STATE/$first.pid)           # $first's users leave after its timeout + the delay
  $mk up                                      # starts $first again: a new incarnation rejoins
  $mk status                                  # what runs, and the cluster as a node sees it
Metrics: $(for id in $PD_NODES; do printf '%s http://127.0.0.1:%s/metrics  ' "$id" "$(cat "$PD_STATE/$id.metrics" 2>/dev/null)"; done)
Logs and state: $PD_STATE    Stop everything: $mk down    Start afresh: $mk reset up
TXT
    if [ -n "${dash_url:-}" ]; then
        echo "== the dashboard (live cluster in a browser): $dash_url"
    fi
}

mkdir -p "$PD_STATE"
touch "$PD_STATE/.pd-state" # marks the folder as ours for make reset
# NATS runs with authentication (docs/security.md): the per-role users and
# permissions of deploy/nats-accounts.conf (nodes n1..n3, their socket
# servers, watchers, admin), passwords made once per state dir.
source "$(dirname "$0")/nats-auth.sh"
start_nats
start_redis
start_nodes
start_dash
demo
start_sim
hints
