#!/usr/bin/env bash
# Engine speed on this machine (a benchmark, not a test): builds in release mode and prints per-query
# times of the engine and of a straightforward implementation run in the same process, with ratios.
# Defaults: Fashion-MNIST, N = 10000 without x-flip, 256 test queries, t = 1.09, s = 7, every core.
# PSPC-Flex (lambda 0.5, synthetic heatmaps unless --heatmaps FILE.npy) runs with the per-pixel and the row-run
# kernels side by side. Extra arguments go to pspc-bench (--train N --queries B --baseline-queries K --t T
# --patch-size S --threads N --lambda L --flex-queries K --heatmaps FILE --methods all|flex --colour 0|1).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
scripts/setup.sh >/dev/null
swift build -c release --product pspc-bench >/dev/null
exec .build/release/pspc-bench "$@"
