#!/bin/sh
# compose-auth.sh - NATS credentials of the cluster in compose.yaml, made
# at `compose up` time, never committed: the users and per-role
# permissions of deploy/nats-accounts.conf, as `make up` runs them
# (scripts/nats-auth.sh). POSIX sh: it runs in the node image (Debian)
# and in the nats image (Alpine, busybox).
#
#   compose-auth.sh init DIR
#       (the one-shot service nats-auth) makes, once per volume, in DIR:
#         nats.env        every secret, for the NATS servers (the accounts
#                         file reads $PRESENCE_NATS_PASS_* and
#                         $PRESENCE_NATS_NKEY_WATCHER from the environment)
#         ROLE.env        PRESENCE_NATS_USER and PRESENCE_NATS_PASSWORD of one
#                         role: n1 n2 n3 sockets-n1 .. sockets-n3 admin
#                         dashboard
#         watcher.nk      the watchers' NKey seed (PRESENCE_NATS_NKEY_SEED_FILE,
#                         presencectl --nkey); the servers know its public key
#       Files are mode 0600, owned by the image's user presenced (10001),
#       the directory 0700. A second run keeps what is there (`down` and
#       `up` again: the same secrets; `down -v` forgets them).
#   compose-auth.sh run DIR ROLE CMD [ARG...]
#       waits for DIR/ROLE.env (the init may still be running: podman-compose
#       does not wait for it), exports it and execs CMD. ROLE "nats": every
#       secret (nats.env), for nats-server.
set -eu

die() { echo "compose-auth.sh: $*" >&2; exit 1; }

# A random password: letters and digits, starting with a letter (nats-server
# reads a $VAR that starts with a digit as a number).
password() {
    printf 'p%s\n' "$(od -An -N18 -tx1 /dev/urandom | tr -d ' \n')"
}

# CRC-16/XMODEM of the bytes given as decimal numbers (nkeys' checksum).
crc16() {
    crc=0
    for b in "$@"; do
        crc=$(( crc ^ (b << 8) ))
        i=0
        while [ $i -lt 8 ]; do
            if [ $(( crc & 32768 )) -ne 0 ]; then crc=$(( ((crc << 1) ^ 4129) & 65535 ))
            else crc=$(( (crc << 1) & 65535 )); fi
            i=$((i + 1))
        done
    done
    echo $crc
}

# The bytes (decimal numbers) as raw bytes on stdout.
bytes() {
    for b in "$@"; do printf "\\$(printf %o "$b")"; done
}

# An NKey: base32 without padding of the prefix bytes, the 32 key bytes and
# their CRC-16, little-endian (github.com/nats-io/nkeys).
nkey() {
    c=$(crc16 "$@")
    { bytes "$@"; bytes $(( c & 255 )) $(( c >> 8 )); } | base32 -w0 | tr -d '='
}

# The watchers' user NKey: an Ed25519 key by openssl; the seed ("SU...",
# prefix bytes 149 0: seed of a user) and the public key ("U...", 160).
watcher_nkey() {
    tmp=$(mktemp -d)
    openssl genpkey -algorithm ed25519 -outform DER -out "$tmp/k.der" 2>/dev/null
    priv=$(tail -c 32 "$tmp/k.der" | od -An -v -tu1)
    pub=$(openssl pkey -inform DER -in "$tmp/k.der" -pubout -outform DER | tail -c 32 | od -An -v -tu1)
    rm -rf "$tmp"
    # shellcheck disable=SC2086
    nkey 149 0 $priv >"$1/watcher.nk"
    # shellcheck disable=SC2086
    nkey 160 $pub
}

init() {
    dir=$1
    umask 077
    mkdir -p "$dir"
    if [ -s "$dir/nats.env" ]; then
        echo "compose-auth.sh: credentials already in $dir: kept"
        return 0
    fi
    for tool in openssl base32 od; do
        command -v $tool >/dev/null || die "$tool is missing"
    done
    {
        for role in N1 N2 N3 SOCKETS_N1 SOCKETS_N2 SOCKETS_N3 ADMIN DASHBOARD; do
            echo "PRESENCE_NATS_PASS_$role=$(password)"
        done
        echo "PRESENCE_NATS_NKEY_WATCHER=$(watcher_nkey "$dir")"
    } >"$dir/nats.env.tmp"
    # shellcheck disable=SC1091
    . "$dir/nats.env.tmp"
    for role in n1 n2 n3 sockets-n1 sockets-n2 sockets-n3 admin dashboard; do
        var=PRESENCE_NATS_PASS_$(echo "$role" | tr 'a-z-' 'A-Z_')
        eval "pass=\$$var"
        printf 'PRESENCE_NATS_USER=%s\nPRESENCE_NATS_PASSWORD=%s\n' "$role" "$pass" >"$dir/$role.env"
    done
    # The last: its presence says the rest is complete.
    mv "$dir/nats.env.tmp" "$dir/nats.env"
    chown -R 10001:10001 "$dir" 2>/dev/null || true
    chmod 0700 "$dir"
    echo "compose-auth.sh: NATS credentials made in $dir"
}

run() {
    dir=$1 role=$2
    shift 2
    file=$dir/$role.env
    [ "$role" = nats ] && file=$dir/nats.env
    n=0
    until [ -s "$dir/nats.env" ] && [ -r "$file" ]; do
        n=$((n + 1))
        [ $n -le 600 ] || die "no $file after 60 s (did the service nats-auth run?)"
        sleep 0.1
    done
    set -a
    # shellcheck disable=SC1090
    . "$file"
    set +a
    exec "$@"
}

case "${1:-}" in
init) [ $# -eq 2 ] || die "usage: compose-auth.sh init DIR"; init "$2" ;;
run) [ $# -ge 4 ] || die "usage: compose-auth.sh run DIR ROLE CMD [ARG...]"; shift; run "$@" ;;
*) die "usage: compose-auth.sh init DIR | run DIR ROLE CMD [ARG...]" ;;
esac
