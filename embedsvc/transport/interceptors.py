"""Server interceptors: domain errors become rich statuses, anything else a generic INTERNAL; every call is logged."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from grpc_status import rpc_status

from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.transport.status import internal_status, to_status

log = logging.getLogger("embedsvc.access")


class ErrorInterceptor(grpc.ServerInterceptor):
    """Turns exceptions into statuses so that servicers raise domain errors and never touch the context."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        handler = handler._replace(request_deserializer=_lenient(handler.request_deserializer))
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=_unary(handler.unary_unary, method, streamed=False))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=_unary(handler.stream_unary, method, streamed=True))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=_streaming(handler.unary_stream, method, streamed=False))
        if handler.stream_stream is not None:
            return handler._replace(stream_stream=_streaming(handler.stream_stream, method, streamed=True))
        return handler


class Undecodable:
    """Stands in for a request message that could not be parsed (invalid UTF-8 in a string field, bad bytes).

    grpc answers a deserializer exception with a bare INTERNAL; decoding leniently and refusing in the handler gives
    the caller INVALID_ARGUMENT / INVALID_ENCODING instead."""

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


def _refuse(message: Undecodable) -> EmbedsvcError:
    return EmbedsvcError(
        Reason.INVALID_ENCODING,
        f"the request cannot be decoded (string fields must be valid UTF-8): {message.error}",
    )


def _decoded(request: Any, streamed: bool) -> Any:
    if not streamed:
        if isinstance(request, Undecodable):
            raise _refuse(request)
        return request

    def messages() -> Iterator[Any]:
        for message in request:
            if isinstance(message, Undecodable):
                raise _refuse(message)
            yield message

    return messages()


def _abort(context: grpc.ServicerContext, method: str, exc: Exception, started: float) -> None:
    if isinstance(exc, EmbedsvcError):
        log.info("%s %s %s %.1f ms", method, exc.reason, exc.message, (time.perf_counter() - started) * 1e3)
        context.abort_with_status(rpc_status.to_status(to_status(exc)))
    log.error("%s failed unexpectedly", method, exc_info=exc)
    context.abort_with_status(rpc_status.to_status(internal_status()))


def _already_aborted(context: grpc.ServicerContext) -> bool:
    # context.abort() raises a bare Exception after setting the code; let it through untouched.
    return context.code() is not None


def _unary(behavior: Callable[..., Any], method: str, *, streamed: bool) -> Callable[..., Any]:
    def wrapper(request: Any, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        try:
            response = behavior(_decoded(request, streamed), context)
        except Exception as exc:
            if _already_aborted(context):
                raise
            _abort(context, method, exc, started)
        log.debug("%s OK %.1f ms", method, (time.perf_counter() - started) * 1e3)
        return response

    return wrapper


def _streaming(behavior: Callable[..., Iterator[Any]], method: str, *, streamed: bool) -> Callable[..., Iterator[Any]]:
    def wrapper(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        started = time.perf_counter()
        try:
            yield from behavior(_decoded(request, streamed), context)
        except Exception as exc:
            if _already_aborted(context):
                raise
            _abort(context, method, exc, started)

    return wrapper
