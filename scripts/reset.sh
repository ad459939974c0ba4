#!/usr/bin/env bash
# reset.sh - `make reset`: stops the local cluster and removes its state
# (JetStream, Redis snapshots, logs), so that the next `make up` starts with
# nobody online. Only a folder that up.sh made (it holds .pd-state) is removed.
set -euo pipefail
source "$(dirname "$0")/cluster-env.sh"

bash "$(dirname "$0")/down.sh"
if [ -d "$PD_STATE" ]; then
    if [ ! -f "$PD_STATE/.pd-state" ]; then
        echo "reset: $PD_STATE was not made by make up (no .pd-state); not removing it" >&2
        exit 1
    fi
    rm -rf "${PD_STATE:?}"
    echo "removed $PD_STATE"
fi
