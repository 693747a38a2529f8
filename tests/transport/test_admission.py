"""Admission control through a real server: idle streams cannot starve the server, heavy calls have their own cap,
refusals come at once with a reason and a retry delay, health checks always answer, per-key limits hold."""

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


def test_health_answers_while_every_call_slot_is_taken(tmp_path, planted_file, monkeypatch):
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
        channel = grpc.insecure_channel(target)
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(5):
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == 1
        with Client(target) as extra, pytest.raises(EmbedsvcClientError) as info:
            extra.nearest_words("planted", ["king"])
        assert info.value.reason == "OVERLOADED"
        channel.close()
    finally:
        release.set()
        for t in threads:
            t.join(20)
        for c in clients:
            c.close()
        srv.stop(0)
