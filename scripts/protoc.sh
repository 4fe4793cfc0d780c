#!/usr/bin/env bash
# Regenerate splitlearn_pb2.py, splitlearn_pb2.pyi and splitlearn_pb2_grpc.py from splitlearn.proto.
#
# Usage: scripts/protoc.sh [OUT_ROOT]   (default: src; files land in OUT_ROOT/splitlearn/transport/proto/)
# Needs grpcio-tools; set PYTHON to pick the interpreter (default: python3).
# The proto is compiled from src/ with its package path, so the gRPC module imports
# `from splitlearn.transport.proto import splitlearn_pb2` and works inside the package.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$(mkdir -p "${1:-$root/src}" && cd "${1:-$root/src}" && pwd)"
mkdir -p "$out/splitlearn/transport/proto"
"${PYTHON:-python3}" -m grpc_tools.protoc -I "$root/src" \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  "$root/src/splitlearn/transport/proto/splitlearn.proto"
