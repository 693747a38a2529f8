"""Reranking (TextService.Rerank): a query and texts in, each text's relevance to the query out, best first, with the
semantics of text-embeddings-inference's /rerank.

The cross-encoder reads each (query, text) pair; its raw score is a logit, and the answer's score is its sigmoid (0 to
1) unless raw scores are asked for (TEI's `raw_scores`; the sigmoid is what `CrossEncoder.predict` applies by default
to a one-label model). A pair longer than the model's max_seq_length tokens is refused, naming the text, unless
`truncate` is set (TEI's default: no truncation), in which case the model reads it truncated as sentence-transformers
truncates it and the answer lists it. Results come best first, ties in request order, the best `top_n` when it is set.
Pairs go through the model's batcher (`PairModel`): merged with other callers' pairs, split into batches of at most
the model's max_batch_size, each checked against the call's deadline and cancellation before it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from embedsvc.calls import CallControl
from embedsvc.core.provenance import Provenance, provenance
from embedsvc.core.texts.batching import PairModel
from embedsvc.core.texts.embedding import check_text
from embedsvc.errors import EmbedsvcError, Reason, check_count, invalid
from embedsvc.limits import Limits


@dataclass(frozen=True)
class Ranked:
    """One text's result: its position in the request and its score."""

    index: int
    score: float


@dataclass(frozen=True)
class Reranked:
    results: list[Ranked]  # best first, ties in request order; top_n of them when top_n is set
    truncated: list[int]  # positions of the texts whose pair was truncated
    token_counts: list[int]  # tokens of each pair, untruncated, in request order
    max_seq_length: int
    provenance: Provenance


def sigmoid(raw: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x) in float64, without overflow for large negative logits."""
    x = raw.astype(np.float64)
    out = np.empty_like(x)
    positive = x >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-x[positive]))
    e = np.exp(x[~positive])
    out[~positive] = e / (1.0 + e)
    return out


def rerank(
    model: PairModel,
    query: str,
    texts: Sequence[str],
    limits: Limits,
    *,
    top_n: int = 0,
    raw_scores: bool = False,
    truncate: bool = False,
    control: CallControl | None = None,
) -> Reranked:
    """Rerank: checked query and texts -> results best first. INVALID_VALUE for an empty query or text, LIMIT_EXCEEDED
    past limits.max_rerank_texts texts, limits.max_text_chars characters, or (without `truncate`) the model's
    max_seq_length tokens in a pair."""
    check_text(query, "query", limits)
    check_count("texts", "texts", len(texts), limits.max_rerank_texts)
    for n, text in enumerate(texts):
        check_text(text, f"texts[{n}]", limits)
    if top_n < 0:
        raise invalid("top_n", f"top_n must be 0 (every text) or positive, got {top_n}")
    pairs = [(query, text) for text in texts]
    counts = model.token_counts(pairs)
    limit = model.max_seq_length
    over = [n for n, count in enumerate(counts) if limit and count > limit]
    if over and not truncate:
        n = over[0]
        raise EmbedsvcError(
            Reason.LIMIT_EXCEEDED,
            f"the query and text {n} are {counts[n]} tokens, more than model '{model.name}' reads "
            f"({limit}); shorten them or set truncate ({len(over)} such text(s))",
            field=f"texts[{n}]",
            metadata={"limit": str(limit), "actual": str(counts[n]), "model": model.name},
        )
    raw = model.scores(pairs, counts, control)
    if not np.isfinite(raw).all():
        raise RuntimeError(f"model '{model.name}' gave a score that is not finite")
    scores = raw.astype(np.float64) if raw_scores else sigmoid(raw)
    order = np.argsort(-scores, kind="stable")  # best first, ties in request order
    if top_n:
        order = order[:top_n]
    return Reranked(
        results=[Ranked(int(i), float(scores[i])) for i in order],
        truncated=over,
        token_counts=counts,
        max_seq_length=limit,
        provenance=provenance(
            model,
            model.method,
            {
                "raw_scores": str(raw_scores).lower(),
                "truncate": str(truncate).lower(),
                "top_n": str(top_n),
                "max_seq_length": str(limit),
            },
        ),
    )
