#!/usr/bin/env bash
# Render a `qrsync report --format html` page in headless Chromium and save a PNG of it.
# Usage: scripts/screenshot_report.sh REPORT.html OUT.png   (CHROMIUM=/path overrides the browser;
# WINDOW=1280,2400 sets the viewport). The page fetches nothing, and neither does the browser.
set -euo pipefail

if [ "$#" -ne 2 ]; then
    echo "usage: $0 REPORT.html OUT.png" >&2
    exit 2
fi
report=$1
out=$2
chromium=${CHROMIUM:-/usr/bin/chromium}
window=${WINDOW:-1280,2400}

if [ ! -r "$report" ]; then
    echo "$0: cannot read $report" >&2
    exit 2
fi
if [ ! -x "$chromium" ]; then
    echo "$0: no browser at $chromium (apt-get install chromium, or set CHROMIUM)" >&2
    exit 2
fi

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
report_url="file://$(cd "$(dirname "$report")" && pwd)/$(basename "$report")"
out_path="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
rm -f "$out_path"

"$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --hide-scrollbars --user-data-dir="$profile" --window-size="$window" \
    --screenshot="$out_path" "$report_url" >/dev/null 2>&1 || true

if [ ! -s "$out_path" ]; then
    echo "$0: $chromium wrote no screenshot" >&2
    exit 1
fi
echo "$out_path"
