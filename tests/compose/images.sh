#!/usr/bin/env bash
# images.sh - the images compose.yaml needs that no registry can give here,
# built locally with podman and cached between runs:
#
#   docker.io/library/debian:bookworm-slim  debootstrap --variant=minbase
#                                           bookworm, imported (the FROM of
#                                           the Dockerfile and of the others)
#   docker.io/library/nats:2.9-alpine       standins/nats.Containerfile
#   docker.io/library/redis:7.0             standins/redis.Containerfile
#   docker.io/prom/prometheus:v2.42.0       standins/prometheus.Containerfile
#
# Each image carries the label org.presenced.inputs: a sha256 of what it is
# built from (the recipe below and debootstrap's version for the base; the
# Containerfile and the base's image id for the others). An image whose
# label matches is kept; one with another value is rebuilt. An image with
# that name but no such label is not ours (pulled from a registry where
# there is one): it is used as it is.
#
# The Debian mirror is read at run time from this machine's apt sources
# (/etc/apt/sources.list.d/debian.sources, else /etc/apt/sources.list);
# it is never written into the repository. Needs root (debootstrap, podman
# as root) and CONTAINERS_CONF pointing at tests/compose/containers.conf on
# machines like this one (run.sh sets it). Runs of it on one machine take
# turns (flock), so two test runs never build the same image at once.
#
#   tests/compose/images.sh          # prints one line per image
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
LABEL=org.presenced.inputs
BASE=docker.io/library/debian:bookworm-slim
# The base image's recipe: change it and the hash (so the image) changes.
BASE_RECIPE="debootstrap --variant=minbase bookworm; rm apt lists and debs; CMD bash; v1"
STANDINS=(
    "nats docker.io/library/nats:2.9-alpine"
    "redis docker.io/library/redis:7.0"
    "prometheus docker.io/prom/prometheus:v2.42.0"
)

say() { echo "images.sh: $*" >&2; }

# The label of an image, "" if it has none, "-" if there is no such image.
image_inputs() {
    podman image inspect --format "{{index .Labels \"$LABEL\"}}" "$1" 2>/dev/null || echo -
}

# The mirror of the bookworm suite in this machine's apt sources.
debian_mirror() {
    local f=/etc/apt/sources.list.d/debian.sources
    if [[ -r $f ]]; then
        # deb822 stanzas, separated by blank lines: the first whose Suites
        # has "bookworm" and whose Types has "deb".
        awk 'BEGIN { RS = ""; FS = "\n" }
             {
                 uri = ""; suites = ""; types = ""
                 for (i = 1; i <= NF; i++) {
                     if ($i ~ /^URIs:/)   { uri = $i;    sub(/^URIs:[ \t]*/, "", uri); sub(/[ \t].*/, "", uri) }
                     if ($i ~ /^Suites:/) { suites = " " $i " " }
                     if ($i ~ /^Types:/)  { types = " " $i " " }
                 }
                 if (uri != "" && suites ~ /[ \t]bookworm[ \t]/ && types ~ /[ \t]deb[ \t]/) { print uri; exit }
             }' "$f"
        return
    fi
    if [[ -r /etc/apt/sources.list ]]; then
        awk '$1 == "deb" && $3 == "bookworm" { print ($2 ~ /^\[/ ? $3 : $2); exit }' \
            /etc/apt/sources.list
    fi
}

build_base() {
    local inputs="$1" mirror dir
    mirror=$(debian_mirror)
    if [[ -z $mirror ]]; then
        say "no bookworm mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
        return 1
    fi
    dir=$(mktemp -d /var/tmp/presenced-base.XXXXXX)
    say "building $BASE: debootstrap --variant=minbase bookworm from $mirror"
    if ! debootstrap --variant=minbase bookworm "$dir/root" "$mirror" >"$dir/log" 2>&1; then
        tail -20 "$dir/log" >&2
        rm -rf "$dir"
        say "debootstrap failed"
        return 1
    fi
    rm -rf "$dir"/root/var/cache/apt/archives/*.deb "$dir"/root/var/lib/apt/lists/*
    tar -C "$dir/root" -c . |
        podman import --change "LABEL $LABEL=$inputs" --change 'CMD ["bash"]' - "$BASE" >/dev/null
    rm -rf "$dir"
}

# Removes the image an earlier build left untagged (its id in $1), if
# nothing uses it any more; a failure only leaves it on disk.
drop_old() {
    [[ $1 == - || -z $1 ]] && return 0
    [[ $1 == "$(podman image inspect --format '{{.Id}}' "$2" 2>/dev/null)" ]] && return 0
    podman rmi "$1" >/dev/null 2>&1 || true
}

build_standin() {
    local name="$1" tag="$2" inputs="$3"
    say "building $tag from standins/$name.Containerfile"
    podman build -q --pull=never --layers=false --label "$LABEL=$inputs" \
        -f "$HERE/standins/$name.Containerfile" -t "$tag" "$HERE/standins" >/dev/null
}

main() {
    local start=$SECONDS inputs have base_id line name tag old
    for tool in podman debootstrap sha256sum flock; do
        command -v "$tool" >/dev/null || { say "$tool is missing (scripts/deps.sh installs it)"; exit 1; }
    done
    exec 9>/var/tmp/presenced-compose-images.lock
    flock 9

    inputs=$( { echo "$BASE_RECIPE"; dpkg-query -W -f='${Version}' debootstrap; } | sha256sum | cut -c1-16)
    have=$(image_inputs "$BASE")
    if [[ $have == "$inputs" ]]; then
        say "$BASE: cached"
    elif [[ $have == "" ]]; then
        say "$BASE: not built here, used as it is"
    else
        old=$(podman image inspect --format '{{.Id}}' "$BASE" 2>/dev/null || echo -)
        build_base "$inputs"
        drop_old "$old" "$BASE"
    fi
    base_id=$(podman image inspect --format '{{.Id}}' "$BASE")

    for line in "${STANDINS[@]}"; do
        read -r name tag <<<"$line"
        inputs=$( { cat "$HERE/standins/$name.Containerfile"; echo "$base_id"; } | sha256sum | cut -c1-16)
        have=$(image_inputs "$tag")
        if [[ $have == "$inputs" ]]; then
            say "$tag: cached"
        elif [[ $have == "" ]]; then
            say "$tag: not built here, used as it is"
        else
            old=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || echo -)
            build_standin "$name" "$tag" "$inputs"
            drop_old "$old" "$tag"
        fi
    done
    say "images ready in $((SECONDS - start)) s"
}

main "$@"
