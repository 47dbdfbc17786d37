#!/usr/bin/env bash
# The torch worker (GPU) against the Swift worker (CPU), per method and per query, on Fashion-MNIST (N = 60k
# training images, 120k with x-flip) and on 3x32x32 synthetic colour data (`pspc synthesize`), in one run (a
# benchmark, not a test: scripts/pspc_net/bench_gpu.py). The torch worker runs on cuda when torch sees a GPU,
# else on the CPU, where this only shows that everything runs (smaller N and fewer queries by default then).
# Environment: PSPC_BENCH_TRAIN (Fashion-MNIST images; 60000 with a GPU, 2000 without), PSPC_BENCH_COLOUR
# (synthetic images; 50000 / 1000), PSPC_BENCH_QUERIES (64 / 4), PSPC_BENCH_ELS_QUERIES (8 / 1),
# PSPC_BENCH_METHODS (all), PSPC_BIN (a pspc binary; default: builds the release one), PSPC_VENV (<repo>/.venv).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
scripts/setup.sh >/dev/null
"$here/setup-python.sh" >/dev/null
py="${PSPC_VENV:-$PWD/.venv}/bin/python"
pspc="${PSPC_BIN:-}"
if [[ -z "$pspc" ]]; then
    swift build -c release --product pspc >/dev/null
    pspc=.build/release/pspc
fi
if "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    gpu=1
else
    gpu=0
    echo "bench-gpu: torch sees no GPU: the torch worker runs on the CPU, on small data (set PSPC_BENCH_* to change)"
fi
train="${PSPC_BENCH_TRAIN:-$([ "$gpu" = 1 ] && echo 60000 || echo 2000)}"
colour="${PSPC_BENCH_COLOUR:-$([ "$gpu" = 1 ] && echo 50000 || echo 1000)}"
queries="${PSPC_BENCH_QUERIES:-$([ "$gpu" = 1 ] && echo 64 || echo 4)}"
els_queries="${PSPC_BENCH_ELS_QUERIES:-$([ "$gpu" = 1 ] && echo 8 || echo 1)}"
read -r -a methods <<<"${PSPC_BENCH_METHODS:-empirical pspc-square pspc-flex gaussian ls els}"

work="runs/bench-gpu"
mkdir -p "$work"
fm="$work/fm-$train" col="$work/colour-$colour"
if ! "$pspc" info --data "$fm" >/dev/null 2>&1; then
    "$pspc" ingest --source fashion-mnist:train --limit "$train" --shards 8 --out "$fm" >/dev/null
fi
if ! "$pspc" info --data "$col" >/dev/null 2>&1; then
    "$pspc" synthesize --shape 3x32x32 --count "$colour" --format npy --out "$work/colour-$colour.npy" >/dev/null
    "$pspc" ingest --source "npy:$work/colour-$colour.npy" --shards 8 --out "$col" >/dev/null
    rm -f "$work/colour-$colour.npy" "$work/colour-$colour.npy.labels.npy"
fi
echo "bench-gpu: $(nproc) CPU cores; $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo 'no GPU')"
PYTHONPATH="$here" "$py" -m pspc_net.bench_gpu --pspc "$pspc" --data "$fm" --data "$col" --queries "$queries" \
    --els-queries "$els_queries" --methods "${methods[@]}"
