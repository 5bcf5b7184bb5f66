#!/usr/bin/env bash
# Render agebench report.html files to PNG with headless Chromium, to look at a report as a
# browser shows it (layout, clipping, table widths) rather than as its HTML reads.
#
#   scripts/render_reports.sh REPORT.html [MORE.html...]   -> REPORT.png beside each, or in $PNG_DIR
#
# Chromium comes from the system packages (Debian: apt-get install -y chromium). WIDTH and
# HEIGHT set the window (default 1280x2000: a laptop's width, the page's first two screens).
set -euo pipefail

browser=""
for name in chromium chromium-browser google-chrome; do
    if command -v "$name" >/dev/null 2>&1; then browser=$name; break; fi
done
if [[ -z $browser ]]; then
    echo "render_reports.sh: no chromium found; install it: apt-get install -y chromium" >&2
    exit 1
fi
if [[ $# -eq 0 ]]; then
    echo "usage: $0 REPORT.html [MORE.html...]" >&2
    exit 2
fi

width=${WIDTH:-1280}
height=${HEIGHT:-2000}
for report in "$@"; do
    html=$(realpath "$report")
    stem=$(basename "$(dirname "$html")")-$(basename "$html" .html)
    png=${PNG_DIR:+$PNG_DIR/$stem.png}
    png=${png:-${html%.html}.png}
    "$browser" --headless --no-sandbox --disable-gpu \
        --window-size="$width,$height" --screenshot="$png" "file://$html" 2>/dev/null
    echo "$png"
done
