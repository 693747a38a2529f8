"""Server interceptors: domain errors become rich statuses, anything else a generic INTERNAL; every call is logged."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from grpc_status import rpc_status

from embedsvc.errors import EmbedsvcError
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
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=_unary(handler.unary_unary, method))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=_unary(handler.stream_unary, method))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=_streaming(handler.unary_stream, method))
        if handler.stream_stream is not None:
            return handler._replace(stream_stream=_streaming(handler.stream_stream, method))
        return handler


def _abort(context: grpc.ServicerContext, method: str, exc: Exception, started: float) -> None:
    if isinstance(exc, EmbedsvcError):
        log.info("%s %s %s %.1f ms", method, exc.reason, exc.message, (time.perf_counter() - started) * 1e3)
        context.abort_with_status(rpc_status.to_status(to_status(exc)))
    log.error("%s failed unexpectedly", method, exc_info=exc)
    context.abort_with_status(rpc_status.to_status(internal_status()))


def _already_aborted(context: grpc.ServicerContext) -> bool:
    # context.abort() raises a bare Exception after setting the code; let it through untouched.
    return context.code() is not None


def _unary(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    def wrapper(request: Any, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        try:
            response = behavior(request, context)
        except Exception as exc:
            if _already_aborted(context):
                raise
            _abort(context, method, exc, started)
        log.debug("%s OK %.1f ms", method, (time.perf_counter() - started) * 1e3)
        return response

    return wrapper


def _streaming(behavior: Callable[..., Iterator[Any]], method: str) -> Callable[..., Iterator[Any]]:
    def wrapper(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        started = time.perf_counter()
        try:
            yield from behavior(request, context)
        except Exception as exc:
            if _already_aborted(context):
                raise
            _abort(context, method, exc, started)

    return wrapper
