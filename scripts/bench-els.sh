#!/usr/bin/env bash
# LS / ELS speed on this machine (a benchmark, not a test): `pspc denoise --method els|ls --patch-size P` on the
# first N Fashion-MNIST training images (embedded dataset, no x-flip) next to a float64 PyTorch peer
# (scripts/pspc_net/els_peer.py: F.unfold windows; ELS distances by torch.addmm per padding class with a running
# log-sum-exp, LS by exact differences; chunked to fit memory), one after the other on the same cores and the
# same test queries (z = x0 + t eps from `pspc queries`). Prints per-query times, the ratio peer / pspc and the
# largest difference of the two outputs (pspc writes float32 .npy files, so ~1e-7 is agreement).
# Environment: PSPC_BENCH_TRAIN (10000), PSPC_BENCH_QUERIES (ELS queries, 8: pspc takes ELS queries eight at a time), PSPC_BENCH_LS_QUERIES (64),
# PSPC_BENCH_T (1.09), PSPC_BENCH_PATCH (3), PSPC_BENCH_THREADS (every core), PSPC_BENCH_METHODS ("els ls"),
# PSPC_BIN (a pspc binary to time; default: builds the release one), PSPC_VENV (<repo>/.venv).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."

train="${PSPC_BENCH_TRAIN:-10000}"
els_queries="${PSPC_BENCH_QUERIES:-8}"
ls_queries="${PSPC_BENCH_LS_QUERIES:-64}"
t="${PSPC_BENCH_T:-1.09}"
patch="${PSPC_BENCH_PATCH:-3}"
threads="${PSPC_BENCH_THREADS:-$(nproc)}"
methods="${PSPC_BENCH_METHODS:-els ls}"
scripts/setup.sh >/dev/null
"$here/setup-python.sh" >/dev/null
py="${PSPC_VENV:-$PWD/.venv}/bin/python"
pspc="${PSPC_BIN:-}"
if [[ -z "$pspc" ]]; then
    swift build -c release --product pspc >/dev/null
    pspc=.build/release/pspc
fi

work="runs/bench-els"
mkdir -p "$work"
data="$work/data-$train"
if ! "$pspc" info --data "$data" >/dev/null 2>&1; then
    "$pspc" ingest --source fashion-mnist:train --limit "$train" --out "$data" >/dev/null
fi
max_queries=$((els_queries > ls_queries ? els_queries : ls_queries))
"$pspc" queries --source fashion-mnist:test --t "$t" --count "$max_queries" --seed 1 --out "$work/q" >/dev/null

now() { date +%s.%N; }
echo "LS / ELS, N = $train Fashion-MNIST (no x-flip), P = $patch, t = $t, $threads threads, $(nproc) cores"
for method in $methods; do
    count=$([[ "$method" == els ]] && echo "$els_queries" || echo "$ls_queries")
    "$py" -c "import numpy as np; z = np.load('$work/q/z.npy'); np.save('$work/z-$count.npy', z[:$count])"
    start=$(now)
    "$pspc" denoise --data "$data" --xflip off --threads "$threads" --method "$method" --patch-size "$patch" \
        --t "$t" --input "$work/z-$count.npy" --output "$work/$method.npy" 2>/dev/null
    ours=$(echo "($(now) - $start) / $count" | bc -l)
    peer_log="$work/peer-$method.log"
    "$py" "$here/pspc_net/els_peer.py" --train /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz \
        --limit "$train" --queries "$work/z-$count.npy" --t "$t" --patch-size "$patch" --method "$method" \
        --threads "$threads" --compare "$work/$method.npy" | tee "$peer_log" | sed 's/^/  /'
    theirs=$(sed -n "s/^peer $method: \([0-9.]*\) s per query.*/\1/p" "$peer_log")
    printf '%s: pspc %.4f s per query (%d queries, process start and data load included), peer %.4f s, ratio peer / pspc %.1fx\n' \
        "$method" "$ours" "$count" "$theirs" "$(echo "$theirs / $ours" | bc -l)"
done
