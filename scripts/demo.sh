#!/usr/bin/env bash
# The main job: installs what is missing, builds in release mode, ingests Fashion-MNIST (60k training images,
# x-flipped in the engine: 120k), and with an embedded local cluster (2 worker processes) and the reference
# network's endpoint runs gradient heatmaps, a forward and a reverse sweep, a calibration of the patch size and
# of lambda, and a sample comparison, then writes one HTML report and prints its path.
#
# Usage: scripts/demo.sh [OUT]   (default runs/demo). Re-running resumes: finished units are kept.
# Sizes (environment): PSPC_DEMO_QUERIES (forward queries per t, 4), PSPC_DEMO_TRAJECTORIES (4),
# PSPC_DEMO_GRID (edm:10), PSPC_DEMO_SAMPLES (6), PSPC_DEMO_WORKERS (2), PSPC_DEMO_PATCH_SIZES (3,5,7,11,15,21),
# PSPC_DEMO_LAMBDAS (0.3,0.6), PSPC_DEMO_HEATMAP_GRID (edm:6), PSPC_DEMO_HEATMAP_SAMPLES (1 per level),
# PSPC_DEMO_SEED (0: the queries, trajectories and samples), PSPC_DEMO_DATA (the ingested training set;
# OUT/fashion-mnist, ingested when missing), PSPC_NETWORK (the checkpoint). scripts/larger-run.sh sets larger ones.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
out="${1:-runs/demo}"
queries="${PSPC_DEMO_QUERIES:-4}"
trajectories="${PSPC_DEMO_TRAJECTORIES:-4}"
grid="${PSPC_DEMO_GRID:-edm:10}"
samples="${PSPC_DEMO_SAMPLES:-6}"
workers="${PSPC_DEMO_WORKERS:-2}"
patch_sizes="${PSPC_DEMO_PATCH_SIZES:-3,5,7,11,15,21}"
lambdas="${PSPC_DEMO_LAMBDAS:-0.3,0.6}"
heatmap_grid="${PSPC_DEMO_HEATMAP_GRID:-edm:6}"
heatmap_samples="${PSPC_DEMO_HEATMAP_SAMPLES:-1}"
seed="${PSPC_DEMO_SEED:-0}"
network="${PSPC_NETWORK:-scripts/reference-network/reference-network.pt}"
data="${PSPC_DEMO_DATA:-$out/fashion-mnist}"
steps="${grid#edm:}"
if [[ "$grid" != edm:* || ! "$steps" =~ ^[0-9]+$ ]]; then
    echo "demo.sh: PSPC_DEMO_GRID must be edm:N (the reverse sweep runs on the same grid)" >&2
    exit 2
fi
mkdir -p "$out"

scripts/setup.sh
scripts/setup-python.sh
echo "== build (release)"
swift build -c release --product pspc
pspc=.build/release/pspc
"$pspc" info
start=$(date +%s)
elapsed() { echo "   ($(( $(date +%s) - start )) s since the build)"; }

if ! "$pspc" info --data "$data" >/dev/null 2>&1; then
    echo "== ingest Fashion-MNIST (60000 training images, 4 shards)"
    "$pspc" ingest --source fashion-mnist:train --shards 4 --out "$data"
fi
elapsed

# Every command below starts its own embedded cluster ($workers local worker processes holding the shards)
# and the network endpoint (python -m pspc_net.serve on the reference checkpoint), and stops them at the end.
engine=(--data "$data" --local-workers "$workers" --local-network "$network")
methods=(--methods empirical,gaussian,pspc-square,pspc-flex --patch-sizes "$patch_sizes" --lambdas "$lambdas")

echo "== gradient heatmaps of the network ($heatmap_grid, $heatmap_samples samples per level; PSPC-Flex masks, locality)"
"$pspc" heatmap --local-network "$network" --grid "$heatmap_grid" --samples "$heatmap_samples" --seed 0 \
    --out "$out/heatmaps"
heatmaps="$out/heatmaps/heatmaps.npy"
elapsed

echo "== forward sweep: $queries x-flipped training images noised at each t of $grid"
"$pspc" sweep forward "${engine[@]}" "${methods[@]}" --heatmaps "$heatmaps" --grid "$grid" \
    --queries "$queries" --from train --seed "$seed" --out "$out/forward"
elapsed

echo "== reverse sweep: $trajectories Heun trajectories of the network ($steps steps)"
"$pspc" sweep reverse "${engine[@]}" "${methods[@]}" --heatmaps "$heatmaps" --steps "$steps" \
    --trajectories "$trajectories" --seed "$seed" --out "$out/reverse"
elapsed

echo "== calibration: the patch size and lambda closest to the network at each t"
"$pspc" calibrate "$out/forward" "$out/reverse" --on both --out "$out/calibration"
elapsed

echo "== sample comparison: $samples samples per method from shared noise (Euler, 18 steps)"
"$pspc" sample --compare "${engine[@]}" --methods network,empirical,gaussian,pspc-square,pspc-flex \
    --schedule "$out/calibration/patch-schedule.json" --heatmaps "$heatmaps" \
    --lambda-schedule "$out/calibration/lambda-schedule.json" --count "$samples" --seed "$seed" --out "$out/samples"
elapsed

echo "== report"
report=$("$pspc" report "$out/heatmaps" "$out/forward" "$out/reverse" "$out/calibration" "$out/samples" \
    --out "$out/report")
elapsed
echo
echo "report: $report"
