"""Admission control through a real server: idle streams cannot starve the server, heavy calls have their own cap,
refusals come at once with a reason and a retry delay, health checks always answer, per-key limits hold."""

import contextlib
import functools
import queue
import threading

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from embedsvc.client import Client, vector_points
from embedsvc.settings import ApiKey, AuthSettings, Role, Settings
from embedsvc.transport.admission import Admission
from embedsvc.transport.auth import key_hash
from embedsvc.v1 import text_pb2, text_pb2_grpc
from tests.helpers import FakeClock, assert_refused, wait_for

OVERLOADED = (grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED")
RATE_LIMITED = (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")


def serve(make_server, **overrides):
    """A server with small caps: 16 threads, 12 calls at once, of which 4 streams and 1 heavy call."""
    caps = {"max_workers": 16, "max_concurrent_rpcs": 12, "max_concurrent_streams": 4, "max_heavy_rpcs": 1}
    return make_server(**{**caps, **overrides})


def idle_stream(stub):
    """An EmbedTextsStream call that sends one batch and then nothing (its request iterator blocks)."""
    gate = queue.Queue()

    def requests():
        yield text_pb2.EmbedTextsStreamRequest(batch=text_pb2.EmbedTextsRequest(model="planted-mean", texts=["king"]))
        gate.get()  # blocks until the test lets go

    responses = stub.EmbedTextsStream(requests(), timeout=30)
    return responses, gate


def admitted_stream(stub):
    """An idle stream once the server admits it (a refused one is retried until a slot is free)."""

    def attempt():
        responses, gate = idle_stream(stub)
        try:
            next(responses)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
            gate.put(None)
            return None
        return responses, gate

    return wait_for(attempt, what="a stream slot to be free again")


def test_streams_have_a_cap_and_the_rest_of_the_server_keeps_answering(make_server):
    """The reported hole: streams that send nothing held every worker thread; now streams have a cap (4 here) and
    the rest of the server keeps answering while it is reached."""
    with serve(make_server) as (_srv, target), grpc.insecure_channel(target) as channel:
        stub = text_pb2_grpc.TextServiceStub(channel)
        held = [idle_stream(stub) for _ in range(4)]
        try:
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
        finally:
            for responses, gate in held:  # the held streams end: their slots come back
                gate.put(None)
                assert list(responses) == []
        fresh, gate = admitted_stream(stub)
        gate.put(None)
        assert list(fresh) == []


def test_idle_streams_are_ended_and_give_their_slots_back(make_server):
    """A stream that sends nothing for stream_idle_timeout_s is ended with STREAM_IDLE (after its first batch was
    answered), and its slot is free again."""
    with (
        serve(make_server, stream_idle_timeout_s=0.5) as (_srv, target),
        grpc.insecure_channel(target) as channel,
    ):
        stub = text_pb2_grpc.TextServiceStub(channel)
        held = [idle_stream(stub) for _ in range(4)]
        for responses, _ in held:
            assert len(next(responses).batch.vectors) == 1
        for responses, _ in held:  # idle past stream_idle_timeout_s: ended with STREAM_IDLE
            with pytest.raises(grpc.RpcError) as info:
                next(responses)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "STREAM_IDLE" in str(info.value.trailing_metadata()) or "sent nothing" in info.value.details()
        _fresh, gate = admitted_stream(stub)  # the slots are free again
        gate.put(None)
        for _, g in held:
            g.put(None)


def test_heavy_calls_have_their_own_cap_and_refusals_carry_a_reason(make_server, monkeypatch):
    from embedsvc.core.maps import projection

    entered, release = threading.Event(), threading.Event()
    real = projection.project_points

    def slow(*args, **kwargs):
        entered.set()
        release.wait(20)
        return real(*args, **kwargs)

    monkeypatch.setattr(projection, "project_points", slow)
    points = vector_points(np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32))
    with serve(make_server) as (_srv, target), Client(target) as first, Client(target, timeout=20) as second:
        try:
            running = threading.Thread(target=lambda: first.project(points))
            running.start()
            assert entered.wait(20)
            # Refused, not queued: a queued call would wait for the held slot, which frees only after this.
            error = assert_refused(lambda: second.project(points), *OVERLOADED)
            assert error.metadata["limit"] == "max_heavy_rpcs"
            assert second.similarity("planted", [("king", "queen")])  # light calls are not held up
            release.set()
            running.join(20)
            assert len(second.project(points).coordinates) == 20  # the heavy slot is free again
        finally:
            release.set()


def test_per_key_rate_and_concurrency(make_server, monkeypatch):
    """A key's token bucket through the real server, on a clock the test moves: 3 calls at once (the burst), then
    RATE_LIMITED until a token comes back (2 a second); other keys are not affected."""
    clock = FakeClock()
    monkeypatch.setattr(Admission, "__init__", functools.partialmethod(Admission.__init__, clock=clock))
    keys = (
        ApiKey("limited", Role.READ, key_hash("esk_limited"), rate=2.0, burst=3),
        ApiKey("free", Role.READ, key_hash("esk_free")),
    )
    with (
        serve(make_server, auth=AuthSettings(enabled=True, keys=keys)) as (_srv, target),
        Client(target, api_key="esk_limited") as limited,
        Client(target, api_key="esk_free") as free,
    ):
        for _ in range(3):  # the burst
            limited.similarity("planted", [("king", "queen")])
        error = assert_refused(lambda: limited.similarity("planted", [("king", "queen")]), *RATE_LIMITED)
        assert error.metadata == {"key": "limited", "limit": "rate"}
        for _ in range(10):
            free.similarity("planted", [("king", "queen")])  # other keys are not affected
        clock.advance(0.4)  # 0.8 of a token
        assert_refused(lambda: limited.similarity("planted", [("king", "queen")]), *RATE_LIMITED)
        clock.advance(0.1)  # a token comes back every 0.5 s
        limited.similarity("planted", [("king", "queen")])
        assert_refused(lambda: limited.similarity("planted", [("king", "queen")]), *RATE_LIMITED)


def test_a_token_bucket_refills_at_its_rate_up_to_its_burst():
    from embedsvc.errors import EmbedsvcError, Reason

    clock = FakeClock()
    key = ApiKey("k", Role.READ, "a" * 64, rate=4.0, burst=2)
    admission = Admission(max_calls=100, max_streams=1, max_heavy=1, keys=(key,), clock=clock)

    def call():
        admission.leave(admission.enter("/embedsvc.v1.WordService/Similarity", streaming=False, key="k"))

    call(), call()
    with pytest.raises(EmbedsvcError) as info:
        call()
    assert info.value.reason is Reason.RATE_LIMITED and info.value.retry_after_s == pytest.approx(0.25)
    clock.advance(0.2)
    with pytest.raises(EmbedsvcError) as info:
        call()
    assert info.value.retry_after_s == pytest.approx(0.05)  # the time until the next whole token
    clock.advance(0.05)
    call()
    clock.advance(3600)  # idle for an hour: the bucket holds its burst, no more
    call(), call()
    with pytest.raises(EmbedsvcError):
        call()


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
def every_slot_taken(make_server, monkeypatch):
    """A server whose 12 work slots are all held by Similarity calls that wait until the block ends; yields its
    target."""
    from embedsvc.core.words import lookups

    release = threading.Event()
    entered = threading.Semaphore(0)
    real = lookups.similarity

    def stuck(*args, **kwargs):
        entered.release()
        release.wait(20)
        return real(*args, **kwargs)

    monkeypatch.setattr(lookups, "similarity", stuck)
    with serve(make_server) as (_srv, target):
        clients = [Client(target) for _ in range(12)]
        threads = [threading.Thread(target=c.similarity, args=("planted", [("king", "queen")])) for c in clients]
        try:
            for t in threads:
                t.start()
            for _ in range(12):  # all 12 slots taken
                assert entered.acquire(timeout=30), "not every call reached its handler"
            yield target
        finally:
            release.set()
            for t in threads:
                t.join(20)
            for c in clients:
                c.close()


def test_health_answers_while_every_call_slot_is_taken(make_server, monkeypatch):
    with every_slot_taken(make_server, monkeypatch) as target, grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(5):
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=20).status == 1
        with Client(target) as extra:
            assert_refused(lambda: extra.nearest_words("planted", ["king"]), *OVERLOADED)


