"""The gateway every call passes through, in one interceptor (one wrapper per call keeps the per-call cost small):

1. a request id (the caller's `x-request-id`, or a new one), returned in the trailing metadata;
2. authentication and authorization when auth is on (`transport/auth.py`, the rules of `transport/roles.py`);
3. the call itself, with domain errors turned into rich statuses (`transport/status.py`) and anything else into a
   generic INTERNAL, the details in the server log only;
4. metrics, one access-log line (JSON fields with --log-format json), and the audit log for writes and admin actions.
Requests that cannot be decoded are refused with INVALID_ARGUMENT / INVALID_ENCODING instead of grpc's bare INTERNAL.

Before all that, on gRPC's poll thread, the front door (`transport/admission.py`): each call goes to its lane (health
checks to theirs, everything else to the work lane), or, when the lane is full, to a refusal answered on the spot.
Health watches run without holding a thread (gRPC's non-blocking form) and are capped in number.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import grpc
from grpc_status import rpc_status

from embedsvc import calls
from embedsvc.calls import CallControl
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.transport import roles
from embedsvc.transport.admission import OVERLOAD_RETRY_S, Admission, InlinePool, Lane, Ticket
from embedsvc.transport.audit import AuditLog
from embedsvc.transport.auth import ANONYMOUS, CURRENT, KeyRing, Principal, authorize
from embedsvc.transport.metrics import Metrics
from embedsvc.transport.status import RETRY_AFTER, internal_status, to_status

log = logging.getLogger("embedsvc.access")
REQUEST_ID = "x-request-id"
PUSHBACK = "grpc-retry-pushback-ms"  # the retry delay, where gRPC's own retry policies look for it
# The codes the published retry policy retries (protos/service_config.json).
RETRIED_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED})
_REFUSED = (Reason.OVERLOADED.value, Reason.RATE_LIMITED.value)
_NO_DEADLINE = 1e8  # seconds: a call's time_remaining() beyond this means it has no deadline
_WATCH = "/grpc.health.v1.Health/Watch"


class Undecodable:
    """Stands in for a request message that could not be parsed (invalid UTF-8 in a string field, bad bytes)."""

    def __init__(self, error: str) -> None:
        self.error = error


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    strict = deserializer

    def decode(raw: bytes) -> Any:
        try:
            return strict(raw)
        except Exception as exc:
            return Undecodable(str(exc))

    return decode


def _checked(message: Any) -> Any:
    if isinstance(message, Undecodable):
        raise EmbedsvcError(
            Reason.INVALID_ENCODING,
            f"the request cannot be decoded (string fields must be valid UTF-8): {message.error}",
        )
    return message


class _Status(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: tuple[tuple[str, Any], ...]) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


class Gateway(grpc.ServerInterceptor):
    def __init__(
        self,
        *,
        keys: KeyRing | None = None,
        resolve: Callable[[str], str] = lambda name: name,
        metrics: Metrics | None = None,
        audit: AuditLog | None = None,
        audit_reads: bool = False,
        default_deadline_s: float = 0.0,
        admission: Admission | None = None,
        stream_idle_timeout_s: float = 0.0,
        work: Lane | None = None,
        health: Lane | None = None,
        max_health_watches: int = 0,
    ) -> None:
        self._default_deadline_s = default_deadline_s
        self._admission = admission
        self._work, self._health = work, health
        self._inline = InlinePool()
        self._watch_lock = threading.Lock()
        self._watches = 0
        self._max_watches = max_health_watches
        self._stream_idle_timeout_s = stream_idle_timeout_s
        self._refused_logged = time.monotonic()
        self._refused_since = 0
        self._keys = keys
        self._resolve = resolve
        self._metrics = metrics
        self._audit = audit
        self._audit_reads = audit_reads
        self._entries: dict[str, _Entry | None] = {}

    def _note_refusal(self) -> None:
        """Count a refused call; say how many, at most every 10 seconds."""
        self._refused_since += 1
        now = time.monotonic()
        if now - self._refused_logged >= 10.0:
            log.warning(
                "refused %d calls in the last %.0f s (at capacity or over a key's limits)",
                self._refused_since,
                now - self._refused_logged,
            )
            self._refused_logged, self._refused_since = now, 0

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        # This runs on gRPC's poll thread, for every call: keep it to a dictionary lookup and a comparison.
        method = handler_call_details.method
        try:
            entry = self._entries[method]
        except KeyError:  # a method's handler never changes: wrap it once
            handler = continuation(handler_call_details)
            entry = self._entries[method] = None if handler is None else self._entry(handler, method)
        if entry is None:
            return None
        if entry.lane is not None and entry.lane.full():
            return entry.refusal
        return entry.handler

    def _entry(self, handler: grpc.RpcMethodHandler, method: str) -> _Entry:
        call = _Method(self, method, streaming=handler.unary_unary is None)
        lane = self._health if call.rule is None else self._work
        pool = None if lane is None else lane.pool
        if method == _WATCH and getattr(handler.unary_stream, "experimental_non_blocking", False):
            watched = handler._replace(unary_stream=call.watching(handler.unary_stream, pool))
            return _Entry(watched, lane, None if lane is None else call.refusal(handler, lane))
        handler = handler._replace(request_deserializer=_lenient(handler.request_deserializer))
        if handler.unary_unary is not None:
            handler = handler._replace(unary_unary=_on(pool, call.unary(handler.unary_unary, streamed=False)))
        elif handler.stream_unary is not None:
            handler = handler._replace(stream_unary=_on(pool, call.unary(handler.stream_unary, streamed=True)))
        elif handler.unary_stream is not None:
            handler = handler._replace(unary_stream=_on(pool, call.streaming(handler.unary_stream, streamed=False)))
        elif handler.stream_stream is not None:
            handler = handler._replace(stream_stream=_on(pool, call.streaming(handler.stream_stream, streamed=True)))
        return _Entry(handler, lane, None if lane is None else call.refusal(handler, lane))

    def _overloaded(self, limit: str, cap: int) -> _Status:
        """The status of a refusal at the front door (the same one the worker's admission gives)."""
        error = EmbedsvcError(
            Reason.OVERLOADED,
            f"the server is at capacity ({limit} = {cap}); retry shortly",
            metadata={"limit": limit},
            retry_after_s=OVERLOAD_RETRY_S,
        )
        grpc_status = rpc_status.to_status(to_status(error))
        trailers = (*grpc_status.trailing_metadata, (PUSHBACK, str(round(OVERLOAD_RETRY_S * 1e3))))
        return _Status(grpc_status.code, grpc_status.details, trailers)

    def _watch_started(self) -> bool:
        with self._watch_lock:
            if self._max_watches and self._watches >= self._max_watches:
                return False
            self._watches += 1
            return True

    def _watch_ended(self) -> None:
        with self._watch_lock:
            self._watches -= 1


class _Entry(NamedTuple):
    """How the gateway answers one method: its wrapped handler, the lane it runs in, and the refusal for a full lane."""

    handler: grpc.RpcMethodHandler
    lane: Lane | None
    refusal: grpc.RpcMethodHandler | None


def _on(pool: Any, behavior: Callable[..., Any]) -> Callable[..., Any]:
    """Run `behavior` on `pool` (gRPC reads the attribute; None: the server's default pool)."""
    if pool is not None:
        behavior.experimental_thread_pool = pool  # type: ignore[attr-defined]
    return behavior


class _Method:
    """Everything the gateway knows about one method, computed once."""

    def __init__(self, gateway: Gateway, method: str, *, streaming: bool) -> None:
        self.gateway = gateway
        self.method = method
        self.is_stream = streaming
        service, _, name = method.lstrip("/").rpartition("/")
        self.service, self.name = service, name
        self.rule = rule = roles.rule(method)
        self.writes = rule is not None and rule.role is not roles.READ
        # What a call of this method needs beyond the handler, decided once (the per-call path tests flags only).
        self.authenticates = gateway._keys is not None and rule is not None
        # The request is read for its collections and counts, and checked against the key's role and scope.
        self.inspects = rule is not None and (self.authenticates or bool(rule.collections or rule.counts))
        # The second door (streams, heavy calls, per-key limits); the front door's lane already caps the rest.
        admission = gateway._admission
        self.admits = (
            admission is not None
            and rule is not None
            and (streaming or gateway._work is None or admission.limits(method, key_limits=self.authenticates))
        )
        self.audited = gateway._audit is not None and rule is not None and (self.writes or gateway._audit_reads)
        metrics = gateway._metrics
        self.in_flight = metrics.in_flight.labels(service, name) if metrics else None
        self.latency = metrics.latency.labels(service, name) if metrics else None
        self._counters: dict[str, Any] = {}

    def counter(self, code: str) -> Any:
        """The requests counter of this method and code (label lookups take a lock: each is made once)."""
        counter = self._counters.get(code)
        if counter is None:
            assert self.gateway._metrics is not None
            counter = self._counters[code] = self.gateway._metrics.requests.labels(self.service, self.name, code)
        return counter

    def refusal(self, handler: grpc.RpcMethodHandler, lane: Lane) -> grpc.RpcMethodHandler:
        """The handler of a call refused at the front door: it runs on the poll thread (`InlinePool`) and never reads
        the request (as a request stream, gRPC receives nothing before the handler asks), so nothing can block."""
        gateway = self.gateway
        status = gateway._overloaded(lane.limit, lane.cap)
        metrics = gateway._metrics
        # Made with the method's first call, so its shed series exists at 0 before any refusal: alerts on its rate
        # see the first one (a counter that appears at 1 has no increase to rate).
        counted = metrics.requests.labels(self.service, self.name, status.code.name) if metrics else None
        latency = self.latency
        method = self.method

        def refuse(_requests: Any, context: grpc.ServicerContext) -> None:
            started = time.perf_counter()
            request_id = _request_id(context)
            gateway._note_refusal()
            if counted is not None and latency is not None:
                counted.inc()
                latency.observe(time.perf_counter() - started)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "%s RESOURCE_EXHAUSTED OVERLOADED at the front door",
                    method,
                    extra={
                        "call": {
                            "request_id": request_id,
                            "method": method,
                            "code": status.code.name,
                            "reason": Reason.OVERLOADED.value,
                            "duration_ms": 0.0,
                            "key": "",
                        }
                    },
                )
            context.abort_with_status(
                _Status(status.code, status.details, (*status.trailing_metadata, (REQUEST_ID, request_id)))
            )

        refuse.experimental_thread_pool = gateway._inline  # type: ignore[attr-defined]
        if handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(refuse, response_serializer=handler.response_serializer)
        return grpc.stream_unary_rpc_method_handler(refuse, response_serializer=handler.response_serializer)

    def watching(self, behavior: Callable[..., None], pool: Any) -> Callable[..., None]:
        """Health/Watch in gRPC's non-blocking form: a watch holds no thread while it waits for a change, and at most
        `max_health_watches` are open at once (so that watches cannot starve the server, nor fill its memory)."""
        gateway = self.gateway
        in_flight, counted = self.in_flight, None
        if gateway._metrics is not None:
            counted = gateway._metrics.requests.labels(self.service, self.name, grpc.StatusCode.OK.name)

        def ended() -> None:
            gateway._watch_ended()
            if in_flight is not None and counted is not None:
                in_flight.dec()
                counted.inc()

        def wrapper(request: Any, context: grpc.ServicerContext, send_response_callback: Callable[..., None]) -> None:
            if not gateway._watch_started():
                status = gateway._overloaded("max_health_watches", gateway._max_watches)
                trailers = (*status.trailing_metadata, (REQUEST_ID, _request_id(context)))
                context.abort_with_status(_Status(status.code, status.details, trailers))
            if in_flight is not None:
                in_flight.inc()
            if not context.add_callback(ended):  # the call has already ended
                ended()
                return
            behavior(request, context, send_response_callback)

        wrapper.experimental_non_blocking = True  # type: ignore[attr-defined]
        return _on(pool, wrapper)

    # ---- one call ------------------------------------------------------------------------------------------------

    def _start(self, context: grpc.ServicerContext, *, unary_response: bool) -> _Call:
        call = _Call(self, context, unary_response=unary_response)
        if self.in_flight is not None:
            self.in_flight.inc()
        return call

    def unary(self, behavior: Callable[..., Any], *, streamed: bool) -> Callable[..., Any]:
        def wrapper(request: Any, context: grpc.ServicerContext) -> Any:
            call = self._start(context, unary_response=True)
            try:
                request = call.admit(request, streamed)
                response = behavior(request, context)
                call.succeeded()
                return response
            except Exception as exc:
                call.failed(exc)
            finally:
                call.finish()

        return wrapper

    def streaming(self, behavior: Callable[..., Iterator[Any]], *, streamed: bool) -> Callable[..., Iterator[Any]]:
        def wrapper(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            call = self._start(context, unary_response=False)
            try:
                request = call.admit(request, streamed)
                yield from behavior(request, context)
                call.succeeded()
            except Exception as exc:
                call.failed(exc)
            finally:
                call.finish()

        return wrapper


class _Call:
    __slots__ = (
        "_control_token",
        "_token",
        "authorization",
        "code",
        "collections",
        "context",
        "control",
        "count",
        "method",
        "principal",
        "reason",
        "request_id",
        "started",
        "ticket",
    )

    def __init__(self, method: _Method, context: grpc.ServicerContext, *, unary_response: bool) -> None:
        self.method = method
        self.context = context
        self.started = time.perf_counter()
        # The call's deadline: the caller's, or for unary-response calls without one the server's default (streams
        # may run as long as they keep moving).
        remaining: float | None = context.time_remaining()
        if remaining is not None and remaining > _NO_DEADLINE:  # grpc reports "no deadline" as one far away
            remaining = None
        default = method.gateway._default_deadline_s
        if remaining is None and unary_response and default > 0:
            remaining = default
        # Cancelled when the call ends early: asked of gRPC when checked; a callback only once something waits.
        self.control = CallControl(
            None if remaining is None else time.monotonic() + remaining,
            alive=context.is_active,
            watch=context.add_callback,
        )
        self._control_token = calls._CURRENT.set(self.control)
        request_id = authorization = None
        for key, value in context.invocation_metadata() or ():
            if key == REQUEST_ID:
                request_id = value
            elif key == "authorization":
                authorization = value
        self.request_id = _valid_id(request_id)
        self.authorization = authorization
        self.principal: Principal = ANONYMOUS
        self.code = grpc.StatusCode.OK
        self.reason = ""
        self.collections: set[str] = set()
        self.count = 0
        self._token: Any = None
        self.ticket: Ticket | None = None

    def admit(self, request: Any, streamed: bool) -> Any:
        """Authenticate and authorize; decode leniently. Streamed requests are checked message by message."""
        method = self.method
        gateway = method.gateway
        if method.authenticates:
            self.principal = gateway._keys.authenticate(self.authorization)  # type: ignore[union-attr]
            self._token = CURRENT.set(self.principal)
        if method.admits:  # health checks are never refused
            self.ticket = gateway._admission.enter(  # type: ignore[union-attr]
                method.method, streaming=method.is_stream, key=self.principal.name
            )
        if not streamed:
            if isinstance(request, Undecodable):
                _checked(request)
            if method.inspects:
                self._check(request)
            return request
        if gateway._stream_idle_timeout_s > 0:
            request = _idle_limited(request, gateway._stream_idle_timeout_s)

        def messages() -> Iterator[Any]:
            for message in request:
                self._check(_checked(message))
                yield message

        return messages()

    def _check(self, message: Any) -> None:
        rule = self.method.rule
        if rule is None:
            return
        names = set(roles.named_collections(message, rule.collections))
        resolved = {self.method.gateway._resolve(n) for n in names}
        self.collections |= names | resolved
        self.count += roles.count(message, rule.counts)
        authorize(self.principal, rule.role, names | resolved)

    def succeeded(self) -> None:
        self.context.set_trailing_metadata(((REQUEST_ID, self.request_id),))

    def failed(self, exc: Exception) -> None:
        if self.context.code() is not None:  # context.abort() was called: let it through untouched
            raise exc
        if isinstance(exc, EmbedsvcError):
            status = to_status(exc)
            self.reason = exc.reason.value
        else:
            log.error("%s failed unexpectedly (request %s)", self.method.method, self.request_id, exc_info=exc)
            status = internal_status()
            self.reason = Reason.INTERNAL.value
        grpc_status = rpc_status.to_status(status)
        self.code = grpc_status.code
        trailers = (*grpc_status.trailing_metadata, (REQUEST_ID, self.request_id))
        trailers = (*trailers, *_pushback(exc, grpc_status.code))
        self.context.abort_with_status(_Status(grpc_status.code, grpc_status.details, trailers))

    def finish(self) -> None:
        if self._token is not None:
            CURRENT.reset(self._token)
        calls._CURRENT.reset(self._control_token)
        method = self.method
        gateway = method.gateway
        if self.ticket is not None:
            gateway._admission.leave(self.ticket)  # type: ignore[union-attr]
        seconds = time.perf_counter() - self.started
        code = self.code.name
        if method.in_flight is not None and method.latency is not None:
            method.in_flight.dec()
            method.latency.observe(seconds)
            method.counter(code).inc()
        ok = self.code is grpc.StatusCode.OK
        level = logging.DEBUG if ok else logging.INFO
        if self.reason in _REFUSED:  # under overload, one line per refusal would cost more than the refusal
            level = logging.DEBUG
            gateway._note_refusal()
        logged = log.isEnabledFor(level)
        if not logged and not method.audited:
            return
        fields = {
            "request_id": self.request_id,
            "method": method.method,
            "code": code,
            "reason": self.reason,
            "duration_ms": round(seconds * 1e3, 2),
            "key": self.principal.name,
        }
        if logged:
            log.log(level, "%s %s %s %.1f ms", method.method, code, self.reason, seconds * 1e3, extra={"call": fields})
        if method.audited:
            gateway._audit.record(  # type: ignore[union-attr]
                durable=method.writes,  # a write or admin call is answered once its line is on disk
                **fields,
                peer=self.context.peer(),
                collections=sorted(self.collections),
                count=self.count,
            )


def _pushback(exc: Exception, code: grpc.StatusCode) -> tuple[tuple[str, str], ...]:
    """The retry delay a failure carries for gRPC's retry policies: the reason's delay when retrying helps, and -1
    ("do not retry") for the other failures under a code the published policy retries (protos/service_config.json),
    such as STORAGE_FULL: a client's policy then retries only what the server did not refuse for good."""
    if isinstance(exc, EmbedsvcError) and exc.reason in RETRY_AFTER:
        delay = exc.retry_after_s if exc.retry_after_s is not None else RETRY_AFTER[exc.reason]
        return ((PUSHBACK, str(max(1, round(delay * 1e3)))),)
    if code in RETRIED_CODES:
        return ((PUSHBACK, "-1"),)
    return ()


def _valid_id(given: Any) -> str:
    """The caller's request id when it is a usable one, else a new one."""
    if given is not None and isinstance(given, str) and 0 < len(given) <= 128 and given.isprintable():
        return given
    return _new_id()


_IDS = random.Random(os.urandom(32))  # noqa: S311 - request ids label calls in logs; they guard nothing


def _new_id() -> str:
    """A new request id: 32 hex digits, random (as a uuid4's hex, at a sixth of the cost: no syscall, no object)."""
    return f"{_IDS.getrandbits(128):032x}"


def _request_id(context: grpc.ServicerContext) -> str:
    for name, value in context.invocation_metadata():
        if name == REQUEST_ID:
            return _valid_id(value)
    return _new_id()


_END = object()


def _idle_limited(source: Iterator[Any], timeout: float) -> Iterator[Any]:
    """The messages of a request stream, ended with STREAM_IDLE when none arrives for `timeout` seconds.

    A helper thread reads the stream one message ahead (a queue of one keeps gRPC's flow control: the client cannot
    send further than the handler reads); it ends when the stream ends, fails, or the handler stops reading."""
    slot: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=1)
    stopped = threading.Event()

    def pump() -> None:
        item: tuple[Any, BaseException | None]
        try:
            for message in source:
                item = (message, None)
                while not stopped.is_set():
                    try:
                        slot.put(item, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stopped.is_set():
                    return
            item = (_END, None)
        except BaseException as exc:  # the call ended or failed: hand it over
            item = (_END, exc)
        while not stopped.is_set():
            try:
                slot.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    threading.Thread(target=pump, name="stream-reader", daemon=True).start()
    try:
        while True:
            try:
                message, error = slot.get(timeout=timeout)
            except queue.Empty:
                raise EmbedsvcError(
                    Reason.STREAM_IDLE,
                    f"the stream sent nothing for {timeout:g} s and was ended (server.stream_idle_timeout_s); what "
                    "was acknowledged before stays",
                ) from None
            if error is not None:
                raise error
            if message is _END:
                return
            yield message
    finally:
        stopped.set()
