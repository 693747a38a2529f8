"""Query planning for a collection: which slots a search may return, how its candidates are found, and its hits.

A search's plan, per step of queries:
- allowed slots: live, and matching the filter. The filter is evaluated outside the lock, in steps (`match`), and
  completed under it for the slots written since (`allowed`); a compaction in between (another generation of the
  contents) makes it start over.
- exact or ANN: exact (brute force over the allowed rows) when asked, when the index is untrained, when the index is
  FLAT, or when a filter leaves under _ANN_MIN_SELECTIVITY of the items; otherwise the ANN index, with the allowed
  slots as a FAISS selector.
- overfetch: without a filter and with few tombstones, FAISS keeps its fast path (no selector) and the search fetches
  as many extra hits as there are tombstones, dropped after.
- IVF-PQ re-ranking: PQ distances are coarse, so _PQ_RERANK x k candidates are fetched and re-ranked with the stored
  vectors, in steps that gather at most `Steps.rerank_bytes` of candidate vectors.
- short answers: an ANN search that comes back with fewer than k eligible items is redone exactly for those queries.
- budget: with max_response_bytes, the hits' ids, inputs, metadata and vectors are counted from the slots' sizes
  before any hit is built.

Planning reads the contents under their read lock (contents.py) and the slot store's columns only through its public
surface (slots.py); it never changes either.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedsvc import calls
from embedsvc.index.exact import exact_search
from embedsvc.index.faiss.contents import Contents
from embedsvc.index.faiss.slots import index_form
from embedsvc.index.filtering import Filter
from embedsvc.index.types import HIT_OVERHEAD, Hit, IndexKind, Metric, response_too_large

# Above this share of matching items a filtered search asks the ANN index (with the filter as a selector);
# below it the matching rows are few enough to search exactly.
_ANN_MIN_SELECTIVITY = 0.05
# Without a filter, up to this many tombstones are covered by fetching that many extra hits; beyond it, a selector.
_MAX_OVERFETCH = 1024
# IVF-PQ fetches this many times k candidates by their PQ codes and re-ranks them with the stored vectors.
_PQ_RERANK = 4


@dataclass(frozen=True)
class Steps:
    """How much one step of a search does (the collection chooses; between steps the call may be stopped)."""

    queries: int  # queries searched per step under the read lock (writers get the lock between steps)
    filter_items: int  # items a filter is evaluated on per step
    rerank_bytes: int  # bytes of candidate vectors one IVF-PQ re-ranking step may gather (queries x candidates x d x 4)


def _fit(array: np.ndarray, width: int, fill: float = 0.0) -> np.ndarray:
    """`array` with exactly `width` columns: cut, or padded with `fill`."""
    if array.shape[1] >= width:
        return array[:, :width].copy()
    pad = np.full((array.shape[0], width - array.shape[1]), fill, dtype=array.dtype)
    return np.concatenate([array, pad], axis=1)


class Budget:
    """The bytes a search's response would take, counted from the hits' slots before any hit is built."""

    def __init__(self, limit: int, with_metadata: bool, vector_bytes: int) -> None:
        self.limit = limit
        self.with_metadata = with_metadata
        self.vector_bytes = vector_bytes
        self.spent = 0

    def spend(self, sizes: np.ndarray, labels: np.ndarray) -> None:
        if not self.limit:
            return
        slots = labels[labels >= 0]
        self.spent += int(sizes[slots, 0].sum()) + len(slots) * (HIT_OVERHEAD + self.vector_bytes)
        if self.with_metadata:
            self.spent += int(sizes[slots, 1].sum())
        if self.spent > self.limit:
            raise response_too_large(self.spent, self.limit)


class Planner:
    """Plans and runs the searches of one collection's contents."""

    def __init__(self, contents: Contents) -> None:
        self.contents = contents
        self.config = contents.config

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        steps: Steps,
        where: Filter | None = None,
        exclude: Sequence[set[str]] = (),
        ef_search: int = 0,
        nprobe: int = 0,
        exact: bool = False,
        with_metadata: bool = True,
        with_vectors: bool = False,
        max_response_bytes: int = 0,
    ) -> tuple[list[list[Hit]], bool]:
        """k hits per query among live items matching the filter, minus each query's excluded ids, and whether the
        search was exact (see VectorCollection.search)."""
        contents = self.contents
        queries = index_form(np.ascontiguousarray(queries, dtype=np.float32), self.config.metric)
        predicate = where.matches if where is not None else None
        matched = self.match(predicate, steps.filter_items) if predicate is not None else None
        results: list[list[Hit]] = []
        was_exact = True
        budget = Budget(max_response_bytes, with_metadata, 4 * self.config.dimension if with_vectors else 0)
        for start in range(0, len(queries), steps.queries):
            calls.check()
            chunk = queries[start : start + steps.queries]
            skip_ids = exclude[start : start + steps.queries]
            extra = max((len(e) for e in skip_ids), default=0)
            with contents.rw.read():
                slot_of = contents.store.slot_of
                skip = [{slot_of[i] for i in ids if i in slot_of} for ids in skip_ids]
                allowed = self.allowed(predicate, matched, steps.filter_items)
                eligible = int(allowed.sum())
                want = min(k + extra, eligible)
                if want == 0:
                    results.extend([] for _ in chunk)
                    continue
                scores, labels, chunk_exact = self._candidates(
                    chunk,
                    want,
                    allowed,
                    eligible,
                    filtered=predicate is not None,
                    exact=exact,
                    ef_search=ef_search,
                    nprobe=nprobe,
                    rerank_bytes=steps.rerank_bytes,
                )
                was_exact = was_exact and chunk_exact
                budget.spend(contents.store.sizes, labels[:, : k + extra])
                results.extend(
                    self._hits(labels, scores, skip, k, with_metadata=with_metadata, with_vectors=with_vectors)
                )
        return results, was_exact

    def match(self, predicate: Callable[[Mapping[str, Any]], bool], step: int) -> tuple[np.ndarray, int, int]:
        """The predicate over the live slots, evaluated without the lock: (matches, slots covered, generation).

        Metadata dicts are never changed in place, and appends do not move existing entries, so reading them
        unlocked is safe; a compaction since (another generation) makes the result stale, and allowed redoes it."""
        contents = self.contents
        with contents.rw.read():
            store, generation = contents.store, contents.generation
            meta, n = store.meta, store.n
            live = np.flatnonzero(store.live[:n])
        matches = np.zeros(n, bool)
        for start in range(0, len(live), step):
            calls.check()
            for slot in live[start : start + step].tolist():
                matches[slot] = predicate(meta[slot])
        return matches, n, generation

    def allowed(
        self,
        predicate: Callable[[Mapping[str, Any]], bool] | None,
        matched: tuple[np.ndarray, int, int] | None,
        step: int,
    ) -> np.ndarray:
        """The slots a search may return: live, and matching the predicate (called with the read lock held)."""
        store, generation = self.contents.store, self.contents.generation
        allowed = store.live[: store.n].copy()
        if predicate is None:
            return allowed
        if matched is None or matched[2] != generation:  # slots renumbered since: evaluate here, in steps
            matched = (np.zeros(0, bool), 0, generation)
        matches, covered, _ = matched
        allowed[:covered] &= matches[: min(covered, store.n)]
        for slot in (np.flatnonzero(allowed[covered:]) + covered).tolist():  # written since the evaluation
            if slot % step == 0:
                calls.check()
            allowed[slot] = predicate(store.meta[slot])
        return allowed

    def _candidates(
        self,
        queries: np.ndarray,
        want: int,
        allowed: np.ndarray,
        eligible: int,
        *,
        filtered: bool,
        exact: bool,
        ef_search: int,
        nprobe: int,
        rerank_bytes: int,
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """The best `want` allowed slots of each query (labels -1 past the end) and whether they are exact."""
        store, index = self.contents.store, self.contents.index
        n, kind = store.n, self.config.index.kind
        dead = n - store.count
        use_exact = (
            exact or not index.trained or (kind is not IndexKind.FLAT and eligible < _ANN_MIN_SELECTIVITY * store.count)
        )
        if not filtered and dead <= _MAX_OVERFETCH and not (use_exact and kind is not IndexKind.FLAT):
            # No selector (FAISS keeps its fast path): fetch enough to cover every tombstone, drop them after.
            fetch = min(want + dead, n)
            if kind is IndexKind.IVF_PQ:
                fetch = min(_PQ_RERANK * fetch, n)
            scores, labels = index.search(queries, fetch, None, ef_search=ef_search, nprobe=nprobe)
            scores, labels = self._drop_dead(scores, labels)
            if kind is IndexKind.IVF_PQ:
                scores, labels = self._rerank(queries, labels, want, rerank_bytes)
            scores, labels = scores[:, :want], labels[:, :want]
        elif use_exact or kind is IndexKind.FLAT:
            scores, labels = self._exact(queries, allowed, want)
        else:
            # PQ distances are coarse: fetch more candidates and re-rank them with the stored vectors.
            fetch = min(_PQ_RERANK * want, eligible) if kind is IndexKind.IVF_PQ else want
            scores, labels = index.search(queries, fetch, allowed, ef_search=ef_search, nprobe=nprobe)
            if kind is IndexKind.IVF_PQ:
                scores, labels = self._rerank(queries, labels, want, rerank_bytes)
        short = np.flatnonzero((labels < 0).any(axis=1)) if labels.shape[1] == want else np.arange(len(queries))
        if len(short):
            # An approximate search came back short of k eligible items: answer those queries exactly.
            exact_scores, exact_labels = self._exact(queries[short], allowed, want)
            scores = _fit(scores, want)
            labels = _fit(labels, want, fill=-1)
            scores[short], labels[short] = exact_scores, exact_labels
        return scores, labels, bool(use_exact or kind is IndexKind.FLAT)

    def _hits(
        self,
        labels: np.ndarray,
        scores: np.ndarray,
        exclude: Sequence[set[int]],
        k: int,
        *,
        with_metadata: bool,
        with_vectors: bool,
    ) -> list[list[Hit]]:
        """At most k hits per query, skipping its excluded slots."""
        # Python ints and floats up front: indexing numpy scalars one by one costs more than the search itself for
        # large batches.
        store = self.contents.store
        ids, meta, inputs, vectors = store.ids, store.meta, store.inputs, store.vectors
        results = []
        for q, (row, row_scores) in enumerate(zip(labels.tolist(), scores.tolist(), strict=True)):
            skip = exclude[q] if q < len(exclude) else ()
            hits = [
                Hit(
                    s,
                    ids[s],
                    d,
                    meta[s] if with_metadata else None,
                    inputs[s],
                    vectors[s].copy() if with_vectors else None,
                )
                for s, d in zip(row, row_scores, strict=True)
                if s >= 0 and s not in skip
            ]
            results.append(hits[:k])
        return results

    def _drop_dead(self, scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Move tombstoned hits to the end of each row, as -1 labels."""
        live = (labels >= 0) & self.contents.store.live[np.maximum(labels, 0)]
        order = np.argsort(~live, axis=1, kind="stable")
        labels = np.where(np.take_along_axis(live, order, 1), np.take_along_axis(labels, order, 1), -1)
        return np.take_along_axis(scores, order, 1), labels

    def _rerank(
        self, queries: np.ndarray, labels: np.ndarray, k: int, step_bytes: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of each query's candidates, best k first; -1 labels stay last. Queries are re-ranked in
        steps whose gathered candidates stay under `step_bytes`."""
        per_query = max(1, labels.shape[1] * self.config.dimension * 4)
        step = max(1, step_bytes // per_query)
        if len(queries) > step:
            parts = [
                self._rerank(queries[s : s + step], labels[s : s + step], k, step_bytes)
                for s in range(0, len(queries), step)
            ]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        candidates = self.contents.store.unit[np.maximum(labels, 0)]  # (q, c, d)
        if self.config.metric is Metric.L2:
            exact = ((candidates - queries[:, None, :]) ** 2).sum(axis=2)
            exact[labels < 0] = np.inf
            order = np.argsort(exact, axis=1, kind="stable")[:, :k]
        else:
            exact = np.einsum("qcd,qd->qc", candidates, queries)
            exact[labels < 0] = -np.inf
            order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(exact, order, 1).astype(np.float32), np.take_along_axis(labels, order, 1)

    def _exact(self, queries: np.ndarray, allowed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        store = self.contents.store
        rows = np.flatnonzero(allowed)
        base = store.unit[: store.n] if len(rows) == store.n else store.unit[rows]
        scores, positions = exact_search(base, queries, k, self.config.metric)
        labels = np.where(positions >= 0, rows[np.maximum(positions, 0)], -1)
        return scores, labels
