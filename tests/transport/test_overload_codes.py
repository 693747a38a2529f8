"""What a caller can act on under overload, in any language.

Past `max_pending_rpcs`, grpcio's core sheds arriving calls itself, before any Python code runs, with CANCELLED: no
reason, no request id. The server cannot mark those answers, so the decision (README "Overload") is:
  - every answer that a handler of embedsvc gave carries `x-request-id`; a CANCELLED without it never reached the
    server's code, was not worked on, and is safe to retry;
  - `protos/service_config.json` is a gRPC service config whose retry policy (UNAVAILABLE, RESOURCE_EXHAUSTED,
    CANCELLED; backoff and throttling) retries exactly that, and the server's own retryable refusals after their
    pushback;
  - failures under those codes that a retry cannot fix (STORAGE_FULL) carry `grpc-retry-pushback-ms: -1`, which tells
    every gRPC retry implementation not to retry.
Tested here with a real shed (gRPC's poll thread held while calls pile up in its queue) and with the published config
in the Python client (gRPC's C core) and, with node and npm, in Node.js (@grpc/grpc-js).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from embedsvc.client._errors import error
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.settings import Settings
from embedsvc.transport.admission import Admission, CountingPool, Lane
from embedsvc.transport.interceptors import Gateway
from embedsvc.transport.server import channel_options
from embedsvc.v1 import server_pb2
from tests.helpers import wait_for

REPO = Path(__file__).resolve().parents[2]
SERVICE_CONFIG = REPO / "protos" / "service_config.json"
METHOD = "/embedsvc.v1.ServerService/GetServerInfo"


def marks(trailers: Any) -> set[str]:
    return {key for key, _ in trailers or ()} & {"x-request-id", "grpc-status-details-bin", "grpc-retry-pushback-ms"}


# ---- a real shed ------------------------------------------------------------------------------------------------


class _Hold(grpc.ServerInterceptor):
    """Holds gRPC's poll thread (where interceptors run) while `gate` is clear: the calls arriving meanwhile wait in
    gRPC's own queue, and past max_pending_rpcs its core sheds them, as it does when the poll thread falls behind."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.held = threading.Event()

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        if not self.gate.is_set():
            self.held.set()
            self.gate.wait(60)
        return continuation(details)


@contextmanager
def held_server() -> Iterator[tuple[_Hold, str]]:
    """A server with embedsvc's gRPC options, max_pending_rpcs 2, GetServerInfo answered by a constant."""
    hold = _Hold()
    settings = Settings(max_pending_rpcs=2)
    server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[hold], options=channel_options(settings))
    answer = server_pb2.GetServerInfoResponse(server_version="test")
    handler = grpc.unary_unary_rpc_method_handler(
        lambda request, context: answer,
        request_deserializer=server_pb2.GetServerInfoRequest.FromString,
        response_serializer=server_pb2.GetServerInfoResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("embedsvc.v1.ServerService", {
        "GetServerInfo": handler
    }),))  # fmt: skip
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield hold, f"127.0.0.1:{port}"
    finally:
        hold.gate.set()
        server.stop(0)


def get_info(channel: grpc.Channel) -> Any:
    return channel.unary_unary(
        METHOD,
        request_serializer=server_pb2.GetServerInfoRequest.SerializeToString,
        response_deserializer=server_pb2.GetServerInfoResponse.FromString,
    )


