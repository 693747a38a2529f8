"""Python client for embedsvc: sync (`Client`) and asyncio (`AsyncClient`), numpy in and numpy out.

    with Client("localhost:50051") as c:
        hits = c.arithmetic("minilm-static", ["king - man + woman"])[0].hits

Failures raise `EmbedsvcClientError` with the gRPC code, the machine-readable reason, the offending field and the
metadata from the server's google.rpc.Status details.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
import numpy as np
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from embedsvc.v1 import (
    arithmetic_pb2,
    arithmetic_pb2_grpc,
    common_pb2,
    models_pb2,
    models_pb2_grpc,
    words_pb2,
    words_pb2_grpc,
)

T = TypeVar("T")
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]
METHODS = {"cosadd": arithmetic_pb2.METHOD_COSADD, "cosmul": arithmetic_pb2.METHOD_COSMUL}


@dataclass(frozen=True)
class SpaceVector:
    """A vector with the space it belongs to; the server refuses it in another space (SPACE_MISMATCH)."""

    values: np.ndarray
    space: str


# One term of an expression: a word, a vector (plain ones are untagged), or (weight, word-or-vector).
TermLike = str | np.ndarray | SpaceVector | tuple[float, "str | np.ndarray | SpaceVector"]
ExpressionLike = str | Sequence[TermLike]


class EmbedsvcClientError(Exception):
    """A failed call: code (grpc.StatusCode), reason (e.g. "OUT_OF_VOCABULARY"), field and metadata."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str, metadata: dict[str, str]) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = metadata
        self.field = metadata.get("field")

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        return f"{self.code.name} {self.reason}: {self.message}{where}"


def _error(exc: grpc.RpcError) -> EmbedsvcClientError:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    message = exc.details() if hasattr(exc, "details") else str(exc)
    reason, metadata = code.name, {}
    trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    reason, metadata = info.reason, dict(info.metadata)
    return EmbedsvcClientError(code, message or "", reason, metadata)


@dataclass(frozen=True)
class Provenance:
    model: str
    model_version: str
    method: str
    parameters: dict[str, str]


@dataclass(frozen=True)
class Hit:
    word: str
    score: float
    is_input: bool = False
    contributions: tuple[float, ...] = ()


@dataclass(frozen=True)
class ExpressionResult:
    hits: list[Hit]
    terms: list[dict[str, Any]]
    query_vector: np.ndarray | None = None


@dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray  # (n, d) float32
    space: str
    in_vocabulary: list[bool] = field(default_factory=list)
    provenance: Provenance | None = None

    def __getitem__(self, i: int) -> SpaceVector:
        """Row i, tagged with its space, ready to use as an expression term."""
        return SpaceVector(self.vectors[i], self.space)

    def __len__(self) -> int:
        return len(self.vectors)


@dataclass(frozen=True)
class ArithmeticResult:
    results: list[ExpressionResult]
    provenance: Provenance


@dataclass(frozen=True)
class SectionScore:
    name: str
    correct: int
    incorrect: int
    accuracy: float


@dataclass(frozen=True)
class AnalogyReport:
    sections: list[SectionScore]
    total: SectionScore
    questions: int
    oov_questions: int
    skipped_lines: int
    provenance: Provenance


def _analogy_report(r: arithmetic_pb2.EvaluateAnalogiesResponse) -> AnalogyReport:
    def section(s: arithmetic_pb2.SectionScore) -> SectionScore:
        return SectionScore(s.name, s.correct, s.incorrect, s.accuracy)

    return AnalogyReport(
        [section(s) for s in r.sections],
        section(r.total),
        r.questions,
        r.oov_questions,
        r.skipped_lines,
        _provenance(r.provenance),
    )


def _provenance(p: common_pb2.Provenance) -> Provenance:
    return Provenance(p.model, p.model_version, p.method, dict(p.parameters))


def _vector(v: np.ndarray | SpaceVector | Sequence[float]) -> common_pb2.Vector:
    if isinstance(v, SpaceVector):
        return common_pb2.Vector(values=np.asarray(v.values, dtype=np.float32).ravel().tolist(), space=v.space)
    return common_pb2.Vector(values=np.asarray(v, dtype=np.float32).ravel().tolist())


def _term(term: TermLike) -> arithmetic_pb2.Term:
    weight: float | None = None
    if isinstance(term, tuple):
        weight, term = float(term[0]), term[1]
    message = arithmetic_pb2.Term(word=term) if isinstance(term, str) else arithmetic_pb2.Term(vector=_vector(term))
    if weight is not None:
        message.weight = weight
    return message


