#!/usr/bin/env bash
# Generates the wire protocol bindings from protos/pspc/v1/pspc.proto:
#   Sources/PSPCWire/Generated/pspc.pb.swift   (protoc-gen-swift, public visibility)
#   scripts/pspc_net/proto/pspc_pb2.py         (protoc --python_out)
# Installs Debian's protobuf-compiler when protoc is missing, and builds protoc-gen-swift once
# from the swift-protobuf version this package resolves (cached in .build-protoc/, keyed by its
# revision). The generated files are committed and never edited by hand.
#
# Usage: scripts/gen-protos.sh            regenerate in place
#        scripts/gen-protos.sh --check    regenerate into a temporary folder and fail if the
#                                         committed files differ
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
PROTO_ROOT="$REPO_ROOT/protos"
PROTO_FILE="pspc/v1/pspc.proto"
SWIFT_OUT="$REPO_ROOT/Sources/PSPCWire/Generated"
PY_OUT="$REPO_ROOT/scripts/pspc_net/proto"
TOOL_DIR="$REPO_ROOT/.build-protoc"

check=false
case "${1:-}" in
    "") ;;
    --check) check=true ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

# protoc from Debian.
if ! command -v protoc >/dev/null 2>&1; then
    echo "gen-protos: installing protobuf-compiler"
    as_root=()
    if [[ "$(id -u)" -ne 0 ]]; then as_root=(sudo); fi
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq protobuf-compiler >/dev/null
fi

# protoc-gen-swift, built from the swift-protobuf checkout the package resolves.
plugin="${PROTOC_GEN_SWIFT:-}"
if [[ -z "$plugin" ]]; then
    checkout="$REPO_ROOT/.build/checkouts/swift-protobuf"
    if [[ ! -d "$checkout" ]]; then
        (cd "$REPO_ROOT" && swift package resolve)
    fi
    revision="$(git -C "$checkout" rev-parse HEAD)"
    version="$(git -C "$checkout" describe --tags --exact-match 2>/dev/null || echo "$revision")"
    plugin="$TOOL_DIR/bin/protoc-gen-swift"
    if [[ ! -x "$plugin" || "$(cat "$TOOL_DIR/bin/revision" 2>/dev/null)" != "$revision" ]]; then
        echo "gen-protos: building protoc-gen-swift $version (once)"
        swift build -c release --package-path "$checkout" --scratch-path "$TOOL_DIR/scratch" \
            --product protoc-gen-swift
        mkdir -p "$TOOL_DIR/bin"
        cp "$TOOL_DIR/scratch/release/protoc-gen-swift" "$plugin"
        echo "$revision" > "$TOOL_DIR/bin/revision"
    fi
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/swift" "$work/python"

protoc -I "$PROTO_ROOT" \
    --plugin=protoc-gen-swift="$plugin" \
    --swift_out="$work/swift" \
    --swift_opt=Visibility=Public \
    --swift_opt=FileNaming=DropPath \
    --python_out="$work/python" \
    "$PROTO_ROOT/$PROTO_FILE"

swift_file="$work/swift/pspc.pb.swift"
py_file="$work/python/pspc/v1/pspc_pb2.py"
init_file="$work/python/__init__.py"
echo '"""Generated protobuf bindings of protos/pspc/v1/pspc.proto (scripts/gen-protos.sh)."""' > "$init_file"

if $check; then
    status=0
    cmp -s "$swift_file" "$SWIFT_OUT/pspc.pb.swift" || { echo "gen-protos: $SWIFT_OUT/pspc.pb.swift is stale" >&2; status=1; }
    cmp -s "$py_file" "$PY_OUT/pspc_pb2.py" || { echo "gen-protos: $PY_OUT/pspc_pb2.py is stale" >&2; status=1; }
    cmp -s "$init_file" "$PY_OUT/__init__.py" || { echo "gen-protos: $PY_OUT/__init__.py is stale" >&2; status=1; }
    if [[ $status -eq 0 ]]; then echo "gen-protos: generated files are up to date"; fi
    exit $status
fi

mkdir -p "$SWIFT_OUT" "$PY_OUT"
cp "$swift_file" "$SWIFT_OUT/pspc.pb.swift"
cp "$py_file" "$PY_OUT/pspc_pb2.py"
cp "$init_file" "$PY_OUT/__init__.py"
echo "gen-protos: wrote ${SWIFT_OUT#"$REPO_ROOT"/}/pspc.pb.swift and ${PY_OUT#"$REPO_ROOT"/}/pspc_pb2.py"
