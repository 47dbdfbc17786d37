#!/usr/bin/env bash
# Network endpoint speed on this machine (a benchmark, not a test): exports the reference network's
# current EMA checkpoint to a temporary file (a random-weight "small" network of the same shape when no
# training checkpoint exists: the speed is the same), starts `python -m pspc_net.serve` on a free port,
# and prints the images/s of D(z, t) through the protocol from a Python client next to calling the
# network directly in the client's process.
# Environment: PSPC_BENCH_BATCH (256), PSPC_BENCH_REPEATS (3), PSPC_BENCH_THREADS (1: torch threads on
# each side), PSPC_BENCH_DEVICE (cpu), PSPC_VENV (<repo>/.venv).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."

batch="${PSPC_BENCH_BATCH:-256}"
repeats="${PSPC_BENCH_REPEATS:-3}"
threads="${PSPC_BENCH_THREADS:-1}"
device="${PSPC_BENCH_DEVICE:-cpu}"
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

if "$py" scripts/train_reference_network.py --export "$tmp/ref.pt" >"$tmp/export.log" 2>&1; then
    echo "network: $(tail -1 "$tmp/export.log" | sed 's/^[0-9-]* [0-9:]* //')"
else
    echo "network: no training checkpoint to export; a random-weight 'small' network of the same shape"
    "$py" - "$tmp/ref.pt" <<'PYEOF'
import sys
import torch
from pspc_net.model import EDMPrecond, save_checkpoint
torch.manual_seed(0)
save_checkpoint(EDMPrecond.from_preset("small"), sys.argv[1])
PYEOF
fi

head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$tmp/token"
"$py" -m pspc_net.serve --checkpoint "$tmp/ref.pt" --listen 127.0.0.1:0 --token-file "$tmp/token" \
    --device "$device" --batch "$batch" --threads "$threads" >"$tmp/server.out" 2>"$tmp/server.log" &
server_pid=$!

port=""
for _ in $(seq 1 600); do
    if line="$(grep -m1 '^pspc network listening on ' "$tmp/server.out" 2>/dev/null)"; then
        port="${line##*:}"
        break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        break
    fi
    sleep 0.2
done
if [[ -z "$port" ]]; then
    echo "error: the endpoint did not start:" >&2
    cat "$tmp/server.log" >&2
    exit 1
fi

"$py" -m pspc_net.bench --checkpoint "$tmp/ref.pt" --endpoint "127.0.0.1:$port" --token-file "$tmp/token" \
    --batch "$batch" --repeats "$repeats" --threads "$threads" --device "$device"
