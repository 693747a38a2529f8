"""What a search asks for, and what it resolves to: the queries and options as the domain sees them, and the plan
(mode, fusion, candidates, stages) after the collection's defaults and the limits.

Resolution, in the API's words (protos/embedsvc/v1/retrieval.proto): the mode is the request's, else the collection's
default; fusion parameters are the request's field by field, else the collection's, else the service's defaults
(fusion.py); each stage's candidates are checked against `Limits` (LIMIT_EXCEEDED) and against k (INVALID_VALUE).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from embedsvc.core.collections.fusion import Fusion, Method
from embedsvc.core.expression import Expression
from embedsvc.core.images.codec import ImageInput
from embedsvc.errors import EmbedsvcError, Reason, invalid, limit_exceeded
from embedsvc.index.types import CollectionConfig, SearchMode
from embedsvc.limits import Limits

DEFAULT_K = 10
DEFAULT_RERANK_CANDIDATES = 50
# Diversity's candidates by default: 4 x k, at least this many.
MIN_DIVERSITY_CANDIDATES = 100
MODES = tuple(m.value for m in SearchMode)


class Strategy:
    """Search-by-example strategies (the API's ExampleStrategy)."""

    AVERAGE_VECTOR = "average_vector"
    BEST_SCORE = "best_score"


@dataclass(frozen=True)
class ExamplesIn:
    positive: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)
    strategy: str = Strategy.AVERAGE_VECTOR


@dataclass(frozen=True)
class QueryIn:
    vector: np.ndarray | None = None
    space: str = ""
    item_id: str = ""
    input: str = ""
    expression: Expression | None = None
    image: ImageInput | None = None
    examples: ExamplesIn | None = None
    # The text the keyword side matches (default: `input`).
    keyword_text: str = ""


@dataclass(frozen=True)
class PackedQueries:
    """Query vectors as one flat float32 array, rows of the collection's dimension (the bulk form of BatchSearch)."""

    values: np.ndarray


@dataclass(frozen=True)
class RerankIn:
    model: str
    candidates: int = 0
    raw_scores: bool = False


@dataclass(frozen=True)
class SearchOptions:
    k: int = DEFAULT_K
    filter: str = ""
    ef_search: int = 0
    nprobe: int = 0
    exact: bool = False
    include_metadata: bool = True
    include_vectors: bool = False
    mode: SearchMode | None = None  # None: the collection's default
    fusion: Fusion = field(default_factory=Fusion)
    rerank: RerankIn | None = None
    group_by: str = ""
    group_size: int = 0
    diversity: float | None = None
    diversity_candidates: int = 0
    keep_inputs: bool = False
    include_explanations: bool = True
    target_recall: float = 0.0  # 0: the collection's own (IndexSpec.target_recall)
    oversample: int = 0  # quantised indexes: candidates per hit (0: the collection's, or the target's)


def collection_fusion(config: CollectionConfig) -> Fusion:
    """A collection's fusion defaults as stored (unset fields: the service's defaults)."""
    defaults = config.search_defaults
    return Fusion(
        Method(defaults.fusion) if defaults.fusion else None,
        defaults.rrf_k,
        defaults.dense_weight,
        defaults.candidates,
    )


@dataclass(frozen=True)
class Plan:
    """A search's resolved parameters, the same for every query of the call."""

    mode: SearchMode
    k: int
    fusion: Fusion | None  # hybrid: every field filled in
    rerank: RerankIn | None  # candidates filled in
    diversity: float | None  # None: no diversity (0 is none too)
    diversity_candidates: int
    group_by: str
    group_size: int
    keep_inputs: bool
    explain: bool  # hits carry explanations

    @property
    def staged(self) -> bool:
        """Whether anything beyond a plain dense search runs (then hits are gathered as candidates first)."""
        return (
            self.mode is not SearchMode.DENSE
            or self.rerank is not None
            or self.diversity is not None
            or bool(self.group_by)
            or self.keep_inputs
        )

    def pool(self) -> int:
        """Candidates the stages after the first ranking need: the rerank's, else diversity's, else k (grouping
        starts from k x group_size and fetches more as it needs)."""
        if self.rerank is not None:
            return max(self.rerank.candidates, self.k)
        if self.diversity is not None:
            return self.diversity_candidates
        if self.group_by:
            return self.k * self.group_size
        return self.k


