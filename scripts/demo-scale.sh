#!/usr/bin/env bash
# The paper's data sizes end to end on this machine (a demonstration, not a test; needs root for the hosts):
#   1. `pspc synthesize` a 3x64x64 dataset of N images (default 200,000: 2.46 GB of pixels) as an EDM zip;
#   2. `pspc ingest` it streaming, with its peak resident memory measured (/usr/bin/time);
#   3. 4 namespace hosts (scripts/netns.sh), one worker on each at its own address (placement i/4, replication 2);
#   4. every method (empirical, pspc-square, gaussian, cfdm, pspc-flex) denoises the same queries through them,
#      and pspc-square once more in this process: the outputs must be identical;
#   5. gradient heatmaps of a small 3x64x64 convolutional test network through the endpoint (`pspc heatmap
#      --data`: 64x64 maps are 134 MB of float64 per level, so they arrive in ranges), then pspc-flex reads them.
# Usage: scripts/demo-scale.sh [--count N] [--queries B] [--methods LIST] [--work DIR] [--keep]
# (The Gaussian baseline's moments cost N (3 x 64 x 64)^2: about an hour of this machine's two cores at N = 200,000.)
# Everything lands in WORK (default /tmp/pspc-demo-scale); summary.json holds the figures.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
count=200000 queries=4 work=/tmp/pspc-demo-scale keep=0 methods=empirical,pspc-square,gaussian,cfdm,pspc-flex
while [ $# -gt 0 ]; do
    case "$1" in
    --count) count="$2"; shift 2 ;;
    --queries) queries="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --methods) methods="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "usage: $0 [--count N] [--queries B] [--methods LIST] [--work DIR] [--keep]" >&2; exit 2 ;;
    esac
done
cd "$root"
scripts/setup.sh >/dev/null
scripts/setup-python.sh >/dev/null
swift build -c release --product pspc >/dev/null
pspc="$root/.build/release/pspc"
py="${PSPC_VENV:-$root/.venv}/bin/python"
mkdir -p "$work"
workers=()
cleanup() {
    for pid in "${workers[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
    scripts/netns.sh down >/dev/null 2>&1 || true
    if [ "$keep" = 0 ]; then rm -rf "$work/data" "$work/images.zip"; fi
}
trap cleanup EXIT
say() { echo "== $*"; }
seconds() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(seconds)" 'BEGIN { printf "%.1f", b - a }'; }

zip="$work/images.zip" data="$work/data"
if [ ! -f "$data/manifest.json" ]; then
    say "synthesize $count images of 3x64x64 as an EDM zip"
    start=$(seconds)
    /usr/bin/time -f "%M" -o "$work/synth.rss" "$pspc" synthesize --shape 3x64x64 --count "$count" --seed 1 \
        --format zip --out "$zip"
    echo "   $(elapsed "$start") s, peak RSS $(($(cat "$work/synth.rss") / 1024)) MiB, $(du -m "$zip" | cut -f1) MiB zip"
    say "ingest it streaming into 8 shards"
    start=$(seconds)
    /usr/bin/time -f "%M" -o "$work/ingest.rss" "$pspc" ingest --source "edm-zip:$zip" --out "$data" --shards 8
    ingest_s=$(elapsed "$start")
    echo "   $ingest_s s, peak RSS $(($(cat "$work/ingest.rss") / 1024)) MiB"
    rm -f "$zip"
fi
ingest_rss_mib=$(($(cat "$work/ingest.rss" 2>/dev/null || echo 0) / 1024))

say "queries: $queries held-out images at t = 1.09"
"$pspc" synthesize --shape 3x64x64 --count "$queries" --seed 99 --format npy --out "$work/held.npy" >/dev/null
"$pspc" queries --source "npy:$work/held.npy" --t 1.09 --count "$queries" --out "$work/q" >/dev/null

say "a small 3x64x64 convolutional test network and its heatmaps at t = 1.09 (x0 from the dataset)"
"$py" - "$work/net.ts" <<'PYEOF'
import sys, torch
torch.manual_seed(0)
class Eps(torch.nn.Module):
    """A VP epsilon network of two 3x3 convolutions: each output pixel sees its 5x5 neighbourhood."""
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.b = torch.nn.Conv2d(8, 3, 3, padding=1)
    def forward(self, x, timestep):
        return self.b(torch.tanh(self.a(x)))
