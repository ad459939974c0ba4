#!/usr/bin/env bash
# run.sh BUILD_DIR [client|chat] - the Node.js tests as ctest runs them:
# client: @presenced/client (clients/node/test/*.test.mjs); chat: the
# example chat server (examples/chat/test/). Each starts its own
# nats-server and presenced nodes (PD_PRESENCED_BIN, or BUILD_DIR/presenced).
# Exit 77 (ctest: skipped) with a message only where node or npm is
# missing; the npm packages come from the package-lock.json files (npm ci),
# installed here if scripts/deps.sh has not.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
pkg=$(cd "$here/.." && pwd)
root=$(cd "$pkg/../.." && pwd)
build=$(cd "${1:?usage: run.sh BUILD_DIR [client|chat]}" && pwd)
suite=${2:-client}
for tool in node npm; do
    if ! command -v "$tool" >/dev/null; then
        echo "SKIPPED node_$suite: $tool is not installed (Debian packages 'nodejs' and 'npm';" \
             "scripts/deps.sh installs nodejs when run as root)"
        exit 77
    fi
done
npm_ci() { # dir marker-package
    if [ ! -f "$1/node_modules/$2/package.json" ]; then
        npm ci --prefix "$1" --no-audit --no-fund --loglevel=error ||
            { echo "node_$suite: 'npm ci' in $1 failed" >&2; exit 1; }
    fi
}
npm_ci "$pkg" nats
export PD_BUILD_DIR="$build"
case "$suite" in
client)
    cd "$pkg"
    exec node --test --test-concurrency=1 test/types.test.mjs test/unit.test.mjs test/client.test.mjs ;;
chat)
    npm_ci "$root/examples/chat" ws
    cd "$root/examples/chat"
    exec node --test --test-concurrency=1 test/chat.test.mjs ;;
*)
    echo "usage: run.sh BUILD_DIR [client|chat]" >&2; exit 2 ;;
esac
