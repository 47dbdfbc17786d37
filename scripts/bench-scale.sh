#!/usr/bin/env bash
# The scale benchmark (not a test): per-query time of every method against N (10k, 40k, 120k) and shape
# (1x28x28, 3x32x32, 3x64x64); the skilled float64 PyTorch peer side by side on 3x32x32, N = 40k; memory per
# worker, bytes on the wire and the coordinator's overhead through 1, 2 and 4 namespace hosts (needs root);
# throughput with 10 and 50 ms of added round trip. Data is synthesized and kept in --work
# (default /tmp/pspc-bench-scale); results land in WORK/results/results.{json,csv}. Arguments go to
# scripts/pspc_net/bench_scale.py (--sections table,peer,cluster,latency --shapes ... --sizes ... --methods ...).
# The whole default run takes hours on a 2-core machine; pick sections and sizes for a shorter one.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
scripts/setup.sh >/dev/null
scripts/setup-python.sh >/dev/null
swift build -c release --product pspc >/dev/null
trap 'scripts/netns.sh down >/dev/null 2>&1 || true' EXIT
PYTHONPATH=scripts exec "${PSPC_VENV:-.venv}/bin/python" -m pspc_net.bench_scale --pspc .build/release/pspc "$@"
