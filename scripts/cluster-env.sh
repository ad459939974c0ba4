# cluster-env.sh - settings shared by up.sh, down.sh, status.sh and reset.sh:
# where the local cluster keeps its state and which loopback ports it uses.
# Override any of them in the environment, e.g. PD_NATS_PORT=24222 make up.

# The overrides the user gave (PD_* and PRESENCE_*), before any default is
# filled in: hints printed by up.sh repeat them, so that following a hint
# reaches this cluster and not the default one.
PD_USER_ENV=""
for pd_v in $(compgen -e | grep -E '^(PD_|PRESENCE_)' | sort); do
    case $pd_v in PD_USER_ENV|PD_ROOT|*PASSWORD*|*PASS_*|*TOKEN*) continue;; esac # no secrets
    PD_USER_ENV+="$pd_v=$(printf '%q' "${!pd_v}") "
done
unset pd_v

PD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PD_STATE=${PD_STATE:-$PD_ROOT/.state}
PD_BUILD=${PD_BUILD:-$PD_ROOT/build}
# Three NATS servers: client ports PD_NATS_PORT, +1, +2; route ports
# PD_ROUTE_PORT, +1, +2.
PD_NATS_PORT=${PD_NATS_PORT:-14222}
PD_ROUTE_PORT=${PD_ROUTE_PORT:-$((PD_NATS_PORT + 2000))}
PD_REDIS_PORT=${PD_REDIS_PORT:-16379}
# presence-dash's page (docs/dashboard.md).
PD_DASH_ADDR=${PD_DASH_ADDR:-127.0.0.1:8080}
PD_NODES=${PD_NODES:-"n1 n2 n3"}
# Metrics: node k (0, 1, 2, ...) listens on 127.0.0.1:PD_METRICS_PORT+k.
# PRESENCE_METRICS_ADDR=HOST:PORT sets the host and the first port instead
# (port 0: each node picks a free one, and up.sh prints it).
PD_METRICS_PORT=${PD_METRICS_PORT:-$((PD_NATS_PORT + 5000))}
PD_NATS_SERVERS="nats1 nats2 nats3"
PD_NATS_URL="nats://127.0.0.1:$PD_NATS_PORT,nats://127.0.0.1:$((PD_NATS_PORT + 1)),nats://127.0.0.1:$((PD_NATS_PORT + 2))"
PD_REDIS_URL="redis://127.0.0.1:$PD_REDIS_PORT"

# pd_alive PIDFILE: true if the process named in PIDFILE runs.
# A zombie (killed, not yet reaped: containers often lack a reaping init)
# does not count.
pd_alive() {
    [ -f "$1" ] || return 1
    local pid; pid=$(cat "$1")
    pd_pid_alive "$pid"
}

# pd_pid_alive PID: the same for a pid.
pd_pid_alive() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
    [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# pd_wait SECONDS CMD...: polls CMD every 0.1 s until it succeeds.
pd_wait() {
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.1
    done
}

# pd_http_ok PORT PATH: true if GET http://127.0.0.1:PORT/PATH answers 200.
pd_http_ok() {
    bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
             printf "GET %s HTTP/1.0\r\n\r\n" "$2" >&3
             read -r line <&3; [[ $line == *" 200 "* ]]' _ "$1" "$2" 2>/dev/null
}
