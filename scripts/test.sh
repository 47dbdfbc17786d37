#!/usr/bin/env bash
# Every test of the project: installs what is missing, builds in release mode (the exactness tests run a
# literal float64 reference that is too slow in a debug build), runs the Swift tests, then the Python tests.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."

scripts/setup.sh
scripts/setup-python.sh

echo "== swift build (release, with tests)"
swift build -c release --build-tests
echo "== swift test"
# Not --parallel: it hides XCTest's closing "Executed N tests" line.
swift test -c release --skip-build 2>&1 | tee .build/swift-test.log | grep -E "^(Test Suite|Test Case .*(failed|error)|.*error:|exactness|sharding|Executed)|XCTAssert" || true
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
    echo "swift test failed (exit $status); full log in .build/swift-test.log" >&2
    exit "$status"
fi

echo "== python tests"
"${PSPC_VENV:-.venv}/bin/python" -m pytest -q scripts/pspc_net/tests
