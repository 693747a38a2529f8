"""The gateway every call passes through, in one interceptor (one wrapper per call keeps the per-call cost small):

1. a request id (the caller's `x-request-id`, or a new one), returned in the trailing metadata;
2. authentication and authorization when auth is on (`transport/auth.py`, the rules of `transport/roles.py`);
3. the call itself, with domain errors turned into rich statuses (`transport/status.py`) and anything else into a
   generic INTERNAL, the details in the server log only;
4. metrics, one access-log line (JSON fields with --log-format json), and the audit log for writes and admin actions.
Requests that cannot be decoded are refused with INVALID_ARGUMENT / INVALID_ENCODING instead of grpc's bare INTERNAL.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from grpc_status import rpc_status

from embedsvc import calls
from embedsvc.calls import CallControl
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.transport import roles
from embedsvc.transport.admission import Admission, Ticket
from embedsvc.transport.audit import AuditLog
from embedsvc.transport.auth import ANONYMOUS, CURRENT, KeyRing, Principal, authorize
from embedsvc.transport.metrics import Metrics
from embedsvc.transport.status import RETRY_AFTER, internal_status, to_status

log = logging.getLogger("embedsvc.access")
REQUEST_ID = "x-request-id"
PUSHBACK = "grpc-retry-pushback-ms"  # the retry delay, where gRPC's own retry policies look for it
_REFUSED = (Reason.OVERLOADED.value, Reason.RATE_LIMITED.value)
_NO_DEADLINE = 1e8  # seconds: a call's time_remaining() beyond this means it has no deadline


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
    ) -> None:
        self._default_deadline_s = default_deadline_s
        self._admission = admission
        self._stream_idle_timeout_s = stream_idle_timeout_s
        self._refused_logged = time.monotonic()
        self._refused_since = 0
        self._keys = keys
        self._resolve = resolve
        self._metrics = metrics
        self._audit = audit
        self._audit_reads = audit_reads
        self._handlers: dict[str, grpc.RpcMethodHandler | None] = {}

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
        method = handler_call_details.method
        if method not in self._handlers:  # a method's handler never changes: wrap it once
            handler = continuation(handler_call_details)
            self._handlers[method] = None if handler is None else self._wrap(handler, method)
        return self._handlers[method]

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        call = _Method(self, method, streaming=handler.unary_unary is None)
        handler = handler._replace(request_deserializer=_lenient(handler.request_deserializer))
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=call.unary(handler.unary_unary, streamed=False))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=call.unary(handler.stream_unary, streamed=True))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=call.streaming(handler.unary_stream, streamed=False))
        if handler.stream_stream is not None:
            return handler._replace(stream_stream=call.streaming(handler.stream_stream, streamed=True))
        return handler


class _Method:
    """Everything the gateway knows about one method, computed once."""

    def __init__(self, gateway: Gateway, method: str, *, streaming: bool) -> None:
        self.gateway = gateway
        self.method = method
        self.is_stream = streaming
        service, _, name = method.lstrip("/").rpartition("/")
        self.service, self.name = service, name
        self.rule = roles.rule(method)
        self.writes = self.rule is not None and self.rule.role is not roles.READ
        metrics = gateway._metrics
        self.in_flight = metrics.in_flight.labels(service, name) if metrics else None
        self.latency = metrics.latency.labels(service, name) if metrics else None

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
        self.control = CallControl(None if remaining is None else time.monotonic() + remaining)
        context.add_callback(self.control.cancel)  # runs when the call ends, early or not
        self._control_token = calls._CURRENT.set(self.control)
        metadata = dict(context.invocation_metadata())
        given = metadata.get(REQUEST_ID)
        valid = isinstance(given, str) and 0 < len(given) <= 128 and given.isprintable()
        self.request_id = given if valid else uuid.uuid4().hex
        self.authorization = metadata.get("authorization")
        self.principal: Principal = ANONYMOUS
        self.code = grpc.StatusCode.OK
        self.reason = ""
        self.collections: set[str] = set()
        self.count = 0
        self._token: Any = None
        self.ticket: Ticket | None = None

    def admit(self, request: Any, streamed: bool) -> Any:
        """Authenticate and authorize; decode leniently. Streamed requests are checked message by message."""
        gateway, rule = self.method.gateway, self.method.rule
        if gateway._keys is not None and rule is not None:
            self.principal = gateway._keys.authenticate(self.authorization)
        self._token = CURRENT.set(self.principal)
        if gateway._admission is not None and rule is not None:  # health checks are never refused
            self.ticket = gateway._admission.enter(
                self.method.method, streaming=self.method.is_stream, key=self.principal.name
            )
        if not streamed:
            self._check(_checked(request))
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
        if isinstance(exc, EmbedsvcError) and exc.reason in RETRY_AFTER:
            delay = exc.retry_after_s if exc.retry_after_s is not None else RETRY_AFTER[exc.reason]
            trailers = (*trailers, (PUSHBACK, str(max(1, round(delay * 1e3)))))
        self.context.abort_with_status(_Status(grpc_status.code, grpc_status.details, trailers))

    def finish(self) -> None:
        if self._token is not None:
            CURRENT.reset(self._token)
        calls._CURRENT.reset(self._control_token)
        if self.ticket is not None:
            self.method.gateway._admission.leave(self.ticket)  # type: ignore[union-attr]
        method = self.method
        seconds = time.perf_counter() - self.started
        code = self.code.name
        gateway = method.gateway
        if gateway._metrics is not None:
            assert method.in_flight is not None and method.latency is not None
            method.in_flight.dec()
            method.latency.observe(seconds)
            gateway._metrics.requests.labels(method.service, method.name, code).inc()
        fields = {
            "request_id": self.request_id,
            "method": method.method,
            "code": code,
            "reason": self.reason,
            "duration_ms": round(seconds * 1e3, 2),
            "key": self.principal.name,
        }
        level = logging.INFO if self.code is not grpc.StatusCode.OK else logging.DEBUG
        if self.reason in _REFUSED:  # under overload, one line per refusal would cost more than the refusal
            level = logging.DEBUG
            gateway._note_refusal()
        log.log(level, "%s %s %s %.1f ms", method.method, code, self.reason, seconds * 1e3, extra={"call": fields})
        audit = gateway._audit
        if audit is not None and method.rule is not None and (method.writes or gateway._audit_reads):
            audit.record(
                **fields,
                peer=self.context.peer(),
                collections=sorted(self.collections),
                count=self.count,
            )


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
