#!/usr/bin/env bash
# up.sh - starts a local presence cluster as plain processes: a nats-server
# with JetStream, a redis-server, three presenced nodes and the web
# dashboard presence-dash (PD_DASH_ADDR, default 127.0.0.1:8080), all on
# loopback with their state under .state/, then shows presence moving
# through it and prints the dashboard's URL.
# `make down` (scripts/down.sh) stops everything this started, by pid.
set -euo pipefail
source "$(dirname "$0")/cluster-env.sh"

mkdir -p "$PD_STATE/redis"
mkdir -p "$PD_STATE"

# NATS runs with authentication (docs/security.md): the per-role users and
# permissions of deploy/nats-accounts.conf (nodes n1..n3, their socket
# servers, watchers, admin), passwords made once per state dir.
source "$(dirname "$0")/nats-auth.sh"
ctl() { pd_as_admin "$PD_BUILD/presencectl" --server "$PD_NATS_URL" "$@"; }

# A three-server NATS cluster with JetStream, routes on loopback.
i=0
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
    nats-server -c "$PD_STATE/$name.conf" -P "$PD_STATE/$name.pid" -l "$PD_STATE/$name.log" \
        </dev/null >/dev/null 2>&1 &
done
for port in $PD_NATS_PORT $((PD_NATS_PORT + 1)) $((PD_NATS_PORT + 2)); do
    pd_wait 10 bash -c "echo > /dev/tcp/127.0.0.1/$port" ||
        { echo "nats-server on :$port did not start: see $PD_STATE/nats*.log" >&2; exit 1; }
done

if pd_alive "$PD_STATE/redis.pid"; then
    echo "redis-server already running (pid $(cat "$PD_STATE/redis.pid"))"
else
    echo "starting redis-server on 127.0.0.1:$PD_REDIS_PORT"
    redis-server --bind 127.0.0.1 --port "$PD_REDIS_PORT" --dir "$PD_STATE/redis" \
        --daemonize yes --pidfile "$PD_STATE/redis.pid" --logfile "$PD_STATE/redis.log" \
        --save "" --appendonly no --lazyfree-lazy-user-del yes >/dev/null
    pd_wait 10 redis-cli -p "$PD_REDIS_PORT" ping ||
        { echo "redis-server did not start: see $PD_STATE/redis.log" >&2; exit 1; }
fi

for id in $PD_NODES; do
    if pd_alive "$PD_STATE/$id.pid"; then
        echo "node $id already running (pid $(cat "$PD_STATE/$id.pid"))"
        continue
    fi
    echo "starting presenced $id"
    PRESENCE_NODE_ID=$id PRESENCE_NATS_URL=$PD_NATS_URL PRESENCE_REDIS_URL=$PD_REDIS_URL \
    PRESENCE_NATS_USER=$id PRESENCE_NATS_PASSWORD=$(pd_node_password "$id") \
    PRESENCE_OFFLINE_DELAY_MS=${PRESENCE_OFFLINE_DELAY_MS:-5000} \
    PRESENCE_SYNC_INTERVAL_MS=${PRESENCE_SYNC_INTERVAL_MS:-1000} \
    PRESENCE_SNAPSHOT_INTERVAL_MS=${PRESENCE_SNAPSHOT_INTERVAL_MS:-5000} \
        nohup "$PD_BUILD/presenced" </dev/null >>"$PD_STATE/$id.log" 2>&1 &
    echo $! >"$PD_STATE/$id.pid"
done
for id in $PD_NODES; do
    pd_wait 20 grep -q "announcing changes" "$PD_STATE/$id.log" ||
        { echo "node $id did not join: see $PD_STATE/$id.log" >&2; exit 1; }
