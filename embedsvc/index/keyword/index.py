"""A keyword index: BM25 over the text of a collection's items, by item id, in memory (tantivy).

What it holds is a cache of durable state, as a FAISS index is: every (id, text) pair is in the collection's log and
checkpoints, and `build` makes the index again from them at open; nothing of it is written to disk. Why: tantivy's
Python bindings cannot write out an index held in memory, and an index on disk pays about 0.2 s per commit
(measured, docs/architecture.md "Keyword search: the decision") where a collection must make every single upsert
searchable at once.

Writes (`upsert`, `delete`) are searchable when they return: each call is one tantivy commit and a reader reload.
A replaced item is deleted and added in the same commit, so it is never found twice nor lost in between. Scores are
tantivy's BM25 (k1 1.2, b 0.75; document lengths stored in one byte, as Lucene does); documents deleted since the
last merge still count in the collection statistics until tantivy merges their segments, as in Lucene.

A filter reaches the index as `Allowed`: a test over candidate ids (the collection's metadata filter, evaluated as
for vector hits). The index fetches candidates best first and keeps the allowed ones, fetching more until it has k or
has run out of matches, so the answer is exactly the best k allowed hits whatever the filter's selectivity.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import tantivy

from embedsvc.index.keyword.analyzer import analyzer, check_language

# Bytes of indexing buffer the writer may fill before it flushes a segment (tantivy's minimum is 15 MB per thread;
# the arena grows as documents arrive, so an idle collection does not hold it).
WRITER_HEAP_BYTES = 16_000_000
# The buffer of a bulk build (at open), given back afterwards: fewer, larger segments search faster (measured at 50k
# documents: 8 segments from a 16 MB buffer, p50 1.8 ms; 1 segment from 64 MB, 0.9 ms).
BULK_HEAP_BYTES = 64_000_000
_KEY, _TEXT = "key", "text"
# The first fetch of a filtered search is k / (allowed share) x this, then x4 each round until k are allowed.
_FETCH_MARGIN = 1.5
_GROWTH = 4
# At or below this allowed share (and with the allowed ids at hand), the search runs among the allowed items only
# (a term set of their keys) instead of fetching the best matches and testing them: a selective filter would make the
# fetch take nearly every match. Measured at 100k documents: 0.1% allowed, 15 ms by term set against 1.7 s by fetch;
# 10% allowed, 128 ms against 95 ms.
_TERM_SET_SHARE = 0.02


@dataclass(frozen=True)
class Allowed:
    """Which ids a filtered search may return: `test(ids)` is a boolean array over the ids given; `share` estimates
    the share of the index's items it allows (it sizes the first fetch); `ids()`, when given, lists the allowed ids
    (used when they are few: the index then searches only among them)."""

    test: Callable[[Sequence[str]], np.ndarray]
    share: float = 1.0
    ids: Callable[[], Iterable[str]] | None = None


@dataclass(frozen=True)
class KeywordHits:
    """Up to k hits best first. `terms`: the query's terms after analysis (empty: the query had only stopwords or
    no word characters, and there are no hits)."""

    ids: list[str]
    scores: np.ndarray  # float64, one per id
    terms: list[str] = field(default_factory=list)


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    # i64 keys: a u64 field is not matched by a Python int term, so deleting by it would silently do nothing.
    builder.add_integer_field(_KEY, stored=False, indexed=True, fast=True)
    builder.add_text_field(_TEXT, stored=False, tokenizer_name="analyzer", index_option="freq")
    return builder.build()


class KeywordIndex:
    """BM25 over items' text, keyed by item id. Thread-safe: writes are serialised, searches read a snapshot."""

    def __init__(self, language: str = "") -> None:
        self.language = check_language(language)
        self._analyzer = analyzer(self.language)
        self._schema = _schema()
        self._lock = threading.Lock()
        self._open()

    def _open(self, heap: int = WRITER_HEAP_BYTES) -> None:
        self._index = tantivy.Index(self._schema)
        self._index.register_tokenizer("analyzer", self._analyzer)
        self._index.config_reader(reload_policy="manual")
        self._writer = self._index.writer(heap_size=heap, num_threads=1)
        # Internal keys: position in _ids (None once deleted); fresh keys for new ids, the same key on replace.
        self._ids: list[str | None] = []
        self._key_of: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._key_of)

    def terms(self, text: str) -> list[str]:
        """The terms a text is indexed (or searched) by."""
        return list(self._analyzer.analyze(text))

    def _commit(self) -> None:
        self._writer.commit()
        self._index.reload()

    def _add(self, item_id: str, text: str) -> None:
        key = self._key_of.get(item_id)
        if key is not None:
            self._writer.delete_documents_by_term(_KEY, key)
        if not text:  # an item without text cannot be found by keywords
            if key is not None:
                del self._key_of[item_id]
                self._ids[key] = None
            return
        if key is None:
            key = self._key_of[item_id] = len(self._ids)
            self._ids.append(item_id)
        self._writer.add_document(tantivy.Document(**{_KEY: [key], _TEXT: [text]}))

    def build(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        """Replace everything with these items (at open, from a checkpoint; the last of a repeated id wins)."""
        with self._lock:
            self._open(BULK_HEAP_BYTES)
            for item_id, text in zip(ids, texts, strict=True):
                self._add(item_id, text)
            self._commit()
            self._writer.wait_merging_threads()  # ends the bulk writer; live writes get a small buffer
            self._writer = self._index.writer(heap_size=WRITER_HEAP_BYTES, num_threads=1)

    def upsert(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        """Add or replace items (an empty text removes the item from the index); searchable on return."""
        with self._lock:
            for item_id, text in zip(ids, texts, strict=True):
                self._add(item_id, text)
            self._commit()

    def delete(self, ids: Sequence[str]) -> int:
        """Remove items (unknown ids are ignored); returns how many were there. Never found again on return."""
        with self._lock:
            removed = 0
            for item_id in ids:
                key = self._key_of.pop(item_id, None)
                if key is not None:
                    self._writer.delete_documents_by_term(_KEY, key)
                    self._ids[key] = None
                    removed += 1
            if removed:
                self._commit()
            return removed

    def search(self, text: str, k: int, allowed: Allowed | None = None) -> KeywordHits:
        """The best k items for a text by BM25 (each query term counted as often as it occurs), optionally only
        among allowed ones. Items matching no term are never returned."""
        terms = self.terms(text)
        if not terms or k <= 0:
            return KeywordHits([], np.empty(0), terms)
        query = tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, tantivy.Query.term_query(self._schema, _TEXT, term)) for term in terms]
        )
        test = None if allowed is None else allowed.test
        with self._lock:  # the searcher and the key -> id table it refers to (a reference: entries only ever
            # turn None, and build() makes a new table)
            searcher, ids = self._index.searcher(), self._ids
            if allowed is not None and allowed.ids is not None and allowed.share <= _TERM_SET_SHARE:
                members = [key for key in map(self._key_of.get, allowed.ids()) if key is not None]
                among = tantivy.Query.term_set_query(self._schema, _KEY, members)
                query = tantivy.Query.boolean_query(
                    [
                        (tantivy.Occur.Must, tantivy.Query.const_score_query(among, 0.0)),  # adds nothing to scores
                        (tantivy.Occur.Must, query),
                    ]
                )
                test = None
        total = max(searcher.num_docs, 1)
        share = 1.0 if test is None or allowed is None else max(allowed.share, 1.0 / total)
        fetch = math.ceil(k / share * (1.0 if test is None else _FETCH_MARGIN))
        while True:
            fetch = min(max(fetch, k), total)
            hits = searcher.search(query, fetch, count=False).hits
            keys = searcher.fast_field_values(_KEY, [address for _, address in hits])
            # None: deleted since this searcher was taken (a concurrent delete); such a hit is not returned.
            found = [None if key is None else ids[int(key)] for key in keys]
            keep = np.array([i is not None for i in found], dtype=bool)
            if test is not None and keep.any():
                keep[keep] = np.asarray(test([i for i in found if i is not None]), dtype=bool)
            scores = np.array([score for score, _ in hits], dtype=np.float64)[keep]
            chosen = [str(i) for i, ok in zip(found, keep, strict=True) if ok]
            if len(chosen) >= k or len(hits) < fetch or fetch >= total:
                return KeywordHits(chosen[:k], scores[:k], terms)
            fetch *= _GROWTH
