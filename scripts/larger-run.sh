#!/usr/bin/env bash
# The larger run behind RESULTS.md: scripts/demo.sh's experiments on the paper's 18-step EDM grid. Gradient
# heatmaps of all 18 levels (6 samples each), a forward sweep (12 x-flipped training images noised at each t) and a
# reverse sweep (8 Heun trajectories of the network), every method with 8 patch sizes and 3 lambdas for
# PSPC-Flex, a calibration on both, a sample comparison (8 samples) with the calibrated schedules, the report.
#
# Usage: scripts/larger-run.sh [OUT]   (default runs/larger). About an hour on a 2-core machine (PSPC-Flex is most
# of it); every step is resumable, so killing it and running it again with the same OUT continues where it
# stopped. Any PSPC_DEMO_* setting of scripts/demo.sh set in the environment wins over the sizes below.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PSPC_DEMO_GRID="${PSPC_DEMO_GRID:-edm:18}"
export PSPC_DEMO_QUERIES="${PSPC_DEMO_QUERIES:-12}"
export PSPC_DEMO_TRAJECTORIES="${PSPC_DEMO_TRAJECTORIES:-8}"
export PSPC_DEMO_SAMPLES="${PSPC_DEMO_SAMPLES:-8}"
export PSPC_DEMO_PATCH_SIZES="${PSPC_DEMO_PATCH_SIZES:-3,5,7,9,11,15,19,23}"
export PSPC_DEMO_LAMBDAS="${PSPC_DEMO_LAMBDAS:-0.25,0.5,0.75}"
export PSPC_DEMO_HEATMAP_GRID="${PSPC_DEMO_HEATMAP_GRID:-edm:18}"
export PSPC_DEMO_HEATMAP_SAMPLES="${PSPC_DEMO_HEATMAP_SAMPLES:-6}"
export PSPC_DEMO_SEED="${PSPC_DEMO_SEED:-1}"
exec "$here/demo.sh" "${1:-runs/larger}"
