"""Fusion of a dense and a keyword ranking into one (hybrid search), with each fused hit's explanation.

Two methods, as the API documents them (protos/embedsvc/v1/retrieval.proto, FusionMethod):
  - reciprocal rank fusion: score = sum over the sides an item is in of weight / (k + rank), rank from 1;
  - weighted (relative score fusion): each side's scores min-max normalised over that side's candidates (an L2
    distance negated first; all 1 when they are equal), 0 for an item missing from a side, then
    dense_weight x dense + (1 - dense_weight) x keyword.
Ties are broken by the better keyword rank, then the better dense rank, then the key, so the order never depends on
how a dictionary happened to iterate. (Exact ties are common under RRF: ranks (i, j) and (j, i) sum alike. Breaking
them toward the keyword side reproduces the README's reference RRF figure, 0.552 on Cranfield dev; toward the dense
side it is 0.547.)

Defaults (docs/architecture.md, "Hybrid search: the defaults"): weighted fusion, dense weight 0.5, 200 candidates a
side; RRF's k is 60 when RRF is asked for. Pure functions over plain values: no index, no grpc.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from embedsvc.core.collections.explanation import Explanation
from embedsvc.errors import invalid

DEFAULT_RRF_K = 60
DEFAULT_CANDIDATES = 200
DEFAULT_WEIGHTED_DENSE_WEIGHT = 0.5
MAX_RRF_K = 10_000


class Method(StrEnum):
    RRF = "rrf"
    WEIGHTED = "weighted"


DEFAULT_METHOD = Method.WEIGHTED


@dataclass(frozen=True)
class Fusion:
    """Fusion parameters; None / 0 means "not given" until `resolved` fills them from defaults."""

    method: Method | None = None
    rrf_k: int = 0
    dense_weight: float | None = None
    candidates: int = 0

    def over(self, defaults: Fusion) -> Fusion:
        """These parameters, with the ones not given taken from `defaults` (a collection's)."""
        return Fusion(
            self.method or defaults.method,
            self.rrf_k or defaults.rrf_k,
            self.dense_weight if self.dense_weight is not None else defaults.dense_weight,
            self.candidates or defaults.candidates,
        )

    def resolved(self, k: int, max_candidates: int, field: str = "options.fusion") -> Fusion:
        """Every parameter filled in and checked (INVALID_VALUE naming the field); candidates at least k."""
        method = self.method or DEFAULT_METHOD
        rrf_k = self.rrf_k or DEFAULT_RRF_K
        if not 1 <= rrf_k <= MAX_RRF_K:
            raise invalid(f"{field}.rrf_k", f"rrf_k must be 1..{MAX_RRF_K}, got {rrf_k}")
        weight = self.dense_weight
        if weight is None and method is Method.WEIGHTED:
            weight = DEFAULT_WEIGHTED_DENSE_WEIGHT
        if weight is not None and not (math.isfinite(weight) and 0.0 <= weight <= 1.0):
            raise invalid(f"{field}.dense_weight", f"dense_weight must be 0.0..1.0, got {weight}")
        candidates = self.candidates or max(DEFAULT_CANDIDATES, k)
        if not k <= candidates <= max_candidates:
            raise invalid(f"{field}.candidates", f"candidates must be {k} (k)..{max_candidates}, got {candidates}")
        return replace(self, method=method, rrf_k=rrf_k, dense_weight=weight, candidates=candidates)


@dataclass(frozen=True)
class Fused:
    key: Hashable
    score: float
    explanation: Explanation


def _sides(
    dense: Sequence[tuple[Hashable, float]], keyword: Sequence[tuple[Hashable, float]]
) -> dict[Hashable, Explanation]:
    """Every candidate's ranks and scores on each side (a key listed twice on one side keeps its first place)."""
    found: dict[Hashable, Explanation] = {}
    for rank, (key, score) in enumerate(dense, start=1):
        if key not in found:
            found[key] = Explanation(dense_rank=rank, dense_score=score)
    for rank, (key, score) in enumerate(keyword, start=1):
        seen = found.get(key, Explanation())
        if not seen.keyword_rank:
            found[key] = replace(seen, keyword_rank=rank, keyword_score=score)
    return found


def _ordered(fused: list[Fused]) -> list[Fused]:
    def order(hit: Fused) -> tuple[float, float, float, str]:
        e = hit.explanation
        return (-hit.score, e.keyword_rank or math.inf, e.dense_rank or math.inf, repr(hit.key))

    return sorted(fused, key=order)


def rrf(
    dense: Sequence[tuple[Hashable, float]],
    keyword: Sequence[tuple[Hashable, float]],
    k: int = DEFAULT_RRF_K,
    dense_weight: float | None = None,
) -> list[Fused]:
    """Reciprocal rank fusion of two rankings (each best first, as (key, score)); scores are only explained."""
    wd, wk = (1.0, 1.0) if dense_weight is None else (dense_weight, 1.0 - dense_weight)
    out = []
    for key, e in _sides(dense, keyword).items():
        d = wd / (k + e.dense_rank) if e.dense_rank else 0.0
        w = wk / (k + e.keyword_rank) if e.keyword_rank else 0.0
        out.append(Fused(key, d + w, replace(e, dense_contribution=d, keyword_contribution=w, fused_score=d + w)))
    return _ordered(out)


def min_max(scores: Sequence[float], *, lower_is_better: bool = False) -> list[float]:
    """Scores mapped onto [0, 1], the best 1 and the worst 0 (all 1 when they are equal)."""
    values = [-s for s in scores] if lower_is_better else list(scores)
    if not values:
        return []
    low, high = min(values), max(values)
    if high == low:
        return [1.0] * len(values)
    return [(v - low) / (high - low) for v in values]


def weighted(
    dense: Sequence[tuple[Hashable, float]],
    keyword: Sequence[tuple[Hashable, float]],
    dense_weight: float = DEFAULT_WEIGHTED_DENSE_WEIGHT,
    *,
    dense_lower_is_better: bool = False,
) -> list[Fused]:
    """Relative score fusion: min-max normalised scores over each side's candidates, combined with a weight.
    `dense_lower_is_better` for L2 distances (BM25 scores are always higher-is-better)."""
    dense_values = min_max([s for _, s in dense], lower_is_better=dense_lower_is_better)
    dense_norm = dict(zip((key for key, _ in dense), dense_values, strict=True))
    keyword_norm = dict(zip((key for key, _ in keyword), min_max([s for _, s in keyword]), strict=True))
    out = []
    for key, e in _sides(dense, keyword).items():
        d = dense_weight * dense_norm[key] if e.dense_rank else 0.0
        w = (1.0 - dense_weight) * keyword_norm[key] if e.keyword_rank else 0.0
        out.append(Fused(key, d + w, replace(e, dense_contribution=d, keyword_contribution=w, fused_score=d + w)))
    return _ordered(out)


def fuse(
    dense: Sequence[tuple[Hashable, float]],
    keyword: Sequence[tuple[Hashable, float]],
    fusion: Fusion,
    *,
    dense_lower_is_better: bool = False,
) -> list[Fused]:
    """The fused ranking by resolved parameters (Fusion.resolved), each side cut to its candidates."""
    dense, keyword = dense[: fusion.candidates], keyword[: fusion.candidates]
    if fusion.method is Method.WEIGHTED:
        weight = DEFAULT_WEIGHTED_DENSE_WEIGHT if fusion.dense_weight is None else fusion.dense_weight
        return weighted(dense, keyword, weight, dense_lower_is_better=dense_lower_is_better)
    return rrf(dense, keyword, fusion.rrf_k or DEFAULT_RRF_K, fusion.dense_weight)
