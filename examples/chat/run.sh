#!/usr/bin/env bash
# run.sh - the example chat server against the local cluster of `make up`
# (make example-chat). The server reports its tabs to node n1 as NATS user
# sockets-n1 and watches friends as a watcher (NKey), the roles of
# deploy/nats-accounts.conf, with the secrets make up keeps in its state
# dir. CHAT_ADDR (127.0.0.1:8090) is where the page is served.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=../../scripts/cluster-env.sh
source "$root/scripts/cluster-env.sh"
if ! pd_alive "$PD_STATE/n1.pid" || [ ! -f "$PD_STATE/nats-auth.env" ]; then
    echo "example-chat: the local cluster is not running (node n1): run 'make up' first" >&2
    exit 1
fi
command -v npm >/dev/null || { echo "example-chat: npm is missing (Debian package 'nodejs')" >&2; exit 1; }
for pair in clients/node:nats examples/chat:ws; do
    dir="$root/${pair%%:*}"
    [ -f "$dir/node_modules/${pair#*:}/package.json" ] ||
        npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
done
set -a
# shellcheck disable=SC1091
. "$PD_STATE/nats-auth.env"
set +a
export PRESENCE_NATS_URL="$PD_NATS_URL" PRESENCE_NATS_USER=sockets-n1 \
    PRESENCE_NATS_PASSWORD="$PRESENCE_NATS_PASS_SOCKETS_N1" CHAT_NODES=n1 \
    CHAT_WATCH_NKEY_SEED_FILE="$PD_STATE/keys/watcher.nk"
exec node "$here/server.js"
