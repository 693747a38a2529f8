"""Admission control through a real server: idle streams cannot starve the server, heavy calls have their own cap,
refusals come at once with a reason and a retry delay, health checks always answer, per-key limits hold."""

import contextlib
import queue
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from embedsvc.backends.base import ModelSpec
from embedsvc.backends.text_encoders import TextEncoderFormat, TextEncoderOptions
from embedsvc.backends.word_vectors import WordVectorFormat, WordVectorsOptions
from embedsvc.client import Client, EmbedsvcClientError, vector_points
from embedsvc.settings import ApiKey, AuthSettings, Role, Settings
from embedsvc.transport.admission import Admission
from embedsvc.transport.auth import key_hash
from embedsvc.transport.server import create_server
from embedsvc.v1 import text_pb2, text_pb2_grpc


def serve(tmp_path, planted_file, **overrides):
    settings = Settings(
        port=0,
        data_dir=tmp_path / "data",
        embedded_models=False,
        models=(
            ModelSpec("planted", WordVectorsOptions(WordVectorFormat.WORD2VEC_TEXT, planted_file)),
            ModelSpec("planted-mean", TextEncoderOptions(TextEncoderFormat.AVERAGED_WORDS, words="planted")),
        ),
        grace_period_s=0.5,
        max_workers=16,
        max_concurrent_rpcs=12,
        max_concurrent_streams=4,
        max_heavy_rpcs=1,
        **overrides,
    )
    srv, port = create_server(settings)
    srv.start()
    srv.wait_until_ready(60)
    return srv, f"127.0.0.1:{port}"


def idle_stream(stub):
    """An EmbedTextsStream call that sends one batch and then nothing (its request iterator blocks)."""
    gate = queue.Queue()

    def requests():
        yield text_pb2.EmbedTextsStreamRequest(batch=text_pb2.EmbedTextsRequest(model="planted-mean", texts=["king"]))
        gate.get()  # blocks until the test lets go

    responses = stub.EmbedTextsStream(requests(), timeout=30)
    return responses, gate


def test_idle_streams_cannot_starve_the_server(tmp_path, planted_file):
    """The reported hole: streams that send nothing held every worker thread; now streams have a cap, the rest of the
    server keeps answering, and idle streams are ended."""
    srv, target = serve(tmp_path, planted_file, stream_idle_timeout_s=1.5)
    channel = grpc.insecure_channel(target)
    stub = text_pb2_grpc.TextServiceStub(channel)
    try:
        held = [idle_stream(stub) for _ in range(4)]
        for responses, _ in held:
            next(responses)  # the first batch is answered: the stream is admitted and running
        extra, _gate = idle_stream(stub)
        with pytest.raises(grpc.RpcError) as info:
            next(extra)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        trailers = dict(info.value.trailing_metadata())
        assert trailers["grpc-retry-pushback-ms"] == "100"
        with Client(target) as client:  # unary calls and health checks still answer
            assert client.similarity("planted", [("king", "queen")])[0] > 0.5
            assert client.health() == "SERVING"
        for responses, _ in held:  # idle past stream_idle_timeout_s: ended with STREAM_IDLE
            with pytest.raises(grpc.RpcError) as info:
                next(responses)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "STREAM_IDLE" in str(info.value.trailing_metadata()) or "sent nothing" in info.value.details()
        fresh, gate = idle_stream(stub)  # the slots are free again
        assert len(next(fresh).batch.vectors) == 1
        gate.put(None)
        for _, g in held:
            g.put(None)
    finally:
        channel.close()
        srv.stop(0)


