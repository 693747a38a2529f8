"""The Connect protocol (connectrpc.com/docs/protocol) for every RPC of the table of services (embedsvc/api.py):
unary calls and server streams, JSON or binary protobuf, identity or gzip request bodies.

    POST /embedsvc.v1.ArithmeticService/Arithmetic   content-type: application/json   {"model": "...", ...}

Unary calls take and answer `application/json` (proto3 JSON) or `application/proto`. Server streams take Connect's
enveloped messages (`application/connect+json` or `+proto`) and answer the same, ending with an end-of-stream message;
as an extension for curl, `application/json` to a server stream answers NDJSON (one message a line, an `{"error":
...}` line on failure). Client and bidirectional streams (UpsertStream, EmbedTextsStream) are gRPC only
(unimplemented). Errors are Connect's JSON (`code`, `message`, `details` with the google.rpc details), plus the reason
and metadata of the error catalogue; unary errors have the HTTP status of Connect's table, stream errors arrive in the
end-of-stream message of a 200 response. `connect-timeout-ms` sets the deadline; `authorization: Bearer <key>` is
passed on as it is. Responses are not compressed (identity is always acceptable to a Connect client).
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from google.protobuf import json_format
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import DecodeError, Message
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

# Connect's name and HTTP status of every code (the protocol's table; note "canceled", one l).
CODES: dict[grpc.StatusCode, tuple[str, int]] = {
    grpc.StatusCode.CANCELLED: ("canceled", 499),
    grpc.StatusCode.UNKNOWN: ("unknown", 500),
    grpc.StatusCode.INVALID_ARGUMENT: ("invalid_argument", 400),
    grpc.StatusCode.DEADLINE_EXCEEDED: ("deadline_exceeded", 504),
    grpc.StatusCode.NOT_FOUND: ("not_found", 404),
    grpc.StatusCode.ALREADY_EXISTS: ("already_exists", 409),
    grpc.StatusCode.PERMISSION_DENIED: ("permission_denied", 403),
    grpc.StatusCode.RESOURCE_EXHAUSTED: ("resource_exhausted", 429),
    grpc.StatusCode.FAILED_PRECONDITION: ("failed_precondition", 400),
    grpc.StatusCode.ABORTED: ("aborted", 409),
    grpc.StatusCode.OUT_OF_RANGE: ("out_of_range", 400),
    grpc.StatusCode.UNIMPLEMENTED: ("unimplemented", 501),
    grpc.StatusCode.INTERNAL: ("internal", 500),
    grpc.StatusCode.UNAVAILABLE: ("unavailable", 503),
    grpc.StatusCode.DATA_LOSS: ("data_loss", 500),
    grpc.StatusCode.UNAUTHENTICATED: ("unauthenticated", 401),
}
_JSON = "application/json"
_CONNECT_JSON = "application/connect+json"
_NDJSON = "application/x-ndjson"
_COMPRESSED, _END_STREAM = 0x01, 0x02
_ENCODINGS = ("gzip", "identity")


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


def error_json(failure: Failure) -> dict[str, Any]:
    """Connect's Error: code, message and details (type, unpadded base64 value, and a readable `debug`), with the
    error catalogue's reason and metadata beside them."""
    body: dict[str, Any] = {"code": CODES.get(failure.code, ("unknown", 500))[0], "message": failure.message}
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
    status = CODES.get(failure.code, ("unknown", 500))[1]
    return JSONResponse(error_json(failure), status_code=status, headers=failure.headers)


def _envelope(flags: int, payload: bytes) -> bytes:
    return struct.pack(">BI", flags, len(payload)) + payload


def _invalid(message: str) -> HttpError:
    return HttpError(grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_ENCODING, message)


def _encoding(name: str) -> str:
    """A request's content encoding, if this server reads it (the protocol: unimplemented, naming those it does)."""
    if name not in _ENCODINGS:
        raise HttpError(
            grpc.StatusCode.UNIMPLEMENTED, "", f"content encoding {name!r}: supported are {', '.join(_ENCODINGS)}"
        )
    return name


def _decompress(data: bytes, encoding: str, limit: int) -> bytes:
    """A request body (or a stream's message) in its content encoding, inflated to at most `limit` bytes."""
    if _encoding(encoding) == "identity" or not data:  # the protocol: never decompress empty content
        return data
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise _invalid(f"the body is not gzip: {exc}") from None
    if len(inflated) > limit:
        raise HttpError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            Reason.LIMIT_EXCEEDED,
            f"request body: over the limit of {limit} bytes once decompressed",
            {"limit": str(limit)},
        )
    if not inflater.eof:
        raise _invalid("the gzip body is truncated")
    return inflated


@dataclass(frozen=True)
class Codec:
    """How messages travel in one call: JSON (proto3 JSON) or binary protobuf, bare (unary, and NDJSON streams) or
    enveloped (Connect streams)."""

    binary: bool
    enveloped: bool
    ndjson: bool = False

    @property
    def content_type(self) -> str:
        if self.ndjson:
            return _NDJSON
        name = "proto" if self.binary else "json"
        return f"application/connect+{name}" if self.enveloped else f"application/{name}"

    def decode(self, method: Method, data: bytes) -> Message:
        try:
            if self.binary:
                return method.request.FromString(data)
            return json_format.Parse(data or b"{}", method.request(), ignore_unknown_fields=False)
        except (json_format.ParseError, DecodeError, UnicodeDecodeError, RecursionError) as exc:
            kind = "protobuf" if self.binary else "JSON"
            raise _invalid(f"the body is not a {kind} {method.request.DESCRIPTOR.name}: {str(exc)[:500]}") from None

    def encode(self, message: Message) -> bytes:
        if self.binary:
            return message.SerializeToString()
        return json_format.MessageToJson(message, indent=None, ensure_ascii=False).encode()

    def frame(self, message: Message) -> bytes:
        """One message of a server stream."""
        data = self.encode(message)
        return _envelope(0, data) if self.enveloped else data + b"\n"

    def end(self, failure: Failure | None) -> bytes:
        """The end of a stream: Connect's EndStreamResponse, or in NDJSON an error line (nothing on success)."""
        if not self.enveloped:
            return b"" if failure is None else (json.dumps({"error": error_json(failure)}) + "\n").encode()
        end: dict[str, Any] = {} if failure is None else {"error": error_json(failure)}
        return _envelope(_END_STREAM, json.dumps(end).encode())


