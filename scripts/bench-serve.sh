#!/usr/bin/env bash
# pspc serve speed on this machine (a benchmark, not a test): ingests PSPC_BENCH_IMAGES Fashion-MNIST training
# images, starts `pspc serve --data` on a free port and prints the throughput of PSPC_BENCH_QUERIES requests of
# one query each against one request of all of them, through the Python client (pspc_net.bench_serve).
# Environment: PSPC_BIN (.build/release/pspc), PSPC_BENCH_IMAGES (10000), PSPC_BENCH_QUERIES (1000),
# PSPC_BENCH_METHOD (empirical), PSPC_BENCH_THREADS (all cores), PSPC_BENCH_WORKERS (0: in process; N: --local-workers N),
# PSPC_VENV (<repo>/.venv).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."

pspc="${PSPC_BIN:-.build/release/pspc}"
images="${PSPC_BENCH_IMAGES:-10000}"
queries="${PSPC_BENCH_QUERIES:-1000}"
method="${PSPC_BENCH_METHOD:-empirical}"
workers="${PSPC_BENCH_WORKERS:-0}"
threads=()
if [[ -n "${PSPC_BENCH_THREADS:-}" ]]; then threads=(--threads "$PSPC_BENCH_THREADS"); fi
if [[ ! -x "$pspc" ]]; then
    echo "error: no pspc binary at $pspc (swift build -c release, or set PSPC_BIN)" >&2
    exit 1
fi
"$here/setup-python.sh" >/dev/null
py="${PSPC_VENV:-$PWD/.venv}/bin/python"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"

tmp="$(mktemp -d)"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid"
        wait "$server_pid" || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

"$pspc" ingest --source fashion-mnist:train --limit "$images" --out "$tmp/data" >/dev/null 2>&1
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$tmp/token"
engine=(--data "$tmp/data")
if [[ "$workers" -gt 0 ]]; then engine+=(--local-workers "$workers"); fi
"$pspc" serve --listen 127.0.0.1:0 --token-file "$tmp/token" "${engine[@]}" "${threads[@]}" \
    >"$tmp/server.out" 2>"$tmp/server.log" &
server_pid=$!

address=""
for _ in $(seq 1 600); do
    if line="$(grep -m1 '^pspc serve listening on ' "$tmp/server.out" 2>/dev/null)"; then
        address="${line##* }"
        break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        break
    fi
    sleep 0.2
done
if [[ -z "$address" ]]; then
    echo "error: pspc serve did not start:" >&2
    cat "$tmp/server.log" >&2
    exit 1
fi

"$py" -m pspc_net.bench_serve --address "$address" --token-file "$tmp/token" --queries "$queries" --method "$method"
