"""OpenAI's embeddings API as a route module: `POST /v1/embeddings`, `GET /v1/models`, `GET /v1/models/{model}`, for
the tools that speak it (the `openai` client, LangChain's OpenAIEmbeddings, LlamaIndex, LiteLLM, Open WebUI, ...).

    POST /v1/embeddings   authorization: Bearer <key>   {"model": "minilm", "input": ["a text", ...]}

`input` is a string or an array of strings; arrays of token ids (what clients count with tiktoken) are refused, as no
hosted model reads OpenAI's token ids. `model` is a hosted text model or one of `[server] openai_model_aliases`.
`dimensions` is EmbedTexts' Matryoshka truncation (refused for models not trained for it, as EmbedTexts refuses).
`encoding_format` is `float` (JSON numbers, float32's shortest form) or `base64` (the little-endian float32 bytes of
each vector, as OpenAI's clients decode them). `user` is ignored (logged at DEBUG). Unknown fields are ignored, as
TEI and Infinity do, so that clients written for other servers keep working. Vectors are unit-normalised (OpenAI's
are); long texts are truncated to the model's max_seq_length (OpenAI refuses them; TEI and Infinity truncate), and
`usage.prompt_tokens` counts the tokens the model read, as its own tokenizer counts them.

Each request is one EmbedTexts call through `upstream` (so keys, roles, limits, admission, deadlines, metrics and audit
are the gRPC interceptor's); its failure comes back in OpenAI's error shape, `{"error": {"message", "type", "param",
"code"}}`, with the status OpenAI's clients act on: 400 bad input, 401 no or unknown key, 403 the key's role, 404
unknown model, 413 a body over the message limit, 429 overloaded or rate-limited (with Retry-After, which the clients
honour), 500 internal, 503 a model not ready (with Retry-After).
"""

from __future__ import annotations

import base64
import logging
from typing import Any

import grpc
import grpc.aio
import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from embedsvc.errors import Reason
from embedsvc.transport.http.upstream import Failure, HttpError, Upstream
from embedsvc.v1 import models_pb2, server_pb2, text_pb2

log = logging.getLogger(__name__)

EMBED = "/embedsvc.v1.TextService/EmbedTexts"
LIST_MODELS = "/embedsvc.v1.ModelService/ListModels"
GET_MODEL = "/embedsvc.v1.ModelService/GetModel"
SERVER_INFO = "/embedsvc.v1.ServerService/GetServerInfo"

# The HTTP status of each gRPC code, as OpenAI's clients read them (the openai package raises BadRequestError on 400,
# AuthenticationError on 401, PermissionDeniedError on 403, NotFoundError on 404, RateLimitError on 429 and
# InternalServerError on 5xx, and retries 408, 409, 429 and 5xx).
STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# OpenAI's `type` by status, and its `code` where OpenAI has its own word for a reason.
TYPES = {401: "invalid_request_error", 429: "requests"}
CODES: dict[str, str] = {
    Reason.UNAUTHENTICATED: "invalid_api_key",
    Reason.MODEL_NOT_FOUND: "model_not_found",
    Reason.RATE_LIMITED: "rate_limit_exceeded",
}


