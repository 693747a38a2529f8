"""Search by example items: positive and negative examples into a query vector (average vector) or into a score
for each candidate (best score), as Qdrant's recommendation strategies define them.

Similarity is the metric's: cosine (vectors unit-normalised), inner product, or an L2 distance negated, so that
higher is always closer here.
"""

from __future__ import annotations

import numpy as np

from embedsvc.index.types import Metric
from embedsvc.vectors import unit_rows


def similarity(a: np.ndarray, b: np.ndarray, metric: Metric) -> np.ndarray:
    """(len(a), len(b)) similarities, higher closer."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if metric is Metric.COSINE:
        return unit_rows(a) @ unit_rows(b).T
    if metric is Metric.INNER_PRODUCT:
        return a @ b.T
    return -((a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :])


def average_vector(positives: np.ndarray, negatives: np.ndarray, metric: Metric) -> np.ndarray:
    """avg(positives) + (avg(positives) - avg(negatives)), or avg(positives) without negatives; each example
    unit-normalised first in a cosine collection. At least one positive is needed (the caller checks)."""
    positives = np.asarray(positives, dtype=np.float64)
    negatives = np.asarray(negatives, dtype=np.float64).reshape(-1, positives.shape[1])
    if metric is Metric.COSINE:
        positives, negatives = unit_rows(positives), unit_rows(negatives)
    mean = positives.mean(axis=0)
    query = 2 * mean - negatives.mean(axis=0) if len(negatives) else mean
    return query.astype(np.float32)


def squash(x: np.ndarray) -> np.ndarray:
    """x / (1 + |x|) mapped onto (0, 1): monotone, so every item closer to a positive than to any negative can rank
    above every item closer to a negative."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ratio = np.where(np.isinf(x), np.sign(x), x / (1.0 + np.abs(x)))
    return 0.5 * (ratio + 1.0)


def best_score(
    candidates: np.ndarray, positives: np.ndarray, negatives: np.ndarray, metric: Metric
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score, best positive similarity, best negative similarity) per candidate: squash(p) when p > n (or no
    negatives), -squash(n) otherwise; -inf stands for "no example of that kind"."""
    d = np.asarray(candidates).shape[1]
    positives, negatives = np.asarray(positives).reshape(-1, d), np.asarray(negatives).reshape(-1, d)
    p = similarity(candidates, positives, metric).max(axis=1) if len(positives) else np.full(len(candidates), -np.inf)
    n = similarity(candidates, negatives, metric).max(axis=1) if len(negatives) else np.full(len(candidates), -np.inf)
    return np.where(p > n, squash(p), -squash(n)), p, n