def test_a_call_shed_by_grpc_is_a_bare_cancelled_without_request_id_and_the_client_reads_overload():
    with held_server() as (hold, target), grpc.insecure_channel(target) as channel:
        call = get_info(channel)
        first = call.future(server_pb2.GetServerInfoRequest(), timeout=60)
        wait_for(hold.held.is_set)  # the poll thread is held: what arrives now queues in gRPC's core
        pending = [call.future(server_pb2.GetServerInfoRequest(), timeout=60) for _ in range(40)]
        wait_for(lambda: any(f.done() for f in pending))  # the queue overflowed: gRPC sheds
        hold.gate.set()
        outcomes = [f.exception() for f in [first, *pending]]
    shed = [e for e in outcomes if e is not None]
    assert shed and len(shed) < len(outcomes)
    for exc in shed:
        assert (exc.code(), exc.details()) == (grpc.StatusCode.CANCELLED, "CANCELLED")
        assert marks(exc.trailing_metadata()) == set()  # no request id: no handler of embedsvc saw it
        mapped = error(exc)
        assert (mapped.reason, mapped.metadata) == ("OVERLOADED", {"limit": "max_pending_rpcs"})


# ---- the published retry policy ---------------------------------------------------------------------------------


class _Script:
    """Answers GetServerInfo by scenario (the caller's `x-scenario`), counting attempts per call (`x-call`)."""

    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def count(self, context: grpc.ServicerContext) -> tuple[str, int]:
        metadata = dict(context.invocation_metadata())
        with self.lock:
            self.attempts[metadata["x-call"]] += 1
            return metadata["x-scenario"], self.attempts[metadata["x-call"]]

    def handler(self, request: Any, context: grpc.ServicerContext) -> Any:
        scenario, attempt = self.count(context)
        if scenario == "overloaded" and attempt < 3:
            raise EmbedsvcError(Reason.OVERLOADED, "at capacity", retry_after_s=0.01)
        if scenario == "storage-full":
            raise EmbedsvcError(Reason.STORAGE_FULL, "the disk is full")
        return server_pb2.GetServerInfoResponse(server_version=str(attempt))


class _Shed(grpc.ServerInterceptor):
    """In front of the Gateway: for scenario "shed", the first two attempts get what gRPC's core sends when it sheds
    (CANCELLED "CANCELLED", nothing else), without reaching the Gateway."""

    def __init__(self, script: _Script) -> None:
        self.script = script

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        if ("x-scenario", "shed") not in tuple(details.invocation_metadata or ()):
            return continuation(details)
        script = self.script

        def shed(request: Any, context: grpc.ServicerContext) -> Any:
            _scenario, attempt = script.count(context)
            if attempt < 3:
                context.abort(grpc.StatusCode.CANCELLED, "CANCELLED")
            return server_pb2.GetServerInfoResponse(server_version=str(attempt))

        return grpc.unary_unary_rpc_method_handler(
            shed,
            request_deserializer=server_pb2.GetServerInfoRequest.FromString,
            response_serializer=server_pb2.GetServerInfoResponse.SerializeToString,
        )


@pytest.fixture(scope="module")
def scripted() -> Iterator[tuple[_Script, str]]:
    """A server whose GetServerInfo fails as each scenario says, behind embedsvc's Gateway."""
    script = _Script()
    pool = CountingPool(8, "rpc")
    gateway = Gateway(
        admission=Admission(max_calls=8, max_streams=4, max_heavy=2),
        work=Lane(pool, 8, "max_concurrent_rpcs"),
        health=Lane(CountingPool(2, "health"), 8, "health_queue"),
    )
    server = grpc.server(pool, interceptors=[_Shed(script), gateway], options=channel_options(Settings()))
    handler = grpc.unary_unary_rpc_method_handler(
        script.handler,
        request_deserializer=server_pb2.GetServerInfoRequest.FromString,
        response_serializer=server_pb2.GetServerInfoResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("embedsvc.v1.ServerService", {
        "GetServerInfo": handler
    }),))  # fmt: skip
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield script, f"127.0.0.1:{port}"
    server.stop(0)


# Scenario -> (code of the final outcome, attempts the server saw): shed calls and overload are retried until they
# succeed (the third attempt), STORAGE_FULL is not retried at all.
EXPECTED = {
    "shed": ("OK", 3),
    "overloaded": ("OK", 3),
    "storage-full": ("RESOURCE_EXHAUSTED", 1),
}


