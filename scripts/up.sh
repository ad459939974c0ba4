#!/usr/bin/env bash
# up.sh - starts a local presence cluster as plain processes: a nats-server
# with JetStream, a redis-server and three presenced nodes, all on loopback
# with their state under .state/, then shows presence moving through it.
# `make down` (scripts/down.sh) stops everything this started, by pid.
set -euo pipefail
source "$(dirname "$0")/cluster-env.sh"

mkdir -p "$PD_STATE/nats" "$PD_STATE/redis"
ctl() { "$PD_BUILD/presencectl" --server "$PD_NATS_URL" "$@"; }

if pd_alive "$PD_STATE/nats.pid"; then
    echo "nats-server already running (pid $(cat "$PD_STATE/nats.pid"))"
else
    echo "starting nats-server on 127.0.0.1:$PD_NATS_PORT (JetStream on)"
    nats-server -a 127.0.0.1 -p "$PD_NATS_PORT" -js -sd "$PD_STATE/nats" \
        -P "$PD_STATE/nats.pid" -l "$PD_STATE/nats.log" </dev/null >/dev/null 2>&1 &
    pd_wait 10 bash -c "echo > /dev/tcp/127.0.0.1/$PD_NATS_PORT" ||
        { echo "nats-server did not start: see $PD_STATE/nats.log" >&2; exit 1; }
fi

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
    PRESENCE_OFFLINE_DELAY_MS=${PRESENCE_OFFLINE_DELAY_MS:-5000} \
        nohup "$PD_BUILD/presenced" </dev/null >>"$PD_STATE/$id.log" 2>&1 &
    echo $! >"$PD_STATE/$id.pid"
done
for id in $PD_NODES; do
    pd_wait 10 grep -q "connected to NATS" "$PD_STATE/$id.log" ||
        { echo "node $id did not connect: see $PD_STATE/$id.log" >&2; exit 1; }
done

echo
echo "== the cluster is up. A short demonstration:"
first=${PD_NODES%% *}
run() { echo "\$ presencectl $*"; ctl "$@"; echo; }
run --node "$first" --as demo-server connect demo-conn-1 alice web
run get alice
run devices alice
run --node "$first" status alice busy
run get alice
run cluster
cat <<TXT
== try it yourself:
  export PATH=$PD_BUILD:\$PATH PRESENCE_NATS_URL=$PD_NATS_URL
  presencectl watch all &                      # notifications, one line each
  presencectl --node $first connect c2 bob mobile
  presencectl --node $first idle c2            # bob is away
  presencectl --node $first disconnect c2      # bob offline after the offline delay (5 s here)
  presencectl online
  presencectl cluster
Until cross-node sync lands, each node knows the connections of its own
socket servers (events go to presence.events.<node>); queries are answered
by any node of the queue group.
Logs and state: $PD_STATE    Stop everything: make down
TXT
