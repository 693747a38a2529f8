"""One collection of the embedded backend: the facade that the backend interface (`VectorCollection`) sees.

A collection's work is split by job, one module each:
- slots.py      the slot store: the items in memory (ids, metadata, inputs, vectors, live flags), as columns;
- contents.py   the store and the indexes over its slots, under one readers-writer lock: where committed records land;
- recovery.py   opening from checkpoint + log, checkpoints, compaction (the files: collection.json, wal.log,
                checkpoint-<lsn>/);
- training.py   building indexes: background training, the rebuild operation;
- planning.py   searches: filters and their selectivity, exact or ANN, overfetch, PQ re-ranking, budgets, hits;
- keywords.py   keyword (BM25) searches through the keyword index, with the planner's allowed items.
This module wires them together, keeps the collection's state (RECOVERING, READY, DATA_LOSS) and its step sizes, and
answers the reads (get, export, ids_with_inputs, info) under the contents' read lock.

Concurrency: searches hold the read side of the lock; applying committed records holds the write side. Writers are
ordered by the log (group commit); a record is applied only after it is durable. A replaced or deleted row is a
tombstone until the next checkpoint compacts it away, or a rebuild. The FAISS index is a cache rebuilt from the rows at
start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index.faiss import recovery, training
from embedsvc.index.faiss.contents import Contents
from embedsvc.index.faiss.keywords import KeywordSearch, missing_index
from embedsvc.index.faiss.log import Delete, LogWriter, Upsert
from embedsvc.index.faiss.planning import Planner, Steps
from embedsvc.index.faiss.recovery import CONFIG, LOG, Checkpoints
from embedsvc.index.faiss.vector_index import VectorIndex
from embedsvc.index.filtering import Filter
from embedsvc.index.types import CollectionConfig, Hit, KeywordHits, State, StoredItem
from embedsvc.stats import Histogram

log = logging.getLogger(__name__)

# What the store and tests reach through this module: the collection's files, its states, the index class it builds.
__all__ = ["CONFIG", "LOG", "Collection", "State", "VectorIndex"]

# Step sizes, read at each call: how much one step of a long call does. Between steps the call may be stopped
# (deadline, cancellation), a rebuild reports progress, and writers get the lock.
# Queries searched per step of a batch.
_QUERY_CHUNK = 256
# Items a filter is evaluated on per step.
_FILTER_CHUNK = 4096
# Bytes of candidate vectors one IVF-PQ re-ranking step may gather (queries x candidates x dimension x 4).
_RERANK_BYTES = 64 * 1024 * 1024
# Vectors added to a rebuilt index per step.
_REBUILD_CHUNK = 8192


class Collection:
    def __init__(self, directory: Path, config: CollectionConfig, checkpoint_bytes: int) -> None:
        self.directory = directory
        self.config = config
        self.checkpoint_bytes = checkpoint_bytes
        self.state = State.RECOVERING
        self.error = ""
        self._writer: LogWriter | None = None
        self._trainer = training.Trainer(config.name, lambda: self.rebuild(check=self._check_open))
        self._contents = Contents(config, on_trainable=self._trainer.start)
        self._checkpoints = Checkpoints(directory, self._contents, checkpoint_bytes, self._require_writer)
        self._planner = Planner(self._contents)
        self._keywords = KeywordSearch(self._contents, self._planner)

    # ---- recovery, checkpoints -----------------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: Path, checkpoint_bytes: int) -> Collection:
        """Recover from checkpoint and log. Damage makes a DATA_LOSS collection, not an exception."""
        collection = cls(directory, recovery.read_config(directory), checkpoint_bytes)
        collection._recover()
        return collection

    def _recover(self) -> None:
        try:
            self._writer = recovery.recover(self.directory, self._contents)
        except recovery.Damaged as exc:
            self._damaged(str(exc))
            return
        self.state = State.READY

    def _damaged(self, message: str) -> None:
        self.state = State.DATA_LOSS
        self.error = message
        log.error("collection %s is damaged: %s", self.config.name, message)

    def checkpoint(self, *, compact: bool = False) -> None:
        """Write a checkpoint of the live items and empty the log; `compact` also rebuilds memory and index."""
        self._checkpoints.write(compact=compact)

    @property
    def checkpoint_seconds(self) -> Histogram:
        return self._checkpoints.seconds

    @property
    def checkpoint_error(self) -> str:
        """Why the last checkpoint failed ("" once one succeeds): every write stays durable in the log meanwhile."""
        return self._checkpoints.error

    @property
    def checkpoint_failures(self) -> int:
        return self._checkpoints.failures

    @property
    def _checkpoint_retry_at(self) -> float:
        """When a failed checkpoint is tried again (time.monotonic; tests move it)."""
        return self._checkpoints.retry_at

    @_checkpoint_retry_at.setter
    def _checkpoint_retry_at(self, value: float) -> None:
        self._checkpoints.retry_at = value

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

    def _check_open(self) -> None:
        if self._writer is None:
            raise EmbedsvcError(Reason.STORAGE_ERROR, f"collection '{self.config.name}' is closed")

    @property
    def count(self) -> int:
        return self._contents.store.count

    @property
    def tombstones(self) -> int:
        return self._contents.store.tombstones

    @property
    def _slot_of(self) -> Mapping[str, int]:
        """Each live id's slot (the power-loss harness reads the ids)."""
        return self._contents.store.slot_of

    def stage(self, op: Upsert) -> Upsert:
        """The write, ready for `commit` (nothing to prepare here: the log frames it under its own lock)."""
        return op

    def commit(self, staged: Upsert) -> int:
        return self.upsert(staged)

    def upsert(self, op: Upsert) -> int:
        """Durably add or replace items; returns the live count afterwards."""
        writer = self._require_writer()
        writer.commit(op)
        self._checkpoints.after_write(writer)
        return self.count

    def delete(self, ids: Sequence[str]) -> tuple[int, int]:
        writer = self._require_writer()
        with self._contents.rw.read():
            slot_of = self._contents.store.slot_of
            present = [i for i in ids if i in slot_of]
        if present:
            writer.commit(Delete(present))
            self._checkpoints.after_write(writer)
        return len(present), len(ids) - len(present)

    def get(self, ids: Sequence[str], *, with_vectors: bool) -> list[StoredItem | None]:
        self.check_ready()
        with self._contents.rw.read():
            return self._contents.store.items(ids, with_vectors=with_vectors)

    def ids_with_inputs(self, inputs: set[str]) -> set[str]:
        """The live items whose raw input is one of these (a query by text leaves them out of its own hits)."""
        with self._contents.rw.read():
            return self._contents.store.ids_with_inputs(inputs)

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
        return self._planner.search(
            queries,
            k,
            steps=Steps(queries=_QUERY_CHUNK, filter_items=_FILTER_CHUNK, rerank_bytes=_RERANK_BYTES),
            where=where,
            exclude=exclude,
            ef_search=ef_search,
            nprobe=nprobe,
            exact=exact,
            with_metadata=with_metadata,
            with_vectors=with_vectors,
            max_response_bytes=max_response_bytes,
        )

    @property
    def keyword_language(self) -> str:
        return self.config.keyword

    def require_keyword_index(self) -> None:
        if not self.config.keyword:
            raise missing_index(self.config.name)

    def keyword_search(
        self,
        texts: Sequence[str],
        k: int,
        *,
        where: Filter | None = None,
        exclude: Sequence[set[str]] = (),
        with_metadata: bool = True,
        with_vectors: bool = False,
        max_response_bytes: int = 0,
    ) -> list[KeywordHits]:
        """The best k live items by BM25 for each text, among those matching the filter, minus each query's
        excluded ids (see keywords.py); each text searched under the read lock, one at a time."""
        self.check_ready()
        return self._keywords.search(
            texts,
            k,
            steps=Steps(queries=_QUERY_CHUNK, filter_items=_FILTER_CHUNK, rerank_bytes=_RERANK_BYTES),
            where=where,
            exclude=exclude,
            with_metadata=with_metadata,
            with_vectors=with_vectors,
            max_response_bytes=max_response_bytes,
        )

    def export(self, batch_size: int, after: str | None = None) -> Iterator[list[StoredItem]]:
        """The live items in the order of their ids (those after `after`), in batches of at most `batch_size`.

        Items are read batch by batch: one written during the export may or may not appear, one present throughout
        appears exactly once, with its content when its batch is read."""
        self.check_ready()
        contents = self._contents
        with contents.rw.read():
            ids = sorted(i for i in contents.store.slot_of if after is None or i > after)
        for start in range(0, len(ids), batch_size):
            with contents.rw.read():
                found = contents.store.items(ids[start : start + batch_size], with_vectors=True)
            batch = [item for item in found if item is not None]
            if batch:
                yield batch

    # ---- rebuild -------------------------------------------------------------------------------------------------

    @property
    def rebuilding(self) -> bool:
        return self._contents.rebuilding is not None

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
        training.rebuild(self._contents, stage, units, check, chunk=_REBUILD_CHUNK)
        stage("checkpoint", 0)
        self.checkpoint()

    def wait_for_training(self, timeout: float | None = None) -> None:
        """Wait for a background training (tests, benchmarks)."""
        self._trainer.wait(timeout)

    # ---- reporting -----------------------------------------------------------------------------------------------

    @property
    def log_bytes(self) -> int:
        return self._writer.size if self._writer is not None else 0

    @property
    def fsync_seconds(self) -> Histogram | None:
        return self._writer.fsync_seconds if self._writer is not None else None

    def info(self) -> dict[str, Any]:
        disk = sum(p.stat().st_size for p in self.directory.rglob("*") if p.is_file())
        contents = self._contents
        with contents.rw.read():
            store = contents.store
            return {
                "count": store.count,
                "trained": contents.index.trained,
                "tombstones": store.tombstones,
                "disk_bytes": disk,
                "memory_bytes": contents.memory_bytes(),
                "checkpoint_error": self.checkpoint_error,
                "checkpoint_failures": self.checkpoint_failures,
            }
