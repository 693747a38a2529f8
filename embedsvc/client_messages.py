"""What the Python client sends and returns: request builders, response parsers and the plain result types.

Kept apart from the channel handling in `embedsvc.client`, which re-exports the public names; no grpc calls here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2

from embedsvc.v1 import arithmetic_pb2, collections_pb2, common_pb2, text_pb2, words_pb2

METHODS = {"cosadd": arithmetic_pb2.METHOD_COSADD, "cosmul": arithmetic_pb2.METHOD_COSMUL}
METRICS = {
    "cosine": collections_pb2.METRIC_COSINE,
    "l2": collections_pb2.METRIC_L2,
    "ip": collections_pb2.METRIC_INNER_PRODUCT,
}
INDEX_KINDS = {
    "flat": collections_pb2.INDEX_KIND_FLAT,
    "hnsw": collections_pb2.INDEX_KIND_HNSW,
    "ivf-flat": collections_pb2.INDEX_KIND_IVF_FLAT,
    "ivf-pq": collections_pb2.INDEX_KIND_IVF_PQ,
}


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


@dataclass(frozen=True)
class TextEmbeddings(Embeddings):
    """EmbedTexts' answer: the vectors, which texts were longer than the model reads, and token counts."""

    truncated: list[int] = field(default_factory=list)
    token_counts: list[int] = field(default_factory=list)
    max_seq_length: int = 0


def _text_embeddings(response: text_pb2.EmbedTextsResponse) -> TextEmbeddings:
    vectors = np.asarray([v.values for v in response.vectors], dtype=np.float32)
    return TextEmbeddings(
        vectors,
        response.vectors[0].space if response.vectors else "",
        provenance=_provenance(response.provenance),
        truncated=list(response.truncated),
        token_counts=list(response.token_counts),
        max_seq_length=response.max_seq_length,
    )


LONG_TEXT_MODES = {"truncate": text_pb2.LONG_TEXT_MODE_TRUNCATE, "chunk": text_pb2.LONG_TEXT_MODE_CHUNK}


def _embed_texts_request(model: str, texts: Sequence[str], normalize: bool, long_texts: str) -> Any:
    if long_texts not in LONG_TEXT_MODES:
        raise ValueError(f"long_texts must be one of {', '.join(LONG_TEXT_MODES)}, got {long_texts!r}")
    return text_pb2.EmbedTextsRequest(
        model=model, texts=list(texts), normalize=normalize, long_texts=LONG_TEXT_MODES[long_texts]
    )


@dataclass(frozen=True)
class SearchHit:
    id: str
    score: float
    metadata: dict[str, Any]
    input: str = ""
    vector: np.ndarray | None = None


def _hit(h: collections_pb2.SearchHit) -> SearchHit:
    vector = np.asarray(h.vector.values, dtype=np.float32) if h.HasField("vector") else None
    metadata = json_format.MessageToDict(h.metadata) if h.HasField("metadata") else {}
    return SearchHit(h.id, h.score, metadata, h.input, vector)


def _item_dict(item: collections_pb2.Item) -> dict[str, Any]:
    return {
        "id": item.id,
        "vector": np.asarray(item.vector.values, dtype=np.float32) if item.HasField("vector") else None,
        "metadata": json_format.MessageToDict(item.metadata),
        "input": item.input,
    }


def build_items(
    ids: Sequence[str],
    vectors: np.ndarray | None = None,
    metadata: Sequence[dict[str, Any] | None] | None = None,
    inputs: Sequence[str] | None = None,
) -> tuple[list[collections_pb2.Item], bytes]:
    """Item messages from parallel lists (ids, an (n, d) array or None with inputs, metadata dicts, inputs), and
    the vectors packed as float32 little-endian for the request's `packed_vectors`."""
    items = []
    for n, item_id in enumerate(ids):
        item = collections_pb2.Item(id=item_id, input=inputs[n] if inputs is not None else "")
        if metadata is not None and metadata[n]:
            item.metadata.update(metadata[n])
        items.append(item)
    return items, b"" if vectors is None else packed_rows(vectors)


def packed_rows(vectors: np.ndarray) -> bytes:
    """An (n, d) array as the float32 little-endian, row-major bytes of a `packed_*` field."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise ValueError(f"expected an (n, d) array of vectors, got shape {vectors.shape}")
    return np.ascontiguousarray(vectors, dtype="<f4").tobytes()


def _query(
    vector: np.ndarray | SpaceVector | None = None,
    item_id: str = "",
    input: str = "",
    expression: ExpressionLike | None = None,
) -> collections_pb2.Query:
    if vector is not None:
        return collections_pb2.Query(vector=_vector(vector))
    if item_id:
        return collections_pb2.Query(item_id=item_id)
    if input:
        return collections_pb2.Query(input=input)
    if expression is not None:
        return collections_pb2.Query(expression=_expression(expression))
    raise ValueError("give one of vector, item_id, input or expression")


def _search_options(
    k: int = 10,
    filter: str = "",
    exact: bool = False,
    ef_search: int = 0,
    nprobe: int = 0,
    include_vectors: bool = False,
    include_metadata: bool = True,
) -> collections_pb2.SearchOptions:
    return collections_pb2.SearchOptions(
        k=k,
        filter=filter,
        exact=exact,
        ef_search=ef_search,
        nprobe=nprobe,
        include_vectors=include_vectors,
        include_metadata=include_metadata,
    )
