#!/usr/bin/env bash
# Regenerates embedsvc/v1/*_pb2.py, *_pb2.pyi and *_pb2_grpc.py from protos/embedsvc/v1/*.proto.
# The generated code is committed; CI runs this and fails on any diff (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python}"
out=embedsvc/v1
rm -f "$out"/*_pb2.py "$out"/*_pb2.pyi "$out"/*_pb2_grpc.py
"$python" -m grpc_tools.protoc -I protos -I third_party/protos --python_out=. --pyi_out=. --grpc_python_out=. \
  protos/embedsvc/v1/*.proto
