#!/usr/bin/env bash
# The main job (until the cluster and network issues land): installs what is missing, builds in release
# mode, ingests the full Fashion-MNIST training set, denoises test-set queries with every method at a few
# noise levels, draws PSPC samples, and writes PNGs to look at. Output directory: $1 (default runs/demo).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
out="${1:-runs/demo}"
mkdir -p "$out"

scripts/setup.sh
echo "== build (release)"
swift build -c release --product pspc
pspc=.build/release/pspc
"$pspc" info

data="$out/fashion-mnist"
if ! "$pspc" info --data "$data" >/dev/null 2>&1; then
    echo "== ingest Fashion-MNIST (60000 training images, 4 shards)"
    "$pspc" ingest --source fashion-mnist:train --shards 4 --out "$data"
fi

echo "== denoise 8 test images at t = 0.3, 1.09, 3.26 with every method (x-flip on)"
for t in 0.3 1.09 3.26; do
    q="$out/t$t"
    "$pspc" queries --source fashion-mnist:test --t "$t" --count 8 --seed 0 --out "$q"
    rows=("$q/x0.npy" "$q/z.npy")
    for method in empirical gaussian "pspc-square --patch-size 5" "pspc-square --patch-size 11" "cfdm --smoothing 0.1 --copies 4"; do
        name=$(echo "$method" | tr ' ' '_' | tr -d '-')
        # shellcheck disable=SC2086
        "$pspc" denoise --data "$data" --method $method --t "$t" --input "$q/z.npy" --output "$q/$name.npy"
        rows+=("$q/$name.npy")
    done
    "$pspc" grid "${rows[@]}" --out "$out/denoised-t$t.png"
done

echo "== samples: 16 Euler PF-ODE samples (18 steps) with the empirical denoiser and PSPC-Square"
"$pspc" sample --data "$data" --method empirical --count 16 --seed 0 --out "$out/samples-empirical"
# The paper's CIFAR-10 schedule shifted onto 28x28 images (sizes above 28 mean the whole image).
"$pspc" sample --data "$data" --method pspc-square --schedule cifar10 --count 16 --seed 0 --out "$out/samples-pspc-square"

echo
echo "rows of denoised-t*.png: clean x0, noisy z, empirical, gaussian, pspc-square s=5, pspc-square s=11, cfdm"
echo "results in $out:"
ls "$out"/*.png "$out"/samples-*/samples.png
