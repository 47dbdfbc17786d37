#!/usr/bin/env bash
# Creates the Python environment for the reference network (scripts/pspc_net) and installs what
# is missing: torch (CPU build), numpy, protobuf, zstandard, pytest, matplotlib (the model card's
# figures). Idempotent; a fast no-op when complete.
# The venv lives at <repo>/.venv unless PSPC_VENV names another path.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
VENV="${PSPC_VENV:-$REPO_ROOT/.venv}"
PY="$VENV/bin/python"

if [[ ! -x "$PY" ]]; then
    echo "setup-python: creating venv at $VENV"
    python3 -m venv "$VENV"
fi

# One interpreter start imports every package and names those that fail to import.
missing_packages() {
    "$PY" - <<'PYEOF'
import importlib
for pkg, mod in [("torch", "torch"), ("numpy", "numpy"), ("protobuf", "google.protobuf"), ("zstandard", "zstandard"),
                 ("pytest", "pytest"), ("matplotlib", "matplotlib")]:
    try:
        importlib.import_module(mod)
    except Exception:
        print(pkg)
PYEOF
}

missing="$(missing_packages)"
if [[ "$missing" == *torch* ]]; then
    echo "setup-python: installing torch"
    # This machine carries torch==2.13.0+cpu in a local wheel folder (pip.conf find-links);
    # elsewhere take whatever torch the index offers.
    "$PY" -m pip install --quiet torch==2.13.0+cpu || "$PY" -m pip install --quiet torch
fi
others=()
for pkg in numpy protobuf zstandard pytest matplotlib; do
    if [[ "$missing" == *"$pkg"* ]]; then
        others+=("$pkg")
    fi
done
if ((${#others[@]} > 0)); then
    echo "setup-python: installing ${others[*]}"
    "$PY" -m pip install --quiet "${others[@]}"
fi

if [[ -n "$missing" ]]; then
    "$PY" -c "import torch, numpy, google.protobuf, zstandard, pytest, matplotlib" \
        || { echo "setup-python: environment at $VENV is incomplete" >&2; exit 1; }
fi
