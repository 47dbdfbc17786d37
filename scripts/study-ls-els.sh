#!/usr/bin/env bash
# Both theories on the same data and network: Kamb & Ganguli's LS and ELS machines beside PSPC-Square and the
# optimal empirical denoiser, against the reference network. A forward sweep (test images noised at each t), a
# reverse sweep (the network's Heun trajectories), a calibration of every method's window per t on both, sample
# comparisons from shared noise with the calibrated windows (Euler and Heun on the EDM grid; similarity.csv holds
# the median Pearson correlation over seeds, Kamb & Ganguli's measure, with 95 % bootstrap intervals), the report.
#
# Usage: scripts/study-ls-els.sh [OUT]   (default runs/study-ls-els). Every step is resumable: run it again with
# the same OUT to continue. Sizes (environment): PSPC_STUDY_TRAIN (training images, default 60000, x-flipped),
# PSPC_STUDY_QUERIES (forward queries per t, 8), PSPC_STUDY_TRAJECTORIES (4), PSPC_STUDY_SAMPLES (16),
# PSPC_STUDY_GRID (edm:18), PSPC_STUDY_PATCH_SIZES (3,5,7), PSPC_STUDY_WORKERS (local workers, 2),
# PSPC_NETWORK (checkpoint). ELS dominates: about 23 s per query at N = 120k (60k x-flipped) on 2 cores
# (docs/design.md section 2.1), so the default study is hours here and minutes on a cluster (--cluster FILE via
# PSPC_STUDY_CLUSTER replaces the local workers).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
out="${1:-runs/study-ls-els}"
train="${PSPC_STUDY_TRAIN:-60000}"
queries="${PSPC_STUDY_QUERIES:-8}"
trajectories="${PSPC_STUDY_TRAJECTORIES:-4}"
samples="${PSPC_STUDY_SAMPLES:-16}"
grid="${PSPC_STUDY_GRID:-edm:18}"
sizes="${PSPC_STUDY_PATCH_SIZES:-3,5,7}"
workers="${PSPC_STUDY_WORKERS:-2}"
network="${PSPC_NETWORK:-scripts/reference-network/reference-network.pt}"
steps="${grid#edm:}"
[[ "$grid" == edm:* && "$steps" =~ ^[0-9]+$ ]] || { echo "study-ls-els.sh: PSPC_STUDY_GRID must be edm:N" >&2; exit 2; }
mkdir -p "$out"
# The network endpoint's Python, also for a pspc binary built elsewhere (PSPC_BIN).
export PSPC_SCRIPTS="${PSPC_SCRIPTS:-$PWD/scripts}"
export PSPC_PYTHON="${PSPC_PYTHON:-${PSPC_VENV:-$PWD/.venv}/bin/python}"
scripts/setup.sh
scripts/setup-python.sh
pspc="${PSPC_BIN:-}"
if [[ -z "$pspc" ]]; then
    swift build -c release --product pspc
    pspc=.build/release/pspc
fi
data="$out/fashion-mnist-$train"
if ! "$pspc" info --data "$data" >/dev/null 2>&1; then
    echo "== ingest $train Fashion-MNIST training images"
    "$pspc" ingest --source fashion-mnist:train --limit "$train" --shards 4 --out "$data"
fi
if [[ -n "${PSPC_STUDY_CLUSTER:-}" ]]; then
    engine=(--cluster "$PSPC_STUDY_CLUSTER" --local-network "$network")
else
    engine=(--data "$data" --local-workers "$workers" --local-network "$network")
fi
methods=(--methods ls,els,empirical,pspc-square --patch-sizes "$sizes")
start=$(date +%s)
elapsed() { echo "   ($(( $(date +%s) - start )) s)"; }

echo "== forward sweep: $queries test images noised at each t of $grid"
"$pspc" sweep forward "${engine[@]}" "${methods[@]}" --grid "$grid" --queries "$queries" --from test --seed 1 \
    --out "$out/forward"
elapsed
echo "== reverse sweep: $trajectories Heun trajectories of the network"
"$pspc" sweep reverse "${engine[@]}" "${methods[@]}" --steps "$steps" --trajectories "$trajectories" --seed 1 \
    --out "$out/reverse"
elapsed
echo "== calibration of each method's window per t on both sweeps"
"$pspc" calibrate "$out/forward" "$out/reverse" --on both --out "$out/calibration"
cal="$out/calibration"
compare=(network empirical "pspc-square=$cal/patch-schedule.json" "ls=$cal/ls-schedule.json"
    "els=$cal/els-schedule.json")
for solver in euler heun; do
    echo "== sample comparison ($solver, $steps steps): $samples samples per method from shared noise"
    "$pspc" sample --compare "${engine[@]}" --methods "$(IFS=,; echo "${compare[*]}")" --solver "$solver" \
        --steps "$steps" --count "$samples" --seed 0 --out "$out/samples-$solver"
    elapsed
done
echo "== report"
"$pspc" report "$out/forward" "$out/reverse" "$out/calibration" "$out/samples-euler" "$out/samples-heun" \
    --out "$out/report"