def _expression(expr: ExpressionLike) -> arithmetic_pb2.Expression:
    if isinstance(expr, str):
        return arithmetic_pb2.Expression(text=expr)
    return arithmetic_pb2.Expression(terms=[_term(t) for t in expr])


def _arithmetic_result(response: arithmetic_pb2.ArithmeticResponse) -> ArithmeticResult:
    results = [
        ExpressionResult(
            hits=[Hit(h.word, h.score, h.is_input, tuple(h.contributions)) for h in r.hits],
            terms=[
                {"kind": t.kind, "weight": t.weight, "word": t.word, "in_vocabulary": t.in_vocabulary} for t in r.terms
            ],
            query_vector=np.asarray(r.query_vector.values, dtype=np.float32) if r.HasField("query_vector") else None,
        )
        for r in response.results
    ]
    return ArithmeticResult(results, _provenance(response.provenance))


def _embeddings(response: words_pb2.EmbedWordsResponse) -> Embeddings:
    vectors = np.asarray([v.values for v in response.vectors], dtype=np.float32)
    space = response.vectors[0].space if response.vectors else ""
    return Embeddings(vectors, space, list(response.in_vocabulary), _provenance(response.provenance))


class _Calls:
    """Request builders and response parsers shared by the sync and async clients: (stub, method, request, parse)."""

    def __init__(self, channel: grpc.Channel | grpc.aio.Channel) -> None:
        self.models = models_pb2_grpc.ModelServiceStub(channel)
        self.words = words_pb2_grpc.WordServiceStub(channel)
        self.arith = arithmetic_pb2_grpc.ArithmeticServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)

    def list_models(self) -> tuple[Callable[..., Any], Any, Callable[[Any], Any]]:
        return self.models.ListModels, models_pb2.ListModelsRequest(), lambda r: list(r.models)

    def get_model(self, name: str) -> tuple[Callable[..., Any], Any, Callable[[Any], Any]]:
        return self.models.GetModel, models_pb2.GetModelRequest(name=name), lambda r: r.model

    def embed_words(self, model: str, words: Sequence[str], normalize: bool) -> tuple[Any, Any, Any]:
        request = words_pb2.EmbedWordsRequest(model=model, words=list(words), normalize=normalize)
        return self.words.EmbedWords, request, _embeddings

    def nearest_words(self, model: str, words: Sequence[str], top_n: int, restrict_vocab: int) -> tuple[Any, Any, Any]:
        request = words_pb2.NearestWordsRequest(
            model=model, words=list(words), top_n=top_n, restrict_vocab=restrict_vocab
        )
        return (
            self.words.NearestWords,
            request,
            lambda r: [[Hit(n.word, n.score) for n in lst.neighbours] for lst in r.results],
        )

    def similarity(self, model: str, pairs: Sequence[tuple[str, str]]) -> tuple[Any, Any, Any]:
        request = words_pb2.SimilarityRequest(
            model=model, pairs=[words_pb2.WordPair(first=a, second=b) for a, b in pairs]
        )
        return self.words.Similarity, request, lambda r: list(r.similarities)

    def doesnt_match(self, model: str, words: Sequence[str]) -> tuple[Any, Any, Any]:
        request = words_pb2.DoesntMatchRequest(model=model, words=list(words))
        return self.words.DoesntMatch, request, lambda r: (r.odd_one_out, [(s.word, s.score) for s in r.ranking])

    def arithmetic(self, model: str, expressions: Sequence[ExpressionLike], **options: Any) -> tuple[Any, Any, Any]:
        method = options.pop("method", "cosadd")
        request = arithmetic_pb2.ArithmeticRequest(
            model=model,
            expressions=[_expression(e) for e in expressions],
            method=METHODS[method] if isinstance(method, str) else method,
            **options,
        )
        return self.arith.Arithmetic, request, _arithmetic_result

    def evaluate_analogies(self, model: str, analogies: bytes | str | Path, **options: Any) -> tuple[Any, Any, Any]:
        data = analogies if isinstance(analogies, bytes) else Path(analogies).read_bytes()
        method = options.pop("method", "cosadd")
        request = arithmetic_pb2.EvaluateAnalogiesRequest(
            model=model, analogies=data, method=METHODS[method] if isinstance(method, str) else method, **options
        )
        return self.arith.EvaluateAnalogies, request, _analogy_report

    def health_check(self, service: str) -> tuple[Any, Any, Any]:
        return (
            self.health.Check,
            health_pb2.HealthCheckRequest(service=service),
            lambda r: health_pb2.HealthCheckResponse.ServingStatus.Name(r.status),
        )


