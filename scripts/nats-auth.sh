# nats-auth.sh - NATS authentication for the local cluster (sourced by
# up.sh and status.sh): the users and per-role permissions of
# deploy/nats-accounts.conf, copied next to the servers' configurations.
# Their secrets are made once per state dir, readable by its owner only:
# $PD_STATE/nats-auth.env (passwords) and $PD_STATE/keys/ (the watchers'
# NKey, made by tests/secmaterial.py with openssl). They are exported, so
# that nats-server reads them ($NAME in the accounts file) and the helpers
# below can hand them to clients. The accounts file names the nodes n1, n2,
# n3: other PD_NODES need their own blocks there.
pd_auth_env=$PD_STATE/nats-auth.env
# A role missing from an older state dir's file gets its password too.
# Each starts with a letter: nats-server reads a $VAR that starts with a
# digit as a number and refuses the file.
(umask 077
 for role in N1 N2 N3 SOCKETS_N1 SOCKETS_N2 SOCKETS_N3 ADMIN DASHBOARD; do
     grep -q "^PRESENCE_NATS_PASS_$role=" "$pd_auth_env" 2>/dev/null ||
         echo "PRESENCE_NATS_PASS_$role=p$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
 done >>"$pd_auth_env")
if [ ! -f "$PD_STATE/keys/watcher.pub" ]; then
    (umask 077; mkdir -p "$PD_STATE/keys"
     python3 "$PD_ROOT/tests/secmaterial.py" "$PD_STATE/keys" >/dev/null)
fi
set -a
# shellcheck disable=SC1090
. "$pd_auth_env"
PRESENCE_NATS_NKEY_WATCHER=$(cat "$PD_STATE/keys/watcher.pub")
set +a
cp "$PD_ROOT/deploy/nats-accounts.conf" "$PD_STATE/nats-accounts.conf"

# pd_node_password ID: the NATS password of node ID (n1 -> PRESENCE_NATS_PASS_N1).
pd_node_password() {
    local var="PRESENCE_NATS_PASS_$(echo "$1" | tr '[:lower:]' '[:upper:]')"
    echo "${!var:-}"
}

# pd_as_admin CMD...: runs CMD as the admin user (presencectl, the simulator).
pd_as_admin() {
    PRESENCE_NATS_USER=admin PRESENCE_NATS_PASSWORD=$PRESENCE_NATS_PASS_ADMIN "$@"
}
