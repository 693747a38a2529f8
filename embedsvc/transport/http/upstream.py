"""The gRPC path as every HTTP route module reaches it: one asyncio channel into this server's own gRPC service (over
the private Unix socket), the request's body within the message limit, the metadata a call carries, and a failed
call's code, reason and details.

A route module (Connect, and the OpenAI and TEI dialects) turns its HTTP request into a request message, calls
`upstream.channel` with `upstream.metadata(request)`, and renders the answer or the `Failure` in its own format; so
keys, roles, admission, deadlines, limits, metrics and audit apply once, in the gRPC interceptor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from starlette.requests import Request

from embedsvc.errors import Hint, Reason
from embedsvc.settings import Settings

M = TypeVar("M", bound=Message)

# Errors whose next step is said differently over HTTP than in the gRPC message (errors.Hint): the HTTP words.
HTTP_WORDS = {Hint.SEND_API_KEY.value: "no API key: send the header `Authorization: Bearer <key>`"}


class HttpError(Exception):
    """A call refused before it reaches gRPC (a body over the limit, an unknown method, bad framing): the code and
    reason it would have had."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str, metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.metadata = code, reason, message, metadata or {}


@dataclass(frozen=True)
class Failure:
    """A failed gRPC call as the server reported it: its code and message, the reason and metadata of its ErrorInfo,
    every google.rpc detail, and the HTTP headers it implies (Retry-After from the call's retry pushback)."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    details: list[Any] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def of(exc: grpc.aio.AioRpcError) -> Failure:
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
        message = HTTP_WORDS.get(metadata.get("hint", ""), exc.details() or code.name)
        return Failure(code, message, reason, metadata, details, headers)

    @staticmethod
    def local(exc: HttpError) -> Failure:
        return Failure(exc.code, exc.message, exc.reason, exc.metadata)


class Upstream:
    """This server's gRPC service, for the route modules: `channel` is open while the app runs (its lifespan)."""

    def __init__(self, settings: Settings, grpc_target: str) -> None:
        self.settings = settings
        self.grpc_target = grpc_target
        self.max_body = settings.limits.max_message_bytes
        self._channel: grpc.aio.Channel | None = None
        self._callables: dict[str, Any] = {}

    @property
    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            raise RuntimeError("the HTTP gateway's channel is not open (the app's lifespan has not started)")
        return self._channel

    async def open(self) -> None:
        size = self.max_body
        self._channel = grpc.aio.insecure_channel(
            self.grpc_target,
            options=[("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size)],
        )

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._callables.clear()

    async def unary(
        self, path: str, message: Message, response: type[M], request: Request, timeout: float | None = None
    ) -> M:
        """One unary call of the API (`/embedsvc.v1.TextService/EmbedTexts`) on behalf of an HTTP request: its key,
        request id and address travel with it. Raises grpc.aio.AioRpcError when the call fails."""
        rpc = self._callables.get(path)
        if rpc is None:
            rpc = self._callables[path] = self.channel.unary_unary(
                path, request_serializer=type(message).SerializeToString, response_deserializer=response.FromString
            )
        result: M = await rpc(message, metadata=self.metadata(request), timeout=timeout)
        return result

    async def body(self, request: Request) -> bytes:
        """The request's body; LIMIT_EXCEEDED past the largest message, before reading it when the length is known."""
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

    @staticmethod
    def metadata(request: Request) -> list[tuple[str, str]]:
        """What the call carries to gRPC: the caller's key and request id, and its address (for logs and audit)."""
        metadata = []
        for header in ("authorization", "x-request-id"):
            value = request.headers.get(header)
            if value:
                metadata.append((header, value))
        if request.client is not None:
            metadata.append(("x-forwarded-for", request.client.host))
        return metadata
