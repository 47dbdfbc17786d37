#!/usr/bin/env bash
# Screenshot of a report page (what `pspc report` wrote) with headless Chromium, to look at its layout.
# Usage: scripts/screenshot-report.sh REPORT_DIR [OUT.png]   (default OUT: REPORT_DIR/screenshot.png)
# Environment: PSPC_SCREENSHOT_SIZE (1280,4000: window width,height in CSS pixels).
# Installs Debian's chromium when it is missing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $(basename "$0") REPORT_DIR [OUT.png]" >&2
    exit 2
fi
report="$(cd "$1" && pwd)"
page="$report/index.html"
if [[ ! -f "$page" ]]; then
    echo "$(basename "$0"): $page does not exist (run pspc report first)" >&2
    exit 1
fi
out="${2:-$report/screenshot.png}"
out_dir="$(cd "$(dirname "$out")" && pwd)"
out="$out_dir/$(basename "$out")"
size="${PSPC_SCREENSHOT_SIZE:-1280,4000}"

if ! command -v chromium >/dev/null 2>&1; then
    echo "installing chromium (Debian package)..." >&2
    apt-get update >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y chromium >/dev/null
fi

# Chromium wants a writable home for its profile; keep it out of the user's.
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
cd "$here/.."
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile" \
    --screenshot="$out" --window-size="$size" "file://$page" 2>/dev/null
echo "$out"
