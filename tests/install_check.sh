#!/usr/bin/env bash
# install_check.sh - `make install DESTDIR=... PREFIX=/usr` of a built tree
# puts every file where it belongs: the binaries (which run), the man pages
# (which man renders without warnings), the bash completions (which
# complete), and the systemd unit (whose ExecStart names the installed
# presenced). usage: install_check.sh BUILD_DIR
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$1" && pwd)
stage=$(mktemp -d /tmp/pd-install-XXXXXX)
trap 'rm -rf "$stage"' EXIT
fail() { echo "FAIL: $*"; echo "0 passed, 1 failed"; exit 1; }

make -s -C "$root" install BUILD_DIR="$build" DESTDIR="$stage" PREFIX=/usr >"$stage.log" 2>&1 ||
    { cat "$stage.log"; rm -f "$stage.log"; fail "make install failed"; }
rm -f "$stage.log"
for f in usr/sbin/presenced usr/bin/presencectl usr/bin/presence-sim \
         usr/share/man/man8/presenced.8 usr/share/man/man1/presencectl.1 \
         usr/share/man/man1/presence-sim.1 \
         usr/share/bash-completion/completions/presencectl \
         usr/share/bash-completion/completions/presenced \
         usr/share/bash-completion/completions/presence-sim \
         usr/lib/systemd/system/presenced.service \
         usr/share/doc/presenced/presenced.env.example; do
    [ -f "$stage/$f" ] || fail "$f not installed (got: $(cd "$stage" && find . -type f | tr '\n' ' '))"
done
[ -x "$stage/usr/sbin/presenced" ] || fail "presenced is not executable"
"$stage/usr/bin/presencectl" --version | grep -q '^presencectl [0-9]' || fail "presencectl --version"
"$stage/usr/sbin/presenced" --version | grep -q '^presenced [0-9]' || fail "presenced --version"
grep -qx 'ExecStart=/usr/sbin/presenced' "$stage/usr/lib/systemd/system/presenced.service" ||
    fail "the unit's ExecStart does not name /usr/sbin/presenced"

# The man pages: every option of the tables is there, and man renders them cleanly.
for opt in --viewer --emoji --limit --json --version; do
    grep -q -- "\\\\-\\\\-${opt#--}" "$stage/usr/share/man/man1/presencectl.1" ||
        fail "presencectl.1 lacks $opt"
done
grep -q 'PRESENCE_METRICS_ADDR' "$stage/usr/share/man/man8/presenced.8" || fail "presenced.8 lacks settings"
if command -v man >/dev/null; then
    for page in man8/presenced.8 man1/presencectl.1 man1/presence-sim.1; do
        out=$(MANWIDTH=80 man --warnings -l "$stage/usr/share/man/$page" 2>&1 >/dev/null)
        [ -z "$out" ] || fail "man warns about $page: $out"
    done
fi

# The completion: commands first, then the options of the command at hand.
comp() {
    bash -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _presencectl
             echo "${COMPREPLY[*]}"' _ "$stage/usr/share/bash-completion/completions/presencectl" "$@"
}
[ "$(comp presencectl dev)" = devices ] || fail "completion of 'dev': '$(comp presencectl dev)'"
[ "$(comp presencectl custom --em)" = --emoji ] || fail "custom --em: '$(comp presencectl custom --em)'"
[ -z "$(comp presencectl get --em)" ] || fail "get offers --emoji"
echo "make install: $(cd "$stage" && find . -type f | wc -l) files under DESTDIR"
echo "1 passed, 0 failed"
