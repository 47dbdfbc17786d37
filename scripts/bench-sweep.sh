#!/usr/bin/env bash
# The sweep's scale check: the same forward sweep computed in this process (all cores) and through an embedded
# local cluster of 2 worker processes (one core each), side by side; prints both throughputs (queries x methods
# per second of engine time) and their ratio. Usage: scripts/bench-sweep.sh [DATA_DIR] (default: ingests the
# 60k Fashion-MNIST training images into runs/bench-sweep/data). Sizes: PSPC_BENCH_QUERIES (16),
# PSPC_BENCH_GRID (edm:6).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
scripts/setup.sh >/dev/null
scripts/setup-python.sh >/dev/null
swift build -c release --product pspc >/dev/null
pspc=.build/release/pspc
work=runs/bench-sweep
data="${1:-$work/data}"
if ! "$pspc" info --data "$data" >/dev/null 2>&1; then
    "$pspc" ingest --source fashion-mnist:train --shards 4 --out "$data"
fi
network="${PSPC_NETWORK:-scripts/reference-network/reference-network.pt}"
common=(--data "$data" --local-network "$network" --methods empirical,gaussian,pspc-square --patch-sizes 3,7,15
    --grid "${PSPC_BENCH_GRID:-edm:6}" --queries "${PSPC_BENCH_QUERIES:-16}" --seed 1)
rate() { sed -n 's/^throughput: \([0-9.]*\) .*/\1/p' "$1"; }
mkdir -p "$work"
for mode in in-process local-workers; do
    rm -rf "$work/$mode"
done
"$pspc" sweep forward "${common[@]}" --threads 2 --out "$work/in-process" 2> "$work/in-process.log"
"$pspc" sweep forward "${common[@]}" --local-workers 2 --threads 1 --out "$work/local-workers" 2> "$work/local-workers.log"
a=$(rate "$work/in-process.log")
b=$(rate "$work/local-workers.log")
cmp -s "$work/in-process/results.csv" "$work/local-workers/results.csv" && same="identical" || same="DIFFERENT"
echo "forward sweep, $(nproc) cores, $(grep -c '' "$work/in-process/results.csv") result rows:"
echo "  in-process (2 threads):        $a queries x methods / s"
echo "  2 local workers (1 thread each): $b queries x methods / s"
echo "  ratio (workers / in-process):  $(echo "scale=3; $b / $a" | bc)"
echo "  results.csv of the two runs:   $same"
