"""Building a collection's indexes: at once over a whole store, in steps for a rebuild, compacted copies, and the work
done in the background (training, recall calibration).

- `refill`: a new index over every row of the store, at recovery when the checkpoint could not give it back, and
  for a compaction without codes (the caller holds the write lock, or serves nothing yet). Kinds that need training
  are trained first when enough rows are live (on a seeded sample of at most `train_rows`); with fewer, the index
  stays empty and the planner searches the store exactly. Every slot is added, tombstones too (the planner never
  returns them), so that the index's codes cover consecutive slots for the checkpoint.
- `compacted`: new contents holding the live rows renumbered from 0 (a compaction), with the same trained index
  refilled from the codes the segments and the index keep (no training, no encoding), else built afresh.
- `rebuild`: a new store and index built from the live items while searches and writes go on against the old ones,
  then swapped in, under the write lock, together with the writes made meanwhile (`Contents.rebuilding` collects
  them). The caller checkpoints after, which drops the tombstones from disk too.
- `Background`: work in a thread, one job at a time: once enough vectors arrived to train, a rebuild; after a rebuild
  and as the collection grows, a recall calibration. Training nlist centroids costs about 25 x 39 nlist^2 x dimension
  operations: never inside a write's lock.
- Retraining: the first training comes as soon as `train_size` (39 x nlist) vectors arrived, on all of them; an IVF
  index trained on fewer than `train_rows` (256 x nlist, at least 100,000) is trained again, by the same rebuild in
  the background, once the collection has grown 4 times (2 times when that gives a full-size sample) since
  (`contents.Trained.retrain_at`): its centroids then come from a sample of the data it holds, as raw FAISS's would.
  Every training records the live count and the sample's size (`Contents.trained`, kept in checkpoints). nlist and
  every other parameter stay as the collection was created with them. A build (off the lock) keeps the most even of
  KMEANS_RESTARTS k-means runs (vector_index.py); a refill (at open, or under a compaction's lock) runs one.

The keyword index (see contents.py) is built by `catch_up_keywords` when it is behind the store (at open, once the
checkpoint and the log's tail are in the store), from the live items' ids and texts in one bulk build; a compaction
and a rebuild keep it (it is keyed by id, not by slot: their fresh contents are made without one).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import numpy as np

from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index.faiss import heap
from embedsvc.index.faiss.contents import Contents, Trained
from embedsvc.index.faiss.vector_index import KMEANS_RESTARTS

log = logging.getLogger(__name__)

# Rows added to an index per FAISS call when filling it from a store.
_ADD_ROWS = 65536


def train_sample(contents: Contents) -> np.ndarray:
    """The index-form vectors of a seeded random sample of the live rows, at most train_rows of them, in slot order."""
    live = contents.store.live_slots()
    limit = contents.config.index.train_rows
    if len(live) > limit:
        live = np.sort(np.random.default_rng(0).choice(live, limit, replace=False))
    return contents.store.unit[live]


def _train(contents: Contents, restarts: int = 1) -> None:
    """Train the (new, untrained) index on a sample of the store's live rows, and record it."""
    sample = train_sample(contents)
    contents.index.train(sample, restarts=restarts)
    contents.trained = Trained(contents.store.count, len(sample))


def _fill(
    contents: Contents,
    check: Callable[[], None] = lambda: None,
    units: Callable[[int], None] = lambda _: None,
    rows: int = _ADD_ROWS,
) -> None:
    store, index = contents.store, contents.index
    for start, block in store.chunks(max_rows=rows):
        check()
        index.add(np.arange(start, start + len(block)), block)
        units(start + len(block))


def catch_up_keywords(contents: Contents) -> None:
    """Build the keyword index over the store's live items if it is behind the store (at open; hold the write lock,
    or serve nothing yet)."""
    if contents.keyword is None or not contents.keyword_stale:
        return
    store = contents.store
    live = store.live_slots().tolist()
    ids, inputs = store.ids, store.inputs
    contents.keyword.build([ids[s] for s in live], [inputs[s] for s in live])
    contents.keyword_stale = False


def refill(contents: Contents) -> None:
    """A new index for `contents` over every row of its store, trained if the kind needs it and enough rows are live."""
    store, params = contents.store, contents.config.index
    contents.index = index = contents.new_index()
    if not index.trained:
        if store.count < params.train_size or store.count == 0:
            return
        _train(contents)
    if store.n:
        _fill(contents)


