"""text-embeddings-inference's HTTP API as a route module: `POST /embed`, `POST /rerank`, `POST /tokenize`, `GET /info`
and `GET /health`, with TEI's JSON shapes and error format, for the tools that speak TEI (LangChain's and LlamaIndex's
TEI classes, Haystack, Milvus's and Weaviate's TEI embedding functions, huggingface_hub's InferenceClient).

TEI serves one model; these routes serve `[server] tei_model` (default minilm), and `/rerank` the cross-encoder
`[server] tei_rerank_model` (default: tei_model, which then answers TEI's 424 "not a re-ranker model"). Bodies and
answers follow TEI's router (router/src/http/types.rs and server.rs, 1.9): `/embed` takes `inputs` (a string or an array
of strings), `normalize` (default true), `truncate` (default false, TEI's default --auto-truncate: a text over the
model's max_seq_length is refused), `truncation_direction` (right or left), `prompt_name` and `dimensions`, and answers
an array of vectors, one per input (an array of one for a string). Differences, all deliberate: token-id inputs are
refused (EmbedTexts reads text); `dimensions` is EmbedTexts' Matryoshka truncation, refused for a model not trained for
it, and the prefix is always unit-normalised; `prompt_name` is EmbedTexts' prompt_name (one of the model's named
prompts; an unknown name is 422 naming the choices), and its vectors are the prompt's; unknown fields are ignored, as
TEI's serde does.

Errors are TEI's `{"error": message, "error_type": type}`, with the status TEI's code gives each type (its
`From<&ErrorType> for StatusCode`): Validation and Tokenizer 422, Empty 400, Overloaded 429 (with Retry-After),
Unhealthy 503, Backend 424. A body over the message limit is 413 (TEI's body limit); a missing or unknown key is 401
and a key without the role 403 (TEI answers 401 with no body; here the body says why).

`/rerank` is TextService.Rerank on `tei_rerank_model`: `query` and `texts` (strings), `raw_scores` (default false:
the sigmoid of the logits, as TEI), `return_text`, `truncate` (default false: a pair longer than the model reads is
422; true: cut as sentence-transformers' CrossEncoder does, longest first), and, beyond TEI, `top_n` (Cohere's and
Infinity's name: keep the best n). It answers TEI's array of {index, score[, text]}, best first. A model that is not a
cross-encoder answers 424 "model is not a re-ranker model", TEI's own answer for an embedding model.
`truncation_direction` "left" is refused on /rerank (422): a cross-encoder cuts the longer of the two texts, never a
chosen end of one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import grpc
import grpc.aio
import numpy as np
import orjson
from grpc_health.v1 import health_pb2
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from embedsvc.errors import Reason
from embedsvc.transport.http.upstream import Failure, HttpError, Upstream
from embedsvc.v1 import models_pb2, server_pb2, text_pb2

EMBED = "/embedsvc.v1.TextService/EmbedTexts"
RERANK = "/embedsvc.v1.TextService/Rerank"
TOKENIZE = "/embedsvc.v1.TextService/TokenizeTexts"
GET_MODEL = "/embedsvc.v1.ModelService/GetModel"
SERVER_INFO = "/embedsvc.v1.ServerService/GetServerInfo"
HEALTH = "/grpc.health.v1.Health/Check"
TEXT_SERVICE = "embedsvc.v1.TextService"

# TEI's error types and the status its router gives each.
STATUS = {"Unhealthy": 503, "Backend": 424, "Overloaded": 429, "Validation": 422, "Tokenizer": 422, "Empty": 400}


class TeiError(Exception):
    def __init__(self, message: str, kind: str, status: int | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message, self.kind, self.headers = message, kind, headers
        self.status = status or STATUS[kind]

    def response(self) -> Response:
        body = orjson.dumps({"error": self.message, "error_type": self.kind})
        return Response(body, self.status, headers=self.headers, media_type="application/json")


def failure_error(failure: Failure) -> TeiError:
    """A failed gRPC call as TEI would have failed: its error type and status."""
    code, reason = failure.code, failure.reason
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        if reason == Reason.LIMIT_EXCEEDED:
            return TeiError(failure.message, "Validation", 413)
        return TeiError(failure.message, "Overloaded", headers=failure.headers)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        if reason == Reason.MISSING_FIELD and failure.metadata.get("field") == "texts":
            return TeiError("`inputs` cannot be empty", "Empty")
        return TeiError(failure.message, "Validation")
    if code is grpc.StatusCode.UNAVAILABLE:
        return TeiError(failure.message, "Unhealthy", headers=failure.headers)
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return TeiError(failure.message, "Unauthorized", 401)
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return TeiError(failure.message, "Forbidden", 403)
    return TeiError(failure.message, "Backend")


def _json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise TeiError(f"Failed to parse the request body as JSON: {exc}", "Validation") from None


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise TeiError("the body must be a JSON object", "Validation")
    return body


def inputs_of(value: Any, what: str = "inputs") -> list[str]:
    """`inputs`: a string or an array of strings (TEI's token-id inputs are refused: EmbedTexts reads text)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        if not value:
            raise TeiError(f"`{what}` cannot be empty", "Empty")
        if all(isinstance(v, str) for v in value):
            return value
        if all(isinstance(v, int | list) and not isinstance(v, bool) for v in value):
            raise TeiError(f"`{what}`: token ids are not supported here; send the text", "Validation")
    raise TeiError(f"`{what}` must be a string or an array of strings", "Validation")


def _bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise TeiError(f"`{key}` must be a boolean, got {value!r}", "Validation")
    return value


def _direction(body: dict[str, Any]) -> text_pb2.TruncationDirection:
    value = body.get("truncation_direction")
    if value is None or value in ("right", "Right"):
        return text_pb2.TRUNCATION_DIRECTION_RIGHT
    if value in ("left", "Left"):
        return text_pb2.TRUNCATION_DIRECTION_LEFT
    raise TeiError(f"`truncation_direction` must be left or right, got {value!r}", "Validation")


def _prompt_name(body: dict[str, Any]) -> str:
    value = body.get("prompt_name")
    if value is None:
        return ""
    if not isinstance(value, str) or not value:
        raise TeiError(f"`prompt_name` must be the name of one of the model's prompts, got {value!r}", "Validation")
    return value


def _no_prompt(body: dict[str, Any]) -> None:
    if body.get("prompt_name") is not None:
        raise TeiError(
            "`prompt_name` is not served on /tokenize: TokenizeTexts reads the texts as given; put the prompt in the "
            "text",
            "Validation",
        )


def embed_request(body: dict[str, Any], model: str) -> text_pb2.EmbedTextsRequest:
    """The EmbedTexts request of a /embed body."""
    texts = inputs_of(body.get("inputs"))
    prompt_name = _prompt_name(body)
    dimensions = body.get("dimensions")
    if dimensions is None:
        dimensions = 0
    elif not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1:
        raise TeiError("`dimensions` should be positive", "Validation")
    truncate = _bool(body, "truncate", False)
    return text_pb2.EmbedTextsRequest(
        model=model,
        texts=texts,
        normalize=_bool(body, "normalize", True),
        long_texts=text_pb2.LONG_TEXT_MODE_TRUNCATE if truncate else text_pb2.LONG_TEXT_MODE_REFUSE,
        truncation_direction=_direction(body),
        dimensions=dimensions,
        packed_results=True,
        prompt_name=prompt_name,
    )


def rerank_request(body: dict[str, Any], model: str) -> text_pb2.RerankRequest:
    """The Rerank request of a /rerank body."""
    query = body.get("query")
    if not isinstance(query, str):
        raise TeiError("`query` must be a string", "Validation")
    texts = inputs_of(body.get("texts"), "texts") if isinstance(body.get("texts"), list) else None
    if texts is None:
        raise TeiError("`texts` must be an array of strings", "Validation")
    if _direction(body) == text_pb2.TRUNCATION_DIRECTION_LEFT:
        raise TeiError(
            "`truncation_direction` left is not served on /rerank: a cross-encoder cuts the longer text of each pair "
            "from its end (sentence-transformers' CrossEncoder), never a chosen end",
            "Validation",
        )
    top_n = body.get("top_n")
    if top_n is None:
        top_n = 0
    elif not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1:
        raise TeiError(f"`top_n` must be a positive integer, got {top_n!r}", "Validation")
    return text_pb2.RerankRequest(
        model=model,
        query=query,
        texts=texts,
        top_n=top_n,
        raw_scores=_bool(body, "raw_scores", False),
        return_text=_bool(body, "return_text", False),
        truncate=_bool(body, "truncate", False),
    )


def tei_tokens(text: str, tokens: Any) -> list[dict[str, Any]]:
    """TEI's SimpleToken list: UTF-8 byte offsets, the text a token covers (its vocabulary string when special)."""
    encoded = text.encode("utf-8")
    found = []
    for t in tokens:
        if t.special:
            found.append({"id": t.id, "text": t.token, "special": True, "start": None, "stop": None})
            continue
        start, stop = len(text[: t.start].encode("utf-8")), len(text[: t.end].encode("utf-8"))
        found.append(
            {
                "id": t.id,
                "text": encoded[start:stop].decode("utf-8", errors="replace"),
                "special": False,
                "start": start,
                "stop": stop,
            }
        )
    return found


def ranks(results: Iterable[text_pb2.RerankResult], return_text: bool) -> list[dict[str, Any]]:
    """TEI's rerank answer from Rerank's results (best first, as TEI orders them): each text's index and score, and
    its text with return_text."""
    found: list[dict[str, Any]] = []
    for r in results:
        if math.isnan(r.score):
            raise TeiError("score is NaN", "Backend")
        found.append(
            {"index": r.index, "text": r.text, "score": r.score}
            if return_text
            else {"index": r.index, "score": r.score}
        )
    return found


def _timing(started: float, characters: int, tokens: int) -> dict[str, str]:
    """TEI's response headers that this server can fill truthfully."""
    return {
        "x-compute-type": "cpu+embedsvc",
        "x-compute-characters": str(characters),
        "x-compute-tokens": str(tokens),
        "x-total-time": str(int((time.perf_counter() - started) * 1000)),
    }


class TEI:
    """The routes' handlers, over this server's gRPC service, serving `tei_model`."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.model = upstream.settings.tei_model
        self.rerank_model = upstream.settings.tei_rerank_model or self.model

    async def _body(self, request: Request) -> dict[str, Any]:
        try:
            return _object(_json(await self.upstream.body(request)))
        except HttpError as exc:
            raise failure_error(Failure.local(exc)) from None

    async def embed(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            message = embed_request(await self._body(request), self.model)
            response = await self.upstream.unary(EMBED, message, text_pb2.EmbedTextsResponse, request)
        except TeiError as exc:
            return exc.response()
        except grpc.aio.AioRpcError as exc:
            return failure_error(Failure.of(exc)).response()
        packed = response.packed_vectors
        rows = np.frombuffer(packed.data, "<f4").reshape(packed.rows, packed.dimension)
        limit = response.max_seq_length
        tokens = sum(min(c, limit) if limit else c for c in response.token_counts)
        headers = _timing(started, sum(len(t) for t in message.texts), tokens)
        return Response(
            orjson.dumps(rows, option=orjson.OPT_SERIALIZE_NUMPY), headers=headers, media_type="application/json"
        )

    async def tokenize(self, request: Request) -> Response:
        try:
            body = await self._body(request)
            texts = inputs_of(body.get("inputs"))
            _no_prompt(body)
            message = text_pb2.TokenizeTextsRequest(
                model=self.model, texts=texts, add_special_tokens=_bool(body, "add_special_tokens", True)
            )
            response = await self.upstream.unary(TOKENIZE, message, text_pb2.TokenizeTextsResponse, request)
        except TeiError as exc:
            return exc.response()
        except grpc.aio.AioRpcError as exc:
            return failure_error(Failure.of(exc)).response()
        answer = [tei_tokens(text, t.tokens) for text, t in zip(texts, response.texts, strict=True)]
        return Response(orjson.dumps(answer), media_type="application/json")

    async def rerank(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            message = rerank_request(await self._body(request), self.rerank_model)
            response = await self.upstream.unary(RERANK, message, text_pb2.RerankResponse, request)
            answer = ranks(response.results, message.return_text)
        except TeiError as exc:
            return exc.response()
        except grpc.aio.AioRpcError as exc:
            failure = Failure.of(exc)
            if failure.reason == Reason.MODEL_KIND_MISMATCH:
                return TeiError(
                    f"model is not a re-ranker model: '{self.rerank_model}' is not a cross-encoder "
                    "(set [server] tei_rerank_model to one)",
                    "Backend",
                ).response()
            return failure_error(failure).response()
        limit = response.max_seq_length
        tokens = sum(min(c, limit) if limit else c for c in response.token_counts)
        characters = sum(len(message.query) + len(t) for t in message.texts)
        return Response(
            orjson.dumps(answer), headers=_timing(started, characters, tokens), media_type="application/json"
        )

    async def info(self, request: Request) -> Response:
        try:
            found = await self.upstream.unary(
                GET_MODEL, models_pb2.GetModelRequest(name=self.model), models_pb2.GetModelResponse, request
            )
            model = found.model
            server = await self.upstream.unary(
                SERVER_INFO, server_pb2.GetServerInfoRequest(), server_pb2.GetServerInfoResponse, request
            )
        except grpc.aio.AioRpcError as exc:
            return failure_error(Failure.of(exc)).response()
        settings = self.upstream.settings
        body = {
            "model_id": model.name,
            "model_sha": model.version.removeprefix("sha256:") or None,
            "model_dtype": "int8" if model.precision == "int8" else "float32",
            "served_model_name": model.name,
            "model_type": {"embedding": {"pooling": "mean"}},
            "max_concurrent_requests": settings.max_concurrent_rpcs,
            "max_input_length": model.max_seq_length,
            "max_batch_tokens": settings.limits.max_texts_per_request * max(model.max_seq_length, 1),
            "max_batch_requests": None,
            "max_client_batch_size": server.limits.max_texts_per_request or settings.limits.max_texts_per_request,
            "auto_truncate": False,
            "tokenization_workers": 1,
            "version": server.server_version,
            "sha": None,
            "docker_label": None,
        }
        return Response(orjson.dumps(body), media_type="application/json")

    async def health(self, request: Request) -> Response:
        """200 while the text service serves (its models loaded); TEI's 503 Unhealthy otherwise. No key needed."""
        try:
            answer = await self.upstream.unary(
                HEALTH,
                health_pb2.HealthCheckRequest(service=TEXT_SERVICE),
                health_pb2.HealthCheckResponse,
                request,
                timeout=10,
            )
            serving = answer.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.aio.AioRpcError:
            serving = False
        if serving:
            return Response(b"", 200)
        return TeiError("unhealthy", "Unhealthy").response()


def routes(upstream: Upstream) -> list[BaseRoute]:
    handlers = TEI(upstream)
    return [
        Route("/embed", handlers.embed, methods=["POST"]),
        Route("/rerank", handlers.rerank, methods=["POST"]),
        Route("/tokenize", handlers.tokenize, methods=["POST"]),
        Route("/info", handlers.info, methods=["GET"]),
        Route("/health", handlers.health, methods=["GET"]),
    ]


_ERROR = {"$ref": "#/components/schemas/tei.ErrorResponse"}
_INPUT = {
    "description": "A string, or an array of strings.",
    "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
}
_DIRECTION = {"type": "string", "enum": ["right", "left"], "default": "right"}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"description": "An error.", "content": {"application/json": {"schema": _ERROR}}} for s in statuses}