def error(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """OpenAI's error body with its status."""
    kind = TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return Response(orjson.dumps(body), status, headers=headers, media_type="application/json")


def failure_response(failure: Failure, *, single: bool = False) -> Response:
    """A failed gRPC call in OpenAI's shape; the request field it names becomes `param` in OpenAI's names."""
    status = STATUS.get(failure.code, 500)
    if failure.reason == Reason.LIMIT_EXCEEDED and failure.code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        status = 413  # the body itself is over the message limit
    field = failure.metadata.get("field")
    if field is not None and field.startswith("texts"):
        field = "input" if single else "input" + field.removeprefix("texts")
    code = CODES.get(failure.reason) or failure.reason.lower() or None
    return error(status, failure.message, param=field, code=code, headers=failure.headers)


class Invalid(Exception):
    """A request OpenAI's API would refuse with 400: the message and the parameter."""

    def __init__(self, message: str, param: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def texts_of(value: Any) -> tuple[list[str], bool]:
    """`input` as a list of texts, and whether it was one string."""
    if isinstance(value, str):
        return [value], True
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value, False
    if isinstance(value, list) and value and all(isinstance(v, int | list) and not isinstance(v, bool) for v in value):
        raise Invalid(
            "input: arrays of token ids are not supported: each model here reads text with its own tokenizer, and "
            "OpenAI's (tiktoken's) ids mean nothing to it. Send strings (LangChain: OpenAIEmbeddings(..., "
            "check_embedding_ctx_length=False))",
            "input",
            "token_ids_not_supported",
        )
    if isinstance(value, list) and not value:
        raise Invalid("input: must not be empty", "input")
    raise Invalid("input: must be a string or an array of strings", "input")


def request_of(body: Any, aliases: dict[str, str]) -> tuple[text_pb2.EmbedTextsRequest, str, bool, bool]:
    """The EmbedTexts request of a /v1/embeddings body, the model name as asked, whether `input` was one string, and
    whether base64 was asked for."""
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object", "body")
    if "input" not in body:
        raise Invalid("you must provide an input parameter", "input", "missing_required_parameter")
    texts, single = texts_of(body["input"])
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise Invalid("you must provide a model parameter", "model", "missing_required_parameter")
    dimensions = body.get("dimensions")
    if dimensions is None:
        dimensions = 0
    elif not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1:
        raise Invalid(f"dimensions: must be a positive integer, got {dimensions!r}", "dimensions")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise Invalid(f"encoding_format: must be float or base64, got {encoding!r}", "encoding_format")
    user = body.get("user")
    if user is not None:
        log.debug("/v1/embeddings for user %r (ignored)", str(user)[:200])
    request = text_pb2.EmbedTextsRequest(
        model=aliases.get(model, model),
        texts=texts,
        normalize=True,
        dimensions=dimensions,
        packed_results=True,
    )
    return request, model, single, encoding == "base64"


def tokens_read(response: text_pb2.EmbedTextsResponse) -> int:
    """The tokens the model read: each text's count, at most max_seq_length (long texts are truncated)."""
    limit = response.max_seq_length
    return sum(min(c, limit) if limit else c for c in response.token_counts)


def embeddings_body(response: text_pb2.EmbedTextsResponse, model: str, base64_rows: bool) -> bytes:
    packed = response.packed_vectors
    rows = np.frombuffer(packed.data, "<f4").reshape(packed.rows, packed.dimension)
    data: list[dict[str, Any]] = [
        {
            "object": "embedding",
            "index": n,
            "embedding": base64.b64encode(row.tobytes()).decode("ascii") if base64_rows else row,
        }
        for n, row in enumerate(rows)
    ]
    used = tokens_read(response)
    body = {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": used, "total_tokens": used}}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


class OpenAI:
    """The routes' handlers, over this server's gRPC service."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.aliases = dict(upstream.settings.openai_model_aliases)

    async def embeddings(self, request: Request) -> Response:
        try:
            body = orjson.loads(await self.upstream.body(request))
            message, model, single, base64_rows = request_of(body, self.aliases)
        except HttpError as exc:
            return failure_response(Failure.local(exc))
        except orjson.JSONDecodeError:
            return error(400, "We could not parse the JSON body of your request: it is not valid JSON.")
        except Invalid as exc:
            return error(400, exc.message, param=exc.param, code=exc.code)
        try:
            response = await self.upstream.unary(EMBED, message, text_pb2.EmbedTextsResponse, request)
        except grpc.aio.AioRpcError as exc:
            return failure_response(Failure.of(exc), single=single)
        headers = {"x-embedsvc-warning": " | ".join(response.warnings)} if response.warnings else None
        return Response(embeddings_body(response, model, base64_rows), headers=headers, media_type="application/json")

    async def _text_models(self, request: Request) -> list[models_pb2.ModelInfo]:
        found: list[models_pb2.ModelInfo] = []
        token = ""
        while True:
            page = await self.upstream.unary(
                LIST_MODELS, models_pb2.ListModelsRequest(page_token=token), models_pb2.ListModelsResponse, request
            )
            found += [m for m in page.models if m.embeds_texts and m.state == models_pb2.MODEL_STATE_READY]
            token = page.next_page_token
            if not token:
                return found

    async def _created(self, request: Request) -> int:
        info = await self.upstream.unary(
            SERVER_INFO, server_pb2.GetServerInfoRequest(), server_pb2.GetServerInfoResponse, request
        )
        return int(info.start_time.seconds)

    async def models(self, request: Request) -> Response:
        """Every ready text model, and every alias of one: OpenAI's model list."""
        try:
            names = [m.name for m in await self._text_models(request)]
            created = await self._created(request)
        except grpc.aio.AioRpcError as exc:
            return failure_response(Failure.of(exc))
        listed = names + [alias for alias, target in self.aliases.items() if target in names]
        data = [_model(name, created) for name in listed]
        return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")

    async def model(self, request: Request) -> Response:
        asked = request.path_params["model"]
        name = self.aliases.get(asked, asked)
        try:
            found = await self.upstream.unary(
                GET_MODEL, models_pb2.GetModelRequest(name=name), models_pb2.GetModelResponse, request
            )
            info = found.model
            created = await self._created(request)
        except grpc.aio.AioRpcError as exc:
            return failure_response(Failure.of(exc))
        if not info.embeds_texts:
            state = models_pb2.ModelState.Name(info.state).removeprefix("MODEL_STATE_").lower()
            return error(
                404,
                f"The model `{asked}` does not exist or is not a ready text model (it is {state}).",
                param="model",
                code="model_not_found",
            )
        return Response(orjson.dumps(_model(asked, created)), media_type="application/json")


def _model(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "embedsvc"}


def routes(upstream: Upstream) -> list[BaseRoute]:
    handlers = OpenAI(upstream)
    return [
        Route("/v1/embeddings", handlers.embeddings, methods=["POST"]),
        Route("/v1/models", handlers.models, methods=["GET"]),
        Route("/v1/models/{model:path}", handlers.model, methods=["GET"]),
    ]


_ERROR = {"$ref": "#/components/schemas/openai.ErrorResponse"}


def openapi(schemas: dict[str, Any]) -> dict[str, Any]:
    """The three routes, with OpenAI's request, response and error schemas."""
    schemas["openai.EmbeddingsRequest"] = {
        "type": "object",
        "required": ["input", "model"],
        "properties": {
            "input": {
                "description": "A text, or an array of texts (1 to limits.max_texts_per_request). Token-id arrays "
                "are refused (400, code token_ids_not_supported).",
                "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
            },
            "model": {"type": "string", "description": "A hosted text model, or one of openai_model_aliases."},
            "dimensions": {
                "type": "integer",
                "minimum": 1,
                "description": "Matryoshka truncation (then unit-normalised); only for models trained for it.",
            },
            "encoding_format": {"type": "string", "enum": ["float", "base64"], "default": "float"},
            "user": {"type": "string", "description": "Ignored (logged)."},
        },
    }
    schemas["openai.Embedding"] = {
        "type": "object",
        "properties": {
            "object": {"type": "string", "enum": ["embedding"]},
            "index": {"type": "integer"},
            "embedding": {
                "description": "float32 numbers, or (base64) the vector's little-endian float32 bytes.",
                "oneOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string", "format": "byte"}],
            },
        },
    }
    schemas["openai.EmbeddingsResponse"] = {
        "type": "object",
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/openai.Embedding"}},
            "model": {"type": "string"},
            "usage": {
                "type": "object",
                "properties": {"prompt_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}},
            },
        },
    }
    schemas["openai.Model"] = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["model"]},
            "created": {"type": "integer", "description": "The server's start (Unix seconds)."},
            "owned_by": {"type": "string"},
        },
    }
    schemas["openai.ErrorResponse"] = {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"], "description": "The error catalogue's reason, lower case."},
                },
            }
        },
    }

    def responses(schema: str, statuses: tuple[int, ...]) -> dict[str, Any]:
        found: dict[str, Any] = {
            "200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": schema}}}}
        }
        for status in statuses:
            found[str(status)] = {"description": "An error.", "content": {"application/json": {"schema": _ERROR}}}
        return found

    tag = ["OpenAI"]
    return {
        "/v1/embeddings": {
            "post": {
                "operationId": "openai_createEmbedding",
                "tags": tag,
                "summary": "OpenAI's embeddings API over EmbedTexts",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/openai.EmbeddingsRequest"}}
                    },
                },
                "responses": responses(
                    "#/components/schemas/openai.EmbeddingsResponse", (400, 401, 403, 404, 413, 429, 500, 503)
                ),
            }
        },
        "/v1/models": {
            "get": {
                "operationId": "openai_listModels",
                "tags": tag,
                "summary": "Ready text models and their aliases",
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "object": {"type": "string", "enum": ["list"]},
                                        "data": {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/openai.Model"},
                                        },
                                    },
                                }
                            }
                        },
                    },
                    "401": {"description": "An error.", "content": {"application/json": {"schema": _ERROR}}},
                },
            }
        },
        "/v1/models/{model}": {
            "get": {
                "operationId": "openai_retrieveModel",
                "tags": tag,
                "summary": "One text model (or alias)",
                "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": responses("#/components/schemas/openai.Model", (401, 404)),
            }
        },
    }
