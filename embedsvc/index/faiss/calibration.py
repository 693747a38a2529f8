"""Recall you can ask for: the measured recall of a collection's index at each setting of its search knob, and the
setting a target recall needs.

The knob is nprobe (IVF kinds), ef_search (HNSW kinds) or the oversampling (quantised FLAT); exact kinds have none
(recall 1). `measure` takes QUERIES of the collection's own live vectors as queries, finds each one's exact k nearest
other items (the query's own item left out, so that finding itself does not count), then searches at each knob value,
smallest first, exactly as a search would (codes, oversampling, rescoring), and records recall@k against the exact
answer; a series stops once a value reaches STOP. A quantised IVF or HNSW index has a second knob, its oversampling:
when the series at the collection's oversampling levels off below STOP (the codes, not the probing, limit it), the
series is measured again at twice and four times it. `choose` gives the cheapest setting whose recall reaches a
target by its 95% lower bound (the smallest knob value, then the smallest oversampling), and its recall; when none
does, the smallest setting within 0.001 of the best recall measured (its recall is then below the target, and says
so).

The lower bound counts queries, not neighbours: a query's misses come together (one near the edge of its IVF list, or
of its region of a graph, loses several of its k neighbours at once), so QUERIES x k neighbour-finds hold fewer than
QUERIES x k independent trials. `measure` records the design effect, the variance of the per-query recall over what
independent trials would give (between 1 and k; k, the most cautious, when no query missed anything), and `choose`
bounds each setting's recall with QUERIES x k / design effect trials. At 1M clustered vectors (benchmarks/scale.py,
IVF 512 lists + int8) misses at nprobe 1 were 3.3 a query in 3.5% of the queries, a design effect of 5: the
estimate from 200 queries spread 2.2 times as wide as independent trials say, and nprobe 1 (0.985 for new queries)
passed a 0.99 target by the old bound in one calibration of 7; the collection's own vectors (their own item left out)
and new queries of the same data got the same recall (0.989 and 0.985, +- 0.003).

A calibration is redone in the background after every training or rebuild, and when the collection has grown GROWTH
times since; it is saved in the checkpoint's manifest and read back at open.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedsvc.index.types import IndexKind, IndexParams

QUERIES = 1000
K = 10
STOP = 0.999
GROWTH = 1.5
_NPROBE = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 4096)
_EF = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 4096)
_OVERSAMPLE = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 100)


def knob(params: IndexParams) -> tuple[str, tuple[int, ...]]:
    """The knob a target recall sets for these parameters, and the values measured ("" and () when exact)."""
    if params.is_ivf:
        return "nprobe", (*(v for v in _NPROBE if v < params.nlist), params.nlist)
    if params.kind is IndexKind.HNSW:
        return "ef_search", _EF
    if params.quantised:
        return "oversample", _OVERSAMPLE
    return "", ()


@dataclass(frozen=True)
class Calibration:
    knob: str
    # (knob value, oversampling, recall@k): series by oversampling, values ascending in each. For quantised FLAT the
    # knob is the oversampling (both equal); without quantisation the oversampling is 1.
    points: tuple[tuple[int, int, float], ...]
    count: int  # live items when measured
    queries: int
    k: int = K
    # The variance of the per-query recall over that of independent trials (1 .. k): how clustered the misses are.
    design_effect: float = float(K)

    def choose(self, target: float) -> tuple[int, int, float]:
        """(knob value, oversampling, recall) of the cheapest setting reaching `target` (see the module docstring):
        reaching it by the lower end of its 95% interval (Wilson's, over the queries x k neighbours measured counted
        as queries x k / design effect independent trials), not by the measured figure alone."""
        n = max(self.queries * self.k / max(self.design_effect, 1.0), 1.0)
        reaching = [p for p in self.points if wilson_lower(p[2], n) >= target]
        if not reaching:
            best = max(p[2] for p in self.points)
            reaching = [p for p in self.points if p[2] >= best - 0.001]
        return min(reaching, key=lambda p: (p[0], p[1]))

    def estimate(self, value: int, oversample: int) -> float | None:
        """The recall measured at the largest setting not above (value, oversample) (a lower bound: recall grows
        with both)."""
        below = [p for p in self.points if p[0] <= value and p[1] <= oversample]
        return max(below, key=lambda p: (p[0], p[1]))[2] if below else None

    def to_json(self) -> dict[str, Any]:
        return {"knob": self.knob, "points": [list(p) for p in self.points], "count": self.count,
                "queries": self.queries, "k": self.k, "design_effect": self.design_effect}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Calibration | None:
        """None for a calibration of an older form (without a design effect: measured again at open)."""
        if not data or not data.get("points") or len(data["points"][0]) != 3 or "design_effect" not in data:
            return None
        points = tuple((int(v), int(o), float(r)) for v, o, r in data["points"])
        return cls(str(data["knob"]), points, int(data["count"]), int(data["queries"]), int(data.get("k", K)),
                   float(data["design_effect"]))  # fmt: skip


def wilson_lower(recall: float, n: float, z: float = 1.96) -> float:
    """The lower end of the Wilson score interval of a proportion measured over n trials."""
    centre = recall + z * z / (2 * n)
    spread = z * math.sqrt(recall * (1 - recall) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


# search(queries, k, exclude, exact, knob value, oversampling) -> the hits' ids per query, as a search finds them.
Search = Callable[[np.ndarray, int, Sequence[set[str]], bool, int, int], list[list[str]]]


def measure(
    params: IndexParams, sample: np.ndarray, sample_ids: Sequence[str], count: int, search: Search
) -> Calibration | None:
    """Recall@K at each setting, on the sample's vectors (index form) as queries, each leaving out its own id."""
    name, values = knob(params)
    if not name or not len(sample):
        return None
    exclude = [{i} for i in sample_ids]
    k = min(K, max(count - 1, 1))
    truth = search(sample, k, exclude, True, 0, 0)
    wanted = [set(row) for row in truth]
    total = max(sum(len(w) for w in wanted), 1)
    points: list[tuple[int, int, float]] = []
    effects: list[float] = []
    if name == "oversample":
        series = [0]
    elif params.quantised:
        series = [params.oversample, 2 * params.oversample, 4 * params.oversample]
    else:
        series = [1]
    for oversample in series:
        for value in values:
            found = search(sample, k, exclude, False, value, oversample)
            hits = np.array([len(set(row) & w) for row, w in zip(found, wanted, strict=True)], np.float64)
            recall = float(hits.sum()) / total
            points.append((value, oversample or value, round(recall, 4)))
            effect = design_effect(hits, np.array([len(w) for w in wanted], np.float64))
            if effect is not None:
                effects.append(effect)
            if recall >= STOP:
                break
        if max(p[2] for p in points) >= STOP:
            break
    # The most clustered series point (the cheap settings, with the most misses, say the most); k without misses.
    effect = min(max(effects, default=float(k)), float(k))
    return Calibration(name, tuple(points), count, len(sample), k, round(max(effect, 1.0), 3))


def design_effect(found: np.ndarray, wanted: np.ndarray) -> float | None:
    """The variance of the per-query recall measured over what as many independent neighbour-finds would give: about
    the misses of a query that misses any (1: misses spread one a query; k: a query finds all or none). None when no
    query missed (nothing to say how they cluster)."""
    queries, total = len(found), float(wanted.sum())
    p = float(found.sum()) / total if total else 1.0
    if queries < 2 or p >= 1.0 or p <= 0.0:
        return None
    # Ratio-estimator variance of the recall over queries (a query's neighbours may be fewer than k), against the
    # binomial variance of `total` independent trials.
    residual = found - p * wanted
    mean_wanted = total / queries
    variance = float((residual**2).sum()) / (queries - 1) / (queries * mean_wanted**2)
    return variance / (p * (1 - p) / total)


def stale(calibration: Calibration | None, count: int) -> bool:
    """Whether the collection has grown (or shrunk) enough since its calibration to measure again."""
    if calibration is None:
        return True
    return count >= GROWTH * calibration.count or count * GROWTH <= calibration.count
