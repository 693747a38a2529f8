"""A collection's contents in memory: the slot store and the indexes over its slots, behind one readers-writer lock.

Searches and reads hold the read side of `rw`; applying committed records, a compaction and a rebuild's swap hold the
write side. `apply` is the one way a committed record reaches memory: the log's leader calls it once the record's
group is durable (log.py), in LSN order. An upsert appends slots to the store (tombstoning the slots it replaces) and
its new slots are fed to every index; a delete tombstones slots. Slots are renumbered only by replacing the store as a
whole (`load` at a compaction, `adopt` at the end of a rebuild), which bumps `generation`: anything computed per slot
outside the lock is stale once the generation has moved.

Secondary indexes: caches of the store that the durable state (checkpoint + log) can always rebuild.
- The FAISS vector index (`index`), over slots: fed the new slots of every applied upsert (`_feed`); deletes and
  replacements reach it as tombstones (`store.live`, which every search passes on as the mask of allowed slots) until
  a compaction or a rebuild renumbers the slots; rebuilt by `training.refill` (recovery, compaction) and
  `training.build` (a rebuild), swapped in with the store (`adopt`).
- The keyword index (`keyword`, a collection created with a keyword language), over item ids, so renumbering slots
  does not touch it: every applied record reaches it in `apply`, under the write lock, in one keyword commit per
  group (an upsert adds or replaces its items' text, a delete removes them), so an acknowledged write is
  keyword-searchable when its writer returns and a replaced or deleted item is never found again. It is built once
  over the whole store when it is behind the store (`keyword_stale`: at open, after the checkpoint and the log's
  tail were replayed into the store, by `training.refill`); a compaction (`load` of a snapshot of these very items)
  and a rebuild (`adopt`) keep it. Its searches run under the read lock, so a hit's id is always a live item of
  the store (planning.py, keywords.py).
Another index joins at these places; if rebuilding it at start costs too much, its files can go into the checkpoint
directory (written in the temporary directory, covered by `meta.json`'s digest, renamed into place with the rest: one
LSN), loaded by recovery instead of a refill. Neither index writes files today.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from embedsvc.index.faiss.checkpoint import Snapshot
from embedsvc.index.faiss.log import Record
from embedsvc.index.faiss.slots import SlotStore
from embedsvc.index.faiss.vector_index import VectorIndex
from embedsvc.index.keyword.index import KeywordIndex
from embedsvc.index.types import CollectionConfig, Upsert
from embedsvc.rwlock import RWLock


def _nothing() -> None:
    pass


class Contents:
    """The store, its indexes and their lock. `on_trainable` is called (under the write lock, so it must only start
    work elsewhere) when an untrained index could now be trained: the collection trains it in the background."""

    def __init__(
        self, config: CollectionConfig, on_trainable: Callable[[], None] = _nothing, *, keyword: bool = True
    ) -> None:
        """`keyword`: hold the collection's keyword index, if it has one (a rebuild's fresh contents do not: the
        collection's own keyword index stays in service through it)."""
        self.config = config
        self.rw = RWLock()
        self.store = SlotStore(config.dimension, config.metric)
        self.index = self.new_index()
        self.keyword = KeywordIndex(config.keyword) if config.keyword and keyword else None
        # True while the keyword index does not reflect the store (until the first refill builds it).
        self.keyword_stale = self.keyword is not None
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
            if self.keyword is not None:
                self._feed_keywords(records)
            if self.rebuilding is not None:
                self.rebuilding.extend(records)

    def _feed_keywords(self, records: list[Record]) -> None:
        """The records' effect on the keyword index, in one commit: texts added or replaced, deleted items as empty
        texts (which remove them)."""
        assert self.keyword is not None
        ids: list[str] = []
        texts: list[str] = []
        for record in records:
            operation = record.operation
            ids.extend(operation.ids)
            texts.extend(operation.inputs if isinstance(operation, Upsert) else [""] * len(operation.ids))
        if ids:
            self.keyword.upsert(ids, texts)

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
        """Take another contents' store and vector index (a rebuild's swap; hold the write lock). The keyword index
        stays: it is keyed by id, and every record applied meanwhile reached it."""
        self.store, self.index = other.store, other.index
        self.generation += 1

    def memory_bytes(self) -> int:
        return self.store.memory_bytes() + self.index.memory_bytes()
