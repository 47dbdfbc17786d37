#!/usr/bin/env bash
# The study behind RESULTS.md at the paper's standard: every network at once, intervals of about +-10 % on the key
# ratios. For the named networks: gradient heatmaps from 64 samples per level (each network's own), forward sweeps
# of 128 queries per t from the x-flipped training set and from the test set, a held-out forward set (another
# seed) for the calibration, a reverse sweep of 64 Heun trajectories of the first network, every method (the
# empirical, Gaussian and CFDM denoisers, PSPC-Square and PSPC-Flex with the whole image among the candidates),
# each method computed once and compared with every network (networks.csv: each network against the others too),
# a calibration judged on the held-out set, a sample comparison of 64 samples from shared noise, the report, and
# timings.csv (seconds per step).
#
# Usage: scripts/study.sh [OUT]   (default runs/study). Every step is resumable: run it again with the same OUT.
# Environment:
#   PSPC_STUDY_NETWORKS     NAME=CHECKPOINT,... (default: reference=scripts/reference-network/reference-network.pt
#                           and every scripts/networks/NAME/NAME.pt); the first is the primary: the reference of
#                           mse_to_network and the calibration, the one whose trajectories the reverse sweep follows
#                           and whose heatmaps make the PSPC-Flex masks
#   PSPC_STUDY_QUERIES (128 per t and set), PSPC_STUDY_TRAJECTORIES (64), PSPC_STUDY_HEATMAP_SAMPLES (64 per level),
#   PSPC_STUDY_SAMPLES (64), PSPC_STUDY_GRID (edm:18), PSPC_STUDY_PATCH_SIZES (3,5,7,9,11,15,19,23),
#   PSPC_STUDY_LAMBDAS (0.25,0.5,0.75; the whole image, s = H and lambda = 1, is always a candidate of the
#   calibration), PSPC_STUDY_WORKERS (2 local workers), PSPC_STUDY_CLUSTER (a cluster file instead: the workers
#   hold the ingested shards), PSPC_STUDY_DATA (ingested training set; OUT/fashion-mnist), PSPC_BIN (a pspc binary
#   built elsewhere).
# Cost: the larger run's 12 queries per t took 24 min per forward set on this project's 2 cores, most of it
# PSPC-Flex; at 128 queries that is about 4.3 h per set, so the whole study is a day here (three forward sets,
# 64 trajectories, 64 heatmap samples per level per network) and an hour on 24 cores of workers.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
out="${1:-runs/study}"
queries="${PSPC_STUDY_QUERIES:-128}"
trajectories="${PSPC_STUDY_TRAJECTORIES:-64}"
heatmap_samples="${PSPC_STUDY_HEATMAP_SAMPLES:-64}"
samples="${PSPC_STUDY_SAMPLES:-64}"
grid="${PSPC_STUDY_GRID:-edm:18}"
sizes="${PSPC_STUDY_PATCH_SIZES:-3,5,7,9,11,15,19,23}"
lambdas="${PSPC_STUDY_LAMBDAS:-0.25,0.5,0.75}"
workers="${PSPC_STUDY_WORKERS:-2}"
data="${PSPC_STUDY_DATA:-$out/fashion-mnist}"
source scripts/study-common.sh
steps="$(study_grid_steps study.sh "$grid")"

networks="${PSPC_STUDY_NETWORKS:-}"
if [[ -z "$networks" ]]; then
    networks="reference=scripts/reference-network/reference-network.pt"
    for export in scripts/networks/*/*.pt; do
        name="$(basename "$(dirname "$export")")"
        [[ "$(basename "$export")" == "$name.pt" ]] && networks+=",$name=$export"
    done
fi
IFS=, read -r -a entries <<< "$networks"
network_args=()
for entry in "${entries[@]}"; do
    [[ "$entry" == *=* && -f "${entry#*=}" ]] || { echo "study.sh: $entry is not NAME=CHECKPOINT of a file" >&2; exit 2; }
    network_args+=(--local-network "$entry")
done
primary="${entries[0]%%=*}"
study_prepare study.sh "$out"
if [[ -z "${PSPC_STUDY_CLUSTER:-}" ]] && ! "$pspc" info --data "$data" >/dev/null 2>&1; then
    echo "== ingest Fashion-MNIST (60000 training images, 4 shards)"
    "$pspc" ingest --source fashion-mnist:train --shards 4 --out "$data"
fi
if [[ -n "${PSPC_STUDY_CLUSTER:-}" ]]; then
    engine=(--cluster "$PSPC_STUDY_CLUSTER" "${network_args[@]}")
else
    engine=(--data "$data" --local-workers "$workers" "${network_args[@]}")
fi

echo "study of ${#entries[@]} network(s): ${entries[*]} (primary $primary) in $out"
step heatmaps "$pspc" heatmap "${network_args[@]}" --grid "$grid" --samples "$heatmap_samples" --seed 0 \
    --out "$out/heatmaps"
if (( ${#entries[@]} > 1 )); then heatmaps="$out/heatmaps/$primary/heatmaps.npy"; else heatmaps="$out/heatmaps/heatmaps.npy"; fi

methods=(--methods empirical,gaussian,cfdm,pspc-square,pspc-flex --patch-sizes "$sizes" --lambdas "$lambdas"
    --heatmaps "$heatmaps")
step forward-train "$pspc" sweep forward "${engine[@]}" "${methods[@]}" --grid "$grid" --queries "$queries" \
    --from train --seed 1 --out "$out/forward-train"
step forward-test "$pspc" sweep forward "${engine[@]}" "${methods[@]}" --grid "$grid" --queries "$queries" \
    --from test --seed 1 --out "$out/forward-test"
step forward-held-out "$pspc" sweep forward "${engine[@]}" "${methods[@]}" --grid "$grid" --queries "$queries" \
    --from train --seed 2 --out "$out/forward-held-out"
step reverse "$pspc" sweep reverse "${engine[@]}" "${methods[@]}" --steps "$steps" --trajectories "$trajectories" \
    --seed 1 --out "$out/reverse"
step calibration "$pspc" calibrate "$out/forward-train" "$out/reverse" --on both \
    --held-out "$out/forward-held-out" --out "$out/calibration"
step samples "$pspc" sample --compare "${engine[@]}" --methods network,empirical,gaussian,pspc-square,pspc-flex \
    --schedule "$out/calibration/patch-schedule.json" --lambda-schedule "$out/calibration/lambda-schedule.json" \
    --heatmaps "$heatmaps" --count "$samples" --seed 0 --out "$out/samples"
step report "$pspc" report "$out/heatmaps" "$out/forward-train" "$out/forward-test" "$out/reverse" \
    "$out/calibration" "$out/samples" --out "$out/report"
echo "timings: $timings"
