#!/usr/bin/env bash
# pspc serve speed on this machine (a benchmark, not a test): ingests PSPC_BENCH_IMAGES Fashion-MNIST training
# images, starts `pspc serve` on them and prints the throughput of PSPC_BENCH_QUERIES requests of one query each
# against one request of all of them, through the Python client (pspc_net.bench_serve).
# Environment: PSPC_BIN (.build/release/pspc), PSPC_BENCH_IMAGES (10000), PSPC_BENCH_QUERIES (1000),
# PSPC_BENCH_METHOD (empirical), PSPC_BENCH_THREADS (all cores), PSPC_BENCH_WORKERS (0: in process, N: N local
# workers), PSPC_VENV (<repo>/.venv).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."

pspc="${PSPC_BIN:-.build/release/pspc}"
if [[ ! -x "$pspc" ]]; then
    echo "error: no pspc binary at $pspc (swift build -c release, or set PSPC_BIN)" >&2
    exit 1
fi
"$here/setup-python.sh" >/dev/null
py="${PSPC_VENV:-$PWD/.venv}/bin/python"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$pspc" ingest --source fashion-mnist:train --limit "${PSPC_BENCH_IMAGES:-10000}" --out "$tmp/data" >/dev/null 2>&1
threads=()
if [[ -n "${PSPC_BENCH_THREADS:-}" ]]; then threads=(--threads "$PSPC_BENCH_THREADS"); fi
"$py" -m pspc_net.bench_serve --pspc "$pspc" --data "$tmp/data" --local-workers "${PSPC_BENCH_WORKERS:-0}" \
    "${threads[@]}" --queries "${PSPC_BENCH_QUERIES:-1000}" --method "${PSPC_BENCH_METHOD:-empirical}"
