"""Admission control: how much work the server takes on at once, and per-key limits.

The server works on at most `max_concurrent_rpcs` calls at once (health checks aside), of which at most
`max_concurrent_streams` streams and `max_heavy_rpcs` heavy calls. A call over a cap is refused at once, before any
work, with RESOURCE_EXHAUSTED / OVERLOADED and a retry delay (RetryInfo and the `grpc-retry-pushback-ms` trailer,
which gRPC's own retry policies read), instead of queueing behind the others: a queue that grows without bound turns
overload into timeouts for everyone.

Two doors. The front door is gRPC's poll thread, where the gateway sees each call before any thread takes it: when
the calls handed to the worker pool and not yet finished (`Lane.pool.outstanding`, queued or running) reach the
lane's cap, the call is refused right there (`InlinePool`), so that refusals cost no thread hand-off, never wait
behind the work they refuse, and admitted calls never queue behind a backlog. Health checks have a lane of their own
(own threads, own cap), so they answer while the work lane is full. The second door, in the worker (`Admission`),
holds the caps that need the call's key or kind: streams, heavy calls, per-key limits.

Per key, a token bucket (`rate` requests per second, `burst` at once) and a concurrency cap: over either,
RESOURCE_EXHAUSTED / RATE_LIMITED with the time until the next token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.settings import ApiKey

_V1 = "/embedsvc.v1."
# Calls whose work grows with their inputs far beyond a search's: they get their own, smaller cap.
HEAVY = frozenset(
    {
        _V1 + "MapService/Project",
        _V1 + "MapService/Cluster",
        _V1 + "MapService/Plot",
        _V1 + "ArithmeticService/EvaluateAnalogies",
        _V1 + "LatentService/Inpaint",
        _V1 + "LatentService/CreateDirection",
        _V1 + "ModelService/LoadModel",
        _V1 + "ModelService/ReloadModel",
    }
)
OVERLOAD_RETRY_S = 0.1
# The health lane: its threads, and the health checks it holds at once (queued or running) before refusing more.
HEALTH_THREADS = 2
HEALTH_QUEUE = 64


class CountingPool(futures.ThreadPoolExecutor):
    """A thread pool that knows how many of the calls handed to it have not finished yet (queued or running)."""

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self._count = threading.Lock()
        self.outstanding = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        with self._count:
            self.outstanding += 1
        try:
            return super().submit(self._counted, fn, args, kwargs)
        except BaseException:  # shut down: nothing will run
            self._done()
            raise

    def _counted(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            return fn(*args, **kwargs)
        finally:
            self._done()

    def _done(self) -> None:
        with self._count:
            self.outstanding -= 1


class InlinePool(futures.ThreadPoolExecutor):
    """Runs what it is handed at once, on the thread that hands it over (gRPC's poll thread), and never starts a
    thread: for refusals, which must not take a worker or wait in the queue of the work they refuse. What runs here
    must not block: a refusal never reads its request."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="inline")

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        future: futures.Future[Any] = futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


@dataclass(frozen=True)
class Lane:
    """Where a kind of call runs (a pool) and how many of them may be outstanding there at once (`cap`); `limit` names
    the setting in refusals."""

    pool: CountingPool
    cap: int
    limit: str

    def full(self) -> bool:
        return self.pool.outstanding >= self.cap


@dataclass
class Ticket:
    """What a call holds while it runs; given back by `leave`."""

    streaming: bool
    heavy: bool
    key: _KeyState | None


class _KeyState:
    def __init__(self, key: ApiKey, now: float) -> None:
        self.name = key.name
        self.rate = key.rate
        self.burst = float(key.burst or max(1, int(key.rate)))
        self.tokens = self.burst
        self.stamp = now
        self.max_concurrent = key.max_concurrent
        self.running = 0


class Admission:
    """`clock` (seconds, monotonic) times the per-key token buckets; tests pass one they move by hand."""

    def __init__(
        self,
        *,
        max_calls: int,
        max_streams: int,
        max_heavy: int,
        keys: tuple[ApiKey, ...] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_calls, self.max_streams, self.max_heavy = max_calls, max_streams, max_heavy
        self._lock = threading.Lock()
        self._clock = clock
        self.calls = self.streams = self.heavy = 0
        self.refused = 0  # since the start, for the logs
        self._keys = {k.name: _KeyState(k, clock()) for k in keys if k.rate or k.max_concurrent}

    def limits(self, method: str, *, key_limits: bool) -> bool:
        """Whether a unary call of this method meets a cap of this door beyond max_calls (which the front door's
        lane already holds): a heavy method, or per-key limits (when keys are checked)."""
        return method in HEAVY or (key_limits and bool(self._keys))

    def enter(self, method: str, *, streaming: bool, key: str) -> Ticket:
        """Admit a call or raise OVERLOADED / RATE_LIMITED (nothing is held then)."""
        heavy = method in HEAVY
        state = self._keys.get(key)
        with self._lock:
            if self.calls >= self.max_calls:
                self._refuse("max_concurrent_rpcs", self.max_calls)
            if streaming and self.streams >= self.max_streams:
                self._refuse("max_concurrent_streams", self.max_streams)
            if heavy and self.heavy >= self.max_heavy:
                self._refuse("max_heavy_rpcs", self.max_heavy)
            if state is not None:
                self._charge(state)
            self.calls += 1
            self.streams += streaming
            self.heavy += heavy
        return Ticket(streaming, heavy, state)

    def leave(self, ticket: Ticket) -> None:
        with self._lock:
            self.calls -= 1
            self.streams -= ticket.streaming
            self.heavy -= ticket.heavy
            if ticket.key is not None:
                ticket.key.running -= 1

    def _refuse(self, limit: str, value: int) -> None:
        self.refused += 1
        raise EmbedsvcError(
            Reason.OVERLOADED,
            f"the server is at capacity ({limit} = {value}); retry shortly",
            metadata={"limit": limit},
            retry_after_s=OVERLOAD_RETRY_S,
        )

    def _charge(self, state: _KeyState) -> None:
        if state.max_concurrent and state.running >= state.max_concurrent:
            raise EmbedsvcError(
                Reason.RATE_LIMITED,
                f"key '{state.name}' has {state.running} calls running (its max_concurrent); retry when one ends",
                metadata={"key": state.name, "limit": "concurrency"},
                retry_after_s=OVERLOAD_RETRY_S,
            )
        if state.rate:
            now = self._clock()
            state.tokens = min(state.burst, state.tokens + (now - state.stamp) * state.rate)
            state.stamp = now
            if state.tokens < 1.0:
                wait = (1.0 - state.tokens) / state.rate
                raise EmbedsvcError(
                    Reason.RATE_LIMITED,
                    f"key '{state.name}' is over its rate of {state.rate:g} requests per second; retry in "
                    f"{wait * 1e3:.0f} ms",
                    metadata={"key": state.name, "limit": "rate"},
                    retry_after_s=wait,
                )
            state.tokens -= 1.0
        state.running += 1
