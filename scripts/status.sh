#!/usr/bin/env bash
# status.sh - shows which processes of the local cluster run, each node's
# metrics address and readiness, and the cluster as a node sees it.
set -uo pipefail
source "$(dirname "$0")/cluster-env.sh"

for name in $PD_NATS_SERVERS redis $PD_NODES sim; do
    if pd_alive "$PD_STATE/$name.pid"; then
        extra=""
        if [ -f "$PD_STATE/$name.metrics" ]; then
            port=$(cat "$PD_STATE/$name.metrics")
            ready=not-ready
            pd_http_ok "$port" /readyz && ready=ready
            extra="  $ready, metrics http://127.0.0.1:$port/metrics"
        fi
        printf '%-8s running (pid %s)%s\n' "$name" "$(cat "$PD_STATE/$name.pid")" "$extra"
    else
        printf '%-8s stopped\n' "$name"
    fi
done
if pd_alive "$PD_STATE/nats1.pid"; then
    echo
    # shellcheck disable=SC1090
    [ -f "$PD_STATE/nats-auth.env" ] && . "$PD_STATE/nats-auth.env"
    PRESENCE_NATS_USER=admin PRESENCE_NATS_PASSWORD=${PRESENCE_NATS_PASS_ADMIN:-} \
        "$PD_BUILD/presencectl" --server "$PD_NATS_URL" cluster || true
fi
