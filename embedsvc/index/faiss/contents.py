"""A collection's contents in memory: the slot store and the indexes over its slots, behind one readers-writer lock.

Searches and reads hold the read side of `rw`; applying committed records, a compaction and a rebuild's swap hold the
write side. `apply` is the one way a committed record reaches memory: the log's leader calls it once the record's
group is durable (log.py), in LSN order. An upsert appends slots to the store (tombstoning the slots it replaces) and
its new slots are fed to every index; a delete tombstones slots. Slots are renumbered only by replacing the store as a
whole (`load` at a compaction, `adopt` at the end of a rebuild), which bumps `generation`: anything computed per slot
outside the lock is stale once the generation has moved.

The seam for more indexes beside the vector index (issue 29: a keyword index, "one more secondary index"). An index
over the store's slots is a secondary index: a cache of the store that the durable state (checkpoint + log) can
always rebuild. The FAISS vector index (`index`) is the first; another one joins it at these places, and nowhere else:
- here: created empty with the store (`__init__`, `load`), fed the new slots of every applied upsert (`_feed`,
  reading the columns it needs from the store: `unit` for vectors, `inputs` for keywords), swapped in with the store
  (`adopt`), counted in `memory_bytes`. Deletes and replacements reach it as tombstones: `store.live`, which every
  search passes on as the mask of allowed slots, until the next compaction rebuilds it without them;
- `training.py`: built over a whole store, at once (`refill`: recovery, compaction) and in steps (`build`: a rebuild);
- `planning.py`: searched, with the same allowed mask (live, matching the filter);
- `checkpoint.py`, if rebuilding it at start costs too much: its files written into the checkpoint's temporary
  directory beside `vectors.npy` and `items.jsonl`, covered by `meta.json`'s digest and renamed into place with them
  (one checkpoint, one LSN: the log's tail after it is replayed through `apply`, which feeds it like any write), and
  loaded by `recovery.py` instead of `refill`. The vector index writes none today.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from embedsvc.index.faiss.checkpoint import Snapshot
from embedsvc.index.faiss.log import Record
from embedsvc.index.faiss.rwlock import RWLock
from embedsvc.index.faiss.slots import SlotStore
from embedsvc.index.faiss.vector_index import VectorIndex
from embedsvc.index.types import CollectionConfig, Upsert


def _nothing() -> None:
    pass


class Contents:
    """The store, its indexes and their lock. `on_trainable` is called (under the write lock, so it must only start
    work elsewhere) when an untrained index could now be trained: the collection trains it in the background."""

    def __init__(self, config: CollectionConfig, on_trainable: Callable[[], None] = _nothing) -> None:
        self.config = config
        self.rw = RWLock()
        self.store = SlotStore(config.dimension, config.metric)
        self.index = self.new_index()
        self.generation = 1
        # While a rebuild runs: the records applied since its snapshot, replayed onto the new contents before the swap.
        self.rebuilding: list[Record] | None = None
        self._on_trainable = on_trainable

    def new_index(self) -> VectorIndex:
        return VectorIndex(self.config.index, self.config.dimension, self.config.metric)

    def apply(self, records: list[Record]) -> None:
        """Apply committed records (the log calls this after they are durable)."""
        with self.rw.write():
            for record in records:
                self.replay(record, index=True)
            if self.rebuilding is not None:
                self.rebuilding.extend(records)

    def replay(self, record: Record, *, index: bool) -> None:
        """Apply one record to the store, and with `index` to the indexes too (recovery builds them after replay)."""
        if isinstance(record.operation, Upsert):
            slots = self.store.append(record.operation)
            if index:
                self._feed(slots)
        else:
            self.store.remove(record.operation)

    def _feed(self, slots: np.ndarray) -> None:
        if self.index.trained:
            self.index.add(slots, self.store.unit[slots])
        elif self.store.count >= self.config.index.train_size and self.rebuilding is None:
            self._on_trainable()

    def load(self, snapshot: Snapshot) -> None:
        """Replace everything by a checkpoint's items, with empty indexes (the caller fills them: training.refill)."""
        self.store = SlotStore.from_snapshot(snapshot, self.config.dimension, self.config.metric)
        self.index = self.new_index()
        self.generation += 1

    def adopt(self, other: Contents) -> None:
        """Take another contents' store and indexes (a rebuild's swap; hold the write lock)."""
        self.store, self.index = other.store, other.index
        self.generation += 1

    def memory_bytes(self) -> int:
        return self.store.memory_bytes() + self.index.memory_bytes()
