"""What the Python client takes and returns: plain dataclasses and numpy arrays, and the one error it raises."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np


@dataclass(frozen=True)
class SpaceVector:
    """A vector with the space it belongs to; the server refuses it in another space (SPACE_MISMATCH)."""

    values: np.ndarray
    space: str


@dataclass(frozen=True)
class DirectionRef:
    """A named latent direction as an expression term: `[image, (1.5, DirectionRef("thick"))]`."""

    name: str


@dataclass(frozen=True)
class ItemRef:
    """A stored item as an expression term in a search (`[(1.0, ItemRef("docs", "d7")), "wing"]`): its vector."""

    collection: str
    id: str


# An image: PNG/JPEG bytes, a path to such a file, or a numpy array (H, W) or (H, W, C), uint8 0..255 or float32 in
# [0, 1], sent raw (not resized by the server: it must have the model's size).
ImageLike = bytes | Path | np.ndarray
# A latent: a 1-D array, or a vector tagged with its space.
LatentLike = np.ndarray | SpaceVector
# One term of an expression: a word (str), a vector (1-D array or SpaceVector), an image (bytes, Path, 2-D or 3-D
# array), a DirectionRef, an ItemRef, or any of those weighted: (weight, term).
TermValue = str | np.ndarray | SpaceVector | bytes | Path | DirectionRef | ItemRef
TermLike = TermValue | tuple[float, TermValue]
# The text form ("king - man + woman") or a list of terms.
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
        # The id the server logged the call under (its x-request-id), when the server sent one.
        self.request_id = ""

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        return f"{self.code.name} {self.reason}: {self.message}{where}"


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
class ArithmeticResult:
    results: list[ExpressionResult]
    provenance: Provenance


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
class TextEmbeddings(Embeddings):
    """EmbedTexts' answer: the vectors, which texts were longer than the model reads, and token counts.

    `vectors` is (n, dimension) float32, or for a quantised `dtype` int8 ("int8", "binary") or uint8 ("uint8",
    "ubinary") with `dimension` values a row (int8, uint8) or ceil(dimension / 8) packed bits (binary, ubinary)."""

    truncated: list[int] = field(default_factory=list)
    token_counts: list[int] = field(default_factory=list)
    max_seq_length: int = 0
    # embed_texts_stream(strict=False): the batches that failed, by batch index (their rows are NaN, or 0 when
    # quantised).
    errors: dict[int, EmbedsvcClientError] = field(default_factory=dict)
    dtype: str = "float32"
    # Components per vector (before packing).
    dimension: int = 0
    # What the server wants the caller to know (for example: the model was not trained for these dimensions).
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Token:
    """One token of a text (TokenizeTexts): its id, vocabulary string, whether the tokenizer added it, and the
    characters of the text it covers (text[start:end]; 0, 0 for special tokens)."""

    id: int
    token: str
    special: bool
    start: int
    end: int


@dataclass(frozen=True)
class RerankResult:
    """One text's relevance to the query: its position in the request, its score, and the text with return_text."""

    index: int
    score: float
    text: str = ""


@dataclass(frozen=True)
class Reranked:
    """Rerank's answer: the results best first (ties in request order; top_n of them when asked), the positions of
    the texts whose pair was truncated, each pair's tokens (untruncated, request order) and the model's limit."""

    results: list[RerankResult]
    truncated: list[int]
    token_counts: list[int]
    max_seq_length: int
    provenance: Provenance | None = None


@dataclass(frozen=True)
class WordChunk:
    """One message of ExportWords: words from index `start` on, with their vectors when asked for."""

    start: int
    words: list[str]
    vectors: np.ndarray | None  # (len(words), dimension) float32
    dimension: int
    vocabulary_size: int
    space: str


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


@dataclass(frozen=True)
class HitExplanation:
    """Why a hit ranks where it does (keyword and hybrid searches, and searches with a rerank stage, diversity or
    examples): each side's rank (from 1; 0 = not among that side's candidates) and score, each side's share of the
    fused score, and what later stages said. None where a stage did not run."""

    dense_rank: int = 0
    dense_score: float | None = None
    keyword_rank: int = 0
    keyword_score: float | None = None
    dense_contribution: float = 0.0
    keyword_contribution: float = 0.0
    fused_score: float | None = None
    rerank_score: float | None = None
    best_positive: float | None = None
    best_negative: float | None = None
    mmr_score: float | None = None
    candidate_rank: int = 0


@dataclass(frozen=True)
class SearchHit:
    id: str
    score: float
    metadata: dict[str, Any]
    input: str = ""
    vector: np.ndarray | None = None
    # One of the query's own items, kept with keep_inputs=True.
    is_input: bool = False
    explanation: HitExplanation | None = None


@dataclass(frozen=True)
class HitGroup:
    """Hits sharing the value of the group_by field; `value` is None for the group of one item lacking it."""

    value: Any
    hits: list[SearchHit]


