"""The API over HTTP/1.1 and JSON: the Connect protocol's unary and server-streaming calls, an OpenAPI description,
and the explorer's static pages, on their own port.

Every call is transcoded and sent to this server's own gRPC service over a private Unix socket, so it passes the same
interceptor as a gRPC call (API keys and roles, admission control, deadlines, limits, metrics, audit) and reaches the
same servicers: nothing here re-implements the API, and the routes are built from the service descriptors, so a new
RPC is reachable over HTTP the moment it exists.

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
import contextlib
import json
import logging
import os
import socket
import ssl
import struct
import tempfile
import threading
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import uvicorn
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from embedsvc.errors import Hint, Reason
from embedsvc.settings import Settings
from embedsvc.v1 import (
    arithmetic_pb2,
    collections_pb2,
    images_pb2,
    latent_pb2,
    maps_pb2,
    models_pb2,
    operations_pb2,
    server_pb2,
    text_pb2,
    words_pb2,
)

log = logging.getLogger(__name__)

_MODULES = (
    server_pb2,
    models_pb2,
    words_pb2,
    arithmetic_pb2,
    text_pb2,
    images_pb2,
    latent_pb2,
    maps_pb2,
    collections_pb2,
    operations_pb2,
    health_pb2,
)
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
    """Every RPC of the API (and the health check), by its path."""
    found = {}
    for module in _MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                if module is health_pb2 and m.name != "Check":
                    continue  # grpcio's health servicer answers Check (and Watch, a never-ending stream) only
                path = f"/{service.full_name}/{m.name}"
                found[path] = Method(path, m, GetMessageClass(m.input_type), GetMessageClass(m.output_type))
    return found


class HttpError(Exception):
    def __init__(self, code: grpc.StatusCode, reason: str, message: str, metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.metadata = code, reason, message, metadata or {}


def _error_json(
    code: grpc.StatusCode, message: str, reason: str, metadata: dict[str, str], details: Iterable[Any] = ()
) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code.name.lower(), "message": message}
    if reason:
        body["reason"] = reason
    if metadata:
        body["metadata"] = metadata
    shown = []
    for any_message in details:
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


def _from_rpc_error(exc: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, dict[str, Any], dict[str, str]]:
    """The code, the JSON error body and extra HTTP headers (Retry-After) of a failed call."""
    reason, metadata, details, headers = "", {}, [], {}
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            details = list(status.details)
            for d in details:
                if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    d.Unpack(info)
                    reason, metadata = info.reason, dict(info.metadata)
        elif key == "grpc-retry-pushback-ms" and isinstance(value, str) and value.isdigit():
            headers["retry-after"] = str(max(1, -(-int(value) // 1000)))
    code = exc.code()
    message = _HTTP_WORDS.get(metadata.get("hint", ""), exc.details() or code.name)
    return code, _error_json(code, message, reason, metadata, details), headers


# Errors whose next step is said differently over HTTP than in the gRPC message (errors.Hint): the HTTP words.
_HTTP_WORDS = {Hint.SEND_API_KEY.value: "no API key: send the header `Authorization: Bearer <key>`"}


def _error_response(code: grpc.StatusCode, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=_STATUS.get(code, 500), headers=headers)


def _local_error(exc: HttpError) -> Response:
    return _error_response(exc.code, _error_json(exc.code, exc.message, exc.reason, exc.metadata))


def _envelope(flags: int, payload: bytes) -> bytes:
    return struct.pack(">BI", flags, len(payload)) + payload


def _to_json(message: Message) -> str:
    return json_format.MessageToJson(message, indent=None, ensure_ascii=False)


class Gateway:
    """The Starlette app: routes built from the descriptors, calls forwarded to the gRPC server at `grpc_target`."""

    def __init__(self, settings: Settings, grpc_target: str) -> None:
        self.settings = settings
        self.grpc_target = grpc_target
        self.methods = api_methods()
        self.max_body = settings.limits.max_message_bytes
        self._channel: grpc.aio.Channel | None = None
        self._openapi = json.dumps(openapi(self.methods)).encode()
        explorer = resources.files("embedsvc.transport") / "explorer"
        routes = [
            Route("/", lambda _r: RedirectResponse("/explorer/"), methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Mount("/explorer", StaticFiles(directory=str(explorer), html=True), name="explorer"),
            Route("/{service}/{method}", self.call, methods=["POST"]),
        ]
        middleware = []
        if settings.http_cors_origins:
            middleware.append(
                Middleware(
                    CORSMiddleware,
                    allow_origins=list(settings.http_cors_origins),
                    allow_methods=["POST", "GET"],
                    allow_headers=["authorization", "content-type", "connect-protocol-version", "connect-timeout-ms"],
                    expose_headers=["retry-after"],
                )
            )
        self.app = Starlette(
            routes=routes, middleware=middleware, lifespan=contextlib.asynccontextmanager(self._lifespan)
        )

    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        size = self.settings.limits.max_message_bytes
        self._channel = grpc.aio.insecure_channel(
            self.grpc_target,
            options=[("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size)],
        )
        try:
            yield
        finally:
            await self._channel.close()

    async def openapi(self, _request: Request) -> Response:
        return Response(self._openapi, media_type=_JSON)

    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise HttpError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                Reason.LIMIT_EXCEEDED,
                f"request body: {declared} bytes is over the limit of {self.max_body}",
                {"limit": str(self.max_body), "actual": declared},
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise HttpError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    Reason.LIMIT_EXCEEDED,
                    f"request body: over the limit of {self.max_body} bytes",
                    {"limit": str(self.max_body)},
                )
            chunks.append(chunk)
        return b"".join(chunks)

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

    def _metadata(self, request: Request) -> list[tuple[str, str]]:
        metadata = []
        for header in ("authorization", "x-request-id"):
            value = request.headers.get(header)
            if value:
                metadata.append((header, value))
        if request.client is not None:
            metadata.append(("x-forwarded-for", request.client.host))
        return metadata

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
                return JSONResponse(
                    _error_json(
                        grpc.StatusCode.UNKNOWN,
                        f"content-type {content_type or '(none)'}: send application/json"
                        + (" or application/connect+json" if method.server_streaming else ""),
                        "",
                        {},
                    ),
                    status_code=415,
                )
            message = self._parse(method, await self._body(request), enveloped)
            metadata, timeout = self._metadata(request), self._timeout(request)
        except HttpError as exc:
            return _local_error(exc)
        assert self._channel is not None
        if method.server_streaming:
            return await self._stream(method, message, metadata, timeout, enveloped)
        rpc = self._channel.unary_unary(
            method.path,
            request_serializer=method.request.SerializeToString,
            response_deserializer=method.response.FromString,
        )
        try:
            response = await rpc(message, metadata=metadata, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            code, body, headers = _from_rpc_error(exc)
            return _error_response(code, body, headers)
        return Response(_to_json(response) + "\n", media_type=_JSON)

    async def _stream(
        self, method: Method, message: Message, metadata: list[tuple[str, str]], timeout: float | None, connect: bool
    ) -> Response:
        assert self._channel is not None
        rpc = self._channel.unary_stream(
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
            code, body, headers = _from_rpc_error(exc)
            return _error_response(code, body, headers)

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
                _code, body, _headers = _from_rpc_error(failure)
                yield (json.dumps({"error": body}) + "\n").encode()

        return StreamingResponse(frames(), media_type=_CONNECT_JSON if connect else _NDJSON)

    @staticmethod
    def _frame(message: Message, connect: bool) -> bytes:
        text = _to_json(message).encode()
        return _envelope(0, text) if connect else text + b"\n"

    @staticmethod
    def _connect_end(failure: grpc.aio.AioRpcError | None) -> bytes:
        end: dict[str, Any] = {}
        if failure is not None:
            _code, end["error"], _headers = _from_rpc_error(failure)
        return _envelope(_END_STREAM, json.dumps(end).encode())


class HttpServer:
    """The gateway on its own port, run by uvicorn in a thread with its own event loop."""

    def __init__(self, settings: Settings, grpc_target: str) -> None:
        host = settings.http_host or settings.host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, settings.http_port or 0))
        except OSError as exc:
            self._socket.close()
            raise OSError(f"cannot listen on {host}:{settings.http_port} for HTTP: {exc}") from None
        self._socket.listen(2048)
        self.host = host
        self.port = int(self._socket.getsockname()[1])
        self.gateway = Gateway(settings, grpc_target)
        tls: dict[str, Any] = {}
        if settings.tls is not None:
            tls = {"ssl_certfile": str(settings.tls.cert_file), "ssl_keyfile": str(settings.tls.key_file)}
            if settings.tls.client_ca_file is not None:
                tls.update(ssl_ca_certs=str(settings.tls.client_ca_file), ssl_cert_reqs=ssl.CERT_REQUIRED)
        self.scheme = "https" if tls else "http"
        config = uvicorn.Config(
            self.gateway.app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            loop="asyncio",
            timeout_keep_alive=max(5, int(settings.keepalive_time_s)),
            limit_concurrency=settings.max_workers * 8,
            **tls,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="http", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._socket.close()


def private_socket() -> tuple[str, Path]:
    """A Unix socket path in a new directory only this user can enter: the HTTP gateway's way into gRPC."""
    folder = Path(tempfile.mkdtemp(prefix="embedsvc-http-"))
    os.chmod(folder, 0o700)
    path = folder / "grpc.sock"
    return f"unix:{path}", folder


