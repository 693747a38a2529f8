"""Building a collection's indexes: at once over a whole store, in steps for a rebuild, and training in the background.

- `refill`: a new index over every row of the store, at recovery and at a compaction (the caller holds the write
  lock, or serves nothing yet). IVF kinds are trained first when enough rows are live; with fewer, the index stays
  empty and the planner searches the store exactly.
- `rebuild`: a new store and index built from a snapshot of the live items while searches and writes go on against
  the old ones, then swapped in, under the write lock, together with the writes made meanwhile (`Contents.rebuilding`
  collects them). The caller checkpoints after, which drops the tombstones from disk too.
- `Trainer`: once enough vectors arrived to train an IVF index, a rebuild in a background thread. Training nlist
  centroids costs about 25 x 39 nlist^2 x dimension operations: never inside a write's lock.

The keyword index (see contents.py) is built in `refill` when it is behind the store (at open), from the live items'
ids and texts in one bulk build; a compaction and a rebuild keep it (it is keyed by id, not by slot).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import numpy as np

from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index.faiss.contents import Contents

log = logging.getLogger(__name__)


def refill(contents: Contents) -> None:
    """A new index for `contents` over every row of its store, trained if the kind needs it and enough rows are live;
    and the keyword index built over the live items if it is behind the store."""
    store, params = contents.store, contents.config.index
    if contents.keyword is not None and contents.keyword_stale:
        live = store.live_slots().tolist()
        contents.keyword.build([store.ids[s] for s in live], [store.inputs[s] for s in live])
        contents.keyword_stale = False
    contents.index = index = contents.new_index()
    if not index.trained:
        if store.count >= params.train_size and store.count > 0:
            live = store.live_slots()
            index.train(store.unit[live])
            index.add(live, store.unit[live])
        return
    if store.n:
        index.add(np.arange(store.n), store.unit[: store.n])


def build(
    contents: Contents,
    stage: Callable[[str, int], None],
    units: Callable[[int], None],
    check: Callable[[], None],
    *,
    chunk: int,
) -> None:
    """A new index over this (unshared, compacted) contents, trained if the kind needs it, filled `chunk` rows a step.

    `stage` and `units` report progress; `check()` runs between steps and stops the build by raising."""
    contents.index = index = contents.new_index()
    store = contents.store
    slots = np.arange(store.n)
    if not index.trained:
        if store.count == 0 or store.count < contents.config.index.train_size:
            return  # searched exactly until enough vectors arrive, as before
        stage("training", 0)
        check()
        index.train(store.unit[slots])
    stage("indexing", len(slots))
    for start in range(0, len(slots), chunk):
        check()
        step = slots[start : start + chunk]
        index.add(step, store.unit[step])
        units(start + len(step))


def rebuild(
    contents: Contents,
    stage: Callable[[str, int], None],
    units: Callable[[int], None],
    check: Callable[[], None],
    *,
    chunk: int,
) -> None:
    """Rebuild the store (without tombstones) and its indexes off the lock, then swap them in with the writes made
    meanwhile. Nothing changes when `check()` raises. INVALID_VALUE while another rebuild runs."""
    stage("snapshot", 0)
    with contents.rw.read():
        if contents.rebuilding is not None:
            raise EmbedsvcError(Reason.INVALID_VALUE, f"collection '{contents.config.name}' is already rebuilding")
        snapshot = contents.store.snapshot(0)
        contents.rebuilding = []  # set under the lock: no write can be applied between the snapshot and this
    try:
        fresh = Contents(contents.config, keyword=False)  # the keyword index stays in service (adopt keeps it)
        fresh.load(snapshot)
        build(fresh, stage, units, check, chunk=chunk)
        check()
        stage("catching-up", len(contents.rebuilding))
        with contents.rw.write():
            for record in contents.rebuilding:
                fresh.replay(record, index=True)
            contents.adopt(fresh)
    finally:
        contents.rebuilding = None


class Trainer:
    """Runs `train` (a rebuild of the collection) in a background thread, one at a time."""

    def __init__(self, name: str, train: Callable[[], None]) -> None:
        self.name = name
        self._train = train
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start training unless it runs already (searches stay exact and writes go on meanwhile)."""
        if self._thread is not None and self._thread.is_alive():
            return

        def train() -> None:
            try:
                self._train()
            except EmbedsvcError as exc:  # closed, deleted, or a rebuild already runs: the next write tries again
                log.info("collection %s: background training stopped: %s", self.name, exc.message)
            except Exception:
                log.exception("collection %s: background training failed; searches stay exact", self.name)

        self._thread = threading.Thread(target=train, name=f"train-{self.name}", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