@dataclass(frozen=True)
class RetrievalReport:
    """How a search ran: the mode, the fusion (hybrid), the candidates each side gave, the keyword analyzer's language,
    the rerank stage, diversity and example strategy, and per query what it noticed ((query, notice) pairs, e.g.
    (0, "keyword_query_empty") for a query of only stopwords)."""

    mode: str
    fusion: dict[str, Any] | None = None  # method, rrf_k, dense_weight, candidates
    dense_candidates: int = 0
    keyword_candidates: int = 0
    keyword_language: str = ""
    rerank: dict[str, Any] | None = None  # model, candidates, raw_scores, model_version
    diversity: float | None = None
    diversity_candidates: int = 0
    example_strategy: str = ""
    notices: list[tuple[int, str]] = field(default_factory=list)
    query_prompt_name: str = ""  # the collection's query prompt, when the search embedded query texts with it


class SearchHits(list[SearchHit]):
    """A search's hits (a list, closest first), with `groups` (with group_by: the hits grouped; the list is then
    empty), `retrieval` (how the search ran) and `provenance`."""

    def __init__(
        self,
        hits: Sequence[SearchHit] = (),
        *,
        groups: list[HitGroup] | None = None,
        retrieval: RetrievalReport | None = None,
        provenance: Provenance | None = None,
    ) -> None:
        super().__init__(hits)
        self.groups = groups or []
        self.retrieval = retrieval
        self.provenance = provenance


@dataclass(frozen=True)
class PackedHits:
    """BatchSearch hits in columns (batch_search_packed): query i's hits are ids[offsets[i]:offsets[i + 1]], closest
    first, with their scores (and vectors, with include_vectors) at the same positions."""

    counts: np.ndarray  # (queries,) hits per query
    ids: list[str]
    scores: np.ndarray  # (hits,) float64
    vectors: np.ndarray | None = None  # (hits, dimension) float32, with include_vectors
    space: str = ""
    # The index used and the search's effective parameters (knobs, target and estimated recall).
    provenance: Provenance | None = None

    @property
    def offsets(self) -> np.ndarray:
        """(queries + 1,) start of each query's hits, then the total."""
        return np.concatenate([[0], np.cumsum(self.counts)])

    def __len__(self) -> int:
        return len(self.counts)

    def query(self, i: int) -> tuple[list[str], np.ndarray]:
        """Query i's hit ids and scores."""
        start = int(np.sum(self.counts[:i]))
        end = start + int(self.counts[i])
        return self.ids[start:end], self.scores[start:end]


@dataclass(frozen=True)
class GeneratedImage:
    png: bytes
    latent: np.ndarray
    space: str

    def array(self) -> np.ndarray:
        """The image as float32 (H, W) or (H, W, C) in [0, 1]."""
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(self.png)), dtype=np.float32) / 255.0


@dataclass(frozen=True)
class Sampled:
    images: list[GeneratedImage]
    seed: int


@dataclass(frozen=True)
class Projection:
    coordinates: np.ndarray  # (n, 2 or 3)
    labels: list[str]
    explained_variance_ratio: np.ndarray
    explained_variance: np.ndarray
    mean: np.ndarray
    components: np.ndarray
    transformed: list[np.ndarray]


@dataclass(frozen=True)
class Clustering:
    k: int
    assignments: np.ndarray
    responsibilities: np.ndarray
    means: np.ndarray
    weights: np.ndarray
    bic: dict[int, float]
    labels: list[str]
    mean_log_likelihood: float


@dataclass(frozen=True)
class Operation:
    """A long-running operation (Rebuild, Reembed, CreateSnapshot, RestoreSnapshot): its progress, and once done its
    error or its result."""

    name: str
    done: bool
    kind: str
    collection: str
    stage: str
    done_units: int
    total_units: int
    create_time: datetime | None
    update_time: datetime | None
    end_time: datetime | None
    cancel_requested: bool
    # Set when done and failed: the error the operation ended with (CANCELLED, INTERRUPTED, ...).
    error: EmbedsvcClientError | None = None
    # Set when done and successful: for a rebuild or a restore the collection's description (a CollectionInfo
    # message), for a re-embed a ReembedResult, for a snapshot the Snapshot.
    result: Any = None
    # Units per second in this stage so far, and the seconds it should still take at that rate (0: unknown).
    units_per_second: float = 0.0
    eta_seconds: float = 0.0
    # The replica running it.
    replica: str = ""
    # A re-embed's progress (an operations_pb2.ReembedProgress: target, model, items it cannot re-embed, ...).
    reembed: Any = None
    # What to know about the outcome (a restore for a model version not served here, ...).
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Alias:
    alias: str
    collection: str
    update_time: datetime | None


@dataclass(frozen=True)
class ServerInfo:
    server_version: str
    api_version: str
    start_time: datetime | None
    # Every limit of the server's configuration, by name (the README's [limits] table).
    limits: dict[str, int]


@dataclass(frozen=True)
class UpsertStreamResult:
    """What an UpsertStream wrote: items, batches, and the collection's count after the last batch."""

    upserted: int
    batches: int
    count: int


class UpsertStreamError(EmbedsvcClientError):
    """A bulk load that stopped: every batch before `next_batch` is durable; resume with resume_from=next_batch."""

    def __init__(self, cause: EmbedsvcClientError, next_batch: int) -> None:
        super().__init__(cause.code, cause.message, cause.reason, cause.metadata)
        self.next_batch = next_batch

    def __str__(self) -> str:
        return f"{super().__str__()}; batches before {self.next_batch} are durable (resume_from={self.next_batch})"
