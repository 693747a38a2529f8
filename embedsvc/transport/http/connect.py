"""The Connect protocol's unary and server-streaming calls, for every RPC of the table of services (embedsvc/api.py).

    POST /embedsvc.v1.ArithmeticService/Arithmetic   content-type: application/json   {"model": "...", ...}

Unary calls answer the response message as proto3 JSON. Server-streaming calls answer NDJSON (one message per line)
to `application/json`, and Connect's enveloped stream to `application/connect+json`. Client and bidirectional
streams (UpsertStream, EmbedTextsStream) are gRPC only (501). Errors are JSON: Connect's `code` and `message`, the
reason and metadata from the error catalogue, and the google.rpc details; the HTTP status follows Connect's mapping
(400, 401, 403, 404, 409, 429, 499, 500, 501, 503, 504). `connect-timeout-ms` sets the deadline; `authorization:
Bearer <key>` is passed on as it is.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from google.protobuf import json_format
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import error_details_pb2
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from embedsvc import api
from embedsvc.errors import Reason
from embedsvc.transport.http.openapi import message_schema
from embedsvc.transport.http.upstream import Failure, HttpError, Upstream

_STATUS = {
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
_JSON = "application/json"
_CONNECT_JSON = "application/connect+json"
_NDJSON = "application/x-ndjson"
_END_STREAM = 0x02


@dataclass(frozen=True)
class Method:
    path: str
    descriptor: MethodDescriptor
    request: type[Message]
    response: type[Message]

    @property
    def server_streaming(self) -> bool:
        return bool(self.descriptor.server_streaming)

    @property
    def client_streaming(self) -> bool:
        return bool(self.descriptor.client_streaming)


def api_methods() -> dict[str, Method]:
    """Every RPC of the API (the table of services, embedsvc/api.py) and the health check, by its path."""
    found = {}
    for service in (*api.SERVICES, api.HEALTH):
        for path, m in service.methods():
            if service is api.HEALTH and m.name != "Check":
                continue  # grpcio's health servicer answers Check (and Watch, a never-ending stream) only
            found[path] = Method(path, m, GetMessageClass(m.input_type), GetMessageClass(m.output_type))
    return found


def _error_json(failure: Failure) -> dict[str, Any]:
    body: dict[str, Any] = {"code": failure.code.name.lower(), "message": failure.message}
    if failure.reason:
        body["reason"] = failure.reason
    if failure.metadata:
        body["metadata"] = failure.metadata
    shown = []
    for any_message in failure.details:
        entry: dict[str, Any] = {
            "type": any_message.TypeName(),
            "value": base64.b64encode(any_message.value).decode().rstrip("="),
        }
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo, error_details_pb2.BadRequest):
            if any_message.Is(kind.DESCRIPTOR):
                unpacked = kind()
                any_message.Unpack(unpacked)
                entry["debug"] = json_format.MessageToDict(unpacked)
        shown.append(entry)
    if shown:
        body["details"] = shown
    return body


def _error_response(failure: Failure) -> Response:
    return JSONResponse(_error_json(failure), status_code=_STATUS.get(failure.code, 500), headers=failure.headers)


def _envelope(flags: int, payload: bytes) -> bytes:
    return struct.pack(">BI", flags, len(payload)) + payload


def _to_json(message: Message) -> str:
    return json_format.MessageToJson(message, indent=None, ensure_ascii=False)


class _ServiceName(Convertor[str]):
    """A package-qualified service name (`embedsvc.v1.WordService`): the first segment of every Connect path, which
    other route modules' paths (`/v1/embeddings`, `/embed`) never look like."""

    regex = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("service", _ServiceName())