def test_the_server_marks_what_a_retry_cannot_fix(scripted):
    _script, target = scripted
    with grpc.insecure_channel(target) as channel:  # no retry policy: every attempt's own answer
        call = get_info(channel)
        seen = {}
        for scenario in ("overloaded", "storage-full"):
            with pytest.raises(grpc.RpcError) as info:
                call(server_pb2.GetServerInfoRequest(), metadata=(("x-scenario", scenario), ("x-call", scenario)))
            seen[scenario] = dict(info.value.trailing_metadata())
    assert seen["overloaded"]["grpc-retry-pushback-ms"] == "10"
    assert seen["storage-full"]["grpc-retry-pushback-ms"] == "-1"
    assert {"x-request-id", "grpc-status-details-bin"} <= set(seen["storage-full"])


def test_the_published_retry_policy_retries_sheds_and_overload_not_storage_full(scripted):
    script, target = scripted
    config = SERVICE_CONFIG.read_text()
    options = [("grpc.service_config", config), ("grpc.enable_retries", 1)]
    outcomes = {}
    with grpc.insecure_channel(target, options=options) as channel:
        call = get_info(channel)
        for scenario in EXPECTED:
            key = f"python-{scenario}"
            try:
                call(server_pb2.GetServerInfoRequest(), metadata=(("x-scenario", scenario), ("x-call", key)))
                outcomes[scenario] = ("OK", script.attempts[key])
            except grpc.RpcError as exc:
                outcomes[scenario] = (exc.code().name, script.attempts[key])
    assert outcomes == EXPECTED


def test_the_published_config_names_every_service():
    from embedsvc.api import SERVICES

    config = json.loads(SERVICE_CONFIG.read_text())
    (method,) = config["methodConfig"]
    assert {n["service"] for n in method["name"]} == {s.full_name for s in SERVICES}
    assert set(method["retryPolicy"]["retryableStatusCodes"]) == {"UNAVAILABLE", "RESOURCE_EXHAUSTED", "CANCELLED"}
    assert config["retryThrottling"]["tokenRatio"] > 0  # retries stop when most calls fail: no retry storm


# ---- Node.js ----------------------------------------------------------------------------------------------------


def node(node_modules: Path, *args: str) -> dict[str, Any]:
    """Run tests/transport/overload_client.js; its JSON answer."""
    run = subprocess.run(
        ["node", str(Path(__file__).with_name("overload_client.js")), str(REPO), *args],
        env={**os.environ, "NODE_PATH": str(node_modules / "node_modules")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return dict(json.loads(run.stdout))


def test_node_sees_a_shed_as_a_bare_cancelled(node_modules):
    with held_server() as (hold, target), grpc.insecure_channel(target) as channel:
        first = get_info(channel).future(server_pb2.GetServerInfoRequest(), timeout=60)
        wait_for(hold.held.is_set)  # the poll thread is held: what arrives now queues in gRPC's core
        burst = subprocess.Popen(
            ["node", str(Path(__file__).with_name("overload_client.js")), str(REPO), target, "burst", "40"],
            env={**os.environ, "NODE_PATH": str(node_modules / "node_modules")},
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert burst.stdout is not None
            assert burst.stdout.readline().strip() == "answered"  # a call of the burst came back: gRPC shed it
        finally:
            hold.gate.set()
        out, _ = burst.communicate(timeout=120)
        first.result()
    seen = json.loads(out)
    shed = {outcome: n for outcome, n in seen["outcomes"].items() if outcome != "OK"}
    assert shed and seen["outcomes"].get("OK"), seen
    assert set(shed) == {'CANCELLED "CANCELLED" []'}  # no request id, no details, no pushback: as Python sees it


def test_node_with_the_published_config_retries_as_python_does(node_modules, scripted):
    script, target = scripted
    seen = node(node_modules, target, "scenarios", str(SERVICE_CONFIG), *EXPECTED)
    outcomes = {s: (code, script.attempts[f"node-{s}"]) for s, code in seen["outcomes"].items()}
    assert outcomes == EXPECTED
