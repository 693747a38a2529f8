"""Vector arithmetic over a word space with gensim semantics, answered in batches.

3CosAdd equals gensim `most_similar`: word terms are unit-normalised, raw vectors are used as given, the weighted
mean (divided by the sum of |weights|) is unit-normalised, and words are ranked by cosine. 3CosMul equals gensim
`most_similar_cosmul` for weights of +1 and -1 and generalises them as exponents. Input words are excluded the way
gensim does it: search top_n + (number of distinct input words), then drop the inputs.

A batch of expressions is one FAISS `knn_inner_product` call (BLAS plus a heap per query) for 3CosAdd, and a few
chunked matrix products for 3CosMul: never a loop of per-expression searches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from embedsvc.backends.capabilities import WordSpace
from embedsvc.core.expression import Expression, TermKind
from embedsvc.errors import (
    EmbedsvcError,
    Reason,
    invalid,
    limit_exceeded,
    out_of_vocabulary,
)
from embedsvc.index.exact import knn_inner_product
from embedsvc.limits import Limits
from embedsvc.vectors import check_vector

# Rows of score matrix per 3CosMul block: bounds memory at about block * vocabulary * 4 bytes.
_COSMUL_BLOCK_TERMS = 256


# Hits per expression when a request leaves top_n at 0 (gensim's default).
DEFAULT_TOP_N = 10

FieldOf = Callable[[int, int | None], str]


def expression_field(e: int, t: int | None = None) -> str:
    """Where expression e (and its term t) sits in an Arithmetic request, for error details."""
    return f"expressions[{e}]" + (f".terms[{t}]" if t is not None else "")


class Method(StrEnum):
    COSADD = "3CosAdd"
    COSMUL = "3CosMul"


@dataclass(frozen=True)
class Options:
    method: Method = Method.COSADD
    top_n: int = DEFAULT_TOP_N
    restrict_vocab: int = 0  # 0 = the whole vocabulary
    keep_inputs: bool = False
    return_query_vector: bool = False
    return_contributions: bool = False

    def parameters(self) -> dict[str, str]:
        return {
            "top_n": str(self.top_n),
            "restrict_vocab": str(self.restrict_vocab),
            "keep_inputs": str(self.keep_inputs).lower(),
        }


@dataclass(frozen=True)
class ResolvedTerm:
    kind: TermKind
    weight: float
    word: str
    in_vocabulary: bool


@dataclass(frozen=True)
class Hit:
    word: str
    score: float
    is_input: bool
    contributions: tuple[float, ...] = ()


@dataclass(frozen=True)
class ExpressionResult:
    terms: tuple[ResolvedTerm, ...]
    hits: tuple[Hit, ...]
    query_vector: np.ndarray | None = None


def check_result_hits(count: int, options: Options, limits: Limits, field: str = "expressions") -> None:
    """LIMIT_EXCEEDED, before any work, when count x top_n hits would pass limits.max_result_hits."""
    if count * options.top_n > limits.max_result_hits:
        raise limit_exceeded(
            field, f"hits in one response ({field} x top_n)", count * options.top_n, limits.max_result_hits
        )


def check_options(options: Options, limits: Limits) -> Options:
    if options.top_n <= 0:
        raise invalid("top_n", f"top_n must be positive, got {options.top_n}")
    if options.top_n > limits.max_top_n:
        raise limit_exceeded("top_n", "top_n", options.top_n, limits.max_top_n)
    if options.restrict_vocab < 0:
        raise invalid(
            "restrict_vocab",
            f"restrict_vocab must not be negative, got {options.restrict_vocab}",
        )
    if options.return_query_vector and options.method is Method.COSMUL:
        raise invalid(
            "return_query_vector",
            "3CosMul has no single query vector; use METHOD_COSADD",
        )
    return options


@dataclass
class TermBatch:
    """The resolved terms of a batch, flattened: expression e owns terms starts[e] to ends()[e]."""

    vectors: np.ndarray  # (T, d) float32, unit rows for word terms, raw rows for vector terms
    weights: np.ndarray  # (T,) float64
    starts: np.ndarray  # (B,) first term of each expression
    inputs: list[set[int]]  # vocabulary indices of each expression's word terms
    resolved: list[tuple[ResolvedTerm, ...]]

    def ends(self) -> np.ndarray:
        return np.append(self.starts[1:], len(self.weights))


def _resolve(space: WordSpace, expressions: Sequence[Expression], field_of: FieldOf) -> TermBatch:
    rows: list[np.ndarray] = []
    weights: list[float] = []
    starts: list[int] = []
    inputs: list[set[int]] = []
    resolved: list[tuple[ResolvedTerm, ...]] = []
    missing: list[str] = []
    first_missing_field: str | None = None
    for e, expr in enumerate(expressions):
        starts.append(len(rows))
        seen: set[int] = set()
        terms: list[ResolvedTerm] = []
        for t, term in enumerate(expr.terms):
            field_name = field_of(e, t)
            if term.kind is TermKind.WORD:
                index = space.index.get(term.value)
                if index is None and not space.has_subwords:
                    missing.append(term.value)
                    first_missing_field = first_missing_field or field_name
                    rows.append(np.zeros(space.dimension, np.float32))
                else:
                    rows.append(space.vector(term.value, index, norm=True))
                    if index is not None:
                        seen.add(index)
                terms.append(ResolvedTerm(term.kind, term.weight, term.value, index is not None))
            elif term.kind is TermKind.VECTOR and term.vector is not None:
                rows.append(
                    check_vector(
                        term.vector,
                        term.space,
                        space=space.space,
                        dimension=space.dimension,
                        owner=f"model '{space.name}'",
                        field=field_name + ".vector",
                    )
                )
                terms.append(ResolvedTerm(term.kind, term.weight, "", False))
            else:
                raise EmbedsvcError(
                    Reason.TERM_KIND_NOT_SUPPORTED,
                    f"{term.kind.value} terms cannot be evaluated against word model '{space.name}'",
                    field=field_name,
                    metadata={"kind": term.kind.value},
                )
            weights.append(term.weight)
        if not expr.terms:
            raise EmbedsvcError(
                Reason.INVALID_EXPRESSION,
                "the expression has no terms",
                field=f"expressions[{e}]",
            )
        inputs.append(seen)
        resolved.append(tuple(terms))
    if missing:
        raise out_of_vocabulary(space.name, missing, first_missing_field, space.index)
    return TermBatch(
        vectors=np.vstack(rows).astype(np.float32, copy=False),
        weights=np.asarray(weights, dtype=np.float64),
        starts=np.asarray(starts),
        inputs=inputs,
        resolved=resolved,
    )


def _cosadd_queries(batch: TermBatch, field_of: FieldOf) -> tuple[np.ndarray, np.ndarray]:
    return cosadd_means(batch.vectors, batch.weights, batch.starts, field_of)


def cosadd_means(
    vectors: np.ndarray, weights: np.ndarray, starts: np.ndarray, field_of: FieldOf
) -> tuple[np.ndarray, np.ndarray]:
    """3CosAdd query vectors: for each expression (its terms are rows starts[e]:starts[e+1] of `vectors`, already
    normalised as the model wants), the weighted mean sum(w * v) / sum(|w|), unit-normalised. Returns the (B, d)
    float32 queries and each expression's pre-normalisation scale; terms that cancel out are INVALID_EXPRESSION."""
    weighted = vectors.astype(np.float64) * weights[:, None]
    sums = np.add.reduceat(weighted, starts, axis=0)
    total = np.add.reduceat(np.abs(weights), starts)
    means = sums / total[:, None]
    norms = np.linalg.norm(means, axis=1)
    degenerate = np.flatnonzero(~(norms > 1e-12))
    if degenerate.size:
        e = int(degenerate[0])
        raise EmbedsvcError(
            Reason.INVALID_EXPRESSION,
            "the terms cancel out to the zero vector, which has no nearest neighbours",
            field=field_of(e, None),
        )
    queries = np.ascontiguousarray((means / norms[:, None]).astype(np.float32))
    return queries, total * norms