class Client:
    """Blocking client. `timeout` (seconds) applies to every call unless a call passes its own."""

    def __init__(self, target: str = "localhost:50051", *, timeout: float | None = 60.0) -> None:
        self._channel = grpc.insecure_channel(target, options=_OPTIONS)
        self._calls = _Calls(self._channel)
        self.timeout = timeout

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _run(self, call: tuple[Callable[..., Any], Any, Callable[[Any], T]]) -> T:
        rpc, request, parse = call
        try:
            return parse(rpc(request, timeout=self.timeout))
        except grpc.RpcError as exc:
            raise _error(exc) from None

    def list_models(self) -> list[models_pb2.ModelInfo]:
        return self._run(self._calls.list_models())

    def get_model(self, name: str) -> models_pb2.ModelInfo:
        return self._run(self._calls.get_model(name))

    def embed_words(self, model: str, words: Sequence[str], *, normalize: bool = False) -> Embeddings:
        return self._run(self._calls.embed_words(model, words, normalize))

    def nearest_words(
        self, model: str, words: Sequence[str], *, top_n: int = 10, restrict_vocab: int = 0
    ) -> list[list[Hit]]:
        return self._run(self._calls.nearest_words(model, words, top_n, restrict_vocab))

    def similarity(self, model: str, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return self._run(self._calls.similarity(model, pairs))

    def doesnt_match(self, model: str, words: Sequence[str]) -> tuple[str, list[tuple[str, float]]]:
        return self._run(self._calls.doesnt_match(model, words))

    def arithmetic(self, model: str, expressions: Sequence[ExpressionLike], **options: Any) -> ArithmeticResult:
        """Options: method ("cosadd" | "cosmul"), top_n, restrict_vocab, keep_inputs, return_query_vector,
        return_contributions."""
        return self._run(self._calls.arithmetic(model, expressions, **options))

    def evaluate_analogies(self, model: str, analogies: bytes | str | Path, **options: Any) -> AnalogyReport:
        """`analogies` is a file path or its bytes. Options: restrict_vocab, case_sensitive, dummy4unknown, method."""
        return self._run(self._calls.evaluate_analogies(model, analogies, **options))

    def health(self, service: str = "") -> str:
        """ "SERVING", "NOT_SERVING", ... for the whole server ("") or one service."""
        return self._run(self._calls.health_check(service))

    def wait_until_serving(self, timeout: float = 120.0, service: str = "") -> None:
        """Poll health until SERVING; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.health(service) == "SERVING":
                    return
            except EmbedsvcClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not become SERVING within {timeout:.0f} s")
            time.sleep(0.2)


class AsyncClient:
    """asyncio client with the same methods as `Client`, as coroutines."""

    def __init__(self, target: str = "localhost:50051", *, timeout: float | None = 60.0) -> None:
        self._channel = grpc.aio.insecure_channel(target, options=_OPTIONS)
        self._calls = _Calls(self._channel)
        self.timeout = timeout

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _run(self, call: tuple[Callable[..., Any], Any, Callable[[Any], T]]) -> T:
        rpc, request, parse = call
        try:
            return parse(await rpc(request, timeout=self.timeout))
        except grpc.RpcError as exc:
            raise _error(exc) from None

    async def list_models(self) -> list[models_pb2.ModelInfo]:
        return await self._run(self._calls.list_models())

    async def get_model(self, name: str) -> models_pb2.ModelInfo:
        return await self._run(self._calls.get_model(name))

    async def embed_words(self, model: str, words: Sequence[str], *, normalize: bool = False) -> Embeddings:
        return await self._run(self._calls.embed_words(model, words, normalize))

    async def nearest_words(
        self, model: str, words: Sequence[str], *, top_n: int = 10, restrict_vocab: int = 0
    ) -> list[list[Hit]]:
        return await self._run(self._calls.nearest_words(model, words, top_n, restrict_vocab))

    async def similarity(self, model: str, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return await self._run(self._calls.similarity(model, pairs))

    async def doesnt_match(self, model: str, words: Sequence[str]) -> tuple[str, list[tuple[str, float]]]:
        return await self._run(self._calls.doesnt_match(model, words))

    async def arithmetic(self, model: str, expressions: Sequence[ExpressionLike], **options: Any) -> ArithmeticResult:
        return await self._run(self._calls.arithmetic(model, expressions, **options))

    async def evaluate_analogies(self, model: str, analogies: bytes | str | Path, **options: Any) -> AnalogyReport:
        return await self._run(self._calls.evaluate_analogies(model, analogies, **options))

    async def health(self, service: str = "") -> str:
        return await self._run(self._calls.health_check(service))
