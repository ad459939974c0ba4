# Dockerfile - presenced, presencectl (and presence-sim once that target
# exists) on Debian 12. Built and run in `make test` with Debian's podman
# (tests/compose/run.sh, docs/compose.md); tests/compose_check.py checks
# this file against the Makefile and scripts/deps.sh.
#
#   docker build -t presenced:local .
#   docker run --rm -e PRESENCE_NODE_ID=n1 \
#       -e PRESENCE_NATS_URL=nats://nats1:4222 presenced:local
#
# Settings: every PRESENCE_* variable of `presenced --help`
# (deploy/presenced.env.example lists them), or the matching flags after
# the image name.

# ---- build stage -------------------------------------------------------------
FROM debian:bookworm-slim AS build

# The build dependencies that scripts/deps.sh checks, minus the servers
# (nats-server, redis-server) and test-only tools (libcriterion-dev among
# them: PD_TESTS=OFF builds no test, and it would pull in Boost's headers).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        cmake make gcc pkg-config \
        libnats-dev libhiredis-dev libmsgpack-dev libuv1-dev libmicrohttpd-dev libjansson-dev \
        libssl-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# The same configuration as `make build`.
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPD_TESTS=OFF \
 && cmake --build build -j"$(nproc)"

# Collect the programs; presence-sim only if this tree builds it.
RUN mkdir -p /out \
 && cp build/presenced build/presencectl /out/ \
 && if [ -x build/presence-sim ]; then cp build/presence-sim /out/; fi \
 && if [ -x build/presence-dash ]; then cp build/presence-dash /out/; fi

# ---- runtime stage -----------------------------------------------------------
FROM debian:bookworm-slim

# Runtime libraries only (libnats pulls in libssl3 and libprotobuf-c1).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libnats3.4 libhiredis0.14 libmsgpackc2 libuv1 libmicrohttpd12 libjansson4 ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# A fixed, unprivileged user: presenced needs no file and no privilege.
RUN groupadd --system --gid 10001 presenced \
 && useradd --system --uid 10001 --gid presenced --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin presenced

COPY --from=build /out/ /usr/local/bin/
# presence-dash's page (its PRESENCE_DASH_WEB in compose.yaml).
COPY --from=build /src/dash/web/ /usr/local/share/presence-dash/web/

USER presenced:presenced

# SIGTERM: the node announces its departure, writes a final snapshot and
# exits 0; give it time (docker stop -t 60, compose stop_grace_period).
STOPSIGNAL SIGTERM

# Healthy when the cluster, asked through $PRESENCE_NATS_URL, answers and
# sees THIS node (PRESENCE_NODE_ID, default the host name) alive: a row of
# the `presencectl cluster` table with this id first and "yes" second (the
# table, not JSON text, whose key order is free). A starting node listens
# for one sync interval before it heartbeats: hence the grace.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD presencectl --server "${PRESENCE_NATS_URL:-nats://127.0.0.1:4222}" \
            --timeout 2000 cluster \
        | awk -v id="${PRESENCE_NODE_ID:-$(cat /proc/sys/kernel/hostname)}" \
              '$1 == id && $2 == "yes" { ok = 1 } END { exit !ok }'

ENTRYPOINT ["presenced"]