def test_heavy_calls_have_their_own_cap_and_refusals_carry_a_reason(tmp_path, planted_file, monkeypatch):
    from embedsvc.core.maps import projection

    entered, release = threading.Event(), threading.Event()
    real = projection.project_points

    def slow(*args, **kwargs):
        entered.set()
        release.wait(20)
        return real(*args, **kwargs)

    monkeypatch.setattr(projection, "project_points", slow)
    srv, target = serve(tmp_path, planted_file)
    points = vector_points(np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32))
    try:
        with Client(target) as first, Client(target) as second:
            running = threading.Thread(target=lambda: first.project(points))
            running.start()
            assert entered.wait(20)
            started = time.perf_counter()
            with pytest.raises(EmbedsvcClientError) as info:
                second.project(points)
            assert time.perf_counter() - started < 5  # refused at once, not queued
            assert (info.value.code, info.value.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED")
            assert info.value.metadata["limit"] == "max_heavy_rpcs"
            assert second.similarity("planted", [("king", "queen")])  # light calls are not held up
            release.set()
            running.join(20)
            assert len(second.project(points).coordinates) == 20  # the heavy slot is free again
    finally:
        release.set()
        srv.stop(0)


def test_per_key_rate_and_concurrency(tmp_path, planted_file):
    keys = (
        ApiKey("limited", Role.READ, key_hash("esk_limited"), rate=2.0, burst=3),
        ApiKey("free", Role.READ, key_hash("esk_free")),
    )
    srv, target = serve(tmp_path, planted_file, auth=AuthSettings(enabled=True, keys=keys))
    try:
        with Client(target, api_key="esk_limited") as limited, Client(target, api_key="esk_free") as free:
            for _ in range(3):  # the burst
                limited.similarity("planted", [("king", "queen")])
            with pytest.raises(EmbedsvcClientError) as info:
                limited.similarity("planted", [("king", "queen")])
            assert (info.value.code, info.value.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
            assert info.value.metadata == {"key": "limited", "limit": "rate"}
            for _ in range(10):
                free.similarity("planted", [("king", "queen")])  # other keys are not affected
            time.sleep(0.6)  # a token comes back every 0.5 s
            limited.similarity("planted", [("king", "queen")])
    finally:
        srv.stop(0)


def test_admission_counts():
    from embedsvc.errors import EmbedsvcError, Reason

    admission = Admission(
        max_calls=3,
        max_streams=1,
        max_heavy=1,
        keys=(ApiKey("k", Role.READ, "a" * 64, max_concurrent=1),),
    )
    a = admission.enter("/embedsvc.v1.MapService/Cluster", streaming=False, key="")
    with pytest.raises(EmbedsvcError) as info:
        admission.enter("/embedsvc.v1.MapService/Plot", streaming=False, key="")
    assert info.value.metadata["limit"] == "max_heavy_rpcs"
    b = admission.enter("/embedsvc.v1.TextService/EmbedTextsStream", streaming=True, key="")
    with pytest.raises(EmbedsvcError):
        admission.enter("/embedsvc.v1.CollectionService/UpsertStream", streaming=True, key="")
    c = admission.enter("/embedsvc.v1.WordService/Similarity", streaming=False, key="k")
    with pytest.raises(EmbedsvcError) as info:
        admission.enter("/embedsvc.v1.WordService/Similarity", streaming=False, key="")
    assert info.value.metadata["limit"] == "max_concurrent_rpcs"
    for ticket in (a, b, c):
        admission.leave(ticket)
    assert (admission.calls, admission.streams, admission.heavy) == (0, 0, 0)
    d = admission.enter("/embedsvc.v1.WordService/Similarity", streaming=False, key="k")
    with pytest.raises(EmbedsvcError) as info:
        admission.enter("/embedsvc.v1.WordService/Similarity", streaming=False, key="k")
    assert (info.value.reason, info.value.metadata["limit"]) == (Reason.RATE_LIMITED, "concurrency")
    admission.leave(d)


@contextlib.contextmanager
def every_slot_taken(tmp_path, planted_file, monkeypatch):
    """A server whose 12 work slots are all held by Similarity calls that wait until the block ends; yields its
    target."""
    from embedsvc.core.words import lookups

    release = threading.Event()
    real = lookups.similarity

    def stuck(*args, **kwargs):
        release.wait(20)
        return real(*args, **kwargs)

    monkeypatch.setattr(lookups, "similarity", stuck)
    srv, target = serve(tmp_path, planted_file)
    clients = [Client(target) for _ in range(12)]
    threads = [threading.Thread(target=c.similarity, args=("planted", [("king", "queen")])) for c in clients]
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)  # all 12 slots taken
        yield target
    finally:
        release.set()
        for t in threads:
            t.join(20)
        for c in clients:
            c.close()
        srv.stop(0)


def test_health_answers_while_every_call_slot_is_taken(tmp_path, planted_file, monkeypatch):
    with every_slot_taken(tmp_path, planted_file, monkeypatch) as target:
        channel = grpc.insecure_channel(target)
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(5):
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == 1
        with Client(target) as extra, pytest.raises(EmbedsvcClientError) as info:
            extra.nearest_words("planted", ["king"])
        assert info.value.reason == "OVERLOADED"
        channel.close()


def test_health_watches_hold_no_thread_and_are_capped(tmp_path, planted_file):
    """Found while measuring overload: each Health/Watch stream (open to anyone) held a worker thread, so 20 watches
    hung every call of a 16-thread server. Now watches wait without a thread and their number is capped."""
    srv, target = serve(tmp_path, planted_file, max_health_watches=40)
    channel = grpc.insecure_channel(target)
    health = health_pb2_grpc.HealthStub(channel)
    watches = [health.Watch(health_pb2.HealthCheckRequest(), timeout=30) for _ in range(40)]  # > max_workers (16)
    try:
        for watch in watches:
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        with Client(target) as client:
            assert client.similarity("planted", [("king", "queen")])[0] > 0.5
            assert client.health() == "SERVING"
        extra = health.Watch(health_pb2.HealthCheckRequest(), timeout=10)
        with pytest.raises(grpc.RpcError) as info:
            next(extra)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        trailers = dict(info.value.trailing_metadata())
        assert trailers["grpc-retry-pushback-ms"] == "100" and "x-request-id" in trailers
        for watch in watches:
            watch.cancel()
        deadline = time.monotonic() + 10
        while True:  # the cancelled watches give their places back
            fresh = health.Watch(health_pb2.HealthCheckRequest(), timeout=10)
            try:
                assert next(fresh).status == health_pb2.HealthCheckResponse.SERVING
                fresh.cancel()
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        channel.close()
        srv.stop(0)


def test_front_door_refusal_carries_reason_retry_and_request_id(tmp_path, planted_file, monkeypatch):
    from embedsvc.client._errors import error
    from embedsvc.v1 import words_pb2, words_pb2_grpc

    with every_slot_taken(tmp_path, planted_file, monkeypatch) as target, grpc.insecure_channel(target) as channel:
        stub = words_pb2_grpc.WordServiceStub(channel)
        started = time.perf_counter()
        with pytest.raises(grpc.RpcError) as info:
            stub.Similarity(
                words_pb2.SimilarityRequest(model="planted", pairs=[words_pb2.WordPair(first="king", second="man")]),
                metadata=[("x-request-id", "overload-1")],
                timeout=10,
            )
        assert time.perf_counter() - started < 2
        trailers = dict(info.value.trailing_metadata())
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert trailers["x-request-id"] == "overload-1" and trailers["grpc-retry-pushback-ms"] == "100"
        found = error(info.value)
        assert (found.reason, found.metadata["limit"]) == ("OVERLOADED", "max_concurrent_rpcs")


def test_counting_and_inline_pools():
    from embedsvc.transport.admission import CountingPool, InlinePool, Lane

    pool = CountingPool(2, "t")
    gate = threading.Event()
    lane = Lane(pool, 2, "max_concurrent_rpcs")
    running = [pool.submit(gate.wait, 10) for _ in range(3)]  # two run, one waits: all three are outstanding
    assert pool.outstanding == 3 and lane.full()
    gate.set()
    for future in running:
        future.result(10)
    assert pool.outstanding == 0 and not lane.full()
    failing = pool.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(10)
    assert pool.outstanding == 0
    pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.submit(print)
    assert pool.outstanding == 0
    inline = InlinePool()
    caller = threading.get_ident()
    assert inline.submit(threading.get_ident).result(0) == caller  # ran at once, on the caller's thread
    assert isinstance(inline.submit(lambda: 1 / 0).exception(0), ZeroDivisionError)


class _Shed(grpc.RpcError):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return ()


def test_calls_shed_by_grpc_itself_read_as_overload():
    """grpcio 1.85's core cancels calls beyond max_pending_rpcs with a bare CANCELLED (measured with nghttp: grpc-status
    1, message "CANCELLED"); the client reads that, and the backstop's refusal, as OVERLOADED."""
    from embedsvc.client._errors import error

    shed = error(_Shed(grpc.StatusCode.CANCELLED, "CANCELLED"))
    assert (shed.code, shed.reason, shed.metadata) == (
        grpc.StatusCode.CANCELLED,
        "OVERLOADED",
        {"limit": "max_pending_rpcs"},
    )
    assert error(_Shed(grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!")).reason == "OVERLOADED"
    assert error(_Shed(grpc.StatusCode.CANCELLED, "Locally cancelled by application!")).reason == "CANCELLED"
    too_big = error(_Shed(grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max (5 vs. 4)"))
    assert too_big.reason == "RESOURCE_EXHAUSTED"


def test_pending_and_lane_settings():
    from embedsvc.errors import ConfigError
    from embedsvc.transport.server import channel_options

    options = dict(channel_options(Settings(max_pending_rpcs=50)))
    assert options["grpc.server.max_pending_requests"] == 50
    assert options["grpc.server.max_pending_requests_hard_limit"] == 100
    for bad in ({"max_pending_rpcs": 0}, {"max_health_watches": 0}, {"max_workers": 8, "max_concurrent_rpcs": 9}):
        with pytest.raises(ConfigError):
            Settings(**bad).validate()
    Settings(max_workers=8, max_concurrent_rpcs=8, max_concurrent_streams=4).validate()
