"""The rerank stage of a search: a cross-encoder (Capability.PAIRS) scores (query text, item text) pairs for the best
candidates after fusion and exclusions, and they are reordered by its scores (RerankStage in the API).

The model's scores are raw (logits; `CrossEncoder.score`); hits get their sigmoid (0 to 1), or the raw scores with
`raw_scores`, as TextService.Rerank and text-embeddings-inference's /rerank do. Ties keep the candidates' order.
Candidates without text cannot be scored: they come after every candidate with text, in their order, with a score
below every scored one (0 with the sigmoid; the lowest raw score minus 1 with raw scores), and no rerank_score in
their explanation. Pairs longer than the model's max_seq_length are truncated by the model (a search does not refuse
them, unlike TextService.Rerank without `truncate`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from embedsvc.backends.capabilities import CrossEncoder
from embedsvc.core.collections.explanation import Candidate


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


@dataclass(frozen=True)
class Reranked:
    candidates: list[Candidate]
    missing_text: bool  # some candidates had no text (ranked last)


def rerank(model: CrossEncoder, query: str, candidates: Sequence[Candidate], *, raw_scores: bool) -> Reranked:
    """The candidates reordered by the model's scores of (query, candidate text)."""
    scored = [c for c in candidates if c.hit.input]
    textless = [c for c in candidates if not c.hit.input]
    raw = np.asarray(model.score([(query, c.hit.input) for c in scored]), dtype=np.float64) if scored else np.empty(0)
    scores = raw if raw_scores else sigmoid(raw)
    order = np.argsort(-scores, kind="stable")
    out: list[Candidate] = []
    for position in order.tolist():
        candidate = scored[position]
        score = float(scores[position])
        candidate.hit.score = score
        candidate.explanation = replace(candidate.explanation, rerank_score=score)
        out.append(candidate)
    floor = (float(scores.min()) - 1.0 if len(scores) else -1.0) if raw_scores else 0.0
    for candidate in textless:
        candidate.hit.score = floor if math.isfinite(floor) else 0.0
        out.append(candidate)
    return Reranked(out, bool(textless))
