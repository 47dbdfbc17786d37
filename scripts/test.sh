#!/usr/bin/env bash
# Every test of the project: installs what is missing, builds in release mode (the exactness tests run a
# literal float64 reference that is too slow in a debug build), runs the Swift tests (the multi-process
# cluster tests included), the Python tests, then the deploy launchers against real Slurm and sshd.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."

scripts/setup.sh
scripts/setup-python.sh
# The namespace hosts of the cluster tests are removed whatever happens to the run (they also remove earlier
# ones when they start).
trap 'scripts/netns.sh down >/dev/null 2>&1 || true' EXIT

echo "== swift build (release, with tests)"
swift build -c release --build-tests
echo "== swift test"
# Not --parallel: it hides XCTest's closing "Executed N tests" line.
# Per-test "started"/"passed" lines go to the log only; failures, measurements and summaries are shown.
set +e
swift test -c release --skip-build --disable-swift-testing 2>&1 | tee .build/swift-test.log | grep -vE "^Test (Case|Suite) '.*' (started|passed)"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
    echo "swift test failed (exit $status); full log in .build/swift-test.log" >&2
    exit "$status"
fi

swift_summary=$(grep -E "Executed [0-9]+ tests?, with [0-9]+ failures?" .build/swift-test.log | tail -1)
swift_count=$(echo "$swift_summary" | sed -E 's/.*Executed ([0-9]+) tests?.*/\1/')

echo "== python tests"
"${PSPC_VENV:-.venv}/bin/python" -m pytest -q scripts/pspc_net/tests 2>&1 | tee .build/pytest.log
python_count=$(grep -oE "[0-9]+ passed" .build/pytest.log | tail -1 | grep -oE "[0-9]+")

echo "== deploy launchers (local, Slurm, ssh, Kubernetes schemas, systemd)"
PSPC_BIN="$PWD/.build/release/pspc" scripts/test-deploy.sh 2>&1 | tee .build/test-deploy.log
deploy_count=$(grep -oE "^[0-9]+ passed, 0 failed" .build/test-deploy.log | tail -1 | grep -oE "^[0-9]+")

echo "swift: $swift_summary"
echo "total: $((swift_count + python_count + deploy_count)) passed, 0 failed"
