#!/usr/bin/env bash
# run.sh - it_libpresence: installs libpresence into a scratch prefix
# (cmake --install --component libpresence), builds tests/consumer against
# it through pkg-config as a user's build would, starts nats-server and two
# presenced nodes, and runs the consumer's checks (pl_test.c).
# usage: run.sh BUILD_DIR SOURCE_DIR "SANITIZER_FLAGS"
set -uo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
san=${3:-}
tmp=$(mktemp -d /tmp/pl-test-XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$tmp"/*.log; do echo "== $f"; tail -20 "$f"; done; exit 1; }

cmake --install "$build" --prefix "$tmp/prefix" --component libpresence >"$tmp/install.log" 2>&1 ||
    fail "cmake --install failed"
for f in include/presence/presence.h; do [ -f "$tmp/prefix/$f" ] || fail "$f not installed"; done
pc=$(find "$tmp/prefix" -name presence.pc | head -1)
[ -n "$pc" ] || fail "presence.pc not installed"
ls "$(dirname "$(dirname "$pc")")"/libpresence.so.1 "$(dirname "$(dirname "$pc")")"/libpresence.a \
    >/dev/null || fail "the libraries are not next to pkgconfig/"
export PKG_CONFIG_PATH="$(dirname "$pc")"
[ "$(pkg-config --modversion presence)" = 1.0.0 ] || fail "pkg-config --modversion presence"
cmake -S "$src/clients/c/tests/consumer" -B "$tmp/cbuild" -DCMAKE_C_FLAGS="$san" \
    -DCMAKE_EXE_LINKER_FLAGS="$san" >"$tmp/cbuild.log" 2>&1 || fail "consumer configure"
cmake --build "$tmp/cbuild" >>"$tmp/cbuild.log" 2>&1 || fail "consumer build"
# The program runs from the installed shared library (not the build tree).
libs=$(ldd "$tmp/cbuild/pl_test") # not piped to grep -q: pipefail would see ldd's SIGPIPE
[[ $libs == *"$tmp/prefix/"*libpresence.so.1* ]] || fail "pl_test is not linked to the installed library: $libs"

nport=$(python3 "$src/tests/freeport.py" 1)
nats-server -a 127.0.0.1 -p "$nport" -js -sd "$tmp/js" >"$tmp/nats.log" 2>&1 &
pids+=($!)
url="nats://127.0.0.1:$nport"
bin=${PD_PRESENCED_BIN:-$build/presenced}
start_node() { # id
    env PRESENCE_NATS_URL="$url" PRESENCE_NODE_ID="$1" PRESENCE_REDIS_URL=redis://127.0.0.1:1 \
        PRESENCE_SYNC_INTERVAL_MS=100 PRESENCE_OFFLINE_DELAY_MS=200 PRESENCE_SERVER_TIMEOUT_MS=5000 \
        PRESENCE_LOG_LEVEL=info "$bin" >"$tmp/$1.log" 2>&1 &
    pids+=($!)
}
start_node n1; n1pid=$!
start_node n2
"$tmp/cbuild/pl_test" "$url" "$n1pid" || fail "pl_test failed"
echo "1 passed, 0 failed"
