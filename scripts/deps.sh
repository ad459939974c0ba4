#!/usr/bin/env bash
# deps.sh - make sure the Debian packages presenced builds, tests and runs
# with are installed. Silent when they all are. As root, installs the
# missing ones; otherwise prints the command to run and fails.
set -euo pipefail

PACKAGES=(
    cmake make gcc pkg-config
    libnats-dev libhiredis-dev libmsgpack-dev libcriterion-dev libuv1-dev libmicrohttpd-dev libjansson-dev
    nats-server redis-server
    python3-yaml gnuplot-nox
    clang libclang-rt-14-dev
    libssl-dev openssl
    valgrind
    chromium fonts-dejavu-core nodejs
    # compose.yaml and the Dockerfile run for real in make test
    # (tests/compose/): podman with runc (crun refuses these machines'
    # cgroups), CNI's dnsname plugin (service names between containers),
    # debootstrap for the base image.
    podman podman-compose runc debootstrap golang-github-containernetworking-plugin-dnsname
)

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "deps.sh: dpkg-query not found; this project expects Debian 12." >&2
    echo "deps.sh: install these packages by hand: ${PACKAGES[*]}" >&2
    exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

# npm packages of the Node.js parts, from their package-lock.json files,
# once Node.js is there: the browser test (tests/browser: playwright-core),
# the Node.js client (clients/node: nats, @msgpack/msgpack, typescript) and
# the example chat server (examples/chat: ws).
npm_deps() {
    local root; root="$(cd "$(dirname "$0")/.." && pwd)"
    command -v npm >/dev/null 2>&1 || return 0
    local dir marker
    for pair in tests/browser:playwright-core clients/node:nats examples/chat:ws; do
        dir="$root/${pair%%:*}"; marker=${pair#*:}
        [[ -f "$dir/package-lock.json" && ! -f "$dir/node_modules/$marker/package.json" ]] || continue
        echo "deps.sh: npm ci in ${pair%%:*} ($marker)" >&2
        npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error ||
            echo "deps.sh: npm ci in ${pair%%:*} failed; its test will try again" >&2
    done
    return 0
}

if [[ ${#missing[@]} -eq 0 ]]; then
    npm_deps
    exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
    echo "deps.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
    npm_deps
    exit 0
fi

echo "deps.sh: missing packages: ${missing[*]}" >&2
echo "deps.sh: install them with:" >&2
echo "    sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
exit 1
