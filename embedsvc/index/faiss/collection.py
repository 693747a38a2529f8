"""One collection of the embedded backend: the facade that the backend interface (`VectorCollection`) sees.

A collection's work is split by job, one module each:
- slots.py        the slot store: the items (ids, metadata, inputs, vectors, live flags) as columns, in segments
                  memory-mapped from the checkpoint plus the rows appended since;
- contents.py     the store and the indexes over its slots, under one readers-writer lock: where committed records
                  land; what a checkpoint holds and how one is opened;
- recovery.py     opening from checkpoint + log, checkpoints, compaction (the files: collection.json, wal.log,
                  checkpoint-<lsn>/);
- training.py     building indexes: background training and calibration, the rebuild operation, compaction;
- planning.py     searches: filters (indexed fields first), recall targets, exact or ANN, overfetch, rescoring of
                  quantised candidates, budgets, hits;
- calibration.py  recall measured per setting of the index's knob, and the setting a target recall needs;
- fields.py       indexed metadata fields: their entries per segment, and filters evaluated through them;
- snapshots.py    a snapshot's files (the checkpoint's files and the log up to one LSN) and restoring them;
- keywords.py     keyword (BM25) searches through the keyword index, with the planner's allowed items.
This module wires them together, keeps the collection's state (RECOVERING, READY, DATA_LOSS) and its step sizes, and
answers the reads (get, export, ids_with_inputs, info) under the contents' read lock.

Concurrency: searches hold the read side of the lock; applying committed records holds the write side. Writers are
ordered by the log (group commit); a record is applied only after it is durable. A replaced or deleted row is a
tombstone until a compaction (a checkpoint once more than half the slots are tombstones) or a rebuild. The FAISS index
is a cache of the rows: kept in checkpoints (as codes per segment, or whole for HNSW) so that a restart maps and
re-adds instead of training and encoding.

Background work (one thread per collection, one job at a time): after an open, the checksums of the checkpoint's
large files (a mismatch makes the collection DATA_LOSS); training once enough vectors arrived, and again (IVF) once
the collection has grown well past the sample it was trained on (training.py); a recall calibration after each
training and as the collection grows.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index import metadata as stored
from embedsvc.index.faiss import calibration, checkpoint, heap, recovery, snapshots, training
from embedsvc.index.faiss.contents import Contents
from embedsvc.index.faiss.keywords import KeywordSearch, missing_index
from embedsvc.index.faiss.log import Delete, LogWriter, Upsert
from embedsvc.index.faiss.planning import Planner, Steps
from embedsvc.index.faiss.recovery import CONFIG, LOG, Checkpoints
from embedsvc.index.faiss.vector_index import VectorIndex
from embedsvc.index.filtering import Filter
from embedsvc.index.snapshot_files import FAISS, Taken
from embedsvc.index.types import CollectionConfig, KeywordHits, Searched, State, StoredItem
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
# Bytes of candidate vectors one rescoring step may gather (queries x candidates x dimension x 4).
_RERANK_BYTES = 64 * 1024 * 1024
# Rows a rebuild adds to its new index per step (progress is reported, and cancellation checked, between steps).
_REBUILD_CHUNK = 8192


class Collection:
    def __init__(self, directory: Path, config: CollectionConfig, checkpoint_bytes: int) -> None:
        self.directory = directory
        self.config = config
        self.checkpoint_bytes = checkpoint_bytes
        self.state = State.RECOVERING
        self.error = ""
        self._writer: LogWriter | None = None
        self._recalibrate = False
        self._background = training.Background(
            config.name, {"verify": self._verify, "train": self._train, "calibrate": self._calibrate}
        )
        self._contents = Contents(
            config,
            on_trainable=lambda: self._background.start("train"),
            on_grown=lambda: self._background.start("calibrate"),
        )
        self._checkpoints = Checkpoints(directory, self._contents, checkpoint_bytes, self._require_writer)
        self._planner = Planner(self._contents)
        # Snapshots copying the log's prefix (which a checkpoint would truncate): checkpoints wait for none to run,
        # and hold `_pin_lock` while they write, so that no snapshot starts meanwhile.
        self._pin_lock = threading.Condition()
        self._pins = 0
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
        heap.release_freed_memory()  # the recovery's reads of the checkpoint and the log
        if self._contents.saved is not None:
            self._background.start("verify")
        if self._contents.retrain_due():
            self._background.start("train")  # grew past its training before the last stop; calibrated after
        elif self._needs_calibration():
            self._background.start("calibrate")

    def _verify(self) -> None:
        """Check the checkpoint's large files (mapped at open, not read) against the manifest's checksums."""
        contents = self._contents
        saved = contents.saved
        if saved is None:
            return
        path, manifest = saved
        with contents.rw.read():
            files = [s.file for s in contents.store.segments if s.file is not None]
        for file in files:
            entry = manifest.files.get(file.path.name)
            try:
                if entry is None or entry.bytes <= checkpoint.VERIFY_AT_OPEN:
                    file.close()
                    continue
                if file.digest() != entry.sha256:
                    self._damaged(f"{path.name}/{file.path.name}: checksum mismatch; the files are kept for inspection")
                    return
            except (OSError, ValueError):
                continue  # checked already (a reopened segment), or closed: nothing to say about its bytes

    def _needs_calibration(self) -> bool:
        contents = self._contents
        name, _ = calibration.knob(self.config.index)
        index = contents.index
        return (
            bool(name)
            and index.trained
            and not index.exact
            and calibration.stale(contents.calibration, contents.store.count)
        )

    def _train(self) -> None:
        """Train the index: the first time, or again once the collection has grown past its training sample."""
        contents = self._contents
        with contents.rw.read():
            trained = contents.trained
            if contents.index.trained and not contents.retrain_due():
                return  # asked for again while it ran, or a Rebuild trained it meanwhile
            count = contents.store.count
        if trained is not None:
            log.info("collection %s: training its index again: %d items now, trained at %d on a sample of %d",
                     self.config.name, count, trained.count, trained.sample)  # fmt: skip
        self.rebuild(check=self._check_open)  # which asks for a calibration after

    def _calibrate(self) -> None:
        """Measure the index's recall at each setting of its knob on a sample of the collection's own vectors,
        among the rows there were when it started (writes go on meanwhile)."""
        self._check_open()
        contents = self._contents
        with contents.rw.read():
            store, generation = contents.store, contents.generation
            if not contents.index.trained or contents.index.exact:
                return
            if not self._recalibrate and not calibration.stale(contents.calibration, store.count):
                return  # asked for again while it ran, and measured since
            self._recalibrate = False
            before = store.n
            live = store.live_slots()
            count = len(live)
            rng = np.random.default_rng(count)
            sample = np.sort(rng.choice(live, min(calibration.QUERIES, count), replace=False))
            vectors = store.unit[sample]
            ids = [store.ids[s] for s in sample.tolist()]
        name, _ = calibration.knob(self.config.index)
        steps = Steps(queries=_QUERY_CHUNK, filter_items=_FILTER_CHUNK, rerank_bytes=_RERANK_BYTES)

        def search(
            queries: np.ndarray, k: int, exclude: Sequence[set[str]], exact: bool, value: int, oversample: int
        ) -> list[list[str]]:
            self._check_open()
            knobs = {"nprobe": 0, "ef_search": 0, "oversample": oversample} | ({name: value} if value else {})
            found = self._planner.search(
                queries,
                k,
                steps=steps,
                exclude=exclude,
                exact=exact,
                with_metadata=False,
                nprobe=knobs["nprobe"],
                ef_search=knobs["ef_search"],
                oversample=knobs["oversample"],
                before=before,
            )
            return [[h.id for h in row] for row in found.hits]

        measured = calibration.measure(self.config.index, vectors, ids, count, search)
        with contents.rw.write():
            if contents.generation != generation:
                return  # renumbered meanwhile (a compaction, a rebuild): measured on rows that moved; again later
            contents.calibration = measured
            contents.dirty = True
        if measured is not None:
            log.info("collection %s: recall calibrated on %d of %d items: %s %s", self.config.name,
                     measured.queries, count, measured.knob, measured.points)  # fmt: skip

    def _damaged(self, message: str) -> None:
        self.state = State.DATA_LOSS
        self.error = message
        log.error("collection %s is damaged: %s", self.config.name, message)

    def checkpoint(self, *, compact: bool = False) -> None:
        """Write a checkpoint of the live items and empty the log; `compact` also rebuilds memory and index. Waits
        while a snapshot copies the log."""
        with self._pin_lock:
            while self._pins:
                self._pin_lock.wait()
            self._checkpoints.write(compact=compact)

    def _after_write(self, writer: LogWriter) -> None:
        """The checkpoint a large log calls for, unless a snapshot copies the log or a checkpoint runs (then a later
        write does it)."""
        if not self._pin_lock.acquire(blocking=False):
            return
        try:
            if not self._pins:
                self._checkpoints.after_write(writer)
        finally:
            self._pin_lock.release()

    @contextmanager
    def _pinned(self) -> Iterator[None]:
        """No checkpoint truncates the log while the block runs."""
        with self._pin_lock:
            self._pins += 1
        try:
            yield
        finally:
            with self._pin_lock:
                self._pins -= 1
                self._pin_lock.notify_all()

    def snapshot(
        self, dest: Path, check: Callable[[], None] = lambda: None, units: Callable[[int], None] = lambda _n: None
    ) -> Taken:
        """The collection at one LSN as files in `dest` (an empty directory): its configuration, its latest
        checkpoint's files (hard-linked) and its log up to that LSN (copied). Writes go on meanwhile: the LSN is the
        last one settled when the log's exclusive section is entered (no write is half-applied then), and no
        checkpoint truncates the log until its prefix is copied.

        The one method that knows how a FAISS collection's files make a snapshot (with `snapshots.py`): a new
        checkpoint format changes these two places only."""
        writer = self._require_writer()
        at: dict[str, Any] = {}
        with self._pinned():

            def one_lsn() -> None:
                at.update(
                    lsn=writer.settled_lsn,
                    log_bytes=writer.size,
                    count=self.count,
                    linked=snapshots.link_checkpoint(self.directory, dest),
                )

            writer.exclusive(one_lsn)
            units(at["count"])
            log_entry = snapshots.copy_log(self.directory / LOG, dest, at["log_bytes"], check)
        files = snapshots.finish(dest, self.config, at["linked"], log_entry)
        return Taken(FAISS, at["count"], at["lsn"], True, files)

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
        """The write, ready for `commit` (the log frames it under its own lock): its indexed fields checked."""
        stored.check_indexed(self.config.indexed_fields, op.metadata)
        return op

    def commit(self, staged: Upsert) -> int:
        return self.upsert(staged)

    def upsert(self, op: Upsert) -> int:
        """Durably add or replace items; returns the live count afterwards."""
        writer = self._require_writer()
        stored.check_indexed(self.config.indexed_fields, op.metadata)
        writer.commit(op)
        self._after_write(writer)
        return self.count

    def delete(self, ids: Sequence[str]) -> tuple[int, int]:
        writer = self._require_writer()
        with self._contents.rw.read():
            slots = self._contents.store.slot_of.lookup(ids)
        present = [i for i, s in zip(ids, slots.tolist(), strict=True) if s >= 0]
        if present:
            writer.commit(Delete(present))
            self._after_write(writer)
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
        oversample: int = 0,
        target_recall: float = 0.0,
        exact: bool = False,
        with_metadata: bool = True,
        with_vectors: bool = False,
        max_response_bytes: int = 0,
    ) -> Searched:
        """k hits per query among live items matching the filter, minus each query's excluded ids.

        Returns the hits and whether the search was exact (a pair), and the effective parameters. Whenever at least
        k items are eligible, k are returned: an ANN search that comes back short is redone exactly for that query.
        `target_recall` (0: the collection's) sets the knob (nprobe, ef_search, oversample) that a request leaves
        at 0, from the collection's recall calibration.

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
            oversample=oversample,
            target_recall=target_recall,
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
            store = contents.store
            order = store.sorted_slots(after)
        for start in range(0, len(order), batch_size):
            # Ids from the store the order was taken in (a slot's id never changes), the items from the current one.
            ids = [store.ids[s] for s in order[start : start + batch_size].tolist()]
            with contents.rw.read():
                found = contents.store.items(ids, with_vectors=True)
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
        index = self._contents.index
        if calibration.knob(self.config.index)[0] and index.trained and not index.exact:
            self._recalibrate = True  # a new index: its recall is measured again
            self._background.start("calibrate")

    def wait_for_training(self, timeout: float | None = None) -> None:
        """Wait for the background work (training, calibration, checks) to finish (tests, benchmarks)."""
        self._background.wait(timeout)

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
                "mapped_bytes": store.mapped_bytes(),
                "checkpoint_error": self.checkpoint_error,
                "checkpoint_failures": self.checkpoint_failures,
                "calibration": contents.calibration,
                "training": self._training(),
            }

    def _training(self) -> dict[str, int] | None:
        """The index's last training, and the count at which it trains again (0: never); None until trained (hold
        the read lock)."""
        contents = self._contents
        trained = contents.trained
        if trained is None or not contents.index.trained:
            return None
        return {
            "count": trained.count,
            "sample": trained.sample,
            "retrain_at": trained.retrain_at(self.config.index),
        }