torch.jit.save(torch.jit.trace(Eps().eval(), (torch.zeros(2, 3, 8, 8), torch.zeros(2))), sys.argv[1])
PYEOF
start=$(seconds)
/usr/bin/time -f "%M" -o "$work/heatmap.rss" "$pspc" heatmap --local-network "$work/net.ts" \
    --network-adapter vp-eps --network-shape 3,64,64 --data "$data" --xflip off --grid 1.09 --samples 2 \
    --out "$work/heatmaps.npy"
heatmap_s=$(elapsed "$start")
echo "   $heatmap_s s, peak RSS $(($(cat "$work/heatmap.rss") / 1024)) MiB, $(du -m "$work/heatmaps.npy" | cut -f1) MiB of maps"

say "4 namespace hosts, one worker each (placement i/4, replication 2)"
scripts/netns.sh up 4
head -c 32 /dev/urandom | base64 >"$work/token"
addresses=()
for i in 1 2 3 4; do
    ip netns exec "pspc-h$i" "$pspc" worker --listen "10.77.$i.2:7070" --data "$data" --placement "$((i - 1))/4/2" \
        --token-file "$work/token" --xflip off --threads 1 >"$work/worker-$i.out" 2>"$work/worker-$i.err" &
    workers+=($!)
    addresses+=("10.77.$i.2:7070")
done
for i in 1 2 3 4; do
    for _ in $(seq 1 600); do grep -q "listening on" "$work/worker-$i.out" 2>/dev/null && break; sleep 0.5; done
    grep -q "listening on" "$work/worker-$i.out" || { echo "worker $i did not start" >&2; cat "$work/worker-$i.err" >&2; exit 1; }
done
printf 'workers: [%s]\ntokenFile: token\ndeadlineSeconds: 3600\n' "$(IFS=,; echo "${addresses[*]}")" >"$work/cluster.yaml"

declare -A args=(
    [empirical]="" [pspc-square]="--patch-size 7" [gaussian]="" [cfdm]="--smoothing 0.1 --copies 4"
    [pspc-flex]="--heatmaps $work/heatmaps.npy --lambda 0.5"
)
summary="{\"count\": $count, \"queries\": $queries, \"ingest_peak_rss_mib\": $ingest_rss_mib, \"heatmap_s\": $heatmap_s, \"methods\": {"
sep=""
for method in ${methods//,/ }; do
    say "$method through the 4 hosts"
    start=$(seconds)
    # shellcheck disable=SC2086
    "$pspc" denoise --cluster "$work/cluster.yaml" --xflip off --method "$method" ${args[$method]} --t 1.09 \
        --input "$work/q/z.npy" --output "$work/out-$method.npy" --log-level info 2>"$work/denoise-$method.err"
    took=$(elapsed "$start")
    grep -E "wrote|wire traffic|pspc-flex" "$work/denoise-$method.err" | sed 's/^/   /'
    summary+="$sep\"$method\": {\"seconds\": $took}"
    sep=", "
done
summary+="}"
for i in 1 2 3 4; do
    hwm=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/${workers[$((i - 1))]}/status" 2>/dev/null || echo 0)
    echo "   worker $i peak RSS $hwm MiB"
    summary+=", \"worker_${i}_peak_rss_mib\": $hwm"
done

say "pspc-square in this process: identical to the cluster's output?"
"$pspc" denoise --data "$data" --xflip off --method pspc-square --patch-size 7 --t 1.09 --input "$work/q/z.npy" \
    --output "$work/out-local.npy" 2>/dev/null
if cmp -s "$work/out-local.npy" "$work/out-pspc-square.npy"; then same=true; else same=false; fi
echo "   identical: $same"
summary+=", \"square_identical_to_in_process\": $same}"
echo "$summary" | "$py" -m json.tool >"$work/summary.json"
say "summary in $work/summary.json"
cat "$work/summary.json"
[ "$same" = true ]
