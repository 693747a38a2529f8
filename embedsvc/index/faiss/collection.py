"""One collection: its durable files, its items in memory, and its FAISS index.

Files in the collection's directory: `collection.json` (the configuration, written once), `wal.log` (see log.py) and
`checkpoint-<lsn>/` (see checkpoint.py). Memory holds every stored row ("slot"): id, vector, metadata, raw input and
a live flag; a replaced or deleted row is a tombstone until the next checkpoint compacts it away. The FAISS index is a
cache rebuilt from these rows at start.

Concurrency: searches hold the read side of a lock; applying committed records holds the write side. Writers are
ordered by the log (group commit); a record is applied only after it is durable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from embedsvc import calls, durable
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index import metadata as stored
from embedsvc.index.exact import exact_search
from embedsvc.index.faiss import checkpoint
from embedsvc.index.faiss.log import Delete, LogWriter, Record, Upsert, scan
from embedsvc.index.faiss.rwlock import RWLock
from embedsvc.index.faiss.vector_index import VectorIndex
from embedsvc.index.filtering import Filter
from embedsvc.index.types import (
    HIT_OVERHEAD,
    CollectionConfig,
    Hit,
    IndexKind,
    Metric,
    State,
    StoredItem,
    response_too_large,
)
from embedsvc.stats import Histogram
from embedsvc.vectors import unit_rows

log = logging.getLogger(__name__)

CONFIG = "collection.json"
LOG = "wal.log"
# Above this share of matching items a filtered search asks the ANN index (with the filter as a selector);
# below it the matching rows are few enough to search exactly.
_ANN_MIN_SELECTIVITY = 0.05
# Without a filter, up to this many tombstones are covered by fetching that many extra hits; beyond it, a selector.
_MAX_OVERFETCH = 1024
# IVF-PQ fetches this many times k candidates by their PQ codes and re-ranks them with the stored vectors.
_PQ_RERANK = 4
# Vectors added to a rebuilt index per step (between steps the rebuild reports progress and may be cancelled).
_REBUILD_CHUNK = 8192
# Queries searched per step of a batch (between steps the call may be stopped, and writers get the lock).
_QUERY_CHUNK = 256
# Items a filter is evaluated on per step (between steps the call may be stopped).
_FILTER_CHUNK = 4096
# Bytes of candidate vectors one IVF-PQ re-ranking step may gather (queries x candidates x dimension x 4).
_RERANK_BYTES = 64 * 1024 * 1024
# What a hit costs in a response beyond its id, input and metadata (score, slot, framing).
# What a rebuild swaps in: every attribute of the items in memory and their index.
_STATE = ("_n", "_ids", "_meta", "_inputs", "_vectors", "_unit", "_live", "_slot_of", "_index", "_sizes")


def _fit(array: np.ndarray, width: int, fill: float = 0.0) -> np.ndarray:
    """`array` with exactly `width` columns: cut, or padded with `fill`."""
    if array.shape[1] >= width:
        return array[:, :width].copy()
    pad = np.full((array.shape[0], width - array.shape[1]), fill, dtype=array.dtype)
    return np.concatenate([array, pad], axis=1)


class _Budget:
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


class Collection:
    def __init__(self, directory: Path, config: CollectionConfig, checkpoint_bytes: int) -> None:
        self.directory = directory
        self.config = config
        self.checkpoint_bytes = checkpoint_bytes
        self.state = State.RECOVERING
        self.error = ""
        self._rw = RWLock()
        self._writer: LogWriter | None = None
        # While a rebuild runs: the records applied since its snapshot, replayed onto the new state before the swap.
        self._rebuilding: list[Record] | None = None
        self._trainer: threading.Thread | None = None
        self.checkpoint_seconds = Histogram()
        # A failed checkpoint (a full disk, an I/O error) leaves every write durable in the log; it is reported here
        # and retried, with backoff, by a later write.
        self.checkpoint_error = ""
        self.checkpoint_failures = 0
        self._checkpoint_retry_at = 0.0
        self._reset(0)

    # ---- state -------------------------------------------------------------------------------------------------

    def _reset(self, capacity: int) -> None:
        d = self.config.dimension
        self._n = 0
        self._ids: list[str] = []
        self._meta: list[dict[str, Any]] = []
        self._inputs: list[str] = []
        self._vectors = np.empty((max(capacity, 16), d), np.float32)
        self._unit = self._vectors if self.config.metric is not Metric.COSINE else np.empty_like(self._vectors)
        self._live = np.zeros(max(capacity, 16), bool)
        # Per slot: the bytes of its id and input, and of its metadata (as JSON): what a hit adds to a response.
        self._sizes = np.zeros((max(capacity, 16), 2), np.int64)
        self._slot_of: dict[str, int] = {}
        self._index = VectorIndex(self.config.index, d, self.config.metric)
        # Slots are renumbered (compaction, a rebuild's swap): work computed per slot outside the lock is stale then.
        self._generation = getattr(self, "_generation", 0) + 1

    def _grow(self, extra: int) -> None:
        need = self._n + extra
        if need <= len(self._live):
            return
        capacity = max(need, 2 * len(self._live))
        vectors = np.empty((capacity, self.config.dimension), np.float32)
        vectors[: self._n] = self._vectors[: self._n]
        if self._unit is self._vectors:
            self._vectors = self._unit = vectors
        else:
            unit = np.empty_like(vectors)
            unit[: self._n] = self._unit[: self._n]
            self._vectors, self._unit = vectors, unit
        live = np.zeros(capacity, bool)
        live[: self._n] = self._live[: self._n]
        self._live = live
        sizes = np.zeros((capacity, 2), np.int64)
        sizes[: self._n] = self._sizes[: self._n]
        self._sizes = sizes

    def _index_form(self, vectors: np.ndarray) -> np.ndarray:
        if self.config.metric is not Metric.COSINE:
            return vectors
        return unit_rows(vectors.astype(np.float32, copy=False))

    def _append(self, op: Upsert, *, index: bool) -> None:
        n = len(op.ids)
        self._grow(n)
        start = self._n
        for i, item_id in enumerate(op.ids):
            old = self._slot_of.get(item_id)
            if old is not None:
                self._live[old] = False
            self._slot_of[item_id] = start + i
        self._vectors[start : start + n] = op.vectors
        if self._unit is not self._vectors:
            self._unit[start : start + n] = self._index_form(op.vectors)
        self._live[start : start + n] = True
        self._sizes[start : start + n] = [
            (len(item_id.encode()) + len(raw.encode()), stored.size_bytes(meta) if meta else 0)
            for item_id, raw, meta in zip(op.ids, op.inputs, op.metadata, strict=True)
        ]
        self._ids.extend(op.ids)
        self._meta.extend(op.metadata)
        self._inputs.extend(op.inputs)
        self._n += n
        if index:
            self._index_new(np.arange(start, start + n))

    def _remove(self, op: Delete) -> None:
        for item_id in op.ids:
            slot = self._slot_of.pop(item_id, None)
            if slot is not None:
                self._live[slot] = False

    def _index_new(self, slots: np.ndarray) -> None:
        if self._index.trained:
            self._index.add(slots, self._unit[slots])
        elif self.count >= self.config.index.train_size and self._rebuilding is None:
            self._train_in_background()

    def _train_in_background(self) -> None:
        """Enough vectors arrived to train the IVF index: train it off the write path, as a rebuild (searches stay
        exact and writes go on meanwhile; the trained index is swapped in with the writes made since). Training
        nlist centroids costs about 25 x 39 nlist^2 x dimension operations: never inside a write's lock."""
        if self._trainer is not None and self._trainer.is_alive():
            return

        def train() -> None:
            try:
                self.rebuild(check=self._check_open)
            except EmbedsvcError as exc:  # closed, deleted, or a rebuild already runs: the next write tries again
                log.info("collection %s: background training stopped: %s", self.config.name, exc.message)
            except Exception:
                log.exception("collection %s: background training failed; searches stay exact", self.config.name)

        self._trainer = threading.Thread(target=train, name=f"train-{self.config.name}", daemon=True)
        self._trainer.start()

    def _check_open(self) -> None:
        if self._writer is None:
            raise EmbedsvcError(Reason.STORAGE_ERROR, f"collection '{self.config.name}' is closed")

    def wait_for_training(self, timeout: float | None = None) -> None:
        """Wait for a background training (tests, benchmarks)."""
        trainer = self._trainer
        if trainer is not None:
            trainer.join(timeout)

    def _train_and_fill(self) -> None:
        live = np.flatnonzero(self._live[: self._n])
        self._index.train(self._unit[live])
        self._index.add(live, self._unit[live])

    def _rebuild_index(self) -> None:
        self._index = VectorIndex(self.config.index, self.config.dimension, self.config.metric)
        if not self._index.trained:
            if self.count >= self.config.index.train_size and self.count > 0:
                self._train_and_fill()
            return
        if self._n:
            self._index.add(np.arange(self._n), self._unit[: self._n])

    def _apply(self, records: list[Record]) -> None:
        with self._rw.write():
            for record in records:
                self._replay(record, index=True)
            if self._rebuilding is not None:
                self._rebuilding.extend(records)

    def _replay(self, record: Record, *, index: bool) -> None:
        if isinstance(record.operation, Upsert):
            self._append(record.operation, index=index)
        else:
            self._remove(record.operation)

    @property
    def count(self) -> int:
        return len(self._slot_of)

    # ---- recovery, checkpoints -----------------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: Path, checkpoint_bytes: int) -> Collection:
        """Recover from checkpoint and log. Damage makes a DATA_LOSS collection, not an exception."""
        config = CollectionConfig.from_json((directory / CONFIG).read_bytes())
        if not config.created_at:
            config = replace(config, created_at=(directory / CONFIG).stat().st_mtime)
        collection = cls(directory, config, checkpoint_bytes)
        collection._recover()
        return collection

    def _recover(self) -> None:
        lsn = 0
        try:
            latest = checkpoint.latest_checkpoint(self.directory)
            if latest is not None:
                snapshot = checkpoint.read_checkpoint(latest, self.config.dimension)
                self._load(snapshot)
                lsn = snapshot.lsn
        except (OSError, ValueError, KeyError) as exc:
            self._damaged(f"checkpoint unreadable: {exc}")
            return
        checkpoint.remove_leftovers(self.directory)
        path = self.directory / LOG
        result = scan(path, self.config.dimension, after_lsn=lsn)
        if result.corruption:
            self._damaged(f"log corrupt: {result.corruption}; {LOG} is kept as it is for inspection")
            return
        if result.torn_bytes:
            log.warning("%s: dropping a torn write of %d bytes at the end of the log", path, result.torn_bytes)
            durable.truncate_file(path, result.valid_bytes)
        replayed = 0
        for record in result.records:
            if record.lsn <= lsn:
                continue  # already in the checkpoint (a crash came between checkpoint and log truncation)
            if isinstance(record.operation, Upsert):
                self._append(record.operation, index=False)
            else:
                self._remove(record.operation)
            lsn = record.lsn
            replayed += 1
        self._rebuild_index()
        self._writer = LogWriter(path, lsn + 1, self._apply)
        self.state = State.READY
        log.info("collection %s: %d items (%d log records replayed)", self.config.name, self.count, replayed)

    def _damaged(self, message: str) -> None:
        self.state = State.DATA_LOSS
        self.error = message
        log.error("collection %s is damaged: %s", self.config.name, message)

    def _load(self, snapshot: checkpoint.Snapshot) -> None:
        self._reset(len(snapshot.ids))
        if snapshot.ids:
            op = Upsert(snapshot.ids, snapshot.vectors, snapshot.metadata, snapshot.inputs)
            self._append(op, index=False)

    def _snapshot(self, lsn: int) -> checkpoint.Snapshot:
        with self._rw.read():
            return self._snapshot_locked(lsn)

    def _snapshot_locked(self, lsn: int) -> checkpoint.Snapshot:
        live = np.flatnonzero(self._live[: self._n])
        return checkpoint.Snapshot(
            lsn=lsn,
            ids=[self._ids[s] for s in live],
            vectors=self._vectors[live].copy(),
            metadata=[self._meta[s] for s in live],
            inputs=[self._inputs[s] for s in live],
        )

    def checkpoint(self, *, compact: bool = False) -> None:
        """Write a checkpoint of the live items and empty the log; `compact` also rebuilds memory and index."""
        writer = self._require_writer()

        def run() -> None:
            started = time.perf_counter()
            snapshot = self._snapshot(writer.last_lsn)
            checkpoint.write_checkpoint(self.directory, snapshot)
            writer.truncate()
            if compact:
                with self._rw.write():
                    self._load(snapshot)
                    self._rebuild_index()
            self.checkpoint_seconds.observe(time.perf_counter() - started)

        writer.exclusive(run)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # ---- operations ----------------------------------------------------------------------------------------------

    def check_ready(self) -> None:
        if self.state is State.DATA_LOSS:
            raise EmbedsvcError(
                Reason.DATA_LOSS,
                f"collection '{self.config.name}' is damaged: {self.error}",
                metadata={"collection": self.config.name},
            )
        if self.state is State.RECOVERING:
            raise EmbedsvcError(
                Reason.COLLECTION_NOT_READY,
                f"collection '{self.config.name}' is replaying its log; retry shortly",
                metadata={"collection": self.config.name},
            )

    def _require_writer(self) -> LogWriter:
        self.check_ready()
        if self._writer is None:
            raise EmbedsvcError(Reason.STORAGE_ERROR, f"collection '{self.config.name}' is closed")
        return self._writer

    def stage(self, op: Upsert) -> Upsert:
        """The write, ready for `commit` (nothing to prepare here: the log frames it under its own lock)."""
        return op

    def commit(self, staged: Upsert) -> int:
        return self.upsert(staged)

    def upsert(self, op: Upsert) -> int:
        """Durably add or replace items; returns the live count afterwards."""
        writer = self._require_writer()
        writer.commit(op)
        self._maybe_checkpoint(writer)
        return self.count

    def delete(self, ids: Sequence[str]) -> tuple[int, int]:
        writer = self._require_writer()
        with self._rw.read():
            present = [i for i in ids if i in self._slot_of]
        if present:
            writer.commit(Delete(present))
            self._maybe_checkpoint(writer)
        return len(present), len(ids) - len(present)

    def _maybe_checkpoint(self, writer: LogWriter) -> None:
        """Checkpoint once the log is large. Called after a write is durable, so a failure here never fails the
        write: it is logged, reported (info, metrics) and retried after a backoff of 5 s doubling to 5 minutes."""
        if writer.size <= self.checkpoint_bytes or time.monotonic() < self._checkpoint_retry_at:
            return
        try:
            # A running rebuild compacts anyway; compacting here too would rebuild the index under the write lock.
            self.checkpoint(compact=self._n > 2 * max(self.count, 1) and self._rebuilding is None)
        except Exception as exc:
            self.checkpoint_failures += 1
            self.checkpoint_error = str(exc.strerror if isinstance(exc, OSError) and exc.strerror else exc)
            backoff = min(300.0, 5.0 * 2 ** min(self.checkpoint_failures - 1, 6))
            self._checkpoint_retry_at = time.monotonic() + backoff
            log.error(
                "collection %s: checkpoint failed (%s); writes stay durable in the log, retrying in %.0f s",
                self.config.name,
                self.checkpoint_error,
                backoff,
            )
        else:
            if self.checkpoint_error:
                log.info("collection %s: checkpoint succeeded again", self.config.name)
            self.checkpoint_error = ""
            self._checkpoint_retry_at = 0.0

    def get(self, ids: Sequence[str], *, with_vectors: bool) -> list[StoredItem | None]:
        self.check_ready()
        empty = np.empty(0, np.float32)
        with self._rw.read():
            out: list[StoredItem | None] = []
            for item_id in ids:
                slot = self._slot_of.get(item_id)
                out.append(
                    None
                    if slot is None
                    else StoredItem(
                        item_id,
                        self._vectors[slot].copy() if with_vectors else empty,
                        self._meta[slot],
                        self._inputs[slot],
                    )
                )
            return out

    def ids_with_inputs(self, inputs: set[str]) -> set[str]:
        """The live items whose raw input is one of these (a query by text leaves them out of its own hits)."""
        with self._rw.read():
            return {self._ids[s] for s in np.flatnonzero(self._live[: self._n]).tolist() if self._inputs[s] in inputs}

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        where: Filter | None = None,
        exclude: Sequence[set[str]] = (),
        ef_search: int = 0,
        nprobe: int = 0,
        exact: bool = False,
        with_metadata: bool = True,
        with_vectors: bool = False,
        max_response_bytes: int = 0,
    ) -> tuple[list[list[Hit]], bool]:
        """k hits per query among live items matching the filter, minus each query's excluded ids.

        Returns the hits and whether the search was exact. Whenever at least k items are eligible, k are returned:
        an ANN search that comes back short is redone exactly for that query.

        The filter is evaluated outside the lock (a slow filter does not hold writers up), in steps; queries are
        searched _QUERY_CHUNK at a time, each step under the read lock; between steps the current call may stop
        (deadline, cancellation). With `max_response_bytes`, the hits' ids, inputs, metadata and vectors are counted
        before any hit is built, and a response that would be larger is refused with LIMIT_EXCEEDED.
        """
        self.check_ready()
        queries = self._index_form(np.ascontiguousarray(queries, dtype=np.float32))
        predicate = where.matches if where is not None else None
        matched = self._match(predicate) if predicate is not None else None
        results: list[list[Hit]] = []
        was_exact = True
        budget = _Budget(max_response_bytes, with_metadata, 4 * self.config.dimension if with_vectors else 0)
        for start in range(0, len(queries), _QUERY_CHUNK):
            calls.check()
            chunk = queries[start : start + _QUERY_CHUNK]
            skip_ids = exclude[start : start + _QUERY_CHUNK]
            extra = max((len(e) for e in skip_ids), default=0)
            with self._rw.read():
                skip = [{self._slot_of[i] for i in ids if i in self._slot_of} for ids in skip_ids]
                allowed = self._allowed(predicate, matched)
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
                )
                was_exact = was_exact and chunk_exact
                budget.spend(self._sizes, labels[:, : k + extra])
                results.extend(
                    self._hits(labels, scores, skip, k, with_metadata=with_metadata, with_vectors=with_vectors)
                )
        return results, was_exact

    def _match(self, predicate: Callable[[Mapping[str, Any]], bool]) -> tuple[np.ndarray, int, int]:
        """The predicate over the live slots, evaluated without the lock: (matches, slots covered, generation).

        Metadata dicts are never changed in place, and appends do not move existing entries, so reading them
        unlocked is safe; a compaction since (another generation) makes the result stale, and _allowed redoes it."""
        with self._rw.read():
            meta, n, generation = self._meta, self._n, self._generation
            live = np.flatnonzero(self._live[:n])
        matches = np.zeros(n, bool)
        for start in range(0, len(live), _FILTER_CHUNK):
            calls.check()
            for slot in live[start : start + _FILTER_CHUNK].tolist():
                matches[slot] = predicate(meta[slot])
        return matches, n, generation

    def _allowed(
        self,
        predicate: Callable[[Mapping[str, Any]], bool] | None,
        matched: tuple[np.ndarray, int, int] | None,
    ) -> np.ndarray:
        """The slots a search may return: live, and matching the predicate (called with the read lock held)."""
        allowed = self._live[: self._n].copy()
        if predicate is None:
            return allowed
        if matched is None or matched[2] != self._generation:  # slots renumbered since: evaluate here, in steps
            matched = (np.zeros(0, bool), 0, self._generation)
        matches, covered, _ = matched
        allowed[:covered] &= matches[: min(covered, self._n)]
        for slot in (np.flatnonzero(allowed[covered:]) + covered).tolist():  # written since the evaluation
            if slot % _FILTER_CHUNK == 0:
                calls.check()
            allowed[slot] = predicate(self._meta[slot])
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
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """The best `want` allowed slots of each query (labels -1 past the end) and whether they are exact."""
        n, kind = self._n, self.config.index.kind
        dead = n - self.count
        use_exact = (
            exact
            or not self._index.trained
            or (kind is not IndexKind.FLAT and eligible < _ANN_MIN_SELECTIVITY * self.count)
        )
        if not filtered and dead <= _MAX_OVERFETCH and not (use_exact and kind is not IndexKind.FLAT):
            # No selector (FAISS keeps its fast path): fetch enough to cover every tombstone, drop them after.
            fetch = min(want + dead, n)
            if kind is IndexKind.IVF_PQ:
                fetch = min(_PQ_RERANK * fetch, n)
            scores, labels = self._index.search(queries, fetch, None, ef_search=ef_search, nprobe=nprobe)
            scores, labels = self._drop_dead(scores, labels)
            if kind is IndexKind.IVF_PQ:
                scores, labels = self._rerank(queries, labels, want)
            scores, labels = scores[:, :want], labels[:, :want]
        elif use_exact or kind is IndexKind.FLAT:
            scores, labels = self._exact(queries, allowed, want)
        else:
            # PQ distances are coarse: fetch more candidates and re-rank them with the stored vectors.
            fetch = min(_PQ_RERANK * want, eligible) if kind is IndexKind.IVF_PQ else want
            scores, labels = self._index.search(queries, fetch, allowed, ef_search=ef_search, nprobe=nprobe)
            if kind is IndexKind.IVF_PQ:
                scores, labels = self._rerank(queries, labels, want)
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
        ids, meta, inputs, vectors = self._ids, self._meta, self._inputs, self._vectors
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
        live = (labels >= 0) & self._live[np.maximum(labels, 0)]
        order = np.argsort(~live, axis=1, kind="stable")
        labels = np.where(np.take_along_axis(live, order, 1), np.take_along_axis(labels, order, 1), -1)
        return np.take_along_axis(scores, order, 1), labels

    def _rerank(self, queries: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of each query's candidates, best k first; -1 labels stay last. Queries are re-ranked in
        steps whose gathered candidates stay under _RERANK_BYTES."""
        per_query = max(1, labels.shape[1] * self.config.dimension * 4)
        step = max(1, _RERANK_BYTES // per_query)
        if len(queries) > step:
            parts = [self._rerank(queries[s : s + step], labels[s : s + step], k) for s in range(0, len(queries), step)]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        candidates = self._unit[np.maximum(labels, 0)]  # (q, c, d)
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
        rows = np.flatnonzero(allowed)
        base = self._unit[: self._n] if len(rows) == self._n else self._unit[rows]
        scores, positions = exact_search(base, queries, k, self.config.metric)
        labels = np.where(positions >= 0, rows[np.maximum(positions, 0)], -1)
        return scores, labels

    def export(self, batch_size: int, after: str | None = None) -> Iterator[list[StoredItem]]:
        """The live items in the order of their ids (those after `after`), in batches of at most `batch_size`.

        Items are read batch by batch: one written during the export may or may not appear, one present throughout
        appears exactly once, with its content when its batch is read."""
        self.check_ready()
        with self._rw.read():
            ids = sorted(i for i in self._slot_of if after is None or i > after)
        for start in range(0, len(ids), batch_size):
            with self._rw.read():
                slots = ((item_id, self._slot_of.get(item_id)) for item_id in ids[start : start + batch_size])
                batch = [
                    StoredItem(item_id, self._vectors[s].copy(), self._meta[s], self._inputs[s])
                    for item_id, s in slots
                    if s is not None
                ]
            if batch:
                yield batch

    @property
    def rebuilding(self) -> bool:
        return self._rebuilding is not None

    def rebuild(
        self,
        stage: Callable[[str, int], None] = lambda _stage, _total: None,
        units: Callable[[int], None] = lambda _done: None,
        check: Callable[[], None] = lambda: None,
    ) -> None:
        """Build a new index from the live items while searches and writes go on against the old one, swap it in
        together with the writes made meanwhile, then checkpoint (which drops the tombstones from disk too).

        `stage(name, total)` and `units(done)` report progress; `check()` is called between steps and stops the
        rebuild by raising (nothing changes then)."""
        self._require_writer()
        stage("snapshot", 0)
        with self._rw.read():
            if self._rebuilding is not None:
                raise EmbedsvcError(Reason.INVALID_VALUE, f"collection '{self.config.name}' is already rebuilding")
            snapshot = self._snapshot_locked(0)
            self._rebuilding = []  # set under the lock: no write can be applied between the snapshot and this
        try:
            fresh = Collection(self.directory, self.config, self.checkpoint_bytes)
            fresh._load(snapshot)
            fresh._build_index(stage, units, check)
            check()
            stage("catching-up", len(self._rebuilding))
            with self._rw.write():
                for record in self._rebuilding:
                    fresh._replay(record, index=True)
                for attribute in _STATE:
                    setattr(self, attribute, getattr(fresh, attribute))
                self._generation += 1
        finally:
            self._rebuilding = None
        stage("checkpoint", 0)
        self.checkpoint()

    def _build_index(
        self, stage: Callable[[str, int], None], units: Callable[[int], None], check: Callable[[], None]
    ) -> None:
        """A new index over this (unshared, compacted) state, trained if the kind needs it, filled in steps."""
        self._index = VectorIndex(self.config.index, self.config.dimension, self.config.metric)
        slots = np.arange(self._n)
        if not self._index.trained:
            if self.count == 0 or self.count < self.config.index.train_size:
                return  # searched exactly until enough vectors arrive, as before
            stage("training", 0)
            check()
            self._index.train(self._unit[slots])
        stage("indexing", len(slots))
        for start in range(0, len(slots), _REBUILD_CHUNK):
            check()
            chunk = slots[start : start + _REBUILD_CHUNK]
            self._index.add(chunk, self._unit[chunk])
            units(start + len(chunk))

    @property
    def tombstones(self) -> int:
        return self._n - self.count

    @property
    def log_bytes(self) -> int:
        return self._writer.size if self._writer is not None else 0

    @property
    def fsync_seconds(self) -> Histogram | None:
        return self._writer.fsync_seconds if self._writer is not None else None

    def info(self) -> dict[str, Any]:
        disk = sum(p.stat().st_size for p in self.directory.rglob("*") if p.is_file())
        with self._rw.read():
            memory = self._vectors.nbytes + (0 if self._unit is self._vectors else self._unit.nbytes)
            memory += self._index.memory_bytes() + 200 * self._n
            return {
                "count": self.count,
                "trained": self._index.trained,
                "tombstones": self._n - self.count,
                "disk_bytes": disk,
                "memory_bytes": memory,
                "checkpoint_error": self.checkpoint_error,
                "checkpoint_failures": self.checkpoint_failures,
            }