def test_health_watches_hold_no_thread_and_are_capped(make_server):
    """Found while measuring overload: each Health/Watch stream (open to anyone) held a worker thread, so 20 watches
    hung every call of a 16-thread server. Now watches wait without a thread and their number is capped."""
    with (
        serve(make_server, max_health_watches=40) as (_srv, target),
        grpc.insecure_channel(target) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        watches = [health.Watch(health_pb2.HealthCheckRequest(), timeout=60) for _ in range(40)]  # > max_workers
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

        def watch_admitted():
            fresh = health.Watch(health_pb2.HealthCheckRequest(), timeout=10)
            try:
                return next(fresh).status == health_pb2.HealthCheckResponse.SERVING
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                return False
            finally:
                fresh.cancel()

        wait_for(watch_admitted, what="the cancelled watches to give their places back")


def test_front_door_refusal_carries_reason_retry_and_request_id(make_server, monkeypatch):
    from embedsvc.client._errors import error
    from embedsvc.v1 import words_pb2, words_pb2_grpc

    with every_slot_taken(make_server, monkeypatch) as target, grpc.insecure_channel(target) as channel:
        stub = words_pb2_grpc.WordServiceStub(channel)
        # Refused at once: every slot stays held until the block ends, so a call that queued would time out instead.
        with pytest.raises(grpc.RpcError) as info:
            stub.Similarity(
                words_pb2.SimilarityRequest(model="planted", pairs=[words_pb2.WordPair(first="king", second="man")]),
                metadata=[("x-request-id", "overload-1")],
                timeout=20,
            )
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
