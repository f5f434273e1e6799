#!/bin/sh
# The web admin panel's end-to-end tests (ctest: browser.panel).
# Usage: tests/browser/run.sh <path of the mooring binary>
# Installs playwright-core (pinned in package-lock.json) with `npm ci` when it
# is missing or stale; drives Debian's chromium (apt-get install chromium).
# Screenshots go to <binary's folder>/browser/ ($MOORING_BROWSER_OUT); set
# MOORING_DOCS_SCREENSHOTS=<repo>/docs to refresh docs/panel-*.png.
set -eu
if [ $# -ne 1 ] || [ ! -x "$1" ]; then
  echo "usage: $0 <path of the mooring binary>" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
binary=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
chromium=${CHROMIUM:-/usr/bin/chromium}
for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y nodejs npm" >&2; exit 1; }
done
[ -x "$chromium" ] || { echo "$chromium is missing: apt-get install -y chromium" >&2; exit 1; }

cd "$here"
# node_modules/.package-lock.json lists what npm last installed: install
# again when it is missing or differs from the pinned versions.
if ! node -e '
  const want = require("./package-lock.json").packages;
  const have = require("./node_modules/.package-lock.json").packages;
  for (const k of Object.keys(want)) if (k && have[k]?.version !== want[k].version) process.exit(1);
' 2>/dev/null; then
  npm ci --no-audit --no-fund --loglevel=error
fi

MOORING_BINARY=$binary
MOORING_BROWSER_OUT=${MOORING_BROWSER_OUT:-$(dirname "$binary")/browser}
CHROMIUM=$chromium
export MOORING_BINARY MOORING_BROWSER_OUT CHROMIUM
echo "screenshots: $MOORING_BROWSER_OUT"
exec node --test --test-concurrency=1 --test-reporter=spec "$here"/*.test.mjs