def _json_body(ref: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _ok(schema: dict[str, Any]) -> dict[str, Any]:
    return {"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}}


def openapi(schemas: dict[str, Any]) -> dict[str, Any]:
    """TEI's routes, with TEI's request, response and error schemas."""
    prompt = {"type": ["string", "null"], "description": "One of the model's named prompts (EmbedTexts.prompt_name)."}
    no_prompt = {"type": ["string", "null"], "description": "Refused on /tokenize: put the prompt in the text."}
    schemas["tei.EmbedRequest"] = {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "inputs": _INPUT,
            "normalize": {"type": "boolean", "default": True},
            "truncate": {"type": ["boolean", "null"], "default": False},
            "truncation_direction": _DIRECTION,
            "prompt_name": prompt,
            "dimensions": {"type": ["integer", "null"], "minimum": 1},
        },
    }
    schemas["tei.RerankRequest"] = {
        "type": "object",
        "required": ["query", "texts"],
        "properties": {
            "query": {"type": "string"},
            "texts": {"type": "array", "items": {"type": "string"}},
            "truncate": {"type": ["boolean", "null"], "default": False},
            "truncation_direction": _DIRECTION,
            "raw_scores": {"type": "boolean", "default": False},
            "return_text": {"type": "boolean", "default": False},
            "top_n": {"type": ["integer", "null"], "minimum": 1, "description": "Keep the best n (beyond TEI)."},
        },
    }
    schemas["tei.TokenizeRequest"] = {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "inputs": _INPUT,
            "add_special_tokens": {"type": "boolean", "default": True},
            "prompt_name": no_prompt,
        },
    }
    schemas["tei.SimpleToken"] = {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "text": {"type": "string"},
            "special": {"type": "boolean"},
            "start": {"type": ["integer", "null"], "description": "UTF-8 byte offset; null for special tokens."},
            "stop": {"type": ["integer", "null"]},
        },
    }
    schemas["tei.Rank"] = {
        "type": "object",
        "properties": {"index": {"type": "integer"}, "text": {"type": "string"}, "score": {"type": "number"}},
    }
    schemas["tei.Info"] = {
        "type": "object",
        "properties": {
            key: {"type": kind}
            for key, kind in {
                "model_id": "string",
                "model_sha": ["string", "null"],
                "model_dtype": "string",
                "served_model_name": "string",
                "model_type": "object",
                "max_concurrent_requests": "integer",
                "max_input_length": "integer",
                "max_batch_tokens": "integer",
                "max_batch_requests": ["integer", "null"],
                "max_client_batch_size": "integer",
                "auto_truncate": "boolean",
                "tokenization_workers": "integer",
                "version": "string",
                "sha": ["string", "null"],
                "docker_label": ["string", "null"],
            }.items()
        },
    }
    schemas["tei.ErrorResponse"] = {
        "type": "object",
        "required": ["error", "error_type"],
        "properties": {
            "error": {"type": "string"},
            "error_type": {
                "type": "string",
                "enum": [*STATUS, "Unauthorized", "Forbidden"],
            },
        },
    }
    tag = ["text-embeddings-inference"]
    vectors = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
    return {
        "/embed": {
            "post": {
                "operationId": "tei_embed",
                "tags": tag,
                "summary": "TEI's /embed over EmbedTexts (tei_model)",
                "requestBody": _json_body("tei.EmbedRequest"),
                "responses": {**_ok(vectors), **_errors(400, 401, 403, 413, 422, 424, 429, 503)},
            }
        },
        "/rerank": {
            "post": {
                "operationId": "tei_rerank",
                "tags": tag,
                "summary": "TEI's /rerank over Rerank (tei_rerank_model; 424 when it is not a cross-encoder)",
                "requestBody": _json_body("tei.RerankRequest"),
                "responses": {
                    **_ok({"type": "array", "items": {"$ref": "#/components/schemas/tei.Rank"}}),
                    **_errors(400, 401, 403, 413, 422, 424, 429),
                },
            }
        },
        "/tokenize": {
            "post": {
                "operationId": "tei_tokenize",
                "tags": tag,
                "summary": "TEI's /tokenize over TokenizeTexts",
                "requestBody": _json_body("tei.TokenizeRequest"),
                "responses": {
                    **_ok(
                        {
                            "type": "array",
                            "items": {"type": "array", "items": {"$ref": "#/components/schemas/tei.SimpleToken"}},
                        }
                    ),
                    **_errors(400, 401, 403, 413, 422, 424),
                },
            }
        },
        "/info": {
            "get": {
                "operationId": "tei_info",
                "tags": tag,
                "summary": "TEI's model info for tei_model",
                "responses": {**_ok({"$ref": "#/components/schemas/tei.Info"}), **_errors(401, 424)},
            }
        },
        "/health": {
            "get": {
                "operationId": "tei_health",
                "tags": tag,
                "summary": "200 while the text models serve; no key needed",
                "responses": {"200": {"description": "Serving."}, **_errors(503)},
            }
        },
    }
