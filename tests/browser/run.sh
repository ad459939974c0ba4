#!/usr/bin/env bash
# run.sh BUILD_DIR [SCREENSHOT] - the browser test of presence-dash
# (dash_e2e.mjs) as ctest runs it. Exit 77 (ctest: skipped) with a message
# only where Chromium is not installed; playwright-core comes from
# package-lock.json (npm ci), installed here if scripts/deps.sh has not.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:?usage: run.sh BUILD_DIR [SCREENSHOT]}" && pwd)
if [ ! -x /usr/bin/chromium ]; then
    echo "SKIPPED dash_browser: /usr/bin/chromium is not installed (Debian package" \
         "'chromium'; scripts/deps.sh installs it when run as root)"
    exit 77
fi
if ! command -v node >/dev/null; then
    echo "dash_browser: node is missing (Debian package 'nodejs')" >&2
    exit 1
fi
if [ ! -f "$here/node_modules/playwright-core/package.json" ]; then
    npm ci --prefix "$here" --no-audit --no-fund --loglevel=error ||
        { echo "dash_browser: 'npm ci' in tests/browser failed: playwright-core is needed" >&2; exit 1; }
fi
exec node "$here/dash_e2e.mjs" "$build" "$root" "${2:-$build/dashboard.png}"
