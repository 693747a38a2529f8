"""Why a hit ranks where it does: the record every retrieval stage fills in its part of (the API's HitExplanation).

Fusion fills in each side's rank (from 1; 0 = not among that side's candidates), score and share of the fused
score; the rerank stage its score; queries by example with the best-score strategy the best similarity to a positive
and to a negative example; diversity the maximal marginal relevance the hit was chosen with; and every stage that
reorders candidates keeps `candidate_rank`, the rank the hit had before it was reordered.
"""

from __future__ import annotations

from dataclasses import dataclass

from embedsvc.index.types import Hit


@dataclass(frozen=True)
class Explanation:
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

    @property
    def empty(self) -> bool:
        """True when no stage said anything (a plain dense search: its score says it all)."""
        return self == Explanation()


@dataclass
class Candidate:
    """A hit on its way through a search's stages, with what each stage said about it (the stages set `hit.score`
    to their score and add to the explanation)."""

    hit: Hit
    explanation: Explanation