def check_k(k: int, limits: Limits) -> int:
    k = k or DEFAULT_K
    if k < 0:
        raise invalid("options.k", f"k must be positive, got {k}")
    if k > limits.max_k:
        raise limit_exceeded("options.k", "k", k, limits.max_k)
    return k


def plan(options: SearchOptions, config: CollectionConfig, limits: Limits, *, examples: bool) -> Plan:
    """The options resolved against the collection's defaults and checked against the limits."""
    k = check_k(options.k, limits)
    mode = options.mode or config.search_defaults.mode
    if examples and mode is not SearchMode.DENSE:
        raise invalid("options.mode", f"queries by example are dense searches; mode {mode.value} cannot run them")
    fusion = None
    if mode is SearchMode.HYBRID:
        # resolved() checks the range; the limit is LIMIT_EXCEEDED, checked here.
        fusion = options.fusion.over(collection_fusion(config)).resolved(k, 2**31 - 1)
        if fusion.candidates > limits.max_candidates:
            raise limit_exceeded("options.fusion.candidates", "candidates", fusion.candidates, limits.max_candidates)
    rerank = None
    if options.rerank is not None:
        if not options.rerank.model:
            raise EmbedsvcError(Reason.MISSING_FIELD, "the rerank stage needs a model", field="options.rerank.model")
        candidates = options.rerank.candidates or max(DEFAULT_RERANK_CANDIDATES, k)
        if candidates > limits.max_rerank_candidates:
            raise limit_exceeded(
                "options.rerank.candidates", "rerank candidates", candidates, limits.max_rerank_candidates
            )
        if candidates < k:
            raise invalid("options.rerank.candidates", f"rerank candidates must be at least k ({k}), got {candidates}")
        rerank = RerankIn(options.rerank.model, candidates, options.rerank.raw_scores)
    diversity = options.diversity
    diversity_candidates = 0
    if diversity is not None:
        if not (math.isfinite(diversity) and 0.0 <= diversity <= 1.0):
            raise invalid("options.diversity", f"diversity must be 0.0..1.0, got {diversity}")
        if diversity == 0.0:
            diversity = None
        else:
            diversity_candidates = options.diversity_candidates or max(4 * k, MIN_DIVERSITY_CANDIDATES)
            if diversity_candidates > limits.max_candidates:
                raise limit_exceeded(
                    "options.diversity_candidates", "diversity candidates", diversity_candidates, limits.max_candidates
                )
            if diversity_candidates < k:
                raise invalid(
                    "options.diversity_candidates",
                    f"diversity_candidates must be at least k ({k}), got {diversity_candidates}",
                )
    elif options.diversity_candidates:
        raise invalid("options.diversity_candidates", "diversity_candidates needs diversity")
    group_size = options.group_size
    if options.group_by:
        group_size = group_size or 1
        if group_size < 0:
            raise invalid("options.group_size", f"group_size must be positive, got {group_size}")
        if group_size > limits.max_group_size:
            raise limit_exceeded("options.group_size", "hits per group", group_size, limits.max_group_size)
    elif group_size:
        raise invalid("options.group_size", "group_size needs group_by")
    explain = options.include_explanations and (
        mode is not SearchMode.DENSE or rerank is not None or diversity is not None or examples
    )
    return Plan(
        mode,
        k,
        fusion,
        rerank,
        diversity,
        diversity_candidates,
        options.group_by,
        group_size,
        options.keep_inputs,
        explain,
    )
