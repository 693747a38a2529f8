"""Query planning for a collection: which slots a search may return, how its candidates are found, and its hits.

A search's plan, per step of queries:
- allowed slots: live, and matching the filter. The parts of a filter on indexed fields are answered by their
  entries (fields.py: binary searches, then the matching slots only); the rest is the reference predicate, evaluated
  outside the lock in steps on the slots the index let through (`match`), and completed under it for the slots
  written since (`allowed`); a compaction in between (another generation of the contents) makes it start over.
- settings: a target recall sets the index's knob (nprobe, ef_search, or the oversampling of a quantised index) from
  the collection's calibration (calibration.py), and the estimated recall goes into the provenance. A request's
  target sets it outright; the collection's own target only raises the configured knob (the calibration is measured
  on the collection's own vectors, which flatters queries unlike them). A knob given in the request wins.
- exact or ANN: exact (brute force over the allowed rows, block by block over the store's segments) when asked, when
  the index is untrained, when the kind is FLAT without quantisation (it has no FAISS index), or when a filter leaves
  under _ANN_MIN_SELECTIVITY of the items; otherwise the ANN index, with the allowed slots as a FAISS selector.
- overfetch: without a filter and with few tombstones, FAISS keeps its fast path (no selector) and the search fetches
  as many extra hits as there are tombstones, dropped after.
- rescoring: a quantised index (int8, RaBitQ, IVF-PQ) fetches oversample x k candidates by their codes and rescores
  them with the float vectors (gathered from the segments, which stay on disk, memory-mapped), in steps that gather
  at most `Steps.rerank_bytes` of candidate vectors.
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
from embedsvc.index import filtering
from embedsvc.index.exact import exact_search
from embedsvc.index.faiss import fields
from embedsvc.index.faiss.calibration import knob
from embedsvc.index.faiss.contents import Contents
from embedsvc.index.faiss.slots import index_form
from embedsvc.index.filtering import Filter, Node
from embedsvc.index.types import HIT_OVERHEAD, Hit, Metric, Searched, response_too_large

# Above this share of matching items a filtered search asks the ANN index (with the filter as a selector);
# below it the matching rows are few enough to search exactly.
_ANN_MIN_SELECTIVITY = 0.05
# Without a filter, up to this many tombstones are covered by fetching that many extra hits; beyond it, a selector.
_MAX_OVERFETCH = 1024
# Query-rows (queries x rows) one step of a brute-force search may take: 1,073 queries at 1M rows, about 2 s of this
# machine's 2 cores (the step a call may stop after and writers wait for), and never fewer queries than an index step.
_EXACT_STEP_WORK = 1 << 30
# Rows of a segment searched per FAISS call in an exact search (a block's allowed rows are gathered when a filter
# or many tombstones leave some out).
_EXACT_BLOCK = 262144

Predicate = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True)
class Steps:
    """How much one step of a search does (the collection chooses; between steps the call may be stopped)."""

    queries: int  # queries searched per step under the read lock (writers get the lock between steps)
    filter_items: int  # items a filter is evaluated on per step
    rerank_bytes: int  # bytes of candidate vectors one rescoring step may gather (queries x candidates x d x 4)


@dataclass(frozen=True)
class _Knobs:
    nprobe: int
    ef_search: int
    oversample: int


@dataclass(frozen=True)
class FilterPlan:
    """A filter split for this collection: the part its indexed fields answer, and the predicate of the rest."""

    indexed: Node | None
    rest: Predicate | None  # None: nothing left (the index answers all of it)
    whole: Predicate  # the filter's own predicate (for slots written since the evaluation)


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

    def spend(self, sizes: Any, labels: np.ndarray) -> None:
        if not self.limit:
            return
        slots = labels[labels >= 0]
        counted = sizes[slots] if len(slots) else np.zeros((0, 2), np.int64)
        self.spent += int(counted[:, 0].sum()) + len(slots) * (HIT_OVERHEAD + self.vector_bytes)
        if self.with_metadata:
            self.spent += int(counted[:, 1].sum())
        if self.spent > self.limit:
            raise response_too_large(self.spent, self.limit)


class Planner:
    """Plans and runs the searches of one collection's contents."""

    def __init__(self, contents: Contents) -> None:
        self.contents = contents
        self.config = contents.config
        self.better_low = contents.config.metric is Metric.L2

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
        oversample: int = 0,
        target_recall: float = 0.0,
        exact: bool = False,
        with_metadata: bool = True,
        with_vectors: bool = False,
        max_response_bytes: int = 0,
        before: int | None = None,
    ) -> Searched:
        """k hits per query among live items matching the filter, minus each query's excluded ids, whether the
        search was exact, and its effective parameters (see VectorCollection.search). `before` leaves out the slots
        from it on (a calibration measures the rows there were when it started)."""
        contents = self.contents
        queries = index_form(np.ascontiguousarray(queries, dtype=np.float32), self.config.metric)
        knobs, parameters = self._settings(ef_search, nprobe, oversample, target_recall, exact, where is not None)
        plan = self.filter_plan(where) if where is not None else None
        matched = self.match(plan, steps.filter_items) if plan is not None else None
        results: list[list[Hit]] = []
        was_exact = True
        budget = Budget(max_response_bytes, with_metadata, 4 * self.config.dimension if with_vectors else 0)
        step = self._query_step(steps.queries, len(queries), exact)
        for start in range(0, len(queries), step):
            calls.check()
            chunk = queries[start : start + step]
            skip_ids = exclude[start : start + step]
            extra = max((len(e) for e in skip_ids), default=0)
            with contents.rw.read():
                lookup = contents.store.slot_of.lookup
                skip = [{int(s) for s in lookup(list(ids)) if s >= 0} if ids else set() for ids in skip_ids]
                allowed = self.allowed(plan, matched, steps.filter_items)
                if before is not None:
                    allowed[before:] = False
                eligible = int(allowed.sum())
                want = min(k + extra, eligible)
                if want == 0:
                    results.extend([] for _ in chunk)
                    continue
                scores, labels, chunk_exact = self._candidates(
                    chunk, want, allowed, eligible, filtered=plan is not None or before is not None, exact=exact,
                    knobs=knobs,
                    rerank_bytes=steps.rerank_bytes,
                )  # fmt: skip
                was_exact = was_exact and chunk_exact
                budget.spend(contents.store.sizes, labels[:, : k + extra])
                results.extend(
                    self._hits(labels, scores, skip, k, with_metadata=with_metadata, with_vectors=with_vectors)
                )
        return Searched(results, was_exact, {} if was_exact else parameters)

    def _brute_force(self, exact: bool) -> bool:
        """Searches go over the store's rows, not an index: asked for, an exact kind (FLAT), or not trained yet."""
        index = self.contents.index
        return exact or index.exact or not index.trained

    def _query_step(self, step: int, queries: int, exact: bool) -> int:
        """Queries searched per step. A brute-force search reads every row once per step, so a batch of many queries
        over a large store goes faster in fewer, larger steps (at 1M rows, 1,000 queries in steps of 256 took 15%
        longer than in one FAISS call): brute force takes up to _EXACT_STEP_WORK query-rows a step, never fewer
        queries than `step` (the step an index search takes)."""
        if not self._brute_force(exact):
            return step
        rows = max(1, self.contents.store.count)
        return max(step, min(queries, _EXACT_STEP_WORK // rows))

    # ---- settings ------------------------------------------------------------------------------------------------

    def _settings(
        self, ef_search: int, nprobe: int, oversample: int, target_recall: float, exact: bool, filtered: bool
    ) -> tuple[_Knobs, dict[str, str]]:
        """The knob values of this search and the parameters the provenance reports."""
        p = self.config.index
        name, _ = knob(p)
        given = {"nprobe": nprobe, "ef_search": ef_search, "oversample": oversample}
        values = {"nprobe": nprobe or p.nprobe, "ef_search": ef_search or p.ef_search}
        values["oversample"] = oversample or p.oversample or 1
        parameters: dict[str, str] = {}
        calibration = self.contents.calibration
        if name and not exact:
            target = target_recall or p.target_recall
            usable = calibration is not None and calibration.knob == name
            if given[name] or not target or not usable:
                estimate = None
                if calibration is not None and usable:
                    estimate = calibration.estimate(values[name], values["oversample"] if p.quantised else 1)
            else:
                assert calibration is not None
                value, over, estimate = calibration.choose(target)
                if not target_recall:
                    # The collection's own target only ever raises its knobs: measured on its own vectors, the
                    # estimate flatters queries unlike them, and the configured values are what it promised before.
                    value, over = max(value, values[name]), max(over, values["oversample"])
                    estimate = calibration.estimate(value, over if p.quantised else 1) or estimate
                values[name] = value
                if p.quantised and not given["oversample"]:
                    values["oversample"] = over
                parameters["target_recall"] = f"{target:g}"
            parameters[name] = str(values[name])
            if p.quantised and name != "oversample":
                parameters["oversample"] = str(values["oversample"])
            if estimate is not None and not filtered:
                parameters["estimated_recall"] = f"{estimate:.3f}"
        return _Knobs(values["nprobe"], values["ef_search"], values["oversample"]), parameters

    # ---- filters -------------------------------------------------------------------------------------------------

    def filter_plan(self, where: Filter) -> FilterPlan:
        indexed, rest = fields.split(where.node, self.config.indexed_fields)
        if indexed is None:
            return FilterPlan(None, where.matches, where.matches)
        return FilterPlan(indexed, filtering.predicate(rest) if rest is not None else None, where.matches)

    def _indexed(self, plan: FilterPlan, live: np.ndarray) -> np.ndarray:
        """The live slots the indexed part of the filter matches (call with the read lock held)."""
        assert plan.indexed is not None
        store = self.contents.store
        return fields.evaluate(plan.indexed, self.config.indexed_fields, store.field_entries(), live)

    def match(self, plan: FilterPlan, step: int) -> tuple[np.ndarray, int, int]:
        """The filter over the live slots, its predicate evaluated without the lock: (matches, slots covered,
        generation).

        A slot's metadata is never changed in place, and appends do not move existing rows, so reading them unlocked
        is safe; a compaction since (another generation) makes the result stale, and allowed redoes it."""
        contents = self.contents
        with contents.rw.read():
            store, generation = contents.store, contents.generation
            meta, n = store.meta, store.n
            live = store.live[:n].copy()
            candidates = self._indexed(plan, live) if plan.indexed is not None else live
        if plan.rest is None:
            return candidates, n, generation
        matches = np.zeros(n, bool)
        slots = np.flatnonzero(candidates)
        for start in range(0, len(slots), step):
            calls.check()
            for slot in slots[start : start + step].tolist():
                matches[slot] = plan.rest(meta[slot])
        return matches, n, generation

    def allowed(self, plan: FilterPlan | None, matched: tuple[np.ndarray, int, int] | None, step: int) -> np.ndarray:
        """The slots a search may return: live, and matching the filter (called with the read lock held)."""
        store, generation = self.contents.store, self.contents.generation
        allowed = store.live[: store.n].copy()
        if plan is None:
            return allowed
        if matched is None or matched[2] != generation:  # slots renumbered since: evaluate here, in steps
            candidates = self._indexed(plan, allowed) if plan.indexed is not None else allowed
            matches = candidates.copy()
            if plan.rest is not None:
                for i, slot in enumerate(np.flatnonzero(candidates).tolist()):
                    if i % step == 0:
                        calls.check()
                    matches[slot] = plan.rest(store.meta[slot])
            return allowed & matches
        matches, covered, _ = matched
        allowed[:covered] &= matches[: min(covered, store.n)]
        for slot in (np.flatnonzero(allowed[covered:]) + covered).tolist():  # written since the evaluation
            if slot % step == 0:
                calls.check()
            allowed[slot] = plan.whole(store.meta[slot])
        return allowed

    # ---- candidates ----------------------------------------------------------------------------------------------

    def _candidates(
        self,
        queries: np.ndarray,
        want: int,
        allowed: np.ndarray,
        eligible: int,
        *,
        filtered: bool,
        exact: bool,
        knobs: _Knobs,
        rerank_bytes: int,
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """The best `want` allowed slots of each query (labels -1 past the end) and whether they are exact."""
        store, index = self.contents.store, self.contents.index
        n, p = store.n, self.config.index
        hidden = n - eligible  # tombstones (and, without a filter, nothing else)
        use_exact = self._brute_force(exact) or eligible < _ANN_MIN_SELECTIVITY * store.count
        quantised = p.quantised
        if use_exact:
            every = not filtered and hidden == 0
            scores, labels = self._exact(queries, None if every else allowed, want, overfetch=not filtered)
        elif not filtered and hidden <= _MAX_OVERFETCH:
            # No selector (FAISS keeps its fast path): fetch enough to cover every tombstone, drop them after.
            fetch = min((knobs.oversample if quantised else 1) * want + hidden, n)
            scores, labels = index.search(queries, fetch, None, ef_search=knobs.ef_search, nprobe=knobs.nprobe)
            scores, labels = self._drop_dead(scores, labels, allowed)
            if quantised:
                scores, labels = self._rescore(queries, labels, want, rerank_bytes)
            scores, labels = scores[:, :want], labels[:, :want]
        else:
            fetch = min(knobs.oversample * want, eligible) if quantised else want
            scores, labels = index.search(queries, fetch, allowed, ef_search=knobs.ef_search, nprobe=knobs.nprobe)
            if quantised:
                scores, labels = self._rescore(queries, labels, want, rerank_bytes)
        short = np.flatnonzero((labels < 0).any(axis=1)) if labels.shape[1] == want else np.arange(len(queries))
        if len(short):
            # An approximate search came back short of k eligible items: answer those queries exactly.
            exact_scores, exact_labels = self._exact(queries[short], allowed, want, overfetch=False)
            scores = _fit(scores, want)
            labels = _fit(labels, want, fill=-1)
            scores[short], labels[short] = exact_scores, exact_labels
        return scores, labels, bool(use_exact)

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
        meta = store.meta
        rows = labels.tolist()
        # Each distinct hit's id and input read at once (per segment), not slot by slot.
        wanted = np.unique(labels[labels >= 0])
        slots = wanted.tolist()
        ids = dict(zip(slots, store.ids.many(wanted), strict=True))
        inputs = dict(zip(slots, store.inputs.many(wanted), strict=True))
        vectors: dict[int, np.ndarray] = {}
        if with_vectors:
            vectors = dict(zip(slots, store.vectors[wanted], strict=True))
        results = []
        for q, (row, row_scores) in enumerate(zip(rows, scores.tolist(), strict=True)):
            skip = exclude[q] if q < len(exclude) else ()
            hits = []
            for s, d in zip(row, row_scores, strict=True):
                if s < 0 or s in skip:
                    continue
                hits.append(
                    Hit(
                        s,
                        ids[s],
                        d,
                        meta[s] if with_metadata else None,
                        inputs[s],
                        vectors[s].copy() if with_vectors else None,
                    )
                )
                if len(hits) == k:
                    break
            results.append(hits)
        return results

    def _drop_dead(self, scores: np.ndarray, labels: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Move hits that are not allowed (tombstones) to the end of each row, as -1 labels."""
        live = (labels >= 0) & allowed[np.clip(labels, 0, len(allowed) - 1)] & (labels < len(allowed))
        order = np.argsort(~live, axis=1, kind="stable")
        labels = np.where(np.take_along_axis(live, order, 1), np.take_along_axis(labels, order, 1), -1)
        return np.take_along_axis(scores, order, 1), labels

    def _rescore(
        self, queries: np.ndarray, labels: np.ndarray, k: int, step_bytes: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of each query's candidates (the float vectors, from the store), best k first; -1 labels stay
        last. Queries are rescored in steps whose gathered candidates stay under `step_bytes`."""
        per_query = max(1, labels.shape[1] * self.config.dimension * 4)
        step = max(1, step_bytes // per_query)
        if len(queries) > step:
            parts = [
                self._rescore(queries[s : s + step], labels[s : s + step], k, step_bytes)
                for s in range(0, len(queries), step)
            ]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        candidates = self.contents.store.unit[np.maximum(labels, 0)]  # (q, c, d)
        if self.better_low:
            exact = ((candidates - queries[:, None, :]) ** 2).sum(axis=2)
            exact[labels < 0] = np.inf
            order = np.argsort(exact, axis=1, kind="stable")[:, :k]
        else:
            exact = np.einsum("qcd,qd->qc", candidates, queries)
            exact[labels < 0] = -np.inf
            order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(exact, order, 1).astype(np.float32), np.take_along_axis(labels, order, 1)

    def _exact(
        self, queries: np.ndarray, allowed: np.ndarray | None, k: int, *, overfetch: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over the allowed slots (None: all), block by block over the store's rows, merged. With
        `overfetch`, a block with few disallowed rows (tombstones) is searched whole for k + their number hits."""
        store = self.contents.store
        worst = np.inf if self.better_low else -np.inf
        best_scores = np.full((len(queries), 0), worst, np.float32)
        best_labels = np.full((len(queries), 0), -1, np.int64)
        for start, block in store.chunks(max_rows=_EXACT_BLOCK):
            end = start + len(block)
            if allowed is None:
                rows, base, fetch = None, block, k
            else:
                mask = allowed[start:end]
                missing = len(mask) - int(mask.sum())
                if missing == len(mask):
                    continue
                if missing == 0 or (overfetch and missing <= _MAX_OVERFETCH):
                    rows, base, fetch = None, block, k + missing
                else:
                    rows = np.flatnonzero(mask)
                    base, fetch = block[rows], k
            scores, positions = exact_search(base, queries, fetch, self.config.metric)
            labels = np.where(
                positions >= 0, (positions if rows is None else rows[np.maximum(positions, 0)]) + start, -1
            )
            if allowed is not None and rows is None:
                ok = (labels >= 0) & allowed[np.maximum(labels, 0)]
                labels = np.where(ok, labels, -1)
                scores = np.where(ok, scores, worst)
            best_scores, best_labels = self._merge(best_scores, best_labels, scores, labels, k)
        if best_labels.shape[1] < k:
            best_scores = _fit(best_scores, k, worst)
            best_labels = _fit(best_labels, k, -1)
        return best_scores, best_labels

    def _merge(
        self, a_scores: np.ndarray, a_labels: np.ndarray, b_scores: np.ndarray, b_labels: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        scores = np.concatenate([a_scores, b_scores.astype(np.float32)], axis=1)
        labels = np.concatenate([a_labels, b_labels.astype(np.int64)], axis=1)
        key = np.where(labels >= 0, scores if self.better_low else -scores, np.inf)
        order = np.argsort(key, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(labels, order, 1)
