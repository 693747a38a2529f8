"""Word lookups with gensim KeyedVectors semantics: embed, nearest words, similarity, the odd one out."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from embedsvc.backends.capabilities import WordSpace
from embedsvc.core.expression import Expression, Term, TermKind
from embedsvc.core.words import arithmetic
from embedsvc.errors import check_count, invalid, limit_exceeded, missing
from embedsvc.limits import Limits


@dataclass(frozen=True)
class Embedded:
    vectors: np.ndarray  # (n, d) float32
    in_vocabulary: tuple[bool, ...]


@dataclass(frozen=True)
class Chunk:
    start: int
    words: list[str]
    vectors: np.ndarray | None  # (len(words), d) float32, C order


@dataclass(frozen=True)
class Ranking:
    odd_one_out: str
    ranking: tuple[tuple[str, float], ...]  # most central first


def check_word(word: str, field: str, limits: Limits) -> None:
    if not word:
        raise missing(field, "a non-empty word")
    if len(word) > limits.max_word_chars:
        raise limit_exceeded(field, "word length in characters", len(word), limits.max_word_chars)


def check_words(words: Sequence[str], field: str, limits: Limits, *, minimum: int = 1) -> None:
    check_count(field, "words", len(words), limits.max_words_per_request, minimum=minimum)
    for i, word in enumerate(words):
        check_word(word, f"{field}[{i}]", limits)


def _vectors(space: WordSpace, words: Sequence[str], field: str, *, norm: bool) -> tuple[np.ndarray, list[bool]]:
    indices = space.indices(words, field)
    rows = [space.vector(w, i, norm=norm) for w, i in zip(words, indices, strict=True)]
    return np.vstack(rows).astype(np.float32, copy=False), [i is not None for i in indices]


def embed(space: WordSpace, words: Sequence[str], limits: Limits, *, normalize: bool) -> Embedded:
    check_words(words, "words", limits)
    vectors, known = _vectors(space, words, "words", norm=normalize)
    return Embedded(vectors, tuple(known))


def nearest(
    space: WordSpace, words: Sequence[str], limits: Limits, *, top_n: int, restrict_vocab: int
) -> list[list[tuple[str, float]]]:
    """gensim most_similar(word) for each word: one batched search, each word excluded from its own list."""
    check_count("words", "words", len(words), limits.max_expressions)
    check_words(words, "words", limits)
    options = arithmetic.check_options(arithmetic.Options(top_n=top_n, restrict_vocab=restrict_vocab), limits)
    arithmetic.check_result_hits(len(words), options, limits, "words")
    expressions = [Expression((Term(TermKind.WORD, 1.0, w),)) for w in words]
    results = arithmetic.evaluate(space, expressions, options, lambda e, _t: f"words[{e}]")
    return [[(h.word, h.score) for h in r.hits] for r in results]


def similarity(space: WordSpace, pairs: Sequence[tuple[str, str]], limits: Limits) -> list[float]:
    """Cosine similarity of each pair, as gensim similarity: dot of the unit vectors."""
    check_count("pairs", "pairs", len(pairs), limits.max_words_per_request)
    flat = [w for pair in pairs for w in pair]
    for i, (first, second) in enumerate(pairs):
        for name, word in (("first", first), ("second", second)):
            if not word:
                raise missing(f"pairs[{i}].{name}", "a non-empty word")
            if len(word) > limits.max_word_chars:
                raise limit_exceeded(
                    f"pairs[{i}].{name}", "word length in characters", len(word), limits.max_word_chars
                )
    unit, _ = _vectors(space, flat, "pairs", norm=True)
    sims = np.einsum("ij,ij->i", unit[0::2].astype(np.float64), unit[1::2].astype(np.float64))
    return [float(s) for s in sims]


def doesnt_match(space: WordSpace, words: Sequence[str], limits: Limits) -> Ranking:
    """gensim doesnt_match / rank_by_centrality: cosine of each unit vector with their normalised mean."""
    check_words(words, "words", limits, minimum=2)
    unit, _ = _vectors(space, words, "words", norm=True)
    mean = unit.mean(axis=0)
    mean = (mean / np.linalg.norm(mean)).astype(np.float32) if mean.any() else mean
    dists = unit @ mean
    ranked = sorted(zip(dists.tolist(), words, strict=True), reverse=True)
    return Ranking(ranked[-1][1], tuple((w, float(d)) for d, w in ranked))


_EXPORT_CHUNK_BYTES = 4 * 1024 * 1024
_EXPORT_WORDS_ONLY = 10_000


def export(
    space: WordSpace,
    limits: Limits,
    *,
    start: int = 0,
    limit: int = 0,
    batch_size: int = 0,
    include_vectors: bool = False,
    normalize: bool = False,
) -> Iterator[Chunk]:
    """The vocabulary in index order, in chunks, optionally with the (unit) vectors. Checked before the first chunk:
    the range, the chunk size and, with vectors, the bytes of the whole range (limits.max_word_export_bytes)."""
    if start < 0 or start > space.size:
        raise invalid("start", f"start must be between 0 and the vocabulary size {space.size}, got {start}")
    if limit < 0:
        raise invalid("limit", f"limit must be 0 (to the end) or positive, got {limit}")
    if batch_size < 0 or batch_size > limits.max_words_per_request:
        raise limit_exceeded("batch_size", "words per message", batch_size, limits.max_words_per_request)
    end = space.size if limit == 0 else min(space.size, start + limit)
    row_bytes = space.dimension * 4
    if include_vectors and (end - start) * row_bytes > limits.max_word_export_bytes:
        raise limit_exceeded(
            "include_vectors",
            f"bytes of vectors for words {start} to {end}",
            (end - start) * row_bytes,
            limits.max_word_export_bytes,
        )
    if batch_size == 0:
        batch_size = max(1, _EXPORT_CHUNK_BYTES // row_bytes) if include_vectors else _EXPORT_WORDS_ONLY
        batch_size = min(batch_size, limits.max_words_per_request)
    source = space.unit if normalize else space.vectors
    for first in range(start, end, batch_size):
        last = min(end, first + batch_size)
        rows = np.ascontiguousarray(source[first:last], dtype=np.float32) if include_vectors else None
        yield Chunk(first, space.words[first:last], rows)