# ---- OpenAPI -------------------------------------------------------------------------------------------------------

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    # proto3 JSON writes 64-bit integers as strings and reads either.
    FieldDescriptor.TYPE_INT64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_SINT64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": ["string", "integer"], "format": "uint64"},
    FieldDescriptor.TYPE_FIXED64: {"type": ["string", "integer"], "format": "uint64"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Any": {"type": "object", "properties": {"@type": {"type": "string"}}},
}


def _field_schema(field: FieldDescriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    if field.type == FieldDescriptor.TYPE_ENUM:
        return {"type": "string", "enum": [v.name for v in field.enum_type.values]}
    if field.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        return _message_schema(field.message_type, schemas)
    return dict(_SCALARS[field.type])


def _message_schema(desc: Descriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    if desc.full_name in _WELL_KNOWN:
        return dict(_WELL_KNOWN[desc.full_name])
    ref = {"$ref": f"#/components/schemas/{desc.full_name}"}
    if desc.full_name in schemas:
        return ref
    schemas[desc.full_name] = {}  # placeholder: messages may refer to themselves
    properties: dict[str, Any] = {}
    for field in desc.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            properties[field.json_name] = {"type": "object", "additionalProperties": _field_schema(value, schemas)}
        elif field.is_repeated:
            properties[field.json_name] = {"type": "array", "items": _field_schema(field, schemas)}
        else:
            properties[field.json_name] = _field_schema(field, schemas)
    schemas[desc.full_name] = {"type": "object", "properties": properties}
    return ref


def openapi(methods: dict[str, Method]) -> dict[str, Any]:
    """An OpenAPI 3.1 description of the HTTP/JSON API, generated from the descriptors."""
    schemas: dict[str, Any] = {}
    error = {
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
    paths: dict[str, Any] = {}
    for path, method in sorted(methods.items()):
        if method.client_streaming:
            continue
        service = method.descriptor.containing_service
        response_schema = _message_schema(method.response.DESCRIPTOR, schemas)
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
                    "content": {_JSON: {"schema": _message_schema(method.request.DESCRIPTOR, schemas)}},
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
    schemas["Error"] = error
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "embedsvc",
            "version": "v1",
            "description": "The embedsvc gRPC API over HTTP/JSON (the Connect protocol). Generated from protos/.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
    }
