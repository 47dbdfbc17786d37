#!/usr/bin/env bash
# Installs what pspc needs on a Debian machine, idempotently: the native libraries (OpenBLAS, zstd, zlib),
# pkg-config, the embedded Fashion-MNIST dataset, and iproute2 (ip, tc: the namespace hosts of the cluster tests). Runs apt-get only when something is missing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."

packages=(libopenblas-dev libzstd-dev zlib1g-dev pkg-config dataset-fashion-mnist python3-venv iproute2)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "setup: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The data tests build reference fixtures with python3 and numpy (an independent writer of .npy files).
if ! python3 -c "import numpy" 2>/dev/null; then
    echo "setup: installing numpy for python3"
    python3 -m pip install --quiet numpy
fi

if ! command -v swift >/dev/null; then
    echo "setup: swift (6.0 or later) is not on PATH; install the toolchain from swift.org" >&2
    exit 1
fi
echo "setup: native dependencies and Fashion-MNIST present"
