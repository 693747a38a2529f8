"""A client in another language, built the way the README says: Node.js with @grpc/grpc-js and @grpc/proto-loader
(from the npm registry) loading protos/ with third_party/protos on the include path. Against a real server it makes a
unary call, reads a server stream, and decodes a refusal's google.rpc.Status details (ErrorInfo), and gets what the
Python client gets.

Skipped when node or npm is missing, unless EMBEDSVC_REQUIRE_NODE=1 (.ci/run sets it: CI has both, and npm reaches
the registry)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import grpc

from embedsvc.client import Client
from tests.helpers import assert_refused

REPO = Path(__file__).resolve().parents[2]


def test_a_node_client_built_from_the_protos_calls_streams_and_reads_error_details(node_modules, make_server):
    with make_server() as (_srv, target), Client(target) as python:
        run = subprocess.run(
            ["node", str(Path(__file__).with_name("node_client.js")), str(REPO), target],
            env={**os.environ, "NODE_PATH": str(node_modules / "node_modules")},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        got = json.loads(run.stdout)
        want = python.arithmetic("planted", ["king - man + woman"], top_n=3).results[0]
        assert got["hits"] == [hit.word for hit in want.hits] and got["hits"][0] == "queen"
        assert got["model"] == "planted"
        chunks = list(python.export_words("planted", batch_size=10))
        assert got["chunks"] == len(chunks) > 1  # a real stream: several messages
        assert got["words"] == [word for chunk in chunks for word in chunk.words]
        python_error = assert_refused(
            lambda: python.arithmetic("planted", ["king - zzqxv"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "OUT_OF_VOCABULARY",
        )
    refusal = got["refusal"]
    assert refusal["grpc_code"] == refusal["status"]["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    info = next(d for d in refusal["status"]["details"] if d["type"] == "google.rpc.ErrorInfo")
    assert (info["domain"], info["reason"]) == ("embedsvc", "OUT_OF_VOCABULARY")
    assert info["metadata"]["field"] == python_error.field and info["metadata"]["words"] == "zzqxv"
    assert "google.rpc.BadRequest" in {d["type"] for d in refusal["status"]["details"]}