def cosmul_top(
    batch: TermBatch, base: np.ndarray, k: int, field_of: FieldOf = expression_field
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k words by the 3CosMul objective for every expression of the batch, best first."""
    b = len(batch.starts)
    k = min(k, base.shape[0])
    scores = np.empty((b, k), np.float32)
    labels = np.empty((b, k), np.int64)
    ends = batch.ends()
    e = 0
    while e < b:
        # As many expressions as fit in one block of term rows.
        last = e + 1
        while last < b and ends[last] - batch.starts[e] <= _COSMUL_BLOCK_TERMS:
            last += 1
        lo, hi = batch.starts[e], ends[last - 1]
        factors = (1.0 + batch.vectors[lo:hi] @ base.T) / 2.0  # (terms, V) float32, gensim's shift to [0, 1]
        for x in range(e, last):
            rows = slice(batch.starts[x] - lo, ends[x] - lo)
            w = batch.weights[batch.starts[x] : ends[x]]
            f = factors[rows]
            positive = _weighted_product(f[w > 0], w[w > 0])
            negative = _weighted_product(f[w < 0], -w[w < 0])
            if positive is None:
                raise EmbedsvcError(
                    Reason.INVALID_EXPRESSION,
                    "3CosMul needs at least one term with a positive weight",
                    field=field_of(x, None),
                )
            objective = positive / ((negative if negative is not None else np.float32(0.0)) + np.float32(1e-6))
            top = np.argpartition(-objective, k - 1)[:k] if k < objective.size else np.arange(objective.size)
            order = top[np.argsort(-objective[top], kind="stable")]
            labels[x] = order
            scores[x] = objective[order]
        e = last
    return scores, labels


def _weighted_product(factors: np.ndarray, exponents: np.ndarray) -> np.ndarray | None:
    if factors.shape[0] == 0:
        return None
    if np.all(exponents == 1.0):
        return np.prod(factors, axis=0)
    return np.prod(factors ** exponents.astype(np.float32)[:, None], axis=0)


def compose(
    space: WordSpace, expressions: Sequence[Expression], field_of: FieldOf = expression_field
) -> tuple[np.ndarray, list[set[str]]]:
    """The 3CosAdd query vector of each expression (unit length), and the words each one uses."""
    batch = _resolve(space, expressions, field_of)
    queries, _ = _cosadd_queries(batch, field_of)
    words = [{t.word for t in terms if t.kind is TermKind.WORD} for terms in batch.resolved]
    return queries, words


def evaluate(
    space: WordSpace,
    expressions: Sequence[Expression],
    options: Options,
    field_of: FieldOf = expression_field,
) -> list[ExpressionResult]:
    """Answer every expression of the batch against `space` (options already checked)."""
    batch = _resolve(space, expressions, field_of)
    size = space.size if options.restrict_vocab == 0 else min(options.restrict_vocab, space.size)
    base = space.unit[:size]
    extra = 0 if options.keep_inputs else max((len(s) for s in batch.inputs), default=0)
    k = options.top_n + extra
    queries: np.ndarray | None = None
    if options.method is Method.COSADD:
        queries, scales = _cosadd_queries(batch, field_of)
        scores, labels = knn_inner_product(queries, base, k)
    else:
        scores, labels = cosmul_top(batch, base, k, field_of)
    results: list[ExpressionResult] = []
    for e, resolved in enumerate(batch.resolved):
        inputs = batch.inputs[e]
        picked = [
            (int(i), float(s))
            for i, s in zip(labels[e], scores[e], strict=True)
            if i >= 0 and (options.keep_inputs or int(i) not in inputs)
        ][: options.top_n]
        contributions = (
            _contributions(
                space,
                batch,
                e,
                [i for i, _ in picked],
                options.method,
                float(scales[e]) if queries is not None else 1.0,
            )
            if options.return_contributions
            else [() for _ in picked]
        )
        hits = tuple(Hit(space.words[i], s, i in inputs, c) for (i, s), c in zip(picked, contributions, strict=True))
        query = queries[e].copy() if queries is not None and options.return_query_vector else None
        results.append(ExpressionResult(resolved, hits, query))
    return results


def _contributions(
    space: WordSpace,
    batch: TermBatch,
    e: int,
    indices: list[int],
    method: Method,
    scale: float,
) -> list[tuple[float, ...]]:
    if not indices:
        return []
    lo = batch.starts[e]
    hi = batch.ends()[e]
    cos = space.unit[indices].astype(np.float64) @ batch.vectors[lo:hi].astype(np.float64).T  # (hits, terms)
    w = batch.weights[lo:hi]
    if method is Method.COSADD:
        # score = u . sum(w_i t_i) / (sum|w| * |mean|): each term's share of it, summing to the score.
        shares = cos * w[None, :] / scale
    else:
        shares = ((1.0 + cos) / 2.0) ** np.abs(w)[None, :]
    return [tuple(float(v) for v in row) for row in shares]
