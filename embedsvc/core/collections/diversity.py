"""Maximal marginal relevance (Carbonell and Goldstein, 1998): hits chosen one by one, each maximising
(1 - diversity) x relevance - diversity x (its greatest cosine similarity to a hit already chosen).

The first hit is always the most relevant one. With diversity = 1 - lambda this is LangChain's
`maximal_marginal_relevance` (relevance: cosine similarity to the query vector). diversity 0 keeps the relevance
order; ties go to the earlier candidate.
"""

from __future__ import annotations

import numpy as np

from embedsvc.vectors import unit_rows


def mmr(relevance: np.ndarray, vectors: np.ndarray, k: int, diversity: float) -> tuple[list[int], list[float]]:
    """The chosen candidates' positions in order, and the marginal relevance each was chosen with.
    relevance: (n,), vectors: (n, d) (any scale: compared by cosine; a zero vector is like no other)."""
    n = len(relevance)
    if n == 0 or k <= 0:
        return [], []
    unit = unit_rows(np.asarray(vectors, dtype=np.float64))
    relevance = np.asarray(relevance, dtype=np.float64)
    weight = 1.0 - diversity
    closest = np.full(n, -np.inf)  # greatest cosine similarity to a chosen hit
    free = np.ones(n, dtype=bool)
    order: list[int] = []
    marginal: list[float] = []
    for _ in range(min(k, n)):
        if order:
            scores = np.where(free, weight * relevance - diversity * closest, -np.inf)
            pick = int(np.argmax(scores))
            value = float(scores[pick])
        else:  # the first: the most relevant, whatever the diversity (nothing is redundant yet)
            pick = int(np.argmax(relevance))
            value = weight * float(relevance[pick])
        order.append(pick)
        marginal.append(value)
        free[pick] = False
        closest = np.maximum(closest, unit @ unit[pick])
    return order, marginal


def relevance_to(query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Cosine similarity of each vector to the query vector (the relevance MMR uses when there is one)."""
    return unit_rows(np.asarray(vectors, dtype=np.float64)) @ unit_rows(np.asarray(query, dtype=np.float64)[None])[0]


def relevance_of_scores(scores: np.ndarray) -> np.ndarray:
    """Without a query vector (keyword mode): each score divided by the best (scores are positive, higher better)."""
    scores = np.asarray(scores, dtype=np.float64)
    best = scores.max() if len(scores) else 0.0
    return scores / best if best > 0 else np.ones_like(scores)
