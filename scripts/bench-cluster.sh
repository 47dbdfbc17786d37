#!/usr/bin/env bash
# Cluster overhead on this machine (a benchmark, not a test): the engine benchmark of scripts/bench.sh run
# in-process and through 2 local worker processes on loopback, with the throughput ratio and the bytes on
# the wire per query. Extra arguments go to pspc-bench (see scripts/bench.sh).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
scripts/setup.sh >/dev/null
swift build -c release --product pspc >/dev/null
swift build -c release --product pspc-bench >/dev/null
exec .build/release/pspc-bench --baseline-queries 2 --cluster-workers 2 "$@"
