#!/usr/bin/env bash
# Both theories on the same data and network: Kamb & Ganguli's LS and ELS machines beside PSPC-Square, PSPC-Flex
# and the optimal empirical denoiser, against the reference network. The network's gradient heatmaps (PSPC-Flex's
# masks), a forward sweep (test images noised at each t), a reverse sweep (the network's Heun trajectories), a
# calibration of every method's window per t on both (the whole image, P = 2 max(H, W) - 1, s = H and lambda = 1,
# is always a candidate), sample comparisons from shared noise with the calibrated windows (Euler and Heun on the
# EDM grid; similarity.csv holds the median Pearson correlation over seeds, Kamb & Ganguli's measure, with 95 %
# bootstrap intervals), the report, and timings.csv (seconds per step).
#
# Usage: scripts/study-ls-els.sh [OUT]   (default runs/study-ls-els). Every step is resumable: run it again with
# the same OUT to continue. Sizes (environment): PSPC_STUDY_TRAIN (training images, default 60000, x-flipped),
# PSPC_STUDY_QUERIES (forward queries per t, 8), PSPC_STUDY_TRAJECTORIES (8: an ELS request of fewer than 8
# queries costs what 8 cost), PSPC_STUDY_SAMPLES (16),
# PSPC_STUDY_HEATMAP_SAMPLES (4 per level), PSPC_STUDY_GRID (edm:18), PSPC_STUDY_PATCH_SIZES (LS / ELS windows
# and PSPC-Square crops, 1,3,5,7,9,11,15), PSPC_STUDY_LAMBDAS (0.25,0.5,0.75), PSPC_STUDY_WORKERS (local workers, 2),
# PSPC_NETWORK (checkpoint), PSPC_BIN (a pspc binary built elsewhere). ELS dominates: its cost per query grows
# with N and with P^2 (docs/design.md section 2.1; the whole-image window costs what the empirical denoiser does),
# so the default study is hours here and minutes on a cluster (PSPC_STUDY_CLUSTER=FILE replaces the local
# workers).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
out="${1:-runs/study-ls-els}"
train="${PSPC_STUDY_TRAIN:-60000}"
queries="${PSPC_STUDY_QUERIES:-8}"
trajectories="${PSPC_STUDY_TRAJECTORIES:-8}"
samples="${PSPC_STUDY_SAMPLES:-16}"
heatmap_samples="${PSPC_STUDY_HEATMAP_SAMPLES:-4}"
grid="${PSPC_STUDY_GRID:-edm:18}"
sizes="${PSPC_STUDY_PATCH_SIZES:-1,3,5,7,9,11,15}"
lambdas="${PSPC_STUDY_LAMBDAS:-0.25,0.5,0.75}"
workers="${PSPC_STUDY_WORKERS:-2}"
network="${PSPC_NETWORK:-scripts/reference-network/reference-network.pt}"
source scripts/study-common.sh
steps="$(study_grid_steps study-ls-els.sh "$grid")"
study_prepare study-ls-els.sh "$out"
data="$out/fashion-mnist-$train"
if [[ -z "${PSPC_STUDY_CLUSTER:-}" ]] && ! "$pspc" info --data "$data" >/dev/null 2>&1; then
    echo "== ingest $train Fashion-MNIST training images"
    "$pspc" ingest --source fashion-mnist:train --limit "$train" --shards 4 --out "$data"
fi
if [[ -n "${PSPC_STUDY_CLUSTER:-}" ]]; then
    engine=(--cluster "$PSPC_STUDY_CLUSTER" --local-network "$network")
else
    engine=(--data "$data" --local-workers "$workers" --local-network "$network")
fi

step heatmaps "$pspc" heatmap --local-network "$network" --grid "$grid" --samples "$heatmap_samples" --seed 0 \
    --out "$out/heatmaps"
heatmaps="$out/heatmaps/heatmaps.npy"
methods=(--methods ls,els,empirical,pspc-square,pspc-flex --patch-sizes "$sizes" --lambdas "$lambdas"
    --heatmaps "$heatmaps")
step forward "$pspc" sweep forward "${engine[@]}" "${methods[@]}" --grid "$grid" --queries "$queries" --from test \
    --seed 1 --out "$out/forward"
step reverse "$pspc" sweep reverse "${engine[@]}" "${methods[@]}" --steps "$steps" --trajectories "$trajectories" \
    --seed 1 --out "$out/reverse"
step calibration "$pspc" calibrate "$out/forward" "$out/reverse" --on both --out "$out/calibration"
cal="$out/calibration"
compare=(network empirical "pspc-square=$cal/patch-schedule.json" pspc-flex "ls=$cal/ls-schedule.json"
    "els=$cal/els-schedule.json")
for solver in euler heun; do
    step "samples-$solver" "$pspc" sample --compare "${engine[@]}" --methods "$(IFS=,; echo "${compare[*]}")" \
        --lambda-schedule "$cal/lambda-schedule.json" --heatmaps "$heatmaps" --solver "$solver" --steps "$steps" \
        --count "$samples" --seed 0 --out "$out/samples-$solver"
done
step report "$pspc" report "$out/heatmaps" "$out/forward" "$out/reverse" "$out/calibration" "$out/samples-euler" \
    "$out/samples-heun" --out "$out/report"
echo "timings: $out/timings.csv"