class Connect:
    """The Connect routes: each call transcoded and forwarded to the gRPC server through `upstream`."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.methods = api_methods()

    def _parse(self, method: Method, body: bytes, enveloped: bool) -> Message:
        if enveloped:
            if len(body) < 5:
                raise HttpError(grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_ENCODING, "missing Connect envelope")
            body = body[5 : 5 + struct.unpack(">I", body[1:5])[0]]
        try:
            return json_format.Parse(body or b"{}", method.request(), ignore_unknown_fields=False)
        except (json_format.ParseError, UnicodeDecodeError, RecursionError) as exc:
            raise HttpError(
                grpc.StatusCode.INVALID_ARGUMENT,
                Reason.INVALID_ENCODING,
                f"the body is not a JSON {method.request.DESCRIPTOR.name}: {str(exc)[:500]}",
            ) from None

    @staticmethod
    def _timeout(request: Request) -> float | None:
        value = request.headers.get("connect-timeout-ms", "")
        if not value:
            return None
        if not value.isdigit() or len(value) > 10:
            raise HttpError(
                grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_VALUE, f"connect-timeout-ms: not a number: {value!r}"
            )
        return int(value) / 1000

    async def call(self, request: Request) -> Response:
        method = self.methods.get(request.url.path)
        try:
            if method is None:
                raise HttpError(grpc.StatusCode.UNIMPLEMENTED, "", f"no such method: {request.url.path}")
            if method.client_streaming:
                raise HttpError(
                    grpc.StatusCode.UNIMPLEMENTED,
                    "",
                    f"{request.url.path} streams requests: call it over gRPC (its unary form works over HTTP)",
                )
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            enveloped = content_type == _CONNECT_JSON
            if content_type not in (_JSON, _CONNECT_JSON) or (enveloped and not method.server_streaming):
                message = f"content-type {content_type or '(none)'}: send application/json" + (
                    " or application/connect+json" if method.server_streaming else ""
                )
                return JSONResponse(_error_json(Failure(grpc.StatusCode.UNKNOWN, message)), status_code=415)
            message = self._parse(method, await self.upstream.body(request), enveloped)
            metadata, timeout = self.upstream.metadata(request), self._timeout(request)
        except HttpError as exc:
            return _error_response(Failure.local(exc))
        if method.server_streaming:
            return await self._stream(method, message, metadata, timeout, enveloped)
        rpc = self.upstream.channel.unary_unary(
            method.path,
            request_serializer=method.request.SerializeToString,
            response_deserializer=method.response.FromString,
        )
        try:
            response = await rpc(message, metadata=metadata, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return _error_response(Failure.of(exc))
        return Response(_to_json(response) + "\n", media_type=_JSON)

    async def _stream(
        self, method: Method, message: Message, metadata: list[tuple[str, str]], timeout: float | None, connect: bool
    ) -> Response:
        rpc = self.upstream.channel.unary_stream(
            method.path,
            request_serializer=method.request.SerializeToString,
            response_deserializer=method.response.FromString,
        )
        call = rpc(message, metadata=metadata, timeout=timeout)
        iterator = call.__aiter__()
        try:  # the first message decides the HTTP status: an error before it is an ordinary error response
            first: Message | None = await iterator.__anext__()
        except StopAsyncIteration:
            first = None
        except grpc.aio.AioRpcError as exc:
            if connect:
                return Response(self._connect_end(exc), media_type=_CONNECT_JSON)
            return _error_response(Failure.of(exc))

        async def frames() -> AsyncIterator[bytes]:
            failure: grpc.aio.AioRpcError | None = None
            try:
                if first is not None:
                    yield self._frame(first, connect)
                    async for next_message in iterator:
                        yield self._frame(next_message, connect)
            except grpc.aio.AioRpcError as exc:
                failure = exc
            except asyncio.CancelledError:
                call.cancel()
                raise
            if connect:
                yield self._connect_end(failure)
            elif failure is not None:
                yield (json.dumps({"error": _error_json(Failure.of(failure))}) + "\n").encode()

        return StreamingResponse(frames(), media_type=_CONNECT_JSON if connect else _NDJSON)

    @staticmethod
    def _frame(message: Message, connect: bool) -> bytes:
        text = _to_json(message).encode()
        return _envelope(0, text) if connect else text + b"\n"

    @staticmethod
    def _connect_end(failure: grpc.aio.AioRpcError | None) -> bytes:
        end: dict[str, Any] = {}
        if failure is not None:
            end["error"] = _error_json(Failure.of(failure))
        return _envelope(_END_STREAM, json.dumps(end).encode())


def routes(upstream: Upstream) -> list[BaseRoute]:
    """One route for every `/<package>.<Service>/<Method>`: unknown methods answer Connect's unimplemented."""
    return [Route("/{service:service}/{method}", Connect(upstream).call, methods=["POST"])]


def openapi(schemas: dict[str, Any]) -> dict[str, Any]:
    """The paths of every RPC reachable over HTTP (not the client streams), with Connect's error schema."""
    paths: dict[str, Any] = {}
    for path, method in sorted(api_methods().items()):
        if method.client_streaming:
            continue
        service = method.descriptor.containing_service
        response_schema = message_schema(method.response.DESCRIPTOR, schemas)
        content = (
            {_NDJSON: {"schema": response_schema}, _CONNECT_JSON: {"schema": response_schema}}
            if method.server_streaming
            else {_JSON: {"schema": response_schema}}
        )
        paths[path] = {
            "post": {
                "operationId": f"{service.name}_{method.descriptor.name}",
                "tags": [service.name],
                "summary": f"{service.full_name}.{method.descriptor.name}"
                + (" (server stream: NDJSON, one message per line)" if method.server_streaming else ""),
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": message_schema(method.request.DESCRIPTOR, schemas)}},
                },
                "responses": {
                    "200": {"description": "The response message (proto3 JSON).", "content": content},
                    "default": {
                        "description": "An error.",
                        "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
                    },
                },
            }
        }
    schemas["Error"] = {
        "type": "object",
        "properties": {
            "code": {"type": "string", "description": "The gRPC status code, lower case (Connect)."},
            "message": {"type": "string"},
            "reason": {"type": "string", "description": "The machine-readable reason (errors.proto)."},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            "details": {"type": "array", "items": {"type": "object"}},
        },
        "required": ["code", "message"],
    }
    return paths