_CODECS = {
    "application/json": Codec(binary=False, enveloped=False),
    "application/proto": Codec(binary=True, enveloped=False),
    _CONNECT_JSON: Codec(binary=False, enveloped=True),
    "application/connect+proto": Codec(binary=True, enveloped=True),
}


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
    """The Connect routes: each call decoded, forwarded to the gRPC server through `upstream`, and answered."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.methods = api_methods()

    async def call(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        codec = _CODECS.get(content_type)
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
            if codec is None or codec.enveloped != method.server_streaming:
                if not (method.server_streaming and content_type == _JSON):
                    return self._unsupported(content_type, method)
                codec = Codec(binary=False, enveloped=False, ndjson=True)  # curl's view of a server stream
            message = await self._request(request, method, codec)
            metadata, timeout = self.upstream.metadata(request), self._timeout(request)
        except HttpError as exc:
            if codec is not None and codec.enveloped:  # a stream's errors arrive in its end, with status 200
                return Response(codec.end(Failure.local(exc)), media_type=codec.content_type)
            return _error_response(Failure.local(exc))
        assert method is not None
        if method.server_streaming:
            return await self._stream(method, message, metadata, timeout, codec)
        rpc = self.upstream.channel.unary_unary(
            method.path,
            request_serializer=method.request.SerializeToString,
            response_deserializer=method.response.FromString,
        )
        try:
            response = await rpc(message, metadata=metadata, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return _error_response(Failure.of(exc))
        data = codec.encode(response)
        return Response(data if codec.binary else data + b"\n", media_type=codec.content_type)

    @staticmethod
    def _unsupported(content_type: str, method: Method) -> Response:
        """415, as the protocol wants for a codec (or framing) this method does not take."""
        accepted = "application/connect+json or application/connect+proto (or application/json for NDJSON)"
        if not method.server_streaming:
            accepted = "application/json or application/proto"
        message = f"content-type {content_type or '(none)'}: send {accepted}"
        return JSONResponse(error_json(Failure(grpc.StatusCode.UNKNOWN, message)), status_code=415)

    async def _request(self, request: Request, method: Method, codec: Codec) -> Message:
        """The request message: the body inflated and decoded, or the stream's one enveloped message."""
        version = request.headers.get("connect-protocol-version")
        if version is not None and version != "1":
            raise HttpError(
                grpc.StatusCode.INVALID_ARGUMENT,
                Reason.INVALID_VALUE,
                f"connect-protocol-version must be 1, got {version!r}",
            )
        limit = self.upstream.max_body
        body = await self.upstream.body(request)
        if not codec.enveloped:
            return codec.decode(method, _decompress(body, request.headers.get("content-encoding", "identity"), limit))
        if len(body) < 5:
            raise _invalid("missing Connect envelope")
        flags, size = struct.unpack(">BI", body[:5])
        if len(body) != 5 + size:
            raise _invalid(
                "a server stream takes one enveloped request message"
                if len(body) > 5 + size
                else f"the envelope promises {size} bytes and holds {len(body) - 5}"
            )
        if flags & ~_COMPRESSED:
            raise _invalid(f"envelope flags {flags:#04x}: a request message has no flag but compression (0x01)")
        data = body[5:]
        encoding = _encoding(request.headers.get("connect-content-encoding", "identity"))
        if flags & _COMPRESSED:
            if encoding == "identity":
                raise _invalid("a compressed message without connect-content-encoding")
            data = _decompress(data, encoding, limit)
        return codec.decode(method, data)

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

    async def _stream(
        self, method: Method, message: Message, metadata: list[tuple[str, str]], timeout: float | None, codec: Codec
    ) -> Response:
        rpc = self.upstream.channel.unary_stream(
            method.path,
            request_serializer=method.request.SerializeToString,
            response_deserializer=method.response.FromString,
        )
        call = rpc(message, metadata=metadata, timeout=timeout)
        iterator = call.__aiter__()
        try:  # the first message decides the HTTP status of NDJSON: an error before it is an ordinary error response
            first: Message | None = await iterator.__anext__()
        except StopAsyncIteration:
            first = None
        except grpc.aio.AioRpcError as exc:
            if codec.enveloped:
                return Response(codec.end(Failure.of(exc)), media_type=codec.content_type)
            return _error_response(Failure.of(exc))

        async def frames() -> AsyncIterator[bytes]:
            failure: Failure | None = None
            try:
                if first is not None:
                    yield codec.frame(first)
                    async for next_message in iterator:
                        yield codec.frame(next_message)
            except grpc.aio.AioRpcError as exc:
                failure = Failure.of(exc)
            except asyncio.CancelledError:
                call.cancel()
                raise
            end = codec.end(failure)
            if end:
                yield end

        return StreamingResponse(frames(), media_type=codec.content_type)


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