done
nodes=$(echo $PD_NODES | wc -w)
pd_wait 20 bash -c "[ \$(PRESENCE_NATS_USER=admin PRESENCE_NATS_PASSWORD=$PRESENCE_NATS_PASS_ADMIN \
    '$PD_BUILD/presencectl' --server $PD_NATS_URL --json cluster |
    grep -o '\"alive\":true' | wc -l) -ge $nodes ]" ||
    { echo "the nodes did not see each other: see $PD_STATE/*.log" >&2; exit 1; }

# The web dashboard (docs/dashboard.md), with the nodes' timing settings.
if pd_alive "$PD_STATE/dash.pid"; then
    echo "presence-dash already running (pid $(cat "$PD_STATE/dash.pid"))"
elif [ -x "$PD_BUILD/presence-dash" ]; then
    echo "starting presence-dash on $PD_DASH_ADDR"
    : >"$PD_STATE/dash.log"
    PRESENCE_NATS_URL=$PD_NATS_URL PRESENCE_DASH_ADDR=$PD_DASH_ADDR \
    PRESENCE_NATS_USER=dashboard PRESENCE_NATS_PASSWORD=$PRESENCE_NATS_PASS_DASHBOARD \
    PRESENCE_SYNC_INTERVAL_MS=${PRESENCE_SYNC_INTERVAL_MS:-1000} \
        nohup "$PD_BUILD/presence-dash" </dev/null >>"$PD_STATE/dash.log" 2>&1 &
    echo $! >"$PD_STATE/dash.pid"
    pd_wait 10 grep -q "serving http" "$PD_STATE/dash.log" ||
        { echo "presence-dash did not start: see $PD_STATE/dash.log" >&2; exit 1; }
fi
dash_url=$(grep -o 'http://[^ ]*' "$PD_STATE/dash.log" 2>/dev/null | tail -1 || true)

echo
echo "== the cluster is up. A short demonstration:"
set -- $PD_NODES
first=$1 second=${2:-$1}
run() { echo "\$ presencectl $*"; ctl "$@"; echo; }
run --node "$first" --as demo-server connect demo-conn-1 alice web
echo "# every query is answered by whichever node of the queue group is first;"
echo "# all of them see alice, connected through $first:"
for i in 1 2 3; do run get alice; done
run devices alice
PRESENCE_NATS_USER=admin PRESENCE_NATS_PASSWORD=$PRESENCE_NATS_PASS_ADMIN \
    timeout 2 "$PD_BUILD/presencectl" --server "$PD_NATS_URL" watch alice \
    >"$PD_STATE/demo-watch.txt" 2>/dev/null &
watcher=$!
sleep 0.3
run --node "$second" status alice busy
wait "$watcher" || true
echo "# a watcher of alice, listening for 2 s, got $(wc -l <"$PD_STATE/demo-watch.txt") notification(s)"
echo "# for that change, announced once by the cluster of $nodes nodes:"
cat "$PD_STATE/demo-watch.txt"
echo
run cluster
if pd_alive "$PD_STATE/sim.pid"; then
    echo "presence-sim already running (pid $(cat "$PD_STATE/sim.pid"))"
elif [ -x "$PD_BUILD/presence-sim" ]; then
    echo "== a small simulated workload: 3 socket servers, 200 users, 20 events/s"
    PRESENCE_NATS_USER=admin PRESENCE_NATS_PASSWORD=$PRESENCE_NATS_PASS_ADMIN \
    nohup "$PD_BUILD/presence-sim" --nats "$PD_NATS_URL" --nodes "$(echo $PD_NODES | tr ' ' ,)" \
        --servers 3 --users 200 --rate 20 --quiet </dev/null >"$PD_STATE/sim.log" 2>&1 &
    echo $! >"$PD_STATE/sim.pid"
    echo
fi
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
  make up                                      # starts $first again: a new incarnation rejoins
  make status                                  # what runs, and the cluster as a node sees it
Logs and state: $PD_STATE    Stop everything: make down
TXT
[ -n "$dash_url" ] && echo "== the dashboard (live cluster in a browser): $dash_url"
exit 0