def compacted(contents: Contents) -> Contents:
    """New contents holding the live rows renumbered from 0, with an index over them (see the module docstring).
    Reads `contents` only: hold its read lock, or keep writes away (the log's exclusive section)."""
    fresh = Contents(contents.config, keyword=False)  # the keyword index stays in service (adopt keeps it)
    index = contents.index
    fresh.store = contents.store.compacted(index.codes_at if index.keeps_codes else None)
    fresh.saved, fresh.dirty, fresh.calibration = contents.saved, True, contents.calibration
    template = index.template()
    segments = fresh.store.segments
    if template is not None and all(s.codes is not None for s in segments):
        fresh.index.restore(template, [(s.start, np.asarray(s.codes)) for s in segments])
        fresh.trained = contents.trained  # the same training
        return fresh
    if index.trained and not index.exact and not index.whole and template is None:
        fresh.calibration = None  # an index trained anew: measured again
    refill(fresh)
    return fresh


def build(
    contents: Contents,
    stage: Callable[[str, int], None],
    units: Callable[[int], None],
    check: Callable[[], None],
    *,
    chunk: int = _ADD_ROWS,
) -> None:
    """A new index over this (unshared, compacted) contents, trained if the kind needs it, filled at most `chunk`
    rows a step.

    `stage` and `units` report progress; `check()` runs between steps and stops the build by raising."""
    contents.index = index = contents.new_index()
    store = contents.store
    if not index.trained:
        if store.count == 0 or store.count < contents.config.index.train_size:
            return  # searched exactly until enough vectors arrive, as before
        stage("training", 0)
        check()
        _train(contents, KMEANS_RESTARTS)  # off the lock: worth the most even of several k-means runs
    stage("indexing", store.n)
    _fill(contents, check, units, chunk)


def rebuild(
    contents: Contents,
    stage: Callable[[str, int], None],
    units: Callable[[int], None],
    check: Callable[[], None],
    *,
    chunk: int = _ADD_ROWS,
) -> None:
    """Rebuild the store (without tombstones) and its indexes off the lock, then swap them in with the writes made
    meanwhile. Nothing changes when `check()` raises. INVALID_VALUE while another rebuild runs."""
    stage("snapshot", 0)
    with contents.rw.read():
        if contents.rebuilding is not None:
            raise EmbedsvcError(Reason.INVALID_VALUE, f"collection '{contents.config.name}' is already rebuilding")
        store = contents.store.compacted()
        contents.rebuilding = []  # set under the lock: no write can be applied between the snapshot and this
    try:
        fresh = Contents(contents.config, keyword=False)  # the keyword index stays in service (adopt keeps it)
        fresh.store = store
        build(fresh, stage, units, check, chunk=chunk)
        check()
        stage("catching-up", len(contents.rebuilding))
        with contents.rw.write():
            for record in contents.rebuilding:
                fresh.replay(record, index=True)
            contents.adopt(fresh)
    finally:
        contents.rebuilding = None


class Background:
    """Runs a collection's background jobs ("train": a rebuild; "calibrate": a recall calibration) in a thread, one
    at a time; a job asked for while it is queued runs once, and one asked for while it runs runs again after."""

    def __init__(self, name: str, jobs: dict[str, Callable[[], None]]) -> None:
        self.name = name
        self._jobs = jobs
        self._lock = threading.Lock()
        self._queue: list[str] = []
        self._running: str | None = None
        self._again: set[str] = set()
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()

    def start(self, job: str) -> None:
        """Queue `job` (searches stay exact, or at the last calibration, and writes go on meanwhile)."""
        with self._lock:
            if job == self._running:
                self._again.add(job)
                return
            if job in self._queue:
                return
            self._queue.append(job)
            self._idle.clear()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"index-{self.name}", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._thread = None  # under the lock: a job queued from now on starts a new thread
                    self._idle.set()
                    return
                job = self._queue.pop(0)
                self._running = job
            try:
                self._jobs[job]()
            except EmbedsvcError as exc:  # closed, deleted, or a rebuild already runs: the next write tries again
                log.info("collection %s: background %s stopped: %s", self.name, job, exc.message)
            except Exception:
                log.exception("collection %s: background %s failed", self.name, job)
            finally:
                heap.release_freed_memory()  # the job's transient buffers (copies, samples, reads): give them back
                with self._lock:
                    self._running = None
                    if job in self._again:
                        self._again.discard(job)
                        if job not in self._queue:
                            self._queue.append(job)

    def wait(self, timeout: float | None = None) -> None:
        """Wait until no job is queued or running (tests, benchmarks)."""
        self._idle.wait(timeout)
